"""The names the operator and the node agents hand each other, in one place.

The operator renders each TracingPolicy into a ConfigMap that the agents read, and each
agent writes one NodeReport that the operator reads. Both sides import these names from
here, so neither can rename its half alone.
"""

from __future__ import annotations

from typing import Final

POLICY_LABEL: Final = "weir.dev/policy"
"""Label on every policy ConfigMap; its value is the policy's name."""
DIGEST_ANNOTATION: Final = "weir.dev/digest"
"""Annotation: a digest of the ConfigMap's policy text."""
GENERATION_ANNOTATION: Final = "weir.dev/generation"
"""Annotation: the policy's metadata.generation the ConfigMap was rendered from."""
POLICY_KEY: Final = "policy.yaml"
"""The ConfigMap data key holding the policy and its rules, one YAML stream."""

NODEREPORTS: Final = "nodereports"
"""The NodeReport plural, as in the API path."""


def configmap_name(policy: str) -> str:
    """The ConfigMap the operator renders a policy into."""
    return f"weir-policy-{policy}"


def nodereport_name(node: str) -> str:
    """The NodeReport an agent writes: one per node, named after the node."""
    return node
