"""What every cloud client shares: the instance and size records, the request wrapper
with its retry policy, and the errors.

Each cloud is one module (``clouds/<cloud>.py``) with a thin httpx client implementing
:class:`CloudAPI`: create, get, delete, list by tag, sizes. The clients make no policy
decisions (which size, how long to wait): the provider and the planner do. Every HTTP
call goes through :func:`send`, which retries 429 (waiting what ``Retry-After`` says,
in seconds or as an HTTP date) and 5xx/transport failures with exponential backoff,
and turns what is left into a :class:`~amdfleet.errors.CloudAPIError` carrying the
cloud's own message. The API token is never part of a message.

**No rented instance is lost.** A create whose answer never arrived (a 5xx after the
cloud committed it, a dropped connection, a read timeout) may have rented an instance.
:meth:`CloudClient._create_adopting` never sends the POST again blindly: it first looks
for an instance of the request's name carrying all its tags that was not there before the
first POST, and adopts it. When it cannot tell (retries spent, the listing failed), the
error says the instance may exist and that ``amdfleet cloud orphans`` finds it by those
tags, which it carries from birth. A create the cloud refused is classified by
:func:`refusal`: a size the cloud does not list (:class:`UnknownSizeError`, naming the
sizes it does list), a shortage (:class:`CapacityError`, naming the other regions), or
the cloud's own message; each carries the HTTP status.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from amdfleet.errors import CloudAPIError

TAG_PREFIX = "amdfleet"
"""Every instance amdfleet creates carries tags ``amdfleet``, ``amdfleet-project-<p>``,
``amdfleet-stack-<s>`` and ``amdfleet-node-<n>`` (see :func:`instance_tags`)."""
REQUEST_TIMEOUT_S = 30.0


class InstanceState(StrEnum):
    """An instance's state, the same words for every cloud."""

    PENDING = "pending"
    """Being created or booting: poll again."""
    RUNNING = "running"
    """Up, with its addresses: SSH can be tried."""
    FAILED = "failed"
    """The cloud gave up on it (it may still bill: delete it)."""
    STOPPING = "stopping"
    """Being deleted or stopped."""


@dataclass(frozen=True)
class Instance:
    """One instance as a cloud reports it."""

    id: str
    name: str
    state: InstanceState
    status: str
    """The cloud's own status words (``new``, ``active``; ``pending/installingbooting``)."""
    region: str
    size: str
    public_address: str | None = None
    private_address: str | None = None
    tags: tuple[str, ...] = ()
    created_at: str | None = None


@dataclass(frozen=True)
class SizeOffer:
    """A size a cloud rents: its GPUs and hourly price, and the regions that list it."""

    slug: str
    gpu_model: str | None
    """The catalog accelerator id (``mi300x``, ``mi325x``, ``mi355x``), None if no AMD GPU."""
    gpu_count: int
    price_hourly: float | None
    regions: tuple[str, ...]
    available: bool = True


@dataclass(frozen=True)
class CreateRequest:
    """What amdfleet asks a cloud for: one instance."""

    name: str
    region: str
    size: str
    image: str
    tags: tuple[str, ...]
    user_data: str
    """cloud-init user-data: the instance's SSH host key and the user's public key."""
    ssh_key_ids: tuple[str, ...] = ()


class CloudAPI(Protocol):
    """One cloud's client (``clouds/<cloud>.py``). Methods raise CloudAPIError (and
    CapacityError from ``create``)."""

    provider: str

    def create(self, request: CreateRequest) -> Instance:
        """Create one instance; returns at once (state usually PENDING). One whose answer
        was lost is adopted, never rented twice (see the module doc)."""
        ...

    def get(self, instance_id: str) -> Instance | None:
        """The instance, or None when the cloud says it does not exist (404)."""
        ...

    def delete(self, instance_id: str) -> None:
        """Delete it; an instance that is already gone (404) is not an error."""
        ...

    def list_tagged(self, tag: str) -> list[Instance]:
        """Every instance carrying ``tag`` (all pages)."""
        ...

    def sizes(self) -> list[SizeOffer]:
        """The sizes the cloud rents, with prices and regions."""
        ...


