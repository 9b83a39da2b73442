"""A control point that holds under hostile input, through the real server: idle and slow streams are
bounded and never delay unary calls or health; a bad request or a failing handler ends only its own
call, with a status that says why (never UNKNOWN), and a failure is logged with its traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.conftest import ROOT, TOLLGATE, free_port
from tests.refdata_support import wait_until
from tollgate.api.v1 import refdata_pb2, refdata_pb2_grpc
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.client import _upload, export_files
from tollgate.server.app import RunningServer, start
from tollgate.server.logs import configure_logging
from tollgate.server.settings import Settings


def _entries(prefix: str, count: int) -> list[pb.TimeEntry]:
    return [pb.TimeEntry(entry_id=f"{prefix}-{n}", timesheet_id=f"TS-{prefix}", worker_id="W-1", project_id="P-100",
                         task_id="T-1", work_date="2026-11-03", hours="8", labor_category="SENIOR_CONSULTANT",
                         submitted_at="2026-11-07T17:00:00Z")
            for n in range(count)]


def _request(prefix: str, count: int = 3, **fields: Any) -> pb.ValidateTimeEntriesRequest:
    return pb.ValidateTimeEntriesRequest(entries=_entries(prefix, count), **fields)


def _detail(error: grpc.RpcError, message_type: Any) -> Any:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status in {error!r}"
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            unpacked = message_type()
            detail.Unpack(unpacked)
            return unpacked
    raise AssertionError(f"no {message_type.DESCRIPTOR.name} in {status}")


class _Held:
    """A request iterator for a sync streaming call: yields what it is given, waits until released, then
    yields the rest and ends."""

    def __init__(self, *first: Any) -> None:
        self.first = list(first)
        self.rest: list[Any] = []  # what follows the release
        self.released = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        yield from self.first
        self.released.wait(timeout=60)
        yield from self.rest


@contextlib.contextmanager
def _captured_logs() -> Iterator[io.StringIO]:
    """The server's JSON log lines (as `tollgate serve` writes them), into a buffer."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    configure_logging("info")
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=buffer))
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------------------------------
# Bad requests and failures end their own call, with a proper status


