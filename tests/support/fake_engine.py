#!/usr/bin/env python3
"""A stand-in engine for EngineService provider tests: a real HTTP server process.

Why it exists: the provider's job is to upload, start, wait for readiness, restart and
stop an engine process; vLLM (CPU) takes about a minute to start and cannot be told to
crash, hang or come up late on demand. This script is started by the *real* rendered
launch script (process runtime, ``engine.executable`` pointed here) with vLLM's argv
(``serve MODEL --host H --port P --served-model-name N ...``) and serves ``/health``,
``/v1/models`` and a one-token ``/v1/completions`` (requiring ``VLLM_API_KEY`` like vLLM
does). The real vLLM is exercised
end to end by the program tests; this covers the failure paths.

Multi-node argv (``--nnodes N --node-rank R --master-addr A --master-port P``) is
accepted as rendered, with a rendezvous like vLLM's: the head listens on the master
address and port and starts serving only once the N-1 workers have connected; a
``--headless`` node (a worker: it serves no API, and its ``--host`` is the head's
address, which it could not bind) connects to the head, retrying for up to 60 s, then
stays up until stopped, also when its head's connection closes (vLLM's worker does not
exit when its head dies: measured). So a worker that dies at start keeps the head from
ever serving, as it would keep vLLM's. A head whose worker's connection closes keeps
answering ``/health`` and ``/v1/models`` while its completions hang from then on, as
vLLM's head does after losing a pipeline stage (ENVIRONMENT.md).

SIGUSR1 makes it exit with status 0 at once, as vLLM's API server did when a pipeline
worker process of its own was killed (issue 22): an engine that stops cleanly without
being asked.
SIGUSR2 makes its completions hang from then on, as a head's do whose pipeline lost a
stage (what amdfleet's watchdog is for).

Behaviour comes from the environment (set through the stack's ``engine.extra_env``):
- ``FAKE_ENGINE_MODE``: ``ok`` (default), ``exit`` (exit 3 after printing an error),
  ``never-ready`` (``/health`` answers 503 forever), ``late`` (503 until
  ``FAKE_ENGINE_READY_AFTER`` seconds have passed), ``hang`` (``/health`` and
  ``/v1/models`` answer 200, but a completion never answers: vLLM's head after a
  pipeline stage's node died).
- ``FAKE_ENGINE_MODE_RANK<r>``: the mode of the node with ``--node-rank r`` alone (a
  stack's environment is the same on every node).
- ``FAKE_ENGINE_ECHO_CONFIG=1``: log its configuration with the API key in it, as SGLang's
  ``server_args=ServerArgs(...)`` line does.
- ``FAKE_ENGINE_FAIL_IF=<path>``: exit 3 at start while ``path`` exists (an engine that
  keeps failing from some moment on, to spend its supervisor's restarts).
- ``FAKE_ENGINE_CHILD=1``: fork a worker process that stays in the engine's process group
  and outlives the server if the server alone is killed (as vLLM's EngineCore does).
- it records its pid (and its worker's, ``child_pid``), argv and the environment keys it
  saw in ``$FAKE_ENGINE_RECORD`` (a JSON file) if set.

Standard library only: it runs under the host's ``/usr/bin/python3``.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sys
import threading
import time

_LOST_WORKER = threading.Event()


def main(argv: list[str]) -> int:
    options = _options(argv)
    rank = options.get("--node-rank", "0")
    mode = os.environ.get(f"FAKE_ENGINE_MODE_RANK{rank}") or os.environ.get(
        "FAKE_ENGINE_MODE", "ok"
    )
    print(f"fake engine: mode={mode} argv={' '.join(argv)}", flush=True)
    signal.signal(signal.SIGUSR1, _exit_cleanly)
    signal.signal(signal.SIGUSR2, lambda *_: _LOST_WORKER.set())
    if os.environ.get("FAKE_ENGINE_ECHO_CONFIG"):
        key = os.environ.get("VLLM_API_KEY")
        print(f"fake engine: server_args=ServerArgs(api_key={key!r})", flush=True)
    child = _fork_worker() if os.environ.get("FAKE_ENGINE_CHILD") else None
    _record(argv, child)
    fail_if = os.environ.get("FAKE_ENGINE_FAIL_IF")
    if mode == "exit" or (fail_if and os.path.exists(fail_if)):
        print("fake engine: RuntimeError: simulated failure while loading weights", flush=True)
        return 3
    if "--headless" in argv:
        print("fake engine: headless worker, serving no API", flush=True)
        joined = _join(options)  # held open: the head sees the worker as long as it lives
        print(f"fake engine: joined the head at {joined.getpeername()}", flush=True)
        _await_close(joined)
        print("fake engine: the head closed the connection; waiting on", flush=True)
        signal.pause()  # until the provider's SIGTERM ends the process group
        return 0
    nnodes = int(options.get("--nnodes", "1"))
    if nnodes > 1:
        workers = _rendezvous(options, nnodes - 1)
        print(f"fake engine: {len(workers)} worker(s) joined", flush=True)
        for worker in workers:
            threading.Thread(target=_watch_worker, args=(worker,), daemon=True).start()
    ready_at = time.monotonic() + float(os.environ.get("FAKE_ENGINE_READY_AFTER", "0"))
    handler = _handler(mode, ready_at, options.get("--served-model-name", "model"))
    server = http.server.ThreadingHTTPServer(
        (options.get("--host", "127.0.0.1"), int(options.get("--port", "8000"))), handler
    )
    print("fake engine: Application startup complete.", flush=True)
    server.serve_forever()
    return 0


def _rendezvous(options: dict[str, str], workers: int) -> list[socket.socket]:
    """Listen on the master address and port until ``workers`` workers have connected."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options["--master-addr"], int(options["--master-port"])))
    listener.listen(workers)
    print(f"fake engine: waiting for {workers} worker(s)", flush=True)
    return [listener.accept()[0] for _ in range(workers)]


