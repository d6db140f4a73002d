"""The roll-up at scale on kubesim: 200 simulated nodes (NodeReport writers, no BPF)
reporting one policy, some failing; the operator's status is correct, bounded, and, while
only the nodes' counters change, written once per counters interval however often the
nodes write."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import roles
from conftest import free_port, wait_for
from test_kubesim import GROUP, VERSION, Cluster
from weir_api.policies import ObjectMeta
from weir_api.reports import NodeReportSpec, NodeReportStatus, PolicyReport, ProgramReport
from weir_api.statuses import Savings

INTERVAL = 0.5  # the operator's roll-up interval (chart value operator.rollupSeconds)
COUNTERS = 2.0  # counters-only status changes at most this often (operator.statusCountersSeconds)


def report(node: str, observed: int, failing: bool) -> dict[str, Any]:
    program = ProgramReport(
        hook="tracepoint:syscalls:sys_enter_openat",
        state="failed" if failing else "attached",
        failure_phase="verify" if failing else None,
        message="Permission denied" if failing else "",
        verifier_log="R2 min value is negative" if failing else "",
    )
    policy = PolicyReport(
        name="p",
        generation=1,
        running_generation=0 if failing else 1,
        state="Failed" if failing else "Ready",
        programs=[program],
        savings=Savings(observed=observed, raw_bytes=observed * 100, exported_bytes=50),
    )
    status = NodeReportStatus(policies=[policy])
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeReport",
        "metadata": ObjectMeta(name=node).to_wire(),
        "spec": NodeReportSpec(node_name=node).to_wire(),
        "status": status.to_wire(),
    }


def test_two_hundred_nodes_roll_up_correctly_with_bounded_writes(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = [f"node-{i:03}" for i in range(200)]
    failing = set(nodes[::20])  # 10 failing nodes
    for name in nodes:
        body = report(name, 1, name in failing)
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", name, {"status": body["status"]}
        )
    cluster.create_policy("p")
    stop = threading.Event()
    writes = [0]

    def writers() -> None:  # every node keeps counting: its report changes constantly
        tick = 1
        while not stop.is_set():
            tick += 1
            for name in nodes[:50]:
                cluster.custom.patch_cluster_custom_object_status(
                    GROUP,
                    VERSION,
                    "nodereports",
                    name,
                    {"status": report(name, tick, name in failing)["status"]},
                )
                writes[0] += 1

    store = cluster.emulator.store
    docs = roles.render(
        {
            "operator": {
                "rollupSeconds": INTERVAL,
                "statusCountersSeconds": COUNTERS,
                "healthPort": free_port(),
            }
        }
    )
    log = tmp_path / "operator.log"
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cluster.get_policy("p").get("status"):
            time.sleep(0.2)
        thread = threading.Thread(target=writers)
        thread.start()
        initial = cluster.get_policy("p")
        with store.lock:
            before = store.revision
        started = time.monotonic()
        time.sleep(5)
        with store.lock:  # writes to p that changed its status (kopf's own annotation writes aside)
            versions = [
                obj
                for rev, kind, t, obj in store.history
                if rev > before and t.plural == "tracingpolicies" and obj["metadata"]["name"] == "p"
            ]
        status_writes = sum(
            1
            for older, newer in zip([initial, *versions], versions, strict=False)
            if older.get("status") != newer.get("status")
        )
        other_writes = len(versions) - status_writes
        elapsed = time.monotonic() - started
        stop.set()
        thread.join()
    assert writes[0] > 100, "the simulated nodes must write far more often than the operator"
    # Only the savings change while the nodes count: written once per counters interval.
    assert 1 <= status_writes <= elapsed / COUNTERS + 1, (status_writes, other_writes, elapsed)
    status = cluster.get_policy("p")["status"]
    assert status["nodes"] == {
        "targeted": 200,
        "ready": 190,
        "failed": 10,
        "pending": 0,
        "unknown": 0,
        "missing": 0,
        "summary": "190/200",
    }
    assert len(status["failingNodes"]) == 10
    assert {f["node"] for f in status["failingNodes"]} == failing
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["message"].startswith(
        "10 of 200 nodes failed; first: node node-000"
    )
    assert degraded["message"].endswith("R2 min value is negative")
    assert status["savings"]["observed"] >= 200


def test_status_converges_within_two_intervals_after_a_fault_burst(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A burst of 500s and 429s hits every request the operator makes (its roll-up, its
    # watches). Status must catch up within two roll-up intervals of the burst's end, not
    # after a minute of backoff.
    interval = 1.5
    nodes = ["n1", "n2", "n3"]
    for name in nodes:
        body = report(name, 1, failing=False)
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", name, {"status": body["status"]}
        )
    cluster.create_policy("p")
    docs = roles.render({"operator": {"rollupSeconds": interval, "healthPort": free_port()}})
    faults = f"http://127.0.0.1:{cluster.port}/kubesim/faults"

    def post(**body: object) -> dict[str, Any]:
        request = urllib.request.Request(
            faults, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def degraded() -> str | None:
        conditions = (cluster.get_policy("p").get("status") or {}).get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == "Degraded"), None)

    log = tmp_path / "operator.log"
    measured = []
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        wait_for(lambda: degraded() == "False", "the policy rolled up, nothing failing")
        for round_ in range(2):
            failing = round_ == 0  # a node fails, then recovers, each time behind a burst
            cluster.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "nodereports", "n2", {"status": report("n2", 2, failing)["status"]}
            )
            post(errors=6, throttle=6)
            deadline = time.monotonic() + 60
            while (left := post()) and (left["errors"] or left["throttle"]):
                assert time.monotonic() < deadline, f"the operator stopped calling the API: {left}"
                time.sleep(0.05)
            burst_over = time.monotonic()
            want = "True" if failing else "False"
            wait_for(lambda want=want: degraded() == want, f"Degraded={want} after the burst")
            measured.append(time.monotonic() - burst_over)
        samples = roles.scrape(docs, "operator")
    print(f"converged {measured} s after the burst; roll-up interval {interval} s")
    assert all(m <= 2 * interval for m in measured), (measured, log.read_text()[-3000:])
    assert "status writes failed; next try in" in log.read_text()
    # The operator's own metrics say what happened: failed passes (status writes refused:
    # the roll-up reads from its watches, so writes are all it sends), the API's answers by
    # code, the status writes that converged.
    assert samples['weir_operator_rollup_passes_total{result="error"}'] >= 2
    assert samples['weir_operator_rollup_passes_total{result="ok"}'] >= 2
    refused = {k: v for k, v in samples.items() if k.startswith("weir_operator_api_errors_total")}
    assert any('code="429"' in k for k in refused) and any('code="500"' in k for k in refused)
    assert samples['weir_operator_status_writes_total{kind="tracingpolicies",result="error"}'] >= 1
    writes = samples['weir_operator_status_writes_total{kind="tracingpolicies",result="ok"}']
    assert writes >= 3  # the first roll-up, Degraded, recovered
    assert samples["weir_operator_rollup_duration_seconds_count{}"] >= 4


def test_nodes_whose_agent_never_reported_are_counted_and_named(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The agent DaemonSet has pods on n1, n2 and (not yet bound, pinned by node affinity)
    # n3; only n1's agent reports. NODES counts all three and names the other two; a
    # policy whose nodeSelector picks only n1 is Ready. Pods and Nodes are watched.
    docs = roles.render({"operator": {"rollupSeconds": INTERVAL, "healthPort": free_port()}})
    selector = dict(
        item.split("=")
        for item in roles.container_env(
            roles.pod_spec(docs, "operator")["containers"][0], fields={}
        )["WEIR_AGENT_SELECTOR"].split(",")
    )
    for name, zone in (("n1", "a"), ("n2", "b"), ("n3", "b")):
        cluster.core.create_node({"metadata": {"name": name, "labels": {"zone": zone}}})

    def agent_pod(name: str, node: str, bound: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [{"name": "agent", "image": "weir"}]}
        if bound:
            spec["nodeName"] = node
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
        return {"metadata": {"name": name, "labels": selector}, "spec": spec}

    for pod in (
        agent_pod("a1", "n1", True),
        agent_pod("a2", "n2", True),
        agent_pod("a3", "n3", False),
    ):
        cluster.core.create_namespaced_pod("weir-system", pod)
    # a pod that is not the agent's, on a fourth node: not counted
    cluster.core.create_namespaced_pod(
        "weir-system", {"metadata": {"name": "other"}, "spec": {"nodeName": "n4", "containers": []}}
    )
    body = report("n1", 1, failing=False)
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
    cluster.custom.patch_cluster_custom_object_status(
        GROUP, VERSION, "nodereports", "n1", {"status": body["status"]}
    )
    cluster.create_policy("p")
    zoned = cluster.policy("zoned")
    zoned["spec"]["nodeSelector"] = {"matchLabels": {"zone": "a"}}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "tracingpolicies", zoned)
    # n1 reports "zoned" too (the agent there runs it)
    status = body["status"]
    status["policies"].append({**status["policies"][0], "name": "zoned"})
    cluster.custom.patch_cluster_custom_object_status(
        GROUP, VERSION, "nodereports", "n1", {"status": status}
    )

    def status_of(name: str) -> dict[str, Any]:
        return cluster.get_policy(name).get("status") or {}

    def ready(name: str) -> dict[str, Any]:
        return next((c for c in status_of(name).get("conditions", []) if c["type"] == "Ready"), {})

    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=tmp_path / "op.log"):
        missing = wait_for(
            lambda: (c := ready("p")).get("reason") == "NodesMissing" and c, "n2, n3 missing"
        )
        assert missing["status"] == "False"
        assert missing["message"].startswith("2 of 3 nodes have no weir agent report yet: n2, n3;")
        nodes = status_of("p")["nodes"]
        assert (nodes["targeted"], nodes["ready"], nodes["missing"], nodes["summary"]) == (
            3,
            1,
            2,
            "1/3",
        )
        assert status_of("p")["missingNodes"] == ["n2", "n3"]
        row = cluster.kubectl("get", "tracingpolicy", "p", "--no-headers").stdout.split()
        assert row[1:3] == ["False", "1/3"]
        wait_for(lambda: ready("zoned").get("status") == "True", "zoned Ready on its one node")
        assert status_of("zoned")["nodes"]["summary"] == "1/1"
        # The DaemonSet leaves n2 and n3 (their pods deleted): p is Ready on n1.
        for name in ("a2", "a3"):
            cluster.core.delete_namespaced_pod(name, "weir-system")
        wait_for(
            lambda: ready("p").get("status") == "True", "Ready once only n1 should run an agent"
        )
        assert status_of("p")["nodes"]["summary"] == "1/1"


def test_at_steady_state_the_operator_sends_no_periodic_list_or_get(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Policies, rules, NodeReports, Nodes, the policy ConfigMaps and the agent's pods come
    # from watches; a roll-up pass (every 0.5 s here) reads what they keep current.
    body = report("n1", 1, failing=False)
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
    cluster.custom.patch_cluster_custom_object_status(
        GROUP, VERSION, "nodereports", "n1", {"status": body["status"]}
    )
    cluster.create_policy("p")
    docs = roles.render({"operator": {"rollupSeconds": INTERVAL, "healthPort": free_port()}})

    def reads() -> dict[tuple[str, str, bool], int]:
        return {k: v for k, v in cluster.emulator.requests.items() if k[0] == "GET" and not k[2]}

    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=tmp_path / "op.log"):
        wait_for(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (cluster.get_policy("p").get("status") or {}).get("conditions", [])
            ),
            "p Ready",
        )
        time.sleep(2 * INTERVAL)  # the first passes seed what they read
        before = reads()
        time.sleep(8 * INTERVAL)  # eight passes
        after = reads()
        watches = {k for k in cluster.emulator.requests if k[2]}
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grown == {}, grown
    for path in (
        "/apis/weir.dev/v1alpha1/tracingpolicies",
        "/apis/weir.dev/v1alpha1/nodereports",
        "/api/v1/namespaces/weir-system/configmaps",
        "/api/v1/namespaces/weir-system/pods",
    ):
        assert ("GET", path, True) in watches, path


def test_a_changed_report_recomputes_only_what_it_touches(cluster: Cluster, tmp_path: Path) -> None:
    # 100 nodes report two policies. A quiet cluster costs the roll-up nothing: no report
    # parsed, no status worked out. One node's report changing for q is parsed once and
    # works out q's status again, not p's.
    nodes = [f"node-{i:03}" for i in range(100)]

    def two_policies(node: str, q_failing: bool) -> dict[str, Any]:
        body = report(node, 1, failing=False)
        q = dict(report(node, 1, failing=q_failing)["status"]["policies"][0], name="q")
        body["status"]["policies"].append(q)
        return body

    for name in nodes:
        body = two_policies(name, q_failing=False)
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", name, {"status": body["status"]}
        )
    cluster.create_policy("p")
    cluster.create_policy("q")
    docs = roles.render({"operator": {"rollupSeconds": INTERVAL, "healthPort": free_port()}})

    def ready(name: str) -> str | None:
        conditions = (cluster.get_policy(name).get("status") or {}).get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == "Ready"), None)

    def counters() -> tuple[float, float]:
        samples = roles.scrape(docs, "operator")
        return (
            samples["weir_operator_nodereports_parsed_total{}"],
            samples['weir_operator_statuses_computed_total{kind="tracingpolicies"}'],
        )

    log = tmp_path / "operator.log"
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        wait_for(lambda: ready("p") == "True" and ready("q") == "True", "both Ready")
        time.sleep(4 * INTERVAL)  # the writes' own watch events settle
        quiet = counters()
        assert quiet[0] == 100  # each report parsed once
        time.sleep(6 * INTERVAL)  # some six passes over a cluster where nothing changes
        assert counters() == quiet, "a quiet pass parsed reports or worked out statuses"
        cluster.custom.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            "nodereports",
            "node-007",
            {"status": two_policies("node-007", q_failing=True)["status"]},
        )
        wait_for(lambda: ready("q") == "False", "q not Ready: node-007 failed it")
        time.sleep(4 * INTERVAL)
        parsed, computed = counters()
        assert parsed == quiet[0] + 1  # the changed report, once
        assert computed == quiet[1] + 1  # q's status, once; p's not at all
        assert ready("p") == "True"
        failing = cluster.get_policy("q")["status"]["failingNodes"]
        assert [f["node"] for f in failing] == ["node-007"]


def test_a_deleted_nodes_report_goes_with_it_and_leaves_the_counts(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Each NodeReport is owned by its Node (as the agent writes it): deleting the Node
    # garbage-collects the report, and NODES and SAVED drop that node at once.
    for i, name in enumerate(("n1", "n2", "n3")):
        node = cluster.core.create_node({"metadata": {"name": name}})
        body = report(name, 100 * (i + 1), failing=False)
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}
        ]
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", name, {"status": body["status"]}
        )
    cluster.create_policy("p")
    docs = roles.render({"operator": {"rollupSeconds": INTERVAL, "healthPort": free_port()}})

    def status() -> dict[str, Any]:
        return cluster.get_policy("p").get("status") or {}

    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=tmp_path / "op"):
        wait_for(lambda: status().get("nodes", {}).get("summary") == "3/3", "3 nodes ready")
        assert status()["savings"]["observed"] == 600
        cluster.core.delete_node("n3")
        wait_for(lambda: status().get("nodes", {}).get("summary") == "2/2", "n3 gone")
        reports = cluster.custom.list_cluster_custom_object(GROUP, VERSION, "nodereports")
        assert sorted(r["metadata"]["name"] for r in reports["items"]) == ["n1", "n2"]
        assert status()["nodes"]["unknown"] == 0
        assert status()["savings"]["observed"] == 300  # n3's 300 left with it
