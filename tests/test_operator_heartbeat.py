"""The agent's liveness as others see it.

Status tells the truth when an agent dies: `kill -9` leaves no goodbye report, so the
agent's heartbeat (its NodeReport's heartbeatTime, published at least every
--heartbeat-interval) stops, and the operator counts the node as Unknown after the stale
age: the policy is no longer Ready. And /readyz waits for the first ConfigMap list, even
an empty one. Both roles run as the chart starts them."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import roles
from agenthelpers import openat_policy
from conftest import free_port, wait_for
from test_kubesim import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    instance = Cluster(tmp_path)
    instance.install()
    instance.core.create_namespace({"metadata": {"name": "weir-system"}})
    instance.core.create_node({"metadata": {"name": "n1"}})
    yield instance
    instance.close()


def ready(cluster: Cluster, name: str) -> dict[str, Any]:
    status = cluster.get_policy(name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


def test_a_killed_agent_turns_its_node_unknown(
    kernel: None, cluster: Cluster, tmp_path: Path
) -> None:
    docs = roles.render(
        {
            "agent": {
                "metricsPort": free_port(),
                "reportInterval": 0.3,
                "heartbeatSeconds": 0.5,
                "extraArgs": ["--interval=0.3"],
            },
            "operator": {"rollupSeconds": 0.5, "staleSeconds": 3, "healthPort": free_port()},
        }
    )
    outside = {"KUBECONFIG": str(cluster.kubeconfig)}
    agent = roles.start(
        docs, "agent", fields={"spec.nodeName": "n1"}, env=outside, log=tmp_path / "agent.log"
    )
    operator = roles.start(docs, "operator", fields={}, env=outside, log=tmp_path / "op.log")
    try:
        policy = openat_policy("beat", f"/tmp/weir-beat-{uuid.uuid4().hex}/")
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))
        wait_for(lambda: ready(cluster, "beat").get("status") == "True", "Ready", timeout=90)
        # Quiet but alive: the heartbeat keeps it Ready well past the stale age.
        beats = {
            cluster.custom.get_cluster_custom_object("weir.dev", "v1alpha1", "nodereports", "n1")[
                "status"
            ]["heartbeatTime"]
        }
        wait_for(
            lambda: (
                beats.add(
                    cluster.custom.get_cluster_custom_object(
                        "weir.dev", "v1alpha1", "nodereports", "n1"
                    )["status"]["heartbeatTime"]
                )
                or len(beats) >= 5
            ),
            "five distinct heartbeats",
            timeout=30,
        )
        assert ready(cluster, "beat")["status"] == "True"
        agent.send_signal(signal.SIGKILL)  # no goodbye report
        agent.wait(timeout=30)
        gone = wait_for(
            lambda: (c := ready(cluster, "beat")).get("reason") == "NodesUnknown" and c,
            "the node counted as Unknown",
            timeout=30,
        )
        assert gone["status"] == "False"
        assert gone["message"].startswith("1 of 1 nodes have not reported for more than 3s")
        nodes = cluster.get_policy("beat")["status"]["nodes"]
        assert (nodes["unknown"], nodes["ready"], nodes["summary"]) == (1, 0, "0/1")
        row = cluster.kubectl("get", "tracingpolicy", "beat", "--no-headers").stdout.split()
        assert row[1:3] == ["False", "0/1"]
    finally:
        if agent.poll() is None:
            agent.kill()
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=60)
    assert operator.returncode == 0, (tmp_path / "op.log").read_text()


def test_an_agent_with_no_policies_becomes_ready_once_synced(
    kernel: None, cluster: Cluster, tmp_path: Path
) -> None:
    # With the API server paused the agent's first pass sees nothing: not ready. Once the
    # (empty) ConfigMap list arrives it is ready, though no policy changed anything.
    port = free_port()
    docs = roles.render({"agent": {"metricsPort": port, "extraArgs": ["--interval=0.3"]}})
    fault(cluster, pause=True)
    agent = roles.start(
        docs,
        "agent",
        fields={"spec.nodeName": "n1"},
        env={"KUBECONFIG": str(cluster.kubeconfig)},
        log=tmp_path / "agent.log",
    )
    try:
        wait_for(lambda: probe(port, "/healthz") == 200, "the agent serving", timeout=60)
        assert probe(port, "/readyz") == 503
        fault(cluster, pause=False)
        wait_for(lambda: probe(port, "/readyz") == 200, "ready after the first list", timeout=30)
        # Requests the API refuses are counted in the agent's metrics, by operation and code.
        fault(cluster, errors=4)
        samples = wait_for(
            lambda: (
                (m := roles.scrape(docs, "agent"))
                and sum(v for k, v in m.items() if k.startswith("weir_agent_api_errors_total")) >= 4
                and m
            ),
            "the injected 500s counted",
        )
        errors = {k: v for k, v in samples.items() if k.startswith("weir_agent_api_errors")}
        assert all('code="500"' in k for k in errors), errors
        assert samples['weir_agent_nodereport_writes_total{result="ok"}'] >= 1
    finally:
        fault(cluster, pause=False)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0, (tmp_path / "agent.log").read_text()


def fault(cluster: Cluster, **body: Any) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{cluster.port}/kubesim/faults",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_agent_watches_its_node_and_never_polls_it(
    kernel: None, cluster: Cluster, tmp_path: Path
) -> None:
    # A policy for nodes labelled tier=edge: not targeted on n1 until n1 gets the label,
    # which the agent sees through its watch of its own Node, not by GETting it each loop.
    port = free_port()
    docs = roles.render(
        {
            "agent": {"metricsPort": port, "reportInterval": 0.3, "extraArgs": ["--interval=0.3"]},
            "operator": {"rollupSeconds": 0.5, "healthPort": free_port()},
        }
    )
    policy = openat_policy("edge", f"/tmp/weir-edge-{uuid.uuid4().hex}/")
    policy["spec"]["nodeSelector"] = {"matchLabels": {"tier": "edge"}}  # type: ignore[index]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    outside = {"KUBECONFIG": str(cluster.kubeconfig)}
    agent = roles.start(
        docs, "agent", fields={"spec.nodeName": "n1"}, env=outside, log=tmp_path / "agent.log"
    )
    operator = roles.start(docs, "operator", fields={}, env=outside, log=tmp_path / "op.log")

    def state() -> str | None:
        report = cluster.custom.get_cluster_custom_object(
            "weir.dev", "v1alpha1", "nodereports", "n1"
        )
        mine = [p for p in report["status"]["policies"] if p["name"] == "edge"]
        return mine[0]["state"] if mine else None

    def logs() -> str:  # what the two roles said, and the report, when a wait fails
        said = [f"--- {n}\n{(tmp_path / n).read_text()[-4000:]}" for n in ("agent.log", "op.log")]
        try:
            report = cluster.custom.get_cluster_custom_object(
                "weir.dev", "v1alpha1", "nodereports", "n1"
            )
        except Exception as error:  # only for the failure message
            report = repr(error)
        return "\n".join([*said, f"--- NodeReport n1\n{report}"])

    try:
        wait_for(lambda: probe(port, "/readyz") == 200, "the agent ready", timeout=60, logs=logs)
        wait_for(lambda: state() == "NotTargeted", "not targeted without the label", logs=logs)
        gets = cluster.emulator.requests[("GET", "/api/v1/nodes/n1", False)]
        time.sleep(2)  # some 6 agent loops
        assert cluster.emulator.requests[("GET", "/api/v1/nodes/n1", False)] == gets
        assert cluster.emulator.requests[("GET", "/api/v1/nodes", True)] >= 1  # the watch
        cluster.core.patch_node("n1", {"metadata": {"labels": {"tier": "edge"}}})
        wait_for(lambda: state() == "Ready", "targeted once labelled", timeout=90, logs=logs)
        wait_for(lambda: ready(cluster, "edge").get("status") == "True", "the policy Ready")
    finally:
        for process in (agent, operator):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    assert agent.returncode == 0, (tmp_path / "agent.log").read_text()
