"""``python -m amdfleet.plugin ENGINE_ADDRESS``: the provider plugin (see :mod:`amdfleet.plugin.server`)."""

from amdfleet.plugin.server import main

main()
