//go:build tools

// Package tools pins chall-manager's main packages so that `go mod tidy`
// keeps their dependencies. Built by scripts/install-chall-manager.sh.
package tools

import (
	_ "github.com/ctfer-io/chall-manager/cmd/chall-manager"
	_ "github.com/ctfer-io/chall-manager/cmd/chall-manager-cli"
	_ "github.com/ctfer-io/chall-manager/cmd/chall-manager-janitor"
)
