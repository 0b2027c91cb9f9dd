"""The Pulumi state backend's credentials, kept out of everything amdfleet prints.

A team's backend is a URL that may carry a password
(``postgres://pulumi:PASSWORD@db.example.com:5432/pulumi?sslmode=verify-full``), given as
``PULUMI_BACKEND_URL`` or by ``pulumi login``. The Pulumi CLI names that URL in its errors
(v3.274.1, a database refusing the login: ``unable to open state database
"postgres://pulumi:[credential]@..."``), replacing the password of the URL it was given.
amdfleet relays the CLI's words (``amdfleet reap``'s failure tails, a campaign's errors and
logs, ``amdfleet status`` and ``amdfleet cloud orphans`` errors) and does not rely on that:
each text goes through :func:`mask_backend` first, where the password of every URL in it,
and each credential of the backend this process would use wherever it appears, become
``***``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

MASK = "***"

# scheme://user:password@ : the password ends at the first '@' (a literal one must be
# percent-encoded), or at a delimiter a URL cannot hold unencoded.
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@?#\"']*):([^/\s@?#\"']*)@")
_MIN_SECRET_LEN = 4  # shorter values are masked inside URLs only, not everywhere


def mask_backend(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every URL password and each credential of the Pulumi backend in
    ``env`` (default: this process's environment) replaced by ``***``."""
    return backend_masker(env)(text)


def backend_masker(env: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """:func:`mask_backend` with the credentials looked up once (for a stream of lines)."""
    secrets = sorted(set(backend_credentials(env)), key=len, reverse=True)

    def mask(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)

    return mask


def backend_credentials(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values the Pulumi CLI's backend connection may use, as written and
    percent-decoded: the password in ``PULUMI_BACKEND_URL``, in the URL ``pulumi login``
    stored (``$PULUMI_HOME/credentials.json``, ``current``), and ``PGPASSWORD``."""
    env = os.environ if env is None else env
    found: list[str] = []
    for url in (env.get("PULUMI_BACKEND_URL"), _logged_in_url(env)):
        found += _url_passwords(url or "")
    if env.get("PGPASSWORD"):
        found.append(env["PGPASSWORD"])
    return [value for value in found if len(value) >= _MIN_SECRET_LEN]


def _url_passwords(url: str) -> Iterator[str]:
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL: nothing of it is known to be a password
        return
    if password:
        yield password
        yield unquote(password)


def _logged_in_url(env: Mapping[str, str]) -> str | None:
    home = Path(env.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        current = json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        return None
    return current if isinstance(current, str) else None
