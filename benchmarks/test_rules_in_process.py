"""Comparison 1, in process: the shipped time-entry rulesets over the same generated month-end entries.

Every row is timed in rounds of ``TOLLGATE_BENCH_CHUNK`` entries (default 1,000), consecutive chunks
of the same seeded data, so the table's times are *per chunk* for every row and directly comparable;
the summary at the end gives µs per entry and entries/s (also in each benchmark's extra_info).

- tollgate: ``Evaluator.evaluate`` on wire dicts, as the service calls it (decode + bind + decide).
- tollgate-rules-only: ``Evaluator.decide_batch`` on pre-decoded items with the records pre-bound (the
  binder is a dict lookup): the rule work, with reasons, messages, enrichments and decisions.
- tollgate-checks: ``Evaluator.rules_fired`` on the same items: which rules fire and the enriched
  values, without messages or decisions, the work the next four rows do, with the engine around it
  (item states, binding from the pre-bound records).
- tollgate-compiled: the compiled rulesets alone (the generated functions the evaluator runs) on the
  pre-bound scopes the next three rows get: the compiler against them, like for like.
- rule-engine Rule.matches: the naive way, on a smaller sample (``TOLLGATE_BENCH_NAIVE_ENTRIES``).
- zen-engine: the same checks as one JDM decision, ``ZenEngine.evaluate_batch`` per chunk.
- hand-written checks: plain Python, which rules fire and the enriched values (what the two rows
  above compute): the floor.
- hand-written decisions: plain Python producing the same ``Decision`` objects, messages included
  (what tollgate-rules-only computes): the floor for the engine.

Before any row is timed, the ``agreed`` fixture checks on a sample that all of them find the same
rules firing and the same values as Tollgate, so every row does the same work.
"""

from __future__ import annotations

import collections
import functools
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks import handwritten
from benchmarks.comparators import (
    CompiledChecks,
    NaiveRuleEngine,
    Prebound,
    RuleFacts,
    ZenChecks,
    digest_decision,
    digest_outcome,
    zen_context,
    zen_outcome,
)
from benchmarks.conftest import CpuClock, Sizes, chunked_rounds, per_entry, record
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot
from tollgate.rules.decisions import Decision
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.typecheck import CompiledRuleset


def _group(sizes: Sizes) -> str:
    return f"in-process: shipped time-entry rulesets, time per {sizes.chunk:,} entries"


@pytest.fixture(scope="module")
def naive(rulesets: tuple[CompiledRuleset, ...]) -> NaiveRuleEngine:
    return NaiveRuleEngine(TIME_ENTRY, rulesets)


@pytest.fixture(scope="module")
def compiled(evaluator: Evaluator) -> CompiledChecks:
    return CompiledChecks(evaluator)


@pytest.fixture(scope="module")
def zen_checks() -> ZenChecks:
    pytest.importorskip("zen", reason="zen-engine is not installed (pip install zen-engine)")
    return ZenChecks()


@pytest.fixture(scope="module")
def rules_only(rulesets: tuple[CompiledRuleset, ...], snapshot: ReferenceSnapshot, prebound: Prebound) -> Evaluator:
    evaluator = Evaluator(TIME_ENTRY, rulesets, prebound.binder, snapshot.snapshot_id, ENGINE_VERSION)
    if not callable(getattr(evaluator, "decide", None)):
        pytest.skip("Evaluator has no public decide(DecodedItem): the rule work cannot be isolated from decoding")
    return evaluator


def _without_refdata_messages(decision: Decision) -> Any:
    """A decision with the text of missing-record reasons blanked (the hand-written floor does not look them up)."""
    reasons = tuple((r.rule_id, r.code, "" if r.rule_id.startswith("refdata:") else r.message, r.severity, r.field,
                     r.ruleset_id) for r in decision.reasons)
    return decision.item_id, decision.outcome, reasons, decision.enrichments


