"""Compile rule-engine expressions to Python source with exactly the interpreter's semantics.

rule-engine evaluates a rule by walking its AST for every item. This module walks the parsed and
type-checked AST once (``rule_engine.Rule(text, context).statement``) and emits one Python expression
per node, compiled with ``compile()`` at load time. The generated code returns the same values and
raises the same exception types as ``Rule.evaluate``. Fast paths are inlined for the value types a
node normally sees; anything else goes through small helpers that are line-by-line ports of the
interpreter node's ``evaluate`` (or call the node's own methods), so unusual inputs behave identically.

Coercion: the interpreter passes every symbol and attribute value through ``coerce_value``, which rebuilds
containers member by member. The generated code skips that work where the result is provably the same:
rule-engine values pass unchanged, containers of them are copied in C, a null test (``x == null``) only asks
whether the raw value is None (coercion never turns another value into None) and coerces only values whose
coercion could raise, and an OBJECT read for an attribute (also through ``??`` and ternaries) is not coerced
at all, only the member read from it. That last shortcut is the one known difference: a dict member that
cannot be coerced (an exotic value, e.g. a float subclass whose repr is not a number, or a self-referential
container) raises in the interpreter even when another member is read, but not here.

Nodes the generator does not handle raise :class:`NotCompilableError`; :func:`compile_expression` then falls
back to the interpreter for that expression and records the reason.

Decimal context: FLOAT is ``decimal.Decimal`` evaluated under ``context.decimal_context``. Instead of a
``decimal.localcontext()`` per call (~0.75 us), the entry point makes ``context.decimal_context`` the
current context only for expressions that contain context-sensitive operations (arithmetic, ordering,
equality that may compare Decimals, function calls, ...), and skips the switch when it already is
current. Values and errors are identical; the one difference is that decimal *flags* raised during
evaluation land on ``context.decimal_context`` itself rather than on a throwaway copy.

Fusing the rules of a ruleset into one generated function (``ExpressionCodegen``)::

    namespace: dict[str, Any] = {}
    codegen = ExpressionCodegen(context, namespace)
    parts = [codegen.fragment(rule_engine.Rule(text, context).statement.expression) for text in texts]
    source = codegen.function_source("evaluate_all", "(" + ", ".join(parts) + ",)")
    exec(compile(source, "<ruleset>", "exec"), namespace)
    values = namespace["evaluate_all"](item)  # one value per rule; the first error propagates

Inside a function built by ``function_source`` every top-level symbol is read from ``thing`` at most
once, lazily where the interpreter would first read it (a missing symbol only raises if it is used).
Pass ``fragment(..., symbol=...)`` to supply your own symbol reads instead, and wrap a fragment in a
``try`` of your own (e.g. one function per rule) if rules must fail independently.
"""

from __future__ import annotations

import collections
import collections.abc
import datetime
import decimal
import functools
import itertools
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import rule_engine
from rule_engine import ast, errors
from rule_engine.builtins import Builtins
from rule_engine.suggestions import suggest_symbol
from rule_engine.types import DataType, coerce_value, is_integer_number, is_natural_number, is_numeric

from tollgate.rules import regex as regex_engine

__all__ = ("CompiledExpression", "ExpressionCodegen", "NotCompilableError", "compile_expression")

# the value of a symbol cache that has not been read yet
_UNREAD = object()

_NoneType = type(None)
_Decimal = decimal.Decimal
_OrderedDict = collections.OrderedDict
# values of these types come out of the interpreter's coercion (``ExpressionBase._new_value``) unchanged
_PLAIN = frozenset({str, _Decimal, bool, _NoneType, datetime.timedelta, bytes})
# python type of each scalar rule-engine type, for inlined symbol type checks
_SCALAR_TYPES: dict[Any, type] = {
    DataType.STRING: str,
    DataType.FLOAT: _Decimal,
    DataType.BOOLEAN: bool,
    DataType.DATETIME: datetime.datetime,
    DataType.TIMEDELTA: datetime.timedelta,
    DataType.BYTES: bytes,
}
# constants of these types never meet a Decimal in ``==`` / ``in`` (the type test comes first), so such
# comparisons do not depend on the decimal context
_DECIMAL_FREE = (str, bool, _NoneType, datetime.datetime, datetime.timedelta, bytes)
_ORDERED_FAST = frozenset({_Decimal, str, datetime.datetime, datetime.timedelta, bool, bytes})
_ADD_FAST = frozenset({_Decimal, str, bytes, datetime.timedelta})
_SUB_FAST = frozenset({_Decimal, datetime.timedelta, datetime.datetime})
_COLLECTIONS = frozenset({tuple, set, _OrderedDict})
# operations whose result type trusted code knows from their operands' (ExpressionCodegen._static_result_type)
_TYPED_RESULTS = frozenset(
    {
        ast.CoalesceExpression,
        ast.TernaryExpression,
        ast.UnaryExpression,
        ast.FunctionCallExpression,
        ast.AddExpression,
        ast.SubtractExpression,
        ast.ArithmeticExpression,
        ast.GetSliceExpression,
    }
)
_SIZED = frozenset({str, tuple, bytes, set, _OrderedDict})
_DICTS = frozenset({dict, _OrderedDict})
# exact types that ``coerce_value`` returns unchanged inside a container (only a top-level naive datetime is
# changed, by ``_new_value``): a container of just these coerces to a plain copy of itself
_UNCHANGED_MEMBERS = _PLAIN | {datetime.datetime}
# exact types that ``_new_value`` converts without raising; it may raise for other values (a float subclass
# whose repr is not a number, a list subclass whose iteration fails, a self-referential container, ...)
_COERCIBLE = _UNCHANGED_MEMBERS | {int, float, datetime.date}
# builtin attributes inlined for their usual receiver type: name -> (receiver types, template)
_FAST_ATTRIBUTES: dict[str, tuple[frozenset[type], str]] = {
    "length": (_SIZED, "{D}(len({o}))"),
    "is_empty": (_SIZED, "(len({o}) == 0)"),
    "as_lower": (frozenset({str}), "{o}.lower()"),
    "as_upper": (frozenset({str}), "{o}.upper()"),
    **{
        part: (frozenset({datetime.datetime}), "{D}({o}." + part + ")")
        for part in ("year", "month", "day", "hour", "minute", "second", "microsecond")
    },
}
_ARITHMETIC_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "fdiv": operator.floordiv,
    "tdiv": operator.truediv,
    "mod": operator.mod,
    "mul": operator.mul,
    "pow": operator.pow,
}
_BITWISE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "bwand": operator.and_,
    "bwor": operator.or_,
    "bwxor": operator.xor,
    "bwlsh": operator.lshift,
    "bwrsh": operator.rshift,
}
_ORDERING_OPERATORS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "lt": ("<", operator.lt),
    "le": ("<=", operator.le),
    "gt": (">", operator.gt),
    "ge": (">=", operator.ge),
}
# fuzzy operator -> (regex method, whether a match means True)
_REGEX_OPERATORS: dict[str, tuple[str, bool]] = {
    "eq_fzm": ("match", True),
    "eq_fzs": ("search", True),
    "ne_fzm": ("match", False),
    "ne_fzs": ("search", False),
}
# one process-wide counter keeps every generated name unique, even across codegens sharing a namespace
_names: Iterator[int] = itertools.count()


class NotCompilableError(Exception):
    """An expression node the code generator does not compile; ``str(error)`` is the reason."""


def _is_nullable(data_type: Any) -> bool:
    return bool(DataType.is_type(data_type, DataType.NULLABLE))


