"""Loading rulesets: every refusal names the file, the line and the rule, and says what to do.

Each test writes a small ruleset into tmp_path (``write_ruleset``), loads it, and checks the
Problem(s) it is refused with. Line numbers are computed from the written text (``line_with``), so the
tests pin the exact line a problem points at without depending on the helper's layout.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tollgate.rules.loader import load_rulesets
from tollgate.rules.model import Rounding
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.rules.typecheck import CompiledRuleset, compile_ruleset

HEADER = """\
ruleset: {ruleset}
version: {version}
effective_from: {effective_from}
applies_to: time_entry
order: {order}
owner: revenue-controls@example.com
"""

DEFAULT_RULE: dict[str, str] = {
    "id": "XX-1",
    "title": "Hours within a day",
    "when": "hours > 24",
    "action": "reject",
    "code": "TOO_MANY_HOURS",
    "message": "'{hours} hours is more than a day'",
}


def rule_yaml(**parts: str | None) -> str:
    """One rule as YAML (a list entry under ``rules:``); a part set to None is left out, new keys are added.

    Values are YAML text as it follows ``key: `` in the file.
    """
    fields: dict[str, str | None] = {**DEFAULT_RULE, **parts}
    lines = [f"{key}: {value}" for key, value in fields.items() if value is not None]
    return "  - " + "\n    ".join(lines) + "\n"


def ruleset_yaml(
    *rules: str, ruleset: str = "demo", order: int = 10, extra: str = "", tests: str = "", version: str = "1.0.0",
    effective_from: str = "2026-01-01",
) -> str:
    body = "".join(rules) if rules else rule_yaml()
    header = HEADER.format(ruleset=ruleset, order=order, version=version, effective_from=effective_from)
    return header + extra + "rules:\n" + body + tests


def write_ruleset(directory: Path, *rules: str, name: str = "demo.yaml", **options: object) -> Path:
    path = directory / name
    path.write_text(ruleset_yaml(*rules, **options), encoding="utf-8")  # type: ignore[arg-type]
    return path


def line_with(path: Path, text: str, occurrence: int = 1) -> int:
    """The 1-based number of the line holding the ``occurrence``-th appearance of ``text``."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{text!r} not in {path}")


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ProblemsError) as caught:
        compile_ruleset(path)
    assert caught.value.problems, "a refused ruleset carries at least one problem"
    return caught.value.problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def assert_names(problem: Problem, path: Path, line: int, rule_id: str | None) -> None:
    assert problem.path == str(path)
    assert problem.line == line, str(problem)
    assert problem.subject == rule_id, str(problem)
    assert problem.level == "error"
    # The printed form is what an analyst sees: path:line: rule: message.
    prefix = f"{path}:{line}:" + (f" {rule_id}:" if rule_id else "")
    assert str(problem).startswith(prefix), str(problem)


# ---------------------------------------------------------------------------------------------------
# The helper itself


def test_the_minimal_ruleset_compiles(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path)
    ruleset = compile_ruleset(path)
    assert isinstance(ruleset, CompiledRuleset)
    assert ruleset.id == "demo"
    assert [r.id for r in ruleset.rules] == ["XX-1"]
    assert ruleset.rules[0].line == line_with(path, "- id: XX-1")
    assert ruleset.path == str(path)


# ---------------------------------------------------------------------------------------------------
# Reading and validating the file


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="[hours > 24", action="reject"))
    problem = only_problem(path)
    assert problem.path == str(path)
    assert problem.message.startswith("YAML syntax:")
    # The parser notices the unclosed flow sequence on the line that follows it, or on it: never elsewhere.
    when_line = line_with(path, "when: [hours")
    assert problem.line in (when_line, when_line + 1), str(problem)


def test_yaml_syntax_error_bad_indentation(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    text = ruleset_yaml().replace("    action: reject", "      action: reject")
    path.write_text(text, encoding="utf-8")
    problem = only_problem(path)
    assert problem.message.startswith("YAML syntax: mapping values are not allowed here")
    assert problem.line == line_with(path, "      action: reject")
    assert str(problem).startswith(f"{path}:{problem.line}: YAML syntax")


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    problem = only_problem(path)
    assert problem.line == 1
    assert "YAML mapping" in problem.message


def test_missing_when(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when=None))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "- id: XX-1"), "XX-1")
    assert problem.message == "rules.0.when: is required"


