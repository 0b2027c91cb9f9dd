"""Seed citations: every cited seed line exists and holds what the citation claims.

The seeds are the five documents amdfleet was built from, ``shared/seeds`` beside the
clone (``amdfleet.catalog.engines.SEED_000`` … ``SEED_004`` name the files). A citation
by line is written in one of two forms; any other spelling fails
``test_no_seed_citation_in_an_unrecognised_form``.

1. Catalog data. An f-string ``{SEED_NNN}:LINES …`` as the ``source`` of a record (a
   dataclass instance) in an ``amdfleet.catalog`` module. The record itself is the
   claim, compared with the cited lines according to its kind:

   - recipe: every env entry as ``NAME=VALUE``; every flag, followed by its value when it
     has one; every typed default as the flag of that name (``kv_cache_dtype`` is
     ``--kv-cache-dtype``) followed by its value; every ``dropped`` flag or variable
     (the seed sets it, amdfleet leaves it out). A flag may be spelled with ``_`` or
     ``-`` (seed 002:130 ("--gpu_memory_utilization 0.9")), as vLLM accepts both.
   - verified layout: a row of the seed's table naming its accelerators, with an entry
     for its model sizes, its precision (or none) and its TP, as in
     seed 003:25 ("MI300X/MI325X: 405B BF16 (TP=8)").
   - baseline: every metric is a number on the cited lines, in the metric's unit or in
     the one the seed publishes: ``*_ms`` in seconds (seed 000:51 ("16.17s")), ``*_rate``
     in percent (seed 000:63 ("100% Success Rate")). Ids, workloads and notes are prose.
   - any other record with an ``image``: the image's repository (without tag or digest;
     a catalog image may pin a release where the seed used a moving tag).

   Besides holding every claim, each comma-separated part of the cited lines must hold
   at least one, so that no part is cited for nothing. Records of another kind that cite
   a seed fail until a check for them is added here. Exceptions, each with its reason,
   are in ``ACCELERATOR_STANDINS``.

2. Free text (comments, docstrings, YAML comments, Markdown). ``seed NNN:LINES``, or the
   file's path ``seeds/NNN_<hash>.txt:LINES``, may be continued with ``, NNN:LINES`` for
   more seeds saying the same, and is followed at once by a quote of what it cites:
   ``("…")``, ``(`…`)`` or ``(``…``)``: seed 002:41,61 ("rocm/vllm-dev:nightly"), or
   seed 000:24, 002:56 ("--device /dev/kfd"). The quote must occur in every
   comma-separated part of every seed cited.

LINES is ``L``, ``L-M`` or a comma list of those without spaces (``117-134,146-157``).
Lines are compared with runs of whitespace collapsed and shell line continuations (a
trailing backslash) dropped, so a quote may run over the lines of a range.

Unrecognised, each an error: ``SEED_00N}:`` outside ``amdfleet/catalog``; a seed's path
or ``seed NNN:`` without a quote after it; a bare ``00N:L`` that does not continue a
citation; the word "line" or "lines" with a number soon after a seed is named.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from amdfleet import catalog
from amdfleet.catalog import baselines, engines

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds"
CATALOG_DIR = "amdfleet/catalog/"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".cache",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".pulumi",
    ".amdfleet",
    "node_modules",
    "out",
    "build",
}

ACCELERATOR_STANDINS: Mapping[str, str] = {
    # Seed 003 names MI355X only; MI350X is the same gfx950 chip with the same 288 GB
    # (amdfleet.catalog.gpus), so the catalog gives it the MI355X row.
    "mi350x": "mi355x",
}

_LINES = r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*"
_SEED = r"(?:\b[Ss]eed (?P<seed>\d{3})|\bseeds/(?P<path>\d{3}_[0-9a-f]+)\.txt)"
_MORE = rf"(?P<more>(?:,\s*\d{{3}}:{_LINES})*)"
_QUOTE = r'\s*\((?:"(?P<dq>[^"]+)"|``(?P<rq>[^`]+)``|`(?P<bq>[^`]+)`)\)'
FREE_TEXT = re.compile(rf"{_SEED}:(?P<lines>{_LINES}){_MORE}{_QUOTE}")
MORE_SEED = re.compile(rf"(?P<seed>\d{{3}}):(?P<lines>{_LINES})")
CATALOG_SOURCE = re.compile(rf"\bseeds/(?P<path>\d{{3}}_[0-9a-f]+)\.txt:(?P<lines>{_LINES})")

TRIPWIRES: dict[str, re.Pattern[str]] = {
    "a seed's path with a line": re.compile(r"\bseeds/\d{3}_[0-9a-f]*\.txt:"),
    "a seed with a line": re.compile(r"(?i)\bseed[ _-]?\d{3}:\d"),
    "a bare seed:line": re.compile(r"\b00[0-4]:\d"),
}
CATALOG_FSTRING = re.compile(r"SEED_00\d\}:")
LINE_WORDS = re.compile(r"(?i)\blines? \d")
SEED_NAMED = re.compile(r"(?i)\bseeds?[ _/-]?\d{3}\b")
LINE_WORDS_REACH = 200
"""How many characters before "line N" a named seed makes it a citation."""


@dataclass(frozen=True)
class Cited:
    """Some lines of one seed file."""

    stem: str
    parts: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        spans = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.parts)
        return f"seed {self.stem[:3]}:{spans}"


@dataclass(frozen=True)
class FreeText:
    """A free-text citation: where it is, what it cites, and its quote."""

    where: str
    text: str
    cited: tuple[Cited, ...]
    quote: str


Claim = tuple[str, Callable[[Sequence[str]], bool]]


def test_no_seed_citation_in_an_unrecognised_form() -> None:
    problems = [p for path, text in _texts() for p in _unrecognised(path, text).values()]
    assert not problems, (
        "seed citations in a form this test does not check; write them as "
        'seed NNN:LINES ("quote of the cited text") (see this module\'s docstring):\n'
        + "\n".join(problems)
    )
    here = Path(__file__).relative_to(REPO).as_posix()
    assert any(c.where.startswith(here) for c in _free_texts()), "the scan found nothing"


def test_free_text_citation_quotes_its_lines(citation: FreeText) -> None:
    quote = _flat([citation.quote])
    for cited in citation.cited:
        for part, lines in _parts(cited):
            assert quote in _flat(lines), (
                f"{citation.where}: {citation.text!r} quotes {quote!r}, which is not in "
                f"seed {cited.stem[:3]}:{part}: {_flat(lines)!r}"
            )


def test_catalog_record_is_on_its_cited_lines(record: Any) -> None:
    _assert_claims(record.source, _claims(record))


def test_every_catalog_citation_is_a_record_source() -> None:
    records = _records()
    assert records, "no catalog record cites a seed line: is CATALOG_SOURCE still right?"
    sources = {r.source for r in records}
    strays = sorted(
        f"{module.__name__}.{name}: {s!r}"
        for module in _catalog_modules()
        for name, value in vars(module).items()
        if not name.startswith("__")
        for s in _strings(value)
        if _cites(s) and s not in sources
    )
    assert not strays, "catalog seed citations that are no record's source:\n" + "\n".join(strays)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The tests above that take a citation run once per citation of their kind."""
    if "citation" in metafunc.fixturenames:
        metafunc.parametrize("citation", [pytest.param(c, id=c.where) for c in _free_texts()])
    if "record" in metafunc.fixturenames:
        metafunc.parametrize("record", [pytest.param(r, id=_record_id(r)) for r in _records()])


