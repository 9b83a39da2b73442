"""Retrying validation calls: which failures are retried, how long to wait between attempts, when to give up.

A retry resends the identical request (the same request_id, the same bytes), so the server, idempotent on
request_id (AIP-155), answers it with the recorded response rather than decide and record it twice.
Only UNAVAILABLE and DEADLINE_EXCEEDED are retried: every other code is an answer that a retry would repeat.
The wait before retry *n* is drawn uniformly from ``[0, min(max_backoff, initial_backoff * multiplier ** (n-1))]``
(exponential backoff with full jitter), so that clients refused together do not come back together.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import grpc
import structlog

log = structlog.get_logger("tollgate.client")

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Bounds on a policy: past them a setting is a mistake (a typo, a unit mix-up), not a wish.
MOST_ATTEMPTS = 100
LONGEST_BACKOFF_SECONDS = 3600.0
LARGEST_MULTIPLIER = 10.0
LONGEST_DEADLINE_SECONDS = 7 * 24 * 3600.0


class RequestIdReusedError(Exception):
    """The server answered ALREADY_EXISTS: this request id was already used, for a different payload."""

    def __init__(self, request_id: str, details: str) -> None:
        self.request_id = request_id
        super().__init__(f"request id {request_id!r} was already used for a different payload (the server "
                         "remembers request ids for a window, 24 hours by default): send this batch with a new "
                         f"request id, or the same items as the first time; the server said: {details}")


def _positive_seconds(name: str, value: float, most: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= most:
        raise ValueError(f"{name}: {value!r} is not a number of seconds above 0 and at most {most:g}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5  # the first attempt included: 1 never retries
    initial_backoff: float = 0.1  # seconds: the most the wait before the first retry can be
    max_backoff: float = 5.0  # seconds: the most any wait can be
    multiplier: float = 2.0  # how much the most a wait can be grows with each retry
    deadline: float = 300.0  # seconds for the whole call, every attempt and wait included

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or not 1 <= self.max_attempts <= MOST_ATTEMPTS:
            raise ValueError(f"max_attempts: {self.max_attempts!r} is not a whole number from 1 to {MOST_ATTEMPTS}")
        _positive_seconds("initial_backoff", self.initial_backoff, LONGEST_BACKOFF_SECONDS)
        _positive_seconds("max_backoff", self.max_backoff, LONGEST_BACKOFF_SECONDS)
        if self.max_backoff < self.initial_backoff:
            raise ValueError(f"max_backoff: {self.max_backoff!r} is less than initial_backoff {self.initial_backoff!r}")
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, (int, float)) \
                or not 1 <= self.multiplier <= LARGEST_MULTIPLIER:  # NaN fails both comparisons
            raise ValueError(f"multiplier: {self.multiplier!r} is not a number from 1 to {LARGEST_MULTIPLIER:g}")
        _positive_seconds("deadline", self.deadline, LONGEST_DEADLINE_SECONDS)

    def delay(self, retry: int, chance: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first): full jitter under the backoff cap."""
        # Bounded by MOST_ATTEMPTS and LARGEST_MULTIPLIER, the power never overflows a float.
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return chance.uniform(0, cap)


class Attempts:
    """The attempts of one call under a policy: the time left, and after a failure either the wait before the
    next attempt or the error raised (not retryable, the attempts used up, or no time left for another)."""

    def __init__(self, policy: RetryPolicy, chance: random.Random, method: str) -> None:
        self.policy = policy
        self._chance = chance
        self._method = method
        self._ends = time.monotonic() + policy.deadline
        self._attempt = 1
        self._failed_in_a_row = 0

    def time_left(self) -> float:
        return self._ends - time.monotonic()

    def failed(self, error: grpc.RpcError, request_id: str, *, progressed: bool = False) -> None:
        """Called in the ``except`` of a failed attempt: returns once it is time for the next, else raises.

        ``progressed``: the attempt got part of the work answered (a stream's chunks) before it broke; the
        attempts are then counted afresh, since the next one starts where this one stopped."""
        code = error.code()
        if code is grpc.StatusCode.ALREADY_EXISTS:
            raise RequestIdReusedError(request_id, error.details()) from error
        self._failed_in_a_row = 1 if progressed else self._failed_in_a_row + 1
        if code not in RETRYABLE_CODES:
            raise error
        delay = self.policy.delay(self._failed_in_a_row, self._chance)
        if self._failed_in_a_row >= self.policy.max_attempts or delay >= self.time_left():
            log.warning("retries_given_up", method=self._method, attempt=self._attempt, code=code.name,
                        request_id=request_id, attempts_in_a_row=self._failed_in_a_row,
                        seconds_left=round(max(self.time_left(), 0.0), 3))
            raise error
        self._attempt += 1
        log.warning("retrying", method=self._method, attempt=self._attempt, code=code.name,
                    delay_seconds=round(delay, 3), request_id=request_id, details=error.details())
        time.sleep(delay)
