from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Acceptance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCEPTANCE_UNSPECIFIED: _ClassVar[Acceptance]
    PARTIAL: _ClassVar[Acceptance]
    ALL_OR_NOTHING: _ClassVar[Acceptance]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    ACCEPT: _ClassVar[Outcome]
    ENRICH: _ClassVar[Outcome]
    REJECT: _ClassVar[Outcome]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    INFO: _ClassVar[Severity]
    WARNING: _ClassVar[Severity]
    ERROR: _ClassVar[Severity]
ACCEPTANCE_UNSPECIFIED: Acceptance
PARTIAL: Acceptance
ALL_OR_NOTHING: Acceptance
OUTCOME_UNSPECIFIED: Outcome
ACCEPT: Outcome
ENRICH: Outcome
REJECT: Outcome
SEVERITY_UNSPECIFIED: Severity
INFO: Severity
WARNING: Severity
ERROR: Severity

class TimeEntry(_message.Message):
    __slots__ = ("entry_id", "timesheet_id", "worker_id", "project_id", "task_id", "assignment_id", "work_date", "hours", "time_type", "role_code", "labor_category", "billable", "bill_rate", "currency", "activity_code", "source_system", "source_ref", "submitted_at", "correction_of", "bill_status", "custom", "rate_source", "bill_amount")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESHEET_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_DATE_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    TIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_CODE_FIELD_NUMBER: _ClassVar[int]
    LABOR_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BILLABLE_FIELD_NUMBER: _ClassVar[int]
    BILL_RATE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_CODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_OF_FIELD_NUMBER: _ClassVar[int]
    BILL_STATUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    RATE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    BILL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    timesheet_id: str
    worker_id: str
    project_id: str
    task_id: str
    assignment_id: str
    work_date: str
    hours: str
    time_type: str
    role_code: str
    labor_category: str
    billable: str
    bill_rate: str
    currency: str
    activity_code: str
    source_system: str
    source_ref: str
    submitted_at: str
    correction_of: str
    bill_status: str
    custom: _containers.ScalarMap[str, str]
    rate_source: str
    bill_amount: str
    def __init__(self, entry_id: _Optional[str] = ..., timesheet_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., project_id: _Optional[str] = ..., task_id: _Optional[str] = ..., assignment_id: _Optional[str] = ..., work_date: _Optional[str] = ..., hours: _Optional[str] = ..., time_type: _Optional[str] = ..., role_code: _Optional[str] = ..., labor_category: _Optional[str] = ..., billable: _Optional[str] = ..., bill_rate: _Optional[str] = ..., currency: _Optional[str] = ..., activity_code: _Optional[str] = ..., source_system: _Optional[str] = ..., source_ref: _Optional[str] = ..., submitted_at: _Optional[str] = ..., correction_of: _Optional[str] = ..., bill_status: _Optional[str] = ..., custom: _Optional[_Mapping[str, str]] = ..., rate_source: _Optional[str] = ..., bill_amount: _Optional[str] = ...) -> None: ...

class ExpenseLine(_message.Message):
    __slots__ = ("expense_id", "report_id", "worker_id", "project_id", "task_id", "assignment_id", "expense_date", "expense_type", "amount", "currency", "payment_method", "receipt_attached", "location", "miles", "attendees", "purpose", "billable", "billable_amount", "non_billable_amount", "bill_amount", "bill_status", "source_system", "source_ref", "custom", "bill_currency")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPENSE_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_DATE_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_ATTACHED_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    MILES_FIELD_NUMBER: _ClassVar[int]
    ATTENDEES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BILLABLE_FIELD_NUMBER: _ClassVar[int]
    BILLABLE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NON_BILLABLE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BILL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BILL_STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    BILL_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    expense_id: str
    report_id: str
    worker_id: str
    project_id: str
    task_id: str
    assignment_id: str
    expense_date: str
    expense_type: str
    amount: str
    currency: str
    payment_method: str
    receipt_attached: str
    location: str
    miles: str
    attendees: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    billable: str
    billable_amount: str
    non_billable_amount: str
    bill_amount: str
    bill_status: str
    source_system: str
    source_ref: str
    custom: _containers.ScalarMap[str, str]
    bill_currency: str
    def __init__(self, expense_id: _Optional[str] = ..., report_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., project_id: _Optional[str] = ..., task_id: _Optional[str] = ..., assignment_id: _Optional[str] = ..., expense_date: _Optional[str] = ..., expense_type: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., payment_method: _Optional[str] = ..., receipt_attached: _Optional[str] = ..., location: _Optional[str] = ..., miles: _Optional[str] = ..., attendees: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., billable: _Optional[str] = ..., billable_amount: _Optional[str] = ..., non_billable_amount: _Optional[str] = ..., bill_amount: _Optional[str] = ..., bill_status: _Optional[str] = ..., source_system: _Optional[str] = ..., source_ref: _Optional[str] = ..., custom: _Optional[_Mapping[str, str]] = ..., bill_currency: _Optional[str] = ...) -> None: ...

