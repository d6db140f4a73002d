"""What the Kubernetes API server checks about a CRD's schema, as test helpers.

``structural_errors`` follows the rules of apiextensions-apiserver
(pkg/apiserver/schema/validation.go and the "Specifying a structural schema"
section of the CustomResourceDefinition docs): every node typed (unless
x-kubernetes-int-or-string / preserve-unknown-fields), no $ref, no title-free
extras the server rejects, no properties together with additionalProperties,
metadata restricted to name/generateName, and no type-carrying anyOf/oneOf.
``apply_defaults`` mimics server-side defaulting of scalar defaults.
"""

from __future__ import annotations

from typing import Any

ALLOWED_KEYS = frozenset(
    {
        "description",
        "type",
        "format",
        "title",
        "default",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "properties",
        "additionalProperties",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        "example",
        "externalDocs",
    }
)
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})


def structural_errors(schema: dict[str, Any], path: str = "") -> list[str]:
    errors: list[str] = []
    for key in schema:
        if key not in ALLOWED_KEYS:
            errors.append(f"{path}: field {key!r} is not allowed in a CRD schema")
    if "$ref" in schema:
        errors.append(f"{path}: $ref is not allowed")
    if "title" in schema:
        errors.append(f"{path}: title (we promise none)")
    special = schema.get("x-kubernetes-int-or-string") or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in schema and not special:
        errors.append(f"{path}: type must be set (structural schema)")
    elif "type" in schema and schema["type"] not in TYPES:
        errors.append(f"{path}: type {schema['type']!r} unknown")
    if "properties" in schema and "additionalProperties" in schema:
        errors.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if schema.get("additionalProperties") is False:
        errors.append(f"{path}: additionalProperties: false is not allowed")
    for combinator in ("anyOf", "oneOf", "allOf", "not"):
        branches = schema.get(combinator)
        if branches is None:
            continue
        for branch in branches if isinstance(branches, list) else [branches]:
            for forbidden in ("type", "default", "description", "nullable", "additionalProperties"):
                if forbidden in branch:
                    errors.append(f"{path}.{combinator}: {forbidden} not allowed inside")
    if schema.get("type") == "array" and "items" not in schema:
        errors.append(f"{path}: an array needs items")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        item = schema.get("items", {})
        for key in keys:
            if key not in item.get("required", []) and "default" not in item.get(
                "properties", {}
            ).get(key, {}):
                errors.append(f"{path}: list-map key {key!r} must be required or defaulted")
    if "default" in schema and schema.get("enum") and schema["default"] not in schema["enum"]:
        errors.append(f"{path}: default {schema['default']!r} not in enum")
    for name, sub in schema.get("properties", {}).items():
        errors.extend(structural_errors(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        errors.extend(structural_errors(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        errors.extend(structural_errors(schema["additionalProperties"], f"{path}{{}}"))
    return errors


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in defaults the way the API server does before validation."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = sub["default"]
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def validations(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, rule) pair of x-kubernetes-validations in the schema."""
    found = [(path, rule) for rule in schema.get("x-kubernetes-validations", [])]
    for name, sub in schema.get("properties", {}).items():
        found.extend(validations(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        found.extend(validations(schema["items"], f"{path}[]"))
    return found


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule against ``value`` (already defaulted),
    with a real CEL implementation (cel-python), as the API server would. Returns the
    messages of rules that evaluated to false."""
    import celpy  # test-only dependency

    failures: list[str] = []
    rules = schema.get("x-kubernetes-validations", [])
    if rules and value is not None:
        env = celpy.Environment()
        for rule in rules:
            program = env.program(env.compile(rule["rule"]))
            if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
                failures.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                failures.extend(cel_failures(sub, value[name], f"{path}.{name}"))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            failures.extend(cel_failures(schema["items"], item, f"{path}[{index}]"))
    return failures
