"""Hot Aisle (admin.hotaisle.app): AMD Instinct MI300X virtual machines rented per team.

Facts come from Hot Aisle's own API description (``swagger.json`` of its official CLI,
github.com/hotaisle/hotaisle-cli, kept with its field list in
``../shared/fixtures/cloud-apis/hotaisle/``); dstack's and gpuhunt's Hot Aisle code
show how it is used. What differs from the other clouds, and what amdfleet does about it:

- **Auth and errors.** ``Authorization: Token <token>`` on ``https://admin.hotaisle.app/api``;
  error bodies are plain strings ("Unauthorized", "Not Found: Resource not found").
- **Sizes are specs, not slugs.** ``GET /teams/{team}/virtual_machines/available/`` lists
  ``Quantity``, ``OnDemandPrice`` (US cents per hour) and ``Specs`` (``cpu_cores``,
  ``ram_capacity``, ``disk_capacity`` in bytes, ``cpus``, ``gpus``). amdfleet names each
  type by :func:`size_slug` (``1x-mi300x-13c-224g-12288g``: GPUs, CPU cores, RAM GiB, disk
  GiB) and provisions it by posting that type's ``Specs`` back, as dstack does.
- **Provisioning.** ``POST /teams/{team}/virtual_machines/`` assigns a VM and blocks until
  it is provisioned; 404 means no VM matches (no capacity: :class:`CapacityError`, with
  the 404), 402 insufficient balance, 401 also "Maximum VMs already provisioned for this
  team". A size amdfleet's list of the team's VM types does not hold is an
  :class:`~amdfleet.clouds.api.UnknownSizeError` naming the types it does hold; a type
  listed with ``Quantity`` 0 is a shortage. The POST is not sent again after a 5xx or a
  transport failure (the VM may exist by then: a retry could rent a second one); 429 is
  retried as Retry-After says.
- **A lost answer is adopted.** The provision request can carry no mark (no name, no
  tags: ``VMProvisionRequest`` is the specs and ``user_data_url``), so after a 5xx, a
  dropped connection or a read timeout ``create`` lists the team's VMs and adopts the one
  that was not there before the POST, carries no description and is of the size asked
  for, then marks it as usual. This process provisions for one team one VM at a time
  (:func:`_provisioning`), so a VM another create of the same process is still marking
  is never taken. When no such VM, or several, are listed, the error says so and names
  them: ``amdfleet cloud orphans --provider hotaisle`` lists every unmarked VM of the team
  (:meth:`HotAisleClient.list_all`) for the user to judge (a team may hold VMs rented by
  hand, so those are never deleted automatically).
- **The cloud names the VM.** Its ``name`` (``vm-01``) is the id in every path; there is
  no create-time name.
- **No tags.** The only free text a VM carries is its ``description`` (PATCH
  ``/teams/{team}/virtual_machines/{vm}/``). ``create`` writes ``<request name>
  [<tag> <tag>...]`` there right after provisioning (:func:`describe`), and
  ``list_tagged`` reads it back. If marking the VM or reading it back fails, ``create``
  deletes it before it raises; only a process killed between provisioning and marking
  leaves an unmarked VM, which :meth:`HotAisleClient.list_all` still shows.
- **No inline user-data.** The API takes only ``user_data_url``: a URL the cloud fetches
  cloud-init user-data from (and then rebuilds the VM, much slower). amdfleet's user-data
  carries the instance's SSH host *private* key, which must never be published at a URL,
  so ``create`` refuses ``CreateRequest.user_data``: **on Hot Aisle the host key cannot be
  pinned from birth**, and using it needs the stack's explicit opt-in to trust the host
  key on first use (a later change adds that opt-in to the stack schema). ``create``
  takes ``user_data_url=`` for user-data that holds no secret.
- **No SSH key ids.** Keys belong to the user (``POST /user/ssh_keys/``, 409 = already
  there, see :meth:`HotAisleClient.add_ssh_key`) and every VM gets them; the login user is
  ``hotaisle``. ``CreateRequest.ssh_key_ids`` must be empty.
- **No image choice, no regions, no pages.** VMs boot Hot Aisle's own image
  (``CreateRequest.image`` must be empty); there is one location, named :data:`REGION` as
  gpuhunt names it; the VM list is one unpaged array.
- **State.** ``GET .../{vm}/state/`` gives libvirt's words (``running``, ``shut off``,
  ``paused``...); see :data:`STATES`.
- **Delete** (``DELETE .../{vm}/?force=true``, 204) blocks until the VM is gone.
  ``force`` deletes before the minimum reservation time is met (that minimum is still
  billed): amdfleet never keeps a VM it no longer wants.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from amdfleet.clouds.api import (
    DEFAULT_RETRY,
    REQUEST_TIMEOUT_S,
    CapacityError,
    CloudClient,
    CreateRequest,
    Instance,
    InstanceState,
    RetryPolicy,
    SizeOffer,
    UnknownSizeError,
    backoff,
    error_detail,
    json_object,
)
from amdfleet.errors import CloudAPIError

PROVIDER = "hotaisle"
BASE_URL = "https://admin.hotaisle.app/api"
REGION = "us-michigan-1"
"""Hot Aisle's one location; the API has no region field (gpuhunt hardcodes this name)."""
BLOCKING_TIMEOUT_S = 900.0
"""Read timeout for provision and delete, which return only when the work is done."""
GPU_MODELS = frozenset({"mi300x", "mi325x", "mi355x"})
STATES: Mapping[str, InstanceState] = {
    "running": InstanceState.RUNNING,
    "crashed": InstanceState.FAILED,
    "in shutdown": InstanceState.STOPPING,
}
"""libvirt state words that decide something; any other word (``shut off``, ``paused``,
``no state``...) is PENDING: a VM provisioned with user-data is shut off while it is
rebuilt, and amdfleet never stops a VM itself."""
_WORD = re.compile(r"^[A-Za-z0-9._-]+$")
_DESCRIPTION = re.compile(r"^(?P<name>\S+) \[(?P<tags>[^\]]*)\]$")


