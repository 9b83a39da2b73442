"""End to end: the real server on a free port, called through the real client and the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import ROOT, SAMPLE_TIMESHEET, TOLLGATE, free_port, run_cli
from tests.refdata_support import wait_until
from tests.status_support import bad_request_field
from tests.test_reference_data import copy_refdata, replace_in
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.cli import read_items
from tollgate.clients.client import ValidationClient
from tollgate.rules.decisions import Decision, Outcome
from tollgate.rules.item_kinds import TimeEntry
from tollgate.rules.model import Severity
from tollgate.server.app import SERVICE_NAME, RunningServer, start
from tollgate.server.settings import Settings


def _entry(entry_id: str, **overrides: Any) -> dict[str, Any]:
    entry = {"entry_id": entry_id, "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
             "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT",
             "submitted_at": "2026-11-07T17:00:00Z"}
    entry.update(overrides)
    return entry


def _by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.item_id: d for d in decisions}


def _check_sample_decisions(decisions: dict[str, tuple[str, list[str], dict[str, str | None]]]) -> None:
    """The sample timesheet shows every outcome; each entry's decision is known."""
    assert decisions["TE-1001"][0] == "accept"
    outcome, _codes, enriched = decisions["TE-1002"]
    assert outcome == "enrich"
    assert enriched == {"labor_category": "SENIOR_CONSULTANT", "bill_rate": "165.00",
                        "rate_source": "CONTRACT C-100 (rate R-10)", "bill_amount": "1237.50"}
    assert decisions["TE-1003"][2]["bill_rate"] == "172.00"  # the contract rate changed on 2026-11-16
    assert decisions["TE-1006"][2]["bill_rate"] == "150.00"  # 1,200/day over 8 hours
    assert decisions["TE-1009"][:2] == ("reject", ["PROJECT_NOT_CHARGEABLE", "OUTSIDE_PROJECT_DATES",
                                                   "WORKER_NOT_ACTIVE", "NO_ASSIGNMENT"])  # BE-4
    assert decisions["TE-1010"][:2] == ("reject", ["TASK_NOT_CHARGEABLE"])
    assert decisions["TE-1016"][:2] == ("reject", ["REFERENCE_DATA_MISSING", "REFERENCE_DATA_MISSING"])
    assert decisions["TE-1017"][:2] == ("reject", ["INVALID_FIELD"])


def test_sample_timesheet_through_the_client(client: ValidationClient, server: RunningServer) -> None:
    result = client.validate_time_entries(read_items(SAMPLE_TIMESHEET), correlation_id="e2e-sample-1")
    decisions = result.decisions
    assert [d.item_id for d in decisions] == [f"TE-{n}" for n in range(1001, 1037)]
    _check_sample_decisions({
        d.item_id: (d.outcome.value, d.codes, {e.field: e.new_value for e in d.enrichments}) for d in decisions
    })
    rejected = _by_id(decisions)["TE-1009"]
    assert all(r.message and r.rule_id and r.ruleset_id for r in rejected.reasons)
    assert {r.field for r in rejected.reasons} == {"project_id", "work_date", "worker_id"}  # BE-4 names worker_id
    provenance = decisions[0].provenance
    assert provenance is not None
    assert provenance.correlation_id == "e2e-sample-1"
    assert provenance.snapshot_id == server.runtime.generation.snapshot.snapshot_id
    assert [r.id for r in provenance.rulesets] == ["batch-checks", "project-status", "labor-category",
                                                   "billing-eligibility", "rate-cards", "contract-terms"]
    assert result.summary.total == 36
    assert result.summary.accepted + result.summary.enriched + result.summary.rejected == 36
    assert result.summary.by_reason_code["PROJECT_NOT_CHARGEABLE"] == 2



def test_sample_timesheet_through_the_cli(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    completed = run_cli("validate", str(SAMPLE_TIMESHEET), "--server", target, "--format", "json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    _check_sample_decisions({
        d["item_id"]: (d["outcome"], [r["code"] for r in d["reasons"]],
                       {e["field"]: e["new_value"] for e in d["enrichments"]})
        for d in document["decisions"]
    })
    assert document["provenance"]["snapshot_id"].startswith("snap-")

    table = run_cli("validate", str(SAMPLE_TIMESHEET), "--server", target)
    assert table.returncode == 0, table.stderr
    expected_line = "TE-1009  reject   error PROJECT_NOT_CHARGEABLE [PS-1]: Project P-300 is CLOSED on 2026-11-17"
    assert expected_line in table.stdout
    assert "36 items:" in table.stdout

    failing = run_cli("validate", str(SAMPLE_TIMESHEET), "--server", target, "--fail-on-reject")
    assert failing.returncode == 1


