"""Loading a stack: through ``pulumi.Config`` inside a Pulumi program, or from its file.

Secrets (the API key, the Hugging Face token) are separate keys set with ``pulumi config
set --secret``; the schema only names them, so a stack file kept in a repository never
holds a secret in plain text.

This module is the only code that touches ``pulumi.Config``. The same schema is loaded
without Pulumi by :func:`load_stack_file` (for ``amdfleet plan/render``): it reads the
YAML, checks that secret keys are stored encrypted, and never decrypts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from amdfleet import secretscan
from amdfleet.config.image_build import HOST_NAME_TAG, SSH_HOST_TAG
from amdfleet.config.stack import SECRET_KEY_FIELDS, SECTIONS, StackSpec
from amdfleet.errors import ConfigError, unknown_key_issue
from amdfleet.findings import Finding, config_issue
from amdfleet.pydantic_issues import validation_issues

NAMESPACE = "amdfleet"
STACKS_DIR = (Path(__file__).parent.parent / "data" / "stacks").resolve()
"""The committed stacks: this checkout's ``stacks/`` (``amdfleet/data/stacks`` links to it),
or the copies an installed amdfleet carries there."""


class SecretRef(BaseModel):
    """A secret config key: whether it is set (encrypted), never its value."""

    model_config = ConfigDict(frozen=True)

    key: str
    present: bool


class LoadedStack(BaseModel):
    """A validated stack plus the state of the secrets it references."""

    model_config = ConfigDict(frozen=True)

    spec: StackSpec
    source: str
    secrets: tuple[SecretRef, ...]

    @property
    def missing_secrets(self) -> tuple[str, ...]:
        """Secret keys the stack references but the stack file does not set."""
        return tuple(s.key for s in self.secrets if not s.present)


def stack_path(name_or_path: str, stacks_dir: Path = STACKS_DIR) -> Path:
    """Resolve a stack name ('mi355x-llama70b') or a path to a stack file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return candidate
    return stacks_dir / f"Pulumi.{name_or_path}.yaml"


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    """Names of the stacks in ``stacks_dir``, sorted."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def load_stack_file(name_or_path: str, stacks_dir: Path = STACKS_DIR) -> LoadedStack:
    """Load and validate a stack file without Pulumi.

    Raises :class:`ConfigError` listing every problem (with field paths and hints) if the
    file is missing, is not YAML, has unknown or mistyped keys, or stores a secret key
    in plain text.
    """
    path = stack_path(name_or_path, stacks_dir)
    if not path.is_file():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise ConfigError(
            [config_issue("stack", f"no stack file at {path}", f"known stacks: {known}")]
        )
    try:
        document = _load_yaml(path.read_text(), source=str(path))
    except yaml.YAMLError as e:
        raise ConfigError(
            [
                config_issue(
                    "file",
                    f"not valid YAML: {secretscan.redact(str(e))}",
                    "indent with spaces (never tabs) and quote values containing ': '",
                )
            ],
            str(path),
        ) from e
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    values, secrets, issues = _split_config(document, source=str(path))
    if issues:
        raise ConfigError(issues, str(path))
    plain_secrets = {k: values.pop(k) for k in _declared_secret_keys(values) if k in values}
    spec = parse_stack(name, values, source=str(path))
    refs = _secret_refs(spec, secrets, plain_secrets, source=str(path))
    return LoadedStack(spec=spec, source=str(path), secrets=refs)


def parse_stack(name: str, sections: Mapping[str, Any], source: str = "") -> StackSpec:
    """Validate the ``amdfleet:*`` sections of a stack into a :class:`StackSpec`."""
    valid = (*SECTIONS, "description")
    issues = [unknown_key_issue(k, valid) for k in sections if k not in valid]
    data = {"name": name, **{k: v for k, v in sections.items() if k in valid}}
    # A secret pasted into a plain field is rejected first, and never echoed.
    found = secretscan.find_secrets(data)
    try:
        spec = StackSpec.model_validate(data)
    except ValidationError as e:
        invalid = validation_issues(
            e,
            StackSpec,
            where="stack",
            described_in="amdfleet/config/",
            conceal=_may_be_secret,
            tags=(HOST_NAME_TAG, SSH_HOST_TAG),
        )
        issues += [_stack_name_issue(name) if i.subject == "name" else i for i in invalid]
    if issues or found:
        raise ConfigError(secretscan.screen_issues(issues, found), source)
    return spec


def load_from_pulumi() -> tuple[StackSpec, dict[str, Any]]:
    """Read the stack through ``pulumi.Config`` inside a Pulumi program.

    Returns the spec and a mapping of secret key → ``pulumi.Output`` (secret). Raises
    :class:`ConfigError` when a key is unknown or invalid, when a secret is stored in
    plain text, or when a referenced secret is not set: before any resource exists.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = pulumi.Config(NAMESPACE)
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    keys = sorted(k.split(":", 1)[1] for k in everything if k.startswith(f"{NAMESPACE}:"))
    secret = {k for k in keys if runtime_config.is_config_secret(f"{NAMESPACE}:{k}")}
    values = {k: _config_value(config.get(k)) for k in keys if k not in secret}
    source = f"stack {pulumi.get_stack()}"
    project = pulumi.get_project()
    spec = load_from_values(
        pulumi.get_stack(),
        values,
        secret,
        source=source,
        how_to_set=lambda spec, key: _config_set_hint(spec, key, project),
    )
    return spec, {key: config.get_secret(key) for key in spec.secret_keys}


