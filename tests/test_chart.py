"""The Helm chart, rendered by the real helm: lint, defaults and non-defaults, the values
schema, least-privilege RBAC, the CRDs kept identical to crds/, and the admission policy that
binds a NodeReport to its writer's node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import roles
from conftest import ROOT
from weir_cli import main

CHART, helm = roles.CHART, roles.helm


def render(*args: str) -> list[dict[str, Any]]:
    out = helm("template", "weir", str(CHART), "--namespace", "weir-system", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_lint() -> None:
    assert "1 chart(s) linted, 0 chart(s) failed" in helm("lint", str(CHART), "--strict").stdout


def test_default_render() -> None:
    docs = render()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert ("ServiceMonitor", "weir-agent") not in kinds
    for expected in [
        ("DaemonSet", "weir-agent"),
        ("Deployment", "weir-operator"),
        ("Service", "weir-agent"),
        ("ValidatingAdmissionPolicy", "weir-nodereport-owner"),
        ("ValidatingAdmissionPolicyBinding", "weir-nodereport-owner"),
    ]:
        assert expected in kinds
    agent = by_kind(docs, "DaemonSet", "weir-agent")["spec"]["template"]["spec"]
    assert agent["hostPID"] is True
    assert agent["tolerations"] == [
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        },
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert agent["priorityClassName"] == "system-node-critical"
    assert agent["nodeSelector"] == {"kubernetes.io/os": "linux"}
    container = agent["containers"][0]
    security = container["securityContext"]
    assert security["privileged"] is False and security["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "SYS_PTRACE"],
    }
    assert "allowPrivilegeEscalation" not in security  # the API refuses false with SYS_ADMIN
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
        "/lib/modules",
        "/usr/src",
        "/var/cache/weir",  # compiled programs, kept across restarts
    }
    assert container["resources"]["limits"]["memory"] == "512Mi"
    # The chart's args mean what it intends, read by the CLI's own parser.
    env = {"NODE_NAME": "n1"}
    args = main.build_parser().parse_args([roles.expand(a, env) for a in container["args"]])
    assert (args.command, args.kubernetes, args.namespace, args.node_name) == (
        "agent",
        True,
        "weir-system",
        "n1",
    )
    assert (args.metrics_addr, args.events_file, args.no_table) == ("0.0.0.0:9400", "-", True)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    operator = by_kind(docs, "Deployment", "weir-operator")["spec"]["template"]["spec"]
    assert operator["securityContext"]["runAsNonRoot"] is True
    (op_container,) = operator["containers"]
    op_args = main.build_parser().parse_args(op_container["args"])
    assert (op_args.command, op_args.namespace, op_args.liveness) == (
        "operator",
        "weir-system",
        "http://0.0.0.0:8080/healthz",
    )
    assert op_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert op_args.metrics_addr == "0.0.0.0:9401"
    assert op_container["ports"] == [
        {"name": "health", "containerPort": 8080},
        {"name": "metrics", "containerPort": 9401},
    ]
    service = by_kind(docs, "Service", "weir-operator")["spec"]
    assert service["ports"] == [{"name": "metrics", "port": 9401, "targetPort": "metrics"}]
    assert service["selector"]["app.kubernetes.io/component"] == "operator"
    deployment = by_kind(docs, "Deployment", "weir-operator")["spec"]
    # Replicas are peers: a rolling update starts the new pod as a standby.
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert op_args.peering == "weir" and op_args.peering_lifetime == 60
    role = by_kind(docs, "ClusterRole", "weir-operator")
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch", "create"],
    } in role["rules"]
    assert operator["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "priorityClassName" not in operator


PRODUCTION = [
    "--set",
    "imagePullSecrets[0].name=regcred",
    "--set",
    "agent.nodeSelector.pool=observability",
    "--set",
    "agent.tolerations[0].operator=Exists",
    "--set",
    "agent.podAnnotations.team=platform",
    "--set",
    "agent.podLabels.tier=node",
    "--set",
    "agent.updateStrategy.rollingUpdate.maxUnavailable=10%",
    "--set",
    "operator.priorityClassName=system-cluster-critical",
    "--set",
    "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].key=node-role.kubernetes.io/control-plane",
    "--set",
    "operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
]


def test_production_values_render() -> None:
    docs = render(*PRODUCTION)
    agent = by_kind(docs, "DaemonSet", "weir-agent")["spec"]
    pod = agent["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "observability"}
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert pod["metadata"]["annotations"] == {"team": "platform"}
    assert pod["metadata"]["labels"]["tier"] == "node"
    assert agent["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "weir",
        "app.kubernetes.io/instance": "weir",
        "app.kubernetes.io/component": "agent",
    }
    assert agent["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "10%"}
    operator = by_kind(docs, "Deployment", "weir-operator")["spec"]["template"]["spec"]
    assert operator["priorityClassName"] == "system-cluster-critical"
    assert operator["affinity"]["nodeAffinity"]
    assert operator["imagePullSecrets"] == [{"name": "regcred"}]


def test_two_releases_do_not_collide() -> None:
    first = render()
    second = [
        d
        for d in yaml.safe_load_all(
            helm("template", "obs", str(CHART), "--namespace", "monitoring").stdout
        )
        if d
    ]
    names = {(d["kind"], d["metadata"]["name"]) for d in first}
    other = {(d["kind"], d["metadata"]["name"]) for d in second}
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert not {n for n in names & other if n[0] in cluster_scoped}
    ds = by_kind(second, "DaemonSet", "obs-weir-agent")
    assert ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "obs"
    policy = by_kind(second, "ValidatingAdmissionPolicy", "obs-weir-nodereport-owner")
    assert (
        "system:serviceaccount:monitoring:obs-weir-agent"
        in policy["spec"]["matchConditions"][0]["expression"]
    )
    binding = by_kind(second, "ClusterRoleBinding", "obs-weir-agent")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "obs-weir-agent", "namespace": "monitoring"}
    ]


def test_components_can_be_turned_off() -> None:
    kinds = {d["kind"] for d in render("--set", "agent.enabled=false")}
    assert "DaemonSet" not in kinds and "Deployment" in kinds
    kinds = {d["kind"] for d in render("--set", "operator.enabled=false")}
    assert "Deployment" not in kinds and "DaemonSet" in kinds


def test_minimal_capabilities_render_without_sys_admin() -> None:
    docs = render(
        "--set",
        "agent.capabilities={BPF,PERFMON,SYS_PTRACE}",
        "--set",
        "agent.seccompProfile=Unconfined",
    )
    security = by_kind(docs, "DaemonSet", "weir-agent")["spec"]["template"]["spec"]["containers"][
        0
    ]["securityContext"]
    assert security["capabilities"]["add"] == ["BPF", "PERFMON", "SYS_PTRACE"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "Unconfined"}


def test_events_off_and_extra_args() -> None:
    docs = render("--set", "agent.eventsFile=", "--set", "agent.extraArgs={--interval=1}")
    args = by_kind(docs, "DaemonSet", "weir-agent")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    parsed = main.build_parser().parse_args([a.replace("$(NODE_NAME)", "n1") for a in args])
    assert parsed.events_file is None and parsed.interval == 1.0


def test_non_default_values() -> None:
    docs = render(
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "agent.mountHostHeaders=false",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "serviceMonitor.labels.release=kube-prometheus",
        "--set",
        "agent.compileCache=",
    )
    monitor = by_kind(docs, "ServiceMonitor", "weir-agent")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    agent = by_kind(docs, "DaemonSet", "weir-agent")["spec"]["template"]["spec"]
    assert agent["containers"][0]["image"].endswith(":1.2.3")
    assert {m["mountPath"] for m in agent["containers"][0]["volumeMounts"]} == {
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
    }
    args = agent["containers"][0]["args"]
    parsed = main.build_parser().parse_args([a.replace("$(NODE_NAME)", "n1") for a in args])
    assert parsed.compile_cache == ""  # kept in memory only


@pytest.mark.parametrize(
    "bad",
    [
        "operator.replicas=6",
        "operator.peeringLifetimeSeconds=1",
        "serviceMonitor.interval=often",
        "agent.metricsPort=0",
        "surprise=1",
        "agent.updateStrategy.type=Sometimes",
        "agent.capabilities={NET_RAW}",
        "agent.seccompProfile=Localhost",
        "operator.enabled=maybe",
    ],
)
def test_values_schema_refuses_bad_values(bad: str) -> None:
    result = helm("template", "weir", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0 and "schema" in result.stderr.lower()


def rules(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return by_kind(docs, kind, name)["rules"]  # type: ignore[no-any-return]


def grants(rule_list: list[dict[str, Any]], resource: str) -> set[str]:
    return {v for r in rule_list if resource in r["resources"] for v in r["verbs"]}


def test_rbac_is_least_privilege() -> None:
    docs = render()
    operator_cluster, operator_ns = (
        rules(docs, "ClusterRole", "weir-operator"),
        rules(docs, "Role", "weir-operator"),
    )
    agent_cluster, agent_ns = (
        rules(docs, "ClusterRole", "weir-agent"),
        rules(docs, "Role", "weir-agent"),
    )
    every = [*operator_cluster, *operator_ns, *agent_cluster, *agent_ns]
    assert not any(
        "*" in r["verbs"] or "*" in r["resources"] or "secrets" in r["resources"] for r in every
    )
    assert grants(operator_cluster, "configmaps") == set()  # ConfigMaps: its namespace only
    assert grants(operator_ns, "configmaps") == {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    }
    assert grants(operator_cluster, "tracingpolicies/status") == {"get", "patch", "update"}
    assert grants(operator_cluster, "nodereports") == {"get", "list", "watch"}
    assert grants(operator_cluster, "nodes") == {"list", "watch"}  # labels, for nodeSelector
    assert grants(operator_ns, "pods") == {"list", "watch"}  # where the agent's pods are
    assert grants(operator_cluster, "pods") == set()
    assert grants(agent_ns, "configmaps") == {"get", "list", "watch"}
    assert grants(agent_cluster, "configmaps") == set()
    assert grants(agent_cluster, "tracingpolicies") == set()  # the agent never reads the CRs
    assert grants(agent_cluster, "nodereports") == {"get", "create"}
    assert grants(agent_cluster, "nodereports/status") == {"get", "patch", "update"}
    assert grants(agent_cluster, "pods") == {"get", "list", "watch"}
    assert grants(agent_cluster, "nodes") == {"get", "list", "watch"}  # its own, by name
    assert by_kind(docs, "Role", "weir-agent")["metadata"]["namespace"] == "weir-system"


def test_chart_crds_are_the_generated_ones() -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        assert (CHART / "crds" / path.name).read_text() == path.read_text(), (
            f"copy crds/{path.name} into the chart"
        )
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "crds").glob("*.yaml")
    )


def test_admission_policy_binds_a_nodereport_to_its_node() -> None:
    import celpy

    policy = by_kind(render(), "ValidatingAdmissionPolicy", "weir-nodereport-owner")
    (validation,) = policy["spec"]["validations"]
    (match,) = policy["spec"]["matchConditions"]
    env = celpy.Environment()
    check = env.program(env.compile(validation["expression"]))
    applies = env.program(env.compile(match["expression"]))

    def request(name: str, user: str, node: str | None) -> Any:
        extra = {"authentication.kubernetes.io/node-name": [node]} if node else {}
        return celpy.json_to_cel(
            {"request": {"name": name, "userInfo": {"username": user, "extra": extra}}}
        )

    agent = "system:serviceaccount:weir-system:weir-agent"
    assert bool(check.evaluate(request("n1", agent, "n1")))
    assert not bool(check.evaluate(request("n2", agent, "n1")))  # another node's report
    assert not bool(check.evaluate(request("n1", agent, None)))  # no node binding in the token
    assert bool(applies.evaluate(request("n1", agent, "n1")))
    assert not bool(
        applies.evaluate(request("n1", "system:serviceaccount:weir-system:weir-operator", None))
    )


def test_every_shipped_manifest_server_side_applies_twice_without_drift(tmp_path: Path) -> None:
    # What Argo CD does with ServerSideApply=true: apply, then apply again; the second apply
    # changes nothing (no generation bump, no new resourceVersion).
    from test_kubesim import Cluster

    cluster = Cluster(tmp_path)
    try:
        cluster.core.create_namespace({"metadata": {"name": "weir-system"}})
        manifests = helm(
            "template", "weir", str(CHART), "--namespace", "weir-system", "--include-crds"
        ).stdout
        first = cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=argocd-controller",
            "-f",
            "-",
            stdin=manifests,
        )
        assert "serverside-applied" in first.stdout
        before = cluster.kubectl("get", "deploy,ds,clusterrole,role,crd", "-A", "-o", "json").stdout
        second = cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=argocd-controller",
            "-f",
            "-",
            stdin=manifests,
        )
        assert "serverside-applied" in second.stdout
        after = cluster.kubectl("get", "deploy,ds,clusterrole,role,crd", "-A", "-o", "json").stdout
        versions = [
            (i["metadata"]["name"], i["metadata"]["resourceVersion"])
            for i in yaml.safe_load(before)["items"]
        ]
        assert versions == [
            (i["metadata"]["name"], i["metadata"]["resourceVersion"])
            for i in yaml.safe_load(after)["items"]
        ]
        assert len(versions) >= 9
    finally:
        cluster.close()


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "serviceMonitor.enabled=true", "--set", "agent.mountHostHeaders=false"],
        PRODUCTION,
    ],
)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(values: list[str]) -> None:
    import kubernetes_validate

    checked = 0
    for doc in render(*values):
        if doc["apiVersion"] == "monitoring.coreos.com/v1":  # a CRD's kind: no upstream schema
            assert (
                doc["kind"] == "ServiceMonitor" and doc["spec"]["endpoints"][0]["port"] == "metrics"
            )
            continue
        kubernetes_validate.validate(doc, "1.32", strict=True)  # raises with the field on error
        checked += 1
    assert checked == 16  # every built-in object the chart renders