def test_an_unknown_acceptance_is_a_bad_request_naming_the_field(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ValidationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unary:
            stub.ValidateTimeEntries(_request("AC", acceptance=65), timeout=30)  # type: ignore[arg-type]
        assert unary.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "acceptance 65" in unary.value.details()
        assert [v.field for v in _detail(unary.value, error_details_pb2.BadRequest).field_violations] == ["acceptance"]

        # In a stream: the chunks before it are answered, and the stream ends saying which chunk.
        chunks = iter([_request("AS1"), _request("AS2", acceptance=65), _request("AS3")])  # type: ignore[arg-type]
        responses = stub.StreamTimeEntries(chunks, timeout=30)
        assert len(next(responses).decisions) == 3
        with pytest.raises(grpc.RpcError) as streamed:
            next(responses)
        assert streamed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert streamed.value.details().startswith("chunk 2: acceptance 65")
        assert _detail(streamed.value, error_details_pb2.BadRequest).field_violations[0].field == "acceptance"
        # The server goes on.
        assert len(stub.ValidateTimeEntries(_request("AC-OK"), timeout=30).decisions) == 3


def test_a_handler_failure_is_internal_with_error_info_and_a_logged_traceback(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def failing_roll_up(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RuntimeError("roll-up broke")
        return roll_up(*args)

    from tollgate.server import validation_service

    roll_up = validation_service.roll_up
    monkeypatch.setattr(validation_service, "roll_up", failing_roll_up)
    with _captured_logs() as logs, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ValidationServiceStub(channel)
        assert len(stub.ValidateTimeEntries(_request("OK"), timeout=30,
                                            metadata=(("x-correlation-id", "ok-1"),)).decisions) == 3
        with pytest.raises(grpc.RpcError) as unary:
            stub.ValidateTimeEntries(_request("F"), timeout=30, metadata=(("x-correlation-id", "fail-1"),))
        assert unary.value.code() is grpc.StatusCode.INTERNAL
        assert "fail-1" in unary.value.details()
        info = _detail(unary.value, error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain) == ("INTERNAL_ERROR", "tollgate")
        assert info.metadata["correlation_id"] == "fail-1"

        # A stream whose second chunk fails: the first is answered, then INTERNAL (not UNKNOWN).
        calls["n"] = 0
        responses = stub.StreamTimeEntries(iter([_request("S1"), _request("S2"), _request("S3")]), timeout=30,
                                           metadata=(("x-correlation-id", "fail-2"),))
        assert len(next(responses).decisions) == 3
        with pytest.raises(grpc.RpcError) as streamed:
            next(responses)
        assert streamed.value.code() is grpc.StatusCode.INTERNAL
        assert _detail(streamed.value, error_details_pb2.ErrorInfo).metadata["correlation_id"] == "fail-2"
    lines = _lines(logs)
    # The deciding, in a pool thread, logs with the call's correlation id.
    assert any(line["event"] == "decided" and line.get("correlation_id") == "ok-1" for line in lines)
    failures = {line["correlation_id"]: line for line in lines if line["event"] == "call_failed"}
    assert set(failures) == {"fail-1", "fail-2"}
    for line in failures.values():
        assert line["level"] == "error"
        assert "Traceback" in line["exception"] and "RuntimeError: roll-up broke" in line["exception"]
    assert failures["fail-1"]["method"] == "/tollgate.v1.ValidationService/ValidateTimeEntries"


# ---------------------------------------------------------------------------------------------------
# Streams are bounded: a maximum, an idle timeout


def test_idle_streams_time_out_and_past_the_maximum_are_refused() -> None:
    running = start(Settings(port=0, threads=2, max_streams=2, stream_idle_seconds=1.0, shutdown_grace_seconds=1,
                             log_level="warning"))
    held: list[_Held] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ValidationServiceStub(channel)
            # A stream that sends one chunk and then nothing: answered, then ended after the idle time.
            one = _Held(_request("I1"))
            held.append(one)
            started = time.monotonic()
            responses = stub.StreamTimeEntries(iter(one), timeout=30)
            assert len(next(responses).decisions) == 3
            with pytest.raises(grpc.RpcError) as idle:
                next(responses)
            assert idle.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no chunk for 1 s (stream_idle_seconds)" in idle.value.details()
            assert 0.9 < time.monotonic() - started < 10

            # Two streams open (the maximum): a third is refused, at once; unary calls go on.
            opened = []
            for name in ("M1", "M2"):
                stream = _Held(_request(name))
                held.append(stream)
                opened.append(stub.StreamTimeEntries(iter(stream), timeout=30))
                assert len(next(opened[-1]).decisions) == 3
            third = _Held(_request("M3"))
            held.append(third)
            with pytest.raises(grpc.RpcError) as refused:
                next(stub.StreamTimeEntries(iter(third), timeout=30))
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams" in refused.value.details()
            assert len(stub.ValidateTimeEntries(_request("U"), timeout=30).decisions) == 3
            # One ends: there is room again.
            held[1].released.set()
            assert list(opened[0]) == []
            wait_until(lambda: running.streams.open == 1, timeout=10)
            fourth = _Held(_request("M4"))
            held.append(fourth)
            assert len(next(stub.StreamTimeEntries(iter(fourth), timeout=30)).decisions) == 3
    finally:
        for stream in held:
            stream.released.set()
        running.stop()


class _IdleStreams:
    """``count`` streaming calls that send nothing, over several connections, from an asyncio client in a
    thread of its own (a sync client would need a thread per call)."""

    def __init__(self, target: str, count: int, connections: int = 10) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.target, self.count, self.connections = target, count, connections
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []
        self._run(self._open(), timeout=120)

    def _run(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self) -> None:
        self.channels = [grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(self.connections)]
        for n in range(self.count):
            self.calls.append(pb_grpc.ValidationServiceStub(self.channels[n % self.connections]).StreamTimeEntries())
        await asyncio.gather(*(call.initial_metadata() for call in self.calls))

    async def _codes(self) -> list[grpc.StatusCode]:
        return list(await asyncio.gather(*(call.code() for call in self.calls)))

    def codes(self, timeout: float) -> list[grpc.StatusCode]:
        return self._run(self._codes(), timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        async def close() -> None:
            for channel in self.channels:
                await channel.close()

        with contextlib.suppress(Exception):
            self._run(close(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _open_streams(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("tollgate_open_streams "))


def test_a_thousand_idle_streams_delay_neither_unary_calls_nor_health_and_sigterm_ends_them(tmp_path: Path) -> None:
    port, metrics_port, grace = free_port(), free_port(), 2.0
    log_path = tmp_path / "serve.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [*TOLLGATE, "serve", "--port", str(port), "--workers", "1", "--metrics-port", str(metrics_port),
         "--max-streams", "1000", "--stream-idle-seconds", "300", "--shutdown-grace-seconds", str(grace)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
    target = f"127.0.0.1:{port}"
    idle: _IdleStreams | None = None
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            idle = _IdleStreams(target, 1000)
            wait_until(lambda: _open_streams(metrics_port) == 1000, timeout=30)
            stub = pb_grpc.ValidationServiceStub(channel)
            # Past the maximum: refused, with a status that says why.
            with pytest.raises(grpc.RpcError) as refused:
                next(stub.StreamTimeEntries(iter(_Held(_request("X"))), timeout=30))
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            # Health is answered, and a 20-line timesheet takes no longer than with nothing else open.
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status \
                == health_pb2.HealthCheckResponse.SERVING
            request = _request("L", 20)
            for _ in range(20):
                stub.ValidateTimeEntries(request, timeout=30)
            samples = []
            for _ in range(300):
                started = time.perf_counter()
                assert len(stub.ValidateTimeEntries(request, timeout=30).decisions) == 20
                samples.append(time.perf_counter() - started)
            p99 = statistics.quantiles(samples, n=100)[98]
            print(f"\n1,000 idle streams open: 20-line timesheet p50 {statistics.median(samples) * 1000:.2f} ms, "
                  f"p99 {p99 * 1000:.2f} ms over {len(samples)} calls")
            assert p99 < 0.050, f"p99 {p99 * 1000:.1f} ms (p50 {statistics.median(samples) * 1000:.1f} ms)"

            # SIGTERM with the thousand streams open: the process ends within its grace period.
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert process.wait(timeout=grace + 20) == 0
            took = time.monotonic() - started
            assert took < grace + 3, f"stopped after {took:.1f} s"
            codes = set(idle.codes(timeout=30))
            assert grpc.StatusCode.OK not in codes and grpc.StatusCode.UNKNOWN not in codes
    finally:
        if idle is not None:
            idle.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        log_file.close()
    logs = log_path.read_text()
    assert '"event": "stopped"' in logs, logs[-2000:]


def test_an_upload_in_progress_holds_no_thread_and_deciding_goes_on() -> None:
    running = start(Settings(port=0, threads=1, load_threads=1, log_level="warning"))
    try:
        refdata = ROOT / "examples" / "refdata"
        upload = list(_upload(refdata, export_files(refdata), refdata_pb2.LoadHeader(source="held upload"), 4096))
        # Half the upload sent, then the client pauses; the load thread and the deciding thread stay free.
        held = _Held(*upload[: len(upload) // 2])
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            load = refdata_pb2_grpc.ReferenceDataServiceStub(channel).Load.future(iter(held), timeout=60)
            wait_until(lambda: running.streams.open == 1, timeout=10)
            stub = pb_grpc.ValidationServiceStub(channel)
            for n in range(5):
                assert len(stub.ValidateTimeEntries(_request(f"D{n}"), timeout=5).decisions) == 3
            status = refdata_pb2_grpc.ReferenceDataServiceStub(channel).Status(refdata_pb2.StatusRequest(), timeout=5)
            assert status.current.snapshot_id
            held.rest = upload[len(upload) // 2 :]
            held.released.set()
            loaded = load.result(timeout=60)
        assert loaded.snapshot.source == "held upload"
        assert running.runtime.generation.snapshot.snapshot_id == loaded.snapshot.snapshot_id
    finally:
        running.stop()
