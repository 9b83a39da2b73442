"""Unit tests for rules.compiler: every node kind and the tricky corners against rule-engine's interpreter."""

from __future__ import annotations

import collections
import datetime
import decimal
import operator
import threading
from decimal import Decimal
from typing import Any

import dateutil.tz
import pytest
import rule_engine
from rule_engine import DataType as T
from rule_engine import errors

from tollgate.rules.codegen.expressions import (
    CompiledExpression,
    ExpressionCodegen,
    NotCompilableError,
    compile_expression,
)

UTC = dateutil.tz.tzutc()
PROJECT = T.OBJECT(
    "project",
    {
        "status": T.STRING,
        "start_date": T.DATETIME,
        "finish_date": T.NULLABLE(T.DATETIME),
        "billable": T.BOOLEAN,
    },
    accessor=operator.getitem,
)
RATE = T.OBJECT("rate", {"bill_rate": T.FLOAT}, accessor=operator.getitem)


def typed_context(**kwargs: Any) -> rule_engine.Context:
    types = {
        "hours": T.FLOAT,
        "work_date": T.DATETIME,
        "bill_rate": T.NULLABLE(T.FLOAT),
        "project": PROJECT,
        "rate": T.NULLABLE(RATE),
        "custom": T.MAPPING(T.STRING, T.STRING),
        "tags": T.ARRAY(T.STRING),
        "name": T.STRING,
        "flag": T.BOOLEAN,
        "span": T.TIMEDELTA,
    }
    return rule_engine.Context(type_resolver=types, default_timezone="utc", mapping_attribute_lookup=False, **kwargs)


TYPED = typed_context()
UNTYPED = rule_engine.Context(default_timezone="utc")
ITEM: dict[str, Any] = {
    "hours": Decimal("7.5"),
    "work_date": datetime.datetime(2024, 3, 4, 9, 30, tzinfo=UTC),
    "bill_rate": None,
    "project": {
        "status": "CLOSED",
        "start_date": datetime.datetime(2024, 1, 1, tzinfo=UTC),
        "finish_date": None,
        "billable": True,
    },
    "rate": {"bill_rate": Decimal("120.50")},
    "custom": {"cost_center": "X1"},
    "tags": ("alpha", "beta"),
    "name": "Bob",
    "flag": False,
    "span": datetime.timedelta(days=2),
}


def outcome(function: Any, thing: Any) -> tuple[str, Any]:
    try:
        return "value", function(thing)
    except Exception as error:
        return "error", type(error)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal) and a.is_nan():
        return b.is_nan()
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check(text: str, thing: Any = None, context: rule_engine.Context = TYPED, compiled: bool = True) -> Any:
    """Compile *text*, compare with the interpreter on *thing*, return the interpreter's outcome."""
    expression = compile_expression(text, context)
    assert expression.is_compiled is compiled, expression.fallback_reason
    thing = ITEM if thing is None else thing
    expected, actual = outcome(expression.rule.evaluate, thing), outcome(expression.evaluate, thing)
    assert expected[0] == actual[0] and same(expected[1], actual[1]), (text, expected, actual, expression.source)
    return expected


