"""Replicas sharing reference snapshots through Redis: real server processes, real Redis.

- a load through one replica is decided with by the other within a second;
- Redis stopped and started again under load: no call fails, no decision is wrong, the replicas say
  they are degraded and how stale, and catch up when Redis is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.refdata_support import OwnRedis, ServerProcess, redis_prefix, servers, shared_redis_url, wait_until
from tests.test_reference_data import REFDATA, copy_refdata, replace_in
from tollgate.clients.client import RefDataClient, ValidationClient
from tollgate.refdata.snapshot import load_snapshot
from tollgate.server.app import REFDATA_SERVICE_NAME, SERVICE_NAME

ENTRY = {"entry_id": "X-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
         "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT"}


def _bill_rate(target: str) -> tuple[str, str | None]:
    """The snapshot a replica decides with and the bill rate it gives ENTRY."""
    with ValidationClient(target, timeout=5) as client:
        decision = client.validate_time_entries([ENTRY]).decisions[0]
    assert decision.provenance is not None
    rates = [e.new_value for e in decision.enrichments if e.field == "bill_rate"]
    return decision.provenance.snapshot_id, rates[-1] if rates else None


def _repriced(tmp_path: Path, rate: str) -> Path:
    """The sample data with contract C-100's senior rate (R-10, 165.00) at ``rate``."""
    copy = copy_refdata(tmp_path / rate)
    replace_in(copy / "rate_cards.csv", "R-10,CONTRACT,C-100,SENIOR_CONSULTANT,USD,HOUR,165.00",
               f"R-10,CONTRACT,C-100,SENIOR_CONSULTANT,USD,HOUR,{rate}")
    return copy


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix(shared_redis_url()) as own_prefix:
        yield own_prefix


def test_a_load_through_one_replica_is_used_by_the_other_within_a_second(prefix: str, tmp_path: Path) -> None:
    url = shared_redis_url()
    with servers(["--redis-url", url, "--redis-prefix", prefix, "--refdata", str(REFDATA)],
                 ["--redis-url", url, "--redis-prefix", prefix]) as (first, second):
        seeded, rate = _bill_rate(second.target)  # the second found what the first seeded
        assert rate == "165.00"
        assert _bill_rate(first.target)[0] == seeded
        with RefDataClient(first.target) as refdata:
            loaded = refdata.load_directory(_repriced(tmp_path, "170.00"))
        new_id = loaded.snapshot.snapshot_id
        assert _bill_rate(first.target) == (new_id, "170.00")  # the loading replica answers once it switched
        took = wait_until(lambda: _bill_rate(second.target)[0] == new_id, timeout=1.0)
        assert _bill_rate(second.target) == (new_id, "170.00")
        with RefDataClient(second.target) as refdata:
            status = refdata.status()
        assert status.current.snapshot_id == new_id
        assert [info.snapshot_id for info in status.kept] == [new_id, seeded]
        assert status.store.startswith("redis redis://127.0.0.1:6379/15 prefix tollgate-test:")
        assert took < 1.0


def _hammer(targets: list[str], expected: dict[str, str], stop: threading.Event, failures: list[str],
            calls: list[int]) -> None:
    """Decide ENTRY on every replica in turn until ``stop``; record any failed call or wrong decision."""
    clients = [ValidationClient(target, timeout=5) for target in targets]
    try:
        while not stop.is_set():
            for client in clients:
                try:
                    decision = client.validate_time_entries([ENTRY]).decisions[0]
                except grpc.RpcError as error:
                    failures.append(f"{client.target}: {error.code().name}: {error.details()}")
                    continue
                assert decision.provenance is not None
                rates = [e.new_value for e in decision.enrichments if e.field == "bill_rate"]
                want = expected.get(decision.provenance.snapshot_id)
                if not rates or rates[-1] != want:
                    failures.append(f"{decision.provenance.snapshot_id}: bill rate {rates}, expected {want}")
                calls[0] += 1
    finally:
        for client in clients:
            client.close()


