"""Differential tests: generated expressions and items, compiled result == rule-engine's interpreter."""

from __future__ import annotations

import datetime
import operator
from decimal import Decimal
from typing import Any

import dateutil.tz
import rule_engine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rule_engine import DataType as T
from rule_engine import errors

from tollgate.rules.codegen.expressions import compile_expression

UTC = dateutil.tz.tzutc()
SETTINGS = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# -- values ---------------------------------------------------------------------------------------------

decimals = st.one_of(
    st.integers(-5, 30).map(Decimal),
    st.sampled_from([Decimal("0.5"), Decimal("-2.25"), Decimal("1E+3"), Decimal("NaN"), Decimal("Infinity")]),
)
texts = st.text(alphabet="abAB. ", max_size=4)
datetimes = st.sampled_from(
    [
        datetime.datetime(2024, 1, 1, tzinfo=UTC),
        datetime.datetime(2024, 6, 30, 12, 30, tzinfo=UTC),
        datetime.datetime(2024, 6, 30, 12, 30),  # naive: gets the default timezone
    ]
)
timedeltas = st.sampled_from([datetime.timedelta(0), datetime.timedelta(days=1, hours=2)])
scalars = st.one_of(decimals, texts, st.booleans(), st.none(), datetimes, timedeltas)
# raw python values that rule-engine coerces at its boundary
python_values = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.0]), st.lists(st.integers(0, 3), max_size=2))
values = st.recursive(
    st.one_of(scalars, python_values),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(texts, inner, max_size=2),
    ),
    max_leaves=5,
)

# -- expressions ----------------------------------------------------------------------------------------

BINARY = [
    "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or", "??", "in",
    "&", "|", "^", "=~", "!~", "=~~", "!~~",
]  # fmt: skip
ATTRIBUTES = [
    "length", "is_empty", "as_upper", "as_lower", "to_str", "to_int", "to_flt", "year", "month", "date",
    "days", "keys", "values", "to_ary", "to_set", "floor", "ceiling", "is_nan", "total_seconds",
]  # fmt: skip


def string_literal(value: str) -> str:
    return "'" + value + "'"  # the alphabet has no quotes or backslashes


literals = st.one_of(
    st.integers(0, 12).map(str),
    st.sampled_from(["1.5", "-2", "0.25", "inf", "nan", "true", "false", "null", "d'2024-03-04'", "t'P1D'"]),
    texts.map(string_literal),
)


