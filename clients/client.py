"""The Python client: send items as plain dicts or typed models, get typed decisions back.

    with ValidationClient("127.0.0.1:50051") as client:
        result = client.validate_time_entries([{"entry_id": "TE-1", "hours": "8", ...}])
        for decision in result.decisions:
            print(decision.item_id, decision.outcome, decision.codes)

Large batches are split into chunks and sent over one streaming call; decisions come back in the
order the items were given. ``snapshot_id=`` replays a batch against a kept reference snapshot.
Every call and chunk carries a request id (``request_id=``, else a UUID4); UNAVAILABLE and DEADLINE_EXCEEDED
are retried under ``retry=RetryPolicy(...)`` (clients/retries.py), a broken stream resumed where it broke.

    with AuditClient("127.0.0.1:50051") as audit:
        print(audit.replay(result.batch_ids[0])["identical"])

    with RefDataClient("127.0.0.1:50051") as refdata:
        loaded = refdata.load_directory(Path("exports/2026-11-30"))
        print(loaded.snapshot.snapshot_id, refdata.status().stale_seconds)

Every client takes ``security=ChannelSecurity(ca=..., cert=..., key=..., token=...)`` (clients/channel.py) for a
server run secured; without it, TOLLGATE_TOKEN and TOLLGATE_CLIENT_CA/CERT/KEY from the environment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import grpc
from google.protobuf import json_format
from pydantic import BaseModel

from tollgate.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    exceptions_pb2,
    exceptions_pb2_grpc,
    refdata_pb2,
    refdata_pb2_grpc,
)
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.clients.channel import ChannelSecurity, open_channel
from tollgate.clients.retries import Attempts, RetryPolicy
from tollgate.refdata.loaders import export_files as loader_export_files
from tollgate.rules.decisions import (
    CORRELATION_METADATA_KEY,
    REQUEST_ID,
    REQUEST_ID_LENGTH,
    REQUEST_ID_RULE,
    SNAPSHOT_METADATA_KEY,
    BatchSummary,
    Decision,
    Enrichment,
    Outcome,
    Provenance,
    Reason,
    Rollup,
    RulesetRef,
    new_record,
)
from tollgate.rules.fields import FieldKind, cut
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, ITEM_KINDS, TIME_ENTRY, ItemKind
from tollgate.rules.model import Severity
from tollgate.rules.problems import Problem

_OUTCOMES = {pb.ACCEPT: Outcome.ACCEPT, pb.ENRICH: Outcome.ENRICH, pb.REJECT: Outcome.REJECT}
_SEVERITIES = {pb.INFO: Severity.INFO, pb.WARNING: Severity.WARNING, pb.ERROR: Severity.ERROR}
_SERVICE = pb.DESCRIPTOR.services_by_name["ValidationService"]


class ItemError(ValueError):
    """An item the client cannot even put on the wire (e.g. a field the item kind does not have)."""


@dataclass(frozen=True, slots=True)
class ValidationResult:
    decisions: list[Decision]
    summary: BatchSummary
    correlation_id: str
    rollups: list[Rollup]  # one per timesheet / expense report / invoice, in order of first appearance
    # The ledger's batch of each call or stream chunk, in order (`tollgate audit batch ID`); empty with the ledger off.
    batch_ids: list[str] = field(default_factory=list)
    # The request_id of each call or stream chunk, in order: what a retry of the same batch would send again.
    request_ids: list[str] = field(default_factory=list)

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
        # Written out in full (never 1E+3) where that is short; 1E+999999999 in full would be a gigabyte.
        return format(value, "f") if value.is_finite() and -40 < value.adjusted() < 40 else str(value)
    return str(value)


def _fields_of_kind(kind: ItemKind, field_kind: FieldKind) -> frozenset[str]:
    return frozenset(name for name, spec in kind.fields.items() if spec.kind is field_kind)


# Per item kind: its map fields and its list fields (every other field is a wire string).
_COLLECTION_FIELDS = {
    kind.name: (_fields_of_kind(kind, FieldKind.STRING_MAP), _fields_of_kind(kind, FieldKind.STRING_LIST))
    for kind in ITEM_KINDS.values()
}


def _wired(kind: ItemKind, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields given, as a message of the kind takes them: scalars as wire strings, lists and maps as such;
    null fields left out. (Given to the message's constructor at once: a third cheaper than field by field.)"""
    maps, lists = _COLLECTION_FIELDS[kind.name]
    wired: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in maps:
            wired[name] = {str(k): _wire(v) for k, v in value.items()}
        elif name in lists:
            parts = value.split("|") if isinstance(value, str) else value
            wired[name] = [text for text in (_wire(p).strip() for p in parts) if text]
        else:
            wired[name] = value if type(value) is str else _wire(value)
    return wired


