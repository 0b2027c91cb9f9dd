"""Pure command builders for an engine service on a host, and parsers for what they print.

The EngineService provider uploads the rendered files into ``remote_dir`` and runs the
commands built here over a :class:`~amdfleet.remote.transport.connection.Connection`. Nothing in
this module does I/O.

On-host layout (``remote_dir`` is ``/opt/amdfleet/<stack>``, mode 0700)::

    launch.sh  engine.env  <unit>.service   rendered, not secret (no unit: docker runtime)
    secrets.env                             mode 0600, written by the provider only
    engine-secrets.yaml                     mode 0600, the API key for an engine that reads
                                            it from a config file (SGLang), written by
                                            launch.sh at each start
    engine.log  engine.pid                  the running engine (process runtime); the log
                                            mode 0600 (an engine may print its secrets)
    supervisor.pid  engine.restarts         its supervisor loop (remote/supervision.py)
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass

from amdfleet.remote.programs import program

SAFE_ROOT = "/opt/amdfleet/"
DEAD = "AMDFLEET_ENGINE_DEAD"
_STATUS_PREFIX = "AMDFLEET_HTTP "
_GENERATION_PREFIX = "AMDFLEET_GENERATION "
API_KEY_VAR = "AMDFLEET_API_KEY"
"""The variable holding the engine's API key on every node (secrets.env; the engines' own
key variables are set beside it)."""
GENERATION_PROMPT = "1+1="


@dataclass(frozen=True)
class EngineLayout:
    """Paths of one engine's files on a host."""

    remote_dir: str

    def __post_init__(self) -> None:
        normalized = posixpath.normpath(self.remote_dir)
        if not normalized.startswith(SAFE_ROOT) or normalized == SAFE_ROOT.rstrip("/"):
            raise ValueError(f"engine directory must be below {SAFE_ROOT}: {self.remote_dir!r}")

    def path(self, name: str) -> str:
        """Absolute path of ``name`` inside the engine directory."""
        return posixpath.join(self.remote_dir, name)

    @property
    def launch(self) -> str:
        """The launch script."""
        return self.path("launch.sh")

    @property
    def secrets(self) -> str:
        """The secrets env file (0600)."""
        return self.path("secrets.env")

    @property
    def log(self) -> str:
        """The engine's combined stdout/stderr."""
        return self.path("engine.log")

    @property
    def pid(self) -> str:
        """The engine's process-group id."""
        return self.path("engine.pid")

    # The completion watchdog's files: the same under every supervisor, so whichever
    # supervisor's stop runs also ends a watchdog another one left.

    @property
    def served(self) -> str:
        """Present once the engine's current start has served a completion (the watchdog
        counts failures from then on)."""
        return self.path("engine.served")

    @property
    def stopped_by(self) -> str:
        """The watchdog's reason for its last stop of the engine (absent: none)."""
        return self.path("engine.stopped-by")

    @property
    def watchdog_pid(self) -> str:
        """The watchdog's process-group id (it runs in a session of its own)."""
        return self.path("watchdog.pid")

    @property
    def watchdog_script(self) -> str:
        """The watchdog's sh text, where a unit's ``ExecStartPost=`` starts it (systemd)."""
        return self.path("watchdog.sh")


def remove_command(layout: EngineLayout) -> str:
    """Remove the engine directory (safe: the layout only allows paths below /opt/amdfleet),
    and /opt/amdfleet itself once no stack is left in it."""
    root = shlex.quote(SAFE_ROOT.rstrip("/"))
    return f"rm -rf -- {shlex.quote(layout.remote_dir)} && {{ rmdir -- {root} 2>/dev/null; true; }}"


def readiness_command(alive: str, base_url: str, paths: tuple[str, ...]) -> str:
    """One readiness check: prints ``DEAD`` when the shell test ``alive`` fails (the
    supervisor's :meth:`~amdfleet.remote.supervision.Supervisor.first_run_command`), else one
    ``AMDFLEET_HTTP <path> <status> <body>`` line per path (body on one line, cut at
    4 kB).

    Reads an optional ``Authorization`` header line from stdin, so an API key never
    appears in a command line. Uses curl when present, else python3.
    """
    urls = " ".join(shlex.quote(base_url.rstrip("/") + p) for p in paths)
    return (
        f"if ! {alive}; then echo {DEAD}; exit 0; fi; "
        "_af_hdr=$(cat); "
        f"for _af_url in {urls}; do "
        '_af_path="/${_af_url#*://*/}"; '
        "if command -v curl >/dev/null 2>&1; then "
        "_af_out=$(printf '%s\\n' \"$_af_hdr\" | curl -s -m 5 -H @- "
        "-w '\\n%{http_code}' \"$_af_url\" 2>/dev/null); "
        "else "
        f"_af_out=$(printf '%s\\n' \"$_af_hdr\" | python3 -c {shlex.quote(_PY_GET)} "
        '"$_af_url" 2>/dev/null); '
        "fi; "
        '_af_code=$(printf "%s" "$_af_out" | tail -n 1); '
        "_af_body=$(printf '%s' \"$_af_out\" | sed '$d' | tr '\\n' ' ' | cut -c1-4096); "
        f'echo "{_STATUS_PREFIX}$_af_path ${{_af_code:-000}} $_af_body"; '
        "done"
    )


_PY_GET = program("http_get.py")


