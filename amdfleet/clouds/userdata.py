"""cloud-init user-data that pins an instance's SSH host key before it boots.

amdfleet generates each instance's ed25519 host key itself
(:func:`amdfleet.hostkeys.generate_host_key`) and hands it to the cloud in
the user-data, so the first SSH connection can already check the key it expects: nothing
is trusted on first use. The document uses cloud-init's SSH module (its keys are
documented in cloud-init's module reference, "SSH" section,
https://docs.cloud-init.io/en/latest/reference/modules.html#ssh, whose text is the
docstring of ``cloudinit/config/cc_ssh.py``; the docs search here did not index that
page, the module's source was read instead):

``ssh_keys``
    host keys to install, as ``<type>_private`` / ``<type>_public`` pairs
    (``ed25519_private``, ``ed25519_public``);
``ssh_deletekeys: true``
    delete the host keys the image came with;
``ssh_genkeytypes: []``
    generate no other host key, so the injected key is the only one sshd can present;
``ssh_authorized_keys`` / ``users[].ssh_authorized_keys``
    the user's public key (for root, ``disable_root: false``: cloud-init otherwise
    prefixes root's keys with a command that refuses the login).

The host's private key is a secret: it goes to the cloud in the user-data and nowhere
else (no output, state, log or message of amdfleet holds it).
:class:`~amdfleet.hostkeys.HostKeyPair`'s repr omits it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from amdfleet.errors import ConfigError
from amdfleet.findings import config_issue
from amdfleet.hostkeys import HostKeyPair, parse_host_key
from amdfleet.remote.transport.ssh import public_key_from_private

HEADER = "#cloud-config"


@dataclass(frozen=True)
class CloudConfigKeys:
    """What :func:`read_cloud_config` finds in a document :func:`cloud_config` wrote."""

    host_private: str = field(repr=False)
    host_public: str
    user: str
    authorized_keys: tuple[str, ...]


class CloudConfigError(ValueError):
    """A cloud-config document is not one amdfleet wrote (names what is missing)."""


def cloud_config(host_key: HostKeyPair, user: str, authorized_key: str) -> str:
    """The ``#cloud-config`` document: ``host_key`` as the only host key, and
    ``authorized_key`` (a public key line) allowed to log in as ``user``."""
    document: dict[str, Any] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": host_key.private_openssh,
            "ed25519_public": host_key.public_line,
        },
    }
    if user == "root":
        document["disable_root"] = False
        document["ssh_authorized_keys"] = [authorized_key]
    else:
        document["users"] = [
            "default",
            {"name": user, "ssh_authorized_keys": [authorized_key]},
        ]
    return f"{HEADER}\n{yaml.safe_dump(document, sort_keys=False, default_flow_style=False)}"


def read_cloud_config(text: str) -> CloudConfigKeys:
    """The host key, user and authorized keys of a document :func:`cloud_config` wrote.

    Raises CloudConfigError naming what is missing or malformed (never quoting a key).
    """
    if not text.startswith(HEADER):
        raise CloudConfigError(f"user-data does not start with {HEADER!r}")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CloudConfigError(f"user-data is not YAML: {type(e).__name__}") from None
    if not isinstance(document, dict):
        raise CloudConfigError("user-data is not a YAML mapping")
    keys = document.get("ssh_keys")
    private = keys.get("ed25519_private") if isinstance(keys, dict) else None
    public = keys.get("ed25519_public") if isinstance(keys, dict) else None
    if not isinstance(private, str) or "OPENSSH PRIVATE KEY" not in private:
        raise CloudConfigError("ssh_keys.ed25519_private is missing or not an OpenSSH key")
    if not isinstance(public, str):
        raise CloudConfigError("ssh_keys.ed25519_public is missing")
    user, authorized = _user_keys(document)
    return CloudConfigKeys(private, public, user, authorized)


def public_key_line(private_key_path: str) -> str:
    """The public key line of the private key at ``private_key_path`` (``~`` expanded):
    ``<path>.pub`` when it exists, else derived from the private key.

    Raises ConfigError (field ``ssh_key_path``) naming the path, never key material.
    """
    path = Path(private_key_path).expanduser()
    pub = Path(f"{path}.pub")
    if pub.is_file():
        try:
            line = pub.read_text().strip()
            parse_host_key(line)
        except (OSError, UnicodeDecodeError, ValueError):
            raise _key_error(pub, "is not an OpenSSH public key line") from None
        return line
    try:
        return public_key_from_private(path)
    except (OSError, ValueError) as e:
        raise _key_error(path, str(e)) from None


def _user_keys(document: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    users = document.get("users")
    if users is None:
        keys = document.get("ssh_authorized_keys")
        if document.get("disable_root") is not False or not _strings(keys):
            raise CloudConfigError(
                "no user: expected users[] with ssh_authorized_keys, or root's "
                "ssh_authorized_keys with disable_root: false"
            )
        return "root", tuple(keys)
    named = [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []
    if len(named) != 1 or not isinstance(named[0].get("name"), str):
        raise CloudConfigError("users[] must hold exactly one user with a name")
    keys = named[0].get("ssh_authorized_keys")
    if not _strings(keys):
        raise CloudConfigError(f"users[{named[0]['name']!r}].ssh_authorized_keys is missing")
    return named[0]["name"], tuple(keys)


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _key_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        [
            config_issue(
                "ssh_key_path",
                f"{path}: {problem}",
                "name an unencrypted OpenSSH private key (ssh-keygen -t ed25519 -N '')",
            )
        ]
    )
