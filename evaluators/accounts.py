"""Running totals held across calls: what a batch asks of the decision ledger's accounts, and what it adds.

An aggregate with ``account`` (rules/model.py AggregateSpec) starts each group's running total at its ``start``
plus what the account holds for the group: the amounts of the items the ledger accepted earlier, in other calls,
other chunks of a stream, other replicas. The engine asks once per aggregate for all the groups of the batch, and
notes what each item adds; the ledger (ledger/controls.py) files those additions for the items the batch accepts.
docs/controls.md gives the semantics.

Nothing here reads a database: ``PriorReader`` is whatever holds the accounts (the ledger, or a recorded batch's
priors when it is replayed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from tollgate.rules.decisions import Decision, Enrichment, Outcome, Reason
from tollgate.rules.model import Severity

_ZERO = Decimal(0)


# A key longer than this is kept as its sha256: a group of several long values (ids of 256 characters, each
# character up to 4 bytes) would otherwise pass the length a database index takes (PostgreSQL's b-tree: 2,704
# bytes), and one hostile item would fail its whole call.
MAX_KEY_CHARS = 256


def group_key(values: tuple[Any, ...]) -> str | None:
    """A group's values as the account's key (JSON text, or ``sha256:`` and its digest when long); None for a group
    of nothing but nulls, which is in no account (an entry with no contract line, or no source reference, is in no
    one's cap)."""
    if all(v is None or v == "" for v in values):
        return None
    text = json.dumps([None if v is None else format(v, "f") if isinstance(v, Decimal) else str(v) for v in values],
                      ensure_ascii=False, separators=(",", ":"))
    if len(text) <= MAX_KEY_CHARS:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class AccountsUnavailableError(Exception):
    """The accounts cannot be read now (the ledger's database is unreachable)."""


class PriorReader(Protocol):
    def prior(self, account: str, kind: str, keys: Collection[str], own: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        """What ``account`` holds for each of ``keys`` (absent: nothing), leaving out the items of ``kind`` in
        ``own`` (the batch's own items: deciding one again replaces what it consumed) and those of ``kind`` that
        ``released`` says the reference data counts already (billed by the ERP)."""
        ...

    def close(self) -> None:
        """Done reading: give back what reading held (a database connection)."""
        ...


@dataclass(frozen=True, slots=True)
class Entry:
    """What one item adds to one group of an account, should it be accepted."""

    account: str
    key: str
    item_id: str
    amount: Decimal


@dataclass(slots=True)
class Accounts:
    """One batch's dealings with the accounts: the priors it read (kept with the batch, for replay), the entries
    its items would add, and whether the accounts could be read at all."""

    reader: PriorReader
    kind: str
    own: frozenset[str] = frozenset()  # the batch's item ids
    priors: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # account -> key -> amount read
    entries: list[Entry] = field(default_factory=list)
    unavailable: bool = False  # the reader failed: the priors read as zero, and the items that add are held

    def prior(self, account: str, keys: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        """What the account holds for ``keys``, read once per key for the batch."""
        known = self.priors.setdefault(account, {})
        wanted = [key for key in keys if key not in known]
        if wanted and not self.unavailable:
            try:
                found = self.reader.prior(account, self.kind, wanted, self.own, released)
            except AccountsUnavailableError:
                self.unavailable = True
                found = {}
            for key in wanted:
                known[key] = found.get(key, _ZERO)
        elif wanted:
            known.update(dict.fromkeys(wanted, _ZERO))
        return known

    def add(self, account: str, key: str, item_id: str, amount: Decimal) -> None:
        if amount:
            self.entries.append(Entry(account, key, item_id, amount))

    def recorded_priors(self) -> dict[str, dict[str, str]]:
        """The non-zero priors read, as JSON values (what a replay of the batch must read again)."""
        recorded = {account: {key: format(amount, "f") for key, amount in sorted(keys.items()) if amount}
                    for account, keys in sorted(self.priors.items())}
        return {account: keys for account, keys in recorded.items() if keys}


class UnreadableAccounts:
    """The accounts while the ledger's database cannot be reached (its spool is taking the calls)."""

    def prior(self, account: str, kind: str, keys: Collection[str], own: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        raise AccountsUnavailableError("the ledger is spooling: its database cannot be reached")

    def close(self) -> None:
        """Nothing held."""


@dataclass(frozen=True, slots=True)
class RecordedPriors:
    """The priors a recorded batch read, for deciding it again exactly (a replay)."""

    priors: Mapping[str, Mapping[str, str]]

    def prior(self, account: str, kind: str, keys: Collection[str], own: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        held = self.priors.get(account, {})
        return {key: Decimal(held[key]) for key in keys if key in held}

    def close(self) -> None:
        """Nothing held."""


# The rule a hold for unreadable accounts names: not a ruleset's, the engine's own.
CONTROLS_RULE = "ledger.controls"
CONTROLS_UNAVAILABLE = "CONTROLS_UNAVAILABLE"


def hold_unsettled(decisions: Sequence[Decision], accounts: Accounts) -> list[Decision]:
    """When the accounts could not be read, the items that would add to one are held (bill_status HOLD, with a
    warning) and add nothing: what other calls accepted against the same caps is unknown, so accepting them could
    bill past a cap or bill a source twice. The others stand as decided."""
    adding: dict[str, set[str]] = {}
    for entry in accounts.entries:
        adding.setdefault(entry.item_id, set()).add(entry.account)
    held = []
    for decision in decisions:
        names = adding.get(decision.item_id)
        if names is None or decision.outcome is Outcome.REJECT:
            held.append(decision)
            continue
        reason = Reason(CONTROLS_RULE, CONTROLS_UNAVAILABLE,
                        f"Held for billing: the decision ledger cannot be read now, so what other calls accepted "
                        f"against {', '.join(sorted(names))} is not known; revalidate the item once it is back "
                        "(tollgate exceptions revalidate).", Severity.WARNING, "bill_status")
        enrichments = tuple(e for e in decision.enrichments if e.field != "bill_status")
        previous = next((e.old_value for e in decision.enrichments if e.field == "bill_status"), None)
        held.append(decision._replace(
            outcome=Outcome.ENRICH, reasons=(*decision.reasons, reason),
            enrichments=(*enrichments, Enrichment("bill_status", previous, "HOLD", CONTROLS_RULE))))
    accounts.entries.clear()  # a held item consumes nothing
    return held
