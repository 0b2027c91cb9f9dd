"""Command builders for engines, weights and images, executed for real with ``sh``.

The commands are what providers send over SSH; here they run on this machine through
``sh -c`` (the same shell semantics) against a real HTTP server on loopback.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.remote import engine, images, supervision, weights


def sh(command: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=timeout
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if self.path == "/health":
            self._send(200, b"")
        elif self.path == "/v1/models" and auth == "Bearer k-123":
            self._send(200, json.dumps({"data": [{"id": "tiny-llama"}]}).encode())
        elif self.path == "/v1/models":
            self._send(401, b'{"error": "Unauthorized"}')
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self.headers.get("Authorization") != "Bearer k-123":
            self._send(401, b'{"error": "Unauthorized"}')
        elif request["model"] == "hangs":
            _RELEASE.wait(30)  # a pipeline with a dead stage: no answer until released
        elif request == {
            "model": "tiny-llama",
            "prompt": "1+1=",
            "max_tokens": 1,
            "temperature": 0,
        }:
            self._send(200, b'{"choices": [{"text": "2"}]}')
        else:
            self._send(400, b'{"error": "unexpected request"}')

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


_RELEASE = threading.Event()


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _RELEASE.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> engine.EngineLayout:
    monkeypatch.setattr(engine, "SAFE_ROOT", str(tmp_path / "root") + "/")
    return engine.EngineLayout(str(tmp_path / "root" / "stack"))


def _start_sleeper(layout: engine.EngineLayout) -> None:
    Path(layout.remote_dir).mkdir(parents=True, exist_ok=True)
    Path(layout.launch).write_text("#!/bin/sh\necho engine starting\nexec sleep 300\n")
    Path(layout.launch).chmod(0o755)
    assert sh(supervision.ProcessSupervisor(layout).start_command()).returncode == 0


def test_layout_refuses_paths_outside_its_root() -> None:
    for bad in ("/", "/opt/amdfleet", "/opt/amdfleet/../etc", "/etc/amdfleet/x"):
        with pytest.raises(ValueError, match="below /opt/amdfleet/"):
            engine.EngineLayout(bad)
    assert engine.EngineLayout("/opt/amdfleet/local").launch == "/opt/amdfleet/local/launch.sh"


def test_probe_reports_statuses_and_uses_the_key_from_stdin(
    layout: engine.EngineLayout, server: str
) -> None:
    _start_sleeper(layout)
    try:
        alive = supervision.ProcessSupervisor(layout).first_run_command()
        command = engine.readiness_command(alive, server, ("/health", "/v1/models"))
        assert "k-123" not in command
        with_key = engine.parse_readiness(sh(command, "Authorization: Bearer k-123").stdout)
        without = engine.parse_readiness(sh(command, "").stdout)
    finally:
        sh(supervision.ProcessSupervisor(layout).stop_command(grace=2))
    assert with_key.alive and with_key.statuses["/health"][0] == 200
    assert with_key.ready(("/health", "/v1/models"), "tiny-llama")
    assert not with_key.ready(("/health", "/v1/models"), "other-model")
    assert without.statuses["/v1/models"][0] == 401
    assert not without.ready(("/health", "/v1/models"), "tiny-llama")


@pytest.mark.parametrize("client", ["curl", "python3"])
def test_generation_check_completes_a_token_with_the_key_from_the_hosts_secrets_file(
    server: str, tmp_path: Path, client: str
) -> None:
    """The one-token completion readiness and refresh rely on, run by sh against a real
    HTTP server, with curl or (a host without curl) python3; the key is read from the
    engine's secrets.env on the host and is never in the command line."""
    secrets = tmp_path / "secrets.env"
    secrets.write_text("AMDFLEET_API_KEY=k-123\nVLLM_API_KEY=k-123\n")
    env_path = _without_curl(tmp_path) if client == "python3" else None
    run = functools.partial(_sh_with_path, path=env_path)
    command = engine.generation_command(server, "tiny-llama", 5, str(secrets))
    assert "k-123" not in command
    ok = engine.parse_generation(run(command).stdout)
    assert ok.ok and ok.status == 200
    unkeyed = engine.parse_generation(
        run(engine.generation_command(server, "tiny-llama", 5)).stdout
    )
    assert (unkeyed.ok, unkeyed.status) == (False, 401)
    assert unkeyed.describe(5) == 'a one-token completion answered 401: {"error": "Unauthorized"}'
    hung = engine.parse_generation(
        run(engine.generation_command(server, "hangs", 1, str(secrets))).stdout
    )
    assert (hung.ok, hung.status) == (False, 0)
    assert hung.describe(1) == "a one-token completion got no answer within 1 s"


