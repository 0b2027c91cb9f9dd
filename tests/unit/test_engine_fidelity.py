"""Engine fidelity at plan time: pinned releases, their manifests, and the check of every
rendered flag and engine variable against the manifest of the version a stack runs.

The manifests are the committed fixtures generated from the engines' own code
(``amdfleet/catalog/manifests``); ``tests/e2e/test_engine_parsers.py`` checks the vLLM one
against vLLM's real parser, and the committed stacks against that parser.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from amdfleet import catalog
from amdfleet.catalog import engines as catalog_engines
from amdfleet.catalog.releases import AITER_SOURCE, VLLM_SOURCE, moving_tag
from amdfleet.config import load_stack_file, parse_stack, stack_names
from amdfleet.engines.manifest import check_flags, manifest
from amdfleet.errors import PlanError
from amdfleet.plan import plan
from tests.unit.test_image_plan import _sections

MANIFESTS = resources.files("amdfleet.catalog.manifests")
BRANCHES = ("main", "master", "dev/perf", "nightly")


def _plan_with(stack: str, **engine: Any) -> Any:
    sections = _sections(stack)
    sections["engine"] = {**sections["engine"], **engine}
    return plan(parse_stack(stack, sections))


def _refusal(stack: str, **engine: Any) -> PlanError:
    with pytest.raises(PlanError) as caught:
        _plan_with(stack, **engine)
    return caught.value


# -- pinned releases -------------------------------------------------------------------


def test_every_release_is_exact_and_has_its_manifest() -> None:
    for release in catalog.RELEASES:
        assert release.image is None or moving_tag(release.image) is None, release
        assert release.version[0].isdigit(), release
        found = manifest(release.engine, release.version)
        assert found is not None, f"no manifest for {release.engine} {release.version}"
        assert (found.engine, found.version) == (release.engine, release.version)
        assert (found.flags and found.regenerate.startswith("scripts/manifest-")) or (
            "scripts/manifest-" in found.regenerate
        )


def test_source_pins_are_release_tags_with_40_hex_commits_or_none_yet() -> None:
    for pin in (*VLLM_SOURCE, *AITER_SOURCE):
        assert pin.tag.startswith("v") and pin.tag not in BRANCHES
        assert pin.commit is None or len(pin.commit) == 40
        assert pin.commit is not None or "not recorded" in pin.source


@pytest.mark.parametrize("name", stack_names())
def test_committed_stacks_name_no_moving_tag_or_branch(name: str) -> None:
    spec = load_stack_file(name).spec
    for image in (spec.engine.image, spec.image_build.base_image):
        assert image is None or moving_tag(image) is None, image
    for ref in (spec.image_build.vllm_ref, spec.image_build.aiter_ref):
        assert ref is None or ref not in BRANCHES
    planned = plan(spec)
    assert planned.engine.version in catalog.versions(planned.engine.name)
    assert planned.engine.manifest is not None  # every committed stack is checked


def test_moving_tags() -> None:
    assert moving_tag("vllm/vllm-openai-rocm:latest") == "latest"
    assert moving_tag("rocm/vllm-dev:nightly") == "nightly"
    assert moving_tag("registry:5000/team/vllm") == "latest"  # no tag is latest
    assert moving_tag("vllm/vllm-openai-rocm:v0.32.0") is None
    assert moving_tag("rocm/vllm-dev:nightly_main_20250901") is None  # one dated push
    assert moving_tag(f"vllm/vllm-openai-rocm@sha256:{'a' * 64}") is None


def test_a_branch_ref_is_refused_naming_the_pins() -> None:
    sections = _sections("mi355x-llama70b")
    sections["image_build"] = {**sections["image_build"], "vllm_ref": "main"}
    with pytest.raises(PlanError) as caught:
        plan(parse_stack("mi355x-llama70b", sections))
    assert "image_build.vllm_ref" in caught.value.paths
    assert "'main' is not a vLLM release the catalog pins nor a full commit" in str(caught.value)
    assert "v0.32.0" in str(caught.value)


def test_an_unknown_engine_version_is_refused() -> None:
    error = _refusal("mi300x-llama405b-vllm", version="0.11.0")
    assert error.paths == ("engine.version",)
    assert "the catalog pins no vllm 0.11.0" in str(error) and "0.32.0" in str(error)


def test_the_plan_prints_the_engine_version_and_its_manifest() -> None:
    from amdfleet.cli.stack import format_plan

    loaded = load_stack_file("mi300x-llama405b-sglang")
    text = format_plan(loaded, plan(loaded.spec))
    assert "engine           sglang 0.5.8 (docker)" in text
    assert "checked against  catalog/manifests/sglang-0.5.8.json" in text


# -- the check of rendered flags and variables -----------------------------------------


def test_the_seed_flag_current_vllm_rejects_is_refused_from_extra_args() -> None:
    error = _refusal(
        "mi300x-llama405b-vllm", extra_args=["--enforce-eager", "--disable-log-requests"]
    )
    (issue,) = error.issues
    assert issue.subject == "engine.extra_args[1]"
    assert "vllm 0.32.0 has no option --disable-log-requests" in issue.detail
    assert "--enable-log-requests" in issue.hint  # the closest flag it has


def test_the_recipe_is_named_when_the_catalog_renders_a_rejected_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the seed-002 recipe did before the pin: the refusal names the recipe and its
    source, and how to get past it."""
    seed_recipe = next(r for r in catalog.RECIPES if "gfx950" in r.archs and r.args)
    old = seed_recipe.__class__(
        **{**seed_recipe.__dict__, "args": (*seed_recipe.args, ("--disable-log-requests", None))}
    )
    monkeypatch.setattr(
        catalog_engines, "RECIPES", tuple(old if r is seed_recipe else r for r in catalog.RECIPES)
    )
    error = _refusal("mi355x-llama70b")
    (issue,) = error.issues
    assert issue.subject == "engine.recipe"
    assert "--disable-log-requests" in issue.detail and seed_recipe.source in issue.detail
    assert "engine.recipe: false" in issue.hint


