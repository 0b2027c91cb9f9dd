"""The one place the verification code talks HTTP: an OpenAI-compatible endpoint.

A benchmark client must not become the bottleneck it measures, so the streaming path
does as little as it can per chunk: it splits server-sent events on bytes, stamps each
token event with ``perf_counter`` into a list of floats, and parses JSON only for the
events that need it (the usage summary, errors, and text when the caller asks for it).
Token counts come from the server's ``usage`` (``stream_options.include_usage``), never
from counting chunks, because a server may put several tokens in one chunk.

Every way a request can go wrong (refused connection, HTTP error, timeout, a stream cut
short, a malformed event, no usage) ends as a failed :class:`RequestOutput` with its
reason; nothing here raises for a single bad request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

import httpx

from amdfleet.errors import AmdFleetError
from amdfleet.verify.transport import StreamingTransport

Endpoint = Literal["completions", "chat"]
PATHS: dict[Endpoint, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


class EndpointError(AmdFleetError):
    """The endpoint cannot be used at all (unreachable, no models, refused the key)."""

    def __init__(self, url: str, message: str, hint: str = "") -> None:
        self.url = url
        text = f"{url}: {message}"
        super().__init__(f"{text}\n  hint: {hint}" if hint else text)


@dataclass(slots=True)
class RequestOutput:
    """What one request produced, timed the way ``vllm bench serve`` times it.

    ``token_times`` holds the ``perf_counter`` time of every event that carried a
    choice (a token, or several); TTFT is the first minus ``start_time``, ITLs are the
    gaps between them, and latency ends at the last one.
    """

    success: bool = False
    error: str = ""
    start_time: float = 0.0
    token_times: list[float] = field(default_factory=list)
    prompt_len: int = 0
    output_tokens: int = 0
    text: str = ""

    @property
    def ttft(self) -> float:
        """Time to the first token event, seconds (0 when none arrived)."""
        return self.token_times[0] - self.start_time if self.token_times else 0.0

    @property
    def latency(self) -> float:
        """Time to the last token event, seconds (0 when none arrived)."""
        return self.token_times[-1] - self.start_time if self.token_times else 0.0

    @property
    def itl(self) -> list[float]:
        """Gaps between consecutive token events, seconds."""
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streamed completion (the accuracy path)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class EndpointClient:
    """An OpenAI-compatible endpoint reached through one pooled ``httpx.AsyncClient``.

    Use as an async context manager. ``concurrency`` sizes the connection pool (HTTP/1.1
    keep-alive, one connection per in-flight request); ``timeout`` is the total time a
    request may take, first byte to last. The transport defaults to
    :class:`~amdfleet.verify.transport.StreamingTransport` (see there for why).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 64,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.timeout = timeout
        headers = {"Accept-Encoding": "identity"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        connect_timeout = min(timeout, 30.0)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport
            or StreamingTransport(max_connections=concurrency, connect_timeout=connect_timeout),
        )

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def first_model(self) -> str:
        """The first model id the server lists at ``GET /v1/models``.

        Raises :class:`EndpointError` when the server is unreachable, refuses the API
        key, or lists no model.
        """
        url = f"{self.base_url}/v1/models"
        try:
            response = await self._http.get("/v1/models")
        except httpx.HTTPError as e:
            raise EndpointError(
                url, f"cannot reach the server ({_describe(e)})", "is the server up?"
            ) from e
        if response.status_code in (401, 403):
            raise EndpointError(
                url,
                f"HTTP {response.status_code}: the server refused the API key",
                "export the key in the variable named by --api-key-env (AMDFLEET_API_KEY)",
            )
        if response.status_code != 200:
            raise EndpointError(url, f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            models = response.json().get("data") or []
        except (ValueError, AttributeError) as e:
            raise EndpointError(
                url, f"not an OpenAI-compatible answer: {response.text[:200]}"
            ) from e
        if not models:
            raise EndpointError(url, "the server lists no models", "pass --model")
        return str(models[0]["id"])

    async def stream(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any],
        *,
        prompt_len: int = 0,
        keep_text: bool = False,
    ) -> RequestOutput:
        """Send one streamed request and time it; never raises for request failures.

        ``payload`` is the request body without the streaming keys, which are added
        here (``stream`` and ``stream_options.include_usage``).
        """
        body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        out = RequestOutput(prompt_len=prompt_len)
        out.start_time = perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self._stream_into(PATHS[endpoint], body, out, keep_text, endpoint)
        except TimeoutError:
            out.error = f"timeout: no complete response within {self.timeout:g}s"
        except httpx.HTTPError as e:
            out.error = _describe(e)
        if out.error:
            out.success = False
        return out

    async def complete(self, payload: dict[str, Any]) -> Completion:
        """One non-streamed ``/v1/completions`` request; raises :class:`RequestFailed`."""
        data = await self.complete_json(payload)
        try:
            text = data["choices"][0]["text"]
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError) as e:
            raise RequestFailed(f"malformed response: {str(data)[:200]!r}") from e
        return Completion(
            text=text or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def complete_json(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed ``/v1/completions`` request's JSON body; raises
        :class:`RequestFailed` (no answer, an HTTP error, or a body that is no JSON object)."""
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.post(PATHS["completions"], json=payload)
        except TimeoutError as e:
            raise RequestFailed(f"timeout: no response within {self.timeout:g}s") from e
        except httpx.HTTPError as e:
            raise RequestFailed(_describe(e)) from e
        if response.status_code != 200:
            raise RequestFailed(_http_error(response.status_code, response.content))
        try:
            data = response.json()
        except ValueError as e:
            raise RequestFailed(f"malformed response: {response.content[:200]!r}") from e
        if not isinstance(data, dict):
            raise RequestFailed(f"malformed response: {response.content[:200]!r}")
        return data

    async def _stream_into(
        self,
        path: str,
        body: dict[str, Any],
        out: RequestOutput,
        keep_text: bool,
        endpoint: Endpoint,
    ) -> None:
        async with self._http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                out.error = _http_error(response.status_code, await response.aread())
                return
            parser = _SSEParser(out, keep_text, endpoint)
            async for chunk in response.aiter_raw():
                if not parser.feed(chunk):
                    return
            parser.finish()


class RequestFailed(AmdFleetError):
    """One request failed; the message is the reason recorded for it."""


def normalize_base_url(url: str) -> str:
    """``http://host:8000``, ``.../v1`` and ``.../v1/`` all name the same server."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def error_kind(error: str) -> str:
    """The category of a failure reason (its text before the first colon)."""
    return error.split(":", 1)[0] if error else ""


class _SSEParser:
    """Splits a byte stream into server-sent events and records them into ``out``."""

    __slots__ = ("_buffer", "_endpoint", "_keep_text", "_out", "_texts", "_usage_seen")

    def __init__(self, out: RequestOutput, keep_text: bool, endpoint: Endpoint) -> None:
        self._out = out
        self._keep_text = keep_text
        self._endpoint = endpoint
        self._buffer = b""
        self._texts: list[str] = []
        self._usage_seen = False

    def feed(self, chunk: bytes) -> bool:
        """Consume one network chunk; False once the request has failed."""
        buffer = self._buffer + chunk
        if b"\r" in buffer:  # CRLF line ends, possibly split between two chunks
            buffer = buffer.replace(b"\r\n", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = buffer[start:end]
            start = end + 2
            if event and not self._event(event):
                return False
        self._buffer = buffer[start:]
        return True

    def finish(self) -> None:
        """The stream ended: decide success."""
        out = self._out
        if self._buffer.strip() and not self._event(self._buffer.strip()):
            return
        if not out.token_times:
            out.error = "empty stream: the server sent no token before closing"
        elif not self._usage_seen:
            out.error = (
                "no usage: the stream ended without a usage summary "
                "(the server must honour stream_options.include_usage)"
            )
        else:
            out.success = True
            if self._keep_text:
                out.text = "".join(self._texts)

    def _event(self, event: bytes) -> bool:
        # The hot path: one bytes search tells a token event from the rest, so JSON is
        # parsed only for usage, errors, and text the caller wants.
        if event.startswith(b"data:"):
            data = event[6:] if event.startswith(b"data: ") else event[5:]
        else:
            lines = _data_lines(event)
            if lines is None:
                return True
            if not lines:
                return self._fail(f"malformed SSE event: {event[:120]!r}")
            data = lines
        if b'"choices":[{' in data or b'"choices": [{' in data:
            self._out.token_times.append(perf_counter())
            if self._keep_text or (b'"usage"' in data and not _null_usage(data)):
                return self._parse(data, token=True)
            if not data.endswith(b"}"):
                return self._fail(f"malformed SSE event: {event[:120]!r}")
            return True
        if data == b"[DONE]":
            return True
        return self._parse(data, token=False)

    def _parse(self, data: bytes, *, token: bool) -> bool:
        try:
            message = json.loads(data)
        except ValueError:
            return self._fail(f"malformed SSE event: {data[:120]!r}")
        if not isinstance(message, dict):
            return self._fail(f"malformed SSE event: {data[:120]!r}")
        if "error" in message:
            return self._fail(f"server error in stream: {_error_text(message['error'])}")
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage_seen = True
            self._out.output_tokens = int(usage.get("completion_tokens") or 0)
            if usage.get("prompt_tokens") is not None:
                self._out.prompt_len = int(usage["prompt_tokens"])
        if token and self._keep_text:
            self._texts.append(_choice_text(message, self._endpoint))
        return True

    def _fail(self, reason: str) -> bool:
        self._out.error = reason
        return False


def _null_usage(data: bytes) -> bool:
    return b'"usage":null' in data or b'"usage": null' in data


def _data_lines(event: bytes) -> bytes | None:
    """The data of a multi-line event; None for comments/metadata, b"" if malformed."""
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith((b":", b"event:", b"id:", b"retry:")) or not line:
            continue
        else:
            return b""
    return b"\n".join(data) if data else None


def _choice_text(message: dict[str, Any], endpoint: Endpoint) -> str:
    choices = message.get("choices") or [{}]
    if endpoint == "chat":
        return str((choices[0].get("delta") or {}).get("content") or "")
    return str(choices[0].get("text") or "")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error)[:200]


def _http_error(status: int, body: bytes) -> str:
    detail = body[:200].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        detail = _error_text(json.loads(body).get("error") or detail)
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"


def _describe(e: httpx.HTTPError) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, httpx.ConnectError):
        return f"connection failed: {text}"
    if isinstance(e, httpx.TimeoutException):
        return f"timeout: {type(e).__name__} {text}".rstrip()
    if isinstance(e, httpx.RemoteProtocolError):
        return f"connection lost: {text}"
    if isinstance(e, httpx.ReadError | httpx.WriteError):
        return f"connection lost: {type(e).__name__} {text}".rstrip()
    return f"{type(e).__name__}: {text}"
