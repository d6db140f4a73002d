"""The NodeReport: what this node runs, built from the engine's state. Pure.

Standalone the agent writes it to a file; in a cluster it publishes the same
object. It is rewritten only when its content changed: conditions keep their
``lastTransitionTime`` while their status stays the same, and counters are
part of the content (the writer rate-limits how often they are published).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from weir_agent.runtime.engine import Engine, HookSnapshot, PolicyState, PolicyTotals
from weir_api.meta import Condition
from weir_api.policies import ObjectMeta
from weir_api.reports import (
    AggregationReport,
    NodeReport,
    NodeReportSpec,
    NodeReportStatus,
    PolicyReport,
    ProgramReport,
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_report(
    state: PolicyState, hooks: Sequence[HookSnapshot], totals: PolicyTotals
) -> PolicyReport:
    programs: dict[str, ProgramReport] = {h.hook: h.report for h in hooks}
    programs.update(state.failures)
    failed = bool(state.failures or state.problems)
    if state.problems and not state.failures:
        message = "; ".join(map(str, state.problems))[:4000]  # one line, for a condition
        programs["(policy)"] = ProgramReport(
            hook="(policy)", state="failed", failure_phase="compile", message=message
        )
    aggregations = []
    for hook in hooks:
        for agg, series in hook.aggregations:
            overflow = sum(v.count for k, v in series.items() if k[-1])
            aggregations.append(
                AggregationReport(
                    name=agg.rule,
                    generation=state.running_generation,
                    series=sum(1 for k in series if not k[-1]),
                    overflow_events=overflow,
                )
            )
    return PolicyReport(
        name=state.name,
        generation=state.generation,
        running_generation=state.running_generation,
        digest=state.digest,
        state="Failed" if failed else "Ready",
        programs=sorted(programs.values(), key=lambda p: p.hook),
        aggregations=_merge(aggregations),
        savings=totals.savings,
    )


def _merge(reports: list[AggregationReport]) -> list[AggregationReport]:
    merged: dict[str, AggregationReport] = {}
    for report in reports:
        if report.name in merged:
            existing = merged[report.name]
            existing.series += report.series
            existing.overflow_events += report.overflow_events
        else:
            merged[report.name] = report.model_copy()
    return [merged[name] for name in sorted(merged)]


def node_report(
    *,
    node: str,
    kernel: str,
    headers: str,
    agent_version: str,
    policies: Sequence[PolicyReport],
    previous: NodeReport | None,
    timestamp: str | None = None,
) -> NodeReport:
    failed = [p.name for p in policies if p.state == "Failed"]
    ready = Condition(
        type="Ready",
        status="False" if failed else "True",
        last_transition_time=timestamp or now(),
        reason="ProgramsFailed" if failed else "AllPoliciesRunning",
        message=f"failing: {', '.join(failed)}" if failed else f"{len(policies)} policies running",
    )
    degraded = Condition(
        type="Degraded",
        status="True" if failed else "False",
        last_transition_time=timestamp or now(),
        reason="ProgramsFailed" if failed else "NoFailures",
        message=ready.message if failed else "",
    )
    conditions = [_keep_transition(c, previous) for c in (ready, degraded)]
    return NodeReport(
        metadata=ObjectMeta(name=node),
        spec=NodeReportSpec(node_name=node),
        status=NodeReportStatus(
            conditions=conditions,
            agent_version=agent_version,
            kernel=kernel,
            headers=headers,
            policies=sorted(policies, key=lambda p: p.name),
        ),
    )


def _keep_transition(condition: Condition, previous: NodeReport | None) -> Condition:
    if previous is None or previous.status is None:
        return condition
    for old in previous.status.conditions:
        if old.type == condition.type and old.status == condition.status:
            return condition.model_copy(update={"last_transition_time": old.last_transition_time})
    return condition


def build(
    *,
    node: str,
    kernel: str,
    headers: str,
    agent_version: str,
    states: Mapping[str, PolicyState],
    snapshots: Sequence[HookSnapshot],
    totals: Mapping[str, PolicyTotals],
    previous: NodeReport | None,
    not_targeted: Mapping[str, int] | None = None,
) -> NodeReport:
    reports = [
        policy_report(state, [h for h in snapshots if h.policy == name], totals[name])
        for name, state in sorted(states.items())
    ]
    reports += [
        PolicyReport(
            name=name, generation=generation, running_generation=generation, state="NotTargeted"
        )
        for name, generation in sorted((not_targeted or {}).items())
    ]
    return node_report(
        node=node,
        kernel=kernel,
        headers=headers,
        agent_version=agent_version,
        policies=reports,
        previous=previous,
    )


def from_engine(
    core: Engine,
    *,
    node: str,
    kernel: str,
    headers: str,
    agent_version: str,
    previous: NodeReport | None,
    not_targeted: Mapping[str, int] | None = None,
) -> NodeReport:
    """The NodeReport for what the engine runs now (one read of the kernel maps)."""
    snapshots = core.snapshot()
    return build(
        not_targeted=not_targeted,
        node=node,
        kernel=kernel,
        headers=headers,
        agent_version=agent_version,
        states=core.policies,
        snapshots=snapshots,
        totals=core.savings(snapshots),
        previous=previous,
    )


def with_pending(report: NodeReport, policies: Mapping[str, int]) -> NodeReport:
    """``report`` plus a Pending entry for each policy (name -> generation) the engine does
    not run yet: written before a start-up or a change is compiled, so nobody reads the last
    run's Ready meanwhile."""
    assert report.status is not None
    known = {p.name for p in report.status.policies}
    pending = [
        PolicyReport(name=name, generation=generation, state="Pending")
        for name, generation in sorted(policies.items())
        if name not in known
    ]
    if not pending:
        return report
    status = report.status.model_copy(
        update={"policies": sorted([*report.status.policies, *pending], key=lambda p: p.name)}
    )
    return report.model_copy(update={"status": status})


def stopped(
    report: NodeReport, *, timestamp: str | None = None, pinned: str | None = None
) -> NodeReport:
    """The report an exiting agent leaves behind. Detached (``pinned`` None): no policy
    runs and no program id is claimed. Left attached (``pinned``: where the hooks are
    pinned): every policy runs on as it did, with its programs, until the next agent adopts
    them, and the operator goes on counting the node as running them. Counters stay as
    last read either way."""
    assert report.status is not None
    at = timestamp or now()
    if pinned is None:
        policies = [
            p.model_copy(update={"state": "Pending", "running_generation": 0, "programs": []})
            if p.state != "NotTargeted"
            else p
            for p in report.status.policies
        ]
        reason, message = "AgentStopped", "the agent exited; every program is detached"
    else:
        policies = list(report.status.policies)
        hooks = sum(len(p.programs) for p in policies if p.state != "NotTargeted")
        reason = "AgentStoppedHooksAttached"
        message = (
            f"the agent exited; its {hooks} hooks stay attached and counting, pinned under "
            f"{pinned}, until the next agent adopts them"
        )
    conditions = [
        Condition(
            type="Ready", status="False", last_transition_time=at, reason=reason, message=message
        ),
        Condition(
            type="Degraded", status="False", last_transition_time=at, reason=reason, message=""
        ),
    ]
    status = report.status.model_copy(update={"policies": policies, "conditions": conditions})
    return report.model_copy(update={"status": status})
