"""Reference data (projects, workers, contracts, rate cards...) as an immutable, versioned snapshot.

A snapshot is loaded from export files, one per entity (``projects.csv``, ``workers.jsonl``, ...).
Every row is validated by its entity model; a bad row is reported with file, line and field, and a
load with any bad row changes nothing. Rows of one key with several effective ranges are versions;
lookups return the version in force on the item's business date, never the server clock.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from rules.problems import Problem, ProblemsError
from rules.schema import ENTITIES, Entity

Row = Mapping[str, Any]


def file_stem(entity: Entity) -> str:
    """The export file name of an entity, without extension: ``rate_cards`` for rate_card."""
    return entity.name + "s"


def _in_force(row: Row, day: dt.datetime) -> bool:
    start, end = row["effective_from"], row["effective_to"]
    return (start is None or start <= day) and (end is None or day <= end)


def version_as_of(versions: Sequence[Row], day: dt.datetime) -> Row | None:
    for row in versions:
        if _in_force(row, day):
            return row
    return None


@dataclass(slots=True)
class Table:
    """The rows of one entity, indexed by key; more indexes are built on first use."""

    entity: Entity
    by_key: dict[tuple[Any, ...], list[Row]]
    _indexes: dict[tuple[str, ...], dict[tuple[Any, ...], list[Row]]] = field(default_factory=dict)
    # Keys with a single version in force at all times, as most are: found without looking at dates.
    _timeless: dict[tuple[Any, ...], Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._timeless = {
            key: versions[0]
            for key, versions in self.by_key.items()
            if len(versions) == 1 and versions[0]["effective_from"] is None and versions[0]["effective_to"] is None
        }

    def get(self, key: tuple[Any, ...], day: dt.datetime) -> Row | None:
        row = self._timeless.get(key)
        if row is not None:
            return row
        versions = self.by_key.get(key)
        return version_as_of(versions, day) if versions else None

    def find(self, fields: tuple[str, ...], values: tuple[Any, ...]) -> list[Row]:
        """All rows (every version) whose ``fields`` equal ``values``."""
        index = self._indexes.get(fields)
        if index is None:
            index = defaultdict(list)
            for versions in self.by_key.values():
                for row in versions:
                    index[tuple(row[f] for f in fields)].append(row)
            self._indexes[fields] = index = dict(index)
        return index.get(values, [])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_key.values())


@dataclass(frozen=True, slots=True)
class ReferenceSnapshot:
    snapshot_id: str
    source: str
    loaded_at: dt.datetime
    tables: Mapping[str, Table]

    def table(self, entity: str) -> Table:
        return self.tables[entity]

    def counts(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            # Empty cells are missing values, so the model's defaults and nulls apply.
            yield reader.line_num, {k: v for k, v in row.items() if k is not None and v not in ("", None)}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, json.loads(line)


def _read_rows(entity: Entity, path: Path, problems: list[Problem]) -> list[tuple[int, dict[str, Any]]]:
    """Validated rows, each with its line in the file."""
    reader = _csv_rows if path.suffix == ".csv" else _jsonl_rows
    rows = []
    try:
        for line, raw in reader(path):
            try:
                rows.append((line, entity.native(entity.model.model_validate(raw))))
            except pydantic.ValidationError as error:
                for e in error.errors():
                    name = ".".join(str(p) for p in e["loc"]) or "(row)"
                    problems.append(Problem(str(path), line, name, e["msg"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        problems.append(Problem(str(path), getattr(error, "lineno", None), None, f"cannot read: {error}"))
    return rows


def _starts(row: Row) -> dt.datetime:
    return row["effective_from"] or dt.datetime.min.replace(tzinfo=dt.UTC)


def _check_versions(entity: Entity, path: Path, rows: list[tuple[int, dict[str, Any]]],
                    problems: list[Problem]) -> None:
    """Versions of one thing must not overlap in time: which one is in force has to be unambiguous."""
    groups: dict[tuple[Any, ...], list[tuple[int, Row]]] = defaultdict(list)
    for line, row in rows:
        groups[tuple(row[k] for k in entity.versioned_by)].append((line, row))
    for key, versions in groups.items():
        versions.sort(key=lambda version: _starts(version[1]))
        for (earlier_line, earlier), (line, later) in itertools.pairwise(versions):
            end = earlier["effective_to"]
            if end is None or later["effective_from"] is None or later["effective_from"] <= end:
                problems.append(Problem(
                    str(path), line, "/".join(map(str, key)),
                    f"effective range overlaps the version on line {earlier_line}",
                ))


def _table(entity: Entity, path: Path, rows: list[tuple[int, dict[str, Any]]], problems: list[Problem]) -> Table:
    _check_versions(entity, path, rows, problems)
    by_key: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    first_line: dict[tuple[Any, ...], int] = {}
    for line, row in rows:
        key = tuple(row[k] for k in entity.key)
        if entity.versioned_by != entity.key and key in first_line:
            problems.append(Problem(str(path), line, "/".join(map(str, key)),
                                    f"{'/'.join(entity.key)} repeats line {first_line[key]}"))
        first_line.setdefault(key, line)
        by_key[key].append(row)
    for versions in by_key.values():
        versions.sort(key=_starts)
    return Table(entity, dict(by_key))


def _entity_file(directory: Path, entity: Entity) -> Path | None:
    for suffix in (".csv", ".jsonl"):
        candidate = directory / (file_stem(entity) + suffix)
        if candidate.exists():
            return candidate
    return None


def load_snapshot(directory: Path) -> ReferenceSnapshot:
    """Load every entity export under ``directory`` into a new snapshot; raise ProblemsError on any bad row.

    The snapshot id is derived from the files' contents, so the same data always has the same id and
    a decision can name exactly the data it used.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), None, None, "no such reference data directory")])
    problems: list[Problem] = []
    digest = hashlib.sha256()
    tables = {}
    for entity in ENTITIES.values():
        path = _entity_file(directory, entity)
        if path is None:
            tables[entity.name] = Table(entity, {})
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        tables[entity.name] = _table(entity, path, _read_rows(entity, path, problems), problems)
    if problems:
        raise ProblemsError(problems)
    return ReferenceSnapshot(
        snapshot_id="snap-" + digest.hexdigest()[:12],
        source=str(directory),
        loaded_at=dt.datetime.now(dt.UTC),
        tables=tables,
    )