def _values(item: Mapping[str, Any] | BaseModel) -> Mapping[str, Any]:
    return item.model_dump() if isinstance(item, BaseModel) else item


def _check_fields(values: Mapping[str, Any], allowed: Collection[str], position: int, what: str, id_field: str) -> None:
    unknown = sorted(values.keys() - allowed)
    if unknown:
        raise ItemError(
            f"{what} {position} ({values.get(id_field, 'no ' + id_field)}): unknown field(s) "
            f"{', '.join(unknown)}; {what}s have {', '.join(sorted(allowed))}"
        )


def time_entry_message(item: Mapping[str, Any] | BaseModel, position: int) -> pb.TimeEntry:
    values = _values(item)
    _check_fields(values, TIME_ENTRY.fields.keys(), position, "time entry", TIME_ENTRY.id_field)
    return pb.TimeEntry(**_wired(TIME_ENTRY, values))


def expense_line_message(item: Mapping[str, Any] | BaseModel, position: int) -> pb.ExpenseLine:
    values = _values(item)
    _check_fields(values, EXPENSE_LINE.fields.keys(), position, "expense line", EXPENSE_LINE.id_field)
    return pb.ExpenseLine(**_wired(EXPENSE_LINE, values))


INVOICE_HEADER_FIELDS = frozenset(name for name in INVOICE_LINE.fields if name in INVOICE_LINE.header_fields)
INVOICE_LINE_FIELDS = frozenset(name for name in INVOICE_LINE.fields if name not in INVOICE_LINE.header_fields)


def invoice_message(invoice: Mapping[str, Any], position: int) -> pb.Invoice:
    """An invoice given as its header fields and ``lines``, a list of line mappings."""
    header = {name: value for name, value in invoice.items() if name != "lines"}
    _check_fields({"line_id": invoice.get("invoice_id"), **header}, INVOICE_HEADER_FIELDS | {"line_id"}, position,
                  "invoice", INVOICE_LINE.id_field)
    lines = []
    for line_position, line in enumerate(invoice.get("lines") or (), start=1):
        values = _values(line)
        _check_fields(values, INVOICE_LINE_FIELDS, line_position, f"invoice {position} line", INVOICE_LINE.id_field)
        lines.append(_wired(INVOICE_LINE, values))
    return pb.Invoice(**_wired(INVOICE_LINE, header), lines=lines)


def _decision(message: Any, provenance: Provenance) -> Decision:
    # Records built from all their fields (rules.decisions.new_record): a response holds thousands.
    reasons = tuple([new_record(Reason, (r.rule_id, r.code, r.message, _SEVERITIES[r.severity], r.field or None,
                                         r.ruleset_id or None)) for r in message.reasons])
    enrichments = tuple([new_record(Enrichment, (e.field, e.old_value if e.HasField("old_value") else None,
                                                 e.new_value if e.HasField("new_value") else None, e.rule_id))
                         for e in message.enrichments])
    rulesets = tuple([RulesetRef(r.id, r.version) for r in message.rulesets]) if message.rulesets else ()
    return new_record(Decision, (message.item_id, _OUTCOMES[message.outcome], reasons, enrichments, provenance,
                                 rulesets))


def _provenance(message: Any) -> Provenance:
    return Provenance(
        rulesets=tuple(RulesetRef(r.id, r.version) for r in message.rulesets),
        snapshot_id=message.snapshot_id,
        engine_version=message.engine_version,
        correlation_id=message.correlation_id,
    )


