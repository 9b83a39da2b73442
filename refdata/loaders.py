"""Reading reference exports (CSV, JSON Lines, Parquet) into validated rows, each with where it came from.

An export directory holds, per entity, one file (``projects.csv``, ``workers.jsonl``,
``rate_cards.parquet``) or one folder of files (``projects/part-0001.parquet``, ...) as ERP, PSA
and HR extracts often come in parts. A data file named after no entity is a problem (a misnamed
export would otherwise be silently missing); other files are ignored. Every row is
validated by its entity model; a bad row becomes a Problem naming the file, the line (the row
number for Parquet, counting from 1) and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from tollgate.rules.entities import ENTITIES, Entity
from tollgate.rules.problems import Problem

SUFFIXES = (".csv", ".jsonl", ".parquet")
PARQUET_BATCH_ROWS = 64 * 1024


@dataclass(frozen=True, slots=True)
class LocatedRow:
    """A validated row (rule values) and the place it was read from, for problems found later."""

    path: str
    line: int | None  # None for a row taken over from a snapshot rather than read from a file
    values: dict[str, Any]


def file_stem(entity: Entity) -> str:
    """The export name of an entity, without extension: ``rate_cards`` for rate_card, ``expense_policies``
    for expense_policy."""
    if entity.name.endswith("y") and entity.name[-2:-1] not in "aeiou":
        return entity.name[:-1] + "ies"
    return entity.name + "s"


def entity_files(directory: Path, entity: Entity, problems: list[Problem]) -> list[Path]:
    """The files holding ``entity``'s rows: one file, or every known file in its folder (sorted by name)."""
    stem = file_stem(entity)
    candidates = [directory / (stem + suffix) for suffix in SUFFIXES if (directory / (stem + suffix)).is_file()]
    folder = directory / stem
    if folder.is_dir():
        candidates.append(folder)
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        problems.append(Problem(str(directory), None, entity.name,
                                f"more than one export for {entity.name} ({names}); keep one"))
        return []
    if not candidates:
        return []
    if candidates[0].is_dir():
        return sorted(p for p in candidates[0].iterdir() if p.is_file() and p.suffix in SUFFIXES)
    return candidates


def _without_missing(raw: Mapping[str, Any]) -> dict[str, Any]:
    # An empty cell or a null is a missing value, so the model's defaults and nulls apply.
    return {k: v for k, v in raw.items() if v is not None and v != ""}


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            # An extra cell beyond the header lands under the None key; the model refuses it by name.
            cells = {("(extra cell)" if k is None else k): v for k, v in row.items()}
            yield reader.line_num, _without_missing(cells)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a JSON object: reported for that line alone."""

    reason: str


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """The objects of a JSON Lines file, each with its line number; blank lines are skipped."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadLine(f"not valid JSON: {error.msg} (column {error.colno})")
                continue
            yield number, value if isinstance(value, dict) else BadLine("not a JSON object")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    for number, value in json_lines(path):
        yield number, _without_missing(value) if isinstance(value, dict) else value


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no type information

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield number, _without_missing(row)


_READERS: dict[str, Any] = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}


def validate_row(entity: Entity, raw: Mapping[str, Any], path: str, line: int,
                 problems: list[Problem]) -> LocatedRow | None:
    """One raw row validated by the entity's model; on failure every bad field becomes a problem."""
    try:
        model = entity.model.model_validate(raw)
    except pydantic.ValidationError as error:
        for e in error.errors():
            name = ".".join(str(p) for p in e["loc"]) or "(row)"
            # The wire grammar's own words, without pydantic's "Value error, " before them.
            message = str(e["ctx"]["error"]) if e["type"] == "value_error" and "ctx" in e else e["msg"]
            problems.append(Problem(path, line, name, message))
        return None
    return LocatedRow(path, line, entity.native(model))


def read_file(entity: Entity, path: Path, problems: list[Problem]) -> list[LocatedRow]:
    """Validated rows of one export file; bad rows and unreadable files are added to ``problems``."""
    rows: list[LocatedRow] = []
    where = str(path)
    try:
        for line, raw in _READERS[path.suffix](path):
            if isinstance(raw, BadLine):
                problems.append(Problem(where, line, None, raw.reason))
                continue
            row = validate_row(entity, raw, where, line, problems)
            if row is not None:
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        problems.append(Problem(where, getattr(error, "lineno", None), None, f"cannot read: {error}"))
    except Exception as error:  # pyarrow raises its own errors for a file that is not Parquet
        if type(error).__module__.startswith("pyarrow"):
            problems.append(Problem(where, None, None, f"cannot read: {error}"))
        else:
            raise
    return rows


@dataclass(frozen=True, slots=True)
class ExportRows:
    """Everything read from one export directory: validated rows per entity and every problem found."""

    rows: dict[str, list[LocatedRow]]
    files: dict[str, list[Path]]
    problems: list[Problem]
    # Problems that make a load impossible even with --partial: an unreadable file, an ambiguous export.
    fatal: list[Problem]


def read_exports(directory: Path, entities: Iterable[Entity] = ENTITIES.values()) -> ExportRows:
    problems: list[Problem] = []
    fatal: list[Problem] = []
    rows: dict[str, list[LocatedRow]] = {}
    files: dict[str, list[Path]] = {}
    entities = list(entities)
    for entity in entities:
        found: list[Problem] = []
        files[entity.name] = entity_files(directory, entity, fatal)
        rows[entity.name] = [row for path in files[entity.name] for row in read_file(entity, path, found)]
        for problem in found:
            (problems if problem.line is not None else fatal).append(problem)
    # A data file named after no entity is most likely an export under the wrong name: its rows would
    # be silently missing, so it refuses the load (and is reported with --partial) rather than be ignored.
    stems = {file_stem(entity) for entity in entities}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in SUFFIXES and path.stem not in stems:
            problems.append(Problem(str(path), None, None,
                                    f"not an export of any entity (expected one of {', '.join(sorted(stems))})"))
    return ExportRows(rows, files, problems, fatal)
