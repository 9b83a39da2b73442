"""Decide a batch of items against compiled rulesets and reference data.

For each item, in ruleset order: bind the reference records the ruleset reads (as of the item's
business date, from the item as enriched so far), then run its rules in order. An enrich rule's new
values are visible to every later rule. Nothing passes silently: a malformed item, a missing
required reference record or an error inside a rule rejects the item with a reason saying which.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, cast

from tollgate.evaluators import collector
from tollgate.evaluators.accounts import Accounts
from tollgate.evaluators.batch import Failures, batch_figures
from tollgate.evaluators.binding import Binder, Scope
from tollgate.evaluators.items import SCHEMA_RULE, DecodedItem, ItemDecoder
from tollgate.rules.codegen.rulesets import PYTHON_TYPES, RulesetFunction, fuse, wire
from tollgate.rules.decisions import Decision, Enrichment, Outcome, Provenance, Reason, RulesetRef, new_record
from tollgate.rules.fields import FieldKind, FieldSpec, cut, date_value, format_message_value, format_value
from tollgate.rules.item_kinds import Binding, ItemKind
from tollgate.rules.model import Severity
from tollgate.rules.problems import ProblemsError
from tollgate.rules.typecheck import (
    BATCH_SYMBOL,
    DECIMAL_CONTEXT,
    PARAMS_SYMBOL,
    CompiledLookup,
    CompiledRule,
    CompiledRuleset,
    rules_decimal_context,
)

REFDATA_MISSING = "REFERENCE_DATA_MISSING"
_NO_FIGURES: Mapping[str, Any] = {}  # the batch of a ruleset without aggregates
RULE_ERROR = "RULE_EVALUATION_ERROR"
DUPLICATE_ITEM = "DUPLICATE_ITEM"
_NONE_MISSING: frozenset[str] = frozenset()
# Read once: on Python 3.11 reading a member through its enum class costs about 0.2 us, and a decision is made per item.
_ACCEPT, _ENRICH, _REJECT = Outcome.ACCEPT, Outcome.ENRICH, Outcome.REJECT
NO_RULESET_IN_FORCE = "NO_RULESET_IN_FORCE"


@dataclass(frozen=True, slots=True)
class _Assignment:
    """One ``set`` entry of an enrich rule, with what its checks need worked out once."""

    spec: FieldSpec
    evaluate: Callable[[Any], Any]
    python_type: type
    money: bool


@dataclass(frozen=True, slots=True)
class _RulePlan:
    """What running one rule on its own needs, worked out once per evaluator rather than per item."""

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

    @classmethod
    def of(cls, ruleset: CompiledRuleset, rule: CompiledRule) -> _RulePlan:
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
                _Assignment(spec, expression.evaluate, PYTHON_TYPES.get(spec.kind, object),
                            money=spec.kind is FieldKind.MONEY)
                for spec, expression in rule.assignments
            ),
            round_money=ruleset.round_money,
        )


class _ItemState:
    """An item's decision as the rules build it (see rules/codegen/rulesets.py for who writes what)."""

    __slots__ = ("enrichment_reasons", "enrichments", "explain", "fired", "lookups", "reasons", "rejected", "scope",
                 "unbound", "versions")

    def __init__(self, scope: Scope, explain: bool = True) -> None:
        # Written out, not a dataclass's default factories: one is made per item of every batch, and this costs
        # half as much.
        self.scope = scope
        self.explain = explain  # false: only which rules fire and the item's new values (impact analysis)
        self.reasons: list[Reason] = []
        self.enrichment_reasons: set[int] = set()  # indexes into reasons, dropped on reject
        self.enrichments: list[Enrichment] = []
        self.rejected = False
        # required bindings that could not be found: a new set when one is missing (rare), else the shared empty one
        self.unbound: frozenset[str] = _NONE_MISSING
        self.fired: list[str] = []  # rule ids, in order: what ruleset tests measure coverage by
        self.versions: list[RulesetRef] = []  # the ruleset versions that judged it (when a choice)
        # the running ruleset's lookups, looked up again when what they read changes
        self.lookups: tuple[CompiledLookup, ...] = ()