class CloudClient:
    """Base of the cloud clients: one httpx client whose only copy of the token is its
    ``Authorization`` header, the retry policy and sleep its calls use, a repr without
    the token, ``close()`` and the context manager. Build one inside each provider call
    (httpx clients do not pickle)."""

    provider: str

    def __init__(
        self,
        base_url: str,
        authorization: str,
        *,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        timeout: httpx.Timeout | float = REQUEST_TIMEOUT_S,
    ) -> None:
        if not authorization.partition(" ")[2].strip():
            raise CloudAPIError(self.provider, "configure client", None, "the API token is empty")
        self.base_url = base_url.rstrip("/")
        self._retry = retry
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": authorization, "Accept": "application/json"},
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def list_tagged(self, tag: str) -> list[Instance]:
        """Every instance carrying ``tag`` (each cloud's client implements it)."""
        raise NotImplementedError

    def sizes(self) -> list[SizeOffer]:
        """The sizes the cloud rents (each cloud's client implements it)."""
        raise NotImplementedError

    def _create_adopting(
        self, request: CreateRequest, operation: str, path: str, body: Any, answered: Sequence[int]
    ) -> httpx.Response | Instance:
        """POST a create until the cloud answers with a status in ``answered`` (created or
        refused: that response is returned), retrying as :class:`RetryPolicy` says. After a
        5xx or a lost answer the cloud may have created the instance: an instance of the
        request's name carrying all its tags, not listed before the first POST, is adopted
        and returned instead of sending the POST again (looked for after the backoff, so
        the cloud has time to list what it committed). Without tags nothing could be
        adopted, so such a create is not retried. Raises :func:`lost_create` when retries
        are spent or the search fails (the instance may exist), CloudAPIError for any
        other status."""
        before = {i.id for i in self._like(request)} if request.tags else set()
        attempt = 0
        while True:
            attempt += 1
            response, lost = self._post_once(operation, path, body, answered)
            if response is not None and response.status_code in answered:
                return response
            status = None if response is None else response.status_code
            detail = lost if response is None else error_detail(response)
            last = attempt >= self._retry.attempts
            if response is not None and status == 429:  # refused before anything was done
                if last:
                    raise CloudAPIError(self.provider, operation, status, detail)
                self._sleep(retry_after(response, self._retry, attempt))
                continue
            if not request.tags:
                raise lost_create(self.provider, operation, request, status, detail)
            # Wait first: a cloud may list what it committed a moment later.
            wait = backoff(self._retry, attempt)
            self._sleep(wait if response is None else retry_after(response, self._retry, attempt))
            adopted = self._adopt(request, operation, before, status, detail)
            if adopted is not None:
                return adopted
            if last:
                raise lost_create(self.provider, operation, request, status, detail)

    def _post_once(
        self, operation: str, path: str, body: Any, answered: Sequence[int]
    ) -> tuple[httpx.Response | None, str]:
        """One POST: the response when its status is answered, 429 or a retried 5xx; None
        and what went wrong when no answer came. Any other status raises CloudAPIError."""
        once = replace(self._retry, attempts=1)
        ok = (*answered, 429, *self._retry.retry_statuses)
        try:
            return self._send(operation, "POST", path, ok=ok, json=body, retry=once), ""
        except CloudAPIError as e:
            if e.status is not None:
                raise
            return None, e.detail

    def _adopt(
        self,
        request: CreateRequest,
        operation: str,
        before: set[str],
        status: int | None,
        detail: str,
    ) -> Instance | None:
        """The instance a create whose answer was lost made, if the cloud lists it now."""
        try:
            found = [i for i in self._like(request) if i.id not in before]
        except CloudAPIError as e:
            raise lost_create(
                self.provider, operation, request, status, f"{detail}; looking for it failed: {e}"
            ) from e
        return min(found, key=lambda i: (i.created_at or "", i.id)) if found else None

    def _like(self, request: CreateRequest) -> list[Instance]:
        """The instances of the request's name carrying all its tags."""
        return [
            i
            for i in self.list_tagged(request.tags[-1])
            if i.name == request.name and set(request.tags) <= set(i.tags)
        ]

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 202, 204),
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """:func:`send` on this client, with its retry policy (or ``retry``) and sleep."""
        return send(
            self._http,
            self.provider,
            operation,
            method,
            path,
            json=json,
            params=params,
            ok=ok,
            retry=retry or self._retry,
            sleep=self._sleep,
        )


