"""AggregationRule: fold a policy's matches into in-kernel maps, export series.

Instead of one event per match, the kernel keeps a bounded map keyed by what
people ask questions about (namespace, pod, container, workload, node, binary,
an argument's value, the class of an address) and holds a count, a sum or a
histogram per key. The agent reads the map at scrape time and exports one
Prometheus metric named by the rule. When ``maxSeries`` keys exist, further
keys fold into a single overflow series that is counted and reported, never
silently lost.

groupBy entries are plain words (``namespace``, ``pod``, ``container``,
``workload``, ``image``, ``node``, ``binary``) or refer to an argument by its label:
``arg:LABEL`` (the value itself) or ``addressClass:LABEL`` (loopback, private,
link_local, multicast or public, for a sock/sockaddr argument's destination).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema

from weir_api import API_VERSION, limits
from weir_api.meta import Model, cel
from weir_api.policies import KEY_PATTERN, ObjectMeta
from weir_api.statuses import AggregationRuleStatus

METADATA_KEYS = ("namespace", "pod", "container", "workload", "image", "node", "binary")
# The keys that come from the cgroup id (resolved in user space at scrape time).
CGROUP_KEYS = frozenset({"namespace", "pod", "container", "workload", "image"})
ADDRESS_CLASSES = ("loopback", "private", "link_local", "multicast", "public")
GROUP_BY_PATTERN = (
    r"^(namespace|pod|container|workload|image|node|binary|(arg|addressClass):[a-z_][a-z0-9_]*)$"
)
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
# What a duration's clock is keyed by on each side: the current thread, its process, or
# an argument's value (a pid, a socket's address, an fd).
DURATION_KEY_PATTERN = KEY_PATTERN
RESERVED_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
# Families the agent exports about itself; a rule may not take their names.
RESERVED_PREFIXES = ("weir_policy_", "weir_program_", "weir_agent_", "weir_operator_")

GroupKey = Annotated[str, Field(max_length=80, pattern=GROUP_BY_PATTERN)]


class PolicyRef(Model):
    """The TracingPolicy whose matches this rule aggregates."""

    name: str = Field(max_length=limits.MAX_NAME, description="The TracingPolicy's name.")


class Buckets(Model):
    """Histogram buckets."""

    model_config = {
        "json_schema_extra": cel(
            (
                "self.type != 'explicit' || (has(self.bounds) && size(self.bounds) > 0)",
                "explicit buckets need bounds",
            ),
            (
                "self.type == 'explicit' || !has(self.bounds) || size(self.bounds) == 0",
                "bounds apply to explicit buckets only",
            ),
        )
    }

    type: Literal["exp2", "explicit"] = Field(
        default="exp2",
        description="exp2: powers of two (1, 2, 4, ... 2^63), computed in the kernel with no "
        "loop. explicit: the upper bounds in `bounds`.",
    )
    bounds: list[Annotated[int | float, WithJsonSchema({"type": "number"})]] = Field(
        default_factory=list,
        max_length=limits.MAX_BUCKETS,
        description="explicit only: strictly increasing upper bounds (le), +Inf is implied. "
        "Whole numbers for an argument's value; seconds for a duration (0.005 is 5 ms).",
    )


class DurationStart(Model):
    """Where a duration's clock starts: another hook of the same policy."""

    hook: str = Field(
        max_length=4200,
        description="The hook that starts the clock, by id (as spec.hook): its matching "
        "calls record the time under their key. It may be this rule's own hook (e.g. "
        "sched_switch: the task switched out stops its clock, the one switched in starts "
        "its own).",
    )
    key: str = Field(
        default="thread",
        max_length=80,
        pattern=DURATION_KEY_PATTERN,
        description="What the start is recorded under: thread (default), process, or "
        "arg:LABEL (an integer argument of the start hook, e.g. next_pid).",
    )


