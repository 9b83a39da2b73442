"""Loading exports as CSV, JSON Lines and Parquet, per file or folder; partial loads; changes; diffs; ids."""

from __future__ import annotations

import csv
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_reference_data import REFDATA, copy_refdata, day, replace_in
from tollgate.refdata import codec
from tollgate.refdata.diff import diff_snapshots
from tollgate.refdata.snapshot import apply_changes, build_table, load_exports, load_snapshot
from tollgate.rules.problems import ProblemsError


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _as_jsonl(source: Path, target: Path) -> None:
    rows = [{k: v for k, v in row.items() if v != ""} for row in _csv_rows(source)]
    target.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _as_parquet(source: Path, target: Path) -> None:
    rows = _csv_rows(source)
    columns = {name: [row[name] or None for row in rows] for name in rows[0]}
    pq.write_table(pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()}), target)


def test_the_same_data_in_every_format_is_the_same_snapshot(tmp_path: Path) -> None:
    expected = load_snapshot(REFDATA)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for index, source in enumerate(sorted(REFDATA.glob("*.csv"))):
        stem = source.stem
        if index % 3 == 0:
            shutil.copy(source, mixed / source.name)
        elif index % 3 == 1:
            _as_jsonl(source, mixed / f"{stem}.jsonl")
        else:
            _as_parquet(source, mixed / f"{stem}.parquet")
    loaded = load_snapshot(mixed)
    assert loaded.counts() == expected.counts()
    # The id is a hash of the content, not of the files: format, paths and row order do not matter.
    assert loaded.snapshot_id == expected.snapshot_id
    rate = loaded.table("rate_card").get(("R-10",), day("2026-11-03"))
    assert rate is not None
    assert rate["bill_rate"] == Decimal("165.00")


