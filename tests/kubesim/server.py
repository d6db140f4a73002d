"""The HTTP side: routing, discovery, OpenAPI, CRUD, patches, watches, tables."""

from __future__ import annotations

import collections
import json
import re
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from kubesim import applying, patches, protobuf, schemas, tables
from kubesim.store import ApiError, ResourceType, Store, now

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubesim",
    "gitCommit": "kubesim",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ANNOTATIONS_LIMIT = 256 * 1024  # TotalAnnotationSizeLimitB
BOOKMARK_SECONDS = 1.0
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Faults:
    """Fault injection for reliability tests (set through /kubesim/faults)."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.throttle = 0  # the next N requests get 429
        self.errors = 0  # the next N requests get 500
        self.drop_watches = False  # end every open watch now
        self.stall_watches = False  # keep watches open but send nothing
        self.paused = threading.Event()
        self.paused.set()
        self.watch_generation = 0


class Emulator:
    def __init__(self, *, tokens: dict[str, str] | None = None) -> None:
        self.store = Store()
        self.faults = Faults()
        # Bearer token -> user name. None accepts any token (the plain test setup); with a
        # table, an unknown or missing token is 401 Unauthorized, as on a real API server.
        self.tokens = tokens
        self.requests_by_user: collections.Counter[str] = collections.Counter()
        # (method, path, watch) of every request: what a test asserts a client never polls.
        self.requests: collections.Counter[tuple[str, str, bool]] = collections.Counter()
        # (user, Kubernetes verb, resource) of every request, read through GET
        # /kubesim/requests; the writes (time, user, verb, resource, name) in order, the
        # latest 100,000, through GET /kubesim/requests?writes=1.
        self.verbs: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.writes: collections.deque[tuple[float, str, str, str, str]] = collections.deque(
            maxlen=100_000
        )


def parse_labels(text: str) -> list[tuple[str, str, list[str]]]:
    """labelSelector → (key, op, values); ops: =, !=, in, notin, exists, !exists."""
    out = []
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", text or ""):
        part = part.strip()
        if not part:
            continue
        if match := re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", part):
            out.append(
                (match.group(1), match.group(2), [v.strip() for v in match.group(3).split(",")])
            )
        elif match := re.match(r"^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$", part):
            out.append((match.group(1), "!=" if match.group(2) == "!=" else "=", [match.group(3)]))
        elif part.startswith("!"):
            out.append((part[1:], "!exists", []))
        else:
            out.append((part, "exists", []))
    return out


def labels_match(selector: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    for key, op, values in selector:
        present = key in labels
        if op == "=" and labels.get(key) != values[0]:
            return False
        if op == "!=" and labels.get(key) == values[0]:
            return False
        if op == "in" and labels.get(key) not in values:
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


FIELDS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "status.phase": ("status", "phase"),
}


def parse_fields(text: str) -> list[tuple[str, bool, str]]:
    out = []
    for part in filter(None, (text or "").split(",")):
        match = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", part.strip())
        if not match or match.group(1) not in FIELDS:
            raise ApiError(400, "BadRequest", f'field label not supported: "{part}"')
        out.append((match.group(1), match.group(2) != "!=", match.group(3)))
    return out


def fields_match(selector: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    for field, equal, value in selector:
        first, second = FIELDS[field]
        actual = str((obj.get(first) or {}).get(second, ""))
        if (actual == value) != equal:
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: Emulator

    def log_message(self, *_: object) -> None:
        pass

    # --- plumbing ---------------------------------------------------------------------
    def _send(self, code: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw_body
        if not raw:
            return None
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith(protobuf.CONTENT_TYPE):
            try:
                return protobuf.decode(raw)
            except protobuf.Unsupported as error:
                raise ApiError(415, "UnsupportedMediaType", str(error)) from None
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise ApiError(400, "BadRequest", f"the request body is not valid: {error}") from None

    def _handle(self, method: str) -> None:
        # Read every body, even one we ignore (DeleteOptions): leftovers would corrupt the
        # next request on this keep-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw_body = self.rfile.read(length) if length else b""
        faults = self.emulator.faults
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/kubesim/requests":
            if "writes=1" in url.query:
                return self._send(200, [list(w) for w in list(self.emulator.writes)])
            counts: dict[str, dict[str, dict[str, int]]] = {}
            for (user, verb, resource), n in list(self.emulator.verbs.items()):
                counts.setdefault(user, {}).setdefault(verb, {})[resource] = n
            return self._send(200, counts)
        if url.path != "/kubesim/faults":  # the fault endpoint itself is never paused
            faults.paused.wait()
            if faults.latency:
                time.sleep(faults.latency)
        query = {
            k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()
        }
        try:
            if url.path == "/kubesim/faults":
                return self._faults(method)
            user = self._authenticate()
            watching = query.get("watch") in ("true", "1")
            self.emulator.requests[(method, url.path.rstrip("/"), watching)] += 1
            self._count(user, method, url.path, watching)
            if faults.throttle > 0:
                faults.throttle -= 1
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "too many requests, please try again later",
                    details={"retryAfterSeconds": 1},
                )
            if faults.errors > 0:
                faults.errors -= 1
                raise ApiError(
                    500,
                    "InternalError",
                    "an error on the server (injected) has prevented the request from succeeding",
                )
            self._route(method, url.path.rstrip("/") or "/", query)
        except ApiError as error:
            headers = {"Retry-After": "1"} if error.code == 429 else None
            self._send(error.code, error.status(), headers=headers)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    def _authenticate(self) -> str:
        """The request's user (without a token table: its token, or system:anonymous)."""
        tokens = self.emulator.tokens
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""  # schemes ignore case
        if tokens is None:
            self.emulator.requests_by_user[token or "system:anonymous"] += 1
            return token or "system:anonymous"
        user = tokens.get(token)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        self.emulator.requests_by_user[user] += 1
        return user

    def _count(self, user: str, method: str, path: str, watching: bool) -> None:
        """The request's Kubernetes verb and resource (as an API server's audit log and its
        apiserver_request_total say them): get or list by whether it names an object;
        the resource is the plural, with /status for the subresource."""
        target = self._target(path.rstrip("/"))
        resource = name = ""
        if target is not None:
            resource = target[0].plural + (f"/{target[3]}" if target[3] else "")
            name = target[2]
        if method == "GET":
            verb = "watch" if watching else "get" if name or target is None else "list"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "delete")
            self.emulator.writes.append((time.time(), user, verb, resource, name))
        self.emulator.verbs[(user, verb, resource or "other")] += 1

    def _faults(self, method: str) -> None:
        faults = self.emulator.faults
        if method == "POST":
            body = self._body() or {}
            faults.latency = float(body.get("latency", faults.latency))
            faults.throttle = int(body.get("throttle", faults.throttle))
            faults.errors = int(body.get("errors", faults.errors))
            faults.stall_watches = bool(body.get("stallWatches", faults.stall_watches))
            if body.get("dropWatches"):
                faults.watch_generation += 1
            if body.get("expireWatches"):
                self.emulator.store.compact()
                faults.watch_generation += 1
            if "pause" in body:
                (faults.paused.clear if body["pause"] else faults.paused.set)()
        self._send(
            200,
            {
                "latency": faults.latency,
                "throttle": faults.throttle,
                "errors": faults.errors,
                "stallWatches": faults.stall_watches,
            },
        )

    # --- routing ----------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        store = self.emulator.store
        if method == "GET":
            if path == "/version":
                return self._send(200, VERSION)
            if path in {"/healthz", "/readyz", "/livez"}:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                return None
            if path == "/api":
                return self._send(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                        ],
                    },
                )
            if path == "/apis":
                return self._send(200, self._groups())
            if path == "/api/v1":
                return self._send(200, self._resources("", "v1"))
            if path.startswith("/openapi/v3"):
                from kubesim import openapi

                with store.lock:
                    document = openapi.document(store, path)
                if document is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                return self._send(200, document)
            if path == "/openapi/v2":
                from kubesim import openapi

                with store.lock:
                    swagger = openapi.v2_document(store)
                if protobuf.OPENAPI_V2 in (self.headers.get("Accept") or ""):
                    return self._send_raw(
                        200, protobuf.encode_openapi_v2(swagger), protobuf.OPENAPI_V2_SERVED
                    )
                return self._send(200, swagger)
            parts = path.strip("/").split("/")
            if parts[0] == "apis" and len(parts) == 2:
                group = next((g for g in self._groups()["groups"] if g["name"] == parts[1]), None)
                if group is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                return self._send(200, {"kind": "APIGroup", "apiVersion": "v1", **group})
            if parts[0] == "apis" and len(parts) == 3:
                with store.lock:
                    if not any(
                        t.group == parts[1] and t.version == parts[2] for t in store.types.values()
                    ):
                        raise ApiError(
                            404, "NotFound", "the server could not find the requested resource"
                        )
                return self._send(200, self._resources(parts[1], parts[2]))
        target = self._target(path)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype, namespace, name, sub = target
        if sub and (sub != "status" or not rtype.status):
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({sub})"
            )
        if query.get("dryRun") not in (None, "All"):
            raise ApiError(
                400,
                "BadRequest",
                f"invalid dry run value {query['dryRun']!r}: only All is supported",
            )
        if query.get("dryRun") == "All" and method in {"POST", "PUT", "PATCH", "DELETE"}:
            with store.dry_run():
                return self._write(method, rtype, namespace, name, sub, query)
        if method == "GET" and name:
            with store.lock:
                obj = store.get(rtype, namespace, name)
            return self._send(200, self._maybe_table([obj], rtype, query, single=True))
        if method == "GET":
            if query.get("watch") in {"true", "1"}:
                return self._watch(rtype, namespace, query)
            return self._list(rtype, namespace, query)
        return self._write(method, rtype, namespace, name, sub, query)

    def _manager(self, query: dict[str, str]) -> str:
        agent = (self.headers.get("User-Agent") or "unknown").split("/")[0]
        return query.get("fieldManager") or agent

    def _write(
        self,
        method: str,
        rtype: ResourceType,
        namespace: str,
        name: str,
        sub: str,
        query: dict[str, str],
    ) -> None:
        store = self.emulator.store
        if method == "POST" and not name:
            body = self._body()
            self._check_body(body, rtype, namespace)
            with store.lock:
                obj, warnings = self._admit(rtype, body, query)
                obj = applying.record_update(
                    None,
                    obj,
                    manager=self._manager(query),
                    api_version=rtype.api_version,
                    now=now(),
                )
                created = store.create(rtype, namespace, obj)
            return self._send(201, created, headers=warnings)
        if method == "PUT" and name:
            body = self._body()
            self._check_body(body, rtype, namespace, name)
            with store.lock:
                current = store.get(rtype, namespace, name)
                expected = (body.get("metadata") or {}).get("resourceVersion")
                updated, warnings = self._replace(
                    rtype, namespace, name, sub, query, body, current, expected
                )
            return self._send(200, updated, headers=warnings)
        if method == "PATCH" and name:
            return self._patch(rtype, namespace, name, sub, query)
        if method == "DELETE" and name:
            with store.lock:
                deleted = store.delete(rtype, namespace, name)
            return self._send(200, deleted)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {self.path}")

    def _target(self, path: str) -> tuple[ResourceType, str, str, str] | None:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None  # discovery (/api/v1, /apis/GROUP/VERSION)
        namespace = ""
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in {"status", "finalize"})
        ):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = (
            rest[0],
            rest[1] if len(rest) > 1 else "",
            rest[2] if len(rest) > 2 else "",
        )
        with self.emulator.store.lock:
            rtype = self.emulator.store.types.get((group, plural))
        if rtype is None or rtype.version != version or (bool(namespace) and not rtype.namespaced):
            return None
        if rtype.namespaced and name and not namespace:
            return None
        return rtype, namespace, name, sub

    # --- discovery --------------------------------------------------------------------
    def _groups(self) -> dict[str, Any]:
        with self.emulator.store.lock:
            groups: dict[str, list[str]] = {}
            for rtype in self.emulator.store.types.values():
                if rtype.group:
                    groups.setdefault(rtype.group, [])
                    if rtype.version not in groups[rtype.group]:
                        groups[rtype.group].append(rtype.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": name,
                    "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                    "preferredVersion": {
                        "groupVersion": f"{name}/{versions[0]}",
                        "version": versions[0],
                    },
                }
                for name, versions in sorted(groups.items())
            ],
        }

    def _resources(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        with self.emulator.store.lock:
            for rtype in self.emulator.store.types.values():
                if rtype.group != group or rtype.version != version:
                    continue
                entry: dict[str, Any] = {
                    "name": rtype.plural,
                    "singularName": rtype.singular,
                    "namespaced": rtype.namespaced,
                    "kind": rtype.kind,
                    "verbs": VERBS,
                }
                if rtype.short_names:
                    entry["shortNames"] = rtype.short_names
                if rtype.categories:
                    entry["categories"] = rtype.categories
                resources.append(entry)
                if rtype.status:
                    resources.append(
                        {
                            "name": f"{rtype.plural}/status",
                            "singularName": "",
                            "namespaced": rtype.namespaced,
                            "kind": rtype.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # --- writes -----------------------------------------------------------------------
    def _check_body(self, body: Any, rtype: ResourceType, namespace: str, name: str = "") -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        if body.get("kind") not in (None, rtype.kind) or body.get("apiVersion") not in (
            None,
            rtype.api_version,
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match "
                f"the expected API version ({rtype.api_version}) or kind {body.get('kind')} != {rtype.kind}",
            )
        meta = body.get("metadata") or {}
        if name and meta.get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if namespace and meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        annotations = meta.get("annotations") or {}
        size = sum(len(k) + len(str(v)) for k, v in annotations.items())
        if size > ANNOTATIONS_LIMIT:
            raise ApiError(
                422,
                "Invalid",
                f"metadata.annotations: Too long: must have at most {ANNOTATIONS_LIMIT} bytes",
                details={"causes": [{"field": "metadata.annotations", "message": "Too long"}]},
            )

    def _admit(
        self,
        rtype: ResourceType,
        obj: dict[str, Any],
        query: dict[str, str],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        if rtype.schema is None:
            return obj, {}
        validation = query.get("fieldValidation", "Warn")
        admitted, unknown, causes = schemas.admit(rtype.schema, obj, strict=validation == "Strict")
        if unknown and validation == "Strict":
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise ApiError(400, "BadRequest", f"strict decoding error: {fields}")
        if causes:
            name = (obj.get("metadata") or {}).get("name", "")
            text = ", ".join(f"{field}: {message}" for field, message in causes)
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind}.{rtype.group} "{name}" is invalid: {text}',
                details={
                    "name": name,
                    "group": rtype.group,
                    "kind": rtype.kind,
                    "causes": [
                        {"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes
                    ],
                },
            )
        warnings = {}
        if unknown and validation == "Warn":
            warnings["Warning"] = "299 - " + ", ".join(
                f'"unknown field \\"{u}\\""' for u in unknown
            )
        return admitted, warnings

    def _patch(
        self, rtype: ResourceType, namespace: str, name: str, sub: str, query: dict[str, str]
    ) -> None:
        store = self.emulator.store
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._body()
        if kind == "application/apply-patch+yaml":
            return self._apply(rtype, namespace, name, sub, query, body)
        with store.lock:
            current = store.get(rtype, namespace, name)
            try:
                if kind == "application/merge-patch+json":
                    patched = patches.merge_patch(current, body)
                elif kind == "application/json-patch+json":
                    patched = patches.json_patch(current, body)
                elif kind == "application/strategic-merge-patch+json":
                    if not rtype.builtin:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "strategic merge patch is not supported for custom resources; use a JSON merge patch",
                        )
                    patched = patches.strategic_merge_patch(current, body)
                else:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format: {kind}",
                    )
            except patches.PatchError as error:
                raise ApiError(422, "Invalid", str(error)) from None
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", "the patch did not produce an object")
            self._check_body(patched, rtype, namespace, name)
            expected = (
                (body.get("metadata") or {}).get("resourceVersion")
                if isinstance(body, dict)
                else None
            )
            updated, warnings = self._replace(
                rtype, namespace, name, sub, query, patched, current, expected
            )
        self._send(200, updated, headers=warnings)

    def _replace(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        sub: str,
        query: dict[str, str],
        new: dict[str, Any],
        current: dict[str, Any],
        expected_rv: str | None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Admit ``new`` and store it over ``current`` (PUT and PATCH end here, with the store lock
        held); returns the stored object and warning headers. Writes to the main resource are
        attributed to their field manager."""
        obj, warnings = self._admit(rtype, new, query)
        if not sub:
            obj = applying.record_update(
                current, obj, manager=self._manager(query), api_version=rtype.api_version, now=now()
            )
        updated = self.emulator.store.update(
            rtype, namespace, name, obj, subresource=sub, expected_rv=expected_rv
        )
        return updated, warnings

    def _apply(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        sub: str,
        query: dict[str, str],
        body: Any,
    ) -> None:
        store = self.emulator.store
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(
                400,
                "BadRequest",
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            )
        if sub:
            raise ApiError(
                501,
                "NotImplemented",
                "kubesim does not implement server-side apply on subresources",
            )
        self._check_body(body, rtype, namespace, name)
        with store.lock:
            try:
                current = store.get(rtype, namespace, name)
            except ApiError as error:
                if error.code != 404:
                    raise
                current = None
            try:
                result = applying.apply(
                    current,
                    body,
                    manager=manager,
                    force=query.get("force") == "true",
                    api_version=rtype.api_version,
                    now=now(),
                )
            except applying.ApplyConflict as conflict:
                raise ApiError(
                    409,
                    "Conflict",
                    str(conflict),
                    details={
                        "name": name,
                        "group": rtype.group,
                        "kind": rtype.plural,
                        "causes": [
                            {
                                "reason": "FieldManagerConflict",
                                "message": f'conflict with "{m}"',
                                "field": "." + ".".join(p),
                            }
                            for m, p in conflict.conflicts
                        ],
                    },
                ) from None
            obj, warnings = self._admit(rtype, result, query)
            if current is None:
                obj["metadata"]["name"] = name
                return self._send(201, store.create(rtype, namespace, obj), headers=warnings)
            updated = store.update(rtype, namespace, name, obj)
        self._send(200, updated, headers=warnings)

    # --- reads ------------------------------------------------------------------------
    def _select(
        self, rtype: ResourceType, namespace: str, query: dict[str, str]
    ) -> list[dict[str, Any]]:
        labels, fields = (
            parse_labels(query.get("labelSelector", "")),
            parse_fields(query.get("fieldSelector", "")),
        )
        return [
            o
            for o in self.emulator.store.list(rtype, namespace)
            if labels_match(labels, o["metadata"].get("labels") or {}) and fields_match(fields, o)
        ]

    def _list(self, rtype: ResourceType, namespace: str, query: dict[str, str]) -> None:
        store = self.emulator.store
        with store.lock:
            items = self._select(rtype, namespace, query)
            revision = str(store.revision)
        metadata: dict[str, Any] = {"resourceVersion": revision}
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        if limit and start + limit < len(items):
            metadata["continue"] = str(start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        items = items[start : start + limit] if limit else items[start:]
        if self._wants_table():
            body = tables.table(
                items,
                rtype.columns or tables.BUILTIN_COLUMNS.get(rtype.plural),
                resource_version=revision,
                include_object=query.get("includeObject", "Metadata"),
            )
            body["metadata"].update({k: v for k, v in metadata.items() if k != "resourceVersion"})
            return self._send(200, body)
        self._send(
            200,
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": metadata,
                "items": items,
            },
        )

    def _wants_table(self) -> bool:
        accept = self.headers.get("Accept") or ""
        return "as=Table" in accept

    def _maybe_table(
        self,
        objects: list[dict[str, Any]],
        rtype: ResourceType,
        query: dict[str, str],
        *,
        single: bool,
    ) -> dict[str, Any]:
        if not self._wants_table():
            return objects[0] if single else {"items": objects}
        revision = objects[0]["metadata"].get("resourceVersion", "") if objects else ""
        return tables.table(
            objects,
            rtype.columns or tables.BUILTIN_COLUMNS.get(rtype.plural),
            resource_version=revision,
            include_object=query.get("includeObject", "Metadata"),
        )

    def _watch(self, rtype: ResourceType, namespace: str, query: dict[str, str]) -> None:
        store, faults = self.emulator.store, self.emulator.faults
        labels, fields = (
            parse_labels(query.get("labelSelector", "")),
            parse_fields(query.get("fieldSelector", "")),
        )
        table = self._wants_table()
        bookmarks = query.get("allowWatchBookmarks") in {"true", "1"}
        timeout = min(float(query.get("timeoutSeconds") or 1800), 3600)
        deadline = time.monotonic() + timeout
        generation = faults.watch_generation
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(kind: str, obj: dict[str, Any]) -> None:
            if table and kind not in {"BOOKMARK", "ERROR"}:
                obj = tables.table(
                    [obj],
                    rtype.columns or tables.BUILTIN_COLUMNS.get(rtype.plural),
                    resource_version=obj["metadata"]["resourceVersion"],
                    include_object=query.get("includeObject", "Metadata"),
                )
            data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            return (
                (not namespace or meta.get("namespace") == namespace)
                and labels_match(labels, meta.get("labels") or {})
                and fields_match(fields, obj)
            )

        requested = query.get("resourceVersion", "")
        with store.lock:
            if requested not in {"", "0"}:
                position = int(requested)
                if position < store.first_revision - 1:
                    send(
                        "ERROR",
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {requested} ({store.first_revision - 1})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    )
                    return self._end_chunks()
                visible = None
                initial: list[dict[str, Any]] = []
            else:
                position = store.revision
                initial = list(self._select(rtype, namespace, query))
                visible = {
                    (o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in initial
                }
        for obj in initial:  # written outside the lock: a slow reader must not stall the server
            send("ADDED", obj)
        shown: set[tuple[str, str]] = visible if visible is not None else set()
        last_bookmark = time.monotonic()
        try:
            while time.monotonic() < deadline and faults.watch_generation == generation:
                with store.lock:
                    store.changed.wait(timeout=0.2)
                    if faults.stall_watches:
                        continue
                    if position < store.first_revision - 1:
                        send(
                            "ERROR",
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "metadata": {},
                                "status": "Failure",
                                "message": "too old resource version",
                                "reason": "Expired",
                                "code": 410,
                            },
                        )
                        break
                    # Newest first, back to what this watch has sent: a watch that is
                    # caught up costs one look, not a scan of the whole history.
                    pending = []
                    for rev, kind, t, obj in reversed(store.history):
                        if rev <= position:
                            break
                        if t.key() == rtype.key():
                            pending.append((rev, kind, obj))
                    pending.reverse()
                    newest = store.revision
                for rev, kind, obj in pending:
                    ident = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                    if matches(obj):
                        send(kind, obj)
                        if kind == "DELETED":
                            shown.discard(ident)
                        else:
                            shown.add(ident)
                    elif ident in shown and kind != "DELETED":
                        shown.discard(ident)
                        send("DELETED", obj)  # left the selector
                    position = rev
                position = max(position, newest) if not pending else position
                if bookmarks and time.monotonic() - last_bookmark >= BOOKMARK_SECONDS:
                    send(
                        "BOOKMARK",
                        {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": {
                                "resourceVersion": str(position),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    )
                    last_bookmark = time.monotonic()
            self._end_chunks()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass


def serve(
    port: int,
    emulator: Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    tls: tuple[str, str] | None = None,
) -> tuple[ThreadingHTTPServer, Emulator]:
    """Listen on host:port; ``tls`` = (certificate file, key file) serves HTTPS, which is
    what in-cluster clients (service-account config) require."""
    emulator = emulator or Emulator()
    handler = type("BoundHandler", (Handler,), {"emulator": emulator})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # The handshake happens on the handler's first read, in its own thread: a client
        # that connects and never handshakes cannot stall the accept loop.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    # A connection reset between select() and accept() would leave a blocking accept()
    # waiting for the next client, and shutdown() waiting for it forever (seen once at the
    # end of a test): a non-blocking listener just skips it.
    server.socket.setblocking(False)
    return server, emulator


def kubeconfig(
    port: int, *, host: str = "127.0.0.1", ca: str | None = None, token: str = "kubesim"
) -> str:
    cluster: dict[str, str] = {"server": f"{'https' if ca else 'http'}://{host}:{port}"}
    if ca:
        cluster["certificate-authority"] = ca
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kubesim",
            "clusters": [{"name": "kubesim", "cluster": cluster}],
            "users": [{"name": "kubesim", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "kubesim",
                    "context": {"cluster": "kubesim", "user": "kubesim", "namespace": "default"},
                }
            ],
        }
    )
