"""Reading reference exports (CSV, JSON Lines, Parquet) into validated rows, each with where it came from.

An export directory holds, per entity, one file (``projects.csv``, ``workers.jsonl``,
``rate_cards.parquet``, or gzipped ``projects.csv.gz``, ``workers.jsonl.gz``) or one folder of such files
(``projects/part-0001.parquet``, ...) as ERP, PSA and HR extracts often come in parts.

Names are exact: anything else in the directory refuses the load, named, with the export name it most
likely meant (``Projects.csv``, ``project.csv``, ``projects.CSV``: did you mean ``projects.csv``?), since
a misnamed export would otherwise leave its table empty without a word. Ignored by rule, at the top and
in an entity's folder: hidden files and folders (a name starting with ``.`` or ``_``, as ``.DS_Store`` or
Spark's ``_SUCCESS``), and notes (``README``, ``*.md``, ``*.txt``) not named after an entity.

Text is UTF-8 (a leading byte order mark is allowed). Every row is validated by its entity model; a bad
row becomes a Problem naming the file, the line (the row number for Parquet, counting from 1) and the
field. A file that cannot be read on (bytes that are not UTF-8, a cell over 128 KiB, a broken gzip
stream) is reported at its line too, and refuses the load even when partial.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pydantic

from tollgate.rules.entities import ENTITIES, Entity
from tollgate.rules.problems import Problem

SUFFIXES = (".csv", ".jsonl", ".parquet")
# Gzipped text exports are read as they are; Parquet compresses its own pages.
GZIP_SUFFIXES = (".csv.gz", ".jsonl.gz")
EXPORT_SUFFIXES = (*GZIP_SUFFIXES, *SUFFIXES)
PARQUET_BATCH_ROWS = 64 * 1024
# The longest cell read (the csv module's default limit, also applied to JSON Lines): no reference value
# comes near it, and a longer one is a broken quote or a file that is not an export.
FIELD_LIMIT = 128 * 1024
_NOTES = (".md", ".txt")


def export_suffix(name: str) -> str | None:
    """The export suffix ``name`` ends with (``.csv.gz`` before ``.csv``), or None."""
    return next((suffix for suffix in EXPORT_SUFFIXES if name.endswith(suffix)), None)


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


def _ignored(name: str, stems: Iterable[str]) -> bool:
    """Whether a name in an export directory is not data, by rule: hidden, or a note not named after an
    entity (``projects.txt`` is most likely an export under the wrong extension)."""
    if name.startswith((".", "_")):
        return True
    lower = name.lower()
    if lower == "readme" or lower.startswith("readme."):
        return True
    if lower.endswith(_NOTES):
        return _meant(lower.rsplit(".", 1)[0], stems) is None
    return False


def _meant(stem: str, stems: Iterable[str]) -> str | None:
    """The entity export name a misspelt stem most likely means: case, separators, singular, typos."""
    stems = sorted(stems)
    wanted = re.sub(r"[\s\-.]+", "_", stem.strip().lower())
    if wanted in stems:
        return wanted
    for stem_of in stems:  # project -> projects, expense_policy -> expense_policies
        if stem_of in (wanted + "s", wanted[:-1] + "ies", wanted + "es"):
            return stem_of
    close = difflib.get_close_matches(wanted, stems, n=1, cutoff=0.8)
    return close[0] if close else None


def _unrecognised(path: Path, stems: Iterable[str]) -> str:
    """Why a name in an export directory is refused, and what it was probably meant to be."""
    name, lower = path.name, path.name.lower()
    expected = "an export is ENTITY.csv, .jsonl, .parquet, .csv.gz or .jsonl.gz, or a folder ENTITY/ of them"
    if path.is_dir():
        meant = _meant(name, stems)
        hint = f"; did you mean {meant}/?" if meant else f" ({expected}; entities: {', '.join(sorted(stems))})"
        return f"not a folder of any entity's exports{hint}"
    if not path.is_file():
        return f"not a file or folder ({expected})"
    suffix = export_suffix(lower)
    if suffix is None:
        if lower.endswith(".parquet.gz"):
            suffix, note = ".parquet", ": Parquet compresses its own pages; send it without gzip"
        elif lower.endswith((".tsv", ".txt", ".xlsx", ".xls", ".json", ".ndjson")):
            suffix, note = (".jsonl" if lower.endswith((".json", ".ndjson")) else ".csv",
                            f": {Path(lower).suffix} is not read; export as .csv, .jsonl or .parquet")
        elif lower.endswith((".zip", ".bz2", ".xz", ".zst", ".7z")):
            suffix, note = ".csv.gz", ": only gzip (.csv.gz, .jsonl.gz) is read; recompress, or send it uncompressed"
        else:
            note = f" ({expected})"
            meant = _meant(name.split(".", 1)[0], stems)
            return f"not an export of any entity{'; did you mean ' + meant + '.csv?' if meant else ''}{note}"
        stem = name.split(".", 1)[0]  # no export name holds a dot
    else:
        stem, note = name[:len(name) - len(suffix)], ""
    meant = _meant(stem, stems)
    if meant is None:
        return f"not an export of any entity ({expected}; entities: {', '.join(sorted(stems))}){note}"
    return f"not an export of any entity; did you mean {meant}{suffix}?{note}"


def upload_problem(relative: str) -> str | None:
    """Why the path of an uploaded file (relative to the export directory) is refused, or None.

    A path is ENTITY.EXT or ENTITY/FILE.EXT; the folder must be named after an entity, so that no
    file and folder of one name can collide (``projects.csv`` then ``projects.csv/part.csv``)."""
    parts = PurePosixPath(relative).parts
    if (not parts or len(parts) > 2 or relative.startswith("/") or "\\" in relative or "\0" in relative
            or any(p in ("", ".", "..") for p in parts)):
        return "give ENTITY.EXT or ENTITY/FILE.EXT relative to the export directory"
    stems = {file_stem(entity) for entity in ENTITIES.values()}
    if export_suffix(parts[-1]) is None:
        suffix = export_suffix(parts[-1].lower())  # projects.CSV
        name = parts[-1][:len(parts[-1]) - len(suffix)] + suffix if suffix else None
        if name is not None and len(parts) == 1:
            meant = _meant(name[:-len(suffix or "")], stems)
            name = meant + (suffix or "") if meant else name
        return ("only .csv, .jsonl, .parquet, .csv.gz and .jsonl.gz exports are loaded"
                f"{'; did you mean ' + '/'.join([*parts[:-1], name]) + '?' if name else ''}")
    if len(parts) == 2 and parts[0] not in stems:
        meant = _meant(parts[0].split(".", 1)[0], stems)
        return (f"{parts[0]}/ is not the folder of any entity's exports"
                f"{'; did you mean ' + meant + '/?' if meant else ''}")
    return None


@dataclass(frozen=True, slots=True)
class ExportFiles:
    """What an export directory holds: per entity sent, its files (an empty folder: none); and every name
    refused (unrecognised, or a second export of an entity)."""

    files: dict[str, list[Path]]
    problems: list[Problem]


def export_files(directory: Path, entities: Iterable[Entity] = ENTITIES.values()) -> ExportFiles:
    """The exports in ``directory``, by entity (only the entities sent), and every name it refuses."""
    by_stem = {file_stem(entity): entity for entity in entities}
    found: dict[str, list[Path]] = {}  # entity -> its files or folders at the top
    files: dict[str, list[Path]] = {}
    problems: list[Problem] = []
    for path in sorted(directory.iterdir()):
        if _ignored(path.name, by_stem):
            continue
        suffix = export_suffix(path.name)
        entity = by_stem.get(path.name) if path.is_dir() else (
            by_stem.get(path.name[:-len(suffix)]) if suffix and path.is_file() else None)
        if entity is None:
            problems.append(Problem(str(path), None, None, _unrecognised(path, by_stem)))
            continue
        found.setdefault(entity.name, []).append(path)
        if path.is_file():
            files.setdefault(entity.name, []).append(path)
            continue
        inside = files.setdefault(entity.name, [])
        for part in sorted(path.iterdir()):
            if _ignored(part.name, by_stem):
                continue
            if part.is_file() and export_suffix(part.name):
                inside.append(part)
            else:
                problems.append(Problem(str(part), None, None,
                                        f"not an export file: a folder of {entity.name} exports holds "
                                        "*.csv, *.jsonl, *.parquet, *.csv.gz or *.jsonl.gz files, no folders"))
    for name, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths)
            problems.append(Problem(str(directory), None, name, f"more than one export for {name} ({names}); keep one"))
            files[name] = []
    return ExportFiles(files, problems)


def _without_missing(raw: Mapping[str, Any]) -> dict[str, Any]:
    # An empty cell or a null is a missing value, so the model's defaults and nulls apply.
    return {k: v for k, v in raw.items() if v is not None and v != ""}


class _UnreadableError(Exception):
    """The file cannot be read on from this line: the rows after it are unknown."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _open_text(path: Path, newline: str | None) -> IO[str]:
    # utf-8-sig: a byte order mark at the start (as spreadsheet tools write) is read as nothing.
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return path.open(encoding="utf-8-sig", newline=newline)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                # An extra cell beyond the header lands under the None key; the model refuses it by name.
                cells = {("(extra cell)" if k is None else k): v for k, v in row.items()}
                yield reader.line_num, _without_missing(cells)
        except csv.Error as error:
            line = reader.reader.line_num  # the line being read (the DictReader's is the last row's)
            if "field limit" in str(error):
                raise _UnreadableError(line, f"a cell longer than {FIELD_LIMIT:,} characters (128 KiB): no "
                                                   "reference value is; an unclosed quote?") from error
            raise _UnreadableError(line, f"not CSV: {error}") from error


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a JSON object: reported for that line alone."""

    reason: str


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """The objects of a JSON Lines file, each with its line number; blank lines are skipped."""
    with _open_text(path, newline=None) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadLine(f"not valid JSON: {error.msg} (column {error.colno})")
                continue
            if not isinstance(value, dict):
                yield number, BadLine("not a JSON object")
                continue
            if len(line) > FIELD_LIMIT:
                long = next((k for k, v in value.items() if isinstance(v, str) and len(v) > FIELD_LIMIT), None)
                if long is not None:
                    yield number, BadLine(f"{long}: longer than {FIELD_LIMIT:,} characters (128 KiB): no reference "
                                          "value is")
                    continue
            yield number, value


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


_READERS: dict[str, Any] = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows,
                            ".csv.gz": _csv_rows, ".jsonl.gz": _jsonl_rows}


def _undecodable(path: Path) -> tuple[int | None, str]:
    """Where a file stops being UTF-8: its line, and the byte."""
    with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                (raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as error:
                at = error.start + (3 if number == 1 and raw.startswith(b"\xef\xbb\xbf") else 0)
                return number, f"not UTF-8: byte 0x{raw[at]:02x} at byte {at + 1} of the line; export as UTF-8"
    return None, "not UTF-8; export as UTF-8"


def _range_problem(values: Mapping[str, Any]) -> str | None:
    start, end = values.get("effective_from"), values.get("effective_to")
    if start is not None and end is not None and end < start:
        return f"{end:%Y-%m-%d} is before effective_from {start:%Y-%m-%d}: the row would never be in force"
    return None


def validate_row(entity: Entity, raw: Mapping[str, Any], path: str, line: int,
                 problems: list[Problem]) -> LocatedRow | None:
    """One raw row validated by the entity's model; on failure every bad field becomes a problem. An
    effective range that ends before it starts is a problem of effective_to."""
    try:
        model = entity.model.model_validate(raw)
    except pydantic.ValidationError as error:
        for e in error.errors():
            name = ".".join(str(p) for p in e["loc"]) or "(row)"
            # The wire grammar's own words, without pydantic's "Value error, " before them.
            message = str(e["ctx"]["error"]) if e["type"] == "value_error" and "ctx" in e else e["msg"]
            problems.append(Problem(path, line, name, message))
        return None
    values = entity.native(model)
    backwards = _range_problem(values)
    if backwards is not None:
        problems.append(Problem(path, line, "effective_to", backwards))
        return None
    return LocatedRow(path, line, values)


def read_file(entity: Entity, path: Path, problems: list[Problem],
              fatal: list[Problem] | None = None) -> list[LocatedRow]:
    """Validated rows of one export file; bad rows are added to ``problems``, and why a file cannot be read
    (on) to ``fatal`` (default: ``problems``), with the line where it stopped when known."""
    rows: list[LocatedRow] = []
    where = str(path)
    unreadable = problems if fatal is None else fatal
    suffix = export_suffix(path.name)
    if suffix is None:
        unreadable.append(Problem(where, None, None, f"not an export file ({', '.join(EXPORT_SUFFIXES)})"))
        return rows
    try:
        for line, raw in _READERS[suffix](path):
            if isinstance(raw, BadLine):
                problems.append(Problem(where, line, None, raw.reason))
                continue
            row = validate_row(entity, raw, where, line, problems)
            if row is not None:
                rows.append(row)
    except _UnreadableError as error:
        unreadable.append(Problem(where, error.line, None, f"cannot read on: {error.reason}"))
    except UnicodeDecodeError:
        line, reason = _undecodable(path)
        unreadable.append(Problem(where, line, None, f"cannot read on: {reason}"))
    except (OSError, EOFError, zlib.error) as error:
        # Never str(error) of an OSError: it quotes the full path (for an upload, the server's own directory).
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        unreadable.append(Problem(where, None, None, f"cannot read: {reason}"))
    except Exception as error:  # pyarrow raises its own errors for a file that is not Parquet
        if type(error).__module__.startswith("pyarrow"):
            unreadable.append(Problem(where, None, None, f"cannot read: {str(error).replace(where, path.name)}"))
        else:
            raise
    return rows


@dataclass(frozen=True, slots=True)
class ExportRows:
    """Everything read from one export directory: validated rows per entity and every problem found."""

    rows: dict[str, list[LocatedRow]]  # every entity; empty for one not sent
    files: dict[str, list[Path]]  # the entities sent (an empty folder is sent, with no files)
    problems: list[Problem]
    # Problems that make a load impossible even with --partial: an unreadable file, an unrecognised name,
    # an ambiguous export: which rows are missing would not be known.
    fatal: list[Problem]


def read_exports(directory: Path, entities: Iterable[Entity] = ENTITIES.values()) -> ExportRows:
    entities = list(entities)
    found = export_files(directory, entities)
    problems: list[Problem] = []
    fatal = list(found.problems)
    rows = {entity.name: [row for path in found.files.get(entity.name, [])
                          for row in read_file(entity, path, problems, fatal)]
            for entity in entities}
    return ExportRows(rows, found.files, problems, fatal)
