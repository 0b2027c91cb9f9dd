"""Test support: real SSH hosts (hostlab), the real Pulumi CLI in a throwaway workspace
(pulumi_cli), the SDK's dynamic-provider host over gRPC (pulumi_host), stand-in servers
(fake_engine, openai_server, hub_server, dockerd), a sample provider, and shared stack
inputs (models: the tiny model's shape; fleets: placeholder hosts to plan with)."""
