"""The ValidationService servicer: request → items → evaluator → decisions → response."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from rules.schema import TIME_ENTRY
from server import codec
from server.correlation import current_correlation_id
from server.runtime import Runtime
from server.settings import Settings
from tollgate_api.v1 import validation_pb2 as pb
from tollgate_api.v1 import validation_pb2_grpc as pb_grpc

log = structlog.get_logger("tollgate.validation")


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

    def _decide(self, entries: Sequence[Any], context: grpc.ServicerContext) -> pb.ValidateTimeEntriesResponse:
        if len(entries) > self.max_items:
            _abort_bad_request(
                context,
                f"{len(entries)} entries in one request; the limit is {self.max_items}. "
                "Split the batch, or send it in chunks with StreamTimeEntries.",
                "entries",
                f"at most {self.max_items} entries per request",
            )
        started = time.perf_counter()
        evaluator = self.runtime.generation.evaluators[TIME_ENTRY.name]
        decisions = evaluator.evaluate_messages(entries)
        response = pb.ValidateTimeEntriesResponse()
        provenance = replace(evaluator.provenance, correlation_id=current_correlation_id())
        codec.fill_response(response, decisions, provenance)
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
        return self._decide(request.entries, context)

    def StreamTimeEntries(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ValidateTimeEntriesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ValidateTimeEntriesResponse]:
        for request in requests:
            yield self._decide(request.entries, context)