def _always_bool(node: Any) -> bool:
    """Whether the node's interpreter evaluation always returns a ``bool`` (``==`` and ``<`` return what
    the operands' dunder methods return, so they do not qualify)."""
    if isinstance(node, ast.UnaryExpression):
        return bool(node.type == "not")
    if type(node) in (ast.ComparisonExpression, ast.ArithmeticComparisonExpression):
        # the interpreter compares only values of one exact type (else False / an error): with a literal of a
        # builtin scalar type on one side, that is the builtin type's comparison, which returns a bool
        return any(_is_scalar_literal(side) for side in (node.left, node.right))
    return isinstance(
        node, (ast.FuzzyComparisonExpression, ast.LogicExpression, ast.ContainsExpression, ast.BooleanExpression)
    )


def _is_scalar_literal(node: Any) -> bool:
    return isinstance(node, ast.LiteralExpressionBase) and type(node.value) in _UNCHANGED_MEMBERS


def _is_immutable_constant(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_immutable_constant(member) for member in value)
    return type(value) in _PLAIN or type(value) is datetime.datetime


def _new_value(context: Any, value: Any) -> Any:
    """Port of ``ExpressionBase._new_value(value, verify_type=False)``."""
    kind = type(value)
    # coerce_value rebuilds containers member by member (recursively, ~2 us per dict member); when every
    # member is already a rule-engine value the result is just a copy, built here in C
    if kind is tuple or kind is list:
        if _UNCHANGED_MEMBERS.issuperset(map(type, value)):
            return value if kind is tuple else tuple(value)
    elif (kind is dict or kind is _OrderedDict) and (
        _UNCHANGED_MEMBERS.issuperset(map(type, value.values())) and _UNCHANGED_MEMBERS.issuperset(map(type, value))
    ):
        return _OrderedDict(value)
    value = coerce_value(value, verify_type=False)
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=context.default_timezone)
    return value


