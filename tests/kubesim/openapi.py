"""OpenAPI v3 documents, as much as kubectl needs.

``kubectl apply`` reads /openapi/v3 to learn, per group-version, whether the
server supports ``fieldValidation`` (a query parameter on the PATCH
operation of a path tagged with the kind's group-version-kind) and, when it
does, leaves validation to the server. Custom resources carry their structural
schema; built-in kinds get an open schema (kubesim does not validate them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubesim.store import ResourceType, Store

FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "schema": {"type": "string", "uniqueItems": True},
    "description": "Ignore, Warn or Strict",
}


def _gv_path(rtype: ResourceType) -> str:
    return f"apis/{rtype.group}/{rtype.version}" if rtype.group else f"api/{rtype.version}"


def _schema_name(rtype: ResourceType) -> str:
    group = ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    return f"{group}.{rtype.version}.{rtype.kind}"


def _group_document(types: list[ResourceType]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rtype in types:
        gvk = [{"group": rtype.group, "version": rtype.version, "kind": rtype.kind}]
        name = _schema_name(rtype)
        schema = (
            dict(rtype.schema)
            if rtype.schema
            else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        )
        schema["x-kubernetes-group-version-kind"] = gvk
        schemas[name] = schema
        ref = {"$ref": f"#/components/schemas/{name}"}
        base = (
            f"/{_gv_path(rtype)}/"
            + ("namespaces/{namespace}/" if rtype.namespaced else "")
            + rtype.plural
        )
        operation = {
            "x-kubernetes-group-version-kind": gvk[0],
            "parameters": [FIELD_VALIDATION],
            "responses": {"200": {"content": {"application/json": {"schema": ref}}}},
        }
        paths[base] = {"get": operation, "post": operation}
        paths[base + "/{name}"] = {
            "get": operation,
            "put": operation,
            "patch": operation,
            "delete": operation,
        }
        if rtype.status:
            paths[base + "/{name}/status"] = {
                "get": operation,
                "put": operation,
                "patch": operation,
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubesim)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document(store: Store, path: str) -> dict[str, Any] | None:
    groups: dict[str, list[ResourceType]] = {}
    for rtype in store.types.values():
        groups.setdefault(_gv_path(rtype), []).append(rtype)
    if path.rstrip("/") == "/openapi/v3":
        out = {}
        for gv, types in sorted(groups.items()):
            digest = (
                hashlib.sha256(json.dumps(_group_document(types), sort_keys=True).encode())
                .hexdigest()[:16]
                .upper()
            )
            out[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
        return {"paths": out}
    wanted = path[len("/openapi/v3/") :]
    return _group_document(groups[wanted]) if wanted in groups else None


def v2_document(store: Store) -> dict[str, Any]:
    """Swagger 2.0 (/openapi/v2): paths with their operations, the fieldValidation query
    parameter and the group-version-kind extension, and each kind's schema."""
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for rtype in store.types.values():
        document = _group_document([rtype])
        for path, item in document["paths"].items():
            paths[path] = {
                verb: {
                    "x-kubernetes-group-version-kind": operation["x-kubernetes-group-version-kind"],
                    "parameters": [
                        {
                            "name": "fieldValidation",
                            "in": "query",
                            "type": "string",
                            "uniqueItems": True,
                        }
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
                for verb, operation in item.items()
            }
        definitions.update(document["components"]["schemas"])
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (kubesim)", "version": "v1.32.0"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }
