"""Checks across a batch (rulesets/time_entry/05-batch-checks.yaml): the same answer in any order."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from benchmarks.data import generate_firm
from tests.conftest import ROOT
from tollgate.clients.client import ValidationClient
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.batch import ITEMS_NAMED, batch_figures
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import load_snapshot
from tollgate.rules.decisions import Decision, Outcome
from tollgate.rules.fields import date_value
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.rules.typecheck import compile_ruleset
from tollgate.server.app import start
from tollgate.server.settings import Settings

BATCH_CHECKS = ROOT / "rulesets" / "time_entry" / "05-batch-checks.yaml"


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    snapshot = load_snapshot(ROOT / "examples" / "refdata")
    return Evaluator(TIME_ENTRY, load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name),
                     SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id, ENGINE_VERSION)


def _entry(entry_id: str, **values: Any) -> dict[str, Any]:
    entry = {"entry_id": entry_id, "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
             "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT",
             "submitted_at": "2026-11-07T17:00:00Z"}
    return {**entry, **values}


def _by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.item_id: d for d in decisions}


def test_the_entry_that_overfills_a_day_is_rejected_whatever_the_order(evaluator: Evaluator) -> None:
    day = [_entry("D-1", source_ref="a"), _entry("D-2", task_id="T-3", source_ref="b"),
           _entry("D-3", hours="10", source_ref="c")]
    decisions = _by_id(evaluator.evaluate(day))
    assert decisions == _by_id(evaluator.evaluate(list(reversed(day))))
    assert decisions["D-3"].codes == ["DAILY_HOURS_EXCEEDED"]
    assert "D-1, D-2, D-3" in decisions["D-3"].reasons[0].message
    assert decisions["D-1"].outcome is not Outcome.REJECT and decisions["D-2"].outcome is not Outcome.REJECT


def test_a_repeated_source_reference_keeps_the_first(evaluator: Evaluator) -> None:
    twice = [_entry("R-2", source_system="PSA", source_ref="psa:9", hours="2"),
             _entry("R-1", source_system="PSA", source_ref="psa:9", hours="3")]
    decisions = _by_id(evaluator.evaluate(twice))
    assert decisions["R-1"].outcome is not Outcome.REJECT  # first by work date, then id
    assert decisions["R-2"].codes == ["DUPLICATE_SOURCE_REF"]


def test_a_generated_month_is_decided_the_same_in_any_order(tmp_path: Path) -> None:
    firm = generate_firm(people=200, seed=3)
    firm.write(tmp_path)
    snapshot = load_snapshot(tmp_path)
    evaluator = Evaluator(TIME_ENTRY, load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name),
                          SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id, ENGINE_VERSION)
    entries = firm.entries(3_000, seed=4)
    shuffled = list(entries)
    random.Random(5).shuffle(shuffled)
    assert _by_id(evaluator.evaluate(entries)) == _by_id(evaluator.evaluate(shuffled))


def test_a_group_names_its_first_items_and_counts_the_rest() -> None:
    day = date_value(dt.date(2026, 11, 3))
    values = [{"entry_id": f"E-{n:02d}", "worker_id": "W-1", "work_date": day, "hours": Decimal(1)}
              for n in range(ITEMS_NAMED + 3)]
    weekly = [a for a in compile_ruleset(BATCH_CHECKS).aggregates if a.name == "weekly_hours"]
    rejected_earlier = {**values[0], "entry_id": "E-99"}
    figures = batch_figures(TIME_ENTRY, weekly, [*values, rejected_earlier], [True] * len(values) + [False])
    assert figures[0]["weekly_hours"] == ITEMS_NAMED + 3
    assert figures[0]["weekly_hours_items"][-1] == "and 3 more"
    assert len(figures[0]["weekly_hours_items"]) == ITEMS_NAMED + 1
    # An item rejected by an earlier ruleset takes no part, but sees what it would have made the total.
    assert figures[-1]["weekly_hours"] == ITEMS_NAMED + 4
    assert "E-99" not in figures[-1]["weekly_hours_items"]


def test_ten_thousand_mixed_entries_are_decided_in_one_call(tmp_path: Path) -> None:
    firm = generate_firm(people=400, seed=8)
    firm.write(tmp_path)
    entries = firm.entries(10_000, seed=9)
    # Overtime, a repeated source record and an overfull day, besides what the generator mixes in.
    entries += [
        {**entries[0], "entry_id": "X-OT", "time_type": "OT", "hours": "2"},
        {**entries[1], "entry_id": "X-DUP"},
        {**entries[2], "entry_id": "X-LONG", "hours": "23", "source_ref": "psa:x-long"},
    ]
    running = start(Settings(port=0, threads=2, refdata=tmp_path, log_level="warning"))
    try:
        with ValidationClient(f"127.0.0.1:{running.port}", chunk_size=20_000, timeout=120) as client:
            result = client.validate_time_entries(entries)
    finally:
        running.stop()
    assert len(result.decisions) == len(entries)
    assert [d.item_id for d in result.decisions] == [e["entry_id"] for e in entries]
    codes = result.summary.by_reason_code
    assert {"DUPLICATE_SOURCE_REF", "DAILY_HOURS_EXCEEDED", "OVERTIME_RETYPED", "NOT_TO_EXCEED_LIMIT",
            "NOT_TO_EXCEED_REACHED"} <= set(codes)
    assert "RULE_EVALUATION_ERROR" not in codes
    assert result.summary.accepted + result.summary.enriched + result.summary.rejected == len(entries)


def test_an_item_whose_share_of_a_figure_fails_costs_only_itself(evaluator: Evaluator) -> None:
    # A value the wire grammar would refuse, put straight into a decoded item (as a bug or a future field might):
    # its share of every figure fails (a signalling NaN takes part in no arithmetic); it alone is rejected,
    # naming the figure, and the others are decided as if it were not there.
    from tollgate.evaluators.items import DecodedItem

    decode = evaluator.decoder.decode
    items = [decode(_entry(f"OK-{n}", hours="4", source_ref=f"s{n}"), n) for n in range(3)]
    poisoned = decode(_entry("HUGE", source_ref="h"), 9)
    items.insert(1, DecodedItem("HUGE", {**poisoned.values, "hours": Decimal("sNaN")}, []))
    decisions = _by_id(evaluator.decide_batch(items))
    huge = decisions["HUGE"]
    assert huge.outcome is Outcome.REJECT
    assert "aggregate:daily_hours_so_far" in {r.rule_id for r in huge.reasons if r.code == "RULE_EVALUATION_ERROR"}
    for n in range(3):
        ok = decisions[f"OK-{n}"]
        assert ok.outcome is not Outcome.REJECT, ok.reasons
    # 12 hours on the day without the poisoned one: not over 24, so no one else is rejected for the day
    assert "DAILY_HOURS_EXCEEDED" not in {code for d in decisions.values() for code in d.codes}
    assert "POSSIBLE_DUPLICATE" in decisions["OK-0"].codes  # the three alike; the poisoned one not counted


def test_a_figure_that_cannot_be_summed_leaves_the_others_whole() -> None:
    from tollgate.rules.typecheck import rules_decimal_context

    day = date_value(dt.date(2026, 11, 3))
    values = [{"entry_id": f"E-{n}", "worker_id": "W-1", "work_date": day, "hours": Decimal(2)} for n in range(4)]
    values[2] = {**values[2], "hours": Decimal("sNaN")}
    values.append({**values[2], "entry_id": "E-9"})
    aggregates = [a for a in compile_ruleset(BATCH_CHECKS).aggregates
                  if a.name in ("weekly_hours", "daily_hours_so_far")]
    failures: dict[int, tuple[str, Exception]] = {}
    with rules_decimal_context():
        figures = batch_figures(TIME_ENTRY, aggregates, values, [True] * len(values), failures)
    assert set(failures) == {2, 4}
    assert failures[2][0] in {"daily_hours_so_far", "weekly_hours"}
    assert [f["weekly_hours"] for f in figures] == [6, 6, 0, 6, 0]  # the others summed without them
    assert [f["daily_hours_so_far"] for f in figures] == [2, 4, 0, 6, 0]
