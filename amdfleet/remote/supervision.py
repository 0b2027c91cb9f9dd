"""Supervision: what keeps an engine running on a host and restarts it when it crashes.

One story per host and runtime, chosen by :func:`choose_supervisor` from facts collected
on the host at deploy time (:data:`FACTS_COMMAND`, :func:`parse_facts`):

- ``docker`` runtime: dockerd. The launch script runs the container detached with
  ``--restart on-failure:<limit>`` (:func:`docker_restart_flag`) and an entrypoint
  (``render.SECRETS_LOADER``) that runs the engine as its child, passes ``docker stop``'s
  SIGTERM on to it and turns an engine's unrequested clean exit into exit status
  :data:`UNREQUESTED_EXIT_STATUS`, so dockerd restarts an engine that stopped for any
  reason, at most ``limit`` times (``always`` would be unbounded, ``on-failure`` alone
  would not restart an exit 0); ``running`` is the container's state, the log is
  ``docker logs``. dockerd does not restart a container that ``docker stop`` stopped.
  With a :class:`Watchdog`, a watchdog on the host (detached with setsid) has the
  entrypoint stop an engine whose head no longer completes tokens (``docker kill
  --signal`` :data:`WATCHDOG_SIGNAL`), a failure that dockerd restarts under the same
  bound.
- ``process`` runtime on a host whose PID 1 is systemd (``/run/systemd/system`` exists):
  systemd. The rendered unit (``Restart=always`` with a growing delay and a bounded
  start limit) is installed into ``/etc/systemd/system``, ``daemon-reload``-ed and
  started; stop removes it again. With a :class:`Watchdog`, the unit's ``ExecStartPost=``
  starts one after each start, in the unit's control group. There is no systemd on the
  machines that test amdfleet: this supervisor's commands and the unit text are tested as
  text, its watchdog's sh run by sh.
- ``process`` runtime elsewhere: a small POSIX-sh supervisor loop (:class:`ProcessSupervisor`),
  detached with setsid and a pid file, that starts the launch script in a process group
  of its own, restarts it with exponential backoff up to a bounded count, and writes
  each restart and its reason into the engine log. With a :class:`Watchdog` (the API
  node, and every node of a cluster, probing the head) it also restarts an engine that
  runs while the head no longer completes a token (vLLM's head after a pipeline stage
  died, and its worker after its head died, run on: README "Self-healing").

Every supervisor is a set of pure command builders (:class:`Supervisor`); the
EngineService provider runs them over a connection. Nothing here does I/O.

All three restart an engine that stopped without being asked, whatever its exit status,
at most :attr:`RestartPolicy.limit` times in a row, and then say that they gave up
(:meth:`Supervisor.gave_up_command`). Only amdfleet's own stop (:meth:`Supervisor.stop_command`:
an update, a destroy) stops an engine for good.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from amdfleet.remote.engine import EngineLayout, counter_command, generation_command
from amdfleet.remote.process import detached, is_running, new_private_file, stop_process_group

SYSTEMD_UNIT_DIR = "/etc/systemd/system"
FACTS_COMMAND = (
    "if [ -d /run/systemd/system ]; then echo AMDFLEET_SYSTEMD=1; else echo AMDFLEET_SYSTEMD=0; fi"
)
_LOG_PREFIX = "amdfleet-supervisor:"
UNREQUESTED_EXIT_STATUS = 75
"""The container entrypoint's exit status for an engine that exited 0 without being asked
(dockerd's ``on-failure`` policy restarts non-zero exits only), or that the host's watchdog
stopped (:data:`WATCHDOG_SIGNAL`)."""
WATCHDOG_SIGNAL = "USR1"
"""What the docker supervisor's watchdog sends the container's entrypoint (``docker kill
--signal``) to have it stop the engine and exit :data:`UNREQUESTED_EXIT_STATUS`."""
CONTAINER_STOP_SIGNAL = "TERM"
"""The container's stop signal, set explicitly (``docker run --stop-signal``): dockerd
treats ``docker kill --signal`` with any signal as a manual stop that cancels the restart
policy unless the container has a stop signal configured and the signal sent differs from
it (moby v20.10.24, the Debian docker.io installed here, ``daemon/kill.go``
``killWithSignal``: ``if container.Config.StopSignal != "" && sig != SIGKILL { if
containerStopSignal == sig { container.ExitOnNext() } } else { container.ExitOnNext() }``;
``ExitOnNext`` cancels the restart manager; the same in v28). Measured with the private
dockerd: without it ``docker kill --signal USR1`` left the container exited 75 with
RestartCount 0; with it dockerd restarted it (RestartCount 1)."""
WATCHDOG_KILL_AFTER_S = 10
"""How long the container entrypoint gives the engine after the watchdog's SIGTERM before
SIGKILL."""
# How long the supervisor loop and its watchdog give an engine's group after SIGTERM.
_ENGINE_GRACE_POLLS = 100
# The supervisor loop's start writes the engine's pid file a moment after it is detached.
_PID_WAIT_POLLS = 100
_PID_WAIT_S = 0.1
PROGRESS_TIMEOUT_S = 5
"""How long the watchdog waits for a head's ``/metrics`` (it answers at once when alive)."""


class SupervisorKind(StrEnum):
    """Which supervisor keeps an engine running."""

    SYSTEMD = "systemd"
    DOCKER = "docker"
    PROCESS = "process"


@dataclass(frozen=True)
class SupervisionFacts:
    """What a host offers for supervision."""

    systemd: bool
    """systemd runs as PID 1 (``/run/systemd/system`` exists)."""


@dataclass(frozen=True)
class RestartPolicy:
    """How often a crashed engine is restarted.

    ``limit`` restarts in a row at most; the process supervisor waits ``backoff_s``
    before the first, doubling up to ``backoff_max_s``, and forgets earlier crashes once
    an engine has run for ``reset_after_s`` (systemd's start-limit interval).
    """

    limit: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    reset_after_s: int = 600


DEFAULT_RESTART = RestartPolicy()


@dataclass(frozen=True)
class Watchdog:
    """What a supervisor's watchdog probes: one-token completions on the API of
    the engine's head (``base_url``: the node's own on the head, the head's address on a
    worker; model ``served_name``, keyed from ``secrets_file`` on the host).

    It sends one every second until the head has answered one (or the deploy said it did:
    :meth:`Supervisor.mark_served_command`), then every ``interval_s`` seconds, each cut
    off after ``probe_timeout_s``. From then on ``failures`` failed answers in a row
    restart the node's engine; one whose head has answered none within ``startup_s`` of
    its start is restarted too (a head whose workers never joined). A restart by the
    watchdog counts against the supervisor's :class:`RestartPolicy` like any other.

    A busy engine is not a hung one: a probe queued behind a benchmark's requests may wait
    longer than ``probe_timeout_s``. With ``progress_counters`` (Prometheus counters of
    generated tokens on the head's ``/metrics``), a failed probe does not count while
    their sum has grown since the previous failed probe: the head still completes tokens,
    only not the probe's in time. A hung pipeline's counters stand still.
    """

    base_url: str
    served_name: str
    secrets_file: str
    startup_s: int
    interval_s: int = 5
    failures: int = 3
    probe_timeout_s: int = 15
    progress_counters: tuple[str, ...] = ()

    def probe_command(self) -> str:
        """One completion; prints ``AMDFLEET_GENERATION <status> ...``."""
        return generation_command(
            self.base_url, self.served_name, self.probe_timeout_s, self.secrets_file
        )

    def progress_command(self) -> str:
        """The sum of :attr:`progress_counters` on the head's ``/metrics`` (nothing when
        there is none or no answer)."""
        return counter_command(
            self.base_url.rstrip("/") + "/metrics",
            self.progress_counters,
            min(self.probe_timeout_s, PROGRESS_TIMEOUT_S),
        )


class Supervisor(Protocol):
    """Command builders for one engine under one supervisor."""

    @property
    def layout(self) -> EngineLayout:
        """The engine's files on the host."""
        ...

    @property
    def kind(self) -> SupervisorKind:
        """Which supervisor this is."""
        ...

    def start_command(self) -> str:
        """Start the engine under supervision; returns once it is started."""
        ...

    def running_command(self) -> str:
        """Exit 0 when the engine runs now."""
        ...

    def first_run_command(self) -> str:
        """Exit 0 while the engine started by :meth:`start_command` has never exited
        (it runs and was not restarted): a deploy's readiness wait fails at once on the
        first crash instead of waiting out the restarts."""
        ...

    def stop_command(self, grace: float = 30.0) -> str:
        """Stop the engine and its supervision; idempotent and bounded by ``grace``."""
        ...

    def mark_served_command(self) -> str:
        """Record that the engine this supervisor started has served a completion (the
        deploy saw one): a watchdog counts failures from then on."""
        ...

    def gave_up_command(self) -> str:
        """Print, on one line, why the supervisor stopped restarting the engine (it spent
        its restarts); print nothing while it has not given up."""
        ...

    def log_tail_command(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the engine's output (empty when there is none)."""
        ...

    @property
    def log_source(self) -> str:
        """Where :meth:`log_tail_command` reads, as a user would read it on the host."""
        ...


def parse_facts(output: str) -> SupervisionFacts:
    """Parse the output of :data:`FACTS_COMMAND`."""
    return SupervisionFacts(systemd="AMDFLEET_SYSTEMD=1" in output.split())


def choose_supervisor(runtime: str, facts: SupervisionFacts) -> SupervisorKind:
    """The docker runtime is supervised by dockerd; the process runtime by systemd where
    it is PID 1, else by amdfleet's own supervisor loop."""
    if runtime == "docker":
        return SupervisorKind.DOCKER
    if facts.systemd:
        return SupervisorKind.SYSTEMD
    return SupervisorKind.PROCESS


def supervisor_for(
    kind: SupervisorKind,
    layout: EngineLayout,
    *,
    unit: str,
    container: str | None,
    policy: RestartPolicy = DEFAULT_RESTART,
    watchdog: Watchdog | None = None,
) -> Supervisor:
    """The supervisor of ``kind`` for the engine in ``layout`` (``unit`` is the rendered
    unit's file name, ``container`` the docker runtime's container name), running
    ``watchdog`` when one is given."""
    if kind is SupervisorKind.DOCKER:
        if not container:
            raise ValueError("the docker supervisor needs a container name")
        return DockerSupervisor(layout, container, policy, watchdog)
    if kind is SupervisorKind.SYSTEMD:
        return SystemdSupervisor(layout, unit, watchdog)
    return ProcessSupervisor(layout, policy, watchdog)


def stop_any_command(
    layout: EngineLayout, *, unit: str, container: str | None, grace: float = 30.0
) -> str:
    """Stop whatever any supervisor may have left running for this engine: the installed
    unit, the container and the supervisor loop with its engine. For cleanups that do not
    know which supervisor ran (a delete, a redeploy). Idempotent."""
    parts = [SystemdSupervisor(layout, unit).stop_command(grace)]
    if container:
        parts.append(DockerSupervisor(layout, container).stop_command(grace))
    parts.append(ProcessSupervisor(layout).stop_command(grace))
    return "; ".join(parts)


def docker_restart_flag(policy: RestartPolicy = DEFAULT_RESTART) -> str:
    """The ``docker run`` restart flags the launch script renders for the docker runtime:
    ``on-failure`` with a bound (the entrypoint makes every unrequested exit a failure),
    and the stop signal that keeps the watchdog's ``docker kill`` a restartable failure
    (:data:`CONTAINER_STOP_SIGNAL`)."""
    return f"--restart on-failure:{policy.limit} --stop-signal {CONTAINER_STOP_SIGNAL}"


@dataclass(frozen=True)
class SystemdSupervisor:
    """systemd: the rendered unit installed into :data:`SYSTEMD_UNIT_DIR`.

    With a :class:`Watchdog`, the start writes its sh text into ``watchdog.sh``, which the
    unit's ``ExecStartPost=`` starts after every start with the main process's pid (the
    rendered unit says why there: it ends with the run it watches, and its
    ``systemctl kill --kill-whom=main`` is no stop job, so ``Restart=always`` restarts the
    engine, counted against ``StartLimitBurst``). Its lines go to the unit's journal.

    Not run on any test machine (none has systemd): tested as command text, and the
    watchdog's sh run by this machine's sh against a real HTTP server.
    """

    layout: EngineLayout
    unit: str
    watchdog: Watchdog | None = None

    @property
    def kind(self) -> SupervisorKind:
        """``systemd``."""
        return SupervisorKind.SYSTEMD

    @property
    def unit_path(self) -> str:
        """Where the unit is installed."""
        return f"{SYSTEMD_UNIT_DIR}/{self.unit}"

    def start_command(self) -> str:
        """Write (or remove) the watchdog's text, install the uploaded unit, reload
        systemd, clear an old failure, start."""
        unit, path = shlex.quote(self.unit), shlex.quote(self.unit_path)
        records = _watchdog_records(self.layout)
        script = shlex.quote(self.layout.watchdog_script)
        watchdog = (
            f"rm -f {records} && (umask 077 && printf '%s\\n' "
            f"{shlex.quote(self._watchdog(self.watchdog))} >{script})"
            if self.watchdog
            else f"rm -f {records} {script}"
        )
        return (
            f"{watchdog} && "
            f"install -m 0644 {shlex.quote(self.layout.path(self.unit))} {path} && "
            "systemctl daemon-reload && "
            f"{{ systemctl reset-failed {unit} 2>/dev/null; true; }} && "
            f"systemctl start {unit}"
        )

    def running_command(self) -> str:
        """``systemctl is-active``."""
        return f"systemctl is-active --quiet {shlex.quote(self.unit)}"

    def first_run_command(self) -> str:
        """Active, and systemd counted no restart."""
        unit = shlex.quote(self.unit)
        return (
            f"{{ systemctl is-active --quiet {unit} && "
            f'[ "$(systemctl show -p NRestarts --value {unit})" = 0 ]; }}'
        )

    def stop_command(self, grace: float = 30.0) -> str:
        """Stop and remove the unit if installed (bounded by the unit's TimeoutStopSec and
        ``timeout``; the watchdog, in the unit's control group, ends with it)."""
        unit, path = shlex.quote(self.unit), shlex.quote(self.unit_path)
        records = f"{shlex.quote(self.layout.watchdog_script)} {_watchdog_records(self.layout)}"
        return (
            f"if [ -f {path} ] && command -v systemctl >/dev/null 2>&1; then "
            f"timeout {int(grace) + 10} systemctl stop {unit}; rm -f {path}; "
            f"systemctl daemon-reload; systemctl reset-failed {unit} 2>/dev/null; fi; "
            f"rm -f {records}; true"
        )

    def mark_served_command(self) -> str:
        """Create the served mark (:attr:`EngineLayout.served`), which the watchdog reads
        as its first good answer (nothing without a watchdog)."""
        return f": >{shlex.quote(self.layout.served)}" if self.watchdog else "true"

    def gave_up_command(self) -> str:
        """systemd's ``Result`` is ``start-limit-hit`` once the unit spent its start limit
        (systemd.unit(5), ``StartLimitBurst``); the watchdog's last reason follows when it
        stopped the engine."""
        unit, reason = shlex.quote(self.unit), shlex.quote(self.layout.stopped_by)
        return (
            f"_af_r=$(systemctl show -p Result --value {unit} 2>/dev/null); "
            'if [ "$_af_r" = start-limit-hit ]; then _af_w=; '
            f'[ -s {reason} ] && _af_w="; the watchdog\'s last stop: $(head -n 1 {reason})"; '
            f'echo "systemd gave up on {self.unit}: start limit hit after '
            f"$(systemctl show -p NRestarts --value {unit}) restarts "
            '(StartLimitBurst in its unit)$_af_w"; fi; true'
        )

    @property
    def log_source(self) -> str:
        """The unit's journal."""
        return f"journalctl -u {self.unit}"

    def log_tail_command(self, lines: int = 40) -> str:
        """The unit's journal (the watchdog's lines included)."""
        return (
            f"journalctl -u {shlex.quote(self.unit)} -n {int(lines)} --no-pager -o cat "
            "2>/dev/null; true"
        )

    def _watchdog(self, w: Watchdog) -> str:
        """The watchdog's sh text; ``$1`` is the unit's main process (``$MAINPID``)."""
        unit = shlex.quote(self.unit)
        # --kill-whom= since systemd 252, --kill-who= before; a plain kill of the main
        # process has the same effect on Restart= (no stop job either way).
        signal = (
            "_af_sig() { "
            f'systemctl kill --kill-whom=main --signal="$1" {unit} 2>/dev/null || '
            f'systemctl kill --kill-who=main --signal="$1" {unit} 2>/dev/null || '
            'kill -"$1" "$_af_main"; }; '
        )
        return f"_af_main=$1; {signal}" + watchdog_script(
            w,
            reason=self.layout.stopped_by,
            served=self.layout.served,
            # The run it watches is over: systemd ends this watchdog with it anyway.
            watch='kill -0 "$1" 2>/dev/null || exit 0; ',
            stop=(
                "_af_sig TERM; _af_i=0; "
                f'while kill -0 "$1" 2>/dev/null && [ $_af_i -lt {_ENGINE_GRACE_POLLS} ]; '
                f"do sleep {_PID_WAIT_S}; _af_i=$((_af_i+1)); done; "
                'kill -0 "$1" 2>/dev/null && _af_sig KILL; exit 0; '
            ),
        )


@dataclass(frozen=True)
class DockerSupervisor:
    """dockerd: the container runs detached with the restart policy of
    :func:`docker_restart_flag` (rendered into the launch script).

    With a :class:`Watchdog`, the start also runs one on the host, detached with setsid
    (``watchdog.pid``, its lines in ``watchdog.log``), that watches every start dockerd
    makes of the container: when the head stops completing tokens it logs why and sends
    the container's entrypoint :data:`WATCHDOG_SIGNAL` (``docker kill --signal``); the
    entrypoint stops the engine and exits :data:`UNREQUESTED_EXIT_STATUS`, a failure that
    dockerd restarts under its bounded policy (counted in ``RestartCount``), never a
    manual stop (:data:`CONTAINER_STOP_SIGNAL`). A new start (``State.StartedAt``
    changed) gets the startup deadline again; the watchdog exits once the container is
    gone or no longer running nor restarting (dockerd gave up, or it was stopped), and
    waits while dockerd does not answer.
    """

    layout: EngineLayout
    container: str
    policy: RestartPolicy = DEFAULT_RESTART
    watchdog: Watchdog | None = None

    @property
    def kind(self) -> SupervisorKind:
        """``docker``."""
        return SupervisorKind.DOCKER

    @property
    def watchdog_log(self) -> str:
        """The watchdog's lines (each stop of the engine with its reason)."""
        return self.layout.path("watchdog.log")

    def start_command(self) -> str:
        """Run the launch script (``docker run --detach``), its output into the log; then
        the watchdog, when there is one."""
        log, fresh = shlex.quote(self.layout.log), new_private_file(self.layout.log)
        records = _watchdog_records(self.layout)
        run = (
            f"{fresh} && rm -f {records} && "
            f"{shlex.quote(self.layout.launch)} >>{log} 2>&1 </dev/null"
        )
        if self.watchdog is None:
            return run
        return f"{run} && {new_private_file(self.watchdog_log)} && " + detached(
            self._watchdog(self.watchdog), self.watchdog_log, self.layout.watchdog_pid
        )

    def running_command(self) -> str:
        """The container is running."""
        return f'[ "$({self._inspect("{{.State.Running}}")})" = true ]'

    def first_run_command(self) -> str:
        """Running, and dockerd has not restarted it."""
        return f'[ "$({self._inspect("{{.State.Running}} {{.RestartCount}}")})" = "true 0" ]'

    def stop_command(self, grace: float = 30.0) -> str:
        """Stop the watchdog first (it must not act on the stopping container), then
        ``docker stop`` and ``docker rm -f``."""
        name = shlex.quote(self.container)
        records = _watchdog_records(self.layout)
        return (
            f"{stop_process_group(self.layout.watchdog_pid, 1.0)}; "
            "if command -v docker >/dev/null 2>&1; then "
            f"docker stop --time {int(grace)} {name} >/dev/null 2>&1; "
            f"docker rm -f {name} >/dev/null 2>&1; fi; rm -f {records}; true"
        )

    def mark_served_command(self) -> str:
        """Create the served mark (:attr:`EngineLayout.served`), which the watchdog reads
        as its first good answer (nothing without a watchdog)."""
        return f": >{shlex.quote(self.layout.served)}" if self.watchdog else "true"

    def gave_up_command(self) -> str:
        """A container that is not running after ``policy.limit`` restarts: dockerd spent
        its ``on-failure`` count (a container ``docker stop`` stopped is not restarted,
        but is also not there after amdfleet's stop, which removes it). The watchdog's
        last reason follows when it stopped the engine."""
        fields = self._inspect("{{.State.Running}} {{.RestartCount}} {{.State.ExitCode}}")
        limit, reason = self.policy.limit, shlex.quote(self.layout.stopped_by)
        return (
            f"set -- $({fields}); "
            f'if [ "$1" = false ] && [ "${{2:-0}}" -ge {limit} ]; then _af_w=; '
            f'[ -s {reason} ] && _af_w="; the watchdog\'s last stop: $(head -n 1 {reason})"; '
            f'echo "dockerd gave up on container {self.container} after $2 restarts '
            f'(on-failure:{limit}); the engine last exited with status $3$_af_w"; fi; true'
        )

    @property
    def log_source(self) -> str:
        """The container's output and the watchdog's lines (which a supervisor built
        without its watchdog, as refresh and ``amdfleet status`` build it, reads too)."""
        return f"docker logs {self.container} and {self.watchdog_log}"

    def log_tail_command(self, lines: int = 40) -> str:
        """``docker logs --tail``; the launch log when there is no container (a failed
        ``docker run`` wrote why there); then the watchdog's last lines, if it wrote any."""
        name, wlog = shlex.quote(self.container), shlex.quote(self.watchdog_log)
        return (
            f"if docker inspect {name} >/dev/null 2>&1; then "
            f"docker logs --tail {int(lines)} {name} 2>&1; "
            f"else tail -n {int(lines)} -- {shlex.quote(self.layout.log)} 2>/dev/null; fi; "
            f"if [ -s {wlog} ]; then tail -n {min(int(lines), 10)} -- {wlog}; fi; true"
        )

    def _inspect(self, template: str) -> str:
        return (
            f"docker inspect -f {shlex.quote(template)} {shlex.quote(self.container)} 2>/dev/null"
        )

    def _watchdog(self, w: Watchdog) -> str:
        """The host watchdog's sh text: one loop across every start dockerd makes."""
        name, served = shlex.quote(self.container), shlex.quote(self.layout.served)
        state = self._inspect("{{.State.Status}} {{.State.StartedAt}}")
        return f"_af_run=$({self._inspect('{{.State.StartedAt}}')}); " + watchdog_script(
            w,
            reason=self.layout.stopped_by,
            served=self.layout.served,
            # Gone, or neither running nor restarting: nothing left to watch (a dockerd
            # that does not answer, e.g. restarting, is waited for). A new start is
            # watched from its beginning (startup deadline, no served mark).
            watch=(
                f"_af_st=$({state}) || "
                "{ docker info >/dev/null 2>&1 && exit 0; continue; }; "
                'case "$_af_st" in "running "*) ;; "restarting "*) continue;; '
                "*) exit 0;; esac; "
                'if [ "${_af_st#running }" != "$_af_run" ]; then '
                "_af_run=${_af_st#running }; _af_ok=0; _af_bad=0; _af_t0=$(date +%s); "
                f"rm -f {served}; fi; "
            ),
            # The old start keeps its deadline until dockerd has made the next one.
            stop=(
                f"docker kill --signal {WATCHDOG_SIGNAL} {name} >/dev/null 2>&1; "
                "_af_ok=0; _af_bad=0; _af_t0=$(date +%s); "
            ),
        )


@dataclass(frozen=True)
class ProcessSupervisor:
    """amdfleet's own supervisor: a POSIX-sh loop detached with setsid, for hosts with
    neither systemd nor the docker runtime.

    The loop (its pid in ``supervisor.pid``) starts the launch script in a session and
    process group of its own (``engine.pid``). Whenever the engine ends, whatever its exit
    status, the loop kills what is left of the engine's group (a vLLM EngineCore that
    outlived its API server), logs ``amdfleet-supervisor: <reason>; restart N of LIMIT in
    T s`` into the engine log (the reason: ``engine exited with status S``, with the
    signal for a status above 128, or the watchdog's), records the count in
    ``engine.restarts``, waits and starts it again. After ``policy.limit`` restarts in a
    row it logs that it gives up, writes the same line into ``supervisor.state`` and
    exits. On SIGTERM (amdfleet's stop) it passes the signal to the engine's group and
    exits without restarting: that is the only way an engine stops for good.

    With a :class:`Watchdog`, each start also gets a watchdog in a process group of its
    own that stops the engine (SIGTERM, then SIGKILL) when it stops completing tokens;
    the loop then restarts it with the watchdog's reason.
    """

    layout: EngineLayout
    policy: RestartPolicy = DEFAULT_RESTART
    watchdog: Watchdog | None = None

    @property
    def kind(self) -> SupervisorKind:
        """``process``."""
        return SupervisorKind.PROCESS

    @property
    def supervisor_pid(self) -> str:
        """The supervisor loop's process-group id."""
        return self.layout.path("supervisor.pid")

    @property
    def restarts(self) -> str:
        """How often the engine was restarted since the start (absent: never)."""
        return self.layout.path("engine.restarts")

    @property
    def state(self) -> str:
        """Why the loop gave up (absent while it has not)."""
        return self.layout.path("supervisor.state")

    @property
    def _run_records(self) -> str:
        """The files one run of the loop leaves (restart count, give-up line, watchdog
        reason, served mark), quoted for ``rm -f``: a start and a stop clear them."""
        records = (self.restarts, self.state, self.layout.stopped_by, self.layout.served)
        return " ".join(shlex.quote(f) for f in records)

    def start_command(self) -> str:
        """Start the loop detached (the log truncated first, so a failure report shows this
        start's output only); returns once the engine's pid file is written."""
        fresh, engine_pid = new_private_file(self.layout.log), shlex.quote(self.layout.pid)
        return (
            f"{fresh} && rm -f {engine_pid} {self._run_records} && "
            + detached(self._loop(), self.layout.log, self.supervisor_pid)
            + f" && _af_i=0; while [ ! -s {engine_pid} ] && [ $_af_i -lt {_PID_WAIT_POLLS} ]; "
            f"do sleep {_PID_WAIT_S}; _af_i=$((_af_i+1)); done"
        )

    def running_command(self) -> str:
        """The engine's process group is alive."""
        return is_running(self.layout.pid)

    def first_run_command(self) -> str:
        """The engine runs and was never restarted."""
        return f"{{ [ ! -s {shlex.quote(self.restarts)} ] && {is_running(self.layout.pid)}; }}"

    def stop_command(self, grace: float = 30.0) -> str:
        """Stop the loop (it passes SIGTERM on to the engine and its watchdog and exits),
        then a watchdog and an engine's group it left (a loop killed by SIGKILL leaves
        both: SIGTERM, ``grace`` seconds, SIGKILL)."""
        return (
            f"{stop_process_group(self.supervisor_pid, min(grace, 5.0))}; "
            f"{stop_process_group(self.layout.watchdog_pid, 1.0)}; "
            f"{stop_process_group(self.layout.pid, grace)}; "
            f"rm -f {self._run_records}"
        )

    def mark_served_command(self) -> str:
        """Create the served mark (:attr:`EngineLayout.served`), which the watchdog reads
        as its first good answer."""
        return f": >{shlex.quote(self.layout.served)}"

    def gave_up_command(self) -> str:
        """The line the loop wrote into ``supervisor.state`` when it gave up."""
        return f"head -n 1 -- {shlex.quote(self.state)} 2>/dev/null; true"

    @property
    def log_source(self) -> str:
        """The engine log file."""
        return self.layout.log

    def log_tail_command(self, lines: int = 40) -> str:
        """The engine log (the loop's restart lines included)."""
        return f"tail -n {int(lines)} -- {shlex.quote(self.layout.log)} 2>/dev/null; true"

    def _loop(self) -> str:
        p = self.policy
        launch, pid = shlex.quote(self.layout.launch), shlex.quote(self.layout.pid)
        restarts, state = shlex.quote(self.restarts), shlex.quote(self.state)
        reason = shlex.quote(self.layout.stopped_by)
        first_ms, max_ms = int(p.backoff_s * 1000), int(p.backoff_max_s * 1000)
        say = f'echo "{_LOG_PREFIX}'
        watch = (
            f'setsid sh -c {shlex.quote(self._watchdog(self.watchdog))} sh "$_af_child" '
            f'</dev/null & _af_wd=$!; echo "$_af_wd" >{shlex.quote(self.layout.watchdog_pid)}; '
            if self.watchdog
            else ""
        )
        return (
            f"_af_n=0; _af_total=0; _af_ms={first_ms}; _af_child=; _af_wd=; "
            # The signal reaches the engine's group, or its pid before setsid made the group.
            'trap \'{ kill -TERM -"$_af_child" || kill -TERM "$_af_child"; } 2>/dev/null; '
            '[ -n "$_af_wd" ] && { kill -KILL -"$_af_wd" || kill -KILL "$_af_wd"; } 2>/dev/null; '
            "exit 0' TERM INT HUP; "
            "while :; do "
            f"_af_t0=$(date +%s); rm -f {reason} {shlex.quote(self.layout.served)}; "
            f"setsid {launch} </dev/null & _af_child=$!; "
            f'echo "$_af_child" >{pid}.tmp && mv -f {pid}.tmp {pid}; '
            f"{watch}"
            'wait "$_af_child"; _af_rc=$?; '
            'if [ -n "$_af_wd" ]; then '
            '{ kill -KILL -"$_af_wd" || kill -KILL "$_af_wd"; } 2>/dev/null; '
            'wait "$_af_wd" 2>/dev/null; _af_wd=; fi; '
            'kill -KILL -"$_af_child" 2>/dev/null; '
            f"if [ -s {reason} ]; then _af_why=$(cat {reason}); "
            'elif [ "$_af_rc" -gt 128 ]; then '
            '_af_why="engine exited with status $_af_rc (signal $((_af_rc-128)))"; '
            'elif [ "$_af_rc" -eq 0 ]; then '
            '_af_why="engine exited with status 0 without being asked to stop"; '
            'else _af_why="engine exited with status $_af_rc"; fi; '
            f"if [ $(( $(date +%s) - _af_t0 )) -ge {p.reset_after_s} ]; then "
            f"_af_n=0; _af_ms={first_ms}; fi; "
            f'if [ "$_af_n" -ge {p.limit} ]; then '
            f'_af_msg="$_af_why; giving up after $_af_n restarts (limit {p.limit})"; '
            f'{say} $_af_msg"; '
            f'echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $_af_msg" >{state}; '
            f"rm -f {pid}; exit 1; fi; "
            "_af_n=$((_af_n+1)); _af_total=$((_af_total+1)); "
            f'echo "$_af_total" >{restarts}; '
            '_af_s="$((_af_ms/1000)).$(printf %03d $((_af_ms%1000)))"; '
            f'{say} $_af_why; restart $_af_n of {p.limit} in $_af_s s"; '
            'sleep "$_af_s" & wait $!; '
            f"_af_ms=$((_af_ms*2)); [ $_af_ms -gt {max_ms} ] && _af_ms={max_ms}; "
            "done"
        )

    def _watchdog(self, w: Watchdog) -> str:
        """The watchdog's sh text; ``$1`` is the engine's process group. It watches one
        start: the loop starts a new one with the next."""
        return watchdog_script(
            w,
            reason=self.layout.stopped_by,
            served=self.layout.served,
            # An engine gone with its supervisor (killed together) leaves no one to watch.
            watch='kill -0 -"$1" 2>/dev/null || kill -0 "$1" 2>/dev/null || exit 0; ',
            stop=(
                'kill -TERM -"$1" 2>/dev/null; _af_i=0; '
                f'while kill -0 -"$1" 2>/dev/null && [ $_af_i -lt {_ENGINE_GRACE_POLLS} ]; do '
                f"sleep {_PID_WAIT_S}; _af_i=$((_af_i+1)); done; "
                'kill -KILL -"$1" 2>/dev/null; exit 0; '
            ),
        )


def _watchdog_records(layout: EngineLayout) -> str:
    """The files a watchdog leaves (its served mark and its reason), quoted for ``rm -f``."""
    return f"{shlex.quote(layout.served)} {shlex.quote(layout.stopped_by)}"


def watchdog_script(w: Watchdog, *, reason: str, served: str, watch: str, stop: str) -> str:
    """The sh text of a :class:`Watchdog` loop, shared by the supervisors that run one.

    Each round (every second until the first good answer or the ``served`` mark, then
    every ``interval_s``) first runs ``watch`` (sh that exits when there is nothing left
    to watch, ``continue``-s to skip a round, and may reset the counters ``_af_ok``,
    ``_af_bad``, ``_af_t0`` for a new start of the engine), then sends one probe. When the
    engine is to be stopped, the reason goes into the file ``reason`` and, as an
    ``amdfleet-supervisor: ...; stopping the engine`` line, to standard output, then
    ``stop`` runs (sh that stops the engine: it ends the loop with ``exit`` or lets it go
    on to watch the next start)."""
    say, reason_file, served_file = f'echo "{_LOG_PREFIX}', shlex.quote(reason), shlex.quote(served)
    # A failed probe while the token counters grew since the last failed one does not
    # count (a busy head); a good answer forgets the last reading.
    busy = (
        f"_af_m=$({w.progress_command()}); "
        'if [ -n "$_af_m" ] && [ -n "$_af_m0" ] && [ "$_af_m" != "$_af_m0" ]; then '
        "_af_m0=$_af_m; _af_bad=0; continue; fi; _af_m0=$_af_m; "
        if w.progress_counters
        else ""
    )
    forget = "_af_m0=; " if w.progress_counters else ""
    return (
        # set -f: the answer's words are split into $2.. and must not glob.
        "set -f; _af_ok=0; _af_bad=0; _af_t0=$(date +%s); "
        # Every second until the first good answer (the deploy's counts: the served
        # mark), then every interval.
        f'while if [ "$_af_ok" = 1 ]; then sleep {w.interval_s}; else sleep 1; fi; do '
        f"{watch}"
        f"[ -e {served_file} ] && _af_ok=1; "
        f"_af_out=$({w.probe_command()}); "
        'set -- "$1" ${_af_out#AMDFLEET_GENERATION }; '
        # The mark is created once, never touched again: a serving engine's node
        # changes no file that amdfleet manages (a no-op `up` finds it as it was).
        f'if [ "$2" = 200 ]; then _af_ok=1; _af_bad=0; {forget}'
        f"[ -e {served_file} ] || : >{served_file}; continue; fi; "
        f'if [ "$_af_ok" = 1 ]; then {busy}_af_bad=$((_af_bad+1)); '
        f'[ "$_af_bad" -ge {w.failures} ] || continue; '
        f'_af_why="watchdog: {w.failures} one-token completions in a row failed '
        f'(last: status $2 within {w.probe_timeout_s} s)"; '
        f"elif [ $(( $(date +%s) - _af_t0 )) -ge {w.startup_s} ]; then "
        f'_af_why="watchdog: the engine completed no token within {w.startup_s} s '
        '(last: status $2)"; '
        "else continue; fi; "
        f'echo "$_af_why" >{reason_file}; {say} $_af_why; stopping the engine"; '
        f"{stop}"
        "done"
    )
