"""What a stack may name a host by, how its host key is pinned, and how an IPv6 address
is written wherever amdfleet builds ``host:port``.

Host keys come from real ``ssh-keygen`` runs; the two security-key types (which
``ssh-keygen`` creates only with a FIDO device attached) are assembled from real key
material and checked to parse with the real ``ssh-keygen -l`` first.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from amdfleet.addresses import check_address, host_port
from amdfleet.config import HostSpec, load_stack_file, parse_stack
from amdfleet.errors import ConfigError, PlanError
from amdfleet.hostkeys import HOST_KEY_TYPES
from amdfleet.plan import DeploymentPlan, plan

KEYGEN_TYPES = {
    "ssh-ed25519": ["-t", "ed25519"],
    "ecdsa-sha2-nistp256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa-sha2-nistp384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa-sha2-nistp521": ["-t", "ecdsa", "-b", "521"],
    "ssh-rsa": ["-t", "rsa", "-b", "2048"],
}
FINGERPRINT = "SHA256:w2ElrziGPbjW0EQa56dzxUEebFVX5odsZBiQWG6hsj8"


def _keygen(tmp_path: Path, args: list[str]) -> str:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "h@lab", "-f", str(key), *args], check=True)
    return (tmp_path / "key.pub").read_text().strip()


def _fingerprint(line: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=line, capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


def _wire(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _strings(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        size = int.from_bytes(blob[offset : offset + 4], "big")
        out.append(blob[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return out


def _sk_line(tmp_path: Path, key_type: str) -> str:
    """A security-key host key line built around a real key's public part."""
    if key_type == "sk-ssh-ed25519@openssh.com":
        _, public = _strings(base64.b64decode(_keygen(tmp_path, ["-t", "ed25519"]).split()[1]))
        blob = _wire(key_type.encode(), public, b"ssh:")
    else:
        _, curve, point = _strings(
            base64.b64decode(_keygen(tmp_path, KEYGEN_TYPES["ecdsa-sha2-nistp256"]).split()[1])
        )
        blob = _wire(key_type.encode(), curve, point, b"ssh:")
    return f"{key_type} {base64.b64encode(blob).decode()}"


def _host(**fields: Any) -> HostSpec:
    base = {"name": "gpu-01", "address": "192.0.2.10", "key_path": "/k", "host_key": FINGERPRINT}
    return HostSpec.model_validate({**base, **fields})


@pytest.mark.parametrize("key_type", HOST_KEY_TYPES)
def test_every_openssh_host_key_type_is_accepted_as_line_and_fingerprint(
    tmp_path: Path, key_type: str
) -> None:
    if key_type in KEYGEN_TYPES:
        line = _keygen(tmp_path, KEYGEN_TYPES[key_type])
    else:
        line = _sk_line(tmp_path, key_type)
    assert line.split()[0] == key_type
    fingerprint = _fingerprint(line)  # the real ssh-keygen parses the line

    assert _host(host_key=line).host_key == line
    assert _host(host_key=fingerprint).host_key == fingerprint
    assert _host(host_key=f"{fingerprint}=").host_key == fingerprint  # padding normalised


