"""Reference data: loading a snapshot, versions as of a date, refusing bad rows, and binding items to rows."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.items import ItemDecoder
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.fields import date_value
from tollgate.rules.item_kinds import TIME_ENTRY, ItemKind
from tollgate.rules.problems import ProblemsError
from tollgate.rules.typecheck import compile_ruleset

ROOT = Path(__file__).resolve().parent.parent
REFDATA = ROOT / "examples" / "refdata"

EXPECTED_COUNTS = {
    "project": 10,
    "task": 12,
    "worker": 6,
    "assignment": 12,
    "contract": 7,
    "rate_card": 9,
    "job_code": 3,
    "billing_hold": 2,
    "transaction_control": 2,
    "fx_rate": 42,
    "billed_item": 2,
    # expense lines
    "contract_line": 10,
    "contract_expense_term": 7,
    "expense_policy": 11,
    "per_diem_rate": 12,
    "mileage_rate": 4,
    # invoices
    "customer": 8,
    "tax_code": 7,
    "taxability": 5,
    "exemption_certificate": 2,
    "accounting_period": 5,
    "work_item": 17,
    "holiday": 7,
}


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


def copy_refdata(tmp_path: Path) -> Path:
    target = tmp_path / "refdata"
    shutil.copytree(REFDATA, target)
    return target


def replace_in(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (which must occur exactly once) and return the 1-based line it was on."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    return line


def append_rows(path: Path, *rows: str) -> list[int]:
    """Append CSV rows; return their 1-based line numbers."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    first = text.count("\n") + 1
    path.write_text(text + "".join(row + "\n" for row in rows), encoding="utf-8")
    return list(range(first, first + len(rows)))


def day(text: str) -> dt.datetime:
    return date_value(dt.date.fromisoformat(text))


# ---------------------------------------------------------------------------------------------------
# Loading


def test_sample_snapshot_loads_every_entity(snapshot: ReferenceSnapshot) -> None:
    assert snapshot.counts() == EXPECTED_COUNTS
    assert re.fullmatch(r"snap-[0-9a-f]{12}", snapshot.snapshot_id)
    assert snapshot.source == str(REFDATA)
    assert snapshot.loaded_at.tzinfo is not None


def test_rows_become_rule_values(snapshot: ReferenceSnapshot) -> None:
    contract = snapshot.table("contract").get(("C-300",), day("2026-06-01"))
    assert contract is not None
    assert contract["hours_per_day"] == Decimal("7.5")
    assert contract["bills_overtime"] is True
    assert contract["start_date"] == day("2026-03-01")
    assert contract["end_date"] == day("2026-12-31")
    project = snapshot.table("project").get(("P-400",), day("2026-06-01"))
    assert project is not None
    assert project["finish_date"] is None  # an empty cell is a missing value
    assert project["contract_id"] is None
    assert project["billable"] is False
    p600 = snapshot.table("project").get(("P-600",), day("2026-06-01"))
    assert p600 is not None
    assert p600["closed_for_time_at"] == dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


def test_snapshot_id_is_stable_and_follows_the_content(tmp_path: Path, snapshot: ReferenceSnapshot) -> None:
    again = load_snapshot(REFDATA)
    assert again.snapshot_id == snapshot.snapshot_id
    assert again.loaded_at >= snapshot.loaded_at
    copy = copy_refdata(tmp_path)
    # Same files elsewhere: the id names the data, not where it was read from.
    assert load_snapshot(copy).snapshot_id == snapshot.snapshot_id
    (copy / "README.txt").write_text("not an entity export", encoding="utf-8")
    assert load_snapshot(copy).snapshot_id == snapshot.snapshot_id
    replace_in(copy / "rate_cards.csv", "R-20,WORKER,W-2,CONSULTANT,USD,HOUR,130.00",
               "R-20,WORKER,W-2,CONSULTANT,USD,HOUR,131.00")
    changed = load_snapshot(copy)
    assert changed.snapshot_id != snapshot.snapshot_id
    assert load_snapshot(copy).snapshot_id == changed.snapshot_id


def test_a_missing_entity_file_is_an_empty_table(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "job_codes.csv").unlink()
    loaded = load_snapshot(copy)
    assert loaded.counts() == {**EXPECTED_COUNTS, "job_code": 0}
    assert loaded.snapshot_id != load_snapshot(REFDATA).snapshot_id