@pytest.mark.parametrize(
    "text",
    [
        "project.status in ['CLOSED', 'ON_HOLD']",
        "hours > 0 and hours <= 24",
        "(rate&.bill_rate ?? 0) * 1.5",
        "work_date < project.start_date or work_date > (project.finish_date ?? work_date)",
        "bill_rate ?? hours",
        "not project.billable",
        "project.billable ? 'yes' : 'no'",
        "name + '!'",
        "name.length",
        "name.as_upper",
        "name.as_lower.is_empty",
        "work_date.year + work_date.month",
        "work_date.date",
        "work_date.weekday",
        "work_date + span",
        "work_date - project.start_date",
        "span.days",
        "-hours",
        "-span",
        "hours ** 2",
        "hours // 2",
        "hours % 2",
        "hours / 4",
        "hours.to_str",
        "hours.floor",
        "tags[0]",
        "tags[-1]",
        "tags[1:]",
        "tags[:1]",
        "tags&[7]",
        "custom['cost_center']",
        "custom&['missing']",
        "'a' in tags",
        "'ob' in name",
        "[tag.as_upper for tag in tags]",
        "[tag for tag in tags if tag != 'alpha']",
        "[[t for t in tags] for t in tags]",
        "[tag.length for tag in tags][0] == 5",
        "name =~ 'B.b'",
        "name =~~ 'o'",
        "name !~ 'x'",
        "name !~~ 'o'",
        "name == 'Bob' and flag == false",
        "name != 'Bob' or hours != 7.5",
        "$abs(-hours)",
        "$min([hours, 3])",
        "$now > work_date",
        "{'a': hours}",
        "{'a': 1}",
        "{1, 2, hours}",
        "[hours, name]",
        "'abc'[1]",
        "custom.keys",
        "tags.to_set",
    ],
)
def test_typed_expressions_match_interpreter(text: str) -> None:
    check(text, compiled=text != "{'a': hours}")


@pytest.mark.parametrize(
    "thing",
    [
        {"a": Decimal(1), "b": Decimal(2)},
        {"a": "x", "b": "y"},
        {"a": None, "b": None},
        {"a": True, "b": Decimal(1)},
        {"a": (Decimal(1), Decimal(2)), "b": (Decimal(1),)},
        {"a": {"b": Decimal(1)}, "b": "b"},
        {"a": 1.5, "b": 2},
        {"a": [1, None], "b": [1, "x"]},
        {"a": datetime.date(2024, 1, 2), "b": datetime.datetime(2024, 1, 2)},
        {"a": datetime.timedelta(1), "b": datetime.timedelta(2)},
        {"a": b"ab", "b": b"a"},
        {"a": {1, 2}, "b": {2}},
        {"a": Decimal("NaN"), "b": Decimal(1)},
        {"a": Decimal("Infinity"), "b": Decimal("-Infinity")},
        {"b": 1},
        "not a mapping",
    ],
)
@pytest.mark.parametrize(
    "text",
    [
        "a",
        "a + b",
        "a - b",
        "a * b",
        "a / b",
        "a == b",
        "a != b",
        "a < b",
        "a >= b",
        "a and b",
        "a or b",
        "not a",
        "a ?? b",
        "b in a",
        "a[0]",
        "a[b]",
        "a[1:]",
        "a.b",
        "a&.b",
        "a.length",
        "a.to_str",
        "-a",
        "a =~ 'x'",
        "a =~ b",
        "a & b",
        "a << b",
        "a | b",
        "[x for x in a]",
        "a ? b : 1",
        "$abs(a)",
        "a(b)",
    ],
)
def test_untyped_context_matches_interpreter(text: str, thing: Any) -> None:
    check(text, thing, UNTYPED)


@pytest.mark.parametrize(
    ("text", "thing", "error"),
    [
        ("hours / 0", ITEM, errors.ArithmeticError),
        ("hours // 0", ITEM, errors.ArithmeticError),
        ("hours % 0", ITEM, errors.ArithmeticError),
        ("missing_symbol", {}, errors.SymbolResolutionError),
        ("tags[9]", ITEM, errors.LookupError),
        ("custom['nope']", ITEM, errors.LookupError),
        ("tags[0.5]", ITEM, errors.EvaluationError),
        ("name =~ '('", ITEM, None),  # invalid literal regexes fail at parse time
        ("a < b", {"a": Decimal(1), "b": "x"}, errors.EvaluationError),
        ("a + b", {"a": Decimal(1), "b": "x"}, errors.EvaluationError),
        ("a * b", {"a": "x", "b": Decimal(1)}, errors.EvaluationError),
        ("a =~ b", {"a": "x", "b": "("}, errors.RegexSyntaxError),
        ("a =~ 'x'", {"a": Decimal(1)}, errors.EvaluationError),
        ("a.nope", {"a": "x"}, errors.AttributeResolutionError),
        ("a[0]", {"a": None}, errors.EvaluationError),
        ("[x for x in a]", {"a": "abc"}, errors.EvaluationError),
        ("a < b", {"a": Decimal("NaN"), "b": Decimal(1)}, decimal.InvalidOperation),
    ],
)
def test_errors_match_interpreter(text: str, thing: Any, error: type[Exception] | None) -> None:
    context = TYPED if "hours" in text or "tags" in text or "custom" in text or "name" in text else UNTYPED
    if error is None:
        with pytest.raises(errors.RegexSyntaxError):
            compile_expression(text, context)
        return
    assert check(text, thing, context) == ("error", error)


