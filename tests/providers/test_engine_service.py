"""EngineService through amdfleet's provider plugin, on real SSH hosts.

The launch script, env file and unit are the real rendered ones (process runtime), run by
the real provider over SSH in a network namespace; the lab hosts have no systemd (sshd is
PID 1 of their PID namespace), so amdfleet's own supervisor loop runs the engine there
and restarts it when it crashes. The engine they start is
``tests/support/fake_engine.py``, a real HTTP server process that can fail, hang or come
up late on demand (vLLM itself is started by the program tests). Readiness is checked by
the provider on the host, and the test checks the result from this machine over the
lab network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from amdfleet.components.props import engine_service_props
from amdfleet.providers.engine_service import EngineService
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.supervision import ProcessSupervisor, RestartPolicy
from amdfleet.remote.transport.hosts import open_host
from amdfleet.remote.transport.ssh import SshConnection
from tests.support.engine_log import EngineLog
from tests.support.fake_stack import fake_engine_plan, install_fake_engine
from tests.support.hostlab import HostLab, LabFactory, process_alive
from tests.support.probes import completes
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn, secret
from tests.support.waiting import wait_until

API_KEY = "key-5f1e9c0d7a"
PORT = 18080

pytestmark = pytest.mark.netns
URN = resource_urn("engine", EngineService)


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    lab = hostlab(1)
    install_fake_engine(lab)
    return lab


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


def _props(
    lab: HostLab, name: str, key: str = API_KEY, engine_key: str | None = None, **env: str
) -> dict[str, Any]:
    deployment = fake_engine_plan(lab, name, PORT, env=env)
    args = engine_service_props(
        deployment,
        deployment.head,
        lab.host_target(0),
        secret({"AMDFLEET_API_KEY": key, "VLLM_API_KEY": engine_key or key}),
    )
    return args.inputs()


def _record(lab: HostLab, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lab[0].path(f"/tmp/{name}.json").read_text())
    return data


def _alive(conn: SshConnection, pid: int) -> bool:
    return conn.run(f"kill -0 {pid}", timeout=10, check=False).ok


def _processes_under(conn: SshConnection, text: str) -> list[str]:
    """Live processes on the host whose command line mentions ``text``."""
    table = conn.run("ps -eo pid=,stat=,args=", timeout=10).stdout.splitlines()
    return [
        row for row in table if text in row and row.split()[1][0] != "Z" and "ps -eo" not in row
    ]


def _supervisor_pid(conn: SshConnection, name: str) -> int:
    return int(conn.run(f"cat /opt/amdfleet/{name}/supervisor.pid", timeout=10).stdout)


def _serves(lab: HostLab) -> bool:
    try:
        url = f"http://{lab.target(0).address}:{PORT}/health"
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_lifecycle_start_restart_on_change_and_delete(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    urn = provider_host.urn("engine-life", EngineService)
    checked = provider_host.check(_props(lab, "life"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    outs = created.outputs
    try:
        first = _record(lab, "life")
        assert _alive(conn, first["pid"])
        assert first["argv"][:2] == ["serve", "/models/tiny"]
        assert "VLLM_API_KEY" in first["env_keys"] and "HF_HOME" in first["env_keys"]
        base = f"http://{lab.target(0).address}:{PORT}"
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert models.json()["data"][0]["id"] == "tiny"
        mode = conn.run("stat -c %a /opt/amdfleet/life/secrets.env", timeout=10).stdout.strip()
        assert mode == "600"
        assert outs["running"] is True and "secret_env" not in outs
        assert API_KEY not in json.dumps(_strings(outs))

        same = provider_host.diff(created.id, outs, checked, old_inputs=checked, urn=urn)
        assert same.changes is False

        changed = provider_host.check(_props(lab, "life", EXTRA="1"), checked, urn=urn).inputs
        diff = provider_host.diff(created.id, outs, changed, old_inputs=checked, urn=urn)
        assert (diff.changes, diff.replaces) == (True, [])
        outs = provider_host.update(created.id, outs, changed, old_inputs=checked, urn=urn)
        second = _record(lab, "life")
        assert second["pid"] != first["pid"] and not _alive(conn, first["pid"])
        assert "EXTRA" in second["env_keys"]

        rotated = provider_host.check(_props(lab, "life", "key-2", EXTRA="1"), changed, urn=urn)
        diff = provider_host.diff(created.id, outs, rotated.inputs, old_inputs=changed, urn=urn)
        assert diff.changes is True  # a new API key restarts the engine
    finally:
        provider_host.delete(created.id, outs, urn=urn)
    assert not _alive(conn, _record(lab, "life")["pid"])
    assert conn.run("test -e /opt/amdfleet/life", timeout=10, check=False).exit_code == 1
    provider_host.delete(created.id, outs, urn=urn)  # already gone: still succeeds


def test_refresh_sees_a_dead_engine_and_the_next_up_restarts_it(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """The engine dies with its supervisor (what an OOM kill of both or a lost process
    table leaves): nothing restarts it, so refresh must see it."""
    urn = provider_host.urn("engine-drift", EngineService)
    checked = provider_host.check(_props(lab, "drift"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    try:
        conn.run(f"kill -9 {_supervisor_pid(conn, 'drift')}", timeout=10)
        conn.run(f"kill -9 {_record(lab, 'drift')['pid']}", timeout=10)
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        diff = provider_host.diff(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        assert diff.changes is True
        outs = provider_host.update(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        assert _alive(conn, _record(lab, "drift")["pid"]) and outs["running"] is True
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)


def test_refresh_sees_an_api_server_that_died_while_its_worker_lingers(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """vLLM's API server can die while its EngineCore process lives on in the same process
    group: the group is alive, nothing serves. With its supervisor gone too (a supervised
    engine is restarted, see the test below), refresh must call that not running, and the
    repair must stop the lingering worker before starting again."""
    urn = provider_host.urn("engine-half", EngineService)
    checked = provider_host.check(_props(lab, "half", FAKE_ENGINE_CHILD="1"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    try:
        first = _record(lab, "half")
        conn.run(f"kill -9 {_supervisor_pid(conn, 'half')}", timeout=10)
        conn.run(f"kill -9 {first['pid']}", timeout=10)
        assert _alive(conn, first["child_pid"])  # the group lives on
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        diff = provider_host.diff(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        assert diff.changes is True
        outs = provider_host.update(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        assert outs["running"] is True
        assert not _alive(conn, first["child_pid"])
        assert _alive(conn, _record(lab, "half")["pid"])
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)


def test_engine_that_exits_reports_its_log_and_leaves_nothing(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    checked = provider_host.check(_props(lab, "crash", FAKE_ENGINE_MODE="exit"), urn=URN).inputs
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "EngineStartError" in message and "[host0] engine failed to start" in message
    assert "the engine exited during startup" in message
    assert "simulated failure while loading weights" in message  # the engine log's tail
    assert "last lines of /opt/amdfleet/crash/engine.log:" in message  # the loop's log
    assert "/opt/amdfleet/crash/launch.sh" in message
    assert API_KEY not in caught.value.details
    assert conn.run("test -e /opt/amdfleet/crash", timeout=10, check=False).exit_code == 1


def test_a_key_the_engine_logs_is_masked_in_the_failure_report(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """SGLang logs its configuration, key included: the log tail in the error shows
    ``***``, and while it runs the log is the owner's alone (0600 in a 0700 directory)."""
    props = _props(lab, "keylog", FAKE_ENGINE_MODE="exit", FAKE_ENGINE_ECHO_CONFIG="1")
    checked = provider_host.check(props, urn=URN).inputs
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    message = caught.value.message
    assert "server_args=ServerArgs(api_key='***')" in message
    assert API_KEY not in message and API_KEY not in caught.value.details
    assert "simulated failure while loading weights" in message

    props = _props(lab, "keylog-ok", FAKE_ENGINE_ECHO_CONFIG="1")
    checked = provider_host.check(props, urn=URN).inputs
    created = provider_host.create(checked, urn=URN)
    try:
        log = "/opt/amdfleet/keylog-ok/engine.log"
        modes = conn.run(f"stat -c %a /opt/amdfleet/keylog-ok {log}", timeout=10).stdout
        assert modes.split() == ["700", "600"]
        assert f"api_key='{API_KEY}'" in lab[0].path(log).read_text()  # the engine's own
    finally:
        provider_host.delete(created.id, created.outputs, urn=URN)


