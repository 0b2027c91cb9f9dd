"""The plugin's gRPC server, on the SDK's provider servicer.

The SDK's ``pulumi.provider.experimental.server.main`` runs a Provider as a plugin. This
module runs :class:`~amdfleet.plugin.provider.AmdFleetProvider` the same way (print the
port, serve until the engine goes) with a servicer that subclasses the SDK's, for three
things amdfleet needs:

* **many calls at once**: provider methods run in worker threads, and the event loop's
  default executor allows ``AMDFLEET_PROVIDER_THREADS`` of them (default 64, at least 4),
  so every host of a large fleet is checked, stages its weights and starts its engine at
  the same time;
* **amdfleet errors without a Python stack**: the SDK's servicer appends a traceback to
  every error (of a resource call or a component's construct). An
  :class:`~amdfleet.errors.AmdFleetError` (what failed, on which host, the command, the
  last lines of its output, how to fix it; a component's invalid stack) reaches the user as
  ``amdfleet.errors.<Type>: <message>`` alone; any other exception (a bug in amdfleet)
  as Python prints it, ``Traceback (most recent call last):`` to ``<Type>: <message>``
  (the SDK's servicer would show the frames but only ``Unexpected <class 'Exception'>``
  for its type);
* **diff and delete see the last inputs**: the engine sends them beside the outputs,
  the SDK passes only the outputs; a provider needs an input it keeps out of its outputs
  (a secret, like the cloud API token that deletes an instance), and the diff the CLI
  shows compares inputs, so such an input would otherwise show as added on every change.
  Outputs win where both have a key. Read receives both through the SDK already; update
  gets the outputs alone (what it returns for a legacy state must not gain the inputs).

Usage: ``pulumi-resource-amdfleet ENGINE_ADDRESS`` (what the engine runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from pulumi.provider.experimental import provider as p
from pulumi.provider.experimental.server import ProviderServicer
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from amdfleet.errors import AmdFleetError
from amdfleet.plugin.provider import AmdFleetProvider, version
from amdfleet.providers.progress import set_engine_address

DEFAULT_THREADS = 64
_GRPC_OPTIONS = [("grpc.max_receive_message_length", 400 * 1024 * 1024)]


def threads() -> int:
    """How many provider calls may run at once (``AMDFLEET_PROVIDER_THREADS``)."""
    value = os.environ.get("AMDFLEET_PROVIDER_THREADS", str(DEFAULT_THREADS))
    try:
        return max(4, int(value))
    except ValueError:
        return DEFAULT_THREADS


def amdfleet_error(error: BaseException) -> AmdFleetError | None:
    """The AmdFleetError behind ``error`` (the SDK re-raises a provider's exception as
    a new one, chained to it), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, AmdFleetError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(error: AmdFleetError) -> str:
    """``amdfleet.errors.<Type>: <message>``: Python's last traceback line, alone."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}: {error}\n"


def python_traceback(error: BaseException) -> str:
    """The traceback of the provider's exception behind ``error``, as Python prints it
    (the SDK re-raises it as a bare ``Exception`` whose context it is)."""
    if type(error) is Exception and error.__context__ is not None:
        error = error.__context__
    return "".join(traceback.format_exception(error))


Handler = Callable[[Any, Any], Awaitable[Any]]


class AmdFleetServicer(ProviderServicer):
    """The SDK's servicer, with amdfleet's errors plain and Diff and Delete given the
    last inputs."""

    async def _plain(self, call: Handler, request: Any, context: Any) -> Any:
        try:
            return await call(request, context)
        except (NotImplementedError, grpc.aio.AbortError):
            raise  # the SDK's own answer (unimplemented, or input errors it aborted with)
        except Exception as e:
            error = amdfleet_error(e)
            text = describe(error) if error is not None else python_traceback(e)
            await context.abort(grpc.StatusCode.UNKNOWN, text)

    async def Check(self, request: Any, context: Any) -> Any:
        return await self._plain(super().Check, request, context)

    async def Diff(self, request: provider_pb2.DiffRequest, context: Any) -> Any:
        return await self._plain(super().Diff, with_inputs(request, "olds"), context)

    async def Create(self, request: Any, context: Any) -> Any:
        return await self._plain(super().Create, request, context)

    async def Read(self, request: Any, context: Any) -> Any:
        return await self._plain(super().Read, request, context)

    async def Update(self, request: Any, context: Any) -> Any:
        return await self._plain(super().Update, request, context)

    async def Construct(self, request: Any, context: Any) -> Any:
        return await self._plain(super().Construct, request, context)

    async def Delete(self, request: provider_pb2.DeleteRequest, context: Any) -> Any:
        return await self._plain(super().Delete, with_inputs(request, "properties"), context)


def with_inputs(request: Any, outputs: str) -> Any:
    """A copy of ``request`` whose ``outputs`` field also holds the keys of its
    ``old_inputs`` it lacks (:func:`under`)."""
    merged = type(request)()
    merged.CopyFrom(request)
    getattr(merged, outputs).CopyFrom(under(request.old_inputs, getattr(request, outputs)))
    return merged


def under(inputs: Any, outputs: Any) -> Any:
    """``outputs`` plus the keys of ``inputs`` it lacks (both protobuf Structs)."""
    merged = type(outputs)()
    merged.MergeFrom(inputs)
    merged.MergeFrom(outputs)
    return merged


async def serve(engine: str, args: list[str], provider: p.Provider | None = None) -> None:
    """Serve ``provider`` (by default :class:`AmdFleetProvider` with every amdfleet
    resource) until the engine closes the plugin: the port goes to stdout, as the engine
    expects of every plugin."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=threads(), thread_name_prefix="amdfleet-provider")
    )
    server = grpc.aio.server(options=_GRPC_OPTIONS)
    provider = provider or AmdFleetProvider()
    servicer = AmdFleetServicer(args, version(), provider, engine_address=engine)
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await server.wait_for_termination()


def main(argv: list[str] | None = None, provider: p.Provider | None = None) -> None:
    """``pulumi-resource-amdfleet ENGINE_ADDRESS [--logtostderr] [-v=N] ...``: serve
    ``provider`` (see :func:`serve`)."""
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="pulumi-resource-amdfleet",
        description="amdfleet's Pulumi provider plugin (started by the Pulumi engine).",
    )
    parser.add_argument("engine", help="the Pulumi engine's gRPC address")
    known, _ = parser.parse_known_args(args)
    set_engine_address(known.engine)
    with contextlib.suppress(KeyboardInterrupt):  # the engine interrupts to close it
        asyncio.run(serve(known.engine, args, provider))


if __name__ == "__main__":
    main()
