"""Every committed stack, mutated at random: never a traceback, every rejection names a
field, and an injected secret never shows up anywhere.

A mutation deletes a key, retypes a value, renames a key, injects a (fake, generated)
secret into a free-form field, or duplicates a key line in the YAML text. The mutated
file goes through what runs before the first resource exists (load, plan) and what a
user sees after (``render_plan``'s files with ``plan.json``, ``amdfleet plan``'s
printout). The only acceptable outcomes are success or a ``ConfigError`` (``PlanError``
is one) whose issues each name a path; whichever it is, no injected secret value
appears in its text.

Hypothesis runs derandomized without an example database, so CI runs the same examples
every time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from amdfleet.cli.stack import format_plan
from amdfleet.config import load_stack_file
from amdfleet.errors import ConfigError
from amdfleet.plan import plan
from amdfleet.render import render_plan

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted(
    [*(ROOT / "stacks").glob("Pulumi.*.yaml"), *(ROOT / "tests/unit/stacks").glob("*.yaml")]
)

# Free-form string fields a secret could be pasted into (section, field).
FREE_FORM = (
    ("description", None),
    ("engine", "image"),
    ("engine", "executable"),
    ("model", "checkpoint"),
    ("model", "served_name"),
    ("model", "revision"),
    ("weights", "hub_endpoint"),
    ("weights", "local_path"),
    ("weights", "hf_token_secret"),
    ("serving", "api_key_secret"),
    ("image_build", "base_image"),
    ("image_build", "vllm_ref"),
    ("image_build", "aiter_ref"),
    ("campaign", "owner"),
    ("verification", "baseline"),
)
SECRET_ENV_NAMES = ("HF_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "MY_SECRET", "AWS_SESSION_TOKEN")
KEY_FLAGS = ("--api-key", "--hf-token", "--token", "--password", "--admin-api-key")
RETYPED = (None, 0, -3, 2.5, True, "text", [], {}, ["a"], {"k": 1}, "")

SETTINGS = settings(
    max_examples=150,  # ~10 s; each example loads, plans and renders a whole stack
    deadline=None,  # a first plan() imports the catalog; timing is not the property
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _random(seed: int, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{seed}".encode()).hexdigest()


def _token(kind: str, seed: int) -> str:
    """A fake secret of a given shape; random, so it cannot occur anywhere by chance."""
    h = _random(seed, kind)
    mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(h))
    return {
        "hf": "hf_" + mixed[:34],
        "sk": "sk-proj-Q7" + mixed[:40],
        "ghp": "ghp_" + mixed[:36],
        "aws": "AKIA" + h[:16].upper(),
        "glpat": "glpat-" + mixed[:20],
        "do": "dop_v1_" + h,
        "hex": h[:48],
        "b62": mixed[:32],
    }[kind]


@st.composite
def injection(draw: st.DrawFn) -> tuple[str, Any, str]:
    """(section, how to change it, the secret that must never show)."""
    seed = draw(st.integers(0, 2**32))
    kind = draw(st.sampled_from(["hf", "sk", "ghp", "aws", "glpat", "do", "hex", "b62"]))
    token = _token(kind, seed)
    plain = "pw" + _random(seed, "plain")[:12]  # only its place says it is a secret
    form = draw(st.sampled_from(["field", "url", "flag", "flag=", "arg", "env", "env-value"]))
    if form in ("field", "url"):
        section, field = draw(st.sampled_from(FREE_FORM))
        value = token if form == "field" else f"https://mirror:{plain}@hf.example.com"
        secret = token if form == "field" else plain
        return section, ("set", field, value), secret
    if form in ("flag", "flag="):
        flag = draw(st.sampled_from(KEY_FLAGS))
        args = [flag, plain] if form == "flag" else [f"{flag}={plain}"]
        return "engine", ("extend", "extra_args", args), plain
    if form == "arg":
        return "engine", ("extend", "extra_args", ["--served-model-name", token]), token
    name = draw(st.sampled_from(SECRET_ENV_NAMES))
    if form == "env":
        return "engine", ("env", name, plain), plain
    return "engine", ("env", "PIP_INDEX_URL", f"https://x:{token}@pypi.example.com"), token


@given(data=st.data(), stack=st.sampled_from(STACKS))
@SETTINGS
def test_a_mutated_stack_fails_cleanly_and_never_shows_a_secret(
    data: st.DataObject, stack: Path
) -> None:
    document = yaml.safe_load(stack.read_text())
    config: dict[str, Any] = document["config"]
    secrets: list[str] = []
    ops = data.draw(
        st.lists(st.sampled_from(["delete", "retype", "rename", "inject"]), min_size=1, max_size=4)
    )
    for op in ops:
        if op == "inject":
            section, change, secret = data.draw(injection())
            _inject(config, section, change)
            secrets.append(secret)
        else:
            _mutate(config, op, data)
    text = yaml.safe_dump({"config": config}, sort_keys=False)
    if data.draw(st.booleans()):
        text = _duplicate_a_key_line(text, data)
    name = stack.name  # Pulumi.<stack>.yaml: the stack keeps its name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        try:
            loaded = load_stack_file(str(path))
            resolved = plan(loaded.spec)
        except ConfigError as e:
            assert e.issues, str(e)
            for issue in e.issues:
                assert issue.subject and issue.detail, f"an issue without a path: {issue!r}"
            _assert_hidden(secrets, str(e), "the error")
            event(f"rejected ({type(e).__name__}) {'with' if secrets else 'without'} a secret")
            return
    event(f"accepted {'with' if secrets else 'without'} a secret")
    shown = {f.path: f.content for f in render_plan(resolved)}
    shown["amdfleet plan"] = format_plan(loaded, resolved)
    shown["amdfleet plan --json"] = json.dumps(resolved.model_dump(mode="json"))
    for where, content in shown.items():
        _assert_hidden(secrets, content, where)


def _assert_hidden(secrets: list[str], text: str, where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"an injected secret shows in {where}"


def _inject(config: dict[str, Any], section: str, change: tuple[Any, ...]) -> None:
    key = f"amdfleet:{section}"
    what, field, value = change
    if field is None:
        config[key] = value
        return
    if not isinstance(config.get(key), dict):
        config[key] = {}
    target: dict[str, Any] = config[key]
    if what == "set":
        target[field] = value
    elif what == "extend":
        current = target.get(field)
        target[field] = [*(current if isinstance(current, list) else []), *value]
    else:
        env = target.get("extra_env")
        target["extra_env"] = {**(env if isinstance(env, dict) else {}), field: value}


def _mutate(config: dict[str, Any], op: str, data: st.DataObject) -> None:
    paths = _paths(config, ())
    if op == "rename":
        paths = [p for p in paths if isinstance(p[-1], str)]
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    parent: Any = config
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "retype":
        parent[last] = copy.deepcopy(data.draw(st.sampled_from(RETYPED)))  # shared constants
    else:
        new = data.draw(st.sampled_from([f"{last}_x", str(last)[:-1] or "k", str(last).upper()]))
        parent[new] = parent.pop(last)


def _paths(node: Any, prefix: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _duplicate_a_key_line(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_][\w:.-]*:( |$)", line)]
    if not keyed:
        return text
    i = data.draw(st.sampled_from(keyed))
    return "".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
