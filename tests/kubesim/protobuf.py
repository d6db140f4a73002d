"""Kubernetes' protobuf request bodies, decoded for the kinds kubectl sends that way.

kubectl sends built-in kinds it creates itself (``kubectl create namespace``,
``create configmap``, ``create secret``, ``create serviceaccount``) as
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\0`` and a
``runtime.Unknown`` whose ``raw`` bytes are the object's own message. This
decodes those kinds' fields (from k8s.io/api/core/v1/generated.proto and
apimachinery's ObjectMeta) into the JSON form the rest of kubesim stores. Other
kinds get 415, and the message says which.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class Unsupported(ValueError):
    pass


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: varints as int, length-delimited as bytes."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, value
        elif wire == 2:
            size, at = _varint(data, at)
            yield number, data[at : at + size]
            at += size
        elif wire == 1:
            yield number, data[at : at + 8]
            at += 8
        elif wire == 5:
            yield number, data[at : at + 4]
            at += 4
        else:
            raise Unsupported(f"protobuf wire type {wire} is not supported")


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return value.decode()


def _entry(value: int | bytes) -> tuple[str, bytes]:
    assert isinstance(value, bytes)
    parts = dict(fields(value))
    key, item = parts.get(1, b""), parts.get(2, b"")
    assert isinstance(key, bytes) and isinstance(item, bytes)
    return key.decode(), item


def _metadata(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, value in fields(data):
        if number in names:
            meta[names[number]] = _text(value)
        elif number in (11, 12):
            key, item = _entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = item.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def _strings(data: bytes, number: int) -> list[str]:
    return [_text(v) for n, v in fields(data) if n == number]


def _namespace(out: dict[str, Any], number: int, value: int | bytes) -> None:
    if number == 2:
        assert isinstance(value, bytes)
        out["spec"] = {"finalizers": _strings(value, 1)}


def _configmap(out: dict[str, Any], number: int, value: int | bytes) -> None:
    if number in (2, 3):
        key, item = _entry(value)
        if number == 2:
            out.setdefault("data", {})[key] = item.decode()
        else:
            out.setdefault("binaryData", {})[key] = base64.b64encode(item).decode()
    elif number == 4:
        out["immutable"] = bool(value)


def _secret(out: dict[str, Any], number: int, value: int | bytes) -> None:
    if number in (2, 4):
        key, item = _entry(value)
        if number == 2:
            out.setdefault("data", {})[key] = base64.b64encode(item).decode()
        else:
            out.setdefault("stringData", {})[key] = item.decode()
    elif number == 3:
        out["type"] = _text(value)
    elif number == 5:
        out["immutable"] = bool(value)


def _serviceaccount(out: dict[str, Any], number: int, value: int | bytes) -> None:
    if number == 4:
        out["automountServiceAccountToken"] = bool(value)


KINDS: dict[str, Callable[[dict[str, Any], int, int | bytes], None]] = {
    "Namespace": _namespace,
    "ConfigMap": _configmap,
    "Secret": _secret,
    "ServiceAccount": _serviceaccount,
}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the object's JSON form."""
    if not body.startswith(MAGIC):
        raise Unsupported("the protobuf body does not start with the k8s magic")
    unknown = dict(fields(body[len(MAGIC) :]))
    type_meta = unknown.get(1, b"")
    raw = unknown.get(2, b"")
    assert isinstance(type_meta, bytes) and isinstance(raw, bytes)
    meta = {n: _text(v) for n, v in fields(type_meta)}
    api_version, kind = meta.get(1, ""), meta.get(2, "")
    handler = KINDS.get(kind)
    if handler is None:
        raise Unsupported(
            f"kubesim decodes protobuf bodies of {', '.join(sorted(KINDS))} only, not {kind!r}; "
            "send JSON (kubectl apply does)"
        )
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    for number, value in fields(raw):
        if number == 1:
            assert isinstance(value, bytes)
            out["metadata"] = _metadata(value)
        else:
            handler(out, number, value)
    return out


