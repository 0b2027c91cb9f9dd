"""Drive the dynamic-provider host over gRPC, call by call, as the engine does.

The process is the one the Pulumi engine starts for this project's dynamic resources:
``python -u -m amdfleet.providers.server`` (the SDK's ``pulumi.dynamic`` host, run by
amdfleet's ``pulumi-python`` plugin; cwd = the project root, so providers defined in the
project's packages unpickle by reference). It prints a port and serves the
``pulumirpc.ResourceProvider`` gRPC service. Whole programs run under the real CLI
(tests/support/pulumi_cli.py); this is the faster, unit-level seam.
:class:`ProviderHost` starts it and calls Configure, Check, Diff, Create, Read, Update and
Delete with the engine's conventions:

* ``__provider`` holds the provider pickled by ``serialize_provider`` (dill, base64,
  ``recurse=True``) and is a secret unless the provider opts out, like ``dynamic.Resource``
  makes it (:func:`with_provider`).
* Values cross the wire as protobuf Structs built by ``pulumi.runtime.rpc``. The dynamic
  host answers ``acceptSecrets: false`` to Configure, so -- like the engine -- secrets are
  sent as plain values and the results are re-marked secret where the corresponding input
  was secret (the engine's ``annotateSecrets``).
* Diff and Update receive the previous *outputs* as ``olds`` (plus ``old_inputs``);
  Check receives the previous *inputs*. Check and Diff accept unknowns (preview).

Values are plain Python dicts. A secret is the SDK's in-memory form of the secret
signature (``secret(v)`` / ``is_secret(v)`` / ``reveal(v)``); an unknown is the string
:data:`UNKNOWN` (what the wire uses).
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf import struct_pb2
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from amdfleet.remote.transport.connection import tail_lines
from tests.support.files import tail_file

PROVIDER_KEY = "__provider"
UNKNOWN = rpc.UNKNOWN
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"
START_TIMEOUT = 60.0
CALL_TIMEOUT = 600.0


def secret(value: Any) -> dict[str, Any]:
    """Mark ``value`` secret (the SDK's in-memory form of the wire's secret signature)."""
    wrapped: dict[str, Any] = rpc.wrap_rpc_secret(value)
    return wrapped


def is_secret(value: Any) -> bool:
    """True when ``value`` is marked secret."""
    return bool(rpc.is_rpc_secret(value))


def reveal(value: Any) -> Any:
    """``value`` with every secret marker removed, recursively."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def contains_secrets(value: Any) -> bool:
    """True when ``value`` is or holds a secret."""
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secrets(v) for v in value)
    return False


def with_provider(provider: ResourceProvider, props: Mapping[str, Any]) -> dict[str, Any]:
    """``props`` plus ``__provider``, exactly as ``pulumi.dynamic.Resource`` builds it."""
    if PROVIDER_KEY in props:
        raise ValueError("a dynamic resource must not define the __provider key")
    blob = serialize_provider(provider)
    always = getattr(provider, "serialize_as_secret_always", True)
    return {**props, PROVIDER_KEY: secret(blob) if always else blob}


