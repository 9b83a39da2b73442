"""The two snapshot stores behind one interface: in-process, and Redis (real, at 127.0.0.1:6379)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from evaluators.redis_store import PENDING_SECONDS, RedisSnapshotStore
from evaluators.reference_data import ReferenceSnapshot, apply_changes, load_snapshot
from evaluators.snapshot_store import (
    InProcessStore,
    SnapshotConflictError,
    SnapshotNotFoundError,
    SnapshotStore,
    StoreState,
    StoreUnavailableError,
)
from tests.conftest import ROOT, free_port
from tests.refdata_support import OwnRedis, redis_prefix, shared_redis_url, wait_until
from tests.test_reference_data import REFDATA


@pytest.fixture(scope="module")
def base() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


def _worker(snapshot: ReferenceSnapshot, worker_id: str) -> ReferenceSnapshot:
    return apply_changes(snapshot, "worker", upserts=[{"worker_id": worker_id, "status": "ACTIVE",
                                                       "hire_date": "2026-11-01"}])


@pytest.fixture(params=["in-process", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[SnapshotStore]:
    if request.param == "in-process":
        yield InProcessStore(keep=3)
        return
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        redis_store = RedisSnapshotStore(url, prefix=prefix, keep=3)
        yield redis_store
        redis_store.close()


def _same_rows(a: ReferenceSnapshot, b: ReferenceSnapshot) -> bool:
    return {n: t.by_key for n, t in a.tables.items()} == {n: t.by_key for n, t in b.tables.items()}


def test_publish_fetch_and_keep_the_last_n(store: SnapshotStore, base: ReferenceSnapshot) -> None:
    assert store.current() is None
    assert store.kept() == []
    snapshots = [base]
    for worker_id in ("W-91", "W-92", "W-93"):
        snapshots.append(_worker(snapshots[-1], worker_id))
    for snapshot in snapshots:
        store.publish(snapshot)
    current = store.current()
    assert current is not None
    assert current.snapshot_id == snapshots[-1].snapshot_id
    assert _same_rows(current, snapshots[-1])
    assert [info.snapshot_id for info in store.kept()] == [s.snapshot_id for s in reversed(snapshots[1:])]
    assert store.kept()[0].counts == snapshots[-1].counts()
    past = store.fetch(snapshots[1].snapshot_id)
    assert _same_rows(past, snapshots[1])
    assert past.source == snapshots[1].source
    with pytest.raises(SnapshotNotFoundError):
        store.fetch(base.snapshot_id)  # the oldest of four, with three kept


def test_a_change_based_on_an_old_snapshot_is_refused(store: SnapshotStore, base: ReferenceSnapshot) -> None:
    store.publish(base, if_current="")
    with pytest.raises(SnapshotConflictError):
        store.publish(_worker(base, "W-91"), if_current="")
    first = _worker(base, "W-91")
    store.publish(first, if_current=base.snapshot_id)
    with pytest.raises(SnapshotConflictError):
        store.publish(_worker(base, "W-92"), if_current=base.snapshot_id)
    current = store.current()
    assert current is not None
    assert current.snapshot_id == first.snapshot_id


def test_watchers_see_each_new_current_snapshot(store: SnapshotStore, base: ReferenceSnapshot) -> None:
    seen: list[str] = []
    states: list[StoreState] = []
    store.watch(lambda snapshot: seen.append(snapshot.snapshot_id), states.append)
    wait_until(lambda: states and states[-1].reachable, timeout=5)
    store.publish(base)
    changed = _worker(base, "W-91")
    store.publish(changed)
    wait_until(lambda: seen and seen[-1] == changed.snapshot_id, timeout=2)
    assert base.snapshot_id in seen or seen == [changed.snapshot_id]  # Redis may coalesce quick publishes


# ---------------------------------------------------------------------------------------------------
# Redis only


@pytest.fixture
def redis_store_pair() -> Iterator[tuple[RedisSnapshotStore, RedisSnapshotStore, str]]:
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        first, second = RedisSnapshotStore(url, prefix=prefix), RedisSnapshotStore(url, prefix=prefix)
        yield first, second, prefix
        first.close()
        second.close()


def test_a_replica_decodes_only_the_tables_it_does_not_hold(
        redis_store_pair: tuple[RedisSnapshotStore, RedisSnapshotStore, str], base: ReferenceSnapshot) -> None:
    publisher, replica, _prefix = redis_store_pair
    publisher.publish(base)
    held = replica.fetch(base.snapshot_id)
    changed = _worker(base, "W-91")
    publisher.publish(changed)
    fetched = replica.fetch(changed.snapshot_id)
    assert _same_rows(fetched, changed)
    assert fetched.tables["project"] is held.tables["project"]
    assert fetched.tables["worker"] is not held.tables["worker"]


def test_tables_only_trimmed_snapshots_used_are_deleted(base: ReferenceSnapshot) -> None:
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        store = RedisSnapshotStore(url, prefix=prefix, keep=1)
        client = redis.Redis.from_url(url)
        try:
            store.publish(base)
            store.publish(_worker(base, "W-91"))
            tables = list(client.scan_iter(match=f"{prefix}:table:*"))
            snapshots = list(client.scan_iter(match=f"{prefix}:snapshot:*"))
            assert len(tables) == len(base.tables)  # six shared, one new worker table; the old one is gone
            assert len(snapshots) == 1
            assert all(client.ttl(key) == -1 for key in tables)  # published blobs never expire
        finally:
            store.close()
            client.close()


def test_a_loader_killed_before_publishing_leaves_only_blobs_that_expire(
        redis_store_pair: tuple[RedisSnapshotStore, RedisSnapshotStore, str], base: ReferenceSnapshot,
        tmp_path: Path) -> None:
    publisher, _replica, prefix = redis_store_pair
    publisher.publish(base)
    # A loader process that writes its tables and is killed (SIGKILL) before it can make them current.
    changed = _worker(base, "W-91")
    script = (
        "import os, signal, sys\n"
        "from evaluators.redis_store import RedisSnapshotStore\n"
        "from evaluators.reference_data import apply_changes, load_snapshot\n"
        "from pathlib import Path\n"
        "store = RedisSnapshotStore(sys.argv[1], prefix=sys.argv[2])\n"
        "snapshot = apply_changes(load_snapshot(Path(sys.argv[3])), 'worker', upserts=[{'worker_id': 'W-91', "
        "'status': 'ACTIVE', 'hire_date': '2026-11-01'}])\n"
        "store._publish = lambda **_: os.kill(os.getpid(), signal.SIGKILL)  # dies right before the commit\n"
        "store.publish(snapshot)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, shared_redis_url(), prefix, str(REFDATA)],
                               cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert completed.returncode == -9, completed.stderr
    current = publisher.current()
    assert current is not None
    assert current.snapshot_id == base.snapshot_id
    client = redis.Redis.from_url(shared_redis_url())
    try:
        pending = client.get(f"{prefix}:snapshot:{changed.snapshot_id}")
        assert pending is not None  # it got as far as writing its manifest...
        assert 0 < client.ttl(f"{prefix}:snapshot:{changed.snapshot_id}") <= PENDING_SECONDS  # ...which expires
        assert 0 < client.ttl(f"{prefix}:table:{changed.digests['worker']}") <= PENDING_SECONDS
    finally:
        client.close()
    # A later publish of the same data completes it.
    publisher.publish(changed)
    assert publisher.fetch(changed.snapshot_id).counts()["worker"] == base.counts()["worker"] + 1


def test_an_unreachable_redis_is_reported_not_hung_on(base: ReferenceSnapshot) -> None:
    store = RedisSnapshotStore(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.5)
    try:
        with pytest.raises(StoreUnavailableError):
            store.publish(base)
        with pytest.raises(StoreUnavailableError):
            store.current()
        states: list[StoreState] = []
        store.watch(lambda _snapshot: None, states.append)
        wait_until(lambda: bool(states), timeout=5)
        assert states[0].reachable is False
    finally:
        store.close()


def test_the_watcher_catches_up_after_redis_returns(tmp_path: Path, base: ReferenceSnapshot) -> None:
    own = OwnRedis(tmp_path)
    own.start()
    publisher = RedisSnapshotStore(own.url, timeout_seconds=0.5)
    watcher = RedisSnapshotStore(own.url, timeout_seconds=0.5)
    seen: list[str] = []
    states: list[StoreState] = []
    lock = threading.Lock()

    def record_state(state: StoreState) -> None:
        with lock:
            states.append(state)

    try:
        publisher.publish(base)
        watcher.watch(lambda snapshot: seen.append(snapshot.snapshot_id), record_state)
        wait_until(lambda: seen == [base.snapshot_id], timeout=5)
        own.kill()
        wait_until(lambda: states and not states[-1].reachable, timeout=10)
        own.start()
        changed = _worker(base, "W-91")
        publisher.publish(changed)
        wait_until(lambda: seen[-1] == changed.snapshot_id, timeout=5)
        assert states[-1].reachable
    finally:
        publisher.close()
        watcher.close()
        own.kill()
