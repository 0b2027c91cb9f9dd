"""Run the project's ``__main__.py`` under Pulumi's mocks (``pulumi.runtime.set_mocks``,
a preview) and write what it registered as JSON: each resource's type, name, parent and
inputs, and each component's and the stack's outputs.

    python -m tests.support.mocked_program STACK_FILE OUT_JSON [--no-private-address]

The stack file's config is the program's config (its secrets given fixed values). Each
cloud instance "exists" with fixed outputs: id, public address 203.0.113.(10 + rank),
private address 10.0.0.(10 + rank) (empty with --no-private-address), and a host key.
An image pin resolves to a fixed digest and the cluster check to interface eth1 on every
node; every other output is unknown, as in a preview.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parents[3]
SECRETS = {"doToken": "mock-token", "apiKey": "mock-api-key", "hfToken": "hf_mock"}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb1z8n0YvZ2pJx7v4ZrKq8m2nT3sQ1u5w6y7z8a9b0c"
DIGEST = "sha256:" + "a" * 64


def main(stack_file: Path, out: Path, *, private: bool) -> None:
    import pulumi
    from pulumi.runtime import config, mocks

    document = yaml.safe_load(stack_file.read_text())
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in document["config"].items()}
    values |= {f"amdfleet:{key}": value for key, value in SECRETS.items()}
    registered: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    register = mocks.MockMonitor.RegisterResource

    def record(monitor: Any, request: Any) -> Any:
        response = register(monitor, request)
        registered.append(
            {
                "type": request.type,
                "name": request.name,
                "parent": request.parent,
                "inputs": json_format.MessageToDict(request.object),
            }
        )
        return response

    def record_outputs(monitor: Any, request: Any) -> Any:
        outputs.append({"urn": request.urn, "outputs": json_format.MessageToDict(request.outputs)})
        return mocks.empty_pb2.Empty()

    mocks.MockMonitor.RegisterResource = record  # type: ignore[method-assign]
    mocks.MockMonitor.RegisterResourceOutputs = record_outputs  # type: ignore[method-assign]

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            state = dict(args.inputs)
            if args.typ.endswith(":CloudInstance"):
                rank = int(args.name.rsplit("-", 1)[1])
                state |= {
                    "instance_id": str(5000 + rank),
                    "public_address": f"203.0.113.{10 + rank}",
                    "private_address": f"10.0.0.{10 + rank}" if private else "",
                    "host_key": HOST_KEY,
                }
            elif args.typ.endswith(":ImagePin"):
                state["ref"] = args.inputs["image"].split(":")[0] + "@" + DIGEST
            elif args.typ.endswith(":ClusterCheck"):
                state["interfaces"] = {node["name"]: "eth1" for node in args.inputs["nodes"]}
            return f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
            return {}

    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    pulumi.runtime.set_mocks(Mocks(), project="amdfleet", stack=stack, preview=True)

    @pulumi.runtime.test
    def run() -> pulumi.Output[None]:
        config.set_all_config(values, [f"amdfleet:{key}" for key in SECRETS])
        runpy.run_path(str(ROOT / "__main__.py"))
        return pulumi.Output.from_input(None)

    os.chdir(ROOT)
    run()
    registered.sort(key=lambda r: (r["type"], r["name"]))
    outputs.sort(key=lambda o: o["urn"])
    out.write_text(json.dumps({"registered": registered, "outputs": outputs}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), private="--no-private-address" not in sys.argv)
