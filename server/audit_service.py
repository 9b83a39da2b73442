"""The AuditService servicer: the decision ledger read back, exported (masked), replayed and purged.

Reading and purging run in the load pool, replaying in the deciding pool (server/calls.py:off_loop), never on
the event loop. ledger/reading.py is the library every read goes through.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import grpc
import structlog
from google.protobuf import json_format
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollgate.api.v1 import audit_pb2 as pb
from tollgate.api.v1 import audit_pb2_grpc as pb_grpc
from tollgate.ledger import reading
from tollgate.ledger.recorder import Recorder
from tollgate.ledger.replay import NotOnRecordError, Replayer, ReplayResult, UnreplayableError
from tollgate.ledger.retention import purge, retention_floor
from tollgate.refdata.store import SnapshotNotFoundError, StoreUnavailableError
from tollgate.rules.fields import cut
from tollgate.rules.item_kinds import ITEM_KINDS
from tollgate.server.authentication import current_caller
from tollgate.server.calls import CallError, bad_request, failure, off_loop
from tollgate.server.masking import MaskingPolicy
from tollgate.server.runtime import Runtime

log = structlog.get_logger("tollgate.audit")

LEDGER_OFF = "LEDGER_OFF"
MASKING_KEY_MISSING = "MASKING_KEY_MISSING"
EXPORT_ROWS_PER_CHUNK = 1_000
MAX_ITEM_ID_CHARS = 10_000
MAX_TIME_CHARS = 64
_BATCH_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _instant(text: str, field: str, *, whole_day: bool = False) -> datetime:
    """An RFC 3339 time (UTC when it names no zone) or a date: its start, or with ``whole_day`` the next day's
    start (a period "to 2026-11-30" takes the whole 30th in). Anything else is INVALID_ARGUMENT naming ``field``."""
    shown = cut(text, 40)
    if not text:
        raise bad_request(f"{field} is required: a date (2026-11-30) or an RFC 3339 time", [(field, "required")])
    try:
        if len(text) > MAX_TIME_CHARS:
            raise ValueError("too long")
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if whole_day else day, time(), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise bad_request(f"{field} {shown!r} is not a date (2026-11-30) or an RFC 3339 time "
                          "(2026-11-30T17:00:00Z)", [(field, "a date or an RFC 3339 time")]) from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _batch_id(text: str) -> str:
    if not _BATCH_ID.fullmatch(text):
        raise bad_request(f"batch_id {cut(text, 40)!r} is not a batch id (a UUID, as ValidationResponse.batch_id "
                          "gives)", [("batch_id", "a UUID in lower case")])
    return text


def _recorded_decision(decision: dict[str, Any]) -> pb.RecordedDecision:
    message: pb.RecordedDecision = json_format.ParseDict(decision, pb.RecordedDecision())
    return message


def _recorded_batch(batch: dict[str, Any]) -> pb.RecordedBatch:
    message: pb.RecordedBatch = json_format.ParseDict(batch, pb.RecordedBatch())
    return message


def _replay_response(result: ReplayResult) -> pb.ReplayResponse:
    response = pb.ReplayResponse(identical=result.identical, items=result.items, snapshot_id=result.snapshot_id,
                                 rulesets=[pb.RecordedRuleset(**r) for r in result.rulesets])
    for difference in result.differences:
        response.differences.append(json_format.ParseDict({
            "position": difference.position, "item_id": difference.item_id, "differs": list(difference.differs),
            "recorded_outcome": difference.recorded["outcome"], "replayed_outcome": difference.replayed["outcome"],
            "recorded_reasons": difference.recorded["reasons"], "replayed_reasons": difference.replayed["reasons"],
            "recorded_enrichments": difference.recorded["enrichments"],
            "replayed_enrichments": difference.replayed["enrichments"],
        }, pb.ReplayDifference()))
    return response


class AuditService(pb_grpc.AuditServiceServicer):
    def __init__(self, ledger: Recorder | None, runtime: Runtime, *, reads: Executor, deciding: Executor,
                 masking: MaskingPolicy, retention_days: int, keep_sources: Callable[[], Collection[str]]) -> None:
        self.ledger = ledger
        self.reads = reads
        self.deciding = deciding
        self.masking = masking
        self.retention_days = retention_days
        self.keep_sources = keep_sources
        self.replayer = Replayer(ledger.engine, lambda snapshot_id: runtime.generation_for(snapshot_id).snapshot) \
            if ledger is not None else None

    def _engine(self) -> Engine:
        if self.ledger is None:
            raise failure(grpc.StatusCode.FAILED_PRECONDITION, "the decision ledger is off on this server "
                          "(--ledger false): nothing is on record to read, export, replay or purge", LEDGER_OFF)
        return self.ledger.engine

    async def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await off_loop(self.reads, function, *args)
        except SQLAlchemyError as error:
            raise failure(grpc.StatusCode.UNAVAILABLE, "the decision ledger cannot be read now; retry later",
                          "LEDGER_UNAVAILABLE", error_type=type(error).__name__) from error

    async def ItemHistory(self, request: pb.ItemHistoryRequest,  # noqa: N802 - gRPC method name
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.ItemHistoryResponse:
        engine = self._engine()
        if not request.item_id or len(request.item_id) > MAX_ITEM_ID_CHARS:
            raise bad_request(f"item_id is required, at most {MAX_ITEM_ID_CHARS} characters",
                              [("item_id", f"1 to {MAX_ITEM_ID_CHARS} characters")])
        if request.item_kind and request.item_kind not in ITEM_KINDS:
            known = ", ".join(ITEM_KINDS)
            raise bad_request(f"item_kind {cut(request.item_kind, 40)!r} is not one of {known}",
                              [("item_kind", f"one of {known}, or empty for every kind")])
        found = await self._read(reading.decisions_on, engine, request.item_id, request.item_kind or None)
        return pb.ItemHistoryResponse(decisions=[_recorded_decision(d) for d in found])

    async def GetBatch(self, request: pb.GetBatchRequest,  # noqa: N802 - gRPC method name
                       context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetBatchResponse:
        engine = self._engine()
        found = await self._read(reading.batch, engine, _batch_id(request.batch_id))
        if found is None:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"no batch {request.batch_id} on record (purged, or never)")
        decisions = found.pop("decisions")
        return pb.GetBatchResponse(batch=_recorded_batch(found), decisions=[_recorded_decision(d) for d in decisions])

    def _export_row(self, row: dict[str, Any]) -> pb.ExportRow:
        masked = {**row, "input": json.dumps(self.masking.item(json.loads(row["input"])), ensure_ascii=False),
                  "enrichments": json.dumps(self.masking.enrichments(json.loads(row["enrichments"])),
                                            ensure_ascii=False)}
        return pb.ExportRow(**masked)

    def _export_page(self, engine: Engine, start: datetime, end: datetime,
                     after: reading.ExportCursor | None) -> tuple[list[pb.ExportRow], reading.ExportCursor | None]:
        page, cursor = reading.answered_page(engine, start, end, after, EXPORT_ROWS_PER_CHUNK)
        return [self._export_row(row) for row in page], cursor

    async def Export(self, request: pb.ExportRequest,  # noqa: N802 - gRPC method name
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.ExportChunk]:
        engine = self._engine()
        start = _instant(request.from_time, "from_time")
        end = _instant(request.to_time, "to_time", whole_day=True)
        if start >= end:
            raise bad_request(f"from_time {start.isoformat()} is not before to_time {end.isoformat()}: the period is "
                              "empty", [("to_time", "after from_time")])
        if self.masking.key is None and not self.masking.masks_nothing:
            raise failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"exports mask {', '.join(self.masking.names)} with a keyed HMAC, and this server has no "
                          "masking key: start it with --masking-key-file (personal fields are never exported in "
                          "clear)", MASKING_KEY_MISSING)
        total = await self._read(reading.count_answered, engine, start, end)
        log.info("export_started", from_time=start.isoformat(), to_time=end.isoformat(), rows=total,
                 caller=current_caller.get().name)
        yield pb.ExportChunk(total=total, masked_fields=self.masking.names)
        cursor: reading.ExportCursor | None = None
        while True:
            rows, cursor = await self._read(self._export_page, engine, start, end, cursor)
            if rows:
                yield pb.ExportChunk(rows=rows)
            if cursor is None:
                return

    async def Replay(self, request: pb.ReplayRequest,  # noqa: N802 - gRPC method name
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.ReplayResponse:
        self._engine()
        assert self.replayer is not None
        batch_id = _batch_id(request.batch_id)
        try:
            result = await off_loop(self.deciding, self.replayer.replay, batch_id)
        except NotOnRecordError as error:
            raise CallError(grpc.StatusCode.NOT_FOUND, str(error)) from error
        except SnapshotNotFoundError as error:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"cannot replay batch {batch_id}: the reference snapshot it "
                            f"was decided with is no longer kept ({error}); raise --snapshots-kept to keep more") \
                from error
        except StoreUnavailableError as error:
            raise CallError(grpc.StatusCode.UNAVAILABLE, f"cannot replay now: {error}") from error
        except UnreplayableError as error:
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, f"cannot replay batch {batch_id}: {error}") from error
        except SQLAlchemyError as error:
            raise failure(grpc.StatusCode.UNAVAILABLE, "the decision ledger cannot be read now; retry later",
                          "LEDGER_UNAVAILABLE", error_type=type(error).__name__) from error
        log.info("replayed", batch_id=batch_id, items=result.items, identical=result.identical,
                 differences=len(result.differences))
        return _replay_response(result)

    async def Purge(self, request: pb.PurgeRequest,  # noqa: N802 - gRPC method name
                    context: grpc.aio.ServicerContext[Any, Any]) -> pb.PurgeResponse:
        engine = self._engine()
        before = _instant(request.before, "before")
        floor = retention_floor(self.retention_days)
        if before > floor:
            raise bad_request(
                f"before {before.isoformat()} is later than the retention floor {floor.isoformat()} (now - "
                f"ledger_retention_days, {self.retention_days} days): decisions that recent are kept; purge before "
                "that date at the latest", [("before", f"at most {floor.date().isoformat()}")])
        purged = await self._read(lambda: purge(engine, before, keep_sources=self.keep_sources()))
        log.info("ledger_purged_on_request", before=before.isoformat(), batches=purged.batches,
                 decisions=purged.decisions, ruleset_sources=purged.ruleset_sources)
        return pb.PurgeResponse(batches=purged.batches, decisions=purged.decisions,
                                ruleset_sources=purged.ruleset_sources, before=before.isoformat())