def test_jsonl_input_through_the_cli(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "entries.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in [
        _entry("J-1", hours=8, billable=True), _entry("J-2", project_id="P-300", work_date="2026-11-20"),
    ]) + "\n")
    completed = run_cli("validate", str(path), "--server", f"127.0.0.1:{server.port}", "--format", "json")
    assert completed.returncode == 0, completed.stderr
    outcomes = {d["item_id"]: d["outcome"] for d in json.loads(completed.stdout)["decisions"]}
    assert outcomes == {"J-1": "enrich", "J-2": "reject"}


def test_a_bad_jsonl_line_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "entries.jsonl"
    path.write_text(json.dumps(_entry("J-1")) + "\n\n" + '{"entry_id": "J-2", hours: 8}\n')
    completed = run_cli("validate", str(path), "--server", f"127.0.0.1:{free_port()}")
    assert completed.returncode == 2
    assert f"{path}:3: not valid JSON: Expecting property name enclosed in double quotes" in completed.stderr


def test_cli_reports_an_unreachable_server(tmp_path: Path) -> None:
    completed = run_cli("validate", str(SAMPLE_TIMESHEET), "--server", f"127.0.0.1:{free_port()}",
                         "--timeout", "2")
    assert completed.returncode == 2
    assert "UNAVAILABLE" in completed.stderr or "DEADLINE_EXCEEDED" in completed.stderr


def test_malformed_entries_are_rejected_alone(client: ValidationClient) -> None:
    entries = [
        _entry("OK-1"),
        _entry("", hours="8"),  # missing id
        _entry("BAD-HOURS", hours="eight"),
        _entry("BAD-DATE", work_date="2026-13-45"),
        _entry("BAD-BOOL", billable="perhaps"),
        _entry("OK-2", work_date="2026-11-04"),
    ]
    decisions = client.validate_time_entries(entries).decisions
    assert [d.item_id for d in decisions] == ["OK-1", "(item 2)", "BAD-HOURS", "BAD-DATE", "BAD-BOOL", "OK-2"]
    by_id = _by_id(decisions)
    for item_id, field in [("(item 2)", "entry_id"), ("BAD-HOURS", "hours"), ("BAD-DATE", "work_date"),
                           ("BAD-BOOL", "billable")]:
        decision = by_id[item_id]
        assert decision.outcome is Outcome.REJECT
        assert [r.field for r in decision.reasons] == [field]
        assert field in decision.reasons[0].message
    assert "'eight' is not a decimal number" in by_id["BAD-HOURS"].reasons[0].message
    assert by_id["OK-1"].outcome is Outcome.ENRICH
    assert by_id["OK-2"].outcome is Outcome.ENRICH


def test_typed_items_through_the_client(client: ValidationClient) -> None:
    entry = TimeEntry(entry_id="TYPED-1", worker_id="W-2", project_id="P-100", task_id="T-1",
                      work_date=dt.date(2026, 11, 5), hours=Decimal("3"), time_type="OT",
                      submitted_at=dt.datetime(2026, 11, 7, 18, 10, tzinfo=dt.UTC), custom={"ticket": "OPS-7"})
    decision = client.validate_time_entries([entry]).decisions[0]
    assert decision.outcome is Outcome.ENRICH
    # W-2's worker rate of 130.00 (RC-1), at 1.5 times for overtime (RC-6), from the typed decimal and date.
    enriched = [(e.field, e.new_value) for e in decision.enrichments]
    assert [value for field, value in enriched if field == "bill_rate"][-1] == "195.00"
    assert enriched[-1] == ("bill_amount", "585.00")  # 3 hours at 195.00 (CT-3.amount)


