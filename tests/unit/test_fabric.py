"""The fabric check's pure parts: the all_reduce_perf parser over every real recorded
output in ``../shared/fixtures/rccl-tests`` (no AMD GPU exists here: these are outputs
captured on MI210/MI300X/MI325X/MI350X/MI355X machines, each with its source beside it),
the gate, the command builders, the gloo script's table, and the stack section.

Expected numbers are read from the fixture files themselves (and agree with the values
the fixtures' README quotes).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from amdfleet.components.props import fabric_check_props
from amdfleet.config import FabricSpec, load_stack_file, parse_stack, size_bytes
from amdfleet.errors import ConfigError
from amdfleet.plan import DeploymentPlan, plan
from amdfleet.remote import fabric, fabric_gloo
from amdfleet.remote.fabric import AllReducePerfError, Sweep, parse_all_reduce_perf
from amdfleet.remote.transport.target import HostTarget
from tests.support.models import TINY_ARCHITECTURE
from tests.support.waiting import wait_until

FIXTURES = Path(__file__).resolve().parents[2] / "../shared/fixtures/rccl-tests"
GIB8 = 8 * 1024**3
GIB16 = 16 * 1024**3


def _fixture(stem: str) -> str:
    return (FIXTURES / f"{stem}.txt").read_text()


# (fixture stem, rows, first size, last size, Avg bus bandwidth, in-place busbw at 8 GiB)
COMPLETE = {
    "mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8": (31, 8, GIB8, 110.464, 315.91),
    "mi300x-8gpu-1node.all_reduce_perf.rocm-blog-xgmi": (32, 8, GIB16, 116.669, 317.66),
    "mi300x-16gpu-2node.all_reduce_perf.mpirun-np16.aac10": (32, 8, GIB16, 92.3318, 356.00),
    "mi350x-8gpu-1node.all_reduce_perf.amd-acceptance-doc.whitespace-collapsed": (
        31,
        8,
        GIB8,
        111.827,
        367.51,
    ),
    "mi355x-16gpu-2node.all_reduce_perf.pollara-anp.aac14.partial": (31, 8, GIB8, None, 369.08),
    "mi350x-8gpu-1node.all_reduce_perf.amd-acceptance-doc.elided-at-source": (
        2,
        8,
        GIB8,
        111.827,
        367.51,
    ),
    "mi355x-8gpu-1node.all_reduce_perf.oci.rows-cut-at-source": (2, GIB8, GIB16, 273.886, 407.26),
    "mi355x-16gpu-2node.all_reduce_perf.oci-pollara.rows-cut-at-source": (
        2,
        GIB8,
        GIB16,
        135.701,
        368.70,
    ),
    "mi355x-32gpu-4node.all_reduce_perf.oci-pollara.rows-cut-at-source": (
        2,
        GIB8,
        GIB16,
        117.167,
        370.28,
    ),
}
EGREP = "mi325x-1-2-4-8node.all_reduce_perf.large-sizes.egrep-filtered.aac11"
FAILED = "mi210-4gpu-1node.all_reduce_perf.FAILED-internal-error.rccl-tests-issue50"


def test_every_fixture_is_covered() -> None:
    stems = {p.name.removesuffix(".txt") for p in FIXTURES.glob("*.txt")}
    stems = {s for s in stems if not s.endswith(".source")}
    assert stems == {*COMPLETE, EGREP, FAILED}


@pytest.mark.parametrize("stem", sorted(COMPLETE))
def test_parser_reads_each_recorded_table(stem: str) -> None:
    rows, first, last, avg, busbw_8g = COMPLETE[stem]
    result = parse_all_reduce_perf(_fixture(stem))
    assert len(result.rows) == rows
    assert (result.rows[0].size_bytes, result.rows[-1].size_bytes) == (first, last)
    assert result.avg_busbw_gbps == avg
    row = result.row(GIB8)
    assert row is not None and row.in_place.busbw_gbps == busbw_8g
    assert all(r.type == "float" and r.redop == "sum" and r.root == -1 for r in result.rows)
    assert all(r.count * 4 == r.size_bytes and r.wrong == 0 for r in result.rows)
    assert result.out_of_bounds == (None if avg is None else 0)


@pytest.mark.parametrize(
    ("stem", "hosts"),
    [
        ("mi300x-16gpu-2node.all_reduce_perf.mpirun-np16.aac10", ["gpu-53"] * 8 + ["gpu-56"] * 8),
        (
            "mi355x-16gpu-2node.all_reduce_perf.pollara-anp.aac14.partial",
            ["mi355-gpu-23"] * 8 + ["mi355-gpu-24"] * 8,
        ),
        (
            "mi350x-8gpu-1node.all_reduce_perf.amd-acceptance-doc.elided-at-source",
            ["smci350-zts-gtu-e14-05"] * 2,
        ),
        ("mi300x-8gpu-1node.all_reduce_perf.rocm-blog-xgmi", ["host"] * 8),
        ("mi355x-16gpu-2node.all_reduce_perf.oci-pollara.rows-cut-at-source", []),
    ],
)
def test_rank_lines_name_each_ranks_host(stem: str, hosts: list[str]) -> None:
    """Old ("Rank 0 Pid") and new ("Rank 0 Group 0 Pid") rank lines, padded host names,
    no device name (AAC14), elided ranks ('...'), or no rank list at all (OCI)."""
    assert list(parse_all_reduce_perf(_fixture(stem)).rank_hosts) == hosts


def test_a_row_reads_every_column() -> None:
    """The 8 GiB row of the AAC8 run, field by field."""
    row = parse_all_reduce_perf(_fixture("mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8")).row(
        GIB8
    )
    assert row is not None
    assert (row.size_bytes, row.count, row.type, row.redop, row.root) == (
        8589934592,
        2147483648,
        "float",
        "sum",
        -1,
    )
    oop, ip = row.out_of_place, row.in_place
    assert (oop.time_us, oop.algbw_gbps, oop.busbw_gbps, oop.wrong) == (47617, 180.40, 315.69, 0)
    assert (ip.time_us, ip.algbw_gbps, ip.busbw_gbps, ip.wrong) == (47584, 180.52, 315.91, 0)


def test_the_blog_runs_outlier_and_unpadded_16g_row_are_read() -> None:
    """The ROCm blog's run: a 16 GiB row printed without a leading space, and one slow
    in-place measurement (4 MiB, 56.92 GB/s) kept as printed."""
    result = parse_all_reduce_perf(_fixture("mi300x-8gpu-1node.all_reduce_perf.rocm-blog-xgmi"))
    big, odd = result.row(GIB16), result.row(4194304)
    assert big is not None and big.out_of_place.busbw_gbps == 318.98
    assert odd is not None and (odd.out_of_place.busbw_gbps, odd.in_place.busbw_gbps) == (
        141.91,
        56.92,
    )


@pytest.mark.parametrize(
    ("stem", "ranks"),
    [
        ("mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8", 8),
        ("mi300x-8gpu-1node.all_reduce_perf.rocm-blog-xgmi", 8),
        ("mi300x-16gpu-2node.all_reduce_perf.mpirun-np16.aac10", 16),
        ("mi350x-8gpu-1node.all_reduce_perf.amd-acceptance-doc.whitespace-collapsed", 8),
    ],
)
def test_columns_obey_the_nccl_tests_definitions(stem: str, ranks: int) -> None:
    """busbw = algbw * 2*(n-1)/n in every row, and the Avg line is the mean busbw over
    both measurements of every row: what the gloo sweep prints too."""
    result = parse_all_reduce_perf(_fixture(stem))
    factor = fabric_gloo.busbw_factor(ranks)
    for row in result.rows:
        for m in (row.out_of_place, row.in_place):
            assert m.busbw_gbps == pytest.approx(m.algbw_gbps * factor, abs=0.02)
    busbws = [m.busbw_gbps for r in result.rows for m in (r.out_of_place, r.in_place)]
    # each printed busbw is rounded to 0.01, so their mean is within 0.005 of the Avg line
    assert result.avg_busbw_gbps == pytest.approx(sum(busbws) / len(busbws), abs=0.005)


def test_collapsed_and_aligned_copies_of_one_run_parse_alike() -> None:
    """AMD's guide prints the same MI350X run twice: whitespace-collapsed in full and
    aligned with '...' elisions; the rows both show are equal."""
    stem = "mi350x-8gpu-1node.all_reduce_perf.amd-acceptance-doc"
    collapsed = parse_all_reduce_perf(_fixture(f"{stem}.whitespace-collapsed"))
    elided = parse_all_reduce_perf(_fixture(f"{stem}.elided-at-source"))
    assert elided.rows == (collapsed.rows[0], collapsed.rows[-1])


def test_egrep_filtered_sections_parse_per_node_count() -> None:
    """The MI325X capture is four runs (1/2/4/8 nodes) filtered to their 4/8/16 GiB rows;
    the '====== N-node ======' markers are the author's script's, so the test splits on
    them and parses each run."""
    text = _fixture(EGREP)
    sections = [s for s in text.split("======") if s.strip()]
    names = [s.strip() for s in sections[0::2]]
    tables = [parse_all_reduce_perf(s) for s in sections[1::2]]
    assert names == ["1-node", "2-node", "4-node", "8-node"]
    at_8g = [t.row(GIB8).in_place.busbw_gbps for t in tables if t.row(GIB8)]
    assert at_8g == [318.03, 349.03, 349.47, 349.79]
    assert all(len(t.rows) == 3 and t.avg_busbw_gbps is None for t in tables)


def test_a_failed_run_is_an_error_with_its_failure_lines() -> None:
    with pytest.raises(AllReducePerfError) as caught:
        parse_all_reduce_perf(_fixture(FAILED))
    assert caught.value.lines == (
        "sharbox-ultra: Test NCCL failure common.cu:1285 'internal error - please report this "
        "issue to the NCCL developers'",
        ".. sharbox-ultra pid 117738: Test failure common.cu:1161",
    )
    assert "all_reduce_perf reported a failure" in str(caught.value)
    assert "internal error" in str(caught.value)


def test_output_without_rows_is_an_error() -> None:
    header = "\n".join(
        _fixture("mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8").splitlines()[:14]
    )
    with pytest.raises(AllReducePerfError, match="no result row"):
        parse_all_reduce_perf(header)


# --------------------------------------------------------------------------- the gate


def _aac8() -> fabric.AllReduceResult:
    return parse_all_reduce_perf(_fixture("mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8"))


def test_gate_passes_at_amds_mi300x_threshold() -> None:
    verdict = fabric.evaluate_gate(_aac8(), GIB8, 304.0, ["node-a"])
    assert verdict.passed and verdict.busbw_gbps == 315.91 and verdict.reason == ""


def test_gate_fails_naming_expected_and_observed() -> None:
    """The same MI300X run against the 350 GB/s MI350X/MI355X threshold."""
    verdict = fabric.evaluate_gate(_aac8(), GIB8, 350.0, ["node-a", "node-b"])
    assert not verdict.passed
    assert verdict.reason == (
        "in-place busbw at 8 GiB (8589934592 B): expected >= 350 GB/s, observed 315.91 GB/s"
    )
    message = str(fabric.FabricCheckFailed([verdict]))
    assert "[node-a+node-b] in-place busbw at 8 GiB" in message and "hint:" in message


def test_gate_without_a_row_at_its_size_fails() -> None:
    oci = parse_all_reduce_perf(
        _fixture("mi355x-8gpu-1node.all_reduce_perf.oci.rows-cut-at-source")
    )
    verdict = fabric.evaluate_gate(oci, 1024**2, 350.0, ["gpu-6403"])
    assert not verdict.passed and verdict.busbw_gbps is None
    assert "no row at 1 MiB (1048576 B)" in verdict.reason
    assert "largest is 16 GiB" in verdict.reason


def test_gate_without_threshold_records_only() -> None:
    verdict = fabric.evaluate_gate(_aac8(), GIB8, None, ["node-a"])
    assert verdict.passed and verdict.busbw_gbps == 315.91


def test_wrong_elements_fail_the_gate_whatever_the_bandwidth() -> None:
    """No recorded AMD run has a non-zero #wrong (fixtures README, "Not found"), so this
    one is the AAC8 output with its 1 MiB row's in-place #wrong edited from 0 to 3."""
    text = _fixture("mi300x-8gpu-1node.all_reduce_perf.mpirun-np8.aac8")
    line = next(x for x in text.splitlines() if x.split()[:1] == ["1048576"])
    edited = text.replace(line, line[: line.rindex("0")] + "3")
    verdict = fabric.evaluate_gate(parse_all_reduce_perf(edited), GIB8, 304.0, ["node-a"])
    assert not verdict.passed and verdict.wrong == 3
    assert verdict.reason == "3 wrong elements after the all-reduce (at 1 MiB (1048576 B))"


