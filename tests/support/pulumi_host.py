"""Drive amdfleet's provider plugin over gRPC, call by call, as the Pulumi engine does.

The process is the one the engine starts for the package ``amdfleet``:
``python -u -m amdfleet.plugin ENGINE_ADDRESS`` (what the ``pulumi-resource-amdfleet``
console script runs; the address of a real ``pulumirpc.Engine`` service,
tests/support/engine_log.py, where providers report progress), with the repository as
cwd and ``PYTHONPATH`` kept, so a worktree's ``amdfleet`` is the one served. It prints a
port and serves the ``pulumirpc.ResourceProvider`` gRPC service. Whole programs run
under the real CLI (tests/support/pulumi_cli.py); this is the faster, unit-level seam. A
test-only plugin serving other providers through the same server
(tests/support/sample_plugin.py) starts with ``module=``.

:class:`ProviderHost` starts it and calls Configure, Check, Diff, Create, Read, Update and
Delete with the engine's conventions:

* Every call names its resource by URN; the plugin serves the type in it
  (``amdfleet:index:<Name>``). :meth:`ProviderHost.urn` (or :func:`resource_urn`, for a
  module's constant) builds one from a resource class (``host.urn("web", SshHost)``) or a
  type token.
* Configure says ``acceptSecrets``; the plugin accepts them, so secrets cross the wire
  marked (protobuf Structs holding the secret signature) both ways, and the engine
  re-marks nothing: an output is secret only where the plugin marked it. Nulls stay
  where they are, at any depth, as the engine stores them, except that Check never
  gets a top-level None (a program's SDK drops those).
* Check receives the previous *inputs*; Diff and Update the previous *outputs* as
  ``olds`` plus ``old_inputs``; Read the last outputs and inputs; Delete the last outputs
  and ``old_inputs``. Check and Diff accept unknowns (preview).

Values are plain Python dicts. A secret is the SDK's in-memory form of the secret
signature (``secret(v)`` / ``is_secret(v)`` / ``reveal(v)``); an unknown is the string
:data:`UNKNOWN` (what the wire uses); numbers come back as floats.
"""

from __future__ import annotations

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
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from amdfleet.providers.resource import AmdFleetResource, type_token
from amdfleet.remote.transport.connection import tail_lines
from tests.support.files import tail_file

UNKNOWN = rpc.UNKNOWN
PLUGIN_MODULE = "amdfleet.plugin"
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


def resource_urn(
    name: str,
    resource: type[AmdFleetResource] | str,
    *,
    stack: str = "test",
    project: str = "amdfleet",
    parent: str = "",
) -> str:
    """The URN the engine gives the resource ``name`` of class (or type token)
    ``resource`` in ``stack`` of ``project``; ``parent`` is the qualified type of its
    parents, if any."""
    type_ = resource if isinstance(resource, str) else type_token(resource.type_name)
    qualified = f"{parent}${type_}" if parent else type_
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


class ProviderCallError(Exception):
    """A provider method raised (or the plugin failed); ``message`` is the error text
    without any Python stack."""

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
    """Diff's answer. ``changes`` is None when the provider did not say (DIFF_UNKNOWN);
    ``detailed`` maps each property the CLI lists to its kind (``"UPDATE"``,
    ``"DELETE"``, ``"ADD_REPLACE"``, ...)."""

    changes: bool | None
    replaces: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    detailed: dict[str, str] = field(default_factory=dict)

    @property
    def replace(self) -> bool:
        """True when the change needs a replacement."""
        return bool(self.replaces)


@dataclass(frozen=True)
class CreateOutcome:
    """Create's answer: the new resource id and its outputs."""

    id: str
    outputs: dict[str, Any]


@dataclass(frozen=True)
class ReadOutcome:
    """Read's answer; an empty ``id`` means the resource no longer exists."""

    id: str
    outputs: dict[str, Any]
    inputs: dict[str, Any] | None