def test_nullable_attribute_on_null_raises() -> None:
    context = rule_engine.Context(type_resolver={"rate": T.NULLABLE(RATE)})
    with pytest.raises(errors.EvaluationError):
        compile_expression("rate.bill_rate", context)  # parse time: must discharge
    assert check("rate&.bill_rate", {"rate": None}, context) == ("value", None)
    assert check("rate&.bill_rate ?? 1", {"rate": None}, context) == ("value", Decimal(1))


@pytest.mark.parametrize(
    ("thing", "error"),
    [
        ({**ITEM, "hours": "8"}, errors.SymbolTypeError),
        ({**ITEM, "hours": 8}, None),  # ints are coerced to Decimal
        ({**ITEM, "hours": None}, None),  # null passes any declared type
        ({**ITEM, "work_date": datetime.datetime(2024, 1, 1)}, None),  # naive: default timezone applied
        ({**ITEM, "tags": ["a", None]}, errors.SymbolTypeError),
        ({**ITEM, "tags": ["a", 1]}, None),  # mixed members are not checked by rule-engine
        ({**ITEM, "custom": {"a": 1}}, errors.SymbolTypeError),
        ({**ITEM, "project": None}, TypeError),  # operator.getitem(None, ...)
        ({**ITEM, "project": {"status": "X"}}, errors.ObjectAttributeError),
        ({**ITEM, "project": {**ITEM["project"], "status": 5}}, None),  # OBJECT attributes are unchecked
    ],
)
def test_malformed_items_raise_like_interpreter(thing: dict[str, Any], error: type[Exception] | None) -> None:
    for text in ("hours + 1", "work_date", "tags", "custom", "project.status", "project.start_date"):
        result = check(text, thing)
        if error is not None and result[0] == "error":
            assert result[1] is error


def test_default_value_is_used_for_missing_symbols_and_attributes() -> None:
    context = typed_context(default_value="dflt")
    assert check("name", {}, context) == ("value", "dflt")
    assert check("project.status", {"project": {}}, context) == ("value", "dflt")
    assert check("hours", {}, context)[0] == "error"  # the default is type checked


def test_strict_equality_and_bool_results() -> None:
    assert check("a == b", {"a": True, "b": Decimal(1)}, UNTYPED) == ("value", False)
    assert check("a and b", {"a": "x", "b": "y"}, UNTYPED) == ("value", True)
    assert check("a or b", {"a": "", "b": Decimal(0)}, UNTYPED) == ("value", False)
    assert check("b in a", {"a": (Decimal(1),), "b": True}, UNTYPED) == ("value", True)


def test_nested_comprehension_variable_resolves_to_outermost_binding() -> None:
    # rule-engine searches assignment scopes outermost first
    assert check("[[x for x in [4, 5]] for x in [1, 2]]", {}, UNTYPED) == (
        "value",
        ((Decimal(1), Decimal(1)), (Decimal(2), Decimal(2))),
    )


def test_mapping_results_are_fresh_ordered_dicts() -> None:
    expression = compile_expression("{'a': 1}", UNTYPED)
    first = expression.evaluate({})
    first["b"] = 2
    assert expression.evaluate({}) == {"a": Decimal(1)}
    assert type(expression.evaluate({})) is type(expression.rule.evaluate({}))


def test_decimal_context_is_honoured_in_other_threads() -> None:
    context = rule_engine.Context(decimal_context=decimal.Context(prec=3))
    expression = compile_expression("a / b", context)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(expression.evaluate({"a": 1, "b": 3})))
    thread.start()
    thread.join()
    assert results == [expression.rule.evaluate({"a": 1, "b": 3})] == [Decimal("0.333")]
    assert decimal.getcontext().prec != 3


