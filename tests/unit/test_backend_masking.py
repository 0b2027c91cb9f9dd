"""The Pulumi backend's credentials masked in text amdfleet relays (amdfleet.pulumi_backend).

The texts are shaped like what the Pulumi CLI (v3.274.1) prints when the PostgreSQL
backend refuses a login (``unable to open state database "postgres://..."``, where the
CLI itself puts ``[credential]`` for the password of the URL it was given) and when another
update holds the stack's lock (``****:****``); here they carry a password, as a URL from
anywhere else would. The end-to-end checks, with a real server and the real CLI, are in
tests/program/test_postgres_state.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amdfleet.pulumi_backend import backend_credentials, mask_backend

PASSWORD = "s3cr3t-Passw0rd"
URL = f"postgres://pulumi:{PASSWORD}@127.0.0.1:5432/state?sslmode=verify-full"
NO_HOME = {"PULUMI_HOME": "/nonexistent"}  # no `pulumi login` URL on this machine counts
REFUSED = (
    'error: unable to open state database "postgres://pulumi:wrong-guess@127.0.0.1:5432/state": '
    'failed to ping PostgreSQL: pq: password authentication failed for user "pulumi"'
)


def test_any_url_password_is_masked_and_the_rest_kept() -> None:
    masked = mask_backend(REFUSED, env=NO_HOME)
    assert "wrong-guess" not in masked
    assert 'unable to open state database "postgres://pulumi:***@127.0.0.1:5432/state"' in masked
    assert 'password authentication failed for user "pulumi"' in masked


def test_the_backend_password_is_masked_outside_a_url_too() -> None:
    env = {**NO_HOME, "PULUMI_BACKEND_URL": URL}
    text = f"connecting with {PASSWORD} to {URL}"
    masked = mask_backend(text, env=env)
    assert PASSWORD not in masked
    assert masked == (
        "connecting with *** to postgres://pulumi:***@127.0.0.1:5432/state?sslmode=verify-full"
    )


def test_a_percent_encoded_password_is_masked_as_written_and_decoded() -> None:
    env = {**NO_HOME, "PULUMI_BACKEND_URL": "postgres://pulumi:p%40ss%2Fw0rd@db:5432/state"}
    assert backend_credentials(env) == ["p%40ss%2Fw0rd", "p@ss/w0rd"]
    assert mask_backend("said p@ss/w0rd and p%40ss%2Fw0rd", env=env) == "said *** and ***"


def test_the_url_pulumi_login_stored_and_pgpassword_are_known(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text(json.dumps({"current": URL, "accounts": {}}))
    env = {"PULUMI_HOME": str(tmp_path), "PGPASSWORD": "from-the-env"}
    assert sorted(backend_credentials(env)) == sorted([PASSWORD, PASSWORD, "from-the-env"])
    assert mask_backend("from-the-env", env=env) == "***"


@pytest.mark.parametrize(
    "text",
    [
        # Pulumi's own lock message already hides the user and password.
        "  postgres://****:****@127.0.0.1:5432/state/.pulumi/locks/o/p/s/1.json: created by",
        "postgres://pulumi@127.0.0.1:5432/state?sslmode=verify-full",  # no password in it
        "file:///root/state and https://example.com/a?b=c",
        "the stack is currently locked by 1 lock(s)",
    ],
)
def test_text_without_a_password_is_left_readable(text: str) -> None:
    masked = mask_backend(text, env=NO_HOME)
    assert masked == text.replace("****:****@", "****:***@")


def test_an_unparsable_backend_url_is_not_an_error() -> None:
    env = {**NO_HOME, "PULUMI_BACKEND_URL": "postgres://[::1"}
    assert backend_credentials(env) == []
