"""Lookup tables declared in a ruleset (``lookups:``): which table, which ways to match it, most specific
first, as of the item's business date; the rows found are what rules read. Checked against the sample
reference data and for what is refused at load. (The shipped rate cards' own lookups are checked in
tests/test_reference_data.py and tests/test_time_entry_catalogue.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from tests.conftest import ROOT
from tests.test_ruleset_loading import line_with, only_problem, rule_yaml, ruleset_yaml, write_ruleset
from tollgate.clients.client import RefDataClient
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.problems import ProblemsError
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset
from tollgate.server.app import start
from tollgate.server.runtime import Runtime
from tollgate.server.settings import Settings

REFDATA = ROOT / "examples" / "refdata"

# The rate cards' precedence (RC-1) declared as data: worker override > assignment > contract > project > standard.
RATE_LOOKUPS = """\
lookups:
  card_rate:
    table: rate_card
    match:
      - {scope: "'WORKER'", scope_id: worker_id, labor_category: labor_category}
      - {scope: "'ASSIGNMENT'", scope_id: assignment&.assignment_id, labor_category: labor_category}
      - {scope: "'CONTRACT'", scope_id: project.contract_id, labor_category: labor_category}
      - {scope: "'PROJECT'", scope_id: project_id, labor_category: labor_category}
      - {scope: "'STANDARD'", scope_id: "''", labor_category: labor_category}
  conversion:
    table: fx_rate
    match:
      - {from_currency: card_rate&.currency, to_currency: contract&.currency}
    latest_on_or_before: rate_date
"""

QUOTE_RATE = rule_yaml(
    id="XX-1", title="Quote the rate found", when="card_rate != null", action="warn", code="RATE_FOUND",
    message="'{card_rate&.rate_id} way {card_rate&.precedence} fx {conversion&.rate}'")


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


def _ruleset(tmp_path: Path, *rules: str, lookups: str = RATE_LOOKUPS) -> CompiledRuleset:
    return compile_ruleset(write_ruleset(tmp_path, *rules or (QUOTE_RATE,), extra=lookups))


def test_the_most_specific_way_wins_and_says_which_it_was(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    evaluator = Evaluator(TIME_ENTRY, [_ruleset(tmp_path)], SnapshotBinder(TIME_ENTRY, snapshot), "snap", "test")
    entry = {"entry_id": "E-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "assignment_id": "A-1",
             "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT"}
    contract_rate, standard_rate = evaluator.evaluate([entry, {**entry, "entry_id": "E-1b", "project_id": "P-400"}])
    assert contract_rate.reasons[0].message == "R-10 way 3 fx (none)"  # the contract's rate: way 3
    assert standard_rate.reasons[0].message == "R-1 way 5 fx (none)"  # an internal project: the standard card


def test_the_latest_row_on_or_before_the_day(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    [decision] = Evaluator(TIME_ENTRY, [_ruleset(tmp_path)], SnapshotBinder(TIME_ENTRY, snapshot), "s", "t").evaluate([
        {"entry_id": "E-2", "worker_id": "W-1", "project_id": "P-820", "task_id": "T-1", "assignment_id": "A-22",
         "work_date": "2026-11-21", "hours": "4", "labor_category": "SENIOR_CONSULTANT"}])
    # Saturday: no rate published that day, so Friday's USD/EUR rate.
    assert decision.reasons[0].message.endswith("fx 0.9207")


LABOR_CATEGORY_FIRST = rule_yaml(
    id="XX-0", title="A missing category becomes the senior one", when="labor_category == null", action="enrich",
    code="CATEGORY_SET", message="set", set="{labor_category: \"'SENIOR_CONSULTANT'\"}")


def test_a_lookup_is_done_again_when_an_earlier_rule_changes_what_it_reads(tmp_path: Path,
                                                                          snapshot: ReferenceSnapshot) -> None:
    ruleset = _ruleset(tmp_path, LABOR_CATEGORY_FIRST, QUOTE_RATE)
    assert ruleset.run is not None
    entry = {"entry_id": "E-3", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "assignment_id": "A-1",
             "work_date": "2026-11-03", "hours": "8"}
    [decision] = Evaluator(TIME_ENTRY, [ruleset], SnapshotBinder(TIME_ENTRY, snapshot), "s", "t").evaluate([entry])
    assert decision.codes == ["CATEGORY_SET", "RATE_FOUND"]
    assert decision.reasons[1].message.startswith("R-10 way 3")


def test_rows_one_way_finds_together_are_refused_when_the_ruleset_meets_the_data(
        tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    # Matching per-diem rows by location alone: the meals and the lodging caps of one place are both in force.
    ruleset = _ruleset(tmp_path, rule_yaml(when="cap != null", message="'{cap&.daily_cap}'"), lookups="""\
lookups:
  cap:
    table: per_diem_rate
    match:
      - {location: "custom['place'] ?? 'DEFAULT'"}
