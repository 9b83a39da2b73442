"""Reference data: loading 1M rows, switching snapshots under load, lookups in process vs over the network.

    .venv/bin/pytest benchmarks/test_refdata.py -s                 # prints the figures
    TOLLGATE_BENCH_REFDATA_ROWS=200000 .venv/bin/pytest benchmarks/test_refdata.py -s

1. Loading: a generated export of N rows (default 1,000,000: projects, tasks, workers, assignments)
   loaded by ``load_snapshot`` in a fresh process, which reports its time and peak RSS; then the same
   snapshot published to Redis and fetched by a second store, as a replica without it does; then one
   worker upserted, from making the new snapshot until a replica watching the store decides with it.
2. Switching under load: one thread decides a 20-entry batch in a loop while another publishes a new
   snapshot (an upsert of one worker) every 100 ms; the longest time between two answers, against the
   same loop with no switches. Then a replica answering while it adopts a whole new snapshot of
   120,000 rows from Redis (fetching, decoding, indexing), with the GC's full collections meanwhile.
3. Lookups: ``Table.get`` of one worker in the held snapshot, against one Redis GET round trip of the
   same record (what deciding against a shared cache without an in-process copy would cost per lookup).
"""

from __future__ import annotations

import csv
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.refdata_support import delete_prefix
from tollgate.refdata.redis_store import RedisSnapshotStore
from tollgate.refdata.snapshot import ReferenceSnapshot, apply_changes, load_snapshot
from tollgate.rules.fields import date_value
from tollgate.server.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("TOLLGATE_BENCH_REFDATA_ROWS", "1000000").replace("_", ""))
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _write(path: Path, header: list[str], rows: Iterator[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def generate_exports(directory: Path, rows: int) -> dict[str, int]:
    """An export of ``rows`` rows: 10% projects, 60% tasks (6 per project), 20% workers, 10% assignments."""
    projects, workers = rows // 10, rows // 5
    assignments = rows - projects * 7 - workers
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "projects.csv", ["project_id", "name", "status", "start_date", "finish_date", "contract_id"],
           ([f"P-{i}", f"Project {i}", "CLOSED" if i % 50 == 0 else "ACTIVE", "2026-01-05", "2026-12-31",
             f"C-{i % 1000}"] for i in range(projects)))
    _write(directory / "tasks.csv", ["project_id", "task_id", "name", "is_leaf", "chargeable"],
           ([f"P-{i // 6}", f"T-{i % 6}", f"Task {i % 6}", "true", "true"] for i in range(projects * 6)))
    _write(directory / "workers.csv", ["worker_id", "name", "status", "hire_date", "job_code", "location"],
           ([f"W-{i}", f"Worker {i}", "ACTIVE", "2020-01-01", f"J-{i % 20}", "US-NY"] for i in range(workers)))
    _write(directory / "assignments.csv", ["assignment_id", "worker_id", "project_id", "start_date"],
           ([f"A-{i}", f"W-{i % workers}", f"P-{i % projects}", "2026-01-05"] for i in range(assignments)))
    return {"project": projects, "task": projects * 6, "worker": workers, "assignment": assignments}


_LOAD_IN_A_FRESH_PROCESS = """
import json, resource, sys, time
from pathlib import Path
from tollgate.refdata.snapshot import load_snapshot
started = time.perf_counter()
snapshot = load_snapshot(Path(sys.argv[1]))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": sum(snapshot.counts().values()), "snapshot_id": snapshot.snapshot_id}))
"""


@pytest.fixture(scope="module")
def big_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("refdata-big")
    generate_exports(directory, ROWS)
    return directory


def _redis_or_skip() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {error}")
    return REDIS_URL


def test_loading_a_million_rows(big_exports: Path) -> None:
    completed = subprocess.run([sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, str(big_exports)], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=1800)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"\nload {figures['rows']:,} rows from CSV: {figures['seconds']:.1f} s "
          f"({figures['rows'] / figures['seconds']:,.0f} rows/s), peak RSS {figures['peak_rss_mb']:,.0f} MB")
    assert figures["rows"] == ROWS

    url = _redis_or_skip()
    snapshot = load_snapshot(big_exports)
    prefix = f"tollgate-bench:{uuid.uuid4().hex}"
    publisher, replica = RedisSnapshotStore(url, prefix=prefix), RedisSnapshotStore(url, prefix=prefix)
    runtime: Runtime | None = None
    try:
        started = time.perf_counter()
        publisher.publish(snapshot)
        published = time.perf_counter() - started
        started = time.perf_counter()
        fetched = replica.fetch(snapshot.snapshot_id)
        fetched_in = time.perf_counter() - started
        assert fetched.counts() == snapshot.counts()
        del fetched
        # A replica serving the snapshot (it holds it: the fetch above), watching the store for changes.
        runtime = Runtime(ROOT / "rulesets", None, replica)
        # One worker upserted on the publishing replica (as its Upsert call does), until the other decides with it.
        started = time.perf_counter()
        changed = apply_changes(snapshot, "worker", upserts=[{"worker_id": "W-NEW", "status": "ACTIVE",
                                                              "hire_date": "2026-11-01"}])
        changed_in = time.perf_counter() - started
        publisher.publish(changed)
        assert runtime.wait_for(changed.snapshot_id, 30)
        upsert_switch = time.perf_counter() - started
        client = redis.Redis.from_url(url)
        stored = sum(int(client.strlen(key)) for pattern in ("segment", "table")  # table: as stored before segments
                     for key in client.scan_iter(match=f"{prefix}:{pattern}:*"))
        print(f"publish to Redis {published:.2f} s ({stored / 1e6:,.0f} MB compressed); a replica fetches and "
              f"decodes it in {fetched_in:.2f} s; an upsert of one worker reaches another replica in "
              f"{upsert_switch:.2f} s (making the new snapshot: {changed_in:.2f} s)")
    finally:
        if runtime is not None:
            runtime.close()
        else:
            replica.close()
        publisher.close()
        delete_prefix(url, prefix)


