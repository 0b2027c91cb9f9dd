"""``amdfleet status``'s live checks against real parts on this machine, without Pulumi.

Real: the engine node is this machine (a ``local`` host target, the connection the
providers use for it) with a real process recorded in the engine's pid file, as the
process supervisor records it, asked through the supervisor's own ``running_command``; the
endpoint is tests/support/openai_server.py (a real OpenAI-compatible HTTP server), or a
TCP listener that never answers; the unreachable host is a closed port on loopback. The
whole path through a real ``pulumi up`` and vLLM is in tests/program/test_cli_e2e.py.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.cli.status import EngineNode, StackView, check_stack
from amdfleet.remote.transport.target import HostTarget
from tests.support.openai_server import MODEL, OpenAIServer, Script

ROOT = Path("/opt/amdfleet")
API_KEY = "status-key-5d1f0c7e22aa"
VERIFICATION = {"passed": True, "verdict": [{"scope": "c", "metric": "m", "passed": True}]}


@pytest.fixture
def engine_dir() -> Iterator[Path]:
    """An engine directory of this machine's own (engine directories live below
    /opt/amdfleet), removed afterwards with /opt/amdfleet when nothing else is there."""
    directory = ROOT / f"status-test-{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            ROOT.rmdir()


@pytest.fixture
def engine(engine_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own process group, recorded as the engine's pid file."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    (engine_dir / "engine.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _view(endpoint: str, engine_dir: Path, *nodes: EngineNode) -> StackView:
    local = HostTarget(name="node0", connection="local")
    node = EngineNode("node0", local, str(engine_dir), "amdfleet-t.service", None)
    return StackView(
        stack="t",
        endpoint=endpoint,
        model=MODEL,
        ready=True,
        verified_at="2026-12-07T19:00:00+00:00",
        verification=VERIFICATION,
        nodes=(node, *nodes),
        api_key=API_KEY,
    )


def test_a_running_engine_and_a_serving_endpoint_are_serving(
    engine: subprocess.Popen[bytes], engine_dir: Path
) -> None:
    with OpenAIServer(Script(default_answer="Paris")) as server:
        report = check_stack(_view(f"{server.url}/v1", engine_dir), timeout_s=10)
    assert report.verdict == "serving" and report.exit_code == 0, report.reason
    by_name = {c.name: c for c in report.checks}
    assert by_name["engine"].detail == "running (process supervisor)"
    assert by_name["models"].detail == f"lists {MODEL}"
    assert by_name["completion"].detail.startswith("1 token in ")
    assert by_name["verification"].detail == (
        "passed at 2026-12-07T19:00:00+00:00: 1 of 1 checks passed"
    )
    # one real completion of one token, with the stack's key; the key printed nowhere
    (body,) = server.bodies
    assert body["max_tokens"] == 1 and body["model"] == MODEL
    assert server.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in json.dumps(report.to_json())


def test_an_engine_killed_out_of_band_is_named(
    engine: subprocess.Popen[bytes], engine_dir: Path
) -> None:
    os.killpg(engine.pid, signal.SIGKILL)
    engine.wait(timeout=10)
    with OpenAIServer() as server:  # the endpoint still answers (another engine, a cache)
        report = check_stack(_view(f"{server.url}/v1", engine_dir), timeout_s=10)
    assert report.verdict == "degraded" and report.exit_code == 3
    (check,) = [c for c in report.checks if not c.ok]
    assert (check.name, check.subject) == ("engine", "node0")
    assert check.detail.startswith("not running (the process supervisor reports it stopped")
    assert f"{engine_dir}/engine.log" in check.detail
    assert report.reason.startswith("node0: engine not running")


def test_an_endpoint_that_never_answers_is_down_within_the_timeout(
    engine: subprocess.Popen[bytes], engine_dir: Path, tmp_path: Path
) -> None:
    """A listener that accepts connections and never answers: a multi-node head whose
    worker died answers no completion either (see ENVIRONMENT.md). A node whose SSH port
    refuses connections is reported as not checked, with the connection's error."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = silent.getsockname()[1]
        unreachable = EngineNode(
            "node1",
            HostTarget(
                name="node1",
                address="127.0.0.1",
                port=closed.getsockname()[1],
                key_path=str(key),
                host_key="SHA256:" + "A" * 43,
            ),
            "/opt/amdfleet/t",
            "amdfleet-t.service",
            None,
        )
        view = _view(f"http://127.0.0.1:{port}/v1", engine_dir, unreachable)
        report = check_stack(view, timeout_s=1.0)
    assert report.verdict == "down" and report.exit_code == 4
    by_key = {(c.name, c.subject): c for c in report.checks}
    assert by_key[("engine", "node0")].ok
    assert by_key[("models", "endpoint")].detail.endswith("no answer within 1 s")
    assert by_key[("completion", "endpoint")].detail == "no answer within 1 s"
    node1 = by_key[("engine", "node1")]
    assert not node1.ok and node1.detail.startswith("cannot check: [node1]")
    assert "refused" in node1.detail
    assert report.seconds < 5  # every check at once, each bounded by the timeout


def test_an_error_body_with_a_secret_in_it_is_printed_redacted(
    engine: subprocess.Popen[bytes], engine_dir: Path
) -> None:
    """A real HTTP server whose every answer is a 500 quoting a token it should not
    (an engine echoing its environment): the report shows the status and the body with
    the token blanked, in the text and in --json. The token is not the stack's API key,
    so only the secret-looking-text rules (amdfleet.secretscan.redact) can catch it."""
    leaked = "hf_" + "Qz7" * 12

    class Leaky(http.server.BaseHTTPRequestHandler):
        def _leak(self) -> None:
            body = f'{{"error": "bad config: HF_TOKEN={leaked}"}}'.encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _leak

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        report = check_stack(_view(url, engine_dir), timeout_s=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert report.verdict == "down" and report.exit_code == 4
    by_name = {c.name: c for c in report.checks}
    assert "500" in by_name["completion"].detail and "HF_TOKEN=" in by_name["completion"].detail
    printed = json.dumps(report.to_json()) + "\n".join(c.detail for c in report.checks)
    assert leaked not in printed and "<redacted>" in by_name["completion"].detail
