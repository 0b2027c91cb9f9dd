"""Build once, push, pull one digest everywhere: through the real Pulumi CLI.

Real: the Pulumi CLI and engine (a file backend, the passphrase secrets provider), the
program tests/support/image_program, which plans a stack YAML as ``amdfleet plan`` does and
registers amdfleet's own image staging (:func:`amdfleet.components.stage_images`); the
providers on two SSH hosts in network namespaces; Debian's ``docker-registry`` with
htpasswd auth on host0's address; a ``dockerd`` per host in its namespace (host0 builds,
both are nodes), each driven by its host's own ``docker`` CLI (tests/support/registry.py).
The Dockerfile is the real rendered AITER + vLLM one.

Seams: no outside registry is reachable, so the stack's base image is made here with
``docker import``, and its ``/bin/sh`` is a static stand-in (tests/support/standin_sh)
that prints each RUN step instead of running pip and git (no network, no ROCm). Host
facts come from the program's config (the lab has no GPUs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from amdfleet.config import load_stack_file
from amdfleet.plan import plan
from tests.support.dockerd import DockerDaemon
from tests.support.hostlab import HostLab, LabFactory
from tests.support.pulumi_cli import PulumiWorkspace
from tests.support.registry import LabRegistry, registry_lab

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "tests/support/image_program"
STANDIN_SH = ROOT / "tests/support/standin_sh/main.go"
USER = "amdfleet-builder"
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
REPOSITORY = "amdfleet-test/vllm-aiter"
# Builds pin commits (a branch or an unpinned tag is refused by the plan): any two commits
# do here, since the stand-in shell prints the RUN steps instead of cloning.
AITER_COMMIT = "de07f3885ee5f2030ba72b6cc5940d674fd457cf"  # ROCm/aiter v0.1.20.post1
VLLM_COMMIT_1 = "1" * 40
VLLM_COMMIT_2 = "2" * 40
BASE = "amdfleet-test/shbase:1"
WORK_DIR = "/opt/amdfleet/image-build"
STACK = "lab"

pytestmark = [pytest.mark.pulumi, pytest.mark.docker, pytest.mark.netns]


class ImageTest:
    """The lab, its registry and daemons, and a Pulumi workspace running the program."""

    def __init__(
        self,
        lab: HostLab,
        registry: LabRegistry,
        daemons: tuple[DockerDaemon, DockerDaemon],
        workspace: PulumiWorkspace,
        stack_file: Path,
    ) -> None:
        self.lab = lab
        self.registry = registry
        self.daemons = daemons
        self.workspace = workspace
        self.stack_file = stack_file

    def write_stack(self, vllm_ref: str) -> str:
        """Write the amdfleet stack the program plans; returns the image it plans."""
        hosts = [
            {
                "name": h.name,
                "address": h.address,
                "user": h.user,
                "key_path": str(self.lab.client_key),
                "host_key": h.host_key,
            }
            for h in self.lab
        ]
        config = {
            "amdfleet:fleet": {"hosts": hosts},
            "amdfleet:topology": {"accelerator": "mi355x", "nodes": 2, "gpus_per_node": 8},
            "amdfleet:model": {"id": "llama-3.3-70b-instruct", "precision": "fp8"},
            "amdfleet:engine": {"name": "vllm", "runtime": "docker"},
            "amdfleet:parallelism": {"tp": 8, "pp": 2},
            "amdfleet:serving": {"port": 8000, "max_model_len": 32768},
            "amdfleet:verification": {"enabled": False},
            "amdfleet:image_build": {
                "enabled": True,
                "base_image": BASE,
                "aiter_ref": AITER_COMMIT,
                "vllm_ref": vllm_ref,
                "work_dir": WORK_DIR,
                "registry": {
                    "address": self.registry.address,
                    "repository": REPOSITORY,
                    "username": USER,
                    "password_secret": "registryPassword",
                },
            },
        }
        self.stack_file.write_text(yaml.safe_dump({"config": config}))
        image = plan(load_stack_file(str(self.stack_file)).spec).image.image
        assert image is not None
        return image

    def build_logs(self) -> list[str]:
        work = self.lab[0].path(WORK_DIR)
        return sorted(p.name for p in work.glob("*.log")) if work.is_dir() else []


@pytest.fixture(scope="module")
def imagetest(hostlab: LabFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageTest]:
    root = tmp_path_factory.mktemp("images")
    sh = _standin_sh(root)
    with hostlab(2) as lab, registry_lab(lab, username=USER, password=PASSWORD) as started:
        registry, daemons = started.registry, started.daemons
        daemons[0].import_image(BASE, {"bin/sh": sh}, executables={"bin/sh"})
        workspace = PulumiWorkspace(root / "project", project="imagetest", main=PROGRAM)
        workspace.env["PYTHONPATH"] = str(ROOT)
        test = ImageTest(
            lab, registry, (daemons[0], daemons[1]), workspace, root / "Pulumi.lab-images.yaml"
        )
        test.write_stack(VLLM_COMMIT_1)
        config = {
            "imagetest:stackFile": str(test.stack_file),
            "imagetest:archs": {"host0": "gfx950", "host1": "gfx950"},
        }
        workspace.init_stack(STACK, config, secrets={"imagetest:registryPassword": PASSWORD})
        try:
            yield test
        finally:
            workspace.run(["destroy", "--yes", "--stack", STACK], check=False, timeout=600)
            workspace.run(["stack", "rm", "--yes", STACK], check=False, timeout=60)


def test_up_builds_once_pushes_and_both_nodes_run_one_digest_until_a_ref_changes(
    imagetest: ImageTest,
) -> None:
    t = imagetest
    a, b = t.daemons
    image = t.write_stack(VLLM_COMMIT_1)
    tag = image.rsplit(":", 1)[1]

    first = t.workspace.up(STACK, timeout=600)

    assert first.changed() == {
        "imagetest-lab": "create",
        "images-image-build": "create",
        "images-image-host0": "create",
        "images-image-host1": "create",
    }
    outputs = t.workspace.outputs(STACK)
    digest = t.registry.manifest_digest(REPOSITORY, tag)
    ref = f"{t.registry.address}/{REPOSITORY}@{digest}"
    assert (outputs["image"], outputs["ref"]) == (image, ref)
    on_a, on_b = a.image(ref), b.image(ref)
    assert on_a is not None and on_b is not None
    assert on_a["Id"] == on_b["Id"]
    assert outputs["nodes"] == [ref, ref, on_a["Id"], on_a["Id"]]
    assert on_b["RepoDigests"] == [ref] and on_b["RepoTags"] == []  # pulled by digest
    # Each node's launch script runs that digest, never the tag.
    for node, script in outputs["launch"].items():
        runs = [line for line in script.splitlines() if ref in line]
        assert runs and image not in script, node
    # The real rendered Dockerfile ran step by step; its output is in the build log.
    assert t.build_logs() == [f"{tag}.log"]
    log = t.lab[0].path(f"{WORK_DIR}/{tag}.log").read_text()
    assert "stand-in sh: -c pip uninstall -y aiter vllm" in log
    assert 'PYTORCH_ROCM_ARCH="gfx950" python3 setup.py develop' in log
    assert log.rstrip().endswith("amdfleet: docker build exited 0")

    # Nothing changed: nothing runs, nothing is rebuilt.
    again = t.workspace.up(STACK, timeout=600)
    assert again.changed() == {}
    assert t.registry.tags(REPOSITORY) == [tag]

    # Another vLLM ref: one new build, and both nodes move to its digest.
    image_2 = t.write_stack(VLLM_COMMIT_2)
    tag_2 = image_2.rsplit(":", 1)[1]
    assert tag_2 != tag
    moved = t.workspace.up(STACK, timeout=600)
    assert moved.changed() == {  # each replaced: created anew, then the old one deleted
        "images-image-build": "delete-replaced",
        "images-image-host0": "delete-replaced",
        "images-image-host1": "delete-replaced",
    }
    assert moved.summary["resourceChanges"] == {"replace": 3, "same": 1}
    assert sorted(t.registry.tags(REPOSITORY)) == sorted([tag, tag_2])
    assert t.build_logs() == [f"{tag_2}.log"]  # one build ran; the old one's log went
    ref_2 = t.workspace.outputs(STACK)["ref"]
    assert (
        ref_2
        == f"{t.registry.address}/{REPOSITORY}@{t.registry.manifest_digest(REPOSITORY, tag_2)}"
    )
    new_a, new_b = a.image(ref_2), b.image(ref_2)
    assert new_a is not None and new_b is not None and new_a["Id"] == new_b["Id"]
    assert b.image(ref) is None  # node 1 holds only what it runs

    # The registry password is a secret: in no output, no state file, nothing printed.
    shown = t.workspace.outputs(STACK, show_secrets=True)
    assert PASSWORD not in str(shown)
    for text in (t.workspace.backend_text(), first.text, again.text, moved.text):
        assert PASSWORD not in text
    for host in t.lab:
        leaked = [
            str(p)
            for p in host.dir.rglob("*")
            if p.is_file() and not p.is_symlink() and PASSWORD.encode() in p.read_bytes()
        ]
        assert leaked == []

    t.workspace.destroy(STACK, timeout=600)
    assert a.image(ref_2) is None and b.image(ref_2) is None
    assert a.image(image_2) is None
    assert t.build_logs() == []
    assert sorted(t.registry.tags(REPOSITORY)) == sorted([tag, tag_2])  # the cache stays


def _standin_sh(root: Path) -> bytes:
    """Build the static stand-in shell with the machine's Go (no module download)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out = root / "sh"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    built = subprocess.run(
        [go, "build", "-trimpath", "-o", str(out), str(STANDIN_SH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return out.read_bytes()
