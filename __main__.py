"""This project's Pulumi program: amdfleet's (see :mod:`amdfleet.program`)."""

from amdfleet.program import main

main()
