"""cloud-init user-data: the generated host key, the document and its inverse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from amdfleet.clouds.userdata import (
    CloudConfigError,
    cloud_config,
    generate_host_key,
    public_key_line,
    read_cloud_config,
)
from amdfleet.errors import ConfigError
from amdfleet.remote.transport.ssh import parse_host_key

USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP3VX9V8eGLyd7GW6YuyQmnDKvV9uUzLVu6v9sXQf73D me"


def test_host_key_pair_is_ed25519_and_its_repr_hides_the_private_key() -> None:
    pair = generate_host_key()
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_line.startswith("ssh-ed25519 AAAA") and pair.public_line.endswith(
        " amdfleet"
    )
    assert parse_host_key(pair.public_line).key_type == "ssh-ed25519"
    assert "PRIVATE" not in repr(pair) and pair.private_openssh not in repr(pair)


@pytest.mark.parametrize("user", ["root", "hotaisle"])
def test_cloud_config_round_trips(user: str) -> None:
    pair = generate_host_key()
    text = cloud_config(pair, user, USER_KEY)
    document = yaml.safe_load(text)
    assert text.startswith("#cloud-config\n")
    assert document["ssh_deletekeys"] is True and document["ssh_genkeytypes"] == []
    assert document.get("disable_root") is (False if user == "root" else None)
    keys = read_cloud_config(text)
    assert (keys.host_private, keys.host_public) == (pair.private_openssh, pair.public_line)
    assert (keys.user, keys.authorized_keys) == (user, (USER_KEY,))
    assert "PRIVATE" not in repr(keys)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh_keys: {}", "does not start with '#cloud-config'"),
        ("#cloud-config\n- a list", "not a YAML mapping"),
        ("#cloud-config\nssh_keys: [", "not YAML"),
        ("#cloud-config\nssh_keys: {ed25519_public: x}", "ed25519_private is missing"),
    ],
)
def test_malformed_cloud_config_is_a_clear_error(text: str, expected: str) -> None:
    with pytest.raises(CloudConfigError, match=expected):
        read_cloud_config(text)


def test_public_key_line_reads_pub_or_derives_it(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", str(key)], check=True
    )
    assert public_key_line(str(key)) == Path(f"{key}.pub").read_text().strip()
    derived_from = tmp_path / "bare"
    derived_from.write_bytes(key.read_bytes())
    assert public_key_line(str(derived_from)).split() == public_key_line(str(key)).split()[:2]


def test_public_key_line_errors_name_the_path_not_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n")
    with pytest.raises(ConfigError) as caught:
        public_key_line(str(bad))
    assert str(bad) in str(caught.value) and "c2VjcmV0" not in str(caught.value)
    assert "ssh_key_path" in str(caught.value)
    with pytest.raises(ConfigError, match="missing"):
        public_key_line(str(tmp_path / "missing"))
