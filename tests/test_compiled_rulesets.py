"""The shipped rulesets, compiled and fused, decide exactly as rule-engine's interpreter does.

A large seeded batch (benchmarks/data.py: a generated firm and a month of entries, with every kind of
rejection and enrichment) is decided twice: by the service's evaluator (fused conditions, compiled
expressions, generated messages) and by the same evaluator with every expression evaluated by
``rule_engine.Rule.evaluate`` rule by rule. Every decision must be identical, field for field.
"""

from __future__ import annotations

import decimal
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks.data import generate_firm
from tests.conftest import ROOT
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.codegen.expressions import CompiledExpression
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.rules.typecheck import CompiledRule, CompiledRuleset

ENTRIES = 6_000


class _Interpreted:
    """An expression evaluated by rule-engine's interpreter alone: the reference semantics."""

    def __init__(self, expression: CompiledExpression) -> None:
        self.evaluate = expression.rule.evaluate


def _interpreted_rule(rule: CompiledRule) -> CompiledRule:
    parts = tuple(p if isinstance(p, str) else _Interpreted(p) for p in rule.message.parts)
    return replace(
        rule,
        condition=_Interpreted(rule.condition),  # type: ignore[arg-type]
        assignments=tuple((spec, _Interpreted(e)) for spec, e in rule.assignments),  # type: ignore[misc]
        message=replace(rule.message, parts=parts),
    )


def _interpreted(ruleset: CompiledRuleset) -> CompiledRuleset:
    """The ruleset run rule by rule, every expression by the interpreter: nothing generated is used."""
    return replace(ruleset, rules=tuple(_interpreted_rule(r) for r in ruleset.rules), run=None)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ReferenceSnapshot]:
    firm = generate_firm(people=400, seed=7)
    directory = tmp_path_factory.mktemp("firm")
    firm.write(directory)
    return firm, load_snapshot(directory)


def _evaluator(rulesets: tuple[CompiledRuleset, ...], snapshot: ReferenceSnapshot) -> Evaluator:
    return Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                     ENGINE_VERSION)


def test_every_shipped_ruleset_is_fused_and_compiled() -> None:
    for ruleset in load_rulesets(ROOT / "rulesets").all:
        assert ruleset.run is not None, ruleset.source
        for rule in ruleset.rules:
            assert rule.condition.is_compiled, (rule.id, rule.condition.fallback_reason)


def test_compiled_decisions_equal_the_interpreters(snapshot: tuple[Any, ReferenceSnapshot]) -> None:
    firm, reference_data = snapshot
    shipped = load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name)
    entries = firm.entries(ENTRIES, seed=11, malformed_rate=0.002)
    compiled = _evaluator(shipped, reference_data).evaluate(entries)
    interpreted = _evaluator(tuple(_interpreted(r) for r in shipped), reference_data).evaluate(entries)
    assert len(compiled) == len(interpreted) == ENTRIES
    mismatches = [(c, i) for c, i in zip(compiled, interpreted, strict=True) if c != i]
    assert not mismatches, mismatches[:3]
    # The batch exercises the rules: every outcome, and most rules acting somewhere.
    outcomes = Counter(d.outcome.value for d in compiled)
    assert set(outcomes) == {"accept", "enrich", "reject"}
    codes = {r.code for d in compiled for r in d.reasons}
    assert len(codes) >= 15, codes



def test_decimal_arithmetic_is_the_same_whatever_the_threads_decimal_context(
    snapshot: tuple[Any, ReferenceSnapshot],
) -> None:
    """Rulesets compute under one fixed decimal context (Python's defaults), not the one current in the thread that
    loaded them or the one that decides; the caller's context is left as it was."""
    firm, reference_data = snapshot
    entries = firm.entries(1_500, seed=13)
    expected = _evaluator(load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name), reference_data).evaluate(entries)
    coarse = decimal.Context(prec=4, rounding=decimal.ROUND_DOWN)
    with decimal.localcontext(coarse):
        loaded_coarse = load_rulesets(ROOT / "rulesets").for_kind(TIME_ENTRY.name)
    results: list[Any] = []

    def decide_in_a_coarse_thread() -> None:
        decimal.setcontext(decimal.Context(prec=3, rounding=decimal.ROUND_UP))
        caller_context = decimal.getcontext()
        results.append(_evaluator(loaded_coarse, reference_data).evaluate(entries))
        results.append(decimal.getcontext() is caller_context)

    thread = threading.Thread(target=decide_in_a_coarse_thread)
    thread.start()
    thread.join()
    decided, context_restored = results
    assert decided == expected
    assert context_restored
    # the batch has amounts a 3- or 4-digit context would round differently
    assert any(len(e.new_value.replace(".", "").lstrip("0")) > 4 for d in expected for e in d.enrichments
               if e.field == "bill_amount" and e.new_value)


# The head of a small time-entry ruleset written for a test.
_HEADER = """\
ruleset: {ruleset}
version: 1.0.0
effective_from: 2026-01-01
applies_to: time_entry
order: 10
owner: revenue-controls@example.com
rules:
"""
# An entry of examples/refdata's firm: worker W-1 on project P-100, task T-1.
_ENTRY = {"entry_id": "E-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "assignment_id": "A-1",
          "work_date": "2026-11-03", "hours": "8"}


