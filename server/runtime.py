"""What the service decides with: the ruleset bundle and reference snapshot in force.

Rulesets are loaded from files; reference snapshots come from a snapshot store (in-process, or Redis
shared by every replica). Each pairing is a Generation, swapped in atomically: a batch is decided by
exactly one generation, hence one snapshot, which every decision names. A reload that fails is
refused and logged with every problem (file, line, rule id); the previous version keeps serving.

The store tells the runtime of each new current snapshot (from any replica) and of whether it can be
reached; while it cannot, the runtime keeps deciding from the snapshot it holds and says how stale
that may be. A call can name a kept past snapshot, to replay a decision on the data it used.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata import codec
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.refdata.store import (
    ANY_CURRENT,
    InProcessStore,
    SnapshotConflictError,
    SnapshotInfo,
    SnapshotNotFoundError,
    SnapshotStore,
    StoreState,
    StoreUnavailableError,
)
from tollgate.rules.item_kinds import ITEM_KINDS
from tollgate.rules.loader import RulesetBundle, load_rulesets
from tollgate.rules.problems import Problem, ProblemsError

log = structlog.get_logger("tollgate.runtime")

# Past snapshots held ready for replays, beyond the current one.
REPLAY_GENERATIONS = 3


class NoReferenceDataError(RuntimeError):
    """No snapshot has been loaded yet: nothing to decide against."""


@dataclass(frozen=True, slots=True)
class Generation:
    """One consistent pairing of rulesets and reference data; a call uses exactly one generation."""

    rulesets: RulesetBundle
    snapshot: ReferenceSnapshot
    evaluators: dict[str, Evaluator]

    @classmethod
    def build(cls, rulesets: RulesetBundle, snapshot: ReferenceSnapshot) -> Generation:
        evaluators = {
            name: Evaluator(kind, rulesets.for_kind(name), SnapshotBinder(kind, snapshot),
                            snapshot.snapshot_id, ENGINE_VERSION)
            for name, kind in ITEM_KINDS.items()
        }
        return cls(rulesets, snapshot, evaluators)

    def with_snapshot(self, snapshot: ReferenceSnapshot) -> Generation:
        """The same rulesets deciding against ``snapshot``.

        Each evaluator is copied with the new snapshot's binder and provenance, sharing everything else
        (rule plans, generated item decoders): building evaluators anew compiles the decoders, which
        holds the GIL for milliseconds in one go, a pause for every call being answered meanwhile.
        """
        evaluators = {name: evaluator.for_snapshot(SnapshotBinder(evaluator.kind, snapshot), snapshot.snapshot_id)
                      for name, evaluator in self.evaluators.items()}
        return Generation(self.rulesets, snapshot, evaluators)


def lookup_problems(rulesets: RulesetBundle, snapshot: ReferenceSnapshot) -> list[Problem]:
    """Where the rulesets' lookups would find more than one row at once in ``snapshot`` (see LookupSpec)."""
    return [problem for name, kind in ITEM_KINDS.items()
            for problem in SnapshotBinder(kind, snapshot).lookup_problems(rulesets.for_kind(name))]


@dataclass(frozen=True, slots=True)
class ReferenceStatus:
    current: SnapshotInfo | None
    kept: list[SnapshotInfo]
    store: str
    store_reachable: bool
    store_current_id: str | None
    # Seconds since the store was last known reachable (0 while it is): how far behind the data may be.
    stale_seconds: float
    store_lost: str | None = None  # why the store lost its data (Runtime.store_lost)


