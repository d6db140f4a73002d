"""Table output (meta.k8s.io/v1 Table) and the JSONPath of printer columns.

``kubectl get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io``; the
server answers with column definitions and one row per object. For a CRD the
columns are Name, then its additionalPrinterColumns (JSONPath evaluated here,
``date`` columns rendered as ages as the API server does); built-in kinds get
Name and Age. The JSONPath subset is Kubernetes': ``.a.b``, ``.a[0]``,
``.a[*].b`` and filters ``.a[?(@.type=="Ready")].status``.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value the path selects (empty when nothing matches)."""
    values = [obj]
    position = 0
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {position}")
        position = match.end()
        name, index, filter_field, filter_value = match.groups()
        next_values: list[Any] = []
        for value in values:
            if name is not None and isinstance(value, dict) and name in value:
                next_values.append(value[name])
            elif index is not None and isinstance(value, list):
                if index == "*":
                    next_values.extend(value)
                elif int(index) < len(value):
                    next_values.append(value[int(index)])
            elif filter_field is not None and isinstance(value, list):
                for item in value:
                    found = jsonpath(item, "." + filter_field)
                    if found and str(found[0]) == filter_value:
                        next_values.append(item)
        values = next_values
    return values


def age(timestamp: str, now: datetime.datetime | None = None) -> str:
    """kubectl's HumanDuration of the time since ``timestamp``."""
    try:  # RFC 3339, as metav1.Time is (with or without fractions and offsets)
        then = datetime.datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return "<invalid>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _involved(obj: dict[str, Any]) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _last_seen(obj: dict[str, Any]) -> str:
    stamp = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or obj.get("firstTimestamp")
        or obj["metadata"].get("creationTimestamp", "")
    )
    return age(stamp) if stamp else "<unknown>"


# Built-in kinds whose table the API server prints with more than Name and Age.
BUILTIN_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "events": [
        {"name": "Last Seen", "type": "string", "compute": _last_seen},
        {"name": "Type", "type": "string", "jsonPath": ".type"},
        {"name": "Reason", "type": "string", "jsonPath": ".reason"},
        {"name": "Object", "type": "string", "compute": _involved},
        {"name": "Message", "type": "string", "jsonPath": ".message"},
    ],
}


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    if "compute" in column:
        return column["compute"](obj)
    try:
        found = jsonpath(obj, column["jsonPath"])
    except ValueError:
        return None
    if not found:
        return None
    value = found[0] if len(found) == 1 else ",".join(str(v) for v in found)
    if column.get("type") == "date" and isinstance(value, str):
        return age(value)
    if column.get("type") == "integer" and isinstance(value, int | float):
        return int(value)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value)
    return value


def table(
    objects: list[dict[str, Any]],
    columns: list[dict[str, Any]] | None,
    *,
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    columns = columns if columns else [AGE_COLUMN]
    name_first = columns[0].get("name") != "Last Seen"  # events: Name is a wide column
    definitions = [{**NAME_COLUMN, "priority": 0 if name_first else 1}] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {
            "cells": [obj["metadata"]["name"], *(_cell(obj, c) for c in columns)]
        }
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
