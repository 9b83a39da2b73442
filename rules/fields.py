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
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import rule_engine
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

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


@dataclass(frozen=True, slots=True)
class Wire:
    """What a field accepts on the wire beyond its type: the grammar of docs/item-kinds.md, one for items
    and for reference-data loads alike. Put it in the field's ``Annotated[...]``.

    Decimals: ASCII ``-?digits(.digits)?`` with at most ``integer_digits`` digits before the point and
    ``scale`` after it, within ``minimum``..``maximum``. Strings: no control characters (``free_text``
    allows tabs and line breaks, never any other), matching ``pattern`` where one is given.
    """

    integer_digits: int = 15
    scale: int = 6
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    free_text: bool = False
    max_length: int = 256  # strings: ids, keys and codes; free text up to 4,000
    unique: bool = False  # lists: no element twice
    pattern: str | None = None  # a regular expression the whole value must match
    shape: str = ""  # what the pattern means, for the message: "three capital letters (ISO 4217)"

    def decimal_match(self) -> Callable[[str], object]:
        """A test of the text alone (digits, point, sign), without the range."""
        return re.compile(f"-?[0-9]{{1,{self.integer_digits}}}(?:\\.[0-9]{{1,{self.scale}}})?").fullmatch

    def bounds_text(self) -> str:
        low = "" if self.minimum is None else f" from {self.minimum}"
        high = "" if self.maximum is None else f" up to {self.maximum}"
        return f"{low}{high}"


DEFAULT_WIRE = Wire()
FREE_TEXT = Wire(free_text=True, max_length=4000)
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?").fullmatch
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch
_DATETIME_TEXT_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})").fullmatch
_LINE_BREAKS_AND_TABS = str.maketrans("", "", "\t\n\r")


# The grammar of the fields that recur (docs/item-kinds.md, "Wire values"). Money amounts are in cents: two
# decimal places, the minor unit of the currencies billed (USD, EUR, GBP, ...); rates, per hour, day or mile,
# carry four; hours four; percentages are 0 to 100.
CURRENCY = Wire(pattern="[A-Z]{3}", shape="a currency code: three capital letters (ISO 4217)")
Currency = Annotated[str, CURRENCY]
FreeText = Annotated[str, FREE_TEXT]
Amount = Annotated[Decimal, Money, Wire(integer_digits=13, scale=2)]
NonNegativeAmount = Annotated[Decimal, Money, Wire(integer_digits=13, scale=2, minimum=Decimal(0))]
UnitRate = Annotated[Decimal, Money, Wire(integer_digits=9, scale=4, minimum=Decimal(0))]
Hours = Annotated[Decimal, Wire(integer_digits=4, scale=4)]
Percent = Annotated[Decimal, Wire(integer_digits=3, scale=4, minimum=Decimal(0), maximum=Decimal(100))]
Factor = Annotated[Decimal, Wire(integer_digits=3, scale=4, minimum=Decimal(0))]
Quantity = Annotated[Decimal, Wire(integer_digits=9, scale=4, minimum=Decimal(0))]


# A refused wire value is quoted shorter than a value in a rule's message: the refusal says what was wrong.
REFUSED_VALUE_CHARS = 40


def _shown(text: str) -> str:
    """A wire value quoted in a refusal, cut short: a message must not grow with what a caller sent."""
    quoted = repr(cut(text, REFUSED_VALUE_CHARS))
    return quoted if len(text) <= REFUSED_VALUE_CHARS else f"{quoted} ({len(text):,} characters)"


def read_decimal(text: str, wire: Wire = DEFAULT_WIRE) -> Decimal:
    if not _DECIMAL_TEXT(text):
        raise FieldValueError(f"{_shown(text)} is not a decimal number (ASCII digits with an optional leading '-' "
                              "and one '.', e.g. 8.25: no exponent, '+', spaces or separators)")
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(whole) > wire.integer_digits:
        raise FieldValueError(f"{_shown(text)} has more than {wire.integer_digits} digits before the point")
    if len(fraction) > wire.scale:
        raise FieldValueError(f"{_shown(text)} has more than {wire.scale} decimal places")
    value = Decimal(text)
    if (wire.minimum is not None and value < wire.minimum) or (wire.maximum is not None and value > wire.maximum):
        raise FieldValueError(f"{_shown(text)} is out of range (accepted:{wire.bounds_text()})")
    return value


