"""Load every ruleset under a directory, all or nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rules.compile import CompiledRuleset, compile_ruleset
from rules.problems import Problem, ProblemsError


@dataclass(frozen=True, slots=True)
class RulesetBundle:
    """The rulesets in force: per item kind, in the order they run."""

    source: str
    by_kind: dict[str, tuple[CompiledRuleset, ...]]

    def for_kind(self, kind: str) -> tuple[CompiledRuleset, ...]:
        return self.by_kind.get(kind, ())

    @property
    def all(self) -> tuple[CompiledRuleset, ...]:
        return tuple(r for rulesets in self.by_kind.values() for r in rulesets)


def ruleset_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in ("*.yaml", "*.yml") for p in directory.rglob(pattern))


def load_rulesets(directory: Path) -> RulesetBundle:
    """Compile every ruleset file under ``directory``; raise ProblemsError listing every problem.

    Nothing is returned unless every file compiles: a service keeps serving its previous bundle
    when a new one is refused.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), None, None, "no such ruleset directory")])
    files = ruleset_files(directory)
    if not files:
        raise ProblemsError([Problem(str(directory), None, None, "no ruleset files (*.yaml) found")])
    problems: list[Problem] = []
    compiled: list[CompiledRuleset] = []
    for path in files:
        try:
            compiled.append(compile_ruleset(path))
        except ProblemsError as error:
            problems.extend(error.problems)
    first_seen: dict[str, CompiledRuleset] = {}
    for ruleset in compiled:
        earlier = first_seen.setdefault(ruleset.id, ruleset)
        if earlier is not ruleset:
            problems.append(
                Problem(ruleset.path, 1, None, f"ruleset id {ruleset.id!r} is also defined in {earlier.path}")
            )
    if problems:
        raise ProblemsError(problems)
    by_kind: dict[str, list[CompiledRuleset]] = defaultdict(list)
    for ruleset in compiled:
        by_kind[ruleset.kind.name].append(ruleset)
    return RulesetBundle(
        source=str(directory),
        by_kind={kind: tuple(sorted(rs, key=lambda r: (r.spec.order, r.id))) for kind, rs in by_kind.items()},
    )
