"""What security costs: TLS + token authentication against plaintext without authentication, in one run.

Two real servers (``server.app.start`` each in its own process, same snapshot, same threads): one plaintext
with no authentication (the loopback default), one with a TLS certificate and an identities file, called
with a token (``ChannelSecurity(ca=..., token=...)``, the real client). Calls alternate between the two,
so both see the same machine load:

- latency of one 40-line timesheet through ValidationClient: p50 and p99 of N calls each;
- one call of 10,000 entries through the raw stub (request built beforehand): time per call.

Connections are opened once and reused, as a middleware's are: the TLS handshake is paid once per connection,
what remains is the encryption of every message and the token check of every call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import Sizes, record
from benchmarks.data import TIMESHEET_LINES, Firm
from benchmarks.servers import MAX_MESSAGE_BYTES, ServerProcess
from benchmarks.test_grpc import _percentiles, _request
from tests.certs import CA
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.channel import ChannelSecurity, open_channel
from tollgate.clients.client import ValidationClient
from tollgate.server.identities import new_token, write_identity
from tollgate.server.roles import Role

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
ROWS = ("plaintext, no authentication", "TLS + token")


@dataclass(frozen=True)
class Pair:
    plain: tuple[str, ChannelSecurity]
    secured: tuple[str, ChannelSecurity]

    def rows(self) -> dict[str, tuple[str, ChannelSecurity]]:
        return dict(zip(ROWS, (self.plain, self.secured), strict=True))


@pytest.fixture(scope="module")
def servers(refdata_dir: Path, sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    directory = tmp_path_factory.mktemp("security")
    ca = CA.make()
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.server_certificate().write(directory, "server")
    token, token_hash = new_token("bench-caller")
    write_identity(directory / "identities.yaml", "bench-caller", [Role.CALLER], token_hash)
    security = ChannelSecurity(ca=directory / "ca.pem", token=token)
    secured_settings = {"tls_cert": str(cert), "tls_key": str(key),
                        "identities_file": str(directory / "identities.yaml"), "log_level": "warning"}
    with ServerProcess("tollgate", refdata=refdata_dir, threads=sizes.server_threads,
                       settings={"log_level": "warning"}) as plain, \
            ServerProcess("tollgate", refdata=refdata_dir, threads=sizes.server_threads, settings=secured_settings,
                          security=security) as secured:
        yield Pair((plain.target, ChannelSecurity()), (secured.target, security))


def _report(benchmark: Any, group: str, samples: dict[str, list[float]], **extra: Any) -> None:
    stats = {name: _percentiles(values) for name, values in samples.items()}
    for name, values in stats.items():
        record(benchmark, group, name, **values, **extra)
    plain, secured = stats[ROWS[0]], stats[ROWS[1]]
    ratio = {f"{key}_ratio": round(secured[key] / plain[key], 3) for key in ("p50_ms", "p99_ms", "mean_ms")}
    record(benchmark, group, "TLS + token / plaintext", **ratio)
    print(f"\n{group}: " + "; ".join(f"{name}: p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms"
                                    for name, s in stats.items()) + f"; ratio p50 {ratio['p50_ms_ratio']}")


def test_security_timesheet_latency(benchmark: Any, servers: Pair, firm: Firm, sizes: Sizes) -> None:
    group = f"Security: latency of one {TIMESHEET_LINES}-line timesheet (ValidationClient)"
    benchmark.group = group
    timesheet = firm.timesheet(TIMESHEET_LINES, sizes.seed)
    samples: dict[str, list[float]] = {name: [] for name in ROWS}
    clients = {name: ValidationClient(target, timeout=30, security=security)
               for name, (target, security) in servers.rows().items()}
    clock = time.perf_counter
    try:
        for client in clients.values():
            client.wait_until_ready()

        def both() -> None:
            for name, client in clients.items():
                started = clock()
                client.validate_time_entries(timesheet)
                samples[name].append(clock() - started)

        warmup = min(50, sizes.latency_calls)
        benchmark.pedantic(both, rounds=sizes.latency_calls, warmup_rounds=warmup)
    finally:
        for client in clients.values():
            client.close()
    _report(benchmark, group, {name: values[warmup:] or values for name, values in samples.items()})


def test_security_batch_of_10k(benchmark: Any, servers: Pair, firm: Firm, sizes: Sizes) -> None:
    group = "Security: one call of 10,000 entries (raw stub), time per call"
    benchmark.group = group
    request = _request(firm.entries(10_000, sizes.seed + 7, prefix="SEC-"))
    samples: dict[str, list[float]] = {name: [] for name in ROWS}
    channels = {name: open_channel(target, security, CHANNEL_OPTIONS)
                for name, (target, security) in servers.rows().items()}
    stubs = {name: pb_grpc.ValidationServiceStub(channel) for name, channel in channels.items()}
    try:
        def both() -> None:
            for name, stub in stubs.items():
                started = time.perf_counter()
                response = stub.ValidateTimeEntries(request, timeout=300)
                samples[name].append(time.perf_counter() - started)
                assert len(response.decisions) == 10_000

        benchmark.pedantic(both, rounds=sizes.grpc_rounds, warmup_rounds=1)
    finally:
        for channel in channels.values():
            channel.close()
    timed = {name: values[1:] for name, values in samples.items()}  # the warm-up round left out
    per_entry_us = {name: round(statistics.median(values) / 10_000 * 1e6, 3) for name, values in timed.items()}
    _report(benchmark, group, timed)
    record(benchmark, group, "per entry (median)", **{f"{name} us": value for name, value in per_entry_us.items()})
