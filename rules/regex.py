"""rule-engine's regex operators (``=~``, ``=~~``, ``!~``, ``!~~``) run by RE2: linear in the text, whatever the
pattern.

rule-engine runs them with Python's ``re``, which backtracks: ``entry_id =~ '(a+)+$'`` took 7 s on 28 characters,
doubling per character, stalling the process. RE2 (google-re2) matches in time linear in the text and refuses what
cannot be matched so (backreferences, lookaround, atomic groups and possessive quantifiers, repetitions over
1,000), so the refusal comes at load, saying why.

rule-engine has no hook for its regex engine, so :func:`use_re2` installs RE2 on the regex nodes of a parsed rule,
in place: a literal pattern is compiled by RE2 when the ruleset loads (refused there with file, line and rule id),
a pattern computed from the item when the rule runs (refused then: the item is rejected naming the rule). The
rule's interpreter (``Rule.evaluate``) and the code generated from the rule (rules/codegen/expressions.py) then both
match with RE2, so they agree on every pattern, and neither ever backtracks.

Semantics are RE2's, where they differ from Python's (docs/rulesets.md, Gotchas): ``\\d``, ``\\w``, ``\\s`` and
``\\b`` are ASCII, and ``$`` matches only at the very end of the text (Python's also before a final newline).
Python's ``\\Z`` is RE2's ``\\z`` and is translated.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import re2
from rule_engine import ast, errors

WHY = ("RE2 matches in time linear in the text, and so has no backreferences, lookaround, atomic groups or "
       "possessive quantifiers, and repeats at most 1,000 times")

_ANCHOR_START = re2._Anchor.ANCHOR_START
_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = -1


def _options(flags: int, *, capture: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # refusals are reported as problems, not logged to stderr by the C++ library
    options.case_sensitive = not flags & re.IGNORECASE
    options.dot_nl = bool(flags & re.DOTALL)
    options.never_capture = not capture
    return options


# Python's flags RE2 can honour (re.UNICODE is a str pattern's default; re.ASCII is what RE2's classes are anyway).
_SUPPORTED_FLAGS = re.IGNORECASE | re.DOTALL | re.MULTILINE | re.UNICODE | re.ASCII


def _translate(pattern: str) -> str:
    """Python's spelling of what RE2 spells differently: ``\\Z`` (the very end) is RE2's ``\\z``."""
    if "\\Z" not in pattern:
        return pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append("\\z" if pattern[i + 1] == "Z" else pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


class Re2Pattern:
    """A pattern compiled by RE2, with what rule-engine calls on a ``re.Pattern``: ``match`` and ``search``
    (their match objects have ``groups()``, for ``$re_groups``), and ``test``, a plain bool for generated code."""

    __slots__ = ("_capturing", "_regexp", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        if flags & ~_SUPPORTED_FLAGS:
            message = f"regex flags {flags!r} are not supported with RE2"
            raise errors.RegexSyntaxError(message, error=None, value=pattern)
        translated = ("(?m)" if flags & re.MULTILINE else "") + _translate(pattern)
        self.pattern = pattern
        try:
            self._capturing = re2.compile(translated, _options(flags, capture=True))
            # without captures, for a yes or no: what generated code asks
            self._regexp = re2.compile(translated, _options(flags, capture=False))._regexp
        except re2.error as error:
            why = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) \
                else str(error)
            raise errors.RegexSyntaxError(
                f"the pattern {pattern!r} cannot be run by RE2 ({why}); {WHY}", error=None, value=pattern) from None

    def match(self, text: str) -> Any:
        return self._capturing.match(text)

    def search(self, text: str) -> Any:
        return self._capturing.search(text)

    def test(self, method: str) -> Callable[[str], bool]:
        """Whether ``method`` (``match`` or ``search``) finds the pattern in a string, as a bool."""
        anchor = _ANCHOR_START if method == "match" else _UNANCHORED
        match = self._regexp.Match

        def test(text: str) -> bool:
            encoded = text.encode("utf-8")
            return bool(match(anchor, encoded, 0, len(encoded))[0][0] != _NO_MATCH)

        return test

    def __repr__(self) -> str:
        return f"Re2Pattern({self.pattern!r})"


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str, flags: int = 0) -> Re2Pattern:
    """The RE2 pattern (cached: a pattern computed from items recurs); RegexSyntaxError when RE2 cannot take it."""
    return Re2Pattern(pattern, flags)


_SLOTS: dict[type, tuple[str, ...]] = {}


def _slots(node_type: type) -> tuple[str, ...]:
    """The slots of a node type, its own and inherited, but its context."""
    slots = _SLOTS.get(node_type)
    if slots is None:
        names = {name for cls in node_type.__mro__ for name in getattr(cls, "__slots__", ())}
        slots = _SLOTS[node_type] = tuple(sorted(names - {"context"}))
    return slots


def _nodes(root: Any) -> Iterator[Any]:
    """Every expression node under ``root`` (rule-engine's nodes keep their children in slots and attributes)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        values = [getattr(node, name, None) for name in _slots(type(node))]
        values += [value for name, value in getattr(node, "__dict__", {}).items() if name != "context"]
        while values:
            value = values.pop()
            if isinstance(value, ast.ExpressionBase):
                stack.append(value)
            elif isinstance(value, (tuple, list)):
                values.extend(value)


def install(node: Any) -> None:
    """Make one ``FuzzyComparisonExpression`` match with RE2 (idempotent); RegexSyntaxError for a literal
    pattern RE2 cannot take."""
    if isinstance(getattr(node, "_right", None), Re2Pattern):
        return
    flags = node.context.regex_flags
    node._compile_regex = functools.partial(compile_pattern, flags=flags)
    if isinstance(node.right, ast.StringExpression):
        node._right = compile_pattern(node.right.value, flags)


def use_re2(statement: Any) -> None:
    """Install RE2 on every regex node of a parsed rule (``rule.statement``)."""
    for node in _nodes(statement):
        if isinstance(node, ast.FuzzyComparisonExpression):
            install(node)
