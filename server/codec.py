"""Decisions into protobuf responses, written field by field (no MessageToDict/ParseDict)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rules.decisions import Acceptance, BatchSummary, Decision, Outcome, Provenance, Rollup
from rules.model import Severity
from tollgate_api.v1 import validation_pb2 as pb

OUTCOMES = {Outcome.ACCEPT: pb.ACCEPT, Outcome.ENRICH: pb.ENRICH, Outcome.REJECT: pb.REJECT}
ACCEPTANCE = {pb.ACCEPTANCE_UNSPECIFIED: Acceptance.PARTIAL, pb.PARTIAL: Acceptance.PARTIAL,
              pb.ALL_OR_NOTHING: Acceptance.ALL_OR_NOTHING}
SEVERITIES = {Severity.INFO: pb.INFO, Severity.WARNING: pb.WARNING, Severity.ERROR: pb.ERROR}


def fill_response(response: Any, decisions: Sequence[Decision], provenance: Provenance,
                  rollups: Sequence[Rollup] = ()) -> None:
    """Write decisions, their summary, roll-ups and the batch's provenance into a response message."""
    add = response.decisions.add
    for decision in decisions:
        out = add(item_id=decision.item_id, outcome=OUTCOMES[decision.outcome])
        for reason in decision.reasons:
            out.reasons.add(
                rule_id=reason.rule_id,
                code=reason.code,
                message=reason.message,
                severity=SEVERITIES[reason.severity],
                field=reason.field or "",
                ruleset_id=reason.ruleset_id or "",
            )
        for ruleset in decision.rulesets:
            out.rulesets.add(id=ruleset.id, version=ruleset.version)
        for enrichment in decision.enrichments:
            out.enrichments.add(
                field=enrichment.field,
                old_value=enrichment.old_value,
                new_value=enrichment.new_value,
                rule_id=enrichment.rule_id,
            )
    summary = BatchSummary.of(decisions)
    response.summary.total = summary.total
    response.summary.accepted = summary.accepted
    response.summary.enriched = summary.enriched
    response.summary.rejected = summary.rejected
    response.summary.by_reason_code.update(summary.by_reason_code)
    response.provenance.snapshot_id = provenance.snapshot_id
    response.provenance.engine_version = provenance.engine_version
    response.provenance.correlation_id = provenance.correlation_id
    for ruleset in provenance.rulesets:
        response.provenance.rulesets.add(id=ruleset.id, version=ruleset.version)
    for rollup in rollups:
        response.rollups.add(group_id=rollup.group_id, outcome=OUTCOMES[rollup.outcome], total=rollup.total,
                             accepted=rollup.accepted, enriched=rollup.enriched, rejected=rollup.rejected,
                             rejected_items=rollup.rejected_items)
