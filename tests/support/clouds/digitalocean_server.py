"""A real local DigitalOcean API v2 (the droplet and size endpoints amdfleet uses), for
testing :mod:`amdfleet.clouds.digitalocean` without the cloud.

It follows DigitalOcean's public OpenAPI spec, i.e. the API reference at
https://docs.digitalocean.com/reference/api/api-reference/, through the examples saved in
``shared/fixtures/cloud-apis/digitalocean`` (README.md, RATE_LIMITS.md, ``*.source.txt``):

``POST /v2/droplets``
    ``name, region, size, image, ssh_keys, tags, user_data`` → 202 ``{"droplet", "links"}``
    shaped like ``droplets_create.202.response.json`` (status ``new``, no networks).
``GET /v2/droplets/{id}``
    200 ``{"droplet"}`` like ``droplets_get.200.response.json``: ``new`` for the first
    ``polls_to_active`` GETs, then ``active`` with ``networks.v4`` (private + public).
``DELETE /v2/droplets/{id}``
    204, no body.
``GET /v2/droplets?tag_name=|type=gpus&page=&per_page=`` and ``GET /v2/sizes?page=&per_page=``
    ``{"droplets"|"sizes", "links": {"pages": {first, prev, next, last}}, "meta": {total}}``
    (``sizes_list.200.response.json``; ``per_page`` at most 200, or ``max_per_page``).

Every response carries ``ratelimit-limit/-remaining/-reset``; errors are the spec's
``{"id", "message"}`` bodies (``error.<status>.*.json``), 401 when the bearer token is
not the server's. A size the region does not list, or a (size, region) in
:attr:`DigitalOceanServer.no_capacity`, gets 422 "Size is not available in this region."
(the message DigitalOcean returns, as quoted in public bug reports; the spec has no
example).

Sizes: the spec documents no AMD size. The served table is the spec's basic size
(``sizes_list``) and H100 GPU size (``droplets_list.gpu``) verbatim, a Basic
``s-4vcpu-8gb`` built from the basic one (DigitalOcean's public $48/month), plus AMD sizes built
in the same shape with the slugs DigitalOcean lists publicly (``gpu-mi300x1-192gb``,
``gpu-mi300x8-1536gb``, ``gpu-mi325x8-2048gb``, ``gpu-mi355x8-2304gb-spot``); their prices
and regions are illustrative, and ``gpu_info.model`` takes the two forms seen in public
clients (``amd_mi300x``; ``AMD Instinct MI325X``) or is absent (the MI355X size).

Faults for tests: :meth:`fail` (a status, e.g. 429 with ``Retry-After``, or 500, for the
next matching requests), :meth:`malform` (a 200 whose body is not the documented JSON),
:attr:`after_create` (create the droplet, then answer 500, drop the connection or hang
past the client's read timeout: :data:`~tests.support.clouds.http.AfterCreate`),
:attr:`stuck` (droplets stay ``new``), :meth:`vanish` (deleted out of band). With a
:attr:`lab` (tests/support/clouds/lab_boot.py) each droplet is a real SSH host booted from
its user-data, whose address the droplet shows once active. The ledger
(:attr:`created`, :attr:`deleted`, :attr:`vanished`, :meth:`leaked`) tells whether every
droplet made was removed; :attr:`log` records every request.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode

from tests.support.clouds import http
from tests.support.clouds.http import Answer
from tests.support.clouds.lab_boot import LabBoot

FIXTURES = Path(__file__).resolve().parents[3] / ".." / "shared/fixtures/cloud-apis/digitalocean"
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 20
_TAG = re.compile(r"[A-Za-z0-9:_-]{1,255}")
_DROPLET = re.compile(r"/v2/droplets/(\d+)")
NO_CAPACITY = "Size is not available in this region."
_JSON = "application/json; charset=utf-8"
_SERVER_ERROR = "error.500.server_error.json"
_ERROR_BODIES = {
    401: "error.401.unauthorized.json",
    404: "error.404.not_found.json",
    422: "error.422.unprocessable_entity.json",
    429: "error.429.too_many_requests.json",
}


def fixture(name: str) -> Any:
    """One saved example body, parsed."""
    return json.loads((FIXTURES / name).read_text())


def amd_size(
    slug: str, model: str | None, count: int, vram_gib: int, price: float, regions: list[str]
) -> dict[str, Any]:
    """An AMD GPU size in the shape of the spec's H100 size object (see module doc)."""
    size: dict[str, Any] = copy.deepcopy(fixture("droplets_list.gpu.200.response.json"))
    size = size["droplets"][0]["size"]
    size.update(
        slug=slug,
        price_hourly=price,
        price_monthly=round(price * 672, 2),
        regions=regions,
        description=f"{slug} (built for tests)",
    )
    if model is None:
        del size["gpu_info"]
    else:
        size["gpu_info"] = {"count": count, "vram": {"amount": vram_gib, "unit": "gib"}}
        size["gpu_info"]["model"] = model
    return size


