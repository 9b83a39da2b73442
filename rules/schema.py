"""The vocabulary rules are written against: item fields and reference entities, with their types.

Every item kind and reference entity is a pydantic model. From each model this module derives, once,
the field specs that drive everything else: the rule-engine types used to type-check expressions at
load, the parsing of wire strings into rule values, and the formatting of values back into strings.

Rule values are rule-engine-native: decimals are ``Decimal``, dates are timezone-aware ``datetime``
at midnight UTC (rule-engine has no date type), booleans are ``bool``, missing values are ``None``.
"""

from __future__ import annotations

import datetime as dt
import enum
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import rule_engine
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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
        raise FieldValueError(f"{text!r} is not a decimal number") from None
    if not value.is_finite():
        raise FieldValueError(f"{text!r} is not a finite decimal number")
    return value


def _parse_date(text: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise FieldValueError(f"{text!r} is not a date (expected YYYY-MM-DD)") from None
    return date_value(day)


def _parse_datetime(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise FieldValueError(f"{text!r} is not a datetime (expected RFC 3339, e.g. 2026-11-03T17:30:00Z)") from None
    if moment.tzinfo is None:
        raise FieldValueError(f"{text!r} has no time zone (add Z or an offset such as +01:00)")
    return moment


_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def _parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FieldValueError(f"{text!r} is not a boolean (expected true or false)")


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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _split_list(value: Any) -> Any:
    """A list cell of an export: ``A|B|C`` (CSV) or a JSON/Parquet list; empty means none."""
    if isinstance(value, str):
        return _parse_string_list(value)
    return value


StringList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]


# ---------------------------------------------------------------------------------------------------
# Items


class TimeEntry(_Model):
    """A time entry as the PSA approval flow sends it (PRODUCT.md §2)."""

    entry_id: str = Field(min_length=1)
    timesheet_id: str | None = None
    worker_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    assignment_id: str | None = None
    work_date: dt.date
    hours: Decimal
    time_type: str = "REG"
    role_code: str | None = None
    labor_category: str | None = None
    billable: bool = True
    bill_rate: Annotated[Decimal, Money] | None = None
    rate_source: str | None = Field(None, description="where the bill rate came from (RC-1)")
    bill_amount: Annotated[Decimal, Money] | None = Field(None, description="hours x bill rate, once rated")
    currency: str | None = None
    activity_code: str | None = None
    source_system: str | None = None
    source_ref: str | None = None
    submitted_at: dt.datetime | None = None
    correction_of: str | None = Field(None, description="entry_id of the entry this one corrects")
    bill_status: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


class ExpenseLine(_Model):
    """An expense line of an expense report (PRODUCT.md §2)."""

    expense_id: str = Field(min_length=1)
    report_id: str | None = None
    worker_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    assignment_id: str | None = None
    expense_date: dt.date
    expense_type: str = Field(min_length=1, description="MEALS, LODGING, PER_DIEM, MILEAGE, AIRFARE, ...")
    amount: Annotated[Decimal, Money]
    currency: str = Field(min_length=1)
    payment_method: str | None = None
    receipt_attached: bool = False
    location: str | None = Field(None, description="where the expense was incurred, e.g. US-NY-NYC or DE-BE")
    miles: Decimal | None = None
    attendees: StringList = Field((), description="who attended (meals); in CSV: A|B|C")
    purpose: str | None = None
    billable: bool = True
    billable_amount: Annotated[Decimal, Money] | None = Field(None, description="the part billed to the client (EX-2)")
    non_billable_amount: Annotated[Decimal, Money] | None = Field(None, description="the part over a cap (EX-2)")
    bill_amount: Annotated[Decimal, Money] | None = Field(None, description="what the client is billed (CT-5)")
    bill_currency: str | None = Field(None, description="the currency of bill_amount when it is not the expense's: "
                                                        "the contract's, converted at the rate on the date (CT-5.fx)")
    bill_status: str | None = None
    source_system: str | None = None
    source_ref: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


class InvoiceLine(_Model):
    """One line of an invoice, with its invoice's header fields (PRODUCT.md §2).

    An invoice arrives whole (a header and its lines); each line is decided as an item carrying the
    header's fields, and the invoice is the roll-up of its lines.
    """

    line_id: str = Field(min_length=1)
    invoice_id: str = Field(min_length=1)
    invoice_number: str | None = None
    invoice_date: dt.date
    contract_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    currency: str = Field(min_length=1)
    po_number: str | None = None
    supplier_vat_id: str | None = None
    customer_vat_id: str | None = None
    tax_legend: str | None = Field(None, description="text printed on the invoice, e.g. the reverse-charge legend")
    line_type: str = Field("TIME", description="TIME, EXPENSE, FIXED_FEE, MILESTONE")
    service_category: str = Field("PROFESSIONAL_SERVICES", description="what is sold, for taxability (TX-4)")
    source_ids: StringList = Field((), description="ids of the time entries / expense lines billed; CSV: A|B|C")
    quantity: Decimal | None = None
    rate: Annotated[Decimal, Money] | None = None
    amount: Annotated[Decimal, Money]
    tax_code: str | None = None
    tax_rate: Decimal | None = None
    tax_amount: Annotated[Decimal, Money] | None = None
    revenue_treatment: str | None = None
    bill_status: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)

