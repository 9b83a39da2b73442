"""Item kinds (PRODUCT.md §2): time entries, expense lines and invoice lines, and the reference records
bound to each item before rules see it.

Each kind names its model, the field naming each item, its business date (what everything
effective-dated is resolved as of), the group its items roll up into, and its bindings.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import rule_engine
from pydantic import BaseModel, Field

from tollgate.rules.entities import ENTITIES, Entity, LineType, TimeType, Versioned, define_entity
from tollgate.rules.fields import (
    Currency,
    FieldSpec,
    FreeText,
    Hours,
    Money,
    NonNegativeAmount,
    Percent,
    Quantity,
    RecordModel,
    StringList,
    UniqueList,
    UnitRate,
    field_specs,
)

T = rule_engine.DataType


class TimeEntry(RecordModel):
    """A time entry as the PSA approval flow sends it (PRODUCT.md §2)."""

    entry_id: str = Field(min_length=1)
    timesheet_id: str | None = None
    worker_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    assignment_id: str | None = None
    work_date: dt.date
    hours: Hours
    time_type: TimeType = TimeType.REG
    role_code: str | None = None
    labor_category: str | None = None
    billable: bool = True
    bill_rate: UnitRate | None = None
    rate_source: str | None = Field(None, description="where the bill rate came from (RC-1)")
    bill_amount: NonNegativeAmount | None = Field(None, description="hours x bill rate, once rated")
    currency: Currency | None = None
    activity_code: str | None = None
    source_system: str | None = None
    source_ref: str | None = None
    submitted_at: dt.datetime | None = None
    correction_of: str | None = Field(None, description="entry_id of the entry this one corrects")
    bill_status: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


class ExpenseLine(RecordModel):
    """An expense line of an expense report (PRODUCT.md §2)."""

    expense_id: str = Field(min_length=1)
    report_id: str | None = None
    worker_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    assignment_id: str | None = None
    expense_date: dt.date
    expense_type: str = Field(min_length=1, description="MEALS, LODGING, PER_DIEM, MILEAGE, AIRFARE, ...")
    amount: NonNegativeAmount
    currency: Currency
    payment_method: str | None = None
    receipt_attached: bool = False
    location: str | None = Field(None, description="where the expense was incurred, e.g. US-NY-NYC or DE-BE")
    miles: Quantity | None = None
    attendees: StringList = Field((), description="who attended (meals); in CSV: A|B|C")
    purpose: FreeText | None = None
    billable: bool = True
    billable_amount: NonNegativeAmount | None = Field(None, description="the part billed to the client (EX-2)")
    non_billable_amount: NonNegativeAmount | None = Field(None, description="the part over a cap (EX-2)")
    bill_amount: NonNegativeAmount | None = Field(None, description="what the client is billed (CT-5)")
    bill_currency: Currency | None = Field(
        None, description="the currency of bill_amount when it is not the expense's: the contract's, converted at the "
                          "rate on the date (CT-5.fx)")
    bill_status: str | None = None
    source_system: str | None = None
    source_ref: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


class InvoiceLine(RecordModel):
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
    currency: Currency
    po_number: str | None = None
    supplier_vat_id: str | None = None
    customer_vat_id: str | None = None
    tax_legend: FreeText | None = Field(None, description="text printed on the invoice, e.g. the reverse-charge legend")
    line_type: LineType = Field(LineType.TIME, description="TIME, EXPENSE, FIXED_FEE, MILESTONE")
    service_category: str = Field("PROFESSIONAL_SERVICES", description="what is sold, for taxability (TX-4)")
    source_ids: UniqueList = Field(
        (), description="ids of the time entries / expense lines billed, each once (IV-2); CSV: A|B|C")
    quantity: Quantity | None = None
    rate: UnitRate | None = None
    amount: NonNegativeAmount
    tax_code: str | None = None
    tax_rate: Percent | None = None
    tax_amount: NonNegativeAmount | None = None
    revenue_treatment: str | None = None
    bill_status: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


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

class SourceSummary(Versioned):
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
SOURCE_SUMMARY = define_entity("source_summary", SourceSummary)

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
