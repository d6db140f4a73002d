"""Server-side apply: field ownership, conflicts, and merging an applied configuration.

A simplified but faithful model of structured-merge-diff for the shapes weir
uses: every leaf (scalars, and lists, which are atomic here) of an applied
configuration is owned by its field manager. Applying again with fewer fields
removes the fields only that manager owned. A field another manager owns with
a different value is a conflict (409) unless ``force=true``, which transfers
ownership. Non-apply writes are recorded as ``Update`` operations owning the
leaves they changed. ``managedFields`` are stored in the FieldsV1 format
(``{"f:spec": {"f:replicas": {}}}``).
"""

from __future__ import annotations

import copy
from typing import Any

Path = tuple[str, ...]
IGNORED: set[Path] = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "managedFields"),
    ("metadata", "uid"),
    ("metadata", "creationTimestamp"),
    ("metadata", "generation"),
}


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf path of an object with its value (lists are leaves)."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            out.update(leaves(value, (*prefix, key)))
    elif prefix and prefix not in IGNORED:
        out[prefix] = obj
    return {p: v for p, v in out.items() if p not in IGNORED}


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


_MISSING = object()


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = copy.deepcopy(value)


def _delete(obj: dict[str, Any], path: Path) -> None:
    parents = []
    for key in path[:-1]:
        if not isinstance(obj, dict) or key not in obj:
            return
        parents.append((obj, key))
        obj = obj[key]
    if isinstance(obj, dict):
        obj.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop emptied maps
        if parent[key] == {}:
            del parent[key]


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        out |= from_fields_v1(child, path) if child else {path}
    return out


def owners(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj.get("metadata", {}).get("managedFields") or [])


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        text = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
        super().__init__(
            f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: {text}"
        )


def apply(
    current: dict[str, Any] | None,
    applied: dict[str, Any],
    *,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``current`` (None: create)."""
    base = copy.deepcopy(current) if current is not None else {"metadata": {}}
    entries = owners(base)
    applied_leaves = leaves(applied)
    mine = next((e for e in entries if e["manager"] == manager and e["operation"] == "Apply"), None)
    previously = from_fields_v1(mine["fieldsV1"]) if mine else set()
    conflicts: list[tuple[str, Path]] = []
    others = [e for e in entries if e is not mine]
    for path, value in applied_leaves.items():
        present = _get(base, path)
        if present is _MISSING or present == value:
            continue
        for entry in others:
            if path in from_fields_v1(entry.get("fieldsV1", {})):
                conflicts.append((entry["manager"], path))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    owned_by_others = (
        set().union(*(from_fields_v1(e.get("fieldsV1", {})) for e in others)) if others else set()
    )
    for path in previously - set(applied_leaves) - owned_by_others:
        _delete(base, path)
    for path, value in applied_leaves.items():
        _set(base, path, value)
    updated_entries = []
    for entry in others:
        remaining = (
            from_fields_v1(entry.get("fieldsV1", {})) - set(applied_leaves)
            if force
            else from_fields_v1(entry.get("fieldsV1", {}))
        )
        if remaining:
            updated_entries.append(entry | {"fieldsV1": to_fields_v1(remaining)})
    unchanged = mine is not None and previously == set(applied_leaves)
    updated_entries.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": mine["time"] if unchanged and mine is not None else now,  # a no-op keeps it
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(set(applied_leaves)),
        }
    )
    base.setdefault("metadata", {})["managedFields"] = updated_entries
    for key in ("apiVersion", "kind"):
        if key in applied:
            base[key] = applied[key]
    base["metadata"].setdefault("name", applied.get("metadata", {}).get("name"))
    return base


def record_update(
    before: dict[str, Any] | None,
    after: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    now: str,
) -> dict[str, Any]:
    """Attribute the leaves a non-apply write changed to ``manager`` (operation Update)."""
    old = leaves(before or {})
    changed = {p for p, v in leaves(after).items() if old.get(p, _MISSING) != v}
    if not changed:
        return after
    entries = []
    for entry in owners(before or {}):
        if entry["manager"] == manager and entry["operation"] == "Update":
            changed |= from_fields_v1(entry.get("fieldsV1", {}))
            continue
        remaining = from_fields_v1(entry.get("fieldsV1", {})) - changed
        if remaining:
            entries.append(entry | {"fieldsV1": to_fields_v1(remaining)})
    entries.append(
        {
            "manager": manager,
            "operation": "Update",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(changed),
        }
    )
    after = copy.deepcopy(after)
    after.setdefault("metadata", {})["managedFields"] = entries
    return after