# ---------------------------------------------------------------------------------------------------
# Reference entities. Every row may carry effective_from / effective_to (inclusive): a key with
# several rows has several versions, and lookups pick the one in force on the item's business date.


class _Versioned(_Model):
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None


class Project(_Versioned):
    project_id: str
    name: str = ""
    status: str
    project_type: str = Field("CLIENT", description="CLIENT, INTERNAL, ...")
    billable: bool = True
    billing_type: str = Field("TM", description="TM, COST_PLUS, FIXED_FEE, MILESTONE")
    start_date: dt.date
    finish_date: dt.date | None = None
    is_template: bool = False
    closed_for_time_at: dt.datetime | None = None
    contract_id: str | None = None
    customer_id: str | None = None


class Task(_Versioned):
    project_id: str
    task_id: str
    name: str = ""
    is_leaf: bool = True
    chargeable: bool = True
    billable: bool = True
    start_date: dt.date | None = None
    finish_date: dt.date | None = None
    closed_for_time_at: dt.datetime | None = None


class Worker(_Versioned):
    worker_id: str
    name: str = ""
    status: str = Field(description="ACTIVE, LEAVE, TERMINATED, ...")
    hire_date: dt.date
    termination_date: dt.date | None = None
    overtime_eligible: bool = False
    job_code: str | None = None
    location: str | None = None


class Assignment(_Versioned):
    assignment_id: str
    worker_id: str
    project_id: str
    role_code: str | None = None
    start_date: dt.date
    finish_date: dt.date | None = None
    closed_for_time_at: dt.datetime | None = None


class Contract(_Versioned):
    contract_id: str
    customer_id: str | None = None
    billing_type: str = "TM"
    currency: str
    start_date: dt.date
    end_date: dt.date | None = None
    hours_per_day: Decimal = Decimal(8)
    bills_overtime: bool = False
    overtime_multiplier: Decimal = Decimal("1.5")
    double_time_multiplier: Decimal = Decimal(2)
    allowed_labor_categories: StringList = Field(
        (), description="labor categories the contract bills (LC-3); empty: any. In CSV: A|B|C")


class RateScope(enum.StrEnum):
    """Where a rate row applies, most specific first (catalogue rule RC-1)."""

    WORKER = "WORKER"
    ASSIGNMENT = "ASSIGNMENT"
    CONTRACT = "CONTRACT"
    PROJECT = "PROJECT"
    STANDARD = "STANDARD"


class RateCardRow(_Versioned):
    rate_id: str
    scope: RateScope
    scope_id: str = Field("", description="worker, assignment, contract or project id; empty for STANDARD")
    labor_category: str
    currency: str
    unit: str = Field("HOUR", description="HOUR or DAY")
    bill_rate: Annotated[Decimal, Money]
    discount_pct: Decimal | None = None