@pytest.fixture(scope="module")
def agreed(  # noqa: PLR0917 - pytest passes fixtures positionally
    sizes: Sizes, evaluator: Evaluator, prebound: Prebound, facts: RuleFacts, naive: NaiveRuleEngine,
    zen_checks: ZenChecks, rules_only: Evaluator, compiled: CompiledChecks,
) -> None:
    """Once per run, outside the timed part: every row finds what Tollgate finds, on a sample of items."""
    count = min(sizes.agree_entries, len(prebound.items))
    items, scopes = prebound.items[:count], prebound.scopes[:count]
    takes_fired = "fired" in inspect.signature(evaluator.decide).parameters
    zen_results = zen_checks.run(zen_checks.requests([zen_context(s) for s in scopes]))
    problems: collections.Counter[str] = collections.Counter()
    examples: list[str] = []

    def mismatch(row: str, item_id: str, want: Any, got: Any) -> None:
        problems[row] += 1
        if problems[row] <= 3:
            examples.append(f"{row} {item_id}: tollgate {want!r}\n    {row} {got!r}")

    for item, scope, zen_result in zip(items, scopes, zen_results, strict=True):
        fired: list[str] = []
        decision = evaluator.decide(item, fired) if takes_fired else evaluator.decide(item)
        want = digest_decision(facts, decision)
        outcomes = {
            "rule-engine Rule.matches": naive.run(scope),
            "zen-engine": zen_outcome(ZenChecks.result(zen_result)),
            "hand-written checks": handwritten.checks(scope),
        }
        for row, (row_fired, changes) in outcomes.items():
            if takes_fired and row_fired != fired:
                mismatch(row + " (rules fired)", item.item_id, fired, row_fired)
            got = digest_outcome(facts, scope, row_fired, changes)
            if got != want:
                mismatch(row, item.item_id, want, got)
        by_hand = handwritten.decide(item.item_id, scope)
        if _without_refdata_messages(by_hand) != _without_refdata_messages(decision):
            mismatch("hand-written decisions", item.item_id, decision, by_hand)
        if rules_only.decide(item) != decision:
            mismatch("tollgate-rules-only", item.item_id, decision, rules_only.decide(item))
        [(compiled_fired, compiled_scope)] = compiled.run_batch(compiled.prepare([scope]))
        if takes_fired and compiled_fired != fired:
            mismatch("tollgate-compiled (rules fired)", item.item_id, fired, compiled_fired)
        got = digest_outcome(facts, scope, compiled_fired, {f: compiled_scope[f] for f in TIME_ENTRY.fields})
        if got != want:
            mismatch("tollgate-compiled", item.item_id, want, got)
        [(checked, scope_after)] = rules_only.rules_fired([item])
        if takes_fired and checked != fired:
            mismatch("tollgate-checks (rules fired)", item.item_id, fired, checked)
        got = digest_outcome(facts, scope, checked, {f: scope_after[f] for f in TIME_ENTRY.fields})
        if got != want:
            mismatch("tollgate-checks", item.item_id, want, got)
    assert not compiled.errors, f"compiled rulesets failed on pre-bound scopes: {compiled.errors[:3]}"
    assert not problems, f"rows disagree with Tollgate on {dict(problems)} of {count} items:\n" + "\n".join(examples)

    # The mix the comparison runs on (every entry, as the engine decided it).
    outcomes_count = collections.Counter(str(d.outcome) for d in prebound.decisions)
    codes = collections.Counter(r.code for d in prebound.decisions for r in d.reasons)
    total = len(prebound.decisions)
    record(None, _group(sizes), "data (all entries)", entries=total, well_formed=len(prebound.items),
           agreement_checked=count, fired_compared=takes_fired,
           **{f"{k}_pct": round(100 * v / total, 2) for k, v in sorted(outcomes_count.items())},
           top_codes=", ".join(f"{c}:{n}" for c, n in codes.most_common(8)))


# ---------------------------------------------------------------------------------------------------
# The rows


