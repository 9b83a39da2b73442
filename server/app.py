"""Start-up: build the gRPC server with health and reflection, serve until SIGTERM, stop cleanly."""

from __future__ import annotations

import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tollgate.api.v1 import refdata_pb2, refdata_pb2_grpc, validation_pb2, validation_pb2_grpc
from tollgate.evaluators import ENGINE_VERSION
from tollgate.refdata.directory_store import DirectorySnapshotStore
from tollgate.refdata.redis_store import RedisSnapshotStore
from tollgate.refdata.store import InProcessStore, SnapshotStore
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server import metrics
from tollgate.server.correlation import CorrelationInterceptor
from tollgate.server.logs import configure_logging
from tollgate.server.refdata_service import ReferenceDataService
from tollgate.server.runtime import Runtime
from tollgate.server.settings import Settings
from tollgate.server.validation_service import ValidationService

log = structlog.get_logger("tollgate.server")

SERVICE_NAME = validation_pb2.DESCRIPTOR.services_by_name["ValidationService"].full_name
REFDATA_SERVICE_NAME = refdata_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"].full_name


@dataclass(slots=True)
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    runtime: Runtime
    grace_seconds: float
    metrics: metrics.MetricsServer | None = None

    def stop(self) -> None:
        """Refuse new calls (health says NOT_SERVING first), let calls in flight finish, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self.runtime.close()


def snapshot_store(settings: Settings) -> SnapshotStore:
    if settings.redis_url:
        return RedisSnapshotStore(settings.redis_url, prefix=settings.redis_prefix, keep=settings.snapshots_kept)
    if settings.snapshot_dir is not None:
        return DirectorySnapshotStore(settings.snapshot_dir, keep=settings.snapshots_kept)
    return InProcessStore(keep=settings.snapshots_kept)


def _follow_health(runtime: Runtime, health_servicer: health.HealthServicer) -> None:
    """Health follows the data: deciding needs a snapshot; changing reference data needs the store.

    A replica whose store is unreachable keeps deciding from the snapshot it holds, so "" and the
    ValidationService stay SERVING (load balancers keep sending it work); the ReferenceDataService
    reports NOT_SERVING, as loads and changes cannot be made, and its Status says how stale the data is.
    """
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, serving if runtime.has_data else not_serving)
    health_servicer.set(REFDATA_SERVICE_NAME,
                        serving if runtime.store_reachable and runtime.store_lost is None else not_serving)


def start(settings: Settings) -> RunningServer:
    runtime = Runtime(settings.rulesets, settings.refdata, snapshot_store(settings))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="tollgate"),
        interceptors=[CorrelationInterceptor()],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    validation_pb2_grpc.add_ValidationServiceServicer_to_server(ValidationService(runtime, settings), server)
    refdata_service = ReferenceDataService(runtime, max_upload_bytes=settings.max_upload_bytes)
    refdata_pb2_grpc.add_ReferenceDataServiceServicer_to_server(refdata_service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, REFDATA_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        runtime.close()
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    metrics_server = None
    if settings.metrics_port:
        wanted = metrics.metrics_port(settings.metrics_port, settings.worker_index)
        try:
            metrics_server = metrics.start(runtime, settings.host, wanted)
        except OSError as error:
            runtime.close()
            raise ProblemsError([Problem("metrics_port", None, str(wanted),
                                         f"cannot serve metrics on {settings.host}:{wanted}: {error}")]) from error
    server.start()
    runtime.on_change(lambda: _follow_health(runtime, health_servicer))
    _follow_health(runtime, health_servicer)
    log.info("serving", host=settings.host, port=port, engine_version=ENGINE_VERSION,
             snapshot_id=runtime.generation.snapshot.snapshot_id if runtime.has_data else None,
             store=runtime.store.description, metrics_port=metrics_server.port if metrics_server else None)
    return RunningServer(server, port, health_servicer, runtime, settings.shutdown_grace_seconds, metrics_server)


def run(settings: Settings) -> int:
    """``tollgate serve``: one server process, or a supervisor of ``settings.workers`` of them."""
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from tollgate.server.supervisor import supervise

        return supervise(settings)
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads rulesets and reference data. Returns an exit code."""
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
        threading.Thread(target=running.runtime.reload, name="reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    stopping.wait()
    running.stop()
    log.info("stopped")
    return 0
