"""The ValidationService servicer: request → items → evaluator → decisions → response."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.evaluators import collector
from tollgate.evaluators.rollups import roll_up
from tollgate.refdata.store import SnapshotNotFoundError, StoreUnavailableError
from tollgate.rules.decisions import SNAPSHOT_METADATA_KEY
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, TIME_ENTRY, ItemKind
from tollgate.server import codec, metrics
from tollgate.server.correlation import current_correlation_id
from tollgate.server.runtime import Generation, Runtime
from tollgate.server.settings import Settings

log = structlog.get_logger("tollgate.validation")

_NOUNS = {TIME_ENTRY.name: "entries", EXPENSE_LINE.name: "expense lines", INVOICE_LINE.name: "invoice lines"}
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

    def _decide(self, kind: ItemKind, lines: Sequence[Any], headers: Sequence[Any] | None, *, acceptance: pb.Acceptance,
                generation: Generation, context: grpc.ServicerContext, field: str) -> pb.ValidationResponse:
        """Decide one request's items of ``kind`` (``headers``: each line's invoice, for invoice lines)."""
        if len(lines) > self.max_items:
            _abort_bad_request(
                context,
                f"{len(lines)} {_NOUNS[kind.name]} in one request; the limit is {self.max_items}. "
                "Split the batch, or send it in chunks with the streaming call.",
                field,
                f"at most {self.max_items} items per request",
            )
        started = time.perf_counter()
        evaluator = generation.evaluators[kind.name]
        with collector.BATCHES.batch():  # through to the response built (see evaluators/collector.py)
            decided = evaluator.evaluate_messages(lines, headers)
            group_field = kind.group_field
            group_ids = [getattr(h, group_field) for h in headers] if headers is not None \
                else [getattr(line, group_field) for line in lines]
            decisions, rollups = roll_up(decided, group_ids, codec.ACCEPTANCE[acceptance], kind.group_name)
            metrics.record_batch(kind.name, decisions, time.perf_counter() - started)
            response = pb.ValidationResponse()
            provenance = replace(evaluator.provenance, correlation_id=current_correlation_id())
            codec.fill_response(response, decisions, provenance, rollups)
        log.info(
            "decided",
            kind=kind.name,
            items=len(decisions),
            accepted=response.summary.accepted,
            enriched=response.summary.enriched,
            rejected=response.summary.rejected,
            snapshot_id=provenance.snapshot_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    def _time_entries(self, request: pb.ValidateTimeEntriesRequest, generation: Generation,
                      context: grpc.ServicerContext) -> pb.ValidationResponse:
        return self._decide(TIME_ENTRY, request.entries, None, acceptance=request.acceptance, generation=generation,
                            context=context, field="entries")

    def _expense_lines(self, request: pb.ValidateExpenseLinesRequest, generation: Generation,
                       context: grpc.ServicerContext) -> pb.ValidationResponse:
        return self._decide(EXPENSE_LINE, request.lines, None, acceptance=request.acceptance, generation=generation,
                            context=context, field="lines")

    def _invoices(self, request: pb.ValidateInvoicesRequest, generation: Generation,
                  context: grpc.ServicerContext) -> pb.ValidationResponse:
        lines = [(line, invoice) for invoice in request.invoices for line in invoice.lines]
        return self._decide(INVOICE_LINE, [line for line, _ in lines], [invoice for _, invoice in lines],
                            acceptance=request.acceptance, generation=generation, context=context, field="invoices")

    def _unary(self, decide: Callable[[Any, Generation, grpc.ServicerContext], pb.ValidationResponse],
               request: Any, context: grpc.ServicerContext) -> pb.ValidationResponse:
        return decide(request, self._generation(context), context)

    def _stream(self, decide: Callable[[Any, Generation, grpc.ServicerContext], pb.ValidationResponse],
                requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[pb.ValidationResponse]:
        replay = any(k == SNAPSHOT_METADATA_KEY for k, _v in context.invocation_metadata() or ())
        pinned = self._generation(context) if replay else None
        for request in requests:
            # Each chunk is decided by one generation: the replayed one, or whichever is current.
            yield decide(request, pinned or self._generation(context), context)

    def ValidateTimeEntries(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateTimeEntriesRequest, context: grpc.ServicerContext
    ) -> pb.ValidationResponse:
        return self._unary(self._time_entries, request, context)

    def StreamTimeEntries(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ValidateTimeEntriesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ValidationResponse]:
        return self._stream(self._time_entries, requests, context)

    def ValidateExpenseLines(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateExpenseLinesRequest, context: grpc.ServicerContext
    ) -> pb.ValidationResponse:
        return self._unary(self._expense_lines, request, context)

    def StreamExpenseLines(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ValidateExpenseLinesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ValidationResponse]:
        return self._stream(self._expense_lines, requests, context)

    def ValidateInvoices(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateInvoicesRequest, context: grpc.ServicerContext
    ) -> pb.ValidationResponse:
        return self._unary(self._invoices, request, context)

    def StreamInvoices(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ValidateInvoicesRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ValidationResponse]:
        return self._stream(self._invoices, requests, context)