def _time_batches(benchmark: Any, sizes: Sizes, decide: Callable[[list[Any]], Any], items: list[Any], *, row: str,
                  what: str) -> None:
    """Time ``decide`` on the items in batches of one round each, as the service decides a request."""
    benchmark.group = _group(sizes)
    setup, rounds = chunked_rounds(items, sizes.chunk)
    benchmark.pedantic(decide, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), row, min(sizes.chunk, len(items)), what=what)


def test_tollgate(benchmark: Any, agreed: None, sizes: Sizes, evaluator: Evaluator,
                  entries: list[dict[str, str]]) -> None:
    _time_batches(benchmark, sizes, evaluator.evaluate, entries, row="tollgate",
                  what="Evaluator.evaluate(wire dicts): decode + bind + decide")


def test_tollgate_rules_only(benchmark: Any, agreed: None, sizes: Sizes, rules_only: Evaluator,
                             prebound: Prebound) -> None:
    _time_batches(benchmark, sizes, rules_only.decide_batch, prebound.items, row="tollgate-rules-only",
                  what="Evaluator.decide_batch(decoded items), records pre-bound")


def test_tollgate_checks(benchmark: Any, agreed: None, sizes: Sizes, rules_only: Evaluator,
                         prebound: Prebound) -> None:
    """The same work as the Rule.matches, zen-engine and hand-written checks rows: which rules fire and
    the enriched values (Evaluator.rules_fired: the fused rulesets without messages or decisions)."""
    _time_batches(benchmark, sizes, rules_only.rules_fired, prebound.items, row="tollgate-checks",
                  what="Evaluator.rules_fired(decoded items), records pre-bound: rules fired + enriched values")


def test_tollgate_compiled(benchmark: Any, agreed: None, sizes: Sizes, compiled: CompiledChecks,
                           prebound: Prebound) -> None:
    """The compiler like for like: the generated ruleset functions on the scopes the next three rows get (each
    round's scopes copied before the round, as the engine hands every item a scope of its own to enrich)."""
    benchmark.group = _group(sizes)
    next_chunk, rounds = chunked_rounds(prebound.scopes, sizes.chunk)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        (chunk,), _ = next_chunk()
        return (compiled.prepare(chunk),), {}

    benchmark.pedantic(compiled.run_batch, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), "tollgate-compiled", min(sizes.chunk, len(prebound.scopes)),
              what="the generated ruleset functions alone, pre-bound scopes: rules fired + enriched values")


def test_rule_engine_matches(benchmark: Any, agreed: None, sizes: Sizes, naive: NaiveRuleEngine,
                             prebound: Prebound) -> None:
    benchmark.group = _group(sizes)
    sample = prebound.scopes[: sizes.naive_entries]
    run_one = naive.run

    def run(scopes: list[dict[str, Any]]) -> list[Any]:
        return [run_one(scope) for scope in scopes]

    chunk = min(sizes.chunk, len(sample))
    setup, rounds = chunked_rounds(sample, chunk)
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), "rule-engine Rule.matches", chunk, sample=len(sample),
              what="Rule(when).matches per rule per item (+ Rule(set).evaluate), pre-bound scopes")


def test_zen_engine(benchmark: Any, agreed: None, sizes: Sizes, zen_checks: ZenChecks, prebound: Prebound) -> None:
    benchmark.group = _group(sizes)
    requests = zen_checks.requests([zen_context(scope) for scope in prebound.scopes])
    clock = CpuClock()
    evaluate_batch = zen_checks.run

    def run(batch: list[dict[str, Any]]) -> list[Any]:
        with clock:
            return evaluate_batch(batch)

    setup, rounds = chunked_rounds(requests, sizes.chunk)
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), "zen-engine", min(sizes.chunk, len(requests)), cpu_seconds=clock.seconds,
              rounds=rounds + 1, what="ZenEngine.evaluate_batch, one JDM expression node, pre-bound scopes")


