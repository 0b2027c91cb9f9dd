"""The SDK's dynamic-provider host driven over gRPC, and whole programs run by the driver.

The provider under test (tests/support/sample_provider.py) writes real files on a real
SSH host (hostlab) or locally; nothing is mocked except the engine's resource monitor.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from amdfleet.remote.ssh import SshConnection
from tests.support.hostlab import HostLab, LabFactory
from tests.support.program_driver import ProgramDriver
from tests.support.pulumi_host import (
    UNKNOWN,
    ProviderCallError,
    ProviderHost,
    is_secret,
    reveal,
    secret,
    with_provider,
)
from tests.support.sample_provider import SampleFile, SampleFileProvider

TOKEN = "tok-0123456789"
DriverFactory = Callable[..., ProgramDriver]


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    return hostlab(1)


@pytest.fixture
def conn(lab: HostLab) -> Iterator[SshConnection]:
    with lab.connect(0) as c:
        yield c


def _props(host: dict[str, Any], path: str, content: str = "hello\n") -> dict[str, Any]:
    return with_provider(
        SampleFileProvider(),
        {
            "host": host,
            "path": path,
            "content": content,
            "token": secret(TOKEN),
            "mode": 0o600,
            "sha256": None,
        },
    )


# -- the provider host, call by call ---------------------------------------------------


@pytest.mark.netns
def test_full_cycle_through_the_real_host(
    provider_host: ProviderHost, lab: HostLab, conn: SshConnection
) -> None:
    host = lab.target(0).as_mapping()
    path = "/opt/sample/cycle.txt"
    urn = provider_host.urn("cycle")

    checked = provider_host.check(_props(host, path), urn=urn)
    assert checked.failures == [] and is_secret(checked.inputs["token"])

    created = provider_host.create(checked.inputs, urn=urn)
    assert created.id == f"host0:{path}"
    assert conn.get(path) == b"hello\n"
    assert conn.get(path + ".token") == TOKEN.encode()
    assert conn.run(f"stat -c %a {path} {path}.token", timeout=10).stdout.split() == ["600", "600"]
    outs = created.outputs
    assert is_secret(outs["token"]) and reveal(outs["token"]) == TOKEN  # re-marked secret
    assert outs["mode"] == 384.0  # numbers come back as floats, as with the engine
    assert len(outs["sha256"]) == 64 and "__provider" in outs

    read = provider_host.read(created.id, outs, inputs=checked.inputs, urn=urn)
    assert (read.id, read.outputs["content"]) == (created.id, "hello\n")

    same = provider_host.diff(created.id, outs, checked.inputs, old_inputs=checked.inputs, urn=urn)
    assert (same.changes, same.replaces) == (False, [])

    news = provider_host.check(_props(host, path, "bye\n"), checked.inputs, urn=urn).inputs
    change = provider_host.diff(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert (change.changes, change.replaces) == (True, [])
    updated = provider_host.update(created.id, outs, news, old_inputs=checked.inputs, urn=urn)
    assert conn.get(path) == b"bye\n" and updated["sha256"] != outs["sha256"]

    moved = provider_host.check(_props(host, path + ".2"), checked.inputs, urn=urn).inputs
    replace = provider_host.diff(created.id, updated, moved, old_inputs=news, urn=urn)
    assert (replace.replaces, replace.delete_before_replace) == (["path"], True)

    provider_host.delete(created.id, updated, old_inputs=news, urn=urn)
    assert conn.get(path) is None and conn.get(path + ".token") is None
    provider_host.delete(created.id, updated, old_inputs=news, urn=urn)  # idempotent
    assert provider_host.read(created.id, updated, urn=urn).id == ""  # gone on refresh


@pytest.mark.netns
def test_create_failure_surfaces_the_provider_message(
    provider_host: ProviderHost, lab: HostLab
) -> None:
    props = _props(lab.target(0).as_mapping(), "/proc/amdfleet/cannot.txt")
    checked = provider_host.check(props)
    with pytest.raises(ProviderCallError) as info:
        provider_host.create(checked.inputs)
    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteError: [host0] cannot write /proc/amdfleet/")
    assert TOKEN not in info.value.details


def test_check_failures_and_unknowns(provider_host: ProviderHost, tmp_path: Path) -> None:
    local = {"connection": "local"}
    bad = provider_host.check(_props(local, "relative/path.txt"))
    assert bad.failures == [("path", "must be absolute, got 'relative/path.txt'")]

    # Preview: inputs not known yet travel as unknowns through Check and Diff.
    preview = provider_host.check({**_props(local, str(tmp_path / "f")), "path": UNKNOWN})
    assert preview.inputs["path"] == UNKNOWN and preview.failures == []
    olds = provider_host.check(_props(local, str(tmp_path / "f"))).inputs
    diff = provider_host.diff("id", olds, preview.inputs, old_inputs=olds)
    assert (diff.changes, diff.replaces) == (True, ["path"])


def test_local_create_and_delete(provider_host: ProviderHost, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "local.txt"
    checked = provider_host.check(_props({"connection": "local"}, str(path)))
    created = provider_host.create(checked.inputs)
    assert path.read_text() == "hello\n" and (path.stat().st_mode & 0o777) == 0o600
    provider_host.delete(created.id, created.outputs)
    assert not path.exists()


# -- whole programs --------------------------------------------------------------------


def _program(directory: str) -> Callable[[], None]:
    def program() -> None:
        cfg = pulumi.Config()
        group = pulumi.ComponentResource("amdfleet:test:Group", "files")
        child = pulumi.ResourceOptions(parent=group)
        first = SampleFile(
            "first",
            host=cfg.require_object("host"),
            path=f"{directory}/first.txt",
            content=cfg.require("content"),
            token=cfg.require_secret("token"),
            opts=child,
        )
        second = SampleFile(
            "second",
            host=cfg.require_object("host"),
            path=first.path.apply(lambda p: p + ".sha"),
            content=first.sha256,
            token="not-secret",
            opts=child,
        )
        pulumi.export("path", first.path)
        pulumi.export("token", first.token)
        pulumi.export("second_content", second.sha256)

    return program


@pytest.mark.netns
def test_program_runs_twice_then_destroys(
    program_driver: DriverFactory, lab: HostLab, conn: SshConnection
) -> None:
    directory = "/opt/program"
    config = {"host": lab.target(0).as_mapping(), "content": "v1\n", "token": secret(TOKEN)}
    driver = program_driver(config=config)
    program = _program(directory)

    first = driver.up(program)
    assert first.names("create") == ["first", "second"]
    assert first.outputs["path"] == f"{directory}/first.txt"
    assert first.outputs["token"] == TOKEN and first.secret_outputs == {"token"}
    assert conn.get(f"{directory}/first.txt") == b"v1\n"
    inode = conn.run(f"stat -c %i {directory}/first.txt", timeout=10).stdout

    second = driver.up(program)
    assert second.names("same") == ["first", "second"] and len(second.operations) == 2
    assert conn.run(f"stat -c %i {directory}/first.txt", timeout=10).stdout == inode
    assert second.outputs == first.outputs

    driver.config["amdfleet:content"] = "v2\n"
    third = driver.up(program)
    assert third.names("update") == ["first", "second"]  # second's content is first's hash
    assert conn.get(f"{directory}/first.txt") == b"v2\n"

    gone = driver.destroy()
    assert gone.names("delete") == ["second", "first"]  # dependents first
    assert conn.run(f"ls -A {directory}", timeout=10).stdout == ""
    assert driver.state == {}


def test_preview_has_no_side_effects(program_driver: DriverFactory, tmp_path: Path) -> None:
    config = {"host": {"connection": "local"}, "content": "x", "token": secret(TOKEN)}
    driver = program_driver(config=config)
    result = driver.preview(_program(str(tmp_path)))
    assert result.names("create") == ["first", "second"]
    assert result.outputs["second_content"] == UNKNOWN
    assert list(tmp_path.iterdir()) == [] and driver.state == {}


def test_failed_create_keeps_what_was_made(program_driver: DriverFactory, tmp_path: Path) -> None:
    local = {"connection": "local"}

    def program() -> None:
        ok = SampleFile("ok", host=local, path=f"{tmp_path}/ok.txt", content="x", token=TOKEN)
        after_ok = pulumi.ResourceOptions(depends_on=[ok])
        bad = "/proc/amdfleet/broken.txt"
        SampleFile("broken", host=local, path=bad, content="x", token=TOKEN, opts=after_ok)

    driver = program_driver()
    with pytest.raises(ProviderCallError, match=r"cannot write /proc/amdfleet/broken\.txt"):
        driver.up(program)
    assert [r.name for r in driver.state.values()] == ["ok"]
    assert (tmp_path / "ok.txt").exists()
    driver.destroy()
    assert not (tmp_path / "ok.txt").exists()


def test_main_py_program_with_dropped_resource(
    program_driver: DriverFactory, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: sampleproj\nruntime: python\n")
    main = project / "__main__.py"
    main.write_text(
        textwrap.dedent(
            """
            import pulumi
            from tests.support.sample_provider import SampleFile

            cfg = pulumi.Config()
            for name in cfg.require_object("files"):
                SampleFile(name, host={"connection": "local"}, path=f"{cfg.require('dir')}/{name}",
                           content=name, token=cfg.require_secret("token"))
            pulumi.export("project", pulumi.get_project())
            """
        )
    )
    out = tmp_path / "out"
    config = {"files": ["a", "b"], "dir": str(out), "token": secret(TOKEN)}
    driver = program_driver(project="sampleproj", config=config)
    assert driver.up(main).outputs == {"project": "sampleproj"}
    assert sorted(p.name for p in out.iterdir()) == ["a", "a.token", "b", "b.token"]
    driver.config["sampleproj:files"] = ["a"]
    result = driver.up(main)
    assert (result.names("same"), result.names("delete")) == (["a"], ["b"])
    assert sorted(p.name for p in out.iterdir()) == ["a", "a.token"]
    driver.destroy()
    assert list(out.iterdir()) == []