def read_date(text: str) -> dt.date:
    try:
        if not _DATE_TEXT(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise FieldValueError(f"{_shown(text)} is not a date (expected YYYY-MM-DD)") from None


def read_datetime(text: str) -> dt.datetime:
    try:
        if not _DATETIME_TEXT_SHAPE(text):
            raise ValueError
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise FieldValueError(f"{_shown(text)} is not a timestamp (expected RFC 3339 with T and a time zone, "
                              "e.g. 2026-11-03T17:30:00Z or 2026-11-03T17:30:00+01:00)") from None


def read_boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise FieldValueError(f"{_shown(text)} is not a boolean (expected true or false)")


def read_string(text: str, wire: Wire = DEFAULT_WIRE, choices: tuple[str, ...] | None = None) -> str:
    if len(text) > wire.max_length:
        raise FieldValueError(f"{_shown(text)} is longer than {wire.max_length:,} characters")
    if not text.isprintable() and (not wire.free_text or not text.translate(_LINE_BREAKS_AND_TABS).isprintable()):
        allowed = "; tabs and line breaks are allowed here" if wire.free_text else ""
        raise FieldValueError(f"{_shown(text)} holds a control or other non-printable character{allowed}")
    if choices is not None and text not in choices:
        raise FieldValueError(f"{_shown(text)} is not one of {', '.join(choices)}")
    if wire.pattern is not None and not re.fullmatch(wire.pattern, text):
        raise FieldValueError(f"{_shown(text)} is not {wire.shape or 'of the expected form'}")
    return text


def _parse_string_list(text: str) -> tuple[str, ...]:
    return tuple(read_string(part.strip()) for part in text.split("|") if part.strip())


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


def cut(text: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``text`` as a message quotes it: at most ``limit`` characters, cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


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
    wire: Wire = DEFAULT_WIRE
    choices: tuple[str, ...] | None = None  # an enumerated string field's values

    @property
    def rule_type(self) -> Any:
        base = _RULE_TYPES[self.kind]
        return T.NULLABLE(base) if self.nullable else base

    def read(self, text: str) -> Any:
        """A wire string as its Python value (a date as a date), by the grammar; FieldValueError if it is not one."""
        kind = self.kind
        if kind is FieldKind.DECIMAL or kind is FieldKind.MONEY:
            return read_decimal(text, self.wire)
        if kind is FieldKind.DATE:
            return read_date(text)
        if kind is FieldKind.DATETIME:
            return read_datetime(text)
        if kind is FieldKind.BOOLEAN:
            return read_boolean(text)
        if kind is FieldKind.STRING_LIST:
            return self.elements(_parse_string_list(text))
        if kind is FieldKind.STRING:
            return read_string(text, self.wire, self.choices)
        raise FieldValueError(f"{self.name} is not given as text")

    def elements(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """A list's elements, each already read as a string; FieldValueError for one given twice where that is
        refused (an invoice line billing one source item twice)."""
        if self.wire.unique and len(set(parts)) != len(parts):
            seen: set[str] = set()
            for part in parts:
                if part in seen:
                    raise FieldValueError(f"{_shown(part)} is listed twice")
                seen.add(part)
        return parts

    def parse(self, text: str) -> Any:
        """Parse a wire string into a rule value; an empty string is a missing value."""
        if text == "" or text is None:
            return None
        value = self.read(text)
        return date_value(value) if self.kind is FieldKind.DATE else value

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


def _kind_of(annotation: Any) -> tuple[FieldKind, bool, Wire, tuple[str, ...] | None]:
    """Map a model field annotation to (kind, nullable, wire grammar, choices)."""
    nullable = False
    wire = DEFAULT_WIRE
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        nullable, annotation = True, members[0]
        origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        wire = next((m for m in metadata if isinstance(m, Wire)), DEFAULT_WIRE)
        if base is Decimal and Money in metadata:
            return FieldKind.MONEY, nullable, wire, None
        annotation = base
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return FieldKind.STRING_LIST, nullable, wire, None
    if origin is dict:
        return FieldKind.STRING_MAP, nullable, wire, None
    simple = {
        str: FieldKind.STRING,
        Decimal: FieldKind.DECIMAL,
        dt.date: FieldKind.DATE,
        dt.datetime: FieldKind.DATETIME,
        bool: FieldKind.BOOLEAN,
    }
    if annotation in simple:
        return simple[annotation], nullable, wire, None
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):  # codes: only the declared ones
        return FieldKind.STRING, nullable, wire, tuple(member.value for member in annotation)
    raise TypeError(f"unsupported field type {annotation!r}")


def field_specs(model: type[BaseModel]) -> dict[str, FieldSpec]:
    specs = {}
    for name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        kind, nullable, wire, choices = _kind_of(annotation)
        specs[name] = FieldSpec(name, kind, nullable, info.description or "", wire, choices)
    return specs


_SPECS_OF: dict[type[BaseModel], dict[str, FieldSpec]] = {}


class RecordModel(BaseModel):
    """An item or reference row: unknown fields refused, immutable once validated.

    Text values are read by the wire grammar (``FieldSpec.read``) before pydantic sees them, so a
    reference export is held to the same grammar as items; numbers from JSON Lines or Parquet are
    read as the text they print as (a float's exponent is refused like any other)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _by_the_wire_grammar(cls, value: Any, info: ValidationInfo) -> Any:
        specs = _SPECS_OF.get(cls)
        if specs is None:
            specs = _SPECS_OF[cls] = field_specs(cls)
        spec = specs[info.field_name] if info.field_name is not None else None
        if spec is None or spec.kind is FieldKind.STRING_MAP:
            return value
        if isinstance(value, str):
            # Strings are stripped by the model after this; every other kind is read as it stands.
            return spec.read(value) if value.strip() else value
        if spec.kind in (FieldKind.DECIMAL, FieldKind.MONEY) and isinstance(value, (int, float, Decimal)) \
                and not isinstance(value, bool):
            return spec.read(format(value, "f") if isinstance(value, Decimal) else str(value))
        return value


def _split_list(value: Any) -> Any:
    """A list cell of an export: ``A|B|C`` (CSV) or a JSON/Parquet list; empty means none."""
    if isinstance(value, str):
        return _parse_string_list(value)
    return value


StringList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
UniqueList = Annotated[tuple[str, ...], BeforeValidator(_split_list), Wire(unique=True)]

