"""The invoice catalogue (tax treatment TX-1, TX-2, TX-4, TX-5, TX-7; invoice validation IV-1, IV-2, IV-4, IV-5,
IV-6, IV-9, IV-10) on the bundled sample invoices and reference data: decided in process, through the client
against a real server (partial and all-or-nothing, roll-ups per invoice) and through the CLI.

The sample, examples/invoices-2026-11.jsonl (we invoice from the Netherlands):

- INV-2026-1101 Globex (Oregon, which does not tax services), fixed fee and milestone: accepted.
- INV-2026-1102 Wayne GmbH (Germany, verified VAT id): reverse charged (TX-1).
- INV-2026-1103 Leblanc (France, VAT id failed verification): Dutch VAT with a warning (TX-2), 21%.
- INV-2026-1104 Initech (Hawaii taxes services): exempt by its certificate (TX-4, TX-5).
- INV-2026-1105 Acme (New Mexico; its certificate expired in June, TX-5 warns), one line per outcome: taxed at the
  rate in force after 15 November (TX-4), unknown and rejected source items (IV-1), an item already invoiced
  (IV-2), an amount that is not its items' (IV-1), a tax code retired on 15 November (TX-7), a wrong tax amount
  (IV-10).
- INV-2026-1106 Wayne, dated in October, a closed receivables period (IV-9).
- INV-2026-1107 Wayne in USD (IV-5), without the customer's VAT id (IV-4) or a purchase order (IV-6: that alone
  would hold it, but a rejected line keeps no hold, nor its reason).
- INV-2026-1108 Wayne after contract C-400's billing hold starts on 23 November: held (IV-6).
- INV-2026-1109 Wayne, a day after INV-2026-1102, billing one of its time entries again (IV-2.batch).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_compiled_rulesets import _interpreted
from tests.test_reference_data import bind_item
from tollgate.clients.cli import invoices_of, read_items
from tollgate.clients.client import ValidationClient
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.decisions import Decision
from tollgate.rules.fields import format_value
from tollgate.rules.item_kinds import INVOICE_LINE
from tollgate.rules.loader import load_rulesets
from tollgate.rules.typecheck import compile_ruleset
from tollgate.server.app import RunningServer

REFDATA = ROOT / "examples" / "refdata"
SAMPLE_INVOICES = ROOT / "examples" / "invoices-2026-11.jsonl"
LEGEND = "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)."

# line id -> (outcome, reason codes), partial acceptance
EXPECTED: dict[str, tuple[str, list[str]]] = {
    "INV-2026-1101-1": ("accept", []),
    "INV-2026-1101-2": ("accept", []),
    "INV-2026-1102-1": ("enrich", ["REVERSE_CHARGE"]),
    "INV-2026-1102-2": ("enrich", ["REVERSE_CHARGE"]),
    "INV-2026-1103-1": ("enrich", ["NO_VALID_VAT_ID", "TAX_RATE_APPLIED"]),
    "INV-2026-1104-1": ("enrich", ["TAX_EXEMPT"]),
    "INV-2026-1104-2": ("enrich", ["US_SALES_TAX", "TAX_EXEMPT"]),
    "INV-2026-1105-1": ("enrich", ["US_SALES_TAX", "EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"]),
    "INV-2026-1105-2": ("reject", ["EXEMPTION_EXPIRED", "SOURCE_ITEMS_NOT_BILLABLE"]),
    "INV-2026-1105-3": ("reject", ["EXEMPTION_EXPIRED", "SOURCE_ALREADY_INVOICED"]),
    "INV-2026-1105-4": ("reject", ["EXEMPTION_EXPIRED", "LINE_NOT_SOURCE_TOTAL"]),
    "INV-2026-1105-5": ("reject", ["TAX_CODE_NOT_ACTIVE", "EXEMPTION_EXPIRED"]),
    "INV-2026-1105-6": ("reject", ["EXEMPTION_EXPIRED", "TAX_AMOUNT_MISMATCH"]),
    "INV-2026-1106-1": ("reject", ["PERIOD_NOT_OPEN"]),
    "INV-2026-1107-1": ("reject", ["CURRENCY_NOT_CONTRACT_CURRENCY", "EU_INVOICE_CONTENT_MISSING"]),
    "INV-2026-1108-1": ("enrich", ["REVERSE_CHARGE", "BILLING_HOLD"]),
    "INV-2026-1109-1": ("reject", ["SOURCE_BILLED_TWICE"]),
}

# invoice id -> (outcome, accepted, enriched, rejected, lines rejected on their own account)
ROLLUPS: dict[str, tuple[str, int, int, int, tuple[str, ...]]] = {
    "INV-2026-1101": ("accept", 2, 0, 0, ()),
    "INV-2026-1102": ("enrich", 0, 2, 0, ()),
    "INV-2026-1103": ("enrich", 0, 1, 0, ()),
    "INV-2026-1104": ("enrich", 0, 2, 0, ()),
    "INV-2026-1105": ("reject", 0, 1, 5, tuple(f"INV-2026-1105-{n}" for n in range(2, 7))),
    "INV-2026-1106": ("reject", 0, 0, 1, ("INV-2026-1106-1",)),
    "INV-2026-1107": ("reject", 0, 0, 1, ("INV-2026-1107-1",)),
    "INV-2026-1108": ("enrich", 0, 1, 0, ()),
    "INV-2026-1109": ("reject", 0, 0, 1, ("INV-2026-1109-1",)),
}


def sample_invoices() -> list[dict[str, Any]]:
    return invoices_of(read_items(SAMPLE_INVOICES))


def flat_lines(invoices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each line as an item carrying its invoice's header fields."""
    lines = []
    for invoice in invoices:
        header = {k: v for k, v in invoice.items() if k != "lines"}
        lines.extend({**header, **line} for line in invoice["lines"])
    return lines


