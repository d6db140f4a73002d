"""NodeReports → TracingPolicy and AggregationRule status. Pure.

For a policy of generation G, each node that reports it counts as:
ready (running G, every program attached), failed (G failed to compile, verify
or attach there: the previous version keeps running), pending (not at G yet, or
not reporting the policy), or not targeted (its nodeSelector excludes the node).
Conditions follow Kubernetes conventions, each with observedGeneration G:

- Stalled: the spec is invalid (field path and message); nothing is rendered.
- Ready: every targeted node runs G.
- Reconciling: some targeted nodes are not at G yet.
- Degraded: some nodes failed; the message names how many and the first failure
  in the verifier's own words.

A node whose NodeReport heartbeat is older than the stale age counts as
unknown: targeted, never ready (its agent may be gone, programs detached).

A condition keeps its lastTransitionTime while its status stays the same, so an
unchanged roll-up is byte-identical and is not written.

The reports come as a ``ReportIndex``: parsed once when a report changes, kept by policy,
so a status costs one look at each node's entry for that policy, not a parse and a search
of every report; ``ReportIndex.put`` says which policies a changed report touches.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from weir_api import limits
from weir_api.meta import Condition, LabelSelector
from weir_api.problems import Problem
from weir_api.reports import NodeReport, PolicyReport
from weir_api.statuses import (
    AggregationRuleStatus,
    FailingNode,
    NodeCounts,
    Savings,
    TracingPolicyStatus,
)


def _condition(
    type_: str,
    true: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
    previous: Sequence[Condition],
) -> Condition:
    status = "True" if true else "False"
    since = next(
        (c.last_transition_time for c in previous if c.type == type_ and c.status == status), now
    )
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[: limits.MAX_MESSAGE],
        observed_generation=generation,
        last_transition_time=since,
    )


def _conditions(
    counts: NodeCounts,
    *,
    stalled: bool,
    problems_text: str,
    ready_reason: str,
    ready_message: str,
    degraded_message: str,
    generation: int,
    now: str,
    before: Sequence[Condition],
    operator_error: str = "",
) -> list[Condition]:
    """Ready, Reconciling, Degraded and Stalled, as every weir object reports them."""
    ready = (
        not stalled
        and not operator_error
        and counts.targeted > 0
        and counts.ready == counts.targeted
    )
    degraded = counts.failed > 0 or bool(operator_error)
    if operator_error:
        degraded_reason, degraded_message = "OperatorError", operator_error
    else:
        degraded_reason = "NodesFailed" if counts.failed else "NoFailures"
    pending = f"{counts.pending} of {counts.targeted} nodes not at generation {generation}"
    return [
        _condition("Ready", ready, ready_reason, ready_message, generation, now, before),
        _condition(
            "Reconciling",
            not stalled and counts.pending > 0,
            "InvalidSpec" if stalled else "NodesPending" if counts.pending else "Settled",
            pending if counts.pending else "",
            generation,
            now,
            before,
        ),
        _condition(
            "Degraded",
            degraded,
            degraded_reason,
            degraded_message,
            generation,
            now,
            before,
        ),
        _condition(
            "Stalled",
            stalled,
            "InvalidSpec" if stalled else "ValidSpec",
            problems_text,
            generation,
            now,
            before,
        ),
    ]


def _seconds(timestamp: str) -> float:
    stamp = datetime.datetime.fromisoformat(timestamp)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def stale(heartbeat: str | None, *, now: str, stale_after: float | None) -> bool:
    """A report's agent has not published for longer than ``stale_after`` seconds. A report
    without a heartbeat (from an agent before heartbeats) is taken at its word."""
    if stale_after is None or not heartbeat:
        return False
    try:
        return _seconds(now) - _seconds(heartbeat) > stale_after
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Expected:
    """The nodes that should run a weir agent (where its DaemonSet placed a pod), with
    their labels, so that a node whose agent never reported still counts."""

    nodes: Mapping[str, Mapping[str, str]]

    def targeted_by(self, selector: LabelSelector | None) -> list[str]:
        return sorted(
            node
            for node, labels in self.nodes.items()
            if selector is None or selector.matches(dict(labels))
        )


SAVINGS = ("observed", "matched", "posted", "aggregated", "dropped", "raw_bytes", "exported_bytes")


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """What the roll-up keeps of one policy on one node (a PolicyReport, without what no
    status shows: a few hundred bytes, not the report's kilobytes, times nodes x policies)."""

    state: str
    generation: int
    running_generation: int
    savings: tuple[int, ...]  # in SAVINGS order
    failure: FailingNode | None  # the first failed program (node left empty)
    aggregations: tuple[tuple[str, int, int], ...]  # (rule, series, overflow events)

    @classmethod
    def of(cls, policy: PolicyReport) -> Entry:
        program = next((p for p in policy.programs if p.state == "failed"), None)
        failure = None
        if policy.state == "Failed":
            failure = FailingNode(
                node="",
                hook=program.hook if program else "",
                phase=(program.failure_phase or "compile") if program else "compile",
                message=program.message if program else "",
                verifier_log=program.verifier_log if program else "",
            )
        return cls(
            state=policy.state,
            generation=policy.generation,
            running_generation=policy.running_generation,
            savings=tuple(getattr(policy.savings, field) for field in SAVINGS),
            failure=failure,
            aggregations=tuple((a.name, a.series, a.overflow_events) for a in policy.aggregations),
        )


class ReportIndex:
    """NodeReports as the roll-up needs them: each report's node and heartbeat, and each
    policy's entries by report name."""

    def __init__(self, reports: Sequence[NodeReport] = ()) -> None:
        self.heartbeats: dict[str, str | None] = {}  # report -> its heartbeat time
        self.node_of: dict[str, str] = {}  # report -> the node it is for
        self.policies_of: dict[str, frozenset[str]] = {}  # report -> its policies
        self.reports_for: collections.Counter[str] = collections.Counter()  # node -> reports
        self.by_policy: dict[str, dict[str, Entry]] = {}
        self._stale: tuple[tuple[str, float | None], frozenset[str]] | None = None
        for report in reports:
            self.put(report)

    @property
    def nodes(self) -> collections.abc.KeysView[str]:
        """The nodes the reports are for."""
        return self.reports_for.keys()

    def __len__(self) -> int:
        return len(self.node_of)

    def put(self, report: NodeReport) -> set[str]:
        """Add or replace a report; the policies whose entries it changed."""
        name = report.metadata.name
        policies = report.status.policies if report.status else []
        after = {p.name: Entry.of(p) for p in policies}
        before = {p: self.by_policy[p][name] for p in self.policies_of.get(name, ())}
        for policy in before.keys() - after.keys():
            self._drop(policy, name)
        for policy, entry in after.items():
            self.by_policy.setdefault(policy, {})[name] = entry
        self.policies_of[name] = frozenset(after)
        self._forget_node(name)
        self.node_of[name] = report.spec.node_name or name
        self.reports_for[self.node_of[name]] += 1
        heartbeat = report.status.heartbeat_time if report.status else None
        if self.heartbeats.get(name) != heartbeat or name not in self.heartbeats:
            self.heartbeats[name] = heartbeat
            self._stale = None
        return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}

    def remove(self, name: str) -> set[str]:
        """Drop a report; the policies it had entries for."""
        if name not in self.node_of:
            return set()
        policies = self.policies_of.pop(name)
        for policy in policies:
            self._drop(policy, name)
        self._forget_node(name)
        del self.node_of[name], self.heartbeats[name]
        self._stale = None
        return set(policies)

    def _forget_node(self, name: str) -> None:
        node = self.node_of.get(name)
        if node is not None:
            self.reports_for[node] -= 1
            if self.reports_for[node] <= 0:
                del self.reports_for[node]

    def _drop(self, policy: str, name: str) -> None:
        entries = self.by_policy.get(policy, {})
        entries.pop(name, None)
        if not entries:
            self.by_policy.pop(policy, None)

    def stale_names(self, *, now: str, stale_after: float | None) -> frozenset[str]:
        """The reports whose agent has not published for longer than ``stale_after``
        (worked out once per ``now``)."""
        if self._stale is None or self._stale[0] != (now, stale_after):
            found = frozenset(
                name
                for name, heartbeat in self.heartbeats.items()
                if stale(heartbeat, now=now, stale_after=stale_after)
            )
            self._stale = ((now, stale_after), found)
        return self._stale[1]


