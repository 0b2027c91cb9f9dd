"""Transport: the modules that do I/O on hosts.

``connection`` holds the :class:`~amdfleet.remote.transport.connection.Connection`
protocol, its result record and redaction; ``ssh`` (with its helpers ``channel``, ``sftp``
and ``retry``, the only importers of paramiko) and ``local`` (the machine running Pulumi)
implement it. ``target`` is the pure record of how to reach a host, ``hosts`` opens a
connection from it, and ``fanout`` runs a call per host at once with one error policy.
Importing this package imports no transport: each module is imported on its own.
"""
