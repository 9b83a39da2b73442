"""Recording one call in one transaction: its request id, what it consumed of the accounts (ledger/controls.py), its
batch row, a decision row per item, and the sources of its rulesets.

A call is answered only once this has committed. When the database cannot be written, the call fails
(server/validation_service.py: UNAVAILABLE, ErrorInfo LEDGER_UNAVAILABLE): nothing is answered unrecorded.
A spool that keeps decisions through an outage is a later slice; so is group commit across concurrent
calls (each call commits its own transaction here, in the deciding thread that decided it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from tollgate.evaluators.accounts import Accounts
from tollgate.ledger.controls import LedgerPriors, LockedPriors, Stale, lock, settle
from tollgate.ledger.exceptions import update_exceptions
from tollgate.ledger.schema import batches, decisions, requests, ruleset_sources
from tollgate.ledger.store import insert_ignoring_duplicates
from tollgate.rules.decisions import Acceptance, Decision, Outcome
from tollgate.rules.typecheck import CompiledRuleset


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    request_id: str
    correlation_id: str
    caller: str
    received_at: datetime
    answered_at: datetime
    item_kind: str
    rulesets: tuple[CompiledRuleset, ...]  # with their file's text and digest, taken at load
    snapshot_id: str
    engine_version: str
    acceptance: Acceptance


def wire_fields(message: Any) -> dict[str, Any]:
    """A protobuf item's fields as received (those set), as JSON values: maps as objects, repeated as lists."""
    fields: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        if hasattr(value, "keys"):  # a map
            fields[descriptor.name] = dict(value)
        elif hasattr(value, "extend"):  # repeated
            fields[descriptor.name] = [wire_fields(v) if hasattr(v, "ListFields") else v for v in value]
        else:
            fields[descriptor.name] = value
    return fields


def reason_records(decision: Decision) -> list[dict[str, Any]]:
    """The decision's reasons as the ledger keeps them (JSON objects); a replay compares its own with these."""
    return [{"rule_id": r.rule_id, "code": r.code, "severity": r.severity.value, "field": r.field,
             "message": r.message, "ruleset_id": r.ruleset_id} for r in decision.reasons]


def enrichment_records(decision: Decision) -> list[dict[str, Any]]:
    return [{"field": e.field, "old_value": e.old_value, "new_value": e.new_value, "rule_id": e.rule_id}
            for e in decision.enrichments]


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A request id as the caller gave it (AIP-155), and what its payload hashes to."""

    caller: str
    request_id: str
    payload_digest: str  # sha256 of the method and the request's bytes, hex


class RequestIdReusedError(Exception):
    """The request id was recorded with another payload."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(batch_id)
        self.batch_id = batch_id


class RequestRecordedError(Exception):
    """The request was recorded already (a retry): its response, as answered then."""

    def __init__(self, response: bytes) -> None:
        super().__init__("recorded")
        self.response = response


@dataclass(frozen=True, slots=True)
class Decided:
    """A call's decisions, its response (with the batch id set), and what it read of the accounts."""

    decisions: Sequence[Decision]
    response: Any  # a ValidationResponse
    accounts: Accounts | None


Redecide = Callable[[Accounts], Decided]