def test_large_batches_stream_in_chunks_keep_order_and_a_cap_holds_across_chunks(server: RunningServer) -> None:
    weekdays = [day for day in (dt.date(2026, 11, d) for d in range(2, 28)) if day.weekday() < 5]
    # Short entries spread over the month, so no worker's day goes past the batch checks' maximum.
    entries = [_entry(f"S-{n:05d}", hours="0.1", work_date=weekdays[n % len(weekdays)].isoformat())
               for n in range(2_500)]
    with ValidationClient(f"127.0.0.1:{server.port}", chunk_size=300) as chunked:
        result = chunked.validate_time_entries(entries)
    assert [d.item_id for d in result.decisions] == [e["entry_id"] for e in entries]
    assert result.summary.total == 2_500
    # Contract C-100 line L1 has 250,000.00 - 241,500.00 left; an entry bills 0.1 h x 165.00 or 172.00 (from the
    # 16th). Each chunk of 300 (under 5,200.00) fits alone: the later chunks see what the earlier ones consumed
    # (docs/controls.md), so what is accepted fills the cap and no more.
    billed = sum(Decimal(next(e.new_value for e in d.enrichments if e.field == "bill_amount") or 0)
                 for d in result.decisions if d.outcome is not Outcome.REJECT)
    assert Decimal("8500.00") - Decimal("16.50") < billed <= Decimal("8500.00")
    assert {r.code for d in result.decisions if d.outcome is Outcome.REJECT for r in d.reasons
            if r.severity is Severity.ERROR} == {"NOT_TO_EXCEED_LIMIT"}


def test_request_limits_give_clear_errors() -> None:
    limited = start(Settings(port=0, threads=2, max_batch_items=5, max_message_bytes=64 * 1024))
    try:
        with ValidationClient(f"127.0.0.1:{limited.port}", chunk_size=100) as client:
            with pytest.raises(grpc.RpcError) as too_many:
                client.validate_time_entries([_entry(f"L-{n}") for n in range(6)])
            assert too_many.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "6 entries in one request; the limit is 5" in too_many.value.details()
            assert bad_request_field(too_many.value) == "entries"

            with pytest.raises(grpc.RpcError) as too_big:
                client.validate_time_entries([_entry("BIG", custom={"note": "x" * 100_000})])
            assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in too_big.value.details()
    finally:
        limited.stop()


