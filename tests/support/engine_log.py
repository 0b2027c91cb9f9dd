"""A real ``pulumirpc.Engine`` gRPC service that records the log messages sent to it.

Why it exists: the Pulumi CLI's engine is what receives provider progress (the
``Engine.Log`` call) and draws it on each resource's line; unit and provider tests serve
the same service here, on 127.0.0.1, so a test sees exactly what was sent (URN, severity,
ephemeral flag, text) and when it arrived. The real CLI is exercised by
``tests/providers/test_progress_cli.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc


@dataclass(frozen=True)
class LogEntry:
    """One ``Log`` request, with the monotonic time it arrived."""

    at: float
    urn: str
    severity: int
    message: str
    ephemeral: bool


class EngineLog(engine_pb2_grpc.EngineServicer):  # type: ignore[misc]
    """The service, running; use it as a context manager."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        engine_pb2_grpc.add_EngineServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        """What the CLI passes to plugins: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def Log(self, request: engine_pb2.LogRequest, context: Any) -> empty_pb2.Empty:
        entry = LogEntry(
            time.monotonic(),
            request.urn,
            request.severity,
            request.message,
            request.ephemeral,
        )
        with self._changed:
            self._entries.append(entry)
            self._changed.notify_all()
        return empty_pb2.Empty()

    def entries(self, urn: str | None = None) -> list[LogEntry]:
        """Every message so far (for ``urn`` only, if given), in arrival order."""
        with self._changed:
            return [e for e in self._entries if urn is None or e.urn == urn]

    def messages(self, urn: str | None = None, *, ephemeral: bool | None = None) -> list[str]:
        """The texts so far (ephemeral ones only, or permanent ones only, if asked)."""
        return [
            e.message for e in self.entries(urn) if ephemeral is None or e.ephemeral == ephemeral
        ]

    def wait_for(self, matches: Callable[[LogEntry], bool], timeout: float = 30.0) -> LogEntry:
        """The first message ``matches`` accepts, waiting for it at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for entry in self._entries:
                    if matches(entry):
                        return entry
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n".join(e.message for e in self._entries)
                    raise AssertionError(f"no matching message in {timeout:g} s; saw:\n{seen}")
                self._changed.wait(remaining)

    def close(self) -> None:
        """Stop the server (at once); idempotent."""
        self._server.stop(0).wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