# --------------------------------------------------------------------------- commands


def test_single_node_command_is_amds_acceptance_command() -> None:
    argv = fabric.all_reduce_perf_argv("all_reduce_perf", Sweep(8, GIB8), 8)
    assert argv == [
        "all_reduce_perf",
        "-b",
        "8",
        "-e",
        "8589934592",
        "-f",
        "2",
        "-g",
        "8",
        "-n",
        "20",
        "-w",
        "5",
    ]


def test_mpirun_form_of_the_recorded_two_node_runs() -> None:
    test = fabric.all_reduce_perf_argv("/opt/rccl-tests/all_reduce_perf", Sweep(8, GIB16), 1)
    argv = fabric.mpirun_argv(
        "mpirun",
        [("gpu-53", 8), ("gpu-56", 8)],
        {"NCCL_SOCKET_IFNAME": "ens", "NCCL_IB_HCA": "^mlx5_bond_0"},
        ["--mca", "pml", "ucx"],
        test,
    )
    assert argv[:5] == ["mpirun", "-np", "16", "-H", "gpu-53:8,gpu-56:8"]
    assert argv[5:9] == ["--allow-run-as-root", "--mca", "pml", "ucx"]
    assert argv[9:13] == ["-x", "NCCL_IB_HCA=^mlx5_bond_0", "-x", "NCCL_SOCKET_IFNAME=ens"]
    assert argv[13:] == test and test[test.index("-g") + 1] == "1"


