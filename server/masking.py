"""Masking personal fields in exports and logs: each value replaced by a keyed HMAC-SHA256 token.

The same value always gives the same token under one key (exports can still be joined and counted on it),
and without the key a token tells nothing about the value. The policy is the setting ``masked_fields``:
item fields (by default an expense line's ``purpose`` and ``attendees``) and custom attributes
(``custom.NAME``, from any item's ``custom`` map). The key is the file ``masking_key_file`` (readable by its
owner only) or the setting ``masking_key``; it never leaves the server. The ledger itself keeps inputs whole.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tollgate.rules.item_kinds import ITEM_KINDS
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server.settings import Settings

TOKEN_PREFIX = "hmac:"
TOKEN_HEX_DIGITS = 16
CUSTOM_PREFIX = "custom."
HEADER_KEY = "invoice"  # an invoice line's recorded input carries its invoice header under this key
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
WITHHELD = "[masked]"  # a masked field in a log line when no key is configured
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ITEM_FIELDS = frozenset(name for kind in ITEM_KINDS.values() for name in kind.fields)


@dataclass(frozen=True, slots=True)
class MaskingPolicy:
    fields: frozenset[str]  # item fields, masked wherever an item carries them
    custom: frozenset[str]  # custom attributes, masked in any item's custom map
    key: bytes | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self.fields) + sorted(CUSTOM_PREFIX + name for name in self.custom)

    @property
    def masks_nothing(self) -> bool:
        return not self.fields and not self.custom

    def token(self, value: Any) -> Any:
        """``value`` masked: a string as its token, a list element by element; WITHHELD without a key."""
        if isinstance(value, list):
            return [self.token(v) for v in value]
        if isinstance(value, Mapping):
            return {k: self.token(v) for k, v in value.items()}
        if self.key is None:
            return WITHHELD
        digest = hmac.new(self.key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + digest[:TOKEN_HEX_DIGITS]

    def item(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A recorded input with the masked fields masked (an invoice line's header too)."""
        masked: dict[str, Any] = {}
        for name, value in fields.items():
            if name in self.fields:
                masked[name] = self.token(value)
            elif name == "custom" and isinstance(value, Mapping):
                masked[name] = {k: self.token(v) if k in self.custom else v for k, v in value.items()}
            elif name == HEADER_KEY and isinstance(value, Mapping):
                masked[name] = self.item(value)
            else:
                masked[name] = value
        return masked

    def enrichments(self, enrichments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Enrichments of a masked field with their old and new values masked."""
        names = self.fields | {CUSTOM_PREFIX + name for name in self.custom}
        return [{**e, "old_value": self.token(e["old_value"]) if e["old_value"] is not None else None,
                 "new_value": self.token(e["new_value"]) if e["new_value"] is not None else None}
                if e.get("field") in names else e for e in enrichments]

    def event(self, value: Any) -> Any:
        """A log event (or any part of one) with every masked field name's value masked, at any depth."""
        if isinstance(value, Mapping):
            return {k: self.token(v) if (k in self.fields or k in self.custom) and v is not None else self.event(v)
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.event(v) for v in value]
        return value


def parse_masked_fields(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """``masked_fields`` as (item fields, custom attributes); ProblemsError naming the setting for a name that is
    neither (a typo would leave the field it meant in clear)."""
    fields: set[str] = set()
    custom: set[str] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name.startswith(CUSTOM_PREFIX):
            attribute = name[len(CUSTOM_PREFIX):]
            if not _CUSTOM_NAME.fullmatch(attribute):
                raise ProblemsError([Problem("masked_fields", None, name[:80],
                                             "a custom attribute is named custom.NAME, NAME of 1 to 128 letters, "
                                             "digits and _.:-")])
            custom.add(attribute)
        elif name in _ITEM_FIELDS:
            fields.add(name)
        else:
            raise ProblemsError([Problem("masked_fields", None, name[:80],
                                         "is not a field of any item kind (a custom attribute is custom.NAME); "
                                         "see docs/item-kinds.md")])
    return frozenset(fields), frozenset(custom)


def _key_from_file(path: Path) -> bytes:
    def refused(message: str) -> ProblemsError:
        return ProblemsError([Problem("masking_key_file", None, str(path), message)])

    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise refused("is not a file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise refused(f"may be read by group or others (mode {stat.S_IMODE(mode):o}): the key would let them "
                          "tell masked values; chmod 600 it")
        with path.open("rb") as handle:
            key = handle.read(MAX_KEY_BYTES + 1).strip()
    except OSError as error:
        raise refused(f"cannot be read: {error.strerror or error}") from None
    if len(key) > MAX_KEY_BYTES:
        raise refused(f"is larger than {MAX_KEY_BYTES} bytes: not a key")
    if len(key) < MIN_KEY_BYTES:
        raise refused(f"holds {len(key)} bytes; a masking key is at least {MIN_KEY_BYTES} (e.g. `openssl rand "
                      "-hex 32`)")
    return key


def masking_policy(settings: Settings) -> MaskingPolicy:
    """The policy and key of ``settings``; ProblemsError naming the setting (the start is refused)."""
    fields, custom = parse_masked_fields(settings.masked_fields)
    key: bytes | None = None
    if settings.masking_key_file is not None and settings.masking_key is not None:
        raise ProblemsError([Problem("masking_key", None, None, "give the masking key as masking_key_file or as "
                                     "masking_key, not both")])
    if settings.masking_key_file is not None:
        key = _key_from_file(settings.masking_key_file)
    elif settings.masking_key is not None:
        key = settings.masking_key.encode("utf-8")
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ProblemsError([Problem("masking_key", None, None, f"a masking key is {MIN_KEY_BYTES} to "
                                         f"{MAX_KEY_BYTES} bytes (it has {len(key)})")])
    return MaskingPolicy(fields, custom, key)
