"""Real parts for the reference-data tests: the shared Redis, a Redis of our own, server processes.

Redis tests use the Redis at TOLLGATE_TEST_REDIS_URL (default redis://127.0.0.1:6379/15) under a
key prefix of their own, deleted afterwards. Outside CI a missing Redis skips them, loudly; in CI
(CI=true) it fails them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ROOT, free_port

TEST_REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the Redis tests (.ci/run starts Redis on 127.0.0.1:6379)")
    warnings.warn(f"SKIPPING REDIS TESTS: {reason}", stacklevel=2)
    pytest.skip(f"{reason} (these tests fail instead of skipping when CI is set)")


def shared_redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable(f"Redis at {TEST_REDIS_URL} is unreachable: {error}")
    finally:
        client.close()
    return TEST_REDIS_URL


@contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"tollgate-test:{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        delete_prefix(url, prefix)


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``: what a test or benchmark stored in the shared Redis."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class OwnRedis:
    """A redis-server of the test's own on a free port, to stop and start again (never the shared one).

    Append-only persistence in a temporary directory, so a restart comes back with the data, as a
    production Redis would.
    """

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            _unavailable("redis-server is not installed")
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class ServerProcess:
    """``tollgate serve`` in a process of its own, on ``port`` or a free one."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.target = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tollgate.clients.cli", "serve", "--port", str(self.port), "--workers", "1",
                   *args]
        environment = {**os.environ, "TOLLGATE_THREADS": "4", **(env or {})}
        # Logs go to a file: a pipe nobody reads would fill up and stall the server.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; read after it stops
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                                        stderr=self._log)

    def wait_until_up(self, timeout: float = 30) -> None:
        with grpc.insecure_channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                self.stop()
                raise RuntimeError(f"server did not start: {self.stderr()}") from None

    def health(self, service: str) -> int:
        with grpc.insecure_channel(self.target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=5)
            return int(response.status)

    def stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def servers(*argument_lists: Sequence[str], env: dict[str, str] | None = None) -> Iterator[list[ServerProcess]]:
    """Start server processes side by side (they start in parallel), stop them all afterwards."""
    started = [ServerProcess(*arguments, env=env) for arguments in argument_lists]
    try:
        for server in started:
            server.wait_until_up()
        yield started
    finally:
        for server in started:
            server.stop()


def wait_until(predicate: object, timeout: float, interval: float = 0.01) -> float:
    """Poll ``predicate`` until true; return the seconds it took, or fail after ``timeout``."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started