def test_engine_never_ready_times_out_and_is_stopped(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    props = _props(lab, "hang", FAKE_ENGINE_MODE="never-ready")
    props["readiness"]["timeout_s"] = 4
    checked = provider_host.check(props, urn=URN).inputs
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    assert "not ready within 4 s (/health -> 503" in caught.value.message
    assert "Application startup complete" in caught.value.message
    assert not _alive(conn, _record(lab, "hang")["pid"])


def test_waits_for_a_late_engine(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    props = _props(lab, "late", FAKE_ENGINE_MODE="late", FAKE_ENGINE_READY_AFTER="3")
    checked = provider_host.check(props, urn=URN).inputs
    created = provider_host.create(checked, urn=URN)
    try:
        assert created.outputs["running"] is True
        health = httpx.get(f"http://{lab.target(0).address}:{PORT}/health")
        assert health.status_code == 200
    finally:
        provider_host.delete(created.id, created.outputs, urn=URN)


def test_wrong_api_key_in_probe_is_not_ready(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """The probe sends the stack's key; an engine that wants another never becomes ready."""
    props = _props(lab, "auth", engine_key="another-key")
    props["readiness"]["timeout_s"] = 3
    checked = provider_host.check(props, urn=URN).inputs
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=URN)
    assert "/v1/models -> 401" in caught.value.message


def test_unreachable_host_fails_within_the_timeout(
    provider_host: ProviderHost, hostlab: LabFactory
) -> None:
    with hostlab(1) as lab:
        props = _props(lab, "down")
        lab.partition(0)
        checked = provider_host.check(props, urn=URN).inputs
        with pytest.raises(ProviderCallError) as caught:
            provider_host.create(checked, urn=URN)
        message = caught.value.message
        assert "HostUnreachableError: [host0]" in message and "gave up after" in message
        lab.heal(0)
        with open_host(lab.host_target(0)) as conn:
            assert conn.run("test -e /opt/amdfleet/down", timeout=10, check=False).exit_code == 1


def test_a_worker_node_is_started_and_must_stay_up(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """A non-head node of a multi-node engine serves no API: create returns once the
    engine has stayed up for a few seconds, and fails with its log if it exits."""
    props = _props(lab, "worker")
    props["readiness"]["serves_api"] = False
    created = provider_host.create(provider_host.check(props, urn=URN).inputs, urn=URN)
    try:
        assert _alive(conn, _record(lab, "worker")["pid"])
    finally:
        provider_host.delete(created.id, created.outputs, urn=URN)

    props = _props(lab, "worker-crash", FAKE_ENGINE_MODE="exit")
    props["readiness"]["serves_api"] = False
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(provider_host.check(props, urn=URN).inputs, urn=URN)
    assert "simulated failure while loading weights" in caught.value.message


def test_progress_shows_each_phase_and_what_the_engine_answers_while_waiting(
    provider_host: ProviderHost, engine_log: EngineLog, lab: HostLab
) -> None:
    """Through the plugin started with an engine address, as the Pulumi CLI starts it: an
    engine that never becomes ready shows its probe answers and its log's latest line
    until the deadline, and earns no "ready" note. (A ready engine's note is checked with
    the real CLI in test_progress_cli.py.)"""
    urn = provider_host.urn("engine-progress", EngineService)
    props = _props(lab, "progress", FAKE_ENGINE_MODE="never-ready")
    props["readiness"]["timeout_s"] = 4
    with pytest.raises(ProviderCallError):
        provider_host.create(provider_host.check(props, urn=urn).inputs, urn=urn)

    statuses = engine_log.messages(urn, ephemeral=True)
    assert statuses[:3] == [
        "stopping any engine already running there",
        "uploading 3 files to /opt/amdfleet/progress",
        "starting /opt/amdfleet/progress/launch.sh",
    ]
    waiting = statuses[3:]
    assert waiting and all(s.startswith("waiting for the engine (") for s in waiting)
    assert waiting[-1].endswith(
        " s of 4 s): /health 503, /v1/models 200; log: fake engine: Application startup complete."
    )
    assert engine_log.messages(urn, ephemeral=False) == []
    assert API_KEY not in "".join(e.message for e in engine_log.entries(urn))


def test_a_killed_engine_is_restarted_and_delete_leaves_no_process(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """The supervisor loop restarts a crashed engine (its worker killed with it), the
    restart is in the engine log, refresh sees it running; delete stops the supervisor
    and the engine, and nothing of the stack stays in the host's process table."""
    urn = provider_host.urn("engine-revive", EngineService)
    checked = provider_host.check(_props(lab, "revive", FAKE_ENGINE_CHILD="1"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    supervisor = _supervisor_pid(conn, "revive")
    first = _record(lab, "revive")
    try:
        conn.run(f"kill -9 {first['pid']}", timeout=10)  # the engine, not its supervisor
        wait_until(
            lambda: _record(lab, "revive")["pid"] != first["pid"] and _serves(lab),
            30,
            "the supervisor to restart the engine and the engine to serve again",
        )
        second = _record(lab, "revive")
        assert process_alive(conn, second["pid"]) and process_alive(conn, supervisor)
        assert not process_alive(conn, first["child_pid"])  # the crashed engine's worker is gone
        log = conn.run("cat /opt/amdfleet/revive/engine.log", timeout=10).stdout
        assert (
            "amdfleet-supervisor: engine exited with status 137 (signal 9); restart 1 of 5" in log
        )
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is True, read.outputs.get("not_ready")
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    pids = [supervisor, first["pid"], second["pid"], second["child_pid"]]
    assert [pid for pid in pids if process_alive(conn, pid)] == []
    assert _processes_under(conn, "/opt/amdfleet/revive") == []
    assert _processes_under(conn, "fake_engine.py") == []


def test_an_engine_that_exits_cleanly_unasked_is_restarted_and_only_stop_ends_it(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """What vLLM did when a pipeline worker of its own was killed (issue 22): the API
    server exited with status 0. Nobody asked it to stop, so the supervisor loop restarts
    it and logs why; a SIGTERM to the engine alone (not amdfleet's stop) is a crash too.
    Only the provider's stop (delete) ends it for good."""
    urn = provider_host.urn("engine-clean-exit", EngineService)
    checked = provider_host.check(_props(lab, "clean"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    supervisor = _supervisor_pid(conn, "clean")
    first = _record(lab, "clean")
    try:
        conn.run(f"kill -USR1 {first['pid']}", timeout=10)  # the fake engine exits 0
        wait_until(
            lambda: _record(lab, "clean")["pid"] != first["pid"] and _serves(lab),
            30,
            "the supervisor to restart the engine that exited with status 0",
        )
        second = _record(lab, "clean")
        conn.run(f"kill -TERM {second['pid']}", timeout=10)  # not the supervisor's stop
        wait_until(
            lambda: _record(lab, "clean")["pid"] != second["pid"] and _serves(lab),
            30,
            "the supervisor to restart the engine ended by a signal",
        )
        log = conn.run("cat /opt/amdfleet/clean/engine.log", timeout=10).stdout
        assert "fake engine: exiting with status 0 (SIGUSR1)" in log
        assert (
            "amdfleet-supervisor: engine exited with status 0 without being asked to stop; "
            "restart 1 of 5 in 1.000 s" in log
        )
        assert (
            "amdfleet-supervisor: engine exited with status 143 (signal 15); "
            "restart 2 of 5 in 2.000 s" in log
        )
        assert "not restarting" not in log
        assert conn.run("cat /opt/amdfleet/clean/engine.restarts", timeout=10).stdout == "2\n"
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is True, read.outputs.get("not_ready")
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    third = _record(lab, "clean")
    assert not process_alive(conn, supervisor) and not process_alive(conn, third["pid"])
    assert _processes_under(conn, "/opt/amdfleet/clean") == []


def test_the_watchdog_restarts_an_engine_whose_completions_hang(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    """The engine runs and answers /health, but its completions hang (SIGUSR2 to the fake
    engine: a head whose pipeline lost a stage). Nothing exits, so only the supervisor's
    watchdog sees it: 3 failed one-token completions (2 s each here), then the engine is
    stopped and restarted, with the watchdog's reason in the log."""
    urn = provider_host.urn("engine-hang-heal", EngineService)
    props = _props(lab, "hangheal")
    props["readiness"]["generation_timeout_s"] = 2
    checked = provider_host.check(props, urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    first = _record(lab, "hangheal")
    try:
        conn.run(f"kill -USR2 {first['pid']}", timeout=10)
        wait_until(
            lambda: _record(lab, "hangheal")["pid"] != first["pid"] and _completes(lab),
            60,
            "the watchdog to restart the engine and the engine to complete again",
        )
        log = conn.run("cat /opt/amdfleet/hangheal/engine.log", timeout=10).stdout
        assert (
            "amdfleet-supervisor: watchdog: 3 one-token completions in a row failed "
            "(last: status 000 within 2 s); restart 1 of 5 in 1.000 s"
        ) in log
        assert API_KEY not in log
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _processes_under(conn, "/opt/amdfleet/hangheal") == []


def _completes(lab: HostLab) -> bool:
    """One completion on the head, answered 200 within 2 s, from this machine."""
    return completes(f"http://{lab.target(0).address}:{PORT}", API_KEY)


def test_a_crash_loop_stops_after_the_bound(lab: HostLab, conn: SshConnection) -> None:
    """The supervisor loop itself on the lab host, with a short backoff: an engine that
    keeps ending (with status 3, then 0) is restarted ``limit`` times, then the loop gives
    up, says so in the log and in its state file, and exits; the engine reads as not
    running."""
    layout = EngineLayout("/opt/amdfleet/crashloop")
    conn.run(f"mkdir -p {layout.remote_dir}", timeout=10)
    # Fails with 3 at its first two starts, then exits 0 (a clean exit is no excuse).
    script = (
        "#!/bin/sh\necho engine failing\n"
        'n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n+1)) >"$0.count"\n'
        '[ "$n" -ge 2 ] && exit 0\nexit 3\n'
    )
    conn.put(layout.launch, script.encode(), mode=0o755)
    supervisor = ProcessSupervisor(layout, RestartPolicy(limit=3, backoff_s=0.1))
    try:
        conn.run(supervisor.start_command(), timeout=30)
        pid = _supervisor_pid(conn, "crashloop")
        wait_until(lambda: not process_alive(conn, pid), 30, "the supervisor loop to give up")
        log = conn.run(supervisor.log_tail_command(), timeout=10).stdout
        assert log.count("engine failing") == 4  # the start and 3 restarts
        assert "engine exited with status 3; restart 1 of 3 in 0.100 s" in log
        assert "engine exited with status 3; restart 2 of 3 in 0.200 s" in log
        assert (
            "engine exited with status 0 without being asked to stop; restart 3 of 3 in 0.400 s"
            in log
        )
        gave_up = (
            "engine exited with status 0 without being asked to stop; "
            "giving up after 3 restarts (limit 3)"
        )
        assert f"amdfleet-supervisor: {gave_up}" in log
        said = conn.run(supervisor.gave_up_command(), timeout=10).stdout.strip()
        assert said.endswith(gave_up) and said[:4].isdigit()  # a UTC timestamp first
        assert not conn.run(supervisor.running_command(), timeout=10, check=False).ok
        assert not conn.run(supervisor.first_run_command(), timeout=10, check=False).ok
        # amdfleet's stop forgets the state, and the next start begins afresh.
        conn.run(supervisor.stop_command(grace=2), timeout=30)
        assert conn.run(supervisor.gave_up_command(), timeout=10).stdout == ""
    finally:
        conn.run(supervisor.stop_command(grace=2) + f"; rm -rf {layout.remote_dir}", timeout=30)