class JobCode(_Versioned):
    job_code: str
    labor_category: str


class HoldScope(enum.StrEnum):
    """What a billing hold is placed on (catalogue rule BE-5), most specific first."""

    PROJECT = "PROJECT"
    CONTRACT = "CONTRACT"
    CUSTOMER = "CUSTOMER"


class BillingHold(_Versioned):
    """A billing hold (ERP): in force from effective_from to effective_to (inclusive; open-ended if empty)."""

    hold_id: str
    scope: HoldScope
    scope_id: str = Field(description="the project, contract or customer id")
    reason: str = ""


class TransactionControl(_Versioned):
    """A PSA transaction control (BE-3): on a project, optionally narrowed to a task, an activity and a
    worker (empty: any), in force from effective_from to effective_to, deciding chargeable and billable."""

    control_id: str
    project_id: str
    task_id: str | None = None
    activity_code: str | None = None
    worker_id: str | None = None
    chargeable: bool = True
    billable: bool = True
    reason: str = ""


class FxRate(_Versioned):
    """A daily exchange rate (ERP): 1 from_currency = rate to_currency, published for rate_date."""

    from_currency: str
    to_currency: str
    rate_date: dt.date
    rate: Decimal = Field(gt=0)


class BilledItem(_Versioned):
    """A time entry already billed, as the ERP exported it, with the values it was billed at (BE-8)."""

    entry_id: str
    invoice_id: str
    billed_on: dt.date | None = None
    project_id: str
    task_id: str
    work_date: dt.date
    hours: Decimal
    billable: bool = True
    bill_rate: Annotated[Decimal, Money] | None = None
    currency: str | None = None


class ContractLine(_Versioned):
    """A line of a contract (ERP): which item class it bills, its dates and its not-to-exceed limit
    (CT-1..CT-4). ``consumed_amount`` is what was billed against the limit before this batch."""

    contract_id: str
    line_id: str
    item_class: str = Field(description="TIME or EXPENSE")
    start_date: dt.date
    end_date: dt.date | None = None
    nte_limit: Annotated[Decimal, Money] | None = Field(None, description="not-to-exceed amount; empty: no cap")
    nte_type: str = Field("HARD", description="HARD (reject what would cross it) or SOFT (warn)")
    consumed_amount: Annotated[Decimal, Money] = Decimal(0)


class ContractExpenseTerm(_Versioned):
    """How a contract bills an expense type (CT-5); expense_type ``*`` is the contract's default."""

    contract_id: str
    expense_type: str
    terms: str = Field(description="AT_COST, MARKUP, NOT_BILLABLE or CAPPED")
    markup_pct: Decimal | None = None
    cap_amount: Annotated[Decimal, Money] | None = None


class Customer(_Versioned):
    """A customer (ERP): where it is, its VAT id, whether it needs a PO on invoices (TX-*, IV-6)."""

    customer_id: str
    name: str = ""
    country: str = Field(description="ISO 3166 alpha-2, e.g. DE")
    region: str | None = Field(None, description="state or province, e.g. NM for New Mexico")
    vat_id: str | None = None
    vat_id_valid: bool = Field(True, description="the VAT id was verified (e.g. in VIES)")
    po_required: bool = False


class TaxCode(_Versioned):
    """A tax code (ERP), active from effective_from to effective_to (TX-7)."""

    tax_code: str
    jurisdiction: str = Field(description="country, or country-region for US states: US-NM")
    rate: Decimal = Field(description="percent, e.g. 19 for 19%")
    description: str = ""


class Taxability(_Versioned):
    """Whether a jurisdiction taxes a service category, and with which tax code (TX-4)."""

    jurisdiction: str
    service_category: str
    taxable: bool
    tax_code: str | None = None


class ExemptionCertificate(_Versioned):
    """A customer's tax exemption in a jurisdiction, valid from effective_from to effective_to (TX-5)."""

    certificate_id: str
    customer_id: str
    jurisdiction: str


