"""A small, real OpenAI-compatible HTTP server for tests of the verification code.

Why it exists, next to the real vLLM the e2e tests run: a random-weight model cannot
give known GSM8K answers, so the accuracy scorer is tested here on scripted responses
(by question); and faults (HTTP 500s, malformed SSE, a stream cut mid-way, a missing
usage summary, a server that hangs) cannot be made to happen on demand in vLLM.

It is a real server on 127.0.0.1, or on a given address (stdlib ``ThreadingHTTPServer``,
HTTP/1.1 keep-alive, chunked SSE), run in a thread by :class:`OpenAIServer`, or as a
subprocess with
``python tests/support/openai_server.py [--token-delay S]`` (prints ``PORT <n>``) for
tests that SIGKILL it mid-run. Implements ``GET /v1/models``, ``GET /health``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed and not), and
``GET /metrics`` with vLLM's generated-tokens counter in the Prometheus text form vLLM
0.32 serves (:data:`METRICS`): the tokens it generated plus what a test adds to
:attr:`OpenAIServer.generated_tokens`, as a busy engine's other requests would.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stub-model"
FAULTS = (
    "http500",  # answer HTTP 500 with a JSON error
    "malformed_sse",  # a token event whose JSON is cut off
    "hang",  # send headers, then nothing until the server stops
    "close_mid_stream",  # send a few tokens, then drop the connection
    "missing_usage",  # a complete stream without the usage summary
    "error_event",  # a stream that carries {"error": ...} instead of tokens
    "stall",  # a non-streamed completion that gets no answer until the server stops
)
METRICS = (
    "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
    "# TYPE vllm:generation_tokens_total counter\n"
    'vllm:generation_tokens_total{{engine="0",model_name="{model}"}} {tokens:.1f}\n'
)
"""/metrics as vLLM 0.32.0 (CPU) served it, measured, cut to the counter's lines."""
_QUESTION = re.compile(r"Question: (.*?)\nAnswer:", re.S)


@dataclass
class Script:
    """What the server answers: scripted texts by question, and faults by request number.

    ``fault`` applies to requests whose 1-based number is a multiple of ``fault_every``.
    """

    answers: Mapping[str, str] = field(default_factory=dict)
    default_answer: str = "I do not know."
    fault: str | None = None
    fault_every: int = 1
    token_delay: float = 0.0
    token_ids: Callable[[Any], list[int]] | None = None
    """Generated token ids by request ``prompt`` (text or ids), returned in
    ``choices[].token_ids`` when a completion asks ``return_token_ids`` (as vLLM does)."""


class OpenAIServer:
    """The stub server in a background thread; use as a context manager."""

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1") -> None:
        """``host``: the address to listen on (a lab's bridge address makes it reachable
        from the lab's hosts)."""
        self.script = script or Script()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.received = 0
        self.completed = 0
        self.generated_tokens = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.completed_event = threading.Condition(self.lock)
        self._httpd = _QuietServer((host, 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.client_ports: set[int] = set()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Release hanging handlers and stop serving."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def wait_completed(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests completed (or ``timeout``); True if they did."""
        with self.completed_event:
            return self.completed_event.wait_for(lambda: self.completed >= count, timeout)


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-response (timeouts, Ctrl-C tests) are expected here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            elif self.path == "/metrics":
                with server.lock:
                    text = METRICS.format(model=MODEL, tokens=server.generated_tokens)
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with server.lock:
                server.received += 1
                number = server.received
                server.bodies.append(body)
                server.client_ports.add(self.client_address[1])
                server.headers.append(dict(self.headers.items()))
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._answer(body, number)
            finally:
                with server.completed_event:
                    server.in_flight -= 1
                    server.completed += 1
                    server.completed_event.notify_all()

        def _answer(self, body: dict[str, Any], number: int) -> None:
            script = server.script
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            fault = script.fault if number % script.fault_every == 0 else None
            if fault == "http500":
                self._json(500, {"error": {"message": "injected failure", "code": 500}})
                return
            if fault == "stall" and not body.get("stream"):
                server.stopping.wait()
                return
            chat = self.path.endswith("chat/completions")
            prompt = _prompt_text(body, chat)
            tokens = _tokens(body, _answer_for(prompt, script))
            with server.lock:
                server.generated_tokens += len(tokens)
            usage = {
                "prompt_tokens": len(prompt.split()) + 1,
                "completion_tokens": len(tokens),
                "total_tokens": len(prompt.split()) + 1 + len(tokens),
            }
            if not body.get("stream"):
                text = "".join(tokens)
                choice = {"index": 0, "finish_reason": "stop"}
                choice.update(
                    {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
                )
                if body.get("return_token_ids") and script.token_ids is not None:
                    choice["token_ids"] = script.token_ids(body.get("prompt"))
                self._json(
                    200,
                    {
                        "id": "cmpl-stub",
                        "object": "text_completion",
                        "model": MODEL,
                        "choices": [choice],
                        "usage": usage,
                    },
                )
                return
            self._stream(tokens, usage, chat, fault, body)

        def _stream(
            self,
            tokens: list[str],
            usage: dict[str, int],
            chat: bool,
            fault: str | None,
            body: dict[str, Any],
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if fault == "hang":
                server.stopping.wait()
                return
            if fault == "error_event":
                self._event({"error": {"message": "injected stream error", "code": 500}})
                self._chunk(b"")
                return
            for i, token in enumerate(tokens):
                if fault == "close_mid_stream" and i == min(2, len(tokens) - 1):
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "malformed_sse" and i == min(1, len(tokens) - 1):
                    self._chunk(b'data: {"choices": [{"index": 0, "text": "tru\n\n')
                    continue
                delta = {"delta": {"content": token}} if chat else {"text": token}
                self._event(
                    {"id": "cmpl-stub", "choices": [{"index": 0, **delta, "finish_reason": None}]}
                )
                if server.script.token_delay:
                    time.sleep(server.script.token_delay)
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            if include_usage and fault != "missing_usage":
                self._event({"id": "cmpl-stub", "choices": [], "usage": usage})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _event(self, payload: dict[str, Any]) -> None:
            self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if chat:
        return " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    return str(body.get("prompt", ""))


def _answer_for(prompt: str, script: Script) -> str:
    questions = _QUESTION.findall(prompt)
    question = questions[-1].strip() if questions else prompt.strip()
    return script.answers.get(question, script.default_answer)


def _tokens(body: dict[str, Any], answer: str) -> list[str]:
    # With ignore_eos the server generates exactly max_tokens tokens, like vLLM; else
    # the scripted answer, one "token" per word, cut at max_tokens.
    limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    if body.get("ignore_eos"):
        return [f" t{i}" for i in range(limit)]
    words = re.findall(r"\S+\s*|\s+", answer)
    return words[:limit] or [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    server = OpenAIServer(Script(token_delay=args.token_delay))
    with server:
        print(f"PORT {server.url.rsplit(':', 1)[1]}", flush=True)
        server.stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