class HotAisleClient(CloudClient):
    """One Hot Aisle team's VMs (implements :class:`~amdfleet.clouds.api.CloudAPI`).

    The token goes into the ``Authorization`` header only: no message, repr or error
    carries it. Close the client (or use it as a context manager) when done."""

    provider = PROVIDER

    def __init__(
        self,
        token: str,
        team: str,
        *,
        base_url: str = BASE_URL,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        blocking_timeout_s: float = BLOCKING_TIMEOUT_S,
    ) -> None:
        if not team:
            raise CloudAPIError(PROVIDER, "configure client", None, "the team handle is empty")
        self.team = team
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=blocking_timeout_s)
        super().__init__(base_url, f"Token {token}", retry=retry, sleep=sleep, timeout=timeout)

    def __repr__(self) -> str:
        return f"HotAisleClient(team={self.team!r}, base_url={self.base_url!r})"

    def create(self, request: CreateRequest, *, user_data_url: str | None = None) -> Instance:
        """Provision one VM of size ``request.size`` and mark it with the request's name
        and tags. Raises UnknownSizeError for a size the team's list of VM types does not
        hold (naming those it holds), CapacityError when no VM of that size is free,
        CloudAPIError for a request Hot Aisle cannot take (inline user-data, SSH key ids,
        an image, another region), a refusal, or a lost answer after which no unmarked new
        VM of the size (or several) was listed. A VM provisioned although the answer was
        lost is adopted (see the module doc). All or nothing: a VM that cannot be marked is
        deleted."""
        _check_request(request)
        items = self._available()
        offers = [to_size_offer(item) for item in items]
        specs = _specs_for(request, items, offers)
        body: dict[str, Any] = dict(specs)
        if user_data_url:
            body["user_data_url"] = user_data_url
        with _provisioning(self.base_url, self.team):
            name = self._provision(request, body, offers)
            try:
                return self._finish(name, request)
            except BaseException:
                # All or nothing: a VM create cannot hand back would be a leak.
                self.delete(name)
                raise

    def get(self, instance_id: str) -> Instance | None:
        """The VM with its state, or None when Hot Aisle does not know it (404)."""
        response = self._send("get instance", "GET", self._vm(instance_id), ok=(200, 404))
        if response.status_code == 404:
            return None
        details = json_object(response, PROVIDER, "get instance")
        state = self._state(instance_id)
        return None if state is None else to_instance(details, state)

    def delete(self, instance_id: str) -> None:
        """Delete the VM (``force=true``); a VM that is already gone (404) is fine."""
        self._send(
            "delete instance",
            "DELETE",
            self._vm(instance_id),
            params={"force": "true"},
            ok=(200, 202, 204, 404),
        )

    def list_tagged(self, tag: str) -> list[Instance]:
        """Every VM of the team whose description carries ``tag`` (Hot Aisle's list is one
        unpaged array)."""
        return [instance for instance in self.list_all() if tag in instance.tags]

    def list_all(self) -> list[Instance]:
        """Every VM of the team, marked by amdfleet or not (VMs deleted while listing are
        left out)."""
        instances = []
        for details in self._vm_details():
            name = _vm_name(details, "list instances")
            state = self._state(name)
            if state is not None:
                instances.append(to_instance(details, state))
        return instances

    def sizes(self) -> list[SizeOffer]:
        """The VM types the team can provision now, with their hourly price in USD."""
        return [to_size_offer(item) for item in self._available()]

    def add_ssh_key(self, authorized_key: str) -> None:
        """Register a public key (``ssh-ed25519 AAAA... comment``) with the user; Hot Aisle
        installs the user's keys on every VM. A key already registered (409) is fine."""
        self._send(
            "add SSH key",
            "POST",
            "/user/ssh_keys/",
            json={"authorized_key": authorized_key},
            ok=(200, 201, 409),
        )

    def _available(self) -> list[dict[str, Any]]:
        response = self._send("list sizes", "GET", f"{self._vms()}available/", ok=(200,))
        return _json_objects(response, "list sizes")

    def _provision(
        self, request: CreateRequest, body: Mapping[str, Any], offers: Sequence[SizeOffer]
    ) -> str:
        """One provision POST (404: no capacity); the new VM's name. After a 5xx or a lost
        answer, the VM that appeared unmarked, of the size, is adopted (module doc)."""
        before = {_vm_name(details, "list instances") for details in self._vm_details()}
        try:
            response = self._send(
                "create instance", "POST", self._vms(), json=body, ok=(200, 201, 404)
            )
        except CloudAPIError as e:
            if e.status is not None and e.status < 500:
                raise
            return self._adopt_unmarked(request, before, e)
        if response.status_code == 404:
            raise CapacityError(
                PROVIDER,
                request.region,
                request.size,
                error_detail(response),
                _alternatives(request.size, request.region, offers),
                status=404,
            )
        return _vm_name(json_object(response, PROVIDER, "create instance"), "create instance")

    def _adopt_unmarked(self, request: CreateRequest, before: set[str], lost: CloudAPIError) -> str:
        """The one VM not in ``before``, without a mark, of the request's size: looked for
        after each backoff of the retry policy (a VM still being provisioned when the
        read timed out is listed later). Several such VMs are never guessed between."""
        for attempt in range(1, self._retry.attempts + 1):
            self._sleep(backoff(self._retry, attempt))
            try:
                listed = self._vm_details()
            except CloudAPIError as e:
                raise _lost(lost, f"listing the team's VMs to find it failed too: {e}") from e
            found = [
                _vm_name(d, "list instances")
                for d in listed
                if _vm_name(d, "list instances") not in before
                and parse_description(d.get("description")) is None
                and size_slug(d) == request.size
            ]
            if len(found) == 1:
                return found[0]
            if found:
                detail = f"several new unmarked {request.size} VMs are listed: {found}"
                raise _lost(lost, detail) from lost
        raise _lost(lost, f"no new unmarked {request.size} VM is listed") from lost

    def _vm_details(self) -> list[dict[str, Any]]:
        response = self._send("list instances", "GET", self._vms(), ok=(200,))
        return _json_objects(response, "list instances")

    def _finish(self, name: str, request: CreateRequest) -> Instance:
        self._send(
            "describe instance",
            "PATCH",
            self._vm(name),
            json={"description": describe(request.name, request.tags)},
            ok=(200, 204),
        )
        instance = self.get(name)
        if instance is None:
            raise CloudAPIError(
                PROVIDER, "create instance", None, f"VM {name} vanished right after provisioning"
            )
        return instance

    def _state(self, name: str) -> str | None:
        response = self._send("get state", "GET", f"{self._vm(name)}state/", ok=(200, 404))
        if response.status_code == 404:
            return None
        state = json_object(response, PROVIDER, "get state").get("state")
        if not isinstance(state, str):
            raise CloudAPIError(
                PROVIDER,
                "get state",
                200,
                f"malformed response: no 'state' in {response.text[:200]!r}",
            )
        return state

    def _vms(self) -> str:
        return f"/teams/{quote(self.team, safe='')}/virtual_machines/"

    def _vm(self, name: str) -> str:
        return f"{self._vms()}{quote(name, safe='')}/"