def test_jsonl_exports_load_too(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "job_codes.csv").unlink()
    (copy / "job_codes.jsonl").write_text(
        '{"job_code": "J-SENIOR", "labor_category": "SENIOR_CONSULTANT"}\n'
        "\n"
        '{"job_code": "J-CONS", "labor_category": "CONSULTANT", "effective_from": "2026-01-01"}\n',
        encoding="utf-8",
    )
    loaded = load_snapshot(copy)
    assert loaded.counts()["job_code"] == 2
    row = loaded.table("job_code").get(("J-CONS",), day("2026-02-01"))
    assert row is not None
    assert row["labor_category"] == "CONSULTANT"
    assert loaded.table("job_code").get(("J-CONS",), day("2025-12-31")) is None


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError, match="no such reference data directory"):
        load_snapshot(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------
# Versions as of a date


@pytest.mark.parametrize(
    ("on", "status"),
    [("2026-03-01", "ACTIVE"), ("2026-11-15", "ACTIVE"), ("2026-11-16", "CLOSED"), ("2027-06-30", "CLOSED")],
)
def test_project_version_as_of_a_date(snapshot: ReferenceSnapshot, on: str, status: str) -> None:
    row = snapshot.table("project").get(("P-300",), day(on))
    assert row is not None
    assert row["status"] == status


@pytest.mark.parametrize(
    ("on", "status"),
    [("2018-01-08", "ACTIVE"), ("2026-11-14", "ACTIVE"), ("2026-11-15", "TERMINATED"), ("2030-01-01", "TERMINATED")],
)
def test_worker_versions(snapshot: ReferenceSnapshot, on: str, status: str) -> None:
    row = snapshot.table("worker").get(("W-3",), day(on))
    assert row is not None
    assert row["status"] == status
    assert row["termination_date"] == day("2026-11-14")


def test_unknown_keys_have_no_version(snapshot: ReferenceSnapshot) -> None:
    assert snapshot.table("project").get(("P-999",), day("2026-11-03")) is None
    assert snapshot.table("task").get(("P-100", "T-9"), day("2026-11-03")) is None
    assert snapshot.table("task").get(("P-100", "T-1"), day("2026-11-03")) is not None


def test_a_version_not_yet_in_force(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    append_rows(copy / "job_codes.csv", "J-NEW,ARCHITECT,2026-12-01,")
    table = load_snapshot(copy).table("job_code")
    assert table.get(("J-NEW",), day("2026-11-30")) is None
    row = table.get(("J-NEW",), day("2026-12-01"))
    assert row is not None
    assert row["labor_category"] == "ARCHITECT"


# ---------------------------------------------------------------------------------------------------
# Bad rows are refused with file:line: field: message, and nothing is loaded


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("P-200,Globex annual audit,ACTIVE,CLIENT,true,FIXED_FEE,2026-02-01",
         "P-200,Globex annual audit,ACTIVE,CLIENT,true,FIXED_FEE,2026-02-30", "start_date", "date"),
        ("P-200,Globex annual audit,ACTIVE,CLIENT,true,FIXED_FEE,2026-02-01",
         "P-200,Globex annual audit,ACTIVE,CLIENT,maybe,FIXED_FEE,2026-02-01", "billable", "boolean"),
        ("P-200,Globex annual audit,ACTIVE,", "P-200,Globex annual audit,,", "status", "required"),
    ],
)
def test_bad_project_row(tmp_path: Path, old: str, new: str, field: str, words: str) -> None:
    copy = copy_refdata(tmp_path)
    path = copy / "projects.csv"
    line = replace_in(path, old, new)
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.subject) == (str(path), line, field)
    assert words in problem.message.lower()
    assert str(problem) == f"{path}:{line}: {field}: {problem.message}"