def _count(
    name: str,
    generation: int,
    reports: Sequence[NodeReport] | ReportIndex,
    *,
    now: str = "",
    stale_after: float | None = None,
    expected: Expected | None = None,
    selector: LabelSelector | None = None,
) -> tuple[NodeCounts, list[FailingNode], list[Entry], list[str]]:
    index = reports if isinstance(reports, ReportIndex) else ReportIndex(reports)
    failing: list[FailingNode] = []
    current: list[Entry] = []
    reporting = index.nodes
    missing = [
        node
        for node in (expected.targeted_by(selector) if expected else [])
        if node not in reporting
    ]
    stale_names = index.stale_names(now=now, stale_after=stale_after)
    entries = index.by_policy.get(name, {})
    # Reports without an entry for this policy: targeted, pending (or unknown when stale).
    without = len(index) - len(entries)
    without_stale = len(stale_names - entries.keys())
    targeted = len(missing) + without
    unknown = without_stale
    pending = without - without_stale
    ready = failed = 0
    for report_name in sorted(entries):
        mine = entries[report_name]
        if mine.state == "NotTargeted":
            continue
        targeted += 1
        if report_name in stale_names:
            unknown += 1
            continue
        if mine.generation < generation:
            pending += 1
            continue
        current.append(mine)
        if mine.state == "Failed":
            failed += 1
            if len(failing) < limits.MAX_FAILING_NODES and mine.failure is not None:
                failing.append(mine.failure.model_copy(update={"node": report_name}))
        elif mine.state == "Ready" and mine.running_generation >= generation:
            ready += 1
        else:
            pending += 1
    counts = NodeCounts(
        targeted=targeted,
        ready=ready,
        failed=failed,
        pending=pending,
        unknown=unknown,
        missing=len(missing),
        summary=f"{ready}/{targeted}",
    )
    return counts, failing, current, missing


