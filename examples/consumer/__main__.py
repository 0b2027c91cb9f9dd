"""An application's Pulumi program reading an amdfleet stack's outputs.

    pulumi config set servingStack organization/amdfleet/mi355x-llama70b
    pulumi up

The API key stays a secret through the StackReference; pass it on as a secret (an
environment variable of a container, a Kubernetes Secret, ...), never as plain text.
"""

import pulumi

config = pulumi.Config()
serving = pulumi.StackReference(config.get("servingStack") or "organization/amdfleet/local")

endpoint = serving.require_output("endpoint")
api_key = serving.require_output("api_key")  # a secret

pulumi.export("chat_completions_url", endpoint.apply(lambda url: f"{url}/chat/completions"))
pulumi.export("model", serving.require_output("model"))
pulumi.export("ready", serving.require_output("ready"))  # the last `up`'s verification passed
# When it ran (None for a stack verified before amdfleet recorded it: get, not require).
pulumi.export("verified_at", serving.get_output("verified_at"))
pulumi.export(
    "openai_env",
    pulumi.Output.secret(
        pulumi.Output.all(endpoint, api_key).apply(
            lambda v: {"OPENAI_BASE_URL": v[0], "OPENAI_API_KEY": v[1]}
        )
    ),
)
