"""The tests written inside ruleset files: they pass for the shipped rulesets, and they can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollgate.evaluators.ruleset_tests import RulesetTestReport, run_ruleset_tests
from tollgate.rules.loader import load_rulesets, ruleset_files
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset

RULESETS = Path(__file__).resolve().parent.parent / "rulesets"
ENGINE_VERSION = "test-engine"

HEADER = """\
ruleset: demo
version: 1.0.0
effective_from: 2026-01-01
applies_to: time_entry
order: 10
owner: qa@example.com
rounding: {places: 2, mode: half_up}
lookups:
  rate:
    table: rate_card
    match:
      - {scope: "'STANDARD'", scope_id: "''", labor_category: labor_category}
"""

RULES = """\
rules:
  - id: XX-1
    title: Hours within a day
    when: hours > 24
    action: reject
    code: TOO_MANY_HOURS
    field: hours
    message: "{hours} hours is more than a day"

  - id: XX-2
    title: Price from the rate
    requires: [rate]
    when: billable
    action: enrich
    set:
      bill_rate: rate.bill_rate
    code: PRICED
    message: "priced at {rate.bill_rate}"
"""

DEFAULTS = """\
test_defaults:
  item: {entry_id: TE-1, worker_id: W-1, project_id: P-100, task_id: T-1, work_date: 2026-11-03, hours: 8,
         labor_category: SENIOR_CONSULTANT}
  refs:
    project: {project_id: P-100, status: ACTIVE, start_date: 2026-01-05}
    rate: {rate_id: R-1, scope: STANDARD, labor_category: SENIOR_CONSULTANT, currency: USD, bill_rate: 150.00}
"""

PASSING_TESTS = """\
tests:
  - name: a day's work is priced
    expect: {outcome: enrich, codes: [PRICED], enriched: {bill_rate: 150.00}}

  - name: too many hours is rejected
    item: {hours: 25, billable: false}
    expect: {outcome: reject, codes: [TOO_MANY_HOURS]}

  - name: non-billable time is accepted as it is
    item: {billable: false}
    expect: {outcome: accept}