def test_a_dead_engine_variable_is_refused_and_others_are_not_judged() -> None:
    error = _refusal(
        "mi300x-llama405b-vllm",
        extra_env={"VLLM_USE_V1": "1", "NCCL_DEBUG": "INFO", "VLLM_ROCM_USE_AITER": "1"},
    )
    (issue,) = error.issues
    assert issue.subject == "engine.extra_env.VLLM_USE_V1"
    assert "vllm 0.32.0 does not read VLLM_USE_V1: the setting would do nothing" in issue.detail


def test_a_typo_in_a_variable_gets_the_closest_name() -> None:
    error = _refusal("mi300x-llama405b-vllm", extra_env={"VLLM_ROCM_USE_AITR": "1"})
    assert "did you mean VLLM_ROCM_USE_AITER?" in error.issues[0].hint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "bf16"], "'bf16' is not a choice of --dtype in vllm 0.32.0"),
        (["--enforce-eager", "yes"], "--enforce-eager is a switch in vllm 0.32.0"),
        (["--max-num-seq", "8", "--swap-spce", "4"], "vllm 0.32.0 has no option --swap-spce"),
    ],
)
def test_values_and_arity_are_checked(args: list[str], message: str) -> None:
    error = _refusal("mi300x-llama405b-vllm", extra_args=args)
    assert any(message in issue.detail for issue in error.issues), error


@pytest.mark.parametrize(
    ("stack", "args", "index"),
    [
        ("mi300x-llama405b-vllm", ["--max-num-seqs", "8", "pw0f1e2d3c4b5a"], 2),
        ("mi300x-llama405b-sglang", ["pw0f1e2d3c4b5a"], 0),
        ("mi300x-llama405b-tgi", ["pw0f1e2d3c4b5a"], 0),
    ],
)
def test_a_value_left_without_its_flag_is_refused_at_its_index_unshown(
    stack: str, args: list[str], index: int
) -> None:
    """What is left of ``--api-key VALUE`` once the flag line is deleted (issue 22, item
    6: found by the mutation property at scale): a bare word, refused where it stands
    (not blamed on amdfleet's rendering) and never quoted, as it may be the key."""
    error = _refusal(stack, extra_args=args)
    assert [i.subject for i in error.issues] == [f"engine.extra_args[{index}]"]
    assert "a value without its flag" in error.issues[0].detail
    assert "pw0f1e2d3c4b5a" not in str(error)


def test_flags_the_parser_takes_in_other_spellings_pass() -> None:
    """vLLM's FlexibleArgumentParser: JSON keys by dots, short options, unique prefixes
    (amdfleet itself writes ``--max_num_seqs`` as ``--max-num-seqs``)."""
    planned = _plan_with(
        "mi300x-llama405b-vllm",
        extra_args=["--max_num_seqs", "32", "--compilation-config.mode", "3", "-tp", "8"],
    )
    argv = planned.head.argv
    assert "--max-num-seqs" in argv and "--compilation-config.mode" in argv
    assert argv[argv.index("-tp") + 1] == "8"  # a short option is kept as written
    assert _plan_with("mi300x-llama405b-vllm", extra_args=["--enable-chunked"]) is not None


def test_a_deprecated_flag_is_a_warning() -> None:
    planned = _plan_with("mi300x-llama405b-vllm", extra_args=["--disable-cascade-attn"])
    (warning,) = [w for w in planned.warnings if "--disable-cascade-attn" in w]
    assert warning.startswith("engine.extra_args[0]: ") and "deprecated" in warning


def test_sglang_takes_prefixes_tgi_takes_exact_names() -> None:
    sglang = manifest("sglang", "0.5.8")
    tgi = manifest("tgi", catalog.versions("tgi")[0])
    assert sglang is not None and tgi is not None
    assert sglang.lookup("--tp") is not None  # argparse's unique prefix of --tp-size
    assert not check_flags(sglang, [("--tp", "8"), ("--context-length", "4096")])
    assert tgi.lookup("--num-shar") is None  # clap: no abbreviations
    assert not check_flags(tgi, [("--num-shard", "8"), ("--max-total-tokens", "16384")])
    (problem,) = check_flags(tgi, [("--num-shards", "8")])
    assert "--num-shard" in problem.hint


def test_manifests_say_where_they_come_from() -> None:
    for entry in MANIFESTS.iterdir():
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text())
        assert data["method"] in ("parser", "source"), entry.name
        assert data["source"] and data["regenerate"] and data["generated_on"]
        if data["method"] == "source":  # derived from source: file and commit cited
            assert "main.rs" in data["source"] or ".py" in data["source"]
            assert re.search(r"\b[0-9a-f]{40}\b", data["source"]), data["source"]