def test_nan_ordering_uses_the_configured_traps() -> None:
    lenient = decimal.Context(traps=[])
    context = rule_engine.Context(decimal_context=lenient)
    assert check("a < 1", {"a": Decimal("NaN")}, context) == ("value", False)
    assert check("a < 1", {"a": Decimal("NaN")}, UNTYPED) == ("error", decimal.InvalidOperation)


def test_mapping_literal_with_symbols_falls_back() -> None:
    expression = compile_expression("{'a': hours}", TYPED)
    assert expression.fallback_reason == "mapping literals with non-constant members are not compiled"


def test_long_logic_chains_are_flattened_and_deep_nesting_falls_back() -> None:
    check(" or ".join(f"hours == {n}" for n in range(150)))
    check(" and ".join(["name != 'x'"] * 150) + " and hours > 1")
    deep = compile_expression(" + ".join(["hours"] * 150), TYPED)
    assert deep.fallback_reason == "expression nests too deeply for the Python compiler"
    assert deep.evaluate(ITEM) == deep.rule.evaluate(ITEM)


def test_fallback_is_reported() -> None:
    expression = compile_expression("name =~ 'B(.)b' and $re_groups[0] == 'o'", TYPED)
    assert not expression.is_compiled
    assert expression.fallback_reason == "regex group capture ($re_groups) is not compiled"
    assert expression.source is None
    assert expression.matches(ITEM) is True


def test_api_attributes() -> None:
    expression = compile_expression("hours > 1", TYPED)
    assert isinstance(expression, CompiledExpression)
    assert expression.is_compiled and expression.fallback_reason is None
    assert expression.result_type == T.BOOLEAN
    assert expression.text == "hours > 1" and expression.context is TYPED
    assert expression.source is not None and "def evaluate(thing)" in expression.source
    assert expression.matches(ITEM) is True
    assert compile_expression("1 + 1").evaluate({}) == Decimal(2)


def test_user_text_is_never_pasted_into_source() -> None:
    # string literals and names go through repr() or namespace constants, never into the source verbatim
    text = """name == 'x" + __import__("os").getpid().__str__() + "' and project.status != '\\''"""
    expression = compile_expression(text, TYPED)
    assert expression.is_compiled and expression.source is not None
    assert "__import__" not in expression.source.replace(repr('x" + __import__("os").getpid().__str__() + "'), "")
    check(text, {**ITEM, "name": 'x" + __import__("os").getpid().__str__() + "'})


def test_fragment_fuses_expressions_into_one_function() -> None:
    namespace: dict[str, Any] = {}
    codegen = ExpressionCodegen(TYPED, namespace)
    texts = ["hours > 1", "project.status == 'CLOSED'", "project.billable and hours < 10"]
    rules = [rule_engine.Rule(text, TYPED) for text in texts]
    parts = [codegen.fragment(rule.statement.expression) for rule in rules]
    source = codegen.function_source("evaluate_all", "(" + ", ".join(parts) + ",)")
    exec(compile(source, "<fused>", "exec"), namespace)
    assert namespace["evaluate_all"](ITEM) == tuple(rule.evaluate(ITEM) for rule in rules)
    # each symbol gets one function-local cache, so it is read from thing at most once per call
    assert len([line for line in source.splitlines() if line.strip().startswith("_s")]) == 2


def test_fragment_with_custom_symbol_reader() -> None:
    namespace: dict[str, Any] = {"values": {"hours": Decimal(3)}}
    codegen = ExpressionCodegen(TYPED, namespace)
    body = codegen.fragment(
        rule_engine.Rule("hours * 2", TYPED).statement.expression, symbol=lambda n: f"values[{n!r}]"
    )
    exec(compile(codegen.function_source("f", body), "<f>", "exec"), namespace)
    assert namespace["f"](None) == Decimal(6)


def test_not_compilable_is_raised_by_fragment() -> None:
    codegen = ExpressionCodegen(UNTYPED, {})
    with pytest.raises(NotCompilableError, match="re_groups"):
        codegen.fragment(rule_engine.Rule("$re_groups", UNTYPED).statement.expression)


