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

from tollgate.rules.decisions import Decision, Enrichment, Outcome, Reason
from tollgate.rules.fields import format_value as fv
from tollgate.rules.model import Severity

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
HUNDRED = Decimal(100)
ENTERED_RATE_TOLERANCE_PCT = Decimal(1)
ASSIGNMENT_REQUIRED_TYPES = ("CLIENT",)
HOLD = "HOLD"

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
PS, LC, BE, RC = "project-status", "labor-category", "billing-eligibility", "rate-cards"
ENRICH_RULES = frozenset({"PS-5", "LC-2", "LC-6", "BE-1", "BE-2.billable", "BE-3.billable", "BE-5", "RC-1", "RC-5",
                          "RC-6", "RC-7", "RC-4"})


def rate_source_of(rate: dict[str, Any]) -> str:
    """Where a rate row was found, as the rate-cards ruleset writes rate_source: CONTRACT C-100 (rate R-10)."""
    where = f"{rate['scope']} {rate['scope_id']}" if rate["scope_id"] else str(rate["scope"])
    return f"{where} (rate {rate['rate_id']})"

def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _differs(old: Any, new: Any) -> bool:
    return old != new or type(old) is not type(new)


def _old(value: Any) -> str | None:
    return None if value is None else fv(value)


def _billed_changed(s: dict[str, Any], billed: dict[str, Any]) -> bool:
    """BE-8: the billing fields of a billed entry, as sent, differ from what was billed."""
    bill_rate, currency = s["bill_rate"], s["currency"]
    return bool(
        s["hours"] != billed["hours"] or s["billable"] != billed["billable"] or s["work_date"] != billed["work_date"]
        or s["project_id"] != billed["project_id"] or s["task_id"] != billed["task_id"]
        or (bill_rate is not None and bill_rate != billed["bill_rate"])
        or (currency is not None and billed["currency"] is not None and currency != billed["currency"])
    )


def _no_assignment(s: dict[str, Any], project: dict[str, Any], assignment: dict[str, Any] | None) -> bool:
    """BE-4: a client project, and no assignment of the worker on it covering the work date."""
    if project["project_type"] not in ASSIGNMENT_REQUIRED_TYPES:
        return False
    if assignment is None:
        return True
    wd, finish = s["work_date"], assignment["finish_date"]
    return bool(assignment["worker_id"] != s["worker_id"] or assignment["project_id"] != s["project_id"]
                or wd < assignment["start_date"] or (finish is not None and wd > finish))


def _entered_rate_differs(s: dict[str, Any], rate: dict[str, Any], contract: dict[str, Any] | None,
                          bill_rate: Decimal, time_type: str) -> bool:
    """RC-8: the rate entered differs from the rate row's hourly rate by more than the tolerance."""
    currency = s["currency"]
    if time_type in OVERTIME_TYPES or (rate["currency"] if currency is None else currency) != rate["currency"]:
        return False
    per = (contract["hours_per_day"] if contract is not None else HOURS_PER_DAY) if rate["unit"] == "DAY" else 1
    return bool(abs(bill_rate * per - rate["bill_rate"]) * 100 > rate["bill_rate"] * ENTERED_RATE_TOLERANCE_PCT)


def _discount(rate: dict[str, Any] | None, bill_rate: Decimal | None, billable: bool) -> Decimal | None:
    """RC-7: the discounted rate, or None when the rule does not apply."""
    if rate is None or bill_rate is None or not billable:
        return None
    discount = rate["discount_pct"]
    if discount is None or discount == 0:
        return None
    return _money(bill_rate * (HUNDRED - discount) / HUNDRED)