class ValidateExpenseLinesRequest(_message.Message):
    __slots__ = ("lines", "acceptance", "request_id")
    LINES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[ExpenseLine]
    acceptance: Acceptance
    request_id: str
    def __init__(self, lines: _Optional[_Iterable[_Union[ExpenseLine, _Mapping]]] = ..., acceptance: _Optional[_Union[Acceptance, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Invoice(_message.Message):
    __slots__ = ("invoice_id", "invoice_number", "invoice_date", "contract_id", "customer_id", "currency", "po_number", "supplier_vat_id", "customer_vat_id", "tax_legend", "lines")
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    INVOICE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INVOICE_DATE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PO_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SUPPLIER_VAT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_VAT_ID_FIELD_NUMBER: _ClassVar[int]
    TAX_LEGEND_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    invoice_id: str
    invoice_number: str
    invoice_date: str
    contract_id: str
    customer_id: str
    currency: str
    po_number: str
    supplier_vat_id: str
    customer_vat_id: str
    tax_legend: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    def __init__(self, invoice_id: _Optional[str] = ..., invoice_number: _Optional[str] = ..., invoice_date: _Optional[str] = ..., contract_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., currency: _Optional[str] = ..., po_number: _Optional[str] = ..., supplier_vat_id: _Optional[str] = ..., customer_vat_id: _Optional[str] = ..., tax_legend: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("line_id", "line_type", "service_category", "source_ids", "quantity", "rate", "amount", "tax_code", "tax_rate", "tax_amount", "revenue_treatment", "bill_status", "custom")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TAX_CODE_FIELD_NUMBER: _ClassVar[int]
    TAX_RATE_FIELD_NUMBER: _ClassVar[int]
    TAX_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REVENUE_TREATMENT_FIELD_NUMBER: _ClassVar[int]
    BILL_STATUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    line_id: str
    line_type: str
    service_category: str
    source_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: str
    rate: str
    amount: str
    tax_code: str
    tax_rate: str
    tax_amount: str
    revenue_treatment: str
    bill_status: str
    custom: _containers.ScalarMap[str, str]
    def __init__(self, line_id: _Optional[str] = ..., line_type: _Optional[str] = ..., service_category: _Optional[str] = ..., source_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[str] = ..., rate: _Optional[str] = ..., amount: _Optional[str] = ..., tax_code: _Optional[str] = ..., tax_rate: _Optional[str] = ..., tax_amount: _Optional[str] = ..., revenue_treatment: _Optional[str] = ..., bill_status: _Optional[str] = ..., custom: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ValidateInvoicesRequest(_message.Message):
    __slots__ = ("invoices", "acceptance", "request_id")
    INVOICES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    invoices: _containers.RepeatedCompositeFieldContainer[Invoice]
    acceptance: Acceptance
    request_id: str
    def __init__(self, invoices: _Optional[_Iterable[_Union[Invoice, _Mapping]]] = ..., acceptance: _Optional[_Union[Acceptance, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ValidateTimeEntriesRequest(_message.Message):
    __slots__ = ("entries", "acceptance", "request_id")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[TimeEntry]
    acceptance: Acceptance
    request_id: str
    def __init__(self, entries: _Optional[_Iterable[_Union[TimeEntry, _Mapping]]] = ..., acceptance: _Optional[_Union[Acceptance, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("rule_id", "code", "message", "severity", "field", "ruleset_id")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RULESET_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    code: str
    message: str
    severity: Severity
    field: str
    ruleset_id: str
    def __init__(self, rule_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., field: _Optional[str] = ..., ruleset_id: _Optional[str] = ...) -> None: ...

class Enrichment(_message.Message):
    __slots__ = ("field", "old_value", "new_value", "rule_id")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    field: str
    old_value: str
    new_value: str
    rule_id: str
    def __init__(self, field: _Optional[str] = ..., old_value: _Optional[str] = ..., new_value: _Optional[str] = ..., rule_id: _Optional[str] = ...) -> None: ...

class RulesetRef(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("rulesets", "snapshot_id", "engine_version", "correlation_id")
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    rulesets: _containers.RepeatedCompositeFieldContainer[RulesetRef]
    snapshot_id: str
    engine_version: str
    correlation_id: str
    def __init__(self, rulesets: _Optional[_Iterable[_Union[RulesetRef, _Mapping]]] = ..., snapshot_id: _Optional[str] = ..., engine_version: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("item_id", "outcome", "reasons", "enrichments", "rulesets")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENTS_FIELD_NUMBER: _ClassVar[int]
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    outcome: Outcome
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    enrichments: _containers.RepeatedCompositeFieldContainer[Enrichment]
    rulesets: _containers.RepeatedCompositeFieldContainer[RulesetRef]
    def __init__(self, item_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., enrichments: _Optional[_Iterable[_Union[Enrichment, _Mapping]]] = ..., rulesets: _Optional[_Iterable[_Union[RulesetRef, _Mapping]]] = ...) -> None: ...

class BatchSummary(_message.Message):
    __slots__ = ("total", "accepted", "enriched", "rejected", "by_reason_code")
    class ByReasonCodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ENRICHED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    BY_REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    total: int
    accepted: int
    enriched: int
    rejected: int
    by_reason_code: _containers.ScalarMap[str, int]
    def __init__(self, total: _Optional[int] = ..., accepted: _Optional[int] = ..., enriched: _Optional[int] = ..., rejected: _Optional[int] = ..., by_reason_code: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ValidationResponse(_message.Message):
    __slots__ = ("decisions", "summary", "provenance", "rollups", "batch_id")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    ROLLUPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    summary: BatchSummary
    provenance: Provenance
    rollups: _containers.RepeatedCompositeFieldContainer[Rollup]
    batch_id: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., summary: _Optional[_Union[BatchSummary, _Mapping]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., rollups: _Optional[_Iterable[_Union[Rollup, _Mapping]]] = ..., batch_id: _Optional[str] = ...) -> None: ...

class Rollup(_message.Message):
    __slots__ = ("group_id", "outcome", "total", "accepted", "enriched", "rejected", "rejected_items")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ENRICHED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    outcome: Outcome
    total: int
    accepted: int
    enriched: int
    rejected: int
    rejected_items: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., total: _Optional[int] = ..., accepted: _Optional[int] = ..., enriched: _Optional[int] = ..., rejected: _Optional[int] = ..., rejected_items: _Optional[_Iterable[str]] = ...) -> None: ...
