"""The evaluator over the shipped rulesets and the sample reference snapshot (examples/refdata)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import REFDATA_MISSING, RULE_ERROR, Evaluator
from tollgate.evaluators.items import SCHEMA_RULE
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.decisions import BatchSummary, Decision, Enrichment, Outcome, RulesetRef
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.rules.model import Severity
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset

ROOT = Path(__file__).resolve().parent.parent
RULESETS = ROOT / "rulesets"
REFDATA = ROOT / "examples" / "refdata"
ENGINE_VERSION = "test-engine"

BASE = {
    "entry_id": "TE-1",
    "worker_id": "W-1",
    "project_id": "P-100",
    "task_id": "T-1",
    "work_date": "2026-11-03",
    "hours": "8",
    "submitted_at": "2026-11-04T09:00:00Z",
}


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


@pytest.fixture(scope="module")
def shipped() -> tuple[CompiledRuleset, ...]:
    # The rulesets that decide each entry on its own; the batch checks are tested in tests/test_batch.py.
    return tuple(r for r in load_rulesets(RULESETS).for_kind("time_entry") if not r.spec.aggregates)


def make_evaluator(rulesets: Sequence[CompiledRuleset], snapshot: ReferenceSnapshot) -> Evaluator:
    return Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id, ENGINE_VERSION)


@pytest.fixture(scope="module")
def evaluator(shipped: tuple[CompiledRuleset, ...], snapshot: ReferenceSnapshot) -> Evaluator:
    return make_evaluator(shipped, snapshot)


def entry(**overrides: str) -> dict[str, str]:
    return {**BASE, **overrides}


def decide(evaluator: Evaluator, **overrides: str) -> Decision:
    [decision] = evaluator.evaluate([entry(**overrides)])
    return decision


def enriched(decision: Decision) -> dict[str, str | None]:
    """The final value of each enriched field."""
    return {e.field: e.new_value for e in decision.enrichments}


def ruleset_file(directory: Path, rules: str, *, name: str = "custom.yaml", ruleset: str = "custom",
                 order: int = 5, extra: str = "") -> Path:
    path = directory / name
    path.write_text(
        f"ruleset: {ruleset}\nversion: 2.3.4\neffective_from: 2026-01-01\napplies_to: time_entry\n"
        f"order: {order}\nowner: qa@example.com\n{extra}rules:\n{rules}",
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------------------------------
# Malformed items


def test_a_malformed_entry_is_rejected_with_a_reason_per_bad_field(evaluator: Evaluator) -> None:
    bad = {"worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "hours": "abc",
           "work_date": "2026-13-45", "colour": "red"}
    decisions = evaluator.evaluate([entry(entry_id="TE-A"), bad, entry(entry_id="TE-C")])
    assert [d.item_id for d in decisions] == ["TE-A", "(item 2)", "TE-C"]
    rejected = decisions[1]
    assert rejected.outcome is Outcome.REJECT
    assert rejected.enrichments == ()
    by_field = {r.field: r for r in rejected.reasons}
    assert set(by_field) == {"entry_id", "hours", "work_date", "colour"}
    assert by_field["entry_id"].code == "MISSING_FIELD"
    assert by_field["hours"].code == "INVALID_FIELD"
    assert "'abc'" in by_field["hours"].message
    assert by_field["work_date"].code == "INVALID_FIELD"
    assert "2026-13-45" in by_field["work_date"].message
    assert by_field["colour"].code == "UNKNOWN_FIELD"
    assert all(r.rule_id == SCHEMA_RULE and r.severity is Severity.ERROR for r in rejected.reasons)
    # The rest of the batch is decided normally.
    for decision in (decisions[0], decisions[2]):
        assert decision.outcome is Outcome.ENRICH
        assert enriched(decision)["bill_rate"] == "165.00"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [("billable", "perhaps", "INVALID_FIELD"), ("submitted_at", "2026-11-04T09:00:00", "INVALID_FIELD"),
     ("worker_id", "", "MISSING_FIELD"), ("hours", "NaN", "INVALID_FIELD"), ("work_date", "", "MISSING_FIELD")],
)
def test_each_malformed_field_is_named(evaluator: Evaluator, field: str, value: str, code: str) -> None:
    decision = decide(evaluator, **{field: value})
    assert decision.outcome is Outcome.REJECT
    assert [(r.field, r.code) for r in decision.reasons] == [(field, code)]


# ---------------------------------------------------------------------------------------------------
# Missing reference data


def test_unknown_project_rejects_and_names_the_snapshot(evaluator: Evaluator, snapshot: ReferenceSnapshot) -> None:
    decision = decide(evaluator, project_id="P-999")
    assert decision.outcome is Outcome.REJECT
    assert RULE_ERROR not in decision.codes
    project = next(r for r in decision.reasons if r.rule_id == "refdata:project")
    assert project.code == REFDATA_MISSING
    assert project.field == "project_id"
    assert "P-999" in project.message
    assert snapshot.snapshot_id in project.message
    assert "2026-11-03" in project.message
    # Rules that read the project (or the task, also missing) are skipped, not run on null.
    assert {r.code for r in decision.reasons} == {REFDATA_MISSING}
    assert all(r.severity is Severity.ERROR for r in decision.reasons)
    assert decision.enrichments == ()


def test_unknown_worker_rejects(evaluator: Evaluator, snapshot: ReferenceSnapshot) -> None:
    decision = decide(evaluator, worker_id="W-404")
    assert decision.outcome is Outcome.REJECT
    missing = decision.reasons[0]
    assert (missing.rule_id, missing.code, missing.field) == ("refdata:worker", REFDATA_MISSING, "worker_id")
    assert missing.message == (
        f"worker W-404 is not in reference snapshot {snapshot.snapshot_id} (looked up as of 2026-11-03)"
    )
    # Rules reading the worker (LC-1, LC-2, LC-6) are skipped; no rule fails on the null worker.
    assert not {"WORKER_NOT_ACTIVE", "LABOR_CATEGORY_DERIVED", "OVERTIME_RETYPED", RULE_ERROR} & set(decision.codes)


def test_unknown_task_is_reported_against_task_id(evaluator: Evaluator) -> None:
    decision = decide(evaluator, task_id="T-9")
    assert [(r.code, r.field) for r in decision.reasons] == [(REFDATA_MISSING, "task_id")]


def test_rules_not_needing_the_missing_record_still_run(evaluator: Evaluator) -> None:
    decision = decide(evaluator, project_id="P-999", hours="30")
    assert decision.outcome is Outcome.REJECT
    assert "HOURS_OUT_OF_RANGE" in decision.codes
    assert RULE_ERROR not in decision.codes


# ---------------------------------------------------------------------------------------------------
# Enrichments flow into later rules


@pytest.mark.parametrize(
    ("on", "bill_rate", "rate_id"),
    [("2026-11-03", "165.00", "R-10"), ("2026-11-15", "165.00", "R-10"), ("2026-11-16", "172.00", "R-11")],
)
def test_derived_labor_category_prices_the_entry(evaluator: Evaluator, on: str, bill_rate: str, rate_id: str) -> None:
    decision = decide(evaluator, work_date=on)
    assert decision.outcome is Outcome.ENRICH
    assert decision.enrichments == (
        Enrichment("labor_category", None, "SENIOR_CONSULTANT", "LC-2"),
        Enrichment("bill_rate", None, bill_rate, "RC-1"),
        Enrichment("rate_source", None, f"CONTRACT C-100 (rate {rate_id})", "RC-1"),
    )
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "RATE_RESOLVED"]
    [rated] = [r for r in decision.reasons if r.rule_id == "RC-1"]
    assert rated.ruleset_id == "rate-cards"
    assert rated.message == f"Bill rate {bill_rate} USD/hour from CONTRACT C-100 (rate {rate_id}), effective on {on}."


def test_a_labor_category_sent_is_kept(evaluator: Evaluator) -> None:
    decision = decide(evaluator, labor_category="SENIOR_CONSULTANT")
    assert [e.field for e in decision.enrichments] == ["bill_rate", "rate_source"]


def test_day_rate_is_converted(evaluator: Evaluator) -> None:
    decision = decide(evaluator, worker_id="W-4")
    assert enriched(decision) == {
        "labor_category": "PRINCIPAL", "bill_rate": "150.00", "rate_source": "CONTRACT C-100 (rate R-12)",
    }
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "DAY_RATE_CONVERTED"]


def test_overtime_of_an_eligible_worker_on_the_worker_rate(evaluator: Evaluator) -> None:
    decision = decide(evaluator, worker_id="W-2", time_type="OT")
    assert [(e.field, e.old_value, e.new_value, e.rule_id) for e in decision.enrichments if e.field == "bill_rate"] \
        == [("bill_rate", None, "130.00", "RC-1"), ("bill_rate", "130.00", "195.00", "RC-6")]
    assert enriched(decision)["rate_source"] == "WORKER W-2 (rate R-20)"


def test_overtime_of_an_ineligible_worker_is_retyped_before_pricing(evaluator: Evaluator) -> None:
    decision = decide(evaluator, time_type="OT")
    assert decision.outcome is Outcome.ENRICH
    assert enriched(decision)["time_type"] == "REG"
    assert enriched(decision)["bill_rate"] == "165.00"  # RC-6 saw REG, so no overtime multiplier
    assert "OVERTIME_RATE_APPLIED" not in decision.codes


def test_non_billable_entries_need_no_rate(evaluator: Evaluator) -> None:
    fixed_fee = decide(evaluator, worker_id="W-2", project_id="P-200")
    assert fixed_fee.outcome is Outcome.ENRICH
    assert enriched(fixed_fee) == {"labor_category": "CONSULTANT", "billable": "false"}
    internal_task = decide(evaluator, task_id="T-2")
    assert internal_task.codes == ["LABOR_CATEGORY_DERIVED", "TASK_NOT_BILLABLE"]
    assert "bill_rate" not in enriched(internal_task)


def test_no_labor_category_and_no_rate(evaluator: Evaluator) -> None:
    decision = decide(evaluator, worker_id="W-5", work_date="2026-11-16")
    assert decision.outcome is Outcome.REJECT
    assert decision.codes == ["LABOR_CATEGORY_UNKNOWN", "NO_RATE"]


def test_versions_as_of_the_work_date(evaluator: Evaluator) -> None:
    before = decide(evaluator, worker_id="W-3", project_id="P-300", work_date="2026-11-13")
    assert before.outcome is Outcome.ENRICH
    assert enriched(before)["bill_rate"] == "125.00"
    after = decide(evaluator, worker_id="W-3", project_id="P-300", work_date="2026-11-16")
    assert after.outcome is Outcome.REJECT
    # BE-4: W-3's assignment A-3 ended with the project on 2026-11-15
    assert after.codes == ["PROJECT_NOT_CHARGEABLE", "OUTSIDE_PROJECT_DATES", "WORKER_NOT_ACTIVE", "NO_ASSIGNMENT"]


@pytest.mark.parametrize(
    ("submitted_at", "outcome"),
    [("2026-11-09T23:59:59Z", Outcome.ENRICH), ("2026-11-10T00:00:00Z", Outcome.REJECT), ("", Outcome.REJECT)],
)
def test_closed_for_time(evaluator: Evaluator, submitted_at: str, outcome: Outcome) -> None:
    decision = decide(evaluator, project_id="P-600", work_date="2026-11-05", submitted_at=submitted_at)
    assert decision.outcome is outcome
    assert ("CLOSED_FOR_TIME" in decision.codes) == (outcome is Outcome.REJECT)


def test_a_rejected_decision_carries_no_enrichments(evaluator: Evaluator) -> None:
    # LC-2 derives the labor category, but the project is on hold.
    decision = decide(evaluator, project_id="P-700")
    assert decision.outcome is Outcome.REJECT
    assert decision.enrichments == ()
    assert decision.codes == ["PROJECT_NOT_CHARGEABLE"]
    assert all(r.severity is not Severity.INFO for r in decision.reasons)


def test_a_rejected_decision_reports_no_change_it_does_not_make(evaluator: Evaluator) -> None:
    # LC-6 retypes OT as REG (C-100 does not bill overtime), but the summary task T-0 rejects the entry.
    decision = decide(evaluator, task_id="T-0", time_type="OT")
    assert decision.outcome is Outcome.REJECT
    assert decision.enrichments == ()
    assert decision.codes == ["TASK_NOT_CHARGEABLE"]


# ---------------------------------------------------------------------------------------------------
# Errors inside rules fail closed


DIVIDE_BY_ZERO = """\
  - id: ZZ-1
    title: Divides by zero for long entries
    when: hours > 10 and hours / 0 > 1
    action: reject
    code: NEVER
    field: hours
    message: never rendered
  - id: ZZ-2
    title: Runs after the failing rule
    when: hours > 20
    action: warn
    code: VERY_LONG
    message: "{hours} hours"
