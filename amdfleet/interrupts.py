"""Interrupt signals for the Pulumi commands amdfleet starts.

A command that a non-interactive shell starts in the background (``cmd &`` in a CI job or
a cron script) begins with SIGINT and SIGQUIT ignored (POSIX, Shell Command Language
2.11), and an ignored signal stays ignored across ``exec``. The Pulumi CLI closes each
plugin it started (language host, providers) by sending SIGINT to the plugin's process
group and waiting up to 5 s before it kills it (sdk/go/common/resource/plugin/plugin.go,
``InterruptChildren`` then a 5-second timeout, at v3.274.1), so plugins that ignore SIGINT
cost 5 s each, in every command: measured here, one ``pulumi preview`` of a committed
stack took 16 s instead of 1.3 s.
"""

from __future__ import annotations

import signal


def deliver_interrupts() -> None:
    """Give SIGINT and SIGQUIT their default handling again in this process, and so in the
    processes it starts, when they were ignored at its start (from the main thread)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