def test_correlation_id_is_generated_and_returned(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ValidationServiceStub(channel)
        request = pb.ValidateTimeEntriesRequest(entries=[pb.TimeEntry(**_entry("C-1"))])
        response, call = stub.ValidateTimeEntries.with_call(request)
        returned = dict(call.initial_metadata())["x-correlation-id"]
        assert len(returned) == 32
        assert response.provenance.correlation_id == returned
        _response, call = stub.ValidateTimeEntries.with_call(request, metadata=(("x-correlation-id", "abc-1"),))
        assert dict(call.initial_metadata())["x-correlation-id"] == "abc-1"


def test_health_and_reflection(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert {"tollgate.v1.ValidationService", "grpc.health.v1.Health"} <= names


def test_a_bad_ruleset_is_refused_on_reload_and_the_previous_keeps_serving(tmp_path: Path) -> None:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets)
    running = start(Settings(port=0, threads=2, rulesets=rulesets))
    try:
        before = running.runtime.generation
        path = rulesets / "time_entry" / "10-project-status.yaml"
        path.write_text(path.read_text().replace("project.status in params.closed_statuses",
                                                 "project.stauts in params.closed_statuses"))
        assert running.runtime.reload()  # refused: the problems
        assert running.runtime.generation is before
        with ValidationClient(f"127.0.0.1:{running.port}") as client:
            decision = client.validate_time_entries([_entry("R-1", project_id="P-700", task_id="T-1")]).decisions[0]
        assert decision.codes == ["PROJECT_NOT_CHARGEABLE"]
    finally:
        running.stop()


def test_serve_stops_cleanly_on_sigterm_and_finishes_calls_in_flight(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TOLLGATE_SHUTDOWN_GRACE_SECONDS": "20"}
    process = subprocess.Popen([*TOLLGATE, "serve", "--port", str(port), "--workers", "1"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_answered = threading.Event()
    chunks = [pb.ValidateTimeEntriesRequest(entries=[pb.TimeEntry(**_entry(f"F-{c}-{n}")) for n in range(500)])
              for c in range(6)]

    def requests() -> Any:
        yield chunks[0]
        # The rest is sent only once the server has answered the first chunk and been told to stop:
        # the call is in flight when SIGTERM arrives, and must still be answered in full.
        assert first_answered.wait(timeout=30)
        yield from chunks[1:]

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            responses = pb_grpc.ValidationServiceStub(channel).StreamTimeEntries(requests(), timeout=60)
            answered = [len(next(responses).decisions)]
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the server is now shutting down, with this call open
            first_answered.set()
            answered += [len(response.decisions) for response in responses]
        assert answered == [500] * 6
        # Well past the grace period, for a loaded machine: the call above is what stop() waited for.
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = process.stderr.read() if process.stderr else ""
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert events[-1] == "stopped"
    # Chunks were still decided after the signal came: the call was finished, not cut off.
    assert "decided" in events[events.index("shutting_down"):]


def _snapshot_of_each_worker(metrics_port: int, workers: int) -> list[str]:
    """The snapshot each worker decides with, from its own metrics endpoint (worker i on metrics_port + i)."""
    import urllib.request

    seen = []
    for index in range(workers):
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port + index}/metrics", timeout=10) as response:
            text = response.read().decode()
        seen += [line.split('"')[1] for line in text.splitlines()
                 if line.startswith("tollgate_reference_snapshot_info{") and line.endswith(" 1.0")]
    return seen


def test_workers_share_one_port_and_reference_data_changes(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen([*TOLLGATE, "serve", "--port", str(port), "--workers", "2",
                                "--metrics-port", str(metrics_port)], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = _LogTail(process)
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # two processes starting on a loaded 2-core machine
        serving: set[int] = set()
        # Each new channel is a new connection; the kernel spreads connections over the workers.
        while len(serving) < 2 and time.monotonic() < deadline:
            with ValidationClient(target, timeout=10) as client:
                client.wait_until_ready(timeout=90)
                client.validate_time_entries([_entry("W-1")])
            serving = {json.loads(line).get("process") for line in logs.lines() if '"decided"' in line}
        assert len(serving) == 2, f"calls were served by {serving}"
        [shared] = [json.loads(line)["snapshot_dir"] for line in logs.lines() if '"sharing_snapshots"' in line]

        # The README's next step: load exports through whichever worker takes the call...
        exports = copy_refdata(tmp_path)
        replace_in(exports / "projects.csv", "P-100,Acme ERP rollout", "P-100,Acme ERP rollout (phase 2)")
        loaded = run_cli("refdata", "load", str(exports), "--server", target)
        assert loaded.returncode == 0, loaded.stderr
        loaded_id = loaded.stdout.split()[1]
        # ...and every worker decides with it.
        wait_until(lambda: _snapshot_of_each_worker(metrics_port, 2) == [loaded_id] * 2, timeout=5)
        for _ in range(8):
            with ValidationClient(target, timeout=10) as client:
                [decision] = client.validate_time_entries([_entry("TE-1")]).decisions
            assert decision.provenance is not None
            assert decision.provenance.snapshot_id == loaded_id

        upsert = tmp_path / "w-77.csv"
        upsert.write_text("worker_id,name,status,hire_date\nW-77,New Hire,ACTIVE,2026-11-01\n")
        upserted = run_cli("refdata", "upsert", "worker", str(upsert), "--server", target)
        assert upserted.returncode == 0, upserted.stderr
        upserted_id = upserted.stdout.split()[2]
        wait_until(lambda: _snapshot_of_each_worker(metrics_port, 2) == [upserted_id] * 2, timeout=5)
        deleted = run_cli("refdata", "delete", "worker", "W-77", "--server", target)
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout.split()[2] == loaded_id  # the same data again: the same snapshot
        wait_until(lambda: _snapshot_of_each_worker(metrics_port, 2) == [loaded_id] * 2, timeout=5)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not Path(shared).exists()  # the run's store goes with the run
    finally:
        if process.poll() is None:  # the supervisor and its workers, which would outlive it
            os.killpg(process.pid, signal.SIGKILL)


class _LogTail:
    """The JSON log lines a server process has written so far, read without blocking."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.fd = process.stderr.fileno()
        os.set_blocking(self.fd, False)
        self.data = b""

    def lines(self) -> list[str]:
        # From the descriptor itself: a text stream in non-blocking mode fails when nothing new has come.
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return [line for line in self.data.decode(errors="replace").splitlines() if line.startswith("{")]
