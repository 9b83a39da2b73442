"""Run N server processes on one port, so every core decides items (one Python process uses one core).

Each worker is a full ``tollgate serve --workers 1`` with its own compiled rulesets and its own copy of
the current reference snapshot; they share the port through SO_REUSEPORT (gRPC sets it on Linux) and
the kernel spreads connections among them. They share one snapshot store, so a load or change made
through any worker is decided with by all of them: Redis or the --snapshot-dir when configured, else
a temporary directory the supervisor makes for the run and removes at the end. The supervisor
forwards SIGTERM/SIGINT (clean shutdown) and SIGHUP (reload) to every worker, and restarts a worker
that dies unexpectedly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import structlog

from tollgate.server.metrics import metrics_port
from tollgate.server.settings import Settings

log = structlog.get_logger("tollgate.supervisor")

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)
# Past the grace period, how long a stopping worker gets before it is killed (its own watchdog ends it
# 10 s past the grace: server/app.py).
KILL_AFTER_GRACE_SECONDS = 15.0


def _worker_environment(settings: Settings, index: int) -> dict[str, str]:
    # Every setting is passed, defaults included: the supervisor's view (which sample, which store) holds.
    environment = dict(os.environ)
    for name, value in settings.model_dump().items():
        environment[f"TOLLGATE_{name.upper()}"] = str(value)
    environment["TOLLGATE_WORKERS"] = "1"
    environment["TOLLGATE_WORKER_GROUP"] = str(settings.workers)
    environment["TOLLGATE_WORKER_INDEX"] = str(index)
    return environment


def _spawn(settings: Settings, index: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tollgate.clients.cli", "serve"],
                            env=_worker_environment(settings, index))


def supervise(settings: Settings) -> int:
    """Start ``settings.workers`` workers and keep them running until SIGTERM/SIGINT; return an exit code."""
    if settings.port == 0:
        log.error("workers_need_a_port", workers=settings.workers)
        return 2
    if settings.redis_url or settings.snapshot_dir is not None:
        return _supervise(settings)
    shared = Path(tempfile.mkdtemp(prefix="tollgate-snapshots-"))
    log.info("sharing_snapshots", snapshot_dir=str(shared), workers=settings.workers,
             hint="kept for this run only; --snapshot-dir or --redis-url keep them across restarts")
    try:
        return _supervise(settings.model_copy(update={"snapshot_dir": shared}))
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _supervise(settings: Settings) -> int:
    stopping = threading.Event()
    workers = {index: _spawn(settings, index) for index in range(settings.workers)}
    restarts = dict.fromkeys(workers, 0)
    log.info("supervising", workers=settings.workers, port=settings.port,
             pids=[w.pid for w in workers.values()],
             metrics_ports=[metrics_port(settings.metrics_port, i) for i in workers] if settings.metrics_port else None)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping.set()
        for worker in workers.values():
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    while not stopping.is_set():
        for index, worker in list(workers.items()):
            code = worker.poll()
            if code is None or stopping.is_set():
                continue
            if code == 2:  # refused to start (bad rulesets or data): restarting would not help
                log.error("worker_refused_to_start", worker=index)
                forward(signal.SIGTERM, None)
                break
            delay = RESTART_BACKOFF_SECONDS[min(restarts[index], len(RESTART_BACKOFF_SECONDS) - 1)]
            log.warning("worker_died", worker=index, exit_code=code, restart_in_seconds=delay)
            time.sleep(delay)
            restarts[index] += 1
            workers[index] = _spawn(settings, index)
        stopping.wait(0.2)
    deadline = time.monotonic() + settings.shutdown_grace_seconds + KILL_AFTER_GRACE_SECONDS
    codes = []
    for index, worker in workers.items():
        try:
            codes.append(worker.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.error("worker_killed", worker=index, pid=worker.pid, hint="it did not stop within its grace period")
            worker.kill()
            codes.append(worker.wait())
    log.info("stopped", exit_codes=codes)
    return 0 if all(code == 0 for code in codes) else 1
