"""Read YAML while remembering where each value came from, so every error can name its line.

Mappings load as :class:`LineDict` and sequences as :class:`LineList`; both are ordinary dict and
list subclasses that also know the line of each key or element. Numbers with a fraction load as
``Decimal`` from the text as written: ``1.1`` in a ruleset means exactly 1.1, never a binary float.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import yaml


class LineDict(dict[Any, Any]):
    line: int
    key_lines: dict[Any, int]


class LineList(list[Any]):
    line: int
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    def construct_yaml_map(self, node: yaml.MappingNode) -> Any:
        data = LineDict()
        data.line = node.start_mark.line + 1
        data.key_lines = {}
        yield data
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
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


def load(text: str) -> Any:
    """Parse one YAML document; raises yaml.YAMLError (with its mark) on a syntax error."""
    return yaml.load(text, Loader=_Loader)


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
