"""Which reference snapshot a validation call decides with.

A server interceptor, in front of the ValidationService:

- a call with ``x-tollgate-snapshot: <snapshot id>`` metadata is a replay: it decides with that kept
  snapshot (and the current rulesets), NOT_FOUND if the snapshot is not kept, UNAVAILABLE if the
  store cannot be reached to fetch it;
- otherwise, before any snapshot has been loaded, the call fails with FAILED_PRECONDITION and says
  how to load one, rather than deciding against nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from evaluators.snapshot_store import SnapshotNotFoundError, StoreUnavailableError
from server.runtime import Generation, Runtime
from tollgate_api.v1 import validation_pb2

log = structlog.get_logger("tollgate.pinning")

SNAPSHOT_METADATA_KEY = "x-tollgate-snapshot"
_VALID_ID = re.compile(r"^snap-[0-9a-f]{12}$")
_VALIDATION_PREFIX = "/" + validation_pb2.DESCRIPTOR.services_by_name["ValidationService"].full_name + "/"


def requested_snapshot(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == SNAPSHOT_METADATA_KEY:
            return str(value)
    return None


class SnapshotPinningInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _generation(self, snapshot_id: str | None, context: grpc.ServicerContext) -> Generation | None:
        """The pinned generation (None: the current one); aborts the call when there is none to use."""
        if snapshot_id is None:
            if not self.runtime.has_data:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"no reference data loaded yet ({self.runtime.store.description}); load a snapshot "
                              "with `tollgate refdata load DIR`, or start the service with --refdata DIR")
            return None
        if not _VALID_ID.match(snapshot_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{SNAPSHOT_METADATA_KEY}: {snapshot_id!r} is not a snapshot id (snap- and 12 hex digits)")
        try:
            return self.runtime.generation_for(snapshot_id)
        except SnapshotNotFoundError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, f"cannot replay: {error}")
        except StoreUnavailableError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot replay: {error}")
        raise AssertionError("context.abort raises")  # pragma: no cover

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(_VALIDATION_PREFIX):
            return handler
        snapshot_id = requested_snapshot(handler_call_details.invocation_metadata)
        runtime = self.runtime

        if handler.unary_unary:
            behaviour = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                with runtime.pinned(self._generation(snapshot_id, context)):
                    return behaviour(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_stream:
            stream_behaviour = handler.stream_stream

            def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                with runtime.pinned(self._generation(snapshot_id, context)):
                    yield from stream_behaviour(requests, context)

            return handler._replace(stream_stream=stream_stream)
        return handler
