"""Provider props models: what the program builds is what the provider parses back.

The values go through the same forms the plugin delivers (numbers as floats, secrets
wrapped, a legacy state's pickled ``__provider`` beside them); a typo'd key or a wrong
type is rejected with an error naming the property path, and a secret's value never
shows in that error.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime import rpc

from amdfleet.config import VerificationSpec
from amdfleet.errors import PropsError
from amdfleet.plan.verification import verification_input
from amdfleet.providers.engine_image import EngineImageProps
from amdfleet.providers.engine_node import EngineFile, ReadinessCheck
from amdfleet.providers.engine_service import EngineServiceProps
from amdfleet.providers.fabric_check import FabricCheckProps, FabricRun
from amdfleet.providers.model_weights import ModelWeightsProps
from amdfleet.providers.props import PROVIDER_KEY, ProviderProps
from amdfleet.providers.readiness import VerificationGateProps
from amdfleet.providers.ssh_host import SshHostProps
from amdfleet.providers.verification import VerificationProps
from amdfleet.remote.requirement import HostRequirement
from amdfleet.remote.transport.target import HostTarget

HOST = HostTarget(
    name="node-1",
    address="10.0.0.5",
    port=2222,
    user="ops",
    key_path="~/.ssh/id_ed25519",
    host_key="SHA256:abc",
)
TOKEN = "hf_Secret0123456789abcdef"
API_KEY = "key-4c2e9d"

SERVICE = EngineServiceProps(
    host=HOST,
    remote_dir="/opt/amdfleet/demo",
    files={"launch.sh": EngineFile(content="#!/bin/sh\nexec vllm serve\n", mode=0o755)},
    secret_env={"AMDFLEET_API_KEY": API_KEY},
    container="amdfleet-demo",
    readiness=ReadinessCheck(
        serves_api=True,
        base_url="http://127.0.0.1:8000",
        paths=("/health", "/v1/models"),
        served_name="tiny",
        timeout_s=600,
    ),
)
EXAMPLES: list[ProviderProps] = [
    SshHostProps(
        host=HOST,
        requirement=HostRequirement(
            accelerator="mi300x", gpu_count=8, min_shm_bytes=1 << 30, weights_bytes=1 << 40
        ),
    ),
    EngineImageProps(
        host=HOST,
        image="rocm/vllm:latest",
        build_dir="/opt/amdfleet/demo-image",
        timeout_s=10800,
    ),
    ModelWeightsProps(
        host=HOST,
        repo="acme/tiny",
        cache_dir="/root/.cache/huggingface",
        hf_token=TOKEN,
        timeout_s=3600,
    ),
    SERVICE,
    VerificationProps(
        base_url="http://10.0.0.5:8000",
        model="tiny",
        api_key=API_KEY,
        spec=verification_input(
            VerificationSpec.model_validate(
                {
                    "scenarios": [{"name": "c2", "num_prompts": 16, "max_concurrency": 2}],
                    "thresholds": {"min_success_rate": 1.0},
                }
            ),
            None,
        ),
        engine_fingerprint="files|digest",
        tokenizer_host=HOST,
        tokenizer_path="/models/tiny",
        report_dir=".amdfleet/reports/demo",
    ),
    VerificationGateProps(passed=False, failures=[("ttft", "<= 1", "2")], verdict_table="t"),
    FabricCheckProps(
        kind="rccl",
        runs=(FabricRun(host=HOST, command="docker run ... all_reduce_perf -b 8", reports=True),),
        work_dir="/opt/amdfleet/demo-fabric",
        container="amdfleet-demo-fabric",
        gate_bytes=8 << 30,
        min_busbw_gbps=304.0,
        timeout_s=1800,
    ),
]


def through_engine(value: Any) -> Any:
    """``value`` as a provider method receives it: every number a float, secrets (the
    ``secret_env``/``hf_token``/``api_key`` inputs) wrapped, and ``__provider`` beside them
    as in the outputs of a stack created by the dynamic providers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [through_engine(v) for v in value]
    return {k: through_engine(v) for k, v in value.items()}


def received(props: ProviderProps) -> dict[str, Any]:
    inputs = through_engine(props.to_inputs())
    for key in props.SECRET_FIELDS:
        inputs[key] = rpc.wrap_rpc_secret(inputs[key])
    return {**inputs, PROVIDER_KEY: "pickled-provider"}


@pytest.mark.parametrize("props", EXAMPLES, ids=lambda p: type(p).__name__)
def test_what_the_program_builds_the_provider_parses_back(props: ProviderProps) -> None:
    assert type(props).from_inputs(received(props)) == props


def test_float_numbers_from_the_engine_become_ints() -> None:
    inputs = received(SERVICE)
    assert inputs["readiness"]["timeout_s"] == 600.0
    assert inputs["files"]["launch.sh"]["mode"] == 493.0
    parsed = EngineServiceProps.from_inputs(inputs)
    assert parsed.readiness.timeout_s == 600 and type(parsed.readiness.timeout_s) is int
    assert parsed.files["launch.sh"].mode == 0o755 and parsed.host.port == 2222
    assert parsed.secret_env == {"AMDFLEET_API_KEY": API_KEY}  # unwrapped