class CapacityError(CloudAPIError):
    """The cloud has no capacity for this size in this region; ``alternatives`` are the
    other regions that list the size (the message names them)."""

    def __init__(
        self,
        provider: str,
        region: str,
        size: str,
        detail: str,
        alternatives: Sequence[str],
        status: int | None = None,
    ) -> None:
        """``status`` is the HTTP status of the refusal (None when amdfleet found the
        shortage in the cloud's list of sizes before asking)."""
        self.region = region
        self.size = size
        self.alternatives = tuple(alternatives)
        hint = (
            f"try {', '.join(self.alternatives)}"
            if self.alternatives
            else "no other region lists it; try another size or later"
        )
        super().__init__(
            provider,
            "create instance",
            status,
            f"no capacity in {region} for {size}: {hint} ({detail})",
        )


class UnknownSizeError(CloudAPIError):
    """The cloud does not list the size asked for (a typo, or a size of another cloud or
    account): not a shortage. ``listed`` are the sizes it does list (the message names
    them, AMD GPU sizes first)."""

    def __init__(
        self,
        provider: str,
        size: str,
        listed: Sequence[SizeOffer],
        detail: str,
        status: int | None = None,
    ) -> None:
        self.size = size
        self.listed = tuple(o.slug for o in listed)
        shown = [o.slug for o in listed if o.gpu_model] or list(self.listed)
        more = len(self.listed) - len(shown[:SHOWN_SIZES])
        names = ", ".join(shown[:SHOWN_SIZES]) or "none"
        tail = f" and {more} more" if more else ""
        super().__init__(
            provider,
            "create instance",
            status,
            f"unknown size {size!r}: {provider} does not list it; it lists {names}{tail} "
            f"({detail})",
        )


SHOWN_SIZES = 20
"""How many sizes an :class:`UnknownSizeError` names (AMD GPU sizes first)."""


def refusal(
    client: CloudAPI,
    request: CreateRequest,
    status: int | None,
    detail: str,
    capacity: re.Pattern[str],
) -> CloudAPIError:
    """What a create the cloud refused (``status``, its message ``detail``) means, asked of
    the cloud's own list of sizes: :class:`UnknownSizeError` when it does not list the size;
    :class:`CapacityError` (naming the other regions) when the message says so
    (``capacity``) or the size is not listed in the region or not available; else the
    cloud's message as a CloudAPIError. When the sizes cannot be listed, the message
    decides."""
    try:
        offers = client.sizes()
    except CloudAPIError as e:
        if capacity.search(detail):
            note = f"{detail}; listing sizes failed: {e}"
            return CapacityError(client.provider, request.region, request.size, note, (), status)
        return CloudAPIError(client.provider, "create instance", status, detail)
    offer = next((o for o in offers if o.slug == request.size), None)
    if offer is None:
        return UnknownSizeError(client.provider, request.size, offers, detail, status)
    short = capacity.search(detail) or not offer.available or request.region not in offer.regions
    if not short:
        return CloudAPIError(client.provider, "create instance", status, detail)
    others = tuple(r for r in offer.regions if r != request.region) if offer.available else ()
    return CapacityError(client.provider, request.region, request.size, detail, others, status)


