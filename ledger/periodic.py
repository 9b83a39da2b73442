"""A piece of the ledger's upkeep run every so often in a daemon thread: retention (ledger/retention.py), planner
statistics (ledger/statistics.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("tollgate.ledger")


class Periodic:
    """Calls ``turn`` every ``interval_seconds`` (the first time at once when ``at_start``, else after one interval)
    in a daemon thread named ``name``, until stopped. A turn that fails (the database away for now) is logged as
    ``failed`` and tried again at the next."""

    def __init__(self, name: str, turn: Callable[[], None], interval_seconds: float, *, at_start: bool,
                 failed: str) -> None:
        self.turn = turn
        self.interval_seconds = interval_seconds
        self.at_start = at_start
        self.failed = failed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        if not self.at_start and self._stopping.wait(self.interval_seconds):
            return
        while True:
            try:
                self.turn()
            except Exception as error:  # try again at the next turn
                log.error(self.failed, error_type=type(error).__name__,
                          error=str(error).splitlines()[0] if str(error) else "")
            if self._stopping.wait(self.interval_seconds):
                return
