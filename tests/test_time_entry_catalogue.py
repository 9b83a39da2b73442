"""The later time-entry catalogue rules (PS-4, PS-5, LC-3, LC-5, RC-4, RC-7, RC-8, BE-3, BE-4, BE-5, BE-8) on
the bundled sample data, and how their reference records are found (billing holds, transaction controls,
FX rates, billed items) as of the work date."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLE_TIMESHEET
from tests.test_reference_data import bind_all
from tollgate.clients.cli import read_items
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.decisions import Decision
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.rules.problems import ProblemsError
from tollgate.rules.typecheck import compile_ruleset

REFDATA = ROOT / "examples" / "refdata"


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


@pytest.fixture(scope="module")
def sample(snapshot: ReferenceSnapshot) -> dict[str, Decision]:
    rulesets = load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name)
    evaluator = Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                          ENGINE_VERSION)
    return {d.item_id: d for d in evaluator.evaluate(read_items(SAMPLE_TIMESHEET))}


def _enriched(decision: Decision) -> dict[str, str | None]:
    return {e.field: e.new_value for e in decision.enrichments}


@pytest.mark.parametrize(
    ("entry_id", "outcome", "codes"),
    [
        ("TE-1021", "reject", ["TEMPLATE_PROJECT", "NO_ASSIGNMENT"]),  # PS-4; and nobody is assigned to a template
        ("TE-1023", "reject", ["LABOR_CATEGORY_NOT_ON_CONTRACT"]),  # LC-3: C-300 bills consultants only
        ("TE-1028", "reject", ["TRANSACTION_NOT_ALLOWED"]),  # BE-3: travel is not chargeable on P-100
        ("TE-1030", "reject", ["NO_ASSIGNMENT"]),  # BE-4: W-2 is not assigned to P-300
        ("TE-1032", "reject", ["BILLED_ENTRY_LOCKED"]),  # BE-8: billed as 8 hours, re-sent as 6
        ("TE-1024", "enrich", ["LABOR_CATEGORY_DERIVED", "ROLE_MISMATCH", "RATE_RESOLVED", "BILL_AMOUNT"]),  # LC-5
        ("TE-1027", "enrich", ["ENTERED_RATE_DIFFERS", "RATE_RESOLVED", "BILL_AMOUNT"]),  # RC-8
        # CT-4: C-100's time line has 8,500.00 left of its hard limit when the batch starts; TE-1033 (1,376.00
        # on 27 November, after the rest of the month) would cross it, TE-1034 (516.00) still fits.
        ("TE-1033", "reject", ["NOT_TO_EXCEED_LIMIT"]),
        ("TE-1034", "enrich", ["RATE_RESOLVED", "BILL_AMOUNT"]),
        # CT-3: C-300's time line has a soft limit; TE-1035 takes it past, and is held.
        ("TE-1035", "enrich", ["LABOR_CATEGORY_DERIVED", "RATE_RESOLVED", "BILL_AMOUNT", "NOT_TO_EXCEED_REACHED"]),
        # BT-5: Thanksgiving in the US, where W-1 works (US-NY): regular time on it is flagged.
        ("TE-1036", "enrich", ["REGULAR_TIME_ON_HOLIDAY", "LABOR_CATEGORY_DERIVED"]),
    ],
)
def test_sample_decisions(sample: dict[str, Decision], entry_id: str, outcome: str, codes: list[str]) -> None:
    decision = sample[entry_id]
    assert (decision.outcome.value, decision.codes) == (outcome, codes)


def test_a_billable_project_without_a_contract_is_held(sample: dict[str, Decision]) -> None:
    decision = sample["TE-1022"]  # PS-5: P-810 has no contract yet
    assert decision.codes[0] == "NO_CONTRACT_HOLD"
    assert decision.reasons[0].severity.value == "warning"
    assert _enriched(decision)["bill_status"] == "HOLD"
    assert _enriched(decision)["bill_rate"] == "150.00"  # still priced (standard rate): the cost stays


def test_a_rate_is_converted_at_the_latest_fx_rate_on_or_before_the_work_date(sample: dict[str, Decision]) -> None:
    decision = sample["TE-1025"]  # Saturday 2026-11-21: Friday's USD/EUR rate 0.9207; 150 x 0.9207 = 138.105
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "RATE_RESOLVED", "RATE_CONVERTED", "BILL_AMOUNT"]
    assert _enriched(decision)["bill_rate"] == "138.11"  # half up
    converted = decision.reasons[2].message
    assert "at 0.9207 (USD/EUR of 2026-11-20)" in converted
    assert "rounded to the cent half up" in converted


def test_a_day_rate_with_a_discount(sample: dict[str, Decision]) -> None:
    decision = sample["TE-1026"]  # RC-5 then RC-7: 1,400/day over 8 hours = 175.00, less 5% = 166.25 (EUR, no FX)
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "DAY_RATE_CONVERTED", "DISCOUNT_APPLIED", "BILL_AMOUNT"]
    assert _enriched(decision)["bill_rate"] == "166.25"


def test_a_transaction_control_makes_time_cost_only(sample: dict[str, Decision]) -> None:
    decision = sample["TE-1029"]  # BE-3.billable: W-4 shadowing on P-100/T-3 until 2026-11-20
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "TRANSACTION_NOT_BILLABLE"]
    assert _enriched(decision)["billable"] == "false"
    assert "bill_rate" not in _enriched(decision)


def test_a_billing_hold_from_its_start_date(sample: dict[str, Decision]) -> None:
    assert "BILLING_HOLD" not in sample["TE-1025"].codes  # 2026-11-21: before the hold on C-400
    decision = sample["TE-1031"]  # 2026-11-24: held, and still priced and converted
    assert decision.codes == ["LABOR_CATEGORY_DERIVED", "BILLING_HOLD", "RATE_RESOLVED", "RATE_CONVERTED",
                              "BILL_AMOUNT"]
    assert _enriched(decision)["bill_status"] == "HOLD"
    assert _enriched(decision)["bill_rate"] == "138.03"  # 150 x 0.9202


def test_a_hard_limit_names_the_items_counted_and_skips_the_one_it_rejects(sample: dict[str, Decision]) -> None:
    rejected = sample["TE-1033"].reasons[0].message
    assert "would take contract C-100 line L1 to 250710.50, over its hard not-to-exceed limit of 250000.00" \
        in rejected
    assert "241500.00 billed before" in rejected
    assert _enriched(sample["TE-1034"])["bill_amount"] == "516.00"  # 249,850.50 with it: within the limit
    held = sample["TE-1035"]
    assert _enriched(held)["bill_status"] == "HOLD"
    assert "reaches 180500.00 with this entry, past its soft not-to-exceed limit of 180000.00" \
        in held.reasons[-1].message


def test_earlier_sample_entries_keep_their_outcomes(sample: dict[str, Decision]) -> None:
    assert sample["TE-1001"].outcome.value == "accept"
    assert sample["TE-1008"].outcome.value == "enrich"
    assert sample["TE-1020"].outcome.value == "enrich"  # internal project: no assignment needed (BE-4)


# ---------------------------------------------------------------------------------------------------
# Bindings


def _bind(snapshot: ReferenceSnapshot, **entry: str) -> dict[str, Any]:
    return bind_all(snapshot, **{"entry_id": "X-1", "labor_category": "SENIOR_CONSULTANT", **entry})


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REFDATA, tmp_path / "refdata"))


def _append(path: Path, *rows: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(row + "\n" for row in rows)


def _fx(snapshot: ReferenceSnapshot, **entry: str) -> Any:
    """The FX rate the shipped rate cards look up (``lookups: fx``, after ``lookups: rate``)."""
    scope = _bind(snapshot, **entry)
    binder = SnapshotBinder(TIME_ENTRY, snapshot)
    for lookup in compile_ruleset(ROOT / "rulesets" / "time_entry" / "40-rate-cards.yaml").lookups:
        scope[lookup.name] = binder.lookup(lookup, scope)
    return scope["fx"]


def test_fx_rate_of_the_work_date_or_the_latest_before(snapshot: ReferenceSnapshot) -> None:
    assert _fx(snapshot, project_id="P-820", work_date="2026-11-24")["rate_date"].date().isoformat() == "2026-11-24"
    assert _fx(snapshot, project_id="P-820", work_date="2026-11-22")["rate_date"].date().isoformat() == "2026-11-20"
    assert _fx(snapshot, project_id="P-820", work_date="2026-11-01") is None  # none published yet
    assert _fx(snapshot, project_id="P-100") is None  # the rate is in the contract's currency


def test_billing_hold_on_the_project_before_the_contract_before_the_customer(
    snapshot: ReferenceSnapshot, tmp_path: Path
) -> None:
    assert _bind(snapshot, project_id="P-820", work_date="2026-11-22")["hold"] is None
    assert _bind(snapshot, project_id="P-820", work_date="2026-11-23")["hold"]["hold_id"] == "H-1"
    assert _bind(snapshot, project_id="P-200", work_date="2026-06-15")["hold"]["hold_id"] == "H-2"  # customer
    assert _bind(snapshot, project_id="P-200", work_date="2026-07-01")["hold"] is None  # ended
    copy = _copy(tmp_path)
    _append(copy / "billing_holds.csv", "H-3,PROJECT,P-820,scope dispute,2026-11-01,",
            "H-0,CUSTOMER,CU-WAYNE,credit review,2026-11-01,")
    loaded = load_snapshot(copy)
    assert _bind(loaded, project_id="P-820", work_date="2026-11-24")["hold"]["hold_id"] == "H-3"
    assert _bind(loaded, project_id="P-820", work_date="2026-11-10")["hold"]["hold_id"] == "H-3"


def test_the_most_specific_transaction_control_wins(snapshot: ReferenceSnapshot, tmp_path: Path) -> None:
    assert _bind(snapshot, activity_code="TRAVEL")["control"]["control_id"] == "TC-1"
    assert _bind(snapshot, activity_code="DELIVERY")["control"] is None
    assert _bind(snapshot, worker_id="W-4", task_id="T-3", work_date="2026-11-09")["control"]["control_id"] == "TC-2"
    assert _bind(snapshot, worker_id="W-4", task_id="T-3", work_date="2026-11-23")["control"] is None  # ended
    assert _bind(snapshot, worker_id="W-1", task_id="T-3", work_date="2026-11-09")["control"] is None
    copy = _copy(tmp_path)
    _append(copy / "transaction_controls.csv", "TC-3,P-100,T-1,TRAVEL,,true,true,travel to site is billable,,")
    loaded = load_snapshot(copy)
    assert _bind(loaded, activity_code="TRAVEL")["control"]["control_id"] == "TC-3"  # task + activity > activity
    assert _bind(loaded, activity_code="TRAVEL", task_id="T-2")["control"]["control_id"] == "TC-1"


def test_contract_labor_categories_are_read_from_a_list_cell(snapshot: ReferenceSnapshot) -> None:
    assert snapshot.table("contract").get(("C-300",), _bind(snapshot)["work_date"])[
        "allowed_labor_categories"] == ("CONSULTANT", "SENIOR_CONSULTANT")
    assert _bind(snapshot)["contract"]["allowed_labor_categories"] == ()


def test_billed_items_are_found_by_entry_id(snapshot: ReferenceSnapshot) -> None:
    billed = _bind(snapshot, entry_id="TE-1032")["billed"]
    assert (billed["invoice_id"], str(billed["hours"])) == ("INV-2026-0412", "8")
    assert _bind(snapshot, entry_id="TE-1001")["billed"] is None


def test_a_bad_fx_rate_row_is_refused_with_its_line(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _append(copy / "fx_rates.csv", "USD,EUR,2026-12-01,-1")
    with pytest.raises(ProblemsError, match=r"fx_rates\.csv:\d+: rate: "):
        load_snapshot(copy)
