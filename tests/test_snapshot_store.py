"""The snapshot stores behind one interface: in-process, a directory, and Redis (real, at 127.0.0.1:6379)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, free_port
from tests.refdata_support import OwnRedis, redis_prefix, shared_redis_url, wait_until
from tests.test_reference_data import REFDATA
from tollgate.refdata.directory_store import DirectorySnapshotStore
from tollgate.refdata.redis_store import RedisSnapshotStore
from tollgate.refdata.shared_store import PENDING_SECONDS, SharedStore
from tollgate.refdata.snapshot import ReferenceSnapshot, apply_changes, build_snapshot, build_table, load_snapshot
from tollgate.refdata.store import (
    InProcessStore,
    SnapshotConflictError,
    SnapshotNotFoundError,
    SnapshotStore,
    StoreState,
    StoreUnavailableError,
)
from tollgate.rules.fields import date_value


@pytest.fixture(scope="module")
def base() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


def _worker(snapshot: ReferenceSnapshot, worker_id: str) -> ReferenceSnapshot:
    return apply_changes(snapshot, "worker", upserts=[{"worker_id": worker_id, "status": "ACTIVE",
                                                       "hire_date": "2026-11-01"}])


@pytest.fixture(params=["in-process", "directory", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    if request.param == "in-process":
        yield InProcessStore(keep=3)
        return
    if request.param == "directory":
        directory_store = DirectorySnapshotStore(tmp_path / "snapshots", keep=3)
        yield directory_store
        directory_store.close()
        return
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        redis_store = RedisSnapshotStore(url, prefix=prefix, keep=3)
        yield redis_store
        redis_store.close()


@pytest.fixture(params=["directory", "redis"])
def shared_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SharedStore, SharedStore]]:
    """Two processes' views of one shared store: what one publishes, the other fetches."""
    if request.param == "directory":
        pair: tuple[SharedStore, SharedStore] = (DirectorySnapshotStore(tmp_path), DirectorySnapshotStore(tmp_path))
        yield pair
    else:
        url = shared_redis_url()
        with redis_prefix(url) as prefix:
            pair = (RedisSnapshotStore(url, prefix=prefix), RedisSnapshotStore(url, prefix=prefix))
            yield pair
    for one in pair:
        one.close()


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
    store.watch(lambda snapshot, _seen_at: seen.append(snapshot.snapshot_id), states.append)
    wait_until(lambda: states and states[-1].reachable, timeout=5)
    store.publish(base)
    changed = _worker(base, "W-91")
    store.publish(changed)
    wait_until(lambda: seen and seen[-1] == changed.snapshot_id, timeout=2)
    assert base.snapshot_id in seen or seen == [changed.snapshot_id]  # Redis may coalesce quick publishes


def test_a_conflicting_publish_of_the_same_data_leaves_the_current_snapshot_whole(
        shared_pair: tuple[SharedStore, SharedStore], base: ReferenceSnapshot) -> None:
    first, second = shared_pair
    first.publish(base, if_current="")
    # Two replicas seeding the same exports at start: the second is refused, and must not disturb the first.
    again = build_snapshot(base.tables, "another replica's seed")
    assert again.snapshot_id == base.snapshot_id
    with pytest.raises(SnapshotConflictError):
        second.publish(again, if_current="")
    current = second.current()
    assert current is not None
    assert current.source == base.source
    if isinstance(first, RedisSnapshotStore):
        client = redis.Redis.from_url(shared_redis_url())
        try:
            assert client.ttl(f"{first.prefix}:snapshot:{base.snapshot_id}") == -1  # still permanent
        finally:
            client.close()


def test_a_replica_decodes_only_the_tables_it_does_not_hold(
        shared_pair: tuple[SharedStore, SharedStore], base: ReferenceSnapshot) -> None:
    publisher, replica = shared_pair
    publisher.publish(base)
    held = replica.fetch(base.snapshot_id)
    changed = _worker(base, "W-91")
    publisher.publish(changed)
    fetched = replica.fetch(changed.snapshot_id)
    assert _same_rows(fetched, changed)
    assert fetched.tables["project"] is held.tables["project"]
    assert fetched.tables["worker"] is not held.tables["worker"]


