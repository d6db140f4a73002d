"""The operator's pure parts: rendering ConfigMaps and rolling NodeReports up."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import EXAMPLES
from weir_api import documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import ObjectMeta, TracingPolicy
from weir_api.problems import Problem
from weir_api.reports import (
    NodeReport,
    NodeReportSpec,
    NodeReportStatus,
    PolicyReport,
    ProgramReport,
)
from weir_api.statuses import Savings
from weir_operator import rendering, summaries


def example(path: Path) -> tuple[TracingPolicy, list[AggregationRule]]:
    parsed = documents.parse_text(path.read_text(), source=path.name)
    policy = next(p.obj for p in parsed if isinstance(p.obj, TracingPolicy))
    return policy, [p.obj for p in parsed if isinstance(p.obj, AggregationRule)]


def test_rendered_configmap_round_trips_and_is_stable() -> None:
    policy, rules = example(EXAMPLES / "file-opens.yaml")
    policy.metadata.uid, policy.metadata.generation = "u-1", 3
    cm = rendering.render(policy, rules, namespace="weir-system")
    assert cm["metadata"]["name"] == "weir-policy-file-opens-etc"
    assert cm["metadata"]["labels"]["weir.dev/policy"] == "file-opens-etc"
    assert cm["metadata"]["annotations"]["weir.dev/generation"] == "3"
    assert cm["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "name": "file-opens-etc",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    parsed = documents.parse_text(cm["data"]["policy.yaml"], source="cm")
    assert [(p.kind, p.name, p.ok) for p in parsed] == [
        ("TracingPolicy", "file-opens-etc", True),
        ("AggregationRule", "file-opens-etc", True),
    ]
    assert parsed[0].obj.spec == policy.spec  # type: ignore[union-attr]
    again = rendering.render(policy, list(reversed(rules)), namespace="weir-system")
    assert rendering.unchanged(again, cm)
    policy.metadata.generation = 4
    assert not rendering.unchanged(rendering.render(policy, rules, namespace="weir-system"), cm)
    assert not rendering.unchanged(None, cm)
    assert yaml.safe_load_all(cm["data"]["policy.yaml"])


def node(
    name: str,
    *,
    state: str = "Ready",
    generation: int = 2,
    running: int = 2,
    failure: str = "",
    savings: Savings | None = None,
) -> NodeReport:
    programs = [
        ProgramReport(
            hook="tracepoint:a:b",
            state="failed" if failure else "attached",
            failure_phase="verify" if failure else None,
            message="Permission denied" if failure else "",
            verifier_log=failure,
        )
    ]
    policy = PolicyReport(
        name="p",
        generation=generation,
        running_generation=running,
        state=state,  # type: ignore[arg-type]
        programs=programs,
        savings=savings or Savings(),
    )
    return NodeReport(
        metadata=ObjectMeta(name=name),
        spec=NodeReportSpec(node_name=name),
        status=NodeReportStatus(policies=[policy]),
    )


def test_rollup_of_200_nodes_is_correct_and_bounded() -> None:
    reports = [
        node(f"n{i:03}", savings=Savings(observed=100, raw_bytes=1000, exported_bytes=10))
        for i in range(170)
    ]
    reports += [
        node(f"f{i:03}", state="Failed", running=1, failure=f"R1 invalid mem access 'scalar' ({i})")
        for i in range(20)
    ]
    reports += [node(f"p{i:03}", generation=1, running=1) for i in range(8)]
    reports += [
        node("x1", state="NotTargeted"),
        NodeReport(metadata=ObjectMeta(name="silent"), spec=NodeReportSpec(node_name="silent")),
    ]
    status = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=reports,
        previous=None,
        now="2026-01-01T00:00:00Z",
    )
    counts = status.nodes
    assert (counts.targeted, counts.ready, counts.failed, counts.pending, counts.summary) == (
        199,
        170,
        20,
        9,
        "170/199",
    )
    assert len(status.failing_nodes) == 10 and status.failing_nodes[0].node == "f000"
    assert status.failing_nodes[0].verifier_log == "R1 invalid mem access 'scalar' (0)"
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Ready"].status == "False" and conditions["Ready"].reason == "NodesFailed"
    assert conditions["Reconciling"].status == "True" and conditions["Degraded"].status == "True"
    assert conditions["Degraded"].message.startswith(
        "20 of 199 nodes failed; first: node f000 tracepoint:a:b verify"
    )
    assert conditions["Degraded"].message.endswith("R1 invalid mem access 'scalar' (0)")
    assert conditions["Stalled"].status == "False"
    assert all(c.observed_generation == 2 for c in status.conditions)
    assert (status.savings.observed, status.savings.raw_bytes, status.savings.exported_bytes) == (
        17000,
        170000,
        1700,
    )
    assert (status.savings.saved_ratio, status.savings.saved) == (0.99, "99.00%")
    later = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=reports,
        previous=status,
        now="2026-01-01T00:05:00Z",
    )
    assert later == status  # unchanged input: identical status, transition times kept, no write


def test_rollup_ready_stalled_and_transitions() -> None:
    ready = summaries.policy_status(
        name="p", generation=2, problems=[], reports=[node("n1")], previous=None, now="t1"
    )
    assert {c.type: c.status for c in ready.conditions} == {
        "Ready": "True",
        "Reconciling": "False",
        "Degraded": "False",
        "Stalled": "False",
    }
    stalled = summaries.policy_status(
        name="p",
        generation=3,
        problems=[Problem("spec.x", "bad")],
        reports=[node("n1")],
        previous=ready,
        now="t2",
    )
    conditions = {c.type: c for c in stalled.conditions}
    assert (conditions["Stalled"].status, conditions["Stalled"].message) == ("True", "spec.x: bad")
    assert conditions["Stalled"].last_transition_time == "t2"
    assert conditions["Degraded"].last_transition_time == "t1"  # unchanged status keeps its time
    assert conditions["Ready"].status == "False" and conditions["Ready"].reason == "InvalidSpec"


def test_ready_message_counts_one_node_in_the_singular() -> None:
    one = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=[node("n1")],
        previous=None,
        now="2026-11-27T00:00:00Z",
    )
    ready = next(c for c in one.conditions if c.type == "Ready")
    assert (ready.status, ready.message) == ("True", "1 node runs generation 2")


def test_invalid_spec_and_failing_policy_reasons() -> None:
    stamp = "2026-11-27T00:00:00Z"
    invalid = summaries.policy_status(
        name="p",
        generation=2,
        problems=[Problem("spec.kprobes", "is empty")],
        reports=[node("n1", generation=1, running=1)],
        previous=None,
        now=stamp,
    )
    reasons = {c.type: (c.status, c.reason) for c in invalid.conditions}
    assert reasons["Reconciling"] == ("False", "InvalidSpec")
    assert reasons["Stalled"] == ("True", "InvalidSpec")
    rule = summaries.rule_status(
        name="r",
        policy="p",
        generation=1,
        policy_generation=2,
        problems=[],
        reports=[node("n1", state="Failed", running=1, failure="R1 invalid mem access")],
        previous=None,
        now=stamp,
    )
    by_type = {c.type: c for c in rule.conditions}
    assert (by_type["Ready"].status, by_type["Ready"].reason) == ("False", "NodesFailed")
    assert (by_type["Degraded"].status, by_type["Degraded"].message) == (
        "True",
        "1 of 1 nodes failed to run TracingPolicy 'p'; see its status",
    )


def test_a_node_that_stopped_reporting_is_unknown_not_ready() -> None:
    fresh, silent = node("n1"), node("n2")
    assert fresh.status is not None and silent.status is not None
    fresh.status.heartbeat_time = "2026-11-27T00:09:30Z"
    silent.status.heartbeat_time = "2026-11-27T00:05:00Z"  # 300 s before now
    status = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=[fresh, silent],
        previous=None,
        now="2026-11-27T00:10:00Z",
        stale_after=180,
    )
    assert (status.nodes.targeted, status.nodes.ready, status.nodes.unknown) == (2, 1, 1)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "NodesUnknown")
    assert ready.message == (
        "1 of 2 nodes have not reported for more than 180s; is the weir agent running there?"
    )
    # Without a stale age (or for reports without heartbeats) every report is taken at its word.
    assert (
        summaries.policy_status(
            name="p",
            generation=2,
            problems=[],
            reports=[fresh, silent],
            previous=None,
            now="2026-11-27T00:10:00Z",
        ).nodes.ready
        == 2
    )


def test_a_failure_is_said_once() -> None:
    """A compile failure has no verifier log: its message is not repeated as the "last line"."""
    report = node("n1", state="Failed", running=1)
    assert report.status is not None
    report.status.policies[0].programs = [
        ProgramReport(
            hook="(policy)",
            state="failed",
            failure_phase="compile",
            message="spec.tracepoints[0]: no such tracepoint; aggregationrule r: too many",
        )
    ]
    status = summaries.policy_status(
        name="p", generation=2, problems=[], reports=[report], previous=None,
        now="2026-11-27T00:00:00Z",
    )  # fmt: skip
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.message == (
        "1 of 1 nodes failed; first: node n1 (policy) compile: spec.tracepoints[0]: no such "
        "tracepoint; aggregationrule r: too many"
    )


def test_a_node_that_should_run_an_agent_but_never_reported_is_counted_and_named() -> None:
    from weir_api.meta import LabelSelector

    expected = summaries.Expected(
        {"n1": {"zone": "a"}, "n2": {"zone": "a"}, "n3": {"zone": "b"}, "n4": {"zone": "b"}}
    )
    status = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=[node("n1"), node("n3")],
        previous=None,
        now="t",
        expected=expected,
    )
    assert (status.nodes.targeted, status.nodes.ready, status.nodes.missing) == (4, 2, 2)
    assert status.nodes.summary == "2/4"
    assert status.missing_nodes == ["n2", "n4"]
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "NodesMissing")
    assert ready.message.startswith("2 of 4 nodes have no weir agent report yet: n2, n4; ")
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.status == "False"  # nothing failed: the agent is not there
    # The policy's nodeSelector picks among the expected nodes.
    zone_a = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=[node("n1")],
        previous=None,
        now="t",
        expected=expected,
        selector=LabelSelector(match_labels={"zone": "a"}),
    )
    assert (zone_a.nodes.targeted, zone_a.nodes.missing, zone_a.missing_nodes) == (2, 1, ["n2"])
    # Not told which nodes should run agents: the reports alone count (as before).
    alone = summaries.policy_status(
        name="p", generation=2, problems=[], reports=[node("n1")], previous=None, now="t"
    )
    assert (alone.nodes.targeted, alone.nodes.missing) == (1, 0)
    rule = summaries.rule_status(
        name="r",
        policy="p",
        generation=1,
        policy_generation=2,
        problems=[],
        reports=[node("n1"), node("n3")],
        previous=None,
        now="t",
        expected=expected,
    )
    rule_ready = next(c for c in rule.conditions if c.type == "Ready")
    assert (rule_ready.reason, rule.nodes.missing) == ("NodesMissing", 2)
    many = summaries.Expected({f"m{i:02}": {} for i in range(12)})
    crowded = summaries.policy_status(
        name="p", generation=2, problems=[], reports=[], previous=None, now="t", expected=many
    )
    assert len(crowded.missing_nodes) == 10
    assert "m09 and 2 more; check the agent pods" in crowded.conditions[0].message


def test_the_watch_cache_keeps_what_events_said_over_a_later_list() -> None:
    from weir_operator import caching

    cache = caching.Cache()
    cache.put("nodereports", {"metadata": {"name": "a", "resourceVersion": "9"}})
    cache.remove("nodereports", "gone")
    assert not cache.is_seeded("nodereports")
    cache.seed(
        "nodereports",
        [
            {"metadata": {"name": "a", "resourceVersion": "5"}},  # older than the event
            {"metadata": {"name": "gone", "resourceVersion": "5"}},  # deleted meanwhile
            {"metadata": {"name": "b", "resourceVersion": "6"}},
        ],
    )
    assert cache.is_seeded("nodereports")
    items = cache.items("nodereports")
    assert [(i["metadata"]["name"], i["metadata"]["resourceVersion"]) for i in items] == [
        ("a", "9"),
        ("b", "6"),
    ]
    cache.set_status("nodereports", "b", {"x": 1})
    assert "status" not in items[1]  # what a reader holds is not changed under it
    assert cache.items("nodereports")[1]["status"] == {"x": 1}
    cache.put("nodereports", {"metadata": {"name": "gone"}})  # created again
    assert [i["metadata"]["name"] for i in cache.items("nodereports")] == ["a", "b", "gone"]


def test_the_report_index_says_which_policies_a_change_touches() -> None:
    n2 = node("n2", savings=Savings(observed=5, raw_bytes=10))
    index = summaries.ReportIndex([node("n1"), n2])
    assert index.put(node("n1")) == set()  # the same entry again: nothing touched
    failed = node("n1", state="Failed", running=1, failure="R1")
    assert index.put(failed) == {"p"}
    other = node("n3")
    other.status.policies[0].name = "q"  # type: ignore[union-attr]
    assert index.put(other) == {"q"}
    assert index.nodes == {"n1", "n2", "n3"}
    assert sorted(index.by_policy["p"]) == ["n1", "n2"]
    assert index.remove("n3") == {"q"} and "q" not in index.by_policy
    assert index.nodes == {"n1", "n2"}
    # The index counts as the reports do: n1 failed, n2 ready.
    status = summaries.policy_status(
        name="p", generation=2, problems=[], reports=index, previous=None, now="t"
    )
    same = summaries.policy_status(
        name="p",
        generation=2,
        problems=[],
        reports=[failed, n2],
        previous=None,
        now="t",
    )
    assert status == same
    assert (status.nodes.ready, status.nodes.failed, status.nodes.targeted) == (1, 1, 2)
    assert status.failing_nodes[0].node == "n1" and status.failing_nodes[0].verifier_log == "R1"
    assert status.savings.observed == 5
