"""``python -m amdfleet.cli``: the ``amdfleet`` command from a source tree."""

from __future__ import annotations

import sys

from amdfleet.cli import main

sys.exit(main(prog_name="amdfleet"))
