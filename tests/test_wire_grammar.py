"""The wire grammar (docs/item-kinds.md, "Wire values"): every string parses to the value a person would read
it as, or is refused with a message naming what was expected; never another value. The decoders the server
generates per item kind agree with it exactly."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tollgate.clients.client import ValidationClient
from tollgate.evaluators.items import ItemDecoder
from tollgate.refdata.loaders import validate_row
from tollgate.rules.entities import ENTITIES
from tollgate.rules.fields import FieldKind, FieldSpec, FieldValueError, Wire, read_date, read_datetime, read_decimal
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, ITEM_KINDS, TIME_ENTRY
from tollgate.rules.problems import Problem

HOURS = TIME_ENTRY.fields["hours"]
PLAIN_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")

# What a careless or hostile caller sends for a number: other scripts' digits, separators, signs, exponents.
NOISY = st.lists(st.sampled_from([*"0123456789.-+eE_ ,\n\t\xa0\u0668\uff18\u0661", "1e999999", "NaN", "inf"]),
                 max_size=14).map("".join)


def _person_reads(text: str, wire: Wire) -> Decimal | None:
    """What a person reads in ``text`` as a decimal under ``wire``, or None when it is not one."""
    match = PLAIN_DECIMAL.fullmatch(text)
    if match is None or not text.isascii():
        return None
    whole, fraction = match.group(1), match.group(2) or ""
    if len(whole) > wire.integer_digits or len(fraction) > wire.scale:
        return None
    value = Decimal(text)
    if (wire.minimum is not None and value < wire.minimum) or (wire.maximum is not None and value > wire.maximum):
        return None
    return value


@settings(max_examples=400, deadline=None)
@given(st.one_of(NOISY, st.text(max_size=12), st.decimals(allow_nan=False, allow_infinity=False).map(str)))
@example("\u0668")
@example("\uff18")
@example("1_0")
@example("+8")
@example("8.")
@example(".5")
@example("8\n")
@example("\xa08")
@example("1E+2")
@example("8e0")
@example("1e-999999")
@example("99999999999999999999999999999")
@example("-0")
@example("00012.50")
@example("1" * 10_000)
def test_a_decimal_is_what_a_person_reads_or_refused(text: str) -> None:
    for spec in (HOURS, INVOICE_LINE.fields["amount"], ENTITIES["fx_rate"].fields["rate"]):
        expected = _person_reads(text, spec.wire)
        try:
            value = read_decimal(text, spec.wire)
        except FieldValueError as error:
            assert expected is None, f"{spec.name}: {text!r} refused: {error}"
            assert len(str(error)) < 300  # the message does not grow with what was sent
            continue
        assert value == expected, f"{spec.name}: {text!r} read as {value}"
        assert "E" not in str(value) and str(value).lstrip("-0") == text.lstrip("-0")  # as written, no rounding


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.dates().map(dt.date.isoformat), st.text(alphabet="0123456789-WT: Z", max_size=12)))
@example("20261103")
@example("2026-W45-2")
@example("2026-11-3")
@example("2026-02-30")
@example(" 2026-11-03")
def test_a_date_is_yyyy_mm_dd_or_refused(text: str) -> None:
    try:
        day = read_date(text)
    except FieldValueError:
        assert not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) or not _is_a_date(text)
        return
    assert day.isoformat() == text


def _is_a_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("text", "accepted"), [
    ("2026-11-03T10:00:00Z", True), ("2026-11-03T10:00:00+01:00", True), ("2026-11-03T10:00:00.123456-05:00", True),
    ("2026-11-03 10:00Z", False), ("2026-11-03T10:00Z", False), ("2026-11-03T10:00:00", False),
    ("2026-11-03t10:00:00z", False), ("20261103T100000Z", False), ("2026-11-03T10:00:00.1234567Z", False),
    ("2026-11-03T25:00:00Z", False), ("2026-11-03", False),
])
def test_a_timestamp_is_rfc_3339_with_t_and_a_zone(text: str, accepted: bool) -> None:
    if accepted:
        assert read_datetime(text).utcoffset() is not None
    else:
        with pytest.raises(FieldValueError, match="RFC 3339"):
            read_datetime(text)


def _decoder_agrees(spec: FieldSpec, decoder: ItemDecoder, item: dict[str, Any], text: str) -> None:
    decoded = decoder.decode({**item, spec.name: text}, 1)
    try:
        expected = spec.parse(text)
    except FieldValueError:
        assert [p.field for p in decoded.problems] == [spec.name], (spec.name, text)
        return
    assert decoded.problems == [] or text == "", (spec.name, text, decoded.problems)
    if text:
        assert decoded.values[spec.name] == expected
        assert type(decoded.values[spec.name]) is type(expected)


_ENTRY = {"entry_id": "TE-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "work_date": "2026-11-03",
          "hours": "8"}
_TIME_DECODER = ItemDecoder(TIME_ENTRY)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["hours", "bill_rate", "work_date", "submitted_at", "time_type", "currency", "worker_id",
                        "billable"]),
       st.one_of(NOISY, st.text(max_size=10), st.sampled_from(["REG", "OT", "ot", "XYZ", "USD", "usd", "US",
                                                                 "true", "True", "yes", "2026-11-03",
                                                                 "2026-11-03T10:00:00Z", "W-1\x00", "W-1\u200b"])))
def test_the_generated_decoder_accepts_exactly_what_the_grammar_accepts(name: str, text: str) -> None:
    _decoder_agrees(TIME_ENTRY.fields[name], _TIME_DECODER, _ENTRY, text)


def test_every_decimal_field_of_every_kind_is_bounded() -> None:
    for kind in ITEM_KINDS.values():
        for spec in kind.fields.values():
            if spec.kind in (FieldKind.DECIMAL, FieldKind.MONEY):
                assert spec.wire.integer_digits <= 15 and spec.wire.scale <= 10, (kind.name, spec.name)


# ---------------------------------------------------------------------------------------------------
# Through the real service: each value of the list is refused, alone, naming the field.

_REFUSED_ENTRY_VALUES = [
    ("hours", "\u0668"), ("hours", "\uff18"), ("hours", "1_0"), ("hours", "+8"), ("hours", "8."), ("hours", ".5"),
    ("hours", "8\n"), ("hours", "\xa08"), ("hours", "1E+2"), ("hours", "8e0"), ("hours", "1e-999999"),
    ("hours", "1e999999"), ("hours", "99999999999999999999999999999"), ("hours", "1" * 10_000), ("hours", "1e9999"),
    ("work_date", "20261103"), ("work_date", "2026-W45-2"), ("submitted_at", "2026-11-03 10:00Z"),
    ("time_type", "XYZ"), ("time_type", "ot"), ("worker_id", "W-1\x00"), ("currency", "usd"), ("billable", "yes"),
]


def test_each_malformed_value_rejects_only_its_own_entry(client: ValidationClient) -> None:
    entries = [{**_ENTRY, "entry_id": f"TE-BAD-{n}", name: value}
               for n, (name, value) in enumerate(_REFUSED_ENTRY_VALUES)]
    entries.append({**_ENTRY, "entry_id": "TE-GOOD", "labor_category": "SENIOR_CONSULTANT",
                    "submitted_at": "2026-11-07T17:00:00Z"})
    decisions = {d.item_id: d for d in client.validate_time_entries(entries).decisions}
    for n, (name, value) in enumerate(_REFUSED_ENTRY_VALUES):
        decision = decisions[f"TE-BAD-{n}"]
        assert decision.outcome.value == "reject", (name, value)
        [reason] = [r for r in decision.reasons if r.code == "INVALID_FIELD"]
        assert reason.field == name
        assert len(reason.message) < 400
    assert decisions["TE-GOOD"].outcome.value != "reject", decisions["TE-GOOD"].reasons


@pytest.mark.parametrize("amount", ["-30000.00", "30000.001", "3E+4", "30 000.00", "30,000.00"])
def test_an_invoice_line_amount_is_cents_and_not_negative(client: ValidationClient, amount: str) -> None:
    invoice = {"invoice_id": "INV-1", "invoice_date": "2026-11-10", "contract_id": "C-200", "customer_id": "CU-GLOBEX",
               "currency": "USD", "lines": [{"line_id": "INV-1-1", "line_type": "FIXED_FEE", "amount": amount}]}
    [decision] = client.validate_invoices([invoice]).decisions
    assert decision.outcome.value == "reject"
    assert [r.field for r in decision.reasons if r.code == "INVALID_FIELD"] == ["amount"]


def test_an_expense_amount_in_other_digits_is_refused(client: ValidationClient) -> None:
    line = {"expense_id": "EX-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
            "expense_date": "2026-11-03", "expense_type": "MEALS", "amount": "\u0661\u0662", "currency": "USD"}
    [decision] = client.validate_expense_lines([line]).decisions
    assert [r.field for r in decision.reasons if r.code == "INVALID_FIELD"] == ["amount"]
    assert EXPENSE_LINE.fields["amount"].wire.scale == 2


# ---------------------------------------------------------------------------------------------------
# Reference data rows are held to the same grammar, with file:line:field.

@pytest.mark.parametrize(("entity", "row", "field"), [
    ("worker", {"worker_id": "W-1\x00", "status": "ACTIVE", "hire_date": "2020-01-01"}, "worker_id"),
    ("rate_card", {"rate_id": "R-1", "scope": "STANDARD", "labor_category": "X", "currency": "USD",
                   "bill_rate": "\u0661\u0665\u0660"}, "bill_rate"),
    ("rate_card", {"rate_id": "R-1", "scope": "STANDARD", "labor_category": "X", "currency": "USD",
                   "bill_rate": "1e999999"}, "bill_rate"),
    ("rate_card", {"rate_id": "R-1", "scope": "STANDARD", "labor_category": "X", "currency": "USD",
                   "bill_rate": 1e-7}, "bill_rate"),
    ("contract_line", {"contract_id": "C-1", "line_id": "L1", "item_class": "TIME", "start_date": "20260101"},
     "start_date"),
    ("contract_line", {"contract_id": "C-1", "line_id": "L1", "item_class": "time", "start_date": "2026-01-01"},
     "item_class"),
    ("project", {"project_id": "P-1", "status": "ACTIVE", "start_date": "2026-01-01", "billable": "yes"}, "billable"),
])
def test_a_reference_row_is_held_to_the_same_grammar(entity: str, row: dict[str, Any], field: str) -> None:
    problems: list[Problem] = []
    assert validate_row(ENTITIES[entity], row, "exports/x.csv", 7, problems) is None
    assert [(p.path, p.line, p.subject) for p in problems] == [("exports/x.csv", 7, field)]
    assert "Value error" not in problems[0].message