@dataclass(frozen=True, slots=True)
class _Version:
    """One version of a ruleset, with what running it needs worked out once."""

    ruleset: CompiledRuleset
    bindings: tuple[Binding, ...]
    plans: tuple[_RulePlan, ...]
    lookups: tuple[CompiledLookup, ...]
    effective_from: dt.datetime  # as rule values hold dates
    ref: RulesetRef


@dataclass(frozen=True, slots=True)
class _Chain:
    """Consecutive rulesets an item goes through in one generated function (codegen/rulesets.py), sharing what they
    read, where that decides exactly as running them one after another over the batch: each has one version and
    is fused, none looks anything up, none after the first has figures over the batch, and nothing the earlier
    ones change can change the records the later ones bind, so those are bound ahead, with the first's."""

    versions: tuple[_Version, ...]
    run: RulesetFunction
    starts: tuple[int, ...]  # where each ruleset's rules start in the function's count
    ahead: tuple[Binding, ...]  # the later rulesets' bindings, in declaration order
    effective_from: dt.datetime  # the latest of the versions': the chain runs when every item is past it

    def at(self, index: int) -> tuple[int, int]:
        """(ruleset, rule within it) of a rule index of the function."""
        stage = bisect.bisect_right(self.starts, index) - 1
        return stage, index - self.starts[stage]


