"""Run a Pulumi program end to end without the CLI: mocks for the graph, a real provider host
for every dynamic resource.

The program (a callable, or a ``__main__.py`` path) runs under ``pulumi.runtime.set_mocks``
with a resource monitor that behaves like the engine for dynamic resources
(``pulumi-python:dynamic*`` types): each registration is forwarded to a real
``python -m pulumi.dynamic`` host (:class:`~tests.support.pulumi_host.ProviderHost`):

* no previous state: Check -> Create;
* previous state: Check (olds = previous inputs) -> Diff (olds = previous outputs) ->
  nothing, Update, or a replacement (Create then Delete of the old one at the end, or
  Delete first when ``delete_before_replace``); a provider that answers DIFF_UNKNOWN is
  diffed on inputs, as the engine does;
* at the end of a successful ``up``, resources of the previous state that the program no
  longer declares are deleted, dependents first;
* ``destroy()`` deletes everything, dependents before their dependencies;
* ``preview()`` only calls Check and Diff; outputs not yet known are unknown.

Every other resource (components, non-dynamic custom resources) is only recorded. The
driver keeps the engine's checkpoint -- ``state``: urn -> id, inputs, outputs, parent and
dependencies -- between runs. Stack config is installed the way the engine passes it
(``set_all_config`` with full keys, JSON for structured values, secret keys listed), so
``pulumi.Config().require_object(...)`` and ``require_secret(...)`` work in the program;
the provider host receives the same config through Configure and ``PULUMI_CONFIG``.

Unsupported engine features: protect, retainOnDelete, replaceOnChanges, aliases, imports,
provider resources other than the default dynamic one, and parallel-run limits.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import runpy
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from pulumi import Output
from pulumi.runtime import config as pulumi_config
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.support.pulumi_host import (
    UNKNOWN,
    DiffOutcome,
    ProviderCallError,
    ProviderHost,
    is_secret,
    reveal,
    secret,
)

Program = Callable[[], Any] | Path | str
DYNAMIC_PREFIX = "pulumi-python:dynamic"


@dataclass
class ResourceState:
    """One resource of the checkpoint."""

    urn: str
    type: str
    name: str
    custom: bool
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        """True for resources served by the dynamic-provider host."""
        return self.custom and self.type.startswith(DYNAMIC_PREFIX)


@dataclass(frozen=True)
class Operation:
    """One step the driver took: create, update, replace, same, delete or refresh."""

    kind: str
    urn: str


@dataclass(frozen=True)
class RunResult:
    """What a run did and the stack outputs (secret ones listed in ``secret_outputs``).

    ``outputs`` holds plain values; an output not known yet (preview) is ``UNKNOWN``.
    """

    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    operations: list[Operation]

    def urns(self, kind: str) -> list[str]:
        """URNs of the operations of one kind, in the order they happened."""
        return [op.urn for op in self.operations if op.kind == kind]

    def names(self, kind: str) -> list[str]:
        """Resource names of the operations of one kind."""
        return [urn.rsplit("::", 1)[-1] for urn in self.urns(kind)]


class ProgramDriver:
    """Runs a program repeatedly against one provider host, keeping state between runs."""

    def __init__(
        self,
        *,
        project_root: Path,
        project: str | None = None,
        stack: str = "test",
        config: Mapping[str, Any] | None = None,
        host: ProviderHost | None = None,
    ) -> None:
        self.project_root = Path(project_root)
        self.project = project or _project_name(self.project_root)
        self.stack = stack
        self.config = _full_keys(self.project, config or {})
        self.state: dict[str, ResourceState] = {}
        self.pending_deletes: list[ResourceState] = []
        self._host = host
        self._owns_host = host is None
        self._host_config: dict[str, Any] = dict(self.config)

    @property
    def host(self) -> ProviderHost:
        """The provider host (started and configured on first use).

        Like the engine, which starts a fresh host for every ``pulumi up``, a host this
        driver owns is restarted when ``config`` changed since it was configured.
        """
        if self._host is not None and self._owns_host and self._host_config != self.config:
            self._host.close()
            self._host = None
        if self._host is None:
            self._host = ProviderHost.start(
                self.project_root, project=self.project, stack=self.stack, config=self.config
            )
            self._host.configure(self.config)
            self._host_config = dict(self.config)
        return self._host

    def up(self, program: Program) -> RunResult:
        """Run ``program`` for real: create, update, replace and delete as needed."""
        deployment = _Deployment(self, preview=False)
        try:
            outputs = self._execute(program, deployment)
            deployment.finish()
        finally:
            # Like the engine's checkpoint: what was done stays recorded even on failure.
            self.state, self.pending_deletes = deployment.checkpoint()
        return _result(outputs, deployment.operations)

    def preview(self, program: Program) -> RunResult:
        """Run ``program`` as a preview: Check and Diff only; the state is unchanged."""
        deployment = _Deployment(self, preview=True)
        outputs = self._execute(program, deployment)
        return _result(outputs, deployment.operations)

    def refresh(self) -> list[Operation]:
        """Read every dynamic resource back from its host (``pulumi refresh``)."""
        operations = []
        for urn, res in list(self.state.items()):
            if not res.dynamic:
                continue
            read = self.host.read(res.id, res.outputs, inputs=res.inputs, urn=urn)
            if not read.id:
                del self.state[urn]
                operations.append(Operation("delete", urn))
                continue
            res.outputs = read.outputs
            res.inputs = read.inputs if read.inputs is not None else res.inputs
            operations.append(Operation("refresh", urn))
        return operations

    def destroy(self) -> RunResult:
        """Delete every resource of the state, dependents first (``pulumi destroy``)."""
        operations = []
        for res in [*self.pending_deletes, *reversed(_creation_order(self.state))]:
            if res.dynamic:
                self.host.delete(res.id, res.outputs, old_inputs=res.inputs, urn=res.urn)
                operations.append(Operation("delete", res.urn))
            self.state.pop(res.urn, None)
        self.pending_deletes = []
        return RunResult({}, frozenset(), operations)

    def checkpoint(self) -> dict[str, dict[str, Any]]:
        """urn -> outputs, like the engine's checkpoint file."""
        return {urn: res.outputs for urn, res in self.state.items()}

    def close(self) -> None:
        """Stop the provider host if this driver started it."""
        if self._host is not None and self._owns_host:
            self._host.close()
        self._host = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _execute(self, program: Program, deployment: _Deployment) -> dict[str, tuple[Any, bool]]:
        """Run the program in a fresh context so no runtime state leaks between runs."""
        _ = self.host  # start the host outside the program's event loop
        context = contextvars.copy_context()
        result: dict[str, tuple[Any, bool]] = context.run(self._run_program, program, deployment)
        return result

    def _run_program(
        self, program: Program, deployment: _Deployment
    ) -> dict[str, tuple[Any, bool]]:
        # The SDK registers resources on the thread's current event loop; code that ran
        # asyncio.run() before (it clears the loop) would leave none. Like the language
        # host, give every run a fresh loop.
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_surfaced_failures)
        asyncio.set_event_loop(loop)
        try:
            return self._run_on_loop(program, deployment)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _run_on_loop(
        self, program: Program, deployment: _Deployment
    ) -> dict[str, tuple[Any, bool]]:
        settings.ROOT.set(None)
        settings.SETTINGS.outputs = set()
        settings.SETTINGS.lock = threading.Lock()
        values = {k: _config_string(reveal(v)) for k, v in self.config.items()}
        pulumi_config.set_all_config(values, [k for k, v in self.config.items() if is_secret(v)])
        mocks.set_mocks(
            _Unused(),
            project=self.project,
            stack=self.stack,
            preview=deployment.preview,
            monitor=_Monitor(deployment),
        )
        settings.SETTINGS.root_directory = str(self.project_root)
        _sync_await(run_pulumi_func(_as_callable(program)))
        root = settings.get_root_resource()
        exported: dict[str, Any] = dict(getattr(root, "outputs", {}))
        return {name: _resolve(value) for name, value in exported.items()}


