"""Adoption of a running engine: import ids, the state read back from the host, what
counts as a difference from the stack, and the host commands run for real against a
real process on this machine (``ss``, ``/proc``, ``ps``)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amdfleet.cli.status import engine_nodes
from amdfleet.config.loader import parse_stack
from amdfleet.errors import ConfigError, PlanError
from amdfleet.plan import plan
from amdfleet.providers import adoption
from amdfleet.providers.engine_service import EngineServiceProps
from amdfleet.remote import adoption as facts
from amdfleet.remote.transport.target import HostTarget
from tests.support.local_stack import local_config
from tests.support.waiting import wait_until

GOLDEN = Path(__file__).parent / "golden" / "rendered" / "local"
HOSTS = {
    "gpu-1": HostTarget(name="gpu-1", address="10.0.0.5", key_path="/k", host_key="SHA256:x"),
    "gpu-2": HostTarget(name="gpu-2", address="10.0.0.6", key_path="/k", host_key="SHA256:y"),
}
KEY = "team-key-0123456789"


def _local_files() -> dict[str, Any]:
    """The committed ``local`` stack's rendered files, as the program passes them."""
    (node,) = [p for p in GOLDEN.iterdir() if p.is_dir()]
    return {f.name: {"content": f.read_text(), "mode": 0o755} for f in node.iterdir()}


def _wanted() -> tuple[str, tuple[str, ...]]:
    found = adoption.launch_command(_local_files())
    assert found is not None
    return found


def _news(files: Any = None, key: Any = KEY) -> dict[str, Any]:
    return {
        "host": HOSTS["gpu-1"].model_dump(mode="json"),
        "files": _local_files() if files is None else files,
        "container": None,
        "secret_env": {"AMDFLEET_API_KEY": key, "VLLM_API_KEY": key},
    }


def _adopted(argv: tuple[str, ...], key: str | None = KEY) -> dict[str, Any]:
    hashes = {"VLLM_API_KEY": facts.key_hash(key)} if key else {}
    return {"pid": 42, "started": "x", "port": 18000, "argv": list(argv), "key_hashes": hashes}


# -- ids -------------------------------------------------------------------------------


def test_an_id_names_a_stack_host_and_a_port() -> None:
    assert adoption.parse_id("gpu-2:8000", HOSTS) == (HOSTS["gpu-2"], 8000)


@pytest.mark.parametrize(
    ("id_", "said"),
    [
        ("gpu-1", "is not an engine id: expected <host>:<port>"),
        ("gpu-1:/opt/amdfleet/x", "is not an engine id"),
        ("gpu-1:70000", "is not an engine id"),
        ("gpu-9:8000", "names host 'gpu-9', which is not in the stack's fleet.hosts"),
    ],
)
def test_a_bad_id_is_refused_naming_the_id_and_what_is_valid(id_: str, said: str) -> None:
    with pytest.raises(ConfigError) as e:
        adoption.parse_id(id_, HOSTS)
    text = str(e.value)
    assert said in text and repr(id_) in text
    assert "gpu-1, gpu-2" in text  # the hosts it may name


def test_the_hosts_come_from_the_stacks_fleet_config_as_pulumi_passes_it() -> None:
    pin = "SHA256:" + "A" * 43
    fleet = (
        '{"hosts": [{"name": "gpu-1", "address": "10.0.0.5", "key_path": "/k", '
        f'"host_key": "{pin}"}}]}}'
    )
    hosts = adoption.hosts_from_config(fleet)
    assert list(hosts) == ["gpu-1"] and hosts["gpu-1"].host_key == pin
    assert adoption.hosts_from_config(None) == {}
    with pytest.raises(ConfigError, match=r"fleet\.hosts\[0\]: .*needs key_path, host_key"):
        adoption.hosts_from_config('{"hosts": [{"name": "gpu-1", "address": "10.0.0.5"}]}')


def test_the_stack_is_read_from_the_urn() -> None:
    urn = "urn:pulumi:prod::amdfleet::amdfleet:index:Deployment$amdfleet:index:EngineService::e"
    assert adoption.stack_of(urn) == "prod"


# -- the state read back -----------------------------------------------------------------