def size_slug(specs: object) -> str:
    """amdfleet's name for a VM type: ``<gpus>x-<model>-<cores>c-<ram GiB>g-<disk GiB>g``
    (``1x-mi300x-13c-224g-12288g``); ``cpu-`` instead of the GPU part without GPUs."""
    if not isinstance(specs, Mapping):
        return ""
    model, count = gpu_of(specs)
    gpus = f"{count}x-{model}" if count else "cpu"
    ram = _int(specs.get("ram_capacity")) // 2**30
    disk = _int(specs.get("disk_capacity")) // 2**30
    return f"{gpus}-{_int(specs.get('cpu_cores'))}c-{ram}g-{disk}g"


def gpu_of(specs: Mapping[str, Any]) -> tuple[str, int]:
    """The GPU model (lower case, as Hot Aisle writes it) and total count of a ``Specs``."""
    gpus = specs.get("gpus")
    if not isinstance(gpus, list):
        return "", 0
    entries = [g for g in gpus if isinstance(g, Mapping) and _int(g.get("count")) > 0]
    count = sum(_int(g.get("count")) for g in entries)
    models = {str(g.get("model") or "").strip().lower().replace(" ", "") for g in entries}
    return ("+".join(sorted(models)), count) if count else ("", 0)


def to_size_offer(item: Mapping[str, Any]) -> SizeOffer:
    """One ``AvailableVirtualMachineTypes`` entry as a SizeOffer (price: cents → USD)."""
    specs = item.get("Specs")
    model, count = gpu_of(specs) if isinstance(specs, Mapping) else ("", 0)
    price = item.get("OnDemandPrice")
    return SizeOffer(
        slug=size_slug(specs),
        gpu_model=model if model in GPU_MODELS else None,
        gpu_count=count,
        price_hourly=price / 100 if isinstance(price, int | float) else None,
        regions=(REGION,),
        available=_quantity(item) > 0,
    )


