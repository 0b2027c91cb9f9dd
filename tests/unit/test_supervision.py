"""Supervision: which supervisor a host gets, and the text of the systemd supervisor.

The process supervisor runs for real in tests/providers/test_engine_service.py (lab hosts
have no systemd) and dockerd's restart policy in tests/providers/test_engine_docker.py.
No machine that tests amdfleet runs systemd, so the systemd supervisor is checked here as
what it is to this code: command text and the rendered unit.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amdfleet.config import load_stack_file
from amdfleet.engines import tokens_counters
from amdfleet.plan import plan
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.supervision import (
    FACTS_COMMAND,
    WATCHDOG_KILL_AFTER_S,
    DockerSupervisor,
    ProcessSupervisor,
    SupervisionFacts,
    SupervisorKind,
    SystemdSupervisor,
    Watchdog,
    choose_supervisor,
    docker_restart_flag,
    parse_facts,
    stop_any_command,
    supervisor_for,
)
from amdfleet.render import SECRETS_LOADER, render_node
from tests.support.openai_server import OpenAIServer
from tests.support.waiting import wait_until

LAYOUT = EngineLayout("/opt/amdfleet/local")


@pytest.mark.parametrize(
    ("runtime", "systemd", "kind"),
    [
        ("docker", True, SupervisorKind.DOCKER),
        ("docker", False, SupervisorKind.DOCKER),
        ("process", True, SupervisorKind.SYSTEMD),
        ("process", False, SupervisorKind.PROCESS),
    ],
)
def test_choice_follows_runtime_then_systemd(runtime: str, systemd: bool, kind: str) -> None:
    assert choose_supervisor(runtime, SupervisionFacts(systemd=systemd)) is kind
    supervisor = supervisor_for(kind, LAYOUT, unit="amdfleet-local.service", container="c")
    assert supervisor.kind is kind


def test_facts_on_this_machine_say_no_systemd() -> None:
    """This machine's PID 1 is not systemd (ENVIRONMENT.md)."""
    output = subprocess.run(["sh", "-c", FACTS_COMMAND], capture_output=True, text=True).stdout
    assert output == "AMDFLEET_SYSTEMD=0\n"
    assert parse_facts(output) == SupervisionFacts(systemd=False)
    assert parse_facts("AMDFLEET_SYSTEMD=1\n") == SupervisionFacts(systemd=True)


def test_the_docker_supervisor_needs_a_container() -> None:
    with pytest.raises(ValueError, match="container name"):
        supervisor_for(SupervisorKind.DOCKER, LAYOUT, unit="u.service", container=None)


def test_systemd_installs_reloads_and_starts_the_rendered_unit() -> None:
    supervisor = SystemdSupervisor(LAYOUT, "amdfleet-local.service")
    assert supervisor.start_command() == (
        "rm -f /opt/amdfleet/local/engine.served /opt/amdfleet/local/engine.stopped-by "
        "/opt/amdfleet/local/watchdog.sh && "
        "install -m 0644 /opt/amdfleet/local/amdfleet-local.service "
        "/etc/systemd/system/amdfleet-local.service && systemctl daemon-reload && "
        "{ systemctl reset-failed amdfleet-local.service 2>/dev/null; true; } && "
        "systemctl start amdfleet-local.service"
    )
    assert supervisor.running_command() == "systemctl is-active --quiet amdfleet-local.service"
    assert 'systemctl show -p NRestarts --value amdfleet-local.service)" = 0' in (
        supervisor.first_run_command()
    )
    stop = supervisor.stop_command(grace=30)
    assert stop.startswith("if [ -f /etc/systemd/system/amdfleet-local.service ]")
    assert "timeout 40 systemctl stop amdfleet-local.service; " in stop
    assert "rm -f /etc/systemd/system/amdfleet-local.service; systemctl daemon-reload" in stop
    assert supervisor.log_tail_command(5).startswith(
        "journalctl -u amdfleet-local.service -n 5 --no-pager"
    )


