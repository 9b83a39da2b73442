"""Decide a batch of items against compiled rulesets and reference data.

For each item, in ruleset order: bind the reference records the ruleset reads (as of the item's
business date, from the item as enriched so far), then run its rules in order. An enrich rule's new
values are visible to every later rule. Nothing passes silently: a malformed item, a missing
required reference record or an error inside a rule rejects the item with a reason saying which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from evaluators.binding import Binder, Scope
from evaluators.items import DecodedItem, ItemDecoder
from rules.compile import PARAMS_SYMBOL, CompiledRule, CompiledRuleset, MessageTemplate
from rules.decisions import Decision, Enrichment, Outcome, Provenance, Reason, RulesetRef
from rules.model import Severity
from rules.schema import Binding, FieldKind, FieldSpec, ItemKind, format_value

REFDATA_MISSING = "REFERENCE_DATA_MISSING"
RULE_ERROR = "RULE_EVALUATION_ERROR"


def _wire(value: Any) -> str | None:
    return None if value is None else format_value(value)


def render(message: MessageTemplate, scope: Scope) -> str:
    return "".join(part if isinstance(part, str) else format_value(part.evaluate(scope)) for part in message.parts)


def _matches_kind(spec: FieldSpec, value: Any) -> bool:
    """A computed value fits its field (expressions typed UNDEFINED are only checked here, at run time)."""
    if value is None:
        return spec.nullable
    expected: dict[FieldKind, type | tuple[type, ...]] = {
        FieldKind.STRING: str,
        FieldKind.DECIMAL: Decimal,
        FieldKind.MONEY: Decimal,
        FieldKind.BOOLEAN: bool,
    }
    return isinstance(value, expected.get(spec.kind, object))


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
        self.provenance = Provenance(
            rulesets=tuple(RulesetRef(r.id, r.version) for r in self.rulesets),
            snapshot_id=snapshot_id,
            engine_version=engine_version,
        )

    def evaluate(self, items: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """One decision per item, in order."""
        decode = self.decoder.decode
        return [self.decide(decode(raw, position)) for position, raw in enumerate(items, start=1)]

    def decide(self, item: DecodedItem, fired: list[str] | None = None) -> Decision:
        """Decide one item; ``fired``, if given, receives the ids of the rules that acted, in order."""
        if item.problems:
            return Decision(item.item_id, Outcome.REJECT, tuple(item.problems))
        state = _ItemState(scope=dict(item.values))
        for ruleset in self.rulesets:
            for name in ruleset.bindings:
                if name not in state.scope:
                    self._resolve(self.bindings[name], state)
            state.scope[PARAMS_SYMBOL] = ruleset.params
            for rule in ruleset.rules:
                if not (rule.symbols & state.unbound):
                    self._apply(ruleset, rule, state)
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

    def _refresh(self, changed: set[str], state: _ItemState) -> None:
        """Look up again the bound records that the changed fields are found by, and those depending on them."""
        stale: set[str] = set()
        for binding in self.kind.bindings:  # declaration order: dependencies come first
            if binding.name in state.scope and (binding.inputs & changed or stale.intersection(binding.depends_on)):
                stale.add(binding.name)
                self._resolve(binding, state)

    def _apply(self, ruleset: CompiledRuleset, rule: CompiledRule, state: _ItemState) -> None:
        scope = state.scope
        for path in rule.requires:
            value = scope[path[0]]
            if value is None or (len(path) == 2 and value[path[1]] is None):
                return
        try:
            if not rule.condition.evaluate(scope):
                return
            changes = self._changes(ruleset, rule, scope) if rule.assignments else []
            if rule.assignments and not changes:
                return  # the item already has the values this rule would set
            # The message describes the item as the rule found it, before its changes.
            reason = Reason(rule.id, rule.spec.code, render(rule.message, scope), rule.severity,
                            rule.spec.field, ruleset.id)
        except Exception as error:
            state.rejected = True
            state.reasons.append(
                Reason(rule.id, RULE_ERROR,
                       f"rule {rule.id} could not be evaluated ({type(error).__name__}: {error}); "
                       "the item is rejected until the rule or the data is corrected",
                       Severity.ERROR, rule.spec.field, ruleset.id)
            )
            return
        state.fired.append(rule.id)
        if changes:
            for spec, old, new in changes:
                scope[spec.name] = new
                state.enrichments.append(Enrichment(spec.name, _wire(old), _wire(new), rule.id))
            state.enrichment_reasons.add(len(state.reasons))
            self._refresh({spec.name for spec, _old, _new in changes}, state)
        state.reasons.append(reason)
        if rule.rejects:
            state.rejected = True

    @staticmethod
    def _changes(ruleset: CompiledRuleset, rule: CompiledRule, scope: Scope) -> list[tuple[FieldSpec, Any, Any]]:
        """(field, old, new) for each value the rule's ``set`` changes; all computed before any is written."""
        changes = []
        for spec, expression in rule.assignments:
            value = expression.evaluate(scope)
            if not _matches_kind(spec, value):
                raise TypeError(f"set {spec.name} produced {format_value(value)!r}, which is not a {spec.kind.value}")
            if spec.kind is FieldKind.MONEY and value is not None:
                value = ruleset.round_money(value)
            old = scope[spec.name]
            if old != value or type(old) is not type(value):
                changes.append((spec, old, value))
        return changes