def _without_curl(tmp_path: Path) -> str:
    """A PATH with the tools the command uses, but no curl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sed", "head", "tail", "tr", "cut", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").symlink_to("/usr/bin/python3")  # the hosts' python, not a shim
    return str(bin_dir)


def _sh_with_path(command: str, path: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=30, env=env
    )


def test_probe_says_dead_when_the_engine_is_gone(layout: engine.EngineLayout, server: str) -> None:
    _start_sleeper(layout)
    supervisor = supervision.ProcessSupervisor(layout)
    assert sh(supervisor.stop_command(grace=2)).returncode == 0
    command = engine.readiness_command(supervisor.first_run_command(), server, ("/health",))
    result = engine.parse_readiness(sh(command).stdout)
    assert not result.alive
    assert sh(supervisor.running_command()).returncode != 0


def test_stop_is_idempotent_and_log_tail_reads_the_log(layout: engine.EngineLayout) -> None:
    _start_sleeper(layout)
    supervisor = supervision.ProcessSupervisor(layout)
    assert sh(supervisor.running_command()).returncode == 0
    stop = supervision.stop_any_command(
        layout, unit="amdfleet-x.service", container="amdfleet-x", grace=2
    )
    for _ in range(2):
        assert sh(stop).returncode == 0
    assert "engine starting" in sh(supervisor.log_tail_command()).stdout
    other = Path(layout.remote_dir).parent / "other-stack"
    other.mkdir()
    assert sh(engine.remove_command(layout)).returncode == 0
    assert not Path(layout.remote_dir).exists() and other.is_dir()  # others are kept
    other.rmdir()
    Path(layout.remote_dir).mkdir()
    assert sh(engine.remove_command(layout)).returncode == 0
    assert not Path(layout.remote_dir).parent.exists()  # the last one out removes the root
    assert sh(supervisor.log_tail_command()).returncode == 0  # nothing there: still fine


def test_secrets_env_is_literal_and_rejects_line_breaks() -> None:
    assert engine.secrets_env({"B": "x y$z", "A": "1"}) == "A=1\nB=x y$z\n"
    with pytest.raises(ValueError, match="line break"):
        engine.secrets_env({"A": "1\nEVIL=2"})


def test_weights_marker_round_trip(tmp_path: Path) -> None:
    target = weights.WeightsTarget("amd/Llama-3.3-70B-Instruct-FP8-KV", None, str(tmp_path))
    assert weights.parse_marker(sh(weights.read_marker_command(target)).stdout) is None
    snapshot = {"path": str(tmp_path / "snap"), "commit": "abc123"}
    assert sh(weights.write_marker_command(target, snapshot, downloaded=True)).returncode == 0
    marker = weights.parse_marker(sh(weights.read_marker_command(target)).stdout)
    assert marker == {
        "repo": target.repo,
        "revision": None,
        "path": snapshot["path"],
        "commit": "abc123",
        "downloaded_by_amdfleet": True,
    }
    assert target.repo_cache.endswith("hub/models--amd--Llama-3.3-70B-Instruct-FP8-KV")
    Path(target.repo_cache).mkdir(parents=True)
    assert sh(weights.remove_command(target)).returncode == 0
    assert not Path(target.repo_cache).exists() and not Path(target.marker).exists()


def test_download_reads_the_token_from_stdin_only(tmp_path: Path) -> None:
    """A stand-in python records the environment and argv the download hands it."""
    fake = tmp_path / "python3"
    fake.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$HF_TOKEN" "$HF_HOME" "$3" "$4" >"$(dirname "$0")/seen"\n'
        'echo \'AMDFLEET_SNAPSHOT {"path": "/x/snapshots/c0ffee", "commit": "c0ffee"}\'\n'
    )
    fake.chmod(0o755)
    target = weights.WeightsTarget("org/model", "v1", str(tmp_path / "cache"))
    command = weights.download_command(target, str(fake), None)
    assert "hf_secret_value" not in command
    result = sh(command, "hf_secret_value")
    assert result.returncode == 0, result.stderr
    token, home, repo, revision = (tmp_path / "seen").read_text().splitlines()
    assert (token, home, repo, revision) == ("hf_secret_value", target.cache_dir, "org/model", "v1")
    assert weights.parse_snapshot(result.stdout) == {
        "path": "/x/snapshots/c0ffee",
        "commit": "c0ffee",
    }


def test_download_progress_lines_parse() -> None:
    """The lines the download script prints (remote/weights.py ``_DOWNLOAD_PY``)."""
    assert weights.parse_progress('AMDFLEET_EXPECTED {"bytes": 2961324, "files": 7}') == (
        weights.DownloadProgress(2961324, 7, expected=True)
    )
    assert weights.parse_progress('AMDFLEET_PROGRESS {"bytes": 1048576, "files": 3}') == (
        weights.DownloadProgress(1048576, 3)
    )
    assert weights.parse_progress('AMDFLEET_PROGRESS {"bytes": "x"}') is None
    assert weights.parse_progress("Fetching 7 files: 100%") is None


def test_docker_inspect_output_parses() -> None:
    """Output shape of ``docker image inspect --format`` with the template used."""
    line = (
        '{"id": "sha256:5b1c", "digests": ["rocm/vllm-dev@sha256:9f2e"], '
        '"labels": {"io.amdfleet.dockerfile-sha256": "ab12"}}'
    )
    assert images.parse_inspect(line) == {
        "image_id": "sha256:5b1c",
        "digest": "rocm/vllm-dev@sha256:9f2e",
        "dockerfile_sha256": "ab12",
    }
    assert images.parse_inspect('{"id": "sha256:1", "digests": null}')["digest"] == ""  # type: ignore[index]
    assert images.parse_inspect("Error: No such image") is None
    build = images.build_command("x:y", "/opt/amdfleet/s-image/Dockerfile", "ab12")
    assert "--pull" not in build and "--label io.amdfleet.dockerfile-sha256=ab12" in build