class Runtime:
    def __init__(self, rulesets_dir: Path, refdata_dir: Path | None, store: SnapshotStore | None = None) -> None:
        self.rulesets_dir = rulesets_dir
        self.refdata_dir = refdata_dir
        self.store: SnapshotStore = store or InProcessStore()
        self._lock = threading.Lock()  # serialises changes; readers never wait
        self._changed = threading.Condition(self._lock)
        self._rulesets = load_rulesets(rulesets_dir)
        self._generation: Generation | None = None
        self._past: OrderedDict[str, Generation] = OrderedDict()
        self._state = StoreState(True, dt.datetime.now(dt.UTC))
        self._lost: str | None = None  # why the store lost the data this replica holds, while it has
        self._listeners: list[Callable[[], None]] = []
        self._switch_listeners: list[Callable[[str, float], None]] = []
        initial = self._initial_snapshot()
        if initial is not None:
            self._adopt(initial, time.perf_counter())
        else:
            log.warning("no_reference_data", store=self.store.description,
                        hint="validation calls fail with FAILED_PRECONDITION until a snapshot is loaded")
        self.store.watch(self._adopt, self._on_store_state)

    def _initial_snapshot(self) -> ReferenceSnapshot | None:
        """The store's current snapshot; else the export directory's, published to seed the store."""
        try:
            current = self.store.current()
            if current is not None or self.refdata_dir is None:
                return current
            snapshot = load_snapshot(self.refdata_dir)
            try:
                self.store.publish(snapshot, if_current="")
            except SnapshotConflictError:
                return self.store.current()  # another replica seeded it first
            return snapshot
        except StoreUnavailableError as error:
            # Serve what the directory holds (or nothing); the store's watcher catches up when it returns.
            log.warning("store_unreachable_at_start", store=self.store.description, error=str(error))
            self._state = StoreState(False, dt.datetime.now(dt.UTC))
            return load_snapshot(self.refdata_dir) if self.refdata_dir is not None else None
        except SnapshotNotFoundError as error:
            # Current names a snapshot this replica cannot read (stored by an earlier version): serve what the
            # directory holds (or nothing) until a load makes a new snapshot current.
            log.error("current_snapshot_unreadable", store=self.store.description, error=str(error))
            return load_snapshot(self.refdata_dir) if self.refdata_dir is not None else None

    # -- what calls decide with ----------------------------------------------------------------------

    @property
    def generation(self) -> Generation:
        """The current generation; NoReferenceDataError before any snapshot has been loaded."""
        generation = self._generation
        if generation is None:
            raise NoReferenceDataError(f"no reference data has been loaded ({self.store.description})")
        return generation

    @property
    def rulesets(self) -> RulesetBundle:
        """The rulesets in force (those of the current generation, or loaded for the first snapshot)."""
        return self._rulesets

    @property
    def has_data(self) -> bool:
        return self._generation is not None

    def generation_for(self, snapshot_id: str) -> Generation:
        """A generation deciding with the kept snapshot ``snapshot_id`` and the current rulesets.

        Raises SnapshotNotFoundError if the store does not keep it, StoreUnavailableError if the store
        cannot be reached to fetch it.
        """
        current = self._generation
        if current is not None and current.snapshot.snapshot_id == snapshot_id:
            return current
        with self._lock:
            past = self._past.get(snapshot_id)
            if past is not None and past.rulesets is self._rulesets:
                self._past.move_to_end(snapshot_id)
                return past
        snapshot = self.store.fetch(snapshot_id)
        with self._lock:
            generation = self._generation_with(snapshot, self._generation)
            self._past[snapshot_id] = generation
            while len(self._past) > REPLAY_GENERATIONS:
                self._past.popitem(last=False)
        return generation

    # -- changes -------------------------------------------------------------------------------------

    def _adopt(self, snapshot: ReferenceSnapshot, seen_at: float) -> None:
        """Switch to ``snapshot`` (called by the store for each new current snapshot, in order; ``seen_at``:
        when the store saw it become current, by ``time.perf_counter``).

        Everything the new generation needs is made before it is swapped in, off the threads answering
        calls: the indexes the previous tables of each entity had built (a table derived from its
        predecessor carries them, patched; a table decoded whole builds them here, in slices), and
        the evaluators. Calls never wait for any of it.
        """
        previous = self._generation
        if previous is not None and previous.snapshot.snapshot_id == snapshot.snapshot_id:
            return
        if previous is not None:
            for name, table in snapshot.tables.items():
                before = previous.snapshot.tables.get(name)
                if before is not None and before is not table:
                    table.build_indexes(before.index_fields())
        codec.pause_between_slices()
        generation = self._generation_with(snapshot, previous)
        with self._lock:
            previous = self._generation
            if generation.rulesets is not self._rulesets:  # rulesets reloaded meanwhile
                generation = self._generation_with(snapshot, previous)
            self._generation = generation
            if previous is not None:
                self._past[previous.snapshot.snapshot_id] = previous
                while len(self._past) > REPLAY_GENERATIONS:
                    self._past.popitem(last=False)
            self._changed.notify_all()
        seconds = time.perf_counter() - seen_at
        log.info("snapshot_switched", snapshot_id=snapshot.snapshot_id, source=snapshot.source,
                 previous_snapshot_id=previous.snapshot.snapshot_id if previous else None,
                 reference_counts=snapshot.counts(), adoption_seconds=round(seconds, 4))
        for listener in self._switch_listeners:
            listener(snapshot.snapshot_id, seconds)
        self._notify_listeners()

    def _generation_with(self, snapshot: ReferenceSnapshot, previous: Generation | None) -> Generation:
        if previous is not None and previous.rulesets is self._rulesets:
            return previous.with_snapshot(snapshot)
        return Generation.build(self._rulesets, snapshot)

    def _on_store_state(self, state: StoreState) -> None:
        with self._lock:
            held = self._generation.snapshot.snapshot_id if self._generation is not None else None
            # The store lost its data: it says so, or it has no snapshot while this replica decides with one.
            lost = (state.lost or ("the store holds no current snapshot" if state.current_id is None else None)
                    if state.reachable and held is not None else None)
            changed = state.reachable != self._state.reachable or lost != self._lost
            self._state, self._lost = state, lost
        if changed and lost is not None:
            log.error("store_lost_data", store=self.store.description, reason=lost, held_snapshot_id=held,
                      hint="this replica keeps deciding with the snapshot it holds; loads and changes through "
                           "it are refused until one is current again: run `tollgate refdata load DIR` with "
                           "the full exports (README, Reference data: Faults)")
        elif changed:
            log.info("store_reachable" if state.reachable else "store_degraded", store=self.store.description)
        if changed:
            self._notify_listeners()

    def publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT,
                wait_seconds: float = 5.0) -> bool:
        """Publish to the store and wait until this replica decides with it; False if it did not in time.

        Refused (ProblemsError) when the rulesets' lookups would find more than one row at once in it:
        every replica adopts what is published without checking again."""
        problems = lookup_problems(self._rulesets, snapshot)
        if problems:
            raise ProblemsError(problems)
        self.store.publish(snapshot, if_current=if_current)
        return self.wait_for(snapshot.snapshot_id, wait_seconds)

    def wait_for(self, snapshot_id: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: self._generation is not None and self._generation.snapshot.snapshot_id == snapshot_id,
                timeout=timeout,
            )

    def reload(self) -> list[str]:
        """Reload rulesets, and reference data from the export directory if there is one (published to
        the store); on any problem keep the current generation, and return the problems (empty: reloaded).

        The files are read and compiled, and the new generation built, outside the lock that calls and reference
        data changes wait on: only the swap holds it. Any error is refused and logged (``reload_refused``), never
        raised to the thread that asked."""
        current = self._generation
        try:
            rulesets = load_rulesets(self.rulesets_dir)
            snapshot = load_snapshot(self.refdata_dir) if self.refdata_dir is not None else None
            # Built before anything changes: rulesets whose lookups clash with the data are refused too.
            generation = Generation.build(rulesets, current.snapshot) if current is not None else None
            if snapshot is not None and (problems := lookup_problems(rulesets, snapshot)):
                raise ProblemsError(problems)
            with self._lock:
                if self._generation is not current:  # a snapshot was adopted meanwhile: decide with it
                    current = self._generation
                    generation = Generation.build(rulesets, current.snapshot) if current is not None else None
                self._rulesets = rulesets
                self._past.clear()
                if generation is not None:
                    self._generation = generation
        except Exception as error:  # a problem of the files, or anything else: the current generation stays
            refused = [str(p) for p in error.problems] if isinstance(error, ProblemsError) \
                else [f"{type(error).__name__}: {error}"]
            log.error("reload_refused", problems=refused,
                      serving_snapshot=current.snapshot.snapshot_id if current else None)
            return refused
        log.info("rulesets_reloaded", rulesets=[f"{r.id}@{r.version}" for r in rulesets.all])
        if snapshot is not None:
            try:
                self.publish(snapshot)
            except Exception as error:  # the store is unreachable (or refused it): the rulesets stay reloaded
                problem = str(error) if isinstance(error, StoreUnavailableError) else f"{type(error).__name__}: {error}"
                log.error("reload_refused", problems=[problem])
                return [problem]
        return []

    # -- status --------------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when data arrives or the store's reachability changes (health follows)."""
        self._listeners.append(listener)

    def on_switch(self, listener: Callable[[str, float], None]) -> None:
        """Call ``listener(snapshot_id, seconds)`` after each switch to a new snapshot; seconds from the
        store seeing it become current to deciding with it (fetching, decoding, indexing, evaluators)."""
        self._switch_listeners.append(listener)

    def _notify_listeners(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def store_reachable(self) -> bool:
        return self._state.reachable

    @property
    def store_lost(self) -> str | None:
        """Why the store lost its data (a Redis restarted without persistence, a FLUSHDB), while it has; None
        while it holds a current snapshot (or this replica holds none)."""
        return self._lost

    def stale_seconds(self) -> float:
        """Seconds since the store was last known reachable (0 while it is): how far behind the data may be."""
        state = self._state
        return 0.0 if state.reachable else (dt.datetime.now(dt.UTC) - state.since).total_seconds()

    def status(self) -> ReferenceStatus:
        state = self._state
        generation = self._generation
        try:
            kept = self.store.kept()
        except StoreUnavailableError:
            kept = []
        stale = self.stale_seconds()
        return ReferenceStatus(
            current=SnapshotInfo.of(generation.snapshot) if generation else None,
            kept=kept,
            store=self.store.description,
            store_reachable=state.reachable,
            store_current_id=kept[0].snapshot_id if kept else state.current_id,
            stale_seconds=stale,
            store_lost=self._lost,
        )

    def close(self) -> None:
        self.store.close()