def test_one_process_sees_what_another_publishes(
        shared_pair: tuple[SharedStore, SharedStore], base: ReferenceSnapshot) -> None:
    publisher, watcher = shared_pair
    seen: list[str] = []
    watcher.watch(lambda snapshot, _seen_at: seen.append(snapshot.snapshot_id), lambda _state: None)
    publisher.publish(base)
    changed = _worker(base, "W-91")
    publisher.publish(changed)
    wait_until(lambda: seen and seen[-1] == changed.snapshot_id, timeout=3)


# ---------------------------------------------------------------------------------------------------
# A directory only


def _files(root: Path, folder: str) -> set[str]:
    return {path.name for path in (root / folder).iterdir()}


def test_a_directory_deletes_what_only_trimmed_snapshots_used(tmp_path: Path, base: ReferenceSnapshot) -> None:
    store = DirectorySnapshotStore(tmp_path, keep=1)
    store.publish(base)
    changed = _worker(base, "W-91")
    store.publish(changed)
    assert _files(tmp_path, "segments") == {s.digest for table in changed.tables.values() for s in table.segments()}
    assert _files(tmp_path, "snapshots") == {f"{changed.snapshot_id}.json"}
    assert [info.snapshot_id for info in store.kept()] == [changed.snapshot_id]


def test_a_publisher_killed_before_its_commit_leaves_files_a_later_commit_expires(
        tmp_path: Path, base: ReferenceSnapshot) -> None:
    store = DirectorySnapshotStore(tmp_path, keep=1)
    store.publish(base)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tollgate.refdata.directory_store import DirectorySnapshotStore\n"
        "from tollgate.refdata.snapshot import apply_changes, load_snapshot\n"
        "store = DirectorySnapshotStore(Path(sys.argv[1]))\n"
        "snapshot = apply_changes(load_snapshot(Path(sys.argv[2])), 'worker', upserts=[{'worker_id': 'W-91', "
        "'status': 'ACTIVE', 'hire_date': '2026-11-01'}])\n"
        "store._commit = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # dies right before the commit\n"
        "store.publish(snapshot)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(REFDATA)], cwd=ROOT,
                               capture_output=True, timeout=60, check=False)
    assert completed.returncode == -9, completed.stderr
    current = store.current()
    assert current is not None
    assert current.snapshot_id == base.snapshot_id
    pending = _worker(base, "W-91")
    assert f"{pending.snapshot_id}.json" in _files(tmp_path, "snapshots")
    store.publish(_worker(base, "W-92"))  # a commit soon after leaves the pending files alone...
    assert f"{pending.snapshot_id}.json" in _files(tmp_path, "snapshots")
    expired = time.time() - PENDING_SECONDS - 1
    for path in [*(tmp_path / "snapshots").iterdir(), *(tmp_path / "segments").iterdir()]:
        os.utime(path, (expired, expired))
    latest = _worker(base, "W-93")
    store.publish(latest)  # ...and one after they expired deletes them
    assert _files(tmp_path, "snapshots") == {f"{latest.snapshot_id}.json"}
    assert _files(tmp_path, "segments") == {s.digest for table in latest.tables.values() for s in table.segments()}


@pytest.mark.parametrize("snapshot_id", ["../current", "snap-../../etc/passwd", "", "snap-" + "a" * 100, "snap-\x00",
                                         "snap-\uff41\uff42\uff43"])  # fullwidth letters
def test_a_replay_id_never_names_another_file(tmp_path: Path, base: ReferenceSnapshot, snapshot_id: str) -> None:
    store = DirectorySnapshotStore(tmp_path / "store")
    store.publish(base)
    with pytest.raises(SnapshotNotFoundError):
        store.fetch(snapshot_id)


def test_a_directory_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="a-file"):
        DirectorySnapshotStore(tmp_path / "a-file" / "snapshots")


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


def _with_workers(snapshot: ReferenceSnapshot, count: int) -> ReferenceSnapshot:
    """``snapshot`` with ``count`` more workers: a worker table cut into several segments."""
    return apply_changes(snapshot, "worker", upserts=[
        {"worker_id": f"W-B{n}", "status": "ACTIVE", "hire_date": "2020-01-01", "job_code": "J-SENIOR"}
        for n in range(count)
    ])


