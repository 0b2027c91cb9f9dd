"""A real local HTTP server implementing the Vultr API v2 bare-metal endpoints.

Why it exists: api.vultr.com is unreachable here and renting an MI300X box per test run
is not an option, yet :class:`amdfleet.clouds.vultr.VultrAPI` must be tested over real
HTTP. The server follows Vultr's reference (https://www.vultr.com/api/, i.e. the OpenAPI
document ``blob/v0.0.1.json`` of github.com/vultr/vultr-java) and the examples saved in
``../shared/fixtures/cloud-apis/vultr`` (README and ``*.source.txt`` there):

``POST /v2/bare-metals`` -> 202 ``{"bare_metal": {...}}``
    Required ``region`` and ``plan`` (the plan's ``locations`` must list the region), one
    of ``os_id``/``app_id``/``image_id``/``snapshot_id``; optional ``label``,
    ``hostname``, ``tags`` (list), ``sshkey_id`` (list), ``user_data`` (base64, decoded
    and kept). The new server is ``status`` "pending" with an empty ``main_ip``, as in
    ``bare_metals_create.202.response.json``.
``GET /v2/bare-metals/{id}`` -> 200 ``{"bare_metal": {...}}`` or 404
    Each GET of a server moves it on: ``pending``/``none`` until the ``boot_polls``-th
    GET, which shows ``active``/``installingbooting`` with its ``main_ip`` (192.0.2.0/24,
    the documentation range the examples use), then ``active``/``ok``.
``GET /v2/bare-metals?per_page=&cursor=`` -> ``{"bare_metals": [...], "meta": {"total",
    "links": {"next", "prev"}}}``
    Cursor paging as documented (``per_page`` default 100, max 500; :attr:`page_limit`
    lowers the max so tests can see several pages). The 2023 reference documents no
    ``tag`` filter for bare metals, so other query parameters are recorded and ignored.
``DELETE /v2/bare-metals/{id}`` -> 204 (no body) or 404
``GET /v2/plans-metal`` -> ``{"plans_metal": [...], "meta": {...}}``
    The documented example plan (``vbm-4c-32gb``, verbatim from
    ``plans_metal_list.200.response.json``) plus the three AMD GPU plans in
    :data:`GPU_PLANS` (the reference documents no GPU plan: see there).

Every request needs ``Authorization: Bearer <token>``; another token gets 401. 4xx
bodies are ``{"error": ..., "status": ...}``: the reference says 4xx bodies carry an
``error`` attribute but shows no example; the ``status`` member follows what Vultr's
clients' tests use. A 429 carries ``Retry-After`` in seconds, as the reference says.

Faults, each switched on by a method: :meth:`VultrServer.rate_limit` (429 with
``Retry-After``), :meth:`VultrServer.fail` (500s), :meth:`VultrServer.no_capacity` (a
create refused for capacity, words in :data:`CAPACITY_MESSAGE`: Vultr documents none),
:meth:`VultrServer.stick` (a server that never leaves provisioning),
:meth:`VultrServer.vanish` (deleted out of band, as from the Vultr console),
:meth:`VultrServer.malform` (a 200 whose body is not the documented JSON),
:attr:`VultrServer.after_create` (create the server, then answer 500, drop the connection
or hang past the client's read timeout: :data:`~tests.support.clouds.http.AfterCreate`).
A wrong token is just a client built with another token.

With a ``lab`` (tests/support/clouds/lab_boot.py) each server is a real SSH host booted
from its user-data; its address is the ``main_ip``.

:attr:`VultrServer.ledger` records every server created through the API and how each
ended (deleted through the API or vanished), so a test can assert nothing leaked.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support.clouds import http
from tests.support.clouds.http import Answer
from tests.support.clouds.lab_boot import LabBoot

FIXTURES = Path(__file__).resolve().parents[3] / "../shared/fixtures/cloud-apis/vultr"
DEFAULT_PAGE = 100
MAX_PAGE = 500
CAPACITY_MESSAGE = "Plan is not available in the selected region. Out of stock."
"""Vultr documents no body for a capacity refusal; this is a 400 in its error shape."""
GPU_PLANS: tuple[dict[str, Any], ...] = (
    {
        "id": "vbm-256c-2048gb-8-mi300x-gpu",
        "cpu_count": 128,
        "cpu_threads": 256,
        "cpu_model": "EPYC 9534",
        "ram": 2097152,
        "disk": 3576,
        "disk_count": 8,
        "bandwidth": 25600,
        "monthly_cost": 23301.6,
        "hourly_cost": 31.92,
        "type": "NVMe",
        "locations": ["ord", "sea"],
    },
    {
        "id": "vbm-256c-3072gb-8-mi325x-gpu",
        "cpu_count": 128,
        "cpu_threads": 256,
        "cpu_model": "EPYC 9534",
        "ram": 3145728,
        "disk": 3576,
        "disk_count": 8,
        "bandwidth": 25600,
        "monthly_cost": 26951.6,
        "hourly_cost": 36.92,
        "type": "NVMe",
        "locations": ["ord"],
    },
    {
        "id": "vbm-256c-3072gb-8-mi355x-gpu",
        "cpu_count": 128,
        "cpu_threads": 256,
        "cpu_model": "EPYC 9575F",
        "ram": 3145728,
        "disk": 3576,
        "disk_count": 8,
        "bandwidth": 25600,
        "monthly_cost": 15125.6,
        "hourly_cost": 20.72,
        "type": "NVMe",
        "locations": [],
    },
)
"""AMD GPU bare-metal plans, in the field set of the documented plan. The reference has
no GPU plan example: the ids are those dstack's gpuhunt catalog (``BARE_METAL_GPU_DETAILS``)
and Vultr tooling list; ``hourly_cost`` (a field of the newer API) and the prices are as a
third-party Vultr CLI's tests record them, ``monthly_cost`` = hourly x 730; the MI355X
plan has no location, as a public price survey found it. CPU model and bandwidth are
illustrative. Tests assert the mapping and arithmetic, not Vultr's current prices."""


