//go:build tools

// Package tools pins the Jaeger v2 main package so that its dependencies stay
// in go.mod. Build with: go build -o ../../.bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