REFRESHING_RULESET = _HEADER.format(ruleset="refresh-demo") + """\
  - id: XX-1
    title: Time without an activity is travel
    when: activity_code == null
    action: enrich
    set: {activity_code: "'TRAVEL'"}
    code: ACTIVITY_SET
    message: set
  - id: XX-2
    title: The transaction control found by the new activity is read in the same ruleset
    when: control == null
    action: warn
    code: NO_CONTROL_AFTER_ENRICHMENT
    message: no control for {activity_code}
"""


def test_a_record_found_by_an_enriched_field_is_looked_up_again_before_the_next_rule(tmp_path: Path) -> None:
    (tmp_path / "refresh.yaml").write_text(REFRESHING_RULESET, encoding="utf-8")
    [fused] = load_rulesets(tmp_path).for_kind(TIME_ENTRY.name)
    assert fused.run is not None
    reference_data = load_snapshot(ROOT / "examples" / "refdata")
    [compiled] = _evaluator((fused,), reference_data).evaluate([_ENTRY])
    [interpreted] = _evaluator((_interpreted(fused),), reference_data).evaluate([_ENTRY])
    assert compiled == interpreted
    assert compiled.codes == ["ACTIVITY_SET"]  # P-100's control for TRAVEL (TC-1) was found


@pytest.mark.parametrize("marker", ["__RESET_SYMBOLS__", "__REREAD_SYMBOL__ activity_code"])
def test_message_text_that_reads_like_generated_code_stays_text(tmp_path: Path, marker: str) -> None:
    """The fused function re-reads its symbols after an enrichment at marker lines of the generated source; a
    message (rule text lives only inside string literals there) that happens to contain a marker is untouched."""
    (tmp_path / "refresh.yaml").write_text(REFRESHING_RULESET.replace("message: set", f"message: set {marker}"),
                                           encoding="utf-8")
    [fused] = load_rulesets(tmp_path).for_kind(TIME_ENTRY.name)
    assert fused.run is not None, fused.source
    [decision] = _evaluator((fused,), load_snapshot(ROOT / "examples" / "refdata")).evaluate([_ENTRY])
    assert [r.message for r in decision.reasons] == [f"set {marker}"]


MESSAGE_READS_RULESET = _HEADER.format(ruleset="message-reads") + """\
  - id: MR-1
    title: Only the message reads the role; the condition reads the source ref
    when: source_ref == null
    action: warn
    code: ROLE_NOTED
    message: role {role_code}, category {labor_category}
  - id: MR-2
    title: Set the category
    when: hours > 0
    action: enrich
    set: {labor_category: "'CONSULTANT'", role_code: "'R-' + entry_id"}
    code: CATEGORY_SET
    message: set
  - id: MR-3
    title: A message reads both fields written above, which no condition read so far
    when: hours > 0
    action: warn
    code: AFTER_SET
    message: role {role_code}, category {labor_category}
  - id: MR-4
    title: A condition reads a field written above, after messages read it
    when: labor_category == 'CONSULTANT'
    action: warn
    code: CATEGORY_SEEN
    message: seen {labor_category}
"""


def test_messages_read_fields_as_they_stand_when_the_rule_fires(tmp_path: Path) -> None:
    """A symbol only messages read is read where the message is rendered (not when the function starts); a field an
    enrichment wrote reads its new value there, and in the conditions of the rules after it."""
    (tmp_path / "reads.yaml").write_text(MESSAGE_READS_RULESET, encoding="utf-8")
    [fused] = load_rulesets(tmp_path).for_kind(TIME_ENTRY.name)
    assert fused.run is not None, fused.source
    assert "_role_code = thing['role_code']" not in fused.source.split("# MR-1")[0], fused.source
    entry = {**_ENTRY, "role_code": "OLD", "labor_category": "ANALYST"}
    reference_data = load_snapshot(ROOT / "examples" / "refdata")
    [compiled] = _evaluator((fused,), reference_data).evaluate([entry])
    [interpreted] = _evaluator((_interpreted(fused),), reference_data).evaluate([entry])
    assert compiled == interpreted
    assert [r.message for r in compiled.reasons] == [
        "role OLD, category ANALYST", "set", "role R-E-1, category CONSULTANT", "seen CONSULTANT"]


