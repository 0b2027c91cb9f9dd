"""What a pinned engine version accepts: its CLI flags and environment variables.

A manifest is generated from the engine's own code and committed under
``amdfleet/catalog/manifests/<engine>-<version>.json``, with how it was made and the
command that regenerates it (``scripts/manifest-vllm.py``, ``scripts/manifest-sglang.py``,
``scripts/manifest-tgi.py``). The planner checks every flag and engine variable a stack
renders against the manifest of the version it runs (:func:`check_flags`,
:func:`check_env`), so a command the engine would reject is refused before anything is
provisioned; the deploy-time check then asks the engine in the real image.

How a flag is matched follows the engine's parser, as the manifest records it:
argparse (vLLM, SGLang) takes a unique prefix of a long option when ``allow_abbrev``;
vLLM's ``FlexibleArgumentParser`` also takes ``_`` for ``-`` and ``--json-flag.key`` for
one key of a JSON option; clap (TGI) takes exact names only.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from amdfleet.engines.flags import Flags

MANIFEST_PACKAGE = "amdfleet.catalog.manifests"


@dataclass(frozen=True)
class FlagSpec:
    """One option of the engine's parser."""

    name: str
    aliases: tuple[str, ...]
    nargs: int | str
    choices: tuple[str, ...] | None
    deprecated: str | None
    env: str | None


@dataclass(frozen=True)
class FlagProblem:
    """What is wrong with one rendered flag (``warning``: it works, but deprecated)."""

    flag: str
    message: str
    hint: str
    warning: bool = False


