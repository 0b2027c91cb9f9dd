"""The programs sent to hosts (amdfleet/remote/programs): package data, valid Python, and
sent exactly as the files hold them."""

from __future__ import annotations

import shlex
from importlib.resources import files

import pytest

from amdfleet.remote import engine, reachability, weights
from amdfleet.remote.programs import program

PROGRAMS = sorted(
    entry.name
    for entry in files("amdfleet.remote.programs").iterdir()
    if entry.name.endswith(".py") and entry.name != "__init__.py"
)


def test_the_package_holds_every_program() -> None:
    assert PROGRAMS == [
        "cluster_connect.py",
        "cluster_listener.py",
        "counter_sum.py",
        "http_get.py",
        "http_post.py",
        "snapshot_download.py",
    ]


@pytest.mark.parametrize("name", PROGRAMS)
def test_each_program_is_python(name: str) -> None:
    compile(program(name), name, "exec")


def test_commands_carry_the_files_byte_for_byte() -> None:
    layout = engine.EngineLayout("/opt/amdfleet/unit-test")
    listener = reachability.listener_command("10.0.0.1", [29500], layout=layout, expected=1)
    assert shlex.quote(program("cluster_listener.py")) in listener
    connect = reachability.connect_command("10.0.0.1", [29500], own_address="10.0.0.2")
    assert shlex.quote(program("cluster_connect.py")) in connect
    ready = engine.readiness_command("true", "http://127.0.0.1:8000", ("/health",))
    assert shlex.quote(program("http_get.py")) in ready
    generate = engine.generation_command("http://127.0.0.1:8000", "m", 5.0)
    assert shlex.quote(program("http_post.py")) in generate
    counted = engine.counter_command("http://127.0.0.1:8000/metrics", ("c_total",), 5.0)
    assert shlex.quote(program("counter_sum.py")) in counted
    target = weights.WeightsTarget(repo="org/model", revision=None, cache_dir="/cache")
    download = weights.download_command(target, "python3", None)
    assert shlex.quote(program("snapshot_download.py")) in download
