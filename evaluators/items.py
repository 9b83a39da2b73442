"""Items as they arrive (wire strings) turned into rule values, with a problem per malformed field.

A malformed item is not an error of the batch: it is decided like any other item, rejected with a
reason naming each bad field, while the rest of the batch is decided normally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.decisions import Reason
from rules.model import Severity
from rules.schema import FieldKind, FieldValueError, ItemKind

SCHEMA_RULE = "SCHEMA"


@dataclass(slots=True)
class DecodedItem:
    item_id: str
    values: dict[str, Any]
    problems: list[Reason]


def _problem(code: str, field: str, message: str) -> Reason:
    return Reason(SCHEMA_RULE, code, message, Severity.ERROR, field)


class ItemDecoder:
    """Decodes items of one kind; what depends only on the kind is worked out once, here."""

    def __init__(self, kind: ItemKind) -> None:
        self.kind = kind
        self.fields = tuple(kind.fields.values())
        self.required = kind.required
        self.defaults = kind.defaults()
        self.names = frozenset(kind.fields)

    def decode(self, raw: Mapping[str, Any], position: int) -> DecodedItem:
        """Decode one item from wire values (strings; a mapping for custom attributes).

        ``position`` (1-based) names the item when its id is missing.
        """
        values: dict[str, Any] = {}
        problems: list[Reason] = []
        for spec in self.fields:
            name = spec.name
            raw_value = raw.get(name)
            if spec.kind is FieldKind.STRING_MAP:
                values[name] = {str(k): str(v) for k, v in (raw_value or {}).items()}
                continue
            text = "" if raw_value is None else str(raw_value)
            try:
                value = spec.parse(text)
            except FieldValueError as error:
                problems.append(_problem("INVALID_FIELD", name, f"{name}: {error}"))
                values[name] = None
                continue
            if value is None:
                if name in self.required:
                    problems.append(_problem("MISSING_FIELD", name, f"{name} is required and was not given"))
                value = self.defaults.get(name)
            values[name] = value
        for name in sorted(set(raw) - self.names):
            message = f"{name} is not a {self.kind.name} field (check the spelling)"
            problems.append(_problem("UNKNOWN_FIELD", name, message))
        item_id = values.get(self.kind.id_field) or f"(item {position})"
        return DecodedItem(str(item_id), values, problems)
