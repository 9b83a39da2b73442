"""Load generators for the throughput comparison: client *processes* (not threads: one Python process
is one core's worth of work under the GIL, and the client must not be the bottleneck it measures).

Each client process opens ``channels`` connections of its own (a local subchannel pool each, so they are
separate TCP connections the kernel spreads over the server's workers) and keeps one call in flight on
each for as long as a round lasts: a closed loop, so a worker holding more connections than another simply
queues more, and every worker stays busy as long as it holds one. Rounds last a set time rather than a set
number of calls: with a set number per client, a client whose connections all landed on one worker would
keep that worker busy after the others had run out of calls, and the round would measure that tail.
Requests are sent pre-serialized and responses received as bytes (no protobuf work in the client), to
leave the cores to the server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.servers import MAX_MESSAGE_BYTES, VALIDATE_METHOD


def _client(target: str, payload: bytes, channels: int, conn: Connection) -> None:
    import grpc

    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    opened = [grpc.insecure_channel(target, options=options) for _ in range(channels)]
    for channel in opened:
        grpc.channel_ready_future(channel).result(timeout=30)
    # request_serializer/response_deserializer None: bytes in, bytes out
    calls = [channel.unary_unary(VALIDATE_METHOD) for channel in opened]
    conn.send("ready")
    while True:
        seconds = conn.recv()
        if seconds is None:
            break
        started_cpu, deadline = time.process_time(), time.perf_counter() + seconds
        finished: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        sent = done = received = 0

        def issue(index: int, finished: queue.SimpleQueue[tuple[int, Any]] = finished) -> None:
            future = calls[index].future(payload, timeout=300)
            future.add_done_callback(lambda f: finished.put((index, f)))

        for index in range(channels):
            issue(index)
            sent += 1
        while done < sent:
            # completion order, not sending order: a slow worker must not hold up the others' connections
            index, future = finished.get()
            received += len(future.result())
            done += 1
            if time.perf_counter() < deadline:
                issue(index)
                sent += 1
        conn.send((done, received, time.process_time() - started_cpu))
    for channel in opened:
        channel.close()


@dataclass(slots=True)
class RoundResult:
    calls: int
    response_bytes: int
    client_cpu_seconds: float


class ClientPool:
    """``processes`` client processes against ``target``, each sending ``payload`` over ``channels`` connections."""

    def __init__(self, target: str, payload: bytes, processes: int, channels: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(target=_client, args=(target, payload, channels, theirs), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                self.close()
                raise RuntimeError(f"a client process could not connect to {target}")

    def run(self, seconds: float) -> RoundResult:
        """Every process keeps its connections busy for ``seconds``; returns when the calls in flight then have
        answered."""
        for pipe in self.pipes:
            pipe.send(seconds)
        total = RoundResult(0, 0, 0.0)
        for pipe in self.pipes:
            done, received, cpu = pipe.recv()
            total.calls += done
            total.response_bytes += received
            total.client_cpu_seconds += cpu
        return total

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()  # only the client processes this pool started
                process.join(5)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
