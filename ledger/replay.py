"""Replaying a recorded batch: its inputs decided again by the rulesets and reference snapshot that decided them.

The rulesets are compiled again from their text on record (ruleset_sources, by digest), never from the files
on disk now, which may have changed since; compiled ones are kept by digest, so replaying many batches of one
release compiles each file once. The snapshot comes from the snapshot store (a snapshot no longer kept cannot
be replayed: SnapshotNotFoundError). Each decision replayed is compared with the one on record: outcome,
reasons and enrichments, field by field.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from tollgate.api.v1 import validation_pb2 as pb
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.evaluators.rollups import group_ids, roll_up
from tollgate.ledger import reading
from tollgate.ledger.recorder import enrichment_records, reason_records
from tollgate.ledger.schema import ruleset_sources
from tollgate.refdata.snapshot import ReferenceSnapshot
from tollgate.rules.decisions import Acceptance, Decision
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, ITEM_KINDS, TIME_ENTRY, ItemKind
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset_text

_MESSAGES: Mapping[str, type[Any]] = {TIME_ENTRY.name: pb.TimeEntry, EXPENSE_LINE.name: pb.ExpenseLine,
                                      INVOICE_LINE.name: pb.InvoiceLine}


class NotOnRecordError(LookupError):
    """What a replay needs is not in the ledger: the batch, or the text of one of its rulesets."""


class UnreplayableError(ValueError):
    """The record cannot be decided again as it stands (an input or a ruleset text that does not read)."""


@dataclass(frozen=True, slots=True)
class Difference:
    position: int
    item_id: str
    differs: tuple[str, ...]  # of "item_id", "outcome", "reasons", "enrichments"
    recorded: dict[str, Any]  # outcome, reasons, enrichments as on record
    replayed: dict[str, Any]  # the same, as decided again


@dataclass(frozen=True, slots=True)
class ReplayResult:
    batch_id: str
    snapshot_id: str
    rulesets: list[dict[str, str]]
    items: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


class RecordedRulesets:
    """Rulesets compiled from the ledger's copies of their files, kept by digest. Thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._compiled: dict[str, CompiledRuleset] = {}
        self._lock = threading.Lock()

    def __call__(self, named: Sequence[Mapping[str, str]]) -> list[CompiledRuleset]:
        """The rulesets ``named`` ({"id", "version", "digest"}), in that order."""
        digests = [entry["digest"] for entry in named]
        with self._lock:
            missing = {d for d in digests if d not in self._compiled}
        if missing:
            with self.engine.connect() as connection:
                rows = list(connection.execute(select(ruleset_sources).where(ruleset_sources.c.digest.in_(missing))))
            compiled = {row.digest: self._compile(row) for row in rows}
            absent = sorted(missing - compiled.keys())
            if absent:
                raise NotOnRecordError(f"the text of ruleset(s) with sha256 {', '.join(d[:12] for d in absent)} is "
                                       "not on record (ruleset_sources), so the batch cannot be replayed")
            with self._lock:
                self._compiled.update(compiled)
        with self._lock:
            return [self._compiled[d] for d in digests]

    @staticmethod
    def _compile(row: Any) -> CompiledRuleset:
        name = f"{row.path} (on record, sha256 {row.digest[:12]})"
        try:
            ruleset = compile_ruleset_text(name, row.source)
        except Exception as error:  # ProblemsError, or whatever a text tampered with trips on: said, never raised on
            raise UnreplayableError(f"ruleset {row.ruleset_id}@{row.version}: its text on record does not compile: "
                                    f"{error}") from error
        if ruleset.digest != row.digest:
            raise UnreplayableError(f"ruleset {row.ruleset_id}@{row.version}: its text on record does not hash to "
                                    f"its digest {row.digest[:12]} (changed in the database)")
        return ruleset


