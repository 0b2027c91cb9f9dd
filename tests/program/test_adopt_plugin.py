"""Adoption through amdfleet's provider plugin, call by call as the Pulumi engine makes
them on an import, against an engine started by hand on a real SSH host: the stand-in
engine (tests/support/fake_engine.py, a real HTTP server process) run the way a
console script runs (``#!/usr/bin/python3``, so its command line reads ``python3
/opt/adopt/vllm serve ...`` as a pip-installed ``vllm``'s does).

* Read with the id alone (an import) finds it by its port on the host the stack's fleet
  config names, and returns its inputs and outputs;
* one that runs with another ``--max-model-len`` diffs as a restart, naming it; the update
  stops it by its pid and starts the stack's engine under amdfleet's supervisor; delete
  stops that;
* an id naming a port nothing listens on, or a type amdfleet cannot adopt, is refused.

The real vLLM, adopted without a restart through the real CLI, is
tests/program/test_cli_adopt.py.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from pulumi.provider.experimental import provider as p

from amdfleet.components.props import engine_service_props
from amdfleet.errors import RemoteError
from amdfleet.plugin.provider import AmdFleetProvider, ImportRefused
from amdfleet.plugin.values import map_from_python, map_to_python
from amdfleet.providers.engine_service import EngineServiceProvider
from amdfleet.remote.engine import EngineLayout
from amdfleet.remote.supervision import stop_any_command
from amdfleet.remote.transport.ssh import SshConnection
from tests.support.fake_stack import fake_engine_plan, install_fake_engine
from tests.support.hostlab import HostLab, LabFactory, process_alive
from tests.support.waiting import wait_until

PORT = 18210
KEY = "adopt-plugin-key-39d1"
STACK = "adoptp"
URN = f"urn:pulumi:{STACK}::amdfleet::amdfleet:index:EngineService::engine"
SCRIPT = "/opt/adopt/vllm"
RUNPY = (
    "#!/usr/bin/python3\nimport runpy\n"
    "runpy.run_path('/opt/fake/fake_engine.py', run_name='__main__')\n"
)

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    lab = hostlab(1)
    install_fake_engine(lab)
    script = lab[0].path(SCRIPT)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(RUNPY)
    script.chmod(0o755)
    return lab


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


def _news(lab: HostLab) -> dict[str, Any]:
    """The program's inputs for the stack's engine, as Check returns them."""
    engine = {
        "runtime": "process",
        "executable": SCRIPT,
        "startup_timeout_s": 30,
        "extra_env": {"FAKE_ENGINE_RECORD": f"/tmp/{STACK}.json"},
    }
    deployment = fake_engine_plan(lab, STACK, PORT, env={}, engine=engine)
    secrets = {"AMDFLEET_API_KEY": KEY, "VLLM_API_KEY": KEY}
    args = engine_service_props(deployment, deployment.head, lab.host_target(0), secrets)
    return EngineServiceProvider().check({}, args.inputs()).inputs


def _plugin(lab: HostLab) -> AmdFleetProvider:
    """The plugin's provider, configured as Pulumi configures the default provider: with
    the stack's ``amdfleet:*`` config (the fleet as JSON text)."""
    host = {k: v for k, v in lab.host_props(0).items() if k != "connection"}
    fleet = json.dumps({"hosts": [host]})
    plugin = AmdFleetProvider()
    asyncio.run(
        plugin.configure(p.ConfigureRequest({"amdfleet:config:fleet": fleet}, {}, True, False))
    )
    return plugin


def _hand_start(conn: SshConnection, args: list[str]) -> int:
    command = (
        "read -r VLLM_API_KEY; export VLLM_API_KEY; cd /root && "
        f"{{ nohup setsid {shlex.join([SCRIPT, *args])} >/root/hand.log 2>&1 </dev/null & "
        "echo $!; }"
    )
    return int(conn.run(command, timeout=30, stdin=KEY + "\n").stdout.strip())


def _listening(conn: SshConnection) -> bool:
    return conn.run(f"ss -Hltn 'sport = :{PORT}' | grep -q .", timeout=10, check=False).ok


def test_a_differing_hand_started_engine_is_imported_then_restarted_the_stacks_way(
    lab: HostLab, conn: SshConnection
) -> None:
    news = _news(lab)
    argv = fake_engine_plan(lab, STACK, PORT, env={}).head.argv[1:]
    hand = ["4096" if a == "2048" else a for a in argv]  # --max-model-len differs
    pid = _hand_start(conn, hand)
    wait_until(lambda: _listening(conn), 30, "the hand-started engine to listen")
    plugin = _plugin(lab)
    try:
        read = asyncio.run(plugin.read(p.ReadRequest(URN, f"host0:{PORT}", {}, {})))
        outputs, inputs = map_to_python(read.properties), map_to_python(read.inputs)
        assert read.resource_id == f"host0:{PORT}"
        assert outputs["adopted"]["pid"] == pid and outputs["running"] is True
        assert outputs["remote_dir"] == f"/opt/amdfleet/{STACK}"
        assert "adopted" not in inputs and inputs["host"]["name"] == "host0"

        wanted = map_from_python(news)
        diff = asyncio.run(
            plugin.diff(p.DiffRequest(URN, read.resource_id, read.properties, wanted, []))
        )
        assert diff.changes and not diff.replaces

        update = asyncio.run(
            plugin.update(
                p.UpdateRequest(URN, read.resource_id, read.properties, wanted, 60, [], False)
            )
        )
        state = map_to_python(update.properties)
        assert not process_alive(conn, pid)  # the hand-started engine, stopped by its pid
        ours = int(lab[0].path(f"/opt/amdfleet/{STACK}/engine.pid").read_text())
        assert ours != pid and process_alive(conn, ours)  # under amdfleet's supervisor
        assert "adopted" not in state and state["running"] is True
        record = json.loads(lab[0].path(f"/tmp/{STACK}.json").read_text())
        assert "2048" in record["argv"]  # the stack's command

        asyncio.run(plugin.delete(p.DeleteRequest(URN, read.resource_id, update.properties, 60)))
        assert not process_alive(conn, ours) and not _listening(conn)
    finally:
        conn.run(f"kill -9 {pid} 2>/dev/null; true", timeout=10)
        layout = EngineLayout(f"/opt/amdfleet/{STACK}")
        conn.run(stop_any_command(layout, unit="x.service", container=None), timeout=60)


def test_nothing_on_the_port_or_a_type_that_cannot_be_imported_is_refused(
    lab: HostLab,
) -> None:
    plugin = _plugin(lab)
    with pytest.raises(RemoteError, match=f"no process listens on port {PORT}"):
        asyncio.run(plugin.read(p.ReadRequest(URN, f"host0:{PORT}", {}, {})))
    weights = URN.replace("EngineService", "ModelWeights")
    with pytest.raises(ImportRefused, match="amdfleet cannot import a ModelWeights"):
        asyncio.run(plugin.read(p.ReadRequest(weights, "host0:/models/tiny", {}, {})))
