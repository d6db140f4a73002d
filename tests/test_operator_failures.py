"""The operator reports its own failures: when it cannot do its part (here its namespace
does not exist, so it cannot write the policy's ConfigMap), the policy's status says so in
words an admin can act on, kopf posts a Kubernetes Event for the failing handler (what
`kubectl get events` and `kubectl describe` show), and creating the namespace heals it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import roles
from conftest import ROOT, free_port, wait_for
from test_kubesim import GROUP, VERSION, Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    instance = Cluster(tmp_path)
    instance.install()
    yield instance
    instance.close()


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any] | None:
    status = cluster.get_policy(name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_a_missing_namespace_shows_in_status_and_events(cluster: Cluster, tmp_path: Path) -> None:
    docs = roles.render(
        {"operator": {"rollupSeconds": 0.5, "healthPort": free_port()}}, namespace="weir-gone"
    )
    log = tmp_path / "operator.log"
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        cluster.kubectl("apply", "-f", str(ROOT / "examples" / "policies" / "file-opens.yaml"))
        degraded = wait_for(
            lambda: (
                (c := condition(cluster, "file-opens-etc", "Degraded"))
                and c["status"] == "True"
                and c
            ),
            "Degraded from the operator's own failure",
        )
        assert degraded["reason"] == "OperatorError"
        assert degraded["message"].startswith(
            "the operator cannot write ConfigMap weir-policy-file-opens-etc in namespace "
            "weir-gone: "
        )
        assert "create the namespace or run the operator with --namespace" in degraded["message"]
        ready = condition(cluster, "file-opens-etc", "Ready")
        assert ready is not None and ready["status"] == "False"
        assert ready["reason"] == "OperatorError"
        events = wait_for(
            lambda: [
                line
                for line in cluster.kubectl("get", "events", "-A").stdout.splitlines()
                if "tracingpolicy/file-opens-etc" in line and ("Warning" in line or "Error" in line)
            ],
            "an event about the policy's failing handler",
        )
        assert 'namespaces "weir-gone" not found' in "\n".join(events)
        samples = roles.scrape(docs, "operator")
        assert samples['weir_operator_renders_total{result="error"}'] >= 1
        assert samples['weir_operator_api_errors_total{code="404",operation="render"}'] >= 1
        # The admin creates the namespace: the ConfigMap is written and the error clears.
        cluster.core.create_namespace({"metadata": {"name": "weir-gone"}})
        wait_for(
            lambda: cluster.core.list_namespaced_config_map("weir-gone").items,
            "the ConfigMap written once the namespace exists",
        )
        cleared = wait_for(
            lambda: (
                (c := condition(cluster, "file-opens-etc", "Degraded"))
                and c["status"] == "False"
                and c
            ),
            "the operator error cleared",
        )
        assert cleared["reason"] == "NoFailures"


def test_configmaps_deleted_by_hand_come_back(cluster: Cluster, tmp_path: Path) -> None:
    # The operator repairs what it owns: policy ConfigMaps deleted by hand are rendered again
    # within a roll-up pass (0.5 s here), not at the next operator restart.
    cluster.core.create_namespace({"metadata": {"name": "weir-system"}})
    docs = roles.render({"operator": {"rollupSeconds": 0.5, "healthPort": free_port()}})
    log = tmp_path / "operator.log"

    def configmaps() -> dict[str, str]:
        items = cluster.core.list_namespaced_config_map("weir-system").items
        return {c.metadata.name: c.metadata.uid for c in items}

    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        for example in ("file-opens.yaml", "segfaults.yaml"):
            cluster.kubectl("apply", "-f", str(ROOT / "examples" / "policies" / example))
        wanted = {"weir-policy-file-opens-etc", "weir-policy-segfaults"}
        first = wait_for(lambda: set(c := configmaps()) == wanted and c, "both rendered")
        for plural in ("tracingpolicies", "aggregationrules"):
            for name in ("file-opens-etc", "segfaults"):
                wait_for(
                    lambda plural=plural, name=name: cluster.custom.get_cluster_custom_object(
                        GROUP, VERSION, plural, name
                    ).get("status"),
                    f"{plural}/{name} rolled up",
                )
        time.sleep(1)  # the handlers' own renders (policy and rule events) are done by now
        cluster.kubectl("delete", "-n", "weir-system", "configmap", *sorted(wanted))
        again = wait_for(
            lambda: (
                set(c := configmaps()) == wanted and not set(c.values()) & set(first.values()) and c
            ),
            "both ConfigMaps restored (new objects)",
            timeout=10,
        )
        assert set(again.values()).isdisjoint(first.values())
        restored = cluster.core.read_namespaced_config_map("weir-policy-segfaults", "weir-system")
        assert restored.metadata.owner_references[0].name == "segfaults"
    assert "has no ConfigMap; rendering it again" in log.read_text()


def test_rules_past_a_hooks_limit_are_refused_before_rendering(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Five rules fold the one hook of file-opens-etc: the operator refuses the fifth by
    # name, with the count, renders the other four, and the policy stays healthy.
    cluster.core.create_namespace({"metadata": {"name": "weir-system"}})
    docs = roles.render({"operator": {"rollupSeconds": 0.5, "healthPort": free_port()}})
    policy = ROOT / "examples" / "policies" / "file-opens.yaml"
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=tmp_path / "op.log"):
        cluster.kubectl("apply", "-f", str(policy))
        for name in ("extra-a", "extra-b", "extra-c", "extra-d"):
            rule = {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "AggregationRule",
                "metadata": {"name": name},
                "spec": {
                    "policyRef": {"name": "file-opens-etc"},
                    "metric": {"name": f"weir_{name.replace('-', '_')}"},
                },
            }
            cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(rule))
        names = ["extra-a", "extra-b", "extra-c", "extra-d", "file-opens-etc"]

        def rule_condition(name: str, kind: str) -> dict[str, Any] | None:
            status = (
                cluster.custom.get_cluster_custom_object(
                    GROUP, VERSION, "aggregationrules", name
                ).get("status")
                or {}
            )
            return next((c for c in status.get("conditions", []) if c["type"] == kind), None)

        stalled = wait_for(
            lambda: (
                (c := rule_condition("file-opens-etc", "Stalled")) and c["status"] == "True" and c
            ),
            "the fifth rule refused",
        )
        assert stalled["reason"] == "InvalidSpec"
        assert (
            "spec: 5 AggregationRules fold hook tracepoint:syscalls:sys_enter_openat "
            f"({', '.join(names)}); at most 4, the first by name" in stalled["message"]
        )
        rendered = wait_for(
            lambda: (
                (
                    c := cluster.core.read_namespaced_config_map(
                        "weir-policy-file-opens-etc", "weir-system"
                    )
                )
                and c.data["policy.yaml"].count("kind: AggregationRule") == 4
                and c
            ),
            "the four rules that fit rendered",
        )
        folded = [
            d["metadata"]["name"]
            for d in yaml.safe_load_all(rendered.data["policy.yaml"])
            if d["kind"] == "AggregationRule"
        ]
        assert folded == names[:4]
        for name in names[:4]:
            assert (rule_condition(name, "Stalled") or {}).get("status") != "True", name
        assert (condition(cluster, "file-opens-etc", "Stalled") or {}).get("status") != "True"
