"""Start-up: build the gRPC server with health and reflection, serve until SIGTERM, stop cleanly.

The server is a grpc.aio server on one event loop, in a thread of its own (one loop per process, shared by
every server the process starts): a waiting call holds no thread. Deciding runs in a pool of
``threads`` threads, reference data work in a pool of ``load_threads`` (server/calls.py:off_loop).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import signal
import threading
from collections.abc import Coroutine
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tollgate.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    exceptions_pb2,
    exceptions_pb2_grpc,
    refdata_pb2,
    refdata_pb2_grpc,
    validation_pb2,
    validation_pb2_grpc,
)
from tollgate.evaluators import ENGINE_VERSION
from tollgate.ledger import exceptions as exception_queue
from tollgate.ledger.recorder import Recorder, open_recorder
from tollgate.ledger.retention import RetentionLoop
from tollgate.ledger.statistics import StatisticsKeeper
from tollgate.ledger.store import masked
from tollgate.refdata.directory_store import DirectorySnapshotStore
from tollgate.refdata.redis_store import RedisSnapshotStore
from tollgate.refdata.store import InProcessStore, SnapshotStore
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server import metrics, tls
from tollgate.server.admin_service import AdminService, Reloader
from tollgate.server.audit_service import AuditService
from tollgate.server.authentication import Authenticator
from tollgate.server.calls import CallInterceptor, StreamSlots
from tollgate.server.exception_service import ExceptionService, LedgerOffExceptionService
from tollgate.server.logs import MASK_PERSONAL_FIELDS, configure_logging
from tollgate.server.masking import masking_policy
from tollgate.server.refdata_service import ReferenceDataService
from tollgate.server.runtime import Runtime
from tollgate.server.settings import Settings
from tollgate.server.validation_service import ValidationService

log = structlog.get_logger("tollgate.server")

SERVICE_NAME = validation_pb2.DESCRIPTOR.services_by_name["ValidationService"].full_name
REFDATA_SERVICE_NAME = refdata_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
AUDIT_SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
EXCEPTION_SERVICE_NAME = exceptions_pb2.DESCRIPTOR.services_by_name["ExceptionService"].full_name


T = TypeVar("T")
# Past the grace period, how long stopping may take before the process exits regardless (SIGTERM always ends it).
STOP_MARGIN_SECONDS = 5.0


class _Loop:
    """The process's event loop for gRPC, running in a daemon thread from the first server started."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="tollgate-grpc", daemon=True).start()
                cls._loop = loop
            return cls._loop


def _on_loop(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    return asyncio.run_coroutine_threadsafe(coroutine, _Loop.get()).result(timeout)


@dataclass(slots=True)
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    runtime: Runtime
    grace_seconds: float
    deciding: futures.ThreadPoolExecutor
    loads: futures.ThreadPoolExecutor
    streams: StreamSlots
    reload: Reloader
    metrics: metrics.MetricsServer | None = None
    ledger: Recorder | None = None
    retention: RetentionLoop | None = None
    statistics: StatisticsKeeper | None = None

    def stop(self) -> None:
        """Refuse new calls (health says NOT_SERVING first), let calls in flight finish for up to the grace
        period, end those still open (idle streams too), then stop."""

        async def stop() -> None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self.grace_seconds)

        try:
            _on_loop(stop(), timeout=self.grace_seconds + STOP_MARGIN_SECONDS)
        except TimeoutError:
            log.error("stop_timed_out", grace_seconds=self.grace_seconds)
        # Work already handed to a pool thread finishes (one batch at most); nothing queued starts.
        self.deciding.shutdown(wait=False, cancel_futures=True)
        self.loads.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.statistics is not None:
            self.statistics.stop()
        self.runtime.close()
        if self.ledger is not None:
            self.ledger.close()


def snapshot_store(settings: Settings) -> SnapshotStore:
    if settings.redis_url:
        return RedisSnapshotStore(settings.redis_url, prefix=settings.redis_prefix, keep=settings.snapshots_kept)
    if settings.snapshot_dir is not None:
        return DirectorySnapshotStore(settings.snapshot_dir, keep=settings.snapshots_kept)
    return InProcessStore(keep=settings.snapshots_kept)


