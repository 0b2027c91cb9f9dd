"""A plain application using an amdfleet stack: read its outputs, check it is ready,
ask the model a question.

    python examples/consumer/client.py local
    python examples/consumer/client.py local --outputs outputs.json   # saved earlier

Reads ``pulumi stack output --json --show-secrets`` (or a file holding that JSON) and
calls the OpenAI-compatible endpoint with the stack's API key.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx


def stack_outputs(stack: str, saved: Path | None) -> dict[str, Any]:
    """The stack's outputs, secrets included (they stay in this process)."""
    if saved is not None:
        data: dict[str, Any] = json.loads(saved.read_text())
        return data
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    outputs: dict[str, Any] = json.loads(text)
    return outputs


def ask(outputs: dict[str, Any], question: str) -> str:
    """One chat completion against the stack's endpoint."""
    if not outputs.get("ready"):  # as of the last `pulumi up`; the request below is the live test
        raise SystemExit("the stack is not ready: its verification has not passed")
    headers = {"Authorization": f"Bearer {outputs['api_key']}"} if outputs.get("api_key") else {}
    response = httpx.post(
        f"{outputs['endpoint']}/chat/completions",
        headers=headers,
        json={
            "model": outputs["model"],
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 64,
        },
        timeout=120,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stack")
    parser.add_argument("--outputs", type=Path, help="a file with the outputs JSON")
    parser.add_argument("--question", default="What is 12 * 7?")
    args = parser.parse_args()
    print(ask(stack_outputs(args.stack, args.outputs), args.question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
