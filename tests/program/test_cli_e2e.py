"""What users do with ``pulumi`` on a stack, with the real CLI and a real vLLM.

One SSH host in a network namespace serves the tiny Llama with vLLM's CPU build; the real
Pulumi CLI and engine run ``__main__.py`` (via the language host from
scripts/install-pulumi), every provider runs in amdfleet's real provider plugin, and the
verification gate runs the real benchmark client and GSM8K scorer. In order:

* ``pulumi up`` serves a verified endpoint; its outputs are what applications read, and
  ``examples/consumer`` reads them for real through a StackReference;
* ``amdfleet status`` finds it serving (text and ``--json``) in seconds, changing nothing,
  and never prints the API key;
* the API key and HF token, set with ``pulumi config set --secret``, never appear in
  plain text in the state, outputs, CLI output, the engine's command line or its logs;
* a second ``up`` reports zero changes and opens zero SSH sessions (counted in the host's
  sshd log), leaving every file and process on the host as it was;
* changing one serving setting updates only the engine and re-runs verification; a
  failing threshold fails ``up`` and leaves the engine running;
* a stack whose state an older amdfleet wrote (no ``verified_at``) still reads, and ``up``
  does not verify it again just to record the time;
* after the engine and its supervisor were killed out of band, ``amdfleet status`` says
  down and names the node, ``pulumi refresh`` reports the drift, and the next ``up``
  repairs it;
* ``pulumi destroy`` leaves nothing on the host, and a second destroy is a no-op;
* Ctrl-C (SIGINT to the CLI's process group) in the middle of ``up``, then ``up`` again,
  converges with exactly one engine and nothing leaked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from amdfleet.providers.props import fingerprint
from tests.e2e.vllm_server import missing_parts
from tests.support.hostlab import HostLab, LabFactory, require_netns
from tests.support.local_stack import with_tiny_llama
from tests.support.pulumi_cli import PulumiWorkspace
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k"
STACK = "e2e"
API_KEY = "e2e-api-key-7c1d93fa62b8"
HF_TOKEN = "hf_e2eTokenQ7x9V2m4K8p1"
PORT = 18001
CACHE = "/var/lib/amdfleet/cache"
SECRETS = {"apiKey": API_KEY, "hfToken": HF_TOKEN}
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how a secret value is marked in the state

pytestmark = [pytest.mark.pulumi, pytest.mark.netns, pytest.mark.vllm]


def stack_config(lab: HostLab, *, port: int = PORT, **verification: Any) -> dict[str, Any]:
    """The committed ``local`` stack moved onto lab host 0, with a smaller verification."""
    document = yaml.safe_load((ROOT / "stacks/Pulumi.local.yaml").read_text())
    config: dict[str, Any] = with_tiny_llama(document["config"])
    host = {k: v for k, v in lab.host_props(0).items() if k != "connection"}
    config["amdfleet:fleet"] = {"hosts": [host]}
    config["amdfleet:serving"] = {
        "host": lab.target(0).address,
        "port": port,
        "max_model_len": 2048,
    }
    config["amdfleet:engine"]["extra_env"] = {
        "VLLM_CACHE_ROOT": f"{CACHE}/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{CACHE}/inductor",
    }
    config["amdfleet:weights"]["hf_token_secret"] = "hfToken"
    spec: dict[str, Any] = {
        "scenarios": [
            {
                "name": "c4",
                "input_len": 64,
                "output_len": 32,
                "num_prompts": 24,
                "max_concurrency": 4,
            }
        ],
        "accuracy": {"limit": 8, "concurrency": 4, "max_tokens": 32, "data_path": str(GSM8K)},
        "thresholds": {"min_success_rate": 1.0, "min_output_throughput": 5.0},
    }
    spec.update(verification)
    config["amdfleet:verification"] = spec
    return config


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the CLI end-to-end tests need {', '.join(missing)}; run scripts/setup")
    lab = hostlab(1)
    require_netns(lab)
    return lab


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, lab: HostLab) -> Iterator[PulumiWorkspace]:
    ws = PulumiWorkspace(tmp_path_factory.mktemp("cli-e2e"))
    ws.init_stack(STACK, stack_config(lab), SECRETS)
    try:
        yield ws
    finally:
        ws.destroy(STACK, check=False)


@pytest.fixture(scope="module")
def first_up(workspace: PulumiWorkspace) -> dict[str, Any]:
    run = workspace.up(STACK)
    assert run.changed() == {
        f"amdfleet-{STACK}": "create",
        "fleet": "create",
        "deployment": "create",
        "fleet-host0": "create",
        "deployment-command-check": "create",
        "deployment-weights-host0": "create",
        "deployment-engine-host0": "create",
        "deployment-verification": "create",
        "deployment-readiness": "create",
    }
    return {"run": run, "outputs": workspace.outputs(STACK, show_secrets=True)}


@pytest.fixture
def without_the_module_stack(workspace: PulumiWorkspace, lab: HostLab) -> None:
    """Host 0 without the module's stack: the Ctrl-C tests count every engine on it. In a
    whole run ``test_destroy_...`` has taken the stack down already (its engine directory
    is gone, nothing to do); a selection that skipped that test destroys it here."""
    if lab[0].path(f"/opt/amdfleet/{STACK}").exists():
        workspace.destroy(STACK)


# -- helpers ---------------------------------------------------------------------------


def _host(lab: HostLab, command: str) -> str:
    with lab.connect(0) as conn:
        return conn.run(command, timeout=30, check=False).stdout


def _engine_pid(lab: HostLab, stack: str = STACK) -> int:
    return int(lab[0].path(f"/opt/amdfleet/{stack}/engine.pid").read_text())


def _engine_sessions(lab: HostLab) -> set[str]:
    """Session ids of every process running `vllm serve` on the host (one per engine:
    the launch script starts each engine in its own session)."""
    out = _host(lab, "ps -eo sid=,args= | grep '[v]llm serve' || true")
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _ssh_sessions(lab: HostLab) -> int:
    """SSH logins the host's sshd has accepted so far (its log is outside the host)."""
    return lab[0].log_path.read_text(errors="replace").count("Accepted publickey")