# --- catalog records and their claims ----------------------------------------------


def _catalog_modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"{catalog.__name__}.{info.name}")
        for info in pkgutil.iter_modules(catalog.__path__)
    ]


def _records() -> list[Any]:
    """Every record (a dataclass instance with a ``source``) in the catalog citing a seed."""
    found: dict[int, Any] = {}
    for module in _catalog_modules():
        for name, value in vars(module).items():
            if name.startswith("__"):
                continue
            for record in _dataclasses(value):
                source = getattr(record, "source", None)
                if isinstance(source, str) and _cites(source):
                    found.setdefault(id(record), record)
    return list(found.values())


def _record_id(record: Any) -> str:
    if isinstance(record, engines.Recipe):
        return f"recipe-{record.engine}-{'+'.join(record.archs)}-{'+'.join(record.precisions)}"
    if isinstance(record, engines.VerifiedLayout):
        return f"layout-{record.accelerators[0]}-{record.model_ids[0]}-{record.precision}"
    if isinstance(record, baselines.Baseline):
        return f"baseline-{record.id}"
    return f"{type(record).__name__}-{record.source}"


def _claims(record: Any) -> list[Claim]:
    if isinstance(record, engines.Recipe):
        return _recipe_claims(record)
    if isinstance(record, engines.VerifiedLayout):
        return [(_layout_text(record), lambda lines: _has_layout_row(lines, record))]
    if isinstance(record, baselines.Baseline):
        return [(f"{m}={v}", _published(m, v)) for m, v in record.metrics.items()]
    image = getattr(record, "image", None)
    if isinstance(image, str):
        return [(_repository(image), _contains(_repository(image)))]
    pytest.fail(f"{record!r} cites a seed, but this test has no check for a {type(record)}")