def test_a_float_with_a_fraction_is_not_an_int() -> None:
    inputs = received(SERVICE)
    inputs["readiness"]["timeout_s"] = 600.5
    with pytest.raises(PropsError) as caught:
        EngineServiceProps.from_inputs(inputs)
    assert caught.value.paths == ("readiness.timeout_s",)
    assert "fractional part (got 600.5)" in str(caught.value)


def test_a_typo_in_a_key_is_rejected_with_its_path_and_the_likely_key() -> None:
    inputs = received(SERVICE)
    inputs["readiness"]["timeout"] = inputs["readiness"].pop("timeout_s")
    with pytest.raises(PropsError) as caught:
        EngineServiceProps.from_inputs(inputs)
    assert set(caught.value.paths) == {"readiness.timeout", "readiness.timeout_s"}
    message = str(caught.value)
    assert message.startswith("invalid resource properties in EngineServiceProps (2 problems):")
    assert "readiness.timeout: unknown key (hint: did you mean 'timeout_s'?)" in message
    assert "readiness.timeout_s: Field required" in message


@pytest.mark.parametrize(
    ("props", "path", "value", "hint"),
    [
        (EXAMPLES[0], ("requirement", "gpu_cont"), 8, "did you mean 'gpu_count'?"),
        (SERVICE, ("files", "launch.sh", "mod"), 493, "did you mean 'mode'?"),
        (EXAMPLES[4], ("spec", "thresholds", "min_sucess_rate"), 1, "did you mean"),
        (EXAMPLES[2], ("revison",), "main", "did you mean 'revision'?"),
    ],
)
def test_an_unknown_key_anywhere_is_named(
    props: ProviderProps, path: tuple[str, ...], value: Any, hint: str
) -> None:
    inputs = received(props)
    parent = inputs
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(PropsError) as caught:
        type(props).from_inputs(inputs)
    assert caught.value.paths == (".".join(path),)
    assert hint in str(caught.value)


def test_a_wrong_type_is_named() -> None:
    inputs = received(EXAMPLES[1])
    inputs["host"]["port"] = "ssh"
    inputs["keep_on_delete"] = "sometimes"
    with pytest.raises(PropsError) as caught:
        EngineImageProps.from_inputs(inputs)
    assert caught.value.paths == ("host.port", "keep_on_delete")
    assert "host.port: Input should be a valid integer" in str(caught.value)


def test_an_invalid_secret_is_named_without_its_value() -> None:
    inputs = received(EXAMPLES[2])
    inputs["hf_token"] = rpc.wrap_rpc_secret(["hf_Leaked000111222333"])
    with pytest.raises(PropsError) as caught:
        ModelWeightsProps.from_inputs(inputs)
    assert caught.value.paths == ("hf_token",)
    assert "hf_Leaked" not in str(caught.value)


def test_the_verification_input_refuses_repeated_scenario_names() -> None:
    inputs = received(EXAMPLES[4])
    inputs["spec"]["scenarios"].append(inputs["spec"]["scenarios"][0])
    with pytest.raises(PropsError) as caught:
        VerificationProps.from_inputs(inputs)
    assert caught.value.paths == ("spec",)
    assert "scenario names must be unique; repeated: c2" in str(caught.value)


def test_outputs_carry_no_secret_and_the_urn_only_when_there_is_one() -> None:
    assert "hf_token" not in EXAMPLES[2].to_outputs(path="/x")
    assert "secret_env" not in SERVICE.to_outputs()
    assert "api_key" not in EXAMPLES[4].to_outputs()
    assert "resource_urn" not in SERVICE.to_outputs()
    urn = "urn:pulumi:test::amdfleet::amdfleet:index:EngineService::e"
    with_urn = SERVICE.model_copy(update={"resource_urn": urn})
    assert with_urn.to_outputs(running=True)["resource_urn"] == urn
    assert with_urn.to_outputs(running=True)["running"] is True


def test_program_side_values_replace_their_fields_and_typos_are_refused() -> None:
    inputs = SERVICE.to_inputs(secret_env="<an Output>", resource_urn="<its URN>")
    assert (inputs["secret_env"], inputs["resource_urn"]) == ("<an Output>", "<its URN>")
    assert "resource_urn" not in SERVICE.to_inputs()  # sent only when given
    with pytest.raises(TypeError, match="EngineServiceProps has no field secrets_env"):
        SERVICE.to_inputs(secrets_env={})


def test_state_written_before_the_rename_holds_the_readiness_check_as_probe() -> None:
    inputs = received(SERVICE)
    inputs["probe"] = inputs.pop("readiness")
    assert EngineServiceProps.from_inputs(inputs).readiness == SERVICE.readiness


def test_props_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        SERVICE.remote_dir = "/elsewhere"  # type: ignore[misc]