"""


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> CompiledRuleset:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return compile_ruleset(path)


def line_with(ruleset: CompiledRuleset, text: str) -> int:
    for number, line in enumerate(Path(ruleset.path).read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {ruleset.path}")


def run(ruleset: CompiledRuleset) -> RulesetTestReport:
    return run_ruleset_tests(ruleset, ENGINE_VERSION)


# ---------------------------------------------------------------------------------------------------
# The shipped rulesets


@pytest.mark.parametrize("path", ruleset_files(RULESETS), ids=lambda p: p.stem)
def test_shipped_ruleset_passes_with_full_coverage(path: Path) -> None:
    ruleset = compile_ruleset(path)
    report = run(ruleset)
    assert report.failures == [], "\n".join(str(p) for p in report.failures)
    assert report.uncovered == [], "\n".join(str(p) for p in report.uncovered)
    assert report.ok
    assert len(report.passed) == len(ruleset.spec.tests) > 0
    assert report.fired == {r.id for r in ruleset.rules} == report.quiet


def test_every_shipped_ruleset_file_is_tested() -> None:
    # The parametrised test above covers every ruleset the service would load.
    assert len(ruleset_files(RULESETS)) == len(load_rulesets(RULESETS).all) >= 4


# ---------------------------------------------------------------------------------------------------
# A ruleset of our own


def test_a_passing_ruleset(tmp_path: Path) -> None:
    report = run(write(tmp_path, HEADER + RULES + DEFAULTS + PASSING_TESTS))
    assert report.ok
    assert report.passed == [
        "a day's work is priced", "too many hours is rejected", "non-billable time is accepted as it is",
    ]
    assert report.failures == []


def test_wrong_outcome_fails_with_the_tests_line(tmp_path: Path) -> None:
    tests = PASSING_TESTS.replace("expect: {outcome: reject, codes: [TOO_MANY_HOURS]}",
                                  "expect: {outcome: accept}")
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    report = run(ruleset)
    assert not report.ok
    [failure] = report.failures
    assert failure.path == ruleset.path
    assert failure.line == line_with(ruleset, "- name: too many hours is rejected")
    assert failure.subject == "too many hours is rejected"
    assert "outcome reject, expected accept" in failure.message
    assert "codes ['TOO_MANY_HOURS'], expected []" in failure.message
    # The reasons the item got are listed to help whoever reads the failure.
    assert "reason XX-1 TOO_MANY_HOURS: 25 hours is more than a day" in failure.message
    assert report.passed == ["a day's work is priced", "non-billable time is accepted as it is"]
    assert str(failure).startswith(f"{ruleset.path}:{failure.line}: too many hours is rejected: ")


def test_wrong_enriched_value_fails(tmp_path: Path) -> None:
    tests = PASSING_TESTS.replace("enriched: {bill_rate: 150.00}", "enriched: {bill_rate: 155.00}")
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    [failure] = run(ruleset).failures
    assert failure.line == line_with(ruleset, "- name: a day's work is priced")
    assert "bill_rate enriched to 150.00, expected 155.00" in failure.message


def test_enriched_values_compare_as_values(tmp_path: Path) -> None:
    # 150 and 150.00 are the same money; the comparison is by value, not by text.
    tests = PASSING_TESTS.replace("enriched: {bill_rate: 150.00}", "enriched: {bill_rate: 150}")
    assert run(write(tmp_path, HEADER + RULES + DEFAULTS + tests)).ok


def test_expected_enrichment_that_did_not_happen_fails(tmp_path: Path) -> None:
    tests = PASSING_TESTS.replace(
        "expect: {outcome: accept}", "expect: {outcome: accept, enriched: {bill_rate: 150.00}}"
    )
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    [failure] = run(ruleset).failures
    assert failure.line == line_with(ruleset, "- name: non-billable time is accepted as it is")
    assert "bill_rate was not enriched, expected 150.00" in failure.message


def test_wrong_codes_fail(tmp_path: Path) -> None:
    tests = PASSING_TESTS.replace("codes: [PRICED]", "codes: [PRICED, TOO_MANY_HOURS]")
    [failure] = run(write(tmp_path, HEADER + RULES + DEFAULTS + tests)).failures
    assert failure.subject == "a day's work is priced"
    assert "codes ['PRICED'], expected ['PRICED', 'TOO_MANY_HOURS']" in failure.message
    assert "outcome" not in failure.message.split("\n")[0]  # the outcome was right


def test_bad_refs_fail_the_test(tmp_path: Path) -> None:
    tests = PASSING_TESTS + """\
  - name: refs of a binding time entries do not have
    refs: {customer: {customer_id: CU-1}}
    expect: {outcome: accept}
"""
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    [failure] = run(ruleset).failures
    assert failure.line == line_with(ruleset, "- name: refs of a binding")
    assert failure.message.startswith("bad refs: refs.customer:")


def test_a_missing_required_ref_rejects_the_item(tmp_path: Path) -> None:
    rules = RULES + """\
  - id: XX-3
    title: Project must be open
    when: project.status != 'ACTIVE'
    action: reject
    code: PROJECT_CLOSED
    message: closed
"""
    tests = """\
tests:
  - name: without the project the item is rejected, naming the missing ref
    refs: {project: null}
    expect: {outcome: enrich, codes: [PRICED]}
"""
    [failure] = run(write(tmp_path, HEADER + rules + DEFAULTS + tests)).failures
    assert "outcome reject, expected enrich" in failure.message
    assert "REFERENCE_DATA_MISSING: project is not given in the test's refs" in failure.message


def test_refs_merge_over_defaults(tmp_path: Path) -> None:
    tests = """\
tests:
  - name: a test changes one attribute of a default ref
    refs: {rate: {bill_rate: 199.99}}
    expect: {outcome: enrich, codes: [PRICED], enriched: {bill_rate: 199.99}}

  - name: a test removes a default ref
    refs: {rate: null}
    expect: {outcome: accept}

  - name: too many hours
    item: {hours: 30}
    expect: {outcome: reject, codes: [TOO_MANY_HOURS]}
