"""Profile the evaluator on the benchmark data: where the time of ``Evaluator.evaluate`` goes.

    .venv/bin/python -m benchmarks.profile_evaluator [--entries 20000] [--sort tottime] [--top 30]
    .venv/bin/python -m benchmarks.profile_evaluator --rules-only   # Evaluator.decide on pre-bound items

Uses cProfile (deterministic, so it inflates the cost of many small calls: read it for *where* the
time goes, and the benchmarks for *how much*). The same sizes and seed as the benchmarks
(TOLLGATE_BENCH_SEED, TOLLGATE_BENCH_PEOPLE).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from benchmarks.comparators import prebind
from benchmarks.conftest import RULESETS, SIZES
from benchmarks.data import generate_firm
from evaluators import ENGINE_VERSION
from evaluators.binding import SnapshotBinder
from evaluators.engine import Evaluator
from evaluators.reference_data import load_snapshot
from rules.loader import load_rulesets
from rules.schema import TIME_ENTRY


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_evaluator")
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative", "ncalls"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rules-only", action="store_true", help="profile Evaluator.decide on pre-bound items")
    args = parser.parse_args(argv)

    firm = generate_firm(SIZES.people, SIZES.seed)
    with tempfile.TemporaryDirectory() as directory:
        snapshot = load_snapshot(firm.write(Path(directory)))
    rulesets = load_rulesets(RULESETS).for_kind(TIME_ENTRY.name)
    entries = firm.entries(args.entries, SIZES.seed)
    if args.rules_only:
        prebound = prebind(TIME_ENTRY, rulesets, snapshot, entries)
        evaluator = Evaluator(TIME_ENTRY, rulesets, prebound.binder, snapshot.snapshot_id, ENGINE_VERSION)
        items = prebound.items

        def work() -> None:
            for item in items:
                evaluator.decide(item)
    else:
        evaluator = Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                              ENGINE_VERSION)

        def work() -> None:
            evaluator.evaluate(entries)

    work()  # warm: lazy indexes, caches
    started = time.perf_counter()
    work()
    plain = time.perf_counter() - started
    profile = cProfile.Profile()
    profile.runcall(work)
    print(f"{len(entries):,} entries: {plain / len(entries) * 1e6:.1f} us/entry without the profiler")
    pstats.Stats(profile).strip_dirs().sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
