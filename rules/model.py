"""The ruleset file format, as analysts write it (YAML), validated with pydantic.

See docs/rulesets.md for the format with examples. Expressions (``when``, ``set`` values, ``{...}``
placeholders in messages) are rule-engine expression text here; rules/typecheck.py parses and
type-checks them.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Action(enum.StrEnum):
    REJECT = "reject"
    WARN = "warn"
    ENRICH = "enrich"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


DEFAULT_SEVERITY = {Action.REJECT: Severity.ERROR, Action.WARN: Severity.WARNING, Action.ENRICH: Severity.INFO}

ROUNDING_MODES = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "up": ROUND_UP,
    "down": ROUND_DOWN,
}

RULE_ID = re.compile(r"^[A-Z]{1,4}-\d+[A-Za-z0-9.\-]*$")
CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _expression_text(value: Any) -> Any:
    """YAML turns ``false`` and ``1.5`` into values; as expressions they are the same text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    return value


class RuleSpec(_Strict):
    id: str = Field(description="stable rule id, e.g. PS-1 (catalogue id, optionally with a suffix: PS-2.task)")
    title: str
    when: str = Field(description="condition (rule-engine expression) under which the rule acts")
    requires: list[str] = Field(
        default_factory=list,
        description="symbols or paths that must not be null for the rule to apply; inside the rule they are not null",
    )
    action: Action
    code: str = Field(description="reason code, UPPER_SNAKE_CASE")
    message: str = Field(description="what a person reads; {expression} placeholders quote values")
    severity: Severity | None = None
    field: str | None = Field(None, description="the item field the reason is about")
    set: dict[str, str] = Field(default_factory=dict, description="enrich: field -> expression")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} should look like PS-1 or PS-2.task")
        return value

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str) -> str:
        if not CODE.match(value):
            raise ValueError(f"reason code {value!r} should be UPPER_SNAKE_CASE, e.g. PROJECT_CLOSED")
        return value

    @field_validator("when", mode="before")
    @classmethod
    def _when_text(cls, value: Any) -> Any:
        return _expression_text(value)

    @field_validator("set", mode="before")
    @classmethod
    def _set_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: _expression_text(v) for key, v in value.items()}
        return value

    @model_validator(mode="after")
    def _set_matches_action(self) -> RuleSpec:
        if self.action is Action.ENRICH and not self.set:
            raise ValueError("an enrich rule needs a 'set' of field: expression")
        if self.action is not Action.ENRICH and self.set:
            raise ValueError(f"only enrich rules set fields; this rule's action is {self.action.value}")
        return self

    @property
    def effective_severity(self) -> Severity:
        return self.severity or DEFAULT_SEVERITY[self.action]


class Rounding(_Strict):
    """How enrichments round money: stated in the ruleset, never implied."""

    places: int = Field(ge=0, le=8)
    mode: Literal["half_up", "half_even", "up", "down"]

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.places)

    def rounder(self) -> Callable[[Decimal], Decimal]:
        """A function rounding an amount by this rule, the quantum worked out once (made at load: every
        enriched amount is rounded with it)."""
        quantum, mode = self.quantum, ROUNDING_MODES[self.mode]

        def round_amount(value: Decimal) -> Decimal:
            # rounding passed by position: the C method takes keywords at about twice the cost of the rounding
            return value.quantize(quantum, mode)

        return round_amount


class Expectation(_Strict):
    outcome: Literal["accept", "enrich", "reject"]
    codes: list[str] = Field(default_factory=list, description="reason codes, in rule order")
    enriched: dict[str, Any] = Field(default_factory=dict, description="field -> expected new value")


# An account's name: what the ledger files consumption under (docs/controls.md).
ACCOUNT_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"


