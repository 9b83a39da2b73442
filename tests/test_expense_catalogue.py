"""The expense-line rulesets (EX-0..EX-9, CT-1, CT-2, CT-5, BE-5 and the charging checks) on the bundled sample
report and reference data: in process, through the client against a real server, and through the CLI; and how
the expense bindings (policy, per diem, mileage, expense terms, contract line) are found as of the expense date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_compiled_rulesets import _interpreted
from tests.test_reference_data import bind_item
from tollgate.clients.cli import read_items
from tollgate.clients.client import ValidationClient
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.evaluators.rollups import GROUP_REJECTED
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.decisions import Decision, Outcome
from tollgate.rules.item_kinds import EXPENSE_LINE
from tollgate.rules.loader import load_rulesets
from tollgate.rules.typecheck import compile_ruleset
from tollgate.server.app import RunningServer, start
from tollgate.server.settings import Settings

REFDATA = ROOT / "examples" / "refdata"
SAMPLE_REPORT = ROOT / "examples" / "expense-report-2026-11.csv"

# Every line of the sample report: its outcome, its reason codes in rule order, and the fields it enriches.
EXPECTED: dict[str, tuple[str, list[str], dict[str, str]]] = {
    # ER-2026-11-101: Ada Byron in New York for the Acme cutover (contract C-100: at cost, lodging capped at 250)
    "EX-1001": ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "412.30"}),  # CT-5
    "EX-1002": ("enrich", ["EXPENSE_CAPPED"], {"bill_amount": "250.00"}),  # CT-5.capped: 289.00 over the cap
    "EX-1003": ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "64.50"}),  # within the NYC meals cap of 79.00
    # EX-2: the day's second meal takes the day to 102.50; 14.50 of the cap is left, the rest is not billable
    "EX-1004": ("enrich", ["PER_DIEM_CAP_EXCEEDED", "EXPENSE_AT_COST"],
                {"billable_amount": "14.50", "non_billable_amount": "23.50", "bill_amount": "14.50"}),
    "EX-1005": ("reject", ["RECEIPT_REQUIRED"], {}),  # EX-1: lodging always needs a receipt
    "EX-1006": ("reject", ["ATTENDEES_MISSING", "PURPOSE_MISSING"], {}),  # EX-8, EX-8.purpose
    "EX-1007": ("enrich", ["EXPENSE_TYPE_NOT_BILLABLE"], {"billable": "false"}),  # EX-6: alcohol
    "EX-1008": ("accept", [], {}),  # already billed at cost
    "EX-1009": ("reject", ["RECEIPT_REQUIRED"], {}),  # EX-1.threshold: a 96.00 taxi without a receipt
    # ER-2026-11-102: mileage at the rate of the expense date (0.70 until 2026-11-15, 0.725 from 2026-11-16)
    # 120 x 0.70 and 120 x 0.725: the last expenses on C-100, whose expense line's soft limit of 20,000.00
    # (19,200.00 billed before) they take past: held for billing (CT-3.expense).
    "EX-1011": ("enrich", ["EXPENSE_AT_COST", "NOT_TO_EXCEED_REACHED"], {"bill_amount": "84.00",
                                                                       "bill_status": "HOLD"}),
    "EX-1012": ("enrich", ["EXPENSE_AT_COST", "NOT_TO_EXCEED_REACHED"], {"bill_amount": "87.00",
                                                                       "bill_status": "HOLD"}),
    "EX-1013": ("reject", ["MILEAGE_ABOVE_RATE"], {}),  # EX-4: 87.00 claimed on 2026-11-13, allowance 84.00
    "EX-1014": ("reject", ["MILEAGE_MISSING_MILES"], {}),  # EX-4.miles
    "EX-1015": ("enrich", ["EXPENSE_TYPE_NOT_BILLABLE"], {"billable": "false"}),  # EX-6: entertainment
    "EX-1016": ("reject", ["PROJECT_NOT_CHARGEABLE"], {}),  # PS-1.expense: P-700 is ON_HOLD
    "EX-1017": ("accept", [], {}),  # a non-billable taxi on the internal training project
    "EX-1018": ("reject", ["UNKNOWN_EXPENSE_TYPE"], {}),  # EX-0.policy: GIFTS has no policy (fail closed)
    "EX-1019": ("enrich", ["NO_CONTRACT_HOLD"], {"bill_status": "HOLD"}),  # PS-5.expense: P-810 has no contract
    "EX-1020": ("reject", ["REFERENCE_DATA_MISSING", "REFERENCE_DATA_MISSING"], {}),  # P-999 / T-1
    # ER-2026-11-103: Linus Pauling on the Initech migration (C-300: 10% markup, airfare at cost, expense line to
    # 2026-10-31); the project closes and he leaves mid-November
    "EX-1021": ("enrich", ["PER_DIEM_CAP_EXCEEDED", "EXPENSE_MARKUP_APPLIED"],  # US-TX falls back to US: 180.00
                {"billable_amount": "180.00", "non_billable_amount": "19.00", "bill_amount": "198.00"}),
    "EX-1022": ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "486.20"}),  # C-300's AIRFARE terms beat its *
    "EX-1023": ("enrich", ["OUTSIDE_CONTRACT_LINE_DATES"], {"billable": "false"}),  # CT-1.line
    "EX-1024": ("reject", ["PROJECT_NOT_CHARGEABLE", "OUTSIDE_PROJECT_DATES", "WORKER_NOT_ACTIVE", "NO_ASSIGNMENT"],
                {}),  # PS-1, EX-9, LC-1, EX-9.assignment
    # ER-2026-11-104: Margaret Hamilton in Berlin for Wayne GmbH (C-400, EUR: 7.5% markup, meals not billable;
    # billing hold on C-400 from 2026-11-23)
    "EX-1031": ("enrich", ["EXPENSE_MARKUP_APPLIED"], {"bill_amount": "688.00"}),
    "EX-1032": ("enrich", ["EXPENSE_MARKUP_APPLIED"], {"bill_amount": "154.48"}),  # 154.4775, half up
    "EX-1033": ("enrich", ["EXPENSE_NOT_BILLABLE_ON_CONTRACT"], {"billable": "false"}),  # CT-5.not-billable
    "EX-1034": ("enrich", ["PER_DIEM_CAP_EXCEEDED", "EXPENSE_MARKUP_APPLIED"],  # DE-BE falls back to DE: 150.00
                {"billable_amount": "150.00", "non_billable_amount": "21.00", "bill_amount": "161.25"}),
    "EX-1035": ("enrich", ["EXPENSE_MARKUP_APPLIED", "BILLING_HOLD"],  # BE-5.expense
                {"bill_amount": "41.39", "bill_status": "HOLD"}),
    # ER-2026-11-105: Grace Hopper
    "EX-1041": ("reject", ["EXPENSE_NOT_ON_CONTRACT"], {}),  # CT-2: fixed-fee C-200 has no EXPENSE line
    "EX-1042": ("reject", ["OUTSIDE_TASK_DATES"], {}),  # EX-9.task: T-3 runs 2026-11-01 to 2026-11-20
    "EX-1043": ("reject", ["NO_ASSIGNMENT"], {}),  # EX-9.assignment: A-6 is her assignment on P-200
    "EX-1044": ("reject", ["INVALID_FIELD"], {}),  # amount: 'twelve'
    # ER-2026-11-106: Alan Turing in London, claiming in GBP on a USD contract
    "EX-1051": ("reject", ["PER_DIEM_CURRENCY_MISMATCH"], {}),  # EX-2.currency: the DEFAULT lodging cap is in USD
    "EX-1052": ("enrich", ["EXPENSE_AT_COST", "EXPENSE_CURRENCY_DIFFERS"],  # CT-5.currency: no GBP/USD rate
                {"bill_amount": "45.00", "bill_status": "HOLD"}),
    # ER-2026-11-107: a flight paid in USD, billed on C-400 in EUR: 412.30 + 7.5% = 443.22 USD, at Friday's
    # USD/EUR rate of 0.9207 = 408.07 EUR (CT-5.fx)
    "EX-1053": ("enrich", ["EXPENSE_MARKUP_APPLIED", "EXPENSE_CONVERTED"],
                {"bill_amount": "408.07", "bill_currency": "EUR"}),
}

REPORTS = ["ER-2026-11-101", "ER-2026-11-102", "ER-2026-11-103", "ER-2026-11-104", "ER-2026-11-105",
           "ER-2026-11-106", "ER-2026-11-107"]
EXPENSE_RULESETS = ["expense-charging", "expense-policy", "expense-contract-terms", "expense-limits"]


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


@pytest.fixture(scope="module")
def sample(snapshot: ReferenceSnapshot) -> dict[str, Decision]:
    rulesets = load_rulesets(ROOT / "rulesets").for_kind(EXPENSE_LINE.name)
    evaluator = Evaluator(EXPENSE_LINE, rulesets, SnapshotBinder(EXPENSE_LINE, snapshot), snapshot.snapshot_id,
                          ENGINE_VERSION)
    return {d.item_id: d for d in evaluator.evaluate(read_items(SAMPLE_REPORT))}


def _enriched(decision: Decision) -> dict[str, str | None]:
    return {e.field: e.new_value for e in decision.enrichments}


def _summary(decisions: list[Decision]) -> dict[str, tuple[str, list[str], dict[str, str | None]]]:
    return {d.item_id: (d.outcome.value, d.codes, _enriched(d)) for d in decisions}


def test_the_sample_shows_every_outcome() -> None:
    outcomes = {outcome for outcome, _codes, _enriched in EXPECTED.values()}
    assert outcomes == {"accept", "enrich", "reject"}
    assert [item["expense_id"] for item in read_items(SAMPLE_REPORT)] == list(EXPECTED)


@pytest.mark.parametrize("expense_id", list(EXPECTED))
def test_sample_decisions(sample: dict[str, Decision], expense_id: str) -> None:
    decision = sample[expense_id]
    assert (decision.outcome.value, decision.codes, _enriched(decision)) == EXPECTED[expense_id]


def test_sample_messages_quote_the_figures(sample: dict[str, Decision]) -> None:
    [split, _at_cost] = sample["EX-1004"].reasons
    assert split.rule_id == "EX-2"
    assert "comes to 102.50 USD with this line (lines EX-1003, EX-1004), over the daily cap of 79.00 USD at " \
           "US-NY-NYC" in split.message
    [mileage] = sample["EX-1013"].reasons
    assert "120 miles at 0.70 USD/mile, the rate in force on 2026-11-13" in mileage.message
    [line_dates] = sample["EX-1023"].reasons
    assert (line_dates.rule_id, line_dates.severity.value) == ("CT-1.line", "warning")
    assert "outside expense line L2 of contract C-300 (2026-03-01 to 2026-10-31)" in line_dates.message
    hold = sample["EX-1035"].reasons[-1]
    assert (hold.rule_id, hold.severity.value) == ("BE-5.expense", "warning")
    assert "CONTRACT C-400 is on billing hold H-1" in hold.message
    [unknown] = sample["EX-1018"].reasons
    assert (unknown.field, unknown.rule_id) == ("expense_type", "EX-0.policy")
    [malformed] = sample["EX-1044"].reasons
    assert malformed.field == "amount" and "'twelve' is not a decimal number" in malformed.message


def test_the_per_diem_split_does_not_depend_on_the_order_of_the_lines(snapshot: ReferenceSnapshot) -> None:
    rulesets = load_rulesets(ROOT / "rulesets").for_kind(EXPENSE_LINE.name)
    evaluator = Evaluator(EXPENSE_LINE, rulesets, SnapshotBinder(EXPENSE_LINE, snapshot), snapshot.snapshot_id,
                          ENGINE_VERSION)
    reversed_report = list(reversed(read_items(SAMPLE_REPORT)))
    assert _summary(evaluator.evaluate(reversed_report)) == EXPECTED


def test_the_fused_rulesets_decide_as_the_interpreter_does(snapshot: ReferenceSnapshot) -> None:
    rulesets = load_rulesets(ROOT / "rulesets").for_kind(EXPENSE_LINE.name)
    assert [r.id for r in rulesets] == EXPENSE_RULESETS
    interpreted = Evaluator(EXPENSE_LINE, tuple(_interpreted(r) for r in rulesets),
                            SnapshotBinder(EXPENSE_LINE, snapshot), snapshot.snapshot_id, ENGINE_VERSION)
    decisions = interpreted.evaluate(read_items(SAMPLE_REPORT))
    assert _summary(decisions) == EXPECTED
    assert [[r.message for r in d.reasons] for d in decisions] == [
        [r.message for r in d.reasons] for d in Evaluator(
            EXPENSE_LINE, rulesets, SnapshotBinder(EXPENSE_LINE, snapshot), snapshot.snapshot_id, ENGINE_VERSION
        ).evaluate(read_items(SAMPLE_REPORT))]


# ---------------------------------------------------------------------------------------------------
# Bindings, as of the expense date

BASE_LINE = {"expense_id": "X-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
             "expense_date": "2026-11-03", "expense_type": "MEALS", "amount": "10.00", "currency": "USD"}


def _bind(snapshot: ReferenceSnapshot, **line: str) -> dict[str, Any]:
    return bind_item(snapshot, EXPENSE_LINE, {**BASE_LINE, **line})


@pytest.mark.parametrize(("location", "expense_type", "found", "cap"), [
    ("US-NY-NYC", "MEALS", "US-NY-NYC", "79.00"),
    ("US-NY", "MEALS", "US", "59.00"),  # no row for the state: the country's
    ("US-TX", "LODGING", "US", "180.00"),
    ("DE-BE", "LODGING", "DE", "150.00"),
    ("GB-LDN", "MEALS", "DEFAULT", "59.00"),  # no row for the country: DEFAULT
    ("", "MEALS", "DEFAULT", "59.00"),  # no location at all
])
def test_per_diem_cap_from_the_most_specific_place(
    snapshot: ReferenceSnapshot, location: str, expense_type: str, found: str, cap: str
) -> None:
    per_diem = _per_diem(snapshot, location=location, expense_type=expense_type)
    assert per_diem is not None
    assert (per_diem["location"], format(per_diem["daily_cap"], "f")) == (found, cap)


def test_no_per_diem_for_types_without_a_cap(snapshot: ReferenceSnapshot) -> None:
    assert _per_diem(snapshot, location="US-NY-NYC", expense_type="TAXI") is None


def _per_diem(snapshot: ReferenceSnapshot, **line: str) -> Any:
    """The per-diem cap as the expense-policy ruleset looks it up (its ``lookups: per_diem``)."""
    [lookup] = compile_ruleset(ROOT / "rulesets" / "expense_line" / "20-expense-policy.yaml").lookups
    return SnapshotBinder(EXPENSE_LINE, snapshot).lookup(lookup, _bind(snapshot, **line))


def test_mileage_rate_of_the_expense_date(snapshot: ReferenceSnapshot) -> None:
    def rate(day: str, currency: str = "USD") -> str | None:
        mileage = _bind(snapshot, expense_type="MILEAGE", expense_date=day, currency=currency)["mileage"]
        return None if mileage is None else format(mileage["rate_per_mile"], "f")
    assert rate("2026-11-15") == "0.70"
    assert rate("2026-11-16") == "0.725"
    assert rate("2026-11-16", "EUR") == "0.48"
    assert rate("2026-11-16", "CHF") is None
    assert rate("2025-12-31") is None  # before the first published rate


def test_expense_terms_for_the_type_else_the_contracts_default(snapshot: ReferenceSnapshot) -> None:
    def terms(project_id: str, expense_type: str) -> tuple[str, str] | None:
        found = _bind(snapshot, project_id=project_id, expense_type=expense_type, expense_date="2026-10-20")
        record = found["expense_terms"]
        return None if record is None else (record["expense_type"], record["terms"])
    assert terms("P-100", "LODGING") == ("LODGING", "CAPPED")
    assert terms("P-100", "MEALS") == ("*", "AT_COST")
    assert terms("P-300", "AIRFARE") == ("AIRFARE", "AT_COST")
    assert terms("P-300", "MEALS") == ("*", "MARKUP")
    assert terms("P-200", "MEALS") is None  # C-200 has no expense terms (and no expense line)
    assert terms("P-400", "MEALS") is None  # no contract


def test_contract_expense_line_covering_the_date_else_the_first(snapshot: ReferenceSnapshot) -> None:
    def line(project_id: str, day: str) -> tuple[str, str] | None:
        record = _bind(snapshot, project_id=project_id, expense_date=day)["contract_line"]
        return None if record is None else (record["line_id"], record["item_class"])
    assert line("P-100", "2026-11-03") == ("L2", "EXPENSE")
    assert line("P-300", "2026-11-10") == ("L2", "EXPENSE")  # ended 2026-10-31: still found, for CT-1.line
    assert line("P-200", "2026-11-03") is None  # C-200 bills time only (CT-2)


def test_policy_by_expense_type(snapshot: ReferenceSnapshot) -> None:
    assert _bind(snapshot, expense_type="LODGING")["policy"]["receipt_always"] is True
    assert _bind(snapshot, expense_type="ALCOHOL")["policy"]["billable"] is False
    assert _bind(snapshot, expense_type="GIFTS")["policy"] is None


# ---------------------------------------------------------------------------------------------------
# End to end: a real server on a free port


def test_sample_report_through_the_client(client: ValidationClient, server: RunningServer) -> None:
    result = client.validate_expense_lines(read_items(SAMPLE_REPORT), correlation_id="e2e-expenses-1")
    assert [d.item_id for d in result.decisions] == list(EXPECTED)
    assert _summary(result.decisions) == EXPECTED
    provenance = result.decisions[0].provenance
    assert provenance is not None
    assert provenance.correlation_id == "e2e-expenses-1"
    assert provenance.snapshot_id == server.runtime.generation.snapshot.snapshot_id
    assert [r.id for r in provenance.rulesets] == EXPENSE_RULESETS
    total = len(EXPECTED)
    assert result.summary.total == total
    assert (result.summary.accepted, result.summary.enriched, result.summary.rejected) == (2, 19, 14)
    assert result.summary.by_reason_code["RECEIPT_REQUIRED"] == 2
    assert result.summary.by_reason_code["PER_DIEM_CAP_EXCEEDED"] == 3
    # Partial acceptance: each line on its own; the roll-ups name the lines rejected per report.
    rollups = {r.group_id: r for r in result.rollups}
    assert list(rollups) == REPORTS
    assert rollups["ER-2026-11-101"].outcome is Outcome.REJECT
    assert rollups["ER-2026-11-101"].rejected_items == ("EX-1005", "EX-1006", "EX-1009")
    assert (rollups["ER-2026-11-101"].accepted, rollups["ER-2026-11-101"].enriched,
            rollups["ER-2026-11-101"].rejected, rollups["ER-2026-11-101"].total) == (1, 5, 3, 9)
    assert rollups["ER-2026-11-104"].outcome is Outcome.ENRICH
    assert rollups["ER-2026-11-104"].rejected_items == ()


def test_all_or_nothing_per_expense_report(client: ValidationClient) -> None:
    result = client.validate_expense_lines(read_items(SAMPLE_REPORT), all_or_nothing=True)
    decisions = {d.item_id: d for d in result.decisions}
    # ER-2026-11-104 and ER-2026-11-107 have no rejected line
    clean = {"EX-1031", "EX-1032", "EX-1033", "EX-1034", "EX-1035", "EX-1053"}
    for expense_id, (outcome, codes, enriched) in EXPECTED.items():
        decision = decisions[expense_id]
        if expense_id in clean or outcome == "reject":
            assert (decision.outcome.value, decision.codes, _enriched(decision)) == (outcome, codes, enriched)
        else:  # taken down with its report, saying which lines failed
            assert decision.outcome is Outcome.REJECT
            assert decision.codes[0] == GROUP_REJECTED
            assert decision.enrichments == ()
    assert "EX-1005 (RECEIPT_REQUIRED)" in decisions["EX-1001"].reasons[0].message
    rollups = {r.group_id: (r.outcome, r.rejected_items) for r in result.rollups}
    assert rollups == {
        "ER-2026-11-101": (Outcome.REJECT, ("EX-1005", "EX-1006", "EX-1009")),
        "ER-2026-11-102": (Outcome.REJECT, ("EX-1013", "EX-1014", "EX-1016", "EX-1018", "EX-1020")),
        "ER-2026-11-103": (Outcome.REJECT, ("EX-1024",)),
        "ER-2026-11-104": (Outcome.ENRICH, ()),
        "ER-2026-11-105": (Outcome.REJECT, ("EX-1041", "EX-1042", "EX-1043", "EX-1044")),
        "ER-2026-11-106": (Outcome.REJECT, ("EX-1051",)),
        "ER-2026-11-107": (Outcome.ENRICH, ()),
    }


def test_streamed_in_chunks_a_report_is_never_split(server: RunningServer) -> None:
    with ValidationClient(f"127.0.0.1:{server.port}", timeout=30, chunk_size=4) as chunked:
        result = chunked.validate_expense_lines(read_items(SAMPLE_REPORT), all_or_nothing=True)
    assert [d.item_id for d in result.decisions] == list(EXPECTED)
    assert [(r.group_id, r.outcome) for r in result.rollups] == [
        (report, Outcome.ENRICH if report in ("ER-2026-11-104", "ER-2026-11-107") else Outcome.REJECT)
        for report in REPORTS]
    assert (result.summary.accepted, result.summary.enriched, result.summary.rejected) == (0, 6, 29)


def test_a_single_expense_line_as_a_dict(client: ValidationClient) -> None:
    result = client.validate_expense_lines([{**BASE_LINE, "expense_id": "ONE-1", "report_id": "ER-ONE",
                                             "amount": "64.50", "attendees": ["Ada Byron", "J. Smith (Acme)"],
                                             "purpose": "Working dinner", "location": "US-NY-NYC"}])
    [decision] = result.decisions
    assert (decision.outcome, decision.codes, _enriched(decision)) == (
        Outcome.ENRICH, ["EXPENSE_AT_COST"], {"bill_amount": "64.50"})



def _per_diem_report() -> list[dict[str, Any]]:
    """A report of W-1's on 2026-11-03: a meal in London (no GB per-diem row: the DEFAULT cap, if any), a meal in
    New York (its city's cap) and a London taxi (a type the per-diem policy does not cap)."""
    line = {**BASE_LINE, "report_id": "ER-PD", "assignment_id": "A-1", "attendees": ["Ada Byron"],
            "purpose": "Working lunch"}
    return [{**line, "expense_id": "PD-1", "amount": "45.00", "location": "GB-LDN"},
            {**line, "expense_id": "PD-2", "amount": "30.00", "location": "US-NY-NYC"},
            {**line, "expense_id": "PD-3", "amount": "18.00", "location": "GB-LDN", "expense_type": "TAXI"}]


def test_a_capped_expense_without_any_per_diem_cap_is_rejected(tmp_path: Path, client: ValidationClient) -> None:
    """EX-2.missing: with no cap row for the location, its region, its country or DEFAULT, a meal is not billed
    at cost: it is rejected, naming the expense type, the location and the date (fail closed)."""
    with_default = client.validate_expense_lines(_per_diem_report())
    assert _summary(with_default.decisions)["PD-1"] == ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "45.00"})

    refdata = tmp_path / "refdata"
    refdata.mkdir()
    for path in REFDATA.iterdir():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if path.name == "per_diem_rates.csv":
            lines = [line for line in lines if not line.startswith("DEFAULT,")]
        (refdata / path.name).write_text("".join(lines), encoding="utf-8")
    running = start(Settings(port=0, threads=2, refdata=refdata, log_level="warning"))
    try:
        with ValidationClient(f"127.0.0.1:{running.port}", timeout=30) as no_default:
            result = no_default.validate_expense_lines(_per_diem_report())
            whole = no_default.validate_expense_lines(_per_diem_report(), all_or_nothing=True)
    finally:
        running.stop()
    assert _summary(result.decisions) == {
        "PD-1": ("reject", ["NO_PER_DIEM_CAP"], {}),
        "PD-2": ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "30.00"}),
        "PD-3": ("enrich", ["EXPENSE_AT_COST"], {"bill_amount": "18.00"}),
    }
    [reason] = result.decisions[0].reasons
    assert (reason.rule_id, reason.field, reason.severity.value) == ("EX-2.missing", "location", "error")
    assert reason.message.startswith("No per-diem cap for MEALS at location GB-LDN is in force on 2026-11-03 (no "
                                     "row for the location, its region, its country or DEFAULT)")
    assert result.summary.by_reason_code["NO_PER_DIEM_CAP"] == 1
    [rollup] = result.rollups
    assert (rollup.outcome, rollup.rejected_items) == (Outcome.REJECT, ("PD-1",))
    assert [d.outcome for d in whole.decisions] == [Outcome.REJECT] * 3