def test_bad_decimal(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    path = copy / "rate_cards.csv"
    line = replace_in(path, "R-10,CONTRACT,C-100,SENIOR_CONSULTANT,USD,HOUR,165.00",
                      "R-10,CONTRACT,C-100,SENIOR_CONSULTANT,USD,HOUR,1x5.00")
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    [problem] = caught.value.problems
    assert str(problem) == f"{path}:{line}: bill_rate: {problem.message}"
    assert "decimal" in problem.message.lower()


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    path = copy / "job_codes.csv"
    path.write_text("job_code,labour_category\nJ-SENIOR,SENIOR_CONSULTANT\n", encoding="utf-8")
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    subjects = {(p.line, p.subject) for p in caught.value.problems}
    assert subjects == {(2, "labour_category"), (2, "labor_category")}


def test_every_bad_row_in_every_file_is_reported(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    rates = copy / "rate_cards.csv"
    first = replace_in(rates, "R-2,STANDARD,,CONSULTANT,USD,HOUR,120.00", "R-2,STANDARD,,,USD,HOUR,120.00")
    second = replace_in(rates, "R-12,CONTRACT,C-100,PRINCIPAL,USD,DAY,1200.00,,2026-01-01",
                        "R-12,CONTRACT,C-100,PRINCIPAL,USD,DAY,1200.00,,2026-01-32")
    workers = copy / "workers.csv"
    third = replace_in(workers, "W-4,Margaret Hamilton,ACTIVE,2015-06-01",
                       "W-4,Margaret Hamilton,ACTIVE,yesterday")
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    found = {(Path(p.path).name, p.line, p.subject) for p in caught.value.problems}
    assert found == {
        ("rate_cards.csv", first, "labor_category"),
        ("rate_cards.csv", second, "effective_from"),
        ("workers.csv", third, "hire_date"),
    }
    # The exception's text lists every problem, one a line.
    assert len(str(caught.value).splitlines()) == 3


def test_overlapping_versions_are_refused(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    path = copy / "workers.csv"
    replace_in(path, "J-CONS,DE-BE,2026-11-15,", "J-CONS,DE-BE,2026-11-14,")
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    [problem] = caught.value.problems
    assert problem.path == str(path)
    assert problem.subject == "W-3"
    assert "overlap" in problem.message


def test_touching_versions_do_not_overlap(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    append_rows(copy / "job_codes.csv", "J-X,A,,2026-06-30", "J-X,B,2026-07-01,2026-09-30", "J-X,C,2026-10-01,")
    table = load_snapshot(copy).table("job_code")
    found = [table.get(("J-X",), day(d)) for d in ("2026-06-30", "2026-07-01", "2026-10-01")]
    assert [row and row["labor_category"] for row in found] == ["A", "B", "C"]


@pytest.mark.parametrize(
    "rows",
    [
        ("J-X,A,,", "J-X,B,,"),  # the same key twice, both open-ended
        ("J-X,A,2026-01-01,2026-06-30", "J-X,B,2026-06-30,"),  # sharing a day
        ("J-X,A,2026-01-01,", "J-X,B,2026-06-01,2026-07-01"),  # one inside an open-ended one
    ],
)
def test_overlap_shapes(tmp_path: Path, rows: tuple[str, str]) -> None:
    copy = copy_refdata(tmp_path)
    append_rows(copy / "job_codes.csv", *rows)
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    assert [p.subject for p in caught.value.problems] == ["J-X"]


def test_overlapping_rates_for_the_same_scope_and_category_are_refused(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    # R-10 is C-100's SENIOR_CONSULTANT rate until 2026-11-15; a second row for the same slot overlaps it.
    append_rows(copy / "rate_cards.csv", "R-13,CONTRACT,C-100,SENIOR_CONSULTANT,USD,HOUR,999.00,,2026-06-01,")
    with pytest.raises(ProblemsError):
        load_snapshot(copy)


# ---------------------------------------------------------------------------------------------------
# Binding items to reference rows


BASE_ENTRY = {
    "entry_id": "TE-1",
    "worker_id": "W-1",
    "project_id": "P-100",
    "task_id": "T-1",
    "work_date": "2026-11-03",
    "hours": "8",
}


def bind_item(snapshot: ReferenceSnapshot, kind: ItemKind, values: Mapping[str, Any]) -> dict[str, Any]:
    """Decode an item and resolve every binding of its kind in declaration order, as the evaluator does."""
    decoded = ItemDecoder(kind).decode(values, 1)
    assert not decoded.problems, decoded.problems
    scope: dict[str, Any] = dict(decoded.values)
    binder = SnapshotBinder(kind, snapshot)
    for binding in kind.bindings:
        scope[binding.name] = binder.bind(binding, scope)
    return scope


def bind_all(snapshot: ReferenceSnapshot, **entry: str) -> dict[str, Any]:
    return bind_item(snapshot, TIME_ENTRY, {**BASE_ENTRY, **entry})


RATE_CARDS = ROOT / "rulesets" / "time_entry" / "40-rate-cards.yaml"


def rate_of(snapshot: ReferenceSnapshot, **entry: str) -> tuple[str, Decimal, str, str] | None:
    """The rate row the shipped rate cards' ``lookups: rate`` finds (RC-1, RC-2), and where it was found."""
    lookup = next(lookup for lookup in compile_ruleset(RATE_CARDS).lookups if lookup.name == "rate")
    rate = SnapshotBinder(TIME_ENTRY, snapshot).lookup(lookup, bind_all(snapshot, **entry))
    if rate is None:
        return None
    where = f"{rate['scope']} {rate['scope_id']}".strip()
    return rate["rate_id"], rate["bill_rate"], rate["unit"], f"{where} (rate {rate['rate_id']})"


def test_core_bindings(snapshot: ReferenceSnapshot) -> None:
    scope = bind_all(snapshot)
    assert scope["project"]["project_id"] == "P-100"
    assert scope["task"]["name"] == "Build and configure"
    assert scope["worker"]["name"] == "Ada Byron"
    assert scope["job"]["labor_category"] == "SENIOR_CONSULTANT"
    assert rate_of(snapshot) is None  # no labor category on the entry: no rate


def test_worker_override_beats_standard(snapshot: ReferenceSnapshot) -> None:
    assert rate_of(snapshot, worker_id="W-2", labor_category="CONSULTANT") == (
        "R-20", Decimal("130.00"), "HOUR", "WORKER W-2 (rate R-20)",
    )
    # W-2's override also wins on a project that has its own CONSULTANT rate.
    assert rate_of(snapshot, worker_id="W-2", project_id="P-300", labor_category="CONSULTANT")[0] == "R-20"  # type: ignore[index]


def test_contract_rate_beats_standard(snapshot: ReferenceSnapshot) -> None:
    assert rate_of(snapshot, labor_category="SENIOR_CONSULTANT") == (
        "R-10", Decimal("165.00"), "HOUR", "CONTRACT C-100 (rate R-10)",
    )
    # The same category on a project without a contract falls back to the standard rate.
    assert rate_of(snapshot, project_id="P-400", labor_category="SENIOR_CONSULTANT") == (
        "R-1", Decimal("150.00"), "HOUR", "STANDARD (rate R-1)",
    )


def test_project_rate_beats_standard(snapshot: ReferenceSnapshot) -> None:
    found = rate_of(snapshot, worker_id="W-3", project_id="P-300", work_date="2026-11-10",
                    labor_category="CONSULTANT")
    assert found == ("R-30", Decimal("125.00"), "HOUR", "PROJECT P-300 (rate R-30)")


@pytest.mark.parametrize(
    ("on", "rate_id", "bill_rate"),
    [("2026-11-02", "R-10", "165.00"), ("2026-11-15", "R-10", "165.00"),
     ("2026-11-16", "R-11", "172.00"), ("2026-11-30", "R-11", "172.00")],
)
def test_rate_changes_mid_month(snapshot: ReferenceSnapshot, on: str, rate_id: str, bill_rate: str) -> None:
    found = rate_of(snapshot, work_date=on, labor_category="SENIOR_CONSULTANT")
    assert found is not None
    assert found[:2] == (rate_id, Decimal(bill_rate))


def test_day_rate_for_principal(snapshot: ReferenceSnapshot) -> None:
    assert rate_of(snapshot, worker_id="W-4", labor_category="PRINCIPAL") == (
        "R-12", Decimal("1200.00"), "DAY", "CONTRACT C-100 (rate R-12)",
    )
    assert rate_of(snapshot, worker_id="W-4", project_id="P-400", labor_category="PRINCIPAL")[:3] == (  # type: ignore[index]
        "R-3", Decimal("1600.00"), "DAY",
    )


def test_no_rate(snapshot: ReferenceSnapshot) -> None:
    assert rate_of(snapshot, labor_category="ASTRONAUT") is None
    assert rate_of(snapshot, labor_category="SENIOR_CONSULTANT", work_date="2025-12-31") is None


@pytest.mark.parametrize(
    ("removed", "winner"),
    [((), "R-W"), (("R-W",), "R-A"), (("R-W", "R-A"), "R-C"), (("R-W", "R-A", "R-C"), "R-P"),
     (("R-W", "R-A", "R-C", "R-P"), "R-S")],
)
def test_rate_precedence_most_specific_first(tmp_path: Path, removed: tuple[str, ...], winner: str) -> None:
    copy = copy_refdata(tmp_path)
    rows = {
        "R-S": "R-S,STANDARD,,TESTER,USD,HOUR,100.00,,,",
        "R-P": "R-P,PROJECT,P-100,TESTER,USD,HOUR,101.00,,,",
        "R-C": "R-C,CONTRACT,C-100,TESTER,USD,HOUR,102.00,,,",
        "R-A": "R-A,ASSIGNMENT,A-1,TESTER,USD,HOUR,103.00,,,",
        "R-W": "R-W,WORKER,W-1,TESTER,USD,HOUR,104.00,,,",
    }
    append_rows(copy / "rate_cards.csv", *(row for rate_id, row in rows.items() if rate_id not in removed))
    found = rate_of(load_snapshot(copy), labor_category="TESTER")
    assert found is not None
    assert found[0] == winner


def test_assignment_found_by_worker_and_project(snapshot: ReferenceSnapshot) -> None:
    assert bind_all(snapshot)["assignment"]["assignment_id"] == "A-1"
    assert bind_all(snapshot, project_id="P-600")["assignment"]["assignment_id"] == "A-5"
    assert bind_all(snapshot, worker_id="W-2", project_id="P-200")["assignment"]["assignment_id"] == "A-6"
    assert bind_all(snapshot, project_id="P-200")["assignment"] is None  # W-1 is not on P-200


def test_assignment_must_cover_the_work_date(snapshot: ReferenceSnapshot) -> None:
    assert bind_all(snapshot, worker_id="W-5", work_date="2026-10-31")["assignment"] is None
    assert bind_all(snapshot, worker_id="W-5", work_date="2026-11-01")["assignment"]["assignment_id"] == "A-7"
    w3 = {"worker_id": "W-3", "project_id": "P-300"}
    assert bind_all(snapshot, **w3, work_date="2026-11-15")["assignment"]["assignment_id"] == "A-3"
    assert bind_all(snapshot, **w3, work_date="2026-11-16")["assignment"] is None


def test_assignment_id_given_wins(snapshot: ReferenceSnapshot) -> None:
    assert bind_all(snapshot, assignment_id="A-8")["assignment"]["assignment_id"] == "A-8"
    assert bind_all(snapshot, assignment_id="A-404")["assignment"] is None


def test_assignment_choice_is_deterministic(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    append_rows(copy / "assignments.csv", "A-0,W-1,P-100,QA,2026-03-01,2026-12-31,",
                "A-9,W-1,P-100,QA,2025-12-01,2026-12-31,")
    loaded = load_snapshot(copy)
    assert bind_all(loaded)["assignment"]["assignment_id"] == "A-9"  # the earliest-starting


def test_assignment_rate_uses_the_found_assignment(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    append_rows(copy / "rate_cards.csv", "R-A5,ASSIGNMENT,A-5,SENIOR_CONSULTANT,USD,HOUR,180.00,,,")
    loaded = load_snapshot(copy)
    assert rate_of(loaded, project_id="P-600", labor_category="SENIOR_CONSULTANT")[0] == "R-A5"  # type: ignore[index]
    # On P-100 W-1's assignment is A-1, so the contract rate applies.
    assert rate_of(loaded, labor_category="SENIOR_CONSULTANT")[0] == "R-10"  # type: ignore[index]


def test_contract_via_project(snapshot: ReferenceSnapshot) -> None:
    assert bind_all(snapshot)["contract"]["contract_id"] == "C-100"
    contract = bind_all(snapshot, project_id="P-700")["contract"]
    assert contract["contract_id"] == "C-300"
    assert contract["hours_per_day"] == Decimal("7.5")
    assert bind_all(snapshot, project_id="P-400")["contract"] is None
    assert bind_all(snapshot, project_id="P-999")["contract"] is None  # no project, no contract


def test_job_via_worker(snapshot: ReferenceSnapshot) -> None:
    assert bind_all(snapshot, worker_id="W-4")["job"]["labor_category"] == "PRINCIPAL"
    assert bind_all(snapshot, worker_id="W-5")["job"] is None  # J-UNMAPPED has no row


def test_describe_missing(snapshot: ReferenceSnapshot, tmp_path: Path) -> None:
    binder = SnapshotBinder(TIME_ENTRY, snapshot)
    project = next(b for b in TIME_ENTRY.bindings if b.name == "project")
    scope = bind_all(snapshot, project_id="P-999")
    assert binder.describe_missing(project, scope) == (
        f"project P-999 is not in reference snapshot {snapshot.snapshot_id} (looked up as of 2026-11-03)"
    )
    task = next(b for b in TIME_ENTRY.bindings if b.name == "task")
    assert binder.describe_missing(task, bind_all(snapshot, task_id="T-9")).startswith("task P-100 / T-9 is not in")
    # A project whose only version starts later exists, but not on the work date.
    copy = copy_refdata(tmp_path)
    append_rows(copy / "projects.csv", "P-800,Later,ACTIVE,CLIENT,true,TM,2027-01-01,,false,,,,2027-01-01,")
    later = load_snapshot(copy)
    assert SnapshotBinder(TIME_ENTRY, later).describe_missing(project, bind_all(later, project_id="P-800")) == (
        f"project P-800 has no version in force on 2026-11-03 in reference snapshot {later.snapshot_id}"
    )
