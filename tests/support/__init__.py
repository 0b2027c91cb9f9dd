"""Test support: real SSH hosts (hostlab), the real Pulumi CLI in a throwaway workspace
(pulumi_cli), amdfleet's provider plugin over gRPC (pulumi_host), stand-in servers
(fake_engine, openai_server, hub_server, dockerd), sample providers and their plugin
(sample_provider, sample_plugin), and shared stack inputs (models: the tiny model's
shape; fleets: placeholder hosts to plan with)."""
