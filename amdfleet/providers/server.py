"""amdfleet's provider server: the Pulumi SDK's dynamic-provider host, with three changes.

The Pulumi engine runs every dynamic resource through the ``pulumi-python`` plugin, which
upstream ships as a script that starts ``python -m pulumi.dynamic``. Pulumi.yaml names
``plugins/pulumi-python/`` as this project's ``pulumi-python`` plugin instead; its script
starts this module, which runs the SDK's host unchanged except for these:

* its gRPC server may run ``AMDFLEET_PROVIDER_THREADS`` calls at once (default 64) instead
  of the SDK's 4, so every host of a large fleet is checked, stages its weights and
  starts its engine at the same time rather than four at a time;
* an amdfleet error (:class:`~amdfleet.errors.AmdFleetError`: what failed, on which
  host, the command, the last lines of its output and how to fix it) reaches the user as
  its message alone, without the Python stack the SDK puts in front of every error. Any
  other exception keeps its full traceback (it would be a bug in amdfleet);
* ``read`` and ``delete`` receive the resource's last inputs under its outputs (the
  engine sends both; the SDK passes only the outputs): an input a provider keeps out of
  its outputs -- a secret, like a cloud API token needed to delete the instance -- is
  there too. Outputs win where both have a key.

Usage: ``python -m amdfleet.providers.server ENGINE_ADDRESS`` (what the plugin script runs).
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from collections.abc import Callable
from typing import Any, cast

import grpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from amdfleet.errors import AmdFleetError

DEFAULT_THREADS = 64


def main() -> None:
    """Run the SDK's dynamic-provider host with the changes above."""
    grpc.server = _wide(grpc.server, _threads())
    traceback.format_exc = _plain_amdfleet_errors(traceback.format_exc)
    add_servicer = provider_pb2_grpc.add_ResourceProviderServicer_to_server
    provider_pb2_grpc.add_ResourceProviderServicer_to_server = lambda servicer, server: (
        add_servicer(cast(Any, _WithInputs(servicer)), server)
    )
    runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)


def _threads() -> int:
    value = os.environ.get("AMDFLEET_PROVIDER_THREADS", str(DEFAULT_THREADS))
    try:
        return max(4, int(value))
    except ValueError:
        return DEFAULT_THREADS


def _wide(server: Callable[..., Any], threads: int) -> Callable[..., Any]:
    """``grpc.server`` whose thread pool may grow to ``threads`` (the SDK passes a
    ThreadPoolExecutor of 4; an executor starts threads lazily up to its maximum)."""

    def wide_server(thread_pool: Any = None, *args: Any, **kwargs: Any) -> Any:
        if thread_pool is not None and getattr(thread_pool, "_max_workers", threads) < threads:
            thread_pool._max_workers = threads
        return server(thread_pool, *args, **kwargs)

    return wide_server


def _plain_amdfleet_errors(format_exc: Callable[..., str]) -> Callable[..., str]:
    """``traceback.format_exc`` that renders an AmdFleetError as Python's last traceback
    line does (``amdfleet.errors.Type: message``), without the frames above it."""

    def format_exception(*args: Any, **kwargs: Any) -> str:
        error = sys.exc_info()[1]
        if isinstance(error, AmdFleetError):
            kind = type(error)
            return f"{kind.__module__}.{kind.__qualname__}: {error}\n"
        return format_exc(*args, **kwargs)

    return format_exception


class _WithInputs:
    """The SDK's servicer, whose Read and Delete see the inputs under the outputs."""

    def __init__(self, servicer: Any) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servicer, name)

    def Read(self, request: provider_pb2.ReadRequest, context: Any) -> Any:
        merged = provider_pb2.ReadRequest()
        merged.CopyFrom(request)
        if len(request.properties.fields):  # a refresh; without outputs the SDK reads inputs
            merged.properties.CopyFrom(under(request.inputs, request.properties))
        return self._servicer.Read(merged, context)

    def Delete(self, request: provider_pb2.DeleteRequest, context: Any) -> Any:
        merged = provider_pb2.DeleteRequest()
        merged.CopyFrom(request)
        merged.properties.CopyFrom(under(request.old_inputs, request.properties))
        return self._servicer.Delete(merged, context)


def under(inputs: Any, outputs: Any) -> Any:
    """``outputs`` plus the keys of ``inputs`` it lacks (both protobuf Structs)."""
    merged = type(outputs)()
    merged.MergeFrom(inputs)
    merged.MergeFrom(outputs)
    return merged


if __name__ == "__main__":
    main()
