"""amdfleet.clouds.api: ``send()`` against a real local HTTP server that answers from a
script (429 with ``Retry-After`` in seconds or as an HTTP date, 5xx, dropped
connections), a closed port for transport failures, and ``error_detail`` on the error
bodies the clouds document (../shared/fixtures/cloud-apis). Waits are recorded, not
slept."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from amdfleet.clouds.api import (
    RetryPolicy,
    error_detail,
    instance_tags,
    json_object,
    retry_after,
    send,
)
from amdfleet.errors import CloudAPIError

FIXTURES = Path(__file__).resolve().parents[2] / "../shared/fixtures/cloud-apis"
ERROR_FIXTURES = sorted(FIXTURES.glob("*/error.*.json"))
RETRY = RetryPolicy(attempts=4, base_s=0.5, max_s=30.0)
TOKEN = "test-token-api-2c9d41"
DO_500 = (FIXTURES / "digitalocean/error.500.server_error.json").read_text()
DO_429 = (FIXTURES / "digitalocean/error.429.too_many_requests.json").read_text()
DROP = 0
"""Script status meaning: close the connection without answering."""


@dataclass
class Scripted:
    """A real HTTP server on 127.0.0.1 answering each request with the next scripted
    (status, headers, body); it records the requests' paths."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, path: str) -> tuple[int, dict[str, str], str]:
        with self.lock:
            self.seen.append(path)
            assert self.script, f"unscripted request {path}"
            return self.script.pop(0)


class Sleeps(list[float]):
    """Stands in for time.sleep: records each wait asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _handler(scripted: Scripted) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            status, headers, body = scripted.next(self.path)
            if status == DROP:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = body.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, httpx.Client]]:
    script = Scripted()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = httpd.server_address[:2]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    client = httpx.Client(base_url=f"http://{host!s}:{port}", headers=headers, timeout=10.0)
    try:
        yield script, client
    finally:
        client.close()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        assert script.script == [], "scripted answers left unused"


def call(client: httpx.Client, sleeps: Sleeps) -> httpx.Response:
    return send(client, "testcloud", "list sizes", "GET", "/v2/sizes", retry=RETRY, sleep=sleeps)


def ok(body: str = '{"sizes": []}') -> tuple[int, dict[str, str], str]:
    return (200, {"Content-Type": "application/json"}, body)


def test_429_waits_the_retry_after_seconds(scripted: tuple[Scripted, httpx.Client]) -> None:
    server, client = scripted
    server.script = [(429, {"Retry-After": "7"}, DO_429), ok()]
    sleeps = Sleeps()
    assert call(client, sleeps).json() == {"sizes": []}
    assert sleeps == [7.0]
    assert server.seen == ["/v2/sizes", "/v2/sizes"]


def test_429_waits_until_the_retry_after_date(scripted: tuple[Scripted, httpx.Client]) -> None:
    server, client = scripted
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    server.script = [(429, {"Retry-After": when}, DO_429), ok()]
    sleeps = Sleeps()
    call(client, sleeps)
    assert len(sleeps) == 1
    assert 15.0 < sleeps[0] <= 20.0  # the date has whole seconds; the call took some time


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        ("3600", 30.0),  # capped at max_s
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: retry at once
        ("soon", 0.5),  # not a number nor a date: backoff
    ],
)
def test_retry_after_cap_past_date_and_garbage(value: str, wait: float) -> None:
    response = httpx.Response(429, headers={"Retry-After": value})
    assert retry_after(response, RETRY, 1) == wait


def test_a_retry_after_that_is_no_date_falls_back_to_backoff() -> None:
    response = httpx.Response(429, headers={"Retry-After": "a, b"})
    assert retry_after(response, RETRY, 1) == 0.5


def test_a_retry_after_date_without_a_zone_is_utc() -> None:
    """RFC 5322's "-0000" (no zone information) is read as UTC, not refused."""
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"})
    assert retry_after(response, RETRY, 1) == 0.0  # long past: retry at once


def test_server_errors_then_success(scripted: tuple[Scripted, httpx.Client]) -> None:
    server, client = scripted
    server.script = [(500, {}, DO_500), (502, {}, "<html>Bad Gateway</html>"), ok()]
    sleeps = Sleeps()
    assert call(client, sleeps).status_code == 200
    assert sleeps == [0.5, 1.0]