def test_the_unit_restarts_any_unrequested_stop_a_bounded_number_of_times() -> None:
    """systemd.service(5): ``Restart=always`` restarts a service whatever its exit status
    or signal, but not one stopped by ``systemctl stop`` (amdfleet's stop); the delay
    grows from ``RestartSec`` over ``RestartSteps`` to ``RestartMaxDelaySec`` (systemd
    254). systemd.unit(5): more than ``StartLimitBurst`` starts within
    ``StartLimitIntervalSec`` and the unit fails with ``start-limit-hit``. systemd.exec(5):
    ``ExecStopPost=`` sees ``$SERVICE_RESULT``, ``$EXIT_CODE`` and ``$EXIT_STATUS``; a
    literal ``$`` is written ``$$`` in a command line."""
    deployment = plan(load_stack_file("local").spec)
    files = {f.path.rsplit("/", 1)[1]: f.content for f in render_node(deployment, 0)}
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(files[f"{deployment.engine.container_name}.service"])
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert (service["RestartSec"], service["RestartSteps"], service["RestartMaxDelaySec"]) == (
        "1",
        "5",
        "30",
    )
    assert service["ExecStart"] == f"{deployment.head.remote_dir}/launch.sh"
    assert service["TimeoutStopSec"] == "30"
    # [Unit] is where systemd reads the start limit: 1 start + 5 restarts per 600 s.
    assert unit["Unit"]["StartLimitBurst"] == "6"
    assert unit["Unit"]["StartLimitIntervalSec"] == "600"
    # The reason of each end goes into the journal; the line is what sh then runs.
    post = service["ExecStopPost"]
    assert post.startswith("/bin/sh -c '") and "$$" in post
    line = post.removeprefix("/bin/sh -c ").strip("'").replace("$$", "$")
    env = {"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"}
    said = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env).stdout
    assert said == "amdfleet-supervisor: engine ended: result=success exited=0\n"


def test_systemd_says_when_it_spent_its_start_limit() -> None:
    """``Result=start-limit-hit`` (systemd.unit(5)) is what a unit shows once systemd
    stopped restarting it; refresh prints it beside "not running"."""
    command = SystemdSupervisor(LAYOUT, "amdfleet-local.service").gave_up_command()
    assert "systemctl show -p Result --value amdfleet-local.service" in command
    assert '"$_af_r" = start-limit-hit' in command
    # Without systemd (this machine) it prints nothing and succeeds.
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (0, "")


def test_docker_runtime_renders_no_unit_and_the_restart_policy() -> None:
    deployment = plan(load_stack_file("mi355x-llama70b").spec)
    files = {f.path.rsplit("/", 1)[1]: f.content for f in render_node(deployment, 0)}
    assert sorted(files) == ["engine.env", "launch.sh"]
    assert docker_restart_flag() == "--restart on-failure:5 --stop-signal TERM"
    assert (
        "exec docker run --detach --restart on-failure:5 --stop-signal TERM --name"
        in files["launch.sh"]
    )


def test_stop_any_covers_every_supervisor() -> None:
    stop = stop_any_command(LAYOUT, unit="amdfleet-local.service", container="amdfleet-local")
    for part in (
        SystemdSupervisor(LAYOUT, "amdfleet-local.service").stop_command(),
        DockerSupervisor(LAYOUT, "amdfleet-local").stop_command(),
        ProcessSupervisor(LAYOUT).stop_command(),
    ):
        assert part in stop


@pytest.mark.parametrize(
    ("kind", "source"),
    [
        (SupervisorKind.PROCESS, "/opt/amdfleet/local/engine.log"),
        (SupervisorKind.SYSTEMD, "journalctl -u amdfleet-local.service"),
        (SupervisorKind.DOCKER, "docker logs amdfleet-local and /opt/amdfleet/local/watchdog.log"),
    ],
)
def test_a_failed_start_names_where_its_log_lines_come_from(
    kind: SupervisorKind, source: str
) -> None:
    supervisor = supervisor_for(
        kind, LAYOUT, unit="amdfleet-local.service", container="amdfleet-local"
    )
    assert supervisor.log_source == source
    # The source names what the tail command reads.
    assert source.split()[-1] in supervisor.log_tail_command()