def test_hand_written_checks(benchmark: Any, agreed: None, sizes: Sizes, prebound: Prebound) -> None:
    benchmark.group = _group(sizes)
    checks = handwritten.checks

    def run(scopes: list[dict[str, Any]]) -> list[Any]:
        return [checks(scope) for scope in scopes]

    setup, rounds = chunked_rounds(prebound.scopes, sizes.chunk)
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), "hand-written checks", min(sizes.chunk, len(prebound.scopes)),
              what="plain Python: rules fired + enriched values (the work of tollgate-checks and -compiled)")


def test_hand_written_decisions(benchmark: Any, agreed: None, sizes: Sizes, prebound: Prebound) -> None:
    benchmark.group = _group(sizes)
    decide = handwritten.decide
    pairs = [(item.item_id, scope) for item, scope in zip(prebound.items, prebound.scopes, strict=True)]

    def run(chunk: list[tuple[str, dict[str, Any]]]) -> list[Decision]:
        return [decide(item_id, scope) for item_id, scope in chunk]

    setup, rounds = chunked_rounds(pairs, sizes.chunk)
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=1)
    per_entry(benchmark, _group(sizes), "hand-written decisions", min(sizes.chunk, len(pairs)),
              what="plain Python: the same Decision objects, messages included (the work of tollgate-rules-only)")


def _checks_by_hand(scopes: list[dict[str, Any]]) -> list[Any]:
    return [handwritten.checks(scope) for scope in scopes]


def test_compiler_targets_interleaved(agreed: None, sizes: Sizes, compiled: CompiledChecks, zen_checks: ZenChecks,
                                      prebound: Prebound) -> None:
    """The compiler's targets against the hand-written checks and zen-engine, with the three rows timed round by
    round on the same chunk (in rotating order) rather than one row after the other: the machine's speed drifts
    (a shared VM's has doubled within an hour here), and a drift between two rows' turns moves their ratio.
    Right before its timed run, each row runs once untimed on the previous chunk, so that no row is timed with
    the caches as another row left them (zen-engine's batches sweep them) and each meets its chunk's data
    fresh, as in the rows timed one after the other. Ratios of the medians of the rounds."""
    scopes = prebound.scopes
    chunk = min(sizes.chunk, len(scopes))
    chunks = [scopes[start : start + chunk] for start in range(0, len(scopes) - chunk + 1, chunk)]
    rows = ("tollgate-compiled", "hand-written checks", "zen-engine")
    times: dict[str, list[float]] = {row: [] for row in rows}
    clock = time.perf_counter
    zen_requests = [zen_checks.requests([zen_context(scope) for scope in chunk_scopes]) for chunk_scopes in chunks]
    for index, round_scopes in enumerate(chunks):
        # per row: (the untimed run on the previous chunk, the timed run on this one)
        runs = {
            "tollgate-compiled": tuple(functools.partial(compiled.run_batch, compiled.prepare(chunk_scopes))
                                       for chunk_scopes in (chunks[index - 1], round_scopes)),
            "hand-written checks": tuple(functools.partial(_checks_by_hand, chunk_scopes)
                                         for chunk_scopes in (chunks[index - 1], round_scopes)),
            "zen-engine": tuple(functools.partial(zen_checks.run, requests)
                                for requests in (zen_requests[index - 1], zen_requests[index])),
        }
        for row in rows[index % 3:] + rows[: index % 3]:
            warm, timed = runs[row]
            warm()
            started = clock()
            timed()
            times[row].append(clock() - started)
    per_entry_us = {row: statistics.median(times[row]) / chunk * 1e6 for row in rows}
    compiled_us = per_entry_us["tollgate-compiled"]
    record(None, f"in-process: the compiler's targets, the rows timed in turn on each chunk of {chunk:,} entries",
           "interleaved", rounds=len(chunks), compiled_us=round(compiled_us, 3),
           hand_written_checks_us=round(per_entry_us["hand-written checks"], 3),
           zen_engine_us=round(per_entry_us["zen-engine"], 3),
           compiled_vs_hand_written=f"{compiled_us / per_entry_us['hand-written checks']:.2f}x (target at most 1.5x)",
           zen_engine_vs_compiled=f"{per_entry_us['zen-engine'] / compiled_us:.2f}x (target at least 10x)")