"""
    report = run(write(tmp_path, HEADER + RULES + DEFAULTS + tests))
    assert report.failures == [], [str(p) for p in report.failures]
    assert report.ok


# ---------------------------------------------------------------------------------------------------
# Coverage


def test_a_rule_no_test_fires_is_uncovered(tmp_path: Path) -> None:
    tests = PASSING_TESTS.replace("""\
  - name: too many hours is rejected
    item: {hours: 25, billable: false}
    expect: {outcome: reject, codes: [TOO_MANY_HOURS]}
""", "")
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    report = run(ruleset)
    assert report.failures == []
    assert not report.ok
    [uncovered] = report.uncovered
    assert uncovered.subject == "XX-1"
    assert uncovered.line == line_with(ruleset, "- id: XX-1")
    assert uncovered.message == "no test in which the rule fires"


def test_a_rule_every_test_fires_is_uncovered(tmp_path: Path) -> None:
    tests = """\
tests:
  - name: priced
    expect: {outcome: enrich, codes: [PRICED]}

  - name: a longer day, priced
    item: {hours: 10}
    expect: {outcome: enrich, codes: [PRICED]}
"""
    ruleset = write(tmp_path, HEADER + RULES + DEFAULTS + tests)
    report = run(ruleset)
    assert report.failures == [], [str(p) for p in report.failures]
    assert [(p.subject, p.line, p.message) for p in report.uncovered] == [
        ("XX-1", line_with(ruleset, "- id: XX-1"), "no test in which the rule fires"),
        ("XX-2", line_with(ruleset, "- id: XX-2"), "no test in which the rule does not fire"),
    ]
    assert not report.ok


def test_a_ruleset_without_tests_covers_nothing(tmp_path: Path) -> None:
    report = run(write(tmp_path, HEADER + RULES))
    assert report.passed == []
    assert report.failures == []
    assert [(p.subject, p.message) for p in report.uncovered] == [
        ("XX-1", "no test in which the rule fires or does not fire"),
        ("XX-2", "no test in which the rule fires or does not fire"),
    ]
    assert not report.ok


def test_an_enrich_rule_firing_in_a_rejected_test_is_not_counted_as_quiet(tmp_path: Path) -> None:
    # XX-2 (enrich, info) fires in both tests; only the second test's decision is rejected.
    tests = """\
tests:
  - name: priced
    expect: {outcome: enrich, codes: [PRICED]}

  - name: too many hours, priced then rejected
    item: {hours: 25}
    expect: {outcome: reject, codes: [TOO_MANY_HOURS]}
"""
    report = run(write(tmp_path, HEADER + RULES + DEFAULTS + tests))
    assert report.failures == [], [str(p) for p in report.failures]
    # No test shows XX-2 not firing, so it is not fully covered.
    assert [(p.subject, p.message) for p in report.uncovered] == [
        ("XX-2", "no test in which the rule does not fire"),
    ]


def test_a_test_can_expect_a_field_cleared(tmp_path: Path) -> None:
    rules = """\
rules:
  - id: XX-9
    title: Clear unknown activity codes
    requires: [activity_code]
    when: activity_code == 'UNKNOWN'
    action: enrich
    set:
      activity_code: correction_of  # null unless the entry is a correction
    code: ACTIVITY_CLEARED
    message: cleared
"""
    tests = """\
tests:
  - name: an unknown activity code is cleared
    item: {activity_code: UNKNOWN}
    expect: {outcome: enrich, codes: [ACTIVITY_CLEARED], enriched: {activity_code: null}}

  - name: a known activity code is kept
    item: {activity_code: DELIVERY}
    expect: {outcome: accept}
"""
    report = run(write(tmp_path, HEADER + rules + DEFAULTS + tests))
    assert report.failures == [], [str(p) for p in report.failures]
    assert report.ok