def missing_message(counts: NodeCounts, missing: Sequence[str]) -> str:
    shown = ", ".join(missing[: limits.MAX_FAILING_NODES])
    extra = len(missing) - limits.MAX_FAILING_NODES
    more = f" and {extra} more" if extra > 0 else ""
    return (
        f"{counts.missing} of {counts.targeted} nodes have no weir agent report yet: "
        f"{shown}{more}; check the agent pods there (kubectl get pods -o wide -l "
        "app.kubernetes.io/component=agent -A)"
    )


def policy_status(
    *,
    name: str,
    generation: int,
    problems: Sequence[Problem],
    reports: Sequence[NodeReport] | ReportIndex,
    previous: TracingPolicyStatus | None,
    now: str,
    operator_error: str = "",
    stale_after: float | None = None,
    expected: Expected | None = None,
    selector: LabelSelector | None = None,
) -> TracingPolicyStatus:
    """``operator_error``: what the operator itself could not do for this policy (write
    its ConfigMap, say); it makes the policy Degraded and not Ready, whatever the nodes say.
    ``expected``: the nodes that should run an agent (None: count reports only);
    ``selector``: the policy's nodeSelector, which picks among them."""
    before = previous.conditions if previous else []
    index = reports if isinstance(reports, ReportIndex) else ReportIndex(reports)
    counts, failing, _, missing = _count(
        name,
        generation,
        index,
        now=now,
        stale_after=stale_after,
        expected=expected,
        selector=selector,
    )
    # Savings count every node's running version, current or not.
    sums = [0] * len(SAVINGS)
    for mine in index.by_policy.get(name, {}).values():
        for i, value in enumerate(mine.savings):
            sums[i] += value
    totals = Savings(**dict(zip(SAVINGS, sums, strict=True))).completed()
    stalled = bool(problems)
    text = "; ".join(str(p) for p in problems[:5])
    degraded_message = _degraded(counts, failing)
    if stalled:
        ready_reason, ready_message = "InvalidSpec", text
    elif operator_error:
        ready_reason, ready_message = "OperatorError", operator_error
    else:
        ready_reason, ready_message = _readiness(
            counts, generation, degraded_message, missing, stale_after
        )
    conditions = _conditions(
        counts,
        stalled=stalled,
        problems_text=text,
        ready_reason=ready_reason,
        ready_message=ready_message,
        degraded_message=degraded_message,
        generation=generation,
        now=now,
        before=before,
        operator_error="" if stalled else operator_error,
    )
    return TracingPolicyStatus(
        observed_generation=generation,
        conditions=conditions,
        nodes=counts,
        missing_nodes=missing[: limits.MAX_FAILING_NODES],
        failing_nodes=failing,
        savings=totals,
    )