def _two_node_mi300x() -> DeploymentPlan:
    spec = load_stack_file("mi300x-2node-llama405b-bf16").spec
    spec = spec.model_copy(update={"fabric": FabricSpec(enabled=True, min_busbw_gbps=304)})
    return plan(spec)


def _targets(resolved: DeploymentPlan) -> list[HostTarget]:
    return [HostTarget(name=n.name, address=n.address or "") for n in resolved.nodes]


def test_two_node_gpu_stack_runs_mpirun_in_the_engine_image_on_the_head() -> None:
    resolved = _two_node_mi300x()
    assert resolved.fabric is not None
    assert (resolved.fabric.min_bytes, resolved.fabric.max_bytes) == (8, GIB8)
    assert resolved.fabric.gate_bytes == GIB8 and resolved.fabric.kind == "rccl"
    # The interfaces the cluster check derives from each host's facts.
    interfaces = {"mi300x-a": "enp1s0", "mi300x-b": "enp1s0"}
    props = fabric_check_props(resolved, _targets(resolved), interfaces)
    (run,) = props.runs
    assert run.host.name == "mi300x-a" and run.reports
    words = shlex.split(run.command)
    image = resolved.image.image
    assert image is not None
    container = "amdfleet-mi300x-2node-llama405b-bf16-fabric"
    assert words[:6] == ["docker", "run", "--rm", "--name", container, "--pull=never"]
    for flag in ("--device /dev/kfd", "--device /dev/dri", "--group-add=video", "--network=host"):
        assert flag in run.command
    entry = words.index("--entrypoint")
    assert words[entry + 1 : entry + 3] == ["mpirun", image]
    mpirun = words[entry + 3 :]
    assert mpirun[:4] == ["-np", "16", "-H", "10.10.0.1:8,10.10.0.2:8"]
    assert "NCCL_SOCKET_IFNAME=enp1s0" in mpirun
    assert f"NCCL_IB_HCA={','.join(f'rdma{i}' for i in range(8))}" in mpirun
    assert mpirun[-13:] == fabric.all_reduce_perf_argv("all_reduce_perf", Sweep(8, GIB8), 1)
    assert props.script is None and props.container == container
    assert (props.gate_bytes, props.min_busbw_gbps) == (GIB8, 304)


