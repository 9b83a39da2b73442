"""Which records differ between two snapshots: keys added, removed, or with any version changed."""

from __future__ import annotations

from dataclasses import dataclass

from .snapshot import ReferenceSnapshot


@dataclass(frozen=True, slots=True)
class EntityDiff:
    entity: str
    added: list[str]
    removed: list[str]
    changed: list[str]


def _label(key: tuple[object, ...]) -> str:
    return "/".join(map(str, key))


def diff_snapshots(before: ReferenceSnapshot, after: ReferenceSnapshot) -> list[EntityDiff]:
    """Per entity with any difference, the keys added, removed and changed, each sorted."""
    diffs = []
    for name in sorted(set(before.tables) | set(after.tables)):
        if name in before.digests and before.digests.get(name) == after.digests.get(name):
            continue  # same content hash: nothing to compare row by row
        old = before.tables[name].by_key if name in before.tables else {}
        new = after.tables[name].by_key if name in after.tables else {}
        added = sorted(_label(k) for k in new.keys() - old.keys())
        removed = sorted(_label(k) for k in old.keys() - new.keys())
        changed = sorted(_label(k) for k in old.keys() & new.keys() if old[k] != new[k])
        if added or removed or changed:
            diffs.append(EntityDiff(name, added, removed, changed))
    return diffs
