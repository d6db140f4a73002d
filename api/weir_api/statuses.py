"""Status shapes: what weir writes back onto the objects users applied.

They follow Kubernetes conventions so ``kubectl wait --for=condition=Ready``,
Flux (kstatus) and Argo CD health checks can read them: ``observedGeneration``,
``conditions`` (Ready, Reconciling, Stalled, Degraded), plus node counts, a
bounded list of failing nodes with the verifier's own words, and savings totals.
Per-node data lives in NodeReports (one per node, one writer each); these
statuses are the operator's roll-up and have a single writer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from weir_api import limits
from weir_api.meta import Condition, Model

FailurePhase = Literal["compile", "verify", "attach"]


def _conditions_field() -> list[Condition]:
    return Field(
        default_factory=list,
        max_length=8,
        description="Ready, Reconciling, Stalled, Degraded (Kubernetes condition conventions).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def saved_ratio(raw_bytes: int, exported_bytes: int) -> float:
    """The one definition: 1 - exported/raw, clamped to [0, 1]; 0 when nothing was observed.
    raw is what a per-event JSON exporter would have emitted (see weir_agent.savings)."""
    if raw_bytes <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - exported_bytes / raw_bytes))


def percent(ratio: float) -> str:
    """For display: 99.99% rather than 100% unless it is exactly 1."""
    if ratio >= 1.0:
        return "100%"
    return f"{min(ratio * 100, 99.99):.2f}%"


class Savings(Model):
    """How much data the kernel held back. See docs/agent.md for the exact definitions."""

    observed: int = Field(default=0, ge=0, description="Hook invocations seen.")
    matched: int = Field(default=0, ge=0, description="Invocations that passed the selectors.")
    posted: int = Field(default=0, ge=0, description="Events sent to user space.")
    aggregated: int = Field(default=0, ge=0, description="Events folded into in-kernel maps.")
    dropped: int = Field(
        default=0, ge=0, description="Events lost: full ring buffer, map overflow, rate limit."
    )
    raw_bytes: int = Field(
        default=0,
        ge=0,
        description="What a per-event JSON exporter would have emitted: observed * this "
        "policy's event size.",
    )
    exported_bytes: int = Field(
        default=0, ge=0, description="What weir actually emitted (event lines, metric samples)."
    )
    saved_ratio: float = Field(
        default=0.0, ge=0.0, le=1.0, description="1 - exportedBytes / rawBytes (0 when raw is 0)."
    )
    saved: str = Field(
        default="", max_length=16, description="savedRatio as a percentage, for display."
    )

    def completed(self) -> Savings:
        """These counters with savedRatio and saved derived from rawBytes and exportedBytes."""
        ratio = saved_ratio(self.raw_bytes, self.exported_bytes)
        return self.model_copy(
            update={
                "saved_ratio": round(ratio, 6),
                "saved": percent(ratio) if self.raw_bytes else "",
            }
        )


class NodeCounts(Model):
    """How many nodes run this object's current generation."""

    targeted: int = Field(default=0, ge=0, description="Nodes the policy applies to.")
    ready: int = Field(default=0, ge=0, description="Nodes running the current generation.")
    failed: int = Field(default=0, ge=0, description="Nodes where a program failed.")
    pending: int = Field(default=0, ge=0, description="Nodes not yet on the current generation.")
    unknown: int = Field(
        default=0,
        ge=0,
        description="Nodes whose agent has not reported within the stale age (down, or cut "
        "off from the API server): what runs there is not known.",
    )
    missing: int = Field(
        default=0,
        ge=0,
        description="Nodes that should run a weir agent (its DaemonSet placed a pod there) and "
        "match the policy's nodeSelector, but have no NodeReport at all: the agent never "
        "started there, or failed before its first report.",
    )
    summary: str = Field(default="", max_length=32, description="ready/targeted, for display.")


class FailingNode(Model):
    """One node where the program did not run, in the verifier's (or compiler's) own words."""

    node: str = Field(max_length=limits.MAX_NAME, description="The node's name.")
    hook: str = Field(default="", max_length=4200, description="The hook that failed.")
    phase: FailurePhase = Field(description="compile, verify or attach.")
    message: str = Field(default="", max_length=limits.MAX_MESSAGE, description="The error.")
    verifier_log: str = Field(
        default="",
        max_length=limits.MAX_VERIFIER_LOG,
        description="The last lines of the verifier log.",
    )


class TracingPolicyStatus(Model):
    """The operator's roll-up of every node's report for this policy."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The generation this status describes."
    )
    conditions: list[Condition] = _conditions_field()
    nodes: NodeCounts = Field(default_factory=NodeCounts, description="Node counts.")
    missing_nodes: list[str] = Field(
        default_factory=list,
        max_length=limits.MAX_FAILING_NODES,
        description=f"At most {limits.MAX_FAILING_NODES} of the nodes counted as missing, by name.",
    )
    failing_nodes: list[FailingNode] = Field(
        default_factory=list,
        max_length=limits.MAX_FAILING_NODES,
        description=f"At most {limits.MAX_FAILING_NODES} failing nodes, with the reason.",
    )
    savings: Savings = Field(default_factory=Savings, description="Totals over all nodes.")


class AggregationRuleStatus(Model):
    """The operator's roll-up for an AggregationRule."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The generation this status describes."
    )
    conditions: list[Condition] = _conditions_field()
    nodes: NodeCounts = Field(default_factory=NodeCounts, description="Node counts.")
    series: int = Field(default=0, ge=0, description="Series currently held, over all nodes.")
    overflow_events: int = Field(
        default=0,
        ge=0,
        description="Events folded into the overflow series because maxSeries was reached.",
    )