def test_a_changed_table_is_named_as_the_same_data_loaded_afresh(base: ReferenceSnapshot) -> None:
    big = _with_workers(base, 10_000)
    changed = apply_changes(big, "worker", upserts=[{"worker_id": "W-B7", "status": "TERMINATED",
                                                     "hire_date": "2020-01-01"}])
    afresh = build_snapshot({name: build_table(table.entity, [row for versions in table.by_key.values()
                                                              for row in versions])
                             for name, table in changed.tables.items()}, "afresh")
    assert afresh.snapshot_id == changed.snapshot_id
    added_and_removed = apply_changes(apply_changes(big, "worker", upserts=[
        {"worker_id": "W-NEW", "status": "ACTIVE", "hire_date": "2026-11-01"}]), "worker", deletes=[("W-NEW",)])
    assert added_and_removed.snapshot_id == big.snapshot_id


def test_a_change_to_one_record_moves_one_segment(
        redis_store_pair: tuple[RedisSnapshotStore, RedisSnapshotStore, str], base: ReferenceSnapshot) -> None:
    publisher, replica, prefix = redis_store_pair
    big = _with_workers(base, 10_000)
    assert len(big.tables["worker"].segments()) > 1
    publisher.publish(big)
    held = replica.fetch(big.snapshot_id)
    held_workers = held.tables["worker"]
    held_workers.find(("job_code",), ("J-SENIOR",))  # an index built while serving the old snapshot
    client = redis.Redis.from_url(shared_redis_url())
    try:
        before = set(client.scan_iter(match=f"{prefix}:segment:*"))
        changed = apply_changes(big, "worker", upserts=[{"worker_id": "W-B7", "status": "TERMINATED",
                                                         "hire_date": "2020-01-01", "job_code": "J-JUNIOR"}])
        publisher.publish(changed)
        assert len(set(client.scan_iter(match=f"{prefix}:segment:*")) - before) == 1
    finally:
        client.close()
    fetched = replica.fetch(changed.snapshot_id)
    workers = fetched.tables["worker"]
    # the same rows, digest and segments as encoding the changed table afresh
    assert _same_rows(fetched, changed)
    assert fetched.digests == changed.digests
    assert [s.digest for s in workers.segments()] == [s.digest for s in changed.tables["worker"].segments()]
    shared = [a is b for a, b in zip(workers.segments(), held_workers.segments(), strict=True)]
    assert shared.count(False) == 1  # only the segment holding W-B7 was decoded
    day = date_value(dt.date(2026, 11, 3))
    assert workers.get(("W-B7",), day)["status"] == "TERMINATED"  # type: ignore[index]
    assert held_workers.get(("W-B7",), day)["status"] == "ACTIVE"  # type: ignore[index]  # the old one untouched
    assert "W-B7" not in {row["worker_id"] for row in workers.find(("job_code",), ("J-SENIOR",))}
    assert "W-B7" in {row["worker_id"] for row in workers.find(("job_code",), ("J-JUNIOR",))}
    assert "W-B7" in {row["worker_id"] for row in held_workers.find(("job_code",), ("J-SENIOR",))}
    assert len(workers) == len(held_workers)


def test_segments_only_trimmed_snapshots_used_are_deleted(base: ReferenceSnapshot) -> None:
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        store = RedisSnapshotStore(url, prefix=prefix, keep=1)
        client = redis.Redis.from_url(url)
        try:
            store.publish(base)
            changed = _worker(base, "W-91")
            store.publish(changed)
            segments = {key.decode() for key in client.scan_iter(match=f"{prefix}:segment:*")}
            snapshots = list(client.scan_iter(match=f"{prefix}:snapshot:*"))
            # the shared segments and the new worker segment; the old worker segment is gone
            assert segments == {f"{prefix}:segment:{segment.digest}"
                                for table in changed.tables.values() for segment in table.segments()}
            assert f"{prefix}:segment:{base.tables['worker'].segments()[0].digest}" not in segments
            assert len(snapshots) == 1
            assert all(client.ttl(key) == -1 for key in segments)  # published blobs never expire
        finally:
            store.close()
            client.close()


