"""Servers for the gRPC benchmarks, each run in its own process so the client does not share its GIL.

    python -m benchmarks.servers tollgate --refdata DIR [--threads N] [--setting NAME=VALUE ...]  # the real service
    python -m benchmarks.servers ceiling [--threads N]                 # the transport ceiling

Each prints ``PORT <n>`` on stdout once it serves, and stops cleanly on SIGTERM. The ceiling serves the
same ValidationService on its own ``grpc.server`` (same thread pool size and message limits as the real
one) with a handler that only parses the request and answers one empty ``Decision(item_id=entry_id)`` per
entry: what the call costs when deciding costs nothing.

``ServerProcess`` and ``TollgateServe`` start and stop them (and ``tollgate serve --workers N``) from
the benchmarks; only the processes they started are ever signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import grpc

from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.channel import ChannelSecurity, open_channel

ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the service's default max_message_bytes
VALIDATE_METHOD = "/tollgate.v1.ValidationService/ValidateTimeEntries"


class CeilingService(pb_grpc.ValidationServiceServicer):
    """Parses the request (gRPC does) and answers one empty decision per entry; decides nothing."""

    def ValidateTimeEntries(  # noqa: N802 - gRPC method name
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        response = pb.ValidationResponse()
        add = response.decisions.add
        for entry in request.entries:
            add(item_id=entry.entry_id)
        return response

    def StreamTimeEntries(  # noqa: N802 - gRPC method name
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        for request in requests:
            yield self.ValidateTimeEntries(request, context)


def start_ceiling(threads: int, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ceiling"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", -1)],
    )
    pb_grpc.add_ValidationServiceServicer_to_server(CeilingService(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def _serve(kind: str, refdata: str | None, threads: int, log_level: str, settings: list[str]) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if kind == "ceiling":
        server, port = start_ceiling(threads)
        stop = lambda: server.stop(2).wait()  # noqa: E731
    else:
        from tollgate.server.app import start
        from tollgate.server.logs import configure_logging
        from tollgate.server.settings import Settings

        configure_logging(log_level)  # as `tollgate serve` does: one JSON line per call on stderr
        overrides: dict[str, Any] = {"port": 0, "threads": threads, "workers": 1, "shutdown_grace_seconds": 2}
        if refdata:
            overrides["refdata"] = Path(refdata)
        overrides.update(setting.split("=", 1) for setting in settings)  # checked by Settings, as flags are
        running = start(Settings(**overrides))
        port, stop = running.port, running.stop
    print(f"PORT {port}", flush=True)
    stopping.wait()
    stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    parser.add_argument("kind", choices=("tollgate", "ceiling"))
    parser.add_argument("--refdata")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--setting", action="append", default=[], help="NAME=VALUE: a setting of the real service")
    args = parser.parse_args(argv)
    return _serve(args.kind, args.refdata, args.threads, args.log_level, args.setting)


# ---------------------------------------------------------------------------------------------------
# Starting and stopping them from the benchmarks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """``python -m benchmarks.servers KIND ...`` as a child process; ``.target`` is its address."""

    def __init__(self, kind: str, *, refdata: Path | None = None, threads: int = 4, log_path: Path | None = None,
                 settings: dict[str, str] | None = None, security: ChannelSecurity | None = None):
        command = [sys.executable, "-m", "benchmarks.servers", kind, "--threads", str(threads)]
        if refdata is not None:
            command += ["--refdata", str(refdata)]
        for name, value in (settings or {}).items():
            command += ["--setting", f"{name}={value}"]
        self._log: IO[bytes] | None = log_path.open("wb") if log_path else None
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=self._log or subprocess.DEVNULL, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{kind} server did not start (said {line!r}, exit code {self.process.poll()})")
        self.port = int(line.split()[1])
        self.target = f"127.0.0.1:{self.port}"
        wait_ready(self.target, security=security)

    def stop(self) -> None:
        _terminate(self.process)
        if self._log:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _proc_children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    children.append(int(entry))
    return children


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat; zeros elsewhere)."""
    with contextlib.suppress(OSError, ValueError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values) - idle) / ticks, sum(values) / ticks
    return 0.0, 0.0


def wait_ready(target: str, timeout: float = 30.0, security: ChannelSecurity | None = None) -> None:
    with open_channel(target, security or ChannelSecurity()) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def _terminate(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM to the process we started, then to its process group (its own workers) if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group of the session we created for it
            process.wait(5)


class TollgateServe:
    """``tollgate serve --workers N --port P --refdata DIR`` as a child process, JSON logs to ``log_path``."""

    def __init__(self, workers: int, refdata: Path, log_path: Path, threads: int = 4) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        script = Path(sys.executable).with_name("tollgate")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "tollgate.clients.cli"]
        command += ["serve", "--workers", str(workers), "--port", str(self.port), "--refdata", str(refdata)]
        environment = {**os.environ, "TOLLGATE_THREADS": str(threads), "TOLLGATE_SHUTDOWN_GRACE_SECONDS": "2"}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=environment, start_new_session=True)
        try:
            self._wait_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self, timeout: float = 60.0) -> None:
        """Until every worker has logged ``serving`` (each loads its own rulesets and snapshot)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tollgate serve exited with {self.process.returncode}; see {self.log_path}")
            if self.log_path.read_text(errors="replace").count('"event": "serving"') >= self.workers:
                wait_ready(self.target)
                return
            time.sleep(0.1)
        raise TimeoutError(f"tollgate serve --workers {self.workers} not serving after {timeout}s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The server's processes: the supervisor (or single server) and its workers."""
        return [self.process.pid, *_proc_children(self.process.pid)]

    def calls_per_process(self) -> dict[int, int]:
        """How many calls each worker process decided, from its ``decided`` log lines."""
        counts: dict[int, int] = {}
        import json

        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"event": "decided"' in line:
                with contextlib.suppress(ValueError):
                    pid = int(json.loads(line).get("process", 0))
                    counts[pid] = counts.get(pid, 0) + 1
        return counts

    def stop(self) -> None:
        _terminate(self.process)
        self._log.close()

    def __enter__(self) -> TollgateServe:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