def lost_create(
    provider: str, operation: str, request: CreateRequest, status: int | None, detail: str
) -> CloudAPIError:
    """A create whose outcome amdfleet could not learn: the error says the instance may
    exist and how it is found (its tags, ``amdfleet cloud orphans``)."""
    marks = (
        f"it carries the tags {', '.join(request.tags)}, so `amdfleet cloud orphans "
        f"--provider {provider}` finds it (--delete removes it)"
        if request.tags
        else "it carries no tags: look for it in the console"
    )
    return CloudAPIError(
        provider,
        operation,
        status,
        f"{detail}; {provider} may have created {request.name!r} all the same: {marks}",
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`send` retries: ``attempts`` in all, waiting ``base_s`` doubled each
    time up to ``max_s`` (or what ``Retry-After`` says, up to ``max_s``)."""

    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({429, 500, 502, 503, 504})
    )


DEFAULT_RETRY = RetryPolicy()


def send(
    client: httpx.Client,
    provider: str,
    operation: str,
    method: str,
    url: str,
    *,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
    ok: Sequence[int] = (200, 201, 202, 204),
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """One API call with retries. Returns the response when its status is in ``ok``;
    raises CloudAPIError (the cloud's message, extracted by :func:`error_detail`) for
    any other status once retries are spent, or for a transport failure.

    A POST (creating something) is retried only on 429, which the cloud answers before
    doing anything: after a 5xx or a lost response the instance may exist already, and
    a second POST would rent a second one. The caller finds out by its tags instead."""
    retry_failures = method.upper() != "POST"
    attempt = 0
    while True:
        attempt += 1
        try:
            response = client.request(method, url, json=json, params=params)
        except httpx.TransportError as e:
            if not retry_failures or attempt >= retry.attempts:
                raise CloudAPIError(provider, operation, None, f"{type(e).__name__}: {e}") from e
            sleep(backoff(retry, attempt))
            continue
        if response.status_code in ok:
            return response
        status = response.status_code
        retryable = status == 429 or (retry_failures and status in retry.retry_statuses)
        if retryable and attempt < retry.attempts:
            sleep(retry_after(response, retry, attempt))
            continue
        raise CloudAPIError(provider, operation, status, error_detail(response))


def backoff(retry: RetryPolicy, attempt: int) -> float:
    """Exponential backoff before attempt ``attempt + 1``."""
    return float(min(retry.base_s * 2 ** (attempt - 1), retry.max_s))


def retry_after(response: httpx.Response, retry: RetryPolicy, attempt: int) -> float:
    """Seconds to wait before retrying ``response``: its ``Retry-After`` (delta seconds or
    an HTTP date), capped at ``retry.max_s``; else the backoff."""
    value = (response.headers.get("retry-after") or "").strip()
    if value.isdigit():
        return float(min(int(value), retry.max_s))
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):  # not a date either: back off as usual
            return backoff(retry, attempt)
        if parsed.tzinfo is None:  # "-0000": UTC, RFC 5322 says
            parsed = parsed.replace(tzinfo=UTC)
        seconds = (parsed - datetime.now(UTC)).total_seconds()
        return float(min(max(seconds, 0.0), retry.max_s))
    return backoff(retry, attempt)


def error_detail(response: httpx.Response) -> str:
    """The cloud's own error message from a response body (``message``, ``error``,
    ``detail``...), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, Mapping):
        for key in ("message", "error", "detail", "errors"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"])
            if isinstance(value, list) and value:
                return "; ".join(str(v) for v in value)
    return str(body)[:300]


def instance_tags(project: str, stack: str, node: str) -> tuple[str, ...]:
    """The tags of one amdfleet instance: the marker, its project, stack and node."""
    return (
        TAG_PREFIX,
        f"{TAG_PREFIX}-project-{project}",
        f"{TAG_PREFIX}-stack-{stack}",
        f"{TAG_PREFIX}-node-{node}",
    )


def wait_gone(
    client: CloudAPI, instance_ids: Sequence[str], *, within: float, max_wait: float
) -> list[Instance]:
    """Poll until the cloud lists none of ``instance_ids`` (1, 2, 4 ... s between rounds,
    at most ``max_wait``), for at most ``within`` seconds. The instances still listed
    then: empty when all are gone."""
    deadline = time.monotonic() + within
    pending = list(instance_ids)
    polls = 0
    while True:
        listed = [i for i in (client.get(instance_id) for instance_id in pending) if i]
        if not listed:
            return []
        wait = min(max_wait, 2.0**polls)
        polls += 1
        if time.monotonic() + wait > deadline:
            return listed
        time.sleep(wait)
        pending = [i.id for i in listed]


def json_object(response: httpx.Response, provider: str, operation: str) -> dict[str, Any]:
    """The response body as a JSON object, or CloudAPIError naming what came instead (a
    malformed response is the cloud's fault, reported as such)."""
    try:
        body = response.json()
    except ValueError as e:
        raise CloudAPIError(
            provider,
            operation,
            response.status_code,
            f"malformed response: {response.text[:200]!r}",
        ) from e
    if not isinstance(body, dict):
        raise CloudAPIError(
            provider, operation, response.status_code, f"malformed response: {str(body)[:200]}"
        )
    return body