def _quiet_surfaced_failures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failed resource leaves its exception in every output future depending on it; the
    run re-raises it to the caller, so asyncio's "never retrieved" notes are noise."""
    if isinstance(context.get("exception"), ProviderCallError):
        return
    loop.default_exception_handler(context)


class _Deployment:
    """One run's engine logic: what to do for each registered resource."""

    def __init__(self, driver: ProgramDriver, *, preview: bool) -> None:
        self.driver = driver
        self.preview = preview
        self.old_state = dict(driver.state)
        self.new_state: dict[str, ResourceState] = {}
        self.operations: list[Operation] = []
        self._pending_deletes: list[ResourceState] = list(driver.pending_deletes)
        self._deleted: set[int] = set()
        self._lock = threading.Lock()

    @property
    def host(self) -> ProviderHost:
        return self.driver.host

    def register(self, res: ResourceState, ignore_changes: list[str], dbr: bool) -> ResourceState:
        """Bring one declared resource to its goal state; returns its new state."""
        if not res.dynamic:
            res.id = f"{res.name}_id" if res.custom else ""
            res.outputs = dict(res.inputs)
            return self._record(res, None)
        old = self.old_state.get(res.urn)
        if old is not None and old.dynamic:
            res.inputs = {
                **res.inputs,
                **{k: old.inputs[k] for k in ignore_changes if k in old.inputs},
            }
        check = self.host.check(res.inputs, old.inputs if old else {}, urn=res.urn)
        if check.failures:
            raise CheckFailedError(res.urn, check.failures)
        res.inputs = check.inputs
        if old is None or not old.dynamic:
            return self._create(res)
        return self._change(old, res, dbr)

    def finish(self) -> None:
        """After a successful run: delete replaced and no-longer-declared resources."""
        gone = {urn: r for urn, r in self.old_state.items() if urn not in self.new_state}
        for res in reversed(_creation_order(gone)):
            self._delete(res)
        for res in list(self._pending_deletes):
            self._delete(res)

    def checkpoint(self) -> tuple[dict[str, ResourceState], list[ResourceState]]:
        """The state to keep (also after a failure) and replaced resources not yet deleted."""
        state = {**self.old_state, **self.new_state}
        for urn, res in self.old_state.items():
            if id(res) in self._deleted and state.get(urn) is res:
                del state[urn]
        pending = [r for r in self._pending_deletes if id(r) not in self._deleted]
        return state, pending

    def _create(self, res: ResourceState, kind: str = "create") -> ResourceState:
        if self.preview:
            res.id, res.outputs = "", dict(res.inputs)
            return self._record(res, Operation(kind, res.urn))
        created = self.host.create(res.inputs, urn=res.urn)
        res.id, res.outputs = created.id, created.outputs
        return self._record(res, Operation(kind, res.urn))

    def _change(self, old: ResourceState, res: ResourceState, dbr: bool) -> ResourceState:
        diff = self.host.diff(old.id, old.outputs, res.inputs, old_inputs=old.inputs, urn=res.urn)
        if not _changed(diff, old, res):
            res.id, res.outputs = old.id, old.outputs
            return self._record(res, Operation("same", res.urn))
        if diff.replace:
            return self._replace(old, res, dbr or diff.delete_before_replace)
        res.id = old.id
        if self.preview:
            res.outputs = dict(res.inputs)
            return self._record(res, Operation("update", res.urn))
        res.outputs = self.host.update(
            old.id, old.outputs, res.inputs, old_inputs=old.inputs, urn=res.urn
        )
        return self._record(res, Operation("update", res.urn))

    def _replace(self, old: ResourceState, res: ResourceState, delete_first: bool) -> ResourceState:
        if self.preview:
            return self._create(res, "replace")
        if delete_first:
            self._delete(old)
        else:
            self._pending_deletes.append(old)
        return self._create(res, "replace")

    def _delete(self, res: ResourceState) -> None:
        if res.dynamic and not self.preview:
            self.host.delete(res.id, res.outputs, old_inputs=res.inputs, urn=res.urn)
        with self._lock:
            self._deleted.add(id(res))
            self.operations.append(Operation("delete", res.urn))

    def _record(self, res: ResourceState, op: Operation | None) -> ResourceState:
        with self._lock:
            self.new_state[res.urn] = res
            if op is not None:
                self.operations.append(op)
        return res


