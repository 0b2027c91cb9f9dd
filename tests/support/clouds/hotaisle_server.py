"""A real local Hot Aisle API for tests: the virtual-machine endpoints amdfleet uses.

Why it exists: admin.hotaisle.app is unreachable here (and renting MI300X VMs in a test
would cost money), yet the client must be tested over real HTTP. This server follows Hot
Aisle's own API description, ``swagger.json`` of github.com/hotaisle/hotaisle-cli (kept in
``../shared/fixtures/cloud-apis/hotaisle/`` with FIELDS.md, which gives the line of every
name used here); it reads that file at start to know the request field names, and
answers 422 to any name the swagger does not define. Served under ``/api``:

``GET /teams/{team}/virtual_machines/available/``
    ``AvailableVirtualMachineTypes``: ``Quantity``, ``MinimumReservationMinutes``,
    ``OnDemandPrice`` (US cents per hour), ``Specs``.
``POST /teams/{team}/virtual_machines/`` (``VMProvisionRequest``)
    Assigns a VM of the first type whose ``Specs`` match every field posted, and returns
    its ``VirtualMachineDetails`` (200); 404 "No available virtual machine matching
    requested specifications" when none is free.
``GET /teams/{team}/virtual_machines/`` and ``GET|PATCH|DELETE .../{vm}/``
    The list (one unpaged array), one VM's details, its ``description`` (PATCH
    ``VirtualMachineUpdate``, 204) and deletion (204; ``force`` is recorded).
``GET .../{vm}/state/``
    ``VirtualMachineState``: ``state`` is ``shut off`` for the first ``boot_polls`` reads,
    then ``running`` (the swagger does not say what a VM reports while it boots; ``shut
    off`` is one of the documented words); ``host``.
``POST /user/ssh_keys/`` (``SSHKeyRequest``)
    200, or 409 when the key is already registered.

Errors are JSON strings, as the swagger's ``responses`` define them ("Unauthorized",
"Not Found: Resource not found"). Every call needs ``Authorization: Token <token>``.

Faults for tests (:meth:`HotAisleServer.inject` and its shorthands): canned replies for
the next calls of one route (429 with ``Retry-After``, 500, a malformed body),
:attr:`no_capacity` (provision answers 404 although types are listed),
:meth:`stuck` (a VM that never runs), :meth:`vanish` (deleted out of band),
:attr:`after_create` (provision the VM, then answer 500, drop the connection or hang past
the client's read timeout: :data:`~tests.support.clouds.http.AfterCreate`). The ledger
(:attr:`created`, :attr:`deleted`, :meth:`leaked`) shows what was rented and returned.
With a ``lab`` (tests/support/clouds/lab_boot.py) each VM is a real SSH host (its own
host key, the registered SSH keys authorized) whose address is the VM's IPv4.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

from tests.support.clouds import http
from tests.support.clouds.http import Answer
from tests.support.clouds.lab_boot import LabBoot

SWAGGER = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "fixtures"
    / "cloud-apis"
    / "hotaisle"
    / "swagger.json"
)
NO_MATCH = "No available virtual machine matching requested specifications"
ROUTES = ("available", "provision", "list", "get", "describe", "delete", "state", "ssh_key")


@dataclass
class Call:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any
    status: int


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    remaining: int


@dataclass
class _VM:
    details: dict[str, Any]
    offer: dict[str, Any]
    reads_until_running: int | None
    user_data_url: str | None = None


@dataclass
class _Ledger:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def swagger_example(definition: str) -> dict[str, Any]:
    """An object built from the per-field ``example`` values of a swagger definition
    (nested definitions followed), e.g. ``VirtualMachineSpecs``."""
    spec = json.loads(SWAGGER.read_text())
    example: dict[str, Any] = _example(spec["definitions"], spec["definitions"][definition])
    return example


def offer(
    gpus: int,
    model: str,
    *,
    cpu_cores: int,
    ram_gib: int,
    disk_gib: int,
    price_cents: int,
    quantity: int = 4,
) -> dict[str, Any]:
    """An ``AvailableVirtualMachineTypes`` entry with the swagger's field names."""
    return {
        "Quantity": quantity,
        "MinimumReservationMinutes": 30,
        "OnDemandPrice": price_cents,
        "Specs": {
            "cpu_cores": cpu_cores,
            "ram_capacity": ram_gib * 2**30,
            "disk_capacity": disk_gib * 2**30,
            "cpus": {
                "count": 1,
                "manufacturer": "AMD",
                "model": "EPYC 9534",
                "cores": cpu_cores,
                "frequency": 2450000000,
            },
            "gpus": [{"count": gpus, "manufacturer": "AMD", "model": model}],
        },
    }


