"""Loading exports as CSV, JSON Lines and Parquet, per file or folder; partial loads; changes; diffs; ids."""

from __future__ import annotations

import csv
import gzip
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
    assert problem.message.startswith("not an export of any entity (an export is ENTITY.csv, .jsonl, .parquet, "
                                      ".csv.gz or .jsonl.gz, or a folder ENTITY/ of them; entities: "
                                      "accounting_periods, assignments, ")
    with pytest.raises(ProblemsError):  # even partial: its rows would be missing without a word
        load_exports(copy, partial=True)


@pytest.mark.parametrize(("name", "meant"), [
    ("Projects.csv", "did you mean projects.csv?"),
    ("projects.CSV", "did you mean projects.csv?"),
    ("project.csv", "did you mean projects.csv?"),
    ("PROJECT.jsonl", "did you mean projects.jsonl?"),
    ("expense_policy.csv.gz", "did you mean expense_policies.csv.gz?"),
    ("rate-cards.parquet", "did you mean rate_cards.parquet?"),
    ("projcts.csv", "did you mean projects.csv?"),
    ("projects.txt", "did you mean projects.csv?: .txt is not read"),
    ("projects.tsv", "did you mean projects.csv?: .tsv is not read"),
    ("projects.parquet.gz", "did you mean projects.parquet?: Parquet compresses its own pages"),
    ("projects.csv.zip", "did you mean projects.csv.gz?: only gzip"),
    ("Projects", "not a folder of any entity's exports; did you mean projects/?"),
])
def test_an_export_under_a_near_name_is_refused_with_the_name_it_meant(tmp_path: Path, name: str,
                                                                      meant: str) -> None:
    copy = copy_refdata(tmp_path)
    projects = copy / "projects.csv"
    if name == "Projects":
        (copy / name).mkdir()
        projects.rename(copy / name / "part-1.csv")
    else:
        projects.rename(copy / name)
    (copy / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    (copy / "_SUCCESS").write_bytes(b"")
    with pytest.raises(ProblemsError) as refused:
        load_exports(copy)
    [problem] = refused.value.problems
    assert (Path(problem.path).name, problem.line) == (name, None)
    assert meant in problem.message


def test_a_folder_of_an_entity_holds_only_export_files(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    folder = copy / "projects"
    folder.mkdir()
    (copy / "projects.csv").rename(folder / "part-1.csv")
    (folder / "part-2.xlsx").write_bytes(b"PK")
    (folder / "older").mkdir()
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    with pytest.raises(ProblemsError) as refused:
        load_exports(copy)
    assert sorted(Path(p.path).name for p in refused.value.problems) == ["older", "part-2.xlsx"]
    assert all("a folder of project exports holds" in p.message for p in refused.value.problems)


def test_gzipped_csv_and_jsonl_exports_are_read(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    for name in ("projects.csv", "workers.csv"):
        (copy / (name + ".gz")).write_bytes(gzip.compress((copy / name).read_bytes()))
        (copy / name).unlink()
    _as_jsonl(copy / "tasks.csv", copy / "tasks.jsonl")
    (copy / "tasks.csv").unlink()
    (copy / "tasks.jsonl.gz").write_bytes(gzip.compress((copy / "tasks.jsonl").read_bytes()))
    (copy / "tasks.jsonl").unlink()
    assert load_snapshot(copy).snapshot_id == load_snapshot(REFDATA).snapshot_id
    (copy / "projects.csv").write_bytes(gzip.decompress((copy / "projects.csv.gz").read_bytes()))
    with pytest.raises(ProblemsError, match=r"more than one export for project \(projects.csv, projects.csv.gz\)"):
        load_exports(copy)
    (copy / "projects.csv").unlink()
    (copy / "projects.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(ProblemsError) as refused:
        load_exports(copy, partial=True)
    [problem] = refused.value.problems
    assert (Path(problem.path).name, problem.line) == ("projects.csv.gz", None)
    assert problem.message.startswith("cannot read: Not a gzipped file")


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


def _problem(directory: Path, *, partial: bool = False) -> tuple[str, int | None, str | None, str]:
    with pytest.raises(ProblemsError) as refused:
        load_exports(directory, partial=partial)
    [problem] = refused.value.problems
    return Path(problem.path).name, problem.line, problem.subject, problem.message


def test_bytes_that_are_not_utf8_are_refused_at_their_line(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    lines = (copy / "projects.csv").read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b",Caf\xe9 ", 1)  # Latin-1, as a spreadsheet may save it
    (copy / "projects.csv").write_bytes(b"\n".join(lines))
    name, line, _, message = _problem(copy, partial=True)  # even partial: the rows after it are unknown
    assert (name, line) == ("projects.csv", 4)
    assert message.startswith("cannot read on: not UTF-8: byte 0xe9 at byte ")
    (copy / "projects.csv.gz").write_bytes(gzip.compress((copy / "projects.csv").read_bytes()))
    (copy / "projects.csv").unlink()
    assert _problem(copy)[:2] == ("projects.csv.gz", 4)


def test_a_byte_order_mark_is_read_as_nothing(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "projects.csv").write_bytes(b"\xef\xbb\xbf" + (copy / "projects.csv").read_bytes())
    _as_jsonl(copy / "workers.csv", copy / "workers.jsonl")
    (copy / "workers.csv").unlink()
    (copy / "workers.jsonl").write_bytes(b"\xef\xbb\xbf" + (copy / "workers.jsonl").read_bytes())
    assert load_snapshot(copy).snapshot_id == load_snapshot(REFDATA).snapshot_id


def test_a_cell_over_128_kib_is_refused_at_its_line(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    replace_in(copy / "projects.csv", "Acme ERP rollout", "x" * (128 * 1024 + 1))
    line = next(number for number, text in enumerate((copy / "projects.csv").read_text().splitlines(), start=1)
                if "xxxx" in text)
    name, at, _, message = _problem(copy, partial=True)
    assert (name, at) == ("projects.csv", line)
    assert message.startswith("cannot read on: a cell longer than 131,072 characters (128 KiB)")
    copy = copy_refdata(tmp_path / "jsonl")
    _as_jsonl(copy / "projects.csv", copy / "projects.jsonl")
    (copy / "projects.csv").unlink()
    replace_in(copy / "projects.jsonl", "Acme ERP rollout", "x" * (128 * 1024 + 1))
    name, at, _, message = _problem(copy)
    assert (name, at) == ("projects.jsonl", line - 1)
    assert message.startswith("name: longer than 131,072 characters")
    assert len(load_exports(copy, partial=True).rejected) == 1  # in JSON Lines, only that line is lost


def test_an_effective_range_that_ends_before_it_starts_is_refused_at_file_line_field(tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    with (copy / "workers.csv").open("a", encoding="utf-8") as handle:
        handle.write("W-BACK,Back Wards,ACTIVE,2026-01-01,,false,J-SENIOR,US-NY,2026-06-01,2026-05-31\n")
    header = (copy / "workers.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["effective_from", "effective_to"], header
    lines = len((copy / "workers.csv").read_text().splitlines())
    assert _problem(copy) == ("workers.csv", lines, "effective_to",
                              "2026-05-31 is before effective_from 2026-06-01: the row would never be in force")
    base = load_snapshot(REFDATA)
    with pytest.raises(ProblemsError, match="is before effective_from"):
        apply_changes(base, "project", upserts=[{"project_id": "P-1", "name": "n", "status": "ACTIVE",
                                                 "start_date": "2026-01-05", "finish_date": "2026-12-31",
                                                 "contract_id": "C-100", "customer_id": "CU-ACME",
                                                 "effective_from": "2026-02-01", "effective_to": "2026-01-31"}])
