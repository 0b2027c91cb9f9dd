"""DigitalOcean's API v2: GPU Droplets (``gpu-mi300x1-192gb``, ``gpu-mi300x8-1536gb``,
``gpu-mi325x8-2048gb``, ``gpu-mi355x8-2304gb-spot``...) as :class:`CloudAPI` instances.

Facts, from DigitalOcean's OpenAPI spec (the API reference at
docs.digitalocean.com/reference/api/api-reference; examples in
``shared/fixtures/cloud-apis/digitalocean``):

- ``Authorization: Bearer <token>``; errors are ``{"id", "message", ["request_id"]}``.
- ``POST /v2/droplets`` takes ``name, region, size, image, ssh_keys, tags, user_data``
  and answers 202 with the droplet at status ``new``; ``GET /v2/droplets/{id}`` shows it
  ``active`` with ``networks.v4[]`` (``type`` public/private); ``DELETE`` answers 204.
  Statuses: ``new, active, off, archive``.
- Lists (``GET /v2/droplets?tag_name=``, ``?type=gpus``, ``GET /v2/sizes``) page with
  ``page``/``per_page`` (at most 200) and ``links.pages.next``.
- A size has ``slug, price_hourly, regions, available`` and, for GPU sizes,
  ``gpu_info {count, vram, model}`` (``model`` like ``nvidia_h100``, ``amd_mi300x``).
- Tags: letters, digits, ``:``, ``-``, ``_``, at most 255 characters; the API drops
  invalid ones, so they are checked here (an untagged droplet is one a sweep misses).
- No capacity: 422 with ``Size is not available in this region.`` (public bug reports
  and terraform/dstack clients; the spec documents no example). Whether a 422 is a
  shortage or a size DigitalOcean does not list at all is decided from ``GET /v2/sizes``
  (:func:`~amdfleet.clouds.api.refusal`), not from the message alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx

from amdfleet.catalog.gpus import ACCELERATORS
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
from amdfleet.errors import CloudAPIError, ConfigError
from amdfleet.findings import Finding, config_issue

PROVIDER = "digitalocean"
BASE_URL = "https://api.digitalocean.com"
AMD_DEVELOPER_CLOUD_URL = "https://api-amd.digitalocean.com"
"""The same API for AMD Developer Cloud accounts, whose MI-series sizes are listed there
(dstack's gpuhunt DigitalOcean provider, ``flavor="amd"``); pass it as ``base_url``."""
PER_PAGE = 200
"""The largest page the API serves."""

STATES: Mapping[str, InstanceState] = {
    "new": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "off": InstanceState.STOPPING,
    "archive": InstanceState.FAILED,
}
"""DigitalOcean's droplet statuses (models/droplet.yml). ``off`` still bills; an unknown
word maps to PENDING (the caller's deadline reports it, with ``Instance.status``)."""

_TAG = re.compile(r"[A-Za-z0-9:_-]{1,255}")
_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
_DROPLET_ID = re.compile(r"[0-9]{1,20}")
_CAPACITY = re.compile(r"not available|unavailable|capacity|out of stock", re.IGNORECASE)
_GPU_IN_MODEL = re.compile(r"mi\d{3}x")
_GPU_IN_SLUG = re.compile(r"^gpu-(mi\d{3}x)(\d+)-")
_T = TypeVar("_T")


class DropletRequestError(ConfigError):
    """A create request DigitalOcean would reject or silently alter; nothing was sent."""

    heading = "invalid DigitalOcean droplet request"


class DigitalOceanClient(CloudClient):
    """DigitalOcean's droplets and sizes behind :class:`~amdfleet.clouds.api.CloudAPI`.

    The token goes into the ``Authorization`` header and nowhere else (not in repr,
    messages or exceptions). Use as a context manager, or call :meth:`close`.
    """

    provider = PROVIDER

    def __init__(
        self,
        token: str,
        *,
        base_url: str = BASE_URL,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        super().__init__(base_url, f"Bearer {token}", retry=retry, sleep=sleep, timeout=timeout)

    def create(self, request: CreateRequest) -> Instance:
        """Create one droplet (status ``new``, so PENDING). A 5xx or a lost answer may
        hide a droplet that was created: before each retry the droplets carrying the
        request's tags are searched for a new one of its name, which is adopted rather
        than created twice (:meth:`~amdfleet.clouds.api.CloudClient._create_adopting`;
        the droplet list filters by ``tag_name``, as the API reference documents).
        Raises DropletRequestError (bad name/tags/key ids, nothing sent),
        UnknownSizeError (a size DigitalOcean does not list, naming those it does),
        CapacityError (422 "not available", or a size the region does not list, naming
        the other regions that list it) or CloudAPIError (saying when the droplet may
        exist all the same)."""
        operation = "create droplet"
        made = self._create_adopting(
            request, operation, "/v2/droplets", create_body(request), (202, 422)
        )
        if isinstance(made, Instance):
            return made
        if made.status_code == 422:
            raise refusal(self, request, 422, error_detail(made), _CAPACITY)
        return _instance(made, operation)

    def get(self, instance_id: str) -> Instance | None:
        """The droplet, or None when DigitalOcean answers 404."""
        path = f"/v2/droplets/{_droplet_id(instance_id)}"
        response = self._send("get droplet", "GET", path, ok=(200, 404))
        if response.status_code == 404:
            return None
        return _instance(response, "get droplet")

    def delete(self, instance_id: str) -> None:
        """Delete the droplet; 404 (already gone) is success."""
        path = f"/v2/droplets/{_droplet_id(instance_id)}"
        self._send("delete droplet", "DELETE", path, ok=(204, 404))

    def list_tagged(self, tag: str) -> list[Instance]:
        """Every droplet carrying ``tag``, across all pages: those ``tag_name=`` lists, and
        the GPU droplets ``type=gpus`` lists that carry it. The reference says a plain
        list returns only non-GPU droplets and that ``type`` cannot be combined with
        ``tag_name`` (pydo's ``droplets.list``, docs.digitalocean.com/reference/pydo/
        reference/droplets/list), without saying whether ``tag_name`` alone includes GPU
        droplets; asking both ways finds a GPU droplet under either reading."""
        _check_tag("tag", tag)
        operation = "list droplets"
        tagged = self._pages(operation, "/v2/droplets", "droplets", {"tag_name": tag})
        gpus = self._pages(operation, "/v2/droplets", "droplets", {"type": "gpus"})
        found: dict[str, Instance] = {}
        for response, item in [*tagged, *gpus]:
            instance = _read(response, operation, _parse_droplet, item)
            if tag in instance.tags:
                found.setdefault(instance.id, instance)
        return list(found.values())

    def sizes(self) -> list[SizeOffer]:
        """Every size DigitalOcean lists, across all pages, GPU sizes mapped to catalog
        accelerator ids."""
        pages = self._pages("list sizes", "/v2/sizes", "sizes", {})
        return [_read(r, "list sizes", _parse_size, item) for r, item in pages]

    def _pages(
        self, operation: str, path: str, key: str, params: Mapping[str, str]
    ) -> list[tuple[httpx.Response, dict[str, Any]]]:
        """All items under ``key`` of a paged list, each with the response it came in.
        The next page's number is read from ``links.pages.next`` and asked of this
        client's own base URL: the token never follows a link to another host."""
        items: list[tuple[httpx.Response, dict[str, Any]]] = []
        page = 1
        while True:
            query = {**params, "page": str(page), "per_page": str(PER_PAGE)}
            response = self._send(operation, "GET", path, ok=(200,), params=query)
            body = json_object(response, PROVIDER, operation)
            items += [(response, item) for item in _object_list(response, body, key, operation)]
            following = _next_page(response, body, operation)
            if following is None:
                return items
            if following <= page:
                detail = f"links.pages.next goes back to page {following}"
                raise _malformed(response, operation, detail)
            page = following


def create_body(request: CreateRequest) -> dict[str, Any]:
    """The ``POST /v2/droplets`` body; DropletRequestError for what DigitalOcean would
    reject (a name that is not a hostname) or drop silently (an invalid tag)."""
    issues: list[Finding] = []
    if not _NAME.fullmatch(request.name):
        issues.append(
            config_issue("name", f"{request.name!r} is not a valid droplet name", _NAME_HINT)
        )
    issues += [
        config_issue(f"tags[{i}]", f"{tag!r} is not a valid DigitalOcean tag", _TAG_HINT)
        for i, tag in enumerate(request.tags)
        if not _TAG.fullmatch(tag)
    ]
    if issues:
        raise DropletRequestError(issues, source=f"create {request.name!r}")
    return {
        "name": request.name,
        "region": request.region,
        "size": request.size,
        "image": request.image,
        "ssh_keys": [int(k) if k.isdigit() else k for k in request.ssh_key_ids],
        "tags": list(request.tags),
        "user_data": request.user_data,
    }


def _parse_droplet(droplet: Mapping[str, Any]) -> Instance:
    """An :class:`Instance` from a droplet object; _BadField names a missing or mistyped
    required field."""
    status = _required(droplet, "status", str, "droplet.")
    region = _required(droplet, "region", dict, "droplet.")
    networks = _optional(droplet, "networks", dict) or {}
    v4 = _optional(networks, "v4", list) or []
    return Instance(
        id=str(_required(droplet, "id", int, "droplet.")),
        name=_required(droplet, "name", str, "droplet."),
        state=STATES.get(status, InstanceState.PENDING),
        status=status,
        region=_required(region, "slug", str, "droplet.region."),
        size=_required(droplet, "size_slug", str, "droplet."),
        public_address=_address(v4, "public"),
        private_address=_address(v4, "private"),
        tags=tuple(str(t) for t in _optional(droplet, "tags", list) or ()),
        created_at=_optional(droplet, "created_at", str),
    )


def _parse_size(size: Mapping[str, Any]) -> SizeOffer:
    """A :class:`SizeOffer` from a size object: the AMD GPU (catalog id) and count from
    ``gpu_info`` (``amd_mi300x``), else from the slug (``gpu-mi300x8-1536gb`` → mi300x,
    8). A size whose GPU is not an AMD one the catalog knows has ``gpu_model`` None."""
    slug = _required(size, "slug", str, "size.")
    gpu_info = _optional(size, "gpu_info", dict) or {}
    model, count = _gpu_from_slug(slug)
    reported = _optional(gpu_info, "model", str)
    if reported:
        found = _GPU_IN_MODEL.search(re.sub(r"[^a-z0-9]", "", reported.lower()))
        model = found.group(0) if found else None
    count = _optional(gpu_info, "count", int) or count
    price = _optional(size, "price_hourly", int | float)
    return SizeOffer(
        slug=slug,
        gpu_model=model if model in ACCELERATORS else None,
        gpu_count=count,
        price_hourly=None if price is None else float(price),
        regions=tuple(str(r) for r in _optional(size, "regions", list) or ()),
        available=size.get("available") is not False,
    )


_NAME_HINT = "letters, digits, '.' and '-' (a hostname), at most 255 characters"
_TAG_HINT = "letters, digits, ':', '-' and '_', 1 to 255 characters"


def _check_tag(field: str, tag: str) -> None:
    if not _TAG.fullmatch(tag):
        issue = config_issue(field, f"{tag!r} is not a valid DigitalOcean tag", _TAG_HINT)
        raise DropletRequestError([issue])


def _droplet_id(instance_id: str) -> str:
    if not _DROPLET_ID.fullmatch(instance_id):
        issue = config_issue(
            "instance_id", f"{instance_id!r} is not a droplet id", "droplet ids are integers"
        )
        raise DropletRequestError([issue])
    return instance_id


class _BadField(Exception):
    """A field of a response object is missing or of the wrong type."""


def _read(
    response: httpx.Response,
    operation: str,
    parse: Callable[[Mapping[str, Any]], _T],
    item: Mapping[str, Any],
) -> _T:
    try:
        return parse(item)
    except _BadField as e:
        raise _malformed(response, operation, str(e)) from e


def _instance(response: httpx.Response, operation: str) -> Instance:
    body = json_object(response, PROVIDER, operation)
    droplet = body.get("droplet")
    if not isinstance(droplet, dict):
        raise _malformed(response, operation, f"no 'droplet' object in {str(body)[:200]}")
    return _read(response, operation, _parse_droplet, droplet)


def _object_list(
    response: httpx.Response, body: Mapping[str, Any], key: str, operation: str
) -> list[dict[str, Any]]:
    items = body.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        detail = f"'{key}' is not a list of objects in {str(body)[:200]}"
        raise _malformed(response, operation, detail)
    return items


def _next_page(response: httpx.Response, body: Mapping[str, Any], operation: str) -> int | None:
    links = body.get("links")
    pages = links.get("pages") if isinstance(links, dict) else None
    following = pages.get("next") if isinstance(pages, dict) else None
    if not following:
        return None
    numbers = parse_qs(urlsplit(str(following)).query).get("page", [])
    if len(numbers) != 1 or not numbers[0].isdigit():
        detail = f"links.pages.next {following!r} has no page number"
        raise _malformed(response, operation, detail)
    return int(numbers[0])


def _required(obj: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadField(f"{where}{key} is {value!r}, expected {kind.__name__}")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: Any) -> Any:
    value = obj.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _address(v4: list[Any], kind: str) -> str | None:
    for network in v4:
        if isinstance(network, dict) and network.get("type") == kind:
            address = network.get("ip_address")
            return address if isinstance(address, str) else None
    return None


def _gpu_from_slug(slug: str) -> tuple[str | None, int]:
    match = _GPU_IN_SLUG.match(slug)
    return (match.group(1), int(match.group(2))) if match else (None, 0)


def _malformed(response: httpx.Response, operation: str, detail: str) -> CloudAPIError:
    return CloudAPIError(PROVIDER, operation, response.status_code, f"malformed response: {detail}")