class HotAisleServer:
    """The Hot Aisle API for one team, on 127.0.0.1 at an ephemeral port, in a thread."""

    def __init__(
        self,
        token: str,
        team: str,
        offers: list[dict[str, Any]],
        *,
        boot_polls: int = 2,
        lab: LabBoot | None = None,
    ) -> None:
        self.token = token
        self.lab = lab
        self.team = team
        self.offers = offers
        self.boot_polls = boot_polls
        self.no_capacity = False
        self.after_create: http.AfterCreate = "answer"
        self.ssh_keys: list[str] = []
        self._vms: dict[str, _VM] = {}
        self._ledger = _Ledger()
        self._calls: list[Call] = []
        self._replies: dict[str, list[_Reply]] = {}
        self._serial = 0
        self._lock = threading.Lock()
        self._fields = _request_fields()
        self._http = http.JsonApiServer(self.handle, name="hotaisle-api").start()

    @property
    def url(self) -> str:
        """The API base, as ``https://admin.hotaisle.app/api`` is for the real one."""
        return f"{self._http.url}/api"

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def created(self) -> list[str]:
        """Names of every VM provisioned, in order."""
        with self._lock:
            return list(self._ledger.created)

    @property
    def deleted(self) -> list[str]:
        """Names of every VM deleted (by the API or out of band), in order."""
        with self._lock:
            return list(self._ledger.deleted)

    def leaked(self) -> list[str]:
        """VMs provisioned and never deleted."""
        with self._lock:
            return [n for n in self._ledger.created if n not in self._ledger.deleted]

    def details(self, name: str) -> dict[str, Any]:
        """A VM's details as the server holds them (KeyError if it does not exist)."""
        with self._lock:
            return dict(self._vms[name].details)

    def user_data_url(self, name: str) -> str | None:
        with self._lock:
            return self._vms[name].user_data_url

    def inject(
        self,
        route: str,
        status: int,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``route`` (one of :data:`ROUTES`) with
        ``status`` and ``body`` (bytes as they are, anything else as JSON) instead."""
        assert route in ROUTES, f"unknown route {route!r}; valid: {ROUTES}"
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        with self._lock:
            self._replies.setdefault(route, []).append(
                _Reply(status, payload, dict(headers or {}), times)
            )

    def throttle(self, route: str, retry_after: str, *, times: int = 1) -> None:
        """429 with ``Retry-After`` (seconds or an HTTP date) for the next calls."""
        self.inject(
            route, 429, "Too Many Requests", headers={"Retry-After": retry_after}, times=times
        )

    def fail(self, route: str, *, times: int = 1) -> None:
        """500 "Internal Server Error" for the next calls."""
        self.inject(route, 500, "Internal Server Error", times=times)

    def malform(self, route: str, *, times: int = 1) -> None:
        """200 with a body that is not the documented JSON for the next calls."""
        self.inject(route, 200, b"<html>upstream hiccup</html>", times=times)

    def stuck(self, name: str) -> None:
        """The VM stays ``shut off``: it never comes up."""
        with self._lock:
            self._vms[name].reads_until_running = None

    def vanish(self, name: str) -> None:
        """Delete the VM out of band (as from Hot Aisle's web console)."""
        with self._lock:
            self._remove(name)

    def close(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the handler -----------------------------------------------------------

    def handle(self, request: http.Request) -> Answer:
        """One request: a body that is not JSON is a 400 (not recorded); then auth, an
        injected reply, the documented behaviour."""
        try:
            body = request.json()
        except ValueError:
            return Answer.json(400, "Bad Request: Invalid input")
        method, path, query = request.method, request.path, request.query
        auth = request.headers.get("authorization")
        with self._lock:
            answer = self._answer(method, path, query, auth, body)
            self._calls.append(Call(method, path, query, auth, body, answer.status))
            return answer

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], auth: str | None, body: Any
    ) -> Answer:
        if auth != f"Token {self.token}":
            return Answer.json(401, "Unauthorized")
        route, vm = _route(method, path, self.team)
        if route is None:
            return Answer.json(404, "Not Found: Resource not found")
        canned = self._canned(route)
        if canned is not None:
            return canned
        if route == "available":
            return Answer.json(200, self.offers)
        if route == "list":
            return Answer.json(200, [vm_.details for vm_ in self._vms.values()])
        if route == "provision":
            return self._provision(body)
        if route == "ssh_key":
            return self._ssh_key(body)
        if vm not in self._vms:
            return Answer.json(404, "Not Found: Resource not found")
        return self._vm_route(route, vm, query, body)

    def _vm_route(self, route: str, name: str, query: dict[str, list[str]], body: Any) -> Answer:
        if route == "get":
            return Answer.json(200, self._vms[name].details)
        if route == "state":
            return Answer.json(200, {"state": self._read_state(name), "host": "hv-07"})
        if route == "describe":
            unknown = _unknown(body, self._fields["VirtualMachineUpdate"])
            if unknown:
                return Answer.json(422, f"Unprocessable Entity: unknown field {unknown}")
            self._vms[name].details["description"] = body.get("description", "")
            return Answer(204)
        self._remove(name)
        return Answer(204)

    def _provision(self, body: Any) -> Answer:
        unknown = _unknown(body, self._fields["VMProvisionRequest"])
        if unknown:
            return Answer.json(422, f"Unprocessable Entity: unknown field {unknown}")
        chosen = None if self.no_capacity else _matching(self.offers, body)
        if chosen is None:
            return Answer.json(404, NO_MATCH)
        chosen["Quantity"] -= 1
        self._serial += 1
        name = f"vm-{self._serial:02d}"
        private, public = f"10.20.0.{10 + self._serial}", f"203.0.113.{10 + self._serial}"
        if self.lab is not None:
            private = public = self.lab.boot(name, None, registered_keys=self.ssh_keys)
        details = {
            "name": name,
            "ip_address": private,
            "description": "",
            "ssh_access": {"ip_address": public, "port": 22},
            **json.loads(json.dumps(chosen["Specs"])),
        }
        self._vms[name] = _VM(details, chosen, self.boot_polls, body.get("user_data_url"))
        self._ledger.created.append(name)
        server_error = Answer.json(500, "Internal Server Error")
        return http.after_create(self.after_create, Answer.json(200, details), server_error)

    def _ssh_key(self, body: Any) -> Answer:
        unknown = _unknown(body, self._fields["SSHKeyRequest"])
        key = body.get("authorized_key") if isinstance(body, dict) else None
        if unknown or not isinstance(key, str):
            return Answer.json(422, "Unprocessable Entity - invalid SSH key format")
        if key in self.ssh_keys:
            return Answer.json(409, "Conflict - key already registered")
        self.ssh_keys.append(key)
        kind, data = key.split()[:2]
        return Answer.json(200, {"type": kind, "public_key": data, "fingerprint": "SHA256:test"})

    def _read_state(self, name: str) -> str:
        vm = self._vms[name]
        if vm.reads_until_running is None:
            return "shut off"
        if vm.reads_until_running > 0:
            vm.reads_until_running -= 1
            return "shut off"
        return "running"

    def _remove(self, name: str) -> None:
        vm = self._vms.pop(name)
        vm.offer["Quantity"] += 1
        self._ledger.deleted.append(name)
        if self.lab is not None:
            self.lab.stop(name)

    def _canned(self, route: str) -> Answer | None:
        queue = self._replies.get(route) or []
        if not queue:
            return None
        reply = queue[0]
        reply.remaining -= 1
        if reply.remaining <= 0:
            queue.pop(0)
        return Answer(
            reply.status, reply.body, {"Content-Type": "application/json", **reply.headers}
        )


def _route(method: str, path: str, team: str) -> tuple[str | None, str | None]:
    if path == "/api/user/ssh_keys/" and method == "POST":
        return "ssh_key", None
    match = re.fullmatch(r"/api/teams/([^/]+)/virtual_machines/(?:([^/]+)/(state/)?)?", path)
    if match is None or unquote(match[1]) != team:
        return None, None
    vm = unquote(match[2]) if match[2] else None
    table = {
        (False, False, "GET"): "list",
        (False, False, "POST"): "provision",
        (True, False, "GET"): "get",
        (True, False, "PATCH"): "describe",
        (True, False, "DELETE"): "delete",
        (True, True, "GET"): "state",
    }
    if vm == "available" and method == "GET":
        return "available", None
    return table.get((vm is not None, match[3] is not None, method)), vm


def _matching(offers: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any] | None:
    wanted = {k: v for k, v in body.items() if k != "user_data_url"}
    for item in offers:
        specs = item["Specs"]
        if item["Quantity"] > 0 and all(specs.get(k) == v for k, v in wanted.items()):
            return item
    return None


def _unknown(body: Any, allowed: frozenset[str]) -> list[str]:
    if not isinstance(body, dict):
        return ["<body is not an object>"]
    return sorted(set(body) - allowed)


def _request_fields() -> dict[str, frozenset[str]]:
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    names = ("VMProvisionRequest", "VirtualMachineUpdate", "SSHKeyRequest")
    return {name: frozenset(_properties(definitions, definitions[name])) for name in names}


def _properties(definitions: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _properties(definitions, definitions[schema["$ref"].rsplit("/", 1)[1]])
    props: dict[str, Any] = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        props.update(_properties(definitions, part))
    return props


def _example(definitions: Mapping[str, Any], schema: Mapping[str, Any]) -> Any:
    if "$ref" in schema:
        return _example(definitions, definitions[schema["$ref"].rsplit("/", 1)[1]])
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "array":
        return [_example(definitions, schema["items"])]
    props = _properties(definitions, schema)
    out = {name: _example(definitions, prop) for name, prop in props.items()}
    return {k: v for k, v in out.items() if v is not None} or None
