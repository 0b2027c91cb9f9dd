"""``python -m amdfleet.plugin ENGINE_ADDRESS``: the provider plugin.

See :mod:`amdfleet.plugin.server`.
"""

from amdfleet.plugin.server import main

main()