""")
    with pytest.raises(ProblemsError) as caught:
        Evaluator(TIME_ENTRY, [ruleset], SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id, "t")
    [problem] = caught.value.problems  # one example per way: enough to act on
    assert problem.subject == "cap"
    assert problem.line == line_with(Path(ruleset.path), "cap:")
    assert problem.message.startswith("lookups.cap: way 1 (location) finds more than one per_diem_rate row in force "
                                      f"on the same day in reference snapshot {snapshot.snapshot_id}: location ")
    assert problem.message.endswith("from (none) to (none) and from (none) to (none); correct the data or make the "
                                    "match more specific")


def test_a_reload_is_refused_when_new_rulesets_clash_with_the_data(tmp_path: Path) -> None:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets)
    runtime = Runtime(rulesets, REFDATA)
    before = runtime.generation
    write_ruleset(rulesets / "time_entry", rule_yaml(when="cap != null", message="'{cap&.daily_cap}'"),
                  name="60-clash.yaml", ruleset="clash", order=60,
                  extra="lookups:\n  cap:\n    table: per_diem_rate\n    match:\n      - {location: \"'DEFAULT'\"}\n")
    assert runtime.reload()  # refused: the problems
    assert runtime.generation is before
    assert "clash" not in [r.id for r in runtime.generation.rulesets.all]


# A lookup that finds a customer's exemption certificate by customer alone: fine while each customer has one.
CERTIFICATE_LOOKUP = """\
lookups:
  certificate:
    table: exemption_certificate
    match:
      - {customer_id: customer_id}
"""


def test_a_load_is_refused_when_its_data_clashes_with_the_lookups(tmp_path: Path) -> None:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets)
    (rulesets / "invoice_line" / "90-certificates.yaml").write_text(
        ruleset_yaml(rule_yaml(when="certificate != null", message="'{certificate&.certificate_id}'"),
                     ruleset="certificates", order=90, extra=CERTIFICATE_LOOKUP).replace(
            "applies_to: time_entry", "applies_to: invoice_line"), encoding="utf-8")
    refdata = Path(shutil.copytree(REFDATA, tmp_path / "refdata"))
    running = start(Settings(port=0, threads=2, rulesets=rulesets, refdata=REFDATA, log_level="warning"))
    try:
        with RefDataClient(f"127.0.0.1:{running.port}", timeout=30) as client:
            before = client.status().current.snapshot_id
            with (refdata / "exemption_certificates.csv").open("a", encoding="utf-8") as handle:
                handle.write("EC-103,CU-INITECH,US-HI,2026-06-01,\n")  # overlaps EC-101
            with pytest.raises(grpc.RpcError) as refused:
                client.load_directory(refdata)
            assert client.status().current.snapshot_id == before
    finally:
        running.stop()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "lookups.certificate: way 1 (customer_id) finds more than one exemption_certificate row in force on " \
           "the same day" in refused.value.details()
    assert "customer_id CU-INITECH from 2026-01-01 to 2027-12-31 and from 2026-06-01 to (none)" \
        in refused.value.details()


@pytest.mark.parametrize(("lookups", "message"), [
    ("  hours: {table: rate_card, match: [{rate_id: entry_id}]}",
     "lookups.hours: 'hours' is already a field, a record or params; choose another name"),
    ("  r: {table: rate_cards, match: [{rate_id: entry_id}]}", "lookups.r.table: no reference table 'rate_cards'"),
    ("  r: {table: rate_card, match: [{rate: entry_id}]}", "lookups.r.match: rate_card has no column 'rate'"),
    ("  r: {table: rate_card, match: [{rate_id: hours}]}",
     "lookups.r.match.rate_id: `hours` is float, rate_card.rate_id is string"),
    ("  r: {table: rate_card, match: [{rate_id: entry_id}], as_of: entry_id}",
     "lookups.r.as_of: `entry_id` is string, not a date"),
    ("  r: {table: rate_card, match: [{rate_id: entry_id}], latest_on_or_before: unit}",
     "lookups.r.latest_on_or_before: rate_card has no date column 'unit'"),
    ("  r: {table: rate_card, match: []}", "lookups.r.match: List should have at least 1 item"),
])
def test_a_bad_lookup_is_refused_naming_it(tmp_path: Path, lookups: str, message: str) -> None:
    path = write_ruleset(tmp_path, extra=f"lookups:\n{lookups}\n")
    problem = only_problem(path)
    assert problem.message.startswith(message), problem.message


def test_a_ruleset_test_gives_a_lookup_as_refs(tmp_path: Path) -> None:
    from tollgate.evaluators.ruleset_tests import run_ruleset_tests

    tests = """\
test_defaults:
  item: {entry_id: E-1, worker_id: W-1, project_id: P-100, task_id: T-1, work_date: 2026-11-03, hours: 8,
         labor_category: SENIOR_CONSULTANT}
  refs:
    project: {project_id: P-100, status: ACTIVE, start_date: 2026-01-01}
    task: {project_id: P-100, task_id: T-1}
    worker: {worker_id: W-1, status: ACTIVE, hire_date: 2020-01-01}
tests:
  - name: a rate found by the third way
    refs: {card_rate: {rate_id: R-10, scope: CONTRACT, scope_id: C-100, labor_category: SENIOR_CONSULTANT,
                       currency: USD, bill_rate: 165.00, precedence: 3}}
    expect: {outcome: accept, codes: [RATE_FOUND]}
  - name: no rate
    refs: {card_rate: null}
    expect: {outcome: accept}
"""
    ruleset = compile_ruleset(write_ruleset(tmp_path, QUOTE_RATE, extra=RATE_LOOKUPS, tests=tests))
    report = run_ruleset_tests(ruleset, ENGINE_VERSION)
    assert not report.failures, [str(f) for f in report.failures]
    assert len(report.passed) == 2
