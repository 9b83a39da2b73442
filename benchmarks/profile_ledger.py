"""Profile recording one call in the ledger: where the time of ``Recorder.record`` goes, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.profile_ledger [--sizes 40,1000,10000] [--repeat 5] [--cprofile 10000]

For each call size, the median over ``--repeat`` calls of each part, timed on its own: wire_fields (the items'
protobuf fields as a dict), json of the inputs, json of the reasons and enrichments, the whole write set built,
the rows written (``write``: executemany on SQLite, COPY on PostgreSQL) and the commit (an fsync on both). Then
one write + commit of a single-row transaction: what a commit alone costs here. ``--cprofile N`` prints cProfile's
view of one N-item ``Recorder.record`` per database (deterministic profiling inflates small calls: read it for
*where*, the timers for *how much*). PostgreSQL at TOLLGATE_TEST_POSTGRES_URL, in a schema of its own, dropped
afterwards; SQLite in a temporary directory (WAL, synchronous=FULL, as served).

``--against FILE`` times another version's ledger/recorder.py (``git show 9f7f3c0:ledger/recorder.py > old.py``)
against this one, call for call alternately on the same databases: on a shared machine, the only comparison of the
two that the load does not skew.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import importlib.util
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from benchmarks.conftest import RULESETS, SIZES
from benchmarks.data import generate_firm
from tests.ledger_support import postgres_schema
from tollgate.clients.client import time_entry_message
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.ledger.recorder import (
    Batch,
    Decided,
    Recorder,
    _enrichments,
    _reasons,
    _to_json,
    build_write_set,
    wire_fields,
    write,
)
from tollgate.ledger.spool import Spool, encode
from tollgate.ledger.store import database_url, open_database
from tollgate.refdata.snapshot import load_snapshot
from tollgate.rules.decisions import Acceptance
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets


def _median_ms(work: Callable[[], Any], repeat: int) -> float:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1e3


def _against(path: Path, database: str, engine: Engine, batch: Callable[[], Batch], items: list[Any], *,
             decided: list[Any], sizes: list[int], repeat: int) -> None:
    """``Recorder.record`` of the recorder.py at ``path`` and of this one, alternately, ``repeat`` calls each."""
    spec = importlib.util.spec_from_file_location("other_recorder", path)
    assert spec is not None and spec.loader is not None
    other = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other  # its dataclasses look their module up
    spec.loader.exec_module(other)
    this_recorder, other_recorder = Recorder(engine), other.Recorder(engine)

    def other_batch() -> Any:
        return other.Batch(**{name: getattr(batch(), name) for name in Batch.__dataclass_fields__})

    for size in sizes:
        durations: dict[str, list[float]] = {"other": [], "this": []}
        for _ in range(repeat):
            for which, recorder, made, these in (("other", other_recorder, other_batch, decided[:size]),
                                                 ("this", this_recorder, batch, Decided(decided[:size]))):
                one = made()
                started = time.perf_counter()
                recorder.record(one, items[:size], None, these)
                durations[which].append(time.perf_counter() - started)
        theirs, ours = (statistics.median(durations[k]) * 1e3 for k in ("other", "this"))
        print(f"{size:>6} {database + ' record, other / this':<28} {theirs:>9.3f} {ours:>9.3f}  this/other "
              f"{ours / theirs:.2f}")


def _drain(database: str, engine: Engine, directory: Path, batch: Callable[[], Batch], items: list[Any],  # noqa: PLR0917
           decided: list[Any], sizes: list[int], records: int) -> None:
    """How fast the drainer writes ``records`` spooled calls of each size to the database (after an outage)."""
    recorder = Recorder(engine)
    for size in sizes:
        spool = Spool(directory / f"drain-{database}-{size}")
        for _ in range(records):
            spool.append(build_write_set(batch(), items[:size], None, Decided(decided[:size])))
        started = time.perf_counter()
        spool.drain_own(recorder)
        seconds = time.perf_counter() - started
        assert spool.waiting() == 0
        spool.close()
        print(f"{size:>6} {database + ' drain, per record':<28} {seconds / records * 1e3:>9.3f} "
              f"{seconds / records / size * 1e6:>8.2f}  {records / seconds:,.0f} records/s")


def _build_parts(batch: Callable[[], Batch], items: list[Any], decided: list[Any],
                 digests: set[str]) -> dict[str, Callable[[], Any]]:
    fields = [wire_fields(item) for item in items]
    return {
        "wire_fields": lambda: [wire_fields(item) for item in items],
        "json inputs": lambda: [_to_json(f) for f in fields],
        "json reasons + enrichments": lambda: [(_reasons(d), _enrichments(d)) for d in decided],
        "build_write_set (all above)": lambda: build_write_set(batch(), items, None, Decided(decided),
                                                               stored_digests=digests),
    }


@contextmanager
def _databases(directory: Path) -> Iterator[Iterator[tuple[str, Engine]]]:
    def opened() -> Iterator[tuple[str, Engine]]:
        sqlite = open_database(database_url(None, directory / "sqlite"))
        yield "sqlite", sqlite
        sqlite.dispose()
        with postgres_schema() as url:
            postgres = open_database(database_url(url, directory))
            yield "postgres", postgres
            postgres.dispose()

    yield opened()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_ledger")
    parser.add_argument("--sizes", default="40,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    parser.add_argument("--against", type=Path, metavar="FILE", help="another version's ledger/recorder.py")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    firm = generate_firm(SIZES.people, SIZES.seed)
    with tempfile.TemporaryDirectory() as directory:
        snapshot = load_snapshot(firm.write(Path(directory) / "refdata"))
        rulesets = load_rulesets(RULESETS).for_kind(TIME_ENTRY.name)
        evaluator = Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                              ENGINE_VERSION)
        items = [time_entry_message(entry, position)
                 for position, entry in enumerate(firm.entries(max(sizes), SIZES.seed), start=1)]
        decided = evaluator.evaluate_messages(items, None)

        def batch() -> Batch:
            now = dt.datetime.now(dt.UTC)
            return Batch(str(uuid.uuid4()), "", "profile", "anonymous", now, now, TIME_ENTRY.name, tuple(rulesets),
                         snapshot.snapshot_id, ENGINE_VERSION, Acceptance.PARTIAL)

        digests = {r.digest for r in rulesets}
        print(f"{'items':>6} {'part':<28} {'ms/call':>9} {'us/item':>8}")
        for size in sizes:
            some, their = items[:size], decided[:size]
            parts = _build_parts(batch, some, their, digests)
            for part, work in parts.items():
                ms = _median_ms(work, args.repeat)
                print(f"{size:>6} {part:<28} {ms:>9.3f} {ms * 1e3 / size:>8.2f}")
            spool = Spool(Path(directory) / f"spool-{size}")
            # as in an outage: sources not yet stored
            with_sources = build_write_set(batch(), some, None, Decided(their))
            ms = _median_ms(lambda: spool.append(with_sources), args.repeat)  # noqa: B023 - called right here
            kib = len(encode(with_sources, 0.0)) / 1024
            print(f"{size:>6} {'spool append + fsync':<28} {ms:>9.3f} {ms * 1e3 / size:>8.2f}  {kib:,.0f} KiB a record")
            spool.close()
        with _databases(Path(directory)) as databases:
            for name, engine in databases:
                # the sources stored, the pool warm
                Recorder(engine).record(batch(), items[:1], None, Decided(decided[:1]))
                for size in sizes:
                    writes, commits = [], []
                    for _ in range(args.repeat):
                        write_set = build_write_set(batch(), items[:size], None, Decided(decided[:size]),
                                                    stored_digests=digests)
                        with engine.connect() as connection:
                            started = time.perf_counter()
                            write(connection, write_set)
                            written = time.perf_counter()
                            connection.commit()
                            writes.append(written - started)
                            commits.append(time.perf_counter() - written)
                    for part, durations in (("write (rows)", writes), ("commit", commits)):
                        ms = statistics.median(durations) * 1e3
                        print(f"{size:>6} {name + ' ' + part:<28} {ms:>9.3f} {ms * 1e3 / size:>8.2f}")
                with engine.begin() as connection:
                    connection.execute(text("CREATE TABLE commit_probe (k INTEGER PRIMARY KEY, v INTEGER)"))
                    connection.execute(text("INSERT INTO commit_probe VALUES (1, 0)"))

                def one_row_commit(engine: Engine = engine) -> None:
                    with engine.begin() as connection:
                        connection.execute(text("UPDATE commit_probe SET v = v + 1 WHERE k = 1"))

                ms = _median_ms(one_row_commit, max(50, args.repeat))
                print(f"{'1':>6} {name + ' one-row write + commit':<28} {ms:>9.3f}")
                _drain(name, engine, Path(directory), batch, items, decided, sizes, args.repeat * 4)
                if args.against:
                    _against(args.against, name, engine, batch, items, decided=decided, sizes=sizes,
                             repeat=args.repeat)
                if args.cprofile:
                    recorder = Recorder(engine)
                    profile = cProfile.Profile()
                    profile.runcall(recorder.record, batch(), items[:args.cprofile], None, decided[:args.cprofile])
                    print(f"--- cProfile, {name}, one record() of {args.cprofile:,} items")
                    pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