@pytest.mark.parametrize(
    ("key_type", "declared"),
    [("ssh-ed25519", "ssh-rsa"), ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")],
)
def test_a_real_key_under_another_type_is_refused(
    tmp_path: Path, key_type: str, declared: str
) -> None:
    body = _keygen(tmp_path, KEYGEN_TYPES[key_type]).split()[1]
    with pytest.raises(ValueError, match=f"declared {declared} but it holds a '{key_type}' key"):
        _host(host_key=f"{declared} {body}")


@pytest.mark.parametrize(
    "address",
    [
        "192.0.2.10",
        "10.0.0.255",
        "2001:db8::10",
        "::1",
        "fe80::1",
        "gpu-01",
        "gpu-01.example.com",
        "gpu-01.example.com.",
        "xn--bcher-kva.example",
        "1host.example.com",
    ],
)
def test_addresses_and_host_names_are_accepted(address: str) -> None:
    assert check_address(address) == address
    assert _host(address=address, private_address=address).cluster_address == address


@pytest.mark.parametrize(
    ("address", "fix"),
    [
        ("ubuntu@192.0.2.10", "'user' field"),
        ("192.0.2.10:22", "port"),
        ("https://gpu-01.example.com/", "scheme"),
        ("10.0.0.300", "0-255"),
        ("10.0.0", "0-255"),
        ("[2001:db8::10]", "without brackets"),
        ("gpu_01.example.com", "letters, digits, dashes"),
        ("-gpu.example.com", "letters, digits, dashes"),
        ("gpu 01", "letters, digits, dashes"),
    ],
)
def test_malformed_addresses_are_refused_with_a_fix(address: str, fix: str) -> None:
    with pytest.raises(ValueError, match="not an IPv4/IPv6 address or a host name") as caught:
        check_address(address)
    assert fix in str(caught.value)


def test_credentials_in_an_address_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack("t", _stack(hosts=[_raw_host("h", "ssh://admin:hunter2@gpu-01")]))
    assert "hunter2" not in str(caught.value) and "admin" not in str(caught.value)
    assert "fleet.hosts[0].address" in caught.value.paths


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("2001:db8::10", 8000) == "[2001:db8::10]:8000"
    assert host_port("192.0.2.10", 8000) == "192.0.2.10:8000"
    assert host_port("gpu-01.example.com", 22) == "gpu-01.example.com:22"


# --- IPv6 through the planner ------------------------------------------------------------


def _raw_host(name: str, address: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": address, "key_path": "/k", "host_key": FINGERPRINT, **extra}


def _stack(
    hosts: list[dict[str, Any]], engine: str = "vllm", backend: str = "mp", **sections: Any
) -> dict[str, Any]:
    nodes = len(hosts)
    return {
        "fleet": {"hosts": hosts},
        "topology": {"accelerator": "mi300x", "nodes": nodes, "gpus_per_node": 8},
        "model": {"id": "llama-3.3-70b-instruct", "precision": "fp8"},
        "engine": {"name": engine},
        "parallelism": {"tp": 8, "pp": nodes, "backend": backend},
        "serving": {"max_model_len": 8192},
        "verification": {"enabled": False},
        **sections,
    }


def _ipv6_plan(engine: str = "vllm", backend: str = "mp", **sections: Any) -> DeploymentPlan:
    hosts = [
        _raw_host("gpu-a", "2001:db8::10", private_address="fd00::1"),
        _raw_host("gpu-b", "2001:db8::11", private_address="fd00::2"),
    ]
    return plan(parse_stack("v6", _stack(hosts, engine, backend, **sections)))


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_ipv6_endpoint_and_readiness_url_are_bracketed() -> None:
    deployment = _ipv6_plan(serving={"max_model_len": 8192, "host": "::", "port": 8080})
    assert deployment.endpoint == "http://[2001:db8::10]:8080"
    assert deployment.engine.readiness.base_url == "http://[::1]:8080"
    listen = _ipv6_plan(serving={"max_model_len": 8192, "host": "fd00::1"})
    assert listen.engine.readiness.base_url == "http://[fd00::1]:8000"
    assert _flag(listen.head.argv, "--host") == "fd00::1"  # the engine binds a bare address


def test_ipv6_sglang_dist_init_addr_is_bracketed() -> None:
    deployment = _ipv6_plan(engine="sglang")
    for node in deployment.nodes:
        assert _flag(node.argv, "--dist-init-addr") == "[fd00::1]:29500"


def test_ipv6_ray_address_is_bracketed_and_vllm_master_addr_is_bare() -> None:
    ray = _ipv6_plan(backend="ray")
    worker = ray.nodes[1].ray_argv
    assert _flag(worker, "--address") == "[fd00::1]:6379"
    assert _flag(worker, "--node-ip-address") == "fd00::2"
    mp = _ipv6_plan()
    assert _flag(mp.nodes[1].argv, "--master-addr") == "fd00::1"
    assert mp.nodes[1].env["VLLM_HOST_IP"] == "fd00::2"


def test_ipv4_addresses_are_written_as_before() -> None:
    hosts = [_raw_host("gpu-a", "192.0.2.10"), _raw_host("gpu-b", "192.0.2.11")]
    deployment = plan(parse_stack("v4", _stack(hosts, engine="sglang")))
    assert deployment.endpoint == "http://192.0.2.10:8000"
    assert _flag(deployment.nodes[1].argv, "--dist-init-addr") == "192.0.2.10:29500"


def test_the_same_machine_on_two_ports_is_two_hosts() -> None:
    hosts = [_raw_host("gpu-a", "192.0.2.10"), _raw_host("gpu-b", "192.0.2.10", port=2222)]
    assert len(parse_stack("two-ports", _stack(hosts)).fleet.hosts) == 2


# --- the rest of issue 9's stack checks ----------------------------------------------------


def test_every_duplicated_key_is_named_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dupes.yaml"
    path.write_text(
        "config:\n"  # 1
        "  amdfleet:fleet:\n"  # 2
        "    hosts:\n"  # 3
        "    - {name: a, connection: local}\n"  # 4
        "    - name: b\n"  # 5
        "      name: c\n"  # 6
        "  amdfleet:apiKey: {secure: abc}\n"  # 7
        "  amdfleet:apiKey: {secure: def}\n"  # 8
    )
    with pytest.raises(ConfigError) as caught:
        load_stack_file(str(path))
    assert caught.value.paths == ("fleet.hosts[1].name", "amdfleet:apiKey")
    assert "lines 5 and 6" in str(caught.value) and "lines 7 and 8" in str(caught.value)
    assert "abc" not in str(caught.value)


def test_a_placeholder_host_key_plans_with_a_warning_saying_how_to_get_the_real_one() -> None:
    deployment = plan(load_stack_file("mi355x-llama70b").spec)
    (warning,) = [w for w in deployment.warnings if "placeholder" in w]
    assert warning.startswith("fleet.hosts[0].host_key: ")
    assert "`pulumi up` refuses it" in warning
    address = deployment.head.address
    assert f"ssh-keyscan -t ed25519 {address} | ssh-keygen -lf -" in warning


def test_a_real_host_key_plans_without_the_placeholder_warning() -> None:
    deployment = plan(parse_stack("real", _stack([_raw_host("gpu-a", "192.0.2.10")])))
    assert not [w for w in deployment.warnings if "placeholder" in w]


def test_a_meta_fp8_model_id_says_which_checkpoint_replaced_it() -> None:
    stack = _stack(
        [_raw_host("gpu-a", "192.0.2.10")],
        model={"id": "meta-llama/Llama-3.1-405B-Instruct-FP8", "precision": "fp8"},
        weights={"hf_token_secret": "hfToken"},
    )
    deployment = plan(parse_stack("meta-fp8", stack))
    assert deployment.model.checkpoint == "amd/Llama-3.1-405B-Instruct-FP8-KV"
    (warning,) = [w for w in deployment.warnings if w.startswith("model.id names")]
    assert "meta-llama/Llama-3.1-405B-Instruct-FP8" in warning
    assert "does not run on ROCm" in warning
    assert "serving amd/Llama-3.1-405B-Instruct-FP8-KV instead" in warning
    assert "set model.checkpoint" in warning


def test_a_catalog_model_id_is_not_a_substitution() -> None:
    deployment = plan(parse_stack("plain", _stack([_raw_host("gpu-a", "192.0.2.10")])))
    assert not [w for w in deployment.warnings if w.startswith("model.id names")]


@pytest.mark.parametrize(
    "verification",
    [
        {"enabled": False},
        {"allow_no_benchmark": True, "accuracy": {"limit": 8}},
        {"scenarios": [], "allow_no_benchmark": True},
    ],
)
def test_no_benchmark_is_accepted_when_the_stack_says_so(verification: dict[str, Any]) -> None:
    stack = _stack([_raw_host("gpu-a", "192.0.2.10")], verification=verification)
    assert plan(parse_stack("opt-out", stack)).verification.input.scenarios == ()


def test_an_omitted_verification_section_is_refused() -> None:
    """Without a verification section the gate would measure nothing and still pass."""
    stack = _stack([_raw_host("gpu-a", "192.0.2.10")])
    del stack["verification"]
    with pytest.raises(PlanError) as caught:
        plan(parse_stack("omitted", stack))
    [issue] = caught.value.issues
    assert issue.subject == "verification"
    assert "measured nothing" in issue.detail
    assert "verification.scenarios" in issue.hint and "enabled: false" in issue.hint


def test_the_ray_port_is_free_for_the_api_without_ray() -> None:
    stack = _stack([_raw_host("gpu-a", "192.0.2.10")], serving={"port": 6379})
    assert plan(parse_stack("no-ray", stack)).serving.port == 6379


def test_a_file_without_the_config_wrapper_says_where_settings_go(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.bare.yaml"
    path.write_text(yaml.safe_dump({"amdfleet:topology": {"accelerator": "cpu"}}))
    with pytest.raises(ConfigError) as caught:
        load_stack_file(str(path))
    assert caught.value.paths == ("config",)
    assert "top-level keys are amdfleet:topology" in str(caught.value)
