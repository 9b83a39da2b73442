"""Run the tests written inside ruleset files (``tollgate rules test``).

Each test evaluates its ruleset alone, on one item, with the reference records given in the test
(merged over the ruleset's ``test_defaults``), and compares outcome, reason codes and enriched
values. A test's ``batch`` lists the other items decided in the same batch, for batch aggregates.
A rule counts as covered when some test makes it fire and some test evaluates it without firing:
both sides of every rule are proven.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from tollgate.evaluators.binding import FixedBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import Row
from tollgate.rules import yaml_source
from tollgate.rules.decisions import Decision
from tollgate.rules.entities import Entity
from tollgate.rules.fields import FieldKind, FieldSpec, FieldValueError, format_value
from tollgate.rules.item_kinds import ItemKind
from tollgate.rules.model import RulesetTest
from tollgate.rules.problems import Problem
from tollgate.rules.typecheck import LOOKUP_PRECEDENCE, CompiledRuleset

TEST_SNAPSHOT = "ruleset-test"


@dataclass(slots=True)
class RulesetTestReport:
    ruleset: CompiledRuleset
    passed: list[str] = field(default_factory=list)
    failures: list[Problem] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)
    quiet: set[str] = field(default_factory=set)  # rules evaluated in some test without firing

    @property
    def uncovered(self) -> list[Problem]:
        problems = []
        for index, rule in enumerate(self.ruleset.rules):
            missing = [side for side, seen in (("fires", self.fired), ("does not fire", self.quiet))
                       if rule.id not in seen]
            if missing:
                line = yaml_source.line_of(self.ruleset.document, ("rules", index))
                problems.append(Problem(self.ruleset.path, line, rule.id,
                                        f"no test in which the rule {' or '.join(missing)}"))
        return problems

    @property
    def ok(self) -> bool:
        return not self.failures and not self.uncovered


def _merge(default: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(default)
    merged.update(override)
    return merged


def _wire_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Test items go through the same decoding as items on the wire (lists as lists, like a repeated field)."""
    return {k: v if v is None or isinstance(v, (dict, list, tuple)) else format_value(v) for k, v in values.items()}


def _records(ruleset: CompiledRuleset, refs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Row | None]:
    """The records a test gives, by binding or lookup name, validated like rows of their tables."""
    kind = ruleset.kind
    sources: dict[str, tuple[Entity, tuple[FieldSpec, ...]]] = {b.name: (b.entity, b.extra) for b in kind.bindings}
    precedence = FieldSpec(LOOKUP_PRECEDENCE, FieldKind.DECIMAL, False, "")
    sources.update({lookup.name: (lookup.entity, (precedence,)) for lookup in ruleset.lookups})
    records: dict[str, Row | None] = {}
    for name, given in refs.items():
        if name not in sources:
            raise ValueError(f"refs.{name}: {kind.name} items have no binding or lookup {name!r} "
                             f"(known: {', '.join(sources)})")
        if given is None:
            records[name] = None
            continue
        entity, extra = sources[name]
        extra_names = {spec.name for spec in extra}
        row = entity.model.model_validate({k: v for k, v in given.items() if k not in extra_names})
        record = entity.native(row)
        for spec in extra:
            value = given.get(spec.name, 1 if spec is precedence else None)  # a lookup found by its first way
            record[spec.name] = spec.native(value)
        records[name] = record
    return records


def _compare(kind: ItemKind, test: RulesetTest, decision: Decision) -> list[str]:
    expect = test.expect
    mismatches = []
    if decision.outcome.value != expect.outcome:
        mismatches.append(f"outcome {decision.outcome.value}, expected {expect.outcome}")
    if decision.codes != expect.codes:
        mismatches.append(f"codes {decision.codes}, expected {expect.codes}")
    final = {e.field: e.new_value for e in decision.enrichments}
    for name, expected in expect.enriched.items():
        spec = kind.fields.get(name)
        if spec is None:
            mismatches.append(f"enriched.{name}: not a {kind.name} field")
            continue
        if name not in final:
            mismatches.append(f"{name} was not enriched, expected {format_value(expected)}")
            continue
        try:
            want = None if expected is None else spec.parse(format_value(expected))
            got = spec.parse(final[name] or "")
        except FieldValueError as error:
            mismatches.append(f"enriched.{name}: {error}")
            continue
        if want != got:
            mismatches.append(f"{name} enriched to {final[name]}, expected {format_value(expected)}")
    if mismatches:
        mismatches.extend(f"  reason {r.rule_id} {r.code}: {r.message}" for r in decision.reasons)
    return mismatches


def run_ruleset_tests(ruleset: CompiledRuleset, engine_version: str) -> RulesetTestReport:
    report = RulesetTestReport(ruleset)
    kind = ruleset.kind
    defaults = ruleset.spec.test_defaults
    for index, test in enumerate(ruleset.spec.tests):
        line = yaml_source.line_of(ruleset.document, ("tests", index))
        item = _wire_item(_merge(defaults.item, test.item))
        refs = _merge(defaults.refs, {
            name: None if given is None else _merge(defaults.refs.get(name) or {}, given)
            for name, given in test.refs.items()
        })
        try:
            binder = FixedBinder(_records(ruleset, refs))
        except (ValueError, pydantic.ValidationError) as error:
            report.failures.append(Problem(ruleset.path, line, test.name, f"bad refs: {error}"))
            continue
        evaluator = Evaluator(kind, [ruleset], binder, TEST_SNAPSHOT, engine_version)
        # The test's item first, then the other items of its batch (merged over the defaults like it).
        batch = [item, *(_wire_item(_merge(defaults.item, other)) for other in test.batch)]
        decoded = [evaluator.decoder.decode(values, position) for position, values in enumerate(batch, start=1)]
        state = evaluator.run_batch(decoded, explain=True)[0]
        decision = evaluator.decision(decoded[0], state)
        fired = state.fired if state is not None else []
        report.fired.update(fired)
        report.quiet |= {r.id for r in ruleset.rules} - set(fired)
        mismatches = _compare(kind, test, decision)
        if mismatches:
            report.failures.append(Problem(ruleset.path, line, test.name, "\n    ".join(mismatches)))
        else:
            report.passed.append(test.name)
    return report