def test_sample_report_through_the_cli(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    completed = run_cli("validate", str(SAMPLE_REPORT), "--server", target, "--format", "json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert {
        d["item_id"]: (d["outcome"], [r["code"] for r in d["reasons"]],
                       {e["field"]: e["new_value"] for e in d["enrichments"]})
        for d in document["decisions"]
    } == EXPECTED

    table = run_cli("validate", str(SAMPLE_REPORT), "--server", target, "--kind", "expense_line")
    assert table.returncode == 0, table.stderr
    assert "EX-1013  reject   error MILEAGE_ABOVE_RATE [EX-4]: Mileage claim of 87.00 USD" in table.stdout
    assert "EX-1004  enrich   billable_amount: (none) -> 14.50  [EX-2]" in table.stdout
    assert f"{len(EXPECTED)} items: 2 accepted, 19 enriched, 14 rejected" in table.stdout
    assert "EXPENSE REPORT" in table.stdout
    assert "expense-charging@1.0.0, expense-policy@1.0.0, expense-contract-terms@1.0.0" in table.stdout

    whole = run_cli("validate", str(SAMPLE_REPORT), "--server", target, "--all-or-nothing", "--fail-on-reject")
    assert whole.returncode == 1
    assert "ER-2026-11-104" in whole.stdout


def test_the_cli_refuses_a_file_it_cannot_tell_the_kind_of(tmp_path: Path, server: RunningServer) -> None:
    path = tmp_path / "lines.csv"
    path.write_text("line,amount\n1,10.00\n", encoding="utf-8")
    completed = run_cli("validate", str(path), "--server", f"127.0.0.1:{server.port}")
    assert completed.returncode != 0
    assert "--kind" in completed.stderr
