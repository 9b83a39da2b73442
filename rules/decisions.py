"""What a decision carries (PRODUCT.md §5): outcome, reasons, enrichments and provenance."""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tollgate.rules.model import Severity

# gRPC metadata key carrying the caller's correlation id, echoed back and named in provenance.
CORRELATION_METADATA_KEY = "x-correlation-id"
# gRPC metadata key naming the reference snapshot a validation call is to be decided with (a replay).
SNAPSHOT_METADATA_KEY = "x-tollgate-snapshot"
# A validation request's request_id (AIP-155): the server refuses any other, the client checks before sending.
REQUEST_ID_LENGTH = 128
REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{REQUEST_ID_LENGTH}}}")
REQUEST_ID_RULE = f"at most {REQUEST_ID_LENGTH} printable ASCII characters, no spaces"


class Outcome(enum.StrEnum):
    ACCEPT = "accept"
    ENRICH = "enrich"  # accepted, with fields filled or corrected
    REJECT = "reject"


# Reasons, enrichments and decisions are named tuples: millions are made at month-end, and a named
# tuple is built three times faster than a frozen dataclass. The hot paths (the generated rule functions,
# the evaluator) build them with ``new_record(Reason, (every field, in order))``: the class's own __new__
# is a Python function taking keywords, and costs about twice as much.
new_record = tuple.__new__


class Reason(NamedTuple):
    rule_id: str
    code: str
    message: str
    severity: Severity
    field: str | None = None
    ruleset_id: str | None = None


class Enrichment(NamedTuple):
    field: str
    old_value: str | None
    new_value: str | None
    rule_id: str


@dataclass(frozen=True, slots=True)
class RulesetRef:
    id: str
    version: str


@dataclass(frozen=True, slots=True)
class Provenance:
    rulesets: tuple[RulesetRef, ...]
    snapshot_id: str
    engine_version: str
    correlation_id: str = ""


class Decision(NamedTuple):
    item_id: str
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    enrichments: tuple[Enrichment, ...] = ()
    provenance: Provenance | None = None
    # The ruleset versions that judged this item, in the order they ran, when several versions of a ruleset
    # are loaded (each item is judged by the version in force on its business date); else empty.
    rulesets: tuple[RulesetRef, ...] = ()

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]


@dataclass(frozen=True, slots=True)
class BatchSummary:
    total: int
    accepted: int
    enriched: int
    rejected: int
    by_reason_code: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, decisions: Sequence[Decision]) -> BatchSummary:
        # Counted from lists in one C pass each: per decision, a Counter's += and update() are Python calls.
        outcomes = Counter([decision.outcome for decision in decisions])
        codes = Counter([reason.code for decision in decisions for reason in decision.reasons])
        return cls(
            total=len(decisions),
            accepted=outcomes[Outcome.ACCEPT],
            enriched=outcomes[Outcome.ENRICH],
            rejected=outcomes[Outcome.REJECT],
            by_reason_code=dict(sorted(codes.items())),
        )


class Acceptance(enum.StrEnum):
    PARTIAL = "partial"  # each line on its own
    ALL_OR_NOTHING = "all_or_nothing"  # one rejected line rejects its whole group (timesheet)


class Rollup(NamedTuple):
    """The decisions of one group of lines (a timesheet) taken together (a named tuple: one per group)."""

    group_id: str
    outcome: Outcome
    total: int
    accepted: int
    enriched: int
    rejected: int
    rejected_items: tuple[str, ...]  # rejected on their own account (not only because of the group)

