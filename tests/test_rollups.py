"""Timesheets taken whole: roll-ups, all-or-nothing acceptance, and chunks that keep a timesheet together."""

from __future__ import annotations

import pytest

from tollgate.api.v1 import validation_pb2 as pb
from tollgate.clients.client import ValidationClient, chunks_by_group
from tollgate.evaluators.rollups import GROUP_REJECTED, roll_up
from tollgate.rules.decisions import Acceptance, Decision, Enrichment, Outcome, Reason
from tollgate.rules.model import Severity

REJECTED = Decision("L-2", Outcome.REJECT, (Reason("BE-2", "TASK_NOT_CHARGEABLE", "summary task", Severity.ERROR),))
ENRICHED = Decision(
    "L-1", Outcome.ENRICH,
    (Reason("LC-6", "OVERTIME_RETYPED", "OT recorded as REG", Severity.WARNING),
     Reason("RC-8", "ENTERED_RATE_DIFFERS", "rate differs", Severity.WARNING)),
    (Enrichment("time_type", "OT", "REG", "LC-6"),),
)
ACCEPTED = Decision("L-3", Outcome.ACCEPT)
ALONE = Decision("L-4", Outcome.ACCEPT)


def test_partial_acceptance_leaves_lines_alone_and_rolls_them_up() -> None:
    decisions, rollups = roll_up([ENRICHED, REJECTED, ACCEPTED, ALONE], ["TS-1", "TS-1", "TS-1", ""],
                                 Acceptance.PARTIAL)
    assert decisions == [ENRICHED, REJECTED, ACCEPTED, ALONE]
    [rollup] = rollups  # a line without a timesheet has no roll-up
    assert (rollup.group_id, rollup.outcome, rollup.total, rollup.accepted, rollup.enriched, rollup.rejected) == (
        "TS-1", Outcome.REJECT, 3, 1, 1, 1)
    assert rollup.rejected_items == ("L-2",)


def test_all_or_nothing_rejects_the_other_lines_saying_why() -> None:
    decisions, [rollup] = roll_up([ENRICHED, REJECTED, ACCEPTED, ALONE], ["TS-1", "TS-1", "TS-1", ""],
                                  Acceptance.ALL_OR_NOTHING)
    enriched, rejected, accepted, alone = decisions
    assert rejected == REJECTED and alone == ALONE  # its own reasons; a line without a timesheet stands alone
    for line in (enriched, accepted):
        assert line.outcome is Outcome.REJECT
        assert line.codes[0] == GROUP_REJECTED
        assert "L-2 (TASK_NOT_CHARGEABLE)" in line.reasons[0].message
        assert line.enrichments == ()
    # The enrich rule's reason went with its enrichment; the warning of a rule that changed nothing stays.
    assert enriched.codes == [GROUP_REJECTED, "ENTERED_RATE_DIFFERS"]
    assert (rollup.outcome, rollup.rejected, rollup.rejected_items) == (Outcome.REJECT, 3, ("L-2",))


def test_all_or_nothing_keeps_a_clean_timesheet_as_it_is() -> None:
    decisions, [rollup] = roll_up([ENRICHED, ACCEPTED], ["TS-2", "TS-2"], Acceptance.ALL_OR_NOTHING)
    assert decisions == [ENRICHED, ACCEPTED]
    assert (rollup.outcome, rollup.accepted, rollup.enriched) == (Outcome.ENRICH, 1, 1)


@pytest.mark.parametrize("acceptance", list(Acceptance))
@pytest.mark.parametrize(("line", "counts", "rejected_items"), [
    (ACCEPTED, (1, 0, 0), ()),
    (ENRICHED, (0, 1, 0), ()),
    (REJECTED, (0, 0, 1), ("L-2",)),
])
def test_a_line_alone_in_its_timesheet_stands_as_it_is(
    acceptance: Acceptance, line: Decision, counts: tuple[int, int, int], rejected_items: tuple[str, ...],
) -> None:
    decisions, [rollup, _other] = roll_up([line, ACCEPTED], ["TS-9", "TS-10"], acceptance)
    assert decisions[0] is line
    assert (rollup.group_id, rollup.outcome, rollup.total) == ("TS-9", line.outcome, 1)
    assert (rollup.accepted, rollup.enriched, rollup.rejected) == counts
    assert rollup.rejected_items == rejected_items


def _lines(*timesheets: str) -> list[pb.TimeEntry]:
    return [pb.TimeEntry(entry_id=f"E-{n}", timesheet_id=t) for n, t in enumerate(timesheets)]


@pytest.mark.parametrize(("timesheets", "size", "chunks"), [
    (["A", "A", "B", "B", "B"], 4, [["A", "A"], ["B", "B", "B"]]),  # B would not fit: it starts a new chunk
    (["A", "A", "A", "A", "A"], 2, [["A", "A", "A", "A", "A"]]),  # a long timesheet goes whole
    (["", "", "", "", ""], 2, [["", ""], ["", ""], [""]]),  # lines without a timesheet are split freely
    (["A", "", "B", "B"], 3, [["A", ""], ["B", "B"]]),
])
def test_chunks_never_split_a_timesheet(timesheets: list[str], size: int, chunks: list[list[str]]) -> None:
    chunked = chunks_by_group(_lines(*timesheets), size, "timesheet_id")
    assert [[m.timesheet_id for m in chunk] for chunk in chunked] == chunks


def test_all_or_nothing_over_grpc_through_the_client(client: ValidationClient) -> None:
    base = {"worker_id": "W-1", "project_id": "P-100", "labor_category": "SENIOR_CONSULTANT",
            "submitted_at": "2026-11-07T17:00:00Z", "hours": "8"}
    sheet = [
        {**base, "entry_id": "AON-1", "timesheet_id": "TS-AON", "task_id": "T-1", "work_date": "2026-11-03"},
        {**base, "entry_id": "AON-2", "timesheet_id": "TS-AON", "task_id": "T-0", "work_date": "2026-11-04"},
        {**base, "entry_id": "OK-1", "timesheet_id": "TS-OK", "task_id": "T-1", "work_date": "2026-11-05"},
    ]
    partial = client.validate_time_entries(sheet)
    assert [d.outcome for d in partial.decisions] == [Outcome.ENRICH, Outcome.REJECT, Outcome.ENRICH]
    whole = client.validate_time_entries(sheet, all_or_nothing=True)
    assert [d.outcome for d in whole.decisions] == [Outcome.REJECT, Outcome.REJECT, Outcome.ENRICH]
    assert whole.decisions[0].codes == [GROUP_REJECTED]
    assert [(r.group_id, r.outcome, r.rejected_items) for r in whole.rollups] == [
        ("TS-AON", Outcome.REJECT, ("AON-2",)), ("TS-OK", Outcome.ENRICH, ())]