def test_missing_ruleset_key(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(ruleset_yaml().replace("owner: revenue-controls@example.com\n", ""), encoding="utf-8")
    problem = only_problem(path)
    assert problem.message == "owner: is required"
    assert problem.subject is None
    assert problem.line == 1  # a missing top-level key is reported at the top of the file


def test_unknown_key_typo(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when=None, wen="hours > 24"))
    problems = problems_of(path)
    by_message = {p.message: p for p in problems}
    assert set(by_message) == {
        "rules.0.wen: is not a known key here (check the spelling)",
        "rules.0.when: is required",
    }
    assert_names(by_message["rules.0.wen: is not a known key here (check the spelling)"], path,
                 line_with(path, "wen: hours"), "XX-1")


def test_a_duplicate_key_in_a_rule_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(ruleset_yaml(rule_yaml(extra="x").replace("extra: x", "code: OTHER_CODE")), encoding="utf-8")
    problem = only_problem(path)
    # Refused while reading the YAML, before there are rules: the line says where.
    assert problem.line == line_with(path, "code: OTHER_CODE")
    assert "duplicate key 'code'" in problem.message


def test_a_ruleset_test_with_an_unknown_key_names_the_test(tmp_path: Path) -> None:
    tests = "tests:\n  - name: a long day\n    item: {hours: 30}\n    expects: {outcome: reject}\n"
    path = write_ruleset(tmp_path, tests=tests)
    problems = problems_of(path)
    assert {(p.subject, p.line, p.message) for p in problems} == {
        ("a long day", line_with(path, "expects:"), "tests.0.expects: is not a known key here (check the spelling)"),
        ("a long day", line_with(path, "- name: a long day"), "tests.0.expect: is required"),
    }


@pytest.mark.parametrize("bad_id", ["rule1", "ps-1", "PS1", "TOOLONG-1"])
def test_bad_rule_id_shape(tmp_path: Path, bad_id: str) -> None:
    path = write_ruleset(tmp_path, rule_yaml(id=bad_id))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, f"id: {bad_id}"), bad_id)
    assert problem.message.startswith("rules.0.id: ")
    assert "should look like PS-1 or PS-2.task" in problem.message


@pytest.mark.parametrize("good_id", ["PS-1", "PS-2.task", "RC-10", "BE-7.range"])
def test_good_rule_id_shapes(tmp_path: Path, good_id: str) -> None:
    assert compile_ruleset(write_ruleset(tmp_path, rule_yaml(id=good_id))).rules[0].id == good_id


@pytest.mark.parametrize("bad_code", ["too_many_hours", "Too-Many", "1_TOO_MANY", "TOO MANY"])
def test_bad_reason_code_shape(tmp_path: Path, bad_code: str) -> None:
    path = write_ruleset(tmp_path, rule_yaml(code=f"'{bad_code}'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "code: "), "XX-1")
    assert problem.message.startswith("rules.0.code: ")
    assert "UPPER_SNAKE_CASE" in problem.message


def test_bad_action(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(action="block"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "action: block"), "XX-1")
    assert problem.message.startswith("rules.0.action: ")
    assert "'reject'" in problem.message


# ---------------------------------------------------------------------------------------------------
# Type-checking expressions


def test_misspelt_field_suggests_the_right_one(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="projct.status == 'CLOSED'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: projct.status"), "XX-1")
    assert problem.message.startswith("when: ")
    assert "projct" in problem.message
    assert "(did you mean 'project'?)" in problem.message
    assert "`projct.status == 'CLOSED'`" in problem.message  # quotes the expression


def test_misspelt_item_field_suggests_the_right_one(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="hourz > 24"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: hourz"), "XX-1")
    assert "(did you mean 'hours'?)" in problem.message


def test_unknown_attribute_suggests_the_right_one(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="project.stauts == 'CLOSED'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: project.stauts"), "XX-1")
    assert "stauts" in problem.message
    assert "(did you mean 'status'?)" in problem.message


@pytest.mark.parametrize("when", ["hours > 'x'", "project.status < 5", "work_date > 3"])
def test_type_mismatch(tmp_path: Path, when: str) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when=f'"{when}"'))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: "), "XX-1")
    assert problem.message.startswith("when: ")
    assert f"`{when}`" in problem.message
    assert "data type mismatch" in problem.message


