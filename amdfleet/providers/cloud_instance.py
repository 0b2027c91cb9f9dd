"""CloudInstance: one rented instance (a GPU droplet, bare-metal server or VM), up and
answering SSH with a host key amdfleet pinned.

``create`` generates the instance's ed25519 host key, sends it (with the user's public
key) in cloud-init user-data (:mod:`amdfleet.clouds.userdata`), creates the instance,
polls until the cloud reports it running, then waits until SSH on port 22 of its public
address presents exactly that key and lets the user's key log in. Hot Aisle takes no
inline user-data: there the user's key is registered with the team's account
(:meth:`~amdfleet.clouds.hotaisle.HotAisleClient.add_ssh_key`) and the host key seen in
the first handshake is pinned -- only when the stack says ``trust_first_use``, and with a
warning saying so.

All or nothing: any failure after the cloud accepted the create (a FAILED state, the
boot deadline, a host-key mismatch, an API error) deletes the instance and waits until
the cloud no longer lists it before raising CloudInstanceError. The host's private key
is never in state, outputs, messages or logs; the API token is a secret input kept out
of the outputs (amdfleet's provider plugin hands ``read`` and ``delete`` the inputs, see
:mod:`amdfleet.plugin.server`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider
from pydantic import Field

from amdfleet.clouds import CloudAPIClient, client_for
from amdfleet.clouds.api import (
    CreateRequest,
    Instance,
    InstanceState,
    instance_tags,
    wait_gone,
)
from amdfleet.clouds.userdata import cloud_config
from amdfleet.errors import (
    AmdFleetError,
    CloudInstanceError,
    ConfigError,
    HostKeyMismatchError,
    HostUnreachableError,
    RemoteError,
)
from amdfleet.findings import config_issue
from amdfleet.hostkeys import HostKeyPair, generate_host_key
from amdfleet.providers.progress import ResourceProgress, format_duration
from amdfleet.providers.props import ProviderProps, changed_keys
from amdfleet.providers.resource import AmdFleetResource
from amdfleet.remote.transport.retry import ConnectRetry
from amdfleet.remote.transport.ssh import connect, first_seen_host_key
from amdfleet.remote.transport.target import HostTarget

NO_USER_DATA = frozenset({"hotaisle"})
"""Clouds that take no inline user-data: the host key cannot be pinned before boot."""
KEEP_ON_CHANGE = ("api_token", "poll_interval_s", "boot_timeout_s", "resource_urn")
"""Inputs whose change replaces nothing (a rotated token must not replace a GPU box)."""
OUTPUTS = ("instance_id", "public_address", "private_address", "host_key", "status")
SSH_TIMEOUT_S = 10.0


class CloudInstanceProps(ProviderProps):
    """CloudInstance's properties: the cloud, the instance asked for and how to reach it
    (inputs), and what the cloud made of it (outputs, None until create sets them)."""

    SECRET_FIELDS = ("api_token",)

    provider: Literal["digitalocean", "vultr", "hotaisle"] = Field(
        description="The cloud whose API creates the instance."
    )
    api_url: str | None = Field(None, description="The API's base URL; None: the cloud's.")
    team: str | None = Field(None, description="Hot Aisle team handle.")
    api_token: str = Field("", description="Secret: the API token (never an output).")
    name: str = Field(description="The instance's name at the cloud.")
    region: str = Field(description="Region slug.")
    size: str = Field(description="Size (plan) slug.")
    image: str = Field("", description="Image slug or id (empty on Hot Aisle).")
    tags: tuple[str, ...] = Field((), description="Tags; empty: amdfleet's instance tags.")
    user: str = Field("root", description="SSH user of the image.")
    authorized_key: str = Field(description="The user's public key line.")
    ssh_key_path: str = Field(description="Path of the user's private key (never content).")
    trust_first_use: bool = Field(
        False, description="Pin the first host key seen (only for clouds without user-data)."
    )
    boot_timeout_s: float = Field(900.0, gt=0, description="Deadline for running + SSH.")
    poll_interval_s: float = Field(
        10.0, gt=0, description="Longest wait between status polls (they start at 1 s)."
    )
    instance_id: str | None = Field(None, description="Output: the cloud's instance id.")
    public_address: str | None = Field(None, description="Output: public IPv4.")
    private_address: str | None = Field(None, description="Output: private IPv4.")
    host_key: str | None = Field(None, description="Output: the pinned host key line.")
    status: str | None = Field(None, description="Output: the cloud's own status words.")


class CloudInstanceProvider(ResourceProvider):
    """Creates, reads and deletes one cloud instance. Stateless (clients are built inside
    each call)."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Create the instance and wait until it runs and answers SSH with the pinned key.

        Raises ConfigError before any API call for a cloud without user-data unless
        ``trust_first_use``; UnknownSizeError (a size the cloud does not list, naming
        those it does) or CapacityError (a shortage, naming other regions), each with the
        cloud's HTTP status and message, nothing created; CloudAPIError when the create's
        answer was lost and the instance it may have made could not be found (the message
        says how ``amdfleet cloud orphans`` finds it; an instance found is adopted, see
        :mod:`amdfleet.clouds.api`); CloudInstanceError after deleting (and confirming
        the deletion of) an instance that failed, did not come up in time, or presented
        another host key.
        """
        p = CloudInstanceProps.from_inputs(props)
        _refuse_unpinnable(p)
        with (
            ResourceProgress.for_resource(props, secrets=[p.api_token]) as progress,
            _client(p) as client,
        ):
            host_key = None if p.provider in NO_USER_DATA else generate_host_key()
            if host_key is None:
                progress.step(f"registering the SSH key with {p.provider}")
                client.add_ssh_key(p.authorized_key)  # type: ignore[union-attr]
            progress.step(f"creating {p.name} ({p.size} in {p.region}) on {p.provider}")
            instance = client.create(_request(p, host_key))
            try:
                outputs = _bring_up(client, p, instance, host_key, progress)
            except BaseException as e:
                raise _cleaned_up(client, p, instance.id, e, progress) from e
        return CreateResult(id_=instance.id, outs=outputs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Re-read the instance: its status and addresses. One the cloud no longer has is
        reported gone (empty id), so ``pulumi refresh`` drops it from the state."""
        p = CloudInstanceProps.from_inputs(props)
        _require_token(p, "read")
        with _client(p) as client:
            instance = client.get(id_)
        if instance is None:
            return ReadResult(id_="", outs={})
        outs = p.to_outputs(
            instance_id=instance.id,
            public_address=instance.public_address or p.public_address,
            private_address=instance.private_address or p.private_address,
            status=instance.status,
        )
        return ReadResult(id_=id_, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Any changed input but the token and the timing replaces the instance; those
        change nothing (they are used by the next create, read or delete)."""
        keys = tuple(k for k in CloudInstanceProps.model_fields if k not in KEEP_ON_CHANGE)
        changes = changed_keys(olds, news, tuple(k for k in keys if k not in OUTPUTS))
        return DiffResult(changes=bool(changes), replaces=changes, delete_before_replace=False)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Delete the instance and wait until the cloud no longer has it. Idempotent: an
        instance already gone is fine. Raises CloudInstanceError naming the instance id
        when the cloud still lists it after ``boot_timeout_s``."""
        p = CloudInstanceProps.from_inputs(props)
        _require_token(p, "delete")
        instance_id = p.instance_id or id_
        with (
            ResourceProgress.for_resource(props, secrets=[p.api_token]) as progress,
            _client(p) as client,
        ):
            progress.step(f"deleting {instance_id} on {p.provider}")
            _delete_confirmed(client, p, instance_id)


class CloudInstance(
    AmdFleetResource, name="CloudInstance", provider=CloudInstanceProvider, props=CloudInstanceProps
):
    """One cloud instance; outputs its id, addresses and pinned host key."""

    instance_id: pulumi.Output[str]
    public_address: pulumi.Output[str]
    private_address: pulumi.Output[str | None]
    host_key: pulumi.Output[str]
    status: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: CloudInstanceProps,
        opts: pulumi.ResourceOptions | None = None,
        *,
        api_token: pulumi.Input[str],
    ) -> None:
        hidden = pulumi.ResourceOptions(additional_secret_outputs=["api_token"])
        opts = pulumi.ResourceOptions.merge(opts, hidden)
        inputs = props.to_inputs(
            api_token=pulumi.Output.secret(api_token),
        )
        super().__init__(name, inputs, opts)