def expressions(symbols: list[str], attributes: list[str]) -> st.SearchStrategy[str]:
    atoms = st.one_of(literals, st.sampled_from(symbols))

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["not ", "-"]), inner).map(lambda t: f"({t[0]}{t[1]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(inner, st.sampled_from([".", "&."]), st.sampled_from(attributes)).map("".join),
            st.tuples(inner, st.sampled_from(["[", "&["]), inner).map(lambda t: f"{t[0]}{t[1]}{t[2]}]"),
            st.tuples(inner, st.integers(-2, 2), st.one_of(st.none(), st.integers(-2, 3))).map(
                lambda t: f"{t[0]}[{t[1]}:{'' if t[2] is None else t[2]}]"
            ),
            st.tuples(inner, st.sampled_from(["<<", ">>"]), st.integers(0, 3)).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.lists(inner, max_size=3).map(lambda members: "[" + ", ".join(members) + "]"),
            st.lists(inner, min_size=1, max_size=2).map(lambda members: "{" + ", ".join(members) + "}"),
            st.tuples(inner, inner, st.one_of(st.none(), inner)).map(
                lambda t: f"[{t[0]} for v in {t[1]}{'' if t[2] is None else ' if ' + t[2]}]"
            ),
            st.tuples(st.sampled_from(["$abs", "$min", "$max", "$sum", "$any"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
        )

    return st.recursive(atoms, extend, max_leaves=6)


# -- comparison -----------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types; Decimals compared exactly (sign, exponent, NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.compare_total(b) == 0
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, datetime.datetime):
        return a == b and a.tzinfo == b.tzinfo
    return bool(a == b)


def outcome(function: Any, thing: Any) -> tuple[str, Any]:
    try:
        return "value", function(thing)
    except Exception as error:
        return "error", type(error)


def assert_matches_interpreter(text: str, context: rule_engine.Context, thing: Any) -> None:
    try:
        rule_engine.Rule(text, context)
    except Exception:
        assume(False)
    compiled = compile_expression(text, context)
    expected, actual = outcome(compiled.rule.evaluate, thing), outcome(compiled.evaluate, thing)
    assert expected[0] == actual[0], (text, thing, expected, actual, compiled.source)
    if expected[0] == "error":
        assert expected[1] is actual[1], (text, thing, expected, actual, compiled.source)
    else:
        assert same(expected[1], actual[1]), (text, thing, expected, actual, compiled.source)


# -- untyped context ------------------------------------------------------------------------------------

UNTYPED = rule_engine.Context(default_timezone="utc")
UNTYPED_SYMBOLS = ["a", "b", "c", "v"]


@SETTINGS
@given(
    text=expressions(UNTYPED_SYMBOLS, [*ATTRIBUTES, "a", "b"]),
    thing=st.dictionaries(st.sampled_from(UNTYPED_SYMBOLS), values, max_size=4),
)
def test_untyped_context(text: str, thing: dict[str, Any]) -> None:
    assert_matches_interpreter(text, UNTYPED, thing)


# -- typed context --------------------------------------------------------------------------------------

PROJECT = T.OBJECT(
    "project",
    {"status": T.STRING, "start": T.DATETIME, "finish": T.NULLABLE(T.DATETIME), "billable": T.BOOLEAN},
    accessor=operator.getitem,
)
RATE = T.OBJECT("rate", {"bill_rate": T.FLOAT, "multiplier": T.NULLABLE(T.FLOAT)}, accessor=operator.getitem)
TYPED = rule_engine.Context(
    type_resolver={
        "hours": T.FLOAT,
        "bill_rate": T.NULLABLE(T.FLOAT),
        "name": T.STRING,
        "flag": T.BOOLEAN,
        "when": T.DATETIME,
        "tags": T.ARRAY(T.STRING),
        "custom": T.MAPPING(T.STRING, T.STRING),
        "project": PROJECT,
        "rate": T.NULLABLE(RATE),
    },
    default_timezone="utc",
    mapping_attribute_lookup=False,
)
TYPED_SYMBOLS = [
    "hours", "bill_rate", "name", "flag", "when", "tags", "custom", "v",
    "project.status", "project.start", "project.finish", "project&.finish", "project.billable",
    "rate&.bill_rate", "rate&.multiplier", "(rate&.multiplier ?? hours)", "(bill_rate ?? 0)",
    "custom['k']", "tags[0]",
]  # fmt: skip


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed values, sometimes malformed ones (a wrong type must raise like the interpreter)."""
    return st.one_of(strategy, strategy, strategy, strategy, st.none(), values)


typed_things = st.fixed_dictionaries(
    {
        "hours": maybe(decimals),
        "bill_rate": maybe(decimals),
        "name": maybe(texts),
        "flag": maybe(st.booleans()),
        "when": maybe(datetimes),
        "tags": maybe(st.lists(texts, max_size=3).map(tuple)),
        "custom": maybe(st.dictionaries(st.sampled_from(["k", "j"]), texts, max_size=2)),
        "project": maybe(
            st.fixed_dictionaries(
                {
                    "status": texts,
                    "start": datetimes,
                    "finish": st.one_of(st.none(), datetimes),
                    "billable": st.booleans(),
                }
            )
        ),
        "rate": st.one_of(
            st.none(),
            st.fixed_dictionaries({"bill_rate": decimals, "multiplier": st.one_of(st.none(), decimals)}),
            st.fixed_dictionaries({"bill_rate": decimals}),
        ),
    }
)


@SETTINGS
@given(text=expressions(TYPED_SYMBOLS, ATTRIBUTES), thing=typed_things)
def test_typed_context(text: str, thing: dict[str, Any]) -> None:
    assert_matches_interpreter(text, TYPED, thing)


@SETTINGS
@given(text=expressions(TYPED_SYMBOLS, ATTRIBUTES), thing=typed_things)
def test_typed_context_with_default_value(text: str, thing: dict[str, Any]) -> None:
    context = rule_engine.Context(
        type_resolver=TYPED._Context__type_resolver,
        default_timezone="utc",
        default_value=Decimal(0),
        mapping_attribute_lookup=False,
    )
    thing = {key: value for key, value in thing.items() if key not in ("hours", "name")}
    assert_matches_interpreter(text, context, thing)


# -- null tests, which skip coercion where it cannot raise ----------------------------------------------


class BadFloat(float):
    """rule-engine's coercion raises decimal.InvalidOperation for a float whose repr is not a number."""

    def __repr__(self) -> str:
        return "bad"


class BadList(list[Any]):
    """rule-engine's coercion raises for a list whose iteration fails."""

    def __iter__(self) -> Any:
        raise ValueError("no iteration")


def self_referential() -> dict[str, Any]:
    value: dict[str, Any] = {"x": "y"}
    value["self"] = value
    return value


# values whose coercion may raise, alone or nested in containers
exotic_values = st.recursive(
    st.one_of(
        values,
        st.builds(BadFloat, st.sampled_from([0.5, 2.0])),
        st.builds(BadList, st.lists(st.integers(0, 3), max_size=2)),
        st.builds(self_referential),
        st.sampled_from([datetime.date(2024, 1, 1), 7, 0.25]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(texts, inner, max_size=3),
        st.dictionaries(st.sampled_from([1, 2.5, "k"]), inner, max_size=2),
    ),
    max_leaves=4,
)


def null_tests(operands: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(operands, st.sampled_from(["==", "!="]), st.booleans()).map(
        lambda t: f"(null {t[1]} {t[0]})" if t[2] else f"({t[0]} {t[1]} null)"
    )


@SETTINGS
@given(
    text=null_tests(
        st.one_of(
            st.sampled_from([*UNTYPED_SYMBOLS, "(a ?? b)", "(c ? a : b)", "(a ?? (b ?? c))"]),
            expressions(UNTYPED_SYMBOLS, [*ATTRIBUTES, "a", "b"]),
        )
    ),
    thing=st.dictionaries(st.sampled_from(UNTYPED_SYMBOLS), exotic_values, max_size=4),
)
def test_untyped_null_tests(text: str, thing: dict[str, Any]) -> None:
    assert_matches_interpreter(text, UNTYPED, thing)


KEEP = object()  # keep the well-formed value of typed_things
TYPED_NULL_OPERANDS = [
    "rate", "project", "bill_rate", "name", "(rate ?? rate)", "(flag ? rate : project)", "(bill_rate ?? hours)",
]  # fmt: skip


@SETTINGS
@given(
    text=null_tests(st.sampled_from(TYPED_NULL_OPERANDS)),
    thing=typed_things,
    rate=st.one_of(st.just(KEEP), exotic_values),
    project=st.one_of(st.just(KEEP), exotic_values),
)
def test_typed_null_tests(text: str, thing: dict[str, Any], rate: Any, project: Any) -> None:
    # whole OBJECT values may be anything: their null tests only skip coercion where it cannot raise
    thing = {**thing, **({} if rate is KEEP else {"rate": rate}), **({} if project is KEEP else {"project": project})}
    try:
        rule_engine.Rule(text, TYPED)
    except errors.EvaluationError:
        assume(False)
    assert_matches_interpreter(text, TYPED, thing)
