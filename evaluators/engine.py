"""Decide a batch of items against compiled rulesets and reference data.

For each item, in ruleset order: bind the reference records the ruleset reads (as of the item's
business date, from the item as enriched so far), then run its rules in order. An enrich rule's new
values are visible to every later rule. Nothing passes silently: a malformed item, a missing
required reference record or an error inside a rule rejects the item with a reason saying which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, cast

from evaluators.binding import Binder, Scope
from evaluators.items import DecodedItem, ItemDecoder
from rules.compile import PARAMS_SYMBOL, CompiledRule, CompiledRuleset
from rules.decisions import Decision, Enrichment, Outcome, Provenance, Reason, RulesetRef
from rules.fusion import RESUME
from rules.model import Severity
from rules.schema import Binding, FieldKind, FieldSpec, ItemKind, format_value

REFDATA_MISSING = "REFERENCE_DATA_MISSING"
RULE_ERROR = "RULE_EVALUATION_ERROR"


def _wire(value: Any) -> str | None:
    return None if value is None else format_value(value)


# The python type a computed value must have to be written into a field of this kind (expressions
# typed UNDEFINED at load are only checked here, at run time).
_PYTHON_TYPES: dict[FieldKind, type] = {
    FieldKind.STRING: str,
    FieldKind.DECIMAL: Decimal,
    FieldKind.MONEY: Decimal,
    FieldKind.BOOLEAN: bool,
}


@dataclass(frozen=True, slots=True)
class _Assignment:
    """One ``set`` entry of an enrich rule, with what its checks need worked out once."""

    spec: FieldSpec
    evaluate: Callable[[Any], Any]
    python_type: type
    money: bool


@dataclass(frozen=True, slots=True)
class _RulePlan:
    """What deciding with one rule needs, worked out once per evaluator rather than per item."""

    rule: CompiledRule
    ruleset_id: str
    rule_id: str
    code: str
    severity: Severity
    field: str | None
    rejects: bool
    render: Callable[[Any], str]
    assignments: tuple[_Assignment, ...]
    round_money: Callable[[Decimal], Decimal]
    refresh: tuple[Binding, ...]  # bindings to look up again after this rule changes the item

    @classmethod
    def of(cls, ruleset: CompiledRuleset, rule: CompiledRule, refreshes: Mapping[str, tuple[Binding, ...]],
           bindings: Sequence[Binding]) -> _RulePlan:
        stale = {b.name for spec, _expression in rule.assignments for b in refreshes[spec.name]}
        return cls(
            rule=rule,
            ruleset_id=ruleset.id,
            rule_id=rule.id,
            code=rule.spec.code,
            severity=rule.severity,
            field=rule.spec.field,
            rejects=rule.rejects,
            render=rule.message.render,
            assignments=tuple(
                _Assignment(spec, expression.evaluate, _PYTHON_TYPES.get(spec.kind, object),
                            money=spec.kind is FieldKind.MONEY)
                for spec, expression in rule.assignments
            ),
            round_money=ruleset.round_money,
            refresh=tuple(b for b in bindings if b.name in stale),
        )


@dataclass(slots=True)
class _ItemState:
    scope: Scope
    reasons: list[Reason] = field(default_factory=list)
    enrichment_reasons: set[int] = field(default_factory=set)  # indexes into reasons, dropped on reject
    enrichments: list[Enrichment] = field(default_factory=list)
    rejected: bool = False
    unbound: set[str] = field(default_factory=set)  # required bindings that could not be found
    fired: list[str] = field(default_factory=list)  # rule ids, in order: what ruleset tests measure coverage by


class Evaluator:
    """Evaluates batches of one item kind; build one per (rulesets, reference snapshot)."""

    def __init__(
        self,
        kind: ItemKind,
        rulesets: Sequence[CompiledRuleset],
        binder: Binder,
        snapshot_id: str,
        engine_version: str,
    ) -> None:
        self.kind = kind
        self.rulesets = tuple(rulesets)
        self.binder = binder
        self.decoder = ItemDecoder(kind)
        self.bindings = {b.name: b for b in kind.bindings}
        refreshes = self._refresh_plan(kind)
        self.stages = tuple(
            (ruleset, tuple(self.bindings[name] for name in ruleset.bindings),
             tuple(_RulePlan.of(ruleset, rule, refreshes, kind.bindings) for rule in ruleset.rules))
            for ruleset in self.rulesets
        )
        self.provenance = Provenance(
            rulesets=tuple(RulesetRef(r.id, r.version) for r in self.rulesets),
            snapshot_id=snapshot_id,
            engine_version=engine_version,
        )

    def evaluate(self, items: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """One decision per item given as a mapping of wire values, in order."""
        decode = self.decoder.from_mapping
        return [self.decide(decode(raw, position)) for position, raw in enumerate(items, start=1)]

    def evaluate_messages(self, messages: Sequence[Any]) -> list[Decision]:
        """One decision per item given as a protobuf message, in order (fields read directly)."""
        decode = self.decoder.from_message
        return [self.decide(decode(message, position)) for position, message in enumerate(messages, start=1)]

    def decide(self, item: DecodedItem, fired: list[str] | None = None) -> Decision:
        """Decide one item; ``fired``, if given, receives the ids of the rules that acted, in order."""
        if item.problems:
            return Decision(item.item_id, Outcome.REJECT, tuple(item.problems))
        state = _ItemState(scope=dict(item.values))
        scope = state.scope
        act, fail = partial(self._act_at, state), partial(self._fail_at, state)
        for ruleset, bindings, plans in self.stages:
            for binding in bindings:
                if binding.name not in scope:
                    self._resolve(binding, state)
            scope[PARAMS_SYMBOL] = ruleset.params
            resume_at: int | None = 0
            if ruleset.run is not None and not state.unbound:
                resume_at = ruleset.run(scope, partial(act, plans), partial(fail, plans))
            if resume_at is None:
                continue
            # Interpreted, rule by rule: skip the rules that read a reference that could not be found.
            for plan in plans[resume_at:]:
                if not (plan.rule.symbols & state.unbound):
                    self._apply(plan, state)
        if fired is not None:
            fired.extend(state.fired)
        if state.rejected:
            # A rejected item is not enriched, so what enrich rules said about it does not apply.
            reasons = tuple(r for i, r in enumerate(state.reasons) if i not in state.enrichment_reasons)
            return Decision(item.item_id, Outcome.REJECT, reasons)
        outcome = Outcome.ENRICH if state.enrichments else Outcome.ACCEPT
        return Decision(item.item_id, outcome, tuple(state.reasons), tuple(state.enrichments))

    def _resolve(self, binding: Binding, state: _ItemState) -> None:
        """Look up one binding from the item as it is now; a missing required record rejects the item."""
        scope = state.scope
        record = self.binder.bind(binding, scope)
        scope[binding.name] = record
        if record is not None or not binding.required:
            state.unbound.discard(binding.name)
            return
        if binding.name not in state.unbound:
            state.unbound.add(binding.name)
            state.rejected = True
            state.reasons.append(
                Reason(f"refdata:{binding.name}", REFDATA_MISSING, self.binder.describe_missing(binding, scope),
                       Severity.ERROR, binding.found_by[-1] if binding.found_by else None)
            )

    @staticmethod
    def _refresh_plan(kind: ItemKind) -> dict[str, tuple[Binding, ...]]:
        """For each item field, the bindings to look up again when it changes: those found by it, and
        those depending on them, in declaration order (dependencies first)."""
        plan = {}
        for name in kind.fields:
            stale: set[str] = set()
            for binding in kind.bindings:
                if name in binding.inputs or stale.intersection(binding.depends_on):
                    stale.add(binding.name)
            plan[name] = tuple(b for b in kind.bindings if b.name in stale)
        return plan

    def _apply(self, plan: _RulePlan, state: _ItemState) -> None:
        """One rule, interpreted: its requires, its condition, and its action if it matches."""
        scope = state.scope
        for path in plan.rule.requires:
            value = scope[path[0]]
            if value is None or (len(path) == 2 and value[path[1]] is None):
                return
        try:
            matched = plan.rule.condition.evaluate(scope)
        except Exception as error:
            self._fail(plan, state, error)
            return
        if matched:
            self._act(plan, state)

    def _act_at(self, state: _ItemState, plans: Sequence[_RulePlan], index: int) -> object:
        return self._act(plans[index], state)

    def _fail_at(self, state: _ItemState, plans: Sequence[_RulePlan], index: int, error: Exception) -> None:
        self._fail(plans[index], state, error)

    @staticmethod
    def _fail(plan: _RulePlan, state: _ItemState, error: Exception) -> None:
        state.rejected = True
        state.reasons.append(
            Reason(plan.rule_id, RULE_ERROR,
                   f"rule {plan.rule_id} could not be evaluated ({type(error).__name__}: {error}); "
                   "the item is rejected until the rule or the data is corrected",
                   Severity.ERROR, plan.field, plan.ruleset_id)
        )

    def _act(self, plan: _RulePlan, state: _ItemState) -> object:
        """Carry out a matched rule. Returns whether the item changed, or RESUME when, after the change,
        a required reference can no longer be found (the rest of the ruleset must then run interpreted)."""
        scope = state.scope
        try:
            changes = self._changes(plan, scope) if plan.assignments else None
            if changes == []:
                return False  # the item already has the values this rule would set
            # The message describes the item as the rule found it, before its changes.
            reason = Reason(plan.rule_id, plan.code, plan.render(scope), plan.severity, plan.field, plan.ruleset_id)
        except Exception as error:
            self._fail(plan, state, error)
            return False
        state.fired.append(plan.rule_id)
        if plan.rejects:
            state.rejected = True
        if not changes:
            state.reasons.append(reason)
            return False
        enrichments = state.enrichments
        for name, old, new in changes:
            scope[name] = new
            enrichments.append(Enrichment(name, _wire(old), _wire(new), plan.rule_id))
        state.enrichment_reasons.add(len(state.reasons))
        state.reasons.append(reason)
        for binding in plan.refresh:  # records found by what changed are looked up again
            if binding.name in scope:
                self._resolve(binding, state)
        return RESUME if state.unbound else True

    @staticmethod
    def _changes(plan: _RulePlan, scope: Scope) -> list[tuple[str, Any, Any]]:
        """(field, old, new) for each value the rule's ``set`` changes; all computed before any is written."""
        changes = []
        for assignment in plan.assignments:
            spec = assignment.spec
            value: Any = assignment.evaluate(scope)
            if value is None:
                if not spec.nullable:
                    raise TypeError(f"set {spec.name} produced null, but {spec.name} cannot be null")
            elif not isinstance(value, assignment.python_type):
                raise TypeError(f"set {spec.name} produced {format_value(value)!r}, which is not a {spec.kind.value}")
            elif assignment.money:
                value = plan.round_money(cast(Decimal, value))
            old = scope[spec.name]
            if old != value or type(old) is not type(value):
                changes.append((spec.name, old, value))
        return changes
