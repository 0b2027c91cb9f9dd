//go:build tools

// The Pulumi CLI, pinned by this module's go.mod and go.sum; scripts/install-pulumi builds
// it with `go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi`.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
