"""End to end on kubesim with real components: the real kubectl applies the CRDs and a
policy, the kopf operator renders and rolls up, one real agent (real BPF, node n1) runs
the programs and publishes its NodeReport, and the policy's status says so."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

import roles
from agenthelpers import openat_policy, scrape_http
from conftest import free_port
from test_kubesim import GROUP, VERSION, Cluster

NS = "weir-system"
HOST = (
    ("container", ""),
    ("namespace", ""),
    ("pod", ""),
    ("workload", ""),
)  # the test's own process


def wait_for(predicate, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (k8s.ApiException, OSError, KeyError, ValueError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def opens_policy(
    name: str,
    prefix: str,
    *,
    generation_bump: str = "",
    metric: str = "weir_e2e_opens",
    pod_selector: dict[str, str] | None = None,
    namespace_selector: dict[str, str] | None = None,
    container: str | None = None,
) -> str:
    policy = openat_policy(name, prefix, *([generation_bump] if generation_bump else []))
    if pod_selector:
        policy["spec"]["podSelector"] = {"matchLabels": pod_selector}  # type: ignore[index]
    if namespace_selector:
        policy["spec"]["namespaceSelector"] = {"matchLabels": namespace_selector}  # type: ignore[index]
    if container:  # Tetragon's containerSelector: by the container's name
        by_name = {"key": "name", "operator": "In", "values": [container]}
        policy["spec"]["containerSelector"] = {"matchExpressions": [by_name]}  # type: ignore[index]
    rule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AggregationRule",
        "metadata": {"name": name},
        "spec": {
            "policyRef": {"name": name},
            "groupBy": ["namespace", "pod", "container", "workload"],
            "metric": {"name": metric, "help": "opens in the e2e test"},
        },
    }
    return yaml.safe_dump_all([policy, rule])


@pytest.fixture
def stack(kernel: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """kubesim, the operator and a BPF agent on node n1; the agent's ``--interval`` is 0.3 s
    and its series retention the chart's unless a test asks for others (``indirect``
    parametrization with a dict: interval, seriesRetention)."""
    asked = getattr(request, "param", {})
    interval = asked.get("interval", 0.3)
    retention = {"seriesRetention": asked["seriesRetention"]} if "seriesRetention" in asked else {}
    cluster = Cluster(tmp_path)
    cluster.install()
    cluster.core.create_namespace({"metadata": {"name": NS}})
    cluster.core.create_node(
        {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}
    )
    metrics = free_port()
    # The agent reads tracepoint layouts from a tracefs copy in which one event's field sits
    # outside the record: a program for it passes generation and fails in the real verifier.
    tracefs = tmp_path / "tracefs"
    for event in ("sys_enter_openat", "sys_enter_lseek"):
        source = Path(f"/sys/kernel/tracing/events/syscalls/{event}/format").read_text()
        if event == "sys_enter_lseek":
            source = source.replace("off_t offset;\toffset:24;", "off_t offset;\toffset:1048576;")
        (tracefs / "events" / "syscalls" / event).mkdir(parents=True)
        (tracefs / "events" / "syscalls" / event / "format").write_text(source)
    # Both roles run as the chart runs them: `weir operator` and `weir agent` with the args
    # and env `helm template` renders (test settings through the chart's own values).
    docs = roles.render(
        {
            "agent": {
                "metricsPort": metrics,
                "reportInterval": 0.3,
                "extraArgs": [f"--tracefs={tracefs}", f"--interval={interval}"],
                **retention,
            },
            "operator": {"rollupSeconds": 0.5, "healthPort": free_port()},
        }
    )
    outside = {"KUBECONFIG": str(cluster.kubeconfig)}
    agent = roles.start(
        docs, "agent", fields={"spec.nodeName": "n1"}, env=outside, log=tmp_path / "agent.log"
    )
    operator = roles.start(docs, "operator", fields={}, env=outside, log=tmp_path / "op.log")
    data = Path("/tmp") / f"weir-e2e-{uuid.uuid4().hex[:10]}"
    data.mkdir()
    (data / "f").write_text("x")
    try:
        yield {
            "cluster": cluster,
            "agent": agent,
            "operator": operator,
            "metrics": metrics,
            "data": data,
            "logs": tmp_path,
        }
    finally:
        for process in (operator, agent):
            process.send_signal(signal.SIGTERM)
        for process, log in ((operator, "op.log"), (agent, "agent.log")):
            process.wait(timeout=60)
            assert process.returncode == 0, (tmp_path / log).read_text()
    (data / "f").unlink()
    data.rmdir()
    cluster.close()


@pytest.mark.parametrize("stack", [{"interval": 300.0}], indirect=True)
def test_an_applied_edit_counts_at_once_not_at_the_agents_next_interval(
    stack: dict[str, Any],
) -> None:
    # --interval 300: only the ConfigMap watch waking the agent explains a policy, then an
    # edit of it, counting within a minute of `kubectl apply`.
    cluster: Cluster = stack["cluster"]
    data: Path = stack["data"]
    port = stack["metrics"]

    def opens() -> float:
        return sum(scrape_http(port).get("weir_e2e_wake_opens_total", {}).values())

    def counts_an_open() -> bool:
        before = opens()
        (data / "f").read_text()
        return opens() == before + 1

    metric = "weir_e2e_wake_opens"
    cluster.kubectl("apply", "-f", "-", stdin=opens_policy("wake", "/nonexistent/", metric=metric))
    verified = (("hook", "tracepoint:syscalls:sys_enter_openat"), ("policy", "wake"))
    wait_for(
        lambda: scrape_http(port)["weir_program_verified"].get(verified) == 1.0,
        "the policy running on the agent",
        timeout=60,
    )
    assert not counts_an_open()
    cluster.kubectl("apply", "-f", "-", stdin=opens_policy("wake", f"{data}/", metric=metric))
    wait_for(counts_an_open, "the edited prefix counting", timeout=60)


def pod_in_cgroup(
    cluster: Cluster, metadata: dict[str, Any], *, container: str, ready: bool
) -> Path:
    """A pod in namespace default on n1 with one container, whose id its status gives, and
    that container's cgroup (named as containerd names it), made here: the test runs
    processes in it."""
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    status = {"name": container, "containerID": f"containerd://{container_id}",
              "image": "busybox", "imageID": "busybox@sha256:0", "ready": ready,
              "restartCount": 0}  # fmt: skip
    cluster.core.create_namespaced_pod(
        "default",
        {
            "metadata": metadata,
            "spec": {"nodeName": "n1", "containers": [{"name": container, "image": "busybox"}]},
            "status": {"containerStatuses": [status]},
        },
    )
    group = cgroup2_root() / f"weir-e2e-{container_id[:8]}" / f"cri-containerd-{container_id}.scope"
    group.mkdir(parents=True)
    return group


def churned_pod(cluster: Cluster, name: str, opens: int, data: Path) -> tuple[str, ...]:
    """A Job's pod on n1 that lives for milliseconds: its object appears (with its container's
    id), its container opens ``data/f`` ``opens`` times in its own cgroup, the cgroup is
    removed and the pod deleted. The labels its counts should carry."""
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "job-1"}
    meta = {"name": name, "ownerReferences": [{**owner, "controller": True}]}
    group = pod_in_cgroup(cluster, meta, container="task", ready=False)
    try:
        subprocess.run(
            ["/bin/sh", "-c", f'echo $$ > "{group}/cgroup.procs" && '
             f'for i in $(seq {opens}); do : < "{data}/f"; done'],
            check=True, capture_output=True,
        )  # fmt: skip
    finally:
        for _ in range(500):
            try:
                group.rmdir()
                group.parent.rmdir()
                break
            except OSError:
                time.sleep(0.01)
    cluster.core.delete_namespaced_pod(name, "default")
    return (("container", "task"), ("namespace", "default"), ("pod", name), ("workload", "nightly"))


@pytest.mark.parametrize("stack", [{"seriesRetention": "4scrapes"}], indirect=True)
def test_pods_that_come_and_go_keep_their_labels_then_their_series_stop(
    stack: dict[str, Any],
) -> None:
    # A Job's pods each live for milliseconds and are deleted at once: every one's opens are
    # exported under its own namespace, pod, container and workload (its cgroup and its pod
    # object were gone long before the scrape) for four scrapes (the chart's
    # agent.seriesRetention), and then its series stop.
    cluster: Cluster = stack["cluster"]
    data: Path = stack["data"]
    port = stack["metrics"]
    metric = "weir_e2e_churn_opens_total"
    cluster.kubectl("apply", "-f", "-", stdin=opens_policy("churn", f"{data}/", metric=metric[:-6]))
    verified = (("hook", "tracepoint:syscalls:sys_enter_openat"), ("policy", "churn"))
    wait_for(
        lambda: scrape_http(port)["weir_program_verified"].get(verified) == 1.0,
        "the policy running on the agent",
        timeout=60,
    )
    expected = {churned_pod(cluster, f"nightly-{i:02d}", 1 + i % 4, data): 1.0 + i % 4
                for i in range(12)}  # fmt: skip
    scrapes = []
    while len(scrapes) < 8:  # the last pod's watch events may still be on their way
        scrapes.append(scrape_http(port).get(metric, {}))
        if scrapes[-1] == expected:
            break
        time.sleep(0.25)
    assert scrapes[-1] == expected, scrapes[-1]
    while scrapes[-1] and len(scrapes) < 12:  # the retention: 4 scrapes, then they stop
        scrapes.append(scrape_http(port).get(metric, {}))
    assert scrapes[-1] == {}, scrapes[-1]
    assert len(scrapes) == 5, [len(s) for s in scrapes]  # gone at the 5th scrape after
    assert scrape_http(port)["weir_agent_series_retired_total"][()] == len(expected)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind)


def test_policy_lifecycle_end_to_end(stack: dict[str, Any]) -> None:
    cluster: Cluster = stack["cluster"]
    data: Path = stack["data"]
    cluster.kubectl("apply", "-f", "-", stdin=opens_policy("opens", f"{data}/"))
    scoped_policy = opens_policy(
        "scoped", f"{data}/", metric="weir_e2e_scoped_opens", pod_selector={"app": "web"}
    )
    cluster.kubectl("apply", "-f", "-", stdin=scoped_policy)
    team_policy = opens_policy(
        "team", f"{data}/", metric="weir_e2e_team_opens", namespace_selector={"team": "web"}
    )
    cluster.kubectl("apply", "-f", "-", stdin=team_policy)
    # Tetragon's containerSelector: the container named app, and one no pod has.
    for name, container in (("zz-app", "app"), ("zz-sidecar", "sidecar")):
        metric = f"weir_e2e_{name.replace('-', '_')}_opens"
        picked = opens_policy(name, f"{data}/", metric=metric, container=container)
        cluster.kubectl("apply", "-f", "-", stdin=picked)
    assert (
        "condition met"
        in cluster.kubectl(
            "wait", "--for=condition=Ready", "tracingpolicy/opens", "--timeout=50s"
        ).stdout
    )
    configmap = cluster.core.read_namespaced_config_map("weir-policy-opens", NS)
    assert configmap.metadata.labels["weir.dev/policy"] == "opens"
    assert configmap.metadata.owner_references[0].kind == "TracingPolicy"
    for _ in range(7):
        (data / "f").read_text()
    # A pod on n1 whose container runs in a cgroup the test creates: its opens carry its labels.
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8", "uid": "rs-1"}
    meta = {
        "name": "web-5d4f8-x2x9q",
        "labels": {"pod-template-hash": "5d4f8", "app": "web"},
        "ownerReferences": [{**owner, "controller": True}],
    }
    group = pod_in_cgroup(cluster, meta, container="app", ready=True)
    pod_labels = (
        ("container", "app"),
        ("namespace", "default"),
        ("pod", "web-5d4f8-x2x9q"),
        ("workload", "web"),
    )

    def open_in_pod() -> None:
        subprocess.run(
            ["/bin/sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec cat "{data}/f"'],
            check=True,
            capture_output=True,
        )

    def scoped() -> float:
        return sum(scrape_http(stack["metrics"]).get("weir_e2e_scoped_opens_total", {}).values())

    try:
        probes = 0
        while True:  # until the agent has put the new container's cgroup into the scope
            open_in_pod()
            probes += 1
            if scoped() >= 1 or probes > 100:
                break
            time.sleep(0.2)
        assert probes <= 100, "the podSelector scope never picked up the pod's cgroup"
        first = scoped()
        for _ in range(4):
            open_in_pod()
        wait_for(lambda: scoped() == first + 4, "the scoped policy counted the pod's 4 opens")
        wait_for(
            lambda: (
                scrape_http(stack["metrics"]).get("weir_e2e_opens_total", {}).get(pod_labels)
                == probes + 4
            ),
            "the pod's opens under its labels",
        )
    except BaseException:
        group.rmdir()
        group.parent.rmdir()
        raise
    samples = wait_for(
        lambda: (
            (s := scrape_http(stack["metrics"])).get("weir_e2e_opens_total", {}).get(HOST) == 7.0
            and s
        ),
        "7 opens counted",
    )
    assert samples["weir_e2e_opens_total"] == {HOST: 7.0, pod_labels: float(probes + 4)}
    assert scoped() == first + 4  # the host's 7 opens are outside the podSelector

    # namespaceSelector: the pod's namespace gets the label team=web, which the agent sees
    # through its watch of Namespaces (one LIST, then a watch; never a poll).
    def team() -> float:
        return sum(scrape_http(stack["metrics"]).get("weir_e2e_team_opens_total", {}).values())

    assert team() == 0  # no namespace is labelled yet
    cluster.kubectl("label", "namespace", "default", "team=web")
    probes = 0
    try:
        while team() == 0 and probes <= 100:  # until the label reached the agent
            open_in_pod()
            probes += 1
            time.sleep(0.2)
        assert probes <= 100, "the namespaceSelector scope never picked up the labelled namespace"
        counted = team()
        for _ in range(3):
            open_in_pod()
        wait_for(lambda: team() == counted + 3, "the labelled namespace's 3 opens")

        # containerSelector (Tetragon's): the container named app is in zz-app's scope; no
        # container is named sidecar.
        def named(name: str) -> float:
            metric = f"weir_e2e_zz_{name}_opens_total"
            return sum(scrape_http(stack["metrics"]).get(metric, {}).values())

        probes = 0
        while named("app") == 0 and probes <= 100:  # until the scope has the container
            open_in_pod()
            probes += 1
            time.sleep(0.2)
        assert probes <= 100, "the containerSelector scope never picked up the container"
        counted = named("app")
        for _ in range(2):
            open_in_pod()
        wait_for(lambda: named("app") == counted + 2, "the app container's 2 opens")
        assert named("sidecar") == 0
    finally:
        group.rmdir()
        group.parent.rmdir()
    lists = cluster.emulator.requests[("GET", "/api/v1/namespaces", False)]
    time.sleep(1.5)  # many agent loops
    assert cluster.emulator.requests[("GET", "/api/v1/namespaces", False)] == lists <= 2
    assert cluster.emulator.requests[("GET", "/api/v1/namespaces", True)] >= 1  # the watch
    row = wait_for(
        lambda: (
            (line := cluster.kubectl("get", "tracingpolicies").stdout.splitlines()[1].split())
            and line[3].endswith("%")
            and line
        ),
        "a SAVED percentage",
    )
    assert row[:3] == ["opens", "True", "1/1"]
    report = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "nodereports", "n1")
    assert report["metadata"]["ownerReferences"][0]["kind"] == "Node"
    # An edit bumps the generation; Ready follows observedGeneration and counting goes on.
    cluster.kubectl(
        "apply", "-f", "-", stdin=opens_policy("opens", f"{data}/", generation_bump=f"{data}/zz")
    )
    wait_for(
        lambda: (
            (p := cluster.get_policy("opens"))["status"].get("observedGeneration") == 2
            and condition(p, "Ready")["status"] == "True"
        ),
        "Ready at generation 2",
    )
    time.sleep(1.5)  # a few roll-ups later: the operator wrote status only, never spec
    assert cluster.get_policy("opens")["metadata"]["generation"] == 2
    for _ in range(3):
        (data / "f").read_text()
    wait_for(
        lambda: scrape_http(stack["metrics"])["weir_e2e_opens_total"][HOST] == 10.0,
        "10 opens across the swap",
    )
    # A policy that cannot run on this node is Degraded, in the engine's words.
    kprobe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TracingPolicy",
        "metadata": {"name": "kprobe"},
        "spec": {
            "kprobes": [
                {
                    "call": "tcp_sendmsg",
                    "args": [{"index": 2, "type": "size_t"}],
                    "selectors": [{"matchActions": [{"action": "NoPost"}]}],
                }
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(kprobe))
    degraded = wait_for(
        lambda: (
            (p := cluster.get_policy("kprobe")).get("status")
            and condition(p, "Degraded")["status"] == "True"
            and p
        ),
        "Degraded",
    )
    assert "1 of 1 nodes failed" in condition(degraded, "Degraded")["message"]
    assert degraded["status"]["failingNodes"][0]["node"] == "n1"
    assert condition(degraded, "Ready")["status"] == "False"
    # A new version the verifier rejects: Degraded in the verifier's words; the previous
    # version keeps running (and counting).
    verify_v1 = opens_policy("verify", f"{data}/", metric="weir_e2e_verify")
    cluster.kubectl("apply", "-f", "-", stdin=verify_v1)
    cluster.kubectl("wait", "--for=condition=Ready", "tracingpolicy/verify", "--timeout=50s")
    # The rule reaches the agent in the ConfigMap's next version when the operator saw the
    # policy before it: count once, so generation 1 runs with the rule before v2 arrives
    # (a v2 that fails keeps generation 1 as it was, rules included).
    wait_for(
        lambda: (
            (data / "f").read_text() is not None
            and scrape_http(stack["metrics"]).get("weir_e2e_verify_total", {}).get(HOST)
        ),
        "generation 1 counting under its rule",
    )
    verify_v2 = yaml.safe_load_all(verify_v1)
    v2_policy, v2_rule = list(verify_v2)
    v2_policy["spec"]["tracepoints"][0] = {
        "subsystem": "syscalls",
        "event": "sys_enter_lseek",
        "args": [{"field": "offset", "type": "long", "label": "offset"}],
        "selectors": [
            {
                "matchArgs": [{"label": "offset", "operator": "Equal", "values": ["7"]}],
                "matchActions": [{"action": "NoPost"}],
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([v2_policy, v2_rule]))
    rejected = wait_for(
        lambda: (
            (p := cluster.get_policy("verify")).get("status", {}).get("observedGeneration") == 2
            and condition(p, "Degraded")["status"] == "True"
            and p
        ),
        "Degraded by the verifier",
    )
    failing = rejected["status"]["failingNodes"][0]
    assert (failing["node"], failing["phase"]) == ("n1", "verify")
    assert "processed" in failing["verifierLog"]
    assert "verify" in condition(rejected, "Degraded")["message"]
    before = scrape_http(stack["metrics"]).get("weir_e2e_verify_total", {}).get(HOST, 0.0)
    (data / "f").read_text()
    wait_for(
        lambda: scrape_http(stack["metrics"])["weir_e2e_verify_total"][HOST] == before + 1,
        "generation 1 still counting",
    )
    # What the API server can check it refuses at apply; what it cannot (here a value of
    # 124 characters that takes 248 UTF-8 bytes) is Stalled and renders nothing.
    policy_text = opens_policy("invalid", f"{data}/").split("---")[0]
    refused = cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=policy_text.replace("operator: Prefix", "operator: GT"),
        check=False,
    )
    assert refused.returncode != 0 and "must fit its arg's type" in refused.stderr
    invalid = policy_text.replace(f"{data}/", "é" * 124)
    assert invalid != policy_text
    cluster.kubectl("apply", "-f", "-", stdin=invalid)
    stalled = wait_for(
        lambda: (
            (p := cluster.get_policy("invalid")).get("status")
            and condition(p, "Stalled")["status"] == "True"
            and p
        ),
        "Stalled",
    )
    assert (
        "is 248 bytes; the kernel compares at most 247 bytes"
        in condition(stalled, "Stalled")["message"]
    )
    with pytest.raises(k8s.ApiException):
        cluster.core.read_namespaced_config_map("weir-policy-invalid", NS)
    # Fixing it clears Stalled and renders it.
    cluster.kubectl("apply", "-f", "-", stdin=opens_policy("invalid", f"{data}/").split("---")[0])
    wait_for(
        lambda: condition(cluster.get_policy("invalid"), "Stalled")["status"] == "False",
        "Stalled cleared",
    )
    wait_for(
        lambda: cluster.core.read_namespaced_config_map("weir-policy-invalid", NS),
        "the fixed policy rendered",
    )
    # An AggregationRule naming a missing policy is Stalled until the policy exists.
    orphan = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AggregationRule",
        "metadata": {"name": "orphan"},
        "spec": {"policyRef": {"name": "nope"}, "metric": {"name": "weir_orphan"}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(orphan))
    rule = wait_for(
        lambda: (
            (
                r := cluster.custom.get_cluster_custom_object(
                    GROUP, VERSION, "aggregationrules", "orphan"
                )
            ).get("status")
            and r
        ),
        "rule status",
    )
    stalled_rule = next(c for c in rule["status"]["conditions"] if c["type"] == "Stalled")
    assert (
        stalled_rule["status"] == "True"
        and "TracingPolicy 'nope' does not exist" in stalled_rule["message"]
    )
    # Rules that would take a policy's maps past the memory budget are Stalled, with the
    # numbers, and never rendered.
    huge = [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AggregationRule",
            "metadata": {"name": name},
            "spec": {
                "policyRef": {"name": "invalid"},
                "metric": {"name": f"weir_{name.replace('-', '_')}"},
                "maxSeries": 1_000_000,
            },
        }
        for name in ("huge-a", "huge-b")
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(huge))

    def over_budget() -> str | None:
        found = cluster.custom.get_cluster_custom_object(
            GROUP, VERSION, "aggregationrules", "huge-b"
        )
        stalled = next(
            (
                c
                for c in (found.get("status") or {}).get("conditions", [])
                if c["type"] == "Stalled"
            ),
            None,
        )
        return stalled["message"] if stalled and stalled["status"] == "True" else None

    assert "past the budget of 128 MiB per policy" in wait_for(over_budget, "huge rules Stalled")
    rendered = cluster.core.read_namespaced_config_map("weir-policy-invalid", NS)
    assert "huge-a" not in json.dumps(rendered.data)
    for doc in huge:
        cluster.kubectl("delete", "aggregationrule", doc["metadata"]["name"])
    # With the API server paused the agent keeps counting; it catches up afterwards.
    counted = scrape_http(stack["metrics"])["weir_e2e_opens_total"][HOST]
    cluster.emulator.faults.paused.clear()
    try:
        for _ in range(5):
            (data / "f").read_text()
        wait_for(
            lambda: scrape_http(stack["metrics"])["weir_e2e_opens_total"][HOST] == counted + 5,
            "counting while paused",
        )
    finally:
        cluster.emulator.faults.paused.set()
    wait_for(
        lambda: (
            next(
                p
                for p in cluster.custom.get_cluster_custom_object(
                    GROUP, VERSION, "nodereports", "n1"
                )["status"]["policies"]
                if p["name"] == "opens"
            )["savings"]["matched"]
            >= 15
        ),
        "the NodeReport caught up",
    )
    # Deleting the policy deletes its ConfigMap and the agent detaches its programs.
    ids = {
        i
        for p in report["status"]["policies"]
        if p["name"] == "opens"
        for program in p["programs"]
        for i in program["programIds"]
    }
    assert len(ids) == 2
    cluster.kubectl("delete", "tracingpolicy", "opens", "--timeout=60s")
    wait_for(lambda: _gone(cluster), "the ConfigMap collected")

    def detached() -> bool:
        out = subprocess.run(
            ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
        )
        return not ids & {int(p["id"]) for p in json.loads(out.stdout)}

    wait_for(detached, "the programs detached")


def cgroup2_root() -> Path:
    from weir_agent.identity import cgroups

    root = cgroups.cgroup2_mount(Path("/proc/mounts").read_text())
    assert root is not None
    return root


def _gone(cluster: Cluster) -> bool:
    try:
        cluster.core.read_namespaced_config_map("weir-policy-opens", NS)
    except k8s.ApiException as error:
        return error.status == 404
    return False