class CheckFailedError(Exception):
    """The provider's Check rejected the inputs of a resource."""

    def __init__(self, urn: str, failures: list[tuple[str, str]]) -> None:
        self.urn = urn
        self.failures = failures
        details = "; ".join(f"{prop}: {reason}" for prop, reason in failures)
        super().__init__(f"check failed for {urn}: {details}")


class _Monitor(mocks.MockMonitor):
    """The resource monitor the program talks to; the engine's side of RegisterResource."""

    def __init__(self, deployment: _Deployment) -> None:
        super().__init__(_Unused())
        self._deployment = deployment

    def RegisterResource(self, request: Any) -> Any:  # gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        res = ResourceState(
            urn=urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            id="",
            inputs=_plain(rpc.deserialize_properties(request.object, keep_unknowns=True)),
            outputs={},
            parent=request.parent,
            dependencies=list(request.dependencies),
        )
        res = self._deployment.register(
            res, list(request.ignoreChanges), request.deleteBeforeReplace
        )
        self.resources[urn] = mocks.MockMonitor.ResourceRegistration(urn, res.id, res.outputs)
        obj = _sync_await(rpc.serialize_properties(res.outputs, {}))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=res.id, object=obj)


class _Unused(mocks.Mocks):
    """Mocks the driver never needs (invokes are not part of amdfleet programs)."""

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise NotImplementedError(f"the program driver does not support invokes ({args.token})")

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return f"{args.name}_id", dict(args.inputs)