def _recipe_claims(recipe: engines.Recipe) -> list[Claim]:
    claims: list[Claim] = [(f"{k}={v}", _contains(f"{k}={v}")) for k, v in recipe.env.items()]
    claims += [(_flag_text(f, v), _flag(f, v)) for f, v in recipe.args]
    for key, value in recipe.defaults.items():
        flag, spelled = _default_flag(key, value)
        claims.append((f"defaults[{key!r}] as {_flag_text(flag, spelled)}", _flag(flag, spelled)))
    for what, _why in recipe.dropped:
        if what.startswith("-"):
            flag, _, value = what.partition(" ")
            claims.append((f"dropped {what}", _flag(flag, value or None)))
        else:
            claims.append((f"dropped {what}", _contains(what)))
    return claims


def _assert_claims(source: str, claims: Sequence[Claim]) -> None:
    assert claims, f"{source!r}: nothing to compare with the seed"
    parts = [
        (f"seed {c.stem[:3]}:{part}", lines)
        for c in _catalog_cited(source)
        for part, lines in _parts(c)
    ]
    everything = [line for _, lines in parts for line in lines]
    missing = [label for label, holds in claims if not holds(everything)]
    assert not missing, f"{source!r}: not on the cited lines: {missing}"
    for cited, lines in parts:
        assert any(holds(lines) for _, holds in claims), (
            f"{source!r}: {cited} holds none of {[label for label, _ in claims]}"
        )


def _contains(fragment: str) -> Callable[[Sequence[str]], bool]:
    return lambda lines: fragment in _flat(lines)


def _flag(flag: str, value: str | None) -> Callable[[Sequence[str]], bool]:
    name = "[-_]".join(re.escape(word) for word in re.split(r"[-_]", flag.removeprefix("--")))
    spelled = r"(?![\w-])" if value is None else rf"[ =]'?{re.escape(value)}(?![\d.])"
    pattern = re.compile(rf"(?<![\w-])--{name}{spelled}")
    return lambda lines: pattern.search(_flat(lines)) is not None


def _flag_text(flag: str, value: str | None) -> str:
    return flag if value is None else f"{flag} {value}"


def _default_flag(key: str, value: Any) -> tuple[str, str | None]:
    flag = "--" + key.replace("_", "-")
    if value is True:
        return flag, None
    if value is False:
        return "--no-" + flag.removeprefix("--"), None
    return flag, str(value)


def _layout_text(layout: engines.VerifiedLayout) -> str:
    sizes = "/".join(_sizes(layout))
    return f"{'/'.join(layout.accelerators)}: {sizes} {layout.precision.upper()} (TP={layout.tp})"


def _sizes(layout: engines.VerifiedLayout) -> list[str]:
    sizes = []
    for model_id in layout.model_ids:
        m = re.search(r"-(\d+)b(?:-|$)", model_id)
        assert m, f"no size (like 70b) in model id {model_id!r}"
        sizes.append(f"{m[1]}B")
    return sizes


_ROW = re.compile(r"(?P<accelerators>MI\d+X(?:/MI\d+X)*):(?P<entries>.*)")
_ENTRY = re.compile(r"(?P<sizes>\d+B(?:/\d+B)*)(?: (?P<precision>[A-Z0-9]+))? \(TP=(?P<tp>\d+)\)")


def _has_layout_row(lines: Sequence[str], layout: engines.VerifiedLayout) -> bool:
    wanted = {ACCELERATOR_STANDINS.get(a, a) for a in layout.accelerators}
    sizes = set(_sizes(layout))
    for line in lines:
        row = _ROW.search(line)
        if not row or not wanted <= set(row["accelerators"].lower().split("/")):
            continue
        for entry in _ENTRY.finditer(row["entries"]):
            if (
                sizes <= set(entry["sizes"].split("/"))
                and entry["precision"] in (None, layout.precision.upper())
                and int(entry["tp"]) == layout.tp
            ):
                return True
    return False


def _published(metric: str, value: float) -> Callable[[Sequence[str]], bool]:
    spellings = [value]
    if metric.endswith("_ms"):
        spellings.append(value / 1000)  # published in seconds
    if metric.endswith("_rate"):
        spellings.append(value * 100)  # published in percent
    return lambda lines: any(
        math.isclose(n, s, rel_tol=1e-9) for n in _numbers(_flat(lines)) for s in spellings
    )


