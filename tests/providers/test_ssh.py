"""Connections against real hosts: SSH to hostlab hosts, and the local machine."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amdfleet.errors import HostKeyMismatchError, RemoteCommandError, RemoteError
from amdfleet.hostkeys import parse_host_key
from amdfleet.remote.process import detached, is_running, stop_process_group
from amdfleet.remote.transport.connection import Connection
from amdfleet.remote.transport.local import LocalConnection
from amdfleet.remote.transport.retry import NO_RETRY
from amdfleet.remote.transport.sftp import sftp_create_private
from amdfleet.remote.transport.ssh import SshConnection, connect
from tests.support.hostlab import HostLab, LabFactory, require_netns, sweep_stale_labs
from tests.support.waiting import wait_until

SECRET = "s3cr3t-T0KEN-value"


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    """Three hosts shared by the non-destructive tests of this module."""
    return hostlab(3)


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


@pytest.fixture
def local() -> LocalConnection:
    return LocalConnection()


def _elapsed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


# -- running commands ----------------------------------------------------------------


@pytest.mark.netns
def test_each_host_has_its_own_hostname_home_tmp_and_shm(lab: HostLab) -> None:
    require_netns(lab)
    names = []
    for i in range(len(lab)):
        with lab.connect(i) as c:
            c.run(f"echo {i} >/tmp/whoami && echo {i} >/dev/shm/whoami", timeout=10)
            command = "hostname; echo $HOME; cat /tmp/whoami; cat /dev/shm/whoami; ls /dev/shm"
            out = c.run(command, timeout=10).stdout.split()
            names.append(out[0])
            assert out[1:] == ["/root", str(i), str(i), "whoami"]  # nothing but its own
    assert names == [h.name for h in lab]
    assert not Path("/dev/shm/whoami").exists()  # the machine's /dev/shm is untouched


@pytest.mark.netns
def test_exit_codes_and_check(conn: SshConnection) -> None:
    result = conn.run("echo out; echo err >&2; exit 3", timeout=10, check=False)
    assert (result.exit_code, result.ok) == (3, False)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    with pytest.raises(RemoteCommandError) as info:
        conn.run("echo first; seq 1 50; exit 7", timeout=10)
    err = info.value
    assert (err.host, err.exit_code) == ("host0", 7)
    assert err.output_tail.splitlines()[-1] == "50"
    assert "first" not in err.output_tail  # only the last lines are kept
    assert "[host0] command exited 7: echo first" in str(err)


@pytest.mark.netns
def test_combined_output_keeps_arrival_order(conn: SshConnection) -> None:
    result = conn.run("echo a; sleep 0.05; echo b >&2; sleep 0.05; echo c", timeout=10)
    assert result.tail(3) == "a\nb\nc"
    assert result.tail(1) == "c"


@pytest.mark.netns
def test_stdin_reaches_the_command(conn: SshConnection) -> None:
    assert conn.run("cat", stdin="line 1\nline 2\n", timeout=10).stdout == "line 1\nline 2\n"
    # Without stdin the command sees EOF at once instead of hanging.
    assert conn.run("cat; echo done", timeout=10).stdout == "done\n"


@pytest.mark.netns
def test_timeout_is_bounded_and_connection_survives(conn: SshConnection) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteCommandError) as info:
        conn.run("echo before; sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 2.5
    assert info.value.exit_code is None
    assert "timed out" in str(info.value)
    assert "before" in info.value.output_tail
    assert conn.run("echo still-here", timeout=10).stdout == "still-here\n"


@pytest.mark.netns
def test_many_concurrent_commands_share_one_session(conn: SshConnection) -> None:
    """Many short commands at once on one session, round after round.

    A command that exits before its EOF is sent used to race paramiko's answer to the
    server's CLOSE; OpenSSH then dropped the whole connection ("ieof packet referred to
    nonexistent channel"), about once in 30 rounds here. 60 rounds make that visible.
    """
    for round_ in range(60):
        results: list[str] = []

        def work(i: int, results: list[str] = results) -> None:
            results.append(conn.run(f"echo {i}", timeout=20).stdout.strip())

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results, key=int) == [str(i) for i in range(12)], f"round {round_}"
    assert conn.is_active


# -- files ---------------------------------------------------------------------------


@pytest.mark.netns
def test_put_get_atomic_with_mode(
    lab: HostLab, conn: SshConnection, request: pytest.FixtureRequest
) -> None:
    path = "/opt/amdfleet/conf.d/engine.env"
    cleanup = "rm -rf /opt/amdfleet/conf.d; rmdir /opt/amdfleet 2>/dev/null; true"
    request.addfinalizer(lambda: conn.run(cleanup, timeout=10))
    conn.put(path, b"A=1\n", mode=0o600)
    first_inode = conn.run(f"stat -c %i {path}", timeout=10).stdout
    conn.put(path, b"A=2\n" * 10000, mode=0o640)
    assert conn.get(path) == b"A=2\n" * 10000
    stat = conn.run(f"stat -c '%a %i' {path}; ls -A /opt/amdfleet/conf.d", timeout=10).stdout
    mode, inode, *listing = stat.split()
    assert mode == "640"
    assert inode != first_inode.strip()  # replaced by rename, never rewritten in place
    assert listing == ["engine.env"]  # no temp file left behind
    assert conn.get("/opt/amdfleet/missing") is None
    if lab.netns:
        assert lab[0].path(path).read_bytes().startswith(b"A=2\n")


@pytest.mark.netns
def test_put_creates_the_file_0600_from_its_first_byte(conn: SshConnection) -> None:
    """A file created the ordinary SFTP way is readable by others until a chmod (the
    server's umask, 022 here, decides); the temp file ``put`` writes secrets into is 0600
    as soon as it exists, before any byte is written."""
    directory = "/opt/amdfleet/umask-test"
    conn.run(f"rm -rf {directory} && mkdir -p {directory}", timeout=10)
    with conn._sftp(time.monotonic() + 10, "test") as sftp:
        with sftp.open(f"{directory}/plain", "wb"):
            pass
        with sftp_create_private(sftp, f"{directory}/private") as f:
            seen_open = sftp.stat(f"{directory}/private").st_mode  # before any byte
            f.write(f"HF_TOKEN={SECRET}\n".encode())
        with pytest.raises(OSError):  # exclusive: never reuses a planted file
            sftp_create_private(sftp, f"{directory}/plain")
    conn.put(f"{directory}/secrets.env", f"HF_TOKEN={SECRET}\n".encode(), mode=0o600)
    stat = f"cd {directory} && stat -c %a plain private secrets.env && rm -rf {directory}"
    plain, private, secrets = (int(m, 8) for m in conn.run(stat, timeout=10).stdout.split())
    assert plain & 0o044  # what put() did before: world-readable until the chmod
    assert (private, secrets) == (0o600, 0o600)
    assert seen_open is not None and seen_open & 0o777 == 0o600


@pytest.mark.netns
def test_output_read_back_is_redacted(lab: HostLab) -> None:
    """What a run returns (an engine log tail, a status line) masks the connection's
    secrets; a script sent as stdin does not blank words out of its own output."""
    with connect(lab.target(1), timeout=5, secrets=[SECRET]) as c:
        result = c.run(f"echo key={SECRET}; echo {SECRET} >&2", timeout=10)
        assert (result.stdout, result.stderr) == ("key=***\n", "***\n")
        assert SECRET not in result.output
        script = "echo done\necho 'printf done'\n"
        assert c.run("sh -s", stdin=script, timeout=10).stdout == "done\nprintf done\n"
        assert c.run("echo extra-secret", redact=["extra-secret"], timeout=10).stdout == "***\n"


@pytest.mark.netns
def test_put_into_unwritable_place_is_a_remote_error(conn: SshConnection) -> None:
    with pytest.raises(RemoteError) as info:
        conn.put("/proc/amdfleet/x.conf", b"x", mode=0o644)
    assert "[host0] cannot write /proc/amdfleet/x.conf" in str(info.value)


# -- host keys and reachability ------------------------------------------------------


@pytest.mark.netns
def test_pinned_key_of_another_host_is_refused(lab: HostLab) -> None:
    wrong = lab.target(1, host_key=lab[0].host_key)
    with pytest.raises(HostKeyMismatchError) as info:
        connect(wrong, timeout=5)
    text = str(info.value)
    assert text.startswith("[host1] host key mismatch")
    assert parse_host_key(lab[0].host_key).fingerprint in text  # expected
    assert parse_host_key(lab[1].host_key).fingerprint in text  # presented
    assert f"ssh-keyscan -p {lab[1].port} -t ed25519 {lab[1].address}" in info.value.hint


@pytest.mark.netns
def test_fingerprint_pins_work_and_are_checked(lab: HostLab) -> None:
    fingerprint = parse_host_key(lab[2].host_key).fingerprint
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=lab[2].host_key, capture_output=True, text=True
    )
    assert fingerprint in keygen.stdout  # same form as OpenSSH prints
    with connect(lab.target(2, host_key=fingerprint), timeout=5) as c:
        assert c.run("echo ok", timeout=10).stdout == "ok\n"
    other = parse_host_key(lab[0].host_key).fingerprint
    with pytest.raises(HostKeyMismatchError):
        connect(lab.target(2, host_key=other), timeout=5)


@pytest.mark.netns
def test_unpinned_or_malformed_key_is_refused(lab: HostLab) -> None:
    for pin in ("", "ssh-ed25519 not-base64!", "AAAA"):
        with pytest.raises(RemoteError) as info:
            connect(lab.target(0, host_key=pin), timeout=5)
        assert "ssh-keyscan" in info.value.hint


@pytest.mark.netns
def test_refused_port_and_wrong_client_key(lab: HostLab, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="refused"):
        connect(lab.target(0, port=2222), timeout=5, retry=NO_RETRY)
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(RemoteError) as info:
        connect(lab.target(0, key_path=str(key)), timeout=5)
    assert "authentication as 'root' failed" in str(info.value)
    assert "authorized_keys" in info.value.hint
    with pytest.raises(RemoteError, match="cannot load private key"):
        connect(lab.target(0, key_path=str(tmp_path / "absent")), timeout=5)


@pytest.mark.netns
def test_partitioned_host_is_unreachable_within_the_timeout(hostlab: LabFactory) -> None:
    with hostlab(1) as lab:
        require_netns(lab)
        lab.partition(0)
        t0 = time.monotonic()
        with pytest.raises(RemoteError) as info:
            connect(lab.target(0), timeout=1.0, retry=NO_RETRY)
        assert time.monotonic() - t0 < 2.0
        assert "timed out" in str(info.value) and "partition" in info.value.hint
        lab.heal(0)
        with lab.connect(0, timeout=5) as c:
            assert c.run("hostname", timeout=10).stdout == "host0\n"


@pytest.mark.netns
def test_partition_during_a_command_times_out(hostlab: LabFactory) -> None:
    with hostlab(1) as lab:
        require_netns(lab)
        with lab.connect(0) as c:
            lab.partition(0)
            t0 = time.monotonic()
            with pytest.raises(RemoteError):
                c.run("hostname", timeout=1.0)
            assert time.monotonic() - t0 < 2.5


@pytest.mark.netns
def test_crash_mid_command_then_reboot(hostlab: LabFactory) -> None:
    with hostlab(1) as lab:
        require_netns(lab)
        outcome: list[BaseException] = []
        c = lab.connect(0)

        def long_command() -> None:
            try:
                c.run("touch /tmp/started; sleep 30", timeout=20)
            except BaseException as e:
                outcome.append(e)

        worker = threading.Thread(target=long_command)
        worker.start()
        wait_until(
            lambda: lab[0].path("/tmp/started").exists(), 10, "the command to start", interval=0.01
        )
        t0 = time.monotonic()
        lab.crash(0)
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - t0 < 5
        assert type(outcome[0]) is RemoteError  # connection lost, not a timeout
        assert "lost while running" in str(outcome[0])
        c.close()
        lab.reboot(0)
        with lab.connect(0) as again:
            procs = again.run("ls /proc | grep -c '^[0-9]'", timeout=10).stdout
            assert int(procs) < 10  # sleep 30 died with the host
            assert again.run("ls /tmp/started", timeout=10).ok  # files stay


# -- background processes --------------------------------------------------------------


def _detached_cycle(c: Connection, base: str) -> None:
    log, pid = f"{base}/logs/server.log", f"{base}/run/server.pid"
    started = _elapsed(lambda: c.run(detached("echo hello; exec sleep 300", log, pid), timeout=10))
    assert started < 2.0
    assert c.run(is_running(pid), timeout=10, check=False).exit_code == 0
    wait_until(lambda: c.get(log) == b"hello\n", 10, "the log line", interval=0.01)
    modes = c.run(f"stat -c %a {base}/logs {log}", timeout=10).stdout.split()
    assert modes == ["700", "600"]  # a log may quote what the command knows of its secrets
    stopped = _elapsed(lambda: c.run(stop_process_group(pid, grace=5), timeout=15))
    assert stopped < 3.0
    assert c.run(is_running(pid), timeout=10, check=False).exit_code == 1
    assert c.get(pid) is None
    c.run(stop_process_group(pid), timeout=15)  # idempotent once gone


def _stubborn_cycle(c: Connection, base: str) -> None:
    pid = f"{base}/stubborn.pid"
    c.run(detached("trap '' TERM; sleep 300 & sleep 300", f"{base}/stubborn.log", pid), timeout=10)
    wait_until(lambda: c.get(pid) is not None, 10, "the pid file", interval=0.01)
    took = _elapsed(lambda: c.run(stop_process_group(pid, grace=0.5), timeout=15))
    assert took < 5.0
    assert c.run(is_running(pid), timeout=10, check=False).exit_code == 1


@pytest.mark.netns
def test_detached_process_returns_at_once_and_stops(conn: SshConnection) -> None:
    _detached_cycle(conn, "/opt/detached")
    _stubborn_cycle(conn, "/opt/detached")


# -- output streamed while a command runs ----------------------------------------------


def _streaming_case(c: Connection, go: str, make_go: Callable[[], None]) -> None:
    """``on_output`` hears each line while the command still runs: the command waits for
    the file ``go``, which only the callback creates on hearing the first line (lines
    delivered at the end would make the command time out)."""
    lines: list[str] = []

    def hear(line: str) -> None:
        lines.append(line)
        if line == "waiting":
            make_go()

    command = (
        f"echo waiting; while [ ! -e {go} ]; do sleep 0.05; done; rm -f {go}; "
        f"printf 'step 1\\rstep 2\\n\\n'; echo key={SECRET} >&2; printf 'no end'"
    )
    result = c.run(command, timeout=20, redact=[SECRET], on_output=hear)
    assert lines == ["waiting", "step 1", "step 2", "key=***"]
    assert result.stdout.endswith("no end")  # collected as before; not a whole line


@pytest.mark.netns
def test_output_is_streamed_line_by_line_and_redacted(lab: HostLab, conn: SshConnection) -> None:
    go = "/tmp/amdfleet-stream-go"
    _streaming_case(conn, go, lab[0].path(go).touch)


def test_local_output_is_streamed_line_by_line_and_redacted(
    local: LocalConnection, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    _streaming_case(local, str(go), go.touch)


# -- redaction -------------------------------------------------------------------------


def _redaction_cases(c: Connection) -> None:
    with pytest.raises(RemoteCommandError) as info:
        c.run("cat; exit 1", stdin=f"{SECRET}\n", timeout=10)
    assert SECRET not in str(info.value) and "***" in info.value.output_tail
    with pytest.raises(RemoteCommandError) as info:
        c.run(f"echo token={SECRET}; exit 2", redact=[SECRET], timeout=10)
    assert SECRET not in str(info.value)
    assert "echo token=***" in info.value.command and "token=***" in info.value.output_tail
    with pytest.raises(RemoteCommandError) as info:
        c.run(f"sleep 5 # {SECRET}", redact=[SECRET], timeout=0.3)
    assert SECRET not in str(info.value)


@pytest.mark.netns
def test_secrets_are_redacted_in_errors(lab: HostLab) -> None:
    with connect(lab.target(1), timeout=5) as c:
        _redaction_cases(c)
    with connect(lab.target(1), timeout=5, secrets=[SECRET]) as c:
        with pytest.raises(RemoteCommandError) as info:
            c.run(f"echo {SECRET} >&2; false", timeout=10)
        assert SECRET not in str(info.value) and "***" in str(info.value)


# -- the local machine ---------------------------------------------------------------


def test_local_runs_commands_with_the_same_contract(local: LocalConnection) -> None:
    assert isinstance(local, Connection)
    result = local.run("echo out; echo err >&2; exit 3", timeout=10, check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert local.run("cat", stdin="x\ny\n", timeout=10).stdout == "x\ny\n"
    with pytest.raises(RemoteCommandError) as info:
        local.run("seq 1 40; exit 4", timeout=10)
    assert (info.value.host, info.value.exit_code) == ("local", 4)
    assert info.value.output_tail.splitlines()[-1] == "40"


def test_local_timeout_kills_the_process_group(local: LocalConnection) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteCommandError) as info:
        local.run("sleep 300 & echo child=$!; sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 2.0 and info.value.exit_code is None
    child = info.value.output_tail.split("child=")[1].split()[0]
    # The background child was killed with its group: gone, or a zombie nobody reaps.
    stat = Path(f"/proc/{child}/stat")

    def dead() -> bool:
        try:
            return stat.read_text().rsplit(") ", 1)[1].startswith(("Z", "X"))
        except FileNotFoundError:
            return True

    # SIGKILL is delivered asynchronously
    wait_until(dead, 5, "the killed child to die", interval=0.01)


def test_local_put_get_atomic_with_mode(local: LocalConnection, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "engine.env"
    local.put(str(path), b"A=1\n", mode=0o600)
    inode = path.stat().st_ino
    local.put(str(path), b"A=2\n", mode=0o640)
    assert local.get(str(path)) == b"A=2\n"
    assert (path.stat().st_mode & 0o777, path.stat().st_ino != inode) == (0o640, True)
    assert [p.name for p in path.parent.iterdir()] == ["engine.env"]
    assert local.get(str(tmp_path / "missing")) is None
    with pytest.raises(RemoteError, match="cannot write"):
        local.put("/proc/amdfleet/x", b"x", mode=0o644)


def test_local_detached_process_and_redaction(local: LocalConnection, tmp_path: Path) -> None:
    _detached_cycle(local, str(tmp_path))
    _stubborn_cycle(local, str(tmp_path))
    _redaction_cases(LocalConnection(secrets=[SECRET]))
    assert LocalConnection(secrets=[SECRET]).run(f"echo {SECRET}", timeout=10).stdout == "***\n"
    with pytest.raises(RemoteCommandError) as info:
        LocalConnection(secrets=[SECRET]).run(f"echo {SECRET}; false", timeout=10)
    assert SECRET not in str(info.value)


def test_ssh_connection_refuses_to_be_pickled(lab: HostLab) -> None:
    import pickle

    with lab.connect(0) as c, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(c)
    target = lab.target(0)
    assert pickle.loads(pickle.dumps(target)) == target
    assert target.model_copy(update={"port": 2200}).port == 2200


@pytest.mark.netns
def test_lab_left_by_a_killed_test_process_is_swept(hostlab: LabFactory) -> None:
    with hostlab(1) as probe:
        require_netns(probe)
    code = (
        "import sys; from tests.support.hostlab import HostLab; lab = HostLab.start(1); "
        "print(lab.subnet, flush=True); sys.stdin.read()"
    )
    orphan = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert orphan.stdout is not None
        subnet = orphan.stdout.readline().strip()
    finally:
        orphan.kill()  # no teardown runs: its namespace, bridge and sshd stay behind
        orphan.wait(10)
    netns = f"afns-{subnet}-0"
    assert netns in _ip_output("netns", "list")
    pids = _ip_output("netns", "pids", netns).split()
    assert pids  # the orphaned host (unshare, sshd) still runs
    sweep_stale_labs()
    assert netns not in _ip_output("netns", "list")
    links = _ip_output("-o", "link", "show")
    assert f"afbr{subnet}:" not in links and f"afv{subnet}h0" not in links
    assert all(_dead(int(pid)) for pid in pids)


def _ip_output(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def _dead(pid: int) -> bool:
    """Gone, or a zombie (this machine's PID 1 does not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] in "ZX"
    except FileNotFoundError:
        return True
