"""Vultr bare metal (API v2): the MI300X, MI325X and MI355X ``vbm-*`` plans.

A thin client over the documented endpoints (https://www.vultr.com/api/, the OpenAPI
document Vultr publishes in its generated clients, e.g. github.com/vultr/vultr-java
``blob/v0.0.1.json``; examples saved under ``fixtures/cloud-apis/vultr``):

``POST /v2/bare-metals`` (202, ``{"bare_metal": {...}}``)
    ``region``, ``plan``, ``label``, ``hostname``, ``os_id`` or ``image_id``,
    ``user_data`` (base64, as the reference says), ``tags``, ``sshkey_id``.
``GET /v2/bare-metals/{id}`` (200; 404 when it does not exist)
``DELETE /v2/bare-metals/{id}`` (204; 404 when already gone)
``GET /v2/bare-metals?per_page=&cursor=`` (``bare_metals`` and ``meta.links.next``, a
    cursor, empty on the last page)
``GET /v2/plans-metal`` (``plans_metal``: ``id``, ``locations``, ``monthly_cost`` and, in
    the newer API, ``hourly_cost``)

Auth is ``Authorization: Bearer <API key>``. 4xx bodies are ``{"error": "...", "status":
<code>}``; a 429 carries ``Retry-After`` (seconds), which :func:`~amdfleet.clouds.api.send`
honours. Vultr documents no body for "no capacity", so :data:`CAPACITY_WORDS` recognises
the words such a refusal uses.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from amdfleet.clouds.api import (
    DEFAULT_RETRY,
    REQUEST_TIMEOUT_S,
    CloudClient,
    CreateRequest,
    Instance,
    InstanceState,
    RetryPolicy,
    SizeOffer,
    error_detail,
    json_object,
    refusal,
)
from amdfleet.errors import CloudAPIError

PROVIDER = "vultr"
API_URL = "https://api.vultr.com"
PAGE_SIZE = 100
"""Items per list page (Vultr: default 100, max 500)."""
HOURS_PER_MONTH = 730
"""Vultr bills hourly up to a monthly cap of 730 hours: monthly cost / 730 = hourly."""
GPU_PLAN = re.compile(r"^vbm-.*?-(?P<count>\d+)-(?P<gpu>mi300x|mi325x|mi355x)-gpu$")
"""Bare-metal GPU plan ids, e.g. ``vbm-256c-2048gb-8-mi300x-gpu`` (8 x MI300X)."""
CAPACITY_WORDS = re.compile(
    r"not available|unavailable|out of stock|sold out|no (?:available )?capacity|"
    r"insufficient (?:capacity|inventory)",
    re.IGNORECASE,
)
NO_ADDRESS = ("", "0.0.0.0")
"""What ``main_ip`` holds before an address is assigned."""
BOOTING_SERVER_STATUS = frozenset({"none", "locked", "installingbooting", "isomounting"})


class VultrAPI(CloudClient):
    """Vultr bare metal through API v2 (:class:`~amdfleet.clouds.api.CloudAPI`).

    ``token`` is the API key: it goes into the ``Authorization`` header and nowhere else
    (not in the repr, messages or exceptions). ``base_url`` is overridable for tests;
    ``retry`` and ``sleep`` are handed to :func:`~amdfleet.clouds.api.send`.
    """

    provider = PROVIDER

    def __init__(
        self,
        token: str,
        *,
        base_url: str = API_URL,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        super().__init__(base_url, f"Bearer {token}", retry=retry, sleep=sleep, timeout=timeout)

    def create(self, request: CreateRequest) -> Instance:
        """Create one bare-metal server; returns at once (state PENDING, no address yet).

        A 5xx or a lost answer may hide a server that was created: before each retry the
        servers carrying the request's tags are searched for a new one whose ``label`` is
        the request's name, which is adopted rather than rented twice
        (:meth:`~amdfleet.clouds.api.CloudClient._create_adopting`; ``label`` and
        ``tags`` are set at create time and listed back, as the reference documents).
        Raises UnknownSizeError for a plan Vultr does not list (naming those it does),
        CapacityError when Vultr refuses for lack of capacity or the region does not
        list the plan (naming the other regions whose ``locations`` list it),
        CloudAPIError otherwise (saying when the server may exist all the same)."""
        operation = "create bare metal"
        made = self._create_adopting(
            request, operation, "/v2/bare-metals", create_body(request), (201, 202, 400, 422)
        )
        if isinstance(made, Instance):
            return made
        if made.status_code in (400, 422):
            raise refusal(self, request, made.status_code, error_detail(made), CAPACITY_WORDS)
        return bare_metal(made, operation)

    def get(self, instance_id: str) -> Instance | None:
        """The server, or None when Vultr says it does not exist (404)."""
        operation = f"get bare metal {instance_id}"
        response = self._send(operation, "GET", f"/v2/bare-metals/{instance_id}", ok=(200, 404))
        if response.status_code == 404:
            return None
        return bare_metal(response, operation)

    def delete(self, instance_id: str) -> None:
        """Delete the server; one that is already gone (404) is not an error."""
        self._send(
            f"delete bare metal {instance_id}",
            "DELETE",
            f"/v2/bare-metals/{instance_id}",
            ok=(200, 202, 204, 404),
        )

    def list_tagged(self, tag: str) -> list[Instance]:
        """Every bare-metal server carrying ``tag``, across all pages.

        ``tag`` is sent as a filter (Vultr documents it for instances) and the result is
        also filtered here on each server's ``tags``, since the bare-metal list is
        documented with ``per_page`` and ``cursor`` only (the reference, and
        docs.vultr.com/reference/vultr-cli/bare-metal/list). Adoption after a lost create
        answer and ``cloud orphans`` rely on this list and on ``label`` and ``tags``,
        which the create sets and every listed server shows."""
        operation = "list bare metals"
        servers = (
            server_instance(item, operation)
            for item in self._pages(operation, "/v2/bare-metals", "bare_metals", {"tag": tag})
        )
        return [server for server in servers if tag in server.tags]

    def sizes(self) -> list[SizeOffer]:
        """Every bare-metal plan: AMD GPU model and count from the plan id, hourly price
        (``hourly_cost``, else ``monthly_cost`` / 730), regions (``locations``); a plan
        with no location is listed as unavailable."""
        operation = "list bare-metal plans"
        return [
            plan_offer(item, operation)
            for item in self._pages(operation, "/v2/plans-metal", "plans_metal", {})
        ]

    def _pages(
        self, operation: str, path: str, key: str, params: Mapping[str, str]
    ) -> Iterator[Mapping[str, Any]]:
        cursor = ""
        while True:
            query: dict[str, Any] = {**params, "per_page": PAGE_SIZE}
            if cursor:
                query["cursor"] = cursor
            body = json_object(
                self._send(operation, "GET", path, params=query), PROVIDER, operation
            )
            yield from object_list(body, key, operation)
            cursor = next_cursor(body, operation)
            if not cursor:
                return


def create_body(request: CreateRequest) -> dict[str, Any]:
    """The ``POST /v2/bare-metals`` body: an all-digit ``image`` is an ``os_id``, any
    other an ``image_id`` (a Vultr application image such as ``docker``)."""
    body: dict[str, Any] = {
        "region": request.region,
        "plan": request.size,
        "label": request.name,
        "hostname": request.name,
        "tags": list(request.tags),
        "user_data": base64.b64encode(request.user_data.encode()).decode("ascii"),
    }
    if request.image.isdigit():
        body["os_id"] = int(request.image)
    else:
        body["image_id"] = request.image
    if request.ssh_key_ids:
        body["sshkey_id"] = list(request.ssh_key_ids)
    return body


def bare_metal(response: httpx.Response, operation: str) -> Instance:
    """The Instance in a ``{"bare_metal": {...}}`` response."""
    body = json_object(response, PROVIDER, operation)
    item = body.get("bare_metal")
    if not isinstance(item, Mapping):
        detail = f"no bare_metal object in {str(body)[:200]}"
        raise malformed(operation, detail, response.status_code)
    return server_instance(item, operation, response.status_code)


def server_instance(item: Mapping[str, Any], operation: str, http_status: int = 200) -> Instance:
    """One bare-metal server record as an Instance."""
    server_id = item.get("id")
    if not isinstance(server_id, str) or not server_id:
        raise malformed(operation, f"bare metal without an id: {str(item)[:200]}", http_status)
    status = str(item.get("status") or "")
    server_status = item.get("server_status")
    address = item.get("main_ip")
    public = address if isinstance(address, str) and address not in NO_ADDRESS else None
    tags = item.get("tags")
    return Instance(
        id=server_id,
        name=str(item.get("label") or ""),
        state=instance_state(status, server_status if isinstance(server_status, str) else None),
        status=f"{status}/{server_status}" if server_status else status,
        region=str(item.get("region") or ""),
        size=str(item.get("plan") or ""),
        public_address=public,
        private_address=None,
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        created_at=item.get("date_created") or None,
    )


def instance_state(status: str, server_status: str | None) -> InstanceState:
    """Vultr's words as an InstanceState: ``active`` is RUNNING once ``server_status`` (when
    present) is ``ok``; ``suspended`` is FAILED (locked by Vultr, still billed); anything
    else (``pending``, ``resizing``, booting) is PENDING."""
    if status == "suspended":
        return InstanceState.FAILED
    if status != "active":
        return InstanceState.PENDING
    if server_status is None or server_status not in BOOTING_SERVER_STATUS:
        return InstanceState.RUNNING
    return InstanceState.PENDING


def plan_offer(item: Mapping[str, Any], operation: str) -> SizeOffer:
    """One ``plans_metal`` record as a SizeOffer."""
    slug = item.get("id")
    if not isinstance(slug, str) or not slug:
        raise malformed(operation, f"plan without an id: {str(item)[:200]}")
    match = GPU_PLAN.match(slug)
    locations = item.get("locations")
    regions = tuple(str(r) for r in locations) if isinstance(locations, list) else ()
    return SizeOffer(
        slug=slug,
        gpu_model=match["gpu"] if match else None,
        gpu_count=int(match["count"]) if match else 0,
        price_hourly=hourly_price(item),
        regions=regions,
        available=bool(regions),
    )


def hourly_price(item: Mapping[str, Any]) -> float | None:
    """``hourly_cost`` when the API gives it, else ``monthly_cost`` / 730 rounded to cents."""
    hourly = item.get("hourly_cost")
    if isinstance(hourly, int | float) and not isinstance(hourly, bool):
        return float(hourly)
    monthly = item.get("monthly_cost")
    if isinstance(monthly, int | float) and not isinstance(monthly, bool):
        return round(float(monthly) / HOURS_PER_MONTH, 2)
    return None


def object_list(body: Mapping[str, Any], key: str, operation: str) -> list[Mapping[str, Any]]:
    """The list of objects under ``key``, or CloudAPIError "malformed response"."""
    items = body.get(key)
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise malformed(operation, f"no {key} list in {str(body)[:200]}")
    return items


def next_cursor(body: Mapping[str, Any], operation: str) -> str:
    """``meta.links.next``: the cursor of the next page, empty on the last."""
    meta = body.get("meta")
    links = meta.get("links") if isinstance(meta, Mapping) else None
    cursor = links.get("next") if isinstance(links, Mapping) else None
    if not isinstance(cursor, str):
        raise malformed(operation, f"no meta.links.next in {str(meta)[:200]}")
    return cursor


def malformed(operation: str, detail: str, status: int = 200) -> CloudAPIError:
    """A 2xx body without what the reference documents: the cloud's fault."""
    return CloudAPIError(PROVIDER, operation, status, f"malformed response: {detail}")
