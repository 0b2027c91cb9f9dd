"""The SSE parser and the HTTP/1.1 transport's byte handling, fed byte by byte."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from amdfleet.verify.client import RequestOutput, _SSEParser, normalize_base_url
from amdfleet.verify.transport import StreamingTransport, _Connection

# A real vLLM 0.32 completions stream (captured from the tiny Llama), trimmed.
VLLM_STREAM = (
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
    b'"choices":[{"index":0,"text":"Ste","logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
    b'"choices":[{"index":0,"text":"94","logprobs":null,"finish_reason":"length"}]}\n\n'
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
    b'"choices":[],"usage":{"prompt_tokens":8,"total_tokens":10,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def _parse(chunks: list[bytes], keep_text: bool = False) -> RequestOutput:
    out = RequestOutput(prompt_len=5)
    parser = _SSEParser(out, keep_text, "completions")
    for chunk in chunks:
        if not parser.feed(chunk):
            return out
    parser.finish()
    return out


@pytest.mark.parametrize("size", [1, 7, 64, len(VLLM_STREAM)])
def test_any_split_gives_the_same_result(size: int) -> None:
    chunks = [VLLM_STREAM[i : i + size] for i in range(0, len(VLLM_STREAM), size)]
    out = _parse(chunks, keep_text=True)
    assert out.success, out.error
    assert len(out.token_times) == 2
    assert (out.output_tokens, out.prompt_len) == (2, 8)
    assert out.text == "Ste94"


@pytest.mark.parametrize("size", [1, 2, 5])
def test_crlf_stream_split_anywhere(size: int) -> None:
    stream = VLLM_STREAM.replace(b"\n", b"\r\n")
    out = _parse([stream[i : i + size] for i in range(0, len(stream), size)])
    assert out.success, out.error
    assert len(out.token_times) == 2 and out.output_tokens == 2


def test_crlf_comments_and_spacing_variants() -> None:
    stream = (
        b": ping\r\n\r\n"
        b'data:{"choices": [{"index": 0, "text": "a"}]}\r\n\r\n'
        b'event: message\ndata: {"choices": [], "usage": {"completion_tokens": 1}}\n\n'
    )
    out = _parse([stream])
    assert out.success, out.error
    assert len(out.token_times) == 1 and out.output_tokens == 1


def test_usage_inside_the_last_token_event_counts_both() -> None:
    # Servers may put usage on the last token chunk (choices non-empty).
    stream = (
        b'data: {"choices":[{"index":0,"text":"a"}],"usage":null}\n\n'
        b'data: {"choices":[{"index":0,"text":"b"}],"usage":{"completion_tokens":2,'
        b'"prompt_tokens":3}}\n\n'
    )
    out = _parse([stream])
    assert out.success and len(out.token_times) == 2 and out.output_tokens == 2


def test_chat_deltas_and_role_chunk() -> None:
    out = RequestOutput()
    parser = _SSEParser(out, True, "chat")
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    token = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    usage = {"choices": [], "usage": {"completion_tokens": 1, "prompt_tokens": 4}}
    for event in (role, token, usage):
        assert parser.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    parser.finish()
    assert out.success and out.text == "hi"
    # like vLLM's client, the role chunk is the first event: TTFT is taken there
    assert len(out.token_times) == 2


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b'data: {"choices":[{"index":0,"text":"a"\n\n', "malformed SSE"),
        (b"garbage line\n\n", "malformed SSE"),
        (b'data: {"choices":[],"usage":{"completion_tokens":1}\n\n', "malformed SSE"),
        (b'data: {"choices":[{"index":0,"text":"a"}]}\n\ndata: [DONE]\n\n', "no usage"),
        (b'data: {"error":{"message":"overloaded"}}\n\n', "server error in stream"),
        (b"data: [DONE]\n\n", "empty stream"),
    ],
)
def test_bad_streams_fail_with_a_reason(stream: bytes, reason: str) -> None:
    out = _parse([stream])
    assert not out.success
    assert out.error.startswith(reason), out.error


def test_timing_properties() -> None:
    out = RequestOutput(start_time=1.0, token_times=[1.5, 1.75, 2.0])
    assert out.ttft == 0.5
    assert out.latency == 1.0
    assert out.itl == [0.25, 0.25]
    assert RequestOutput().ttft == 0.0


@pytest.mark.parametrize(
    "url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"]
)
def test_base_url_forms(url: str) -> None:
    assert normalize_base_url(url) == "http://h:8000"


# --- transport: HTTP/1.1 response parsing -------------------------------------------

CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)


def _feed(data: bytes, size: int) -> _Connection:
    connection = _Connection()
    for i in range(0, len(data), size):
        connection.data_received(data[i : i + size])
    return connection


@pytest.mark.parametrize("size", [1, 3, 17, len(CHUNKED)])
def test_chunked_body_in_any_split(size: int) -> None:
    connection = _feed(CHUNKED, size)
    assert connection._head is not None and connection._head[0] == 200
    assert b"".join(connection._chunks) == b"hello world"
    assert connection.finished() and connection.reusable()


def test_content_length_body_and_connection_close() -> None:
    data = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom"
    )
    connection = _feed(data, 5)
    assert connection._head is not None and connection._head[0] == 500
    assert b"".join(connection._chunks) == b"boom"
    assert connection.finished() and not connection.reusable()


def test_trailers_after_the_last_chunk() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nx-t: 1\r\n\r\n"
    connection = _feed(data, 4)
    assert connection.finished() and b"".join(connection._chunks) == b"a"


def test_malformed_status_line_is_a_protocol_error() -> None:
    connection = _feed(b"SSH-2.0-OpenSSH\r\n\r\n", 100)
    assert connection._lost is not None and "malformed status line" in str(connection._lost)


def test_lost_connection_mid_body_is_remembered() -> None:
    connection = _feed(CHUNKED[:-20], 1000)  # cut inside the second chunk's size line
    connection.connection_lost(None)
    assert not connection.finished() and not connection.reusable()
    assert b"".join(connection._chunks) == b"hello"  # the first chunk arrived whole
    assert isinstance(connection._lost, ConnectionResetError)
    assert "peer closed the connection" in str(connection._lost)


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once() -> None:
    # The server answers the first request, then closes the connection when the second
    # arrives on it (its keep-alive ran out): the transport resends on a new connection.
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len(seen)
        seen.append(0)
        while await reader.readuntil(b"\r\n\r\n"):
            seen[connection] += 1
            if connection == 0 and seen[0] == 2:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def go() -> list[int]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = StreamingTransport(max_connections=1)
        async with server, httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.text == "ok"
        return [response.status_code]

    assert asyncio.run(go()) == [200]
    assert seen == [2, 1]
