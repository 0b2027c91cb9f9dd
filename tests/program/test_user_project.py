"""amdfleet from the user's own project, outside this repository (issue 23, item 3).

amdfleet's wheel is built here (``pip wheel --no-build-isolation --no-index``: nothing is
downloaded) from a copy of the source, then installed with ``--no-deps --no-index`` into
a fresh virtualenv outside the repository. That virtualenv takes amdfleet's dependencies
(pulumi, pydantic, ...) from the repository's ``.venv`` through a ``.pth`` path line: a
path line only adds the directory, so the ``.venv``'s editable-install finder (a ``.pth``
file there) never runs and amdfleet itself can only come from the wheel. ``amdfleet new``
(the wheel's console script) scaffolds the project; the real Pulumi CLI on a
``file://`` backend ``up``s the committed ``local`` stack through the wheel's
``pulumi-resource-amdfleet`` (the plugin entry ``amdfleet new`` wrote), the endpoint
answers a completion, the wheel's ``amdfleet status`` run in the project says serving,
and ``destroy`` leaves no engine process and no engine directory.

Three edits to the scaffolded stack: ``serving.port``, a free port instead of 18000 (so this
test may run while another ``local`` deployment serves on this machine), the parity
reference kept in the project as a relative path (resolved against the project, where
Pulumi runs the program: an installed amdfleet has no checkout to resolve it against),
and a quick verification (the parity gate kept; the whole one is test_local_stack's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pulumi
import pytest
import yaml

from tests.e2e.vllm_server import missing_parts
from tests.support.local_stack import assert_answers_paris, quick_verification
from tests.support.ports import free_port
from tests.support.processes import alive
from tests.support.pulumi_cli import PulumiRun, PulumiWorkspace

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("pyproject.toml", "README.md", "amdfleet", "templates", "stacks", "schema")
"""What the wheel is built from (amdfleet/data/ links to the last three)."""
API_KEY = "user-project-key-5b1f0c"
ENGINE_DIR = Path("/opt/amdfleet/local")
PARITY_REFERENCE = Path("/var/lib/amdfleet/models/smollm2-135m-instruct/parity-reference.json")

pytestmark = [pytest.mark.pulumi, pytest.mark.vllm, pytest.mark.slow]


def test_a_users_project_deploys_local_with_the_installed_wheel(tmp_path: Path) -> None:
    missing = missing_parts()
    if missing:
        pytest.fail(f"the local stack needs {', '.join(missing)}; run scripts/setup")
    wheel = _build_wheel(tmp_path)
    venv = _install(wheel, tmp_path / "venv")
    env = _user_env(venv)
    _assert_amdfleet_is_the_wheels(venv, env)

    project = tmp_path / "my-llm"
    new = _run([str(venv / "bin" / "amdfleet"), "new", str(project)], env, cwd=tmp_path)
    assert f"wrote {project / 'Pulumi.yaml'}" in new.stdout
    plugin = yaml.safe_load((project / "Pulumi.yaml").read_text())["plugins"]["providers"]
    assert plugin == [{"name": "amdfleet", "path": str(venv / "bin")}]
    port = free_port()
    stack_file = project / "Pulumi.local.yaml"
    text = stack_file.read_text().replace("port: 18000", f"port: {port}", 1)
    # the parity reference kept with the project: relative to it, as for a checkout's stack
    (project / "references").mkdir()
    shutil.copy(PARITY_REFERENCE, project / "references" / "local.json")
    stack_file.write_text(text.replace(str(PARITY_REFERENCE), "references/local.json", 1))
    assert "reference: references/local.json" in stack_file.read_text()
    document = yaml.safe_load(stack_file.read_text())  # a quick verification (the gate kept)
    config = document["config"]
    config["amdfleet:verification"] = quick_verification(config["amdfleet:verification"])
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    ws = PulumiWorkspace(tmp_path / "cli")  # its home, backend and passphrase...
    ws.root = project  # ...for the project amdfleet new wrote
    ws.env = {k: v for k, v in ws.env.items() if k not in ("PYTHONPATH", "PULUMI_BACKEND_URL")}
    ws.env.update(env)
    ws.run(["login", f"file://{ws.backend}"], timeout=60)
    ws.run(["stack", "init", "local"], timeout=60)
    readme = (project / "README.md").read_text()
    assert "pulumi config set --secret amdfleet:apiKey -s local" in readme
    unset = ws.preview("local", check=False)  # before the secret: the command that sets it
    assert not unset.ok
    assert "`pulumi config set --secret amdfleet:apiKey -s local`" in unset.text, unset.text
    ws.run(
        ["config", "set", "--secret", "amdfleet:apiKey", "--stack", "local"],
        stdin=API_KEY,
        timeout=60,
    )
    try:
        run = ws.up("local")
        assert set(run.changed().values()) == {"create"} and len(run.changed()) == 9
        types = {r["type"] for r in ws.resources("local").values()}
        assert {"amdfleet:index:EngineService", "pulumi:providers:amdfleet"} <= types
        outputs = ws.outputs("local", show_secrets=True)
        assert outputs["ready"] is True
        parity = {(r["scope"], r["metric"]): r for r in outputs["verification"]["verdict"]}
        assert parity[("parity", "match_share")]["passed"] is True  # the project's reference
        assert outputs["endpoint"] == f"http://127.0.0.1:{port}/v1"
        assert outputs["model"] == "smollm2-135m-instruct"
        assert outputs["api_key"] == API_KEY
        assert API_KEY not in ws.backend_text() and API_KEY not in run.text
        assert_answers_paris(outputs["endpoint"], API_KEY, "smollm2-135m-instruct")
        status = subprocess.run(
            [str(venv / "bin" / "amdfleet"), "status", "local", "--json"],
            cwd=project,
            env=ws.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["verdict"] == "serving", status.stdout
        assert API_KEY not in status.stdout + status.stderr
        engine_pid = int((ENGINE_DIR / "engine.pid").read_text())
        assert alive(engine_pid)
    finally:
        destroyed = _destroy_logging_plugins(ws)
    assert destroyed.ok, destroyed.stderr[-4000:]
    launched = set(
        re.findall(r"Launching plugin 'amdfleet \(resource\)' from '([^']+)'", destroyed.stderr)
    )
    assert launched == {str(venv / "bin" / "pulumi-resource-amdfleet")}
    assert not alive(engine_pid)
    assert _processes_running(venv) == []  # nor the plugin, nor anything of the venv
    assert not ENGINE_DIR.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert ws.resources("local") == {}


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the source (a build in place writes build/ and
    egg-info into the checkout), offline, with the .venv's own setuptools."""
    have = metadata.version("setuptools")
    if tuple(int(part) for part in have.split(".")[:2]) < (70, 1):
        pytest.fail(
            f"building the wheel offline needs setuptools>=70.1, not {have}: run scripts/setup"
        )
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        _clean_env(),
        cwd=tmp_path,
    )
    (wheel,) = out.glob("amdfleet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert "pulumi-resource-amdfleet = amdfleet.plugin.server:main" in scripts
    assert "amdfleet = amdfleet.cli:main" in scripts
    for data in (
        "amdfleet/data/templates/launch.sh.j2",
        "amdfleet/data/stacks/Pulumi.local.yaml",
        "amdfleet/data/schema/stack.schema.json",
        "amdfleet/catalog/manifests/vllm-0.32.0.json",
        "amdfleet/verify/parity_prompts.json",
    ):
        assert data in names
    return wheel


def _install(wheel: Path, venv: Path) -> Path:
    """A fresh virtualenv with the wheel alone installed; dependencies from the .venv."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], _clean_env(), cwd=venv.parent)
    (site,) = venv.glob("lib/python3*/site-packages")
    dependencies = Path(pulumi.__file__).resolve().parents[1]  # the .venv's site-packages
    (site / "amdfleet-dependencies.pth").write_text(f"{dependencies}\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        _clean_env(),
        cwd=venv.parent,
    )
    return venv


def _assert_amdfleet_is_the_wheels(venv: Path, env: dict[str, str]) -> None:
    """The project's python imports amdfleet and its plugin from the wheel's copy."""
    probe = (
        "import json, sys, amdfleet, amdfleet.plugin.server as plugin;"
        "print(json.dumps([amdfleet.__file__, plugin.__file__,"
        " [type(f).__module__ for f in sys.meta_path]]))"
    )
    found = _run([str(venv / "bin" / "python"), "-c", probe], env, cwd=venv.parent)
    package, plugin, finders = json.loads(found.stdout)
    (site,) = venv.glob("lib/python3*/site-packages")
    assert Path(package) == site / "amdfleet" / "__init__.py"
    assert Path(plugin) == site / "amdfleet" / "plugin" / "server.py"
    assert not any("editable" in finder for finder in finders), finders
    script = (venv / "bin" / "pulumi-resource-amdfleet").read_text().splitlines()[0]
    assert script == f"#!{venv / 'bin' / 'python'}"


def _destroy_logging_plugins(ws: PulumiWorkspace) -> PulumiRun:
    """``pulumi destroy`` with the engine's log on stderr (which plugin binary it ran)."""
    return ws.run(
        ["destroy", "--yes", "--stack", "local", "--logtostderr", "-v=9"],
        check=False,
        timeout=600,
    )


def _user_env(venv: Path) -> dict[str, str]:
    """A user's shell: no PYTHONPATH (which would put this checkout's amdfleet first)."""
    env = _clean_env()
    env["PATH"] = os.pathsep.join(
        [
            p
            for p in env["PATH"].split(os.pathsep)
            if not (Path(p) / "pulumi-resource-amdfleet").exists()
        ]
    )
    return env


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], env: dict[str, str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _processes_running(venv: Path) -> list[str]:
    """Command lines of live processes that run something from ``venv``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not alive(int(proc.name)):
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(venv) in argv:
            found.append(argv)
    return found
