"""The shipped time-entry rulesets written by hand in plain Python: the floor of the in-process comparison.

Both functions read a pre-bound scope (item values + reference records, as the engine builds it) and
do what rulesets/time_entry/*.yaml say, in the same order, with the same semantics: an enrich rule's
values are seen by later rules, ``requires`` skips a rule when the path is null, a rule reading a
missing required record (project, task, worker) is skipped and the item is rejected, money is rounded
to 2 places half-up, and an enrich rule fires only when it changes a value.

- ``checks``: which rules fire and the final enriched values (the work zen-engine and ``Rule.matches``
  are given).
- ``decide``: the whole ``Decision``, with every reason's message and every enrichment, as Tollgate
  returns it (the work ``Evaluator.decide`` does), except that a missing record's reason carries a short
  message rather than the snapshot lookup's.

If the YAML changes, the agreement check in test_rules_in_process.py fails until this file follows it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from rules.decisions import Decision, Enrichment, Outcome, Reason
from rules.model import Severity
from rules.schema import format_value as fv

CLOSED_STATUSES = ("COMPLETED", "CANCELLED", "ARCHIVED", "CLOSED", "ON_HOLD")
OVERTIME_TYPES = ("OT", "DT")
RATED_BILLING_TYPES = ("TM", "COST_PLUS")
INTERNAL_ACTIVITIES = ("INTERNAL", "PTO", "ADMIN", "TRAINING")
MAX_HOURS = Decimal(24)
MIN_HOURS = -MAX_HOURS
ZERO = Decimal(0)
HOURS_PER_DAY = Decimal(8)
OVERTIME_MULTIPLIER = Decimal("1.5")
DOUBLE_TIME_MULTIPLIER = Decimal(2)
CENT = Decimal("0.01")

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
PS, LC, BE, RC = "project-status", "labor-category", "billing-eligibility", "rate-cards"
ENRICH_RULES = frozenset({"LC-2", "LC-6", "BE-1", "BE-2.billable", "RC-1", "RC-5", "RC-6"})


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _differs(old: Any, new: Any) -> bool:
    return old != new or type(old) is not type(new)


def checks(s: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(ids of the rules that fire, in order; final value of each field an enrich rule changed)."""
    project, task, worker = s["project"], s["task"], s["worker"]
    assignment, contract, job, rate = s["assignment"], s["contract"], s["job"], s["rate"]
    wd, submitted = s["work_date"], s["submitted_at"]
    labor_category, time_type, billable = s["labor_category"], s["time_type"], s["billable"]
    bill_rate, rate_source = s["bill_rate"], s["rate_source"]
    fired: list[str] = []
    changes: dict[str, Any] = {}
    # project-status
    if project is not None:
        if project["status"] in CLOSED_STATUSES:
            fired.append("PS-1")
        finish = project["finish_date"]
        if wd < project["start_date"] or (finish is not None and wd > finish):
            fired.append("PS-2")
    if task is not None:
        start, finish = task["start_date"], task["finish_date"]
        if (start is not None and wd < start) or (finish is not None and wd > finish):
            fired.append("PS-2.task")
    if project is not None:
        closed = project["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            fired.append("PS-3")
    if task is not None:
        closed = task["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            fired.append("PS-3.task")
    if assignment is not None:
        closed = assignment["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            fired.append("PS-3.assignment")
    # labor-category
    if worker is not None:
        ended = worker["termination_date"]
        if worker["status"] != "ACTIVE" or wd < worker["hire_date"] or (ended is not None and wd > ended):
            fired.append("LC-1")
        if job is not None and labor_category is None:
            labor_category = changes["labor_category"] = job["labor_category"]
            fired.append("LC-2")
        if labor_category is None and job is None:
            fired.append("LC-2.missing")
        if (project is not None and time_type in OVERTIME_TYPES and not worker["overtime_eligible"]
                and not (contract is not None and contract["bills_overtime"])):
            time_type = changes["time_type"] = "REG"
            fired.append("LC-6")
    # billing-eligibility
    if project is not None and billable and (
        not project["billable"] or project["billing_type"] not in RATED_BILLING_TYPES
    ):
        billable = changes["billable"] = False
        fired.append("BE-1")
    if task is not None:
        if not task["is_leaf"] or not task["chargeable"]:
            fired.append("BE-2")
        if billable and not task["billable"]:
            billable = changes["billable"] = False
            fired.append("BE-2.billable")
    activity = s["activity_code"]
    if (project is not None and activity is not None and billable and activity in INTERNAL_ACTIVITIES
            and project["project_type"] == "CLIENT"):
        fired.append("BE-6")
    hours = s["hours"]
    if hours < ZERO and s["correction_of"] is None:
        fired.append("BE-7")
    if hours == ZERO or hours > MAX_HOURS or hours < MIN_HOURS:
        fired.append("BE-7.range")
    # rate-cards
    if project is not None and billable and rate is None:
        fired.append("RC-2")
    if rate is not None and billable:
        unit = rate["unit"]
        if unit == "HOUR":
            new_rate = _money(rate["bill_rate"])
        elif unit == "DAY":
            per_day = contract["hours_per_day"] if contract is not None else None
            new_rate = _money(rate["bill_rate"] / (HOURS_PER_DAY if per_day is None else per_day))
        else:
            new_rate = None
        if new_rate is not None:
            new_source = rate["source"]
            changed = False
            if _differs(bill_rate, new_rate):
                bill_rate = changes["bill_rate"] = new_rate
                changed = True
            if _differs(rate_source, new_source):
                rate_source = changes["rate_source"] = new_source
                changed = True
            if changed:
                fired.append("RC-1" if unit == "HOUR" else "RC-5")
    if bill_rate is not None and project is not None and billable and time_type in OVERTIME_TYPES:
        if time_type == "DT":
            multiplier = contract["double_time_multiplier"] if contract is not None else None
            multiplier = DOUBLE_TIME_MULTIPLIER if multiplier is None else multiplier
        else:
            multiplier = contract["overtime_multiplier"] if contract is not None else None
            multiplier = OVERTIME_MULTIPLIER if multiplier is None else multiplier
        new_rate = _money(bill_rate * multiplier)
        if _differs(bill_rate, new_rate):
            changes["bill_rate"] = new_rate
            fired.append("RC-6")
    return fired, changes


def _missing(name: str, field: str) -> Reason:
    return Reason(f"refdata:{name}", "REFERENCE_DATA_MISSING", f"{name} is not in the reference snapshot", ERROR, field)


def decide(item_id: str, s: dict[str, Any]) -> Decision:
    """The decision Tollgate gives for this scope: outcome, reasons with messages, enrichments."""
    project, task, worker = s["project"], s["task"], s["worker"]
    assignment, contract, job, rate = s["assignment"], s["contract"], s["job"], s["rate"]
    wd, submitted = s["work_date"], s["submitted_at"]
    project_id, task_id, worker_id = s["project_id"], s["task_id"], s["worker_id"]
    labor_category, time_type, billable = s["labor_category"], s["time_type"], s["billable"]
    bill_rate, rate_source = s["bill_rate"], s["rate_source"]
    reasons: list[Reason] = []
    enrichments: list[Enrichment] = []
    rejected = False
    add = reasons.append

    # project-status
    if project is None:
        rejected = True
        add(_missing("project", "project_id"))
    if task is None:
        rejected = True
        add(_missing("task", "task_id"))
    if project is not None:
        if project["status"] in CLOSED_STATUSES:
            rejected = True
            add(Reason("PS-1", "PROJECT_NOT_CHARGEABLE",
                       f"Project {project_id} is {fv(project['status'])} on {fv(wd)}; charge the time to an open "
                       "project, or ask the project manager to reopen this one.", ERROR, "project_id", PS))
        finish = project["finish_date"]
        if wd < project["start_date"] or (finish is not None and wd > finish):
            rejected = True
            add(Reason("PS-2", "OUTSIDE_PROJECT_DATES",
                       f"Work date {fv(wd)} is outside project {project_id}'s dates ({fv(project['start_date'])} to "
                       f"{fv(finish)}); check the date or the project.", ERROR, "work_date", PS))
    if task is not None:
        start, finish = task["start_date"], task["finish_date"]
        if (start is not None and wd < start) or (finish is not None and wd > finish):
            rejected = True
            add(Reason("PS-2.task", "OUTSIDE_TASK_DATES",
                       f"Work date {fv(wd)} is outside task {task_id}'s dates ({fv(start)} to {fv(finish)}); "
                       "charge a task open on that date.", ERROR, "work_date", PS))
    if project is not None:
        closed = project["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            rejected = True
            add(Reason("PS-3", "CLOSED_FOR_TIME",
                       f"Project {project_id} was closed for time at {fv(closed)}; this entry was submitted at "
                       f"{fv(submitted)} and cannot be accepted.", ERROR, "project_id", PS))
    if task is not None:
        closed = task["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            rejected = True
            add(Reason("PS-3.task", "CLOSED_FOR_TIME",
                       f"Task {task_id} on project {project_id} was closed for time at {fv(closed)}; entries "
                       "submitted after that are not accepted.", ERROR, "task_id", PS))
    if assignment is not None:
        closed = assignment["closed_for_time_at"]
        if closed is not None and (submitted is None or submitted >= closed):
            rejected = True
            add(Reason("PS-3.assignment", "CLOSED_FOR_TIME",
                       f"Assignment {fv(assignment['assignment_id'])} of worker {worker_id} was closed for time at "
                       f"{fv(closed)}; entries submitted after that are not accepted.", ERROR, "assignment_id", PS))

    # labor-category
    if worker is None:
        rejected = True
        add(_missing("worker", "worker_id"))
    else:
        ended = worker["termination_date"]
        if worker["status"] != "ACTIVE" or wd < worker["hire_date"] or (ended is not None and wd > ended):
            rejected = True
            add(Reason("LC-1", "WORKER_NOT_ACTIVE",
                       f"Worker {worker_id} is {fv(worker['status'])} on {fv(wd)} (hired {fv(worker['hire_date'])}, "
                       f"terminated {fv(ended)}); time can only be recorded while employed.", ERROR, "worker_id", LC))
        if job is not None and labor_category is None:
            derived = job["labor_category"]
            if _differs(labor_category, derived):
                add(Reason("LC-2", "LABOR_CATEGORY_DERIVED",
                           f"Labor category {fv(derived)} derived from worker {worker_id}'s job code "
                           f"{fv(worker['job_code'])} as of {fv(wd)}.", INFO, "labor_category", LC))
                enrichments.append(Enrichment("labor_category", None, fv(derived), "LC-2"))
                labor_category = derived
        if labor_category is None and job is None:
            rejected = True
            add(Reason("LC-2.missing", "LABOR_CATEGORY_UNKNOWN",
                       f"No labor category was sent and worker {worker_id}'s job code {fv(worker['job_code'])} maps "
                       f"to none on {fv(wd)}; add the job code to the HR mapping or send the labor category.",
                       ERROR, "labor_category", LC))
        if (project is not None and time_type in OVERTIME_TYPES and not worker["overtime_eligible"]
                and not (contract is not None and contract["bills_overtime"])):
            add(Reason("LC-6", "OVERTIME_RETYPED",
                       f"Worker {worker_id} is not overtime-eligible and contract {fv(project['contract_id'])} does "
                       f"not bill overtime; {fv(time_type)} time recorded as REG.", WARNING, "time_type", LC))
            enrichments.append(Enrichment("time_type", fv(time_type), "REG", "LC-6"))
            time_type = "REG"

    # billing-eligibility
    if project is not None and billable and (
        not project["billable"] or project["billing_type"] not in RATED_BILLING_TYPES
    ):
        add(Reason("BE-1", "PROJECT_NOT_BILLABLE",
                   f"Project {project_id} is {fv(project['billing_type'])} (billable project: "
                   f"{fv(project['billable'])}); the time is recorded as cost only.", INFO, "billable", BE))
        enrichments.append(Enrichment("billable", "true", "false", "BE-1"))
        billable = False
    if task is not None:
        if not task["is_leaf"] or not task["chargeable"]:
            rejected = True
            add(Reason("BE-2", "TASK_NOT_CHARGEABLE",
                       f"Task {task_id} ({fv(task['name'])}) on project {project_id} does not take time (leaf task: "
                       f"{fv(task['is_leaf'])}, chargeable: {fv(task['chargeable'])}); charge one of its leaf tasks.",
                       ERROR, "task_id", BE))
        if billable and not task["billable"]:
            add(Reason("BE-2.billable", "TASK_NOT_BILLABLE",
                       f"Task {task_id} on project {project_id} is not billable; the time is recorded as cost only.",
                       INFO, "billable", BE))
            enrichments.append(Enrichment("billable", "true", "false", "BE-2.billable"))
            billable = False
    activity = s["activity_code"]
    if (project is not None and activity is not None and billable and activity in INTERNAL_ACTIVITIES
            and project["project_type"] == "CLIENT"):
        rejected = True
        add(Reason("BE-6", "INTERNAL_ACTIVITY_BILLED",
                   f"Activity {activity} is internal and cannot be billed to client project {project_id}; mark the "
                   "entry non-billable or use a client activity code.", ERROR, "activity_code", BE))
    hours = s["hours"]
    if hours < ZERO and s["correction_of"] is None:
        rejected = True
        add(Reason("BE-7", "NEGATIVE_HOURS_WITHOUT_CORRECTION",
                   f"{fv(hours)} hours is negative; a negative entry must name the entry it corrects in "
                   "correction_of.", ERROR, "hours", BE))
    if hours == ZERO or hours > MAX_HOURS or hours < MIN_HOURS:
        rejected = True
        add(Reason("BE-7.range", "HOURS_OUT_OF_RANGE",
                   f"{fv(hours)} hours cannot be recorded in one entry; enter between 0 and {fv(MAX_HOURS)} hours.",
                   ERROR, "hours", BE))

    # rate-cards
    if project is not None and billable and rate is None:
        rejected = True
        add(Reason("RC-2", "NO_RATE",
                   f"No rate for labor category {fv(labor_category)} on {fv(wd)} (looked for worker {worker_id}, "
                   f"assignment, contract {fv(project['contract_id'])}, project {project_id} and standard rates); "
                   "add a rate row or mark the entry non-billable.", ERROR, "bill_rate", RC))
    if rate is not None and billable and rate["unit"] in ("HOUR", "DAY"):
        hourly = rate["unit"] == "HOUR"
        per_day = HOURS_PER_DAY
        if hourly:
            new_rate = _money(rate["bill_rate"])
        else:
            if contract is not None and contract["hours_per_day"] is not None:
                per_day = contract["hours_per_day"]
            new_rate = _money(rate["bill_rate"] / per_day)
        new_source = rate["source"]
        changed = []
        if _differs(bill_rate, new_rate):
            changed.append(Enrichment("bill_rate", None if bill_rate is None else fv(bill_rate), fv(new_rate),
                                      "RC-1" if hourly else "RC-5"))
        if _differs(rate_source, new_source):
            changed.append(Enrichment("rate_source", None if rate_source is None else fv(rate_source),
                                      fv(new_source), "RC-1" if hourly else "RC-5"))
        if changed:
            if hourly:
                add(Reason("RC-1", "RATE_RESOLVED",
                           f"Bill rate {fv(rate['bill_rate'])} {fv(rate['currency'])}/hour from {fv(new_source)}, "
                           f"effective on {fv(wd)}.", INFO, "bill_rate", RC))
            else:
                add(Reason("RC-5", "DAY_RATE_CONVERTED",
                           f"Day rate {fv(rate['bill_rate'])} {fv(rate['currency'])} from {fv(new_source)} divided by "
                           f"{fv(per_day)} hours per day.", INFO, "bill_rate", RC))
            enrichments.extend(changed)
            bill_rate, rate_source = new_rate, new_source
    if bill_rate is not None and project is not None and billable and time_type in OVERTIME_TYPES:
        if time_type == "DT":
            multiplier = contract["double_time_multiplier"] if contract is not None else None
            multiplier = DOUBLE_TIME_MULTIPLIER if multiplier is None else multiplier
        else:
            multiplier = contract["overtime_multiplier"] if contract is not None else None
            multiplier = OVERTIME_MULTIPLIER if multiplier is None else multiplier
        new_rate = _money(bill_rate * multiplier)
        if _differs(bill_rate, new_rate):
            add(Reason("RC-6", "OVERTIME_RATE_APPLIED",
                       f"{fv(time_type)} rate applied to contract {fv(project['contract_id'])}'s base rate.",
                       INFO, "bill_rate", RC))
            enrichments.append(Enrichment("bill_rate", fv(bill_rate), fv(new_rate), "RC-6"))

    if rejected:
        # a rejected item is not enriched: the reasons of the enrich rules that acted are dropped
        return Decision(item_id, Outcome.REJECT, tuple(r for r in reasons if r.rule_id not in ENRICH_RULES))
    return Decision(item_id, Outcome.ENRICH if enrichments else Outcome.ACCEPT, tuple(reasons), tuple(enrichments))