def rule_status(
    *,
    name: str,
    policy: str,
    generation: int,
    policy_generation: int | None,
    problems: Sequence[Problem],
    reports: Sequence[NodeReport] | ReportIndex,
    previous: AggregationRuleStatus | None,
    now: str,
    stale_after: float | None = None,
    expected: Expected | None = None,
    selector: LabelSelector | None = None,
) -> AggregationRuleStatus:
    before = previous.conditions if previous else []
    stalled = bool(problems)
    text = "; ".join(str(p) for p in problems[:5])
    counts = NodeCounts(summary="0/0")
    series = overflow = 0
    missing: list[str] = []
    if policy_generation is not None:
        counts, _, current, missing = _count(
            policy,
            policy_generation,
            reports,
            now=now,
            stale_after=stale_after,
            expected=expected,
            selector=selector,
        )
        for entry in current:
            for rule, rule_series, rule_overflow in entry.aggregations:
                if rule == name:
                    series += rule_series
                    overflow += rule_overflow
    ready = not stalled and counts.targeted > 0 and counts.ready == counts.targeted
    failed = (
        f"{counts.failed} of {counts.targeted} nodes failed to run TracingPolicy {policy!r}; "
        f"see its status"
        if counts.failed
        else ""
    )
    if stalled:
        ready_reason = "InvalidSpec"
    elif ready:
        ready_reason = "AllNodesReady"
    elif counts.failed:
        ready_reason = "NodesFailed"
    elif counts.unknown:
        ready_reason = "NodesUnknown"
    elif counts.missing:
        ready_reason = "NodesMissing"
    else:
        ready_reason = "NodesPending"
    conditions = _conditions(
        counts,
        stalled=stalled,
        problems_text=text,
        ready_reason=ready_reason,
        ready_message=text
        or failed
        or (missing_message(counts, missing) if counts.missing else counts.summary),
        degraded_message=failed,
        generation=generation,
        now=now,
        before=before,
    )
    return AggregationRuleStatus(
        observed_generation=generation,
        conditions=conditions,
        nodes=counts,
        series=series,
        overflow_events=overflow,
    )


def _degraded(counts: NodeCounts, failing: Sequence[FailingNode]) -> str:
    """What the Degraded condition says: how many nodes failed, and the first one's words."""
    if not failing:
        return ""
    first = failing[0]
    # The verifier's last line says why; a compile failure has only its message.
    last = (first.verifier_log.strip().splitlines() or [""])[-1]
    words = f": {last}" if last and last not in first.message else ""
    return (
        f"{counts.failed} of {counts.targeted} nodes failed; first: node {first.node} "
        f"{first.hook} {first.phase}: {first.message}{words}"
    )


def _readiness(
    counts: NodeCounts,
    generation: int,
    degraded_message: str,
    missing: Sequence[str],
    stale_after: float | None,
) -> tuple[str, str]:
    """The Ready condition's reason and message from the nodes' counts (a valid spec)."""
    if counts.targeted == 0:
        return "NoNodes", "no node reports this policy yet"
    if counts.ready == counts.targeted:
        runs = "node runs" if counts.ready == 1 else "nodes run"
        return "AllNodesReady", f"{counts.ready} {runs} generation {generation}"
    if counts.failed:
        return "NodesFailed", degraded_message
    if counts.unknown:
        return (
            "NodesUnknown",
            f"{counts.unknown} of {counts.targeted} nodes have not reported for more than "
            f"{stale_after:.0f}s; is the weir agent running there?",
        )
    if counts.missing:
        return "NodesMissing", missing_message(counts, missing)
    return "NodesPending", f"{counts.pending} of {counts.targeted} nodes pending"
