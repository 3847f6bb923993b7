package testenv

import (
	"strings"
)

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

func containsSegment(k, seg string) bool { return strings.Contains(k, seg) }
