"""The three patch formats of the Kubernetes API. Pure.

- JSON merge patch (RFC 7386): objects merge, ``null`` deletes, everything else
  replaces (lists included).
- JSON patch (RFC 6902): add, remove, replace, move, copy, test; a failed test
  or a bad path raises ``PatchError`` (the server answers 422).
- Strategic merge patch, for built-in kinds only: like a merge patch, but lists
  whose items have a merge key (containers by name, conditions by type,
  ownerReferences by uid, ...) merge item by item, and the directives
  ``$patch``, ``$setElementOrder/...``, ``$retainKeys`` and
  ``$deleteFromPrimitiveList/...`` are honoured.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(document: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(document, dict):
            if part not in document:
                raise PatchError(f"path component {part!r} does not exist")
            document = document[part]
        elif isinstance(document, list):
            document = document[_index(document, part, allow_end=False)]
        else:
            raise PatchError(f"cannot descend into {type(document).__name__} at {part!r}")
    return document


def _index(items: list[Any], part: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(items)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r}")
    index = int(part)
    if index > len(items) or (index == len(items) and not allow_end):
        raise PatchError(f"array index {index} out of range")
    return index


def _add(document: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(document, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to {type(parent).__name__}")
    return document


def _remove(document: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(document, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"cannot remove {last!r}: it does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"cannot remove from {type(parent).__name__}")


def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    document = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid operation {operation!r}")
        op, parts = operation["op"], _pointer(operation["path"])
        if op == "add":
            document = _add(document, parts, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            _remove(document, parts)
        elif op == "replace":
            _walk(document, parts)  # must exist
            if parts:
                _remove(document, parts)
            document = _add(document, parts, copy.deepcopy(operation.get("value")))
        elif op in {"move", "copy"}:
            source = _pointer(operation.get("from", ""))
            value = copy.deepcopy(_walk(document, source))
            if op == "move":
                _remove(document, source)
            document = _add(document, parts, value)
        elif op == "test":
            if _walk(document, parts) != operation.get("value"):
                raise PatchError(f"test operation failed at {operation['path']!r}")
        else:
            raise PatchError(f"unknown operation {op!r}")
    return document


# field name -> merge key, for the lists built-in kinds merge item by item
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "tolerations": "key",
    "containerStatuses": "name",
    "addresses": "type",
}
PRIMITIVE_SETS = {"finalizers"}


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in {"$retainKeys", "$patch"}:
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif (
            isinstance(value, list) and key in PRIMITIVE_SETS and isinstance(result.get(key), list)
        ):
            result[key] = list(dict.fromkeys([*result[key], *value]))
        else:
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        position = next(
            (
                i
                for i, existing in enumerate(out)
                if isinstance(existing, dict) and existing.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                out.pop(position)
        elif position is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[position] = strategic_merge_patch(out[position], item)
    return out
