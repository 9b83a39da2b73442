"""ReferenceDataService end to end: loads, changes, status, diffs, replays; no data; bad uploads; cancels.

These run the real server in process (start()) with the in-process store; the Redis-shared replicas
are in test_refdata_replicas.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import run_cli
from tests.test_reference_data import REFDATA, copy_refdata, replace_in
from tollgate.api.v1 import refdata_pb2, refdata_pb2_grpc
from tollgate.clients.client import RefDataClient, ValidationClient
from tollgate.refdata.snapshot import load_snapshot
from tollgate.rules.decisions import Decision
from tollgate.server.app import REFDATA_SERVICE_NAME, SERVICE_NAME, RunningServer, start
from tollgate.server.settings import Settings

ENTRY = {"entry_id": "R-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
         "work_date": "2026-11-20", "hours": "8", "labor_category": "SENIOR_CONSULTANT"}

CLOSE_P100 = [
    {"project_id": "P-100", "name": "Acme ERP rollout", "status": "ACTIVE", "start_date": "2026-01-05",
     "finish_date": "2026-12-31", "contract_id": "C-100", "customer_id": "CU-ACME", "effective_to": "2026-11-19"},
    {"project_id": "P-100", "name": "Acme ERP rollout", "status": "CLOSED", "start_date": "2026-01-05",
     "finish_date": "2026-12-31", "contract_id": "C-100", "customer_id": "CU-ACME", "effective_from": "2026-11-20"},
]


@pytest.fixture
def empty_server() -> Iterator[RunningServer]:
    running = start(Settings(port=0, threads=4, refdata=None, shutdown_grace_seconds=1))
    yield running
    running.stop()


@pytest.fixture
def sample_server() -> Iterator[RunningServer]:
    running = start(Settings(port=0, threads=4, shutdown_grace_seconds=1))
    yield running
    running.stop()


def _target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def _signature(decision: Decision) -> tuple[Any, ...]:
    return (decision.item_id, decision.outcome, tuple(decision.codes),
            tuple((e.field, e.new_value) for e in decision.enrichments))


def _health(server: RunningServer, service: str) -> int:
    with grpc.insecure_channel(_target(server)) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return int(response.status)



def test_a_replica_without_data_refuses_to_decide_until_a_load(empty_server: RunningServer) -> None:
    assert _health(empty_server, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    with ValidationClient(_target(empty_server)) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.validate_time_entries([ENTRY])
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "no reference data loaded yet" in refused.value.details()
        assert "tollgate refdata load" in refused.value.details()
        with RefDataClient(_target(empty_server)) as refdata:
            assert not refdata.status().HasField("current")
            loaded = refdata.load_directory(REFDATA)
        assert loaded.snapshot.snapshot_id == load_snapshot(REFDATA).snapshot_id
        assert loaded.snapshot.counts["project"] == 10
        decision = client.validate_time_entries([ENTRY]).decisions[0]
    assert decision.provenance is not None
    assert decision.provenance.snapshot_id == loaded.snapshot.snapshot_id
    assert _health(empty_server, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    assert _health(empty_server, REFDATA_SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def test_a_csv_with_bad_rows_is_refused_with_file_line_field(sample_server: RunningServer, tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    first = replace_in(copy / "projects.csv", "P-200,Globex annual audit,ACTIVE,", "P-200,Globex annual audit,,")
    second = replace_in(copy / "workers.csv", "W-4,Margaret Hamilton,ACTIVE,2015-06-01",
                        "W-4,Margaret Hamilton,ACTIVE,yesterday")
    before = sample_server.runtime.generation.snapshot.snapshot_id
    completed = run_cli("refdata", "load", str(copy), "--server", _target(sample_server))
    assert completed.returncode == 1
    assert "INVALID_ARGUMENT: load refused: 2 problem(s), nothing changed" in completed.stderr
    assert f"{copy}/projects.csv:{first}: status: Field required" in completed.stderr
    assert f"{copy}/workers.csv:{second}: hire_date: " in completed.stderr
    assert sample_server.runtime.generation.snapshot.snapshot_id == before

    partial = run_cli("refdata", "load", str(copy), "--partial", "--server", _target(sample_server))
    assert partial.returncode == 0, partial.stderr
    assert f"{copy}/projects.csv:{first}: status: Field required (row left out)" in partial.stderr
    assert "2 bad row(s) left out" in partial.stdout
    counts = sample_server.runtime.generation.snapshot.counts()
    assert (counts["project"], counts["worker"]) == (9, 5)


def test_an_upload_over_the_size_limit_is_refused_naming_the_limit() -> None:
    size = sum(f.stat().st_size for f in REFDATA.iterdir())
    running = start(Settings(port=0, threads=4, shutdown_grace_seconds=1, max_upload_bytes=size - 1))
    try:
        before = running.runtime.generation.snapshot.snapshot_id
        with RefDataClient(_target(running)) as refdata:
            with pytest.raises(grpc.RpcError) as refused:
                refdata.load_directory(REFDATA, source="too big")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{size - 1:,} bytes over all files (max_upload_bytes); nothing was loaded" in \
                refused.value.details()
            assert "--max-upload-bytes (TOLLGATE_MAX_UPLOAD_BYTES)" in refused.value.details()
            status = refdata.status()
        assert status.current.snapshot_id == before
        assert [info.snapshot_id for info in status.kept] == [before]
    finally:
        running.stop()

    exactly = start(Settings(port=0, threads=4, refdata=None, shutdown_grace_seconds=1, max_upload_bytes=size))
    try:
        with RefDataClient(_target(exactly)) as refdata:
            assert refdata.load_directory(REFDATA).snapshot.snapshot_id == load_snapshot(REFDATA).snapshot_id
    finally:
        exactly.stop()


def test_an_interrupted_upload_changes_nothing(sample_server: RunningServer) -> None:
    before = sample_server.runtime.generation.snapshot.snapshot_id
    sent_half = threading.Event()
    never = threading.Event()

    def half_an_upload() -> Iterator[refdata_pb2.LoadRequest]:
        yield refdata_pb2.LoadRequest(header=refdata_pb2.LoadHeader(source="interrupted"))
        yield refdata_pb2.LoadRequest(chunk=refdata_pb2.FileChunk(path="projects.csv",
                                                                  data=(REFDATA / "projects.csv").read_bytes()))
        sent_half.set()
        never.wait(30)  # the loader dies here

    with grpc.insecure_channel(_target(sample_server)) as channel:
        call = refdata_pb2_grpc.ReferenceDataServiceStub(channel).Load.future(half_an_upload())
        assert sent_half.wait(10)
        call.cancel()
        never.set()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    with RefDataClient(_target(sample_server)) as refdata:
        status = refdata.status()
    assert status.current.snapshot_id == before
    assert [info.snapshot_id for info in status.kept] == [before]


def test_replaying_a_decision_against_its_snapshot_after_newer_loads(sample_server: RunningServer) -> None:
    target = _target(sample_server)
    with ValidationClient(target) as client, RefDataClient(target) as refdata:
        original = client.validate_time_entries([ENTRY]).decisions[0]
        assert original.provenance is not None
        used = original.provenance.snapshot_id
        changed = refdata.upsert("project", CLOSE_P100)
        assert changed.previous_snapshot_id == used
        refdata.upsert("worker", [{"worker_id": "W-77", "status": "ACTIVE", "hire_date": "2026-01-01"}])
        now = client.validate_time_entries([ENTRY]).decisions[0]
        assert now.codes[0] == "PROJECT_NOT_CHARGEABLE"
        assert now.provenance is not None
        assert now.provenance.snapshot_id not in (used, changed.snapshot.snapshot_id)
        replayed = client.validate_time_entries([ENTRY], snapshot_id=used).decisions[0]
        assert _signature(replayed) == _signature(original)
        assert replayed.provenance is not None
        assert replayed.provenance.snapshot_id == used
        # The whole sample timesheet, streamed in chunks, is replayed on the same snapshot.
        streamed = ValidationClient(target, chunk_size=1)
        try:
            chunks = streamed.validate_time_entries([ENTRY, {**ENTRY, "entry_id": "R-2"}], snapshot_id=used)
        finally:
            streamed.close()
        assert {d.provenance.snapshot_id for d in chunks.decisions if d.provenance} == {used}

        with pytest.raises(grpc.RpcError) as unknown:
            client.validate_time_entries([ENTRY], snapshot_id="snap-000000000000")
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as malformed:
            client.validate_time_entries([ENTRY], snapshot_id="yesterday")
        assert malformed.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_upserts_and_deletes_through_the_cli_then_status_and_diff(sample_server: RunningServer,
                                                                    tmp_path: Path) -> None:
    target = _target(sample_server)
    before = sample_server.runtime.generation.snapshot.snapshot_id
    records = tmp_path / "workers.csv"
    records.write_text("worker_id,status,hire_date\nW-50,ACTIVE,2026-11-02\n", encoding="utf-8")
    upserted = run_cli("refdata", "upsert", "worker", str(records), "--server", target)
    assert upserted.returncode == 0, upserted.stderr
    deleted = run_cli("refdata", "delete", "task", "P-100/T-0", "--server", target)
    assert deleted.returncode == 0, deleted.stderr
    after = sample_server.runtime.generation.snapshot.snapshot_id
    assert deleted.stdout.startswith("snap-")
    assert f"-> {after}" in deleted.stdout

    diff = run_cli("refdata", "diff", before, after, "--server", target)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == ["- task P-100/T-0", "+ worker W-50"]

    status = run_cli("refdata", "status", "--server", target)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"current  {after}  loaded ")
    assert "delete task P-100/T-0 on snap-" in lines[0]
    assert lines[1].startswith("store    in-process, reachable")
    assert [line.split()[1] for line in lines[2:]][-1] == before

    bad = run_cli("refdata", "delete", "task", "P-100/T-404", "--server", target)
    assert bad.returncode == 1
    assert "P-100/T-404 is not in snapshot" in bad.stderr
    missing = run_cli("refdata", "diff", before, "snap-000000000000", "--server", target)
    assert missing.returncode == 2
    assert "NOT_FOUND" in missing.stderr


def test_an_upsert_naming_a_stale_snapshot_is_aborted(sample_server: RunningServer) -> None:
    with RefDataClient(_target(sample_server)) as refdata, pytest.raises(grpc.RpcError) as conflict:
        refdata.upsert("job_code", [{"job_code": "J-X", "labor_category": "X"}], if_current="snap-000000000000")
    assert conflict.value.code() is grpc.StatusCode.ABORTED


def test_a_directory_with_an_unrecognised_name_is_refused_by_the_cli_naming_each(sample_server: RunningServer,
                                                                              tmp_path: Path) -> None:
    copy = copy_refdata(tmp_path)
    (copy / "projects.csv").rename(copy / "Projects.csv")
    (copy / "workers.csv").rename(copy / "worker.CSV")
    (copy / "README.md").write_text("nightly ERP export\n", encoding="utf-8")  # a note: ignored
    before = sample_server.runtime.generation.snapshot.snapshot_id
    completed = run_cli("refdata", "load", str(copy), "--server", _target(sample_server))
    assert completed.returncode == 1
    assert f"{copy}: refused, nothing uploaded" in completed.stderr
    assert f"{copy}/Projects.csv: not an export of any entity; did you mean projects.csv?" in completed.stderr
    assert f"{copy}/worker.CSV: not an export of any entity; did you mean workers.csv?" in completed.stderr
    assert sample_server.runtime.generation.snapshot.snapshot_id == before


def _upload(server: RunningServer, *files: tuple[str, bytes]) -> grpc.RpcError:
    requests = [refdata_pb2.LoadRequest(header=refdata_pb2.LoadHeader(source="raw")),
                *(refdata_pb2.LoadRequest(chunk=refdata_pb2.FileChunk(path=path, data=data)) for path, data in files)]
    with grpc.insecure_channel(_target(server)) as channel, pytest.raises(grpc.RpcError) as refused:
        refdata_pb2_grpc.ReferenceDataServiceStub(channel).Load(iter(requests), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "tollgate-upload-" not in refused.value.details()
    return refused.value


def test_the_server_refuses_unrecognised_and_colliding_upload_paths_by_name(sample_server: RunningServer) -> None:
    projects = (REFDATA / "projects.csv").read_bytes()
    collided = _upload(sample_server, ("projects.csv", projects), ("projects.csv/part.csv", projects))
    assert collided.details() == ("file path 'projects.csv/part.csv': projects.csv/ is not the folder of any "
                                  "entity's exports; did you mean projects/?")
    upper = _upload(sample_server, ("Projects.CSV", projects))
    assert upper.details() == ("file path 'Projects.CSV': only .csv, .jsonl, .parquet, .csv.gz and .jsonl.gz "
                               "exports are loaded; did you mean projects.csv?")
    others = [(p.name, p.read_bytes()) for p in REFDATA.iterdir() if p.name != "projects.csv"]
    misnamed = _upload(sample_server, *others, ("project.csv", projects))
    assert "project.csv: not an export of any entity; did you mean projects.csv?" in misnamed.details()
    latin1 = _upload(sample_server, *others, ("projects.csv", projects.replace(b"Acme", b"Acm\xe9")))
    assert "projects.csv:2: cannot read on: not UTF-8: byte 0xe9" in latin1.details()


def test_gzipped_exports_load_through_the_cli(empty_server: RunningServer, tmp_path: Path) -> None:
    import gzip

    copy = copy_refdata(tmp_path)
    for path in list(copy.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    completed = run_cli("refdata", "load", str(copy), "--server", _target(empty_server))
    assert completed.returncode == 0, completed.stderr
    assert empty_server.runtime.generation.snapshot.snapshot_id == load_snapshot(REFDATA).snapshot_id


def test_a_load_that_would_empty_tables_is_refused_naming_each_unless_asked(sample_server: RunningServer,
                                                                         tmp_path: Path) -> None:
    target = _target(sample_server)
    before = sample_server.runtime.generation.snapshot
    only = tmp_path / "only-projects"
    only.mkdir()
    replace_in(copy_refdata(tmp_path) / "projects.csv", "Acme ERP rollout", "Acme ERP rollout II")
    (only / "projects.csv").write_bytes((tmp_path / "refdata" / "projects.csv").read_bytes())

    refused = run_cli("refdata", "load", str(only), "--server", target)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT: load refused: 22 problem(s), nothing changed" in refused.stderr
    workers = before.counts()["worker"]
    assert (f"{only}/workers: worker: would empty the table, {workers:,} row(s) in {before.snapshot_id}: this load "
            "has no workers export; send it, or keep_missing (--keep-missing) takes them over; allow_emptying "
            "(--allow-emptying) empties it") in refused.stderr
    assert sample_server.runtime.generation.snapshot.snapshot_id == before.snapshot_id

    kept = run_cli("refdata", "load", str(only), "--keep-missing", "--server", target)
    assert kept.returncode == 0, kept.stderr
    assert f"replaces {before.snapshot_id}" in kept.stdout
    assert "(no export in this load, --keep-missing): accounting_period, assignment, " in kept.stdout
    merged = sample_server.runtime.generation.snapshot
    assert merged.counts() == before.counts()
    assert merged.digests["worker"] == before.digests["worker"]
    assert merged.digests["project"] != before.digests["project"]

    header_only = tmp_path / "no-projects"
    header_only.mkdir()
    (header_only / "projects.csv").write_text((only / "projects.csv").read_text().splitlines()[0] + "\n")
    with RefDataClient(target) as refdata:
        with pytest.raises(grpc.RpcError) as emptying:
            refdata.load_directory(header_only, keep_missing=True)
        assert emptying.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (f"projects.csv: project: would empty the table, 10 row(s) in {merged.snapshot_id}: its export has "
                "no rows") in emptying.value.details()
        emptied = refdata.load_directory(header_only, keep_missing=True, allow_emptying=True)
    assert dict(emptied.emptied) == {"project": 10}
    assert emptied.previous_snapshot_id == merged.snapshot_id
    assert sample_server.runtime.generation.snapshot.counts()["project"] == 0

    everything = run_cli("refdata", "load", str(only), "--allow-emptying", "--server", target)
    assert everything.returncode == 0, everything.stderr
    assert f"emptied worker: {workers:,} row(s) in {emptied.snapshot.snapshot_id} (--allow-emptying)" in \
        everything.stdout
    assert sum(sample_server.runtime.generation.snapshot.counts().values()) == 10