class AccountingPeriod(_Versioned):
    """An accounting period (ERP) of one module (AR, AP, PA): its dates and whether it is open (IV-9)."""

    module: str
    period_id: str
    start_date: dt.date
    end_date: dt.date
    status: str = Field(description="OPEN or CLOSED")


class ExpensePolicy(_Versioned):
    """The expense policy for one expense type (PSA): receipts, billability, meal rules (EX-1, EX-6, EX-8)."""

    expense_type: str
    receipt_threshold: Annotated[Decimal, Money] | None = Field(None, description="receipt required at or above")
    receipt_always: bool = False
    billable: bool = True
    needs_attendees: bool = False


class PerDiemRate(_Versioned):
    """The daily cap for an expense type at a location (EX-2); location DEFAULT applies elsewhere."""

    location: str
    expense_type: str
    daily_cap: Annotated[Decimal, Money]
    currency: str


class MileageRate(_Versioned):
    """The rate per mile (EX-4), in force from effective_from, in one currency."""

    currency: str
    rate_per_mile: Annotated[Decimal, Money]


class Holiday(_Versioned):
    """A public holiday in a calendar (HR): a country (US) or a region (US-NY), on a date."""

    calendar: str
    holiday_date: dt.date
    name: str = ""


class WorkItem(_Versioned):
    """A time entry or expense line as the ledger holds it after validation (PSA/ERP): what invoices
    bill (IV-1, IV-2). ``invoice_id`` is the live invoice it is on, if any."""

    item_id: str
    item_class: str = Field(description="TIME or EXPENSE")
    contract_id: str | None = None
    project_id: str | None = None
    amount: Annotated[Decimal, Money]
    currency: str
    status: str = Field(description="ACCEPTED, REJECTED or PENDING")
    invoice_id: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    """A reference entity: its model, the fields forming its key, and its typed fields."""

    name: str
    model: type[_Versioned]
    key: tuple[str, ...]
    fields: Mapping[str, FieldSpec]
    # Rows agreeing on these fields are versions of one thing and must not overlap in time. Usually
    # the key; a rate row has its own id but is a version of (scope, scope id, labor category).
    versioned_by: tuple[str, ...]

    def native(self, row: BaseModel) -> dict[str, Any]:
        """A validated row as a rule value (a dict the rule engine reads with ``entity.field``)."""
        return {name: spec.native(getattr(row, name)) for name, spec in self.fields.items()}


def _entity(name: str, model: type[_Versioned], *key: str, versioned_by: tuple[str, ...] = ()) -> Entity:
    return Entity(name, model, key, field_specs(model), versioned_by or key)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        _entity("project", Project, "project_id"),
        _entity("task", Task, "project_id", "task_id"),
        _entity("worker", Worker, "worker_id"),
        _entity("assignment", Assignment, "assignment_id"),
        _entity("contract", Contract, "contract_id"),
        _entity("rate_card", RateCardRow, "rate_id", versioned_by=("scope", "scope_id", "labor_category")),
        _entity("job_code", JobCode, "job_code"),
        _entity("billing_hold", BillingHold, "hold_id"),
        _entity("transaction_control", TransactionControl, "control_id"),
        _entity("fx_rate", FxRate, "from_currency", "to_currency", "rate_date"),
        _entity("billed_item", BilledItem, "entry_id"),
        _entity("contract_line", ContractLine, "contract_id", "line_id"),
        _entity("contract_expense_term", ContractExpenseTerm, "contract_id", "expense_type"),
        _entity("customer", Customer, "customer_id"),
        _entity("tax_code", TaxCode, "tax_code"),
        _entity("taxability", Taxability, "jurisdiction", "service_category"),
        _entity("exemption_certificate", ExemptionCertificate, "certificate_id"),
        _entity("accounting_period", AccountingPeriod, "module", "period_id"),
        _entity("expense_policy", ExpensePolicy, "expense_type"),
        _entity("per_diem_rate", PerDiemRate, "location", "expense_type"),
        _entity("mileage_rate", MileageRate, "currency"),
        _entity("work_item", WorkItem, "item_id"),
        _entity("holiday", Holiday, "calendar", "holiday_date"),
    )
}


