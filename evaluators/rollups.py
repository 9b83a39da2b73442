"""Groups of lines taken whole (timesheets, expense reports, invoices): roll-ups of their lines' decisions,
and all-or-nothing acceptance.

The PSA approval flow asks either for each line on its own (partial acceptance) or for a timesheet
to pass or fail as one (all or nothing). With all or nothing, a timesheet with a rejected line has
every other line rejected too, each saying which lines failed and why, so a person can act on it.
Lines with no group id (no timesheet) stand alone either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tollgate.rules.decisions import Acceptance, Decision, Outcome, Reason, Rollup, new_record
from tollgate.rules.item_kinds import ItemKind
from tollgate.rules.model import Severity

GROUP_RULE = "GROUP"
GROUP_REJECTED = "GROUP_REJECTED"


def _group_reason(group_name: str, group_id: str, rejected: Sequence[Decision]) -> Reason:
    causes = "; ".join(f"{d.item_id} ({', '.join(dict.fromkeys(d.codes))})" for d in rejected)
    return Reason(
        GROUP_RULE, GROUP_REJECTED,
        f"{group_name} {group_id} is accepted or rejected as a whole, and these lines were rejected: {causes}; "
        f"correct them and resubmit the {group_name}",
        Severity.ERROR,
    )


_ACCEPT, _ENRICH, _REJECT = Outcome.ACCEPT, Outcome.ENRICH, Outcome.REJECT  # read once: enum members cost per read


def _rollup(group_id: str, decisions: Sequence[Decision], rejected_items: tuple[str, ...]) -> Rollup:
    outcomes = [d.outcome for d in decisions]
    rejected = outcomes.count(_REJECT)
    enriched = outcomes.count(_ENRICH)
    outcome = _REJECT if rejected else _ENRICH if enriched else _ACCEPT
    return new_record(Rollup, (group_id, outcome, len(outcomes), outcomes.count(_ACCEPT), enriched, rejected,
                               rejected_items))


def _lone_rollup(group_id: str, decision: Decision) -> Rollup:
    """The roll-up of a group of one line, as _rollup works it out, without the counting."""
    outcome = decision.outcome
    if outcome is _REJECT:
        return new_record(Rollup, (group_id, outcome, 1, 0, 0, 1, (decision.item_id,)))
    return new_record(Rollup, (group_id, outcome, 1, int(outcome is _ACCEPT), int(outcome is _ENRICH), 0, ()))


def group_ids(kind: ItemKind, lines: Sequence[Any], headers: Sequence[Any] | None) -> list[str]:
    """Each line's group id (its timesheet, expense report; an invoice line's from its invoice header)."""
    field = kind.group_field
    return [getattr(h, field) for h in headers] if headers is not None else [getattr(line, field) for line in lines]


def roll_up(decisions: Sequence[Decision], group_ids: Sequence[str], acceptance: Acceptance,
            group_name: str = "timesheet") -> tuple[list[Decision], list[Rollup]]:
    """Decisions (changed only for all or nothing) and one roll-up per group, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for position, group_id in enumerate(group_ids):
        if group_id:
            members = groups.get(group_id)
            if members is None:
                groups[group_id] = [position]
            else:
                members.append(position)
    decided = list(decisions)
    all_or_nothing = acceptance is Acceptance.ALL_OR_NOTHING
    rollups = []
    for group_id, positions in groups.items():
        if len(positions) == 1:
            # A line alone in its group (most, in batches of scattered lines) stands as it is, whatever the
            # acceptance: all or nothing changes only the other lines of a group.
            rollups.append(_lone_rollup(group_id, decided[positions[0]]))
            continue
        own = [decided[p] for p in positions if decided[p].outcome is _REJECT]
        if own and all_or_nothing:
            reason = _group_reason(group_name, group_id, own)
            for p in positions:
                line = decided[p]
                if line.outcome is not _REJECT:
                    # Rejected, so not enriched: the enrich rules' reasons no longer apply (as in the engine).
                    enriched_by = {e.rule_id for e in line.enrichments}
                    kept = tuple(r for r in line.reasons if r.rule_id not in enriched_by)
                    decided[p] = line._replace(outcome=_REJECT, reasons=(reason, *kept), enrichments=())
        rollups.append(_rollup(group_id, [decided[p] for p in positions], tuple(d.item_id for d in own)))
    return decided, rollups
