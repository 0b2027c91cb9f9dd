"""Python programs amdfleet sends to hosts, run there with ``python3 -c`` (standard
library only, except ``snapshot_download.py``, which runs with the engine's Python and its
``huggingface_hub``).

They are files rather than strings so they read as Python; they ship as package data and
are sent byte for byte as stored (so they are left out of ruff and mypy, whose fixes would
change what hosts run). :func:`program` reads one.

* ``cluster_listener.py``, ``cluster_connect.py``: the cluster reachability test
  (:mod:`amdfleet.remote.cluster`).
* ``http_get.py``, ``http_post.py``, ``counter_sum.py``: the readiness and generation
  checks and the watchdog's token counter when a host has no curl
  (:mod:`amdfleet.remote.engine`).
* ``snapshot_download.py``: the weights download (:mod:`amdfleet.remote.weights`).
"""

from __future__ import annotations

from importlib.resources import files


def program(name: str) -> str:
    """The text of the program file ``name`` in this package, exactly as stored."""
    return files(__name__).joinpath(name).read_bytes().decode("utf-8")
