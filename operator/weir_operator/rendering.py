"""A TracingPolicy and its AggregationRules → the ConfigMap agents read. Pure.

One ConfigMap per policy, in the operator's namespace: ``policy.yaml`` holds the
normalised policy (apiVersion, kind, name, generation, uid, spec) followed by
every valid AggregationRule that references it, as one YAML stream the agent
parses exactly like a file in ``--policies DIR``. A digest of that text, the
policy's generation and the label ``weir.dev/policy`` make it cheap to tell
whether anything changed; the ownerReference makes the API server delete it
with the policy.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from weir_api import handoff
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy


def render(
    policy: TracingPolicy, rules: list[AggregationRule], *, namespace: str
) -> dict[str, Any]:
    documents = [
        {
            "apiVersion": policy.api_version,
            "kind": "TracingPolicy",
            "metadata": {
                "name": policy.name,
                "generation": policy.metadata.generation,
                **({"uid": policy.metadata.uid} if policy.metadata.uid else {}),
            },
            "spec": policy.spec.to_wire(),
        }
    ]
    for rule in sorted(rules, key=lambda r: r.name):
        documents.append(
            {
                "apiVersion": rule.api_version,
                "kind": "AggregationRule",
                "metadata": {"name": rule.name, "generation": rule.metadata.generation},
                "spec": rule.spec.to_wire(),
            }
        )
    text = yaml.safe_dump_all(documents, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    owner = {
        "apiVersion": policy.api_version,
        "kind": "TracingPolicy",
        "name": policy.name,
        "uid": policy.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": handoff.configmap_name(policy.name),
            "namespace": namespace,
            "labels": {
                handoff.POLICY_LABEL: policy.name,
                "app.kubernetes.io/managed-by": "weir-operator",
            },
            "annotations": {
                handoff.DIGEST_ANNOTATION: digest,
                handoff.GENERATION_ANNOTATION: str(policy.metadata.generation),
            },
            "ownerReferences": [owner],
        },
        "data": {handoff.POLICY_KEY: text},
    }


def unchanged(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when the stored ConfigMap already says what we would write."""
    if current is None:
        return False
    meta = current.get("metadata") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    want = desired["metadata"]
    return bool(
        annotations.get(handoff.DIGEST_ANNOTATION) == want["annotations"][handoff.DIGEST_ANNOTATION]
        and annotations.get(handoff.GENERATION_ANNOTATION)
        == want["annotations"][handoff.GENERATION_ANNOTATION]
        and labels.get(handoff.POLICY_LABEL) == want["labels"][handoff.POLICY_LABEL]
    )