def _entries(count: int) -> list[dict[str, str]]:
    return [{"entry_id": f"B-{n}", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
             "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT"} for n in range(count)]


def _gaps(runtime: Runtime, seconds: float, switching: bool) -> list[float]:
    """Times between consecutive answers while (optionally) another thread switches snapshots."""
    stop = threading.Event()
    switches = [0]

    def switch() -> None:
        n = 0
        while not stop.is_set():
            base = runtime.generation.snapshot
            runtime.publish(apply_changes(base, "worker", upserts=[{"worker_id": f"W-S{n}", "status": "ACTIVE",
                                                                      "hire_date": "2026-01-01"}]))
            n += 1
            switches[0] += 1
            stop.wait(0.1)

    switcher = threading.Thread(target=switch) if switching else None
    if switcher:
        switcher.start()
    entries = _entries(20)
    gaps: list[float] = []
    deadline = time.perf_counter() + seconds
    last = time.perf_counter()
    while last < deadline:
        runtime.generation.evaluators["time_entry"].evaluate(entries)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    stop.set()
    if switcher:
        switcher.join()
        assert switches[0] > 5
    return gaps


def test_switching_snapshots_under_load(tmp_path: Path) -> None:
    runtime = Runtime(ROOT / "rulesets", _with_sample(tmp_path / "exports", 100_000))
    try:
        _gaps(runtime, 0.5, switching=False)  # warm: the first calls build the indexes they need
        quiet = _gaps(runtime, 2.0, switching=False)
        busy = _gaps(runtime, 3.0, switching=True)
    finally:
        runtime.close()
    print(f"\nanswering a 20-entry batch, 100k-row snapshot: no switches: {_describe(quiet)}")
    print(f"switching to a new snapshot every 100 ms: {_describe(busy)}")


def _describe(gaps: list[float]) -> str:
    ordered = sorted(gaps)
    return (f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {ordered[int(len(ordered) * 0.99)] * 1000:.2f} "
            f"ms, max {ordered[-1] * 1000:.2f} ms over {len(ordered):,} answers")