def _numbers(text: str) -> Iterator[float]:
    for token in re.findall(r"\d[\d,]*(?:\.\d+)?", text):
        if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
            yield float(token.replace(",", ""))  # 1,090
        else:
            yield from (float(t) for t in token.split(",") if t)  # 41,61


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    repository, colon, tag = name.rpartition(":")
    return repository if colon and "/" not in tag else name


def _dataclasses(value: Any) -> Iterator[Any]:
    if is_dataclass(value) and not isinstance(value, type):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _dataclasses(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _dataclasses(item)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _strings(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, tuple | list | set | frozenset):
        for item in value:
            yield from _strings(item)


# --- scanning the tree -------------------------------------------------------------


@cache
def _texts() -> tuple[tuple[str, str], ...]:
    found = []
    for path in sorted(_files(REPO)):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        found.append((path.relative_to(REPO).as_posix(), text))
    return tuple(found)


def _files(root: Path) -> Iterator[Path]:
    for path in root.iterdir():
        if path.is_dir():
            if path.name not in SKIPPED_DIRS and not path.name.endswith(".egg-info"):
                yield from _files(path)
        elif path.is_file():
            yield path


def _free_texts() -> list[FreeText]:
    found = []
    for path, text in _texts():
        for m in FREE_TEXT.finditer(text):
            head = m.group(0)[: m.start("more") - m.start()]
            more = (_cited(c["seed"], c["lines"]) for c in MORE_SEED.finditer(m["more"]))
            found.append(
                FreeText(
                    where=f"{path}:{_line_of(text, m.start())}:{head}",
                    text=m.group(0),
                    cited=(_head(m), *more),
                    quote=m["dq"] or m["rq"] or m["bq"],
                )
            )
    return found


def _head(m: re.Match[str]) -> Cited:
    if m["path"]:
        return Cited(m["path"], _spans(m["lines"]))
    return _cited(m["seed"], m["lines"])


def _unrecognised(path: str, text: str) -> dict[int, str]:
    """What looks like a seed citation but is in no recognised form, one per line."""
    spans = [m.span() for m in FREE_TEXT.finditer(text)]
    found: dict[int, str] = {}

    def report(pos: int, what: str, *, quoted_ok: bool = True) -> None:
        if not (quoted_ok and any(start <= pos < end for start, end in spans)):
            line = _line_of(text, pos)
            found.setdefault(line, f"{path}:{line}: {what}: {_context(text, pos)}")

    for form, pattern in TRIPWIRES.items():
        for m in pattern.finditer(text):
            report(m.start(), form)
    if not path.startswith(CATALOG_DIR):
        for m in CATALOG_FSTRING.finditer(text):
            report(m.start(), f"a catalog citation outside {CATALOG_DIR}", quoted_ok=False)
    for m in LINE_WORDS.finditer(text):
        if SEED_NAMED.search(text[max(0, m.start() - LINE_WORDS_REACH) : m.start()]):
            report(m.start(), "a line number in words after a seed")
    return found


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _context(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else None].strip()


# --- seed files and cited lines ----------------------------------------------------


def _cites(source: str) -> bool:
    return CATALOG_SOURCE.search(source) is not None


def _catalog_cited(source: str) -> list[Cited]:
    return [Cited(m["path"], _spans(m["lines"])) for m in CATALOG_SOURCE.finditer(source)]


def _cited(number: str, lines: str) -> Cited:
    matches = sorted(SEEDS.glob(f"{number}_*.txt"))
    stem = matches[0].stem if len(matches) == 1 else f"{number}_<no single seed file>"
    return Cited(stem, _spans(lines))


def _spans(lines: str) -> tuple[tuple[int, int], ...]:
    spans = []
    for part in lines.split(","):
        first, _, last = part.partition("-")
        spans.append((int(first), int(last or first)))
    return tuple(spans)


def _parts(cited: Cited) -> Iterator[tuple[str, tuple[str, ...]]]:
    lines = _seed_lines(cited.stem)
    for first, last in cited.parts:
        part = f"{first}" if first == last else f"{first}-{last}"
        assert 1 <= first <= last <= len(lines), (
            f"{cited}: lines {part} are not within seed {cited.stem[:3]} ({len(lines)} lines)"
        )
        yield part, lines[first - 1 : last]


@cache
def _seed_lines(stem: str) -> tuple[str, ...]:
    path = SEEDS / f"{stem}.txt"
    assert path.is_file(), f"no seed file {path} (the seeds are ../shared/seeds beside the clone)"
    return tuple(path.read_text(encoding="utf-8").removesuffix("\n").split("\n"))


def _flat(lines: Sequence[str]) -> str:
    joined = " ".join(line.rstrip().removesuffix("\\") for line in lines)
    return " ".join(joined.split())
