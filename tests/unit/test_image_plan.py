"""Engine images built once per gfx target, pushed, pulled by digest (issue 13): the pure
parts.

- :mod:`amdfleet.remote.registry`'s parsers fed with what docker 28.2.2 printed against
  the lab's registry (tests/support/registry.py; captured verbatim), and its shell text run
  for real with ``sh``/``bash`` on this machine. The one stand-in is ``docker`` itself: a
  small script first on ``PATH`` that records each call (argv, stdin, ``DOCKER_CONFIG``
  and what that directory held) and answers the way docker does. ``mktemp``, ``cp``,
  ``chmod``, ``trap``, coreutils' ``timeout`` and ``tee`` are the real ones.
- :mod:`amdfleet.plan.image` on the committed stacks and edits of them: the content tag
  two stacks share, what changes it, the build host, pinning, and the plan's warnings.
- :func:`amdfleet.providers.image_build.gfx_refusal` and ``fleet_archs_of`` on host facts
  parsed from a real MI300X ``rocminfo`` (../shared/fixtures/amd-hosts).
- The engine line ``amdfleet plan`` prints.

The registry builds on real hosts are tests/providers/test_image_registry.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from amdfleet.catalog.engines import SOURCE_BUILD_HOURS_PER_TARGET
from amdfleet.cli.stack import format_plan
from amdfleet.config import load_stack_file, parse_stack
from amdfleet.errors import ConfigError
from amdfleet.plan import DeploymentPlan, ImagePlan, plan
from amdfleet.plan.image import build_inputs_hash, content_tag
from amdfleet.providers.image_build import fleet_archs_of, gfx_refusal
from amdfleet.providers.progress import format_duration
from amdfleet.providers.ssh_host import host_facts
from amdfleet.remote.facts import gpus, records
from amdfleet.remote.images import DOCKERFILE_LABEL
from amdfleet.remote.registry import (
    BUILD_EXIT_MARK,
    DEADLINE_EXIT,
    build_command,
    build_exit,
    digests_command,
    is_pinned,
    logged_in,
    push_command,
    pushed_digest,
    repo_digest,
    repository,
)

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
FIXTURES = Path(__file__).parents[3] / "shared" / "fixtures" / "amd-hosts"

# -- what docker printed ---------------------------------------------------------------
# docker 28.2.2 (Debian docker.io) against Docker Distribution 2.8 on a lab host: an image
# tagged into two repositories of the registry and pushed to each, then
# `docker image inspect --format '{{json .RepoDigests}}'` of the first tag.
REGISTRY = "10.77.123.10:5000"
DIGEST = "sha256:cc8e8df1cd8dbcff2ae4b0b12f3e23448e3dae9db5054874e2cab8ba3ffe9b45"
TAG = "c-0123456789abcdef"
IMAGE = f"{REGISTRY}/amdfleet/vllm-aiter:{TAG}"
MIRROR = f"{REGISTRY}/other/mirror:{TAG}"
PUSH_OUTPUT = (
    f"The push refers to repository [{REGISTRY}/amdfleet/vllm-aiter]\n"
    "a500dd36c973: Preparing\n"
    "a500dd36c973: Pushed\n"
    f"{TAG}: digest: {DIGEST} size: 523\n"
)
PUSH_MOUNTED_OUTPUT = (
    f"The push refers to repository [{REGISTRY}/other/mirror]\n"
    "a500dd36c973: Preparing\n"
    "a500dd36c973: Mounted from amdfleet/vllm-aiter\n"
    f"{TAG}: digest: {DIGEST} size: 523\n"
)
INSPECT_TWO_REPOSITORIES = (
    f'["{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}","{REGISTRY}/other/mirror@{DIGEST}"]\n'
)
INSPECT_ABSENT = "\n"  # exit 1; stderr: "Error response from daemon: no such image: ..."
INSPECT_NEVER_PUSHED = "[]\n"  # an image made locally (docker import, docker build)
# How docker names an image pulled from Docker Hub: the familiar name, without docker.io/
# (and without library/ for an official image).
HUB_DIGEST = "sha256:" + "4f" * 32
INSPECT_HUB = f'["rocm/vllm-dev@{HUB_DIGEST}"]\n'
INSPECT_HUB_OFFICIAL = f'["ubuntu@{HUB_DIGEST}"]\n'


# -- registry.py: parsers ---------------------------------------------------------------


def test_the_digest_docker_push_printed_is_found() -> None:
    assert pushed_digest(PUSH_OUTPUT) == DIGEST
    assert pushed_digest(PUSH_MOUNTED_OUTPUT) == DIGEST  # layers mounted, not uploaded
    assert push_command(IMAGE) == f"docker push {IMAGE}"


def test_a_push_cut_short_before_its_digest_line_has_no_digest() -> None:
    cut = "".join(PUSH_OUTPUT.splitlines(keepends=True)[:2])
    assert pushed_digest(cut) is None
    assert pushed_digest("") is None


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (IMAGE, f"{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}"),
        (MIRROR, f"{REGISTRY}/other/mirror@{DIGEST}"),  # the same image: its own repository
        (f"{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}", f"{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}"),
        (f"{REGISTRY}/third/repo:{TAG}", None),  # no digest of that repository
        (f"127.0.0.1:5000/amdfleet/vllm-aiter:{TAG}", None),  # same path, other registry
        (f"amdfleet/vllm-aiter:{TAG}", None),  # Docker Hub's, not the lab registry's
    ],
)
def test_the_repo_digest_is_the_images_own_repository(image: str, expected: str | None) -> None:
    assert repo_digest(INSPECT_TWO_REPOSITORIES, image) == expected


@pytest.mark.parametrize(
    ("output", "image", "expected"),
    [
        (INSPECT_HUB, "docker.io/rocm/vllm-dev:nightly", f"docker.io/rocm/vllm-dev@{HUB_DIGEST}"),
        (INSPECT_HUB, "rocm/vllm-dev:nightly", f"rocm/vllm-dev@{HUB_DIGEST}"),
        (
            INSPECT_HUB,
            "index.docker.io/rocm/vllm-dev",
            f"index.docker.io/rocm/vllm-dev@{HUB_DIGEST}",
        ),
        (INSPECT_HUB, f"{REGISTRY}/rocm/vllm-dev:nightly", None),
        (INSPECT_HUB_OFFICIAL, "ubuntu:24.04", f"ubuntu@{HUB_DIGEST}"),
        (
            INSPECT_HUB_OFFICIAL,
            "docker.io/library/ubuntu:24.04",
            f"docker.io/library/ubuntu@{HUB_DIGEST}",
        ),
    ],
)
def test_docker_hubs_familiar_names_match_their_full_names(
    output: str, image: str, expected: str | None
) -> None:
    assert repo_digest(output, image) == expected


@pytest.mark.parametrize("output", [INSPECT_ABSENT, INSPECT_NEVER_PUSHED, "null\n", ""])
def test_an_absent_or_never_pushed_image_has_no_repo_digest(output: str) -> None:
    assert repo_digest(output, IMAGE) is None


def test_the_digests_command_prints_one_json_list() -> None:
    command = digests_command(IMAGE)
    assert command == f"docker image inspect --format '{{{{json .RepoDigests}}}}' {IMAGE}"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (IMAGE, f"{REGISTRY}/amdfleet/vllm-aiter"),
        (f"{REGISTRY}/amdfleet/vllm-aiter", f"{REGISTRY}/amdfleet/vllm-aiter"),  # port, no tag
        (f"{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}", f"{REGISTRY}/amdfleet/vllm-aiter"),
        (f"rocm/vllm-dev:nightly@{DIGEST}", "rocm/vllm-dev"),  # tag and digest
        ("rocm/vllm-dev:nightly", "rocm/vllm-dev"),
        ("ubuntu", "ubuntu"),
        ("localhost:5000/x", "localhost:5000/x"),
    ],
)
def test_repository_drops_tag_and_digest_but_not_the_port(image: str, expected: str) -> None:
    assert repository(image) == expected


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        (f"{REGISTRY}/amdfleet/vllm-aiter@{DIGEST}", True),
        (f"rocm/vllm-dev:nightly@{DIGEST}", True),
        (IMAGE, False),
        ("vllm/vllm-openai-rocm:latest", False),
        ("ubuntu", False),
        ("rocm/vllm-dev@sha256:cc8e8df1", False),  # a short digest names nothing
        (f"rocm/vllm-dev@{DIGEST.upper()}", False),
        (f"rocm/vllm-dev@{DIGEST}x", False),
    ],
)
def test_is_pinned_only_on_a_full_sha256_digest(image: str, pinned: bool) -> None:
    assert is_pinned(image) is pinned


@pytest.mark.parametrize(
    ("output", "status"),
    [
        (f"Step 1/2 : FROM x\n ---> 1a2b\n{BUILD_EXIT_MARK}0\n", 0),
        (f"Successfully built 1a2b\n{BUILD_EXIT_MARK}1", 1),
        (f"Step 5/9 : RUN make\n{BUILD_EXIT_MARK}{DEADLINE_EXIT}\n", DEADLINE_EXIT),
        (f"{BUILD_EXIT_MARK}0\n{BUILD_EXIT_MARK}2\n", 2),  # the last mark
        ("Step 1/2 : FROM x\n ---> 1a2b\n", None),  # the command was cut short
        (f"Step 1/2 : FROM x\n{BUILD_EXIT_MARK}\n", None),
        ("", None),
    ],
)
def test_build_exit_reads_the_last_mark(output: str, status: int | None) -> None:
    assert build_exit(output) == status


# -- registry.py: logged_in, run for real ------------------------------------------------

FAKE_DOCKER = r"""#!/bin/sh
# A stand-in for the docker CLI: records each call in $FAKE_DOCKER_CALLS, answers like docker.
calls="$FAKE_DOCKER_CALLS"
n=$(( $(cat "$calls/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$calls/count"
printf '%s\n' "$@" > "$calls/$n.argv"
printf '%s' "${DOCKER_CONFIG-}" > "$calls/$n.config"
case "$1" in
context)
    echo "${FAKE_DOCKER_CONTEXT:-default}"
    exit 0 ;;
login)
    cat > "$calls/$n.stdin"
    if [ "${FAKE_DOCKER_LOGIN_EXIT:-0}" != 0 ]; then
        echo "Error response from daemon: login attempt failed with status: 401 Unauthorized" >&2
        exit "$FAKE_DOCKER_LOGIN_EXIT"
    fi
    # docker keeps a login in its config directory
    config="${DOCKER_CONFIG:-$HOME/.docker}"
    mkdir -p "$config" && echo "$5" > "$config/login-of-fake-docker"
    exit 0 ;;
esac
if [ -n "${DOCKER_CONFIG-}" ] && [ -d "$DOCKER_CONFIG" ]; then
    stat -c %a "$DOCKER_CONFIG" > "$calls/$n.mode"
    cp -R "$DOCKER_CONFIG" "$calls/$n.seen"
fi
if [ -n "${FAKE_DOCKER_PRINTS-}" ]; then cat "$FAKE_DOCKER_PRINTS"; fi
if [ -n "${FAKE_DOCKER_STDERR-}" ]; then echo "$FAKE_DOCKER_STDERR" >&2; fi
if [ -n "${FAKE_DOCKER_HANG-}" ]; then exec sleep "$FAKE_DOCKER_HANG"; fi
exit "${FAKE_DOCKER_EXIT:-0}"
"""
PASSWORD = "pw-" + hashlib.sha256(b"test_image_plan").hexdigest()[:24]
USER = "amdfleet"
# A context as `docker context create lab --docker host=...` stores it.
CONTEXT_NAME = "lab"
CONTEXT_META = {
    "Name": CONTEXT_NAME,
    "Metadata": {},
    "Endpoints": {"docker": {"Host": "unix:///run/lab/docker.sock", "SkipTLSVerify": False}},
}


@dataclass(frozen=True)
class Call:
    """One call of the fake docker."""

    argv: list[str]
    docker_config: str
    stdin: str | None
    mode: str | None
    seen: Path | None
    """A copy of the ``DOCKER_CONFIG`` directory as the call found it."""


@dataclass(frozen=True)
class Machine:
    """A shell on this machine with the fake docker first on PATH, a HOME of its own and
    a TMPDIR of its own (where ``mktemp -d`` puts the throwaway config)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def calls_dir(self) -> Path:
        return self.root / "calls"

    def run(
        self, shell: str, script: str, stdin: str = "", **fake: str
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "FAKE_DOCKER_CALLS": str(self.calls_dir),
            **{f"FAKE_DOCKER_{k.upper()}": v for k, v in fake.items()},
        }
        return subprocess.run(
            [shell, "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[Call]:
        count_file = self.calls_dir / "count"
        count = int(count_file.read_text()) if count_file.exists() else 0
        found = []
        for n in range(1, count + 1):
            stdin, mode = self.calls_dir / f"{n}.stdin", self.calls_dir / f"{n}.mode"
            seen = self.calls_dir / f"{n}.seen"
            found.append(
                Call(
                    argv=(self.calls_dir / f"{n}.argv").read_text().splitlines(),
                    docker_config=(self.calls_dir / f"{n}.config").read_text(),
                    stdin=stdin.read_text() if stdin.exists() else None,
                    mode=mode.read_text().strip() if mode.exists() else None,
                    seen=seen if seen.exists() else None,
                )
            )
        return found


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path)
    (tmp_path / "bin").mkdir()
    docker = tmp_path / "bin" / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    for d in (m.home, m.tmp, m.calls_dir):
        d.mkdir()
    _write_context(m.home / ".docker")
    return m


def _write_context(config_dir: Path) -> Path:
    """A context stored the way docker stores it: meta/<sha256 of its name>/meta.json."""
    key = hashlib.sha256(CONTEXT_NAME.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / key / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(CONTEXT_META))
    return meta


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


SHELLS = ["sh", "bash"]  # sh -c here, and a login shell over SSH is usually bash


def test_without_a_username_the_command_is_unchanged() -> None:
    command = f"docker pull {IMAGE}"
    assert logged_in(command, REGISTRY, None) == command


@pytest.mark.parametrize("shell", SHELLS)
def test_the_password_reaches_docker_login_on_stdin_only(machine: Machine, shell: str) -> None:
    script = logged_in(push_command(IMAGE), REGISTRY, USER)
    home_before = _tree(machine.home)
    push_output = machine.root / "push.txt"
    push_output.write_text(PUSH_OUTPUT)

    done = machine.run(shell, script, stdin=PASSWORD, prints=str(push_output))

    assert done.returncode == 0, done.stderr
    assert pushed_digest(done.stdout) == DIGEST
    show, login, push = machine.calls()
    assert show.argv == ["context", "show"]
    assert login.argv == ["login", "--username", USER, "--password-stdin", REGISTRY]
    assert login.stdin == PASSWORD
    assert push.argv == ["push", IMAGE]
    assert push.stdin is None
    for call in machine.calls():
        assert PASSWORD not in " ".join(call.argv)
    assert PASSWORD not in script
    # The login went to the throwaway config, which the push used too; the user's docker
    # config is as it was.
    assert login.docker_config == push.docker_config
    assert Path(login.docker_config).parent == machine.tmp
    assert _tree(machine.home) == home_before
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_the_command_sees_a_private_config_with_the_contexts(machine: Machine, shell: str) -> None:
    script = logged_in(push_command(IMAGE), REGISTRY, USER)

    done = machine.run(shell, script, stdin=PASSWORD)

    assert done.returncode == 0, done.stderr
    push = machine.calls()[-1]
    assert push.mode == "700"
    assert push.seen is not None
    seen = _tree(push.seen)
    assert json.loads(seen.pop("config.json")) == {"currentContext": "default"}
    assert seen.pop("login-of-fake-docker") == f"{REGISTRY}\n"
    assert seen == {
        f"contexts/meta/{hashlib.sha256(CONTEXT_NAME.encode()).hexdigest()}/meta.json": (
            json.dumps(CONTEXT_META)
        )
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_the_current_context_and_a_docker_config_elsewhere_are_kept(
    machine: Machine, shell: str
) -> None:
    """DOCKER_CONFIG set by the host's environment is where the contexts come from, and
    the context ``docker context show`` names stays current."""
    elsewhere = machine.root / "etc-docker"
    meta = _write_context(elsewhere)
    script = f"DOCKER_CONFIG={elsewhere}; export DOCKER_CONFIG\n" + logged_in(
        push_command(IMAGE), REGISTRY, USER
    )

    done = machine.run(shell, script, stdin=PASSWORD, context=CONTEXT_NAME)

    assert done.returncode == 0, done.stderr
    push = machine.calls()[-1]
    assert push.docker_config != str(elsewhere)
    assert push.seen is not None
    assert json.loads((push.seen / "config.json").read_text()) == {"currentContext": CONTEXT_NAME}
    assert (push.seen / meta.relative_to(elsewhere)).read_text() == meta.read_text()
    assert not (elsewhere / "login-of-fake-docker").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_host_without_a_docker_config_logs_in_too(machine: Machine, shell: str) -> None:
    """A fresh build host: no ~/.docker at all."""
    shutil.rmtree(machine.home / ".docker")
    script = logged_in(push_command(IMAGE), REGISTRY, USER)

    done = machine.run(shell, script, stdin=PASSWORD)

    assert done.returncode == 0, done.stderr
    push = machine.calls()[-1]
    assert push.seen is not None
    assert sorted(_tree(push.seen)) == ["config.json", "login-of-fake-docker"]
    assert list(machine.home.iterdir()) == []
    assert list(machine.tmp.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("exit_status", [0, 1, 7])
def test_the_throwaway_config_is_removed_whatever_the_command_did(
    machine: Machine, shell: str, exit_status: int
) -> None:
    script = logged_in(push_command(IMAGE), REGISTRY, USER)

    done = machine.run(shell, script, stdin=PASSWORD, exit=str(exit_status))

    assert done.returncode == exit_status, done.stderr
    push = machine.calls()[-1]
    assert push.argv[0] == "push" and push.seen is not None  # it existed while the push ran
    assert not Path(push.docker_config).exists()
    assert list(machine.tmp.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_login_stops_the_command(machine: Machine, shell: str) -> None:
    script = logged_in(push_command(IMAGE), REGISTRY, USER)

    done = machine.run(shell, script, stdin=PASSWORD + "-wrong", login_exit="1")

    assert done.returncode != 0
    assert "401 Unauthorized" in done.stderr
    assert [c.argv[0] for c in machine.calls()] == ["context", "login"]  # no push
    assert list(machine.tmp.iterdir()) == []


# -- registry.py: build_command, run for real --------------------------------------------

BUILD_LINES = (
    "Sending build context to Docker daemon  3.072kB\n"
    "Step 1/3 : FROM rocm/vllm-dev:nightly\n"
    " ---> 6a1c3e0d8f7b\n"
    "Step 2/3 : RUN git clone https://github.com/ROCm/aiter.git\n"
)
BUILD_ERROR = "The command '/bin/sh -c git clone' returned a non-zero code: 128"
DOCKERFILE_SHA = hashlib.sha256(b"FROM rocm/vllm-dev:nightly\n").hexdigest()


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    context = tmp_path / "work dir" / TAG  # a space: every path is quoted
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM rocm/vllm-dev:nightly\n")
    return context


@pytest.mark.parametrize("status", [0, 1, 3])
def test_a_build_logs_every_line_and_its_exit_status(
    machine: Machine, build_dir: Path, status: int
) -> None:
    log = machine.root / "logs" / "not yet" / f"{TAG}.log"
    prints = machine.root / "build.txt"
    prints.write_text(BUILD_LINES)
    script = build_command(IMAGE, str(build_dir), DOCKERFILE_SHA, str(log), 3600)

    done = machine.run("sh", script, prints=str(prints), stderr=BUILD_ERROR, exit=str(status))

    assert done.stderr == ""  # the build's stderr goes to the log too
    assert done.stdout == f"{BUILD_LINES}{BUILD_ERROR}\n{BUILD_EXIT_MARK}{status}\n"
    assert log.read_text() == done.stdout
    assert build_exit(done.stdout) == status
    (build,) = machine.calls()
    assert build.argv == [
        "build",
        "--force-rm",
        "-t",
        IMAGE,
        "--label",
        f"{DOCKERFILE_LABEL}={DOCKERFILE_SHA}",
        "-f",
        f"{build_dir}/Dockerfile",
        str(build_dir),
    ]


def test_a_build_past_its_deadline_is_stopped_and_says_so(
    machine: Machine, build_dir: Path
) -> None:
    log = machine.root / "logs" / f"{TAG}.log"
    prints = machine.root / "build.txt"
    prints.write_text(BUILD_LINES)
    script = build_command(IMAGE, str(build_dir), DOCKERFILE_SHA, str(log), 1)
    started = time.monotonic()

    done = machine.run("sh", script, prints=str(prints), hang="50")

    assert time.monotonic() - started < 30  # stopped at 1 s, not at the 50 s it would take
    assert build_exit(done.stdout) == DEADLINE_EXIT
    assert done.stdout == f"{BUILD_LINES}{BUILD_EXIT_MARK}{DEADLINE_EXIT}\n"
    assert log.read_text() == done.stdout


# -- plan/image.py -----------------------------------------------------------------------
SHARED = ("mi355x-llama70b", "mi355x-llama70b-mxfp4")
REGISTRY_STACK = "mi355x-llama70b"
CLOUD_STACK = "vultr-mi355x-llama70b"
TAG_RE = re.compile(r"c-[0-9a-f]{16}")
HOST_KEY = "SHA256:EgSG0uK6So3h3FrUAAsPJAvKHZsf20RkJP8wvJfksKI"
BUILDER = {
    "name": "builder",
    "address": "192.0.2.50",
    "user": "build",
    "port": 2222,
    "key_path": "~/.ssh/id_ed25519",
    "host_key": HOST_KEY,
}


def _sections(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    return {k.removeprefix("amdfleet:"): v for k, v in document["config"].items()}


def _planned(stack: str, sections: dict[str, Any]) -> DeploymentPlan:
    return plan(parse_stack(stack, sections))


def _build_image(stack: str = REGISTRY_STACK, **image_build: Any) -> ImagePlan:
    sections = _sections(stack)
    sections["image_build"] = {**sections["image_build"], **image_build}
    return _planned(stack, sections).image


def _two_nodes(sections: dict[str, Any]) -> dict[str, Any]:
    first = sections["fleet"]["hosts"][0]
    sections["fleet"]["hosts"].append({**first, "name": "mi355x-02", "address": "192.0.2.11"})
    sections["topology"]["nodes"] = 2
    sections["parallelism"]["pp"] = 2
    return sections


def _tag(image: ImagePlan) -> str:
    assert image.image is not None
    return image.image.rsplit(":", 1)[1]


def test_the_fp8_and_mxfp4_stacks_share_one_build() -> None:
    fp8, mxfp4 = (plan(load_stack_file(s).spec).image for s in SHARED)

    assert fp8.build and mxfp4.build
    assert fp8.image == mxfp4.image
    assert fp8.content_hash == mxfp4.content_hash
    assert fp8.build_host == mxfp4.build_host == "mi355x-01"
    assert fp8.registry == "registry.example.internal:5000"
    assert fp8.image == f"registry.example.internal:5000/amdfleet/vllm-aiter:{_tag(fp8)}"
    assert fp8.gfx_targets == ("gfx950",)


def test_the_tag_is_c_and_16_hex_of_the_content_hash() -> None:
    image = plan(load_stack_file(REGISTRY_STACK).spec).image

    assert image.content_hash is not None
    assert re.fullmatch(r"[0-9a-f]{64}", image.content_hash)
    assert TAG_RE.fullmatch(_tag(image))
    assert _tag(image) == content_tag(image.content_hash) == "c-" + image.content_hash[:16]


AITER_COMMIT = "de07f3885ee5f2030ba72b6cc5940d674fd457cf"  # ROCm/aiter v0.1.20.post1
VLLM_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a commit the stack names


@pytest.mark.parametrize(
    "change",
    [
        {"aiter_ref": AITER_COMMIT},
        {"vllm_ref": VLLM_COMMIT},
        {"base_image": "rocm/vllm-dev:nightly_main_20250901"},
        {"gfx_targets": ["gfx950", "gfx942"]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_what_the_build_compiles_changes_the_tag(change: dict[str, Any]) -> None:
    base = _build_image()
    changed = _build_image(**change)

    assert changed.content_hash != base.content_hash
    assert _tag(changed) != _tag(base)
    assert TAG_RE.fullmatch(_tag(changed))


def test_every_build_input_gives_its_own_tag() -> None:
    changes: list[dict[str, Any]] = [
        {},
        {"aiter_ref": AITER_COMMIT},
        {"vllm_ref": VLLM_COMMIT},
        {"base_image": "rocm/vllm-dev:nightly_main_20250901"},
        {"gfx_targets": ["gfx950", "gfx942"]},
    ]
    tags = {_tag(_build_image(**c)) for c in changes}
    assert len(tags) == len(changes)


def test_the_gfx_targets_are_a_set() -> None:
    """The same targets in another order, or one named twice, are the same build (and
    one target's hours)."""
    both = _build_image(gfx_targets=["gfx942", "gfx950"])
    reordered = _build_image(gfx_targets=["gfx950", "gfx942"])
    twice = _build_image(gfx_targets=["gfx950", "gfx950"])

    assert reordered.image == both.image and reordered.gfx_targets == ("gfx942", "gfx950")
    assert twice.image == _build_image().image
    assert (twice.gfx_targets, twice.build_hours) == (("gfx950",), SOURCE_BUILD_HOURS_PER_TARGET)
    assert both.build_hours == 2 * SOURCE_BUILD_HOURS_PER_TARGET


@pytest.mark.parametrize(
    "change",
    [
        {"registry": {"address": "10.77.3.10:5000", "repository": "amdfleet/vllm-aiter"}},
        {"registry": {"address": "registry.example.internal:5000", "repository": "team/engines"}},
        {"registry": None},
        {"build_host": BUILDER},
        {"timeout_s": 3600},
    ],
    ids=["address", "repository", "no-registry", "build-host", "timeout"],
)
def test_where_it_is_built_or_pushed_leaves_the_content_hash(change: dict[str, Any]) -> None:
    base = _build_image()
    changed = _build_image(**change)

    assert changed.content_hash == base.content_hash
    assert _tag(changed) == _tag(base)


def test_a_registry_address_change_moves_only_the_name() -> None:
    image = _build_image(registry={"address": "10.77.3.10:5000"})
    assert image.image == f"10.77.3.10:5000/amdfleet/vllm-aiter:{_tag(_build_image())}"
    assert image.registry == "10.77.3.10:5000"


def test_the_cloud_stack_builds_the_same_content() -> None:
    """Built on its node (no registry), under the same tag as the registry stacks'."""
    cloud = plan(load_stack_file(CLOUD_STACK).spec).image
    assert cloud.registry is None
    assert cloud.image == f"amdfleet/vllm-aiter:{_tag(_build_image())}"
    assert cloud.content_hash == _build_image().content_hash


def test_the_content_hash_covers_the_template_not_the_argument_order() -> None:
    args: dict[str, object] = {"base_image": "b", "aiter_ref": "a", "vllm_ref": "v"}
    args["gfx_targets"] = ["gfx950"]
    reordered = dict(reversed(list(args.items())))

    assert build_inputs_hash("FROM {{ base_image }}\n", args) == build_inputs_hash(
        "FROM {{ base_image }}\n", reordered
    )
    assert build_inputs_hash("FROM {{ base_image }}\n", args) != build_inputs_hash(
        "FROM {{ base_image }}\nRUN true\n", args
    )


def test_the_build_host_defaults_to_the_head_node() -> None:
    image = _build_image()
    assert image.build_host == "mi355x-01"
    assert image.build_target is not None
    assert (image.build_target.name, image.build_target.address) == ("mi355x-01", "192.0.2.10")


def test_a_named_fleet_host_builds() -> None:
    sections = _two_nodes(_sections(REGISTRY_STACK))
    sections["image_build"]["build_host"] = "mi355x-02"

    image = _planned(REGISTRY_STACK, sections).image

    assert image.build_host == "mi355x-02"
    assert image.build_target is not None
    assert image.build_target.address == "192.0.2.11"


def test_a_separate_ssh_host_builds() -> None:
    image = _build_image(build_host=BUILDER)
    assert image.build_host == "builder"
    target = image.build_target
    assert target is not None
    assert (target.name, target.address, target.user, target.port) == (
        "builder",
        "192.0.2.50",
        "build",
        2222,
    )
    assert target.host_key == HOST_KEY


def test_a_separate_build_host_on_the_placeholder_key_plans_with_a_warning_and_up_refuses_it() -> (
    None
):
    """As for fleet hosts: `amdfleet plan` and preview connect to nothing, `pulumi up`
    (the Fleet component, before anything registers) refuses the placeholder pin."""
    from amdfleet.components.fleet import _refuse_placeholder_host_keys

    placeholder = "SHA256:REPLACE0with0your0host0key0fingerprint00009"
    sections = _sections(REGISTRY_STACK)
    sections["fleet"]["hosts"][0]["host_key"] = HOST_KEY
    sections["image_build"]["build_host"] = {**BUILDER, "host_key": placeholder}
    planned = _planned(REGISTRY_STACK, sections)

    (warning,) = [w for w in planned.warnings if placeholder in w]
    assert warning.startswith("image_build.build_host.host_key: host 'builder' is pinned")
    with pytest.raises(ConfigError) as refused:
        _refuse_placeholder_host_keys(planned)
    assert refused.value.paths == ("image_build.build_host.host_key",)
    assert "ssh-keyscan -t ed25519 192.0.2.50" in str(refused.value)


def test_a_cloud_fleet_builds_on_its_head_once_it_exists() -> None:
    sections = _sections(CLOUD_STACK)
    sections["image_build"]["registry"] = {"address": "10.77.3.10:5000"}

    image = _planned(CLOUD_STACK, sections).image

    assert image.build and image.registry == "10.77.3.10:5000"
    assert (image.build_host, image.build_target) == ("head", None)


def test_a_build_host_outside_the_fleet_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _build_image(build_host="mi355x-99")
    assert "image_build.build_host" in caught.value.paths
    assert "mi355x-01" in str(caught.value)  # the hosts it may name


@pytest.mark.parametrize("stack", ["mi300x-llama405b-vllm", "mi325x-llama405b-fp8"])
def test_the_catalog_release_tag_is_pinned_at_up_and_warned_about(stack: str) -> None:
    planned = plan(load_stack_file(stack).spec)
    image = planned.image

    assert (image.build, image.pin, image.source) == (False, True, "catalog")
    assert image.image == "vllm/vllm-openai-rocm:v0.32.0"
    assert planned.engine.version == "0.32.0"
    assert not is_pinned(image.image)
    (warning,) = [w for w in planned.warnings if image.image in w]
    assert "is a tag: `pulumi up` resolves it to a digest once" in warning


def test_a_moving_tag_in_engine_image_is_warned_about_as_unversioned() -> None:
    sections = _sections("mi325x-llama405b-fp8")
    sections["engine"]["image"] = "vllm/vllm-openai-rocm:latest"
    planned = _planned("mi325x-llama405b-fp8", sections)

    assert (planned.image.pin, planned.image.source) == (True, "engine.image")
    moving = [w for w in planned.warnings if "is a moving tag (latest)" in w]
    assert len(moving) == 1 and "name a release tag" in moving[0]


def test_a_digest_image_is_not_pinned_again() -> None:
    sections = _sections("mi325x-llama405b-fp8")
    by_digest = f"vllm/vllm-openai-rocm@{DIGEST}"
    sections["engine"]["image"] = by_digest

    planned = _planned("mi325x-llama405b-fp8", sections)

    assert planned.image.image == by_digest and is_pinned(by_digest)
    assert planned.image.pin is False
    assert not [w for w in planned.warnings if "is a tag" in w]


def test_a_two_node_build_without_registry_warns_that_each_node_builds() -> None:
    sections = _two_nodes(_sections(REGISTRY_STACK))
    del sections["image_build"]["registry"]

    planned = _planned(REGISTRY_STACK, sections)

    assert planned.image.build and planned.image.registry is None
    assert planned.image.build_host is None
    (warning,) = [w for w in planned.warnings if w.startswith("image_build")]
    assert "each of the 2 nodes builds the image itself (about 1 h each)" in warning
    assert "the nodes may end up with different engines" in warning
    assert "set image_build.registry" in warning


def test_a_registry_build_warns_about_nothing_image_related_but_unrecorded_commits() -> None:
    """The committed stack builds the catalog's release tags, whose commits this workplace
    could not resolve: the plan says so for each, and nothing else about the image."""
    planned = plan(load_stack_file(REGISTRY_STACK).spec)
    unrecorded = [w for w in planned.warnings if "has not recorded the commit" in w]
    assert len(unrecorded) == 2 and "vLLM v0.32.0" in unrecorded[0]
    others = [w for w in planned.warnings if "image" in w and w not in unrecorded]
    assert not others


def test_a_build_of_named_commits_warns_about_nothing_image_related() -> None:
    sections = _sections(REGISTRY_STACK)
    sections["image_build"] = {
        **sections["image_build"],
        "aiter_ref": AITER_COMMIT,
        "vllm_ref": VLLM_COMMIT,
    }
    planned = _planned(REGISTRY_STACK, sections)
    assert planned.image.vllm_commit == VLLM_COMMIT
    assert planned.image.aiter_commit == AITER_COMMIT
    assert not [w for w in planned.warnings if "image" in w and "vllm_ref is a commit" not in w]


# -- providers/image_build.py: gfx_refusal, fleet_archs_of -----------------------------


def _mi300x_facts(name: str) -> dict[str, Any]:
    """Host facts as an SshHost outputs them, GPUs from a real MI300X `rocminfo`."""
    inventory = gpus.parse_rocminfo((FIXTURES / "mi300x.rocminfo.txt").read_text())
    host = records.HostFacts(hostname=name, gpus=gpus.identify(inventory.gpus))
    through_json: dict[str, Any] = json.loads(json.dumps(host.to_dict()))
    return through_json  # as Pulumi hands outputs back: through JSON


def test_fleet_archs_come_from_each_hosts_gpus() -> None:
    gpu_less = json.loads(json.dumps(records.HostFacts(hostname="cpu-01").to_dict()))
    mixed = {"gpus": [{"index": 0, "arch": "gfx950"}, {"index": 1, "arch": None}, {"index": 2}]}

    archs = fleet_archs_of(
        {"mi300x-01": host_facts(_mi300x_facts("mi300x-01")), "cpu-01": host_facts(gpu_less)}
    )
    archs |= fleet_archs_of({"mi355x-01": host_facts(mixed), "bare": host_facts({})})

    assert archs == {"mi300x-01": ["gfx942"], "cpu-01": [], "mi355x-01": ["gfx950"], "bare": []}


def test_a_build_covering_every_arch_is_not_refused() -> None:
    archs = {"a": ["gfx942"], "b": ["gfx950"], "cpu": []}
    assert gfx_refusal(("gfx942", "gfx950"), archs, 2.0, 3600) is None
    assert gfx_refusal(("gfx950",), {"cpu-01": [], "cpu-02": []}, 1.0, 3600) is None
    assert gfx_refusal(("gfx950",), {}, 1.0, 3600) is None


def test_a_refusal_names_each_host_its_arch_the_hours_and_the_deadline() -> None:
    archs = {
        "mi300x-01": ["gfx942"],
        "mi250x-01": ["gfx90a"],
        "mi355x-01": ["gfx950"],
        "cpu-01": [],
    }
    refused = gfx_refusal(("gfx942",), archs, 1.0, 21600)

    assert refused is not None
    message = str(refused)
    assert message.startswith("refusing to build the engine image for gfx942: ")
    assert "mi250x-01 has gfx90a, mi355x-01 has gfx950 GPUs" in message
    assert "mi300x-01" not in message and "cpu-01" not in message
    assert "about 1 h of build" in message
    assert f"(deadline {format_duration(21600)})" in message
    assert format_duration(21600) == "6 h 00 min"
    assert refused.hint == (
        "add gfx90a and gfx950 to image_build.gfx_targets, or run the stack on gfx942 hosts"
    )
    assert refused.hours == 1.0


def test_the_gfx950_stack_on_mi300x_hosts_is_refused_with_its_plan() -> None:
    """The committed MI355X stack's build, on hosts whose facts say MI300X."""
    image = plan(load_stack_file(REGISTRY_STACK).spec).image
    archs = fleet_archs_of({"mi355x-01": host_facts(_mi300x_facts("mi355x-01"))})

    refused = gfx_refusal(image.gfx_targets, archs, image.build_hours, image.build_timeout_s)

    assert refused is not None
    assert "for gfx950: mi355x-01 has gfx942 GPUs" in str(refused)
    assert f"about {SOURCE_BUILD_HOURS_PER_TARGET:g} h of build" in str(refused)
    assert f"deadline {format_duration(image.build_timeout_s)}" in str(refused)
    assert "add gfx942 to image_build.gfx_targets" in refused.hint


# -- amdfleet plan -----------------------------------------------------------------------


def _engine_line(path_or_name: str) -> str:
    loaded = load_stack_file(path_or_name)
    out = format_plan(loaded, plan(loaded.spec))
    (line,) = [line for line in out.splitlines() if line.lstrip().startswith("engine ")]
    return line


def _written(tmp_path: Path, stack: str, sections: dict[str, Any]) -> str:
    path = tmp_path / f"Pulumi.{stack}.yaml"
    config = {f"amdfleet:{k}": v for k, v in sections.items()}
    path.write_text(yaml.safe_dump({"config": config}))
    return str(path)


def test_the_plan_says_the_registry_build_is_built_once_and_pulled_by_digest() -> None:
    line = _engine_line(REGISTRY_STACK)
    assert "built once on mi355x-01 for gfx950, pushed; every node pulls its digest" in line
    assert (
        f"image registry.example.internal:5000/amdfleet/vllm-aiter:{_tag(_build_image())}" in line
    )


def test_the_plan_says_how_other_images_reach_the_nodes(tmp_path: Path) -> None:
    cloud = _sections(CLOUD_STACK)
    cloud["image_build"]["registry"] = {"address": "10.77.3.10:5000"}

    assert ", built once on head for gfx950, pushed; every node pulls its digest)" in (
        _engine_line(_written(tmp_path, CLOUD_STACK, cloud))
    )
    assert ", built from source on every node for gfx950)" in _engine_line(CLOUD_STACK)
    assert "(pinned to its digest at the first up)" in _engine_line("mi300x-llama405b-vllm")


def test_every_node_and_the_fabric_check_run_the_pinned_digest_never_the_tag() -> None:
    """What the components render once the pin (or the push) is known: each node's
    launch script and the fabric check's container name the digest reference."""
    from amdfleet.components.props import fabric_check_props, launch_files
    from amdfleet.config import FabricSpec
    from amdfleet.remote.transport.target import HostTarget

    spec = load_stack_file("mi300x-2node-llama405b-bf16").spec
    spec = spec.model_copy(update={"fabric": FabricSpec(enabled=True, min_busbw_gbps=304)})
    planned = plan(spec)
    tag = planned.image.image
    assert tag is not None and planned.image.pin
    ref = f"{tag.rsplit(':', 1)[0]}@sha256:{'ab' * 32}"

    for node in planned.nodes:
        files = launch_files(planned, node, ref)
        before = launch_files(planned, node, tag)
        script = files["launch.sh"]["content"]
        assert ref in script and tag not in script, node.name
        # Nothing else moves: the same files as with the tag, the reference swapped.
        assert {k: _unhashed(f["content"]) for k, f in files.items()} == {
            k: _unhashed(f["content"]).replace(tag, ref) for k, f in before.items()
        }
    targets = [HostTarget(name=n.name, address=n.address or "") for n in planned.nodes]
    (pinned_run,) = fabric_check_props(planned, targets, image=ref).runs
    (tag_run,) = fabric_check_props(planned, targets).runs
    assert ref in pinned_run.command and tag not in pinned_run.command
    assert pinned_run.command == tag_run.command.replace(tag, ref)


def _unhashed(content: str) -> str:
    """A rendered file without its content-hash header line."""
    from amdfleet.render import HASH_MARK

    return "\n".join(line for line in content.splitlines() if HASH_MARK not in line)