def _enriched(decision: Decision) -> dict[str, str | None]:
    return {e.field: e.new_value for e in decision.enrichments}


@pytest.fixture(scope="module")
def snapshot() -> ReferenceSnapshot:
    return load_snapshot(REFDATA)


def _evaluator(snapshot: ReferenceSnapshot, *, interpreted: bool = False) -> Evaluator:
    rulesets = load_rulesets(ROOT / "rulesets").for_kind(INVOICE_LINE.name)
    if interpreted:
        rulesets = [_interpreted(ruleset) for ruleset in rulesets]
    return Evaluator(INVOICE_LINE, rulesets, SnapshotBinder(INVOICE_LINE, snapshot), snapshot.snapshot_id,
                     ENGINE_VERSION)


@pytest.fixture(scope="module")
def sample(snapshot: ReferenceSnapshot) -> dict[str, Decision]:
    decisions = _evaluator(snapshot).evaluate(flat_lines(sample_invoices()))
    return {d.item_id: d for d in decisions}


# ---------------------------------------------------------------------------------------------------
# In process


def test_the_sample_shows_every_outcome(sample: dict[str, Decision]) -> None:
    assert list(sample) == list(EXPECTED)
    assert {d.outcome.value for d in sample.values()} == {"accept", "enrich", "reject"}


@pytest.mark.parametrize(("line_id", "expected"), EXPECTED.items(), ids=list(EXPECTED))
def test_sample_decisions(sample: dict[str, Decision], line_id: str, expected: tuple[str, list[str]]) -> None:
    decision = sample[line_id]
    assert (decision.outcome.value, decision.codes) == expected


def test_reverse_charge_for_a_business_in_another_member_state(sample: dict[str, Decision]) -> None:
    decision = sample["INV-2026-1102-1"]  # TX-1: CU-WAYNE, DE, verified VAT id; we invoice from NL
    assert _enriched(decision) == {"tax_code": "RC", "tax_rate": "0", "tax_amount": "0.00", "tax_legend": LEGEND}
    assert decision.reasons[0].rule_id == "TX-1"
    assert "business in DE (VAT id DE811234567) and we invoice from NL" in decision.reasons[0].message