@dataclass(frozen=True, slots=True)
class Binding:
    """A reference record bound to each item under a symbol name before rules see it.

    A required binding that cannot be resolved rejects the item (fail closed); an optional one is
    null, and rules must say what null means (rule-engine refuses ``rate.bill_rate`` on a nullable
    ``rate`` at load: use ``requires: [rate]``, ``rate&.bill_rate`` or ``rate == null``).
    """

    name: str
    entity: Entity
    required: bool
    resolved_by: str
    found_by: tuple[str, ...] = ()  # item fields forming the lookup key (named when the record is missing)
    also_reads: tuple[str, ...] = ()  # other item fields the lookup depends on
    depends_on: tuple[str, ...] = ()  # bindings read while resolving this one
    extra: tuple[FieldSpec, ...] = ()

    @property
    def inputs(self) -> frozenset[str]:
        """Item fields whose change (by an enrichment) means the record must be looked up again."""
        return frozenset((*self.found_by, *self.also_reads))

    def rule_type(self) -> Any:
        attributes = {spec.name: spec.rule_type for spec in (*self.entity.fields.values(), *self.extra)}
        object_type = T.OBJECT(self.entity.name, attributes, accessor=operator.getitem)
        return object_type if self.required else T.NULLABLE(object_type)


@dataclass(frozen=True, slots=True)
class ItemKind:
    """An item kind: its model, the field naming each item, its business date, and the group its items
    are rolled up into (a timesheet, an expense report, an invoice)."""

    name: str
    model: type[BaseModel]
    id_field: str
    date_field: str
    group_field: str
    group_name: str
    fields: Mapping[str, FieldSpec]
    bindings: tuple[Binding, ...]
    # Fields an item takes from its group's header rather than its own message (an invoice line's invoice).
    header_fields: frozenset[str] = frozenset()

    @property
    def required(self) -> frozenset[str]:
        return frozenset(
            name for name, info in self.model.model_fields.items() if info.is_required()
        )

    def defaults(self) -> dict[str, Any]:
        """Rule values for the fields an item may omit."""
        values = {}
        for name, info in self.model.model_fields.items():
            if not info.is_required():
                values[name] = self.fields[name].native(info.get_default(call_default_factory=True))
        return values


def _project_bindings(date: str) -> tuple[Binding, ...]:
    """The PSA records a time entry or an expense line is charged to, as of its business date."""
    return (
        Binding("project", ENTITIES["project"], True, f"project_id, as of the {date}", found_by=("project_id",)),
        Binding("task", ENTITIES["task"], True, f"project_id + task_id, as of the {date}",
                found_by=("project_id", "task_id")),
        Binding("worker", ENTITIES["worker"], True, f"worker_id, as of the {date}", found_by=("worker_id",)),
        Binding("assignment", ENTITIES["assignment"], False,
                f"assignment_id, else the worker's assignment on the project covering the {date}",
                found_by=("assignment_id",), also_reads=("worker_id", "project_id")),
        Binding("contract", ENTITIES["contract"], False, f"the project's contract, as of the {date}",
                depends_on=("project",)),
    )


def _contract_line_binding(item_class: str, date: str) -> Binding:
    return Binding("contract_line", ENTITIES["contract_line"], False,
                   f"the contract's {item_class} line covering the {date} (else its first {item_class} line)",
                   depends_on=("contract",))


def _hold_binding(date: str) -> Binding:
    return Binding("hold", ENTITIES["billing_hold"], False,
                   f"a billing hold in force on the {date} on the project, else its contract, else its customer",
                   also_reads=("project_id",), depends_on=("project", "contract"))


