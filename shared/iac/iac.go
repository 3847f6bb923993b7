// Package iac drives Pulumi stacks for challenge instances through the Pulumi
// Automation API: create, update (in place, blue-green, recreate), destroy and
// preview of a scenario program for one identity.
package iac

// Program is a scenario ready to run: Dir holds a Pulumi.yaml with `runtime: go`
// (a prebuilt `binary:` or Go source) and Project is the project name read from it.
type Program struct {
	Dir     string
	Project string
}

// Outputs are the stack outputs challfn reads back after an `up`.
type Outputs struct {
	ConnectionInfo string
	Flags          []string
}

// Strategy is a hot-update strategy (contract §4.14).
type Strategy string

const (
	UpdateInPlace Strategy = "update_in_place"
	BlueGreen     Strategy = "blue_green"
	Recreate      Strategy = "recreate"
)