def test_one_node_gpu_stack_runs_all_reduce_perf_over_its_gpus() -> None:
    spec = load_stack_file("mi355x-llama70b").spec
    spec = spec.model_copy(update={"fabric": FabricSpec(enabled=True, min_busbw_gbps=350)})
    resolved = plan(spec)
    (run,) = fabric_check_props(resolved, _targets(resolved)).runs
    words = shlex.split(run.command)
    entry = words.index("--entrypoint")
    gpus = resolved.head.gpus
    assert words[entry + 2 :] == [
        resolved.image.image,
        *fabric.all_reduce_perf_argv("all_reduce_perf", Sweep(8, GIB8), gpus)[1:],
    ]


CPU_PAIR: dict[str, Any] = {
    "fleet": {
        "hosts": [
            {
                "name": f"cpu-{x}",
                "address": f"10.0.0.{i + 1}",
                "key_path": "/k",
                "host_key": "SHA256:w2ElrziGPbjW0EQa56dzxUEebFVX5odsZBiQWG6hsj8",
                "network_interface": "eth0",
            }
            for i, x in enumerate("ab")
        ]
    },
    "topology": {"accelerator": "cpu", "nodes": 2, "gpus_per_node": 1},
    "model": {
        "id": "tiny",
        "checkpoint": "/models/tiny",
        "architecture": TINY_ARCHITECTURE,
    },
    "engine": {"runtime": "process", "executable": "/venv/bin/vllm"},
    "parallelism": {"pp": 2},
    "verification": {"enabled": False},
    "fabric": {
        "enabled": True,
        "min_busbw_gbps": 0.5,
        "extra_env": {"GLOO_DEVICE_TRANSPORT": "TCP"},
    },
}


