"""NodeReport: one object per node, written by that node's agent only.

Why not let every agent patch each policy's status: with N nodes that is N
full-object writes per interval to etcd and to every watcher (Argo CD
included), and the object grows with N. A small object per node, written only
when something changed, plus one roll-up writer (the operator) scales to
thousands of nodes. In standalone mode the agent writes the same object to a
file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from weir_api import API_VERSION, limits
from weir_api.meta import Condition, Model
from weir_api.policies import ObjectMeta
from weir_api.statuses import FailurePhase, Savings

ProgramState = Literal["pending", "compiled", "verified", "attached", "failed"]
HeadersState = Literal["btf", "host", "kheaders", "baked", "fallback", "missing"]


class ProgramReport(Model):
    """One BPF program: one hook of one policy on this node."""

    hook: str = Field(max_length=4200, description="The hook id, e.g. kprobe:tcp_sendmsg.")
    state: ProgramState = Field(description="How far the program got.")
    failure_phase: FailurePhase | None = Field(
        default=None, description="Where it failed: compile, verify or attach."
    )
    message: str = Field(default="", max_length=limits.MAX_MESSAGE, description="Why it failed.")
    verifier_log: str = Field(
        default="",
        max_length=limits.MAX_VERIFIER_LOG,
        description="The verifier log's last lines (on failure; on success its summary).",
    )
    instructions: int = Field(default=0, ge=0, description="Instructions the verifier processed.")
    program_ids: list[int] = Field(
        default_factory=list,
        max_length=4,
        description="Kernel program ids (the hook's stub, then its current program), for "
        "`bpftool prog show id N`.",
    )
    translated_bytes: int = Field(default=0, ge=0, description="BPF bytecode size.")
    jited_bytes: int = Field(default=0, ge=0, description="JIT-compiled size.")
    compile_ms: float = Field(default=0.0, ge=0, description="Compile time (ms).")
    load_ms: float = Field(default=0.0, ge=0, description="Verifier load time (ms).")


class AggregationReport(Model):
    """One AggregationRule's map on this node."""

    name: str = Field(max_length=limits.MAX_NAME, description="The AggregationRule's name.")
    generation: int = Field(default=0, ge=0, description="The rule generation loaded.")
    series: int = Field(default=0, ge=0, description="Keys currently in the map.")
    overflow_events: int = Field(
        default=0, ge=0, description="Events folded into the overflow series."
    )


class PolicyReport(Model):
    """One policy on this node."""

    name: str = Field(max_length=limits.MAX_NAME, description="The TracingPolicy's name.")
    generation: int = Field(
        default=0, ge=0, description="The latest generation this node has seen."
    )
    running_generation: int = Field(
        default=0,
        ge=0,
        description="The generation whose programs run; lags generation when the latest "
        "failed (the previous version keeps running).",
    )
    digest: str = Field(default="", max_length=128, description="Digest of what was loaded.")
    state: Literal["Ready", "Failed", "Pending", "NotTargeted"] = Field(
        description="Ready: every program attached. Failed: some program failed (the previous "
        "version, if any, keeps running). NotTargeted: nodeSelector excludes this node."
    )
    programs: list[ProgramReport] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Per hook.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["hook"]},
    )
    aggregations: list[AggregationReport] = Field(
        default_factory=list,
        max_length=64,
        description="Per AggregationRule of this policy.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    savings: Savings = Field(default_factory=Savings, description="Counters on this node.")


class NodeReportSpec(Model):
    """Which node this report is about."""

    node_name: str = Field(max_length=limits.MAX_NAME, description="The node's name.")


class NodeReportStatus(Model):
    """What runs on the node, as its agent last saw it."""

    observed_generation: int | None = Field(default=None, ge=0, description="Unused; 0.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Ready when every targeted policy runs; Degraded when one failed.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    heartbeat_time: str | None = Field(
        default=None,
        max_length=64,
        description="When the agent last published (RFC 3339); it publishes at least every "
        "--heartbeat-interval, so an old time means the agent is not running.",
    )
    agent_version: str = Field(default="", max_length=64, description="weir version.")
    kernel: str = Field(default="", max_length=256, description="uname -r of the node.")
    headers: HeadersState | None = Field(
        default=None,
        description="Kernel headers bcc compiles against (programs take only uapi definitions "
        "from them; every kernel struct is read at offsets from the kernel's BTF): btf (the "
        "image's generic headers, on a kernel with BTF), host (the node's), kheaders "
        "(CONFIG_IKHEADERS), baked (in the image for this release), fallback (another "
        "release's, linked by make setup) or missing (nothing compiles).",
    )
    policies: list[PolicyReport] = Field(
        default_factory=list,
        max_length=512,
        description="Every policy the agent knows.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class NodeReport(Model):
    """A NodeReport object (cluster-scoped, named after its node)."""

    api_version: Literal["weir.dev/v1alpha1"] = API_VERSION
    kind: Literal["NodeReport"] = "NodeReport"
    metadata: ObjectMeta
    spec: NodeReportSpec
    status: NodeReportStatus | None = None
