"""What the service decides with: the ruleset bundle and reference snapshot in force.

Both are loaded whole and swapped in atomically. A reload that fails is refused and logged with
every problem (file, line, rule id); the previous version keeps serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from evaluators import ENGINE_VERSION
from evaluators.binding import SnapshotBinder
from evaluators.engine import Evaluator
from evaluators.reference_data import ReferenceSnapshot, load_snapshot
from rules.loader import RulesetBundle, load_rulesets
from rules.problems import ProblemsError
from rules.schema import ITEM_KINDS

log = structlog.get_logger("tollgate.runtime")


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


class Runtime:
    def __init__(self, rulesets_dir: Path, refdata_dir: Path) -> None:
        self.rulesets_dir = rulesets_dir
        self.refdata_dir = refdata_dir
        self._lock = threading.Lock()  # serialises reloads; readers never wait
        self._generation = Generation.build(load_rulesets(rulesets_dir), load_snapshot(refdata_dir))
        self._log_generation("loaded")

    @property
    def generation(self) -> Generation:
        return self._generation

    def reload(self) -> bool:
        """Reload rulesets and reference data; on any problem keep the current generation."""
        with self._lock:
            try:
                generation = Generation.build(load_rulesets(self.rulesets_dir), load_snapshot(self.refdata_dir))
            except ProblemsError as error:
                log.error("reload_refused", problems=[str(p) for p in error.problems],
                          serving_snapshot=self._generation.snapshot.snapshot_id)
                return False
            self._generation = generation
            self._log_generation("reloaded")
            return True

    def _log_generation(self, event: str) -> None:
        generation = self._generation
        log.info(
            event,
            rulesets=[f"{r.id}@{r.version}" for r in generation.rulesets.all],
            snapshot_id=generation.snapshot.snapshot_id,
            reference_counts=generation.snapshot.counts(),
        )