def test_cpu_stack_runs_one_gloo_rank_per_node_with_the_engines_python() -> None:
    resolved = plan(parse_stack("cpu-pair", CPU_PAIR))
    assert resolved.fabric is not None and resolved.fabric.kind == "gloo"
    assert (resolved.fabric.min_bytes, resolved.fabric.gate_bytes) == (1024, 64 * 1024**2)
    interfaces = {node.name: "eth0" for node in resolved.nodes}  # as the cluster check derives
    props = fabric_check_props(resolved, _targets(resolved), interfaces)
    assert props.script == fabric.GLOO_SCRIPT.read_text()
    assert [r.reports for r in props.runs] == [True, False]
    for rank, run in enumerate(props.runs):
        words = shlex.split(run.command)
        assert words[:3] == ["env", "GLOO_DEVICE_TRANSPORT=TCP", "GLOO_SOCKET_IFNAME=eth0"]
        assert words[3:5] == ["/venv/bin/python3", "/opt/amdfleet/cpu-pair-fabric/fabric_gloo.py"]
        args = fabric_gloo.parse_args(words[5:])
        assert (args.rank, args.world_size) == (rank, 2)
        assert args.init_method == "tcp://10.0.0.1:29700"
        assert (args.min_bytes, args.max_bytes) == (1024, 64 * 1024**2)


def test_bounded_run_ends_at_its_timeout_and_stop_ends_it_early(tmp_path: Path) -> None:
    """The shell text for real, with /bin/sh: `timeout` ends a run past its deadline
    (exit 124), and stop_command ends a running one through its pid file."""
    started = time.monotonic()
    late = subprocess.run(
        ["sh", "-c", fabric.bounded("sleep 30", 1, str(tmp_path / "late.pid"))], check=False
    )
    assert late.returncode == 124 and time.monotonic() - started < 10
    pid = str(tmp_path / "run.pid")
    running = subprocess.Popen(["sh", "-c", fabric.bounded("sleep 30", 60, pid)])
    try:
        wait_until(lambda: Path(pid).is_file() and Path(pid).read_text().strip(), 10, "pid file")
        subprocess.run(["sh", "-c", fabric.stop_command(pid)], check=True)
        # `timeout` (the process itself: sh exec'd it) passes SIGTERM on; it then dies of
        # the signal or exits 128+15, depending on whether its child had exec'd yet.
        assert running.wait(timeout=10) in (-signal.SIGTERM, 128 + signal.SIGTERM)
    finally:
        running.kill()
        running.wait()