class Evaluator:
    """Evaluates batches of one item kind; build one per (rulesets, reference snapshot).

    The rulesets run in order, each over the whole batch before the next (so that figures over the batch
    see the items as earlier rulesets left them: rated, retyped, rejected). Each item is judged by the
    version of each ruleset in force on its business date. Each version runs as its fused function
    (rules/codegen/rulesets.py); when an item lacks a required reference record, rule by rule instead, skipping the
    rules that read it. Consecutive rulesets that would decide the same taken together (see _Chain) run as
    one fused function per item, sharing what they read.
    """

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
        versions: dict[str, list[_Version]] = {}
        for ruleset in self.rulesets:
            versions.setdefault(ruleset.id, []).append(_Version(
                ruleset,
                tuple(self.bindings[name] for name in ruleset.bindings),
                tuple(_RulePlan.of(ruleset, rule) for rule in ruleset.rules),
                ruleset.lookups,
                date_value(ruleset.spec.effective_from),
                RulesetRef(ruleset.id, ruleset.version),
            ))
        self.stages = tuple(tuple(sorted(vs, key=lambda v: v.effective_from)) for vs in versions.values())
        # Decisions name the versions that judged them only when there is a choice; otherwise the
        # response's provenance (every ruleset, one version each) says it once for all.
        self.names_versions = any(len(stage) > 1 for stage in self.stages)
        # Whether a batch reads and adds to the ledger's accounts (an aggregate held across calls): known at load,
        # so a call of a kind that holds none reads nothing.
        self.holds_accounts = any(a.spec.account for ruleset in self.rulesets for a in ruleset.aggregates)
        self.refreshes = self._refresh_plan(kind)
        self.chains = self._chains()  # by the index of their first stage
        problems = binder.lookup_problems(self.rulesets)
        if problems:
            raise ProblemsError(problems)
        self.provenance = Provenance(
            rulesets=tuple(RulesetRef(r.id, r.version) for r in self.rulesets),
            snapshot_id=snapshot_id,
            engine_version=engine_version,
        )

    def for_snapshot(self, binder: Binder, snapshot_id: str) -> Evaluator:
        """This evaluator deciding against another reference snapshot, sharing everything else (rule plans,
        the generated item decoder): building one anew compiles the decoder, which holds the GIL for
        milliseconds in one go. The data is not checked against the lookups here: see Runtime.publish."""
        rebound = copy.copy(self)
        rebound.binder = binder
        rebound.provenance = replace(self.provenance, snapshot_id=snapshot_id)
        return rebound

    @collector.deciding_a_batch
    def evaluate(self, items: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """One decision per item given as a mapping of wire values, in order."""
        decode = self.decoder.from_mapping
        return self.decide_batch([decode(raw, position) for position, raw in enumerate(items, start=1)])

    @collector.deciding_a_batch
    def evaluate_messages(self, messages: Sequence[Any], headers: Sequence[Any] | None = None,
                          accounts: Accounts | None = None) -> list[Decision]:
        """One decision per item given as a protobuf message, in order (fields read directly).

        ``headers``: for an item kind with header fields (invoice lines), each item's header message.
        ``accounts``: the running totals held across calls (evaluators/accounts.py); None: this batch alone.
        """
        decode = self.decoder.from_message
        if headers is None:
            return self.decide_batch([decode(message, position)
                                      for position, message in enumerate(messages, start=1)], accounts=accounts)
        return self.decide_batch([decode(message, position, header) for position, (message, header)
                                  in enumerate(zip(messages, headers, strict=True), start=1)], headers, accounts)

    def _refuse_copies(self, items: Sequence[DecodedItem], groups: Sequence[object] | None) -> None:
        """Mark later copies of an item id, or of a group id sent as another group, as malformed."""
        id_field, group_field = self.kind.id_field, self.kind.group_field
        first_item: dict[str, int] = {}
        first_group: dict[Any, tuple[int, object]] = {}
        for position, item in enumerate(items, start=1):
            if groups is not None:
                group_id = item.values.get(group_field)
                group = groups[position - 1]
                first = first_group.setdefault(group_id, (position, group))
                if first[1] is not group and group_id is not None:
                    item.problems.append(Reason(
                        SCHEMA_RULE, DUPLICATE_ITEM,
                        f"{group_field} {format_message_value(group_id)} is sent twice in this request (again with "
                        f"item {position}; first with item {first[0]}); only the first is decided: send each once",
                        Severity.ERROR, group_field))
                    continue
            if not item.values.get(id_field):
                continue
            earlier = first_item.setdefault(item.item_id, position)
            if earlier != position:
                item.problems.append(Reason(
                    SCHEMA_RULE, DUPLICATE_ITEM,
                    f"{id_field} {cut(item.item_id)} is sent twice in this request (item {earlier} and item "
                    f"{position}); only the first is decided: send each item once", Severity.ERROR, id_field))

    @collector.deciding_a_batch
    def decide_batch(self, items: Sequence[DecodedItem], groups: Sequence[object] | None = None,
                     accounts: Accounts | None = None) -> list[Decision]:
        """Decide decoded items as one batch: batch aggregates see all of them.

        A later copy of an item id is rejected, naming the first, and takes no part in the batch (two copies
        that differ would be decided twice; two alike would be counted twice). ``groups``: for items sent
        inside a group message (an invoice's lines), each item's group: a group id sent as two groups has the
        later group's items rejected the same way."""
        self._refuse_copies(items, groups)
        states = self.run_batch(items, explain=True, accounts=accounts)
        return [self.decision(item, state) for item, state in zip(items, states, strict=True)]

    def decide(self, item: DecodedItem, fired: list[str] | None = None) -> Decision:
        """Decide one item as a batch of one; ``fired``, if given, receives the ids of the rules that acted."""
        state = self.run_batch([item], explain=True)[0]
        if fired is not None and state is not None:
            fired.extend(state.fired)
        return self.decision(item, state)

    def decision(self, item: DecodedItem, state: _ItemState | None) -> Decision:
        """The decision for an item from its state after ``run_batch`` (None: it was malformed)."""
        if state is None:
            return Decision(item.item_id, _REJECT, tuple(item.problems))
        versions = tuple(state.versions)
        if state.rejected:
            # A rejected item is not enriched, so what enrich rules said about it does not apply.
            reasons = tuple(r for i, r in enumerate(state.reasons) if i not in state.enrichment_reasons)
            return new_record(Decision, (item.item_id, _REJECT, reasons, (), None, versions))
        outcome = _ENRICH if state.enrichments else _ACCEPT
        return new_record(Decision, (item.item_id, outcome, tuple(state.reasons), tuple(state.enrichments), None,
                                     versions))

    def rules_fired(self, items: Sequence[DecodedItem]) -> list[tuple[list[str], Scope]]:
        """For each well-formed item of a batch, which rules act on it, in order, and the item as they leave
        it; no messages. What impact analysis needs (how many items each rule would touch), at the least cost.
        """
        states = self.run_batch(items, explain=False)
        assert all(state is not None for state in states), "rules_fired takes well-formed items"
        return [(state.fired, state.scope) for state in states if state is not None]

    @collector.deciding_a_batch
    def run_batch(self, items: Sequence[DecodedItem], *, explain: bool,
                  accounts: Accounts | None = None) -> list[_ItemState | None]:
        """Run every ruleset, in order, over the well-formed items of a batch; None for a malformed item."""
        states = [None if item.problems else _ItemState(dict(item.values), explain) for item in items]
        if accounts is not None:  # deciding an item again replaces what it consumed: its own share is left out
            accounts.own = frozenset(item.item_id for item in items if item.item_id)
        live = [state for state in states if state is not None]
        date_field = self.kind.date_field
        earliest = min((state.scope[date_field] for state in live), default=None)
        # The rules' decimal context, current for the whole batch: the generated ruleset functions compute
        # under it without switching (rules/codegen/rulesets.py, decimal_context), in whatever thread decides.
        with rules_decimal_context():
            stage = 0
            while stage < len(self.stages):
                chain = self.chains.get(stage)
                if chain is not None and (earliest is None or earliest >= chain.effective_from):
                    self._run_chain(chain, live, accounts)
                    stage += len(chain.versions)
                    continue
                versions = self.stages[stage]
                stage += 1
                if len(versions) == 1 and (earliest is None or earliest >= versions[0].effective_from):
                    self._run_version(versions[0], live, accounts)
                    continue
                judged: dict[int, list[_ItemState]] = {}
                for state in live:
                    index = self._version_in_force(versions, state)
                    if index is not None:
                        judged.setdefault(index, []).append(state)
                for index, group in judged.items():
                    self._run_version(versions[index], group, accounts)
        return states

    def _chains(self) -> dict[int, _Chain]:
        """The chains of consecutive stages (see _Chain), by the index of their first stage."""
        chains: dict[int, _Chain] = {}
        start = 0
        while start < len(self.stages):
            members = self._chain_from(start)
            if len(members) > 1:
                versions = tuple(self.stages[index][0] for index in members)
                run, _source = fuse([version.ruleset.segment() for version in versions],
                                    decimal_context=DECIMAL_CONTEXT)
                first_bound = {binding.name for binding in versions[0].bindings}
                ahead = {binding.name for version in versions[1:] for binding in version.bindings} - first_bound
                chains[start] = _Chain(
                    versions, run, tuple(itertools.accumulate((len(v.plans) for v in versions[:-1]), initial=0)),
                    tuple(binding for binding in self.kind.bindings if binding.name in ahead),
                    max(version.effective_from for version in versions))
            start += len(members)
        return chains

    def _chain_from(self, start: int) -> list[int]:
        """The stages a chain starting at ``start`` takes in: ``start`` alone when it cannot start one."""
        def chainable(versions: tuple[_Version, ...]) -> bool:
            return len(versions) == 1 and versions[0].ruleset.run is not None and not versions[0].lookups

        members = [start]
        if not chainable(self.stages[start]):
            return members
        bound = {binding.name for binding in self.stages[start][0].bindings}
        changeable: set[str] = set()  # the records something an earlier member sets could change
        for index in range(start + 1, len(self.stages)):
            earlier = self.stages[index - 1][0].ruleset
            for rule in earlier.rules:
                for spec, _expression in rule.assignments:
                    changeable.update(binding.name for binding in self.refreshes[(spec.name,)])
            versions = self.stages[index]
            if not chainable(versions) or versions[0].ruleset.aggregates:
                break
            new = {binding.name for binding in versions[0].bindings} - bound
            if new & changeable:
                break
            members.append(index)
            bound |= new
        return members

    def _run_chain(self, chain: _Chain, states: Sequence[_ItemState], accounts: Accounts | None) -> None:
        """Run a chain's rulesets over the items, through its one function where it can."""
        figures = self._prepare(chain.versions[0], states, accounts)
        # The later rulesets' records, bound ahead over the batch: nothing the earlier rules change can change them.
        # An item lacking one a later ruleset requires is not rejected here but where that ruleset starts.
        lacking = {state for _binding, state in self._bound(chain.ahead, states)}
        names_versions, last = self.names_versions, chain.versions[-1]
        for position, state in enumerate(states):
            scope = state.scope
            scope[BATCH_SYMBOL] = figures[position] if figures is not None else _NO_FIGURES
            if state in lacking:  # rejected where it would have been: ruleset by ruleset
                self._run_one_by_one(chain.versions, state)
                continue
            if names_versions:
                state.versions.extend(version.ref for version in chain.versions)
            resume_at = chain.run(scope, state, self) if not state.unbound else 0
            if resume_at is not None:  # a required record is missing: rule by rule from there
                stage, rule = chain.at(resume_at)
                for version in chain.versions[stage:]:
                    scope[PARAMS_SYMBOL] = version.ruleset.params
                    self._run_rules(version, state, rule)
                    rule = 0
            # left as running the rulesets one after another leaves it
            scope[PARAMS_SYMBOL], scope[BATCH_SYMBOL] = last.ruleset.params, _NO_FIGURES

    def _run_one_by_one(self, versions: Sequence[_Version], state: _ItemState) -> None:
        """An item through a chain's rulesets one after another, as ``_run_version`` takes a batch through each
        (every record bound already: a required one missing rejects the item when the ruleset needing it starts)."""
        scope = state.scope
        for position, version in enumerate(versions):
            if position:
                scope[PARAMS_SYMBOL], scope[BATCH_SYMBOL] = version.ruleset.params, _NO_FIGURES
                for binding in version.bindings:
                    if binding.required and scope[binding.name] is None:
                        self._missing(binding, state)
            if self.names_versions:
                state.versions.append(version.ref)
            self._run_rules(version, state)

    def _version_in_force(self, versions: Sequence[_Version], state: _ItemState) -> int | None:
        """The index of the version in force on the item's business date; none in force rejects the item."""
        day = state.scope[self.kind.date_field]
        for index in range(len(versions) - 1, -1, -1):
            if versions[index].effective_from <= day:
                return index
        first = versions[0]
        state.rejected = True
        state.reasons.append(Reason(
            f"ruleset:{first.ruleset.id}", NO_RULESET_IN_FORCE,
            f"no version of ruleset {first.ruleset.id} is in force on {format_value(day)}: the earliest, "
            f"{first.ruleset.version}, takes effect on {format_value(first.effective_from)}",
            Severity.ERROR, self.kind.date_field, first.ruleset.id))
        return None

    def _bind(self, bindings: Sequence[Binding], states: Sequence[_ItemState]) -> None:
        """Bind the records not bound yet; a required one not found rejects the item."""
        for binding, state in self._bound(bindings, states):
            self._missing(binding, state)

    def _bound(self, bindings: Sequence[Binding], states: Sequence[_ItemState]) -> Iterator[tuple[Binding, _ItemState]]:
        """Bind the records not bound yet, binding by binding over the batch (a binding may read earlier ones);
        yields each required record not found, with its item, as it goes."""
        bind = self.binder.bind
        for binding in bindings:
            name, required = binding.name, binding.required
            for state in states:
                scope = state.scope
                if name not in scope:
                    record = scope[name] = bind(binding, scope)
                    if record is None and required:
                        yield binding, state

    def _look_up_one(self, lookup: CompiledLookup, state: _ItemState) -> None:
        """Put what a lookup finds in the item's scope: nothing when it reads a required record the item lacks
        (the item is rejected for that already); an error in its expressions rejects the item, naming it."""
        scope = state.scope
        scope[lookup.name] = None
        if lookup.symbols & state.unbound:
            return
        try:
            scope[lookup.name] = self.binder.lookup(lookup, scope)
        except Exception as error:
            self.fail(state, lookup.ruleset_id, f"lookup:{lookup.name}", None, error)

    def _prepare(self, version: _Version, states: Sequence[_ItemState],
                 accounts: Accounts | None) -> list[dict[str, Any]] | None:
        """Bind and look up what the version reads, for every item, then work out its figures over the batch
        (None: it has none): the figures read the records, for every item, before any rule runs."""
        ruleset, lookups = version.ruleset, version.lookups
        params = ruleset.params
        for state in states:
            state.scope[PARAMS_SYMBOL] = params  # before the lookups and figures, which may read params
            state.lookups = lookups
        self._bind(version.bindings, states)
        for lookup in lookups:
            for state in states:
                self._look_up_one(lookup, state)
        if not ruleset.aggregates:
            return None
        failures: Failures = {}
        figures = batch_figures(self.kind, ruleset.aggregates, [state.scope for state in states],
                                [not state.rejected for state in states], failures, accounts=accounts,
                                lists=self.binder.lists)
        for position, (aggregate, error) in failures.items():
            state = states[position]
            if not state.rejected:  # one that lacks a record it needs is rejected for that already
                self.fail(state, ruleset.id, f"aggregate:{aggregate}", None, error)
        return figures

    def _run_version(self, version: _Version, states: Sequence[_ItemState], accounts: Accounts | None) -> None:
        """Bind and run one ruleset version on the items it judges."""
        figures = self._prepare(version, states, accounts)
        run, names_versions = version.ruleset.run, self.names_versions
        for index, state in enumerate(states):
            scope = state.scope
            scope[BATCH_SYMBOL] = figures[index] if figures is not None else _NO_FIGURES
            if names_versions:
                state.versions.append(version.ref)
            # the fused function called here rather than through _run_rules: this is the way most items go
            resume_at = run(scope, state, self) if run is not None and not state.unbound else 0
            if resume_at is not None:
                self._run_rules(version, state, resume_at)

    def _run_rules(self, version: _Version, state: _ItemState, start: int = 0) -> None:
        """The version's rules from ``start`` on, on one item: its fused function when every required record was
        found and it starts at the first rule, else rule by rule, leaving out the rules that read a missing one."""
        resume_at: int | None = start
        run = version.ruleset.run
        if run is not None and not start and not state.unbound:
            resume_at = run(state.scope, state, self)
            if resume_at is None:
                return
        for plan in version.plans[resume_at:]:
            if not (plan.rule.symbols & state.unbound):
                self._apply(plan, state)

    def _resolve(self, binding: Binding, state: _ItemState) -> None:
        """Look up one binding from the item as it is now; a missing required record rejects the item."""
        record = state.scope[binding.name] = self.binder.bind(binding, state.scope)
        if record is not None or not binding.required:
            state.unbound = state.unbound - {binding.name}
        else:
            self._missing(binding, state)

    def _missing(self, binding: Binding, state: _ItemState) -> None:
        if binding.name not in state.unbound:
            state.unbound = state.unbound | {binding.name}
            state.rejected = True
            state.reasons.append(
                Reason(f"refdata:{binding.name}", REFDATA_MISSING, self.binder.describe_missing(binding, state.scope),
                       Severity.ERROR, binding.found_by[-1] if binding.found_by else None)
            )

    @staticmethod
    def _refresh_plan(kind: ItemKind) -> dict[tuple[str, ...], tuple[Binding, ...]]:
        """For each item field, the bindings to look up again when it changes: those found by it, and
        those depending on them, in declaration order (dependencies first)."""
        plan: dict[tuple[str, ...], tuple[Binding, ...]] = {}
        for name in kind.fields:
            stale: set[str] = set()
            for binding in kind.bindings:
                if name in binding.inputs or stale.intersection(binding.depends_on):
                    stale.add(binding.name)
            plan[(name,)] = tuple(b for b in kind.bindings if b.name in stale)
        return plan

    def refresh(self, state: _ItemState, fields: tuple[str, ...]) -> bool:
        """Look up again the bound records that depend on the changed fields; true if a required one
        can no longer be found (the rest of the ruleset then runs rule by rule)."""
        stale = self.refreshes.get(fields)
        if stale is None:  # several fields at once: worked out the first time, then remembered
            names = {b.name for name in fields for b in self.refreshes[(name,)]}
            stale = self.refreshes[fields] = tuple(b for b in self.kind.bindings if b.name in names)
        for binding in stale:
            if binding.name in state.scope:
                self._resolve(binding, state)
        if state.lookups:
            changed = {*fields, *(b.name for b in stale)}
            for lookup in state.lookups:
                if lookup.symbols & changed:
                    self._look_up_one(lookup, state)
                    changed.add(lookup.name)  # a later lookup reading this one is looked up again too
        return bool(state.unbound)

    def fail(self, state: _ItemState, ruleset_id: str, rule_id: str, field: str | None, error: Exception) -> None:
        """An error inside a rule rejects the item, naming the rule (fail closed)."""
        state.rejected = True
        state.reasons.append(
            Reason(rule_id, RULE_ERROR,
                   f"rule {rule_id} could not be evaluated ({type(error).__name__}: {cut(str(error))}); "
                   "the item is rejected until the rule or the data is corrected",
                   Severity.ERROR, field, ruleset_id)
        )

    # -- one rule at a time: exactly what the fused function does, for items the fused path cannot take

    def _apply(self, plan: _RulePlan, state: _ItemState) -> None:
        scope = state.scope
        for path in plan.rule.requires:
            value = scope[path[0]]
            if value is None or (len(path) == 2 and value[path[1]] is None):
                return
        try:
            if plan.rule.condition.evaluate(scope):
                self._act(plan, state)
        except Exception as error:
            self.fail(state, plan.ruleset_id, plan.rule_id, plan.field, error)

    def _act(self, plan: _RulePlan, state: _ItemState) -> None:
        scope = state.scope
        changes = self._changes(plan, scope) if plan.assignments else None
        if changes == []:
            return  # the item already has the values this rule would set
        # The message describes the item as the rule found it, before its changes.
        reason = Reason(plan.rule_id, plan.code, plan.render(scope), plan.severity, plan.field, plan.ruleset_id) \
            if state.explain else None
        state.fired.append(plan.rule_id)
        if reason is not None:
            if changes:
                state.enrichment_reasons.add(len(state.reasons))
            state.reasons.append(reason)
        if plan.rejects:
            state.rejected = True
        for name, old, new in changes or ():
            scope[name] = new
            if state.explain:
                state.enrichments.append(Enrichment(name, wire(old), wire(new), plan.rule_id))
        if changes:
            self.refresh(state, tuple(name for name, _old, _new in changes if (name,) in self.refreshes))

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
                raise TypeError(f"set {spec.name} produced {format_message_value(value)!r}, which is not a "
                                f"{spec.kind.value}")
            elif assignment.money:
                value = plan.round_money(cast(Decimal, value))
            old = scope[spec.name]
            if type(old) is not type(value) or old != value:  # as the fused function tests it
                changes.append((spec.name, old, value))
        return changes
