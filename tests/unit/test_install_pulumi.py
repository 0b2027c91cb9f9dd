"""scripts/install-pulumi, run for real: it reuses a complete install, takes a CLI of the
right version from PATH, refuses a wrong one, and says plainly what to do when it can
install nothing. (The Go build itself runs in scripts/setup, before the tests; the
official installer needs get.pulumi.com, which these machines must not contact.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.prerequisites import missing

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/install-pulumi"
INSTALLED = ROOT / ".amdfleet/pulumi/v3.274.1"
BINARIES = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-pulumi-python",
)
BASE_PATH = "/usr/bin:/bin"  # no pulumi, no go


@pytest.fixture(autouse=True)
def no_downloads(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `curl` that refuses, first on every PATH here: should a case fall through to the
    official installer, it fails instead of contacting get.pulumi.com."""
    blocked = tmp_path_factory.mktemp("blocked")
    (blocked / "curl").write_text("#!/bin/sh\necho 'curl blocked by the test' >&2\nexit 7\n")
    (blocked / "curl").chmod(0o755)
    monkeypatch.setenv("AMDFLEET_TEST_BLOCKED", str(blocked))


def _run(mode: str, *, path: str = BASE_PATH, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{os.environ['AMDFLEET_TEST_BLOCKED']}:{path}"
    return subprocess.run(
        [str(SCRIPT)],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/root"), **env,
             "AMDFLEET_PULUMI_INSTALL": mode},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed() -> Path:
    if not (INSTALLED / "bin/pulumi").exists():
        reason = f"no Pulumi install in {INSTALLED}; run scripts/setup"
        missing("pulumi", reason)
    return INSTALLED / "bin"


def _identity(directory: Path) -> list[tuple[str, int, int]]:
    return [
        (n, (directory / n).stat().st_ino, (directory / n).stat().st_mtime_ns) for n in BINARIES
    ]


@pytest.mark.pulumi
def test_a_complete_install_is_reused_and_nothing_is_rebuilt(installed: Path) -> None:
    before = _identity(installed)
    result = _run("auto")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(installed)
    assert "building" not in result.stderr and "installing" not in result.stderr
    assert _identity(installed) == before


@pytest.mark.pulumi
def test_a_cli_of_the_pinned_version_on_path_is_used(installed: Path, tmp_path: Path) -> None:
    result = _run("path", path=f"{installed}:{BASE_PATH}", AMDFLEET_PULUMI_DIR=str(tmp_path / "x"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(installed)
    assert f"using {installed}/pulumi (v3.274.1) from PATH" in result.stderr


def test_a_cli_of_another_version_on_path_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in BINARIES:
        (fake / name).write_text("#!/bin/sh\necho v3.100.0\n")
        (fake / name).chmod(0o755)
    result = _run("path", path=f"{fake}:{BASE_PATH}", AMDFLEET_PULUMI_DIR=str(tmp_path / "x"))
    assert result.returncode == 1
    assert "no Pulumi CLI v3.274.1" in result.stderr
    assert "AMDFLEET_PULUMI_INSTALL=go scripts/install-pulumi" in result.stderr
    assert "AMDFLEET_PULUMI_INSTALL=official" in result.stderr


def test_none_installs_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    target = tmp_path / "pulumi"
    result = _run("none", AMDFLEET_PULUMI_DIR=str(target))
    assert result.returncode == 1
    assert "none could be installed (AMDFLEET_PULUMI_INSTALL=none)" in result.stderr
    assert "amdfleet plan/render/bench/eval/verify" in result.stderr
    assert not target.exists()


def test_go_without_go_fails_plainly(tmp_path: Path) -> None:
    result = _run("go", AMDFLEET_PULUMI_DIR=str(tmp_path / "pulumi"))
    assert result.returncode == 1
    assert "there is no `go` on PATH" in result.stderr


def test_an_unknown_mode_is_rejected() -> None:
    result = _run("brew")
    assert result.returncode == 2
    assert "AMDFLEET_PULUMI_INSTALL=brew is not one of auto, go, official, path, none" in (
        result.stderr
    )


def test_auto_never_downloads_without_being_asked(tmp_path: Path) -> None:
    """Without an install, a CLI on PATH or go, `auto` stops and says to choose
    `official`; it does not run the official installer (curl would say so)."""
    result = _run("auto", AMDFLEET_PULUMI_DIR=str(tmp_path / "pulumi"))
    assert result.returncode == 1
    assert "curl blocked" not in result.stderr
    assert "get.pulumi.com is used only when you choose it" in result.stderr
    assert "AMDFLEET_PULUMI_INSTALL=official scripts/install-pulumi" in result.stderr
