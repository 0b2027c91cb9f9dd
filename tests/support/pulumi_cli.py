"""The real Pulumi CLI, in a throwaway workspace, running this repository's program.

:class:`PulumiWorkspace` makes a Pulumi project in a temporary directory whose
``Pulumi.yaml`` points at this repository (``main:`` the repository root, ``virtualenv:``
its ``.venv``, the ``amdfleet`` provider plugin the ``pulumi-resource-amdfleet`` in it, as the
repository's own Pulumi.yaml does), so stack files written for a test live in that
directory and never touch ``stacks/``. Each workspace has its own ``PULUMI_HOME``, a file
backend (``file://``) and a passphrase secrets provider; automatic plugin downloads are
disabled, so the CLI only uses the plugins installed by ``scripts/install-pulumi`` and
this repository's (nothing leaves the machine).

Commands run with ``--non-interactive``; ``up``/``destroy``/``refresh`` add ``--json``,
whose stream of engine events gives each resource's operation (:attr:`PulumiRun.ops`) and
every diagnostic, including the ephemeral status lines providers send while they work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amdfleet.pulumi_project import write_project
from tests.support.prerequisites import missing

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "amdfleet-tests-passphrase"
DEFAULT_TIMEOUT = 900.0


def require_pulumi() -> str:
    """The ``pulumi`` on PATH; fails (under scripts/test) or skips when there is none."""
    path = shutil.which("pulumi")
    if path is not None and shutil.which("pulumi-language-python"):
        return path
    reason = (
        "the real Pulumi CLI (pulumi, pulumi-language-python) is not on PATH; "
        "run scripts/install-pulumi and put the directory it prints on PATH"
    )
    missing("pulumi", reason)


class PulumiError(AssertionError):
    """A pulumi command failed (or succeeded where the test expected a failure)."""


@dataclass
class PulumiRun:
    """One finished pulumi command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """Everything the command printed, stdout then stderr."""
        return self.stdout + self.stderr

    @property
    def ops(self) -> dict[str, str]:
        """Resource name -> the operation the engine performed (``same``, ``create``,
        ``update``, ``replace``, ``delete``, ``refresh``...), from the event stream;
        ``failed:<op>`` for an operation that failed."""
        ops: dict[str, str] = {}
        for event in self.events:
            for kind in ("resOutputsEvent", "resOpFailedEvent"):
                if kind in event:
                    meta = event[kind]["metadata"]
                    name = meta["urn"].rsplit("::", 1)[-1]
                    ops[name] = meta["op"] if kind == "resOutputsEvent" else f"failed:{meta['op']}"
        return ops

    def changed(self) -> dict[str, str]:
        """The resources whose operation was anything but ``same``."""
        return {name: op for name, op in self.ops.items() if op != "same"}

    @property
    def summary(self) -> dict[str, Any]:
        """The engine's summary event (``resourceChanges``, ``result``)."""
        for event in reversed(self.events):
            if "summaryEvent" in event:
                return dict(event["summaryEvent"])
        return {}

    def diagnostics(self, *, ephemeral: bool | None = None) -> list[dict[str, Any]]:
        """Non-debug diagnostics: ``{"urn", "severity", "message", "ephemeral"}``, from
        the event stream and from the JSON documents (a preview that failed prints only
        its document)."""
        found = [
            d
            for doc in self.documents
            for d in doc.get("diagnostics") or []
            if d.get("severity") != "debug" and ephemeral is not True
        ]
        for event in self.events:
            diag = event.get("diagnosticEvent")
            if not diag or diag.get("severity") == "debug":
                continue
            if ephemeral is not None and bool(diag.get("ephemeral")) != ephemeral:
                continue
            found.append(diag)
        return found

    def messages(self) -> str:
        """Every non-debug diagnostic message, joined (what a user reads as errors/info)."""
        return "".join(d.get("message", "") for d in self.diagnostics()) + self.stderr


