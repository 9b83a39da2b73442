"""Hostile or broken rulesets cost a refusal naming file and line, quickly: never hours, never a traceback.

The cases of the issue "A control point that holds under hostile input" (rulesets: alias bombs, huge
files, deep nesting, huge expressions, catastrophic regexes), each refused or bounded; a fuzz of
YAML structure and expressions holds the loader to "refused with file:line, or loaded".
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import rule_engine

from tests.conftest import run_cli
from tests.test_ruleset_loading import line_with, only_problem, rule_yaml, write_ruleset
from tollgate.rules import yaml_source
from tollgate.rules.codegen.expressions import compile_expression
from tollgate.rules.loader import load_rulesets
from tollgate.rules.problems import MAX_PROBLEM_CHARS, ProblemsError
from tollgate.rules.typecheck import MAX_EXPRESSION_OPERATORS, MAX_RULESET_BYTES, compile_ruleset


def _billion_laughs(depth: int) -> str:
    """Params whose aliases nest ``depth`` deep, each level ten of the one before: 10**depth values."""
    lines = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, depth + 1):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "params:\n" + "\n".join(lines) + "\n"


def test_an_alias_bomb_nine_deep_is_refused_fast_naming_the_line(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, extra=_billion_laughs(9))
    assert path.stat().st_size < 1200  # the file: 807 bytes
    started = time.perf_counter()
    problem = only_problem(path)
    assert time.perf_counter() - started < 1.0
    assert problem.line == line_with(path, "l1: &l1"), str(problem)  # the first alias
    assert "aliases repeat" in problem.message and f"{yaml_source.MAX_ALIAS_EXPANSION:,}" in problem.message


def test_an_alias_bomb_seven_deep_is_refused_too(tmp_path: Path) -> None:
    # lint took 75 s over it, then accepted it
    problem = only_problem(write_ruleset(tmp_path, extra=_billion_laughs(7)))
    assert "aliases repeat" in problem.message


def test_small_aliases_stay_allowed(tmp_path: Path) -> None:
    # the shipped rate cards alias one set expression; a list param repeated is fine too
    extra = "params:\n  codes: &codes [A, B, C]\n  again: *codes\n"
    ruleset = compile_ruleset(write_ruleset(tmp_path, extra=extra))
    assert ruleset.params["again"] == ("A", "B", "C")


def test_an_alias_of_a_node_it_is_inside_is_refused(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, extra="params:\n  loop: &loop [a, *loop]\n")
    problem = only_problem(path)
    assert problem.line == line_with(path, "loop: &loop"), str(problem)
    assert "inside" in problem.message


def test_a_huge_params_file_is_refused_by_its_size_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    with path.open("w", encoding="utf-8") as file:  # 50 MB of params: 90 s and 1.6 GB before
        file.write("ruleset: demo\nparams:\n")
        row = "  p{}: [abc, def, 1.5, 2026-01-01]\n"
        for number in range(1_400_000):
            file.write(row.format(number))
    assert path.stat().st_size > 50_000_000
    started = time.perf_counter()
    problem = only_problem(path)
    assert time.perf_counter() - started < 1.0
    assert "larger than 256 KiB" in problem.message
    with path.open("rb") as file:
        assert problem.line == file.read(MAX_RULESET_BYTES).count(b"\n") + 1


def test_a_file_just_under_the_size_limit_is_read(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "#" * (MAX_RULESET_BYTES - len(text.encode()) - 1) + "\n", encoding="utf-8")
    assert path.stat().st_size == MAX_RULESET_BYTES
    compile_ruleset(path)


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_yaml_nested_ten_thousand_deep_is_refused_naming_the_line(tmp_path: Path, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    path = write_ruleset(tmp_path, extra="params:\n  deep: " + opening * 10_000 + "1" + closing * 10_000 + "\n")
    problem = only_problem(path)
    assert problem.line == line_with(path, "deep:"), str(problem)
    assert f"deeper than {yaml_source.MAX_DEPTH} levels" in problem.message


def test_aliases_cannot_nest_deeper_than_the_limit_either(tmp_path: Path) -> None:
    levels = ["  d0: &d0 " + "[" * 40 + "1" + "]" * 40]
    levels += [f"  d{n}: &d{n} " + "[" * 40 + f"*d{n - 1}" + "]" * 40 for n in range(1, 4)]
    problem = only_problem(write_ruleset(tmp_path, extra="params:\n" + "\n".join(levels) + "\n"))
    assert "once its aliases are expanded" in problem.message


@pytest.mark.parametrize("text", [
    "? [a]\n: 1\n",             # a list as a key: unhashable
    "params: {d: !!timestamp 2026-13-45}\n",
    "params: {b: !!binary zz}\n",
    "params: !!python/object:os.system {}\n",
])
def test_odd_yaml_is_a_problem_not_a_traceback(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    problem = only_problem(path)
    assert problem.line is not None and problem.path == str(path), str(problem)


def test_a_thousand_nots_are_refused_naming_file_line_and_rule(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="not " * 1000 + "billable"))
    problem = only_problem(path)
    assert (problem.line, problem.subject) == (line_with(path, "when:"), "XX-1"), str(problem)
    assert "at most" in problem.message
    assert len(str(problem)) <= MAX_PROBLEM_CHARS


def test_a_nesting_under_the_character_limit_is_refused_by_its_operators(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="not " * 900 + "billable"))
    problem = only_problem(path)
    assert f"at most {MAX_EXPRESSION_OPERATORS} are allowed" in problem.message, str(problem)


def test_a_twenty_thousand_term_sum_is_refused_naming_file_line_and_rule(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when=" + ".join(["hours"] * 20_000) + " > 0"))
    problem = only_problem(path)
    assert (problem.line, problem.subject) == (line_with(path, "when:"), "XX-1"), str(problem)
    assert len(str(problem)) <= MAX_PROBLEM_CHARS


def test_a_deep_message_placeholder_is_refused_too(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(message="'{" + "-" * 300 + "hours}'"))
    problem = only_problem(path)
    assert problem.subject == "XX-1" and "message placeholder" in problem.message, str(problem)


def test_an_expression_at_the_operator_limit_still_loads(tmp_path: Path) -> None:
    when = " + ".join(["hours"] * (MAX_EXPRESSION_OPERATORS // 2)) + " > 0"
    compile_ruleset(write_ruleset(tmp_path, rule_yaml(when=when)))


def test_the_lint_command_prints_file_line_problems_not_a_traceback(tmp_path: Path) -> None:
    write_ruleset(tmp_path, rule_yaml(when="not " * 1000 + "billable"), name="a.yaml", ruleset="a")
    write_ruleset(tmp_path, extra=_billion_laughs(9), name="b.yaml", ruleset="b", order=20)
    write_ruleset(tmp_path, rule_yaml(when=" + ".join(["hours"] * 20_000) + " > 0"), name="c.yaml", ruleset="c",
                  order=30)
    started = time.perf_counter()
    result = run_cli("rules", "lint", str(tmp_path))
    assert time.perf_counter() - started < 30
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 4, result.stderr  # three problems and the count
    for name in ("a.yaml", "b.yaml", "c.yaml"):
        assert any(line.startswith(f"{tmp_path / name}:") and line.split(":")[1].isdigit() for line in lines), lines


def test_lint_prints_problems_not_a_traceback(tmp_path: Path) -> None:
    write_ruleset(tmp_path, rule_yaml(when="not " * 1000 + "billable"), name="a.yaml", ruleset="a")
    write_ruleset(tmp_path, extra=_billion_laughs(9), name="b.yaml", ruleset="b", order=20)
    with pytest.raises(ProblemsError) as caught:
        load_rulesets(tmp_path)
    assert sorted(Path(p.path).name for p in caught.value.problems) == ["a.yaml", "b.yaml"]


# ---------------------------------------------------------------------------------------------------
# Regexes: RE2, in linear time


CATASTROPHIC = "(a+)+$"


@pytest.mark.parametrize("text", [f"entry_id =~ '{CATASTROPHIC}'", "entry_id =~ pattern"])
def test_a_catastrophic_pattern_answers_in_milliseconds(text: str) -> None:
    # Python's re took 7 s on 28 characters, doubling per character
    expression = compile_expression(text, rule_engine.Context())
    thing = {"entry_id": "a" * 100_000 + "!", "pattern": CATASTROPHIC}
    for evaluate in (expression.evaluate, expression.rule.evaluate):  # the generated code and the interpreter
        started = time.perf_counter()
        assert evaluate(thing) is False
        assert time.perf_counter() - started < 0.1
    assert expression.evaluate({"entry_id": "aaa", "pattern": CATASTROPHIC}) is True


def test_a_catastrophic_pattern_in_a_ruleset_loads_and_decides_fast(tmp_path: Path) -> None:
    ruleset = compile_ruleset(write_ruleset(tmp_path, rule_yaml(when=f"entry_id =~ '{CATASTROPHIC}'")))
    condition = ruleset.rules[0].condition
    started = time.perf_counter()
    assert condition.evaluate({"entry_id": "a" * 28 + "!"}) is False
    assert condition.evaluate({"entry_id": "a" * 1_000_000 + "!"}) is False
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("pattern", "why"), [
    ("(a)\\\\1", "invalid escape sequence"),           # a backreference
    ("a(?=b)", "invalid perl operator: (?="),          # lookahead
    ("(?<=a)b", "invalid perl operator: (?<="),        # lookbehind
    ("(?>a+)b", "invalid perl operator: (?>"),         # an atomic group
    ("a{2000}", "invalid repetition size"),
])
def test_lint_refuses_a_pattern_re2_cannot_take_saying_why(tmp_path: Path, pattern: str, why: str) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when=f"entry_id =~~ '{pattern}'"))
    problem = only_problem(path)
    assert (problem.line, problem.subject) == (line_with(path, "when:"), "XX-1"), str(problem)
    assert why in problem.message and "linear" in problem.message, str(problem)


def test_a_pattern_from_the_item_that_re2_cannot_take_rejects_that_item_only() -> None:
    expression = compile_expression("a =~ b", rule_engine.Context())
    for evaluate in (expression.evaluate, expression.rule.evaluate):
        with pytest.raises(rule_engine.errors.RegexSyntaxError, match="cannot be run by RE2"):
            evaluate({"a": "xx", "b": "(x)\\1"})


@pytest.mark.parametrize(("text", "thing", "expected"), [
    ("a =~ 'x\\\\Z'", {"a": "x"}, True),      # Python's \Z is RE2's \z
    ("a =~ 'x\\\\Z'", {"a": "x\n"}, False),
    ("a =~ 'x$'", {"a": "x\n"}, False),       # RE2: $ only at the very end (Python's also before a final newline)
    ("a =~ '\\\\d'", {"a": "\u0663"}, False),  # RE2: \d is ASCII
    ("a =~~ 'b'", {"a": "abc"}, True),
    ("a !~~ 'z'", {"a": "abc"}, True),
    ("a !~ 'b'", {"a": "abc"}, True),
    ("a =~ 'B(.)b' and $re_groups[0] == 'o'", {"a": "Bob"}, True),
])
def test_re2_semantics(text: str, thing: dict[str, str], expected: bool) -> None:
    expression = compile_expression(text, rule_engine.Context())
    assert expression.evaluate(thing) is expected
    assert expression.rule.evaluate(thing) is expected


# ---------------------------------------------------------------------------------------------------
# Messages: every quoted value cut to MESSAGE_VALUE_CHARS


def test_every_value_a_message_quotes_is_cut_with_an_ellipsis(tmp_path: Path) -> None:
    from decimal import Decimal

    from tollgate.rules.fields import MESSAGE_VALUE_CHARS, format_message_value, format_value

    long_text = "x" * 5_000
    cut_text = "x" * (MESSAGE_VALUE_CHARS - 1) + "…"
    assert format_message_value(long_text) == cut_text
    assert format_message_value(Decimal("1" * 500)) == "1" * (MESSAGE_VALUE_CHARS - 1) + "…"
    assert len(format_message_value(tuple(["AB"] * 1_000))) == MESSAGE_VALUE_CHARS
    assert format_message_value("W-1") == "W-1"
    assert format_value(long_text) == long_text  # what enrichments carry stays whole

    message = "'{worker_id} / {worker_id + worker_id} / {hours} / {work_date}'"
    path = write_ruleset(tmp_path, rule_yaml(when="true", action="warn", code="ECHO", message=message))
    rule = compile_ruleset(path).rules[0]
    scope = {"worker_id": long_text, "hours": Decimal("8"), "work_date": _midnight()}
    rendered = rule.message.render(scope)  # the rule-by-rule path
    assert rendered == f"{cut_text} / {cut_text} / 8 / 2026-11-03"


def _midnight() -> object:
    import datetime as dt

    return dt.datetime(2026, 11, 3, tzinfo=dt.UTC)


def test_the_generated_code_cuts_the_values_it_quotes_too(tmp_path: Path) -> None:
    from decimal import Decimal

    from tollgate.rules.decisions import Reason

    message = "'{worker_id} / {worker_id + worker_id} / {hours}'"
    path = write_ruleset(tmp_path, rule_yaml(when="true", action="warn", code="ECHO", message=message))
    ruleset = compile_ruleset(path)
    assert ruleset.run is not None and "cut(" in ruleset.source

    class State:
        explain, rejected = True, False

        def __init__(self) -> None:
            self.fired: list[str] = []
            self.reasons: list[Reason] = []
            self.enrichments: list[object] = []
            self.enrichment_reasons: set[int] = set()

    state = State()
    ruleset.run({"worker_id": "W" * 1_000_000, "hours": Decimal("1" * 300)}, state, None)  # type: ignore[arg-type]
    [reason] = state.reasons
    quoted = "W" * 199 + "…"
    assert reason.message == f"{quoted} / {quoted} / {'1' * 199}…"
