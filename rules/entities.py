"""Reference entities (PRODUCT.md §3): the rows cached from the ERP, PSA and HR systems, with their keys.

Every row may carry effective_from / effective_to (inclusive): a key with several rows has several
versions, and lookups pick the one in force on the item's business date.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tollgate.rules.fields import (
    Amount,
    Currency,
    Factor,
    FieldSpec,
    FreeText,
    Hours,
    NonNegativeAmount,
    Percent,
    RecordModel,
    StringList,
    UnitRate,
    Wire,
    field_specs,
)


class TimeType(enum.StrEnum):
    """What kind of hours a time entry records: regular, overtime, double time, holiday."""

    REG = "REG"
    OT = "OT"
    DT = "DT"
    HOL = "HOL"


class BillingType(enum.StrEnum):
    """How a project or contract bills: time and materials, cost plus, fixed fee, milestones."""

    TM = "TM"
    COST_PLUS = "COST_PLUS"
    FIXED_FEE = "FIXED_FEE"
    MILESTONE = "MILESTONE"


class LineType(enum.StrEnum):
    """What an invoice line bills."""

    TIME = "TIME"
    EXPENSE = "EXPENSE"
    FIXED_FEE = "FIXED_FEE"
    MILESTONE = "MILESTONE"


class ItemClass(enum.StrEnum):
    TIME = "TIME"
    EXPENSE = "EXPENSE"


class RateUnit(enum.StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"


class LimitType(enum.StrEnum):
    """A not-to-exceed limit: HARD rejects what would cross it, SOFT warns (CT-4)."""

    HARD = "HARD"
    SOFT = "SOFT"


class WorkItemStatus(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PENDING = "PENDING"


class Versioned(RecordModel):
    """A reference row, in force from effective_from to effective_to (inclusive; open-ended if empty)."""

    effective_from: dt.date | None = None
    effective_to: dt.date | None = None


class Project(Versioned):
    project_id: str
    name: FreeText = ""
    status: str
    project_type: str = Field("CLIENT", description="CLIENT, INTERNAL, ...")
    billable: bool = True
    billing_type: BillingType = Field(BillingType.TM, description="TM, COST_PLUS, FIXED_FEE, MILESTONE")
    start_date: dt.date
    finish_date: dt.date | None = None
    is_template: bool = False
    closed_for_time_at: dt.datetime | None = None
    contract_id: str | None = None
    customer_id: str | None = None


class Task(Versioned):
    project_id: str
    task_id: str
    name: FreeText = ""
    is_leaf: bool = True
    chargeable: bool = True
    billable: bool = True
    start_date: dt.date | None = None
    finish_date: dt.date | None = None
    closed_for_time_at: dt.datetime | None = None


class Worker(Versioned):
    worker_id: str
    name: FreeText = ""
    status: str = Field(description="ACTIVE, LEAVE, TERMINATED, ...")
    hire_date: dt.date
    termination_date: dt.date | None = None
    overtime_eligible: bool = False
    job_code: str | None = None
    location: str | None = None


class Assignment(Versioned):
    assignment_id: str
    worker_id: str
    project_id: str
    role_code: str | None = None
    start_date: dt.date
    finish_date: dt.date | None = None
    closed_for_time_at: dt.datetime | None = None


class Contract(Versioned):
    contract_id: str
    customer_id: str | None = None
    billing_type: BillingType = BillingType.TM
    currency: Currency
    start_date: dt.date
    end_date: dt.date | None = None
    hours_per_day: Annotated[Decimal, Wire(integer_digits=2, scale=2, minimum=Decimal("0.01"), maximum=Decimal(24))] \
        = Decimal(8)
    bills_overtime: bool = False
    overtime_multiplier: Factor = Decimal("1.5")
    double_time_multiplier: Factor = Decimal(2)
    allowed_labor_categories: StringList = Field(
        (), description="labor categories the contract bills (LC-3); empty: any. In CSV: A|B|C")


class RateScope(enum.StrEnum):
    """Where a rate row applies, most specific first (catalogue rule RC-1)."""

    WORKER = "WORKER"
    ASSIGNMENT = "ASSIGNMENT"
    CONTRACT = "CONTRACT"
    PROJECT = "PROJECT"
    STANDARD = "STANDARD"


class RateCardRow(Versioned):
    rate_id: str
    scope: RateScope
    scope_id: str = Field("", description="worker, assignment, contract or project id; empty for STANDARD")
    labor_category: str
    currency: Currency
    unit: RateUnit = Field(RateUnit.HOUR, description="HOUR or DAY")
    bill_rate: UnitRate
    discount_pct: Percent | None = None


class JobCode(Versioned):
    job_code: str
    labor_category: str


class HoldScope(enum.StrEnum):
    """What a billing hold is placed on (catalogue rule BE-5), most specific first."""

    PROJECT = "PROJECT"
    CONTRACT = "CONTRACT"
    CUSTOMER = "CUSTOMER"


class BillingHold(Versioned):
    """A billing hold (ERP): in force from effective_from to effective_to (inclusive; open-ended if empty)."""

    hold_id: str
    scope: HoldScope
    scope_id: str = Field(description="the project, contract or customer id")
    reason: FreeText = ""


class TransactionControl(Versioned):
    """A PSA transaction control (BE-3): on a project, optionally narrowed to a task, an activity and a
    worker (empty: any), in force from effective_from to effective_to, deciding chargeable and billable."""

    control_id: str
    project_id: str
    task_id: str | None = None
    activity_code: str | None = None
    worker_id: str | None = None
    chargeable: bool = True
    billable: bool = True
    reason: FreeText = ""


class FxRate(Versioned):
    """A daily exchange rate (ERP): 1 from_currency = rate to_currency, published for rate_date."""

    from_currency: Currency
    to_currency: Currency
    rate_date: dt.date
    rate: Annotated[Decimal, Wire(integer_digits=9, scale=10)] = Field(gt=0)


class BilledItem(Versioned):
    """A time entry already billed, as the ERP exported it, with the values it was billed at (BE-8)."""

    entry_id: str
    invoice_id: str
    billed_on: dt.date | None = None
    project_id: str
    task_id: str
    work_date: dt.date
    hours: Hours
    billable: bool = True
    bill_rate: UnitRate | None = None
    currency: Currency | None = None


class ContractLine(Versioned):
    """A line of a contract (ERP): which item class it bills, its dates and its not-to-exceed limit
    (CT-1..CT-4). ``consumed_amount`` is what was billed against the limit before this batch."""

    contract_id: str
    line_id: str
    item_class: ItemClass = Field(description="TIME or EXPENSE")
    start_date: dt.date
    end_date: dt.date | None = None
    nte_limit: NonNegativeAmount | None = Field(None, description="not-to-exceed amount; empty: no cap")
    nte_type: LimitType = Field(LimitType.HARD, description="HARD (reject what would cross it) or SOFT (warn)")
    consumed_amount: NonNegativeAmount = Decimal(0)


class ContractExpenseTerm(Versioned):
    """How a contract bills an expense type (CT-5); expense_type ``*`` is the contract's default."""

    contract_id: str
    expense_type: str
    # Not an enumeration: terms the engine does not know reach the rules, which reject them (CT-5.missing).
    terms: str = Field(description="AT_COST, MARKUP, NOT_BILLABLE or CAPPED")
    markup_pct: Factor | None = None
    cap_amount: NonNegativeAmount | None = None