class ProviderCallError(Exception):
    """A provider method raised (or the host failed); ``message`` is the exception text."""

    def __init__(self, method: str, urn: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.urn = urn
        self.code = code
        self.details = details
        self.message = _exception_text(details)
        super().__init__(f"{method} {urn}: {self.message}")


@dataclass(frozen=True)
class CheckOutcome:
    """Check's answer: the inputs to use and any validation failures (property, reason)."""

    inputs: dict[str, Any]
    failures: list[tuple[str, str]]


@dataclass(frozen=True)
class DiffOutcome:
    """Diff's answer. ``changes`` is None when the provider did not say (DIFF_UNKNOWN)."""

    changes: bool | None
    replaces: list[str] = field(default_factory=list)
    delete_before_replace: bool = False

    @property
    def replace(self) -> bool:
        """True when the change needs a replacement."""
        return bool(self.replaces)


@dataclass(frozen=True)
class CreateOutcome:
    """Create's answer: the new resource id and its outputs (including ``__provider``)."""

    id: str
    outputs: dict[str, Any]


@dataclass(frozen=True)
class ReadOutcome:
    """Read's answer; an empty ``id`` means the resource no longer exists."""

    id: str
    outputs: dict[str, Any]
    inputs: dict[str, Any] | None


class ProviderHost:
    """A running provider host and a client that speaks to it like the engine.

    Thread-safe (gRPC stubs are). Close it (or use ``with``) to stop the process by PID.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        channel: grpc.Channel,
        *,
        project: str,
        stack: str,
        stderr_path: Path,
        call_timeout: float,
    ) -> None:
        self._proc = proc
        self._channel = channel
        self._stub = provider_pb2_grpc.ResourceProviderStub(channel)
        self.project = project
        self.stack = stack
        self._stderr_path = stderr_path
        self._call_timeout = call_timeout
        self._accept_secrets: bool | None = None
        self.call_times: list[tuple[str, float]] = []
        self.start_time = 0.0

    @classmethod
    def start(
        cls,
        project_root: Path,
        *,
        project: str = "amdfleet",
        stack: str = "test",
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
        engine: str | None = None,
    ) -> ProviderHost:
        """Start the host in ``project_root`` and connect to it.

        ``config`` (full keys, e.g. ``amdfleet:hosts``) is also passed in ``PULUMI_CONFIG``
        as the engine does for dynamic providers. ``engine`` is the address of a
        ``pulumirpc.Engine`` service, passed as the host's argument as the CLI passes its
        own (providers report progress there); without it the host has none.
        """
        t0 = time.monotonic()
        stderr_path = Path(tempfile.mkstemp(prefix="pulumi-dynamic-", suffix=".log")[1])
        env_vars = _host_env(project, stack, config, env)
        proc = _spawn(project_root, env_vars, stderr_path, [engine] if engine else [])
        try:
            port = _read_port(proc, time.monotonic() + timeout, stderr_path)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(
                timeout=max(t0 + timeout - time.monotonic(), 1)
            )
        except BaseException:
            _stop(proc)
            raise
        host = cls(
            proc,
            channel,
            project=project,
            stack=stack,
            stderr_path=stderr_path,
            call_timeout=call_timeout,
        )
        host.start_time = time.monotonic() - t0
        return host

    @property
    def pid(self) -> int:
        """The host process id."""
        return self._proc.pid

    def urn(self, name: str, type_: str = DYNAMIC_TYPE) -> str:
        """The URN the engine would give a top-level resource ``name`` of ``type_``."""
        return f"urn:pulumi:{self.stack}::{self.project}::{type_}::{name}"

    # -- the ResourceProvider service ---------------------------------------------------

    def configure(self, config: Mapping[str, Any] | None = None) -> None:
        """Configure with the stack config (full keys; secrets as ``secret(v)``)."""
        config = dict(config or {})
        variables = {k: _config_string(reveal(v)) for k, v in config.items()}
        request = provider_pb2.ConfigureRequest(
            variables=variables,
            args=_to_struct(config),
            acceptSecrets=True,
            acceptResources=True,
        )
        response = self._call("Configure", "", request)
        self._accept_secrets = bool(response.acceptSecrets)

    def check(
        self,
        news: Mapping[str, Any],
        olds: Mapping[str, Any] | None = None,
        *,
        urn: str | None = None,
    ) -> CheckOutcome:
        """Validate ``news`` (olds = the previous *inputs*); unknowns allowed."""
        urn = urn or self.urn("resource")
        request = provider_pb2.CheckRequest(
            urn=urn,
            olds=self._wire(olds or {}),
            news=self._wire(news),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Check", urn, request)
        inputs = self._annotated(_from_struct(response.inputs), news)
        failures = [(f.property, f.reason) for f in response.failures]
        return CheckOutcome(inputs=inputs, failures=failures)

    def diff(
        self,
        id_: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str | None = None,
    ) -> DiffOutcome:
        """Compare previous *outputs* ``olds`` with checked inputs ``news``."""
        urn = urn or self.urn("resource")
        request = provider_pb2.DiffRequest(
            id=id_,
            urn=urn,
            olds=self._wire(olds),
            news=self._wire(news),
            old_inputs=self._wire(old_inputs or {}),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Diff", urn, request)
        changes = {
            provider_pb2.DiffResponse.DIFF_NONE: False,
            provider_pb2.DiffResponse.DIFF_SOME: True,
        }.get(response.changes)
        return DiffOutcome(
            changes=changes,
            replaces=list(response.replaces),
            delete_before_replace=bool(response.deleteBeforeReplace),
        )

    def create(self, news: Mapping[str, Any], *, urn: str | None = None) -> CreateOutcome:
        """Create from checked inputs; outputs are secret where the input was."""
        urn = urn or self.urn("resource")
        request = provider_pb2.CreateRequest(
            urn=urn,
            properties=self._wire(news),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Create", urn, request)
        outputs = self._annotated(_from_struct(response.properties), news)
        return CreateOutcome(id=response.id, outputs=outputs)

    def read(
        self,
        id_: str,
        props: Mapping[str, Any],
        *,
        inputs: Mapping[str, Any] | None = None,
        urn: str | None = None,
    ) -> ReadOutcome:
        """Refresh: read the live state given the previous outputs ``props``."""
        urn = urn or self.urn("resource")
        request = provider_pb2.ReadRequest(
            id=id_,
            urn=urn,
            properties=self._wire(props),
            inputs=self._wire(inputs or {}),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Read", urn, request)
        new_inputs = _from_struct(response.inputs) if response.HasField("inputs") else None
        return ReadOutcome(
            id=response.id,
            outputs=self._annotated(_from_struct(response.properties), props),
            inputs=None if new_inputs is None else self._annotated(new_inputs, inputs or {}),
        )

    def update(
        self,
        id_: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str | None = None,
    ) -> dict[str, Any]:
        """Update from previous *outputs* ``olds`` to checked inputs ``news``; new outputs."""
        urn = urn or self.urn("resource")
        request = provider_pb2.UpdateRequest(
            id=id_,
            urn=urn,
            olds=self._wire(olds),
            news=self._wire(news),
            old_inputs=self._wire(old_inputs or {}),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Update", urn, request)
        return self._annotated(_from_struct(response.properties), news)

    def delete(
        self,
        id_: str,
        props: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str | None = None,
    ) -> None:
        """Delete the resource whose last outputs are ``props``."""
        urn = urn or self.urn("resource")
        request = provider_pb2.DeleteRequest(
            id=id_,
            urn=urn,
            properties=self._wire(props),
            old_inputs=self._wire(old_inputs or {}),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        self._call("Delete", urn, request)

    # -- lifecycle ----------------------------------------------------------------------

    def stderr_tail(self, n: int = 40) -> str:
        """The last lines the host wrote to stderr (tracebacks, warnings)."""
        return tail_lines(self._stderr_path.read_text(errors="replace"), n)

    def close(self) -> None:
        """Close the channel and stop the host process by PID; idempotent."""
        self._channel.close()
        _stop(self._proc)
        self._stderr_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------

    def _call(self, method: str, urn: str, request: Any) -> Any:
        if self._accept_secrets is None and method != "Configure":
            self.configure({})
        rpc_method: Callable[..., Any] = getattr(self._stub, method)
        t0 = time.monotonic()
        try:
            return rpc_method(request, timeout=self._call_timeout)
        except grpc.RpcError as e:
            raise ProviderCallError(method, urn, e.code(), e.details() or str(e)) from None
        finally:
            self.call_times.append((method, time.monotonic() - t0))

    def _wire(self, props: Mapping[str, Any]) -> struct_pb2.Struct:
        """Props as the engine sends them: secrets stripped unless the provider takes them."""
        return _to_struct(props if self._accept_secrets else reveal(dict(props)))

    def _annotated(self, outs: dict[str, Any], ins: Mapping[str, Any]) -> dict[str, Any]:
        if not self._accept_secrets:
            annotate_secrets(outs, ins)
        return outs


def annotate_secrets(outs: dict[str, Any], ins: Mapping[str, Any]) -> None:
    """Mark ``outs[k]`` secret where ``ins[k]`` holds a secret (the engine's rule).

    Objects present on both sides are walked key by key; anything else (including a
    list) becomes secret as a whole as soon as the input holds any secret.
    """
    for key, in_value in ins.items():
        if key not in outs:
            continue
        out_value = outs[key]
        both_objects = isinstance(out_value, dict) and isinstance(in_value, dict)
        if both_objects and not is_secret(out_value) and not is_secret(in_value):
            annotate_secrets(out_value, in_value)
        elif not is_secret(out_value) and contains_secrets(in_value):
            outs[key] = secret(out_value)


def _to_struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    # UNKNOWN is already the wire form of an unknown, and a secret(...) dict is already
    # the wire form of a secret, so the SDK's serializer passes both through.
    struct: struct_pb2.Struct = _run_async(rpc.serialize_properties(dict(props), {}))
    return struct


def _from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    value = rpc.deserialize_properties(struct, keep_unknowns=True)
    result: dict[str, Any] = _unknowns_to_sentinel(value)
    return result


def _unknowns_to_sentinel(value: Any) -> Any:
    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _unknowns_to_sentinel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknowns_to_sentinel(v) for v in value]
    return value


def _run_async(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _config_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _host_env(
    project: str,
    stack: str,
    config: Mapping[str, Any] | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PULUMI_PROJECT": project, "PULUMI_STACK": stack, "PYTHONUNBUFFERED": "1"})
    if config:
        env["PULUMI_CONFIG"] = json.dumps({k: _config_string(reveal(v)) for k, v in config.items()})
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(
            [k for k, v in config.items() if is_secret(v)]
        )
    env.update(extra or {})
    return env


def _spawn(
    root: Path, env: dict[str, str], stderr_path: Path, args: list[str]
) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-u", "-m", "amdfleet.providers.server", *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )


def _read_port(proc: subprocess.Popen[bytes], deadline: float, stderr_path: Path) -> int:
    """Wait (bounded) for the port line the host prints on stdout."""
    assert proc.stdout is not None
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                log = tail_file(stderr_path, 40, "(no stderr)")
                raise RuntimeError(f"dynamic-provider host printed no port:\n{log}")
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                log = tail_file(stderr_path, 40, "(no stderr)")
                raise RuntimeError(f"dynamic-provider host exited:\n{log}")
            line += chunk
    return int(line.strip())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _exception_text(details: str) -> str:
    """The exception part of a Python traceback (what follows the last frame)."""
    lines = details.rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    if not frames:
        return details.strip()
    rest = lines[frames[-1] + 1 :]
    while rest and rest[0].startswith("    "):
        rest = rest[1:]
    return "\n".join(rest).strip() or details.strip()


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _type_of(urn: str) -> str:
    parts = urn.split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) >= 4 else DYNAMIC_TYPE