class AggregateSpec(_Strict):
    """A figure over the items of one batch, read by rules as ``batch.<name>`` (and ``batch.<name>_items``).

    ``by``, ``sum``, ``start`` and ``limit`` are expressions over the item as it enters the ruleset (its
    fields, as enriched by earlier rulesets, and the reference records the ruleset reads). Items are
    grouped by the values of ``by`` (and by the ISO week or the day of their business date with ``per``);
    ``sum`` adds up a decimal (null counts as 0), otherwise the items are counted. ``running`` gives each
    item the total of its group up to and including itself, in a fixed order (business date, then id),
    so the answer does not depend on the order the items arrive in; ``start`` is where a running total
    begins (e.g. the amount already consumed). With ``limit``, an item that would take the running total
    past the limit is left out of the total for the items after it: it is the one to reject, never part
    of it, and the items after it may still fit (a hard not-to-exceed cap, CT-4). With ``each`` (a list),
    an item joins one group per element and reads the largest of its figures (and that group's items).
    """

    sum: str | None = Field(None, description="decimal expression to add up; without it, items are counted")
    by: list[str] = Field(default_factory=list, description="expressions whose values make a group")
    per: Literal["day", "week"] | None = Field(None, description="also group by the business date's day or ISO week")
    running: bool = False
    start: str | None = Field(None, description="running totals start here (a decimal expression; null is 0)")
    limit: str | None = Field(None, description="items that would take the running total past it are left out")
    rounded: bool = Field(False, description="round each item's amount by the ruleset's rounding rule (money)")
    each: str | None = Field(None, description="a list expression: the item joins one group per element (e.g. "
                                               "each source id an invoice line bills) and gets its largest figure")
    account: str | None = Field(None, pattern=ACCOUNT_PATTERN,
                                description="held across calls: what the decision ledger has accepted in each group "
                                            "(under this account name, shared by the aggregates naming it) is added "
                                            "to start; see docs/controls.md")
    released_by: str | None = Field(None, description="a reference entity keyed by the item's id (billed_item): an "
                                                      "item it lists is counted by the reference data, not the account")

    @field_validator("sum", "start", "limit", "each", mode="before")
    @classmethod
    def _scalar_text(cls, value: Any) -> Any:
        return _expression_text(value)

    @model_validator(mode="after")
    def _running_for_start_and_limit(self) -> AggregateSpec:
        if (self.start is not None or self.limit is not None) and not self.running:
            raise ValueError("start and limit apply to running totals: add running: true")
        if not self.by and self.each is None:
            raise ValueError("say what makes a group: by (a list of expressions), each (a list), or both")
        if self.each is not None and self.limit is not None:
            raise ValueError("a limit applies to one running total per item: it cannot be used with each")
        if self.account is not None and not self.running:
            raise ValueError("an account carries a running total across calls: add running: true")
        if self.released_by is not None and self.account is None:
            raise ValueError("released_by says which items an account stops counting: name the account")
        return self


class LookupSpec(_Strict):
    """A reference table the ruleset looks up for each item, read by rules as ``<name>`` (null: no row).

    ``match`` lists the ways to find the row, most specific first (a rate for the worker, then the
    assignment, the contract, the project, the standard card): each maps table columns to expressions over
    the item (its fields, the records it is bound to, the params, the lookups declared before it). The
    first way whose values are all known and that finds a row in force on the item's business date (or
    ``as_of``) wins; the row carries ``precedence``, the 1-based number of the way that found it. Rows
    that one way could find together must not be in force on the same day: such data is refused when the
    ruleset meets it. ``latest_on_or_before`` names a date column instead (daily FX rates): the row with
    the latest such date on or before the day wins.
    """

    table: str = Field(description="the reference entity, e.g. rate_card")
    match: list[dict[str, str]] = Field(min_length=1, description="column -> expression, most specific first")
    as_of: str | None = Field(None, description="the date to look up as of (default: the item's business date)")
    latest_on_or_before: str | None = Field(None, description="a date column: the latest row on or before the day")

    @field_validator("match", mode="before")
    @classmethod
    def _match_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{k: _expression_text(v) for k, v in level.items()} if isinstance(level, dict) else level
                    for level in value]
        return value


class RulesetTest(_Strict):
    name: str
    item: dict[str, Any] = Field(default_factory=dict)
    refs: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    batch: list[dict[str, Any]] = Field(
        default_factory=list, description="other items decided in the same batch (for batch aggregates)"
    )
    expect: Expectation


class TestDefaults(_Strict):
    item: dict[str, Any] = Field(default_factory=dict)
    refs: dict[str, dict[str, Any] | None] = Field(default_factory=dict)


class RulesetSpec(_Strict):
    ruleset: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$", description="ruleset id")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="semantic version; immutable once published")
    effective_from: dt.date
    applies_to: Literal["time_entry", "expense_line", "invoice_line"]
    order: int = Field(description="rulesets for one item kind run in ascending order")
    owner: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description="named constants, read as params.<name>")
    rounding: Rounding | None = None
    lookups: dict[str, LookupSpec] = Field(
        default_factory=dict, description="reference tables looked up per item, read as <name>"
    )
    aggregates: dict[str, AggregateSpec] = Field(
        default_factory=dict, description="figures over the batch, read as batch.<name>"
    )
    rules: list[RuleSpec] = Field(min_length=1)
    test_defaults: TestDefaults = Field(default_factory=TestDefaults)
    tests: list[RulesetTest] = Field(default_factory=list)