def _host_snapshot(lab: HostLab) -> str:
    """Everything amdfleet manages on the host: files (inode, size, mtime; the log the
    engine itself appends to by inode only) and the engine process."""
    return _host(
        lab,
        "find /opt/amdfleet ! -name engine.log -printf '%p %i %s %T@\\n' | sort; "
        "find /opt/amdfleet -name engine.log -printf '%p %i\\n'; "
        f"cat /opt/amdfleet/{STACK}/engine.pid; ps -eo pid=,lstart=,args= | grep '[v]llm serve'",
    )


def _status(
    workspace: PulumiWorkspace, *args: str, stack: str = STACK
) -> subprocess.CompletedProcess[str]:
    """``amdfleet status STACK`` as a user runs it in the project directory."""
    return workspace.amdfleet("status", stack, *args)


def _completion(outputs: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": outputs["model"], "prompt": "Hello", "max_tokens": 4}
    return httpx.post(f"{outputs['endpoint']}/completions", json=body, headers=headers, timeout=60)


# -- tests, in the order a user meets them ------------------------------------------------


def test_up_serves_a_verified_endpoint(first_up: dict[str, Any], lab: HostLab) -> None:
    outputs = first_up["outputs"]
    assert outputs["ready"] is True
    assert outputs["endpoint"] == f"http://{lab.target(0).address}:{PORT}/v1"
    assert outputs["model"] == "tiny-llama"
    assert outputs["api_key"] == API_KEY
    (host,) = outputs["hosts"]
    assert (host["name"], host["hostname"], host["gpus"]) == ("host0", "host0", [])
    assert outputs["engine"]["runtime"] == "process" and len(outputs["engine"]["files_hash"]) == 64
    verdict = {(r["scope"], r["metric"]): r for r in outputs["verification"]["verdict"]}
    assert verdict[("c4", "output_throughput")]["passed"] is True
    assert verdict[("gsm8k", "success_rate")]["observed"] == 1
    verified_at = datetime.fromisoformat(outputs["verified_at"])
    assert verified_at.utcoffset() == timedelta(0)
    assert timedelta(0) <= datetime.now(UTC) - verified_at < timedelta(hours=1)
    assert _completion(outputs, None).status_code == 401
    reply = _completion(outputs, API_KEY)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4


def test_secrets_never_appear_in_plain_text(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    public = workspace.outputs(STACK)
    assert public["api_key"] == "[secret]"
    places = {
        "the state, history and backups": workspace.backend_text(),
        "the stack file": workspace.stack_file(STACK).read_text(),
        "pulumi stack output --json": json.dumps(public),
        "pulumi up's output": first_up["run"].text,
        "the engine's command lines": _host(lab, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"),
        "the engine's log": _host(lab, f"cat /opt/amdfleet/{STACK}/engine.log"),
        "the host's files but secrets.env": _host(
            lab, "find /opt/amdfleet /var/log -type f ! -name secrets.env -exec cat {} +"
        ),
        "the host's sshd log": lab[0].log_path.read_text(errors="replace"),
        "the workspace's Pulumi home": "\n".join(
            p.read_text(errors="replace") for p in workspace.home.rglob("*") if p.is_file()
        ),
    }
    for where, text in places.items():
        for name, value in SECRETS.items():
            assert value not in text, f"{name} in plain text in {where}"
    # the reads above saw what they claim to: the engine's argv, its log, the launch files
    assert f"--port {PORT}" in places["the engine's command lines"]
    assert "Application startup complete" in places["the engine's log"]
    assert "amdfleet-content-hash: sha256:" in places["the host's files but secrets.env"]
    assert "Accepted publickey" in places["the host's sshd log"]
    mode = _host(lab, f"stat -c %a /opt/amdfleet/{STACK}/secrets.env").strip()
    assert mode == "600"
    # ps as an operator runs it, and the engine directory and log closed to other users
    ps = _host(lab, "ps -eo args=")
    assert f"--port {PORT}" in ps and API_KEY not in ps
    modes = _host(lab, f"stat -c %a /opt/amdfleet/{STACK} /opt/amdfleet/{STACK}/engine.log")
    assert modes.split() == ["700", "600"]
    # the engine gets the API key only; the HF token went to the weights download alone
    secrets_env = _host(lab, f"cat /opt/amdfleet/{STACK}/secrets.env")
    assert API_KEY in secrets_env and HF_TOKEN not in secrets_env and "HF_TOKEN" not in secrets_env
    # the secrets' fingerprint is ciphertext in the state, as input and as output: a plain
    # SHA-256 of a short key could be guessed back
    engine = workspace.resources(STACK)["deployment-engine-host0"]
    for side in ("inputs", "outputs"):
        assert set(engine[side]["secrets_hash"]) == {SECRET_SIG, "ciphertext"}, side
    plain_hash = fingerprint({"AMDFLEET_API_KEY": API_KEY, "VLLM_API_KEY": API_KEY})
    assert plain_hash not in places["the state, history and backups"]


def test_consumer_reads_the_outputs_through_a_stack_reference(
    first_up: dict[str, Any], workspace: PulumiWorkspace, tmp_path: Path
) -> None:
    consumer = workspace.sibling(
        tmp_path / "consumer", project="amdfleet-consumer", main=ROOT / "examples/consumer"
    )
    consumer.init_stack("app", {"amdfleet-consumer:servingStack": f"organization/amdfleet/{STACK}"})
    run = consumer.up("app")
    assert run.changed() == {
        "amdfleet-consumer-app": "create",
        f"organization/amdfleet/{STACK}": "read",
    }
    outputs = consumer.outputs("app")
    endpoint = first_up["outputs"]["endpoint"]
    assert outputs["chat_completions_url"] == f"{endpoint}/chat/completions"
    assert outputs["ready"] is True and outputs["openai_env"] == "[secret]"
    assert outputs["verified_at"] == first_up["outputs"]["verified_at"]
    revealed = consumer.outputs("app", show_secrets=True)["openai_env"]
    assert revealed == {"OPENAI_BASE_URL": endpoint, "OPENAI_API_KEY": API_KEY}
    assert API_KEY not in run.text

    # The plain application reads `pulumi stack output` itself and asks the model.
    answer = subprocess.run(
        [sys.executable, str(ROOT / "examples/consumer/client.py"), STACK],
        cwd=workspace.root,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()  # the tiny model's (random) answer
    consumer.destroy("app")


def test_status_finds_the_stack_serving_in_seconds_and_changes_nothing(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    state = workspace.export(STACK)["deployment"]["resources"]
    host = _host_snapshot(lab)
    started = time.monotonic()
    text = _status(workspace)
    took = time.monotonic() - started
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"stack {STACK}: serving, every check passed (checked in ")
    verified_at = first_up["outputs"]["verified_at"]
    assert f"last verification: {verified_at}, ready true" in text.stdout
    rows = {tuple(line.split()[:3]) for line in lines[4:]}
    assert {("engine", "host0", "ok"), ("models", "endpoint", "ok")} <= rows
    assert {("completion", "endpoint", "ok"), ("verification", "stack", "ok")} <= rows

    document = _status(workspace, "--json")
    assert document.returncode == 0
    report = json.loads(document.stdout)
    assert set(report) == {
        "stack", "verdict", "reason", "endpoint", "model", "ready", "verified_at",
        "verification", "checks", "seconds",
    }  # fmt: skip
    assert (report["verdict"], report["ready"], report["verified_at"]) == (
        "serving",
        True,
        verified_at,
    )
    assert report["endpoint"] == first_up["outputs"]["endpoint"]
    assert [(c["check"], c["subject"], c["ok"]) for c in report["checks"]] == [
        ("engine", "host0", True),
        ("models", "endpoint", True),
        ("completion", "endpoint", True),
        ("verification", "stack", True),
    ]
    assert report["checks"][0]["detail"] == "running (process supervisor)"
    # seconds, not minutes: the Pulumi reads and every live check, the whole command
    assert report["seconds"] < 20 and took < 30, (report["seconds"], took)
    print(f"amdfleet status took {took:.2f} s (its own count: {report['seconds']} s)")
    for out in (text, document):
        assert API_KEY not in out.stdout + out.stderr and HF_TOKEN not in out.stdout + out.stderr
    # read-only: the state and the host are as they were
    assert workspace.export(STACK)["deployment"]["resources"] == state
    assert _host_snapshot(lab) == host

    unknown = _status(workspace, stack="no-such-stack")
    assert unknown.returncode == 1
    assert "cannot read stack no-such-stack" in unknown.stderr
    assert "no stack named 'no-such-stack' found" in unknown.stderr


def test_second_up_changes_nothing_and_touches_no_host(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    before = _host_snapshot(lab)
    logins = _ssh_sessions(lab)
    run = workspace.up(STACK)
    assert _ssh_sessions(lab) == logins  # not one SSH session: no command, no upload
    assert run.changed() == {}
    assert run.summary["resourceChanges"] == {"same": 9}
    assert _host_snapshot(lab) == before
    outputs = workspace.outputs(STACK)
    assert outputs["ready"] is True
    assert outputs["verified_at"] == first_up["outputs"]["verified_at"]  # not verified again


def test_changing_a_serving_setting_restarts_only_the_engine_and_reverifies(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    verified_at = workspace.outputs(STACK)["verified_at"]
    config = workspace.config(STACK)
    workspace.set_config(
        STACK, "amdfleet:serving", {**config["amdfleet:serving"], "max_num_seqs": 16}
    )
    run = workspace.up(STACK)
    assert run.changed() == {
        "deployment-command-check": "update",  # the new command, parsed by vLLM first
        "deployment-engine-host0": "update",
        "deployment-verification": "update",
    }
    assert not lab.alive(0, pid) and lab.alive(0, _engine_pid(lab))
    assert "--max-num-seqs 16" in _host(lab, f"cat /proc/{_engine_pid(lab)}/cmdline | tr '\\0' ' '")
    outputs = workspace.outputs(STACK)
    assert outputs["ready"] is True
    assert datetime.fromisoformat(outputs["verified_at"]) > datetime.fromisoformat(verified_at)


def test_a_failing_threshold_fails_up_marks_the_stack_not_ready_and_a_fix_reruns_it(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    spec = workspace.config(STACK)["amdfleet:verification"]
    impossible = {**spec, "thresholds": {"min_output_throughput": 1e9}}
    workspace.set_config(STACK, "amdfleet:verification", impossible)
    for _ in range(2):  # the failure is not forgotten by the next `up`
        failed = workspace.up(STACK, check=False)
        assert not failed.ok
        assert failed.ops["deployment-verification"] == "update"  # the run is recorded
        assert failed.ops["deployment-readiness"].startswith("failed:")
        messages = failed.messages()
        assert "verification failed" in messages and "output_throughput" in messages
        assert workspace.outputs(STACK)["ready"] is False  # applications see the truth
    assert _engine_pid(lab) == pid and lab.alive(0, pid)  # the engine was left running

    fixed = {**spec, "thresholds": {"min_success_rate": 1.0, "min_output_throughput": 4.0}}
    workspace.set_config(STACK, "amdfleet:verification", fixed)
    run = workspace.up(STACK)
    # The gate's failed updates left its last passing record: nothing to change there.
    assert run.changed() == {"deployment-verification": "update"}
    assert _engine_pid(lab) == pid
    assert workspace.outputs(STACK)["ready"] is True
    run = workspace.up(STACK)
    assert run.changed() == {}


def test_a_stack_verified_before_verified_at_existed_still_reads_and_is_not_reverified(
    first_up: dict[str, Any], workspace: PulumiWorkspace, tmp_path: Path
) -> None:
    """State an older amdfleet wrote: the Verification resource's outputs without
    ``verified_at``, and the stack without the output. ``up`` does not verify again
    just to record a time; the output reads null, and ``amdfleet status`` says so."""
    exported = workspace.export(STACK)
    for resource in exported["deployment"]["resources"]:
        if resource["type"] == "amdfleet:index:Verification":
            resource["inputs"].pop("verified_at", None)  # null inputs are not stored
            assert resource["outputs"].pop("verified_at")
        elif resource["type"] == "pulumi:pulumi:Stack":
            assert resource["outputs"].pop("verified_at")
    older = tmp_path / "older-state.json"
    older.write_text(json.dumps(exported))
    workspace.run(["stack", "import", "--file", str(older), "--stack", STACK], timeout=60)
    assert "verified_at" not in workspace.outputs(STACK)

    run = workspace.up(STACK)
    assert run.changed() == {}
    outputs = workspace.outputs(STACK)
    assert outputs["ready"] is True and outputs.get("verified_at") is None
    status = _status(workspace)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "last verification: unknown (verified before amdfleet recorded the time)" in (
        status.stdout
    )


def test_status_and_refresh_report_a_killed_engine_and_up_repairs_it(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    pid = _engine_pid(lab)
    # The supervisor loop first (it would restart a crashed engine; see
    # tests/providers/test_engine_service.py), then the engine's whole process group.
    supervisor = int(lab[0].path(f"/opt/amdfleet/{STACK}/supervisor.pid").read_text())
    _host(lab, f"kill -9 -- -{supervisor}")
    _host(lab, f"kill -9 -- -{pid}")  # the engine's whole process group, as a crash would
    # SIGKILL is delivered asynchronously: wait (bounded) until the group is gone.
    wait_until(
        lambda: not lab.alive(0, pid) and _engine_sessions(lab) == set(), 30, "the engine to die"
    )

    down = _status(workspace, "--json")
    assert down.returncode == 4, down.stdout + down.stderr
    report = json.loads(down.stdout)
    assert report["verdict"] == "down" and report["ready"] is True  # the output still says so
    failed = {(c["check"], c["subject"]): c["detail"] for c in report["checks"] if not c["ok"]}
    assert set(failed) == {("engine", "host0"), ("models", "endpoint"), ("completion", "endpoint")}
    assert failed[("engine", "host0")].startswith("not running (the process supervisor")
    assert report["reason"].startswith("host0: engine not running")
    assert API_KEY not in down.stdout + down.stderr

    refresh = workspace.refresh(STACK)
    assert refresh.ops["deployment-engine-host0"] == "update"  # drift: running true -> false
    assert workspace.resources(STACK)["deployment-engine-host0"]["outputs"]["running"] is False

    run = workspace.up(STACK)
    assert run.changed().get("deployment-engine-host0") == "update"
    new_pid = _engine_pid(lab)
    assert new_pid != pid and lab.alive(0, new_pid)
    assert len(_engine_sessions(lab)) == 1
    assert _completion(workspace.outputs(STACK, show_secrets=True), API_KEY).status_code == 200
    assert _status(workspace).returncode == 0  # serving again


def test_destroy_leaves_nothing_and_a_second_destroy_is_a_no_op(
    first_up: dict[str, Any], workspace: PulumiWorkspace, lab: HostLab
) -> None:
    endpoint = first_up["outputs"]["endpoint"]
    run = workspace.destroy(STACK)
    assert set(run.changed().values()) == {"delete"} and len(run.changed()) == 9
    assert _engine_sessions(lab) == set()
    assert _host(lab, "ls -A /opt").strip() == ""  # the last stack out removes /opt/amdfleet
    others = _host(lab, "ps -eo comm= | sort -u").split()
    assert set(others) <= {"sshd", "sh", "bash", "ps", "sort"}, others
    with pytest.raises(httpx.TransportError):
        httpx.get(endpoint.removesuffix("/v1") + "/health", timeout=5)
    assert workspace.resources(STACK) == {}
    assert Path("/var/lib/amdfleet/models/tiny-llama/config.json").exists()  # local_path stays
    gone = _status(workspace)
    assert gone.returncode == 1 and "nothing is deployed" in gone.stderr

    again = workspace.destroy(STACK)
    assert again.changed() == {} and again.summary["resourceChanges"] == {}


@pytest.mark.usefixtures("without_the_module_stack")
@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_during_up_then_up_again_converges(
    workspace: PulumiWorkspace, lab: HostLab, presses: int
) -> None:
    """A terminal Ctrl-C sends SIGINT to the CLI's whole foreground process group. Here it
    arrives while the engine is loading. Once: the CLI lets the in-flight operation finish,
    records it and stops before verification. Twice: the CLI quits at once, leaving the
    engine's creation pending in the state and an engine process on the host. Either way
    the next `up` must finish the job with exactly one engine on the host."""
    stack = f"{STACK}-int{presses}"
    workspace.init_stack(stack, stack_config(lab, port=PORT + presses), SECRETS)
    running = workspace.start(["up", "--yes", "--stack", stack])
    try:
        wait_until(
            lambda: lab[0].path(f"/opt/amdfleet/{stack}/engine.pid").exists(),
            300,
            "the engine to start",
        )
        running.ctrl_c(presses)
        out = running.wait()
        assert running.returncode != 0, out
        assert "deployment-verification creating" not in out  # stopped before verification
        if presses == 1:
            assert "engine ready after" in out and "update canceled" in out

        run = workspace.up(stack)
        assert run.ops["deployment-verification"] == "create"
        assert len(_engine_sessions(lab)) == 1  # the interrupted start was stopped first
        assert workspace.outputs(stack)["ready"] is True
        if presses == 2:
            # The engine recorded the interrupted creation as pending; it is stale (the
            # new engine replaced it in the same directory), and refresh can drop it.
            assert "pending" in run.messages().lower()
            pending = workspace.export(stack)["deployment"].get("pending_operations")
            assert [op["type"] for op in pending] == ["creating"]
            workspace.refresh(stack, "--clear-pending-creates")
        assert not workspace.export(stack)["deployment"].get("pending_operations")
        assert workspace.up(stack).changed() == {}
    finally:
        running.kill()
        workspace.destroy(stack, check=False)
    assert _engine_sessions(lab) == set()
    assert not re.search(
        r"\S", _host(lab, f"ls -A /opt/amdfleet 2>/dev/null | grep {stack} || true")
    )
