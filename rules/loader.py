"""Load every ruleset under a directory, all or nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tollgate.rules.problems import Problem, ProblemsError
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset


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
        except Exception as error:  # never a traceback (a bug of ours): the file is refused, saying what happened
            problems.append(Problem(str(path), None, None, f"cannot be loaded ({type(error).__name__}: {error})"))
    problems.extend(_version_problems(compiled))
    if problems:
        raise ProblemsError(problems)
    by_kind: dict[str, list[CompiledRuleset]] = defaultdict(list)
    for ruleset in compiled:
        by_kind[ruleset.kind.name].append(ruleset)
    return RulesetBundle(
        source=str(directory),
        by_kind={kind: tuple(sorted(rs, key=lambda r: (r.spec.order, r.id, r.spec.effective_from)))
                 for kind, rs in by_kind.items()},
    )


def _version_problems(compiled: list[CompiledRuleset]) -> list[Problem]:
    """Several versions of one ruleset may be loaded, each judging the items dated from its effective_from
    on; they must differ in version and in effective date, and agree on the item kind and the order."""
    problems = []
    first_seen: dict[str, CompiledRuleset] = {}
    seen: dict[tuple[str, str], CompiledRuleset] = {}
    starting: dict[tuple[str, object], CompiledRuleset] = {}
    for ruleset in compiled:
        first = first_seen.setdefault(ruleset.id, ruleset)
        same_version = seen.setdefault((ruleset.id, ruleset.version), ruleset)
        same_start = starting.setdefault((ruleset.id, ruleset.spec.effective_from), ruleset)
        where = f"ruleset {ruleset.id!r}"
        if same_version is not ruleset:
            problems.append(Problem(ruleset.path, 1, None, f"{where} version {ruleset.version} is also defined in "
                                    f"{same_version.path}; a published version is immutable: give this one a new "
                                    "version number"))
        elif same_start is not ruleset:
            problems.append(Problem(ruleset.path, 1, None, f"{where} version {ruleset.version} takes effect on "
                                    f"{ruleset.spec.effective_from}, as version {same_start.version} does "
                                    f"({same_start.path}); one version is in force on a day"))
        elif first is not ruleset and (first.kind is not ruleset.kind or first.spec.order != ruleset.spec.order):
            problems.append(Problem(ruleset.path, 1, None, f"{where} version {ruleset.version} must apply to the "
                                    f"same items in the same order as version {first.version} ({first.path}): "
                                    f"applies_to {first.kind.name}, order {first.spec.order}"))
    return problems
