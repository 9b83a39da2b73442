"""``tollgate rules lint``: load rulesets as the service would, and point out what deserves a look.

Errors (a refused load) come from the loader with file, line and rule id. Warnings do not block a
load: rules that have no tests, and expressions the compiler hands to rule-engine's interpreter
(correct, but slower).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tollgate.rules import yaml_source
from tollgate.rules.codegen.expressions import CompiledExpression
from tollgate.rules.loader import load_rulesets
from tollgate.rules.problems import Problem
from tollgate.rules.typecheck import CompiledRule, CompiledRuleset


@dataclass(slots=True)
class LintReport:
    rulesets: int = 0
    rules: int = 0
    warnings: list[Problem] = field(default_factory=list)


def _expressions(rule: CompiledRule) -> list[tuple[str, CompiledExpression]]:
    found = [("when", rule.condition)]
    found += [(f"set.{spec.name}", expression) for spec, expression in rule.assignments]
    found += [("message", part) for part in rule.message.parts if not isinstance(part, str)]
    return found


def _warnings(ruleset: CompiledRuleset) -> list[Problem]:
    warnings = []
    if not ruleset.spec.tests:
        warnings.append(Problem(ruleset.path, 1, None, "the ruleset has no tests", "warning"))
    for index, rule in enumerate(ruleset.rules):
        for where, expression in _expressions(rule):
            if not expression.is_compiled:
                line = yaml_source.line_of(ruleset.document, ("rules", index, where.split(".")[0]))
                warnings.append(Problem(
                    ruleset.path, line, rule.id,
                    f"{where}: `{expression.text}` runs in rule-engine's interpreter ({expression.fallback_reason})",
                    "warning",
                ))
    return warnings


def lint(directory: Path) -> LintReport:
    """Raise ProblemsError if the rulesets would be refused; otherwise report counts and warnings."""
    bundle = load_rulesets(directory)
    report = LintReport()
    for ruleset in bundle.all:
        report.rulesets += 1
        report.rules += len(ruleset.rules)
        report.warnings.extend(_warnings(ruleset))
    return report
