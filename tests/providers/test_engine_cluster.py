"""EngineCluster through amdfleet's provider plugin, on two real SSH hosts.

The launch scripts and env files are the real rendered ones of a two-node vLLM stack
(process runtime, ``--nnodes 2``, rank 1 ``--headless``), run by the real provider over
SSH in two network namespaces under amdfleet's supervisor loop. The engine they start is
``tests/support/fake_engine.py``: a real HTTP server process on the head, a process that
stays up on the worker, and per-rank failure modes (exit at start, completions that hang)
that vLLM cannot be told to show on demand), and what vLLM does when a pipeline stage dies
(the head answers /health but its completions hang; a worker whose head goes stays). The
real two-node vLLM runs in tests/program/test_cli_cluster.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from amdfleet.components.props import engine_cluster_props
from amdfleet.providers.engine_cluster import (
    EngineCluster,
    EngineClusterProps,
)
from tests.support.fake_stack import fake_engine_plan, install_fake_engine
from tests.support.hostlab import HostLab, LabFactory
from tests.support.probes import completes
from tests.support.pulumi_host import ProviderCallError, ProviderHost, resource_urn, secret
from tests.support.waiting import wait_until

API_KEY = "cluster-key-3b9d0e6f1a"
PORT = 18085

pytestmark = pytest.mark.netns
URN = resource_urn("engine-cluster", EngineCluster)


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    lab = hostlab(2)
    install_fake_engine(lab)
    return lab


def _props(lab: HostLab, name: str, generation_timeout_s: int = 60, **env: str) -> dict[str, Any]:
    parallelism = {"tp": 1, "pp": 2, "master_port": 29585}
    deployment = fake_engine_plan(lab, name, PORT, nodes=2, env=env, parallelism=parallelism)
    hosts = [lab.host_target(i) for i in (0, 1)]
    props = engine_cluster_props(deployment, hosts)
    readiness = props.readiness.model_copy(update={"generation_timeout_s": generation_timeout_s})
    nodes = tuple(
        node.model_copy(update={"cluster_env": {"GLOO_SOCKET_IFNAME": "eth0"}})
        for node in props.nodes
    )
    props = EngineClusterProps(nodes=nodes, readiness=readiness)
    keys = secret({"AMDFLEET_API_KEY": API_KEY, "VLLM_API_KEY": API_KEY})
    return props.to_inputs(secret_env=keys)


def _record(lab: HostLab, index: int, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lab[index].path(f"/tmp/{name}.json").read_text())
    return data


def _run(lab: HostLab, index: int, command: str) -> str:
    with lab.connect(index) as conn:
        return conn.run(command, timeout=30, check=False).stdout


def _leftovers(lab: HostLab, name: str) -> list[str]:
    """Anything of stack ``name`` on either host: its directory, or a live process."""
    found = []
    for index in (0, 1):
        if _run(lab, index, f"test -e /opt/amdfleet/{name} && echo yes").strip():
            found.append(f"host{index}: /opt/amdfleet/{name}")
        table = _run(lab, index, "ps -eo stat=,args=").splitlines()
        found += [f"host{index}: {row}" for row in table if name in row and row[0] != "Z"]
    return found


def test_create_starts_head_then_worker_refresh_sees_them_and_delete_stops_both(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    urn = provider_host.urn("engine-cluster-life", EngineCluster)
    checked = provider_host.check(_props(lab, "cl-life"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    try:
        head, worker = _record(lab, 0, "cl-life"), _record(lab, 1, "cl-life")
        assert head["argv"][head["argv"].index("--node-rank") + 1] == "0"
        assert "--headless" in worker["argv"] and "--headless" not in head["argv"]
        assert lab.alive(0, head["pid"]) and lab.alive(1, worker["pid"])
        for index in (0, 1):
            env = lab[index].path("/opt/amdfleet/cl-life/cluster.env").read_text()
            assert "GLOO_SOCKET_IFNAME=eth0\n" in env
            assert "GLOO_SOCKET_IFNAME" in _record(lab, index, "cl-life")["env_keys"]
        outs = created.outputs
        assert outs["running"] is True and outs.get("not_ready") is None
        assert API_KEY not in json.dumps(outs)
        read = provider_host.read(created.id, outs, inputs=checked, urn=urn)
        assert read.outputs["running"] is True, read.outputs.get("not_ready")
        same = provider_host.diff(created.id, outs, checked, old_inputs=checked, urn=urn)
        assert same.changes is False
    finally:
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _leftovers(lab, "cl-life") == []
    provider_host.delete(created.id, created.outputs, urn=urn)  # already gone: still fine


def test_a_worker_that_dies_at_start_fails_create_with_both_logs_and_leaves_nothing(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    urn = provider_host.urn("engine-cluster-dies", EngineCluster)
    checked = provider_host.check(
        _props(lab, "cl-dies", FAKE_ENGINE_MODE_RANK1="exit"), urn=urn
    ).inputs
    started = time.monotonic()
    try:
        created = provider_host.create(checked, urn=urn)
    except ProviderCallError as e:
        text = e.details
    else:  # stop it, or its engines hold the test ports for the tests after this one
        provider_host.delete(created.id, created.outputs, urn=urn)
        pytest.fail("create succeeded although the worker exits at start")
    assert time.monotonic() - started < 30  # noticed at once, not at the 30 s deadline
    assert "engine cluster failed to start: the engine on worker host1 exited" in text
    assert "/opt/amdfleet/cl-dies/engine.log on host0 (head)" in text
    assert "/opt/amdfleet/cl-dies/engine.log on host1 (worker rank 1)" in text
    assert "simulated failure while loading weights" in text  # the worker's own log
    assert "nothing was left running" in text
    assert API_KEY not in text
    assert _leftovers(lab, "cl-dies") == []


def test_refresh_names_a_dead_worker_and_update_restarts_both_nodes(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    urn = provider_host.urn("engine-cluster-drift", EngineCluster)
    checked = provider_host.check(_props(lab, "cl-drift"), urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    outs = created.outputs
    try:
        head, worker = _record(lab, 0, "cl-drift"), _record(lab, 1, "cl-drift")
        supervisor = _run(lab, 1, "cat /opt/amdfleet/cl-drift/supervisor.pid").strip()
        _run(lab, 1, f"kill -9 -- -{supervisor}; kill -9 -- -{worker['pid']}")
        wait_until(lambda: not lab.alive(1, worker["pid"]), 20, "the worker to die")

        read = provider_host.read(created.id, outs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        problem = read.outputs["not_ready"]
        assert problem.startswith("worker rank 1 host1 (host1): the engine is not running")
        assert "last lines of /opt/amdfleet/cl-drift/engine.log on host1" in problem
        assert "headless worker, serving no API" in problem  # the worker's log tail

        diff = provider_host.diff(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        assert diff.changes is True and diff.replaces == []
        outs = provider_host.update(created.id, read.outputs, checked, old_inputs=checked, urn=urn)
        new_head, new_worker = _record(lab, 0, "cl-drift"), _record(lab, 1, "cl-drift")
        assert new_head["pid"] != head["pid"] and not lab.alive(0, head["pid"])
        assert new_worker["pid"] != worker["pid"] and lab.alive(1, new_worker["pid"])
        assert outs["running"] is True
    finally:
        provider_host.delete(created.id, outs, urn=urn)
    assert _leftovers(lab, "cl-drift") == []


def test_a_head_that_answers_health_but_never_completes_is_not_ready(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    """What vLLM's head does once a pipeline stage is gone: /health and /v1/models 200,
    every completion hangs. Readiness does not trust /health: create fails at the
    deadline naming the completion that got no answer."""
    urn = provider_host.urn("engine-cluster-hang", EngineCluster)
    props = _props(lab, "cl-hang", generation_timeout_s=2, FAKE_ENGINE_MODE_RANK0="hang")
    checked = provider_host.check(props, urn=urn).inputs
    with pytest.raises(ProviderCallError) as caught:
        provider_host.create(checked, urn=urn)
    text = caught.value.details
    assert "the engine was not ready within 30 s (/health -> 200, /v1/models -> 200" in text
    assert "a one-token completion got no answer within 2 s" in text
    assert _leftovers(lab, "cl-hang") == []


def test_a_killed_worker_heals_without_pulumi_then_a_spent_bound_is_reported(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    """The worker's engine is killed out of band (by PID; its supervisor lives). Its
    supervisor restarts it, but it cannot join a running head; the head, whose completions
    now hang, is restarted by its watchdog (probes 2 s here), and the restarted worker
    joins the new head: completions succeed again, no provider call in between. Then the
    worker keeps failing until its supervisor's restarts are spent: it says so, and
    refresh reports why."""
    urn = provider_host.urn("engine-cluster-heal", EngineCluster)
    fail = "/tmp/cl-heal.fail"  # on the worker only: its starts fail while it exists
    props = _props(lab, "cl-heal", generation_timeout_s=2, FAKE_ENGINE_FAIL_IF=fail)
    checked = provider_host.check(props, urn=urn).inputs
    created = provider_host.create(checked, urn=urn)
    try:
        head = _record(lab, 0, "cl-heal")
        worker_group = _run(lab, 1, "cat /opt/amdfleet/cl-heal/engine.pid").strip()
        _run(lab, 1, f"kill -9 -- -{worker_group}")
        killed = time.monotonic()
        try:
            wait_until(lambda: _completes(lab), 60, "the cluster to complete tokens again")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_logs(lab, 'cl-heal')}") from None
        took = time.monotonic() - killed
        assert _record(lab, 0, "cl-heal")["pid"] != head["pid"]  # the head was restarted
        head_log = _run(lab, 0, "cat /opt/amdfleet/cl-heal/engine.log")
        worker_log = _run(lab, 1, "cat /opt/amdfleet/cl-heal/engine.log")
        assert (
            "amdfleet-supervisor: watchdog: 3 one-token completions in a row failed "
            "(last: status 000 within 2 s); stopping the engine"
        ) in head_log
        assert "restart 1 of 5 in 1.000 s" in head_log
        assert "engine exited with status 137 (signal 9); restart 1 of 5" in worker_log
        assert took < 3 * (5 + 2) + 20, took  # the watchdog's bound, then a fast restart
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is True, read.outputs.get("not_ready")

        # The head dies: its supervisor restarts it, and the worker, left in the old
        # rendezvous, is restarted by its own watchdog (the head's API refuses) and joins.
        wait_until(
            lab[0].path("/opt/amdfleet/cl-heal/engine.served").exists, 10, "the head's watchdog"
        )
        worker = _record(lab, 1, "cl-heal")
        head_group = _run(lab, 0, "cat /opt/amdfleet/cl-heal/engine.pid").strip()
        _run(lab, 0, f"kill -9 -- -{head_group}")
        try:
            wait_until(lambda: _completes(lab), 60, "the cluster to complete tokens again")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_logs(lab, 'cl-heal')}") from None
        assert _record(lab, 1, "cl-heal")["pid"] != worker["pid"]
        worker_log = _run(lab, 1, "cat /opt/amdfleet/cl-heal/engine.log")
        assert "amdfleet-supervisor: watchdog: 3 one-token completions in a row failed" in (
            worker_log
        )

        # Spend the worker's restarts: from now on each start fails.
        _run(lab, 1, f"touch {fail}")
        supervisor = int(_run(lab, 1, "cat /opt/amdfleet/cl-heal/supervisor.pid"))
        worker_group = _run(lab, 1, "cat /opt/amdfleet/cl-heal/engine.pid").strip()
        _run(lab, 1, f"kill -9 -- -{worker_group}")
        wait_until(lambda: not lab.alive(1, supervisor), 90, "the worker's supervisor to give up")
        read = provider_host.read(created.id, created.outputs, inputs=checked, urn=urn)
        assert read.outputs["running"] is False
        problem = read.outputs["not_ready"]
        first = problem.splitlines()[0]
        assert first.startswith("worker rank 1 host1 (host1): the engine is not running: 20")
        assert first.endswith(
            "engine exited with status 3; giving up after 5 restarts (limit 5)"
        ), first
        assert "simulated failure while loading weights" in problem  # the log tail
        assert API_KEY not in problem
    finally:
        _run(lab, 1, f"rm -f {fail}")
        provider_host.delete(created.id, created.outputs, urn=urn)
    assert _leftovers(lab, "cl-heal") == []


def _completes(lab: HostLab) -> bool:
    """One completion on the head, answered 200 within 2 s, from this machine."""
    return completes(f"http://{lab.target(0).address}:{PORT}", API_KEY)


def _logs(lab: HostLab, name: str) -> str:
    """Both nodes' engine logs, for a failure's message."""
    return "\n".join(
        f"host{i}:\n" + _run(lab, i, f"cat /opt/amdfleet/{name}/engine.log") for i in (0, 1)
    )
