"""The ValidationService servicer: request → items → evaluator → decisions → response."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from evaluators.rollups import roll_up
from evaluators.snapshot_store import SnapshotNotFoundError, StoreUnavailableError
from rules.decisions import SNAPSHOT_METADATA_KEY
from rules.schema import TIME_ENTRY
from server import codec
from server.correlation import current_correlation_id
from server.runtime import Generation, Runtime
from server.settings import Settings
from tollgate_api.v1 import validation_pb2 as pb
from tollgate_api.v1 import validation_pb2_grpc as pb_grpc

log = structlog.get_logger("tollgate.validation")

_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{12}$")


def _abort_bad_request(context: grpc.ServicerContext, message: str, field: str, description: str) -> None:
    """End the call with INVALID_ARGUMENT and a google.rpc.BadRequest naming the offending field."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    ))
    context.abort_with_status(rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    ))


class ValidationService(pb_grpc.ValidationServiceServicer):
    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.max_items = settings.max_batch_items

    def _generation(self, context: grpc.ServicerContext) -> Generation:
        """What this call decides with: the snapshot it names (a replay), else the current one.

        Aborts the call rather than decide against nothing (no data yet) or against the wrong data
        (a snapshot that is not kept, or cannot be fetched now).
        """
        requested = next((str(v) for k, v in context.invocation_metadata() or () if k == SNAPSHOT_METADATA_KEY), None)
        if requested is None:
            if not self.runtime.has_data:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"no reference data loaded yet ({self.runtime.store.description}); load a snapshot "
                              "with `tollgate refdata load DIR`, or start the service with --refdata DIR")
            return self.runtime.generation
        if not _SNAPSHOT_ID.match(requested):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{SNAPSHOT_METADATA_KEY}: {requested!r} is not a snapshot id (snap- and 12 hex digits)")
        try:
            return self.runtime.generation_for(requested)
        except SnapshotNotFoundError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, f"cannot replay: {error}")
        except StoreUnavailableError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot replay: {error}")
        raise AssertionError("context.abort raises")  # pragma: no cover

    def _decide(self, request: pb.ValidateTimeEntriesRequest, generation: Generation,
                context: grpc.ServicerContext) -> pb.ValidateTimeEntriesResponse:
        entries = request.entries
        if len(entries) > self.max_items:
            _abort_bad_request(
                context,
                f"{len(entries)} entries in one request; the limit is {self.max_items}. "
                "Split the batch, or send it in chunks with StreamTimeEntries.",
                "entries",
                f"at most {self.max_items} entries per request",
            )
        started = time.perf_counter()
        evaluator = generation.evaluators[TIME_ENTRY.name]
        decisions, rollups = roll_up(evaluator.evaluate_messages(entries), [e.timesheet_id for e in entries],
                                     codec.ACCEPTANCE[request.acceptance])
        response = pb.ValidateTimeEntriesResponse()
        provenance = replace(evaluator.provenance, correlation_id=current_correlation_id())
        codec.fill_response(response, decisions, provenance, rollups)
        log.info(
            "decided",
            items=len(decisions),
            accepted=response.summary.accepted,
            enriched=response.summary.enriched,
            rejected=response.summary.rejected,
            snapshot_id=provenance.snapshot_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    def ValidateTimeEntries(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateTimeEntriesRequest, context: grpc.ServicerContext
    ) -> pb.ValidateTimeEntriesResponse:
        return self._decide(request, self._generation(context), context)

    def StreamTimeEntries(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ValidateTimeEntriesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ValidateTimeEntriesResponse]:
        replay = any(k == SNAPSHOT_METADATA_KEY for k, _v in context.invocation_metadata() or ())
        pinned = self._generation(context) if replay else None
        for request in requests:
            # Each chunk is decided by one generation: the replayed one, or whichever is current.
            yield self._decide(request, pinned or self._generation(context), context)
