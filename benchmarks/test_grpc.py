"""Comparisons 2-4, end to end over gRPC on localhost, against the same generated snapshot.

2. Batches of 1,000 and 10,000 entries in one ValidateTimeEntries call: the real service
   (``server.app.start`` in its own process) against the transport ceiling (the same call served by
   benchmarks/servers.py:CeilingService, which decides nothing), both through the raw stub with the
   request built beforehand; plus the real ``ValidationClient`` (dicts in, typed decisions out).
3. Latency of one 40-line timesheet: p50 and p99 of N sequential calls (extra_info and the summary).
4. Throughput of ``tollgate serve --workers 1`` against ``--workers 2``, driven by client processes.

The servers run in separate processes from the client, as in production; on a small machine the
client and the server(s) share the cores, which the summary's client CPU figures make visible.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from benchmarks.conftest import RESULTS, Sizes, per_entry, record
from benchmarks.data import TIMESHEET_LINES, Firm
from benchmarks.load import ClientPool
from benchmarks.servers import (
    MAX_MESSAGE_BYTES,
    ServerProcess,
    TollgateServe,
    machine_cpu_seconds,
    process_cpu_seconds,
)
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.client import ValidationClient, time_entry_message

BATCH_SIZES = (1000, 10_000)
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@pytest.fixture(scope="module")
def tollgate_server(refdata_dir: Path, sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "tollgate-server.log"
    with ServerProcess("tollgate", refdata=refdata_dir, threads=sizes.server_threads, log_path=log) as server:
        yield server.target


@pytest.fixture(scope="module")
def ceiling_server(sizes: Sizes) -> Iterator[str]:
    with ServerProcess("ceiling", threads=sizes.server_threads) as server:
        yield server.target


@pytest.fixture(scope="module")
def targets(tollgate_server: str, ceiling_server: str) -> dict[str, str]:
    return {"tollgate": tollgate_server, "ceiling": ceiling_server}


@pytest.fixture(scope="module")
def batch_entries(firm: Firm, sizes: Sizes) -> list[dict[str, str]]:
    """Three distinct batches of the largest size (different from the in-process entries, same firm)."""
    return firm.entries(3 * max(BATCH_SIZES), sizes.seed + 1, prefix="GB-")


def _request(items: list[dict[str, str]]) -> Any:
    return pb.ValidateTimeEntriesRequest(
        entries=[time_entry_message(item, position) for position, item in enumerate(items, start=1)]
    )


def _stub(target: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return channel, pb_grpc.ValidationServiceStub(channel)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(fraction: float) -> float:  # nearest-rank percentile
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

    return {
        "p50_ms": round(at(0.50) * 1000, 3),
        "p90_ms": round(at(0.90) * 1000, 3),
        "p99_ms": round(at(0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "calls": len(ordered),
    }


# ---------------------------------------------------------------------------------------------------
# 2. Batches: the service against the transport ceiling


@pytest.mark.parametrize("batch", BATCH_SIZES, ids=lambda n: f"{n}")
@pytest.mark.parametrize("row", ["tollgate", "ceiling", "tollgate-ValidationClient"])
def test_grpc_batch(  # noqa: PLR0917 - pytest passes fixtures positionally
    benchmark: Any, row: str, batch: int, targets: dict[str, str], batch_entries: list[dict[str, str]], sizes: Sizes
) -> None:
    group = f"gRPC: one call of {batch:,} entries, time per call"
    benchmark.group = group
    batches = [batch_entries[i * batch : (i + 1) * batch] for i in range(3)]
    rounds = sizes.grpc_rounds * (3 if batch <= 1000 else 1)
    position = iter(range(10**9))
    if row == "tollgate-ValidationClient":
        with ValidationClient(targets["tollgate"], timeout=300) as client:
            client.wait_until_ready()

            def setup_items() -> tuple[tuple[Any, ...], dict[str, Any]]:
                return (batches[next(position) % 3],), {}

            result = benchmark.pedantic(client.validate_time_entries, setup=setup_items, rounds=rounds,
                                        warmup_rounds=1)
            assert len(result.decisions) == batch
        per_entry(benchmark, group, "tollgate (ValidationClient)", batch,
                  what="ValidationClient.validate_time_entries(dicts): client builds messages, chunks of 2,000 "
                       "streamed, typed decisions back")
        return
    requests = [_request(items) for items in batches]
    channel, stub = _stub(targets[row])
    with channel:

        def setup_request() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (requests[next(position) % 3],), {"timeout": 300}

        response = benchmark.pedantic(stub.ValidateTimeEntries, setup=setup_request, rounds=rounds, warmup_rounds=1)
    assert len(response.decisions) == batch
    per_entry(benchmark, group, row, batch,
              what="raw stub, request built beforehand" + ("; handler decides nothing" if row == "ceiling" else ""))


# ---------------------------------------------------------------------------------------------------
# 3. Latency of one 40-line timesheet


def raw_call_latencies(benchmark: Any, target: str, request: Any, calls: int, warmup: int) -> list[float]:
    """Seconds of each of ``warmup + calls`` sequential ValidateTimeEntries calls through the raw stub."""
    samples: list[float] = []
    clock = time.perf_counter
    channel, stub = _stub(target)
    with channel:
        call_stub = stub.ValidateTimeEntries

        def call_raw() -> None:
            started = clock()
            call_stub(request, timeout=30)
            samples.append(clock() - started)

        benchmark.pedantic(call_raw, rounds=calls, warmup_rounds=warmup)
    return samples


@pytest.mark.parametrize("row", ["tollgate", "ceiling", "tollgate-ValidationClient"])
def test_grpc_timesheet_latency(benchmark: Any, row: str, targets: dict[str, str], firm: Firm, sizes: Sizes) -> None:
    group = f"gRPC: latency of one {TIMESHEET_LINES}-line timesheet"
    benchmark.group = group
    timesheet = firm.timesheet(TIMESHEET_LINES, sizes.seed)
    samples: list[float] = []
    warmup = min(50, sizes.latency_calls)
    clock = time.perf_counter
    if row == "tollgate-ValidationClient":
        name = "tollgate (ValidationClient)"
        with ValidationClient(targets["tollgate"], timeout=30) as client:
            client.wait_until_ready()
            validate = client.validate_time_entries

            def call_client() -> None:
                started = clock()
                validate(timesheet)
                samples.append(clock() - started)

            benchmark.pedantic(call_client, rounds=sizes.latency_calls, warmup_rounds=warmup)
    else:
        name = row
        samples = raw_call_latencies(benchmark, targets[row], _request(timesheet), sizes.latency_calls, warmup)
    timed = samples[warmup:] or samples
    stats = _percentiles(timed)
    record(benchmark, group, name, **stats)
    print(f"\n{group} [{name}]: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms "
          f"over {stats['calls']} calls (max {stats['max_ms']:.3f} ms)")


# ---------------------------------------------------------------------------------------------------
# 4. Throughput: one worker process against two


@pytest.mark.parametrize("workers", [1, 2])
def test_grpc_throughput_workers(  # noqa: PLR0917 - pytest passes fixtures positionally
    benchmark: Any, workers: int, refdata_dir: Path, batch_entries: list[dict[str, str]], sizes: Sizes,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    group = (f"gRPC throughput: tollgate serve --workers N, {sizes.tp_batch:,} entries per call, "
             f"{sizes.tp_clients} client processes x {sizes.tp_channels} connections")
    benchmark.group = group
    payload = _request(batch_entries[: sizes.tp_batch]).SerializeToString()
    log = tmp_path_factory.mktemp("serve") / f"tollgate-serve-{workers}.log"
    answered: list[int] = []
    with TollgateServe(workers, refdata_dir, log, threads=sizes.server_threads) as server, \
            ClientPool(server.target, payload, sizes.tp_clients, sizes.tp_channels) as pool:
        pool.run(1.0)  # warm every connection and worker

        def one_round() -> None:
            answered.append(pool.run(sizes.tp_seconds).calls)

        server_pids, client_pids = server.pids(), pool.pids()
        server_cpu, client_cpu_total = process_cpu_seconds(server_pids), process_cpu_seconds(client_pids)
        machine_busy, machine_total = machine_cpu_seconds()
        started = time.perf_counter()
        benchmark.pedantic(one_round, rounds=sizes.tp_rounds, warmup_rounds=0)
        wall = time.perf_counter() - started
        server_cpu = process_cpu_seconds(server_pids) - server_cpu
        client_cpu_total = process_cpu_seconds(client_pids) - client_cpu_total
        busy, total = machine_cpu_seconds()
        machine_busy, machine_total = busy - machine_busy, total - machine_total
        share = sorted(server.calls_per_process().values(), reverse=True)
    total_calls = sum(share) or 1
    entries = sum(answered) * sizes.tp_batch
    name = f"tollgate --workers {workers}"
    result = record(
        benchmark, group, name,
        calls=sum(answered),
        calls_share_per_worker="/".join(f"{100 * n / total_calls:.0f}%" for n in share),
        # CPU use during the timed rounds, in % of one core: the server's processes, the client processes,
        # and everything else on the machine (other work competing for the same cores)
        server_cpu_pct=round(100 * server_cpu / wall),
        client_cpu_pct=round(100 * client_cpu_total / wall),
        other_cpu_pct=round(100 * max(0.0, machine_busy - server_cpu - client_cpu_total) / wall),
        cores=round(machine_total / wall, 1) if machine_total else None,
        per_entry_us=round(wall / entries * 1e6, 3),
        entries_per_s=round(entries / wall),
    )
    one = next((r for r in RESULTS if r.group == group and r.name == "tollgate --workers 1"), None)
    if workers > 1 and one is not None and one.values.get("entries_per_s") and result.values.get("entries_per_s"):
        result.values["speedup_vs_1_worker"] = f"{result.values['entries_per_s'] / one.values['entries_per_s']:.2f}x"
        benchmark.extra_info["speedup_vs_1_worker"] = result.values["speedup_vs_1_worker"]
    if len(share) < workers:
        pytest.fail(f"only {len(share)} of {workers} workers decided anything: the connections all landed on one")