@pytest.mark.parametrize(
    ("engine", "status", "said"),
    [
        ("exit 0", 75, "engine exited with status 0 without being asked to stop; exiting 75"),
        ("exit 3", 3, "engine exited with status 3"),
        ("kill -KILL $$", 137, "engine exited with status 137 (signal 9)"),
    ],
)
def test_the_container_entrypoint_makes_every_unrequested_exit_a_failure(
    engine: str, status: int, said: str
) -> None:
    """dockerd's ``on-failure`` restarts non-zero exits only (Docker Engine API,
    RestartPolicy): the entrypoint (run here by this machine's sh) turns a clean exit
    nobody asked for into status 75 and says why in the container's log."""
    ran = subprocess.run(
        ["sh", "-c", SECRETS_LOADER, "sh", "sh", "-c", engine], capture_output=True, text=True
    )
    assert ran.returncode == status
    assert f"amdfleet-entrypoint: {said}" in ran.stderr


def test_the_container_entrypoint_passes_docker_stop_on_and_keeps_its_status() -> None:
    """``docker stop`` signals the container's PID 1 (the entrypoint): the engine gets the
    SIGTERM, exits 0, and so does the container (a requested stop, not restarted)."""
    engine = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('engine stopping'), sys.exit(0)))\n"
        "print('engine ready', flush=True)\n"
        "time.sleep(100)\n"
    )
    proc = subprocess.Popen(
        ["sh", "-c", SECRETS_LOADER, "sh", sys.executable, "-c", engine],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "engine ready\n"  # its handler is in place
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert out == "engine stopping\n" and "amdfleet-entrypoint" not in err


WATCHDOG = Watchdog(
    base_url="http://10.77.0.2:8000", served_name="tiny", secrets_file=LAYOUT.secrets, startup_s=90
)


@pytest.mark.parametrize("kind", [SupervisorKind.PROCESS, SupervisorKind.DOCKER])
def test_supervisor_for_passes_the_watchdog_on(kind: SupervisorKind) -> None:
    supervisor = supervisor_for(
        kind, LAYOUT, unit="amdfleet-local.service", container="c", watchdog=WATCHDOG
    )
    assert isinstance(supervisor, ProcessSupervisor | DockerSupervisor)
    assert supervisor.watchdog == WATCHDOG
    assert supervisor.mark_served_command() == ": >/opt/amdfleet/local/engine.served"


def test_the_docker_watchdog_runs_after_the_container_and_stops_before_it() -> None:
    """The watchdog is started once ``docker run --detach`` returned (its pid in the
    layout, its lines in watchdog.log) and stopped before ``docker stop``, so it never
    acts on a container amdfleet is stopping; without a watchdog nothing changes but the
    records' cleanup."""
    docker = DockerSupervisor(LAYOUT, "amdfleet-local", watchdog=WATCHDOG)
    start = docker.start_command()
    launch = start.index("/opt/amdfleet/local/launch.sh >>/opt/amdfleet/local/engine.log")
    watchdog = start.index("nohup setsid sh -c ")
    assert launch < watchdog
    assert start.endswith("echo $! >/opt/amdfleet/local/watchdog.pid; }; }")
    assert "docker kill --signal USR1 amdfleet-local" in start
    assert "docker run" not in start  # the launch script runs it
    plain = DockerSupervisor(LAYOUT, "amdfleet-local")
    assert "setsid" not in plain.start_command() and plain.mark_served_command() == "true"
    stop = plain.stop_command()  # what stop_any runs, knowing no watchdog
    assert stop.index("/opt/amdfleet/local/watchdog.pid") < stop.index("docker stop")
    assert docker.stop_command() == stop
    assert docker.log_source == "docker logs amdfleet-local and /opt/amdfleet/local/watchdog.log"
    assert "tail -n 10 -- /opt/amdfleet/local/watchdog.log" in docker.log_tail_command()


def test_the_docker_watchdog_shares_the_process_watchdog_probe_loop() -> None:
    """One probe loop for both (``watchdog_script``): the same probe, counts, reasons and
    records; what differs is what is watched and how the engine is stopped."""
    docker = DockerSupervisor(LAYOUT, "amdfleet-local", watchdog=WATCHDOG)._watchdog(WATCHDOG)
    process = ProcessSupervisor(LAYOUT, watchdog=WATCHDOG)._watchdog(WATCHDOG)
    probe_loop = process[process.index("[ -e ") : process.index("stopping the engine")]
    assert WATCHDOG.probe_command() in probe_loop and probe_loop in docker
    # Gone, given up or stopped: the docker watchdog exits; a restart is waited out, and
    # a new start (StartedAt changed) is watched from its beginning.
    assert '"restarting "*) continue;;' in docker and "*) exit 0;;" in docker
    # No such container: exit; dockerd not answering (restarting): wait for it.
    assert "2>/dev/null) || { docker info >/dev/null 2>&1 && exit 0; continue; }; " in docker
    assert "_af_t0=$(date +%s); rm -f /opt/amdfleet/local/engine.served; fi;" in docker
    # A trip does not end it: it goes on to watch dockerd's next start.
    assert docker.endswith(
        "docker kill --signal USR1 amdfleet-local >/dev/null 2>&1; "
        "_af_ok=0; _af_bad=0; _af_t0=$(date +%s); done"
    )


def test_docker_gave_up_line_carries_the_watchdogs_last_reason() -> None:
    """The line names the watchdog's last reason when it stopped the engine (shown for
    real in tests/providers/test_engine_docker.py); without a daemon (this machine's
    default socket has none) the command prints nothing and succeeds."""
    command = DockerSupervisor(LAYOUT, "amdfleet-local", watchdog=WATCHDOG).gave_up_command()
    assert "head -n 1 /opt/amdfleet/local/engine.stopped-by" in command
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (0, "")


def _entrypoint(engine: str, loader: str = SECRETS_LOADER) -> subprocess.Popen[str]:
    """The entrypoint run by this machine's sh with a Python engine."""
    return subprocess.Popen(
        ["sh", "-c", loader, "sh", sys.executable, "-c", engine],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("handler", "status"),
    [
        ("signal.signal(signal.SIGTERM, lambda *_: (print('engine stopping'), sys.exit(0)))", 0),
        ("signal.signal(signal.SIGTERM, lambda *_: (print('engine stopping'), sys.exit(3)))", 3),
    ],
)
def test_the_container_entrypoint_stops_the_engine_for_the_watchdog(
    handler: str, status: int
) -> None:
    """The host watchdog's ``docker kill --signal USR1`` reaches the entrypoint (PID 1):
    the engine gets SIGTERM and, whatever it exits with, the container exits 75, a
    failure dockerd's ``on-failure`` restarts, saying the watchdog stopped it."""
    engine = (
        f"import signal, sys, time\n{handler}\nprint('engine ready', flush=True)\ntime.sleep(100)\n"
    )
    proc = _entrypoint(engine)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "engine ready\n"
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 75
    assert out == "engine stopping\n"
    assert (
        f"amdfleet-entrypoint: the watchdog on the host stopped the engine (it exited with "
        f"status {status}); exiting 75 so that dockerd restarts it"
    ) in err


def test_the_container_entrypoint_kills_an_engine_that_ignores_the_watchdog() -> None:
    """An engine that ignores SIGTERM is killed after the grace period (shortened here
    from WATCHDOG_KILL_AFTER_S to 0.5 s in the entrypoint's text, the rest as rendered)."""
    loader = SECRETS_LOADER.replace(f"sleep {WATCHDOG_KILL_AFTER_S};", "sleep 0.5;")
    assert loader != SECRETS_LOADER
    engine = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('engine ready', flush=True)\n"
        "time.sleep(100)\n"
    )
    proc = _entrypoint(engine, loader)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "engine ready\n"
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 75
    assert "stopped the engine (it exited with status 137); exiting 75" in err