"""


def test_an_error_inside_a_rule_rejects_the_item(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    ruleset = compile_ruleset(ruleset_file(tmp_path, DIVIDE_BY_ZERO))
    evaluator = make_evaluator([ruleset], snapshot)
    fine, failing = evaluator.evaluate([entry(entry_id="TE-1", hours="8"), entry(entry_id="TE-2", hours="22")])
    assert fine.outcome is Outcome.ACCEPT
    assert fine.reasons == ()
    assert failing.outcome is Outcome.REJECT
    error = failing.reasons[0]
    assert (error.rule_id, error.code, error.field, error.ruleset_id) == ("ZZ-1", RULE_ERROR, "hours", "custom")
    assert error.severity is Severity.ERROR
    assert "ZZ-1" in error.message
    assert "zero" in error.message.lower()
    # Later rules still run and report.
    assert failing.codes == [RULE_ERROR, "VERY_LONG"]


def test_an_error_in_a_message_rejects_the_item(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    rules = """\
  - id: ZZ-3
    title: Message divides by zero
    when: hours > 1
    action: warn
    code: LONG
    message: "{hours / (hours - hours)} per hour"
"""
    evaluator = make_evaluator([compile_ruleset(ruleset_file(tmp_path, rules))], snapshot)
    [decision] = evaluator.evaluate([entry()])
    assert decision.outcome is Outcome.REJECT
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("ZZ-3", RULE_ERROR)]


def test_requires_of_a_binding_the_rule_does_not_otherwise_read(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    rules = """\
  - id: ZZ-4
    title: Long entries of workers with a job code
    requires: [job]
    when: hours > 20
    action: warn
    code: LONG_ENTRY
    message: long
