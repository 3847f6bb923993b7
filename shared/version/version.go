// Package version holds the build version of challfn, set at link time:
// go build -ldflags "-X github.com/challfn/challfn/shared/version.Version=v1.2.3".
package version

// Version is the build version ("dev" for local builds).
var Version = "dev"