def test_systemd_writes_the_watchdog_that_the_unit_starts_after_each_start() -> None:
    """The start writes watchdog.sh (0600) before installing the unit; without a watchdog
    it removes one an earlier deploy wrote. Stop removes it with the unit."""
    systemd = SystemdSupervisor(LAYOUT, "amdfleet-local.service", WATCHDOG)
    start = systemd.start_command()
    assert start.index(">/opt/amdfleet/local/watchdog.sh)") < start.index("install -m 0644")
    assert "(umask 077 && printf '%s\\n' " in start
    assert "systemctl kill --kill-whom=main" in start
    plain = SystemdSupervisor(LAYOUT, "amdfleet-local.service").start_command()
    assert plain.startswith(
        "rm -f /opt/amdfleet/local/engine.served /opt/amdfleet/local/engine.stopped-by "
        "/opt/amdfleet/local/watchdog.sh && install"
    )
    assert "rm -f /opt/amdfleet/local/watchdog.sh " in systemd.stop_command()
    assert systemd.mark_served_command() == ": >/opt/amdfleet/local/engine.served"
    assert "head -n 1 /opt/amdfleet/local/engine.stopped-by" in systemd.gave_up_command()


def test_the_units_exec_start_post_starts_the_watchdog_with_the_main_pid(tmp_path: Path) -> None:
    """systemd.service(5): ``ExecStartPost=`` runs after each start (automatic restarts
    included); systemd.exec(5): a control process has ``$MAINPID``. The rendered line, run
    here by sh as systemd would (``$$`` made ``$``, the engine directory moved to a temp
    dir), drops the served mark and starts watchdog.sh detached with that pid, and starts
    nothing where no watchdog.sh was written."""
    deployment = plan(load_stack_file("local").spec)
    files = {f.path.rsplit("/", 1)[1]: f.content for f in render_node(deployment, 0)}
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(files[f"{deployment.engine.container_name}.service"])
    post = unit["Service"]["ExecStartPost"]
    assert post.startswith("/bin/sh -c '") and '"$$MAINPID"' in post
    line = post.removeprefix("/bin/sh -c ").strip("'").replace("$$", "$")
    line = line.replace(deployment.head.remote_dir, str(tmp_path))
    env = {"PATH": os.environ["PATH"], "MAINPID": "4242"}
    (tmp_path / "engine.served").write_text("")
    subprocess.run(["sh", "-c", line], check=True, env=env, timeout=10)
    assert not (tmp_path / "engine.served").exists()
    (tmp_path / "watchdog.sh").write_text(f'echo "$1" >{tmp_path}/started\n')
    subprocess.run(["sh", "-c", line], check=True, env=env, timeout=10)
    wait_until(lambda: (tmp_path / "started").exists(), 10, "the watchdog to start")
    wait_until(
        lambda: (tmp_path / "started").read_text() == "4242\n", 10, "the main pid to be written"
    )