def cpu_size(slug: str, vcpus: int, memory_mib: int, price_monthly: float) -> dict[str, Any]:
    """A Basic (CPU) size in the shape of the spec's ``s-1vcpu-1gb`` (see module doc)."""
    size: dict[str, Any] = copy.deepcopy(fixture("sizes_list.200.response.json")["sizes"][0])
    size.update(
        slug=slug,
        vcpus=vcpus,
        memory=memory_mib,
        price_monthly=price_monthly,
        price_hourly=round(price_monthly / 672, 5),
        description=f"{slug} (built for tests)",
    )
    return size


def default_sizes() -> list[dict[str, Any]]:
    """The served size table (see module doc for what is verbatim and what is built)."""
    return [
        fixture("sizes_list.200.response.json")["sizes"][0],
        cpu_size("s-4vcpu-8gb", 4, 8192, 48.0),
        fixture("droplets_list.gpu.200.response.json")["droplets"][0]["size"],
        amd_size("gpu-mi300x1-192gb", "amd_mi300x", 1, 192, 1.99, ["atl1", "nyc2"]),
        amd_size("gpu-mi300x8-1536gb", "amd_mi300x", 8, 1536, 15.92, ["atl1", "nyc2", "tor1"]),
        amd_size("gpu-mi325x8-2048gb", "AMD Instinct MI325X", 8, 2048, 18.32, ["nyc2"]),
        amd_size("gpu-mi355x8-2304gb-spot", None, 8, 2304, 23.76, ["mem1"]),
    ]


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


@dataclass
class _Fault:
    kind: Literal["status", "malformed"]
    times: int
    method: str | None
    path: str | None
    status: int = 200
    retry_after: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method in (None, method)) and (self.path is None or path.startswith(self.path))