def test_the_state_of_a_found_engine_is_valid_props_with_the_key_masked() -> None:
    argv = (
        "/venv/bin/python3", "/venv/bin/vllm", "serve", "/models/m",
        "--host", "0.0.0.0", "--port", "8000", "--api-key", KEY,
    )  # fmt: skip
    found = facts.EngineFacts(pid=7, started="Tue Dec  8 01:40:00 2026", argv=argv)
    state = adoption.observed_state(HOSTS["gpu-1"], 8000, found, "prod")
    p = EngineServiceProps.from_inputs(state)
    assert p.remote_dir == "/opt/amdfleet/prod"
    assert p.readiness.base_url == "http://127.0.0.1:8000"  # 0.0.0.0 answers on loopback
    assert p.readiness.served_name == "/models/m"  # no --served-model-name: the model
    assert p.adopted is not None and p.adopted.pid == 7
    assert KEY not in str(p.adopted.argv) and "***" in p.adopted.argv
    assert p.adopted.key_hashes == {"VLLM_API_KEY": facts.key_hash(KEY)}  # from --api-key
    outputs = p.to_outputs(running=True)
    assert KEY not in str(outputs)
    assert "4dabf18193072939515e22adb298388d" in str(outputs["adopted"]["key_hashes"])  # secret
    assert "adopted" not in EngineServiceProps.from_inputs({**state, "adopted": None}).to_outputs()


def test_process_start_times_read_as_iso() -> None:
    assert facts.iso_time("Tue Dec  8 01:40:00 2026") == "2026-12-08T01:40:00"
    assert facts.iso_time("garbage") == "garbage"


# -- differences from the stack -------------------------------------------------------------


def test_the_launch_scripts_exec_line_is_the_stacks_command() -> None:
    executable, args = _wanted()
    assert executable == "/var/lib/amdfleet/vllm-cpu/bin/vllm"
    assert args[:2] == ("serve", "/var/lib/amdfleet/models/smollm2-135m-instruct")
    assert args[-3:] == ("--dtype", "float32", "--enforce-eager")


def test_the_same_command_in_another_order_with_the_same_key_differs_in_nothing() -> None:
    executable, args = _wanted()
    flags = list(args[2:])
    pairs = [flags[i : i + 2] for i in range(0, len(flags) - 1, 2)]  # all but --enforce-eager
    reordered = [x for pair in reversed(pairs) for x in pair] + [flags[-1]]
    argv = ("/venv/bin/python3", executable, *args[:2], *reordered)
    assert adoption.differences_from_stack(_adopted(argv), _news()) == []


def test_every_difference_is_named_flag_by_flag() -> None:
    executable, args = _wanted()
    changed = [("4096" if a == "2048" else a) for a in args if a != "--enforce-eager"]
    argv = (executable, *changed, "--seed", "3")
    found = adoption.differences_from_stack(_adopted(argv, key="other-key"), _news())
    assert found == [
        "--enforce-eager: running not set, stack set",
        "--max-model-len: running 4096, stack 2048",
        "--seed: running 3, stack not set",
        "API key (VLLM_API_KEY): the running engine's differs from the stack's",
    ]


def test_another_executable_a_missing_key_or_a_container_differ() -> None:
    _, args = _wanted()
    other = adoption.differences_from_stack(_adopted(("/usr/bin/sglang", *args)), _news())
    assert other and other[0].startswith("executable: running '/usr/bin/sglang serve'")
    executable, _ = _wanted()
    keyless = adoption.differences_from_stack(_adopted((executable, *args), key=None), _news())
    assert keyless == ["API key (VLLM_API_KEY): not set on the running engine"]
    docker = adoption.differences_from_stack(
        _adopted((executable, *args)), {**_news(), "container": "amdfleet-x"}
    )
    assert docker == ["the stack runs the engine in a container (engine.runtime docker)"]


def test_the_diff_leaves_a_matching_engine_restarts_a_differing_or_dead_one() -> None:
    executable, args = _wanted()
    olds = {**_news(), "adopted": _adopted((executable, *args)), "running": True}
    same, said = adoption.adoption_diff(olds, _news())
    assert not same.changes and said == []
    dead, said = adoption.adoption_diff({**olds, "running": False}, _news())
    assert dead.changes and said == ["the adopted engine no longer runs"]
    moved = {**_news(), "host": HOSTS["gpu-2"].model_dump(mode="json")}
    replaced, _ = adoption.adoption_diff(olds, moved)
    assert replaced.replaces == ["host"]


