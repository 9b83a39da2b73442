"""Copies inside one request: a later copy of an item id, or of an invoice sent twice, is rejected naming the
first; an invoice line billing one source item twice is refused. Through the real server."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ROOT
from tollgate.clients.client import ValidationClient
from tollgate.rules.decisions import Outcome


def _entry(entry_id: str, **values: Any) -> dict[str, Any]:
    return {"entry_id": entry_id, "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
            "work_date": "2026-11-03", "hours": "8", "labor_category": "SENIOR_CONSULTANT",
            "submitted_at": "2026-11-07T17:00:00Z", **values}


def _sample_invoice() -> dict[str, Any]:
    """INV-2026-1102 of the sample: accepted with enrichments, its first line billing WI-4001 and WI-4002."""
    for line in (ROOT / "examples" / "invoices-2026-11.jsonl").read_text().splitlines():
        invoice: dict[str, Any] = json.loads(line)
        if invoice["invoice_id"] == "INV-2026-1102":
            return invoice
    raise AssertionError("INV-2026-1102 is not in the sample")


def test_a_later_copy_of_an_entry_id_is_rejected_naming_the_first(client: ValidationClient) -> None:
    result = client.validate_time_entries([_entry("TE-DUP"), _entry("TE-OTHER", hours="1", task_id="T-3"),
                                           _entry("TE-DUP", hours="2")])
    first, other, copy = result.decisions
    assert first.outcome is not Outcome.REJECT and other.outcome is not Outcome.REJECT
    assert copy.outcome is Outcome.REJECT
    assert copy.codes == ["DUPLICATE_ITEM"]
    assert "item 1 and item 3" in copy.reasons[0].message
    assert copy.reasons[0].field == "entry_id"
    # The copy takes no part in the batch figures: 8 + 1 hours on the day, not 11.
    assert "DAILY_HOURS_EXCEEDED" not in result.summary.by_reason_code


def test_an_invoice_line_id_twice_rejects_the_later_line(client: ValidationClient) -> None:
    invoice = _sample_invoice()
    invoice["lines"] = [invoice["lines"][0], {**invoice["lines"][1], "line_id": invoice["lines"][0]["line_id"]}]
    first, copy = client.validate_invoices([invoice]).decisions
    assert "DUPLICATE_ITEM" not in first.codes
    assert copy.codes == ["DUPLICATE_ITEM"]


def test_an_invoice_sent_twice_has_the_later_copy_rejected(client: ValidationClient) -> None:
    invoice = _sample_invoice()
    again = {**invoice, "lines": [{**line, "line_id": line["line_id"] + "-again"} for line in invoice["lines"]]}
    decisions = client.validate_invoices([invoice, again]).decisions
    assert [d.outcome is Outcome.REJECT for d in decisions[:2]] == [False, False]
    for decision in decisions[2:]:
        assert decision.codes == ["DUPLICATE_ITEM"]
        assert "invoice_id INV-2026-1102 is sent twice" in decision.reasons[0].message


def test_a_source_item_listed_twice_on_a_line_is_refused(client: ValidationClient) -> None:
    invoice = _sample_invoice()
    invoice["lines"] = [{**invoice["lines"][0], "source_ids": ["WI-4001", "WI-4001"]}]
    [decision] = client.validate_invoices([invoice]).decisions
    assert decision.outcome is Outcome.REJECT
    [reason] = decision.reasons
    assert (reason.code, reason.field) == ("INVALID_FIELD", "source_ids")
    assert "'WI-4001' is listed twice" in reason.message