def load_from_values(
    name: str,
    values: Mapping[str, Any],
    secret_keys: Collection[str],
    source: str,
    how_to_set: Callable[[StackSpec, str], str] | None = None,
) -> StackSpec:
    """Validate a stack given as its sections' values (the ``amdfleet:*`` config keys
    without the namespace) and the names of the secrets that are set, as a Pulumi
    program (or a component given the same sections) has them.

    Raises :class:`ConfigError` when a key is unknown or invalid, when a secret is given
    among the plain values, or when a secret the stack references is not set (its hint
    from ``how_to_set``, else ``pulumi config set --secret``).
    """
    values = dict(values)
    plain_secrets = {k: values.pop(k) for k in _declared_secret_keys(values) if k in values}
    spec = parse_stack(name, values, source=source)
    refs = _secret_refs(spec, {k: True for k in secret_keys}, plain_secrets, source=source)
    missing = [_missing_secret_issue(spec, ref.key, how_to_set) for ref in refs if not ref.present]
    if missing:
        raise ConfigError(missing, source)
    return spec


def _config_value(text: str | None) -> Any:
    """A config value as the engine stores it: JSON for structured values, else text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_config(
    document: Any, source: str
) -> tuple[dict[str, Any], dict[str, Any], list[Finding]]:
    if isinstance(document, dict) and document and "config" not in document:
        return {}, {}, [_no_config_wrapper_issue(document)]
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        return {}, {}, [config_issue("config", "the file must be a mapping with a 'config:' key")]
    values: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    issues: list[Finding] = []
    for raw_key, value in (document.get("config") or {}).items():
        namespace, _, key = str(raw_key).partition(":")
        if namespace != NAMESPACE or not key:
            issues.append(_foreign_key_issue(str(raw_key), key or namespace))
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secure[key] = value
        else:
            values[key] = value
    return values, secure, issues


def _foreign_key_issue(raw_key: str, key: str) -> Finding:
    why = secretscan.describe(raw_key)
    if why:  # a value pasted as a key: named by where it is, never echoed
        return config_issue(
            "config", f"a key holds {why}; a stack file is not secret", secretscan.HINT
        )
    return config_issue(
        raw_key, "keys must be in the 'amdfleet' namespace", f"write it as 'amdfleet:{key}'"
    )


def _no_config_wrapper_issue(document: Mapping[Any, Any]) -> Finding:
    keys = [str(k) for k in document]
    sections = [k.removeprefix(f"{NAMESPACE}:") for k in keys]
    looks_like_settings = any(k in (*SECTIONS, "description") for k in sections)
    found = f"; its top-level keys are {', '.join(keys[:6])}" if looks_like_settings else ""
    return config_issue(
        "config",
        f"the file has no 'config:' key{found}",
        "put the settings under a top-level 'config:' key, each section as an "
        "'amdfleet:<section>' key indented below it (e.g. 'config:' then '  amdfleet:fleet:')",
    )


def _stack_name_issue(name: str) -> Finding:
    suggestion = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "my-stack"
    return config_issue(
        "name",
        f"stack name {name!r} is not lower-case letters, digits and dashes (the name comes "
        "from the stack file name Pulumi.<name>.yaml, or the Pulumi stack name)",
        f"rename the file to Pulumi.{suggestion}.yaml (and the Pulumi stack to {suggestion})",
    )


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that records every mapping key written twice (YAML lets the later one
    silently win) with its path and both line numbers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.paths: dict[int, tuple[str, ...]] = {}
        self.duplicates: list[tuple[tuple[str, ...], int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        path = self.paths.get(id(node), ())
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            self.paths[id(value_node)] = (*path, key)
            line = key_node.start_mark.line + 1
            if key in first_line and key != "<<":
                self.duplicates.append(((*path, key), first_line[key], line))
            first_line.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        path = self.paths.get(id(node), ())
        for i, child in enumerate(node.value):
            self.paths[id(child)] = (*path, f"[{i}]")
        return super().construct_sequence(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    """Parse a stack file; a key written twice in one mapping is a ConfigError."""
    loader = _StrictLoader(text)
    try:
        document = loader.get_single_data() or {}
    finally:
        loader.dispose()
    if loader.duplicates:
        found = sorted(loader.duplicates, key=lambda d: d[1])  # in file order
        raise ConfigError([_duplicate_key_issue(*d) for d in found], source)
    return document


def _duplicate_key_issue(path: tuple[str, ...], first: int, second: int) -> Finding:
    return config_issue(
        _yaml_path(path),
        f"written twice, on lines {first} and {second}; YAML would silently keep only the "
        f"second (line {second})",
        "merge the two into one entry and delete the other",
    )


def _yaml_path(path: tuple[str, ...]) -> str:
    """A stack file's key path as issues name fields: ``config`` and the namespace go."""
    parts = list(path)
    if len(parts) > 1 and parts[0] == "config":
        parts = parts[1:]
        section = parts[0].removeprefix(f"{NAMESPACE}:")
        if section in (*SECTIONS, "description"):  # 'amdfleet:serving', 'port' -> serving.port
            parts[0] = section
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