def _join(options: dict[str, str]) -> socket.socket:
    """Connect to the head's rendezvous, retrying while it is not listening yet."""
    address = (options["--master-addr"], int(options["--master-port"]))
    give_up = time.monotonic() + 60
    while True:
        try:
            return socket.create_connection(address, timeout=5)
        except OSError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.2)  # a worker polling for its head, as vLLM's do


def _await_close(peer: socket.socket) -> None:
    """Block until ``peer`` is closed or reset by the other side."""
    peer.settimeout(None)
    try:
        while peer.recv(1024):
            pass
    except OSError:
        pass


def _watch_worker(worker: socket.socket) -> None:
    _await_close(worker)
    print("fake engine: Connection closed by peer (a worker); completions hang", flush=True)
    _LOST_WORKER.set()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    print("fake engine: exiting with status 0 (SIGUSR1)", flush=True)
    os._exit(0)


def _options(argv: list[str]) -> dict[str, str]:
    options = {}
    for i, token in enumerate(argv):
        if token.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            options[token] = argv[i + 1]
    return options


def _fork_worker() -> int:
    pid = os.fork()
    if pid == 0:  # the worker: idle until its process group is stopped
        signal.pause()
        os._exit(0)
    return pid


def _record(argv: list[str], child: int | None = None) -> None:
    path = os.environ.get("FAKE_ENGINE_RECORD")
    if path:
        record = {
            "pid": os.getpid(),
            "child_pid": child,
            "argv": argv,
            "env_keys": sorted(os.environ),
        }
        with open(path, "w") as f:
            json.dump(record, f)


def _handler(mode: str, ready_at: float, served: str) -> type[http.server.BaseHTTPRequestHandler]:
    key = os.environ.get("VLLM_API_KEY")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = mode in ("ok", "hang") or (mode == "late" and time.monotonic() >= ready_at)
            if self.path == "/health":
                self._send(200 if ready else 503, b"")
            elif self.path == "/v1/models":
                if key and self.headers.get("Authorization") != f"Bearer {key}":
                    self._send(401, b'{"error": "Unauthorized"}')
                else:
                    self._send(200, json.dumps({"data": [{"id": served}]}).encode())
            else:
                self._send(404, b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/completions":
                self._send(404, b"")
            elif key and self.headers.get("Authorization") != f"Bearer {key}":
                self._send(401, b'{"error": "Unauthorized"}')
            elif request.get("model") != served:
                self._send(404, b'{"error": "The model does not exist."}')
            elif mode == "hang" or _LOST_WORKER.is_set():
                time.sleep(3600)  # the client's deadline ends it
            else:
                choice = {"index": 0, "text": "2", "finish_reason": "length"}
                self._send(200, json.dumps({"choices": [choice]}).encode())

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
