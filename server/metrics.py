"""Prometheus metrics, served over HTTP at /metrics when ``--metrics-port`` is set (0, the default: off).

What the reference data is (snapshot id, how stale, whether the store can be reached, whether it lost
its data, switches and how long adopting a snapshot took) and what was decided (decisions by item kind
and outcome, reasons by rule id and code, batch durations).

Each server process serves its own metrics: with ``--workers N``, worker ``i`` listens on
``metrics_port + i`` (ports metrics_port .. metrics_port + N - 1), and each is scraped as a target
of its own; sum over them in queries. Separate ports rather than prometheus-client's multiprocess
mode: a worker's figures stay its own (its snapshot, its staleness, which the multiprocess mode
cannot aggregate), and nothing is shared on disk between processes.

The exception queue's gauges (open exceptions by code, the oldest open one's age) are the ledger's, shared by
every worker: only worker 0 reports them (a sum over workers stays right), read from the database at most once
every EXCEPTION_GAUGES_SECONDS however often it is scraped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from tollgate.ledger.exceptions import Summary
from tollgate.ledger.spool import Spool
from tollgate.rules.decisions import Decision
from tollgate.server.runtime import Runtime

# Batches: from a 5-line timesheet (a few ms) to 50,000 items (seconds).
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Adoptions: an upsert (milliseconds) to a replica decoding millions of rows (seconds).
_ADOPTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DECISIONS = Counter("tollgate_decisions", "Items decided, by item kind and outcome", ["kind", "outcome"])
REASONS = Counter("tollgate_decision_reasons", "Reasons given in decisions, by rule id and reason code",
                  ["rule_id", "code"])
BATCH_SECONDS = Histogram("tollgate_batch_duration_seconds", "Time to decide one batch (one request or stream chunk)",
                          ["kind"], buckets=_BATCH_BUCKETS)
SNAPSHOT = Info("tollgate_reference_snapshot", "The reference data snapshot this process decides with")
STALE_SECONDS = Gauge("tollgate_reference_stale_seconds",
                      "Seconds since the snapshot store was last reachable (0 while it is): how far behind the data "
                      "may be")
STORE_REACHABLE = Gauge("tollgate_reference_store_reachable", "1 if the snapshot store can be reached, else 0")
STORE_LOST = Gauge("tollgate_reference_store_lost_data",
                   "1 while the snapshot store has lost the data this process decides with (a Redis restarted "
                   "without persistence, a FLUSHDB), else 0; a full load (tollgate refdata load) recovers")
SWITCHES = Counter("tollgate_reference_snapshot_switches", "Switches to a new reference snapshot")
ADOPTION_SECONDS = Histogram("tollgate_reference_snapshot_adoption_seconds",
                             "From a new current snapshot being seen to deciding with it: fetching and decoding what "
                             "this process lacks, indexing, building evaluators", buckets=_ADOPTION_BUCKETS)

OPEN_STREAMS = Gauge("tollgate_open_streams", "Streaming calls open now (at most max_streams)")
STREAMS_REFUSED = Counter("tollgate_streams_refused", "Streaming calls refused RESOURCE_EXHAUSTED: max_streams open")
AUTH_REFUSALS = Counter("tollgate_auth_refusals", "Calls refused UNAUTHENTICATED (no or a bad credential) or "
                        "PERMISSION_DENIED (a role missing), by method and reason", ["method", "reason"])
REQUESTS_REPLAYED = Counter("tollgate_requests_replayed", "Validation requests answered from the ledger: a retry of a "
                            "request id already recorded (AIP-155), decided and recorded once")
SPOOL_WAITING = Gauge("tollgate_ledger_spool_records",
                      "Calls in this process's ledger spool not yet written to the database (spooled while it could "
                      "not be reached; a claimed file a killed process left included)")
SPOOL_OLDEST_SECONDS = Gauge("tollgate_ledger_spool_oldest_seconds",
                             "How long the oldest call in the ledger spool has waited for the database; 0 when none")
CALLS_PER_COMMIT = Histogram("tollgate_ledger_calls_per_commit",
                             "Calls recorded by each ledger commit of this process: concurrent calls share one "
                             "(ledger/group_commit.py)", buckets=(1, 2, 4, 8, 16, 32))
CALL_FAILURES = Counter("tollgate_call_failures", "Calls ended INTERNAL by a failure of the server (each logged with "
                        "its traceback and correlation id), by method", ["method"])

EXCEPTION_GAUGES_SECONDS = 5.0

log = structlog.get_logger("tollgate.metrics")


class ExceptionGauges(Collector):
    """The exception queue's gauges, from ``read`` (the ledger's summary), cached for ``cache_seconds``; nothing
    while no ledger is followed, or while the last read failed (logged)."""

    def __init__(self, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self._read: Callable[[], Summary] | None = None
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._summary: Summary | None = None

    def follow(self, read: Callable[[], Summary] | None) -> None:
        with self._lock:
            self._read, self._read_at, self._summary = read, float("-inf"), None

    def _current(self) -> Summary | None:
        with self._lock:  # one read at a time: scrapes arriving together share it
            if self._read is not None and time.monotonic() - self._read_at >= self.cache_seconds:
                self._read_at = time.monotonic()
                try:
                    self._summary = self._read()
                except SQLAlchemyError as error:
                    log.warning("exception_gauges_unread", error_type=type(error).__name__)
                    self._summary = None
            return self._summary

    def describe(self) -> list[Any]:
        return []  # no read at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summary = self._current()
        if summary is None:
            return
        by_code = GaugeMetricFamily("tollgate_exceptions_open", "Open exceptions (rejected or held items waiting), "
                                    "by reason code; an exception with two codes counts under each", labels=["code"])
        for code, count in sorted(summary.open_by_code().items()):
            by_code.add_metric([code], count)
        yield by_code
        yield GaugeMetricFamily("tollgate_exceptions_open_items", "Open exceptions, each counted once",
                                value=summary.total_open)
        age = 0.0 if summary.oldest_open is None else (datetime.now(UTC) - summary.oldest_open[1]).total_seconds()
        yield GaugeMetricFamily("tollgate_exceptions_oldest_open_age_seconds",
                                "Seconds since the oldest open exception was first seen (0 when none is open)",
                                value=age)


EXCEPTIONS = ExceptionGauges(EXCEPTION_GAUGES_SECONDS)
REGISTRY.register(EXCEPTIONS)


def _child(metric: Counter | Histogram, children: dict[tuple[str, ...], Any], labels: tuple[str, ...]) -> Any:
    """``metric.labels(*labels)``, kept: prometheus-client validates and locks on every labels() call, which
    costs more than counting a small batch's reasons; a child, once made, stays the same object."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