def test_a_customer_without_a_valid_vat_id_pays_domestic_vat(sample: dict[str, Decision]) -> None:
    decision = sample["INV-2026-1103-1"]  # TX-2, then the rate of NL-VAT-21 from the tax codes: 21% of 3000.00
    assert _enriched(decision) == {"tax_code": "NL-VAT-21", "tax_rate": "21", "tax_amount": "630.00"}
    assert decision.reasons[0].severity.value == "warning"
    assert "treated as a private customer" in decision.reasons[0].message


def test_an_exemption_certificate_overrides_a_taxable_state(sample: dict[str, Decision]) -> None:
    sent_taxed = sample["INV-2026-1104-1"]  # sent with Hawaii's GET; Initech's EC-101 is valid to 2027
    assert _enriched(sent_taxed) == {"tax_code": "EXEMPT", "tax_rate": "0", "tax_amount": "0.00"}
    untaxed = sample["INV-2026-1104-2"]  # TX-4 sets the state's code, TX-5 replaces it
    assert [e.rule_id for e in untaxed.enrichments] == ["TX-4", "TX-5", "TX-5", "TX-5"]
    assert _enriched(untaxed)["tax_code"] == "EXEMPT"


def test_us_tax_at_the_rate_in_force_on_the_invoice_date(sample: dict[str, Decision]) -> None:
    decision = sample["INV-2026-1105-1"]  # New Mexico's code changed on 16 November: 4.875% of 2640.00
    assert _enriched(decision) == {"tax_code": "US-NM-GRT4875", "tax_rate": "4.875", "tax_amount": "128.70"}
    expired = decision.reasons[1]
    assert (expired.rule_id, expired.severity.value) == ("TX-5.expired", "warning")
    assert "EC-102 of customer CU-ACME for US-NM expired on 2026-06-30" in expired.message


def test_rejections_name_what_is_wrong(sample: dict[str, Decision]) -> None:
    def message(line_id: str, code: str) -> str:
        return next(r.message for r in sample[line_id].reasons if r.code == code)

    assert "unknown WI-1099, not accepted WI-1003" in message("INV-2026-1105-2", "SOURCE_ITEMS_NOT_BILLABLE")
    assert "bills WI-1004, already on another live invoice" in message("INV-2026-1105-3", "SOURCE_ALREADY_INVOICED")
    assert "bills 1500.00 USD, but its 1 source item(s) WI-1005 come to 1376.00" in message(
        "INV-2026-1105-4", "LINE_NOT_SOURCE_TOTAL")
    assert "Tax code US-NM-GRT5125" in message("INV-2026-1105-5", "TAX_CODE_NOT_ACTIVE")
    assert "carries tax 65.00 USD, but 4.875% of 1320.00" in message("INV-2026-1105-6", "TAX_AMOUNT_MISMATCH")
    assert "receivables period AR-2026-10 (CLOSED)" in message("INV-2026-1106-1", "PERIOD_NOT_OPEN")
    assert "is in USD but contract C-400 bills in EUR" in message("INV-2026-1107-1", "CURRENCY_NOT_CONTRACT_CURRENCY")
    assert "customer VAT id (none) (on file: DE811234567)" in message("INV-2026-1107-1", "EU_INVOICE_CONTENT_MISSING")
    assert sample["INV-2026-1105-5"].enrichments == ()  # a rejected line is not enriched


def test_a_billing_hold_from_its_start_date(sample: dict[str, Decision]) -> None:
    assert "BILLING_HOLD" not in sample["INV-2026-1102-1"].codes  # 2026-11-12: before H-1 on C-400
    decision = sample["INV-2026-1108-1"]  # 2026-11-24
    assert _enriched(decision)["bill_status"] == "HOLD"
    assert decision.reasons[-1].severity.value == "warning"
    assert "CONTRACT C-400 is on billing hold H-1 from 2026-11-23" in decision.reasons[-1].message


def test_fused_and_interpreted_rulesets_agree_on_the_sample(snapshot: ReferenceSnapshot) -> None:
    lines = flat_lines(sample_invoices())
    assert _evaluator(snapshot).evaluate(lines) == _evaluator(snapshot, interpreted=True).evaluate(lines)


# ---------------------------------------------------------------------------------------------------
# Bindings, as of the invoice date


