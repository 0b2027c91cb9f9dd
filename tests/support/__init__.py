"""Test support: real SSH hosts (hostlab), the SDK's dynamic-provider host over gRPC
(pulumi_host), a Pulumi program driver (program_driver) and a sample provider."""