def _with_sample(directory: Path, rows: int) -> Path:
    generate_exports(directory, rows)
    for sample in (ROOT / "examples" / "refdata").iterdir():  # the sample's rows, so the entries decide normally
        if not (directory / sample.name).exists():
            (directory / sample.name).write_bytes(sample.read_bytes())
    return directory


def test_a_replica_switching_to_a_whole_new_snapshot_under_load(tmp_path: Path) -> None:
    """A replica answering 20-entry batches while its watcher fetches, decodes and adopts a snapshot of
    120,000 new rows from Redis (a full load published by another replica): the longest times between
    answers, and the full collections of the cyclic GC meanwhile."""
    url = _redis_or_skip()
    first = load_snapshot(_with_sample(tmp_path / "first", 100_000))
    second = load_snapshot(_with_sample(tmp_path / "second", 120_000))
    prefix = f"tollgate-bench:{uuid.uuid4().hex}"
    publisher = RedisSnapshotStore(url, prefix=prefix)
    publisher.publish(first)
    runtime = Runtime(ROOT / "rulesets", None, RedisSnapshotStore(url, prefix=prefix))
    full_collections: list[float] = []
    collecting = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                collecting[0] = time.perf_counter()
            else:
                full_collections.append(time.perf_counter() - collecting[0])

    gc.callbacks.append(on_gc)
    entries = _entries(20)
    try:
        def answer(seconds: float) -> list[float]:
            gaps, last = [], time.perf_counter()
            deadline = last + seconds
            while last < deadline:
                runtime.generation.evaluators["time_entry"].evaluate(entries)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
            return gaps

        answer(0.5)  # warm: the first calls build the indexes they need
        quiet = answer(2.0)
        publishing = threading.Timer(0.1, publisher.publish, args=(second,))
        publishing.start()
        started = time.perf_counter()
        busy = answer(0.2)
        while runtime.generation.snapshot.snapshot_id != second.snapshot_id and time.perf_counter() - started < 60:
            busy += answer(0.1)
        adopted_in = time.perf_counter() - started - 0.1
        busy += answer(0.3)
        publishing.join()
    finally:
        gc.callbacks.remove(on_gc)
        runtime.close()
        publisher.close()
        delete_prefix(url, prefix)
    assert runtime.generation.snapshot.snapshot_id == second.snapshot_id
    print(f"\nanswering a 20-entry batch, 100k-row snapshot held: {_describe(quiet)}")
    print(f"while a replica adopts a whole new 120k-row snapshot from Redis ({adopted_in:.2f} s): {_describe(busy)}; "
          f"full GC collections: {', '.join(f'{c * 1000:.0f} ms' for c in full_collections) or 'none'}")


def test_lookup_in_process_vs_network_round_trip(benchmark: Any) -> None:
    snapshot: ReferenceSnapshot = load_snapshot(ROOT / "examples" / "refdata")
    table = snapshot.table("worker")
    day = date_value(__import__("datetime").date(2026, 11, 3))
    calls = 100_000
    started = time.perf_counter()
    for _ in range(calls):
        table.get(("W-3",), day)
    in_process = (time.perf_counter() - started) / calls

    url = _redis_or_skip()
    client = redis.Redis.from_url(url)
    key = f"tollgate-bench:{uuid.uuid4().hex}:worker:W-3"
    client.set(key, json.dumps({"worker_id": "W-3", "status": "ACTIVE"}))
    try:
        round_trips = 5_000
        started = time.perf_counter()
        for _ in range(round_trips):
            json.loads(client.get(key))  # type: ignore[arg-type]
        network = (time.perf_counter() - started) / round_trips
        benchmark.extra_info.update(in_process_us=in_process * 1e6, redis_round_trip_us=network * 1e6)
        benchmark(table.get, ("W-3",), day)
    finally:
        client.delete(key)
        client.close()
    print(f"\nlookup per item: in process {in_process * 1e6:.2f} µs; one Redis round trip {network * 1e6:.1f} µs "
          f"({network / in_process:,.0f}x); deciding an item makes about 7 lookups")