@dataclass
class DigitalOceanServer:
    """The server; start with :meth:`start` (or as a context manager)."""

    token: str
    polls_to_active: int = 2
    max_per_page: int = MAX_PER_PAGE
    sizes: list[dict[str, Any]] = field(default_factory=default_sizes)
    no_capacity: set[tuple[str, str]] = field(default_factory=set)
    stuck: bool = False
    after_create: http.AfterCreate = "answer"
    lab: LabBoot | None = None
    created: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    droplets: dict[int, dict[str, Any]] = field(default_factory=dict)
    _polls: dict[int, int] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(500000001))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _remaining: int = 5000
    _http: http.JsonApiServer | None = None

    @classmethod
    def start(cls, token: str, **kwargs: Any) -> DigitalOceanServer:
        """Listen on 127.0.0.1, an ephemeral port, serving from a thread."""
        server = cls(token, **kwargs)
        server._http = http.JsonApiServer(server.serve, name="digitalocean-api").start()
        return server

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``), the client's ``base_url``."""
        assert self._http is not None, "not started"
        return self._http.url

    def close(self) -> None:
        """Stop serving and join the handler threads."""
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and the spec's
        error body for it (and ``Retry-After`` when given)."""
        self._faults.append(_Fault("status", times, method, path, status, retry_after))

    def malform(
        self, *, times: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next ``times`` matching requests 200 with a truncated JSON body."""
        self._faults.append(_Fault("malformed", times, method, path))

    def vanish(self, droplet_id: int) -> None:
        """Delete a droplet out of band (as from the control panel)."""
        with self._lock:
            del self.droplets[droplet_id]
            self.vanished.append(droplet_id)
        if self.lab is not None:
            self.lab.stop(str(droplet_id))

    def leaked(self) -> list[int]:
        """Droplets created and not deleted (by the API or out of band)."""
        with self._lock:
            return sorted(self.droplets)

    def requests(self, method: str, path: str) -> list[Request]:
        """The logged requests with this method and path."""
        return [r for r in self.log if r.method == method and r.path == path]

    def serve(self, request: http.Request) -> Answer:
        """One request (called by the handler thread): logged, then 401 unless the bearer
        token is the server's, else :meth:`handle`; the ratelimit headers on any answer."""
        query, body = request.params, request.body
        authorization = request.headers.get("authorization")
        self.log.append(Request(request.method, request.path, query, authorization, body))
        if authorization != f"Bearer {self.token}":
            answer = _error(401, "error.401.unauthorized.json")
        else:
            answer = self.handle(request.method, request.path, query, body)
        if answer.drop:
            return answer
        return replace(answer, headers={**self.rate_headers(), **answer.headers})

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        """Route one authorized request."""
        with self._lock:
            fault = self._take_fault(method, path)
            if fault is not None:
                return fault
            if method == "POST" and path == "/v2/droplets":
                return self._create(body)
            if method == "GET" and path == "/v2/droplets":
                return self._list_droplets(query)
            if method == "GET" and path == "/v2/sizes":
                return self._page("sizes", self.sizes, path, query)
            match = _DROPLET.fullmatch(path)
            if match and method == "GET":
                return self._get(int(match.group(1)))
            if match and method == "DELETE":
                return self._delete(int(match.group(1)))
            return _error(404, "error.404.not_found.json")

    def rate_headers(self) -> dict[str, str]:
        """The documented ratelimit-* headers."""
        with self._lock:
            self._remaining = max(self._remaining - 1, 0)
            return {
                "ratelimit-limit": "5000",
                "ratelimit-remaining": str(self._remaining),
                "ratelimit-reset": str(int(time.time()) + 3600),
            }

    def _take_fault(self, method: str, path: str) -> Answer | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                if fault.kind == "malformed":
                    return Answer(200, b'{"droplet": {"id": 5000', {"Content-Type": _JSON})
                retry = {"retry-after": fault.retry_after} if fault.retry_after else {}
                name = _ERROR_BODIES.get(fault.status, _SERVER_ERROR)
                return _error(fault.status, name, headers=retry)
        return None

    def _create(self, body: Any) -> Answer:
        problem = _create_problem(body)
        if problem:
            return _error(422, "error.422.unprocessable_entity.json", problem)
        size = next((s for s in self.sizes if s["slug"] == body["size"]), None)
        if size is None:
            return _error(422, "error.422.unprocessable_entity.json", "invalid size")
        if body["region"] not in size["regions"] or (body["size"], body["region"]) in (
            self.no_capacity
        ):
            return _error(422, "error.422.unprocessable_entity.json", NO_CAPACITY)
        droplet = self._new_droplet(body, size)
        self.created.append(droplet["id"])
        self.droplets[droplet["id"]] = droplet
        if self.lab is not None:
            droplet["lab_address"] = self.lab.boot(str(droplet["id"]), body.get("user_data"))
        self._polls[droplet["id"]] = 0
        answer = fixture("droplets_create.202.response.json")
        answer["droplet"] = _public(droplet)
        server_error = _error(500, "error.500.server_error.json")
        return http.after_create(self.after_create, _json(202, answer), server_error)

    def _new_droplet(self, body: dict[str, Any], size: dict[str, Any]) -> dict[str, Any]:
        droplet: dict[str, Any] = fixture("droplets_create.202.response.json")["droplet"]
        droplet_id = next(self._ids)
        droplet.update(
            id=droplet_id,
            name=body["name"],
            status="new",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            size=copy.deepcopy(size),
            size_slug=size["slug"],
            tags=[t for t in body.get("tags") or [] if _TAG.fullmatch(t)],
            networks={"v4": [], "v6": []},
            user_data=body.get("user_data"),  # kept for tests; not part of the droplet object
        )
        droplet["region"] = {**droplet["region"], "slug": body["region"], "name": body["region"]}
        droplet["image"] = {**droplet["image"], "slug": body["image"]}
        return droplet

    def _get(self, droplet_id: int) -> Answer:
        droplet = self.droplets.get(droplet_id)
        if droplet is None:
            return _error(404, "error.404.not_found.json")
        self._polls[droplet_id] += 1
        if not self.stuck and self._polls[droplet_id] > self.polls_to_active:
            self._activate(droplet)
        return _json(200, {"droplet": _public(droplet)})

    def _activate(self, droplet: dict[str, Any]) -> None:
        if droplet["status"] == "active":
            return
        n = droplet["id"] % 250 + 1
        networks = copy.deepcopy(fixture("droplets_get.200.response.json")["droplet"]["networks"])
        networks["v4"][0]["ip_address"] = droplet.get("lab_address") or f"10.128.0.{n}"
        networks["v4"][1]["ip_address"] = droplet.get("lab_address") or f"203.0.113.{n}"
        droplet.update(status="active", networks=networks)

    def _delete(self, droplet_id: int) -> Answer:
        if self.droplets.pop(droplet_id, None) is None:
            return _error(404, "error.404.not_found.json")
        self.deleted.append(droplet_id)
        if self.lab is not None:
            self.lab.stop(str(droplet_id))
        return Answer(204)

    def _list_droplets(self, query: dict[str, str]) -> Answer:
        """The reference: a plain list has only non-GPU droplets, ``type=gpus`` only GPU
        ones, and ``type`` cannot be combined with ``tag_name``. Whether ``tag_name``
        alone lists GPU droplets it does not say; this server takes the stricter reading
        (it does not), so a client must ask ``type=gpus`` to find them."""
        tag = query.get("tag_name")
        gpus = query.get("type") == "gpus"
        if tag is not None and "type" in query:
            return _error(
                422, "error.422.unprocessable_entity.json", "tag_name and type can't be combined"
            )
        items = [
            _public(d)
            for d in self.droplets.values()
            if _is_gpu(d["size"]) == gpus and (tag is None or tag in d.get("tags", []))
        ]
        return self._page("droplets", items, "/v2/droplets", query)

    def _page(
        self, key: str, items: list[dict[str, Any]], path: str, query: dict[str, str]
    ) -> Answer:
        per_page = min(int(query.get("per_page", DEFAULT_PER_PAGE)), self.max_per_page)
        page = int(query.get("page", 1))
        last = max((len(items) + per_page - 1) // per_page, 1)
        start = (page - 1) * per_page

        def link(number: int) -> str:
            return f"{self.url}{path}?{urlencode({**query, 'page': number})}"

        pages: dict[str, str] = {}
        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        body = {
            key: items[start : start + per_page],
            "links": {"pages": pages} if pages else {},
            "meta": {"total": len(items)},
        }
        return _json(200, body)


def _error(
    status: int, name: str, message: str | None = None, headers: dict[str, str] | None = None
) -> Answer:
    body = fixture(name)
    if message is not None:
        body["message"] = message
    return _json(status, body, headers)


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Answer:
    return Answer.json(status, data, content_type=_JSON, headers=headers)


def _is_gpu(size: dict[str, Any]) -> bool:
    return "gpu_info" in size or str(size.get("slug", "")).startswith("gpu-")


def _public(droplet: dict[str, Any]) -> dict[str, Any]:
    return {
        k: copy.deepcopy(v) for k, v in droplet.items() if k not in ("user_data", "lab_address")
    }


def _create_problem(body: Any) -> str | None:
    """What the spec's create schema rejects: required ``name``, ``size``, ``image``
    (a region is required here, as amdfleet always names one), list-typed ``tags`` and
    ``ssh_keys``, string ``user_data``."""
    if not isinstance(body, dict):
        return "request payload validation failed: body is not an object"
    for key in ("name", "size", "region"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"request payload validation failed: {key} is required"
    if not isinstance(body.get("image"), str | int):
        return "request payload validation failed: image is required"
    for key in ("tags", "ssh_keys"):
        if not isinstance(body.get(key, []), list):
            return f"request payload validation failed: {key} must be an array"
    if not isinstance(body.get("user_data", ""), str):
        return "request payload validation failed: user_data must be a string"
    return None