@dataclass(frozen=True)
class EngineManifest:
    """The flags and variables one engine version accepts, and where that comes from."""

    engine: str
    version: str
    method: str
    source: str
    regenerate: str
    parser_kind: str
    allow_abbrev: bool
    underscores: bool
    dotted: bool
    flags: tuple[FlagSpec, ...]
    env_prefixes: tuple[str, ...]
    env_known: frozenset[str]
    env_deprecated: dict[str, str]
    limits: dict[str, dict[str, Any]]
    api_key: dict[str, str]
    _index: dict[str, FlagSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {option: spec for spec in self.flags for option in (spec.name, *spec.aliases)}
        object.__setattr__(self, "_index", index)

    @property
    def label(self) -> str:
        """``vllm 0.32.0``."""
        return f"{self.engine} {self.version}"

    @property
    def summary(self) -> str:
        """Which manifest, and how it was made, in one line."""
        how = "the engine's own parser" if self.method == "parser" else "the engine's source"
        return f"catalog/manifests/{self.engine}-{self.version}.json, generated from {how}"

    def lookup(self, flag: str) -> FlagSpec | None:
        """The option the engine's parser would take ``flag`` as, or None."""
        name = self._normal(flag)
        exact = self._by_name().get(name)
        if exact is not None:
            return exact
        if self.dotted and "." in name:
            base = self._by_name().get(name.split(".", 1)[0])
            if base is not None and base.nargs != 0:
                return base
        if self.allow_abbrev and name.startswith("--"):
            matches = {
                spec.name: spec
                for option, spec in self._by_name().items()
                if option.startswith("--") and option.startswith(name)
            }
            if len(matches) == 1:
                return next(iter(matches.values()))
        return None

    def closest(self, flag: str) -> str | None:
        """The known option nearest to ``flag`` in spelling, for a hint."""
        found = difflib.get_close_matches(self._normal(flag), self._by_name(), n=1, cutoff=0.6)
        return found[0] if found else None

    def known_env(self, name: str) -> bool | None:
        """True/False for a variable in the engine's namespace; None outside it (not the
        engine's to judge: NCCL_*, HF_*, HIP_* ...)."""
        if name in self.env_known:
            return True
        if any(name.startswith(prefix) for prefix in self.env_prefixes):
            return False
        return None

    def _normal(self, flag: str) -> str:
        if self.underscores and flag.startswith("--"):
            head, dot, tail = flag.partition(".")
            return head.replace("_", "-") + dot + tail
        return flag

    def _by_name(self) -> dict[str, FlagSpec]:
        return self._index


def manifest(engine: str, version: str) -> EngineManifest | None:
    """The committed manifest of ``engine`` at ``version``; None when there is none."""
    return _load(engine, version)


def check_flags(found: EngineManifest, flags: Flags) -> list[FlagProblem]:
    """Every flag of ``flags`` the engine would reject (and the deprecated ones, as
    warnings): unknown names, a value given to a switch or missing for an option that
    takes one, a value outside the option's choices."""
    problems: list[FlagProblem] = []
    for flag, value in flags:
        spec = found.lookup(flag)
        if spec is None:
            problems.append(_unknown_flag(found, flag))
            continue
        problems += _value_problems(found, spec, flag, value)
        if spec.deprecated:
            problems.append(FlagProblem(flag, spec.deprecated, _see_help(found), warning=True))
    return problems


def check_env(found: EngineManifest, names: list[str]) -> list[FlagProblem]:
    """Variables in the engine's namespace that the version does not know (it ignores
    them: a dead setting), and deprecated ones as warnings."""
    problems: list[FlagProblem] = []
    for name in names:
        known = found.known_env(name)
        if known is False:
            closest = difflib.get_close_matches(name, sorted(found.env_known), n=1, cutoff=0.75)
            problems.append(
                FlagProblem(
                    name,
                    f"{found.label} does not read {name}: the setting would do nothing",
                    f"did you mean {closest[0]}?" if closest else "remove it",
                )
            )
        elif name in found.env_deprecated:
            problems.append(
                FlagProblem(name, found.env_deprecated[name], "remove it", warning=True)
            )
    return problems


def _unknown_flag(found: EngineManifest, flag: str) -> FlagProblem:
    if not flag.startswith("-"):
        # A word where a flag belongs is a value that lost its flag (the --api-key before
        # it deleted, say): it may be a secret, so it is not shown.
        return FlagProblem(
            flag,
            f"{found.label} takes no bare word here: a value without its flag (not shown)",
            "put each value after its flag (--flag VALUE or --flag=VALUE), or remove it",
        )
    closest = found.closest(flag)
    return FlagProblem(
        flag,
        f"{found.label} has no option {flag}",
        f"the closest it has is {closest}" if closest else _see_help(found),
    )


def _value_problems(
    found: EngineManifest, spec: FlagSpec, flag: str, value: str | None
) -> list[FlagProblem]:
    dotted = found.dotted and "." in flag
    if spec.nargs == 0 and value is not None:
        return [
            FlagProblem(
                flag,
                f"{flag} is a switch in {found.label} and takes no value, but {value!r} follows it",
                f"write {flag} alone (or its --no- form, where the engine has one)",
            )
        ]
    if spec.nargs in (1, "+") and value is None and not dotted:
        return [FlagProblem(flag, f"{flag} needs a value in {found.label}", _see_help(found))]
    if spec.choices is not None and value is not None and value not in spec.choices:
        return [
            FlagProblem(
                flag,
                f"{value!r} is not a choice of {flag} in {found.label}",
                f"use one of {', '.join(spec.choices)}",
            )
        ]
    return []


def _see_help(found: EngineManifest) -> str:
    return f"see the options of {found.label} in its manifest ({found.regenerate})"


@functools.cache
def _load(engine: str, version: str) -> EngineManifest | None:
    path = resources.files(MANIFEST_PACKAGE) / f"{engine}-{version}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    parser = data["parser"]
    env = data.get("env", {})
    return EngineManifest(
        engine=data["engine"],
        version=data["version"],
        method=data["method"],
        source=data["source"],
        regenerate=data["regenerate"],
        parser_kind=parser["kind"],
        allow_abbrev=bool(parser.get("allow_abbrev", False)),
        underscores=bool(parser.get("underscores", False)),
        dotted=bool(parser.get("dotted", False)),
        flags=tuple(
            FlagSpec(
                name=f["name"],
                aliases=tuple(f.get("aliases") or ()),
                nargs=f["nargs"],
                choices=None if f.get("choices") is None else tuple(f["choices"]),
                deprecated=f.get("deprecated"),
                env=f.get("env"),
            )
            for f in data["flags"]
        ),
        env_prefixes=tuple(env.get("prefixes", ())),
        env_known=frozenset(env.get("known", ())),
        env_deprecated=dict(env.get("deprecated", {})),
        limits=dict(data.get("limits", {})),
        api_key=dict(data.get("api_key", {})),
    )
