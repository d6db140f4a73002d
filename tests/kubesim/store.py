"""The emulator's state: resource types, objects, one global resourceVersion,
and the event history watches are served from.

Semantics pinned from the Kubernetes API conventions and apiserver behaviour:
server-set uid, creationTimestamp and resourceVersion (one global counter, as
etcd's revision); metadata.generation starts at 1 and moves only when the spec
(everything but metadata and status) changes, or when deletion starts; a write
that changes nothing is not stored and emits no event; an object with
finalizers is only marked (deletionTimestamp) until they are gone; deleting an
owner deletes its dependents (background garbage collection).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

HISTORY = 5000  # watch events kept for resume; older resourceVersions get 410 Gone


class ApiError(Exception):
    """Becomes a Status response."""

    def __init__(
        self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


@dataclasses.dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    status: bool = False  # has the status subresource
    schema: dict[str, Any] | None = None  # structural schema (custom resources)
    columns: list[dict[str, Any]] | None = None
    builtin: bool = True
    generation: bool = False  # tracks metadata.generation

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


BUILTINS = [
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ["ns"], status=True),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ["cm"]),
    ResourceType("", "v1", "events", "event", "Event", True, ["ev"]),
    ResourceType(
        "", "v1", "pods", "pod", "Pod", True, ["po"], ["all"], status=True, generation=True
    ),
    ResourceType("", "v1", "nodes", "node", "Node", False, ["no"], status=True),
    ResourceType("", "v1", "secrets", "secret", "Secret", True),
    ResourceType("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ["sa"]),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        False,
        ["crd", "crds"],
        status=True,
        generation=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceType("", "v1", "services", "service", "Service", True, ["svc"], ["all"], status=True),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        True,
        ["deploy"],
        ["all"],
        status=True,
        generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        True,
        ["ds"],
        ["all"],
        status=True,
        generation=True,
    ),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        False,
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        "ValidatingAdmissionPolicy",
        False,
        status=True,
        generation=True,
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        "ValidatingAdmissionPolicyBinding",
        False,
        generation=True,
    ),
]


def not_found(rtype: ResourceType, name: str) -> ApiError:
    """404 NotFound as the API server words it: `pods "x" not found`, `crs.group "x" ...`."""
    qualified = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    return ApiError(
        404,
        "NotFound",
        f'{qualified} "{name}" not found',
        details={"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in {"metadata", "status", "apiVersion", "kind"}}


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.revision = 1
        self.types: dict[tuple[str, str], ResourceType] = {t.key(): t for t in BUILTINS}
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.history: deque[tuple[int, str, ResourceType, dict[str, Any]]] = deque(maxlen=HISTORY)
        self.first_revision = 1
        for name in ("default", "kube-system"):
            self.create(
                self.types[("", "namespaces")],
                "",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )

    # --- events -------------------------------------------------------------------------
    def _emit(self, kind: str, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if len(self.history) == self.history.maxlen:
            self.first_revision = self.history[0][0] + 1
        self.history.append((self.revision, kind, rtype, copy.deepcopy(obj)))
        self.changed.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    @contextlib.contextmanager
    def dry_run(self) -> Iterator[None]:
        """Run writes for their result only (dryRun=All): every change is rolled back."""
        with self.lock:
            saved = (copy.deepcopy(self.objects), self.revision, list(self.history), self.first_revision,
                     dict(self.types))  # fmt: skip
            try:
                yield
            finally:
                self.objects, self.revision, history, self.first_revision, self.types = saved
                self.history.clear()
                self.history.extend(history)

    def dump(self) -> dict[str, Any]:
        """Everything needed to restart with the same objects and resourceVersions."""
        with self.lock:
            return {"revision": self.revision,
                    "objects": [{"group": g, "plural": p, "object": o} for (g, p, _, _), o in self.objects.items()]}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.objects.clear()
            crds = [
                e
                for e in state["objects"]
                if (e["group"], e["plural"])
                == ("apiextensions.k8s.io", "customresourcedefinitions")
            ]
            for entry in crds + [e for e in state["objects"] if e not in crds]:
                obj = entry["object"]
                if entry in crds:
                    self._register_crd(obj)
                meta = obj["metadata"]
                self.objects[
                    (entry["group"], entry["plural"], meta.get("namespace", ""), meta["name"])
                ] = obj
            self.revision = state["revision"]
            self.history.clear()
            self.first_revision = self.revision + 1  # a restarted server has no watch history

    def compact(self) -> None:
        """Forget the watch history (forces 410 for any resume): a test hook."""
        with self.lock:
            self.history.clear()
            self.first_revision = self.revision + 1

    # --- reads --------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((rtype.group, rtype.plural, namespace, name))
        if obj is None:
            raise not_found(rtype, name)
        return copy.deepcopy(obj)

    def list(self, rtype: ResourceType, namespace: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (g, p, ns, _), o in sorted(self.objects.items())
            if (g, p) == rtype.key() and (not namespace or ns == namespace)
        ]

    # --- writes -------------------------------------------------------------------------
    def create(self, rtype: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise ApiError(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                    details={"causes": [{"field": "metadata.name", "message": "Required value"}]},
                )
            key = (rtype.group, rtype.plural, namespace, name)
            if key in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" already exists',
                    details={"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            if rtype.namespaced:
                if ("", "namespaces", "", namespace) not in self.objects:
                    raise ApiError(
                        404,
                        "NotFound",
                        f'namespaces "{namespace}" not found',
                        details={"name": namespace, "kind": "namespaces"},
                    )
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            for field in ("deletionTimestamp", "resourceVersion", "selfLink"):
                meta.pop(field, None)
            if rtype.generation or not rtype.builtin:
                meta["generation"] = 1
            if rtype.status and not rtype.builtin:
                obj.pop("status", None)  # status is written through /status only
            self._bump(obj)
            self.objects[key] = obj
            self._emit("ADDED", rtype, obj)
            if rtype.key() == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_created(obj)
            return copy.deepcopy(obj)

    def update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        new: dict[str, Any],
        *,
        subresource: str = "",
        expected_rv: str | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            key = (rtype.group, rtype.plural, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(rtype, name)
            if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}": '
                    "the object has been modified; please apply your changes to the latest version and try again",
                    details={"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            if subresource == "status":
                merged = copy.deepcopy(old)
                if "status" in new:
                    merged["status"] = new["status"]
                else:
                    merged.pop("status", None)
                new = merged
            else:
                new = copy.deepcopy(new)
                if rtype.status:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                meta = new.setdefault("metadata", {})
                for field in (
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "namespace",
                    "name",
                    "generation",
                ):
                    if field in old["metadata"]:
                        meta[field] = old["metadata"][field]
                    else:
                        meta.pop(field, None)
                new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return copy.deepcopy(old)  # no-op: nothing stored, no event
            if "generation" in old["metadata"] and spec_of(new) != spec_of(old):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self._bump(new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                return self._remove(rtype, key, new)
            self.objects[key] = new
            self._emit("MODIFIED", rtype, new)
            if (
                rtype.key() == ("apiextensions.k8s.io", "customresourcedefinitions")
                and subresource != "status"
            ):
                self._register_crd(new)
            return copy.deepcopy(new)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            key = (rtype.group, rtype.plural, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise not_found(rtype, name)
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj = copy.deepcopy(obj)
                    obj["metadata"]["deletionTimestamp"] = now()
                    obj["metadata"]["deletionGracePeriodSeconds"] = 0
                    if "generation" in obj["metadata"]:
                        obj["metadata"]["generation"] += 1
                    self._bump(obj)
                    self.objects[key] = obj
                    self._emit("MODIFIED", rtype, obj)
                return copy.deepcopy(obj)
            obj = copy.deepcopy(obj)
            self._bump(obj)
            return self._remove(rtype, key, obj)

    def _remove(
        self, rtype: ResourceType, key: tuple[str, str, str, str], obj: dict[str, Any]
    ) -> dict[str, Any]:
        self.objects.pop(key, None)
        self._emit("DELETED", rtype, obj)
        if rtype.key() == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._crd_deleted(obj)
        self._collect_garbage(obj["metadata"]["uid"])
        if rtype.key() == ("", "namespaces"):
            for g, p, ns, name in list(self.objects):
                if ns == key[3]:
                    self.delete(self.types[(g, p)], ns, name)
        return copy.deepcopy(obj)

    def _collect_garbage(self, owner_uid: str) -> None:
        for (group, plural, namespace, name), obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in owners):
                remaining = [ref for ref in owners if ref.get("uid") != owner_uid]
                rtype = self.types[(group, plural)]
                if remaining:
                    updated = copy.deepcopy(obj)
                    updated["metadata"]["ownerReferences"] = remaining
                    self.update(rtype, namespace, name, updated)
                else:
                    self.delete(rtype, namespace, name)

    # --- CRDs ----------------------------------------------------------------------------
    def _crd_created(self, crd: dict[str, Any]) -> None:
        self._register_crd(crd)
        established = copy.deepcopy(crd)
        names = crd["spec"]["names"]
        conditions = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now(),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now(),
            },
        ]
        established["status"] = {
            "conditions": conditions,
            "acceptedNames": names,
            "storedVersions": [
                v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")
            ],
        }
        self.update(
            self.types[("apiextensions.k8s.io", "customresourcedefinitions")],
            "",
            crd["metadata"]["name"],
            established,
            subresource="status",
        )

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            rtype = ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular", names["kind"].lower()),
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                short_names=names.get("shortNames", []),
                categories=names.get("categories", []),
                status="status" in version.get("subresources", {}),
                schema=version.get("schema", {}).get("openAPIV3Schema"),
                columns=version.get("additionalPrinterColumns"),
                builtin=False,
                generation=True,
            )
            if version.get("storage", True) or rtype.key() not in self.types:
                self.types[rtype.key()] = rtype

    def _crd_deleted(self, crd: dict[str, Any]) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rtype = self.types.pop(key, None)
        if rtype is None:
            return
        for group, plural, namespace, name in list(self.objects):
            if (group, plural) == key:
                obj = self.objects.pop((group, plural, namespace, name))
                self._bump(obj)
                self._emit("DELETED", rtype, obj)