class PulumiWorkspace:
    """A Pulumi project in ``root`` running this repository's program with the real CLI."""

    def __init__(
        self,
        root: Path,
        *,
        project: str = "amdfleet",
        main: Path = REPO_ROOT,
        backend: Path | None = None,
        home: Path | None = None,
    ) -> None:
        self.pulumi = require_pulumi()
        self.root = root
        self.project = project
        self.backend = backend or root / "state"
        self.home = home or root / "home"
        for path in (self.backend, self.home):
            path.mkdir(parents=True, exist_ok=True)
        write_project(root, main=main, name=project)
        self.env = {
            **os.environ,
            "PULUMI_HOME": str(self.home),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "1",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "NO_COLOR": "1",
        }
        for key in ("PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_ACCESS_TOKEN"):
            self.env.pop(key, None)

    def sibling(self, root: Path, *, project: str, main: Path) -> PulumiWorkspace:
        """Another project sharing this workspace's backend, home and passphrase (so its
        stacks can read this one's with a StackReference)."""
        return PulumiWorkspace(
            root, project=project, main=main, backend=self.backend, home=self.home
        )

    # -- stacks ----------------------------------------------------------------------

    def stack_file(self, stack: str) -> Path:
        return self.root / "stacks" / f"Pulumi.{stack}.yaml"

    def init_stack(
        self,
        stack: str,
        config: Mapping[str, Any],
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        """Create ``stack`` with ``config`` (full keys, e.g. ``amdfleet:model``) and set
        each secret with ``pulumi config set --secret KEY`` reading the value on stdin."""
        self.stack_file(stack).write_text(yaml.safe_dump({"config": dict(config)}))
        self.run(["stack", "init", stack], timeout=60)
        for key, value in (secrets or {}).items():
            self.set_secret(stack, key, value)

    def set_secret(self, stack: str, key: str, value: str) -> None:
        self.run(["config", "set", "--secret", key, "--stack", stack], stdin=value, timeout=60)

    def set_config(self, stack: str, key: str, value: Any) -> None:
        """Replace one structured config value in the stack file (as a user edits it)."""
        document = yaml.safe_load(self.stack_file(stack).read_text())
        document["config"][key] = value
        self.stack_file(stack).write_text(yaml.safe_dump(document))

    def config(self, stack: str) -> dict[str, Any]:
        return dict(yaml.safe_load(self.stack_file(stack).read_text())["config"])

    # -- commands --------------------------------------------------------------------

    def preview(self, stack: str, *, check: bool = True, timeout: float = 300) -> PulumiRun:
        """``pulumi preview --json``: ``documents[0]`` holds its steps and diagnostics."""
        run = self.run(["preview", "--stack", stack, "--json"], check=check, timeout=timeout)
        run.documents = _json_values(run.stdout)
        return run

    def up(self, stack: str, *, check: bool = True, timeout: float = DEFAULT_TIMEOUT) -> PulumiRun:
        return self._update("up", stack, check=check, timeout=timeout)

    def refresh(
        self,
        stack: str,
        *args: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> PulumiRun:
        """``pulumi refresh --skip-preview`` with extra flags ``args``."""
        return self._update("refresh", stack, *args, check=check, timeout=timeout)

    def destroy(
        self, stack: str, *, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> PulumiRun:
        return self._update("destroy", stack, check=check, timeout=timeout)

    def outputs(self, stack: str, *, show_secrets: bool = False) -> dict[str, Any]:
        argv = ["stack", "output", "--json", "--stack", stack]
        if show_secrets:
            argv.append("--show-secrets")
        return dict(json.loads(self.run(argv, timeout=60).stdout))

    def export(self, stack: str) -> dict[str, Any]:
        """``pulumi stack export`` (secrets stay encrypted)."""
        return dict(json.loads(self.run(["stack", "export", "--stack", stack], timeout=60).stdout))

    def resources(self, stack: str) -> dict[str, dict[str, Any]]:
        """The stack's state: resource name -> its state entry."""
        deployment = self.export(stack).get("deployment") or {}
        return {r["urn"].rsplit("::", 1)[-1]: r for r in deployment.get("resources") or []}

    def backend_text(self) -> str:
        """Every file the backend wrote (state, history, backups), as text, to grep."""
        parts = []
        for path in sorted(self.backend.rglob("*")):
            if path.is_file():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        stdin: str | None = None,
    ) -> PulumiRun:
        """Run ``pulumi ARGS --non-interactive`` in the workspace."""
        argv = [self.pulumi, *args, "--non-interactive"]
        start = time.monotonic()
        proc = subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        run = PulumiRun(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        if check and not run.ok:
            raise PulumiError(_describe(run))
        return run

    def amdfleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``amdfleet ARGS`` as a user runs it in the project directory (``status STACK``,
        ...), with this workspace's backend, passphrase and Pulumi home."""
        return subprocess.run(
            [sys.executable, "-m", "amdfleet.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, args: Sequence[str]) -> RunningPulumi:
        """Start ``pulumi ARGS --non-interactive`` without waiting, as a terminal's
        foreground job (its own process group), for interrupt tests."""
        proc = subprocess.Popen(
            [self.pulumi, *args, "--non-interactive"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return RunningPulumi(proc)

    def _update(self, verb: str, stack: str, *args: str, check: bool, timeout: float) -> PulumiRun:
        argv = [verb, "--yes", "--json", "--stack", stack, *args]
        if verb == "refresh":
            argv.append("--skip-preview")
        run = self.run(argv, check=False, timeout=timeout)
        values = _json_values(run.stdout)
        run.events = [v for v in values if "sequence" in v]
        run.documents = [v for v in values if "sequence" not in v]
        if check and not run.ok:
            raise PulumiError(_describe(run))
        return run


class RunningPulumi:
    """A pulumi command started by :meth:`PulumiWorkspace.start`; its output (stdout and
    stderr) is read as it comes, so the CLI never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def ctrl_c(self, presses: int = 1, *, timeout: float = 60) -> None:
        """A terminal's Ctrl-C: SIGINT to the whole process group (the CLI, its language
        host, the program and the provider host). A second press is sent once the CLI has
        said what a second one does."""
        os.killpg(self.proc.pid, signal.SIGINT)
        if presses > 1:
            with self._seen:
                said = self._seen.wait_for(
                    lambda: "press ^C again" in "".join(self._lines), timeout
                )
            assert said, self.output()
            os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = 600) -> str:
        """Wait for the command to exit; everything it printed."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return self.output()

    def output(self) -> str:
        with self._seen:
            return "".join(self._lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group if it still runs (test cleanup)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self._lines.append(line)
                self._seen.notify_all()


def _describe(run: PulumiRun) -> str:
    diag = "".join(
        f"  [{d.get('severity')}] {d.get('message', '').rstrip()}\n" for d in run.diagnostics()
    )
    tail = "\n".join((run.stdout if not run.events else "").splitlines()[-40:])
    return (
        f"`{' '.join(run.argv[1:])}` exited with {run.returncode} after {run.seconds:.0f} s\n"
        f"{diag}{tail}\n{run.stderr[-4000:]}"
    )


def _json_values(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``: a document, then JSON lines (``up --json`` prints
    its preview as one document and then one engine event per line)."""
    decoder = json.JSONDecoder()
    values: list[dict[str, Any]] = []
    index = 0
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index >= len(text):
            return values
        if text[index] != "{":
            index = text.find("\n", index)
            if index < 0:
                return values
            continue
        value, index = decoder.raw_decode(text, index)
        values.append(value)
