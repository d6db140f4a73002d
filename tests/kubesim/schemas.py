"""What the API server does to a custom resource before storing it:
defaulting, pruning unknown fields, structural-schema validation and CEL rules.

Follows apiextensions-apiserver: defaults apply first (only where the field is
absent), then unknown fields are pruned (or, with ``fieldValidation=Strict``,
refused with 400), then the object is validated against the schema (types,
enums, bounds, patterns, required) and the ``x-kubernetes-validations`` CEL
rules (evaluated with cel-python); every violation becomes a cause of one 422.
"""

from __future__ import annotations

import re
from typing import Any

from kube_schema import apply_defaults, cel_failures

TOP_LEVEL = {"apiVersion", "kind", "metadata"}


def prune(schema: dict[str, Any], value: Any, path: str = "") -> tuple[Any, list[str]]:
    """Drop fields the schema does not declare; returns (pruned, dropped paths)."""
    dropped: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return value, dropped
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if path == "" and key in TOP_LEVEL:
                out[key] = item
            elif properties is not None and key in properties:
                out[key], more = prune(properties[key], item, f"{path}.{key}" if path else key)
                dropped += more
            elif isinstance(additional, dict):
                out[key], more = prune(additional, item, f"{path}.{key}" if path else key)
                dropped += more
            elif properties is None and additional is None:
                out[key] = item  # a bare object (e.g. metadata) keeps what it has
            else:
                dropped.append(f"{path}.{key}" if path else key)
        return out, dropped
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        out_list = []
        for index, item in enumerate(value):
            pruned, more = prune(schema["items"], item, f"{path}[{index}]")
            out_list.append(pruned)
            dropped += more
        return out_list, dropped
    return value, dropped


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[tuple[str, str]]:
    """(field, message) for every violation, as the API server's causes."""
    where = path or "<root>"
    kind = schema.get("type")
    errors: list[tuple[str, str]] = []
    if value is None:
        return (
            [] if schema.get("nullable") else [(where, 'Invalid value: "null": must not be null')]
        )
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [
                (
                    where,
                    f'Invalid value: "{_type(value)}": {where} in body must be of type integer: "{_type(value)}"',
                )
            ]
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [(where, f'{where} in body must be of type number: "{_type(value)}"')]
    elif kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [
            (
                where,
                f'Invalid value: "{_type(value)}": {where} in body must be of type {kind}: "{_type(value)}"',
            )
        ]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{v}"' for v in schema["enum"])
        errors.append((where, f"Unsupported value: {value!r}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be greater than or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be less than or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append((where, f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {value!r}: {where} in body should be at least {schema['minLength']} chars long",
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                (
                    where,
                    f"Invalid value: {value!r}: {where} in body should match '{schema['pattern']}'",
                )
            )
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                (where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                (
                    where,
                    f"Invalid value: {len(value)}: {where} in body should have at least {schema['minItems']} items",
                )
            )
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                errors += validate(schema["items"], item, f"{path}[{index}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append((f"{path}.{name}" if path else name, "Required value"))
        for name, item in value.items():
            sub = schema.get("properties", {}).get(name)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None and not (path == "" and name == "metadata"):
                errors += validate(sub, item, f"{path}.{name}" if path else name)
    return errors


def _type(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), "null")


def admit(
    schema: dict[str, Any], obj: dict[str, Any], *, strict: bool
) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
    """Default, prune and validate ``obj``; returns (object, unknown fields, causes)."""
    defaulted = apply_defaults(schema, obj)
    pruned, unknown = prune(schema, defaulted)
    if strict and unknown:
        return pruned, unknown, []
    causes = validate(schema, pruned)
    if not causes:
        causes = [
            (c.split(": ", 1)[0] or "<root>", c.split(": ", 1)[1])
            for c in cel_failures(schema, pruned)
        ]
    return pruned, unknown, causes