def bind_line(snapshot: ReferenceSnapshot, **line: str) -> dict[str, Any]:
    values = {"line_id": "X-1", "invoice_id": "INV-X", "invoice_date": "2026-11-20", "contract_id": "C-100",
              "customer_id": "CU-ACME", "currency": "USD", "amount": "100.00", **line}
    return bind_item(snapshot, INVOICE_LINE, values)


def test_a_tax_code_is_bound_only_while_active(snapshot: ReferenceSnapshot) -> None:
    assert bind_line(snapshot, tax_code="US-NM-GRT5125", invoice_date="2026-11-15")["tax"]["rate"] == Decimal("5.125")
    assert bind_line(snapshot, tax_code="US-NM-GRT5125", invoice_date="2026-11-16")["tax"] is None
    assert bind_line(snapshot, tax_code="US-NM-GRT4875", invoice_date="2026-11-15")["tax"] is None


def _taxability(snapshot: ReferenceSnapshot, **line: str) -> Any:
    """Taxability as the tax-treatment ruleset looks it up (its ``lookups: taxability``)."""
    [lookup] = compile_ruleset(ROOT / "rulesets" / "invoice_line" / "10-tax-treatment.yaml").lookups
    return SnapshotBinder(INVOICE_LINE, snapshot).lookup(lookup, bind_line(snapshot, **line))


def test_taxability_by_state_as_of_the_date(snapshot: ReferenceSnapshot) -> None:
    assert _taxability(snapshot, invoice_date="2026-11-10")["tax_code"] == "US-NM-GRT5125"
    assert _taxability(snapshot)["tax_code"] == "US-NM-GRT4875"
    oregon = _taxability(snapshot, customer_id="CU-GLOBEX", contract_id="C-200")
    assert (oregon["jurisdiction"], oregon["taxable"]) == ("US-OR", False)
    assert _taxability(snapshot, customer_id="CU-WAYNE", contract_id="C-400") is None  # no EU rows


def test_exemption_certificates_valid_or_latest_expired(snapshot: ReferenceSnapshot) -> None:
    valid = bind_line(snapshot, customer_id="CU-INITECH", contract_id="C-300")["exemption"]
    assert (valid["certificate_id"], format_value(valid["effective_to"])) == ("EC-101", "2027-12-31")
    expired = bind_line(snapshot)["exemption"]
    assert (expired["certificate_id"], format_value(expired["effective_to"])) == ("EC-102", "2026-06-30")
    assert bind_line(snapshot, invoice_date="2024-06-30")["exemption"] is None  # before it started


def test_receivables_period_of_the_invoice_date(snapshot: ReferenceSnapshot) -> None:
    assert bind_line(snapshot, invoice_date="2026-10-31")["period"]["status"] == "CLOSED"  # AR, not PA's OPEN
    assert bind_line(snapshot, invoice_date="2026-11-01")["period"]["period_id"] == "AR-2026-11"
    assert bind_line(snapshot, invoice_date="2027-01-04")["period"] is None


def test_source_items_summary(snapshot: ReferenceSnapshot) -> None:
    sources = bind_line(snapshot, source_ids="WI-1001|WI-1003|WI-1004|WI-1099|WI-4001")["sources"]
    assert sources["count"] == 5
    assert sources["missing_ids"] == ("WI-1099",)
    assert sources["unaccepted_ids"] == ("WI-1003",)
    assert sources["invoiced_elsewhere_ids"] == ("WI-1004",)
    assert sources["other_contract_ids"] == ("WI-4001",)
    assert sources["billable_total"] == Decimal("2520.00")  # WI-1001 + WI-4001 (accepted, not invoiced elsewhere)
    again = bind_line(snapshot, invoice_id="INV-2026-1021", source_ids="WI-1004")["sources"]
    assert again["invoiced_elsewhere_ids"] == ()  # re-validating the invoice the item is on


