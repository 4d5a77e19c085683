//go:build tools

// Package tools names the binary this module builds so that `go mod tidy` keeps its deps.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