# --- encoding: /openapi/v2 as client-go asks for it --------------------------------------
OPENAPI_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"  # what clients ask
OPENAPI_V2_SERVED = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # valid MIME
_VERBS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}  # PathItem fields


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(number: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return _key(number, 2) + _encode_varint(len(raw)) + raw


def _bool(number: int, value: bool) -> bytes:
    return _key(number, 0) + _encode_varint(int(value)) if value else b""


def _gvk_extension(gvk: dict[str, str]) -> bytes:
    text = "".join(f"{k}: {gvk[k]}\n" for k in ("group", "kind", "version"))
    any_value = _bytes(2, text)  # Any.yaml
    return _bytes(1, "x-kubernetes-group-version-kind") + _bytes(2, any_value)  # NamedAny


def _query_parameter(parameter: dict[str, Any]) -> bytes:
    sub = (
        _bytes(2, "query")
        + _bytes(4, parameter["name"])
        + _bytes(6, parameter.get("type", "string"))
        + _bool(20, bool(parameter.get("uniqueItems")))
    )  # QueryParameterSubSchema
    non_body = _bytes(3, sub)  # NonBodyParameter.query_parameter_sub_schema
    return _bytes(1, _bytes(2, non_body))  # ParametersItem.parameter = Parameter.non_body


def _operation(operation: dict[str, Any]) -> bytes:
    out = b"".join(
        _bytes(8, _query_parameter(p)) for p in operation.get("parameters", [])
    )  # Operation.parameters
    gvk = operation.get("x-kubernetes-group-version-kind")
    if gvk:
        out += _bytes(13, _gvk_extension(gvk))  # Operation.vendor_extension
    return out


def _schema(schema: dict[str, Any]) -> bytes:
    """A JSON schema as openapi_v2.Schema: description, type, required, items, properties,
    additionalProperties and the group-version-kind extension (what kubectl explain reads)."""
    out = _bytes(4, schema["description"]) if schema.get("description") else b""
    out += b"".join(_bytes(19, name) for name in schema.get("required", []))
    if isinstance(schema.get("additionalProperties"), dict):
        out += _bytes(21, _bytes(1, _schema(schema["additionalProperties"])))
    if schema.get("type"):
        out += _bytes(22, _bytes(1, schema["type"]))  # TypeItem.value
    if isinstance(schema.get("items"), dict):
        out += _bytes(23, _bytes(1, _schema(schema["items"])))  # ItemsItem.schema
    if schema.get("properties"):
        named = b"".join(
            _bytes(1, _bytes(1, name) + _bytes(2, _schema(value)))
            for name, value in schema["properties"].items()
        )
        out += _bytes(25, named)  # Properties.additional_properties: NamedSchema
    for gvk in schema.get("x-kubernetes-group-version-kind", []):
        text = "".join(
            f"{'- ' if i == 0 else '  '}{k}: {gvk[k]}\n"
            for i, k in enumerate(("group", "kind", "version"))
        )
        extension = _bytes(1, "x-kubernetes-group-version-kind") + _bytes(2, _bytes(2, text))
        out += _bytes(31, extension)
    return out


def encode_openapi_v2(document: dict[str, Any]) -> bytes:
    """An openapi_v2.Document with what kubectl reads: paths with operations, the
    fieldValidation parameter and group-version-kind extensions, and the definitions."""
    info = _bytes(1, document["info"]["title"]) + _bytes(2, document["info"]["version"])
    paths = b""
    for path, item in document["paths"].items():
        value = b"".join(
            _bytes(_VERBS[verb], _operation(operation))
            for verb, operation in item.items()
            if verb in _VERBS
        )
        paths += _bytes(2, _bytes(1, path) + _bytes(2, value))  # Paths.path: NamedPathItem
    definitions = b"".join(
        _bytes(1, _bytes(1, name) + _bytes(2, _schema(schema)))
        for name, schema in document.get("definitions", {}).items()
    )
    return (
        _bytes(1, document["swagger"]) + _bytes(2, info) + _bytes(8, paths) + _bytes(9, definitions)
    )