# Two rulesets an item goes through in one generated function (a chain, see evaluators/engine.py _Chain). The first
# binds the task and, in its last rule, may move the entry to a task that does not exist; the second reads the
# worker, bound ahead with the first's records. Both name a param "limit", with their own values.
CHAIN_FIRST = """\
ruleset: chain-first
version: 1.0.0
effective_from: 2026-01-01
applies_to: time_entry
order: 10
owner: revenue-controls@example.com
params: {limit: 1}
rules:
  - id: CF-1
    title: More than the first limit
    when: hours > params.limit
    action: warn
    code: OVER_FIRST_LIMIT
    message: over {params.limit}
  - id: CF-2
    title: The task is read here
    when: task.name != ''
    action: warn
    code: TASK_NAMED
    message: task {task.name}
  - id: CF-3
    title: A move to another task, last in the ruleset
    when: activity_code == 'MOVE'
    action: enrich
    set: {task_id: "'T-GONE'"}
    code: MOVED
    message: moved from {task_id}
"""
CHAIN_SECOND = """\
ruleset: chain-second
version: 1.0.0
effective_from: {effective_from}
applies_to: time_entry
order: 20
owner: revenue-controls@example.com
params: {{limit: 100}}
rules:
  - id: CS-1
    title: Under the second limit
    when: hours < params.limit
    action: warn
    code: UNDER_SECOND_LIMIT
    message: under {{params.limit}}
  - id: CS-2
    title: The worker is first read here
    when: worker.status == 'ACTIVE'
    action: warn
    code: WORKER_ACTIVE
    message: worker {{worker.name}} on task {{task_id}}
  - id: CS-3
    title: The task again
    when: task.name != ''
    action: warn
    code: TASK_STILL_NAMED
    message: still {{task.name}}
"""


@pytest.mark.parametrize("second_in_force_from", ["2026-01-01", "2026-11-01"])
def test_a_chain_of_rulesets_decides_as_the_rulesets_one_after_another(tmp_path: Path,
                                                                       second_in_force_from: str) -> None:
    """Through one generated function, an item is decided as by each ruleset in turn over the batch: each reads its
    own params; a record the second requires that is missing, or one the last rule of the first loses, rejects the
    item where it would have, and the rest runs rule by rule. When a ruleset of the chain is not in force on some
    item's date, the batch goes ruleset by ruleset."""
    (tmp_path / "first.yaml").write_text(CHAIN_FIRST, encoding="utf-8")
    (tmp_path / "second.yaml").write_text(CHAIN_SECOND.format(effective_from=second_in_force_from), encoding="utf-8")
    rulesets = load_rulesets(tmp_path).for_kind(TIME_ENTRY.name)
    reference_data = load_snapshot(ROOT / "examples" / "refdata")
    chained = _evaluator(rulesets, reference_data)
    [chain] = chained.chains.values()
    assert [version.ruleset.id for version in chain.versions] == ["chain-first", "chain-second"]
    entries = [_ENTRY, {**_ENTRY, "entry_id": "E-2", "activity_code": "MOVE"},
               {**_ENTRY, "entry_id": "E-3", "worker_id": "W-NOPE"}]
    if second_in_force_from != "2026-01-01":
        entries.append({**_ENTRY, "entry_id": "E-4", "work_date": "2026-10-15"})
    decided = chained.evaluate(entries)
    assert decided == _evaluator(tuple(_interpreted(r) for r in rulesets), reference_data).evaluate(entries)
    by_id = {decision.item_id: decision.codes for decision in decided}
    assert by_id["E-1"] == ["OVER_FIRST_LIMIT", "TASK_NAMED", "UNDER_SECOND_LIMIT", "WORKER_ACTIVE",
                            "TASK_STILL_NAMED"]
    # rejected, so what the enrich rule said is dropped
    assert by_id["E-2"] == ["OVER_FIRST_LIMIT", "TASK_NAMED", "REFERENCE_DATA_MISSING", "UNDER_SECOND_LIMIT",
                            "WORKER_ACTIVE"]
    assert by_id["E-3"] == ["OVER_FIRST_LIMIT", "TASK_NAMED", "REFERENCE_DATA_MISSING", "UNDER_SECOND_LIMIT",
                            "TASK_STILL_NAMED"]
    assert [r.message for r in decided[0].reasons][0::2] == ["over 1", "under 100", "still Build and configure"]
    if second_in_force_from != "2026-01-01":
        assert by_id["E-4"] == ["OVER_FIRST_LIMIT", "TASK_NAMED", "NO_RULESET_IN_FORCE"]


def test_no_chain_where_an_earlier_ruleset_could_change_a_later_ones_record(tmp_path: Path) -> None:
    """The transaction control is found by the activity, which the first ruleset sets: bound ahead, it could be
    the wrong one, so the two rulesets run one after another over the batch."""
    (tmp_path / "first.yaml").write_text(REFRESHING_RULESET.split("  - id: XX-2")[0], encoding="utf-8")
    second = _HEADER.format(ruleset="reads-control").replace("order: 10", "order: 20") + """\
  - id: RC-9
    title: The control found by the activity set before
    when: control == null
    action: warn
    code: NO_CONTROL
    message: no control for {activity_code}
"""
    (tmp_path / "second.yaml").write_text(second, encoding="utf-8")
    rulesets = load_rulesets(tmp_path).for_kind(TIME_ENTRY.name)
    reference_data = load_snapshot(ROOT / "examples" / "refdata")
    evaluator = _evaluator(rulesets, reference_data)
    assert evaluator.chains == {}
    [decision] = evaluator.evaluate([_ENTRY])
    assert decision.codes == ["ACTIVITY_SET"]  # P-100's control for TRAVEL was found after the enrichment