"""
    evaluator = make_evaluator([compile_ruleset(ruleset_file(tmp_path, rules))], snapshot)
    decisions = evaluator.evaluate([entry(hours="22"), entry(entry_id="TE-2", hours="22", worker_id="W-5")])
    assert [d.codes for d in decisions] == [["LONG_ENTRY"], []]


def test_lookups_follow_enrichments_across_rulesets(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    directory = tmp_path / "rulesets"
    shutil.copytree(RULESETS, directory)
    # A ruleset before the labor category is derived looks the rate up too (for unusually high rates): it
    # finds none; the rate cards, after LC-2, look it up again with the derived category.
    ruleset_file(directory, """\
  - id: ZZ-5
    title: Rates are read early (for a warning about unusually high rates)
    when: (early_rate&.bill_rate ?? 0) > 1000 and early_rate&.unit == 'HOUR'
    action: warn
    code: HIGH_RATE
    message: high
""", extra="""\
lookups:
  early_rate:
    table: rate_card
    match:
      - {scope: "'CONTRACT'", scope_id: project.contract_id, labor_category: labor_category}
""")
    evaluator = make_evaluator(load_rulesets(directory).for_kind("time_entry"), snapshot)
    decision = decide(evaluator)
    assert decision.outcome is Outcome.ENRICH
    assert enriched(decision)["bill_rate"] == "165.00"


# ---------------------------------------------------------------------------------------------------
# Batches


MIXED_BATCH: list[Mapping[str, str]] = [
    entry(entry_id="TE-1"),  # enrich: LC-2, RC-1
    entry(entry_id="TE-2", project_id="P-999"),  # reject: reference data missing (project and task)
    entry(entry_id="TE-3", project_id="P-700"),  # reject: project on hold
    entry(entry_id="TE-4", labor_category="SENIOR_CONSULTANT", bill_rate="165.00",
          rate_source="CONTRACT C-100 (rate R-10)"),  # accept: already priced
    entry(entry_id="TE-5", hours="x"),  # reject: malformed
    entry(entry_id="TE-6", worker_id="W-4"),  # enrich: LC-2, RC-5
]


def test_decisions_come_back_in_request_order(evaluator: Evaluator) -> None:
    ids = [str(item["entry_id"]) for item in MIXED_BATCH]
    assert [d.item_id for d in evaluator.evaluate(MIXED_BATCH)] == ids
    assert [d.item_id for d in evaluator.evaluate(MIXED_BATCH[::-1])] == ids[::-1]
    assert evaluator.evaluate([]) == []


def test_same_input_same_decisions(evaluator: Evaluator, shipped: tuple[CompiledRuleset, ...]) -> None:
    first = evaluator.evaluate(MIXED_BATCH)
    assert evaluator.evaluate(MIXED_BATCH) == first
    # A fresh evaluator over a fresh load of the same files decides the same.
    again = make_evaluator(shipped, load_snapshot(REFDATA))
    assert again.evaluate(MIXED_BATCH) == first
    # Each item is decided on its own: alone it gets the decision it got in the batch.
    assert [again.evaluate([item])[0] for item in MIXED_BATCH] == first


def test_batch_summary_counts(evaluator: Evaluator) -> None:
    decisions = evaluator.evaluate(MIXED_BATCH)
    assert [d.outcome for d in decisions] == [
        Outcome.ENRICH, Outcome.REJECT, Outcome.REJECT, Outcome.ACCEPT, Outcome.REJECT, Outcome.ENRICH,
    ]
    summary = BatchSummary.of(decisions)
    assert (summary.total, summary.accepted, summary.enriched, summary.rejected) == (6, 1, 2, 3)
    assert summary.by_reason_code == {
        "DAY_RATE_CONVERTED": 1,
        "INVALID_FIELD": 1,
        "LABOR_CATEGORY_DERIVED": 2,
        "PROJECT_NOT_CHARGEABLE": 1,
        "RATE_RESOLVED": 1,
        REFDATA_MISSING: 2,
    }
    assert list(summary.by_reason_code) == sorted(summary.by_reason_code)
    assert BatchSummary.of([]) == BatchSummary(0, 0, 0, 0, {})


def test_provenance_names_rulesets_and_snapshot(evaluator: Evaluator, snapshot: ReferenceSnapshot) -> None:
    provenance = evaluator.provenance
    assert provenance.rulesets == (
        RulesetRef("project-status", "1.0.0"),
        RulesetRef("labor-category", "1.0.0"),
        RulesetRef("billing-eligibility", "1.0.0"),
        RulesetRef("rate-cards", "1.0.0"),
    )
    assert provenance.snapshot_id == snapshot.snapshot_id
    assert provenance.engine_version == ENGINE_VERSION