def test_custom_resolver_and_accessor() -> None:
    class Thing:
        def __init__(self, **values: Any) -> None:
            self.__dict__.update(values)

    context = rule_engine.Context(resolver=rule_engine.resolve_attribute)
    check("a + 1", Thing(a=1), context)
    check("missing", Thing(a=1), context)
    obj = T.OBJECT("obj", {"x": T.FLOAT})  # default accessor: getattr
    context = rule_engine.Context(type_resolver={"o": obj})
    check("o.x * 2", {"o": Thing(x=2)}, context)
    check("o.x", {"o": Thing()}, context)


# -- coercion fast paths --------------------------------------------------------------------------------


class _BadFloat(float):
    """A float whose repr is not a number: rule-engine's coercion raises decimal.InvalidOperation for it."""

    def __repr__(self) -> str:
        return "bad"


class _BadList(list[Any]):
    """A list whose iteration fails: rule-engine's coercion raises for it."""

    def __iter__(self) -> Any:
        raise ValueError("no iteration")


def _self_referential() -> dict[str, Any]:
    value: dict[str, Any] = {"x": "y"}
    value["self"] = value  # coercion recurses without end: RecursionError
    return value


# values and whether rule-engine's coercion of them raises
OBJECT_VALUES: list[tuple[Any, bool]] = [
    (None, False),
    ({"bill_rate": Decimal("1.5")}, False),
    ({"bill_rate": 1, "when": datetime.date(2024, 1, 1), "ratio": 0.5, "at": datetime.datetime(2024, 1, 1)}, False),
    ({1: "non-string key", 2.5: None}, False),
    ({"nested": {"list": [1, 2]}, "tuple": (Decimal(1),)}, False),
    (collections.OrderedDict(a=1), False),
    ("text", False),
    (5, False),
    (datetime.date(2024, 1, 1), False),
    ([1, {"a": 2}], False),
    ({"bill_rate": _BadFloat(1.5)}, True),
    ({"nested": {"deep": [_BadFloat(1)]}}, True),
    ({_BadFloat(1): "key"}, True),
    ({"list": _BadList([1])}, True),
    (_self_referential(), True),
    (_BadFloat(2.5), True),
    (_BadList([1]), True),
]


@pytest.mark.parametrize(("value", "raises"), OBJECT_VALUES, ids=repr)
@pytest.mark.parametrize("text", ["rate == null", "rate != null", "null == rate", "null != rate"])
def test_null_test_of_object_skips_coercion_but_raises_like_interpreter(text: str, value: Any, raises: bool) -> None:
    result = check(text, {**ITEM, "rate": value})
    assert (result[0] == "error") is raises, result
    expression = compile_expression(text, TYPED)
    assert expression.source is not None and "new_value" not in expression.source


@pytest.mark.parametrize("value", [value for value, _ in OBJECT_VALUES], ids=repr)
@pytest.mark.parametrize("text", ["a == null", "null != a", "(a ?? b) == null", "(c ? a : b) != null"])
def test_null_test_of_untyped_values_raises_like_interpreter(text: str, value: Any) -> None:
    check(text, {"a": value, "b": value, "c": True}, UNTYPED)
    check(text, {"a": None, "b": value, "c": False}, UNTYPED)


def test_null_test_keeps_symbol_read_and_type_check_errors() -> None:
    assert check("rate == null", {}) == ("error", errors.SymbolResolutionError)
    assert check("null != rate", {}) == ("error", errors.SymbolResolutionError)
    assert check("rate == null", {}, typed_context(default_value=None)) == ("value", True)
    assert check("rate != null", {}, typed_context(default_value={"bill_rate": 1})) == ("value", True)
    assert check("rate == null", {}, typed_context(default_value=_BadFloat(1))) == ("error", decimal.InvalidOperation)
    # a scalar symbol keeps its runtime type check
    assert check("bill_rate == null", {**ITEM, "bill_rate": "x"}) == ("error", errors.SymbolTypeError)
    assert check("null != bill_rate", {**ITEM, "bill_rate": Decimal(1)}) == ("value", True)
    assert check("name == null", {**ITEM, "name": None}) == ("value", True)
    assert check("project == null", {**ITEM, "project": {}}) == ("value", False)


