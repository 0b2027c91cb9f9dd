//go:build tools

// Pulumi's YAML language host, pinned by this module's go.mod and go.sum (its own module:
// pulumi-yaml is built against an older github.com/pulumi/pulumi/pkg/v3 than the CLI in
// ../pulumi-cli); scripts/install-pulumi builds it with
// `go build github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml`.
package tools

import _ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
