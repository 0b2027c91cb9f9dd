"""Live progress of provider operations, shown by ``pulumi up`` on the resource's line.

The Pulumi engine starts the provider plugin (:mod:`amdfleet.plugin`) with the address of
its gRPC ``Engine`` service as the argument, and names the resource in every request. The
plugin records the address (:func:`set_engine_address`) and hands each provider method the
request's URN as the ``resource_urn`` property; :class:`ResourceProgress` sends
``LogRequest``\\ s for that resource:

* :meth:`ResourceProgress.step` -- a new phase ("uploading 3 files"), sent at once;
* :meth:`ResourceProgress.status` -- a counter or the latest log line, at most one per
  ``interval`` (the latest text wins: a deferred one is sent when the interval is over),
  except that a phase's first status (the first after a step) shows at once;
* :meth:`ResourceProgress.note` -- a milestone ("engine ready after 52 s"), kept by the CLI
  under "Diagnostics" when the update ends.

Steps and statuses are *ephemeral*: the CLI shows each as the resource's live status and
then forgets it. Every message is one line of at most :data:`MAX_CHARS` characters, with
terminal escapes removed and every secret of the resource masked as ``***`` (the values
of the secret inputs, see :func:`secret_values`, plus any the caller adds).

Outside the real engine (no engine address given to the plugin, or provider code run
in-process) or without a URN, a
ResourceProgress does nothing. A failure to send (engine gone, slow, refusing) disables it for
the rest of the operation; it never raises and never fails the operation it reports on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import grpc
from pulumi.runtime import rpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

from amdfleet.remote.transport.connection import Redactor

URN_KEY = "resource_urn"
"""The property holding the resource's own URN while a provider method runs (the plugin
puts the URN of the request there; never an input or an output)."""
SECRET_KEYS = ("hf_token", "secret_env", "api_key")
"""Inputs whose string values are secrets (masked in every message)."""
STATUS_INTERVAL_S = 1.0
SEND_TIMEOUT_S = 2.0
MAX_CHARS = 200
MAX_WARNING_CHARS = 4000

_ADDRESS = re.compile(r"(?:[\w.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


_engine: str | None = None


def set_engine_address(address: str | None) -> None:
    """Where progress goes in this process: the engine's gRPC address the provider plugin
    was started with (:mod:`amdfleet.plugin.server` calls this once), or None."""
    global _engine
    _engine = address if address and _ADDRESS.fullmatch(address) else None


def engine_address() -> str | None:
    """The engine's gRPC address when this process is the provider plugin the Pulumi
    engine started, else None."""
    return _engine


def secret_values(props: Mapping[str, Any]) -> list[str]:
    """Every string under a :data:`SECRET_KEYS` input, and every string the SDK marks
    secret anywhere in ``props``."""
    found: list[str] = []
    for key, value in props.items():
        _collect(value, found, secret=key in SECRET_KEYS)
    return found


class ResourceProgress:
    """Reports one operation on one resource to the engine's display. Thread-safe.

    Build one per provider call (providers hold no clients); use it as a context manager
    so the channel and any deferred status are released when the call ends. Without an
    ``engine``, or with a ``urn`` that is not a Pulumi URN, it sends nothing.
    """

    def __init__(
        self,
        urn: str | None,
        engine: str | None,
        *,
        secrets: Iterable[str] = (),
        interval: float = STATUS_INTERVAL_S,
    ) -> None:
        self._urn = urn if urn and urn.startswith("urn:pulumi:") else None
        self._engine = engine
        self._redact = Redactor(secrets)
        self._interval = interval
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._closed = not (self._urn and engine)
        self._last_text = ""
        self._last_at = float("-inf")
        self._pending: str | None = None
        self._timer: threading.Timer | None = None

    @classmethod
    def for_resource(
        cls, props: Mapping[str, Any], *, secrets: Iterable[str] = ()
    ) -> ResourceProgress:
        """The reporter for the resource whose inputs (or outputs) are ``props``: its URN
        from :data:`URN_KEY`, the engine from :func:`engine_address`, the secrets from
        :func:`secret_values` plus ``secrets``."""
        urn = rpc.unwrap_rpc_secret(props.get(URN_KEY))
        urn = urn if isinstance(urn, str) else None
        return cls(urn, engine_address(), secrets=[*secret_values(props), *secrets])

    @property
    def enabled(self) -> bool:
        """False when messages go nowhere (no engine, no URN, closed or broken): callers
        skip work done only to report (an extra remote call)."""
        return not self._closed

    def step(self, text: str) -> None:
        """Show ``text`` now as the resource's status: a new phase of the operation (its
        first :meth:`status` is sent at once too)."""
        with self._lock:
            self._pending = None
            self._send(text, ephemeral=True, status=False)
            self._last_at = float("-inf")

    def status(self, text: str) -> None:
        """Show ``text`` as the resource's status, at most once per interval.

        A text equal to the one shown is not sent again; one arriving within the interval
        is deferred, and only the latest deferred text is sent when the interval ends.
        """
        with self._lock:
            text = self._clean(text)
            if self._closed or text == self._last_text:
                self._pending = None
                return
            wait = self._last_at + self._interval - time.monotonic()
            if wait <= 0:
                self._pending = None
                self._send(text, ephemeral=True, status=True)
                return
            self._pending = text
            if self._timer is None:
                self._arm(wait)

    def note(self, text: str) -> None:
        """A milestone: shown now, and kept by the CLI under "Diagnostics"."""
        with self._lock:
            self._pending = None
            self._send(text, ephemeral=False, status=False)

    def warn(self, text: str) -> None:
        """A problem found (``pulumi refresh`` finding an engine that does not serve): a
        warning the CLI keeps under "Diagnostics". Several lines are kept as lines (a log
        tail), each cleaned like a status; at most :data:`MAX_WARNING_CHARS` in all."""
        with self._lock:
            self._pending = None
            lines = [self._clean(line) for line in text.splitlines()]
            body = "\n".join(line for line in lines if line)[:MAX_WARNING_CHARS]
            self._send(body, ephemeral=False, status=False, severity=engine_pb2.WARNING)

    def close(self) -> None:
        """Drop any deferred status and close the channel; idempotent."""
        with self._lock:
            self._closed = True
            self._pending = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _arm(self, wait: float) -> None:
        self._timer = threading.Timer(wait, self._flush)
        self._timer.daemon = True
        self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending is None or self._closed:
                return
            wait = self._last_at + self._interval - time.monotonic()
            if wait > 0:  # armed in an earlier phase: the interval restarted since
                self._arm(wait)
                return
            text, self._pending = self._pending, None
            self._send(text, ephemeral=True, status=True)

    def _send(
        self,
        text: str,
        *,
        ephemeral: bool,
        status: bool,
        severity: engine_pb2.LogSeverity.ValueType = engine_pb2.INFO,
    ) -> None:
        """Send (the lock is held); a ``status`` restarts the interval. Any failure
        disables the reporter."""
        if severity == engine_pb2.INFO:
            text = self._clean(text)
        if self._closed or not text:
            return
        assert self._urn is not None and self._engine is not None
        request = engine_pb2.LogRequest(
            severity=severity, message=text, urn=self._urn, ephemeral=ephemeral
        )
        try:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self._engine)
            engine_pb2_grpc.EngineStub(self._channel).Log(request, timeout=SEND_TIMEOUT_S)
        except Exception:
            # ResourceProgress is a courtesy: an engine that cannot take it must not cost the
            # operation anything more, so stop trying.
            self._closed = True
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            return
        self._last_text = text
        if status:
            self._last_at = time.monotonic()

    def _clean(self, text: str) -> str:
        text = _SPACES.sub(" ", _ESCAPES.sub("", self._redact(text))).strip()
        return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1].rstrip() + "…"


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units: ``512 B``, ``3.4 MiB``, ``140.2 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A duration for people: ``52 s``, ``12 min 03 s``, ``2 h 05 min``."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _collect(value: Any, found: list[str], *, secret: bool) -> None:
    if rpc.is_rpc_secret(value):
        _collect(rpc.unwrap_rpc_secret(value), found, secret=True)
    elif isinstance(value, str):
        if secret and value:
            found.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found, secret=secret)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found, secret=secret)
