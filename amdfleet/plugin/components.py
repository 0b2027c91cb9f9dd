"""The package's components, built by the plugin (``construct``) for programs in any
Pulumi language: :data:`DEPLOYMENT`, one amdfleet stack as a component.

A Pulumi YAML (or TypeScript, ...) program declares it like any resource of the package::

    resources:
      llm:
        type: amdfleet:index:Deployment
        properties:
          stack: local               # a stack file: a name under stacks/, or a path
          secrets:
            apiKey: ${apiKey}        # each secret the stack names, as a secret

or gives the stack's sections themselves under ``config`` (``fleet``, ``topology``,
``model``, ... as in a stack file, without the ``amdfleet:`` prefix). The plugin loads and
validates the stack as a Python program does (:mod:`amdfleet.config`, the same errors),
checks its plan, then registers the very resources the Python program makes
(:func:`amdfleet.program.deploy`) as the component's children, and returns the stack's
outputs as the component's (``apiKey`` secret).

Inside the component are the Python program's own ``fleet`` and ``deployment``
components (the latter of the Python program's type ``amdfleet:index:Deployment`` too:
it is a local component, never constructed by the plugin). Keeping that tree as it is
keeps every child's type and name those of a stack deployed by the Python program.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.output import Unknown
from pulumi.provider.experimental import provider as p
from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.resource import DependencyResource
from pulumi.runtime import rpc

from amdfleet.config import StackSpec, load_from_values, load_stack_file
from amdfleet.errors import ConfigError, unknown_key_issue
from amdfleet.findings import config_issue
from amdfleet.plugin.values import from_python, map_to_python, to_python
from amdfleet.providers.resource import type_token

DEPLOYMENT = type_token("Deployment")
"""The type token of the package's Deployment component."""

INPUTS = ("stack", "config", "secrets")
"""The Deployment's inputs."""

OUTPUTS = {
    "endpoint": "endpoint",
    "model": "model",
    "api_key": "apiKey",
    "hosts": "hosts",
    "engine": "engine",
    "verification": "verification",
    "ready": "ready",
    "verified_at": "verifiedAt",
    "campaign": "campaign",
    "instances": "instances",
}
"""A stack output's name (:data:`amdfleet.program.OUTPUT_NAMES`) → the component's."""


def component_schemas() -> dict[str, dict[str, Any]]:
    """Type token → the schema of each component resource (``isComponent: true``)."""
    return {DEPLOYMENT: _deployment_schema()}