def to_instance(details: Mapping[str, Any], state: str) -> Instance:
    """A ``VirtualMachineDetails`` plus its libvirt ``state`` as an Instance: the name and
    tags amdfleet wrote in the description, the public (``ssh_access``, or a global
    ``ip_address``) and private IPv4 addresses."""
    name = _vm_name(details, "get instance")
    marked = parse_description(details.get("description"))
    ssh = details.get("ssh_access")
    public, private = addresses(
        details.get("ip_address"), ssh.get("ip_address") if isinstance(ssh, Mapping) else None
    )
    return Instance(
        id=name,
        name=marked[0] if marked else name,
        state=STATES.get(state.strip().lower(), InstanceState.PENDING),
        status=state,
        region=REGION,
        size=size_slug(details),
        public_address=public,
        private_address=private,
        tags=marked[1] if marked else (),
    )


def addresses(ip_address: object, ssh_ip: object) -> tuple[str | None, str | None]:
    """(public, private) IPv4 of a VM: ``ssh_access.ip_address`` is documented as its
    public address; its own ``ip_address`` is the private one when it is in a private
    range, else (dstack connects to it) the public one. IPv6 is left out."""
    public = _ipv4(ssh_ip)
    own = _ipv4(ip_address)
    if own is not None and own.is_private:
        return (str(public) if public else None), str(own)
    chosen = public or own
    return (str(chosen) if chosen else None), None


