"""Replaying a recorded batch: AuditService.Replay of one 10,000-entry batch, over gRPC, against a server process.

The batch is recorded first (one ValidateTimeEntries call, SQLite ledger); each round reads it back from the
ledger, rebuilds its items from their recorded inputs, decides them again with the rulesets compiled from their
recorded text (compiled in the warm-up round, then kept by digest) and the recorded snapshot, and compares every
decision with the one on record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from benchmarks.conftest import Sizes, per_entry
from benchmarks.data import Firm
from benchmarks.servers import ServerProcess
from benchmarks.test_grpc import CHANNEL_OPTIONS, _request, _stub
from benchmarks.test_ledger import _environment
from tollgate.api.v1 import audit_pb2, audit_pb2_grpc

REPLAY_BATCH = 10_000


@pytest.fixture(scope="module")
def recorded_batch(refdata_dir: Path, sizes: Sizes, firm: Firm,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(target, batch id) of a server whose ledger holds one batch of REPLAY_BATCH entries."""
    data_dir = tmp_path_factory.mktemp("replay")
    with _environment(TOLLGATE_DATA_DIR=str(data_dir), TOLLGATE_LEDGER="true"), \
            ServerProcess("tollgate", refdata=refdata_dir, threads=sizes.server_threads,
                          log_path=data_dir / "server.log") as server:
        channel, stub = _stub(server.target)
        with channel:
            entries = firm.entries(REPLAY_BATCH, sizes.seed + 3, prefix="RP-")
            response = stub.ValidateTimeEntries(_request(entries), timeout=300)
        yield server.target, response.batch_id


def test_replay_batch(benchmark: Any, recorded_batch: tuple[str, str], sizes: Sizes) -> None:
    group = f"replay: one recorded batch of {REPLAY_BATCH:,} entries, time per replay"
    benchmark.group = group
    target, batch_id = recorded_batch
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        response = benchmark.pedantic(stub.Replay, args=(audit_pb2.ReplayRequest(batch_id=batch_id),),
                                      kwargs={"timeout": 600}, rounds=max(3, sizes.grpc_rounds), warmup_rounds=1)
    assert response.identical and response.items == REPLAY_BATCH
    per_entry(benchmark, group, "AuditService.Replay", REPLAY_BATCH, what="read, rebuild, decide again, compare")
