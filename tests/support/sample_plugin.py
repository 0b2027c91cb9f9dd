"""``python -m tests.support.sample_plugin [ENGINE_ADDRESS]``: amdfleet's plugin server
(:mod:`amdfleet.plugin.server`) serving the sample providers of
tests/support/sample_provider.py instead of amdfleet's resources.

For behaviours of the server that no real provider shows on demand: a create that
returns only once many run at once, an exception that is not an amdfleet error.
"""

from amdfleet.plugin.provider import AmdFleetProvider
from amdfleet.plugin.server import main
from tests.support.sample_provider import SAMPLE_PROVIDERS

if __name__ == "__main__":
    main(provider=AmdFleetProvider(SAMPLE_PROVIDERS))