class PackageDeployment(pulumi.ComponentResource):
    """One amdfleet stack, deployed as a component (:data:`DEPLOYMENT`)."""

    outputs: dict[str, Any]
    """The component's outputs by their schema names."""

    def __init__(
        self,
        name: str,
        spec: StackSpec,
        secrets: Mapping[str, pulumi.Output[str] | None],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        from amdfleet.program import deploy

        super().__init__(DEPLOYMENT, name, None, opts)
        made = deploy(spec, secrets, opts=pulumi.ResourceOptions(parent=self))
        self.outputs = {OUTPUTS[key]: value for key, value in made.items()}
        self.register_outputs(self.outputs)


async def construct(request: p.ConstructRequest) -> p.ConstructResponse:
    """Build a Deployment for the engine: validate its inputs and the stack's plan (an
    :class:`~amdfleet.errors.AmdFleetError`, before anything is registered), register
    the component and its resources, and return its outputs once the resources exist
    (unknown in a preview).

    Raises ValueError for a type that is not a component of the package.
    """
    if request.resource_type != DEPLOYMENT:
        raise ValueError(f"amdfleet has no component {request.resource_type}; it has {DEPLOYMENT}")
    from amdfleet.verify.reference import checked_plan

    plain = {k: rpc.unwrap_rpc_secret(v) for k, v in map_to_python(request.inputs).items()}
    spec = load_deployment(request.name, plain, pulumi.get_stack())
    checked_plan(spec)  # a stack that cannot work fails here, as in a Python program
    secrets = {key: _secret(request.inputs["secrets"], key) for key in spec.secret_keys}
    component = PackageDeployment(request.name, spec, secrets, request.options)
    state = {key: await _property(value) for key, value in component.outputs.items()}
    urn = await component.urn.future()
    return p.ConstructResponse(
        urn=urn or "",
        state=state,
        state_dependencies={key: value.all_dependencies() for key, value in state.items()},
    )


def load_deployment(name: str, inputs: Mapping[str, Any], pulumi_stack: str) -> StackSpec:
    """The stack a Deployment's inputs name, validated as :mod:`amdfleet.config`
    validates a Python program's (the same errors), with every secret it references
    given under ``secrets``.

    ``stack`` names a stack file (loaded as ``amdfleet plan`` loads it: its secrets come
    from ``secrets``, never from the file); ``config`` holds the sections themselves, for a
    stack named ``pulumi_stack``. Raises :class:`ConfigError` naming the input.
    """
    source = f"Deployment {name}"
    issues = [unknown_key_issue(key, INPUTS) for key in inputs if key not in INPUTS]
    stack, sections, secrets = (inputs.get(key) for key in INPUTS)
    if secrets is None:
        secrets = {}
    if not isinstance(secrets, Mapping):
        issues.append(config_issue("secrets", _not_a_mapping(secrets), _SECRETS_HINT))
    if (stack is None) == (sections is None):
        issues.append(
            config_issue(
                "stack",
                "give either stack or config",
                "stack: the name of a stack file under stacks/ (e.g. local) or its path; "
                "config: the stack's sections (fleet, topology, model, ...) as an object",
            )
        )
    elif stack is not None and not isinstance(stack, str):
        issues.append(
            config_issue("stack", f"{_kind(stack)}, not a text", "a stack name, e.g. local")
        )
    elif sections is not None and not isinstance(sections, Mapping):
        issues.append(
            config_issue("config", _not_a_mapping(sections), "the stack's sections as an object")
        )
    if issues:
        raise ConfigError(issues, source)
    if isinstance(stack, str):
        loaded = load_stack_file(stack)
        missing = [k for k in loaded.spec.secret_keys if k not in secrets]
        if missing:
            hints = [config_issue(f"secrets.{k}", "not set", _SECRETS_HINT) for k in missing]
            raise ConfigError(hints, f"{source} (stack {loaded.source})")
        return loaded.spec
    return load_from_values(pulumi_stack, sections or {}, set(secrets), source, _how_to_set)


_SECRETS_HINT = "give each secret the stack names under secrets, as a secret (e.g. apiKey)"


def _how_to_set(spec: StackSpec, key: str) -> str:
    return f"set secrets.{key} of the Deployment (a secret value, e.g. from secret config)"


def _not_a_mapping(value: Any) -> str:
    return f"{_kind(value)}, not an object"


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _secret(secrets: PropertyValue, key: str) -> pulumi.Output[str]:
    """The secret ``key`` of the ``secrets`` input as a secret Output (whether or not the
    program marked it secret), carrying the input's dependencies; unknown in a preview
    when the program computes it."""
    deps: set[pulumi.Resource] = {DependencyResource(urn) for urn in secrets.all_dependencies()}
    value = secrets.value.get(key) if isinstance(secrets.value, Mapping) else None
    plain = None if value is None else rpc.unwrap_rpc_secret(to_python(value))
    known = value is not None and not isinstance(plain, Unknown)
    return pulumi.Output(
        deps, _resolved(plain if known else None), _resolved(known), _resolved(True)
    )


def _resolved(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def _property(value: Any) -> PropertyValue:
    """A component output on the wire: its value when known (else computed), secret if
    it is, with the URNs of the resources it comes from."""
    output = pulumi.Output.from_input(value)
    urns = {await resource.urn.future() for resource in await output.resources()}
    known = await output.is_known()
    # The wire's own unknown (the SDK marshals no Computed in a construct's state).
    wire = from_python(await output.future()) if known else PropertyValue(rpc.UNKNOWN)
    return wire.with_secret(await output.is_secret()).with_dependencies(
        {urn for urn in urns if urn}
    )


def _deployment_schema() -> dict[str, Any]:
    any_ = {"$ref": "pulumi.json#/Any"}
    object_ = {"type": "object", "additionalProperties": any_}
    return {
        "isComponent": True,
        "description": (
            "One amdfleet stack deployed for real: its hosts checked, image, weights and "
            "engine in place, the engine verified (output parity, benchmark, accuracy) "
            "before the Deployment is ready. The same resources a Python program of the "
            "stack makes, as this component's children."
        ),
        "inputProperties": {
            "stack": {
                "type": "string",
                "description": (
                    "The stack file to deploy: a name under amdfleet's stacks/ (e.g. "
                    "`local`) or the path of a Pulumi.<name>.yaml (relative: from the project's "
                    "directory). Give this or `config`."
                ),
            },
            "config": {
                "type": "object",
                "additionalProperties": any_,
                "description": (
                    "The stack's sections as a stack file has them without the "
                    "`amdfleet:` prefix (fleet, topology, model, engine, parallelism, "
                    "serving, weights, verification, ...), for a stack named after the "
                    "Pulumi stack. Give this or `stack`."
                ),
            },
            "secrets": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "secret": True,
                "description": (
                    "The value of each secret the stack names (serving.api_key_secret, "
                    "default `apiKey`; weights.hf_token_secret; ...), by that name."
                ),
            },
        },
        "properties": {
            "endpoint": {
                "type": "string",
                "description": "The OpenAI-compatible base URL (`http://host:port/v1`).",
            },
            "model": {"type": "string", "description": "The model name clients request."},
            "apiKey": {
                "type": "string",
                "secret": True,
                "description": "The API key clients send (absent when the stack has none).",
            },
            "hosts": {
                "type": "array",
                "items": any_,
                "description": "Each host's facts (name, address, GPUs, driver).",
            },
            "engine": {**object_, "description": "The engine as launched (argv, env, ...)."},
            "verification": {
                **object_,
                "description": "The verification report: parity, benchmark, accuracy, verdict.",
            },
            "ready": {
                "type": "boolean",
                "description": "Whether every gate of the verification passed.",
            },
            "verifiedAt": {"type": "string", "description": "When the verification ran."},
            "campaign": {
                **object_,
                "description": "The stack's lifetime: started, expires, what happens then.",
            },
            "instances": {
                "type": "array",
                "items": any_,
                "description": "A cloud stack's instances with their price.",
            },
        },
        "required": ["endpoint", "model", "hosts", "engine", "verification", "ready"],
    }
