"""Read YAML while remembering where each value came from, so every error can name its line.

Mappings load as :class:`LineDict` and sequences as :class:`LineList`; both are ordinary dict and
list subclasses that also know the line of each key or element. Numbers with a fraction load as
``Decimal`` from the text as written: ``1.1`` in a ruleset means exactly 1.1, never a binary float.

A ruleset is written by a person, but read by the service: hostile or broken input must cost a
refusal naming a line, never hours of work or a traceback. So nesting is limited to
:data:`MAX_DEPTH` levels (counted as the structure reads once its aliases are expanded), and the
values aliases repeat to :data:`MAX_ALIAS_EXPANSION` in all, checked on the composed nodes before
anything is constructed (a "billion laughs" file is a few hundred bytes that expand to 10**9
values). Plain aliases of small things stay allowed: the shipped rulesets use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from tollgate.rules.problems import Problem, ProblemsError

# How deeply mappings and lists may nest (the deepest shipped ruleset nests 7 levels).
MAX_DEPTH = 64
# How many values aliases may repeat, over the whole file (each alias counts every value of what it repeats;
# the shipped rulesets repeat 1 between them).
MAX_ALIAS_EXPANSION = 10_000


class LimitError(yaml.MarkedYAMLError):
    """A document past one of the limits above; ``problem_mark`` is where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class LineDict(dict[Any, Any]):
    line: int
    key_lines: dict[Any, int]


class LineList(list[Any]):
    line: int
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    _depth = 0
    _anchored = False  # whether the document has anchors, hence maybe aliases

    # PyYAML composes recursively: refuse a deep document before Python's own stack does (a RecursionError).
    # Only mappings and lists nest, so only they are counted (a scalar costs nothing more).
    def compose_sequence_node(self, anchor: Any) -> Any:
        return self._nested(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor: Any) -> Any:
        return self._nested(super().compose_mapping_node, anchor)

    def _nested(self, compose: Any, anchor: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LimitError(f"nests deeper than {MAX_DEPTH} levels", mark)
            return compose(anchor)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        # PyYAML's, remembering whether there were anchors before it forgets them
        self.get_event()  # type: ignore[no-untyped-call]
        node = self.compose_node(None, None)  # type: ignore[arg-type]
        self.get_event()  # type: ignore[no-untyped-call]
        self._anchored = bool(self.anchors)
        self.anchors = {}
        return node

    def construct_document(self, node: Any) -> Any:
        if self._anchored:  # without anchors there are no aliases: nothing repeats, nothing nests deeper
            _check_expansion(node)
        return super().construct_document(node)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as error:  # e.g. !!timestamp 2026-13-45
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value: {error}",
                                                    node.start_mark) from None

    def construct_yaml_map(self, node: yaml.MappingNode) -> Any:
        data = LineDict()
        data.line = node.start_mark.line + 1
        data.key_lines = {}
        yield data
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a mapping or list", key_node.start_mark) from None
            if key in data:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {data.key_lines[key]})", key_node.start_mark
                )
            data[key] = self.construct_object(value_node, deep=True)
            data.key_lines[key] = key_node.start_mark.line + 1

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Any:
        data = LineList()
        data.line = node.start_mark.line + 1
        data.item_lines = [child.start_mark.line + 1 for child in node.value]
        yield data
        data.extend(self.construct_object(child, deep=True) for child in node.value)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        text = str(self.construct_scalar(node)).replace("_", "")
        try:
            return Decimal(text)
        except ArithmeticError:  # .inf / .nan spellings: let YAML decide
            return super().construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse, before constructing anything, a document whose aliases repeat more than MAX_ALIAS_EXPANSION
    values, that nests deeper than MAX_DEPTH once expanded, or whose alias refers to a node it is inside.

    Sizes and depths are worked out once per node (an alias is the very node it names), so this is linear in
    the file even when the expansion is exponential.
    """
    size: dict[int, int] = {}  # node -> how many values it stands for, expanded
    depth: dict[int, int] = {}
    visits = 0  # values the document holds as written, each counted once
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = (0 if isinstance(node, yaml.ScalarNode) else 1) + max(
                (depth[id(child)] for child in children), default=0)
            if depth[key] > MAX_DEPTH:
                raise LimitError(f"nests deeper than {MAX_DEPTH} levels once its aliases are expanded",
                                 node.start_mark)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise LimitError("an alias refers to a node it is inside (a structure containing itself)", node.start_mark)
        visits += 1
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)
        for child in children:
            if id(child) in open_nodes:
                raise LimitError("an alias refers to a node it is inside (a structure containing itself)",
                                 child.start_mark)
    repeated = size[id(root)] - len(size)
    if repeated > MAX_ALIAS_EXPANSION:
        raise LimitError(f"its aliases repeat {repeated:,} values; at most {MAX_ALIAS_EXPANSION:,} are allowed "
                         "(write the values out, or alias smaller parts)", None)  # load() points at the first alias


def load(text: str) -> Any:
    """Parse one YAML document; raises yaml.YAMLError (with its mark) on a syntax error or past a limit."""
    try:
        return yaml.load(text, Loader=_Loader)
    except LimitError as error:
        if error.problem_mark is None:  # aliases repeat too much: point at the first (found again only now)
            marks: Any = (event.start_mark for event in yaml.parse(text, Loader=yaml.SafeLoader)
                          if isinstance(event, yaml.AliasEvent))
            error.problem_mark = next(marks, None)
        raise


def line_of(document: Any, path: Sequence[Any]) -> int | None:
    """The line of the deepest node on ``path`` (keys and list indexes) that the document has."""
    line: int | None = getattr(document, "line", None)
    node = document
    for step in path:
        if isinstance(node, LineDict) and step in node:
            line = node.key_lines.get(step, line)
            node = node[step]
        elif isinstance(node, LineList) and isinstance(step, int) and 0 <= step < len(node):
            line = node.item_lines[step]
            node = node[step]
        else:
            break
    return line


def read_file(path: Path, max_bytes: int, what: str, hint: str) -> tuple[Any, str]:
    """Read and parse one YAML file of at most ``max_bytes``: (the document, the text it was parsed from); raise
    ProblemsError naming the file and line.

    ``what`` names the file's kind in messages ("ruleset"), ``hint`` what to do with a file too large."""
    name = str(path)
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # never more: a 50 MB file is refused without reading it all
        if len(data) > max_bytes:
            passing = data.count(b"\n", 0, max_bytes) + 1
            raise ProblemsError([Problem(
                name, passing, None, f"the file is larger than {max_bytes // 1024} KiB, the most a {what} "
                f"may be (it passes the limit on this line); {hint}")])
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProblemsError([Problem(name, None, None, f"cannot read {what}: {error}")]) from None
    return parse(name, text, what), text


