"""A ruleset fuzz: whatever the file holds, it is loaded, or refused with problems naming file and line.

Hypothesis writes rulesets from pieces (YAML structure with anchors, aliases, tags and odd scalars; expressions
from a small grammar over the time entry's symbols, with regexes; message templates) and then damages the text
(characters inserted, deleted, repeated). Every example must load or be refused with ProblemsError whose
problems name the file and a line, each at most MAX_PROBLEM_CHARS characters, none from the loader's catch-all
(an error we did not foresee), all within a time bound: never a traceback, never minutes.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tollgate.rules.loader import load_rulesets
from tollgate.rules.problems import MAX_PROBLEM_CHARS, ProblemsError

SECONDS = 10  # per example, generous for a loaded machine: a small ruleset loads in milliseconds
SETTINGS = settings(
    max_examples=150, derandomize=True, deadline=dt.timedelta(seconds=SECONDS),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- YAML structure -----------------------------------------------------------------------------------

scalars = st.one_of(
    st.sampled_from(["1", "1.5", "-2", "true", "null", "~", "2026-11-03", "2026-13-45", ".inf", "'x'", '"a\\tb"',
                     "abc", "[]", "{}", "!!binary zz", "!!timestamp 2026-02-30", "!!set {a}", "!!python/none ''",
                     "0x1F", "1e400", "'" + "x" * 300 + "'", "|\n  text"]),
    st.text(alphabet="abc:-#&*!%@`[]{},?|> '\"\\\n", max_size=6).map(lambda t: "'" + t.replace("'", "''") + "'"),
)


def yaml_values(depth: int) -> st.SearchStrategy[str]:
    """Flow-style YAML values, possibly nested, with anchors and aliases."""
    if depth == 0:
        return scalars
    inner = yaml_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), inner), max_size=3).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"),
        st.tuples(st.sampled_from(["&a ", "&b "]), inner).map("".join),
        st.sampled_from(["*a", "*b", "[*a, *a, *a]"]),
        st.integers(1, 80).map(lambda n: "[" * n + "1" + "]" * n),
    )


# -- expressions ----------------------------------------------------------------------------------------

SYMBOLS = ["hours", "billable", "worker_id", "entry_id", "work_date", "project.status", "params.p", "bill_rate",
           "contract&.bills_overtime", "nope", "labor_category", "$abs(hours)", "[1, 2]", "'OT'", "1.5", "null"]
OPERATORS = ["+", "-", "*", "/", "==", "!=", "<", ">=", "and", "or", "??", "in", "=~", "=~~", "!~", "!~~", "**"]
PATTERNS = ["'(a+)+$'", "'(a)\\\\1'", "'a(?=b)'", "'['", "'\\\\d{2,}'", "'x{2000}'", "'.*'", "'\\\\Z'"]


def expressions() -> st.SearchStrategy[str]:
    atoms = st.one_of(st.sampled_from(SYMBOLS), st.sampled_from(PATTERNS))
    return st.recursive(atoms, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: f"{e}.length"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        st.tuples(st.integers(1, 600), st.sampled_from(["not ", "-", "("])).map(lambda t: t[1] * t[0] + "x"),
        st.integers(2, 3_000).map(lambda n: " + ".join(["hours"] * n)),
    ), max_leaves=6)


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def rulesets(draw: st.DrawFn) -> str:
    lines = [
        "ruleset: fuzz", "version: 1.0.0", "effective_from: 2026-01-01",
        f"applies_to: {draw(st.sampled_from(['time_entry', 'time_entry', 'expense_line', 'nothing']))}",
        "order: 10", "owner: revenue-controls@example.com",
        "params:",
        f"  p: {draw(st.one_of(st.sampled_from(['1.5', 'abc']), st.sampled_from(['[A, B]', 'true']), yaml_values(3)))}",
        f"  q: {draw(st.one_of(st.just('[1, 2]'), yaml_values(3)))}",
        "rules:",
    ]
    for index in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["reject", "warn", "enrich"]))
        lines += [
            f"  - id: FZ-{index}",
            "    title: fuzzed",
            f"    when: {quoted(draw(expressions()))}",
            f"    action: {action}",
            "    code: FUZZ",
            f"    message: {quoted('Value {' + draw(expressions()) + '} and {{braces}} {worker_id}')}",
        ]
        if action == "enrich":
            lines += ["    set:", f"      labor_category: {quoted(draw(expressions()))}"]
    text = "\n".join(lines) + "\n"
    # damage the text: insert, delete or repeat a slice somewhere
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "repeat"]))
        if kind == "insert":
            damage = draw(st.sampled_from([":", "-", " ", "\n", "&x ", "*x", "{", "'", "\t", "\\"]))
            text = text[:at] + damage + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        else:
            text = text[:at] + text[at:at + 30] * draw(st.integers(2, 5)) + text[at:]
    return text


@SETTINGS
@given(rulesets())
def test_a_fuzzed_ruleset_is_loaded_or_refused_naming_file_and_line(text: str) -> None:
    with TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        try:
            load_rulesets(Path(directory))
            event("loaded")
        except ProblemsError as error:
            assert error.problems
            event("refused: " + error.problems[0].message.split(":")[0][:40])
            for problem in error.problems:
                printed = str(problem)
                assert problem.path == str(path), printed
                assert problem.line is not None and 1 <= problem.line <= text.count("\n") + 2, (printed, text)
                assert len(printed) <= MAX_PROBLEM_CHARS, printed
                assert "cannot be loaded (" not in printed and "cannot be compiled (" not in printed, (printed, text)
        assert time.perf_counter() - started < SECONDS
