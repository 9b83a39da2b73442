"""The cyclic garbage collector is held off while batches are decided, and only then (evaluators/collector.py)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import FixedBinder
from tollgate.evaluators.collector import BATCHES, CollectorHold
from tollgate.evaluators.engine import Evaluator
from tollgate.rules.item_kinds import TIME_ENTRY, Binding
from tollgate.rules.loader import load_rulesets


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_off_during_a_batch_and_on_after_it_even_when_it_fails() -> None:
    hold = CollectorHold()
    with hold.batch():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), hold.batch():
        raise RuntimeError("a batch that fails")
    assert gc.isenabled()


def test_overlapping_batches_keep_it_off_until_the_last_one_is_done() -> None:
    hold = CollectorHold()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with hold.batch():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with hold.batch():
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = gc.isenabled()
        seen["after the second left"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after the first left": False, "after the second left": True}


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    hold = CollectorHold()
    with hold.batch():
        assert not hold.holding
    assert not gc.isenabled()


def test_batches_that_keep_overlapping_do_not_hold_it_off_past_the_limit() -> None:
    hold = CollectorHold(max_hold_seconds=0.01)
    with hold.batch():
        time.sleep(0.02)
        with hold.batch():  # starts after the limit: the collector goes back on ...
            assert gc.isenabled()
            with hold.batch():  # ... and stays on while batches keep overlapping
                assert gc.isenabled()
    with hold.batch():  # none was running: held off again
        assert not gc.isenabled()
    assert gc.isenabled()


class _WatchingBinder(FixedBinder):
    """Records whether the collector was on each time the engine bound a record."""

    def __init__(self) -> None:
        super().__init__({})
        self.collector_on: list[bool] = []

    def bind(self, binding: Binding, scope: Any) -> Any:
        self.collector_on.append(gc.isenabled())
        return super().bind(binding, scope)


def test_the_engine_decides_batches_with_the_collector_off(tmp_path: Path) -> None:
    (tmp_path / "warn.yaml").write_text(
        "ruleset: watch\nversion: 1.0.0\neffective_from: 2026-01-01\napplies_to: time_entry\norder: 10\n"
        "owner: revenue-controls@example.com\nrules:\n"
        "  - {id: W-1, title: Any project, when: project == null, action: warn, code: NO_PROJECT, message: none}\n",
        encoding="utf-8")
    binder = _WatchingBinder()
    evaluator = Evaluator(TIME_ENTRY, load_rulesets(tmp_path).for_kind(TIME_ENTRY.name), binder, "snap-test",
                          ENGINE_VERSION)
    entries = [{"entry_id": f"E-{n}", "worker_id": "W-1", "project_id": "P-1", "task_id": "T-1",
                "work_date": "2026-11-03", "hours": "8"} for n in range(3)]
    decisions = evaluator.evaluate(entries)
    assert len(decisions) == 3
    assert binder.collector_on and not any(binder.collector_on)
    assert gc.isenabled() and not BATCHES.holding
