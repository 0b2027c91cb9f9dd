"""Verification: the gate between "deployed" and "ready".

Runs the stack's verification spec (serving benchmarks and the accuracy check, see
:mod:`amdfleet.verify`) against the endpoint once the engine is up. If a threshold is not
met, ``create``/``update`` raise :class:`~amdfleet.errors.VerificationFailed` with the
verdict table, so ``pulumi up`` fails and the stack is not marked ready. It re-runs only
when the engine (rendered content, image digest) or the spec changes, not on every ``up``.

The tokenizer comes from the head node's staged weights (copied over the connection), so
random prompts have exact token lengths even for a model that exists only on the hosts.
Reports (JSON, markdown, plots) are written under ``report_dir`` on the machine running
Pulumi.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from amdfleet.config import VerificationSpec
from amdfleet.errors import VerificationFailed
from amdfleet.providers.props import changed_keys, plain
from amdfleet.remote.hosts import open_host

RERUN_ON = ("base_url", "model", "spec", "engine_fingerprint")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class VerificationProvider(ResourceProvider):
    """Runs the verification spec. Stateless."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Run the verification; raise VerificationFailed (with the verdict table) if
        any threshold is not met."""
        props = plain(props)
        return CreateResult(id_=f"verification:{props['model']}", outs=_verify(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Verification results are a record of a past run: refresh keeps them."""
        return ReadResult(id_=id_, outs=plain(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Re-run only when the engine, the endpoint or the spec changed."""
        return DiffResult(changes=bool(changed_keys(olds, news, RERUN_ON)), replaces=[])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Run the verification again."""
        return UpdateResult(outs=_verify(plain(news)))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove (reports stay on the machine running Pulumi)."""


class Verification(pulumi.dynamic.Resource, module="amdfleet", name="Verification"):
    """The verification run; ``passed`` and ``result`` (metrics, thresholds, verdict)."""

    passed: pulumi.Output[bool]
    result: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ):
        outputs = {"passed": None, "result": None}
        super().__init__(VerificationProvider(), name, {**props, **outputs}, opts)


def _verify(props: dict[str, Any]) -> dict[str, Any]:
    from amdfleet.verify import render_verdict_table, run_verification

    spec = VerificationSpec.model_validate(props["spec"])
    with tempfile.TemporaryDirectory(prefix="amdfleet-tokenizer-") as tmp:
        tokenizer = _fetch_tokenizer(props, Path(tmp))
        result = run_verification(
            spec,
            base_url=props["base_url"],
            model=props["model"],
            api_key=props.get("api_key"),
            tokenizer=tokenizer,
            out_dir=Path(props["report_dir"]),
        )
    if not result.passed:
        raise VerificationFailed(result.failures(), render_verdict_table(result))
    public = {k: v for k, v in props.items() if k != "api_key"}
    return {**public, "passed": True, "result": result.to_dict()}


def _fetch_tokenizer(props: dict[str, Any], into: Path) -> str | None:
    path = props.get("tokenizer_path")
    if not path:
        return None
    with open_host(props["tokenizer_host"]) as conn:
        for name in TOKENIZER_FILES:
            content = conn.get(f"{path.rstrip('/')}/{name}")
            if content is not None:
                (into / name).write_bytes(content)
    return str(into) if (into / "tokenizer.json").exists() else None