def test_the_systemd_watchdog_stops_the_main_process_when_the_head_fails(
    tmp_path: Path,
) -> None:
    """The systemd watchdog's sh, run for real by this machine's sh against a real HTTP
    server (tests/support/openai_server.py) with a real main process. No systemd here:
    ``systemctl kill`` fails, so the watchdog's last resort, a plain SIGTERM to the main
    process, is what runs (the same thing to ``Restart=``: no stop job). It waits for a
    first answer, then two 500s in a row make it log why, record the reason and stop the
    main process; with its run over, it exits."""
    layout = str(tmp_path)
    watchdog = Watchdog(
        base_url="",
        served_name="stub-model",
        secrets_file=f"{layout}/secrets.env",
        startup_s=60,
        interval_s=1,
        failures=2,
        probe_timeout_s=2,
    )
    with OpenAIServer() as head:
        watchdog = dataclasses.replace(watchdog, base_url=head.url)
        with _systemd_watchdog(watchdog, tmp_path) as (dog, main, reaper):
            wait_until(lambda: (tmp_path / "engine.served").exists(), 20, "a first answer")
            head.script.fault = "http500"
            out, _ = dog.communicate(timeout=30)
            reaper.join(timeout=10)
    assert (dog.returncode, main.returncode) == (0, -signal.SIGTERM)
    why = "watchdog: 2 one-token completions in a row failed (last: status 500 within 2 s)"
    assert out == f"amdfleet-supervisor: {why}; stopping the engine\n"
    assert (tmp_path / "engine.stopped-by").read_text() == f"{why}\n"


