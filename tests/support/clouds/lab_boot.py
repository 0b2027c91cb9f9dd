"""Instances of the local cloud servers that are real SSH hosts.

A server given a :class:`LabBoot` boots, for each instance it creates, a one-host
:class:`~tests.support.hostlab.HostLab` configured the way cloud-init would configure the
instance from the user-data amdfleet sent (:func:`amdfleet.clouds.userdata.read_cloud_config`):
the injected host key is the host's only host key and the authorized keys are root's.
The server shows the host's address as the instance's public (and private) IPv4 once it
runs, and stops the host when the instance is deleted (or vanishes). A cloud without
user-data (Hot Aisle) passes the keys registered with the account instead; the host then
has a host key of its own.

The lab user is root whatever the user-data names: a lab host shares this machine's
/etc/passwd, and adding a user (Hot Aisle's ``hotaisle``) to it would change the test
machine. :attr:`LabBoot.users` records the user the user-data asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from amdfleet.clouds.userdata import CloudConfigError, read_cloud_config
from tests.support.hostlab import HostLab


class LabBoot:
    """Boots and stops lab hosts for a cloud server's instances. Thread-safe; close it
    (or use ``with``) to stop every host still running."""

    def __init__(self, *, mode: str | None = "netns") -> None:
        self._mode = mode
        self._labs: dict[str, HostLab] = {}
        self._lock = threading.Lock()
        self.users: dict[str, str] = {}
        """The user each instance's user-data named."""
        self.booted: list[str] = []
        self.stopped: list[str] = []
        self.impostor = False
        """Boot hosts with a host key of their own, ignoring the injected one (something
        else answering at the instance's address)."""

    def boot(
        self,
        instance_id: str,
        user_data: str | None,
        *,
        registered_keys: Sequence[str] = (),
    ) -> str:
        """Start the host of ``instance_id``; its address. With ``user_data`` (amdfleet's
        cloud-config) the host key and authorized keys come from it; without, the host
        generates its key and ``registered_keys`` are authorized. User-data that is not
        amdfleet's boots a host nobody can log in to (as cloud-init would leave it)."""
        host_key, authorized = None, tuple(registered_keys)
        if user_data:
            try:
                keys = read_cloud_config(user_data)
            except CloudConfigError:
                authorized = ()
            else:
                host_key, authorized = keys.host_private, keys.authorized_keys
                host_key = None if self.impostor else host_key
                self.users[instance_id] = keys.user
        lab = HostLab.start(
            1, mode=self._mode, host_private_key=host_key, authorized_keys=authorized
        )
        with self._lock:
            self._labs[instance_id] = lab
            self.booted.append(instance_id)
        return lab[0].address

    def host_key(self, instance_id: str) -> str:
        """The public host key the instance's host presents."""
        with self._lock:
            return self._labs[instance_id][0].host_key

    def running(self) -> list[str]:
        """Instances whose host runs."""
        with self._lock:
            return sorted(self._labs)

    def stop(self, instance_id: str) -> None:
        """Stop the instance's host (nothing when it has none)."""
        with self._lock:
            lab = self._labs.pop(instance_id, None)
            if lab is not None:
                self.stopped.append(instance_id)
        if lab is not None:
            lab.close()

    def close(self) -> None:
        """Stop every host still running."""
        for instance_id in self.running():
            self.stop(instance_id)

    def __enter__(self) -> LabBoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
