"""What Tollgate is compared with, all over the same pre-bound scopes, plus the check that they agree.

- ``prebind``: the scope dicts the evaluator builds for each item (item values + reference records),
  obtained by running the real ``Evaluator`` once with the real ``SnapshotBinder`` wrapped in a
  recorder, so the records are exactly the ones the engine bound, in the engine's order (the rate
  row is looked up with the labor category the labor-category ruleset derived).
- ``PreboundBinder``: a ``Binder`` that hands the engine those recorded records, so the real
  ``Evaluator.decide`` can run on pre-bound items ("tollgate-rules-only").
- ``NaiveRuleEngine``: the naive way; every rule of the shipped rulesets in order, per item,
  ``rule_engine.Rule(when, context).matches(scope)`` (Rule objects parsed once), honouring
  ``requires``, skipping rules that read a missing required record (as the engine does), and
  evaluating ``set`` expressions with ``Rule.evaluate`` so later rules see the enriched values.
- ``CompiledChecks``: Tollgate's compiled rulesets alone, the generated functions the evaluator runs
  (one per ruleset, or per chain of rulesets) over the same pre-bound scopes, without the engine
  (states, binding) around them: what the compiler is compared with the other rows by.
- ``ZenChecks``: the same checks as one GoRules JDM decision (``time_entry_checks.jdm.json``),
  evaluated with ``ZenEngine.evaluate_batch``.
- ``digest_*``: reduce any of their outputs, or a Tollgate ``Decision``, to (outcome, ids of the
  rules that fired as reasons, fields whose final value changed), to assert they did the same work.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import rule_engine

from benchmarks.handwritten import rate_source_of
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.evaluators.items import DecodedItem, ItemDecoder
from tollgate.refdata.snapshot import ReferenceSnapshot
from tollgate.rules.codegen.expressions import CompiledExpression
from tollgate.rules.codegen.rulesets import RulesetFunction
from tollgate.rules.decisions import Decision, Outcome
from tollgate.rules.fields import FieldKind, format_value
from tollgate.rules.item_kinds import Binding, ItemKind
from tollgate.rules.problems import Problem
from tollgate.rules.typecheck import BATCH_SYMBOL, PARAMS_SYMBOL, CompiledLookup, CompiledRuleset, rules_decimal_context

JDM_PATH = Path(__file__).with_name("time_entry_checks.jdm.json")
_NO_FIGURES: Mapping[str, Any] = {}
CENT = Decimal("0.01")

Scope = dict[str, Any]
Digest = tuple[str, tuple[str, ...], tuple[tuple[str, str | None], ...]]


# ---------------------------------------------------------------------------------------------------
# Pre-binding through the engine's own binder


class RecordingBinder:
    """Wraps a real binder and records what it bound, per item id and binding name."""

    def __init__(self, inner: SnapshotBinder, id_field: str) -> None:
        self.inner = inner
        self.id_field = id_field
        self.records: dict[str, dict[str, Any]] = {}

    def bind(self, binding: Binding, scope: Scope) -> Any:
        record = self.inner.bind(binding, scope)
        self.records.setdefault(scope[self.id_field], {})[binding.name] = record
        return record

    def lookup(self, lookup: CompiledLookup, scope: Scope) -> Any:
        record = self.inner.lookup(lookup, scope)
        self.records.setdefault(scope[self.id_field], {})[lookup.name] = record
        return record

    def lookup_problems(self, rulesets: Sequence[CompiledRuleset]) -> list[Problem]:
        return self.inner.lookup_problems(rulesets)

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        return self.inner.describe_missing(binding, scope)


class PreboundBinder:
    """Hands out the records recorded for each item (a dict lookup); messages from the real binder."""

    def __init__(self, records: Mapping[str, Mapping[str, Any]], inner: SnapshotBinder, id_field: str) -> None:
        self.records = records
        self.inner = inner
        self.id_field = id_field

    def bind(self, binding: Binding, scope: Scope) -> Any:
        return self.records[scope[self.id_field]].get(binding.name)

    def lookup(self, lookup: CompiledLookup, scope: Scope) -> Any:
        return self.records[scope[self.id_field]].get(lookup.name)

    def lookup_problems(self, rulesets: Sequence[CompiledRuleset]) -> list[Problem]:
        return []  # the real binder checked the data when the records were recorded

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        return self.inner.describe_missing(binding, scope)


@dataclass(slots=True)
class Prebound:
    """Well-formed items, decoded, with the records the engine bound to each (malformed items are left out:
    the engine rejects them before any rule runs)."""

    items: list[DecodedItem]
    scopes: list[Scope]  # item values + every binding, as the engine's scope holds them (without params)
    records: dict[str, dict[str, Any]]
    binder: PreboundBinder
    decisions: list[Decision]  # the engine's decision for every entry (well-formed or not), in order


def prebind(
    kind: ItemKind,
    rulesets: Sequence[CompiledRuleset],
    snapshot: ReferenceSnapshot,
    entries: Sequence[Mapping[str, Any]],
) -> Prebound:
    snapshot_binder = SnapshotBinder(kind, snapshot)
    recorder = RecordingBinder(snapshot_binder, kind.id_field)
    decisions = Evaluator(kind, rulesets, recorder, snapshot.snapshot_id, ENGINE_VERSION).evaluate(entries)
    if entries and not recorder.records:
        raise RuntimeError(
            "the Evaluator no longer calls Binder.bind(binding, scope); benchmarks/comparators.py:prebind "
            "needs another way to obtain the scopes the engine builds"
        )
    decoder = ItemDecoder(kind)
    items, scopes = [], []
    names = [b.name for b in kind.bindings] + [lookup.name for r in rulesets for lookup in r.lookups]
    for position, raw in enumerate(entries, start=1):
        item = decoder.decode(raw, position)
        if item.problems:
            continue
        bound = recorder.records.get(item.item_id, {})
        items.append(item)
        scopes.append({**item.values, **{name: bound.get(name) for name in names}})
    binder = PreboundBinder(recorder.records, snapshot_binder, kind.id_field)
    return Prebound(items, scopes, recorder.records, binder, decisions)


# ---------------------------------------------------------------------------------------------------
# Digests: the substance of a decision, comparable across engines


@dataclass(frozen=True, slots=True)
class RuleFacts:
    rejects: frozenset[str]
    enriches: frozenset[str]  # a rejected decision drops the reasons of the enrich rules that acted
    numeric: frozenset[str]  # item fields holding decimals
    required: tuple[str, ...]  # bindings whose absence rejects the item


def rule_facts(kind: ItemKind, rulesets: Sequence[CompiledRuleset]) -> RuleFacts:
    rules = [rule for ruleset in rulesets for rule in ruleset.rules]
    return RuleFacts(
        rejects=frozenset(rule.id for rule in rules if rule.rejects),
        enriches=frozenset(rule.id for rule in rules if rule.assignments),
        numeric=frozenset(n for n, s in kind.fields.items() if s.kind in (FieldKind.DECIMAL, FieldKind.MONEY)),
        required=tuple(b.name for b in kind.bindings if b.required),
    )


def _norm(facts: RuleFacts, field: str, value: Any) -> str | None:
    if value is None:
        return None
    if field in facts.numeric:
        return str(Decimal(str(value)).quantize(CENT))
    return format_value(value)


def digest_decision(facts: RuleFacts, decision: Decision) -> Digest:
    """A Tollgate decision as (outcome, rule ids of its reasons, fields whose value changed)."""
    ids = tuple(r.rule_id for r in decision.reasons if not r.rule_id.startswith("refdata:"))
    first_old: dict[str, str | None] = {}
    last_new: dict[str, str | None] = {}
    for enrichment in decision.enrichments:
        first_old.setdefault(enrichment.field, enrichment.old_value)
        last_new[enrichment.field] = enrichment.new_value
    changed = tuple(sorted(
        (f, _norm(facts, f, v)) for f, v in last_new.items()
        if _norm(facts, f, v) != _norm(facts, f, first_old[f])
    ))
    return str(decision.outcome), ids, changed


def digest_outcome(
    facts: RuleFacts, scope: Mapping[str, Any], fired: Sequence[str], changes: Mapping[str, Any]
) -> Digest:
    """What a comparator found (rules fired, final values set) as a decision digest."""
    rejected = any(scope.get(name) is None for name in facts.required) or any(r in facts.rejects for r in fired)
    if rejected:
        return str(Outcome.REJECT), tuple(r for r in fired if r not in facts.enriches), ()
    changed = tuple(sorted(
        (f, _norm(facts, f, v)) for f, v in changes.items() if _norm(facts, f, v) != _norm(facts, f, scope[f])
    ))
    return str(Outcome.ENRICH if changed else Outcome.ACCEPT), tuple(fired), changed


# ---------------------------------------------------------------------------------------------------
# The naive way: rule-engine's own Rule.matches, rule by rule


@dataclass(frozen=True, slots=True)
class _NaiveRule:
    id: str
    when: rule_engine.Rule | CompiledExpression
    requires: tuple[tuple[str, ...], ...]
    sets: tuple[tuple[str, rule_engine.Rule | CompiledExpression, bool], ...]  # field, expression, is money
    reads_required: frozenset[str]  # required bindings the rule reads (skipped when one is missing)


class NaiveRuleEngine:
    """Every rule in order per item with ``Rule.matches``; Rule objects are parsed once, here.

    ``compiled``: each expression's ``CompiledExpression`` (rules/codegen/expressions.py) in place of its ``Rule``, the
    same loop: how the engine runs the rules of an item that lacks a required record.
    """

    def __init__(self, kind: ItemKind, rulesets: Sequence[CompiledRuleset], *, compiled: bool = False) -> None:
        required = frozenset(b.name for b in kind.bindings if b.required)
        self.required = tuple(sorted(required))
        self.plan: list[tuple[CompiledRuleset, list[_NaiveRule]]] = []
        for ruleset in rulesets:
            rules = []
            for rule in ruleset.rules:
                context = rule.condition.context
                sets = tuple(
                    (spec.name, expression if compiled else rule_engine.Rule(expression.text, context=context),
                     spec.kind is FieldKind.MONEY)
                    for spec, expression in rule.assignments
                )
                when = rule.condition if compiled else rule_engine.Rule(rule.spec.when, context=context)
                rules.append(_NaiveRule(rule.id, when, rule.requires, sets, rule.symbols & required))
            self.plan.append((ruleset, rules))

    def run(self, prebound_scope: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """(ids of the rules that fired, final value of each field set) for one item."""
        scope = dict(prebound_scope)
        missing = {name for name in self.required if scope[name] is None}
        fired: list[str] = []
        changes: dict[str, Any] = {}
        for ruleset, rules in self.plan:
            scope[PARAMS_SYMBOL] = ruleset.params
            for rule in rules:
                if missing and rule.reads_required & missing:
                    continue
                if any(scope[p[0]] is None or (len(p) == 2 and scope[p[0]][p[1]] is None) for p in rule.requires):
                    continue
                if not rule.when.matches(scope):
                    continue
                if rule.sets:
                    new = []
                    for name, expression, money in rule.sets:
                        value = expression.evaluate(scope)
                        if money and value is not None:
                            value = ruleset.round_money(value)
                        old = scope[name]
                        if old != value or type(old) is not type(value):
                            new.append((name, value))
                    if not new:
                        continue
                    for name, value in new:
                        scope[name] = value
                        changes[name] = value
                fired.append(rule.id)
        return fired, changes


class _ChecksState:
    """What a fused ruleset function writes into, with explanations off (rules/codegen/rulesets.py): which rules fired
    and whether one rejected. Nothing appends reasons or enrichments then, so those are shared empty tuples."""

    __slots__ = ("fired", "rejected")
    explain = False
    reasons: tuple[Any, ...] = ()
    enrichments: tuple[Any, ...] = ()
    enrichment_reasons: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.rejected = False
        self.fired: list[str] = []


class CompiledChecks:
    """The compiled rulesets alone: the generated functions the evaluator runs (one per ruleset, or one per chain
    of rulesets: ``Evaluator.chains``), in order, over the same pre-bound scopes as the rows it is compared with,
    no engine around them. The records are the ones the engine bound after every enrichment, so nothing is looked
    up again. An item lacking a required record runs rule by rule on compiled expressions instead, as the engine
    runs it."""

    def __init__(self, evaluator: Evaluator) -> None:
        kind, rulesets = evaluator.kind, evaluator.rulesets
        self.required = tuple(sorted(b.name for b in kind.bindings if b.required))
        self.functions: list[RulesetFunction] = []
        stage = 0
        while stage < len(evaluator.stages):
            chain = evaluator.chains.get(stage)
            (version, *others) = evaluator.stages[stage]
            function = chain.run if chain is not None else version.ruleset.run
            if function is None or others:
                raise RuntimeError("a time-entry ruleset is not fused: the compiled row would not be the compiled code")
            self.functions.append(function)
            stage += len(chain.versions) if chain is not None else 1
        self.rule_by_rule = NaiveRuleEngine(kind, rulesets, compiled=True)
        self.errors: list[tuple[str, str, Exception]] = []

    def prepare(self, prebound_scopes: Sequence[Mapping[str, Any]]) -> list[tuple[Scope, bool]]:
        """What the engine's binding hands the rules of each item: a scope of the item's own, which they write
        their enrichments into, and whether a required record is missing (the engine's ``state.unbound``).
        Not timed: the rows this one is compared with get their scopes ready-made too."""
        return [({**scope, BATCH_SYMBOL: _NO_FIGURES}, None in map(scope.__getitem__, self.required))
                for scope in prebound_scopes]

    def run_batch(self, prepared: Sequence[tuple[Scope, bool]]) -> list[tuple[list[str], Scope]]:
        """(ids of the rules that fired, the item's scope as they leave it) per item, with the rules' decimal
        context made current once for the batch, as the engine makes it."""
        with rules_decimal_context():
            return [self._run(scope, missing) for scope, missing in prepared]

    def _run(self, scope: Scope, missing_record: bool) -> tuple[list[str], Scope]:
        if missing_record:
            fired, changes = self.rule_by_rule.run(scope)
            scope.update(changes)
            return fired, scope
        state = _ChecksState()
        for function in self.functions:
            function(scope, state, self)  # params are compiled in
        return state.fired, scope

    def fail(self, state: Any, ruleset_id: str, rule_id: str, field: str | None, error: Exception) -> None:
        self.errors.append((ruleset_id, rule_id, error))  # the agreement check fails on any

    def refresh(self, state: Any, fields: tuple[str, ...]) -> bool:
        return False  # the pre-bound records are already the ones found after every enrichment


# ---------------------------------------------------------------------------------------------------
# GoRules zen-engine


# rule id -> key of its boolean in the JDM's output
ZEN_RULES: tuple[tuple[str, str], ...] = (
    ("PS-1", "PS_1"), ("PS-2", "PS_2"), ("PS-2.task", "PS_2_task"), ("PS-3", "PS_3"), ("PS-3.task", "PS_3_task"),
    ("PS-3.assignment", "PS_3_assignment"), ("PS-4", "PS_4"), ("PS-5", "PS_5"),
    ("LC-1", "LC_1"), ("LC-2", "LC_2"), ("LC-2.missing", "LC_2_missing"), ("LC-3", "LC_3"), ("LC-5", "LC_5"),
    ("LC-6", "LC_6"),
    ("BE-8", "BE_8"), ("BE-1", "BE_1"), ("BE-2", "BE_2"), ("BE-2.billable", "BE_2_billable"), ("BE-3", "BE_3"),
    ("BE-3.billable", "BE_3_billable"), ("BE-4", "BE_4"),
    ("BE-4.dates", "BE_4_dates"), ("BE-6", "BE_6"), ("BE-7", "BE_7"),
    ("BE-7.range", "BE_7_range"), ("BE-5", "BE_5"),
    ("RC-2", "RC_2"), ("RC-8", "RC_8"), ("RC-1", "RC_1"), ("RC-5", "RC_5"), ("RC-6", "RC_6"), ("RC-7", "RC_7"),
    ("RC-4", "RC_4"), ("RC-4.missing", "RC_4_missing"),
)
# enriched field -> key of its final value in the JDM's output
ZEN_VALUES = {
    "labor_category": "labor_category_1",
    "time_type": "time_type_1",
    "billable": "billable_3",
    "bill_rate": "bill_rate_4",
    "rate_source": "rate_source_1",
    "currency": "currency_1",
    "bill_status": "bill_status_2",
}


def zen_value(value: Any) -> Any:
    """A rule value as JSON-able zen input: dates as ISO strings, decimals as numbers."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, tuple):
        return [zen_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: zen_value(v) for k, v in value.items()}
    return value


def zen_context(scope: Mapping[str, Any]) -> dict[str, Any]:
    context = {k: zen_value(v) for k, v in scope.items() if k != PARAMS_SYMBOL}
    if scope.get("rate") is not None:
        # The JDM reads where the rate was found as rate.source; the rate cards compute it from the row.
        context["rate"]["source"] = rate_source_of(scope["rate"])
    return context


def zen_outcome(result: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    fired = [rule_id for rule_id, key in ZEN_RULES if result[key]]
    return fired, {name: result.get(key) for name, key in ZEN_VALUES.items()}


class ZenChecks:
    """The JDM decision, loaded once into a ZenEngine (static loader), evaluated in batches."""

    KEY = "time-entry-checks"

    def __init__(self, path: Path = JDM_PATH) -> None:
        import zen

        self.content = json.loads(path.read_text(encoding="utf-8"))
        self.engine = zen.ZenEngine({"loader": {"type": "static", "content": {self.KEY: self.content}}})

    def requests(self, contexts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{"key": self.KEY, "context": context} for context in contexts]

    def run(self, requests: list[dict[str, Any]]) -> list[Any]:
        return self.engine.evaluate_batch(requests)

    @staticmethod
    def result(response: Mapping[str, Any]) -> Mapping[str, Any]:
        if not response.get("success"):
            raise RuntimeError(f"zen-engine failed: {response.get('error')}")
        return response["data"]["result"]