def test_a_snapshot_stored_by_an_earlier_version_is_refused_then_cleaned_up(base: ReferenceSnapshot) -> None:
    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        client = redis.Redis.from_url(url)
        # As an earlier version stored it: whole tables, and a manifest without segments.
        client.set(f"{prefix}:table:0123abcd", b"whole table")
        client.set(f"{prefix}:snapshot:snap-0123456789ab", json.dumps({
            "snapshot_id": "snap-0123456789ab", "source": "old", "loaded_at": "2026-11-01T00:00:00+00:00",
            "digests": {"worker": "0123abcd"}, "counts": {"worker": 1}}))
        client.set(f"{prefix}:current", "snap-0123456789ab")
        client.rpush(f"{prefix}:kept", "snap-0123456789ab")
        store = RedisSnapshotStore(url, prefix=prefix, keep=1)
        try:
            with pytest.raises(SnapshotNotFoundError, match="stored by an earlier version"):
                store.current()
            store.publish(base)  # a load replaces it, and the blobs only it used go
            assert store.current() is not None
            assert client.exists(f"{prefix}:table:0123abcd", f"{prefix}:snapshot:snap-0123456789ab") == 0
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
        "from tollgate.refdata.redis_store import RedisSnapshotStore\n"
        "from tollgate.refdata.snapshot import apply_changes, load_snapshot\n"
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
        assert 0 < client.ttl(f"{prefix}:segment:{changed.tables['worker'].segments()[0].digest}") <= PENDING_SECONDS
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
        store.watch(lambda _snapshot, _seen_at: None, states.append)
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
        watcher.watch(lambda snapshot, _seen_at: seen.append(snapshot.snapshot_id), record_state)
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


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:hunter2@cache:6379/0", "redis://user:***@cache:6379/0"),
    ("redis://:hunter2@cache:6379", "redis://:***@cache:6379"),
    ("redis://hunter2@cache", "redis://***@cache"),  # a password where the user name goes
    ("redis://cache:6379/0?password=hunter2&db=2", "redis://cache:6379/0?password=***&db=2"),
    ("rediss://u:hunter2@cache/1?Password=hunter2", "rediss://u:***@cache/1?Password=***"),
    ("unix:///run/redis.sock?password=hunter2", "unix:///run/redis.sock?password=***"),
    ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
])
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    from tollgate.refdata.redis_store import safe_url

    assert safe_url(url) == shown
    store = RedisSnapshotStore(url)
    assert "hunter2" not in store.description
    store.close()


def test_a_malformed_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"^redis://:\*\*\*@cache:port is not a Redis URL") as refused:
        RedisSnapshotStore("redis://:hunter2@cache:port")
    assert "hunter2" not in str(refused.value)


def test_the_watcher_tells_when_redis_loses_its_data_and_when_a_snapshot_is_current_again(
        base: ReferenceSnapshot) -> None:
    from tests.refdata_support import delete_prefix

    url = shared_redis_url()
    with redis_prefix(url) as prefix:
        store = RedisSnapshotStore(url, prefix=prefix)
        store.recheck_seconds = 0.05
        states: list[StoreState] = []
        adopted: list[str] = []
        try:
            store.publish(base)
            store.watch(lambda snapshot, _seen: adopted.append(snapshot.snapshot_id), states.append)
            wait_until(lambda: adopted == [base.snapshot_id], timeout=5)
            delete_prefix(url, prefix)  # as FLUSHDB, or a restart without persistence
            wait_until(lambda: states[-1].lost is not None, timeout=5)
            assert (states[-1].reachable, states[-1].current_id) == (True, None)
            assert states[-1].lost == "the store holds no current snapshot any more"
            store.publish(_worker(base, "W-LOST"))
            wait_until(lambda: states[-1].lost is None and len(adopted) == 2, timeout=5)
            client = redis.Redis.from_url(url)
            try:  # the current snapshot's manifest gone (an eviction): lost too
                client.delete(f"{prefix}:snapshot:{adopted[-1]}")
                client.set(f"{prefix}:current", base.snapshot_id)
            finally:
                client.close()
            wait_until(lambda: states[-1].lost is not None, timeout=5)
            assert states[-1].lost == f"snapshot {base.snapshot_id} is not kept in {store.description}"
        finally:
            store.close()
