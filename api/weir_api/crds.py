"""CustomResourceDefinitions, generated from the models (never edited by hand).

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3
schema: no ``$ref`` (everything inlined), no ``title``, every node typed, no
``properties`` together with ``additionalProperties``, no ``anyOf`` carrying
types. ``structural`` turns one into the other; ``definitions`` builds the
three CRDs. ``make crds`` writes them to ``crds/`` and a test fails when the
files and the models disagree.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from weir_api import CATEGORY, GROUP, VERSION
from weir_api.aggregations import AggregationRuleSpec
from weir_api.policies import TracingPolicySpec
from weir_api.reports import NodeReportSpec, NodeReportStatus
from weir_api.statuses import AggregationRuleStatus, TracingPolicyStatus

# Formats the Kubernetes API server understands (k8s.io/kube-openapi strfmt).
KNOWN_FORMATS = frozenset({"date-time", "int32", "int64", "byte", "date", "duration"})
_DROP = frozenset({"title", "$defs", "discriminator"})


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """A model's validation schema as a Kubernetes structural schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.get("$defs", {})
    converted: dict[str, Any] = _no_defaults_in_lists(_convert(schema, definitions))
    return converted


def _no_defaults_in_lists(node: Any, *, in_list: bool = False) -> Any:
    """Drop schema defaults inside list items; the models apply them instead.

    The API server writes a default into each item of an atomic list. Whoever created
    the list then owns values they never sent, and the next apply of the same manifest
    by another field manager (``kubectl apply --server-side`` after a client-side apply,
    Argo CD turning on ServerSideApply) conflicts on the whole list."""
    if isinstance(node, list):
        return [_no_defaults_in_lists(item, in_list=in_list) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "default" and in_list:
            continue
        out[key] = _no_defaults_in_lists(value, in_list=in_list or key == "items")
    return out


def _convert(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Inline references, keeping sibling keys (a field's description wins).
    if "$ref" in node:
        target = copy.deepcopy(definitions[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)
        node = target
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_convert(inner, definitions), **node}
    # Optional[X] → X: absence, not null, means unset.
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_convert(branches[0], definitions), **rest}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None or isinstance(node.get("default"), dict | list):
        node.pop("default")  # object and list defaults are left to the models
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)  # an int or a string: the API server takes either
    if node.get("format") not in KNOWN_FORMATS:
        node.pop("format", None)
    if "properties" in node:
        node.pop("additionalProperties", None)
        node.setdefault("type", "object")
    out = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, definitions) for name, prop in value.items()}
        elif key in {"items", "additionalProperties"}:
            out[key] = _convert(value, definitions)
        else:
            out[key] = value
    return _ordered(out)


_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "required",
    "properties",
    "additionalProperties",
)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(node, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER), k))
    return {k: node[k] for k in keys}


def _root(spec: type[BaseModel], status: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "weir.dev/v1alpha1"},
            "kind": {"type": "string", "description": "The object's kind."},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "categories": [CATEGORY],
    }
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "weir", "app.kubernetes.io/part-of": "weir"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


_READY = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    "description": "Every targeted node runs the current generation.",
}
_NODES = {
    "name": "Nodes",
    "type": "string",
    "jsonPath": ".status.nodes.summary",
    "description": "Nodes ready / nodes targeted.",
}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_REASON = {
    "name": "Reason",
    "type": "string",
    "priority": 1,
    "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    "description": "Why Ready is what it is.",
}


def kopf_peering() -> dict[str, Any]:
    """kopf's ClusterKopfPeering (as kopf documents it): the object in which operator
    replicas keep themselves alive, so that one of them is active (``weir operator
    --peering``). Its status is kopf's, one entry per replica."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": "Cluster",
            "names": {
                "kind": "ClusterKopfPeering",
                "plural": "clusterkopfpeerings",
                "singular": "clusterkopfpeering",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def definitions() -> dict[str, dict[str, Any]]:
    """File name → CRD, for every weir kind, and kopf's peering."""
    return {
        "clusterkopfpeerings.kopf.dev.yaml": kopf_peering(),
        "tracingpolicies.weir.dev.yaml": _crd(
            kind="TracingPolicy",
            plural="tracingpolicies",
            short_names=["wtp"],
            schema=_root(
                TracingPolicySpec,
                TracingPolicyStatus,
                "What to hook in the kernel, how to filter there, and what to do on a match.",
            ),
            columns=[
                _READY,
                _NODES,
                {
                    "name": "Saved",
                    "type": "string",
                    "jsonPath": ".status.savings.saved",
                    "description": "Share of the per-event data volume held back in the kernel.",
                },
                _AGE,
                _REASON,
            ],
        ),
        "aggregationrules.weir.dev.yaml": _crd(
            kind="AggregationRule",
            plural="aggregationrules",
            short_names=["war"],
            schema=_root(
                AggregationRuleSpec,
                AggregationRuleStatus,
                "Fold a TracingPolicy's matches into in-kernel maps and export them as a metric.",
            ),
            columns=[
                {"name": "Policy", "type": "string", "jsonPath": ".spec.policyRef.name"},
                {"name": "Metric", "type": "string", "jsonPath": ".spec.metric.name"},
                _READY,
                _NODES,
                {"name": "Series", "type": "integer", "jsonPath": ".status.series"},
                _AGE,
                _REASON,
            ],
        ),
        "nodereports.weir.dev.yaml": _crd(
            kind="NodeReport",
            plural="nodereports",
            short_names=[],
            schema=_root(
                NodeReportSpec,
                NodeReportStatus,
                "What one node's agent runs: per policy and hook, verifier state and savings.",
            ),
            columns=[
                {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
                _READY,
                {"name": "Kernel", "type": "string", "jsonPath": ".status.kernel"},
                _AGE,
            ],
        ),
    }