class Customer(Versioned):
    """A customer (ERP): where it is, its VAT id, whether it needs a PO on invoices (TX-*, IV-6)."""

    customer_id: str
    name: FreeText = ""
    country: str = Field(description="ISO 3166 alpha-2, e.g. DE")
    region: str | None = Field(None, description="state or province, e.g. NM for New Mexico")
    vat_id: str | None = None
    vat_id_valid: bool = Field(True, description="the VAT id was verified (e.g. in VIES)")
    po_required: bool = False


class TaxCode(Versioned):
    """A tax code (ERP), active from effective_from to effective_to (TX-7)."""

    tax_code: str
    jurisdiction: str = Field(description="country, or country-region for US states: US-NM")
    rate: Percent = Field(description="percent, e.g. 19 for 19%")
    description: FreeText = ""


class Taxability(Versioned):
    """Whether a jurisdiction taxes a service category, and with which tax code (TX-4)."""

    jurisdiction: str
    service_category: str
    taxable: bool
    tax_code: str | None = None


class ExemptionCertificate(Versioned):
    """A customer's tax exemption in a jurisdiction, valid from effective_from to effective_to (TX-5)."""

    certificate_id: str
    customer_id: str
    jurisdiction: str


class AccountingPeriod(Versioned):
    """An accounting period (ERP) of one module (AR, AP, PA): its dates and whether it is open (IV-9)."""

    module: str
    period_id: str
    start_date: dt.date
    end_date: dt.date
    status: str = Field(description="OPEN or CLOSED (or another state the ERP has, such as FUTURE: not open)")