def _declared_secret_keys(values: Mapping[str, Any]) -> set[str]:
    """Secret key names the raw sections reference (before validation); a field left out
    names its default."""
    names = [_raw_value(values, path) for path in SECRET_KEY_FIELDS]
    # a list above: a mistyped value (a list, a mapping) is not hashable
    return {n for n in names if isinstance(n, str) and n not in SECTIONS}


def _raw_value(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _default_at(path)
        node = node[part]
    return node


def _default_at(path: tuple[str, ...]) -> str | None:
    """The default key name of the secret-name field at ``path`` of a stack."""
    model: type[BaseModel] = StackSpec
    for part in path[:-1]:
        annotation = model.model_fields[part].annotation
        model = next(a for a in (annotation, *get_args(annotation)) if _is_model(a))
    default = model.model_fields[path[-1]].default
    return default if isinstance(default, str) else None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _secret_refs(
    spec: StackSpec, secure: Mapping[str, Any], values: Mapping[str, Any], source: str
) -> tuple[SecretRef, ...]:
    plain = [k for k in spec.secret_keys if k in values]
    if plain:
        raise ConfigError(
            [
                config_issue(
                    f"amdfleet:{k}",
                    "secret is stored in plain text",
                    f"remove the line, then run `pulumi config set --secret {k}` and type the "
                    "value at its prompt or pipe it on stdin (a value on the command line "
                    "lands in shell history); rotate it if the file was shared",
                )
                for k in plain
            ],
            source,
        )
    return tuple(SecretRef(key=k, present=k in secure) for k in spec.secret_keys)


def _missing_secret_issue(
    spec: StackSpec, key: str, how_to_set: Callable[[StackSpec, str], str] | None = None
) -> Finding:
    return config_issue(
        f"amdfleet:{key}",
        "secret is referenced by the stack but not set",
        how_to_set(spec, key) if how_to_set else _config_set_hint(spec, key),
    )


def _config_set_hint(spec: StackSpec, key: str, project: str = NAMESPACE) -> str:
    # `pulumi config set KEY` puts a bare key in the project's namespace: amdfleet's own
    # project may drop the prefix, a user's project (amdfleet new) must not.
    name = key if project == NAMESPACE else f"{NAMESPACE}:{key}"
    return (
        f"run `pulumi config set --secret {name} -s {spec.name}` and type the value at its "
        "prompt, or pipe it on stdin (a value on the command line lands in shell history)"
    )


def _may_be_secret(loc: tuple[Any, ...], value: Any) -> bool:
    return bool(secretscan.describe(str(value)))