@dataclass
class Ledger:
    """Servers created through the API and how each ended."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    """Deleted out of band (:meth:`VultrServer.vanish`), not by the client."""

    def leaked(self) -> set[str]:
        """Created and still existing: what a test must not leave behind."""
        return set(self.created) - set(self.deleted) - set(self.vanished)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool
    body: Any
    status: int


@dataclass
class _Server:
    record: dict[str, Any]
    polls: int = 0
    stuck: bool = False


class VultrServer:
    """The server: start with :meth:`start` (or as a context manager), stop with
    :meth:`stop`. ``url`` is the base URL to give the client."""

    def __init__(self, token: str, *, boot_polls: int = 2, lab: LabBoot | None = None) -> None:
        self.token = token
        self.lab = lab
        self.boot_polls = boot_polls
        self.page_limit = MAX_PAGE
        self.after_create: http.AfterCreate = "answer"
        self.ledger = Ledger()
        self.requests: list[Request] = []
        self.plans: list[dict[str, Any]] = plans()
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self._rate_limits: list[tuple[int, str | None]] = []
        self._failures: list[str | None] = []
        self._malformed: list[bytes] = []
        self._no_capacity: set[tuple[str, str]] = set()
        self._stick_next = False
        self._addresses = itertools.count(10)
        self._http = http.JsonApiServer(self.handle, name="vultr-api", poll_interval=0.02)

    @property
    def url(self) -> str:
        """The API base URL (the client appends ``/v2/...``)."""
        return self._http.url

    def start(self) -> Self:
        """Serve in a background thread."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def rate_limit(self, retry_after: int, times: int = 1, *, method: str | None = None) -> None:
        """Answer the next ``times`` requests (of ``method``, if given) 429 with
        ``Retry-After: retry_after``."""
        with self._lock:
            self._rate_limits += [(retry_after, method)] * times

    def fail(self, times: int = 1, *, method: str | None = None) -> None:
        """Answer the next ``times`` requests (of ``method``, if given) 500, before doing
        anything."""
        with self._lock:
            self._failures += [method] * times

    def malform(self, body: bytes = b"<html><body>502 Bad Gateway</body></html>") -> None:
        """Answer the next request 200 with ``body`` instead of the documented JSON."""
        with self._lock:
            self._malformed.append(body)

    def no_capacity(self, region: str, plan: str) -> None:
        """Refuse creates of ``plan`` in ``region`` for lack of capacity (400)."""
        with self._lock:
            self._no_capacity.add((region, plan))

    def stick(self) -> None:
        """The next server created stays ``pending``/``none`` however often it is read."""
        with self._lock:
            self._stick_next = True

    def vanish(self, server_id: str) -> None:
        """Delete a server out of band (as a user in the Vultr console would)."""
        with self._lock:
            del self._servers[server_id]
            self.ledger.vanished.append(server_id)
        if self.lab is not None:
            self.lab.stop(server_id)

    def user_data(self, server_id: str) -> str:
        """The decoded user-data a server was created with."""
        with self._lock:
            return str(self._servers[server_id].record["_user_data"])

    def handle(self, request: http.Request) -> Answer:
        """One request (called by the handler thread); faults first, then the API."""
        method, path, query, body = request.method, request.path, request.query, request.body
        with self._lock:
            authorized = request.headers.get("authorization") == f"Bearer {self.token}"
            answer = self._answer(method, path, query, authorized, body)
            self.requests.append(Request(method, path, query, authorized, body, answer.status))
            return answer

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], authorized: bool, body: Any
    ) -> Answer:
        limit = next((r for r in self._rate_limits if r[1] in (None, method)), None)
        if limit is not None:
            self._rate_limits.remove(limit)
            wait = limit[0]
            return error(429, "Rate limit reached - please try your request again later.", wait)
        if method in self._failures or None in self._failures:
            self._failures.remove(method if method in self._failures else None)
            return Answer(500, b"Internal Server Error", {"Content-Type": "text/plain"})
        if not authorized:
            return error(401, "Invalid API token.")
        if self._malformed:
            return Answer(200, self._malformed.pop(0), {"Content-Type": "application/json"})
        return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        parts = path.strip("/").split("/")
        if parts == ["v2", "plans-metal"] and method == "GET":
            return self._page(self.plans, "plans_metal", query)
        if parts == ["v2", "bare-metals"] and method == "GET":
            records = [public(s.record) for s in self._servers.values()]
            return self._page(records, "bare_metals", query)
        if parts == ["v2", "bare-metals"] and method == "POST":
            return self._create(body)
        if len(parts) == 3 and parts[:2] == ["v2", "bare-metals"] and method == "GET":
            return self._get(parts[2])
        if len(parts) == 3 and parts[:2] == ["v2", "bare-metals"] and method == "DELETE":
            return self._delete(parts[2])
        return error(404, f"Invalid API call: {method} {path}")

    def _create(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            return error(400, "Invalid JSON body.")
        problem = self._create_problem(body)
        if problem:
            return error(400, problem)
        if (body["region"], body["plan"]) in self._no_capacity:
            return error(400, CAPACITY_MESSAGE)
        server_id = str(uuid.uuid4())
        record = new_record(server_id, body)
        if self.lab is not None:
            record["_lab_address"] = self.lab.boot(server_id, record["_user_data"])
        self._servers[server_id] = _Server(record, stuck=self._stick_next)
        self._stick_next = False
        self.ledger.created.append(server_id)
        created = Answer.json(202, {"bare_metal": public(record)})
        server_error = Answer(500, b"Internal Server Error", {"Content-Type": "text/plain"})
        return http.after_create(self.after_create, created, server_error)

    def _create_problem(self, body: dict[str, Any]) -> str | None:
        plan = next((p for p in self.plans if p["id"] == body.get("plan")), None)
        if plan is None:
            return "Invalid plan chosen."
        if body.get("region") not in plan["locations"]:
            return "Invalid region chosen for this plan."
        sources = [k for k in ("os_id", "app_id", "image_id", "snapshot_id") if body.get(k)]
        if len(sources) != 1:
            return "Choose exactly one of os_id, app_id, image_id or snapshot_id."
        for key in ("tags", "sshkey_id"):
            if key in body and not (
                isinstance(body[key], list) and all(isinstance(v, str) for v in body[key])
            ):
                return f"Invalid {key}: expected a list of strings."
        try:
            base64.b64decode(body.get("user_data", ""), validate=True)
        except (binascii.Error, TypeError):
            return "Invalid user_data: must be base64 encoded."
        return None

    def _get(self, server_id: str) -> Answer:
        server = self._servers.get(server_id)
        if server is None:
            return error(404, "Bare Metal not found.")
        if not server.stuck:
            server.polls += 1
            self._advance(server)
        return Answer.json(200, {"bare_metal": public(server.record)})

    def _advance(self, server: _Server) -> None:
        record = server.record
        if server.polls == self.boot_polls:
            record.update(status="active", server_status="installingbooting")
            record.update(main_ip=record.get("_lab_address") or f"192.0.2.{next(self._addresses)}")
            record.update(netmask_v4="255.255.255.0", gateway_v4="192.0.2.1")
        elif server.polls > self.boot_polls:
            record.update(server_status="ok", power_status="running")

    def _delete(self, server_id: str) -> Answer:
        if self._servers.pop(server_id, None) is None:
            return error(404, "Bare Metal not found.")
        self.ledger.deleted.append(server_id)
        if self.lab is not None:
            self.lab.stop(server_id)
        return Answer(204)

    def _page(self, items: list[dict[str, Any]], key: str, query: dict[str, list[str]]) -> Answer:
        try:
            per_page = int(query.get("per_page", [str(DEFAULT_PAGE)])[0])
            start = decode_cursor(query.get("cursor", [""])[0])
        except ValueError as e:
            return error(400, f"Invalid pagination: {e}")
        size = max(1, min(per_page, MAX_PAGE, self.page_limit))
        page = items[start : start + size]
        after = start + size
        links = {
            "next": encode_cursor(after) if after < len(items) else "",
            "prev": encode_cursor(max(start - size, 0)) if start else "",
        }
        return Answer.json(200, {key: page, "meta": {"total": len(items), "links": links}})


def plans() -> list[dict[str, Any]]:
    """The documented example plan and the GPU plans."""
    example = json.loads((FIXTURES / "plans_metal_list.200.response.json").read_text())
    return [*example["plans_metal"], *copy.deepcopy(GPU_PLANS)]


def new_record(server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A new server in the documented fields (``bare_metals_create.202.response.json``)."""
    fixture = json.loads((FIXTURES / "bare_metals_create.202.response.json").read_text())
    record: dict[str, Any] = fixture["bare_metal"]
    record.update(
        id=server_id,
        region=body["region"],
        plan=body["plan"],
        label=body.get("label", ""),
        tags=list(body.get("tags", [])),
        os_id=body.get("os_id", 0),
        app_id=body.get("app_id", 0),
        image_id=body.get("image_id", ""),
        date_created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        status="pending",
        power_status="stopped",
        server_status="none",
        main_ip="",
        netmask_v4="",
        gateway_v4="",
        _user_data=base64.b64decode(body.get("user_data", "")).decode(),
    )
    record.pop("tag", None)
    return record


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the server's private bookkeeping."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def encode_cursor(offset: int) -> str:
    """An opaque cursor, as Vultr's (base64 text)."""
    return base64.urlsafe_b64encode(f"next__{offset}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The offset a cursor stands for (0 for none); ValueError when it is not ours."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise ValueError(f"bad cursor {cursor!r}") from e
    prefix, _, offset = text.partition("__")
    if prefix != "next" or not offset.isdigit():
        raise ValueError(f"bad cursor {cursor!r}")
    return int(offset)


def error(status: int, message: str, retry_after: int | None = None) -> Answer:
    """A Vultr error: ``{"error": ..., "status": ...}``, ``Retry-After`` on a 429."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Answer.json(status, {"error": message, "status": status}, headers=headers)