def parse(name: str, text: str, what: str) -> Any:
    """Parse the text of ``name``; raise ProblemsError naming its line (a syntax error, a limit passed)."""
    try:
        return load(text)
    except LimitError as error:
        where = error.problem_mark
        problem = Problem(name, where.line + 1 if where else None, None, f"YAML: {error.problem}")
        raise ProblemsError([problem]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark else None
        raise ProblemsError([Problem(name, line, None, f"YAML syntax: {error.problem}")]) from None
    except yaml.YAMLError as error:
        raise ProblemsError([Problem(name, None, None, f"cannot read {what}: {error}")]) from None


def validation_problem(path: str, document: Any, error: Any, named_lists: Sequence[str]) -> Problem:
    """A problem for one of pydantic's ``error.errors()`` on ``document``, at the line of the value it is about.

    An entry of a list in ``named_lists`` is named by its ``id`` or ``name`` (the rule, the identity)."""
    loc = tuple(error["loc"])
    subject = None
    if len(loc) >= 2 and loc[0] in named_lists and isinstance(loc[1], int):
        entries = document.get(loc[0]) if isinstance(document, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        if isinstance(entry, dict):
            subject = str(entry.get("id") or entry.get("name") or "") or None
    field = ".".join(str(part) for part in loc)
    message = error["msg"]
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known key here (check the spelling)"
    return Problem(path, line_of(document, loc), subject, f"{field}: {message}")
