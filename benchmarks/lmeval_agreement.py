"""Check that amdfleet's GSM8K scoring agrees with lm-evaluation-harness on the same responses.

Runs lm-eval's own ``gsm8k`` task (its installed ``gsm8k.yaml``, pointed at the local
data files instead of the hub) with ``--model local-completions`` against an endpoint,
logs every sample, then compares with amdfleet:

1. prompts: amdfleet's 5-shot prompt for every document equals lm-eval's context;
2. per-sample scoring: amdfleet's strict/flexible extraction and exact match on
   lm-eval's own recorded responses equal lm-eval's filtered answers and metrics;
3. aggregates: amdfleet's scores and stderrs over those responses equal lm-eval's.

With ``--stub`` (the default) the endpoint is the scripted test server, answering each
problem in one of several shapes built from its reference answer (correct ``#### N``,
``$1,234``, negatives, a trailing period, decimals, no number, wrong numbers), so the
scores are far from zero; ``--url`` points at a real server instead (a random-weight
model scores ~0, which checks prompts and plumbing only). ``--amdfleet`` also runs
``amdfleet eval`` against the same endpoint and compares its scores.

lm-eval is installed into its own venv (``--lmeval-venv``, created with
``pip install lm-eval`` if missing); it is never a dependency of amdfleet.

    .venv/bin/python benchmarks/lmeval_agreement.py --limit 200 --amdfleet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from amdfleet.verify.gsm8k import (  # noqa: E402
    fewshot_prompts,
    flexible_extract,
    is_correct,
    load_problems,
    mean_with_stderr,
    strict_extract,
)
from tests.support.openai_server import OpenAIServer, Script  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "gsm8k"
TASK = "gsm8k_amdfleet_local"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--data-path", type=Path, default=DATA)
    parser.add_argument("--url", help="a real endpoint instead of the scripted stub server")
    parser.add_argument("--model", default="stub-model")
    parser.add_argument("--tokenizer", help="tokenizer dir for lm-eval (real servers)")
    parser.add_argument("--lmeval-venv", type=Path, default=Path("/tmp/lmeval-venv"))
    parser.add_argument("--amdfleet", action="store_true", help="also run `amdfleet eval`")
    args = parser.parse_args()

    test, train = load_problems(args.data_path)
    python = _lmeval_python(args.lmeval_venv)
    script = Script(answers=_scripted_answers(test[: args.limit]))
    with OpenAIServer(script) as stub, tempfile.TemporaryDirectory() as tmp:
        url = args.url or stub.url
        samples, results = _run_lmeval(python, url, args, Path(tmp))
        report = _compare(samples, results, test, train, args.limit)
        if args.amdfleet:
            ours = _run_amdfleet(url, args, Path(tmp))
            report["amdfleet_eval"] = ours
            report["agree"] = report["agree"] and all(
                ours[key] == results[key]
                for key in ("exact_match,strict-match", "exact_match,flexible-extract")
            )
    print(json.dumps(report, indent=2))
    return 0 if report["agree"] else 1


def _lmeval_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "lm-eval[api]", "transformers"], check=True
        )
    return python


def _scripted_answers(test: list[Any]) -> dict[str, str]:
    answers = {}
    for i, problem in enumerate(test):
        gold = problem.answer.split("#### ")[-1].strip()
        number = gold.replace(",", "")
        shapes = [
            f"We compute step by step.\n#### {gold}",  # strict and flexible right
            f"So she makes ${gold} in total.",  # flexible only ($ removed)
            f"The answer is {number}.",  # flexible only (no ####)
            f"#### {int(number) + 1 if number.lstrip('-').isdigit() else 0}",  # both wrong
            f"First 12, then -3, finally {number}.00 dollars",  # decimals: wrong
            "I cannot solve this.",  # no number at all
            f"#### {gold}\n\nQuestion: something else #### 7",  # first #### wins strictly
            f"It is {number}, not -{number} or 1,000,000",  # flexible takes the last
        ]
        answers[problem.question] = shapes[i % len(shapes)]
    return answers


def _task_yaml(python: Path, data_path: Path, out: Path) -> Path:
    source = subprocess.run(
        [
            str(python),
            "-c",
            "import lm_eval, pathlib; "
            "print(pathlib.Path(lm_eval.__file__).parent / 'tasks/gsm8k/gsm8k.yaml')",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    text = Path(source).read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("task:"):
            line = f"task: {TASK}"
        elif line.startswith("dataset_path:"):
            line = "dataset_path: json"
        elif line.startswith("dataset_name:"):
            line = (
                "dataset_name: null\ndataset_kwargs:\n  data_files:\n"
                f"    train: {data_path.resolve() / 'train.jsonl'}\n"
                f"    test: {data_path.resolve() / 'test.jsonl'}"
            )
        elif line.startswith("tag:") or line.startswith("  - math_word_problems"):
            continue
        lines.append(line)
    target = out / "tasks" / f"{TASK}.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("\n".join(lines) + "\n")
    return target.parent


def _run_lmeval(
    python: Path, url: str, args: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tasks = _task_yaml(python, args.data_path, tmp)
    model_args = [
        f"model={args.model}",
        f"base_url={url.rstrip('/')}/v1/completions",
        "num_concurrent=8",
        "tokenized_requests=False",
        "max_retries=1",
    ]
    if args.tokenizer:
        model_args.append(f"tokenizer={args.tokenizer}")
    else:
        model_args.append("tokenizer_backend=None")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.setdefault("OPENAI_API_KEY", os.environ.get("AMDFLEET_API_KEY", "none"))
    out = tmp / "lmeval"
    subprocess.run(
        [
            str(python),
            "-m",
            "lm_eval",
            "run",
            "--model",
            "local-completions",
            "--tasks",
            TASK,
            "--include_path",
            str(tasks),
            "--model_args",
            ",".join(model_args),
            "--limit",
            str(args.limit),
            "--log_samples",
            "--output_path",
            str(out),
        ],
        check=True,
        env=env,
    )
    samples_file = next(out.rglob(f"samples_{TASK}_*.jsonl"))
    results_file = next(p for p in out.rglob("results_*.json"))
    lines = samples_file.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028
    samples = [json.loads(line) for line in lines if line]
    return samples, json.loads(results_file.read_text())["results"][TASK]


def _compare(
    samples: list[dict[str, Any]],
    results: dict[str, Any],
    test: list[Any],
    train: list[Any],
    limit: int,
) -> dict[str, Any]:
    prompts = fewshot_prompts(test, train, 5, limit)
    by_doc: dict[int, dict[str, Any]] = {}
    for s in samples:
        by_doc.setdefault(s["doc_id"], {})[s["filter"]] = s
    prompt_mismatches, scoring_mismatches = [], []
    strict_items, flexible_items = [], []
    for doc_id, filters in sorted(by_doc.items()):
        strict_sample, flexible_sample = filters["strict-match"], filters["flexible-extract"]
        context = strict_sample["arguments"]["gen_args_0"]["arg_0"]
        if context != prompts[doc_id]:
            prompt_mismatches.append(doc_id)
        response = strict_sample["resps"][0][0]
        target = test[doc_id].answer
        ours = (strict_extract(response), flexible_extract(response))
        theirs = (strict_sample["filtered_resps"][0], flexible_sample["filtered_resps"][0])
        ours_em = (is_correct(ours[0], target), is_correct(ours[1], target))
        theirs_em = (bool(strict_sample["exact_match"]), bool(flexible_sample["exact_match"]))
        if ours != theirs or ours_em != theirs_em:
            scoring_mismatches.append(
                {"doc_id": doc_id, "response": response, "ours": ours, "lm_eval": theirs}
            )
        strict_items.append(ours_em[0])
        flexible_items.append(ours_em[1])
    strict, flexible = mean_with_stderr(strict_items), mean_with_stderr(flexible_items)
    aggregate = {
        "strict-match": [strict.value, results["exact_match,strict-match"]],
        "strict-match stderr": [strict.stderr, results["exact_match_stderr,strict-match"]],
        "flexible-extract": [flexible.value, results["exact_match,flexible-extract"]],
        "flexible-extract stderr": [
            flexible.stderr,
            results["exact_match_stderr,flexible-extract"],
        ],
    }
    aggregate_equal = all(abs(a - b) < 1e-12 for a, b in aggregate.values())
    return {
        "documents": len(by_doc),
        "prompt_mismatches": prompt_mismatches,
        "scoring_mismatches": scoring_mismatches,
        "aggregate (amdfleet, lm-eval)": aggregate,
        "agree": not prompt_mismatches and not scoring_mismatches and aggregate_equal,
    }


def _run_amdfleet(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / "amdfleet"
    subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "amdfleet"),
            "eval",
            url,
            "--model",
            args.model,
            "--limit",
            str(args.limit),
            "--data-path",
            str(args.data_path),
            "--out",
            str(out),
        ],
        check=True,
    )
    return dict(json.loads((out / "gsm8k.json").read_text()))


if __name__ == "__main__":
    sys.exit(main())