def test_when_must_be_boolean(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="hours + 1"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: hours + 1"), "XX-1")
    assert problem.message == "when must be a condition (true or false), but `hours + 1` is float"


def test_when_of_nullable_boolean_suggests_discharging_null(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="contract&.bills_overtime"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: contract"), "XX-1")
    assert "boolean or null" in problem.message
    assert "??" in problem.message


def test_nullable_binding_without_discharge_is_refused(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="contract.hours_per_day > 1"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "when: contract.hours_per_day"), "XX-1")
    assert "nullable" in problem.message
    assert "??" in problem.message  # says how to discharge the null
    assert "`contract.hours_per_day > 1`" in problem.message


def test_requires_makes_a_nullable_binding_type_check(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="contract.hours_per_day > 1", requires="[contract]"))
    ruleset = compile_ruleset(path)
    rule = ruleset.rules[0]
    assert rule.requires == (("contract",),)
    # The rule reads contract, so the ruleset binds it together with what it is resolved from (the project).
    assert {"project", "contract"} <= set(ruleset.bindings)


def test_safe_navigation_discharges_null_without_requires(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(when="(contract&.hours_per_day ?? 0) > 1"))
    assert compile_ruleset(path).rules[0].requires == ()


def test_requires_of_a_nullable_attribute_narrows_it(tmp_path: Path) -> None:
    without = write_ruleset(tmp_path, rule_yaml(when="project.finish_date > work_date"), name="a.yaml")
    assert "nullable" in only_problem(without).message
    narrowed = write_ruleset(
        tmp_path, rule_yaml(when="project.finish_date > work_date", requires="[project.finish_date]"),
        name="b.yaml",
    )
    assert compile_ruleset(narrowed).rules[0].requires == (("project", "finish_date"),)


def test_requires_unknown_symbol(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(requires="[ratez]"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "requires: [ratez]"), "XX-1")
    assert problem.message == "requires ratez: unknown symbol 'ratez'"


def test_requires_unknown_attribute(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(requires="[contract.hours_per_dya]"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "requires: "), "XX-1")
    assert problem.message == "requires contract.hours_per_dya: contract has no attribute 'hours_per_dya'"


def test_requires_of_a_never_null_symbol_is_pointless(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(requires="[hours]"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "requires: "), "XX-1")
    assert "never null" in problem.message


# ---------------------------------------------------------------------------------------------------
# Enrichments


def enrich_rule(**parts: str | None) -> str:
    return rule_yaml(**{"id": "XX-2", "action": "enrich", "code": "FILLED", "message": "filled", **parts})