# -- host commands, run for real -------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real process listening on a free loopback port, with an API key in its
    environment and on its command line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import socket,sys,time; s=socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port), "--api-key", KEY],
        env={"VLLM_API_KEY": KEY, "PATH": "/usr/bin:/bin"},
    )
    wait_until(lambda: _sh(facts.engine_facts_command(port, ())).count("pid") == 1, 10, "listen")
    try:
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def _sh(command: str) -> str:
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
    ).stdout


def test_the_facts_of_the_process_on_a_port_are_read_on_the_host(
    listener: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = listener
    out = _sh(facts.engine_facts_command(port, ("VLLM_API_KEY",)))
    assert KEY not in out  # only its hash leaves the host
    found = facts.parse_engine_facts(out)
    assert found is not None and found.pid == proc.pid
    assert found.argv[-3:] == (str(port), "--api-key", KEY)
    assert found.key_hashes == {"VLLM_API_KEY": facts.key_hash(KEY)}
    assert _sh(f"{facts.same_process(found.pid, found.started)} && echo alive") == "alive\n"
    assert _sh(f"{facts.same_process(found.pid, 'Mon Jan  1 00:00:00 2001')} || echo other")


def test_a_host_without_ss_is_told_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ps", "pkill", "sh"):
        (bin_dir / tool).symlink_to(
            subprocess.check_output(["sh", "-c", f"command -v {tool}"], text=True).strip()
        )
    out = subprocess.run(
        [str(bin_dir / "sh"), "-c", facts.engine_facts_command(8000, ())],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(bin_dir)},
        check=False,
    ).stdout
    with pytest.raises(facts.MissingTool, match=r"^ss$"):
        facts.parse_engine_facts(out)
    error = adoption.missing_tool(HOSTS["gpu-1"], "ss")
    assert "`ss` is not installed" in str(error) and "apt-get install iproute2" in str(error)


def test_nothing_on_the_port_reads_as_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert facts.parse_engine_facts(_sh(facts.engine_facts_command(port, ()))) is None


def test_stop_ends_the_adopted_process_and_spares_a_reused_pid(
    listener: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = listener
    found = facts.parse_engine_facts(_sh(facts.engine_facts_command(port, ())))
    assert found is not None
    _sh(facts.stop_command(found.pid, "Mon Jan  1 00:00:00 2001"))  # another start time
    assert proc.poll() is None
    _sh(facts.stop_command(found.pid, found.started))
    assert proc.wait(timeout=30) != 0
    _sh(facts.stop_command(found.pid, found.started))  # idempotent


# -- the stack setting -------------------------------------------------------------------------


def _local_with(adopt: str, **engine: Any) -> Any:
    values = {k.split(":", 1)[1]: v for k, v in local_config().items()}
    values["engine"] = {**values["engine"], "adopt": adopt, **engine}
    return parse_stack("local", values, source="stack local")


def test_engine_adopt_names_a_fleet_host_of_a_one_node_process_stack() -> None:
    assert plan(_local_with("localhost:18000")).engine.adopt == "localhost:18000"
    with pytest.raises(PlanError) as e:
        plan(_local_with("gpu-9:18000", runtime="docker"))
    text = str(e.value)
    assert "engine.adopt: 'gpu-9:18000' names host 'gpu-9', which is not in fleet.hosts" in text
    assert "one of: localhost" in text
    assert "only a one-node engine run as a process can be adopted" in text
    with pytest.raises(ConfigError, match=r"engine\.adopt"):
        _local_with("localhost")


def test_status_checks_an_adopted_engine_by_its_pid() -> None:
    host = HOSTS["gpu-1"].model_dump(mode="json")
    adopted = {"pid": 42, "started": "Tue Dec  8 01:40:00 2026", "port": 8000, "argv": []}
    resource: dict[str, Any] = {
        "type": "amdfleet:index:EngineService",
        "outputs": {"host": host, "remote_dir": "/opt/amdfleet/prod", "adopted": adopted},
    }
    (node,) = engine_nodes({"resources": [resource]})
    assert node.adopted == (42, "Tue Dec  8 01:40:00 2026")
    del resource["outputs"]["adopted"]
    assert engine_nodes({"resources": [resource]})[0].adopted is None