class Value(Model):
    """What each series holds."""

    model_config = {
        "json_schema_extra": cel(
            (
                "self.type == 'count' || self.type == 'duration' || self.type == 'cpu_time' "
                "|| has(self.arg)",
                "sum and histogram need arg",
            ),
            (
                "(self.type != 'duration' && self.type != 'cpu_time') || !has(self.arg)",
                "a duration or cpu_time measures time; drop arg",
            ),
            (
                "self.type == 'histogram' || (self.type == 'duration' && "
                "(!has(self.output) || self.output == 'histogram')) || !has(self.buckets)",
                "buckets apply to histograms only (histogram, or duration with output histogram)",
            ),
            (
                "self.type != 'duration' || has(self.start)",
                "a duration needs start: the hook that starts the clock",
            ),
            (
                "self.type == 'duration' || (!has(self.start) && !has(self.key) && "
                "!has(self.output))",
                "start, key and output apply to duration only",
            ),
        )
    }

    type: Literal["count", "sum", "histogram", "duration", "cpu_time"] = Field(
        default="count",
        description="count: matches. sum: total of an integer arg. histogram: distribution of "
        "an integer arg. duration: seconds from a call of the start hook to a call of this "
        "rule's hook with the same key, measured in the kernel. cpu_time: seconds the "
        "current thread ran on a CPU since this rule last saw it, from the kernel's own "
        "per-task accounting (what cgroup cpu.stat adds up), exported as a counter; on "
        "tracepoint:sched:sched_switch every slice is counted as the thread leaves the CPU, "
        "and a switch the hook did not see loses nothing.",
    )
    arg: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="The label of the integer arg to sum or bucket (e.g. bytes).",
    )
    buckets: Buckets | None = Field(default=None, description="Histogram buckets (exp2 default).")
    start: DurationStart | None = Field(
        default=None, description="duration only: the hook and key that start the clock."
    )
    key: str | None = Field(
        default=None,
        max_length=80,
        pattern=DURATION_KEY_PATTERN,
        description="duration only: what this rule's hook (which stops the clock) looks the "
        "start up by: thread (default), process, or arg:LABEL (e.g. prev_pid).",
    )
    output: Literal["histogram", "counter"] | None = Field(
        default=None,
        description="duration only: histogram (default: _bucket, _sum and _count in seconds) "
        "or counter (_total: the seconds added up, e.g. CPU time).",
    )

    def duration_key(self) -> str:
        return self.key or "thread"

    def seconds(self) -> bool:
        """Measures time: nanoseconds in the kernel, seconds when exported."""
        return self.type in ("duration", "cpu_time")

    def histogram(self) -> bool:
        """Exported as a histogram (a histogram, or a duration's default output)."""
        return self.type == "histogram" or (self.type == "duration" and self.output != "counter")


class Metric(Model):
    """The Prometheus metric this rule exports."""

    model_config = {
        "json_schema_extra": cel(
            (
                " && ".join(f"!self.name.startsWith('{p}')" for p in RESERVED_PREFIXES),
                "names starting with " + ", ".join(RESERVED_PREFIXES) + " are weir's own "
                "metrics; choose another name",
            ),
            (
                " && ".join(f"!self.name.endsWith('{s}')" for s in RESERVED_SUFFIXES),
                "drop the suffix: weir adds " + ", ".join(RESERVED_SUFFIXES) + " itself",
            ),
        )
    }

    name: str = Field(
        max_length=200,
        pattern=METRIC_NAME_PATTERN,
        description="Base name, e.g. weir_egress_bytes; counters get `_total` appended, "
        "histograms `_bucket`/`_sum`/`_count`.",
    )
    help: str = Field(default="", max_length=1024, description="The metric's HELP text.")


class AggregationRuleSpec(Model):
    """Which matches to aggregate, keyed by what, holding what, exported as what."""

    model_config = {
        "json_schema_extra": cel(
            (
                "!has(self.groupBy) || self.groupBy.all(k, self.groupBy.exists_one(j, j == k))",
                "groupBy lists a key twice; give each key once",
            ),
            (
                "!has(self.groupBy) || self.groupBy.filter(k, k.startsWith('arg:')).size()"
                f" <= {limits.MAX_GROUP_ARGS}",
                f"at most {limits.MAX_GROUP_ARGS} arg: keys per rule (the series key holds "
                f"{limits.MAX_GROUP_ARGS} argument values)",
            ),
            (
                "!has(self.value) || self.value.type != 'duration' || has(self.hook)",
                "a duration needs hook: the hook that stops the clock",
            ),
        )
    }

    policy_ref: PolicyRef = Field(description="The TracingPolicy to aggregate.")
    hook: str | None = Field(
        default=None,
        max_length=4200,
        description="Only this hook of the policy, by id: kprobe:CALL, kretprobe:CALL, "
        "tracepoint:SUBSYSTEM:EVENT, uprobe:PATH:SYMBOL. Unset: every hook.",
    )
    group_by: list[GroupKey] = Field(
        default_factory=list,
        max_length=limits.MAX_GROUP_BY,
        description="Keys of each series: namespace, pod, container, workload, image, node, "
        "binary, arg:LABEL, addressClass:LABEL. Empty: one series.",
    )
    value: Value = Field(
        default_factory=Value, description="count, sum, histogram, duration or cpu_time."
    )
    metric: Metric = Field(description="The exported metric.")
    max_series: int = Field(
        default=limits.MAX_SERIES_DEFAULT,
        ge=1,
        le=limits.MAX_SERIES_LIMIT,
        description="Bound on distinct keys in the kernel map; beyond it, events fold into one "
        "overflow series (label values `__overflow__`) and are counted in status.",
    )


class AggregationRule(Model):
    """An AggregationRule object (cluster-scoped)."""

    api_version: Literal["weir.dev/v1alpha1"] = API_VERSION
    kind: Literal["AggregationRule"] = "AggregationRule"
    metadata: ObjectMeta
    spec: AggregationRuleSpec
    status: AggregationRuleStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


def exported_names(rule: AggregationRuleSpec) -> list[str]:
    """Every sample name this rule's metric produces."""
    base = rule.metric.name
    if rule.value.histogram():
        return [f"{base}_bucket", f"{base}_sum", f"{base}_count"]
    return [f"{base}_total"]
