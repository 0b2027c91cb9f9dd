"""The package schema through the real Pulumi CLI: ``pulumi package get-schema`` runs the
plugin (pip's console script) and returns the schema amdfleet generates; ``pulumi package
gen-sdk --language python`` binds it with the CLI's own binder and writes a Python SDK with
upstream's generator (run by amdfleet's language host); and a program written on that SDK
deploys this machine as an ``SshHost`` (a nested type, an enum, a default) and a passed
``ReadinessGate``, served by the plugin: the schema's names and shapes are what the
providers take. Neither changes anything outside the stack's state (an SshHost only
inspects its host), so the test needs no destroy.
"""

from __future__ import annotations

import compileall
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amdfleet.plugin.provider import version
from amdfleet.plugin.registry import RESOURCES
from amdfleet.plugin.schema import package_schema
from tests.support.pulumi_cli import PulumiWorkspace

pytestmark = pytest.mark.pulumi

PROGRAM = """\
import pulumi
import pulumi_amdfleet as amdfleet

host = amdfleet.SshHost(
    "this-machine",
    host=amdfleet.HostTargetArgs(
        name="this-machine", connection=amdfleet.HostTargetConnection.LOCAL
    ),
    requirement=amdfleet.HostRequirementArgs(
        accelerator="cpu",
        gpu_count=0,
        runtime=amdfleet.HostRequirementRuntime.PROCESS,
        numa_balancing_off=False,
    ),
)
gate = amdfleet.ReadinessGate("gate", passed=True)
pulumi.export("hostname", host.hostname)
pulumi.export("port", host.host.port)
pulumi.export("connection", host.host.connection)
pulumi.export("passed", gate.passed)
"""


def test_a_program_on_the_generated_sdk_deploys_with_the_plugin(tmp_path: Path) -> None:
    ws = PulumiWorkspace(tmp_path / "project", project="sdk", main=tmp_path / "program")
    plugin = shutil.which("pulumi-resource-amdfleet", path=str(Path(sys.executable).parent))
    assert plugin, "pulumi-resource-amdfleet is not beside this Python: pip install -e ."

    got = ws.run(["package", "get-schema", plugin], timeout=120)
    assert json.loads(got.stdout) == package_schema(version())

    out = tmp_path / "sdk"
    ws.run(["package", "gen-sdk", plugin, "--language", "python", "--out", str(out)], timeout=120)
    sdk = out / "python"
    for resource in RESOURCES:
        module = sdk / "pulumi_amdfleet" / f"{_snake(resource.type_name)}.py"
        assert f"class {resource.type_name}(pulumi.CustomResource)" in module.read_text()
    engine = (sdk / "pulumi_amdfleet" / "engine_service.py").read_text()
    assert "pulumi.Output.secret(secret_env)" in engine  # secrets as amdfleet keeps them
    assert 'additional_secret_outputs=["secrets_hash"]' in engine
    assert compileall.compile_dir(sdk, quiet=2, legacy=True)
    # Its metadata (the SDK reads its own version), as an editable install would write it.
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info"], cwd=sdk, check=True, timeout=60)

    (tmp_path / "program").mkdir()
    (tmp_path / "program" / "__main__.py").write_text(PROGRAM)
    ws.env["PYTHONPATH"] = f"{sdk}:{ws.env.get('PYTHONPATH', '')}"
    ws.init_stack("dev", {})
    ws.up("dev")
    assert ws.outputs("dev") == {
        "hostname": socket.gethostname(),
        "port": 22,  # the schema's default, which the SDK applied
        "connection": "local",
        "passed": True,
    }
    types = {name: r["type"] for name, r in ws.resources("dev").items()}
    assert types["this-machine"] == "amdfleet:index:SshHost"
    assert types["gate"] == "amdfleet:index:ReadinessGate"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