@pytest.mark.parametrize("value", [None, datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1), _BadFloat(1), [1]])
def test_null_test_of_object_attribute(value: Any) -> None:
    thing = {**ITEM, "project": {**ITEM["project"], "finish_date": value}}
    for text in ("project.finish_date == null", "project.finish_date != null", "null == project&.finish_date"):
        assert check(text, thing)[0] == ("error" if isinstance(value, _BadFloat) else "value")
    assert check("rate&.bill_rate == null", {**ITEM, "rate": None}) == ("value", True)
    missing = {**ITEM, "project": {"status": "X"}}
    assert check("project.finish_date == null", missing) == ("error", errors.ObjectAttributeError)
    assert check("project.finish_date == null", missing, typed_context(default_value=None)) == ("value", True)


def test_coalesce_and_ternary_of_objects_feed_attribute_reads_uncoerced() -> None:
    context = rule_engine.Context(type_resolver={"a": T.NULLABLE(RATE), "b": RATE, "flag": T.BOOLEAN})
    for text in ("(a ?? b).bill_rate", "(flag ? a : b)&.bill_rate", "(a ?? b) == null", "(flag ? b : a) != null"):
        expression = compile_expression(text, context)
        assert expression.source is not None and "new_value" not in expression.source.split("if")[0]
        for a in (None, {"bill_rate": Decimal(2)}, {"other": 1}):
            for flag in (True, False, None):
                check(text, {"a": a, "b": {"bill_rate": 1}, "flag": flag}, context)
        check(text, {"a": None, "b": None, "flag": False}, context)


@pytest.mark.parametrize(
    "value",
    [
        ("a", Decimal(1), None, True, datetime.timedelta(1), b"x", datetime.datetime(2024, 1, 1)),
        ["a", "b"],
        ("a", 1),
        ("a", ["b"]),
        ("a", datetime.date(2024, 1, 1)),
        {"a": "b", "c": datetime.datetime(2024, 1, 1)},
        {"a": 1},
        {1: "a"},
        collections.OrderedDict(a="b"),
        {"a": ("b",)},
    ],
    ids=repr,
)
def test_containers_of_rule_engine_values_coerce_to_equal_copies(value: Any) -> None:
    for text in ("a", "a == a", "'a' in a", "a.length"):
        check(text, {"a": value}, UNTYPED)
    result = compile_expression("a", UNTYPED).evaluate({"a": value})
    if isinstance(value, dict):
        assert type(result) is collections.OrderedDict and result is not value  # a fresh mapping, like coerce_value


def test_object_list_parameter_membership() -> None:
    params = T.OBJECT("params", {"statuses": T.ARRAY(T.STRING)}, accessor=operator.getitem)
    context = rule_engine.Context(type_resolver={"params": params, "name": T.STRING})
    for statuses in (("A", "B"), ["A", "B"], ("A", 1), (Decimal(1), "A"), ("A", [1]), _BadList(["A"]), None):
        for name in ("A", "C"):
            check("name in params.statuses", {"params": {"statuses": statuses}, "name": name}, context)


def test_logic_over_literal_comparisons_needs_no_bool_wrapper() -> None:
    for text in ("hours < 0 and name == 'x'", "hours == 1 or null != bill_rate or project.status != 'X'"):
        expression = compile_expression(text, TYPED)
        assert expression.source is not None and "bool(" not in expression.source
        for thing in (ITEM, {**ITEM, "hours": Decimal(-1), "name": "x"}, {**ITEM, "name": None, "hours": None}):
            result = check(text, thing)
            assert result[0] == "error" or type(result[1]) is bool
    # a symbol may be null, and comparing two symbols may return anything their types' == returns
    for text in ("flag and hours < 1", "work_date < project.start_date or flag"):
        expression = compile_expression(text, TYPED)
        assert expression.source is not None and "bool(" in expression.source