def test_a_billing_hold_on_the_contract_or_customer(snapshot: ReferenceSnapshot) -> None:
    wayne = bind_line(snapshot, customer_id="CU-WAYNE", contract_id="C-400", invoice_date="2026-11-23")["hold"]
    assert (wayne["hold_id"], wayne["scope"]) == ("H-1", "CONTRACT")
    assert bind_line(snapshot, customer_id="CU-WAYNE", contract_id="C-400", invoice_date="2026-11-22")["hold"] is None
    globex = bind_line(snapshot, customer_id="CU-GLOBEX", contract_id="C-200", invoice_date="2026-06-15")["hold"]
    assert globex["hold_id"] == "H-2"


# ---------------------------------------------------------------------------------------------------
# End to end: the real server, client and CLI


def _check_rollups(rollups: list[Any]) -> None:
    assert {r.group_id: (r.outcome.value, r.accepted, r.enriched, r.rejected, tuple(r.rejected_items))
            for r in rollups} == ROLLUPS
    assert all(r.total == r.accepted + r.enriched + r.rejected for r in rollups)


def test_sample_invoices_through_the_client(client: ValidationClient, server: RunningServer) -> None:
    result = client.validate_invoices(sample_invoices(), correlation_id="e2e-invoices-1")
    assert [d.item_id for d in result.decisions] == list(EXPECTED)
    assert {d.item_id: (d.outcome.value, d.codes) for d in result.decisions} == EXPECTED
    by_id = {d.item_id: d for d in result.decisions}
    assert _enriched(by_id["INV-2026-1105-1"])["tax_amount"] == "128.70"
    assert _enriched(by_id["INV-2026-1108-1"])["bill_status"] == "HOLD"
    _check_rollups(result.rollups)
    provenance = result.decisions[0].provenance
    assert provenance is not None
    assert provenance.correlation_id == "e2e-invoices-1"
    assert provenance.snapshot_id == server.runtime.generation.snapshot.snapshot_id
    assert [r.id for r in provenance.rulesets] == ["tax-treatment", "tax-rates", "invoice-validation"]
    assert (result.summary.accepted, result.summary.enriched, result.summary.rejected) == (2, 7, 8)


def test_all_or_nothing_rejects_an_invoice_with_a_rejected_line(client: ValidationClient) -> None:
    result = client.validate_invoices(sample_invoices(), all_or_nothing=True)
    by_id = {d.item_id: d for d in result.decisions}
    taxed = by_id["INV-2026-1105-1"]  # enriched on its own; rejected with its invoice
    assert taxed.outcome.value == "reject"
    assert taxed.codes[0] == "GROUP_REJECTED"
    assert "INV-2026-1105-2" in taxed.reasons[0].message
    for line_id, (outcome, codes) in EXPECTED.items():
        if not line_id.startswith("INV-2026-1105-"):
            assert (by_id[line_id].outcome.value, by_id[line_id].codes) == (outcome, codes)
    rollup = next(r for r in result.rollups if r.group_id == "INV-2026-1105")
    assert (rollup.outcome.value, rollup.enriched, rollup.rejected) == ("reject", 0, 6)
    assert tuple(rollup.rejected_items) == ROLLUPS["INV-2026-1105"][4]  # not INV-2026-1105-1: only its invoice failed

def test_invoices_stream_in_chunks_of_whole_invoices(server: RunningServer) -> None:
    # 8 lines a chunk: 1101-1104 (7 lines), 1105 (6), 1106-1109 (4); no invoice is split.
    with ValidationClient(f"127.0.0.1:{server.port}", timeout=30, chunk_size=8) as chunked:
        result = chunked.validate_invoices(sample_invoices())
    assert [d.item_id for d in result.decisions] == list(EXPECTED)
    rollups = {r.group_id: (r.outcome.value, r.accepted, r.enriched, r.rejected, tuple(r.rejected_items))
               for r in result.rollups}
    assert rollups == ROLLUPS
    # INV-2026-1109 bills a time entry INV-2026-1102 bills too, in another chunk: IV-2 holds across chunks
    # (docs/controls.md), so the chunked stream rejects it as the whole batch does.
    decided = {d.item_id: (d.outcome.value, d.codes) for d in result.decisions}
    assert decided == EXPECTED
    assert "SOURCE_BILLED_TWICE" in decided["INV-2026-1109-1"][1]


