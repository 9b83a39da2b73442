"""``tollgate rules lint`` and ``tollgate rules test``: exit codes and file:line:rule-id messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tollgate.clients.cli import main

SHIPPED = ROOT / "rulesets"


@pytest.fixture
def rulesets(tmp_path: Path) -> Path:
    copy = tmp_path / "rulesets"
    shutil.copytree(SHIPPED, copy)
    return copy


def _line_of(path: Path, text: str) -> int:
    content = path.read_text()
    assert text in content
    return content[: content.index(text)].count("\n") + 1


def _edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` by ``new`` in the file; return the 1-based line where it was."""
    line = _line_of(path, old)
    path.write_text(path.read_text().replace(old, new, 1))
    return line


def test_lint_accepts_the_shipped_rulesets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "lint", str(SHIPPED)]) == 0
    out = capsys.readouterr()
    assert "ok: 13 ruleset(s), 103 rule(s)" in out.out
    assert "interpreter" not in out.err  # every shipped expression is compiled


def test_lint_names_file_line_and_rule(rulesets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rulesets / "time_entry" / "10-project-status.yaml"
    line = _edit(path, "when: project.status in", "when: project.stauts in")
    assert main(["rules", "lint", str(rulesets)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}: PS-1: when: unknown attribute: 'stauts' (did you mean 'status'?)" in err
    assert "rulesets refused" in err


def test_lint_warns_when_an_expression_runs_in_the_interpreter(
    rulesets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rulesets / "time_entry" / "30-billing-eligibility.yaml"
    line = _edit(path, "when: hours < 0 and correction_of == null",
                 "when: hours < 0 and correction_of == null and ($re_groups ?? []).length == 0")
    assert main(["rules", "lint", str(rulesets)]) == 0
    err = capsys.readouterr().err
    assert f"{path}:{line}: warning: BE-7: when:" in err
    assert "runs in rule-engine's interpreter ($re_groups" in err or "runs in rule-engine's interpreter (regex" in err


def test_rules_test_passes_on_the_shipped_rulesets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "PASS project-status@1.0.0" in out
    assert "0 ruleset(s) failing" in out


def test_rules_test_fails_with_the_test_line(rulesets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rulesets / "time_entry" / "40-rate-cards.yaml"
    line = _line_of(path, "  - name: a day rate is divided by the contract's hours per day (RC-5)")
    _edit(path, "enriched: {bill_rate: 150.00}", "enriched: {bill_rate: 151.00}")
    assert main(["rules", "test", str(rulesets)]) == 1
    out = capsys.readouterr().out
    assert "FAIL rate-cards@1.0.0" in out
    assert f"{path}:{line}: a day rate is divided by the contract's hours per day (RC-5): " in out
    assert "bill_rate enriched to 150.00, expected 151.00" in out


def test_rules_test_fails_when_a_rule_is_never_tested(rulesets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rulesets / "time_entry" / "30-billing-eligibility.yaml"
    text = path.read_text()
    start = text.index("  - name: negative hours without a reference are rejected (BE-7)")
    end = text.index("  - name: negative hours correcting an earlier entry are accepted (BE-7)")
    path.write_text(text[:start] + text[end:])
    assert main(["rules", "test", str(rulesets)]) == 1
    assert "BE-7: no test in which the rule fires" in capsys.readouterr().out
