"""Seeded, realistic benchmark data: a firm's reference data and a month-end of time entries.

``generate_firm(people, seed)`` builds the reference data of a professional-services firm of
``people`` workers (projects, tasks, assignments, contracts, rate cards with mid-month changes, job
codes), and ``Firm.write(directory)`` writes it as the export files the service loads
(``load_snapshot(directory)``), so every benchmark decides against a real, validated snapshot.

``Firm.entries(n, seed)`` makes ``n`` time entries for November 2026 as wire dicts (strings, empty
fields left out, like the rows of ``examples/timesheet-2026-11.csv``). The mix looks like real
month-end data: most entries are enriched (labor category derived, rate resolved, overtime priced,
discounts, rates converted to the contract's currency, billing holds) or accepted, a few percent are
rejected for a spread of reasons (closed or on-hold projects, template projects, terminated workers,
summary tasks, closed-for-time windows, missing rates, labor categories a contract does not allow,
transaction controls, missing assignments, internal activities billed to clients, bad hours, changed
billed entries, unknown references), and a very few are malformed.

Everything is a pure function of the seed and the sizes: the same arguments give the same files
(hence the same snapshot id) and the same entries.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tollgate.refdata.snapshot import file_stem
from tollgate.rules.entities import ENTITIES

MONTH_START = dt.date(2026, 11, 1)
MONTH_END = dt.date(2026, 11, 30)
MID_MONTH = dt.date(2026, 11, 15)
DAYS = [MONTH_START + dt.timedelta(days=i) for i in range((MONTH_END - MONTH_START).days + 1)]
WEEKDAYS = [d for d in DAYS if d.weekday() < 5]
WEEKENDS = [d for d in DAYS if d.weekday() >= 5]
TIMESHEET_LINES = 40  # one worker's timesheet, as a PSA approval flow sends it (the latency comparison)

# labor category -> (standard rate or None when the firm has no standard rate, unit)
CATEGORIES: dict[str, tuple[str | None, str]] = {
    "ANALYST": ("95.00", "HOUR"),
    "CONSULTANT": ("120.00", "HOUR"),
    "SENIOR_CONSULTANT": ("150.00", "HOUR"),
    "MANAGER": ("185.00", "HOUR"),
    "SENIOR_MANAGER": ("215.00", "HOUR"),
    "DIRECTOR": ("260.00", "HOUR"),
    "PRINCIPAL": ("1800.00", "DAY"),
    "PARTNER": ("2600.00", "DAY"),
    "DEVELOPER": ("110.00", "HOUR"),
    "SENIOR_DEVELOPER": ("140.00", "HOUR"),
    "ARCHITECT": ("175.00", "HOUR"),
    "DATA_SCIENTIST": (None, "HOUR"),  # only contract rates: elsewhere its billable time has no rate
}
# how common each category is among the workers
CATEGORY_WEIGHTS = [10, 22, 16, 10, 5, 3, 2, 1, 14, 9, 5, 3]
UNMAPPED_JOB_CODES = ("J-LEGACY-1", "J-LEGACY-2")  # on some workers, missing from the HR mapping
REMAPPED_JOB_CODE = "J-ANALYST-R"  # maps to ANALYST until mid-month, CONSULTANT after
ROLES = ("DEV", "ANALYST", "LEAD", "ARCHITECT", "PM", "QA", "ADVISOR")
INTERNAL_PROJECTS = (
    ("Bench", "DELIVERY"),
    ("Training and certification", "TRAINING"),
    ("Administration", "ADMIN"),
    ("Paid time off", "PTO"),
    ("Sales pursuits", "INTERNAL"),
    ("Practice development", "INTERNAL"),
)
CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP")


def _iso(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (tuple, list)):
        return "|".join(value)
    return str(value)


def _stamp(day: dt.date, hour: int, minute: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00Z"


@dataclass(slots=True)
class Firm:
    """The reference rows of one generated firm, per entity, plus what the entry generator needs."""

    people: int
    seed: int
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # for the entry generator
    workers: list[dict[str, Any]] = field(default_factory=list)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest version per project
    leaf_tasks: dict[str, list[str]] = field(default_factory=dict)
    assignments_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    internal_projects: list[str] = field(default_factory=list)
    category_of: dict[str, str | None] = field(default_factory=dict)  # worker -> true labor category
    template_projects: list[str] = field(default_factory=list)
    billed: dict[str, dict[str, Any]] = field(default_factory=dict)  # entry id -> its billed_item row

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.rows.items()}

    def write(self, directory: Path) -> Path:
        """Write one CSV export per entity (columns = the entity model's fields) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, entity in ENTITIES.items():
            columns = list(entity.model.model_fields)
            with (directory / f"{file_stem(entity)}.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(columns)
                for row in self.rows.get(name, []):
                    writer.writerow([_iso(row.get(column)) for column in columns])
        return directory

    # -----------------------------------------------------------------------------------------------
    # Entries

    def entries(self, count: int, seed: int, *, malformed_rate: float = 0.0005, prefix: str = "TE-") -> list[
        dict[str, str]
    ]:
        """``count`` time entries for November 2026 as wire dicts (strings only, empty fields left out)."""
        rng = random.Random(f"entries:{seed}:{self.people}:{self.seed}")
        return [self._entry(rng, f"{prefix}{i:07d}", malformed_rate) for i in range(1, count + 1)]

    def timesheet(self, lines: int, seed: int, prefix: str = "TS40-") -> list[dict[str, str]]:
        """One worker's timesheet: ``lines`` entries over the month's weekdays on the worker's assignments."""
        rng = random.Random(f"timesheet:{seed}:{self.people}:{self.seed}")
        regulars = [w for w in self.workers if w["_kind"] == "regular" and self.assignments_of[w["worker_id"]]]
        worker = rng.choice(regulars)
        entries = []
        for i in range(lines):
            day = WEEKDAYS[i * len(WEEKDAYS) // lines]
            entries.append(self._entry(rng, f"{prefix}{i + 1:03d}", 0.0, worker=worker, day=day))
        return entries

    def _pick_worker(self, rng: random.Random) -> dict[str, Any]:
        while True:
            worker = rng.choice(self.workers)
            # people on leave rarely record time; everyone else records about the same amount
            if worker["_kind"] != "leave" or rng.random() < 0.1:
                return worker

    def _pick_day(self, rng: random.Random, worker: Mapping[str, Any]) -> dt.date:
        first, last = worker["_first_day"], worker["_last_day"]
        if rng.random() < 0.97:  # almost everyone records time only while employed
            days = [d for d in WEEKDAYS if first <= d <= last] or WEEKDAYS
            if rng.random() < 0.03:
                days = [d for d in WEEKENDS if first <= d <= last] or days
            return rng.choice(days)
        return rng.choice(DAYS)

    def _entry(
        self,
        rng: random.Random,
        entry_id: str,
        malformed_rate: float,
        *,
        worker: Mapping[str, Any] | None = None,
        day: dt.date | None = None,
    ) -> dict[str, str]:
        worker = worker or self._pick_worker(rng)
        worker_id = worker["worker_id"]
        day = day or self._pick_day(rng, worker)
        assignments = self.assignments_of[worker_id]
        roll = rng.random()
        assignment: dict[str, Any] | None = None
        if assignments and roll < 0.93:
            assignment = rng.choice(assignments)
            project_id = assignment["project_id"]
        elif roll < 0.985:
            project_id = rng.choice(self.internal_projects)
        elif roll < 0.987 and self.template_projects:  # time charged to a template by mistake
            project_id = rng.choice(self.template_projects)
        else:  # time on a project the worker is not assigned to (or not yet, or no longer)
            project_id = rng.choice(list(self.projects))
        project = self.projects[project_id]
        internal = project["project_type"] == "INTERNAL"

        tasks = self.leaf_tasks[project_id]
        roll = rng.random()
        task_id = rng.choice(tasks) if roll < 0.994 else "T-0"  # T-0 is the summary task

        hours = rng.choices(("8", "7.5", "4", "6", "2", "1.5", "3", "5", "10"), (40, 12, 12, 10, 8, 5, 5, 5, 3))[0]
        time_type = rng.choices(("REG", "OT", "DT", "HOL"), (90, 7, 1, 2))[0]
        if time_type in ("OT", "DT"):
            hours = rng.choice(("1", "2", "2.5", "3", "4"))
        entry: dict[str, str] = {
            "entry_id": entry_id,
            "timesheet_id": f"TS-{worker_id}-W{day.isocalendar().week}",
            "worker_id": worker_id,
            "project_id": project_id,
            "task_id": task_id,
            "work_date": day.isoformat(),
            "hours": hours,
            "time_type": time_type,
            "source_system": "PSA",
            "source_ref": f"psa:{entry_id.rsplit('-', 1)[-1]}",
        }
        if assignment is not None:
            # a few say another role than the assignment's
            entry["role_code"] = assignment["role_code"] if rng.random() < 0.97 else rng.choice(ROLES)
            if rng.random() < 0.6:
                entry["assignment_id"] = assignment["assignment_id"]
        category = self.category_of[worker_id]
        roll = rng.random()
        if category is not None and roll < 0.22:
            entry["labor_category"] = category
        elif roll < 0.24:
            entry["labor_category"] = rng.choice(list(CATEGORIES))  # sent, and not the HR one
        if internal:
            entry["billable"] = "false" if rng.random() < 0.9 else "true"
            entry["activity_code"] = project["_activity"]
        else:
            entry["billable"] = rng.choices(("true", "false", ""), (86, 9, 5))[0]
            activities = ("DELIVERY", "TRAVEL", "", "INTERNAL", "ADMIN")
            entry["activity_code"] = rng.choices(activities, (89.4, 5, 5, 0.3, 0.3))[0]
            if rng.random() < 0.12 and category is not None:  # a rate typed in by the worker
                standard = CATEGORIES[category][0]
                entry["bill_rate"] = standard or "130.00"
            entry["currency"] = project["_currency"]
        submitted = min(day + dt.timedelta(days=rng.choice((0, 1, 1, 2, 3, 4, 7))), dt.date(2026, 12, 3))
        entry["submitted_at"] = _stamp(submitted, rng.randint(8, 19), rng.randint(0, 59))

        roll = rng.random()
        if roll < 0.004:  # a correction of an earlier entry
            entry["hours"] = "-" + rng.choice(("1", "2", "4", "8"))
            entry["correction_of"] = f"TE-{rng.randint(1, 9_999_999):07d}"
        elif roll < 0.005:
            entry["hours"] = "-2"  # negative without saying what it corrects
        elif roll < 0.0065:
            entry["hours"] = rng.choice(("0", "25", "30"))
        elif roll < 0.0075:
            entry["project_id"] = f"P-{rng.randint(90_000, 99_999)}"  # not in the reference data
        elif roll < 0.0080:
            entry["worker_id"] = f"W-{rng.randint(900_000, 999_999)}"
        elif roll < 0.0085:
            entry["task_id"] = "T-99"

        billed = self.billed.get(entry_id)
        if billed is not None:  # sent again after it was billed: mostly as billed, sometimes changed
            entry.update(worker_id=billed["worker_id"], project_id=billed["project_id"], task_id=billed["task_id"],
                         work_date=billed["work_date"].isoformat(), hours=str(billed["hours"]), billable="true",
                         time_type="REG", activity_code="DELIVERY", correction_of="")
            entry.pop("assignment_id", None)
            entry.pop("bill_rate", None)
            if rng.random() < 0.35:
                entry["hours"] = rng.choice(("4", "6", "7.5", "9"))

        if malformed_rate and rng.random() < malformed_rate:
            broken = rng.choice(("hours", "work_date", "billable", "entry_id"))
            entry[broken] = {"hours": "eight", "work_date": "2026-11-31", "billable": "maybe", "entry_id": ""}[broken]
            if not entry["entry_id"]:
                del entry["entry_id"]
        return {k: v for k, v in entry.items() if v != ""}


# ---------------------------------------------------------------------------------------------------
# The firm


def generate_firm(people: int = 3000, seed: int = 20261130) -> Firm:
    """Reference data of a firm of ``people`` workers; deterministic for (people, seed)."""
    rng = random.Random(f"firm:{seed}:{people}")
    firm = Firm(people=people, seed=seed)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in ENTITIES}
    firm.rows = rows

    # Job codes: two or three per labor category, one remapped mid-month.
    job_codes: dict[str, list[str]] = {}
    for category in CATEGORIES:
        codes = [f"J-{category}-{n}" for n in range(1, rng.randint(2, 3) + 1)]
        job_codes[category] = codes
        for code in codes:
            rows["job_code"].append({"job_code": code, "labor_category": category})
    job_codes["ANALYST"].append(REMAPPED_JOB_CODE)
    rows["job_code"].append({"job_code": REMAPPED_JOB_CODE, "labor_category": "ANALYST", "effective_to": MID_MONTH})
    rows["job_code"].append({"job_code": REMAPPED_JOB_CODE, "labor_category": "CONSULTANT",
                             "effective_from": MID_MONTH + dt.timedelta(days=1)})

    # Workers.
    categories = list(CATEGORIES)
    for n in range(1, people + 1):
        worker_id = f"W-{n:06d}"
        category = rng.choices(categories, CATEGORY_WEIGHTS)[0]
        roll = rng.random()
        job_code: str | None = rng.choice(job_codes[category])
        true_category: str | None = category
        if roll < 0.004:
            job_code, true_category = rng.choice(UNMAPPED_JOB_CODES), None
        elif roll < 0.006:
            job_code, true_category = None, None
        elif job_code == REMAPPED_JOB_CODE:
            true_category = "ANALYST"
        hire = dt.date(2008, 1, 1) + dt.timedelta(days=rng.randint(0, 6700))
        base = {
            "worker_id": worker_id,
            "name": f"Worker {n}",
            "status": "ACTIVE",
            "hire_date": hire,
            "overtime_eligible": rng.random() < 0.25,
            "job_code": job_code,
            "location": rng.choice(("US-NY", "US-CA", "US-TX", "GB-LDN", "DE-BE", "FR-PAR", "IN-BLR")),
        }
        kind, first, last = "regular", MONTH_START, MONTH_END
        roll = rng.random()
        if roll < 0.012:  # leaves mid-month: two versions
            kind = "leaver"
            last = rng.choice(DAYS[5:25])
            rows["worker"].append({**base, "termination_date": last, "effective_to": last})
            rows["worker"].append({**base, "status": "TERMINATED", "termination_date": last,
                                   "effective_from": last + dt.timedelta(days=1)})
        elif roll < 0.027:  # joins this month
            kind = "joiner"
            first = rng.choice(DAYS[1:20])
            rows["worker"].append({**base, "hire_date": first})
        elif roll < 0.032:
            kind = "leave"
            rows["worker"].append({**base, "status": "LEAVE"})
        else:
            rows["worker"].append(base)
        firm.workers.append({**base, "_kind": kind, "_first_day": first, "_last_day": last})
        firm.category_of[worker_id] = true_category
        firm.assignments_of[worker_id] = []

    # Contracts, one or two client projects each.
    contracts = []
    for n in range(1, max(3, people // 8) + 1):
        contract = {
            "contract_id": f"C-{n:05d}",
            "customer_id": f"CU-{n:05d}",
            "billing_type": rng.choices(("TM", "COST_PLUS", "FIXED_FEE", "MILESTONE"), (70, 10, 15, 5))[0],
            "currency": rng.choice(CURRENCIES),
            "start_date": dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 600)),
            "end_date": dt.date(2027, 6, 30) if rng.random() < 0.8 else None,
            "hours_per_day": Decimal("7.5") if rng.random() < 0.2 else Decimal(8),
            "bills_overtime": rng.random() < 0.35,
            "overtime_multiplier": Decimal("1.25") if rng.random() < 0.15 else Decimal("1.5"),
            "double_time_multiplier": Decimal("1.75") if rng.random() < 0.15 else Decimal(2),
        }
        contracts.append(contract)
        rows["contract"].append(contract)

    project_number = 0
    client_projects: list[str] = []
    for contract in contracts:
        for _ in range(rng.choice((1, 1, 2))):
            project_number += 1
            project_id = f"P-{project_number:05d}"
            client_projects.append(project_id)
            start = dt.date(2025, 6, 1) + dt.timedelta(days=rng.randint(0, 500))
            if start > MONTH_START and rng.random() < 0.7:
                start = start.replace(year=2026, month=rng.choice((1, 3, 5, 8, 10)), day=1)
            base = {
                "project_id": project_id,
                "name": f"Engagement {project_number}",
                "status": "ACTIVE",
                "project_type": "CLIENT",
                "billable": rng.random() < 0.97,
                "billing_type": contract["billing_type"],
                "start_date": start,
                "finish_date": dt.date(2027, 3, 31) if rng.random() < 0.7 else None,
                "contract_id": contract["contract_id"],
                "customer_id": contract["customer_id"],
            }
            roll = rng.random()
            if roll < 0.012:  # closes mid-month
                closed = rng.choice(DAYS[8:24])
                rows["project"].append({**base, "finish_date": closed, "effective_to": closed})
                rows["project"].append({**base, "status": "CLOSED", "finish_date": closed,
                                        "effective_from": closed + dt.timedelta(days=1)})
            elif roll < 0.017:
                rows["project"].append({**base, "status": "ON_HOLD"})
            elif roll < 0.02:
                rows["project"].append({**base, "status": "COMPLETED", "finish_date": dt.date(2026, 10, 31)})
            elif roll < 0.035:  # month-end close of time: entries submitted later are refused
                rows["project"].append({**base, "closed_for_time_at": dt.datetime(2026, 11, 27, tzinfo=dt.UTC)})
            elif roll < 0.04:
                rows["project"].append({**base, "start_date": rng.choice(DAYS[3:20])})
            else:
                rows["project"].append(base)
            firm.projects[project_id] = {**rows["project"][-1], "_currency": contract["currency"]}

    for name, activity in INTERNAL_PROJECTS:
        project_number += 1
        project_id = f"P-{project_number:05d}"
        rows["project"].append({
            "project_id": project_id, "name": name, "status": "ACTIVE", "project_type": "INTERNAL",
            "billable": False, "billing_type": "TM", "start_date": dt.date(2020, 1, 1),
        })
        firm.projects[project_id] = {**rows["project"][-1], "_currency": "USD", "_activity": activity}
        firm.internal_projects.append(project_id)

    # Tasks: a summary task and a few leaves per project.
    for project_id, project in firm.projects.items():
        rows["task"].append({"project_id": project_id, "task_id": "T-0", "name": "Phase 1 (summary)",
                             "is_leaf": False, "chargeable": False})
        leaves = []
        for t in range(1, rng.randint(2, 6) + 1):
            task = {"project_id": project_id, "task_id": f"T-{t}", "name": f"Workstream {t}",
                    "billable": project["project_type"] == "CLIENT" and rng.random() < 0.92}
            roll = rng.random()
            if roll < 0.02:  # a task with its own window inside the month
                task["start_date"] = rng.choice(DAYS[0:10])
                task["finish_date"] = rng.choice(DAYS[18:30])
            elif roll < 0.025:
                task["closed_for_time_at"] = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
            rows["task"].append(task)
            leaves.append(task["task_id"])
        firm.leaf_tasks[project_id] = leaves

    # Assignments: each worker on one to three client projects; a few end or close mid-month.
    assignment_number = 0
    for worker in firm.workers:
        for project_id in rng.sample(client_projects, k=min(len(client_projects), rng.choice((1, 1, 2, 2, 3)))):
            assignment_number += 1
            assignment = {
                "assignment_id": f"A-{assignment_number:06d}",
                "worker_id": worker["worker_id"],
                "project_id": project_id,
                "role_code": rng.choice(ROLES),
                "start_date": dt.date(2026, rng.randint(1, 10), 1),
                "finish_date": dt.date(2027, 1, 31),
            }
            roll = rng.random()
            if roll < 0.03:
                assignment["finish_date"] = rng.choice(DAYS[10:25])
            elif roll < 0.035:
                assignment["closed_for_time_at"] = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
            rows["assignment"].append(assignment)
            firm.assignments_of[worker["worker_id"]].append(assignment)

    # Rate cards: standard, contract (some changing mid-month), project, assignment and worker rates.
    rate_number = 0

    def rate(scope: str, scope_id: str, category: str, *, currency: str, unit: str, amount: Decimal,
             **extra: Any) -> None:
        nonlocal rate_number
        rate_number += 1
        rows["rate_card"].append({
            "rate_id": f"R-{rate_number:06d}", "scope": scope, "scope_id": scope_id, "labor_category": category,
            "currency": currency, "unit": unit, "bill_rate": amount.quantize(Decimal("0.01")),
            "effective_from": dt.date(2026, 1, 1), **extra,
        })

    for category, (amount, unit) in CATEGORIES.items():
        if amount is not None:
            rate("STANDARD", "", category, currency="USD", unit=unit, amount=Decimal(amount))
    for contract in contracts:
        for category in rng.sample(categories, k=rng.randint(3, 7)):
            standard, unit = CATEGORIES[category]
            amount = Decimal(standard or "150.00") * Decimal(rng.randint(90, 125)) / 100
            if rng.random() < 0.25:  # a new rate from the 16th
                rate("CONTRACT", contract["contract_id"], category, currency=contract["currency"], unit=unit,
                     amount=amount, effective_to=MID_MONTH)
                rate("CONTRACT", contract["contract_id"], category, currency=contract["currency"], unit=unit,
                     amount=amount * Decimal("1.04"), effective_from=MID_MONTH + dt.timedelta(days=1))
            else:
                rate("CONTRACT", contract["contract_id"], category, currency=contract["currency"], unit=unit,
                     amount=amount)
    for project_id in client_projects:
        if rng.random() < 0.1:
            category = rng.choice(categories)
            standard, unit = CATEGORIES[category]
            rate("PROJECT", project_id, category, currency=firm.projects[project_id]["_currency"], unit=unit,
                 amount=Decimal(standard or "140.00") * Decimal("0.95"))
    for assignment in rows["assignment"]:
        category = firm.category_of[assignment["worker_id"]]
        if category and rng.random() < 0.02:
            standard, unit = CATEGORIES[category]
            rate("ASSIGNMENT", assignment["assignment_id"], category, currency="USD", unit=unit,
                 amount=Decimal(standard or "140.00") * Decimal("1.1"))
    for worker in firm.workers:
        category = firm.category_of[worker["worker_id"]]
        if category and rng.random() < 0.01:
            standard, unit = CATEGORIES[category]
            rate("WORKER", worker["worker_id"], category, currency="USD", unit=unit,
                 amount=Decimal(standard or "140.00") * Decimal("1.2"))
    _add_controls(firm, random.Random(f"firm-controls:{seed}:{people}"), contracts, client_projects)
    return firm


BILLED_EVERY = 173  # every 173rd entry id (TE-0000173, ...) up to BILLED_UP_TO was billed already
BILLED_UP_TO = 120_000
FX_TO = {"EUR": ("USD", "0.92"), "GBP": ("USD", "0.79")}  # contract currency -> (rate currency, about)


def _add_controls(
    firm: Firm, rng: random.Random, contracts: list[dict[str, Any]], client_projects: list[str]
) -> None:
    """What the later catalogue rules read: contracts listing their labor categories, projects without a
    contract, a template project, discounts, FX rates, billing holds, transaction controls and billed entries.
    Drawn from their own random stream, so the rest of the firm is as it was without them."""
    rows = firm.rows
    # LC-3: a few time-and-materials contracts list the labor categories they bill (those they have rates for)
    for contract in contracts:
        if contract["billing_type"] == "TM" and rng.random() < 0.05:
            listed = sorted({r["labor_category"] for r in rows["rate_card"]
                             if r["scope"] == "CONTRACT" and r["scope_id"] == contract["contract_id"]})
            contract["allowed_labor_categories"] = tuple(listed)
    # PS-5: a few billable projects whose contract is not set up yet
    for project_id in client_projects:
        if rng.random() < 0.02:
            for row in rows["project"]:
                if row["project_id"] == project_id:
                    row["contract_id"] = None
            firm.projects[project_id]["contract_id"] = None
    # PS-4: a template project (with tasks, as templates have)
    template_id = f"P-{len(firm.projects) + 1:05d}"
    rows["project"].append({"project_id": template_id, "name": "Template - T&M engagement", "status": "ACTIVE",
                            "project_type": "CLIENT", "billing_type": "TM", "start_date": dt.date(2024, 1, 1),
                            "is_template": True})
    firm.projects[template_id] = {**rows["project"][-1], "_currency": "USD"}
    firm.template_projects.append(template_id)
    rows["task"].append({"project_id": template_id, "task_id": "T-1", "name": "Template task"})
    firm.leaf_tasks[template_id] = ["T-1"]
    # RC-7: discounts on some contract rates
    for row in rows["rate_card"]:
        if row["scope"] == "CONTRACT" and rng.random() < 0.1:
            row["discount_pct"] = rng.choice((Decimal(5), Decimal("7.5"), Decimal(10)))
    # RC-4: daily FX rates from USD (standard, worker and assignment rates) to the other contract currencies,
    # published on weekdays from the 2nd (a rate on Sunday the 1st has none: NO_FX_RATE)
    for currency, (source, about) in FX_TO.items():
        for day in WEEKDAYS:
            drift = Decimal(rng.randint(-150, 150)) / 10_000
            rows["fx_rate"].append({"from_currency": source, "to_currency": currency, "rate_date": day,
                                    "rate": Decimal(about) + drift})
    # BE-5: billing holds on a few customers, contracts and projects, from a date in the month
    hold_number = 0
    for contract in contracts:
        roll = rng.random()
        if roll < 0.05:
            hold_number += 1
            scope, scope_id = (("CUSTOMER", contract["customer_id"]) if roll < 0.02 else
                               ("CONTRACT", contract["contract_id"]))
            rows["billing_hold"].append({"hold_id": f"H-{hold_number:05d}", "scope": scope, "scope_id": scope_id,
                                         "reason": "credit review", "effective_from": rng.choice(DAYS[:25]),
                                         "effective_to": rng.choice((None, MONTH_END + dt.timedelta(days=30)))})
    for project_id in client_projects:
        if rng.random() < 0.02:
            hold_number += 1
            rows["billing_hold"].append({"hold_id": f"H-{hold_number:05d}", "scope": "PROJECT",
                                         "scope_id": project_id, "reason": "disputed milestone",
                                         "effective_from": dt.date(2026, 10, 1), "effective_to": MID_MONTH})
    # BE-3: transaction controls on some projects: travel not chargeable, a task or a worker not billable
    control_number = 0

    def control(project_id: str, **values: Any) -> None:
        nonlocal control_number
        control_number += 1
        rows["transaction_control"].append({"control_id": f"TC-{control_number:05d}", "project_id": project_id,
                                            "effective_from": dt.date(2026, 1, 1), **values})

    for project_id in client_projects:
        roll = rng.random()
        if roll < 0.1:
            control(project_id, activity_code="TRAVEL", chargeable=False, billable=False,
                    reason="travel time is not chargeable")
        elif roll < 0.15:
            control(project_id, task_id=rng.choice(firm.leaf_tasks[project_id]), billable=False,
                    reason="warranty work", effective_from=rng.choice(DAYS[:20]))
        elif roll < 0.17:
            assigned = [a["worker_id"] for a in rows["assignment"] if a["project_id"] == project_id]
            if assigned:
                control(project_id, worker_id=rng.choice(assigned), billable=False, reason="shadowing",
                        effective_to=rng.choice(DAYS[5:25]))
    # CT-1..CT-4: a time and an expense line per contract; a few contracts bill no time (CT-2), a few time lines
    # end mid-month (CT-1), some have a not-to-exceed limit close to what is consumed already (hard or soft)
    for contract in contracts:
        roll = rng.random()
        if roll < 0.03:
            continue
        line = {"contract_id": contract["contract_id"], "line_id": "L1", "item_class": "TIME",
                "start_date": contract["start_date"], "end_date": contract["end_date"]}
        if roll < 0.08:
            line["end_date"] = MID_MONTH
        elif roll < 0.28:
            consumed = Decimal(rng.randint(50, 400) * 1000)
            line.update(nte_limit=consumed + Decimal(rng.randint(5, 40) * 1000), consumed_amount=consumed,
                        nte_type="HARD" if roll < 0.18 else "SOFT")
        rows["contract_line"].append(line)
        rows["contract_line"].append({**line, "line_id": "L2", "item_class": "EXPENSE", "nte_limit": None,
                                      "consumed_amount": Decimal(0), "nte_type": "HARD"})
    # BE-8: entries billed already (every BILLED_EVERY-th entry id), on one of the worker's assignments
    regulars = [w for w in firm.workers if w["_kind"] == "regular" and firm.assignments_of[w["worker_id"]]]
    for number in range(BILLED_EVERY, BILLED_UP_TO + 1, BILLED_EVERY):
        worker = rng.choice(regulars)
        assignment = rng.choice(firm.assignments_of[worker["worker_id"]])
        entry_id = f"TE-{number:07d}"
        project_id = assignment["project_id"]
        billed = {"entry_id": entry_id, "invoice_id": f"INV-{number:07d}", "billed_on": dt.date(2026, 11, 20),
                  "project_id": project_id, "task_id": rng.choice(firm.leaf_tasks[project_id]),
                  "work_date": rng.choice(WEEKDAYS[:10]), "hours": Decimal(8), "billable": True,
                  "worker_id": worker["worker_id"]}
        firm.billed[entry_id] = billed
        rows["billed_item"].append({k: v for k, v in billed.items() if k != "worker_id"})


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