async def _follow_health(runtime: Runtime, health_servicer: health.aio.HealthServicer) -> None:
    """Health follows the data: deciding needs a snapshot; changing reference data needs the store.

    A replica whose store is unreachable keeps deciding from the snapshot it holds, so "" and the
    ValidationService stay SERVING (load balancers keep sending it work); the ReferenceDataService
    reports NOT_SERVING, as loads and changes cannot be made, and its Status says how stale the data is.
    """
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, serving if runtime.has_data else not_serving)
    await health_servicer.set(REFDATA_SERVICE_NAME,
                              serving if runtime.store_reachable and runtime.store_lost is None else not_serving)


def _health_follows(runtime: Runtime, health_servicer: health.aio.HealthServicer) -> None:
    """From any thread (the store's watcher, a load): update health on the loop, without waiting for it."""
    asyncio.run_coroutine_threadsafe(_follow_health(runtime, health_servicer), _Loop.get())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without TLS and authentication (unless --insecure); warn on loopback."""
    if settings.tls and settings.authenticating:
        return
    missing = " and ".join(part for part, present in (("TLS (--tls-cert, --tls-key)", settings.tls),
                                                      ("authentication (--identities-file, --jwt-public-key or "
                                                       "--tls-client-ca)", settings.authenticating)) if not present)
    if _is_loopback(settings.host):
        if not settings.authenticating:
            log.warning("authentication_off", host=settings.host,
                        hint="every local process may change reference data and reload; run with --identities-file "
                        "(README, 'Running it secured') before anything else shares this machine")
        return
    if settings.insecure:
        log.warning("serving_insecure", host=settings.host, missing=missing,
                    hint="anyone who can reach the port may call every method, and see what is sent")
        return
    raise ProblemsError([Problem("host", None, settings.host,
                                 f"listening on {settings.host} needs {missing}: anyone who can reach the port could "
                                 "change the reference data that prices every invoice. Give them, or --insecure to "
                                 "accept that")])


def start(settings: Settings) -> RunningServer:
    _check_exposure(settings)
    authenticator = Authenticator(settings)
    masking = masking_policy(settings)
    MASK_PERSONAL_FIELDS.policy = masking  # log lines mask what exports mask, with the same key
    certificates = tls.CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca) \
        if settings.tls_cert is not None and settings.tls_key is not None else None
    ledger = open_recorder(settings.database_url, settings.data_dir, settings.spool_dir, settings.spool_max_bytes,
                           timedelta(hours=settings.request_id_window_hours)) if settings.ledger else None
    if ledger is not None:
        ledger.group.on_commit = metrics.CALLS_PER_COMMIT.observe
    try:
        runtime = Runtime(settings.rulesets, settings.refdata, snapshot_store(settings))
    except BaseException:  # bad rulesets or data: start refused, the ledger's connections closed
        if ledger is not None:
            ledger.close()
        raise
    reload = Reloader(runtime, authenticator)

    def loaded_digests() -> set[str]:  # the texts of the rulesets loaded now are never purged (ledger/retention.py)
        return {ruleset.digest for ruleset in runtime.rulesets.all}
    deciding = futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="tollgate-decide")
    loads = futures.ThreadPoolExecutor(max_workers=settings.load_threads, thread_name_prefix="tollgate-load")
    streams = StreamSlots(settings.max_streams)
    # Reflection lists every method and message: open without authentication, asked for with it.
    reflecting = settings.reflection if settings.reflection is not None else not settings.authenticating

    async def build() -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
        server = grpc.aio.server(
            interceptors=[CallInterceptor(authenticator, tls.certificate_names)],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        validation = ValidationService(runtime, settings, deciding, streams, ledger)
        validation_pb2_grpc.add_ValidationServiceServicer_to_server(validation, server)
        exceptions_pb2_grpc.add_ExceptionServiceServicer_to_server(
            ExceptionService(ledger.engine, validation, loads, settings.max_batch_items) if ledger is not None
            else LedgerOffExceptionService(), server)
        refdata_pb2_grpc.add_ReferenceDataServiceServicer_to_server(
            ReferenceDataService(runtime, loads=loads, streams=streams, max_upload_bytes=settings.max_upload_bytes,
                                 idle_seconds=settings.stream_idle_seconds), server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(reload, loads, settings.worker_group), server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditService(ledger, runtime, reads=loads, deciding=deciding, masking=masking,
                         retention_days=settings.ledger_retention_days, keep_sources=loaded_digests), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if reflecting:
            reflection.enable_server_reflection(
                (SERVICE_NAME, REFDATA_SERVICE_NAME, ADMIN_SERVICE_NAME, AUDIT_SERVICE_NAME, EXCEPTION_SERVICE_NAME,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                server,
            )
        try:
            address = f"{settings.host}:{settings.port}"
            port = server.add_secure_port(address, certificates.credentials()) if certificates is not None \
                else server.add_insecure_port(address)
        except RuntimeError:  # grpc.aio raises where the sync server answers 0
            port = 0
        return server, port, health_servicer

    def give_up() -> None:
        deciding.shutdown(wait=False)
        loads.shutdown(wait=False)
        runtime.close()
        if ledger is not None:
            ledger.close()

    server, port, health_servicer = _on_loop(build())
    if port == 0:
        give_up()
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    metrics_server = None
    if settings.metrics_port:
        wanted = metrics.metrics_port(settings.metrics_port, settings.worker_index)
        try:
            # The queue is the ledger's, shared by every worker: worker 0 reports it.
            exceptions = functools.partial(exception_queue.summary, ledger.engine) \
                if ledger is not None and settings.worker_index == 0 else None
            metrics_server = metrics.start(runtime, settings.metrics_host, wanted, exceptions,
                                           ledger.spool if ledger is not None else None)
        except OSError as error:
            give_up()
            where = f"{settings.metrics_host}:{wanted}"
            raise ProblemsError([Problem("metrics_port", None, str(wanted),
                                         f"cannot serve metrics on {where}: {error}")]) from error

    async def serve() -> None:
        await _follow_health(runtime, health_servicer)
        await server.start()

    _on_loop(serve())
    # One worker of a supervisor's purges for them all (they share the database).
    retention = RetentionLoop(ledger.engine, settings.ledger_retention_days, loaded_digests) \
        if ledger is not None and settings.worker_index == 0 else None
    if retention is not None:
        retention.start()
    # ... and keeps the planner's statistics on its tables where autovacuum does not (ledger/statistics.py)
    statistics = StatisticsKeeper(ledger.engine) if retention is not None and ledger is not None else None
    if statistics is not None and statistics.needed():
        statistics.start()
    else:
        statistics = None
    runtime.on_change(lambda: _health_follows(runtime, health_servicer))
    _health_follows(runtime, health_servicer)  # whatever changed between the first look and listening
    log.info("serving", host=settings.host, port=port, engine_version=ENGINE_VERSION,
             snapshot_id=runtime.generation.snapshot.snapshot_id if runtime.has_data else None,
             store=runtime.store.description, metrics_port=metrics_server.port if metrics_server else None,
             threads=settings.threads, max_streams=settings.max_streams,
             stream_idle_seconds=settings.stream_idle_seconds, authentication=settings.authenticating,
             identities=len(authenticator.identities), reflection=reflecting, tls=certificates is not None,
             mutual_tls=settings.tls_client_ca is not None,
             tls_certificate=certificates.material.subject if certificates is not None else None,
             ledger=masked(ledger.engine.url) if ledger is not None else None,
             spool=str(ledger.spool.path) if ledger is not None and ledger.spool is not None else None)
    return RunningServer(server, port, health_servicer, runtime, settings.shutdown_grace_seconds, deciding, loads,
                         streams, reload, metrics_server, ledger, retention, statistics)


def run(settings: Settings) -> int:
    """``tollgate serve``: one server process, or a supervisor of ``settings.workers`` of them."""
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from tollgate.server.supervisor import supervise

        return supervise(settings)
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads rulesets, reference data and identities. Returns an exit code."""
    try:
        running = start(settings)
    except ProblemsError as error:
        log.error("startup_refused", problems=[str(p) for p in error.problems])
        return 2
    stopping = threading.Event()

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("shutting_down", signal=signal.Signals(signum).name, grace_seconds=settings.shutdown_grace_seconds)
        stopping.set()

    def on_reload(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=running.reload, name="reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    stopping.wait()
    # Whatever is stuck (a store that does not answer, a pool thread), the process ends soon after the grace.
    watchdog = threading.Timer(settings.shutdown_grace_seconds + 2 * STOP_MARGIN_SECONDS, _exit_now)
    watchdog.daemon = True
    watchdog.start()
    running.stop()
    log.info("stopped")
    return 0


def _exit_now() -> None:
    log.error("stop_overran", hint="exiting without waiting for the work still running")
    os._exit(1)