def _ordered(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """Port of ``ArithmeticComparisonExpression.__op_arithmetic_values``."""
    if left is None and right is None:
        return op in (operator.ge, operator.le)
    if isinstance(left, tuple) and isinstance(right, tuple):
        for sub_left, sub_right in zip(left, right, strict=False):
            if _ordered(operator.ne, sub_left, sub_right):
                return _ordered(op, sub_left, sub_right)
        if len(left) != len(right):
            return _ordered(op, len(left), len(right))
        return op in (operator.ge, operator.le)
    if type(left) is not type(right):
        raise errors.EvaluationError("data type mismatch")
    return op(left, right)


def _numeric(value: Any) -> Any:
    if not is_numeric(value):
        raise errors.EvaluationError("data type mismatch (not a numeric value)")
    return value


def _arithmetic_operator(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Port of ``ArithmeticExpression.__op_arithmetic`` once the left operand is known to be numeric."""

    def arithmetic(left: Any, right: Any) -> Any:
        if type(right) is not _Decimal:
            _numeric(right)
        try:
            return op(left, right)
        except ZeroDivisionError:
            raise errors.ArithmeticError("arithmetic error: division by zero") from None
        except ArithmeticError:
            raise errors.ArithmeticError("arithmetic error") from None

    return arithmetic


_ARITHMETIC = {name: _arithmetic_operator(op) for name, op in _ARITHMETIC_OPERATORS.items()}


def _add(left: Any, right: Any) -> Any:
    """Port of ``AddExpression._op_add`` after both operands are evaluated."""
    if isinstance(left, datetime.datetime):
        if not isinstance(right, datetime.timedelta):
            raise errors.EvaluationError("data type mismatch (not a timedelta value)")
    elif isinstance(left, datetime.timedelta):
        if not isinstance(right, (datetime.timedelta, datetime.datetime)):
            raise errors.EvaluationError("data type mismatch (not a datetime or timedelta value)")
    # rule-engine's _assert_is_bytes and _assert_is_string check only their first value (``map(isinstance,
    # values, [str])`` stops with the shorter list): ``'x' + null`` goes on to Python's ``+``, a TypeError
    elif isinstance(left, bytes) or isinstance(right, bytes):
        if not isinstance(left, bytes):
            raise errors.EvaluationError("data type mismatch (not a bytes value)")
    elif isinstance(left, str) or isinstance(right, str):
        if not isinstance(left, str):
            raise errors.EvaluationError("data type mismatch (not a string value)")
    elif not (is_numeric(left) and is_numeric(right)):
        raise errors.EvaluationError("data type mismatch (not a numeric value)")
    return left + right


def _subtract(left: Any, right: Any) -> Any:
    """Port of ``SubtractExpression._op_sub`` after both operands are evaluated."""
    if isinstance(left, datetime.datetime):
        if not isinstance(right, (datetime.datetime, datetime.timedelta)):
            raise errors.EvaluationError("data type mismatch (not a datetime or timedelta value)")
    elif isinstance(left, datetime.timedelta):
        if not isinstance(right, datetime.timedelta):
            raise errors.EvaluationError("data type mismatch (not a timedelta value)")
    elif not (is_numeric(left) and is_numeric(right)):
        raise errors.EvaluationError("data type mismatch (not a numeric value)")
    return left - right


def _negate(value: Any) -> Any:
    if not is_numeric(value) and not isinstance(value, datetime.timedelta):
        raise errors.EvaluationError("data type mismatch (not a numeric or timedelta value)")
    return -value


def _bitwise(op: Callable[[Any, Any], Any], left: Any) -> Callable[[Any], Any]:
    """Port of ``BitwiseExpression._op_bitwise``: check the left operand, then return the right-hand step."""
    left_type = DataType.from_value(left)
    if left_type == DataType.FLOAT:
        if not is_natural_number(left):
            raise errors.EvaluationError("data type mismatch (not a natural number)")
        return functools.partial(_bitwise_float, op, left)
    if DataType.is_type(left_type, DataType.SET):
        return functools.partial(_bitwise_set, op, left)
    raise errors.EvaluationError("data type mismatch")


def _bitwise_float(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if not is_natural_number(right):
        raise errors.EvaluationError("data type mismatch (not a natural number)")
    return coerce_value(op(int(left), int(right)))


def _bitwise_set(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if not DataType.is_compatible(DataType.from_value(right), DataType.SET):
        raise errors.EvaluationError("data type mismatch")
    return op(left, right)


def _container_type(container: Any) -> Any:
    """First half of ``ContainsExpression.evaluate``: runs before the member is evaluated."""
    return functools.partial(_contains_checked, DataType.from_value(container))


def _contains_checked(container_type: Any, container: Any, member: Any) -> bool:
    if container_type in (DataType.BYTES, DataType.STRING) and DataType.from_value(member) != container_type:
        raise errors.EvaluationError("data type mismatch")
    return bool(member in container)


def _iterable(value: Any) -> Any:
    if not DataType.from_value(value).is_iterable:
        raise errors.EvaluationError("data type mismatch (comprehension requires an iterable)")
    return value


def _integer(value: Any) -> Any:
    """Slice bound check of ``GetSliceExpression.evaluate``."""
    if value is None:
        return None
    if not is_integer_number(value):
        raise errors.EvaluationError("data type mismatch (not an integer number)")
    return int(value)


def _slice(container: Any, start: Any, stop: Any) -> Any:
    return coerce_value(operator.getitem(container, slice(start, stop)), verify_type=False)


def _null_container(message: str) -> Any:
    raise errors.EvaluationError(message)


def _regex_subject(value: Any) -> Any:
    if not isinstance(value, str) and value is not None:
        raise errors.EvaluationError("data type mismatch")
    return value


def _regex(node: Any, value: Any) -> Any:
    """Regex operand of ``FuzzyComparisonExpression.__op_regex`` when it is not a literal."""
    if isinstance(value, str):
        return node._compile_regex(value)
    if value is not None:
        raise errors.EvaluationError("data type mismatch")
    return None


def _regex_result(method: str, on_match: bool, subject: Any, regex: Any) -> bool:
    """Rest of ``FuzzyComparisonExpression.__op_regex`` (the ``$re_groups`` side effect is not compiled)."""
    if subject is None or regex is None:
        return (subject is regex) if on_match else (subject is not regex)
    matched = getattr(regex, method)(subject) is not None
    return matched if on_match else not matched


def _decimal_abs(function_name: str, value: _Decimal) -> _Decimal:
    """``FunctionCallExpression.evaluate`` of the ``abs`` builtin on a Decimal: a decimal signal becomes the
    interpreter's FunctionCallError."""
    try:
        return abs(value)
    except Exception as error:
        raise errors.FunctionCallError("function call failed", error=error, function_name=function_name) from None


def _callable(function: Any) -> Any:
    if not callable(function):
        raise errors.EvaluationError("data type mismatch (not a callable value)")
    return function


class _Runtime:
    """Helpers that need the context: ports of the interpreter's symbol, attribute, item and call paths."""

    def __init__(self, context: rule_engine.Context) -> None:
        self.context = context

    def new_value(self, value: Any) -> Any:
        return _new_value(self.context, value)

    def is_null(self, value: Any) -> bool:
        """``new_value(value) is None``. Coercion never turns another value into None, so it only runs
        where it might raise (as it does in the interpreter)."""
        kind = type(value)
        if kind in _COERCIBLE or (
            (kind is dict or kind is _OrderedDict)
            and _COERCIBLE.issuperset(map(type, value.values()))
            and _COERCIBLE.issuperset(map(type, value))
        ):
            return value is None
        return self.new_value(value) is None

    def resolve(self, thing: Any, name: str, scope: str | None = None) -> Any:
        """``SymbolExpression.evaluate`` up to the coercion: resolve through the context, honour default_value."""
        try:
            return self.context.resolve(thing, name, scope=scope)
        except errors.SymbolResolutionError:
            default_value = self.context.default_value
            if default_value is errors.UNDEFINED:
                raise
            return default_value

    def check_symbol(self, name: str, result_type: Any, value: Any) -> Any:
        """Rest of ``SymbolExpression.evaluate``: coercion and the runtime type check."""
        value = self.new_value(value)
        if result_type == DataType.UNDEFINED:
            return value
        effective_type = result_type
        if _is_nullable(effective_type):
            if value is None:
                return value
            effective_type = effective_type.inner_type
        if DataType.is_type(effective_type, DataType.OBJECT):
            return value
        value_type = DataType.from_value(value)
        if DataType.is_compatible(value_type, effective_type):
            if effective_type.is_scalar:
                return value
            if effective_type.value_type == DataType.UNDEFINED:
                return value
            if value_type.value_type == DataType.UNDEFINED:
                return value
            if (
                effective_type.value_type != DataType.NULL
                and not effective_type.value_type_nullable
                and any(v is None for v in value)
            ):
                raise errors.SymbolTypeError(name, is_value=value, is_type=value_type, expected_type=result_type)
            if DataType.is_compatible(effective_type.value_type, value_type.value_type):
                return value
        if value_type == DataType.NULL:
            return value
        raise errors.SymbolTypeError(name, is_value=value, is_type=value_type, expected_type=result_type)

    def check_collection(
        self, name: str, result_type: Any, key_type: type | None, member_type: type, value: Any
    ) -> Any:
        """``check_symbol`` for MAPPING / ARRAY of scalars: values whose members all have the declared
        python types pass unchanged, without the interpreter's costly type inference."""
        if key_type is not None and type(value) is dict:
            if all(type(key) is key_type for key in value) and all(
                type(member) is member_type or member is None for member in value.values()
            ):
                return _OrderedDict(value)
        elif key_type is None and type(value) in (tuple, list) and all(type(m) is member_type for m in value):
            return tuple(value)
        return self.check_symbol(name, result_type, value)

    def object_attribute(self, node: Any, obj: Any, thing: Any) -> Any:
        """``GetAttributeExpression.evaluate`` for OBJECT schemas, without the final coercion."""
        if obj is None and node.safe:
            return obj
        if obj is None and _is_nullable(node.object.result_type):
            raise errors.EvaluationError(
                "attribute access on a null value (use ?. to safely navigate a NULLABLE expression)"
            )
        object_type = node._object_type
        try:
            # the interpreter hands the accessor a coerced value; the inlined fast path may pass a raw dict
            return object_type.accessor(self.new_value(obj), node.name)
        except (AttributeError, KeyError):
            default_value = self.context.default_value
            if default_value is errors.UNDEFINED:
                raise errors.ObjectAttributeError(
                    node.name,
                    object_type,
                    thing=thing,
                    suggestion=suggest_symbol(node.name, object_type.attributes.keys()),
                ) from None
            return default_value

    def attribute(self, node: Any, obj: Any, thing: Any) -> Any:
        """``GetAttributeExpression.evaluate`` for builtin attributes and mapping keys."""
        if obj is None and node.safe:
            return obj
        if obj is None and _is_nullable(node.object.result_type):
            raise errors.EvaluationError(
                "attribute access on a null value (use ?. to safely navigate a NULLABLE expression)"
            )
        context = self.context
        try:
            value = context.resolve_attribute(thing, obj, node.name)
        except errors.AttributeResolutionError as error:
            attribute_error = error
        else:
            return self.new_value(value)
        if isinstance(obj, collections.abc.Mapping) and not isinstance(obj, Builtins):
            if not context.mapping_attribute_lookup:
                raise attribute_error
            context._warn_mapping_fallback(node.name)
        try:
            value = context.resolve(obj, node.name)
        except errors.SymbolResolutionError as symbol_error:
            default_value = context.default_value
            if default_value is errors.UNDEFINED:
                suggestion = attribute_error.suggestion or symbol_error.suggestion
                if attribute_error.suggestion and symbol_error.suggestion:
                    suggestion = suggest_symbol(node.name, (attribute_error.suggestion, symbol_error.suggestion))
                attribute_error.suggestion = suggestion
                raise attribute_error from None
            value = default_value
        return self.new_value(value)

    def item(self, safe: bool, container: Any, item: Any) -> Any:
        """``GetItemExpression.evaluate`` once the container is known not to be null."""
        if isinstance(container, (bytes, str, tuple)):
            if not is_integer_number(item):
                raise errors.EvaluationError("data type mismatch (not an integer number)")
            item = int(item)
        try:
            value = operator.getitem(container, item)
        except (IndexError, KeyError):
            if safe:
                return None
            raise errors.LookupError(container, item) from None
        return self.new_value(value)

    def call(self, node: Any, function: Any, arguments: tuple[Any, ...]) -> Any:
        """``FunctionCallExpression.evaluate`` once function and arguments are evaluated."""
        function_name: str | None = "<unknown>"
        if node.function.result_type != DataType.UNDEFINED:
            function_type = node.function.result_type
            function_name = function_type.value_name
            node._validate_function(function_type, arguments)
        elif hasattr(function, "__name__"):
            function_name = function.__name__ + "?"
        try:
            result = function(*arguments)
        except errors.FunctionCallError as error:
            error.function_name = function_name
            raise error
        except Exception as error:
            raise errors.FunctionCallError("function call failed", error=error, function_name=function_name) from None
        result = self.new_value(result)
        if not DataType.is_compatible(DataType.from_value(result), node.result_type):
            raise errors.FunctionCallError(
                "function call failed (data type mismatch on returned value)", function_name=function_name
            )
        return result


class ExpressionCodegen:
    """Generate Python expression source for rule-engine AST expressions of one context.

    Helper objects are stored in ``namespace`` under unique names; exec the generated source in it.
    Generated fragments read the evaluated object from the variable named ``thing``.
    """

    def __init__(
        self,
        context: rule_engine.Context,
        namespace: dict[str, Any],
        *,
        thing: str = "thing",
        trusted: bool = False,
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        self.context = context
        self.namespace = namespace
        self.thing = thing
        # Trusted: ``thing`` is known to be well-typed, as the evaluator's scopes are by construction: every
        # top-level symbol holds a rule-engine-native value of its declared type (or None where nullable),
        # and every OBJECT value is a dict with every declared attribute, holding native values of their
        # declared types. On such input the interpreter's runtime type checks and coercions of symbol and
        # attribute reads are no-ops, so trusted code leaves them out. Not for arbitrary input.
        self.trusted = trusted
        # Trusted code may also know some top-level symbols' values when it is generated (a ruleset's params,
        # the same for every item): it reads them as constants, so ``x in params.codes`` tests membership of
        # a constant and ``params.limit`` costs nothing per item.
        if constants and not trusted:
            raise ValueError("constants are for trusted code: the interpreter would check and coerce them")
        self.constants: Mapping[str, Any] = constants or {}
        self.needs_decimal_context = False
        """Whether some fragment must run with ``context.decimal_context`` as the current decimal context."""
        self._runtime = _Runtime(context)
        self._registered: dict[str, str] = {}
        # comprehension variables: rule-engine name -> python name, outermost first
        self._scopes: list[tuple[str, str]] = []
        self._symbol: Callable[[str], str] = self._cached_symbol
        # top-level symbol -> function-local cache, initialised by function_source
        self._symbol_locals: dict[str, str] = {}
        # inline ``thing[name]`` only where the context resolves symbols exactly like that
        self._inline_symbols = (
            type(context).resolve is rule_engine.Context.resolve
            and getattr(context, "_Context__resolver", None) is rule_engine.resolve_item
        )
        self._inline_attributes = type(context).resolve_attribute is rule_engine.Context.resolve_attribute
        self._handlers: dict[type, Callable[[Any], str]] = {
            ast.SymbolExpression: self._symbol_expression,
            ast.GetAttributeExpression: self._get_attribute,
            ast.GetItemExpression: self._get_item,
            ast.GetSliceExpression: self._get_slice,
            ast.ContainsExpression: self._contains,
            ast.CoalesceExpression: self._coalesce,
            ast.TernaryExpression: self._ternary,
            ast.UnaryExpression: self._unary,
            ast.LogicExpression: self._logic,
            ast.ComparisonExpression: self._comparison,
            ast.ArithmeticComparisonExpression: self._ordering,
            ast.FuzzyComparisonExpression: self._regex_comparison,
            ast.AddExpression: self._add,
            ast.SubtractExpression: self._subtract,
            ast.ArithmeticExpression: self._arithmetic,
            ast.BitwiseExpression: self._bitwise,
            ast.BitwiseShiftExpression: self._bitwise,
            ast.ComprehensionExpression: self._comprehension,
            ast.FunctionCallExpression: self._function_call,
            ast.ArrayExpression: self._array,
            ast.SetExpression: self._set,
            ast.MappingExpression: self._mapping,
        }
        # the node kinds _has_raw_form accepts
        self._raw_handlers: dict[type, Callable[..., str]] = {
            ast.SymbolExpression: self._symbol_expression,
            ast.GetAttributeExpression: self._get_attribute,
            ast.CoalesceExpression: self._coalesce,
            ast.TernaryExpression: self._ternary,
        }

    # -- public API -------------------------------------------------------------------------------

    def fragment(
        self,
        expression: Any,
        *,
        symbol: Callable[[str], str] | None = None,
    ) -> str:
        """Python expression source evaluating *expression* (an ``ast.ExpressionBase``) like the interpreter.

        By default each top-level symbol is read from ``thing`` at most once per call of the function
        built by :meth:`function_source` (lazily, where the interpreter first reads it). Alternatively
        *symbol(name)* returns the source that reads top-level symbol *name*; it must evaluate to what
        :meth:`symbol_source` evaluates to (the resolver's value, or the default / SymbolResolutionError
        when missing). Coercion and type checks are added by the fragment. Raises :class:`NotCompilableError`.
        """
        self._symbol = symbol or self._cached_symbol
        try:
            return self._expr(expression)
        finally:
            self._symbol = self._cached_symbol

    def static_type(self, expression: Any) -> tuple[type, bool] | None:
        """In trusted code, (the python type the value of *expression* always has, whether it may be None
        instead) where the declared types tell; else None."""
        return self._static_type(expression)

    def symbol_source(self, name: str) -> str:
        """Source reading top-level symbol *name* from ``thing`` the way the context's resolver does."""
        resolve = self._helper("resolve", self._runtime.resolve)
        key = repr(name)
        if not self._inline_symbols:
            return f"{resolve}({self.thing}, {key})"
        thing = self.thing
        return f"({thing}[{key}] if type({thing}) is dict and {key} in {thing} else {resolve}({thing}, {key}))"

    def _cached_symbol(self, name: str) -> str:
        local = self._symbol_locals.setdefault(name, f"_s{next(_names)}")
        unread = self._helper("unread", _UNREAD)
        return f"({local} if {local} is not {unread} else ({local} := {self.symbol_source(name)}))"

    def function_source(self, name: str, body: str) -> str:
        """Source of ``def name(thing): return body`` for fragments of this codegen: it initialises the
        symbol caches and makes ``context.decimal_context`` current when a fragment needs it."""
        unread = self._helper("unread", _UNREAD)
        prologue = "".join(f"    {local} = {unread}\n" for local in self._symbol_locals.values())
        if not self.needs_decimal_context:
            return f"def {name}({self.thing}):\n{prologue}    return {body}\n"
        context = self._constant(self.context, "context")
        get, set_ = self._constant(decimal.getcontext, "getcontext"), self._constant(decimal.setcontext, "setcontext")
        return (
            f"def {name}({self.thing}):\n{prologue}"
            f"    decimal_context = {context}.decimal_context\n"
            f"    saved = {get}()\n"
            f"    if saved is decimal_context:\n"
            f"        return {body}\n"
            f"    {set_}(decimal_context)\n"
            f"    try:\n"
            f"        return {body}\n"
            f"    finally:\n"
            f"        {set_}(saved)\n"
        )

    # -- naming -----------------------------------------------------------------------------------

    def _constant(self, value: Any, hint: str = "k") -> str:
        name = f"_re_{hint}_{next(_names)}"
        self.namespace[name] = value
        return name

    def _helper(self, key: str, value: Any) -> str:
        """Register a helper shared by all fragments of this codegen under *key*."""
        if key not in self._registered:
            self._registered[key] = self._constant(value, key)
        return self._registered[key]

    @staticmethod
    def _temp() -> str:
        return f"_t{next(_names)}"

    def _literal(self, value: Any) -> str:
        if value is None or type(value) is bool or type(value) is str:
            return repr(value)
        return self._constant(value)

    # -- what is known before any item is seen (trusted code) --------------------------------------

    def _known(self, node: Any) -> tuple[Any] | None:
        """``(value,)`` when *node* is a constant symbol, or a plain attribute of one: its value at generation
        time. Reduced literals are left to the literal paths."""
        if type(node) is ast.SymbolExpression:
            if node.scope is None and node.name in self.constants and not self._is_variable(node.name):
                return (self.constants[node.name],)
        elif type(node) is ast.GetAttributeExpression and not node.safe and node._object_type is not None:
            owner = self._known(node.object)
            if owner is not None and isinstance(owner[0], Mapping) and node.name in owner[0]:
                return (owner[0][node.name],)
        return None

    def _static_type(self, node: Any) -> tuple[type, bool] | None:
        """In trusted code, (the python type the value of *node* always has, whether it may also be None), for
        the nodes whose value the trusted contract types: symbols, attributes of OBJECTs, constants, scalar
        literals; None when not known."""
        if not self.trusted:
            return None
        known = self._known(node)
        if known is not None:
            return (type(known[0]), False) if known[0] is not None else None
        if isinstance(node, ast.LiteralExpressionBase):
            return (type(node.value), False) if _is_scalar_literal(node) and node.value is not None else None
        if type(node) is ast.SymbolExpression:
            if node.scope is not None or self._is_variable(node.name):
                return None
            may_be_null = _is_nullable(node.result_type)
        elif type(node) is ast.GetAttributeExpression and node._object_type is not None:
            may_be_null = node.safe or _is_nullable(node.result_type)
        elif type(node) in _TYPED_RESULTS:
            return self._static_result_type(node)
        else:
            return None
        effective = DataType.NULLABLE.unwrap(node.result_type)
        python_type = tuple if DataType.is_type(effective, DataType.ARRAY) else _SCALAR_TYPES.get(effective)
        return None if python_type is None else (python_type, may_be_null)

    def _static_result_type(self, node: Any) -> tuple[type, bool] | None:
        """``_static_type`` of an operation whose operands' types are known: what the interpreter returns for
        them when it does not raise."""
        kind = type(node)
        if kind is ast.CoalesceExpression:  # ``a ?? b``: a when it is not None, else b
            left, right = self._static_type(node.left), self._static_type(node.right)
            return (left[0], right[1]) if left and right and left[0] is right[0] else None
        if kind is ast.TernaryExpression:
            true, false = self._static_type(node.case_true), self._static_type(node.case_false)
            return (true[0], true[1] or false[1]) if true and false and true[0] is false[0] else None
        if kind is ast.UnaryExpression:
            operand = self._static_type(node.right)
            return operand if node.type == "uminus" and operand == (_Decimal, False) else None
        if kind is ast.GetSliceExpression:
            return (str, False) if self._static_type(node.container) == (str, False) and not node.safe else None
        if kind is ast.FunctionCallExpression:
            return (_Decimal, False) if self._is_decimal_abs(node) else None
        both, never_null = self._same_static_type(node.left, node.right)
        # Decimal with Decimal gives a Decimal; str + str a str (datetime - datetime is a timedelta: left out)
        if never_null and (both is _Decimal or (both is str and kind is ast.AddExpression)):
            return both, False
        return None

    def _is_variable(self, name: str) -> bool:
        return any(variable == name for variable, _python in self._scopes)

    # -- dispatch ---------------------------------------------------------------------------------

    def _expr(self, node: Any, raw: bool = False) -> str:
        """Source for *node*. With *raw*, the value may be left uncoerced where ``_has_raw_form`` says so: for
        consumers that only depend on what coercion preserves (None-ness, a dict's string keys)."""
        if isinstance(node, ast.LiteralExpressionBase) and node.is_reduced:
            return self._reduced_literal(node)
        if raw and self._has_raw_form(node):
            return self._raw_handlers[type(node)](node, raw=True)
        handler = self._handlers.get(type(node))
        if handler is None:
            raise NotCompilableError(f"{type(node).__name__} is not compiled")
        return handler(node)

    def _has_raw_form(self, node: Any) -> bool:
        """Whether the value of *node* is available before the interpreter's final coercion: symbols without a
        runtime type check, OBJECT attributes, and ``??`` / ternaries over such operands."""
        kind = type(node)
        if kind is ast.SymbolExpression:
            effective = DataType.NULLABLE.unwrap(node.result_type)
            return bool(node.result_type == DataType.UNDEFINED or DataType.is_type(effective, DataType.OBJECT))
        if kind is ast.GetAttributeExpression:
            return node._object_type is not None
        if kind is ast.CoalesceExpression:
            return self._has_raw_form(node.left) or self._has_raw_form(node.right)
        if kind is ast.TernaryExpression:
            return self._has_raw_form(node.case_true) or self._has_raw_form(node.case_false)
        return False

    def _coerced(self, source: str) -> str:
        """``_new_value(source)`` with the common already-native cases inlined (a tuple of rule-engine values,
        e.g. a list parameter, coerces to an equal tuple of the same members)."""
        value, kind = self._temp(), self._temp()
        plain = self._helper("plain", _PLAIN)
        dt = self._helper("datetime", datetime.datetime)
        members = self._helper("unchanged_members", _UNCHANGED_MEMBERS)
        new_value = self._helper("new_value", self._runtime.new_value)
        return (
            f"({value} if ({kind} := type({value} := {source})) in {plain}"
            f" or ({kind} is {dt} and {value}.tzinfo is not None)"
            f" or ({kind} is tuple and {members}.issuperset(map(type, {value}))) else {new_value}({value}))"
        )

    # -- literals ---------------------------------------------------------------------------------

    def _reduced_literal(self, node: Any) -> str:
        # rule-engine folded this at parse time; mutable results (sets, mappings) are rebuilt per call
        if isinstance(node, (ast.ArrayExpression, ast.SetExpression, ast.MappingExpression)):
            value = self._literal_value(node)
            if isinstance(value, tuple) and _is_immutable_constant(value):
                return self._constant(value)
            return f"{self._constant(functools.partial(node.evaluate, None), 'literal')}()"
        return self._literal(node.value)

    @staticmethod
    def _literal_value(node: Any) -> Any:
        """The value of a reduced literal, or the node itself when building it raises (e.g. ``{{0}}``):
        that error must then happen at evaluation time, as in the interpreter."""
        try:
            return node.evaluate(None)
        except Exception:
            return node

    def _array(self, node: Any) -> str:
        return "(" + "".join(self._expr(member) + ", " for member in node.value) + ")"

    def _set(self, node: Any) -> str:
        # one single-member set per member keeps the interpreter's evaluate-then-hash order
        return "(" + " | ".join("{" + self._expr(member) + "}" for member in node.value) + ")"

    def _mapping(self, node: Any) -> str:
        raise NotCompilableError("mapping literals with non-constant members are not compiled")

    # -- symbols and access -----------------------------------------------------------------------

    def _symbol_expression(self, node: Any, raw: bool = False) -> str:
        if node.scope == Builtins.scope_name:
            if node.name == "re_groups":
                raise NotCompilableError("regex group capture ($re_groups) is not compiled")
            resolve = self._helper("resolve", self._runtime.resolve)
            read = f"{resolve}(None, {node.name!r}, {Builtins.scope_name!r})"
        elif node.scope is not None:
            raise NotCompilableError(f"symbol scope {node.scope!r} is not compiled")
        elif (known := self._known(node)) is not None:
            return self._constant(known[0], "known")
        else:
            # the interpreter searches comprehension scopes outermost first
            variable = next((python for name, python in self._scopes if name == node.name), None)
            read = variable if variable is not None else self._symbol(node.name)
            if self.trusted and variable is None:
                return read  # well-typed and native by the trusted contract: nothing to check or coerce
        result_type = node.result_type
        effective = DataType.NULLABLE.unwrap(result_type)
        if result_type == DataType.UNDEFINED or DataType.is_type(effective, DataType.OBJECT):
            # no runtime type check, so a raw consumer (see _expr) may skip the coercion too
            return read if raw else self._coerced(read)
        check = self._constant(functools.partial(self._runtime.check_symbol, node.name, result_type), "check")
        python_type = _SCALAR_TYPES.get(effective)
        if python_type is None:
            collection = self._collection_check(node.name, result_type, effective)
            return f"{collection or check}({read})"
        value = self._temp()
        expected = self._helper(python_type.__name__, python_type)
        accepted = f"type({value} := {read}) is {expected}"
        if python_type is datetime.datetime:
            accepted = f"({accepted} and {value}.tzinfo is not None)"
        return f"({value} if {accepted} or {value} is None else {check}({value}))"

    def _collection_check(self, name: str, result_type: Any, effective: Any) -> str | None:
        """A faster exact symbol check for MAPPING(scalar, scalar) and ARRAY(scalar), else None."""
        fast_members = {k: v for k, v in _SCALAR_TYPES.items() if v is not datetime.datetime}
        if DataType.is_type(effective, DataType.MAPPING):
            key_type, member_type = fast_members.get(effective.key_type), fast_members.get(effective.value_type)
            if key_type is None:
                return None
        elif DataType.is_type(effective, DataType.ARRAY):
            key_type, member_type = None, fast_members.get(effective.value_type)
        else:
            return None
        if member_type is None:
            return None
        check = functools.partial(self._runtime.check_collection, name, result_type, key_type, member_type)
        return self._constant(check, "check")

    def _get_attribute(self, node: Any, raw: bool = False) -> str:
        obj, thing = self._temp(), self.thing
        known = self._known(node)
        if known is not None:
            return self._literal(known[0])
        if node._object_type is not None:
            slow = self._constant(functools.partial(self._runtime.object_attribute, node), "attribute")
            if node._object_type.accessor is operator.getitem and self.trusted and not node.safe and not _is_nullable(
                node.object.result_type
            ):
                # a non-nullable OBJECT is a dict holding every declared attribute, by the trusted contract
                value = f"{self._expr(node.object, raw=True)}[{node.name!r}]"
            elif node._object_type.accessor is operator.getitem and self.trusted:
                # null (``&.``, or an error) is the interpreter's business: the slow path is exact for it
                value = f"({obj}[{node.name!r}] if ({obj} := {self._expr(node.object, raw=True)}) is not None"
                value += f" else {slow}({obj}, {thing}))"
            elif node._object_type.accessor is operator.getitem:
                key, dicts = repr(node.name), self._helper("dicts", _DICTS)
                value = (
                    f"({obj}[{key}] if type({obj} := {self._expr(node.object, raw=True)}) in {dicts} and {key} in {obj}"
                    f" else {slow}({obj}, {thing}))"
                )
            else:
                value = f"{slow}({self._expr(node.object)}, {thing})"
            if raw or self.trusted:
                return value
            return self._coerced(value)
        if any(name == node.name for name, _ in self._scopes):
            # the interpreter's fallback from attribute to symbol lookup sees the comprehension scopes
            raise NotCompilableError("attribute named like an enclosing comprehension variable is not compiled")
        slow = self._constant(functools.partial(self._runtime.attribute, node), "attribute")
        fast = _FAST_ATTRIBUTES.get(node.name) if self._inline_attributes else None
        source = self._expr(node.object)
        if fast is None:
            self.needs_decimal_context = True  # e.g. FLOAT .to_str depends on the context
            return f"{slow}({source}, {thing})"
        types, template = fast
        expression = template.format(o=obj, D=self._helper("Decimal", _Decimal))
        receivers = self._constant(types, "types")
        return f"({expression} if type({obj} := {source}) in {receivers} else {slow}({obj}, {thing}))"

    def _get_item(self, node: Any) -> str:
        if not (isinstance(node.item, ast.StringExpression)):
            self.needs_decimal_context = True  # integer checks on Decimal indexes
        container = self._temp()
        item = self._constant(functools.partial(self._runtime.item, node.safe), "item")
        null = (
            "None"
            if node.safe
            else f"{self._helper('null', _null_container)}({'data type mismatch (container is null)'!r})"
        )
        source = self._expr(node.container)
        return f"({item}({container}, {self._expr(node.item)}) if ({container} := {source}) is not None else {null})"

    def _get_slice(self, node: Any) -> str:
        bounds = [self._literal_bound(bound) for bound in (node.start, node.stop)]
        if self._static_type(node.container) == (str, False) and None not in bounds:
            # a string's slice is a string, which coercion leaves as it is
            start, stop = (bound[0] for bound in bounds if bound is not None)
            return f"({self._expr(node.container)}[{start}:{stop}])"
        container = self._temp()
        integer, slice_ = self._helper("integer", _integer), self._helper("slice", _slice)
        null = "None" if node.safe else f"{self._helper('null', _null_container)}('data type mismatch')"
        return (
            f"({slice_}({container}, {integer}({self._expr(node.start)}), {integer}({self._expr(node.stop)}))"
            f" if ({container} := {self._expr(node.container)}) is not None else {null})"
        )

    @staticmethod
    def _literal_bound(node: Any) -> tuple[int | None] | None:
        """``(bound,)`` for a literal slice bound that ``_integer`` accepts, as it converts it; else None."""
        if not (isinstance(node, ast.LiteralExpressionBase) and node.is_reduced):
            return None
        try:
            return (_integer(node.value),)
        except errors.EvaluationError:
            return None

    def _contains(self, node: Any) -> str:
        container, member = node.container, node.member
        temp = self._temp()
        reduced = isinstance(container, ast.LiteralExpressionBase) and container.is_reduced
        known = self._known(container)
        value = self._literal_value(container) if reduced else known[0] if known is not None else container
        if value is not container:
            member_type = self._static_type(member)
            if type(value) is tuple and member_type is not None and member_type[0] is str and all(
                type(v) is str for v in value
            ):
                # a string (or null) equals a member of strings exactly when it hashes to one: a set lookup
                return f"({self._expr(member)} in {self._constant(frozenset(value), 'members')})"
            # the container does not escape, so even a set or mapping literal can be shared
            constant = self._literal(value)
            if isinstance(value, (str, bytes)):
                # a string (bytes) container requires a string (bytes) member
                checked = self._constant(functools.partial(_contains_checked, DataType.from_value(value)), "contains")
                expected = self._helper(type(value).__name__, type(value))
                return (
                    f"({temp} in {constant} if type({temp} := {self._expr(member)}) is {expected}"
                    f" else {checked}({constant}, {temp}))"
                )
            if isinstance(value, tuple) and not all(isinstance(v, _DECIMAL_FREE) for v in value):
                self._mark_unless_decimal_free(member)  # tuple membership uses ==
            return f"({self._expr(member)} in {constant})"
        self._mark_unless_decimal_free(member)
        if self._static_type(container) == (tuple, False):
            return f"({self._expr(member)} in {self._expr(container)})"
        collections_ = self._helper("collections", _COLLECTIONS)
        contains = self._helper("contains", operator.contains)
        prepare = self._helper("container_type", _container_type)
        # the callee is evaluated first: the container (and its type check) before the member
        return (
            f"({contains} if type({temp} := {self._expr(container)}) in {collections_} else {prepare}({temp}))"
            f"({temp}, {self._expr(member)})"
        )

    def _mark_unless_decimal_free(self, node: Any) -> None:
        if not (isinstance(node, ast.LiteralExpressionBase) and isinstance(node.value, _DECIMAL_FREE)):
            self.needs_decimal_context = True

    # -- control ----------------------------------------------------------------------------------

    def _coalesce(self, node: Any, raw: bool = False) -> str:
        # a raw left operand is None exactly when its coerced value is
        left = self._temp()
        return f"({left} if ({left} := {self._expr(node.left, raw)}) is not None else {self._expr(node.right, raw)})"

    def _ternary(self, node: Any, raw: bool = False) -> str:
        condition = self._expr(node.condition)
        return f"({self._expr(node.case_true, raw)} if {condition} else {self._expr(node.case_false, raw)})"

    def _unary(self, node: Any) -> str:
        if node.type == "not":
            return f"(not {self._expr(node.right)})"
        self.needs_decimal_context = True
        if self._static_type(node.right) == (_Decimal, False):
            return f"(-{self._expr(node.right)})"
        value = self._temp()
        decimal_type, negate = self._helper("Decimal", _Decimal), self._helper("negate", _negate)
        return f"(-{value} if type({value} := {self._expr(node.right)}) is {decimal_type} else {negate}({value}))"

    def _logic(self, node: Any) -> str:
        if node.type not in ("and", "or"):
            raise NotCompilableError(f"logic operator {node.type!r} is not compiled")
        # rule-engine returns bool(left and right); bool((a or b) or c) == bool(a or b or c), so chains of
        # one operator are flattened (which also keeps long chains within Python's nesting limits)
        operands = [node.right]
        left = node.left
        while type(left) is ast.LogicExpression and left.type == node.type:
            operands.append(left.right)
            left = left.left
        operands.append(left)
        operands.reverse()
        source = f" {node.type} ".join(self._expr(operand) for operand in operands)
        return f"({source})" if all(self._always_bool(operand) for operand in operands) else f"bool({source})"

    def _always_bool(self, node: Any) -> bool:
        """``_always_bool``, or in trusted code a BOOLEAN that cannot be null, or a comparison with an operand of a
        known scalar type: the values compared are then rule-engine scalars, whose comparisons return a bool."""
        if _always_bool(node) or self._static_type(node) == (bool, False):
            return True
        return type(node) in (ast.ComparisonExpression, ast.ArithmeticComparisonExpression) and any(
            side is not None and side[0] is not tuple for side in map(self._static_type, (node.left, node.right))
        )

    def _comprehension(self, node: Any) -> str:
        iterable, variable = self._temp(), f"_c{next(_names)}"
        tuple_type = self._helper("tuple", tuple)
        source = self._expr(node.iterable)
        self._scopes.append((node.variable, variable))
        try:
            condition = "" if node.condition is None else f" if {self._expr(node.condition)}"
            result = self._expr(node.result)
        finally:
            self._scopes.pop()
        check = self._helper("iterable", _iterable)
        # bind the iterable first: an assignment expression may not appear in a comprehension's iterable
        return (
            f"(({iterable} := ({iterable} if type({iterable} := {source}) is {tuple_type} else {check}({iterable}))),"
            f" {tuple_type}([{result} for {variable} in {iterable}{condition}]))[1]"
        )

    def _function_call(self, node: Any) -> str:
        self.needs_decimal_context = True
        inline = self._decimal_abs_call(node)
        if inline is not None:
            return inline
        call = self._constant(functools.partial(self._runtime.call, node), "call")
        arguments = "".join(self._expr(argument) + ", " for argument in node.arguments)
        return f"{call}({self._helper('callable', _callable)}({self._expr(node.function)}), ({arguments}))"

    def _is_decimal_abs(self, node: Any) -> bool:
        """Whether *node* is ``$abs(x)`` in trusted code, for an x that is a Decimal and cannot be null."""
        function = node.function
        if not (
            self.trusted
            and type(function) is ast.SymbolExpression
            and function.scope == Builtins.scope_name
            and function.name == "abs"
            and len(node.arguments) == 1
            and function.result_type != DataType.UNDEFINED
            and self._static_type(node.arguments[0]) == (_Decimal, False)
        ):
            return False
        try:
            return self._runtime.resolve(None, function.name, Builtins.scope_name) is abs
        except errors.EngineError:
            return False

    def _decimal_abs_call(self, node: Any) -> str | None:
        """``$abs(x)`` of ``_is_decimal_abs``: the builtin's own call, without the interpreter's argument and
        result checks, which such an x passes; else None."""
        if not self._is_decimal_abs(node):
            return None
        helper = self._helper("decimal_abs", functools.partial(_decimal_abs, node.function.result_type.value_name))
        return f"{helper}({self._expr(node.arguments[0])})"

    # -- comparisons ------------------------------------------------------------------------------

    def _constant_side(self, node: Any) -> tuple[Any, Any] | None:
        """The (python type, value) of a scalar literal or known operand, else None."""
        if isinstance(node, ast.LiteralExpressionBase) and not node.result_type.is_compound:
            return type(node.value), node.value
        known = self._known(node)
        if known is not None and type(known[0]) in _UNCHANGED_MEMBERS:
            return type(known[0]), known[0]
        return None

    def _same_static_type(self, left: Any, right: Any) -> tuple[type | None, bool]:
        """(the python type both operands always have, or the one whichever is typed has; whether neither may be
        None) for trusted code; (None, False) when neither operand's type is known."""
        left_type, right_type = self._static_type(left), self._static_type(right)
        if left_type is None or right_type is None:
            known = left_type or right_type
            return (known[0] if known else None), False
        if left_type[0] is not right_type[0]:
            return None, False
        return left_type[0], not (left_type[1] or right_type[1])

    def _comparison(self, node: Any) -> str:
        equal = node.type == "eq"
        left_constant, right_constant = self._constant_side(node.left), self._constant_side(node.right)
        if right_constant is not None and right_constant[1] is None:
            return self._null_test(node.left, equal)
        if left_constant is not None and left_constant[1] is None:
            return self._null_test(node.right, equal)
        if not any(side is not None and isinstance(side[1], _DECIMAL_FREE) for side in (left_constant, right_constant)):
            self.needs_decimal_context = True  # Decimal equality signals on sNaN under the context's traps
        a, b = self._temp(), self._temp()
        operator_ = "==" if equal else "!="
        if right_constant is not None and left_constant is None:
            expected = self._helper("type_" + right_constant[0].__name__, right_constant[0])
            constant = self._literal(right_constant[1])
            left_type = self._static_type(node.left)
            if left_type is not None and left_type[0] is right_constant[0]:
                # the same type or None (which equals no constant): the interpreter's type test always passes
                return f"({self._expr(node.left)} {operator_} {constant})"
            if equal:
                return f"(type({a} := {self._expr(node.left)}) is {expected} and {a} == {constant})"
            return f"(type({a} := {self._expr(node.left)}) is not {expected} or {a} != {constant})"
        left, right = self._expr(node.left), self._expr(node.right)
        if self._same_static_type(node.left, node.right)[1]:
            return f"({left} {operator_} {right})"
        if equal:
            return f"(type({a} := {left}) is type({b} := {right}) and {a} == {b})"
        return f"(type({a} := {left}) is not type({b} := {right}) or {a} != {b})"

    def _null_test(self, node: Any, equal: bool) -> str:
        """``node == null`` (``node != null`` unless *equal*): only whether the coerced value is None matters,
        and it is None exactly when the raw value is, so the coercion runs only where it could raise."""
        if not self._has_raw_form(node):
            return f"({self._expr(node)} is {'' if equal else 'not '}None)"
        if self.trusted:  # native values coerce without raising: the raw value's None-ness is the answer
            return f"({self._expr(node, raw=True)} is {'' if equal else 'not '}None)"
        value = self._temp()
        coercible, is_null = self._helper("coercible", _COERCIBLE), self._helper("is_null", self._runtime.is_null)
        raw = self._expr(node, raw=True)
        if equal:
            return f"(({value} := {raw}) is None or (type({value}) not in {coercible} and {is_null}({value})))"
        return f"(({value} := {raw}) is not None and (type({value}) in {coercible} or not {is_null}({value})))"

    def _ordering(self, node: Any) -> str:
        self.needs_decimal_context = True  # NaN comparisons signal under the context's traps
        symbol, op = _ORDERING_OPERATORS[node.type]
        slow = self._helper("ordered_" + node.type, functools.partial(_ordered, op))
        a, b, kind = self._temp(), self._temp(), self._temp()
        right_constant = self._constant_side(node.right)
        if right_constant is not None and right_constant[0] in _ORDERED_FAST:
            expected = self._helper("type_" + right_constant[0].__name__, right_constant[0])
            constant = self._literal(right_constant[1])
            left = self._expr(node.left)
            if self._static_type(node.left) == (right_constant[0], False):
                return f"({left} {symbol} {constant})"
            return f"({a} {symbol} {constant} if type({a} := {left}) is {expected} else {slow}({a}, {constant}))"
        fast = self._helper("ordered_fast", _ORDERED_FAST)
        left, right = self._expr(node.left), self._expr(node.right)
        typed = self._typed_binary(node, symbol, _ORDERED_FAST, slow, (left, right))
        if typed is not None:
            return typed
        return (
            f"({a} {symbol} {b} if ({kind} := type({a} := {left})) is type({b} := {right})"
            f" and {kind} in {fast} else {slow}({a}, {b}))"
        )

    def _typed_binary(
        self, node: Any, symbol: str, fast: frozenset[type], slow: str, operands: tuple[str, str]
    ) -> str | None:
        """``left symbol right`` in trusted code where an operand's type is known to be one the operator takes
        as it is: plain when neither may be None, else after one test that both have that type; None otherwise."""
        both, never_null = self._same_static_type(node.left, node.right)
        if both is None or both not in fast:
            return None
        left, right = operands
        if never_null:
            return f"({left} {symbol} {right})"
        a, b, expected = self._temp(), self._temp(), self._helper("type_" + both.__name__, both)
        return f"({a} {symbol} {b} if type({a} := {left}) is type({b} := {right}) is {expected} else {slow}({a}, {b}))"

    def _regex_comparison(self, node: Any) -> str:
        method, on_match = _REGEX_OPERATORS[node.type]
        result = self._helper("regex_" + node.type, functools.partial(_regex_result, method, on_match))
        subject_check = self._helper("regex_subject", _regex_subject)
        subject = self._temp()
        left = self._expr(node.left)
        # RE2, as the rule's interpreter (rules/regex.py): installed on the node if it is not yet
        regex_engine.install(node)
        if isinstance(node.right, ast.StringExpression):
            # a literal pattern was compiled (with context.regex_flags) by RE2 when the rule was parsed
            pattern = self._constant(node._right, "pattern")
            matcher = self._constant(node._right.test(method), "matcher")
            return (
                f"({'' if on_match else 'not '}{matcher}({subject}) if type({subject} := {left}) is str"
                f" else {result}({subject_check}({subject}), {pattern}))"
            )
        regex = self._constant(functools.partial(_regex, node), "regex")
        return f"{result}({subject_check}({left}), {regex}({self._expr(node.right)}))"

    # -- arithmetic -------------------------------------------------------------------------------

    def _add(self, node: Any) -> str:
        terms = self._string_terms(node) if self.trusted else None
        if terms is not None and len(terms) > 2:
            # One string built from all the terms, rather than a new one per ``+`` (half the time at five terms):
            # rule-engine adds a string to a string as Python does.
            return f"''.join(({', '.join(self._expr(term) for term in terms)}))"
        return self._sum_like(node, "+", _ADD_FAST, _add)

    def _string_terms(self, node: Any) -> list[Any] | None:
        """The terms, in order, of a chain of ``+`` of strings none of which may be null (trusted code); None when
        *node* is not such a sum."""
        if type(node) is not ast.AddExpression or self._same_static_type(node.left, node.right) != (str, True):
            return None
        return [*(self._string_terms(node.left) or [node.left]), *(self._string_terms(node.right) or [node.right])]

    def _subtract(self, node: Any) -> str:
        return self._sum_like(node, "-", _SUB_FAST, _subtract)

    def _sum_like(self, node: Any, symbol: str, fast: frozenset[type], slow: Callable[[Any, Any], Any]) -> str:
        # both operands are evaluated before the interpreter checks their types
        self.needs_decimal_context = True
        a, b, kind = self._temp(), self._temp(), self._temp()
        fast_name, slow_name = self._helper("fast_" + slow.__name__, fast), self._helper(slow.__name__, slow)
        left, right = self._expr(node.left), self._expr(node.right)
        typed = self._typed_binary(node, symbol, fast, slow_name, (left, right))
        if typed is not None:
            return typed
        return (
            f"({a} {symbol} {b} if ({kind} := type({a} := {left})) is type({b} := {right})"
            f" and {kind} in {fast_name} else {slow_name}({a}, {b}))"
        )

    def _arithmetic(self, node: Any) -> str:
        # the left operand is checked before the right one is evaluated
        self.needs_decimal_context = True
        op = self._helper("arithmetic_" + node.type, _ARITHMETIC[node.type])
        left = self._temp()
        decimal_type = self._helper("Decimal", _Decimal)
        numeric = self._helper("numeric", _numeric)
        source = self._expr(node.left)
        if self._static_type(node.left) == (_Decimal, False):
            return f"{op}({source}, {self._expr(node.right)})"
        checked = f"({left} if type({left} := {source}) is {decimal_type} else {numeric}({left}))"
        return f"{op}({checked}, {self._expr(node.right)})"

    def _bitwise(self, node: Any) -> str:
        prepare = self._helper("bitwise_" + node.type, functools.partial(_bitwise, _BITWISE_OPERATORS[node.type]))
        return f"{prepare}({self._expr(node.left)})({self._expr(node.right)})"


class CompiledExpression:
    """A rule-engine expression compiled to Python, or the interpreter when it could not be compiled."""

    def __init__(self, text: str, context: rule_engine.Context, rule: rule_engine.Rule) -> None:
        self.text = text
        self.context = context
        self.rule = rule
        self.result_type: Any = rule.statement.expression.result_type
        self.is_compiled = False
        self.fallback_reason: str | None = None
        self.source: str | None = None
        self.evaluate: Callable[[Any], Any] = rule.evaluate
        """The value of the expression for a thing, exactly as ``rule.evaluate(thing)``."""
        namespace: dict[str, Any] = {}
        codegen = ExpressionCodegen(context, namespace)
        try:
            body = codegen.fragment(rule.statement.expression)
        except NotCompilableError as error:
            self.fallback_reason = str(error)
            return
        source = codegen.function_source("evaluate", body)
        try:
            code = compile(source, f"<rule {text!r}>", "exec")
        except (SyntaxError, RecursionError, MemoryError):
            self.fallback_reason = "expression nests too deeply for the Python compiler"
            return
        self.source = source
        exec(code, namespace)
        self.evaluate = namespace["evaluate"]
        self.is_compiled = True

    def __repr__(self) -> str:
        return f"<CompiledExpression {self.text!r} compiled={self.is_compiled}>"

    def matches(self, thing: Any) -> bool:
        return bool(self.evaluate(thing))


def compile_expression(text: str, context: rule_engine.Context | None = None) -> CompiledExpression:
    """Parse and type-check *text* with rule-engine, then compile it (or fall back to the interpreter).

    Parse and type errors propagate as rule-engine raises them, and a literal regex RE2 cannot take as a
    RegexSyntaxError (rules/regex.py).
    """
    context = context or rule_engine.Context()
    rule = rule_engine.Rule(text, context)
    if "~" in text:  # =~ and friends by RE2, in the interpreter and the generated code alike (none without a ~)
        regex_engine.use_re2(rule.statement)
    return CompiledExpression(text, context, rule)
