"""Typed fields, the vocabulary's atoms: their rule-engine types, wire strings parsed into rule values,
and rule values formatted back into strings.

Every item kind and reference entity is a pydantic model (``rules.item_kinds``, ``rules.entities``).
From each model ``field_specs`` derives, once, the field specs that drive everything else: the
rule-engine types used to type-check expressions at load, the parsing of wire strings into rule
values, and the formatting of values back into strings.

Rule values are rule-engine-native: decimals are ``Decimal``, dates are timezone-aware ``datetime``
at midnight UTC (rule-engine has no date type), booleans are ``bool``, missing values are ``None``.
"""
from __future__ import annotations

import datetime as dt
import enum
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import rule_engine
from pydantic import BaseModel, BeforeValidator, ConfigDict

T = rule_engine.DataType



class FieldKind(enum.Enum):
    STRING = "string"
    DECIMAL = "decimal"
    MONEY = "money"  # a decimal that enrichments round by the ruleset's rounding rule
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    STRING_LIST = "string list"
    STRING_MAP = "string map"


class Money:
    """Marks a Decimal field as money: ``Annotated[Decimal, Money]``."""


_RULE_TYPES: dict[FieldKind, Any] = {
    FieldKind.STRING: T.STRING,
    FieldKind.DECIMAL: T.FLOAT,
    FieldKind.MONEY: T.FLOAT,
    FieldKind.DATE: T.DATETIME,
    FieldKind.DATETIME: T.DATETIME,
    FieldKind.BOOLEAN: T.BOOLEAN,
    FieldKind.STRING_LIST: T.ARRAY(T.STRING),
    FieldKind.STRING_MAP: T.MAPPING(T.STRING, T.STRING),
}


class FieldValueError(ValueError):
    """A wire value that does not parse as its field's kind; the message says what was expected."""


def _parse_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise FieldValueError(f"{cut(repr(text))} is not a decimal number") from None
    if not value.is_finite():
        raise FieldValueError(f"{cut(repr(text))} is not a finite decimal number")
    return value