def test_sample_invoices_through_the_cli(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    table = run_cli("validate", str(SAMPLE_INVOICES), "--server", target)
    assert table.returncode == 0, table.stderr
    assert "INV-2026-1102-1  enrich   tax_code: (none) -> RC  [TX-1]" in table.stdout
    assert "INV-2026-1106-1  reject   error PERIOD_NOT_OPEN [IV-9]: Invoice date 2026-10-30" in table.stdout
    assert "INV-2026-1105  reject   6 (0 accepted, 1 enriched, 5 rejected;" in table.stdout
    assert "17 items: 2 accepted, 7 enriched, 8 rejected" in table.stdout

    completed = run_cli("validate", str(SAMPLE_INVOICES), "--kind", "invoice", "--server", target,
                         "--format", "json", "--all-or-nothing")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    outcomes = {d["item_id"]: d["outcome"] for d in document["decisions"]}
    assert outcomes["INV-2026-1105-1"] == "reject"
    assert outcomes["INV-2026-1102-1"] == "enrich"
    assert {r["group_id"]: r["outcome"] for r in document["rollups"]} == {k: v[0] for k, v in ROLLUPS.items()}

    failing = run_cli("validate", str(SAMPLE_INVOICES), "--server", target, "--fail-on-reject")
    assert failing.returncode == 1

    # The kind as rulesets name it (applies_to: invoice_line) is understood too.
    by_line_kind = run_cli("validate", str(SAMPLE_INVOICES), "--kind", "invoice_line", "--server", target)
    assert "17 items: 2 accepted, 7 enriched, 8 rejected" in by_line_kind.stdout


def _sample_invoice(invoice_id: str, **header: Any) -> dict[str, Any]:
    """A sample invoice with header fields changed (None removes one)."""
    invoice = next(i for i in sample_invoices() if i["invoice_id"] == invoice_id)
    changed = {**invoice, **header}
    return {k: v for k, v in changed.items() if v is not None}


def test_an_invoice_without_the_po_its_customer_requires_is_held(client: ValidationClient) -> None:
    """IV-6: a hold (bill_status HOLD and a warning), not a rejection; the invoice stands, billing is blocked."""
    invoice = _sample_invoice("INV-2026-1102", po_number=None)  # Wayne GmbH requires a PO
    for all_or_nothing in (False, True):
        result = client.validate_invoices([invoice], all_or_nothing=all_or_nothing)
        assert {d.item_id: (d.outcome.value, d.codes) for d in result.decisions} == {
            "INV-2026-1102-1": ("enrich", ["REVERSE_CHARGE", "PO_REQUIRED"]),
            "INV-2026-1102-2": ("enrich", ["REVERSE_CHARGE", "PO_REQUIRED"]),
        }
        for decision in result.decisions:
            assert _enriched(decision)["bill_status"] == "HOLD"
            po = decision.reasons[-1]
            assert (po.rule_id, po.severity.value, po.field) == ("IV-6", "warning", "po_number")
            assert "Customer CU-WAYNE requires a purchase order number" in po.message
            assert "held for billing until it carries the customer's PO number" in po.message
        [rollup] = result.rollups
        assert (rollup.group_id, rollup.outcome.value, rollup.enriched, rollup.rejected) == (
            "INV-2026-1102", "enrich", 2, 0)
    with_po = client.validate_invoices([_sample_invoice("INV-2026-1102")])
    assert all("bill_status" not in _enriched(d) for d in with_po.decisions)


def _acme_line(**line: str | None) -> dict[str, Any]:
    """INV-2026-1105 with its first line alone (WI-1001 and WI-1002, 2640.00 USD to New Mexico: 4.875% is 128.70),
    its tax fields as given (None leaves one out)."""
    invoice = _sample_invoice("INV-2026-1105")
    first = {k: v for k, v in {**invoice["lines"][0], **line}.items() if v is not None}
    return {**invoice, "lines": [first]}


@pytest.mark.parametrize(("tax", "expected"), [
    # Sent without a rate: the code's rate is applied, the amount sent is kept and checked (IV-10).
    ({"tax_code": "US-NM-GRT4875", "tax_amount": "135.00"}, ("reject", ["EXEMPTION_EXPIRED", "TAX_AMOUNT_MISMATCH"])),
    ({"tax_code": "US-NM-GRT4875", "tax_amount": "128.70"},
     ("enrich", ["EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"], {"tax_rate": "4.875"})),
    ({"tax_code": "US-NM-GRT4875", "tax_amount": "128.71"},  # within the tolerance of 0.01
     ("enrich", ["EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"], {"tax_rate": "4.875"})),
    # Sent without a code or rate: TX-4 gives the state's code, and the amount sent is checked against it.
    ({"tax_amount": "135.00"}, ("reject", ["EXEMPTION_EXPIRED", "TAX_AMOUNT_MISMATCH"])),
    ({"tax_amount": "128.70"},
     ("enrich", ["US_SALES_TAX", "EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"],
      {"tax_code": "US-NM-GRT4875", "tax_rate": "4.875"})),
    # Sent with its code's rate, or another: the same check of the amount sent.
    ({"tax_code": "US-NM-GRT4875", "tax_rate": "4.875", "tax_amount": "135.00"},
     ("reject", ["EXEMPTION_EXPIRED", "TAX_AMOUNT_MISMATCH"])),
    ({"tax_code": "US-NM-GRT4875", "tax_rate": "4.5", "tax_amount": "118.80"},  # 4.5% of 2640.00
     ("reject", ["EXEMPTION_EXPIRED", "TAX_AMOUNT_MISMATCH"])),
    # Without a tax amount, or with another state's code (TX-4 changes it): the code's tax is applied.
    ({"tax_code": "US-NM-GRT4875"},
     ("enrich", ["EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"], {"tax_rate": "4.875", "tax_amount": "128.70"})),
    ({"tax_code": "US-HI-GET", "tax_rate": "4.712", "tax_amount": "124.40"},
     ("enrich", ["US_SALES_TAX", "EXEMPTION_EXPIRED", "TAX_RATE_APPLIED"],
      {"tax_code": "US-NM-GRT4875", "tax_rate": "4.875", "tax_amount": "128.70"})),
], ids=["no-rate-wrong-amount", "no-rate-right-amount", "no-rate-within-tolerance", "no-code-wrong-amount",
        "no-code-right-amount", "rate-wrong-amount",
        "other-rate-its-amount", "no-amount", "other-state"])
def test_a_tax_amount_sent_is_checked_whether_or_not_the_line_carries_its_rate(
    client: ValidationClient, tax: dict[str, str], expected: tuple[Any, ...]
) -> None:
    """IV-10 sees the tax amount the line was sent with: tax-rates sets the rate and keeps the amount, and the
    tax treatment drops it only with a code it replaces (TX-4.replaced: the tax follows the new code)."""
    result = client.validate_invoices([_acme_line(**tax)])
    [decision] = result.decisions
    assert (decision.outcome.value, decision.codes) == expected[:2]
    if decision.outcome.value == "reject":
        mismatch = next(r for r in decision.reasons if r.code == "TAX_AMOUNT_MISMATCH")
        assert mismatch.rule_id == "IV-10"
        assert f"carries tax {tax['tax_amount']} USD, but 4.875% of 2640.00 is 128.70" in mismatch.message
        assert "tax code US-NM-GRT4875 on 2026-11-20" in mismatch.message
        [rollup] = result.rollups
        assert (rollup.outcome.value, rollup.rejected_items) == ("reject", ("INV-2026-1105-1",))
    else:
        assert _enriched(decision) == expected[2]


def test_sample_invoices_as_flat_rows(client: ValidationClient, tmp_path: Path) -> None:
    """The same invoices as one row per line (header fields repeated) are gathered by invoice id."""
    path = tmp_path / "invoice-lines.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in flat_lines(sample_invoices())))
    result = client.validate_invoices(invoices_of(read_items(path)))
    assert {d.item_id: (d.outcome.value, d.codes) for d in result.decisions} == EXPECTED