_DECISION_CHILDREN: dict[tuple[str, ...], Any] = {}
_REASON_CHILDREN: dict[tuple[str, ...], Any] = {}
_BATCH_CHILDREN: dict[tuple[str, ...], Any] = {}


def record_batch(kind: str, decisions: Sequence[Decision], duration_s: float) -> None:
    """Count one decided batch: its outcomes, its reasons, its duration."""
    outcomes = Tally([decision.outcome for decision in decisions])
    reasons = Tally([(reason.rule_id, reason.code) for decision in decisions for reason in decision.reasons])
    for outcome, count in outcomes.items():
        _child(DECISIONS, _DECISION_CHILDREN, (kind, str(outcome))).inc(count)
    for labels, count in reasons.items():
        _child(REASONS, _REASON_CHILDREN, labels).inc(count)
    _child(BATCH_SECONDS, _BATCH_CHILDREN, (kind,)).observe(duration_s)


def _record_switch(snapshot_id: str, seconds: float) -> None:
    SNAPSHOT.info({"snapshot_id": snapshot_id})
    SWITCHES.inc()
    ADOPTION_SECONDS.observe(seconds)


@dataclass(slots=True)
class MetricsServer:
    server: WSGIServer
    port: int
    reports_exceptions: bool = False

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.reports_exceptions:
            EXCEPTIONS.follow(None)


def metrics_port(base_port: int, worker_index: int) -> int:
    """The port worker ``worker_index`` serves its metrics on (each worker is a process of its own)."""
    return base_port + worker_index


def start(runtime: Runtime, host: str, port: int, exceptions: Callable[[], Summary] | None = None,
          spool: Spool | None = None) -> MetricsServer:
    """Follow ``runtime``'s reference data (``exceptions``: the ledger's summary, in the one process that reports
    it; the ledger's ``spool``) and serve every metric at http://host:port/metrics."""
    if spool is not None:
        SPOOL_WAITING.set_function(spool.waiting)
        SPOOL_OLDEST_SECONDS.set_function(spool.oldest_seconds)
    if runtime.has_data:
        SNAPSHOT.info({"snapshot_id": runtime.generation.snapshot.snapshot_id})
    runtime.on_switch(_record_switch)
    STALE_SECONDS.set_function(runtime.stale_seconds)
    STORE_REACHABLE.set_function(lambda: 1.0 if runtime.store_reachable else 0.0)
    STORE_LOST.set_function(lambda: 0.0 if runtime.store_lost is None else 1.0)
    if exceptions is not None:
        EXCEPTIONS.follow(exceptions)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return MetricsServer(server, server.server_port, exceptions is not None)
