"""Versions of a ruleset side by side: each item is judged by the version in force on its business date,
and its decision names the versions that judged it (through the real server and client)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tollgate.clients.client import ValidationClient
from tollgate.rules.decisions import Outcome, RulesetRef
from tollgate.server.app import start
from tollgate.server.settings import Settings

ENTRY = {"entry_id": "V-1", "timesheet_id": "TS-V", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1",
         "assignment_id": "A-1", "hours": "12", "labor_category": "SENIOR_CONSULTANT", "source_system": "PSA"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValidationClient]:
    rulesets = tmp_path_factory.mktemp("rulesets")
    shutil.copytree(ROOT / "rulesets" / "time_entry", rulesets / "time_entry")
    # Version 2.0.0 of the batch checks, from 16 November: a day holds at most 10 hours, not 24.
    original = (rulesets / "time_entry" / "05-batch-checks.yaml").read_text(encoding="utf-8")
    second = original.replace("version: 1.0.0", "version: 2.0.0") \
        .replace("effective_from: 2026-01-01", "effective_from: 2026-11-16") \
        .replace("max_daily_hours: 24", "max_daily_hours: 10")
    assert second.count("2.0.0") == 1 and "max_daily_hours: 10" in second
    (rulesets / "time_entry" / "05-batch-checks-2.0.0.yaml").write_text(second, encoding="utf-8")
    running = start(Settings(port=0, threads=2, rulesets=rulesets, log_level="warning"))
    try:
        with ValidationClient(f"127.0.0.1:{running.port}", timeout=30) as connected:
            yield connected
    finally:
        running.stop()


def test_each_item_is_judged_by_the_version_in_force_on_its_date(client: ValidationClient) -> None:
    before = {**ENTRY, "entry_id": "V-1", "work_date": "2026-11-13", "source_ref": "psa:v1"}
    after = {**ENTRY, "entry_id": "V-2", "work_date": "2026-11-17", "source_ref": "psa:v2"}
    first, second = client.validate_time_entries([before, after]).decisions
    assert first.outcome is not Outcome.REJECT
    assert "DAILY_HOURS_EXCEEDED" not in first.codes
    assert RulesetRef("batch-checks", "1.0.0") in first.rulesets
    assert (second.outcome, second.codes[0]) == (Outcome.REJECT, "DAILY_HOURS_EXCEEDED")
    assert RulesetRef("batch-checks", "2.0.0") in second.rulesets
    assert "more than 10" in second.reasons[0].message
    # The other rulesets have one version each: every decision names them all, in the order they ran.
    assert [r.id for r in second.rulesets] == [
        "batch-checks", "project-status", "labor-category", "billing-eligibility", "rate-cards", "contract-terms"]


def test_an_item_dated_before_every_version_is_rejected(client: ValidationClient) -> None:
    early = {**ENTRY, "entry_id": "V-3", "work_date": "2025-12-31", "source_ref": "psa:v3"}
    [decision] = client.validate_time_entries([early]).decisions
    assert decision.outcome is Outcome.REJECT
    assert set(decision.codes) == {"NO_RULESET_IN_FORCE"}
    assert decision.reasons[0].message == ("no version of ruleset batch-checks is in force on 2025-12-31: the "
                                           "earliest, 1.0.0, takes effect on 2026-01-01")
    assert decision.reasons[0].field == "work_date"