def generation_command(
    base_url: str, served_name: str, timeout_s: float, secrets_file: str | None = None
) -> str:
    """One real generation on the host: a ``/v1/completions`` request for one token of
    ``served_name``, cut off after ``timeout_s``. Prints ``AMDFLEET_GENERATION <status>
    <body>`` (status 000 when nothing answered in time, body on one line, cut at 1 kB).

    ``/health`` is not enough: with a pipeline stage's node dead, vLLM's head still answers
    ``/health`` and ``/v1/models`` while every completion hangs (ENVIRONMENT.md).

    The API key comes from ``secrets_file`` on the host (the engine's ``secrets.env``,
    ``AMDFLEET_API_KEY``), read there into a shell variable and piped to the client: it is
    in no command line, and ``pulumi refresh`` (whose provider sees no secret input) can
    check a keyed engine too.
    """
    body = json.dumps(
        {"model": served_name, "prompt": GENERATION_PROMPT, "max_tokens": 1, "temperature": 0}
    )
    url = shlex.quote(base_url.rstrip("/") + "/v1/completions")
    limit = f"{max(timeout_s, 1):g}"
    key = (
        f"_af_key=$(sed -n 's/^{API_KEY_VAR}=//p' {shlex.quote(secrets_file)} 2>/dev/null "
        "| head -n 1); "
        if secrets_file
        else "_af_key=; "
    )
    return (
        f"{key}"
        '_af_hdr=; if [ -n "$_af_key" ]; then _af_hdr="Authorization: Bearer $_af_key"; fi; '
        "if command -v curl >/dev/null 2>&1; then "
        "_af_out=$(printf '%s\\n' \"$_af_hdr\" | curl -s -m "
        f"{limit} -H @- -H 'Content-Type: application/json' --data-binary {shlex.quote(body)} "
        f"-w '\\n%{{http_code}}' {url} 2>/dev/null); "
        "else "
        f"_af_out=$(printf '%s\\n' \"$_af_hdr\" | python3 -c {shlex.quote(_PY_POST)} "
        f"{url} {shlex.quote(body)} {limit} 2>/dev/null); "
        "fi; "
        '_af_code=$(printf "%s" "$_af_out" | tail -n 1); '
        "_af_body=$(printf '%s' \"$_af_out\" | sed '$d' | tr '\\n' ' ' | cut -c1-1024); "
        f'echo "{_GENERATION_PREFIX}${{_af_code:-000}} $_af_body"'
    )


_PY_POST = program("http_post.py")


def counter_command(url: str, counters: tuple[str, ...], timeout_s: float) -> str:
    """Print the sum of the samples of the Prometheus ``counters`` at ``url`` (an engine's
    ``/metrics``) as an integer, or nothing when nothing answered within ``timeout_s`` or no
    such counter is there. Uses curl and awk when curl is present, else python3.

    vLLM 0.32 serves ``/metrics`` without the API key (measured: 200 with
    ``VLLM_API_KEY`` set), so no key is sent."""
    names = " ".join(counters)
    limit = f"{max(timeout_s, 1):g}"
    awk = (
        'BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 } '
        "/^#/ { next } "
        '{ k = $1; sub(/[{].*/, "", k); if (k in want) { s += $NF; c++ } } '
        'END { if (c) printf "%.0f\\n", s }'
    )
    return (
        "if command -v curl >/dev/null 2>&1; then "
        f"curl -s -m {limit} {shlex.quote(url)} 2>/dev/null "
        f"| awk -v names={shlex.quote(names)} {shlex.quote(awk)}; "
        f"else python3 -c {shlex.quote(_PY_COUNTER)} {shlex.quote(url)} {limit} "
        f"{' '.join(shlex.quote(c) for c in counters)} 2>/dev/null; fi"
    )


_PY_COUNTER = program("counter_sum.py")


@dataclass(frozen=True)
class GenerationResult:
    """What one :func:`generation_command` saw: the HTTP status (0: no answer in time)."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        """The engine answered 200 with a completion choice."""
        return self.status == 200 and '"choices"' in self.body

    def describe(self, timeout_s: float) -> str:
        """Why it failed, for people."""
        if self.status == 0:
            return f"a one-token completion got no answer within {timeout_s:g} s"
        return f"a one-token completion answered {self.status}: {self.body[:200].strip()}"


def parse_generation(output: str) -> GenerationResult:
    """Parse the output of :func:`generation_command` (no line: no answer)."""
    for line in output.splitlines():
        if line.startswith(_GENERATION_PREFIX):
            code, _, body = line[len(_GENERATION_PREFIX) :].partition(" ")
            return GenerationResult(int(code) if code.isdigit() else 0, body)
    return GenerationResult(0, "")


@dataclass(frozen=True)
class ReadinessResult:
    """What one readiness check saw."""

    alive: bool
    statuses: dict[str, tuple[int, str]]

    def ready(self, paths: tuple[str, ...], served_name: str | None = None) -> bool:
        """All ``paths`` answered 200, and ``/v1/models`` lists ``served_name``."""
        if not self.alive:
            return False
        for path in paths:
            code, body = self.statuses.get(path, (0, ""))
            if code != 200:
                return False
            if path == "/v1/models" and served_name and served_name not in body:
                return False
        return True


def parse_readiness(output: str) -> ReadinessResult:
    """Parse the output of :func:`readiness_command`."""
    if DEAD in output:
        return ReadinessResult(alive=False, statuses={})
    statuses: dict[str, tuple[int, str]] = {}
    for line in output.splitlines():
        if not line.startswith(_STATUS_PREFIX):
            continue
        parts = line[len(_STATUS_PREFIX) :].split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            statuses[parts[0]] = (int(parts[1]), parts[2] if len(parts) > 2 else "")
    return ReadinessResult(alive=True, statuses=statuses)


def secrets_env(values: dict[str, str]) -> str:
    """Content of ``secrets.env``: literal KEY=VALUE lines, sorted."""
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"secret for {key} contains a line break")
    return "".join(f"{key}={values[key]}\n" for key in sorted(values))
