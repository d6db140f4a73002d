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