def _refuse_unpinnable(p: CloudInstanceProps) -> None:
    if p.provider in NO_USER_DATA and not p.trust_first_use:
        raise ConfigError(
            [
                config_issue(
                    "trust_first_use",
                    f"{p.provider} takes no cloud-init user-data, so amdfleet cannot pin "
                    f"the host key of {p.name} before it boots",
                    "set trust_first_use: true to pin the key the host presents in its "
                    "first SSH handshake (verify it out of band), or use another cloud",
                )
            ],
            source=f"CloudInstance {p.name}",
        )


def _require_token(p: CloudInstanceProps, operation: str) -> None:
    if not p.api_token:
        raise CloudInstanceError(
            p.provider,
            p.region,
            p.instance_id or p.name,
            operation,
            "no API token reached the provider",
            hint="run amdfleet's provider host (Pulumi.yaml's pulumi-python plugin), which "
            "passes the resource's inputs, including the secret token, to read and delete",
        )


def _client(p: CloudInstanceProps) -> CloudAPIClient:
    return client_for(p.provider, p.api_token, api_url=p.api_url, team=p.team)


def _request(p: CloudInstanceProps, host_key: HostKeyPair | None) -> CreateRequest:
    tags = p.tags or instance_tags(
        os.environ.get("PULUMI_PROJECT", "amdfleet"), os.environ.get("PULUMI_STACK", ""), p.name
    )
    user_data = "" if host_key is None else cloud_config(host_key, p.user, p.authorized_key)
    return CreateRequest(
        name=p.name, region=p.region, size=p.size, image=p.image, tags=tags, user_data=user_data
    )