def items_of(kind: ItemKind, inputs: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any] | None]:
    """The protobuf items (and, for invoice lines, each line's invoice) rebuilt from their recorded wire fields.

    Lines of one invoice share one header message, as they did when sent: a new invoice starts where the header
    changes, or where a line id comes again under the same header (the same invoice sent twice)."""
    message_class = _MESSAGES[kind.name]
    lines: list[Any] = []
    headers: list[Any] | None = [] if kind is INVOICE_LINE else None
    header_fields: Any = None
    header: Any = None
    seen: set[str] = set()
    for position, recorded in enumerate(inputs):
        fields = dict(recorded)
        invoice = fields.pop("invoice", {})
        try:
            # The constructor takes the recorded JSON as it is (maps as dicts, repeated as lists), three times faster
            # than json_format.ParseDict.
            lines.append(message_class(**fields))
            if headers is not None:
                line_id = str(fields.get(kind.id_field, ""))
                if header is None or invoice != header_fields or line_id in seen:
                    header, header_fields, seen = pb.Invoice(**invoice), invoice, set()
                seen.add(line_id)
                headers.append(header)
        except (ValueError, TypeError) as error:
            raise UnreplayableError(f"the input on record at position {position} is not a {kind.name}: "
                                    f"{error}") from None
    return lines, headers


def decide(evaluator: Evaluator, kind: ItemKind, lines: Sequence[Any], headers: Sequence[Any] | None,
           acceptance: Acceptance) -> list[Decision]:
    """The one place a replay decides: the evaluator, then all or nothing as the call asked.
    (What the batch consumed across calls, recorded with it, is to be handed to the evaluator here.)"""
    decided = evaluator.evaluate_messages(lines, headers)
    decisions, _rollups = roll_up(decided, group_ids(kind, lines, headers), acceptance, kind.group_name)
    return decisions


def _compare(position: int, recorded: Mapping[str, Any], replayed: Decision) -> Difference | None:
    again = {"outcome": replayed.outcome.value, "reasons": reason_records(replayed),
             "enrichments": enrichment_records(replayed)}
    was = {name: recorded[name] for name in again}
    differs = tuple(name for name in again if was[name] != again[name])
    if recorded["item_id"] != replayed.item_id:
        differs = ("item_id", *differs)
    if not differs:
        return None
    return Difference(position, recorded["item_id"], differs, was, again)


class Replayer:
    """Replays batches of ``engine``'s ledger with snapshots from ``snapshot_for`` (Runtime.generation_for)."""

    def __init__(self, engine: Engine, snapshot_for: Callable[[str], ReferenceSnapshot]) -> None:
        self.engine = engine
        self.snapshot_for = snapshot_for
        self.rulesets = RecordedRulesets(engine)

    def replay(self, batch_id: str) -> ReplayResult:
        """NotOnRecordError, UnreplayableError; SnapshotNotFoundError / StoreUnavailableError from the store."""
        recorded = reading.batch(self.engine, batch_id)
        if recorded is None:
            raise NotOnRecordError(f"no batch {batch_id} on record")
        kind = ITEM_KINDS.get(recorded["item_kind"])
        if kind is None:
            raise UnreplayableError(f"batch {batch_id} is of item kind {recorded['item_kind']!r}, "
                                    "which this server does not know")
        rulesets = self.rulesets(recorded["rulesets"])
        snapshot = self.snapshot_for(recorded["snapshot_id"])
        lines, headers = items_of(kind, [d["input"] for d in recorded["decisions"]])
        evaluator = Evaluator(kind, rulesets, SnapshotBinder(kind, snapshot), snapshot.snapshot_id,
                              recorded["engine_version"])
        # Batches recorded before the ledger kept the acceptance were answered line by line unless asked otherwise.
        acceptance = Acceptance(recorded["acceptance"] or Acceptance.PARTIAL)
        replayed = decide(evaluator, kind, lines, headers, acceptance)
        differences = [difference for position, (was, again) in enumerate(zip(recorded["decisions"], replayed,
                                                                               strict=True))
                       if (difference := _compare(position, was, again)) is not None]
        return ReplayResult(batch_id, snapshot.snapshot_id, recorded["rulesets"], len(replayed), differences)
