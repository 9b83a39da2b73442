"""Prometheus metrics: the real server with --metrics-port, scraped over HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.refdata_support import ServerProcess, wait_until
from tests.test_reference_data import REFDATA
from tollgate.clients.client import RefDataClient, ValidationClient
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import load_snapshot
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.server import metrics
from tollgate.server.runtime import Runtime
from tollgate.server.settings import BUNDLED_RULESETS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def server_with_metrics() -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    server = ServerProcess("--refdata", str(REFDATA), env={"TOLLGATE_METRICS_PORT": str(port)})
    try:
        server.wait_until_up()
        yield server, port
    finally:
        server.stop()


def test_the_server_serves_reference_data_metrics(server_with_metrics: tuple[ServerProcess, int]) -> None:
    server, port = server_with_metrics
    first = load_snapshot(REFDATA).snapshot_id
    before = scrape(port)
    assert value(before, "tollgate_reference_snapshot_info", snapshot_id=first) == 1
    assert value(before, "tollgate_reference_store_reachable") == 1
    assert value(before, "tollgate_reference_stale_seconds") == 0
    assert value(before, "tollgate_reference_snapshot_switches_total") == 0

    with RefDataClient(server.target) as refdata, ValidationClient(server.target) as client:
        changed = refdata.upsert("worker", [{"worker_id": "W-91", "status": "ACTIVE", "hire_date": "2026-11-01"}])
        decided = client.validate_time_entries([{"entry_id": "TE-1", "worker_id": "W-91", "project_id": "P-100",
                                                 "task_id": "T-1", "work_date": "2026-11-03", "hours": "8"}])
    assert decided.decisions[0].provenance.snapshot_id == changed.snapshot.snapshot_id
    after = scrape(port)
    assert value(after, "tollgate_reference_snapshot_info", snapshot_id=changed.snapshot.snapshot_id) == 1
    assert ("tollgate_reference_snapshot_info", frozenset({("snapshot_id", first)})) not in after
    assert value(after, "tollgate_reference_snapshot_switches_total") == 1
    assert value(after, "tollgate_reference_snapshot_adoption_seconds_count") == 1
    assert 0 < value(after, "tollgate_reference_snapshot_adoption_seconds_sum") < 5
    # The validation call is counted: one time entry decided, its batch timed.
    assert sum(v for (name, labels), v in after.items()
               if name == "tollgate_decisions_total" and ("kind", "time_entry") in labels) == 1
    assert value(after, "tollgate_batch_duration_seconds_count", kind="time_entry") == 1


def test_batches_are_counted_by_kind_outcome_rule_and_code() -> None:
    snapshot = load_snapshot(REFDATA)
    rulesets = load_rulesets(BUNDLED_RULESETS)
    evaluator = Evaluator(TIME_ENTRY, rulesets.for_kind(TIME_ENTRY.name), SnapshotBinder(TIME_ENTRY, snapshot),
                          snapshot.snapshot_id, "test")
    decisions = evaluator.evaluate([
        {"entry_id": "M-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
         "work_date": "2026-11-03", "hours": "8"},  # enriched: labor category derived, rate resolved
        {"entry_id": "M-2", "worker_id": "W-1", "project_id": "P-999", "task_id": "T-1",
         "work_date": "2026-11-03", "hours": "8"},  # rejected: no such project
    ])
    runtime = Runtime(BUNDLED_RULESETS, REFDATA)
    server = metrics.start(runtime, "127.0.0.1", 0)
    try:
        before = scrape(server.port)
        metrics.record_batch(TIME_ENTRY.name, decisions, 0.003)
        after = scrape(server.port)
    finally:
        server.stop()
        runtime.close()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tollgate_decisions_total", kind="time_entry", outcome="enrich") == 1
    assert grew("tollgate_decisions_total", kind="time_entry", outcome="reject") == 1
    assert grew("tollgate_decision_reasons_total", rule_id="LC-2", code="LABOR_CATEGORY_DERIVED") == 1
    assert grew("tollgate_decision_reasons_total", rule_id="refdata:project", code="REFERENCE_DATA_MISSING") == 1
    reasons = sum(len(d.reasons) for d in decisions)
    assert sum(v for (name, _), v in after.items() if name == "tollgate_decision_reasons_total") - \
        sum(v for (name, _), v in before.items() if name == "tollgate_decision_reasons_total") == reasons
    assert grew("tollgate_batch_duration_seconds_count", kind="time_entry") == 1
    assert grew("tollgate_batch_duration_seconds_bucket", kind="time_entry", le="0.005") == 1
    assert grew("tollgate_batch_duration_seconds_bucket", kind="time_entry", le="0.0025") == 0


def _serves_metrics(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_each_worker_serves_its_metrics_on_its_own_port() -> None:
    base = free_port()
    server = ServerProcess("--workers", "2", "--refdata", str(REFDATA), env={"TOLLGATE_METRICS_PORT": str(base)})
    try:
        server.wait_until_up()
        for port in (base, base + 1):  # worker i on base + i
            wait_until(lambda port=port: _serves_metrics(port), 30, interval=0.1)
            assert value(scrape(port), "tollgate_reference_snapshot_info",
                         snapshot_id=load_snapshot(REFDATA).snapshot_id) == 1
    finally:
        server.stop()
    assert not _serves_metrics(base)
