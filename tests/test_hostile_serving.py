"""A running server under hostile rulesets: a bad reload is refused and logged, fast, and never stops calls."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import ROOT
from tollgate.clients.client import ValidationClient
from tollgate.server import runtime as runtime_module
from tollgate.server.app import RunningServer, start
from tollgate.server.settings import Settings

ENTRY = {"entry_id": "TE-1", "worker_id": "W-1", "project_id": "P-700", "task_id": "T-1",
         "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT",
         "submitted_at": "2026-11-07T17:00:00Z"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    rulesets = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets)
    server = start(Settings(port=0, threads=2, rulesets=rulesets, log_level="warning"))
    try:
        yield server, rulesets
    finally:
        server.stop()


def _still_serves(server: RunningServer) -> None:
    with ValidationClient(f"127.0.0.1:{server.port}", timeout=10) as client:
        decision = client.validate_time_entries([ENTRY]).decisions[0]
    assert decision.codes == ["PROJECT_NOT_CHARGEABLE"]  # P-700 is closed, as the shipped rulesets say


def _refusals(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "reload_refused"]


def test_an_alias_bomb_reloaded_into_a_running_server_is_refused_fast(running: tuple[RunningServer, Path]) -> None:
    server, rulesets = running
    before = server.runtime.generation
    levels = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"  l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 10)]
    bomb = rulesets / "time_entry" / "99-bomb.yaml"
    bomb.write_text("ruleset: bomb\nparams:\n" + "\n".join(levels) + "\n", encoding="utf-8")
    started = time.perf_counter()
    with capture_logs() as logs:
        assert server.runtime.reload()  # refused: the problems
    assert time.perf_counter() - started < 10  # the shipped rulesets compile again; the bomb costs nothing
    [refused] = _refusals(logs)
    assert any(problem.startswith(f"{bomb}:4: YAML: its aliases repeat") for problem in refused["problems"])
    assert server.runtime.generation is before
    _still_serves(server)


def test_an_error_while_reloading_is_refused_and_logged_never_raised(
    running: tuple[RunningServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _rulesets = running
    before = server.runtime.generation

    def broken(_directory: Path) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(runtime_module, "load_rulesets", broken)
    with capture_logs() as logs:
        assert server.runtime.reload()  # refused: the problems
    [refused] = _refusals(logs)
    assert refused["problems"] == ["RecursionError: maximum recursion depth exceeded"]
    assert server.runtime.generation is before
    _still_serves(server)


def test_calls_and_reference_data_changes_do_not_wait_for_a_reload_loading(
    running: tuple[RunningServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _rulesets = running
    loading, release = threading.Event(), threading.Event()
    real = runtime_module.load_rulesets

    def slow(directory: Path) -> Any:
        loading.set()
        release.wait(30)
        return real(directory)

    monkeypatch.setattr(runtime_module, "load_rulesets", slow)
    reloading = threading.Thread(target=server.runtime.reload)
    reloading.start()
    try:
        assert loading.wait(10)
        # the lock a snapshot switch, a replay's generation and a publish take is free while the files load
        assert server.runtime._lock.acquire(timeout=1)
        server.runtime._lock.release()
        _still_serves(server)
    finally:
        release.set()
        reloading.join(30)
    assert not reloading.is_alive()


def test_a_one_mib_field_quoted_two_hundred_times_gives_a_bounded_message(tmp_path: Path) -> None:
    rulesets = tmp_path / "rulesets"
    rulesets.mkdir()
    placeholders = " ".join(["{worker_id}"] * 200)
    (rulesets / "echo.yaml").write_text(f"""\
ruleset: echo
version: 1.0.0
effective_from: 2026-01-01
applies_to: time_entry
order: 10
owner: revenue-controls@example.com
rules:
  - id: EC-1
    title: Echo the worker
    when: "true"
    action: warn
    code: ECHO
    message: "Worker {placeholders}; and {{worker_id + worker_id}}."
tests:
  - name: fires
    item: {{entry_id: TE-1, worker_id: W-1, project_id: P-100, task_id: T-1, work_date: 2026-11-03, hours: 8}}
    expect: {{outcome: accept, codes: [ECHO]}}
""", encoding="utf-8")
    server = start(Settings(port=0, threads=2, rulesets=rulesets, log_level="warning"))
    try:
        longest = "W" * 256  # the longest id the wire grammar takes; a 1 MiB one is refused as such
        with ValidationClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            decision, refused = client.validate_time_entries(
                [{**ENTRY, "worker_id": longest}, {**ENTRY, "entry_id": "TE-HUGE", "worker_id": "W" * (1 << 20)}]
            ).decisions
    finally:
        server.stop()
    assert refused.codes == ["INVALID_FIELD"]
    assert len(refused.reasons[0].message) < 200
    [reason] = [reason for reason in decision.reasons if reason.code == "ECHO"]
    quoted = "W" * 199 + "…"
    assert reason.message == "Worker " + " ".join([quoted] * 200) + "; and " + quoted + "."
    assert len(reason.message) < 41_000  # 201 values of 200 characters; 213 MB for a 1 MiB id before
