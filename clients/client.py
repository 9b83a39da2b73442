"""The Python client: send items as plain dicts or typed models, get typed decisions back.

    with ValidationClient("127.0.0.1:50051") as client:
        result = client.validate_time_entries([{"entry_id": "TE-1", "hours": "8", ...}])
        for decision in result.decisions:
            print(decision.item_id, decision.outcome, decision.codes)

Large batches are split into chunks and sent over one streaming call; decisions come back in the
order the items were given. ``snapshot_id=`` replays a batch against a kept reference snapshot.

    with RefDataClient("127.0.0.1:50051") as refdata:
        loaded = refdata.load_directory(Path("exports/2026-11-30"))
        print(loaded.snapshot.snapshot_id, refdata.status().stale_seconds)
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from pydantic import BaseModel

from evaluators.reference_loaders import SUFFIXES, file_stem
from rules.decisions import (
    CORRELATION_METADATA_KEY,
    SNAPSHOT_METADATA_KEY,
    BatchSummary,
    Decision,
    Enrichment,
    Outcome,
    Provenance,
    Reason,
    Rollup,
    RulesetRef,
)
from rules.model import Severity
from rules.schema import ENTITIES, TIME_ENTRY, FieldKind
from tollgate_api.v1 import refdata_pb2, refdata_pb2_grpc
from tollgate_api.v1 import validation_pb2 as pb
from tollgate_api.v1 import validation_pb2_grpc as pb_grpc

_OUTCOMES = {pb.ACCEPT: Outcome.ACCEPT, pb.ENRICH: Outcome.ENRICH, pb.REJECT: Outcome.REJECT}
_SEVERITIES = {pb.INFO: Severity.INFO, pb.WARNING: Severity.WARNING, pb.ERROR: Severity.ERROR}
_SCALARS = frozenset(name for name, spec in TIME_ENTRY.fields.items() if spec.kind is not FieldKind.STRING_MAP)


class ItemError(ValueError):
    """An item the client cannot even put on the wire (e.g. a field the item kind does not have)."""


@dataclass(frozen=True, slots=True)
class ValidationResult:
    decisions: list[Decision]
    summary: BatchSummary
    correlation_id: str
    rollups: list[Rollup]  # one per timesheet, in order of first appearance

    @property
    def rejected(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome is Outcome.REJECT]


def _wire(value: Any) -> str:
    """A python value as the wire's string: decimals as written, dates ISO, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        # A float from JSON: its shortest repr is what the sender wrote (never binary noise).
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def time_entry_message(item: Mapping[str, Any] | BaseModel, position: int) -> pb.TimeEntry:
    values = item.model_dump() if isinstance(item, BaseModel) else item
    unknown = sorted(set(values) - _SCALARS - {"custom"})
    if unknown:
        raise ItemError(
            f"item {position} ({values.get('entry_id', 'no entry_id')}): unknown field(s) {', '.join(unknown)}; "
            f"time entries have {', '.join(sorted(TIME_ENTRY.fields))}"
        )
    message = pb.TimeEntry()
    for name, value in values.items():
        if name != "custom":
            setattr(message, name, _wire(value))
    custom = values.get("custom") or {}
    message.custom.update({str(k): _wire(v) for k, v in custom.items()})
    return message


def _decision(message: Any, provenance: Provenance) -> Decision:
    return Decision(
        item_id=message.item_id,
        outcome=_OUTCOMES[message.outcome],
        reasons=tuple(
            Reason(r.rule_id, r.code, r.message, _SEVERITIES[r.severity], r.field or None, r.ruleset_id or None)
            for r in message.reasons
        ),
        enrichments=tuple(
            Enrichment(
                e.field,
                e.old_value if e.HasField("old_value") else None,
                e.new_value if e.HasField("new_value") else None,
                e.rule_id,
            )
            for e in message.enrichments
        ),
        provenance=provenance,
    )


def _provenance(message: Any) -> Provenance:
    return Provenance(
        rulesets=tuple(RulesetRef(r.id, r.version) for r in message.rulesets),
        snapshot_id=message.snapshot_id,
        engine_version=message.engine_version,
        correlation_id=message.correlation_id,
    )


def chunks_by_timesheet(messages: Sequence[pb.TimeEntry], size: int) -> Iterator[list[pb.TimeEntry]]:
    """Chunks of about ``size`` entries that never split a run of one timesheet's lines: the service
    takes a timesheet whole (all or nothing, roll-ups) within one chunk."""
    chunk: list[pb.TimeEntry] = []
    # A line without a timesheet is a run of its own (object() never equals the next key).
    for _timesheet, run in itertools.groupby(messages, key=lambda message: message.timesheet_id or object()):
        lines = list(run)
        if chunk and len(chunk) + len(lines) > size:
            yield chunk
            chunk = []
        chunk.extend(lines)  # a timesheet longer than ``size`` goes whole into a chunk of its own
    if chunk:
        yield chunk


def _rollup(message: Any) -> Rollup:
    return Rollup(message.group_id, _OUTCOMES[message.outcome], message.total, message.accepted, message.enriched,
                  message.rejected, tuple(message.rejected_items))