def test_retries_exhausted_report_the_last_status_and_message(
    scripted: tuple[Scripted, httpx.Client],
) -> None:
    server, client = scripted
    server.script = [
        (429, {"Retry-After": "1"}, DO_429),
        (503, {}, "upstream busy"),
        (502, {}, "<html>Bad Gateway</html>"),
        (500, {"Content-Type": "application/json"}, DO_500),
    ]
    sleeps = Sleeps()
    with pytest.raises(CloudAPIError) as caught:
        call(client, sleeps)
    assert caught.value.status == 500
    assert str(caught.value) == (
        "testcloud: list sizes failed (HTTP 500): Unexpected server-side error"
    )
    assert sleeps == [1.0, 1.0, 2.0]
    assert len(server.seen) == 4


def test_a_status_not_retried_fails_at_once(scripted: tuple[Scripted, httpx.Client]) -> None:
    server, client = scripted
    body = (FIXTURES / "digitalocean/error.401.unauthorized.json").read_text()
    server.script = [(401, {"Content-Type": "application/json"}, body)]
    sleeps = Sleeps()
    with pytest.raises(CloudAPIError, match=r"HTTP 401.*Unable to authenticate you"):
        call(client, sleeps)
    assert sleeps == []


def test_a_dropped_connection_is_retried(scripted: tuple[Scripted, httpx.Client]) -> None:
    server, client = scripted
    server.script = [(DROP, {}, ""), ok()]
    sleeps = Sleeps()
    assert call(client, sleeps).status_code == 200
    assert sleeps == [0.5]


def test_a_closed_port_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # closed now: nothing listens there
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sleeps = Sleeps()
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client,
        pytest.raises(CloudAPIError) as caught,
    ):
        call(client, sleeps)
    assert caught.value.status is None
    assert "list sizes failed (no response): ConnectError" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("path", ERROR_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_error_detail_reads_the_documented_error_bodies(path: Path) -> None:
    body = json.loads(path.read_text())
    status = int(path.name.split(".")[1])
    response = httpx.Response(status, content=path.read_bytes())
    assert error_detail(response) == body["message"]


def test_error_fixtures_exist() -> None:
    assert len(ERROR_FIXTURES) >= 5  # the parametrized test above must not run empty


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        # Vultr: "All 4xx errors will return a JSON response object with an `error`
        # attribute" (vultr/README.md); no example body exists, so this one is made up.
        (b'{"error": "Invalid API token.", "status": 401}', "Invalid API token."),
        # Hot Aisle: error bodies are strings (hotaisle/FIELDS.md), e.g. "Unauthorized"
        (b'"Not Found: Resource not found"', "Not Found: Resource not found"),
        (b"Bad Request: Invalid input", "Bad Request: Invalid input"),
        # Crusoe: ErrorBody {code, message, reason, error_id} (crusoe/FIELDS.md)
        (
            b'{"code": "not_found", "message": "instance not found", "reason": "x"}',
            "instance not found",
        ),
        (b'{"errors": ["size invalid", "region invalid"]}', "size invalid; region invalid"),
        (b'{"error": {"message": "nested"}}', "nested"),
        (b"", "Service Unavailable"),
    ],
)
def test_error_detail_other_documented_shapes(content: bytes, detail: str) -> None:
    assert error_detail(httpx.Response(503, content=content)) == detail


def test_json_object_reports_a_malformed_body() -> None:
    for content in (b'{"droplet": {"id": 5', b"[1, 2]"):
        with pytest.raises(CloudAPIError, match="malformed response") as caught:
            json_object(httpx.Response(200, content=content), "testcloud", "get droplet")
        assert caught.value.status == 200
    assert json_object(httpx.Response(200, content=b'{"a": 1}'), "t", "op") == {"a": 1}


def test_instance_tags() -> None:
    assert instance_tags("demo", "prod", "node0") == (
        "amdfleet",
        "amdfleet-project-demo",
        "amdfleet-stack-prod",
        "amdfleet-node-node0",
    )