def test_an_entity_may_come_as_a_folder_of_parts(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    rows = _csv_rows(copy / "projects.csv")
    (copy / "projects.csv").unlink()
    folder = copy / "projects"
    folder.mkdir()
    header = list(rows[0])
    for part, chunk in enumerate((rows[:3], rows[3:])):
        with (folder / f"part-{part}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, header)
            writer.writeheader()
            writer.writerows(chunk)
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    assert load_snapshot(copy).snapshot_id == load_snapshot(REFDATA).snapshot_id


def test_two_exports_of_one_entity_are_refused_even_when_partial(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    _as_jsonl(copy / "workers.csv", copy / "workers.jsonl")
    with pytest.raises(ProblemsError, match=r"more than one export for worker \(workers.csv, workers.jsonl\)"):
        load_exports(copy, partial=True)


def test_a_misnamed_export_is_refused_not_silently_ignored(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "billed_items.csv").rename(copy / "billed_entries.csv")
    (copy / "README.txt").write_text("exported nightly from the ERP\n", encoding="utf-8")  # not data: ignored
    with pytest.raises(ProblemsError) as refused:
        load_exports(copy)
    [problem] = refused.value.problems
    assert problem.path == str(copy / "billed_entries.csv")
    assert problem.message.startswith("not an export of any entity (expected one of accounting_periods, assignments, ")
    partial = load_exports(copy, partial=True)  # with --partial: loaded without it, and said so
    assert [p.path for p in partial.rejected] == [str(copy / "billed_entries.csv")]


def test_bad_rows_in_jsonl_and_parquet_name_file_line_and_field(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "job_codes.csv").unlink()
    (copy / "job_codes.jsonl").write_text(
        '{"job_code": "J-A", "labor_category": "A"}\n'
        "not json\n"
        '{"job_code": "J-B"}\n'
        '["a list"]\n',
        encoding="utf-8",
    )
    (copy / "workers.csv").unlink()
    pq.write_table(pa.table({
        "worker_id": ["W-1", "W-2"], "status": ["ACTIVE", "ACTIVE"], "hire_date": ["2020-01-01", "someday"],
    }), copy / "workers.parquet")
    with pytest.raises(ProblemsError) as caught:
        load_snapshot(copy)
    found = {(Path(p.path).name, p.line, p.subject) for p in caught.value.problems}
    assert found == {
        ("job_codes.jsonl", 2, None),
        ("job_codes.jsonl", 3, "labor_category"),
        ("job_codes.jsonl", 4, None),
        ("workers.parquet", 2, "hire_date"),
    }
    messages = {str(p) for p in caught.value.problems}
    assert any("job_codes.jsonl:2: not valid JSON" in m for m in messages)
    assert any("job_codes.jsonl:4: not a JSON object" in m for m in messages)


def test_an_unreadable_parquet_file_refuses_the_load(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "job_codes.csv").unlink()
    (copy / "job_codes.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(ProblemsError, match=r"job_codes\.parquet: cannot read"):
        load_exports(copy, partial=True)


def test_a_partial_load_keeps_good_rows_and_reports_every_bad_one(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    path = copy / "projects.csv"
    bad = replace_in(path, "P-200,Globex annual audit,ACTIVE,", "P-200,Globex annual audit,,")
    with pytest.raises(ProblemsError):
        load_exports(copy)
    loaded = load_exports(copy, partial=True)
    assert [(p.path, p.line, p.subject) for p in loaded.rejected] == [(str(path), bad, "status")]
    assert loaded.snapshot.counts()["project"] == load_snapshot(REFDATA).counts()["project"] - 1
    assert loaded.snapshot.table("project").get(("P-200",), day("2026-11-03")) is None
    assert loaded.snapshot.table("project").get(("P-100",), day("2026-11-03")) is not None


def test_a_partial_load_leaves_out_the_later_of_two_overlapping_versions(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "job_codes.csv").write_text(
        "job_code,labor_category,effective_from,effective_to\nJ-X,A,2026-01-01,\nJ-X,B,2026-06-01,\n",
        encoding="utf-8")
    loaded = load_exports(copy, partial=True)
    [problem] = loaded.rejected
    assert (problem.line, problem.subject) == (3, "J-X")
    assert "overlaps the version on line 2" in problem.message
    row = loaded.snapshot.table("job_code").get(("J-X",), day("2026-07-01"))
    assert row is not None
    assert row["labor_category"] == "A"


def test_tables_round_trip_through_their_encoding() -> None:
    snapshot = load_snapshot(REFDATA)
    for name, table in snapshot.tables.items():
        encoded = codec.encode_rows(table.entity, table.by_key)
        assert codec.digest(encoded) == snapshot.digests[name]
        entity, rows = codec.decode_rows(codec.decompress(codec.compress(encoded)))
        assert build_table(entity, rows).by_key == table.by_key


# ---------------------------------------------------------------------------------------------------
# Upserts and deletes


def test_closing_a_project_now_is_an_upsert_of_its_versions() -> None:
    base = load_snapshot(REFDATA)
    changed = apply_changes(base, "project", upserts=[
        {"project_id": "P-100", "name": "Acme ERP rollout", "status": "ACTIVE", "start_date": "2026-01-05",
         "contract_id": "C-100", "effective_to": "2026-11-19"},
        {"project_id": "P-100", "name": "Acme ERP rollout", "status": "CLOSED", "start_date": "2026-01-05",
         "contract_id": "C-100", "effective_from": "2026-11-20"},
    ])
    assert changed.snapshot_id != base.snapshot_id
    assert changed.source == f"upsert project P-100 on {base.snapshot_id}"
    table = changed.table("project")
    assert [table.get(("P-100",), day(d))["status"] for d in ("2026-11-19", "2026-11-20")] == [  # type: ignore[index]
        "ACTIVE", "CLOSED"]
    assert base.table("project").get(("P-100",), day("2026-11-20"))["status"] == "ACTIVE"  # type: ignore[index]
    # Only the changed table is new; the others are shared with the base.
    assert {n for n in changed.digests if changed.digests[n] != base.digests[n]} == {"project"}
    assert changed.tables["worker"] is base.tables["worker"]


def test_deleting_what_was_upserted_gives_back_the_same_snapshot_id() -> None:
    base = load_snapshot(REFDATA)
    added = apply_changes(base, "worker", upserts=[{"worker_id": "W-9", "status": "ACTIVE",
                                                    "hire_date": "2026-11-01"}])
    assert added.counts()["worker"] == base.counts()["worker"] + 1
    removed = apply_changes(added, "worker", deletes=[("W-9",)])
    assert removed.snapshot_id == base.snapshot_id
    assert diff_snapshots(base, added)[0].added == ["W-9"]


def test_bad_changes_are_refused_with_every_problem() -> None:
    base = load_snapshot(REFDATA)
    with pytest.raises(ProblemsError) as caught:
        apply_changes(base, "worker", upserts=[{"worker_id": "W-9", "status": "ACTIVE", "hire_date": "soon"},
                                               {"worker_id": "W-8", "hire_date": "2026-01-01"}])
    assert [str(p) for p in caught.value.problems] == [
        "upsert worker:1: hire_date: 'soon' is not a date (expected YYYY-MM-DD)",
        "upsert worker:2: status: Field required",
    ]
    with pytest.raises(ProblemsError, match="P-999 is not in snapshot"):
        apply_changes(base, "project", deletes=[("P-999",)])
    with pytest.raises(ProblemsError, match="unknown entity 'planet'"):
        apply_changes(base, "planet", deletes=[("X",)])


def test_an_upsert_may_not_overlap_another_rate_for_the_same_slot() -> None:
    base = load_snapshot(REFDATA)
    # R-10 is C-100's SENIOR_CONSULTANT rate until 2026-11-15: a new rate id for that slot must not overlap it.
    with pytest.raises(ProblemsError, match="overlaps"):
        apply_changes(base, "rate_card", upserts=[{
            "rate_id": "R-99", "scope": "CONTRACT", "scope_id": "C-100", "labor_category": "SENIOR_CONSULTANT",
            "currency": "USD", "bill_rate": "1.00", "effective_from": "2026-06-01"}])


def test_diff_names_added_removed_and_changed_keys() -> None:
    base = load_snapshot(REFDATA)
    step = apply_changes(base, "project", deletes=[("P-400",)])
    step = apply_changes(step, "task", upserts=[{"project_id": "P-100", "task_id": "T-1", "name": "Renamed"}])
    step = apply_changes(step, "job_code", upserts=[{"job_code": "J-NEW", "labor_category": "ARCHITECT"}])
    assert [(d.entity, d.added, d.removed, d.changed) for d in diff_snapshots(base, step)] == [
        ("job_code", ["J-NEW"], [], []),
        ("project", [], ["P-400"], []),
        ("task", [], [], ["P-100/T-1"]),
    ]
    assert diff_snapshots(step, step) == []