def _ipv4(value: object) -> ipaddress.IPv4Address | None:
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return ip if isinstance(ip, ipaddress.IPv4Address) else None


def describe(name: str, tags: Iterable[str]) -> str:
    """The description amdfleet writes on its VMs: ``<name> [<tag> <tag>...]``."""
    return f"{name} [{' '.join(tags)}]"


def parse_description(description: object) -> tuple[str, tuple[str, ...]] | None:
    """(name, tags) from a description :func:`describe` wrote, else None."""
    if not isinstance(description, str):
        return None
    match = _DESCRIPTION.match(description.strip())
    if match is None:
        return None
    return match["name"], tuple(match["tags"].split())


def _check_request(request: CreateRequest) -> None:
    problems = []
    if request.user_data:
        problems.append(
            "user_data: Hot Aisle takes cloud-init user-data only as a URL it fetches "
            "(user_data_url=), and amdfleet never publishes a host private key at a URL; "
            "leave it empty and opt in to trusting the host key on first use"
        )
    if request.ssh_key_ids:
        problems.append(
            f"ssh_key_ids={list(request.ssh_key_ids)!r}: Hot Aisle installs the user's keys "
            "on every VM; register them with add_ssh_key and leave ssh_key_ids empty"
        )
    if request.image:
        problems.append(f"image={request.image!r}: Hot Aisle boots its own image; leave it empty")
    if request.region != REGION:
        problems.append(f"region={request.region!r}: Hot Aisle has one region, {REGION!r}")
    for field, value in [("name", request.name), *(("tags", t) for t in request.tags)]:
        if not _WORD.match(value):
            problems.append(f"{field}: {value!r} must be letters, digits, '.', '_' or '-'")
    if problems:
        raise CloudAPIError(PROVIDER, "create instance", None, "; ".join(problems))


def _specs_for(
    request: CreateRequest, items: Sequence[Mapping[str, Any]], offers: Sequence[SizeOffer]
) -> Mapping[str, Any]:
    for item in items:
        specs = item.get("Specs")
        if isinstance(specs, Mapping) and size_slug(specs) == request.size and _quantity(item):
            return specs
    detail = "the team's list of VM types does not hold it"
    if not any(o.slug == request.size for o in offers):
        raise UnknownSizeError(PROVIDER, request.size, offers, detail)
    offered = ", ".join(o.slug for o in offers if o.available) or "nothing"
    raise CapacityError(
        PROVIDER,
        request.region,
        request.size,
        f"none free; free now: {offered}",
        _alternatives(request.size, request.region, offers),
    )


def _lost(error: CloudAPIError, found: str) -> CloudAPIError:
    return CloudAPIError(
        PROVIDER,
        "create instance",
        error.status,
        f"{error.detail}; Hot Aisle may have provisioned a VM all the same, but {found}: "
        "`amdfleet cloud orphans --provider hotaisle` lists the team's unmarked VMs",
    )


_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def _provisioning(base_url: str, team: str) -> Iterator[None]:
    """Held from a provision POST until the VM is marked: this process provisions for one
    team one VM at a time, so an unmarked new VM is the one the lost answer was about."""
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault((base_url, team), threading.Lock())
    with lock:
        yield


def _alternatives(size: str, region: str, offers: Iterable[SizeOffer]) -> list[str]:
    regions = {r for o in offers if o.slug == size and o.available for r in o.regions}
    return sorted(regions - {region})


def _vm_name(details: Mapping[str, Any], operation: str) -> str:
    name = details.get("name")
    if not isinstance(name, str) or not name:
        raise CloudAPIError(
            PROVIDER, operation, 200, f"malformed response: no VM 'name' in {str(details)[:200]}"
        )
    return name


def _json_objects(response: httpx.Response, operation: str) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError as e:
        raise CloudAPIError(
            PROVIDER,
            operation,
            response.status_code,
            f"malformed response: {response.text[:200]!r}",
        ) from e
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise CloudAPIError(
            PROVIDER, operation, response.status_code, f"malformed response: {str(body)[:200]}"
        )
    return body


def _quantity(item: Mapping[str, Any]) -> int:
    return _int(item.get("Quantity"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