TIME_ENTRY = ItemKind(
    "time_entry",
    TimeEntry,
    "entry_id",
    "work_date",
    "timesheet_id",
    "timesheet",
    field_specs(TimeEntry),
    (
        *_project_bindings("work date"),
        Binding("job", ENTITIES["job_code"], False, "the worker's job code, as of the work date",
                depends_on=("worker",)),
        _hold_binding("work date"),
        Binding("control", ENTITIES["transaction_control"], False,
                "the most specific transaction control on the project in force on the work date matching the "
                "task, activity and worker (a control naming more of them wins)",
                also_reads=("project_id", "task_id", "activity_code", "worker_id")),
        Binding("billed", ENTITIES["billed_item"], False, "entry_id: the entry as it was billed, if it was",
                found_by=("entry_id",)),
        _contract_line_binding("TIME", "work date"),
    ),
)

EXPENSE_LINE = ItemKind(
    "expense_line",
    ExpenseLine,
    "expense_id",
    "expense_date",
    "report_id",
    "expense report",
    field_specs(ExpenseLine),
    (
        *_project_bindings("expense date"),
        _hold_binding("expense date"),
        _contract_line_binding("EXPENSE", "expense date"),
        Binding("policy", ENTITIES["expense_policy"], False, "the expense policy for the expense type, as of the "
                "expense date", found_by=("expense_type",)),
        Binding("mileage", ENTITIES["mileage_rate"], False, "the rate per mile in the expense's currency, as of the "
                "expense date", found_by=("currency",)),
        Binding("expense_terms", ENTITIES["contract_expense_term"], False,
                "the contract's billing terms for the expense type (else its * terms), as of the expense date",
                also_reads=("expense_type",), depends_on=("contract",)),
    ),
)

class SourceSummary(_Versioned):
    """What the ledger knows of an invoice line's source items (IV-1, IV-2): worked out from work_item rows
    by the service, given outright as ``refs: {sources: {...}}`` in a ruleset's tests."""

    count: Decimal = Field(Decimal(0), description="how many source ids the line names")
    missing_ids: StringList = Field((), description="source ids the ledger does not know")
    unaccepted_ids: StringList = Field((), description="source items not accepted")
    invoiced_elsewhere_ids: StringList = Field((), description="source items already on another live invoice")
    other_contract_ids: StringList = Field((), description="source items of another contract")
    billable_total: Annotated[Decimal, Money] = Field(
        Decimal(0), description="the sum of the accepted source items not on another invoice")


# Not a table of its own: no export is loaded for it (it is not in ENTITIES).
SOURCE_SUMMARY = _entity("source_summary", SourceSummary)

INVOICE_LINE = ItemKind(
    "invoice_line",
    InvoiceLine,
    "line_id",
    "invoice_date",
    "invoice_id",
    "invoice",
    field_specs(InvoiceLine),
    (
        Binding("contract", ENTITIES["contract"], True, "contract_id, as of the invoice date",
                found_by=("contract_id",)),
        Binding("customer", ENTITIES["customer"], True, "customer_id, as of the invoice date",
                found_by=("customer_id",)),
        Binding("hold", ENTITIES["billing_hold"], False,
                "a billing hold in force on the invoice date on the contract, else the customer",
                also_reads=("contract_id", "customer_id")),
        Binding("period", ENTITIES["accounting_period"], False,
                "the receivables (AR) period containing the invoice date"),
        Binding("exemption", ENTITIES["exemption_certificate"], False,
                "the customer's exemption certificate for its jurisdiction valid on the invoice date, else the "
                "latest one that expired before it", depends_on=("customer",)),
        Binding("tax", ENTITIES["tax_code"], False, "the line's tax code, active on the invoice date",
                found_by=("tax_code",)),
        Binding("sources", SOURCE_SUMMARY, True, "the line's source_ids looked up in the work items",
                also_reads=("source_ids", "invoice_id", "contract_id")),
    ),
    header_fields=frozenset({
        "invoice_id", "invoice_number", "invoice_date", "contract_id", "customer_id", "currency", "po_number",
        "supplier_vat_id", "customer_vat_id", "tax_legend",
    }),
)

ITEM_KINDS: dict[str, ItemKind] = {kind.name: kind for kind in (TIME_ENTRY, EXPENSE_LINE, INVOICE_LINE)}