def test_set_of_an_unknown_field(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{labour_category: \"'X'\"}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert problem.message == "set labour_category: not a time_entry field"


def test_set_with_a_wrong_type(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{hours: \"'abc'\"}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert problem.message == "set hours: `'abc'` is string, hours needs float"


def test_set_of_a_nullable_value_into_a_non_null_field(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{hours: 'contract&.hours_per_day'}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert "can be null" in problem.message
    assert "??" in problem.message


def test_set_of_a_nullable_field_from_a_nullable_value(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{activity_code: 'correction_of'}"))
    [(spec, _)] = compile_ruleset(path).rules[0].assignments
    assert spec.name == "activity_code"


def test_set_of_a_non_null_field_to_null_is_refused(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{time_type: 'null'}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert problem.message.startswith("set time_type: `null`")


def test_set_of_a_nullable_field_to_null_is_accepted(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{activity_code: 'null'}"))
    assert compile_ruleset(path).rules[0].assignments[0][0].name == "activity_code"


def test_set_of_the_item_id_is_refused(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule(set="{entry_id: \"'E-2'\"}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert "cannot be enriched" in problem.message


def test_set_of_a_money_field_needs_a_rounding_rule(tmp_path: Path) -> None:
    rule = enrich_rule(set="{bill_rate: 'hours * 100'}")
    path = write_ruleset(tmp_path, rule)
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "set: {"), "XX-2")
    assert problem.message.startswith("sets money field bill_rate: state the rounding rule")
    rounded = write_ruleset(tmp_path, rule, name="rounded.yaml",
                            extra="rounding: {places: 2, mode: half_up}\n")
    assert compile_ruleset(rounded).rules[0].id == "XX-2"


@pytest.mark.parametrize(("mode", "expected"), [
    ("half_up", ["2.35", "-2.35", "2.36", "2.34", "187.50"]),
    ("half_even", ["2.34", "-2.34", "2.36", "2.34", "187.50"]),
    ("up", ["2.35", "-2.35", "2.36", "2.35", "187.50"]),
    ("down", ["2.34", "-2.34", "2.35", "2.34", "187.50"]),
])
def test_money_rounding_modes(mode: str, expected: list[str]) -> None:
    round_amount = Rounding(places=2, mode=mode).rounder()  # type: ignore[arg-type]
    amounts = [Decimal(text) for text in ("2.345", "-2.345", "2.355", "2.341", "187.5")]
    assert [str(round_amount(amount)) for amount in amounts] == expected  # two places, always
    assert str(Rounding(places=0, mode=mode).rounder()(Decimal("2.5"))) == {
        "half_up": "3", "half_even": "2", "up": "3", "down": "2"}[mode]


def test_enrich_rule_without_set(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, enrich_rule())
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "- id: XX-2"), "XX-2")
    assert "an enrich rule needs a 'set'" in problem.message


def test_reject_rule_with_set(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(set="{billable: false}"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "- id: XX-1"), "XX-1")
    assert "only enrich rules set fields; this rule's action is reject" in problem.message


def test_field_must_be_an_item_field(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(field="hourz"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "field: hourz"), "XX-1")
    assert problem.message == "field 'hourz' is not a time_entry field"


# ---------------------------------------------------------------------------------------------------
# Duplicates


def test_duplicate_rule_id(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(), rule_yaml(when="hours < 0"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "- id: XX-1", occurrence=2), "XX-1")
    assert problem.message == "rule id appears twice (first as rule #1)"


def test_the_same_version_twice_is_refused(tmp_path: Path) -> None:
    first = write_ruleset(tmp_path, name="a.yaml", ruleset="same")
    second = write_ruleset(tmp_path, name="b.yaml", ruleset="same", order=20)
    with pytest.raises(ProblemsError) as caught:
        load_rulesets(tmp_path)
    [problem] = caught.value.problems
    assert problem.path == str(second)
    assert problem.line == line_with(second, "ruleset: same")
    assert problem.message == (f"ruleset 'same' version 1.0.0 is also defined in {first}; a published version is "
                               "immutable: give this one a new version number")


def test_two_versions_in_force_on_one_day_are_refused(tmp_path: Path) -> None:
    first = write_ruleset(tmp_path, name="a.yaml", ruleset="same")
    second = write_ruleset(tmp_path, name="b.yaml", ruleset="same", version="1.1.0")
    [problem] = problems_of_bundle(tmp_path)
    assert problem.path == str(second)
    assert problem.message == (f"ruleset 'same' version 1.1.0 takes effect on 2026-01-01, as version 1.0.0 does "
                               f"({first}); one version is in force on a day")


def test_versions_must_run_in_the_same_place(tmp_path: Path) -> None:
    first = write_ruleset(tmp_path, name="a.yaml", ruleset="same")
    write_ruleset(tmp_path, name="b.yaml", ruleset="same", version="2.0.0", effective_from="2026-11-15", order=20)
    [problem] = problems_of_bundle(tmp_path)
    assert problem.message == (f"ruleset 'same' version 2.0.0 must apply to the same items in the same order as "
                               f"version 1.0.0 ({first}): applies_to time_entry, order 10")


def test_versions_of_a_ruleset_load_side_by_side(tmp_path: Path) -> None:
    write_ruleset(tmp_path, name="a.yaml", ruleset="same")
    write_ruleset(tmp_path, name="b.yaml", ruleset="same", version="2.0.0", effective_from="2026-11-15")
    loaded = load_rulesets(tmp_path).for_kind("time_entry")
    assert [(r.id, r.version) for r in loaded] == [("same", "1.0.0"), ("same", "2.0.0")]


def problems_of_bundle(directory: Path) -> list[Problem]:
    with pytest.raises(ProblemsError) as caught:
        load_rulesets(directory)
    return caught.value.problems


# ---------------------------------------------------------------------------------------------------
# Aggregates


@pytest.mark.parametrize(("aggregate", "message"), [
    ("{sum: worker_id, by: [worker_id]}", "aggregates.total.sum: `worker_id` is string, not a decimal"),
    ("{sum: hours, by: [wroker_id]}", "aggregates.total.by: unknown symbol: 'wroker_id' (did you mean 'worker_id'?)"),
    ("{sum: hours, by: [worker_id], start: 10}", "aggregates.total: Value error, start and limit apply to running "
                                                 "totals: add running: true"),
    ("{sum: hours}", "aggregates.total: Value error, say what makes a group: by (a list of expressions), each (a "
                     "list), or both"),
    ("{each: custom, running: true}", "aggregates.total.each: `custom` is mapping, not a list"),
    ("{each: source_ref, running: true, limit: 1}",
     "aggregates.total: Value error, a limit applies to one running total per item: it cannot be used with each"),
    ("{sum: hours, by: [worker_id], rounded: true}", "aggregates.total.rounded: state the rounding rule in the "
                                                     "ruleset (rounding: {places: 2, mode: half_up})"),
])
def test_a_bad_aggregate_is_refused_naming_it(tmp_path: Path, aggregate: str, message: str) -> None:
    path = write_ruleset(tmp_path, extra=f"aggregates:\n  total: {aggregate}\n")
    problem = only_problem(path)
    assert problem.message.startswith(message), problem.message
    assert problem.line == line_with(path, "total:")


# ---------------------------------------------------------------------------------------------------
# Messages and params


def test_message_with_an_unclosed_brace(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(message="'{hours hours is too many'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "message: "), "XX-1")
    assert problem.message.startswith("message: a '{' in the message is never closed")
    assert "{{" in problem.message  # says how to write a literal brace


def test_message_with_a_stray_closing_brace(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(message="'hours} is too many'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "message: "), "XX-1")
    assert "has no opening '{'" in problem.message


def test_message_literal_braces_are_fine(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(message="'{{literal}} {hours}'"))
    parts = compile_ruleset(path).rules[0].message.parts
    assert parts[0] == "{literal} "
    assert len(parts) == 2


def test_message_placeholder_with_an_unknown_symbol(tmp_path: Path) -> None:
    path = write_ruleset(tmp_path, rule_yaml(message="'too many {hourz}'"))
    problem = only_problem(path)
    assert_names(problem, path, line_with(path, "message: "), "XX-1")
    assert problem.message.startswith("message placeholder: ")
    assert "(did you mean 'hours'?)" in problem.message
    assert "`hourz`" in problem.message


@pytest.mark.parametrize(
    ("value", "label"),
    [("{a: 1}", "mapping"), ("[]", "empty list"), ("[1, x]", "mixed list"), ("null", "null")],
)
def test_params_of_unsupported_type(tmp_path: Path, value: str, label: str) -> None:
    path = write_ruleset(tmp_path, extra=f"params:\n  limits: {value}\n")
    problem = only_problem(path)
    assert problem.path == str(path)
    assert problem.line == line_with(path, "  limits:"), label
    assert problem.message.startswith("params.limits: a param is a string, number, boolean, date")


def test_params_are_typed(tmp_path: Path) -> None:
    ok = write_ruleset(
        tmp_path, rule_yaml(when="hours > params.limit and activity_code in params.codes"),
        extra="params:\n  limit: 12.5\n  codes: [PTO, ADMIN]\n",
    )
    ruleset = compile_ruleset(ok)
    assert set(ruleset.params) == {"limit", "codes"}
    assert ruleset.params["codes"] == ("PTO", "ADMIN")
    wrong = write_ruleset(
        tmp_path, rule_yaml(when="hours > params.codes"), name="wrong.yaml",
        extra="params:\n  codes: [PTO, ADMIN]\n",
    )
    problem = only_problem(wrong)
    assert_names(problem, wrong, line_with(wrong, "when: "), "XX-1")
    unknown = write_ruleset(
        tmp_path, rule_yaml(when="hours > params.limt"), name="unknown.yaml", extra="params:\n  limit: 12\n",
    )
    assert "(did you mean 'limit'?)" in only_problem(unknown).message


# ---------------------------------------------------------------------------------------------------
# All problems, all or nothing


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    path = write_ruleset(
        tmp_path,
        rule_yaml(id="AA-1", when="projct.status == 'X'"),
        rule_yaml(id="AA-2", when="hours + 1"),
        rule_yaml(id="AA-3", requires="[ratez]"),
        rule_yaml(id="AA-4", message="'{nope}'"),
        enrich_rule(id="AA-5", set="{hours: \"'abc'\"}"),
    )
    problems = problems_of(path)
    assert [p.subject for p in problems] == ["AA-1", "AA-2", "AA-3", "AA-4", "AA-5"]
    assert [p.line for p in problems] == [
        line_with(path, "projct.status"),
        line_with(path, "hours + 1"),
        line_with(path, "[ratez]"),
        line_with(path, "'{nope}'"),
        line_with(path, "set: {"),
    ]


def test_every_validation_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    path = write_ruleset(
        tmp_path,
        rule_yaml(id="bad"),
        rule_yaml(id="XX-2", code="lower"),
        rule_yaml(id="XX-3", when=None),
    )
    problems = problems_of(path)
    assert [(p.subject, p.line) for p in problems] == [
        ("bad", line_with(path, "- id: bad")),
        ("XX-2", line_with(path, "code: lower")),
        ("XX-3", line_with(path, "- id: XX-3")),
    ]


def test_one_bad_file_refuses_the_whole_directory(tmp_path: Path) -> None:
    write_ruleset(tmp_path, name="10-good.yaml", ruleset="good")
    nested = tmp_path / "more"
    nested.mkdir()
    write_ruleset(nested, name="20-also-good.yml", ruleset="also-good", order=20)
    bad = write_ruleset(tmp_path, rule_yaml(when="projct.status == 'X'"), name="30-bad.yaml",
                        ruleset="bad", order=30)
    with pytest.raises(ProblemsError) as caught:
        load_rulesets(tmp_path)
    [problem] = caught.value.problems
    assert problem.path == str(bad)
    assert str(bad) in str(caught.value)  # the exception text lists the problems
    bad.unlink()
    bundle = load_rulesets(tmp_path)
    assert [r.id for r in bundle.for_kind("time_entry")] == ["good", "also-good"]


def test_problems_of_several_files_are_all_reported(tmp_path: Path) -> None:
    one = write_ruleset(tmp_path, rule_yaml(when="hours + 1"), name="one.yaml", ruleset="one")
    two = write_ruleset(tmp_path, rule_yaml(code="bad"), name="two.yaml", ruleset="two")
    with pytest.raises(ProblemsError) as caught:
        load_rulesets(tmp_path)
    assert [p.path for p in caught.value.problems] == [str(one), str(two)]


def test_rulesets_run_in_declared_order(tmp_path: Path) -> None:
    write_ruleset(tmp_path, name="a.yaml", ruleset="late", order=50)
    write_ruleset(tmp_path, name="b.yaml", ruleset="early", order=5)
    bundle = load_rulesets(tmp_path)
    assert [r.id for r in bundle.for_kind("time_entry")] == ["early", "late"]
    assert bundle.for_kind("expense") == ()


def test_an_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError, match="no ruleset files"):
        load_rulesets(tmp_path)
    with pytest.raises(ProblemsError, match="no such ruleset directory"):
        load_rulesets(tmp_path / "absent")


def test_the_shipped_rulesets_load() -> None:
    bundle = load_rulesets(Path(__file__).resolve().parent.parent / "rulesets")
    assert [r.id for r in bundle.for_kind("time_entry")] == [
        "batch-checks", "project-status", "labor-category", "billing-eligibility", "rate-cards", "contract-terms",
    ]
