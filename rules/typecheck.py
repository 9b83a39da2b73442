"""Turn a ruleset file into a compiled ruleset: validated, parsed, type-checked and compiled, once.

Every expression is checked by rule-engine against a typed context built from the item kind's
fields, its reference bindings and the ruleset's params. Anything wrong is reported with file,
line and rule id; nothing of a refused ruleset is used.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import rule_engine

from tollgate.rules import yaml_source
from tollgate.rules.codegen.expressions import (
    CompiledExpression,
    ExpressionCodegen,
    NotCompilableError,
    compile_expression,
)
from tollgate.rules.codegen.rulesets import RulesetFunction, Segment, fuse
from tollgate.rules.entities import ENTITIES, Entity
from tollgate.rules.fields import FieldKind, FieldSpec, date_value, format_message_value
from tollgate.rules.item_kinds import ITEM_KINDS, ItemKind
from tollgate.rules.model import Action, AggregateSpec, Rounding, RulesetSpec, RuleSpec, Severity
from tollgate.rules.problems import Problem, ProblemsError

T = rule_engine.DataType

PARAMS_SYMBOL = "params"
BATCH_SYMBOL = "batch"
# The decimal context every ruleset's FLOAT (Decimal) arithmetic runs under: Python's defaults (28 digits,
# ROUND_HALF_EVEN, trapping InvalidOperation, DivisionByZero and Overflow). Fixed here rather than taken from
# whichever thread loads the rulesets (rule-engine's default); one object for every ruleset, so the engine
# makes it current once per batch and the generated code never has to switch contexts per item.
DECIMAL_CONTEXT = decimal.Context()

# What a ruleset may be, so that a broken or hostile file costs a refusal naming its line, never minutes of
# loading or a RecursionError (docs/rulesets.md, "Limits"). A file: 256 KiB, 15 times the largest shipped
# (17.5 KB); PyYAML's pure-Python parser reads about 80 KB/s of dense YAML here, so a file at the limit takes
# seconds, not the minutes of a 50 MB one. An expression: 4,000 characters (the longest shipped has 434) and
# 200 operators (29): rule-engine's parser and type checker, and the code generator, recurse once per operator,
# and 1,000 nested ``not`` pass Python's recursion limit.
MAX_RULESET_BYTES = 256 * 1024
MAX_EXPRESSION_CHARS = 4_000
MAX_EXPRESSION_OPERATORS = 200
# A quoted expression in a problem is cut to this many characters.
QUOTE_CHARS = 200

_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"', re.DOTALL)
# An upper bound on what nests in the parsed tree: operator characters (``==`` counts two), brackets, keywords.
_OPERATOR = re.compile(r"[-+*/%&|^<>=!?~.:,\[({]|\b(?:not|and|or|in|for|if)\b")


def expression_limit_problem(text: str) -> str | None:
    """Why ``text`` is too big an expression to hand to rule-engine, or None."""
    if len(text) > MAX_EXPRESSION_CHARS:
        return f"the expression has {len(text):,} characters; at most {MAX_EXPRESSION_CHARS:,} are allowed"
    operators = len(_OPERATOR.findall(_STRING_LITERAL.sub("''", text)))
    if operators > MAX_EXPRESSION_OPERATORS:
        return (f"the expression has {operators:,} operators; at most {MAX_EXPRESSION_OPERATORS} are allowed "
                "(split the rule, or put the values in a list param)")
    return None


def quoted(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` to quote in a problem, cut with an ellipsis past ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def rules_decimal_context() -> Iterator[None]:
    """DECIMAL_CONTEXT current in this thread for the block, as the fused rulesets expect it: that very object
    (``decimal.localcontext`` would make a copy current), the caller's context back afterwards."""
    saved = decimal.getcontext()
    decimal.setcontext(DECIMAL_CONTEXT)
    try:
        yield
    finally:
        decimal.setcontext(saved)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A message with ``{expression}`` placeholders, compiled; ``parts`` alternate text and expressions.

    The fused ruleset function renders messages inline; ``render`` is for rules run one by one. Each value is
    cut to MESSAGE_VALUE_CHARS characters (rules/fields.py), so a message is bounded by its template.
    """

    parts: tuple[str | CompiledExpression, ...]

    def render(self, scope: Any) -> str:
        return "".join(part if isinstance(part, str) else format_message_value(part.evaluate(scope))
                       for part in self.parts)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    spec: RuleSpec
    line: int
    requires: tuple[tuple[str, ...], ...]
    condition: CompiledExpression
    assignments: tuple[tuple[FieldSpec, CompiledExpression], ...]
    message: MessageTemplate
    symbols: frozenset[str]  # top-level symbols the rule reads: fields, bindings, params

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def rejects(self) -> bool:
        return self.spec.action is Action.REJECT

    @property
    def severity(self) -> Severity:
        return self.spec.effective_severity

    @property
    def message_parts(self) -> tuple[str | CompiledExpression, ...]:
        return self.message.parts

    @property
    def reason_parts(self) -> tuple[str, Severity, str | None]:
        return self.spec.code, self.severity, self.spec.field


ITEMS_SUFFIX = "_items"
LOOKUP_PRECEDENCE = "precedence"


@dataclass(frozen=True, slots=True)
class CompiledLookup:
    """A lookup with its match expressions compiled (see LookupSpec for what each part means)."""

    name: str
    ruleset_id: str
    entity: Entity
    # Per way, most specific first: its columns and one function giving the values to match them with
    # (generated once, like the fused rulesets: one call per way and item rather than one per column).
    ways: tuple[tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]], ...]
    as_of: CompiledExpression | None
    latest_on_or_before: str | None
    symbols: frozenset[str]  # what the expressions read: bound first, and looked up again when they change
    line: int | None


def values_function(expressions: Sequence[CompiledExpression | None], name: str,
                    constants: Mapping[str, Any]) -> Callable[[Any], tuple[Any, ...]]:
    """One function returning the values of several expressions for an item's scope (None where there is no
    expression): one call per item where there would be one per expression. The interpreter for what does
    not compile. Trusted code, as in the fused rulesets: the evaluator's scopes are well-typed by construction,
    and hold every symbol the expressions read (bound before lookups and figures are worked out), so a symbol
    is a plain read of the scope; ``constants`` (the ruleset's params) are compiled in."""
    present = [e for e in expressions if e is not None]
    context = present[0].context if present else None
    if context is None or all(e.is_compiled and e.context is context for e in present):
        namespace: dict[str, Any] = {}
        codegen = ExpressionCodegen(context or rule_engine.Context(), namespace, trusted=True, constants=constants)

        def read(symbol: str) -> str:
            return f"{codegen.thing}[{symbol!r}]"

        try:
            parts = ["None" if e is None else codegen.fragment(e.rule.statement.expression, symbol=read)
                     for e in expressions]
        except NotCompilableError:
            pass
        else:
            source = codegen.function_source("values", "(" + "".join(f"{part}, " for part in parts) + ")")
            exec(compile(source, f"<{name}>", "exec"), namespace)
            function: Callable[[Any], tuple[Any, ...]] = namespace["values"]
            return function
    evaluators = [None if e is None else e.evaluate for e in expressions]
    return lambda thing: tuple(None if evaluate is None else evaluate(thing) for evaluate in evaluators)


@dataclass(frozen=True, slots=True)
class CompiledAggregate:
    """An aggregate with its expressions compiled (see AggregateSpec for what each part means)."""

    name: str
    spec: AggregateSpec
    # (by values..., sum, start, limit, each) for an item's scope, in one call (see values_function); None
    # where the spec has no such part
    values: Callable[[Any], tuple[Any, ...]]
    symbols: frozenset[str]  # what the expressions read: the ruleset must bind these before working it out
    round_amount: Callable[[Decimal], Decimal] | None  # ``rounded``: the ruleset's rounding rule


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    spec: RulesetSpec
    path: str
    # The file as read and compiled, and its sha256: what the decision ledger keeps, so a past decision's rules
    # can be compiled again after the file changed (taken at load: a later edit cannot slip in).
    text: str
    digest: str
    document: Any  # the YAML as loaded, with line numbers, for reporting on tests
    kind: ItemKind
    rules: tuple[CompiledRule, ...]
    params: Mapping[str, Any]
    bindings: tuple[str, ...]  # bindings the rules read, with their dependencies, in declaration order
    lookups: tuple[CompiledLookup, ...]  # reference tables looked up per item, after the bindings
    aggregates: tuple[CompiledAggregate, ...]  # figures over the batch, worked out before the rules run
    # the rules' requires and conditions fused into one function (rules/codegen/rulesets.py), to be called with
    # DECIMAL_CONTEXT current (Evaluator.run_batch makes it current for the whole batch)
    run: RulesetFunction | None
    source: str  # the generated source of ``run``, or why there is none
    money_rounder: Callable[[Decimal], Decimal] | None  # the ruleset's Rounding.rounder(), made once

    @property
    def id(self) -> str:
        return self.spec.ruleset

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def rounding(self) -> Rounding | None:
        return self.spec.rounding

    def round_money(self, value: Decimal) -> Decimal:
        assert self.money_rounder is not None, "checked at load: money enrichments need a rounding rule"
        return self.money_rounder(value)

    @property
    def refreshing_fields(self) -> frozenset[str]:
        """The item fields a binding of the kind, or a lookup of this ruleset, is found by (rulesets.Segment)."""
        return frozenset().union(*(b.inputs for b in self.kind.bindings),
                                 *(lookup.symbols & self.kind.fields.keys() for lookup in self.lookups))

    def segment(self) -> Segment:
        """The ruleset as a part of a fused function (rules/codegen/rulesets.py): alone, or after others in a chain."""
        return Segment(self.rules, self.id, self.money_rounder, self.refreshing_fields, {PARAMS_SYMBOL: self.params})


# ---------------------------------------------------------------------------------------------------
# Reading the file


def read_ruleset(path: Path) -> tuple[RulesetSpec, Any, str]:
    """Parse and validate one ruleset file: (spec, document, the file's text); raise ProblemsError naming lines."""
    document, text = yaml_source.read_file(path, MAX_RULESET_BYTES, "ruleset", "split it into several rulesets")
    return _validated(str(path), document), document, text


def _validated(name: str, document: Any) -> RulesetSpec:
    if not isinstance(document, dict):
        message = "a ruleset file is a YAML mapping (ruleset:, version:, rules: ...)"
        raise ProblemsError([Problem(name, 1, None, message)])
    try:
        return RulesetSpec.model_validate(document)
    except pydantic.ValidationError as error:
        raise ProblemsError([yaml_source.validation_problem(name, document, e, ("rules", "tests"))
                             for e in error.errors()]) from None


# ---------------------------------------------------------------------------------------------------
# Typing


def _param_type(value: Any) -> Any:
    if isinstance(value, bool):
        return T.BOOLEAN
    if isinstance(value, (int, Decimal)):
        return T.FLOAT
    if isinstance(value, str):
        return T.STRING
    if isinstance(value, dt.date):
        return T.DATETIME
    if isinstance(value, list) and value:
        member_types = {_param_type(v) for v in value}
        if len(member_types) == 1:
            return T.ARRAY(member_types.pop())
    raise TypeError("a param is a string, number, boolean, date or a non-empty list of one of those")


def _param_value(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return date_value(value)
    if isinstance(value, list):
        return tuple(_param_value(v) for v in value)
    return value


def _not_null(data_type: Any) -> Any:
    return data_type.inner_type if T.is_type(data_type, T.NULLABLE) else data_type


def _narrow(symbol_types: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """Make ``path`` non-null in symbol_types (for ``requires``); return an error message if it can't."""
    symbol, *attributes = path
    if symbol not in symbol_types:
        return f"requires {'.'.join(path)}: unknown symbol {symbol!r}"
    if not attributes:
        if not T.is_type(symbol_types[symbol], T.NULLABLE):
            return f"requires {symbol}: it is never null, so requiring it has no effect"
        symbol_types[symbol] = _not_null(symbol_types[symbol])
        return None
    if len(attributes) > 1:
        return f"requires {'.'.join(path)}: paths go at most one attribute deep (symbol.attribute)"
    object_type = _not_null(symbol_types[symbol])
    attribute = attributes[0]
    if not T.is_type(object_type, T.OBJECT) or attribute not in object_type.attributes:
        return f"requires {'.'.join(path)}: {symbol} has no attribute {attribute!r}"
    narrowed = dict(object_type.attributes)
    narrowed[attribute] = _not_null(narrowed[attribute])
    # Requiring symbol.attribute requires the symbol too: both are checked before the rule runs.
    symbol_types[symbol] = T.OBJECT(object_type.name, narrowed, accessor=operator.getitem)
    return None


def _context(symbol_types: Mapping[str, Any]) -> rule_engine.Context:
    return rule_engine.Context(
        type_resolver=dict(symbol_types), default_timezone="utc", mapping_attribute_lookup=False,
        decimal_context=DECIMAL_CONTEXT,
    )


def _is_decimal(data_type: Any) -> bool:
    """A decimal, possibly null, or a type rule-engine only knows at run time."""
    return _not_null(data_type) in (T.FLOAT, T.UNDEFINED)


def _type_name(data_type: Any) -> str:
    if T.is_type(data_type, T.NULLABLE):
        return f"{_type_name(data_type.inner_type)} or null"
    return str(getattr(data_type, "name", data_type)).lower()


# ---------------------------------------------------------------------------------------------------
# Compiling


def _split_template(text: str) -> Iterator[tuple[bool, str]]:
    """Yield (is_expression, text) pieces of a message; ``{{`` and ``}}`` are literal braces."""
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i : i + 2] == char * 2:
            literal.append(char)
            i += 2
        elif char == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ValueError("a '{' in the message is never closed (write {{ for a literal brace)")
            if literal:
                yield False, "".join(literal)
                literal = []
            yield True, text[i + 1 : j - 1].strip()
            i = j
        elif char == "}":
            raise ValueError("a '}' in the message has no opening '{' (write }} for a literal brace)")
        else:
            literal.append(char)
            i += 1
    if literal:
        yield False, "".join(literal)


class _RuleCompiler:
    """Compiles the rules of one ruleset, collecting every problem rather than stopping at the first."""

    def __init__(self, path: str, document: Any, spec: RulesetSpec, kind: ItemKind, text: str) -> None:
        self.path = path
        self.text = text
        self.document = document
        self.spec = spec
        self.kind = kind
        self.problems: list[Problem] = []
        self.params: dict[str, Any] = {}
        param_types: dict[str, Any] = {}
        for name, value in spec.params.items():
            try:
                param_types[name] = _param_type(value)
            except TypeError as error:
                self._problem(("params", name), None, f"params.{name}: {error}")
                continue
            self.params[name] = _param_value(value)
        self.symbol_types: dict[str, Any] = {name: f.rule_type for name, f in kind.fields.items()}
        self.symbol_types.update({b.name: b.rule_type() for b in kind.bindings})
        self.symbol_types[PARAMS_SYMBOL] = T.OBJECT("params", param_types, accessor=operator.getitem)
        self.lookups = self._lookups()
        self.aggregates = self._aggregates()
        figures: dict[str, Any] = {}
        for aggregate in self.aggregates:
            figures[aggregate.name] = T.FLOAT
            figures[aggregate.name + ITEMS_SUFFIX] = T.ARRAY(T.STRING)
        self.symbol_types[BATCH_SYMBOL] = T.OBJECT("batch", figures, accessor=operator.getitem)

    def _lookups(self) -> tuple[CompiledLookup, ...]:
        """Compile each lookup's match expressions; each lookup becomes a symbol for the rules (and the
        lookups after it), typed as its table's row (with ``precedence``) or null."""
        lookups = []
        for name, spec in self.spec.lookups.items():
            where = ("lookups", name)
            before = len(self.problems)
            if name in self.symbol_types:
                self._problem(where, None, f"lookups.{name}: {name!r} is already a field, a record or params; "
                              "choose another name")
                continue
            entity = ENTITIES.get(spec.table)
            if entity is None:
                self._problem((*where, "table"), None, f"lookups.{name}.table: no reference table {spec.table!r} "
                              f"(known: {', '.join(sorted(ENTITIES))})")
                continue
            context = _context(self.symbol_types)
            levels = []
            for index, level in enumerate(spec.match):
                compiled = []
                for column, text in level.items():
                    loc = (*where, "match", index, column)
                    column_spec = entity.fields.get(column)
                    if column_spec is None:
                        self._problem(loc, None, f"lookups.{name}.match: {spec.table} has no column {column!r}")
                        continue
                    expression = self._expression(text, context, loc, None, f"lookups.{name}.match.{column}")
                    if expression is None:
                        continue
                    result = _not_null(expression.result_type)
                    if result != T.UNDEFINED and not T.is_compatible(_not_null(column_spec.rule_type), result):
                        self._problem(loc, None, f"lookups.{name}.match.{column}: `{text}` is {_type_name(result)}, "
                                      f"{spec.table}.{column} is {_type_name(column_spec.rule_type)}")
                    compiled.append((column, expression))
                levels.append(tuple(compiled))
            as_of = None
            if spec.as_of is not None:
                as_of = self._expression(spec.as_of, context, (*where, "as_of"), None, f"lookups.{name}.as_of")
                if as_of is not None and _not_null(as_of.result_type) not in (T.DATETIME, T.UNDEFINED):
                    self._problem((*where, "as_of"), None, f"lookups.{name}.as_of: `{spec.as_of}` is "
                                  f"{_type_name(as_of.result_type)}, not a date")
            latest = spec.latest_on_or_before
            if latest is not None and (latest not in entity.fields
                                       or entity.fields[latest].kind is not FieldKind.DATE):
                self._problem((*where, "latest_on_or_before"), None, f"lookups.{name}.latest_on_or_before: "
                              f"{spec.table} has no date column {latest!r}")
            if len(self.problems) > before:
                continue
            attributes = {field.name: field.rule_type for field in entity.fields.values()}
            attributes[LOOKUP_PRECEDENCE] = T.FLOAT
            self.symbol_types[name] = T.NULLABLE(T.OBJECT(spec.table, attributes, accessor=operator.getitem))
            ways = tuple((tuple(column for column, _e in level),
                          values_function([e for _column, e in level], f"lookup {name} way {index + 1}",
                                          {PARAMS_SYMBOL: self.params}))
                         for index, level in enumerate(levels))
            lookups.append(CompiledLookup(name, self.spec.ruleset, entity, ways, as_of, latest,
                                          frozenset(context.symbols), yaml_source.line_of(self.document, where)))
        return tuple(lookups)

    def _aggregates(self) -> tuple[CompiledAggregate, ...]:
        """Compile each aggregate's expressions against the item as it enters the ruleset (no ``batch``)."""
        aggregates = []
        for name, spec in self.spec.aggregates.items():
            where = ("aggregates", name)
            if not name.isidentifier():
                self._problem(where, None, f"aggregates.{name}: a name is letters, digits and _")
            context = _context(self.symbol_types)
            expressions: dict[str, CompiledExpression | None] = {}
            for part in ("sum", "start", "limit"):
                text = getattr(spec, part)
                if text is None:
                    expressions[part] = None
                    continue
                expression = self._expression(text, context, (*where, part), None, f"aggregates.{name}.{part}")
                if expression is not None and not _is_decimal(expression.result_type):
                    self._problem((*where, part), None, f"aggregates.{name}.{part}: `{text}` is "
                                  f"{_type_name(expression.result_type)}, not a decimal")
                expressions[part] = expression
            by = [self._expression(text, context, (*where, "by", index), None, f"aggregates.{name}.by")
                  for index, text in enumerate(spec.by)]
            rounding = self.spec.rounding
            if spec.rounded and rounding is None:
                self._problem((*where, "rounded"), None, f"aggregates.{name}.rounded: state the rounding rule in "
                              "the ruleset (rounding: {places: 2, mode: half_up})")
            each = None
            if spec.each is not None:
                each = self._expression(spec.each, context, (*where, "each"), None, f"aggregates.{name}.each")
                if each is not None and not T.is_type(_not_null(each.result_type), T.ARRAY) \
                        and each.result_type != T.UNDEFINED:
                    self._problem((*where, "each"), None, f"aggregates.{name}.each: `{spec.each}` is "
                                  f"{_type_name(each.result_type)}, not a list")
            released_by = ENTITIES.get(spec.released_by) if spec.released_by is not None else None
            if spec.released_by is not None and (released_by is None or len(released_by.key) != 1):
                keyed = sorted(name for name, entity in ENTITIES.items() if len(entity.key) == 1)
                self._problem((*where, "released_by"), None, f"aggregates.{name}.released_by: {spec.released_by!r} "
                              f"is not a reference entity keyed by one id: one of {', '.join(keyed)}")
            if all(e is not None for e in by):
                parts = [*by, expressions["sum"], expressions["start"], expressions["limit"], each]
                aggregates.append(CompiledAggregate(
                    name, spec, values_function(parts, f"aggregate {name}", {PARAMS_SYMBOL: self.params}),
                    frozenset(context.symbols),
                    rounding.rounder() if spec.rounded and rounding is not None else None))
        return tuple(aggregates)

    def _problem(self, loc: Sequence[Any], subject: str | None, message: str) -> None:
        self.problems.append(Problem(self.path, yaml_source.line_of(self.document, loc), subject, message))

    def _expression(
        self, text: str, context: rule_engine.Context, loc: Sequence[Any], rule_id: str | None, what: str
    ) -> CompiledExpression | None:
        limit = expression_limit_problem(text)
        if limit is not None:
            self._problem(loc, rule_id, f"{what}: {limit} in `{quoted(text)}`")
            return None
        try:
            return compile_expression(text, context)
        except rule_engine.errors.EngineError as error:
            message = getattr(error, "message", str(error))
            suggestion = getattr(error, "suggestion", None)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            self._problem(loc, rule_id, f"{what}: {message}{hint} in `{quoted(text)}`")
            return None
        except RecursionError:
            self._problem(loc, rule_id, f"{what}: the expression nests too deeply to compile in `{quoted(text)}`")
            return None
        except Exception as error:  # never a traceback: whatever else rule-engine or the compiler trips on
            self._problem(loc, rule_id, f"{what}: cannot be compiled ({type(error).__name__}: "
                          f"{quoted(str(error))}) in `{quoted(text)}`")
            return None

    def compile(self) -> CompiledRuleset:
        rules = []
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.spec.rules):
            loc = ("rules", index)
            if rule.id in seen:
                self._problem((*loc, "id"), rule.id, f"rule id appears twice (first as rule #{seen[rule.id] + 1})")
            seen.setdefault(rule.id, index)
            try:
                compiled = self._rule(index, rule)
            except Exception as error:  # never a traceback: the rule is refused, naming it
                self._problem(loc, rule.id, f"cannot be compiled ({type(error).__name__}: {quoted(str(error))})")
                continue
            if compiled is not None:
                rules.append(compiled)
        self._check_money_rounding()
        if self.problems:
            raise ProblemsError(self.problems)
        used = frozenset().union(*(r.symbols for r in rules), *(a.symbols for a in self.aggregates),
                                 *(lookup.symbols for lookup in self.lookups))
        ruleset = CompiledRuleset(
            spec=self.spec,
            path=self.path,
            text=self.text,
            digest=hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
            document=self.document,
            kind=self.kind,
            rules=tuple(rules),
            params=self.params,
            bindings=self._bindings_with_dependencies(used),
            lookups=self.lookups,
            aggregates=self.aggregates,
            run=None,
            source="",
            money_rounder=self.spec.rounding.rounder() if self.spec.rounding else None,
        )
        try:
            run, source = fuse([ruleset.segment()], decimal_context=DECIMAL_CONTEXT)
        except NotCompilableError as error:
            return replace(ruleset, source=f"not fused: {error}")
        except (RecursionError, MemoryError, SyntaxError) as error:  # too big for Python's compiler: rule by rule
            return replace(ruleset, source=f"not fused: {type(error).__name__}: {quoted(str(error))}")
        return replace(ruleset, run=run, source=source)

    def _bindings_with_dependencies(self, used: frozenset[str]) -> tuple[str, ...]:
        needed = set(used)
        for binding in reversed(self.kind.bindings):  # dependencies are declared before their dependants
            if binding.name in needed:
                needed.update(binding.depends_on)
        return tuple(b.name for b in self.kind.bindings if b.name in needed)

    def _check_money_rounding(self) -> None:
        if self.spec.rounding is not None:
            return
        for index, rule in enumerate(self.spec.rules):
            for field in rule.set:
                spec = self.kind.fields.get(field)
                if spec is not None and spec.kind is FieldKind.MONEY:
                    self._problem(
                        ("rules", index, "set", field),
                        rule.id,
                        f"sets money field {field}: state the rounding rule in the ruleset "
                        "(rounding: {places: 2, mode: half_up})",
                    )

    def _rule(self, index: int, rule: RuleSpec) -> CompiledRule | None:
        loc = ("rules", index)
        before = len(self.problems)
        symbol_types = dict(self.symbol_types)
        requires = tuple(tuple(path.split(".")) for path in rule.requires)
        for path in requires:
            error = _narrow(symbol_types, path)
            if error:
                self._problem((*loc, "requires"), rule.id, error)
        context = _context(symbol_types)
        condition = self._expression(rule.when, context, (*loc, "when"), rule.id, "when")
        if condition is not None:
            result = condition.result_type
            if result not in (T.UNDEFINED, T.BOOLEAN):
                self._problem(
                    (*loc, "when"),
                    rule.id,
                    f"when must be a condition (true or false), but `{rule.when}` is {_type_name(result)}"
                    + ("; discharge null with ??, e.g. (x ?? false)" if T.is_type(result, T.NULLABLE) else ""),
                )
        assignments = []
        for field, text in rule.set.items():
            assignment = self._assignment(loc, rule, field, text, context)
            if assignment is not None:
                assignments.append(assignment)
        if rule.field is not None and rule.field not in self.kind.fields:
            self._problem((*loc, "field"), rule.id, f"field {rule.field!r} is not a {self.kind.name} field")
        message = self._message(loc, rule, context)
        if len(self.problems) > before or condition is None or message is None:
            return None
        return CompiledRule(
            spec=rule,
            line=yaml_source.line_of(self.document, loc) or 0,
            requires=requires,
            condition=condition,
            assignments=tuple(assignments),
            message=message,
            symbols=frozenset(context.symbols) | {path[0] for path in requires},
        )

    def _assignment(
        self, loc: tuple[Any, ...], rule: RuleSpec, field: str, text: str, context: rule_engine.Context
    ) -> tuple[FieldSpec, CompiledExpression] | None:
        spec = self.kind.fields.get(field)
        where = (*loc, "set", field)
        if spec is None:
            self._problem(where, rule.id, f"set {field}: not a {self.kind.name} field")
            return None
        if field in (self.kind.id_field, self.kind.date_field):
            self._problem(where, rule.id, f"set {field}: the item's id and business date cannot be enriched")
            return None
        expression = self._expression(text, context, where, rule.id, f"set {field}")
        if expression is None:
            return None
        result = expression.result_type
        expected = spec.rule_type
        if result == T.UNDEFINED:
            return spec, expression
        if result == T.NULL:
            if not spec.nullable:
                self._problem(where, rule.id, f"set {field}: `{text}` is null, but {field} cannot be null")
        elif T.is_type(result, T.NULLABLE) and not spec.nullable:
            self._problem(where, rule.id, f"set {field}: `{text}` can be null but {field} cannot; use ??")
        elif not T.is_compatible(_not_null(expected), _not_null(result)):
            self._problem(
                where, rule.id, f"set {field}: `{text}` is {_type_name(result)}, {field} needs {_type_name(expected)}"
            )
        return spec, expression

    def _message(self, loc: tuple[Any, ...], rule: RuleSpec, context: rule_engine.Context) -> MessageTemplate | None:
        where = (*loc, "message")
        parts: list[str | CompiledExpression] = []
        try:
            pieces = list(_split_template(rule.message))
        except ValueError as error:
            self._problem(where, rule.id, f"message: {error}")
            return None
        for is_expression, text in pieces:
            if not is_expression:
                parts.append(text)
                continue
            expression = self._expression(text, context, where, rule.id, "message placeholder")
            if expression is None:
                return None
            parts.append(expression)
        return MessageTemplate(tuple(parts))


def compile_ruleset(path: Path) -> CompiledRuleset:
    """Read, validate and compile one ruleset file; raise ProblemsError with every problem found."""
    spec, document, text = read_ruleset(path)
    kind = ITEM_KINDS[spec.applies_to]
    return _RuleCompiler(str(path), document, spec, kind, text).compile()


def compile_ruleset_text(name: str, text: str) -> CompiledRuleset:
    """Compile a ruleset from its text (the ledger's copy of a file as it was); ``name`` is where it was read from."""
    document = yaml_source.parse(name, text, "ruleset")
    spec = _validated(name, document)
    return _RuleCompiler(name, document, spec, ITEM_KINDS[spec.applies_to], text).compile()
