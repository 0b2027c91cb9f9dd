"""Host-key pins: the host key amdfleet generates for a cloud instance."""

from __future__ import annotations

from amdfleet.hostkeys import generate_host_key, parse_host_key


def test_host_key_pair_is_ed25519_and_its_repr_hides_the_private_key() -> None:
    pair = generate_host_key()
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_line.startswith("ssh-ed25519 AAAA") and pair.public_line.endswith(
        " amdfleet"
    )
    assert parse_host_key(pair.public_line).key_type == "ssh-ed25519"
    assert "PRIVATE" not in repr(pair) and pair.private_openssh not in repr(pair)
