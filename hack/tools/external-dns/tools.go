//go:build tools

// Package tools pins the external-dns command this module builds.
package tools

import _ "sigs.k8s.io/external-dns"