def checks(s: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(ids of the rules that fire, in order; final value of each field an enrich rule changed)."""
    project, task, worker = s["project"], s["task"], s["worker"]
    assignment, contract, job, rate = s["assignment"], s["contract"], s["job"], s["rate"]
    wd, submitted = s["work_date"], s["submitted_at"]
    labor_category, time_type, billable = s["labor_category"], s["time_type"], s["billable"]
    bill_rate, rate_source, bill_status = s["bill_rate"], s["rate_source"], s["bill_status"]
    fx, hold, control, billed = s["fx"], s["hold"], s["control"], s["billed"]
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
    if project is not None:
        if project["is_template"]:
            fired.append("PS-4")
        if (billable and project["billable"] and project["billing_type"] in RATED_BILLING_TYPES and contract is None
                and bill_status != HOLD):
            bill_status = changes["bill_status"] = HOLD
            fired.append("PS-5")
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
    if (contract is not None and labor_category is not None and billable and contract["allowed_labor_categories"]
            and labor_category not in contract["allowed_labor_categories"]):
        fired.append("LC-3")
    role = s["role_code"]
    if role is not None and assignment is not None and assignment["role_code"] is not None \
            and role != assignment["role_code"]:
        fired.append("LC-5")
    if (worker is not None and project is not None and time_type in OVERTIME_TYPES and not worker["overtime_eligible"]
            and not (contract is not None and contract["bills_overtime"])):
        time_type = changes["time_type"] = "REG"
        fired.append("LC-6")
    # billing-eligibility
    if billed is not None and _billed_changed(s, billed):
        fired.append("BE-8")
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
    if control is not None:
        if not control["chargeable"]:
            fired.append("BE-3")
        if billable and control["chargeable"] and not control["billable"]:
            billable = changes["billable"] = False
            fired.append("BE-3.billable")
    if project is not None and _no_assignment(s, project, assignment):
        fired.append("BE-4" if assignment is None else "BE-4.dates")
    activity = s["activity_code"]
    if (project is not None and activity is not None and billable and activity in INTERNAL_ACTIVITIES
            and project["project_type"] == "CLIENT"):
        fired.append("BE-6")
    hours = s["hours"]
    if hours < ZERO and s["correction_of"] is None:
        fired.append("BE-7")
    if hours == ZERO or hours > MAX_HOURS or hours < MIN_HOURS:
        fired.append("BE-7.range")
    if hold is not None and billable and bill_status != HOLD:
        changes["bill_status"] = HOLD
        fired.append("BE-5")
    # rate-cards
    if project is not None and billable and rate is None:
        fired.append("RC-2")
    if rate is not None and bill_rate is not None and billable and _entered_rate_differs(s, rate, contract, bill_rate,
                                                                                         time_type):
        fired.append("RC-8")
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
            new_source = rate_source_of(rate)
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
            bill_rate = changes["bill_rate"] = new_rate
            fired.append("RC-6")
    discounted = _discount(rate, bill_rate, billable)
    if discounted is not None and _differs(bill_rate, discounted):
        bill_rate = changes["bill_rate"] = discounted
        fired.append("RC-7")
    if (rate is not None and contract is not None and bill_rate is not None and billable
            and rate["currency"] != contract["currency"]):
        if fx is not None:
            converted, currency = _money(bill_rate * fx["rate"]), contract["currency"]
            changed = False
            if _differs(bill_rate, converted):
                changes["bill_rate"] = converted
                changed = True
            if _differs(s["currency"], currency):
                changes["currency"] = currency
                changed = True
            if changed:
                fired.append("RC-4")
        else:
            fired.append("RC-4.missing")
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
    bill_rate, rate_source, bill_status = s["bill_rate"], s["rate_source"], s["bill_status"]
    fx, hold, control, billed = s["fx"], s["hold"], s["control"], s["billed"]
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
    if project is not None:
        if project["is_template"]:
            rejected = True
            add(Reason("PS-4", "TEMPLATE_PROJECT",
                       f"Project {project_id} ({fv(project['name'])}) is a template; charge the time to the "
                       "engagement created from it.", ERROR, "project_id", PS))
        if (billable and project["billable"] and project["billing_type"] in RATED_BILLING_TYPES and contract is None
                and bill_status != HOLD):
            add(Reason("PS-5", "NO_CONTRACT_HOLD",
                       f"Billable project {project_id} has no contract in force on {fv(wd)} (contract: "
                       f"{fv(project['contract_id'])}), so the time cannot be priced; billing is held until the "
                       "contract is set up.", WARNING, "bill_status", PS))
            enrichments.append(Enrichment("bill_status", _old(bill_status), HOLD, "PS-5"))
            bill_status = HOLD

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
    if (contract is not None and labor_category is not None and billable and contract["allowed_labor_categories"]
            and labor_category not in contract["allowed_labor_categories"]):
        rejected = True
        add(Reason("LC-3", "LABOR_CATEGORY_NOT_ON_CONTRACT",
                   f"Labor category {fv(labor_category)} is not billable on contract {fv(contract['contract_id'])}, "
                   f"which allows {fv(contract['allowed_labor_categories'])}; record the time as non-billable or ask "
                   "for the contract to be amended.", ERROR, "labor_category", LC))
    role = s["role_code"]
    if role is not None and assignment is not None and assignment["role_code"] is not None \
            and role != assignment["role_code"]:
        add(Reason("LC-5", "ROLE_MISMATCH",
                   f"Role {fv(role)} differs from role {fv(assignment['role_code'])} on worker {worker_id}'s "
                   f"assignment {fv(assignment['assignment_id'])} to project {project_id}; check the role on the "
                   "timesheet.", WARNING, "role_code", LC))
    if (worker is not None and project is not None and time_type in OVERTIME_TYPES and not worker["overtime_eligible"]
            and not (contract is not None and contract["bills_overtime"])):
        add(Reason("LC-6", "OVERTIME_RETYPED",
                   f"Worker {worker_id} is not overtime-eligible and contract {fv(project['contract_id'])} does "
                   f"not bill overtime; {fv(time_type)} time recorded as REG.", WARNING, "time_type", LC))
        enrichments.append(Enrichment("time_type", fv(time_type), "REG", "LC-6"))
        time_type = "REG"

    # billing-eligibility
    if billed is not None and _billed_changed(s, billed):
        rejected = True
        add(Reason("BE-8", "BILLED_ENTRY_LOCKED",
                   f"Entry {s['entry_id']} was billed on invoice {fv(billed['invoice_id'])} as {fv(billed['hours'])} "
                   f"hours on {fv(billed['project_id'])}/{fv(billed['task_id'])} on {fv(billed['work_date'])} "
                   f"(billable {fv(billed['billable'])}, rate {fv(billed['bill_rate'])}); it now says "
                   f"{fv(s['hours'])} hours on {project_id}/{task_id} on {fv(wd)} (billable {fv(billable)}, rate "
                   f"{fv(bill_rate)}). Billed entries cannot change: record a correction entry instead.",
                   ERROR, "entry_id", BE))
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
    if control is not None:
        where = (f"project {project_id} (task {fv(control['task_id'])}, activity {fv(control['activity_code'])}, "
                 f"worker {fv(control['worker_id'])})")
        if not control["chargeable"]:
            rejected = True
            add(Reason("BE-3", "TRANSACTION_NOT_ALLOWED",
                       f"Transaction control {fv(control['control_id'])} does not allow time on {where} on {fv(wd)}: "
                       f"{fv(control['reason'])}.", ERROR, "task_id", BE))
        if billable and control["chargeable"] and not control["billable"]:
            add(Reason("BE-3.billable", "TRANSACTION_NOT_BILLABLE",
                       f"Transaction control {fv(control['control_id'])} makes time on {where} non-billable on "
                       f"{fv(wd)}: {fv(control['reason'])}; the time is recorded as cost only.", INFO, "billable", BE))
            enrichments.append(Enrichment("billable", "true", "false", "BE-3.billable"))
            billable = False
    if project is not None and _no_assignment(s, project, assignment):
        rejected = True
        if assignment is None:
            add(Reason("BE-4", "NO_ASSIGNMENT",
                       f"Worker {worker_id} has no assignment on project {project_id} covering {fv(wd)}; ask the "
                       "project manager for an assignment, or charge a project the worker is assigned to.",
                       ERROR, "worker_id", BE))
        else:
            add(Reason("BE-4.dates", "NO_ASSIGNMENT",
                       f"Assignment {fv(assignment['assignment_id'])} (worker {fv(assignment['worker_id'])} on project "
                       f"{fv(assignment['project_id'])}, {fv(assignment['start_date'])} to "
                       f"{fv(assignment['finish_date'])}) does not cover worker {worker_id}'s time on project "
                       f"{project_id} on {fv(wd)}; ask the project manager to extend it, or charge a project the "
                       "worker is assigned to.", ERROR, "worker_id", BE))
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
    if hold is not None and billable and bill_status != HOLD:
        add(Reason("BE-5", "BILLING_HOLD",
                   f"{fv(hold['scope'])} {fv(hold['scope_id'])} is on billing hold {fv(hold['hold_id'])} from "
                   f"{fv(hold['effective_from'])} to {fv(hold['effective_to'])} ({fv(hold['reason'])}); the time is "
                   "kept at cost and billing is held until the hold is released.", WARNING, "bill_status", BE))
        enrichments.append(Enrichment("bill_status", _old(bill_status), HOLD, "BE-5"))
        bill_status = HOLD

    # rate-cards
    if project is not None and billable and rate is None:
        rejected = True
        add(Reason("RC-2", "NO_RATE",
                   f"No rate for labor category {fv(labor_category)} on {fv(wd)} (looked for worker {worker_id}, "
                   f"assignment, contract {fv(project['contract_id'])}, project {project_id} and standard rates); "
                   "add a rate row or mark the entry non-billable.", ERROR, "bill_rate", RC))
    if rate is not None and bill_rate is not None and billable and _entered_rate_differs(s, rate, contract, bill_rate,
                                                                                         time_type):
        add(Reason("RC-8", "ENTERED_RATE_DIFFERS",
                   f"The rate entered, {fv(bill_rate)} {fv(rate['currency'])}/hour, differs by more than "
                   f"{fv(ENTERED_RATE_TOLERANCE_PCT)}% from {fv(rate['bill_rate'])} {fv(rate['currency'])}/"
                   f"{fv(rate['unit'])} of {fv(rate_source_of(rate))}; the rate card's rate is used.",
                   WARNING, "bill_rate", RC))
    if rate is not None and billable and rate["unit"] in ("HOUR", "DAY"):
        hourly = rate["unit"] == "HOUR"
        per_day = HOURS_PER_DAY
        if hourly:
            new_rate = _money(rate["bill_rate"])
        else:
            if contract is not None and contract["hours_per_day"] is not None:
                per_day = contract["hours_per_day"]
            new_rate = _money(rate["bill_rate"] / per_day)
        new_source = rate_source_of(rate)
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
            bill_rate = new_rate
    discounted = _discount(rate, bill_rate, billable)
    if rate is not None and discounted is not None and _differs(bill_rate, discounted):
        add(Reason("RC-7", "DISCOUNT_APPLIED",
                   f"Discount of {fv(rate['discount_pct'])}% from {fv(rate_source)} applied to {fv(bill_rate)} "
                   f"{fv(rate['currency'])}.", INFO, "bill_rate", RC))
        enrichments.append(Enrichment("bill_rate", _old(bill_rate), fv(discounted), "RC-7"))
        bill_rate = discounted
    if (rate is not None and contract is not None and bill_rate is not None and billable
            and rate["currency"] != contract["currency"]):
        if fx is not None:
            converted, currency = _money(bill_rate * fx["rate"]), contract["currency"]
            changed = []
            if _differs(bill_rate, converted):
                changed.append(Enrichment("bill_rate", fv(bill_rate), fv(converted), "RC-4"))
            if _differs(s["currency"], currency):
                changed.append(Enrichment("currency", _old(s["currency"]), fv(currency), "RC-4"))
            if changed:
                add(Reason("RC-4", "RATE_CONVERTED",
                           f"Rate {fv(bill_rate)} {fv(rate['currency'])} converted to {fv(currency)} for contract "
                           f"{fv(contract['contract_id'])} at {fv(fx['rate'])} ({fv(fx['from_currency'])}/"
                           f"{fv(fx['to_currency'])} of {fv(fx['rate_date'])}), rounded to the cent half up.",
                           INFO, "bill_rate", RC))
                enrichments.extend(changed)
        else:
            rejected = True
            add(Reason("RC-4.missing", "NO_FX_RATE",
                       f"No {fv(rate['currency'])}/{fv(contract['currency'])} FX rate on or before {fv(wd)} to convert "
                       f"{fv(rate_source)} to contract {fv(contract['contract_id'])}'s currency; load the ERP's FX "
                       "rates.", ERROR, "currency", RC))

    if rejected:
        # a rejected item is not enriched: the reasons of the enrich rules that acted are dropped
        return Decision(item_id, Outcome.REJECT, tuple(r for r in reasons if r.rule_id not in ENRICH_RULES))
    return Decision(item_id, Outcome.ENRICH if enrichments else Outcome.ACCEPT, tuple(reasons), tuple(enrichments))
