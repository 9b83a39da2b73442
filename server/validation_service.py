"""The ValidationService servicer: request → items → evaluator → decisions → response.

Each call's deciding runs in the deciding thread pool (server/calls.py:off_loop), never on the event
loop; a stream waits for its chunks on the loop, holding no thread, and is bounded: at most
max_streams open per process, ended when idle for stream_idle_seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.evaluators import collector
from tollgate.evaluators.accounts import Accounts, hold_unsettled
from tollgate.evaluators.rollups import group_ids, roll_up
from tollgate.ledger.recorder import (
    Batch,
    Decided,
    LedgerUnavailableError,
    Recorder,
    Redecide,
    RequestIdReusedError,
    RequestKey,
    RequestRecordedError,
)
from tollgate.ledger.store import masked, out_of_reach
from tollgate.refdata.store import SnapshotNotFoundError, StoreUnavailableError
from tollgate.rules.decisions import REQUEST_ID, REQUEST_ID_RULE, SNAPSHOT_METADATA_KEY, Acceptance
from tollgate.rules.fields import cut
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, TIME_ENTRY, ItemKind
from tollgate.server import codec, metrics
from tollgate.server.authentication import current_caller
from tollgate.server.calls import (
    CallError,
    StreamSlots,
    bad_request,
    failure,
    off_loop,
    read_within,
    write_within,
)
from tollgate.server.correlation import current_correlation_id
from tollgate.server.runtime import Generation, Runtime
from tollgate.server.settings import Settings

log = structlog.get_logger("tollgate.validation")

_NOUNS = {TIME_ENTRY.name: "entries", EXPENSE_LINE.name: "expense lines", INVOICE_LINE.name: "invoice lines"}
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{12}$")
LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
# PostgreSQL's answer when two calls wait for each other's caps (deadlock_detected, serialization_failure): one is
# rolled back and settles again. Bounded: a call that keeps losing fails UNAVAILABLE rather than spin.
_CONTENTION = frozenset({"40P01", "40001"})
_SETTLE_ATTEMPTS = 5


def _sqlstate(error: BaseException) -> str | None:
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def _is_contention(error: BaseException) -> bool:
    return _sqlstate(error) in _CONTENTION


def _acceptance(value: int, where: str) -> Acceptance:
    """The request's acceptance; an unknown value (a newer client's, or garbage) is a bad request."""
    acceptance: Acceptance | None = codec.ACCEPTANCE.get(value)  # type: ignore[call-overload]
    if acceptance is None:
        known = ", ".join(f"{pb.Acceptance.Name(v)} ({v})" for v in codec.ACCEPTANCE)
        raise bad_request(f"{where}acceptance {value} is not an Acceptance this server knows: one of {known}",
                          [("acceptance", f"{value} is not one of {known}")])
    return acceptance


Decide = Callable[[Any, Generation, str, datetime], pb.ValidationResponse]


class ValidationService(pb_grpc.ValidationServiceServicer):
    def __init__(self, runtime: Runtime, settings: Settings, deciding: Executor, streams: StreamSlots,
                 ledger: Recorder | None = None) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.max_items = settings.max_batch_items
        self.idle_seconds = settings.stream_idle_seconds
        self.deciding = deciding
        self.streams = streams

    def _generation(self, metadata: Sequence[tuple[str, Any]] | None) -> Generation:
        """What this call decides with: the snapshot it names (a replay), else the current one.

        Refuses the call rather than decide against nothing (no data yet) or against the wrong data
        (a snapshot that is not kept, or cannot be fetched now).
        """
        requested = next((str(v) for k, v in metadata or () if k == SNAPSHOT_METADATA_KEY), None)
        if requested is None:
            if not self.runtime.has_data:
                raise CallError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"no reference data loaded yet ({self.runtime.store.description}); load a snapshot "
                                "with `tollgate refdata load DIR`, or start the service with --refdata DIR")
            return self.runtime.generation
        if not _SNAPSHOT_ID.match(requested):
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{SNAPSHOT_METADATA_KEY}: {requested!r} is not a snapshot id (snap- and 12 hex digits)")
        try:
            return self.runtime.generation_for(requested)
        except SnapshotNotFoundError as error:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"cannot replay: {error}") from error
        except StoreUnavailableError as error:
            raise CallError(grpc.StatusCode.UNAVAILABLE, f"cannot replay: {error}") from error

    def _decide(self, kind: ItemKind, request: Any, lines: Sequence[Any], headers: Sequence[Any] | None, *,
                generation: Generation, field: str, where: str, received: datetime) -> pb.ValidationResponse:
        """Decide one request's items of ``kind`` (``headers``: each line's invoice, for invoice lines).
        ``where``: which chunk of a stream this is ("" for a unary call), for the messages of a refusal."""
        if len(lines) > self.max_items:
            raise bad_request(
                f"{where}{len(lines)} {_NOUNS[kind.name]} in one request; the limit is {self.max_items}. "
                "Split the batch, or send it in chunks with the streaming call.",
                [(field, f"at most {self.max_items} items per request")],
            )
        accept = _acceptance(request.acceptance, where)
        request_id = request.request_id
        if request_id and not REQUEST_ID.fullmatch(request_id):
            raise bad_request(f"{where}request_id {cut(request_id, 40)!r} is not a request id: {REQUEST_ID_RULE} "
                              "(AIP-155: a UUID)", [("request_id", REQUEST_ID_RULE)])
        key = None
        if self.ledger is not None and request_id:
            payload = hashlib.sha256(kind.name.encode() + b"\0" + request.SerializeToString(deterministic=True))
            key = RequestKey(current_caller.get().name, request_id, payload.hexdigest())
            replayed = self._recorded(key, where)
            if replayed is not None:
                return replayed
        started = time.perf_counter()
        evaluator = generation.evaluators[kind.name]
        batch_id = str(uuid.uuid4()) if self.ledger is not None else ""

        def decide(accounts: Accounts | None) -> Decided:
            with collector.BATCHES.batch():  # through to the response built (see evaluators/collector.py)
                decided = evaluator.evaluate_messages(lines, headers, accounts)
                if accounts is not None and accounts.unavailable:
                    decided = hold_unsettled(decided, accounts)
                decisions, rollups = roll_up(decided, group_ids(kind, lines, headers), accept, kind.group_name)
                response = pb.ValidationResponse(batch_id=batch_id)
                provenance = replace(evaluator.provenance, correlation_id=current_correlation_id())
                codec.fill_response(response, decisions, provenance, rollups)
            return Decided(decisions, response, accounts)

        # Through to the call on record (see evaluators/collector.py): the ledger's rows, too, are many objects
        # without a cycle among them, freed at once.
        reader = self.ledger.accounts_reader() if evaluator.holds_accounts and self.ledger is not None else None
        with collector.BATCHES.batch(), contextlib.ExitStack() as reading:
            if reader is not None:
                reading.callback(reader.close)  # however the call ends
            decided = decide(Accounts(reader, kind.name) if reader is not None else None)
            if self.ledger is not None:
                outcome = self._record(kind, lines, headers, decided, decide, generation=generation, key=key,
                                       request_id=request_id, received=received, where=where, acceptance=accept)
                if isinstance(outcome, pb.ValidationResponse):  # a retry that raced its first attempt
                    return outcome
                decided = outcome
        response: pb.ValidationResponse = decided.response
        metrics.record_batch(kind.name, decided.decisions, time.perf_counter() - started)
        log.info(
            "decided",
            kind=kind.name,
            items=len(decided.decisions),
            accepted=response.summary.accepted,
            enriched=response.summary.enriched,
            rejected=response.summary.rejected,
            snapshot_id=response.provenance.snapshot_id,
            batch_id=batch_id or None,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    def _recorded(self, key: RequestKey, where: str) -> pb.ValidationResponse | None:
        """The recorded response of a retried request; None for a request id not seen within the window."""
        assert self.ledger is not None
        try:
            recorded = self.ledger.recorded_response(key)
        except RequestIdReusedError as error:
            raise failure(grpc.StatusCode.ALREADY_EXISTS,
                          f"{where}request_id {key.request_id!r} was used for another request (batch "
                          f"{error.batch_id}) within the last {self.ledger.request_window}; a retry must send the "
                          "same request, and a new request a new id", REQUEST_ID_REUSED,
                          request_id=key.request_id, batch_id=error.batch_id) from error
        except SQLAlchemyError as error:
            raise self._unavailable(error, current_correlation_id()) from error
        if recorded is None:
            return None
        log.info("request_replayed", request_id=key.request_id)
        metrics.REQUESTS_REPLAYED.inc()
        return pb.ValidationResponse.FromString(recorded)

    def _record(self, kind: ItemKind, lines: Sequence[Any], headers: Sequence[Any] | None, decided: Decided,
                redecide: Redecide, *, generation: Generation, key: RequestKey | None, request_id: str,
                received: datetime, where: str, acceptance: Acceptance) -> Decided | pb.ValidationResponse:
        """Put the call on record (in this deciding thread) before it is answered: what was recorded (the
        decisions may have been made again, if another call settled on the same caps meanwhile), or the recorded
        response of the same request, recorded by a retry that raced this one.

        While the database cannot be reached the call goes to the spool (ledger/spool.py); when neither can take it
        the call fails UNAVAILABLE (ErrorInfo LEDGER_UNAVAILABLE): nothing is answered unrecorded. A write the
        database refuses (a constraint violated: a bug) fails it INTERNAL, logged with its traceback.
        """
        assert self.ledger is not None
        response = decided.response
        correlation_id = response.provenance.correlation_id
        batch = Batch(batch_id=response.batch_id, request_id=request_id, correlation_id=correlation_id,
                      caller=current_caller.get().name, received_at=received, answered_at=datetime.now(UTC),
                      item_kind=kind.name, rulesets=tuple(generation.rulesets.for_kind(kind.name)),
                      snapshot_id=response.provenance.snapshot_id, engine_version=response.provenance.engine_version,
                      acceptance=acceptance)
        for attempt in range(1, _SETTLE_ATTEMPTS + 1):
            try:
                return self.ledger.record(batch, lines, headers, decided, redecide=redecide, request=key)
            except RequestRecordedError as recorded:
                return pb.ValidationResponse.FromString(recorded.response)
            except IntegrityError as error:
                if key is None:
                    raise
                # the same request id, recorded by a concurrent attempt since this one looked
                replayed = self._recorded(key, where)
                if replayed is None:
                    raise self._unavailable(error, correlation_id) from error
                return replayed
            except (LedgerUnavailableError, SQLAlchemyError, OSError) as error:
                if attempt < _SETTLE_ATTEMPTS and _is_contention(error):
                    log.info("ledger_contention", attempt=attempt, sqlstate=_sqlstate(error))
                    continue  # PostgreSQL chose this call to wait for another on the same caps: settle again
                if isinstance(error, SQLAlchemyError) and not out_of_reach(self.ledger.engine, error):
                    raise  # a write the database refuses: a bug, failed INTERNAL with its traceback
                raise self._unavailable(error, correlation_id) from error
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _unavailable(self, error: Exception, correlation_id: str) -> CallError:
        assert self.ledger is not None
        log.error("ledger_unavailable", error_type=type(error).__name__, database=masked(self.ledger.engine.url),
                  error=str(error).splitlines()[0] if str(error) else "")
        return failure(grpc.StatusCode.UNAVAILABLE,
                       "the decision ledger cannot be written now, so this batch is not answered (a decision is "
                       "answered only once it is on record); retry later", LEDGER_UNAVAILABLE,
                       correlation_id=correlation_id, error_type=type(error).__name__)

    def time_entries(self, request: pb.ValidateTimeEntriesRequest, generation: Generation,
                     where: str, received: datetime) -> pb.ValidationResponse:
        return self._decide(TIME_ENTRY, request, request.entries, None, generation=generation, field="entries",
                            where=where, received=received)

    def expense_lines(self, request: pb.ValidateExpenseLinesRequest, generation: Generation,
                       where: str, received: datetime) -> pb.ValidationResponse:
        return self._decide(EXPENSE_LINE, request, request.lines, None, generation=generation, field="lines",
                            where=where, received=received)

    def invoices(self, request: pb.ValidateInvoicesRequest, generation: Generation,
                  where: str, received: datetime) -> pb.ValidationResponse:
        lines = [(line, invoice) for invoice in request.invoices for line in invoice.lines]
        return self._decide(INVOICE_LINE, request, [line for line, _ in lines], [invoice for _, invoice in lines],
                            generation=generation, field="invoices", where=where, received=received)

    def decide_in_thread(  # noqa: PLR0917 - off_loop passes its arguments by position
        self, decide: Decide, request: Any, metadata: Sequence[tuple[str, Any]] | None, pinned: Generation | None,
        where: str, received: datetime,
    ) -> pb.ValidationResponse:
        """A call's (or a chunk's) work, in a deciding thread: which generation, then ``decide``."""
        return decide(request, pinned or self._generation(metadata), where, received)

    async def _unary(self, decide: Decide, request: Any,
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.ValidationResponse:
        return await off_loop(self.deciding, self.decide_in_thread, decide, request, context.invocation_metadata(),
                              None, "", datetime.now(UTC))

    async def _stream(self, decide: Decide, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = context.invocation_metadata()
        with self.streams.hold():
            replay = any(k == SNAPSHOT_METADATA_KEY for k, _v in metadata or ())
            pinned = await off_loop(self.deciding, self._generation, metadata) if replay else None
            chunk = 0
            while (request := await read_within(context, self.idle_seconds, "chunk")) is not None:
                chunk += 1
                received = datetime.now(UTC)
                # Each chunk is decided by one generation: the replayed one, or whichever is current.
                response = await off_loop(self.deciding, self.decide_in_thread, decide, request, metadata, pinned,
                                          f"chunk {chunk}: ", received)
                await write_within(context, response, self.idle_seconds)

    async def ValidateTimeEntries(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateTimeEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidationResponse:
        return await self._unary(self.time_entries, request, context)

    async def StreamTimeEntries(  # noqa: N802 - gRPC method name
        self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._stream(self.time_entries, context)

    async def ValidateExpenseLines(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateExpenseLinesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidationResponse:
        return await self._unary(self.expense_lines, request, context)

    async def StreamExpenseLines(  # noqa: N802 - gRPC method name
        self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._stream(self.expense_lines, context)

    async def ValidateInvoices(  # noqa: N802 - gRPC method name
        self, request: pb.ValidateInvoicesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidationResponse:
        return await self._unary(self.invoices, request, context)

    async def StreamInvoices(  # noqa: N802 - gRPC method name
        self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._stream(self.invoices, context)