class ProviderHost:
    """A running provider plugin and a client that speaks to it like the engine.

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
        self._configured = False

    @classmethod
    def start(
        cls,
        project_root: Path,
        *,
        project: str = "amdfleet",
        stack: str = "test",
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
        engine: str,
        module: str = PLUGIN_MODULE,
    ) -> ProviderHost:
        """Start the plugin (``python -u -m <module> <engine>``) in ``project_root`` and
        connect. ``engine`` is the address of a ``pulumirpc.Engine`` service, passed as
        the CLI passes its own (providers report progress there)."""
        t0 = time.monotonic()
        stderr_path = Path(tempfile.mkstemp(prefix="amdfleet-plugin-", suffix=".log")[1])
        env_vars = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        argv = [sys.executable, "-u", "-m", module, engine]
        proc = _spawn(project_root, env_vars, stderr_path, argv)
        try:
            port = _read_port(proc, time.monotonic() + timeout, stderr_path)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(
                timeout=max(t0 + timeout - time.monotonic(), 1)
            )
        except BaseException:
            _stop(proc)
            stderr_path.unlink(missing_ok=True)
            raise
        return cls(
            proc,
            channel,
            project=project,
            stack=stack,
            stderr_path=stderr_path,
            call_timeout=call_timeout,
        )

    @property
    def pid(self) -> int:
        """The plugin's process id."""
        return self._proc.pid

    def urn(self, name: str, resource: type[AmdFleetResource] | str, *, parent: str = "") -> str:
        """The URN the engine gives the resource ``name`` of class (or type token)
        ``resource``; ``parent`` is the qualified type of its parents, if any."""
        return resource_urn(name, resource, stack=self.stack, project=self.project, parent=parent)

    # -- the ResourceProvider service ---------------------------------------------------

    def configure(self, config: Mapping[str, Any] | None = None) -> None:
        """Configure with the provider's config (secrets as ``secret(v)``), saying that
        the engine accepts secrets; the plugin must accept them too."""
        config = dict(config or {})
        request = provider_pb2.ConfigureRequest(
            variables={k: _config_string(reveal(v)) for k, v in config.items()},
            args=_to_struct(config),
            acceptSecrets=True,
            acceptResources=True,
        )
        response = self._call("Configure", "", request)
        if not response.acceptSecrets:
            raise AssertionError("the plugin refused secrets (acceptSecrets false)")
        self._configured = True

    def check(
        self, news: Mapping[str, Any], olds: Mapping[str, Any] | None = None, *, urn: str
    ) -> CheckOutcome:
        """Validate ``news`` (olds = the previous *inputs*); unknowns allowed. A
        top-level None in ``news`` is not sent: a program's SDK drops those (the
        output-only properties a resource passes as None)."""
        request = provider_pb2.CheckRequest(
            urn=urn,
            olds=_to_struct(olds or {}),
            news=_to_struct({k: v for k, v in news.items() if v is not None}),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Check", urn, request)
        failures = [(f.property, f.reason) for f in response.failures]
        return CheckOutcome(inputs=_from_struct(response.inputs), failures=failures)

    def diff(
        self,
        id_: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str,
    ) -> DiffOutcome:
        """Compare previous *outputs* ``olds`` with checked inputs ``news``."""
        request = provider_pb2.DiffRequest(
            id=id_,
            urn=urn,
            olds=_to_struct(olds),
            news=_to_struct(news),
            old_inputs=_to_struct(old_inputs or {}),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Diff", urn, request)
        changes = {
            provider_pb2.DiffResponse.DIFF_NONE: False,
            provider_pb2.DiffResponse.DIFF_SOME: True,
        }.get(response.changes)
        kinds = provider_pb2.PropertyDiff.Kind
        return DiffOutcome(
            changes=changes,
            replaces=list(response.replaces),
            delete_before_replace=bool(response.deleteBeforeReplace),
            detailed={k: kinds.Name(v.kind) for k, v in response.detailedDiff.items()},
        )

    def create(self, news: Mapping[str, Any], *, urn: str) -> CreateOutcome:
        """Create from checked inputs."""
        request = provider_pb2.CreateRequest(
            urn=urn,
            properties=_to_struct(news),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Create", urn, request)
        return CreateOutcome(id=response.id, outputs=_from_struct(response.properties))

    def read(
        self,
        id_: str,
        props: Mapping[str, Any],
        *,
        inputs: Mapping[str, Any] | None = None,
        urn: str,
    ) -> ReadOutcome:
        """Refresh: read the live state given the last outputs ``props`` and ``inputs``."""
        request = provider_pb2.ReadRequest(
            id=id_,
            urn=urn,
            properties=_to_struct(props),
            inputs=_to_struct(inputs or {}),
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Read", urn, request)
        new_inputs = _from_struct(response.inputs) if response.HasField("inputs") else None
        return ReadOutcome(
            id=response.id, outputs=_from_struct(response.properties), inputs=new_inputs
        )

    def update(
        self,
        id_: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str,
    ) -> dict[str, Any]:
        """Update from previous *outputs* ``olds`` to checked inputs ``news``; new outputs."""
        request = provider_pb2.UpdateRequest(
            id=id_,
            urn=urn,
            olds=_to_struct(olds),
            news=_to_struct(news),
            old_inputs=_to_struct(old_inputs or {}),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        response = self._call("Update", urn, request)
        return _from_struct(response.properties)

    def delete(
        self,
        id_: str,
        props: Mapping[str, Any],
        *,
        old_inputs: Mapping[str, Any] | None = None,
        urn: str,
    ) -> None:
        """Delete the resource whose last outputs are ``props`` (and inputs ``old_inputs``)."""
        request = provider_pb2.DeleteRequest(
            id=id_,
            urn=urn,
            properties=_to_struct(props),
            old_inputs=_to_struct(old_inputs or {}),
            timeout=self._call_timeout,
            name=_name_of(urn),
            type=_type_of(urn),
        )
        self._call("Delete", urn, request)

    # -- lifecycle ----------------------------------------------------------------------

    def stderr_tail(self, n: int = 40) -> str:
        """The last lines the plugin wrote to stderr (tracebacks, warnings)."""
        return tail_lines(self._stderr_path.read_text(errors="replace"), n)

    def close(self) -> None:
        """Close the channel and stop the plugin process by PID; idempotent."""
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
        if not self._configured and method != "Configure":
            self.configure({})
        rpc_method: Callable[..., Any] = getattr(self._stub, method)
        try:
            return rpc_method(request, timeout=self._call_timeout)
        except grpc.RpcError as e:
            raise ProviderCallError(method, urn, e.code(), e.details() or str(e)) from None


def _to_struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    # The test's values are already the wire's: a secret(...) dict is the secret
    # signature, UNKNOWN the unknown sentinel; nulls stay, as the engine keeps them.
    return json_format.ParseDict(dict(props), struct_pb2.Struct())


def _from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(struct)
    return result


def _config_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _spawn(
    root: Path, env: dict[str, str], stderr_path: Path, argv: list[str]
) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )


def _read_port(proc: subprocess.Popen[bytes], deadline: float, stderr_path: Path) -> int:
    """Wait (bounded) for the port line the plugin prints on stdout."""
    assert proc.stdout is not None
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                log = tail_file(stderr_path, 40, "(no stderr)")
                raise RuntimeError(f"the provider plugin printed no port:\n{log}")
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                log = tail_file(stderr_path, 40, "(no stderr)")
                raise RuntimeError(f"the provider plugin exited:\n{log}")
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
    return urn.split("::")[2].rsplit("$", 1)[-1]