def _changed(diff: DiffOutcome, old: ResourceState, res: ResourceState) -> bool:
    if diff.changes is not None:
        return diff.changes
    return bool(reveal(old.inputs) != reveal(res.inputs))  # the engine's fallback


def _creation_order(states: Mapping[str, ResourceState]) -> list[ResourceState]:
    """Resources ordered so that each comes after its parent and dependencies."""
    ordered: list[ResourceState] = []
    seen: set[str] = set()

    def visit(urn: str) -> None:
        if urn in seen or urn not in states:
            return
        seen.add(urn)
        res = states[urn]
        for dep in [res.parent, *res.dependencies]:
            visit(dep)
        ordered.append(res)

    for urn in states:
        visit(urn)
    return ordered


def _resolve(value: Any) -> tuple[Any, bool]:
    output = Output.from_input(value)
    known = _sync_await(output.is_known())
    result = _sync_await(output.future(with_unknowns=True)) if known else UNKNOWN
    return _plain(result), bool(_sync_await(output.is_secret()))


def _result(resolved: Mapping[str, tuple[Any, bool]], operations: list[Operation]) -> RunResult:
    outputs = {name: value for name, (value, _) in resolved.items()}
    secrets = frozenset(name for name, (_, is_sec) in resolved.items() if is_sec)
    return RunResult(outputs, secrets, list(operations))


def _plain(value: Any) -> Any:
    from pulumi.output import Unknown

    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _as_callable(program: Program) -> Callable[[], Any]:
    if callable(program):
        return program
    path = Path(program)

    def run_main() -> None:
        sys.path.insert(0, str(path.parent))
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.path.remove(str(path.parent))

    return run_main


def _full_keys(project: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {(k if ":" in k else f"{project}:{k}"): v for k, v in config.items()}


def _config_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _project_name(root: Path) -> str:
    pulumi_yaml = root / "Pulumi.yaml"
    if pulumi_yaml.exists():
        name = yaml.safe_load(pulumi_yaml.read_text()).get("name")
        if name:
            return str(name)
    return "amdfleet"


__all__ = [
    "UNKNOWN",
    "CheckFailedError",
    "Operation",
    "ProgramDriver",
    "ResourceState",
    "RunResult",
    "secret",
]