class ValidationClient:
    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 60.0, chunk_size: int = 2_000,
                 max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.target = target
        self.timeout = timeout
        self.chunk_size = chunk_size
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._stub = pb_grpc.ValidationServiceStub(self._channel)

    def __enter__(self) -> ValidationClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def validate_time_entries(
        self, items: Iterable[Mapping[str, Any] | BaseModel], *, correlation_id: str | None = None,
        snapshot_id: str | None = None, all_or_nothing: bool = False,
    ) -> ValidationResult:
        """Decide time entries; one call for a small batch, a stream of chunks for a large one.

        ``snapshot_id`` decides against that kept reference snapshot instead of the current one: the
        replay of a past decision, which names the snapshot it used in its provenance.
        ``all_or_nothing``: a timesheet with a rejected line is rejected whole (send its lines together).
        """
        acceptance = pb.ALL_OR_NOTHING if all_or_nothing else pb.PARTIAL
        correlation_id = correlation_id or uuid.uuid4().hex
        metadata: tuple[tuple[str, str], ...] = ((CORRELATION_METADATA_KEY, correlation_id),)
        if snapshot_id:
            metadata += ((SNAPSHOT_METADATA_KEY, snapshot_id),)
        messages = [time_entry_message(item, position) for position, item in enumerate(items, start=1)]
        if len(messages) <= self.chunk_size:
            request = pb.ValidateTimeEntriesRequest(entries=messages, acceptance=acceptance)
            responses: Iterable[Any] = [self._stub.ValidateTimeEntries(request, timeout=self.timeout,
                                                                       metadata=metadata)]
        else:
            requests = (pb.ValidateTimeEntriesRequest(entries=chunk, acceptance=acceptance)
                        for chunk in chunks_by_timesheet(messages, self.chunk_size))
            responses = self._stub.StreamTimeEntries(requests, timeout=self.timeout, metadata=metadata)
        decisions: list[Decision] = []
        rollups: list[Rollup] = []
        for response in responses:
            provenance = _provenance(response.provenance)
            decisions.extend(_decision(d, provenance) for d in response.decisions)
            rollups.extend(_rollup(r) for r in response.rollups)
        if len(decisions) != len(messages):
            raise RuntimeError(f"sent {len(messages)} items but received {len(decisions)} decisions")
        summary = BatchSummary.of(decisions)
        return ValidationResult(decisions, summary, correlation_id, rollups)


# ---------------------------------------------------------------------------------------------------
# Reference data

UPLOAD_CHUNK_BYTES = 1024 * 1024


def export_files(directory: Path) -> list[Path]:
    """The files of an export directory the service loads: ENTITY.EXT, or the files of an ENTITY/ folder."""
    stems = {file_stem(entity) for entity in ENTITIES.values()}
    found = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.stem in stems and path.suffix in SUFFIXES:
            found.append(path)
        elif path.is_dir() and path.name in stems:
            found.extend(p for p in sorted(path.iterdir()) if p.is_file() and p.suffix in SUFFIXES)
    return found


def _upload(directory: Path, files: Sequence[Path], header: refdata_pb2.LoadHeader,
            chunk_bytes: int) -> Iterator[refdata_pb2.LoadRequest]:
    yield refdata_pb2.LoadRequest(header=header)
    for path in files:
        relative = path.relative_to(directory).as_posix()
        with path.open("rb") as handle:
            while data := handle.read(chunk_bytes):
                yield refdata_pb2.LoadRequest(chunk=refdata_pb2.FileChunk(path=relative, data=data))


class RefDataClient:
    """Loads, changes and inspects reference snapshots (ReferenceDataService); answers are the protobuf
    messages of ``tollgate_api.v1.refdata_pb2``. Refused changes raise grpc.RpcError (INVALID_ARGUMENT,
    with a google.rpc.BadRequest naming each problem)."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 300.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = refdata_pb2_grpc.ReferenceDataServiceStub(self._channel)

    def __enter__(self) -> RefDataClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def load_directory(self, directory: Path, *, partial: bool = False, source: str | None = None,
                       chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> refdata_pb2.LoadResponse:
        """Upload an export directory; it becomes the current snapshot on every replica."""
        files = export_files(directory)
        if not files:
            raise FileNotFoundError(f"{directory}: no exports (ENTITY.csv, .jsonl, .parquet, or ENTITY/ folders)")
        header = refdata_pb2.LoadHeader(source=source or str(directory), partial=partial)
        response: refdata_pb2.LoadResponse = self._stub.Load(_upload(directory, files, header, chunk_bytes),
                                                             timeout=self.timeout)
        return response

    def upsert(self, entity: str, records: Iterable[Mapping[str, Any]], *,
               if_current: str = "") -> refdata_pb2.ChangeResponse:
        messages = [refdata_pb2.Record(fields={k: _wire(v) for k, v in record.items()}) for record in records]
        response: refdata_pb2.ChangeResponse = self._stub.Upsert(
            refdata_pb2.UpsertRequest(entity=entity, records=messages, if_current=if_current), timeout=self.timeout)
        return response

    def delete(self, entity: str, keys: Iterable[Mapping[str, str]], *,
               if_current: str = "") -> refdata_pb2.ChangeResponse:
        messages = [refdata_pb2.Record(fields=dict(key)) for key in keys]
        response: refdata_pb2.ChangeResponse = self._stub.Delete(
            refdata_pb2.DeleteRequest(entity=entity, keys=messages, if_current=if_current), timeout=self.timeout)
        return response

    def status(self) -> refdata_pb2.StatusResponse:
        response: refdata_pb2.StatusResponse = self._stub.Status(refdata_pb2.StatusRequest(), timeout=self.timeout)
        return response

    def diff(self, from_snapshot_id: str, to_snapshot_id: str) -> refdata_pb2.DiffResponse:
        response: refdata_pb2.DiffResponse = self._stub.Diff(
            refdata_pb2.DiffRequest(from_snapshot_id=from_snapshot_id, to_snapshot_id=to_snapshot_id),
            timeout=self.timeout)
        return response