class Recorder:
    """Writes calls to the ledger's database. Thread-safe: each call takes a connection of its own."""

    def __init__(self, engine: Engine, request_window: timedelta = timedelta(hours=24)) -> None:
        self.engine = engine
        self.request_window = request_window  # how long a request id is remembered
        self._stored: set[str] = set()  # digests known to be in ruleset_sources

    def accounts_reader(self) -> LedgerPriors:
        """A reader of the accounts for one batch (it remembers the versions it read)."""
        return LedgerPriors(self.engine)

    def recorded_response(self, request: RequestKey, connection: Connection | None = None) -> bytes | None:
        """The response recorded for the request within the window; None if there is none. A recorded id with
        another payload raises RequestIdReusedError."""
        query = (select(requests.c.payload_digest, requests.c.batch_id, requests.c.response)
                 .where(requests.c.caller == request.caller, requests.c.request_id == request.request_id,
                        requests.c.recorded_at >= datetime.now(UTC) - self.request_window))
        if connection is None:
            with self.engine.connect().execution_options(ledger_read=True) as reading:
                row = reading.execute(query).first()
        else:
            row = connection.execute(query).first()
        if row is None:
            return None
        if row.payload_digest != request.payload_digest:
            raise RequestIdReusedError(row.batch_id)
        return bytes(row.response)

    def record(self, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None, decided: Decided, *,
               redecide: Redecide | None = None, request: RequestKey | None = None) -> Decided:
        """One transaction: the request (if it has an id), the consumption of the accounts, the batch, its
        decisions, the ruleset sources not yet stored. What was recorded: ``decided``, or, when another call
        settled on the same caps after this one read them, the batch decided again under their locks by
        ``redecide``. A retry of a recorded request raises RequestRecordedError with the recorded response."""
        kind = batch.item_kind
        with self.engine.begin() as connection:
            if request is not None:
                recorded = self.recorded_response(request, connection)
                if recorded is not None:
                    raise RequestRecordedError(recorded)
            accounts = decided.accounts
            if accounts is not None:
                read = accounts.reader.versions if isinstance(accounts.reader, LedgerPriors) else None
                try:
                    self._settle(connection, kind, batch.batch_id, decided, read)
                except Stale:
                    locked = LockedPriors(connection)
                    lock(connection, ((account, key) for account, keys in accounts.priors.items() for key in keys))
                    assert redecide is not None, "a batch that read the accounts can be decided again"
                    decided = redecide(Accounts(locked, kind))
                    self._settle(connection, kind, batch.batch_id, decided, None)
            self._write(connection, batch, items, headers, decided)
            if request is not None:
                # the id's row from before the window, if any, makes way; a row within it stays and makes this
                # insert fail (IntegrityError): a concurrent attempt of the same request recorded it first
                connection.execute(delete(requests).where(
                    requests.c.caller == request.caller, requests.c.request_id == request.request_id,
                    requests.c.recorded_at < datetime.now(UTC) - self.request_window))
                connection.execute(insert(requests), [{
                    "caller": request.caller, "request_id": request.request_id,
                    "payload_digest": request.payload_digest, "batch_id": batch.batch_id,
                    "response": decided.response.SerializeToString(), "recorded_at": batch.answered_at}])
        return decided

    @staticmethod
    def _settle(connection: Connection, kind: str, batch_id: str, decided: Decided,
                versions_read: Mapping[tuple[str, str], int] | None) -> None:
        """The accounts' consumption of the items accepted (an item's first entry per group counts once)."""
        accounts = decided.accounts
        assert accounts is not None
        accepted = {d.item_id for d in decided.decisions if d.outcome is not Outcome.REJECT}
        entries = list({(e.account, e.key, e.item_id): e for e in reversed(accounts.entries)
                        if e.item_id in accepted}.values())
        settle(connection, kind=kind, batch_id=batch_id, own=accounts.own, entries=entries,
               versions_read=versions_read)

    def _write(self, connection: Connection, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None,
               decided: Decided) -> None:
        """The batch, its decisions (one multi-row insert), the ruleset sources not yet stored, and the
        exception queue brought up to date (ledger/exceptions.py)."""
        counts = {"accept": 0, "enrich": 0, "reject": 0}
        rows = []
        kind = batch.item_kind
        for position, (item, decision) in enumerate(zip(items, decided.decisions, strict=True)):
            counts[decision.outcome.value] += 1
            fields = wire_fields(item)
            if headers is not None:  # an invoice line: the invoice's header fields it carries, without its lines
                header = wire_fields(headers[position])
                header.pop("lines", None)
                fields["invoice"] = header
            rows.append({"batch_id": batch.batch_id, "position": position, "item_kind": kind,
                         "item_id": decision.item_id, "input": json.dumps(fields, ensure_ascii=False),
                         "outcome": decision.outcome.value,
                         "reasons": json.dumps(reason_records(decision), ensure_ascii=False),
                         "enrichments": json.dumps(enrichment_records(decision), ensure_ascii=False)})
        priors = decided.accounts.recorded_priors() if decided.accounts is not None else {}
        batch_row = {
            "batch_id": batch.batch_id, "request_id": batch.request_id, "correlation_id": batch.correlation_id,
            "caller": batch.caller, "received_at": batch.received_at, "answered_at": batch.answered_at,
            "item_kind": kind, "snapshot_id": batch.snapshot_id, "engine_version": batch.engine_version,
            "rulesets": json.dumps([{"id": s.id, "version": s.version, "digest": s.digest}
                                    for s in batch.rulesets], ensure_ascii=False),
            "total": len(rows), "accepted": counts["accept"], "enriched": counts["enrich"],
            "rejected": counts["reject"], "acceptance": batch.acceptance.value,
            "priors": json.dumps(priors, ensure_ascii=False) if priors else None,
        }
        missing = {s.digest: s for s in batch.rulesets if s.digest not in self._stored}
        if missing:
            present = set(connection.execute(select(ruleset_sources.c.digest).where(
                ruleset_sources.c.digest.in_(missing))).scalars())
            new = [{"digest": s.digest, "ruleset_id": s.id, "version": s.version, "path": s.path,
                    "source": s.text} for d, s in missing.items() if d not in present]
            if new:
                connection.execute(insert_ignoring_duplicates(ruleset_sources, connection.dialect.name), new)
        connection.execute(insert(batches), [batch_row])
        if rows:
            connection.execute(insert(decisions), rows)  # executemany: multi-row INSERTs (insertmanyvalues)
        update_exceptions(connection, batch.batch_id, kind, batch.answered_at, rows)
        # known stored once this commits; noting it before is harmless: a rollback leaves a digest another call
        # stores again only if it is not there (the check above reads the database when unsure)
        self._stored.update(missing)


def open_recorder(database_url: str | None, data_dir: Path, request_window: timedelta = timedelta(hours=24)
                  ) -> Recorder:
    """The ledger of settings ``database_url`` / ``data_dir``: connected, migrated (ProblemsError otherwise)."""
    from tollgate.ledger.store import database_url as resolve
    from tollgate.ledger.store import open_database

    return Recorder(open_database(resolve(database_url, data_dir)), request_window)
