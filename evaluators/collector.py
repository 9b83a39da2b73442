"""Python's cyclic garbage collector held off while batches are decided.

Everything a batch allocates (item scopes, states, reasons, figures) lives until the batch is decided and
then goes at once, freed by reference counting; there are no cycles among it to find. Collections during a
batch only walk those live objects again and again (generation by generation, and the whole heap in a full
collection): about a sixth of the time of a 10,000-entry batch. So the collector is off while any batch is
being decided, in any thread, and back on when the last one is done.

Under load, batches in several threads can overlap for long stretches with never a moment when none is
running. The hold is not renewed past ``MAX_HOLD_SECONDS``: a batch that starts later than that after the
collector went off turns it back on, and it stays on until no batch is running, so the cyclic garbage
anything else in the process makes is still collected.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

MAX_HOLD_SECONDS = 5.0


class CollectorHold:
    """Counts the batches being decided; the collector is off from the first one in until the last one out."""

    def __init__(self, max_hold_seconds: float = MAX_HOLD_SECONDS) -> None:
        self.max_hold_seconds = max_hold_seconds
        self._lock = threading.Lock()
        self._batches = 0
        self._held_since: float | None = None  # when this hold turned the collector off; None: it did not
        self._overdue = False  # held off too long in this busy stretch: leave it on until no batch runs

    @contextmanager
    def batch(self) -> Iterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._exit()

    @property
    def holding(self) -> bool:
        """Whether the collector is off on this hold's account now."""
        return self._held_since is not None

    def _enter(self) -> None:
        with self._lock:
            self._batches += 1
            if self._held_since is None:
                # Turned off only if it is on (the application may run with it off) and not overdue.
                if not self._overdue and gc.isenabled():
                    gc.disable()
                    self._held_since = time.monotonic()
            elif time.monotonic() - self._held_since > self.max_hold_seconds:
                gc.enable()
                self._held_since, self._overdue = None, True

    def _exit(self) -> None:
        with self._lock:
            self._batches -= 1
            if self._batches == 0:
                if self._held_since is not None:
                    gc.enable()
                    self._held_since = None
                self._overdue = False


# One per process: the collector is process-wide.
BATCHES = CollectorHold()


P = ParamSpec("P")
R = TypeVar("R")


def deciding_a_batch(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` decides (part of) a batch: the collector is held off while it runs."""

    @functools.wraps(function)
    def held(*args: P.args, **kwargs: P.kwargs) -> R:
        with BATCHES.batch():
            return function(*args, **kwargs)

    return held