def test_redis_stopped_and_restarted_under_load(tmp_path: Path) -> None:
    own = OwnRedis(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    own.start()
    first_data, second_data = _repriced(tmp_path, "170.00"), _repriced(tmp_path, "180.00")
    try:
        with servers(["--redis-url", own.url, "--refdata", str(first_data)], ["--redis-url", own.url]) as replicas:
            first, second = replicas
            first_id = _bill_rate(first.target)[0]
            wait_until(lambda: _bill_rate(second.target)[0] == first_id, timeout=5)
            # Ids name content, so the second load's id is known before it is loaded.
            second_id = load_snapshot(second_data).snapshot_id
            expected: dict[str, Any] = {first_id: "170.00", second_id: "180.00"}
            stop, failures, calls = threading.Event(), [], [0]
            load = [threading.Thread(target=_hammer, args=([r.target for r in replicas], expected, stop, failures,
                                                           calls)) for _ in range(2)]
            for thread in load:
                thread.start()
            try:
                time.sleep(0.3)
                own.kill()
                for replica in replicas:
                    wait_until(lambda r=replica: r.health(REFDATA_SERVICE_NAME)  # type: ignore[misc]
                               == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
                time.sleep(1.0)
                calls_while_down = calls[0]
                for replica in replicas:
                    assert replica.health(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
                    with RefDataClient(replica.target, timeout=5) as refdata:
                        status = refdata.status()
                    assert not status.store_reachable
                    assert status.stale_seconds >= 1.0
                    assert status.current.snapshot_id == first_id
                    with pytest.raises(grpc.RpcError) as refused, RefDataClient(replica.target, timeout=10) as rd:
                        rd.upsert("job_code", [{"job_code": "J-X", "labor_category": "X"}])
                    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                own.start()
                for replica in replicas:
                    wait_until(lambda r=replica: r.health(REFDATA_SERVICE_NAME)  # type: ignore[misc]
                               == health_pb2.HealthCheckResponse.SERVING, timeout=10)
                with RefDataClient(first.target) as refdata:
                    assert refdata.load_directory(second_data).snapshot.snapshot_id == second_id
                wait_until(lambda: _bill_rate(second.target)[0] == second_id, timeout=1.0)
                time.sleep(0.3)
            finally:
                stop.set()
                for thread in load:
                    thread.join(timeout=10)
            assert failures == []
            assert calls_while_down > 0
            with RefDataClient(second.target) as refdata:
                status = refdata.status()
            assert status.store_reachable
            assert status.stale_seconds == 0
            assert [info.snapshot_id for info in status.kept] == [second_id, first_id]
    finally:
        own.kill()


def test_a_replica_started_while_redis_is_down_refuses_to_decide_then_catches_up(tmp_path: Path) -> None:
    own = OwnRedis(tmp_path)
    replica = ServerProcess("--redis-url", own.url)
    try:
        replica.wait_until_up()
        assert replica.health(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert replica.health(REFDATA_SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        with ValidationClient(replica.target, timeout=5) as client, pytest.raises(grpc.RpcError) as refused:
            client.validate_time_entries([ENTRY])
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        own.start()
        with servers(["--redis-url", own.url, "--refdata", str(REFDATA)]) as (seeder,):
            seeded = _bill_rate(seeder.target)[0]
            wait_until(lambda: replica.health(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING, timeout=5)
            assert _bill_rate(replica.target) == (seeded, "165.00")
    finally:
        replica.stop()
        own.kill()


def test_a_redis_password_is_never_shown_in_status_or_logs(prefix: str) -> None:
    from tests.conftest import run_cli

    # The shared Redis has no password, so AUTH fails: the replica reports the store unreachable, and says
    # where it is, in status and in its logs, without the password.
    url = shared_redis_url().replace("redis://", "redis://ops:hunter2@") + "?password=hunter3"
    with servers(["--redis-url", url, "--redis-prefix", prefix]) as (server,):
        for output in ("table", "json"):
            shown = run_cli("refdata", "status", "--format", output, "--server", server.target)
            assert "ops:***@" in shown.stdout and "password=***" in shown.stdout, shown.stdout + shown.stderr
            assert "hunter" not in shown.stdout + shown.stderr
        logs = server.stderr()
    assert "ops:***@" in logs
    assert "hunter" not in logs


def _metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def test_redis_restarted_without_its_data_is_detected_and_a_full_load_recovers(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import free_port, run_cli

    data = tmp_path / "redis"
    data.mkdir()
    own = OwnRedis(data)
    own.start()
    metrics = [free_port(), free_port()]
    try:
        with servers(["--redis-url", own.url, "--refdata", str(REFDATA), "--metrics-port", str(metrics[0])],
                     ["--redis-url", own.url, "--metrics-port", str(metrics[1])]) as replicas:
            first, second = replicas
            held = _bill_rate(first.target)[0]
            wait_until(lambda: _bill_rate(second.target)[0] == held, timeout=5)
            assert _metric(metrics[1], "tollgate_reference_store_lost_data") == 0
            own.kill()  # and back without persistence: nothing kept
            shutil.rmtree(data)
            data.mkdir()
            own.start()
            for replica in replicas:
                with RefDataClient(replica.target, timeout=5) as refdata:
                    wait_until(lambda rd=refdata: rd.status().store_lost != "", timeout=10)  # type: ignore[misc]
                    assert replica.health(REFDATA_SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
                    assert replica.health(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
                    assert _bill_rate(replica.target) == (held, "165.00")  # still deciding with what it holds
                    status = refdata.status()
                    assert status.store_reachable
                    assert status.store_lost == "the store holds no current snapshot any more"
                    assert status.current.snapshot_id == held
                    with pytest.raises(grpc.RpcError) as refused:
                        refdata.upsert("job_code", [{"job_code": "J-X", "labor_category": "X"}])
                    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                    assert "lost its data" in refused.value.details()
            assert [_metric(port, "tollgate_reference_store_lost_data") for port in metrics] == [1, 1]
            shown = run_cli("refdata", "status", "--server", second.target)
            assert "LOST     the store lost its data (the store holds no current snapshot any more); this " \
                   f"replica keeps deciding with {held}; recover with: tollgate refdata load DIR" in shown.stdout
            # A load of some entities only is checked against the snapshot the replica holds: refused.
            only = tmp_path / "only"
            only.mkdir()
            shutil.copy(REFDATA / "projects.csv", only / "projects.csv")
            with RefDataClient(second.target) as refdata:
                with pytest.raises(grpc.RpcError) as partial:
                    refdata.load_directory(only)
                assert f"first: tasks: task: would empty the table, 12 row(s) in {held}" in partial.value.details()
                recovered = refdata.load_directory(REFDATA, source="recovery")
            assert recovered.snapshot.snapshot_id == held  # the same data, the same id
            for replica in replicas:
                wait_until(lambda r=replica: r.health(REFDATA_SERVICE_NAME)  # type: ignore[misc]
                           == health_pb2.HealthCheckResponse.SERVING, timeout=10)
                with RefDataClient(replica.target, timeout=5) as refdata:
                    assert refdata.status().store_lost == ""
            assert [_metric(port, "tollgate_reference_store_lost_data") for port in metrics] == [0, 0]
            logs = [replica.stderr() for replica in replicas]
        for log in logs:
            [line] = [line for line in log.splitlines() if "store_lost_data" in line]
            assert held in line and "tollgate refdata load DIR" in line
    finally:
        own.kill()