def _parse_date(text: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise FieldValueError(f"{cut(repr(text))} is not a date (expected YYYY-MM-DD)") from None
    return date_value(day)


def _parse_datetime(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        expected = "expected RFC 3339, e.g. 2026-11-03T17:30:00Z"
        raise FieldValueError(f"{cut(repr(text))} is not a datetime ({expected})") from None
    if moment.tzinfo is None:
        raise FieldValueError(f"{cut(repr(text))} has no time zone (add Z or an offset such as +01:00)")
    return moment


_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def _parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FieldValueError(f"{cut(repr(text))} is not a boolean (expected true or false)")


def _parse_string_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split("|") if part.strip())


_PARSERS: dict[FieldKind, Callable[[str], Any]] = {
    FieldKind.STRING: str,
    FieldKind.DECIMAL: _parse_decimal,
    FieldKind.MONEY: _parse_decimal,
    FieldKind.DATE: _parse_date,
    FieldKind.DATETIME: _parse_datetime,
    FieldKind.BOOLEAN: _parse_boolean,
    FieldKind.STRING_LIST: _parse_string_list,
}


def date_value(day: dt.date) -> dt.datetime:
    """A date as rule-engine sees it: midnight UTC."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# A month of work dates recurs in every message: format each once. Keyed with the offset too, since
# equal instants in different offsets are equal datetimes but print differently.
_DATETIME_TEXT: dict[tuple[dt.datetime, dt.timedelta | None], str] = {}
_DATETIME_TEXT_SIZE = 4096


def _format_datetime(value: dt.datetime) -> str:
    key = (value, value.utcoffset())
    text = _DATETIME_TEXT.get(key)
    if text is None:
        if value.utcoffset() == dt.timedelta(0) and value.time() == dt.time(0):
            text = value.date().isoformat()  # a date, as rule-engine holds dates
        else:
            text = value.isoformat()
        if len(_DATETIME_TEXT) >= _DATETIME_TEXT_SIZE:
            _DATETIME_TEXT.clear()
        _DATETIME_TEXT[key] = text
    return text


def _format_sequence(value: list[Any] | tuple[Any, ...]) -> str:
    return ", ".join(map(format_value, value)) if value else "(none)"  # as a missing value reads


_format_decimal: Callable[[Decimal], str] = operator.methodcaller("__format__", "f")  # as written, never 1E+3


_FORMATTERS: dict[type, Callable[[Any], str]] = {
    str: str,
    type(None): lambda _value: "(none)",
    bool: lambda value: "true" if value else "false",
    Decimal: _format_decimal,
    dt.datetime: _format_datetime,
    tuple: _format_sequence,
    list: _format_sequence,
}


def formatter_for(python_type: type) -> Callable[[Any], str] | None:
    """How ``format_value`` formats a value of exactly this type (None: ``str``, as for any other type)."""
    return _FORMATTERS.get(python_type)


def format_value(value: Any) -> str:
    """A rule value as a person (and the wire) reads it: dates without a time, decimals as written."""
    formatter = _FORMATTERS.get(type(value))  # by exact type: this runs for every placeholder of every message
    return formatter(value) if formatter is not None else str(value)


# A value quoted in a reason message (a ``{placeholder}``) is cut to this many characters, the last an ellipsis: a
# 1 MiB field quoted 200 times in a template would otherwise make a 200 MB message. Only messages: an enrichment's
# value, and everything else format_value gives, stays whole.
MESSAGE_VALUE_CHARS = 200
ELLIPSIS = "…"
# Types whose text is short whatever the value (a date or datetime, a boolean, null): never cut.
SHORT_TYPES: frozenset[type] = frozenset({bool, type(None), dt.datetime})


def cut(text: str) -> str:
    """``text`` as a message quotes it: at most MESSAGE_VALUE_CHARS characters, cut with an ellipsis."""
    return text if len(text) <= MESSAGE_VALUE_CHARS else text[: MESSAGE_VALUE_CHARS - 1] + ELLIPSIS


def format_message_value(value: Any) -> str:
    """A rule value as a reason message quotes it: ``format_value``, cut to MESSAGE_VALUE_CHARS characters."""
    formatter = _FORMATTERS.get(type(value))
    text = formatter(value) if formatter is not None else str(value)
    return text if len(text) <= MESSAGE_VALUE_CHARS else text[: MESSAGE_VALUE_CHARS - 1] + ELLIPSIS


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: FieldKind
    nullable: bool
    description: str

    @property
    def rule_type(self) -> Any:
        base = _RULE_TYPES[self.kind]
        return T.NULLABLE(base) if self.nullable else base

    def parse(self, text: str) -> Any:
        """Parse a wire string; an empty string is a missing value."""
        if text == "" or text is None:
            return None
        return _PARSERS[self.kind](text)

    def native(self, value: Any) -> Any:
        """A python value (from a pydantic model or YAML) as a rule value."""
        if value is None:
            return None
        if self.kind is FieldKind.DATE and not isinstance(value, dt.datetime):
            return date_value(value)
        if self.kind in (FieldKind.DECIMAL, FieldKind.MONEY) and not isinstance(value, Decimal):
            return Decimal(str(value))
        if self.kind is FieldKind.STRING:
            return str(value)
        if self.kind is FieldKind.STRING_LIST:
            return tuple(value)
        if self.kind is FieldKind.STRING_MAP:
            return dict(value)
        return value


def _kind_of(annotation: Any) -> tuple[FieldKind, bool]:
    """Map a model field annotation to (kind, nullable)."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        nullable, annotation = True, members[0]
        origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        if base is Decimal and Money in metadata:
            return FieldKind.MONEY, nullable
        annotation = base
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return FieldKind.STRING_LIST, nullable
    if origin is dict:
        return FieldKind.STRING_MAP, nullable
    simple = {
        str: FieldKind.STRING,
        Decimal: FieldKind.DECIMAL,
        dt.date: FieldKind.DATE,
        dt.datetime: FieldKind.DATETIME,
        bool: FieldKind.BOOLEAN,
    }
    if annotation in simple:
        return simple[annotation], nullable
    if isinstance(annotation, type) and issubclass(annotation, str):  # a StrEnum of codes
        return FieldKind.STRING, nullable
    raise TypeError(f"unsupported field type {annotation!r}")


def field_specs(model: type[BaseModel]) -> dict[str, FieldSpec]:
    specs = {}
    for name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        kind, nullable = _kind_of(annotation)
        specs[name] = FieldSpec(name, kind, nullable, info.description or "")
    return specs


class RecordModel(BaseModel):
    """An item or reference row: unknown fields refused, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _split_list(value: Any) -> Any:
    """A list cell of an export: ``A|B|C`` (CSV) or a JSON/Parquet list; empty means none."""
    if isinstance(value, str):
        return _parse_string_list(value)
    return value


StringList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]

