"""Test support: real SSH hosts (hostlab), the real Pulumi CLI in a throwaway workspace
(pulumi_cli), the SDK's dynamic-provider host over gRPC (pulumi_host), stand-in servers
(fake_engine, openai_server, hub_server, dockerd) and a sample provider."""