# --------------------------------------------------------------------------- gloo script


def test_gloo_table_is_read_by_the_same_parser() -> None:
    """The script's own header, rows and footer (numbers made here, not measured) parse
    back to the values that went in, with nccl-tests' busbw factor for 2 ranks."""
    command = "--rank 0 --world-size 2 --init-method tcp://h:1 --min-bytes 1024 --max-bytes 2048"
    args = fabric_gloo.parse_args(shlex.split(command))
    rows = [
        fabric_gloo.format_row(1024, [(0.0005, 0), (0.00025, 0)], 2),
        fabric_gloo.format_row(2048, [(0.012345, 0), (0.5, 1)], 2),
    ]
    header = fabric_gloo.header(args, [("host0", 11), ("host1", 12)], "2.x")
    footer = fabric_gloo.footer([1.0, 2.0, 3.0, 4.0], 0)
    text = "\n".join([*header, *rows, *footer])
    result = parse_all_reduce_perf(text)
    first, second = result.rows
    assert (first.size_bytes, first.count, first.root) == (1024, 256, -1)
    assert first.out_of_place.time_us == 500.0 and first.in_place.time_us == 250.0
    assert second.out_of_place.time_us == 12345 and second.in_place.wrong == 1
    # algbw = bytes / time in GB/s, busbw = algbw * 2*(2-1)/2 (printed with 2 decimals)
    assert second.out_of_place.algbw_gbps == round(2048 / 0.012345 / 1e9, 2)
    assert result.avg_busbw_gbps == 2.5
    assert fabric_gloo.sweep(1024, 2048) == [1024, 2048]
    assert (fabric_gloo.busbw_factor(2), fabric_gloo.busbw_factor(8)) == (1.0, 1.75)


# --------------------------------------------------------------------------- the stack section


def test_sizes_read_as_rccl_tests_reads_them() -> None:
    assert [size_bytes(s) for s in ("8", "1K", "64M", "8G", "8g")] == [
        8,
        1024,
        64 * 1024**2,
        GIB8,
        GIB8,
    ]
    assert FabricSpec(min_size=8).min_size == "8"  # type: ignore[arg-type]


def test_disabled_by_default_and_absent_from_the_plan() -> None:
    resolved = plan(load_stack_file("local").spec)
    assert resolved.fabric is None


@pytest.mark.parametrize(
    ("fabric_section", "path", "text"),
    [
        ({"gate_size": "3K"}, "fabric.gate_size", "not min_size times a power of two"),
        ({"max_size": "1M", "gate_size": "2M"}, "fabric.gate_size", "above max_size"),
        ({"min_size": "2"}, "fabric.min_size", "float32"),
        ({"min_size": "1G", "max_size": "1M"}, "fabric.max_size", "before it starts"),
        ({"port": 29500}, "fabric.port", "parallelism.master_port"),
        ({"min_busbw_gbps": 0}, "fabric.min_busbw_gbps", "greater than 0"),
        ({"max_size": "8GB"}, "fabric.max_size", "K, M or G"),
        ({"min_busbw": 1}, "fabric.min_busbw", "min_busbw_gbps"),
    ],
)
def test_bad_fabric_sections_name_field_and_fix(
    fabric_section: dict[str, Any], path: str, text: str
) -> None:
    sections = {**CPU_PAIR, "fabric": {"enabled": True, **fabric_section}}
    with pytest.raises(ConfigError) as caught:
        plan(parse_stack("cpu-pair", sections))
    issue = next(i for i in caught.value.issues if i.subject == path)
    assert text in f"{issue.detail} {issue.hint}" and issue.hint, str(caught.value)