class ExpensePolicy(Versioned):
    """The expense policy for one expense type (PSA): receipts, billability, meal rules (EX-1, EX-6, EX-8)."""

    expense_type: str
    receipt_threshold: NonNegativeAmount | None = Field(None, description="receipt required at or above")
    receipt_always: bool = False
    billable: bool = True
    needs_attendees: bool = False


class PerDiemRate(Versioned):
    """The daily cap for an expense type at a location (EX-2); location DEFAULT applies elsewhere."""

    location: str
    expense_type: str
    daily_cap: NonNegativeAmount
    currency: Currency


class MileageRate(Versioned):
    """The rate per mile (EX-4), in force from effective_from, in one currency."""

    currency: Currency
    rate_per_mile: UnitRate


class Holiday(Versioned):
    """A public holiday in a calendar (HR): a country (US) or a region (US-NY), on a date."""

    calendar: str
    holiday_date: dt.date
    name: FreeText = ""


class WorkItem(Versioned):
    """A time entry or expense line as the ledger holds it after validation (PSA/ERP): what invoices
    bill (IV-1, IV-2). ``invoice_id`` is the live invoice it is on, if any."""

    item_id: str
    item_class: ItemClass = Field(description="TIME or EXPENSE")
    contract_id: str | None = None
    project_id: str | None = None
    amount: Amount
    currency: Currency
    status: WorkItemStatus = Field(description="ACCEPTED, REJECTED or PENDING")
    invoice_id: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    """A reference entity: its model, the fields forming its key, and its typed fields."""

    name: str
    model: type[Versioned]
    key: tuple[str, ...]
    fields: Mapping[str, FieldSpec]
    # Rows agreeing on these fields are versions of one thing and must not overlap in time. Usually
    # the key; a rate row has its own id but is a version of (scope, scope id, labor category).
    versioned_by: tuple[str, ...]

    def native(self, row: BaseModel) -> dict[str, Any]:
        """A validated row as a rule value (a dict the rule engine reads with ``entity.field``)."""
        return {name: spec.native(getattr(row, name)) for name, spec in self.fields.items()}


def define_entity(name: str, model: type[Versioned], *key: str, versioned_by: tuple[str, ...] = ()) -> Entity:
    return Entity(name, model, key, field_specs(model), versioned_by or key)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        define_entity("project", Project, "project_id"),
        define_entity("task", Task, "project_id", "task_id"),
        define_entity("worker", Worker, "worker_id"),
        define_entity("assignment", Assignment, "assignment_id"),
        define_entity("contract", Contract, "contract_id"),
        define_entity("rate_card", RateCardRow, "rate_id", versioned_by=("scope", "scope_id", "labor_category")),
        define_entity("job_code", JobCode, "job_code"),
        define_entity("billing_hold", BillingHold, "hold_id"),
        define_entity("transaction_control", TransactionControl, "control_id"),
        define_entity("fx_rate", FxRate, "from_currency", "to_currency", "rate_date"),
        define_entity("billed_item", BilledItem, "entry_id"),
        define_entity("contract_line", ContractLine, "contract_id", "line_id"),
        define_entity("contract_expense_term", ContractExpenseTerm, "contract_id", "expense_type"),
        define_entity("customer", Customer, "customer_id"),
        define_entity("tax_code", TaxCode, "tax_code"),
        define_entity("taxability", Taxability, "jurisdiction", "service_category"),
        define_entity("exemption_certificate", ExemptionCertificate, "certificate_id"),
        define_entity("accounting_period", AccountingPeriod, "module", "period_id"),
        define_entity("expense_policy", ExpensePolicy, "expense_type"),
        define_entity("per_diem_rate", PerDiemRate, "location", "expense_type"),
        define_entity("mileage_rate", MileageRate, "currency"),
        define_entity("work_item", WorkItem, "item_id"),
        define_entity("holiday", Holiday, "calendar", "holiday_date"),
    )
}