def test_the_watchdog_lets_a_busy_head_be_and_stops_a_hung_one(tmp_path: Path) -> None:
    """A probe queued behind a benchmark's requests may get no answer in time while the
    head generates tokens for them; a hung pipeline generates none. Real: this machine's
    sh runs the systemd watchdog's text (its stop here a plain SIGTERM to the main process,
    as there is no systemd) against a real HTTP server (tests/support/openai_server.py)
    whose completions stall and whose ``/metrics`` serves vLLM's generated-tokens counter
    as vLLM 0.32 does (tests/e2e/test_vllm_tokens_counter.py checks the real one). While
    the counter grows, stalled probes do not count: twice ``failures`` of them pass and the
    main process runs on. Once it stands still, ``failures`` more stop the main process."""
    with OpenAIServer() as head:
        watchdog = Watchdog(
            base_url=head.url,
            served_name="stub-model",
            secrets_file=f"{tmp_path}/secrets.env",
            startup_s=60,
            interval_s=1,
            failures=2,
            probe_timeout_s=1,
            progress_counters=tokens_counters(),
        )
        busy, growing = threading.Event(), threading.Event()

        def other_requests() -> None:  # what a benchmark's requests add to the counter
            while not busy.wait(0.1):
                with head.lock:
                    head.generated_tokens += 7
            growing.set()

        load = threading.Thread(target=other_requests, daemon=True)
        with _systemd_watchdog(watchdog, tmp_path) as (dog, main, reaper):
            wait_until(lambda: (tmp_path / "engine.served").exists(), 20, "a first answer")
            answered = head.received
            head.script.fault = "stall"
            load.start()
            wait_until(
                lambda: head.received >= answered + 2 * watchdog.failures or dog.poll() is not None,
                30,
                "stalled probes while the head is busy",
            )
            assert dog.poll() is None and main.poll() is None  # busy, not hung
            busy.set()
            growing.wait(5)
            out, _ = dog.communicate(timeout=30)
            reaper.join(timeout=10)
        busy.set()
    assert (dog.returncode, main.returncode) == (0, -signal.SIGTERM)
    why = "watchdog: 2 one-token completions in a row failed (last: status 000 within 1 s)"
    assert out == f"amdfleet-supervisor: {why}; stopping the engine\n"
    assert head.received >= answered + 2 * watchdog.failures + watchdog.failures


@contextlib.contextmanager
def _systemd_watchdog(
    watchdog: Watchdog, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[bytes], threading.Thread]]:
    """The systemd watchdog's sh (its files under ``tmp_path``) run by this machine's sh
    against a real main process (``sleep``), which a thread reaps at once as systemd
    would (a zombie still answers ``kill -0``); both are killed afterwards."""
    systemd = SystemdSupervisor(LAYOUT, "amdfleet-local.service", watchdog)
    text = systemd._watchdog(watchdog).replace(LAYOUT.remote_dir, str(tmp_path))
    main = subprocess.Popen(["sleep", "300"])
    reaper = threading.Thread(target=main.wait, daemon=True)
    reaper.start()
    dog = subprocess.Popen(
        ["sh", "-c", text, "sh", str(main.pid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        yield dog, main, reaper
    finally:
        for proc in (dog, main):
            proc.kill()
            proc.wait()
