"""Profile the evaluator on the benchmark data: where the time of ``Evaluator.evaluate`` goes.

    .venv/bin/python -m benchmarks.profile_evaluator [--entries 20000] [--sort tottime] [--top 30]
    .venv/bin/python -m benchmarks.profile_evaluator --rules-only   # Evaluator.decide on pre-bound items
    .venv/bin/python -m benchmarks.profile_evaluator --timesheet 300   # the server's path for a 40-line timesheet

``--timesheet CALLS`` runs what the server does for the latency comparison's timesheet, in process: the
servicer's ``ValidateTimeEntries`` from the request message to the response (decoding, deciding, roll-ups,
metrics, the response), CALLS times, without gRPC's transport.

Uses cProfile (deterministic, so it inflates the cost of many small calls: read it for *where* the
time goes, and the benchmarks for *how much*). ``--no-profile`` only runs and times the work, for a
sampling profiler, whose shares are closer to the truth:
``py-spy record -f raw -o out.txt -- .venv/bin/python -m benchmarks.profile_evaluator --timesheet 6000 --no-profile``.
The same sizes and seed as the benchmarks (TOLLGATE_BENCH_SEED, TOLLGATE_BENCH_PEOPLE).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.comparators import prebind
from benchmarks.conftest import RULESETS, SIZES
from benchmarks.data import TIMESHEET_LINES, Firm, generate_firm
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.clients.client import time_entry_message
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import load_snapshot
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.server.calls import StreamSlots
from tollgate.server.logs import configure_logging
from tollgate.server.runtime import Runtime
from tollgate.server.settings import Settings
from tollgate.server.validation_service import ValidationService


def _timesheet_calls(firm: Firm, refdata: Path) -> Callable[[], Any]:
    """One call of the server's own path for the latency comparison's timesheet (as ``tollgate serve`` loads
    the bundled rulesets and ``refdata``)."""
    configure_logging("warning")  # the servicer logs each call at info
    settings = Settings()
    # The deciding a call's pool thread does, request to response (the event loop's part is the transport's).
    service = ValidationService(Runtime(RULESETS, refdata), settings, ThreadPoolExecutor(1), StreamSlots(1))
    request = pb.ValidateTimeEntriesRequest(entries=[
        time_entry_message(item, position)
        for position, item in enumerate(firm.timesheet(TIMESHEET_LINES, SIZES.seed), start=1)
    ])
    return lambda: service.decide_in_thread(service.time_entries, request, (), None, "", dt.datetime.now(dt.UTC))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_evaluator")
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative", "ncalls"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rules-only", action="store_true", help="profile Evaluator.decide on pre-bound items")
    parser.add_argument("--timesheet", type=int, metavar="CALLS",
                        help=f"profile the server's path for one {TIMESHEET_LINES}-line timesheet, CALLS times")
    parser.add_argument("--no-profile", action="store_true", help="run and time the work only (for py-spy)")
    args = parser.parse_args(argv)

    firm = generate_firm(SIZES.people, SIZES.seed)
    with tempfile.TemporaryDirectory() as directory:
        refdata = firm.write(Path(directory))
        if args.timesheet:
            call = _timesheet_calls(firm, refdata)
            call()  # warm: lazy indexes, caches
            durations = []
            for _ in range(args.timesheet):
                started = time.perf_counter()
                call()
                durations.append(time.perf_counter() - started)
            print(f"{args.timesheet:,} calls of a {TIMESHEET_LINES}-line timesheet: "
                  f"p50 {statistics.median(durations) * 1e3:.3f} ms a call without the profiler")
            if not args.no_profile:
                profile = cProfile.Profile()
                profile.runcall(lambda: [call() for _ in range(args.timesheet)])
                pstats.Stats(profile).strip_dirs().sort_stats(args.sort).print_stats(args.top)
            return
        snapshot = load_snapshot(refdata)
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
    print(f"{len(entries):,} entries: {plain / len(entries) * 1e6:.1f} us/entry without the profiler")
    if not args.no_profile:
        profile = cProfile.Profile()
        profile.runcall(work)
        pstats.Stats(profile).strip_dirs().sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