class _StepFailed(AmdFleetError):
    """A step of bringing the instance up failed (the cleanup names the step)."""

    def __init__(self, step: str, detail: str, hint: str = "") -> None:
        self.step = step
        self.detail = detail
        self.hint = hint
        super().__init__(f"{step}: {detail}")


def _bring_up(
    client: CloudAPIClient,
    p: CloudInstanceProps,
    instance: Instance,
    host_key: HostKeyPair | None,
    progress: ResourceProgress,
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + p.boot_timeout_s
    running = _wait_running(client, p, instance.id, deadline, progress)
    address = running.public_address
    assert address is not None  # _wait_running returns only with an address
    pinned = _wait_ssh(p, running.id, address, host_key, deadline, progress)
    progress.note(
        f"{p.name} ({running.id}) up at {address} after "
        f"{format_duration(time.monotonic() - started)}, host key pinned"
    )
    return p.to_outputs(
        instance_id=running.id,
        public_address=address,
        private_address=running.private_address,
        host_key=pinned,
        status=running.status,
    )


def _wait_running(
    client: CloudAPIClient,
    p: CloudInstanceProps,
    instance_id: str,
    deadline: float,
    progress: ResourceProgress,
) -> Instance:
    step = "waiting for the instance to run"
    progress.step(f"{step} ({instance_id})")
    polls = 0
    while True:
        instance = client.get(instance_id)
        if instance is None:
            raise _StepFailed(step, "the cloud no longer has the instance (deleted elsewhere?)")
        if instance.state == InstanceState.FAILED:
            raise _StepFailed(step, f"the cloud reports it failed (status {instance.status!r})")
        if instance.state == InstanceState.RUNNING and instance.public_address:
            return instance
        progress.status(f"{step}: status {instance.status!r}")
        # 1, 2, 4 ... seconds up to poll_interval_s: a VM that runs within seconds is
        # seen at once, a bare-metal box that takes an hour is not polled every second.
        wait = min(p.poll_interval_s, 2.0**polls)
        polls += 1
        if time.monotonic() + wait > deadline:
            raise _StepFailed(
                step,
                f"still {instance.status!r} after {p.boot_timeout_s:g} s",
                "the cloud may be short of this size: try again later, another region, "
                "or raise boot_timeout_s",
            )
        time.sleep(wait)


def _wait_ssh(
    p: CloudInstanceProps,
    instance_id: str,
    address: str,
    host_key: HostKeyPair | None,
    deadline: float,
    progress: ResourceProgress,
) -> str:
    """Log in once with the pinned key; the pin (the generated key's line, or the one seen
    first when trusting on first use)."""
    step = "waiting for SSH with the pinned host key"
    target = HostTarget(
        name=p.name,
        address=address,
        user=p.user,
        key_path=p.ssh_key_path,
        host_key=host_key.public_line if host_key else "",
    )
    progress.step(f"{step} on {address}:22")
    last = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _StepFailed(
                step,
                f"{address}:22 did not let {p.user!r} log in within {p.boot_timeout_s:g} s"
                + (f" ({last})" if last else ""),
                "check that the image runs cloud-init and sshd, the address is reachable "
                "from here, and the key is the one of ssh_key_path; or raise boot_timeout_s",
            )
        retry = ConnectRetry(
            attempts=1_000_000, within=remaining, first_wait=0.1, max_wait=p.poll_interval_s
        )
        try:
            if not target.host_key:
                seen = first_seen_host_key(target, timeout=SSH_TIMEOUT_S, retry=retry)
                target = target.model_copy(update={"host_key": seen})
                progress.warn(
                    f"{p.name} ({instance_id}): {p.provider} cannot receive a host key before "
                    f"boot; trusted the key seen on first use: {seen}"
                )
            with connect(target, timeout=SSH_TIMEOUT_S, retry=retry) as conn:
                conn.run("true", timeout=SSH_TIMEOUT_S)
            return target.host_key
        except HostKeyMismatchError as e:
            raise _StepFailed(
                step,
                str(e).splitlines()[0],
                "something other than the new instance answered at its address (or "
                "cloud-init did not install the key): treat it as a possible "
                "man-in-the-middle",
            ) from e
        except HostUnreachableError as e:
            last = e.reason
        except RemoteError as e:  # sshd up before cloud-init installed the user's key
            last = str(e).splitlines()[0]
            time.sleep(min(p.poll_interval_s, max(deadline - time.monotonic(), 0)))


def _cleaned_up(
    client: CloudAPIClient,
    p: CloudInstanceProps,
    instance_id: str,
    error: BaseException,
    progress: ResourceProgress,
) -> CloudInstanceError:
    """Delete the instance that failed to come up and the error that says so."""
    step = error.step if isinstance(error, _StepFailed) else "bringing the instance up"
    detail = error.detail if isinstance(error, _StepFailed) else str(error) or type(error).__name__
    hint = error.hint if isinstance(error, _StepFailed) else ""
    progress.step(f"deleting {instance_id}: {step} failed")
    try:
        _delete_confirmed(client, p, instance_id)
    except Exception as e:  # the original failure is the news; the leak must be named too
        outcome = (
            f"deleting the instance failed too ({str(e).splitlines()[0]}): it may still "
            f"exist and bill; delete {p.provider} instance {instance_id} by hand"
        )
    else:
        outcome = "the instance was deleted (the cloud confirmed it is gone)"
    return CloudInstanceError(
        p.provider, p.region, instance_id, step, detail, outcome=outcome, hint=hint
    )


def _delete_confirmed(client: CloudAPIClient, p: CloudInstanceProps, instance_id: str) -> None:
    client.delete(instance_id)
    left = wait_gone(client, [instance_id], within=p.boot_timeout_s, max_wait=p.poll_interval_s)
    if left:
        raise CloudInstanceError(
            p.provider,
            p.region,
            instance_id,
            "delete",
            f"the cloud still lists it ({left[0].status!r}) {p.boot_timeout_s:g} s "
            "after the delete was accepted",
            outcome="it may still exist and bill",
            hint=f"check {p.provider}'s console for {instance_id} and delete it there, "
            "then run the Pulumi command again",
        )