def chunks_by_group(messages: Sequence[Any], size: int, group_field: str, weight: Callable[[Any], int] = lambda _m: 1,
                    ) -> Iterator[list[Any]]:
    """Chunks of about ``size`` items that never split a run of one group's lines (a timesheet, an expense
    report): the service takes a group whole (all or nothing, roll-ups) within one chunk. ``weight``: how
    many items a message holds (an invoice holds its lines)."""
    chunk: list[Any] = []
    held = 0
    # A line without a group is a run of its own (object() never equals the next key).
    for _group, run in itertools.groupby(messages, key=lambda message: getattr(message, group_field) or object()):
        lines = list(run)
        count = sum(weight(line) for line in lines)
        if chunk and held + count > size:
            yield chunk
            chunk, held = [], 0
        chunk.extend(lines)  # a group larger than ``size`` goes whole into a chunk of its own
        held += count
    if chunk:
        yield chunk


def _rollup(message: Any) -> Rollup:
    return Rollup(message.group_id, _OUTCOMES[message.outcome], message.total, message.accepted, message.enriched,
                  message.rejected, tuple(message.rejected_items))


class _Connection:
    """A channel to the server (TLS and token from ``security``, else from the environment), closed on exit."""

    def __init__(self, target: str, timeout: float, security: ChannelSecurity | None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = open_channel(target, security, options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()


class RequestIdError(ValueError):
    """A request id the server would refuse, refused before anything is sent; ``argument`` names where it came from."""

    def __init__(self, argument: str, reason: str) -> None:
        self.argument = argument
        self.reason = reason
        super().__init__(f"{argument}: {reason}")


def check_request_id(argument: str, value: str) -> None:
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        shown = cut(value, 40) if isinstance(value, str) else value
        raise RequestIdError(argument, f"{shown!r} is not a request id: {REQUEST_ID_RULE} (a UUID, or a key of "
                                       "the caller's own)")


def request_ids(given: str | None, count: int) -> list[str]:
    """The request_id of each of ``count`` requests: new UUID4s, else ``given`` for a single request and
    ``given/1``, ``given/2``, ... for the chunks of a stream (the same items in the same chunks give the same ids)."""
    if given is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    check_request_id("request_id", given)
    if count == 1:
        return [given]
    numbered = [f"{given}/{number}" for number in range(1, count + 1)]
    if not REQUEST_ID.fullmatch(numbered[-1]):
        room = REQUEST_ID_LENGTH - len(f"/{count}")
        raise RequestIdError("request_id", f"{cut(given, 40)!r} is too long to number the {count} chunks of this "
                             f"stream (with /{count} it is {len(numbered[-1])} characters, over "
                             f"{REQUEST_ID_LENGTH}): give at most {room} characters")
    return numbered


class ValidationClient(_Connection):
    """Decides items; calls that fail UNAVAILABLE or DEADLINE_EXCEEDED are tried again under ``retry``
    (clients/retries.py), each attempt with ``timeout`` seconds at most, all of them within the policy's deadline."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 60.0, chunk_size: int = 2_000,
                 max_message_bytes: int = 64 * 1024 * 1024, security: ChannelSecurity | None = None,
                 retry: RetryPolicy | None = None) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry: {retry!r} is not a RetryPolicy (tollgate.clients.retries)")
        self.retry = retry if retry is not None else RetryPolicy()
        super().__init__(target, timeout, security, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # The channel reconnects to a server that was down as often as the policy retries: with gRPC's own
            # backoff (1 s, growing to 2 minutes) retries would meet a channel still waiting to reconnect.
            ("grpc.initial_reconnect_backoff_ms", max(1, round(self.retry.initial_backoff * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, round(self.retry.max_backoff * 1000))),
        ])
        self.chunk_size = chunk_size
        self._chance = random.Random()
        # Requests go as bytes, serialized once (deterministically): every attempt sends the very same bytes.
        self._unary = {name: self._channel.unary_unary(f"/{_SERVICE.full_name}/{name}", request_serializer=None,
                                                       response_deserializer=pb.ValidationResponse.FromString)
                       for name in ("ValidateTimeEntries", "ValidateExpenseLines", "ValidateInvoices")}
        self._stream = {name: self._channel.stream_stream(f"/{_SERVICE.full_name}/{name}", request_serializer=None,
                                                          response_deserializer=pb.ValidationResponse.FromString)
                        for name in ("StreamTimeEntries", "StreamExpenseLines", "StreamInvoices")}

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def validate_time_entries(
        self, items: Iterable[Mapping[str, Any] | BaseModel], *, correlation_id: str | None = None,
        snapshot_id: str | None = None, all_or_nothing: bool = False, request_id: str | None = None,
    ) -> ValidationResult:
        """Decide time entries; one call for a small batch, a stream of chunks for a large one.

        ``snapshot_id`` decides against that kept reference snapshot instead of the current one: the
        replay of a past decision, which names the snapshot it used in its provenance.
        ``all_or_nothing``: a timesheet with a rejected line is rejected whole (send its lines together).
        ``request_id``: the call's idempotency key (e.g. derived from the caller's own); a stream's chunks are
        ``request_id/1``, ``request_id/2``, ...; by default a new UUID4 for each call or chunk.
        """
        messages = [time_entry_message(item, position) for position, item in enumerate(items, start=1)]
        return self._validate(
            messages, lambda chunk, acceptance, request_id: pb.ValidateTimeEntriesRequest(
                entries=chunk, acceptance=acceptance, request_id=request_id),
            "ValidateTimeEntries", "StreamTimeEntries", TIME_ENTRY.group_field, correlation_id=correlation_id,
            snapshot_id=snapshot_id, all_or_nothing=all_or_nothing, request_id=request_id)

    def validate_expense_lines(
        self, items: Iterable[Mapping[str, Any] | BaseModel], *, correlation_id: str | None = None,
        snapshot_id: str | None = None, all_or_nothing: bool = False, request_id: str | None = None,
    ) -> ValidationResult:
        """Decide expense lines, as ``validate_time_entries``; roll-ups and all or nothing per expense report."""
        messages = [expense_line_message(item, position) for position, item in enumerate(items, start=1)]
        return self._validate(
            messages, lambda chunk, acceptance, request_id: pb.ValidateExpenseLinesRequest(
                lines=chunk, acceptance=acceptance, request_id=request_id),
            "ValidateExpenseLines", "StreamExpenseLines", EXPENSE_LINE.group_field, correlation_id=correlation_id,
            snapshot_id=snapshot_id, all_or_nothing=all_or_nothing, request_id=request_id)

    def validate_invoices(
        self, invoices: Iterable[Mapping[str, Any]], *, correlation_id: str | None = None,
        snapshot_id: str | None = None, all_or_nothing: bool = False, request_id: str | None = None,
    ) -> ValidationResult:
        """Decide invoices, each a mapping of header fields with ``lines``: one decision per line (in order),
        one roll-up per invoice. ``all_or_nothing``: a rejected line rejects its whole invoice.
        ``request_id`` as for ``validate_time_entries``."""
        messages = [invoice_message(invoice, position) for position, invoice in enumerate(invoices, start=1)]
        return self._validate(
            messages, lambda chunk, acceptance, request_id: pb.ValidateInvoicesRequest(
                invoices=chunk, acceptance=acceptance, request_id=request_id),
            "ValidateInvoices", "StreamInvoices", "invoice_id", correlation_id=correlation_id,
            snapshot_id=snapshot_id, all_or_nothing=all_or_nothing, request_id=request_id,
            weight=lambda invoice: len(invoice.lines))

    def _validate(self, messages: Sequence[Any], request: Callable[[list[Any], pb.Acceptance, str], Any],
                  unary: str, stream: str, group_field: str, *, correlation_id: str | None,
                  snapshot_id: str | None, all_or_nothing: bool, request_id: str | None,
                  weight: Callable[[Any], int] = lambda _m: 1) -> ValidationResult:
        acceptance = pb.ALL_OR_NOTHING if all_or_nothing else pb.PARTIAL
        correlation_id = correlation_id or uuid.uuid4().hex
        metadata: tuple[tuple[str, str], ...] = ((CORRELATION_METADATA_KEY, correlation_id),)
        if snapshot_id:
            metadata += ((SNAPSHOT_METADATA_KEY, snapshot_id),)
        expected = sum(weight(message) for message in messages)
        if expected <= self.chunk_size:
            ids = request_ids(request_id, 1)
            encoded = request(list(messages), acceptance, ids[0]).SerializeToString(deterministic=True)
            responses: Iterable[Any] = [self._call(unary, encoded, ids[0], metadata)]
        else:
            chunks = list(chunks_by_group(messages, self.chunk_size, group_field, weight))
            ids = request_ids(request_id, len(chunks))
            responses = self._streamed(
                stream, lambda index: request(chunks[index], acceptance, ids[index]).SerializeToString(
                    deterministic=True), ids, metadata)
        decisions: list[Decision] = []
        rollups: list[Rollup] = []
        batch_ids: list[str] = []
        for response in responses:
            if response.batch_id:
                batch_ids.append(response.batch_id)
            provenance = _provenance(response.provenance)
            decisions.extend(_decision(d, provenance) for d in response.decisions)
            rollups.extend(_rollup(r) for r in response.rollups)
        if len(decisions) != expected:
            raise RuntimeError(f"sent {expected} items but received {len(decisions)} decisions")
        summary = BatchSummary.of(decisions)
        return ValidationResult(decisions, summary, correlation_id, rollups, batch_ids, ids)

    def _call(self, method: str, encoded: bytes, request_id: str, metadata: Sequence[tuple[str, str]]) -> Any:
        """One unary call, retried under the policy with the same bytes."""
        attempts = Attempts(self.retry, self._chance, method)
        while True:
            try:
                return self._unary[method](encoded, timeout=min(self.timeout, attempts.time_left()),
                                           metadata=metadata)
            except grpc.RpcError as error:
                attempts.failed(error, request_id)

    def _streamed(self, method: str, encode: Callable[[int], bytes], ids: Sequence[str],
                  metadata: Sequence[tuple[str, str]]) -> Iterator[Any]:
        """The answer to each chunk, in order. A stream broken by a retryable failure is opened again, and the
        chunks not yet answered are sent again, in order, with their own request ids; answered ones are not."""
        attempts = Attempts(self.retry, self._chance, method)
        answered = 0
        while answered < len(ids):
            resumed_at = answered
            try:
                for response in self._stream[method]((encode(index) for index in range(resumed_at, len(ids))),
                                                     timeout=min(self.timeout, attempts.time_left()),
                                                     metadata=metadata):
                    answered += 1
                    yield response
                return  # ended by the server: every chunk answered (else the caller counts decisions short)
            except grpc.RpcError as error:
                attempts.failed(error, ids[min(answered, len(ids) - 1)], progressed=answered > resumed_at)


# ---------------------------------------------------------------------------------------------------
# Reference data

UPLOAD_CHUNK_BYTES = 1024 * 1024


class ExportDirectoryError(ValueError):
    """An export directory the client refuses to upload: names it does not recognise (each with the
    export name it most likely meant), or two exports of one entity. Nothing was sent."""

    def __init__(self, directory: Path, problems: Sequence[Problem]) -> None:
        self.directory = directory
        self.problems = list(problems)
        super().__init__(f"{directory}: refused, nothing uploaded: "
                         + "; ".join(f"{Path(p.path).relative_to(directory)}: {p.message}" for p in self.problems))


def export_files(directory: Path) -> list[Path]:
    """The files of an export directory the service loads: ENTITY.EXT, or the files of an ENTITY/ folder.

    Names are exact (``refdata.loaders``): any other name, but hidden files and notes, refuses the
    directory (ExportDirectoryError), as the server would, before anything is sent."""
    found = loader_export_files(directory)
    if found.problems:
        raise ExportDirectoryError(directory, found.problems)
    return sorted(path for paths in found.files.values() for path in paths)


def _upload(directory: Path, files: Sequence[Path], header: refdata_pb2.LoadHeader,
            chunk_bytes: int) -> Iterator[refdata_pb2.LoadRequest]:
    yield refdata_pb2.LoadRequest(header=header)
    for path in files:
        relative = path.relative_to(directory).as_posix()
        with path.open("rb") as handle:
            while data := handle.read(chunk_bytes):
                yield refdata_pb2.LoadRequest(chunk=refdata_pb2.FileChunk(path=relative, data=data))


class RefDataClient(_Connection):
    """Loads, changes and inspects reference snapshots (ReferenceDataService); answers are the protobuf
    messages of ``tollgate_api.v1.refdata_pb2``. Refused changes raise grpc.RpcError (INVALID_ARGUMENT,
    with a google.rpc.BadRequest naming each problem)."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 300.0,
                 security: ChannelSecurity | None = None) -> None:
        super().__init__(target, timeout, security)
        self._stub = refdata_pb2_grpc.ReferenceDataServiceStub(self._channel)

    def load_directory(self, directory: Path, *, partial: bool = False, source: str | None = None,
                       keep_missing: bool = False, allow_emptying: bool = False,
                       chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> refdata_pb2.LoadResponse:
        """Upload an export directory; it becomes the current snapshot on every replica.

        It replaces the current snapshot whole; a load that would empty a table that has rows (its export
        left out, or with no rows) is refused unless ``keep_missing`` (entities not sent are taken over)
        or ``allow_emptying``. A directory holding names it does not recognise raises ExportDirectoryError
        before anything is sent."""
        files = export_files(directory)
        if not files:
            raise FileNotFoundError(f"{directory}: no exports (ENTITY.csv, .jsonl, .parquet, .csv.gz, .jsonl.gz, "
                                    "or ENTITY/ folders)")
        header = refdata_pb2.LoadHeader(source=source or str(directory), partial=partial, keep_missing=keep_missing,
                                        allow_emptying=allow_emptying)
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


class AdminClient(_Connection):
    """The AdminService (the operator role): ``reload()`` does what SIGHUP does, on every worker."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 120.0,
                 security: ChannelSecurity | None = None) -> None:
        super().__init__(target, timeout, security)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def reload(self) -> admin_pb2.ReloadResponse:
        response: admin_pb2.ReloadResponse = self._stub.Reload(admin_pb2.ReloadRequest(), timeout=self.timeout)
        return response


# ---------------------------------------------------------------------------------------------------
# The decision ledger

# The columns of an export, in order: the batch's fields, then the decision's (AuditService.Export's ExportRow).
EXPORT_COLUMNS = tuple(f.name for f in audit_pb2.ExportRow.DESCRIPTOR.fields)


def _as_dict(message: Any) -> dict[str, Any]:
    """A ledger message as the ledger's library gives it (ledger/reading.py): proto field names, counts of 0 kept,
    unset optional fields (a reason's field, an enrichment's old value) left out."""
    found: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                                      always_print_fields_with_no_presence=True)
    return found


@dataclass(frozen=True, slots=True)
class Export:
    """An export under way: how many rows it has and which fields are masked, then its rows chunk by chunk."""

    total: int
    masked_fields: list[str]
    chunks: Iterator[list[dict[str, Any]]]


class AuditClient(_Connection):
    """The AuditService: the decision ledger read back, exported, replayed (the auditor role) and purged (the
    operator's). Refusals raise grpc.RpcError (NOT_FOUND for a batch not on record)."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 300.0,
                 max_message_bytes: int = 256 * 1024 * 1024, security: ChannelSecurity | None = None) -> None:
        super().__init__(target, timeout, security, options=[("grpc.max_receive_message_length", max_message_bytes)])
        self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)

    def item_history(self, item_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every decision on ``item_id`` (of ``kind``), oldest first, each with its ``batch``."""
        response = self._stub.ItemHistory(audit_pb2.ItemHistoryRequest(item_id=item_id, item_kind=kind or ""),
                                          timeout=self.timeout)
        return [_as_dict(d) for d in response.decisions]

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's fields with its ``decisions`` in request order."""
        response = self._stub.GetBatch(audit_pb2.GetBatchRequest(batch_id=batch_id), timeout=self.timeout)
        return {**_as_dict(response.batch), "decisions": [_as_dict(d) for d in response.decisions]}

    def export(self, start: str, end: str) -> Export:
        """The decisions answered from ``start`` to ``end`` (dates or RFC 3339 times), as rows of EXPORT_COLUMNS."""
        responses = self._stub.Export(audit_pb2.ExportRequest(from_time=start, to_time=end), timeout=self.timeout)
        first = next(responses)

        def chunks() -> Iterator[list[dict[str, Any]]]:
            for chunk in responses:
                yield [{name: getattr(row, name) for name in EXPORT_COLUMNS} for row in chunk.rows]

        return Export(first.total, list(first.masked_fields), chunks())

    def replay(self, batch_id: str) -> dict[str, Any]:
        """``identical``, and the ``differences`` per position (outcome, reasons, enrichments recorded and replayed)."""
        return _as_dict(self._stub.Replay(audit_pb2.ReplayRequest(batch_id=batch_id), timeout=self.timeout))

    def purge(self, before: str) -> dict[str, Any]:
        """Remove what was answered before ``before`` (a date or RFC 3339 time); how many batches and decisions."""
        return _as_dict(self._stub.Purge(audit_pb2.PurgeRequest(before=before), timeout=self.timeout))


class ExceptionClient(_Connection):
    """The exception queue (ExceptionService; the ledger must be on): answers are the messages of
    ``tollgate.api.v1.exceptions_pb2``. Filters are keywords of ExceptionFilter: code, rule_id, project_id,
    customer_id, worker_id, since (ISO date or RFC 3339), status (open, resolved, waived)."""

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 60.0,
                 security: ChannelSecurity | None = None) -> None:
        super().__init__(target, timeout, security)
        self._stub = exceptions_pb2_grpc.ExceptionServiceStub(self._channel)

    def list(self, *, page_size: int = 0, page_token: str = "",
             **filters: str) -> exceptions_pb2.ListExceptionsResponse:
        response: exceptions_pb2.ListExceptionsResponse = self._stub.List(exceptions_pb2.ListExceptionsRequest(
            filter=exceptions_pb2.ExceptionFilter(**filters), page_size=page_size, page_token=page_token),
            timeout=self.timeout)
        return response

    def list_all(self, *, page_size: int = 0, **filters: str) -> Iterator[exceptions_pb2.ItemException]:
        """Every exception matching ``filters``, page after page."""
        token = ""
        while True:
            page = self.list(page_size=page_size, page_token=token, **filters)
            yield from page.exceptions
            if not page.next_page_token:
                return
            token = page.next_page_token

    def get(self, exception_id: str) -> exceptions_pb2.ItemException:
        response: exceptions_pb2.ItemException = self._stub.Get(
            exceptions_pb2.GetExceptionRequest(exception_id=exception_id), timeout=self.timeout)
        return response

    def summary(self) -> exceptions_pb2.SummaryResponse:
        response: exceptions_pb2.SummaryResponse = self._stub.Summary(exceptions_pb2.SummaryRequest(),
                                                                      timeout=self.timeout)
        return response

    def waive(self, exception_id: str, reason: str) -> exceptions_pb2.ItemException:
        response: exceptions_pb2.ItemException = self._stub.Waive(
            exceptions_pb2.WaiveRequest(exception_id=exception_id, reason=reason), timeout=self.timeout)
        return response

    def revalidate(self, **filters: str) -> exceptions_pb2.RevalidateResponse:
        response: exceptions_pb2.RevalidateResponse = self._stub.Revalidate(
            exceptions_pb2.RevalidateRequest(filter=exceptions_pb2.ExceptionFilter(**filters)), timeout=self.timeout)
        return response
