"""The chart's pods, run as a node runs them.

The rendered DaemonSet and Deployment pod templates become Pods that `podman kube
play` runs from the image `make images` built, with exactly the chart's
securityContext (not privileged; the listed capabilities; hostPID; the listed
mounts). What the kubelet adds is added the way it adds it: the API address in
KUBERNETES_SERVICE_HOST/PORT, a service-account token, the cluster CA and the
namespace under /var/run/secrets/kubernetes.io/serviceaccount, fieldRef env and
$(VAR) expansion in args. kubesim serves HTTPS and accepts only the tokens it
issued, so the roles authenticate as in a cluster.

The agent container must count the exact opens of a workload on the host, and
`kubectl get tracingpolicies` must then show the policy Ready on 1/1 nodes.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import signal
import socket
import subprocess
import threading
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
from agenthelpers import openat_policy, scrape_http
from conftest import ROOT, free_port, kernel_unavailable_reason, require, wait_for
from kubesim.certs import certificates
from kubesim.server import Emulator, kubeconfig, serve

VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)
IMAGE = "localhost/weir"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stderr}")
    return result.stdout


def require_podman() -> None:
    reason = kernel_unavailable_reason()
    require(reason is None, reason or "")
    require(shutil.which("podman") is not None, "podman is not installed (make setup)")
    probe = subprocess.run(
        ["podman", "image", "exists", f"{IMAGE}:{VERSION}"], capture_output=True, timeout=60
    )
    require(probe.returncode == 0, f"image {IMAGE}:{VERSION} is not built (make images)")


def as_pod(
    workload: dict[str, Any],
    *,
    name: str,
    fields: dict[str, str],
    api: tuple[str, int],
    service_account: Path,
) -> dict[str, Any]:
    """A workload's pod template made into the Pod its controller and the kubelet would run."""
    spec = copy.deepcopy(workload["spec"]["template"]["spec"])
    container = spec["containers"][0]
    env = roles.container_env(container, fields=fields)
    env |= {"KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1])}
    container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    container["args"] = [roles.expand(a, env) for a in container["args"]]
    # The kubelet runs the probes from outside; podman would run them inside the container
    # with curl (not in the image). The test probes the same endpoints itself.
    container.pop("readinessProbe", None)
    container.pop("livenessProbe", None)
    container.setdefault("volumeMounts", []).append(
        {"name": "kube-api-access", "mountPath": SA_DIR, "readOnly": True}
    )
    spec.setdefault("volumes", []).append(
        {"name": "kube-api-access", "hostPath": {"path": str(service_account), "type": "Directory"}}
    )
    spec.pop("serviceAccountName", None)
    spec["restartPolicy"] = "Never"
    metadata: dict[str, Any] = {"name": name}
    # podman 4.3 reads a container's seccomp profile from the (older) annotation only; the
    # kubelet reads securityContext.seccompProfile. Say the same thing the way podman reads it.
    profile = container.get("securityContext", {}).get("seccompProfile", {}).get("type")
    if profile == "Unconfined":
        key = f"container.seccomp.security.alpha.kubernetes.io/{container['name']}"
        metadata["annotations"] = {key: "unconfined"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def pod_ip(pod: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").strip()
    return podman(
        "inspect", infra, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    ).strip()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class PodCluster:
    """kubesim over HTTPS with issued tokens, and the chart's pods under podman."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gateway = podman(
            "network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}"
        ).strip()
        ca, cert, key = certificates(tmp, ips=["127.0.0.1", self.gateway])
        self.ca = ca
        admin = secrets.token_hex(16)
        self.tokens = {
            "admin": admin,
            "weir-operator": secrets.token_hex(16),
            "weir-agent": secrets.token_hex(16),
        }
        users = {
            admin: "kubernetes-admin",
            self.tokens["weir-operator"]: "system:serviceaccount:weir-system:weir-operator",
            self.tokens["weir-agent"]: "system:serviceaccount:weir-system:weir-agent",
        }
        self.port = free_port()
        self.server, self.emulator = serve(
            self.port, Emulator(tokens=users), host="0.0.0.0", tls=(str(cert), str(key))
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig(self.port, ca=str(ca), token=admin))
        self.pods: list[Path] = []
        self.stopped_logs: dict[str, str] = {}  # role -> the last stopped pod's log tail
        self.suffix = uuid.uuid4().hex[:6]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.tmp}/cache", *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def service_account(self, name: str) -> Path:
        """What the kubelet projects into /var/run/secrets/kubernetes.io/serviceaccount."""
        directory = self.tmp / f"sa-{name}"
        directory.mkdir(exist_ok=True)
        (directory / "token").write_text(self.tokens[name])
        shutil.copy(self.ca, directory / "ca.crt")
        (directory / "namespace").write_text("weir-system")
        for path in directory.iterdir():
            path.chmod(0o644)  # readable by the operator's uid 65532
        directory.chmod(0o755)
        return directory

    def play(self, role: str, *, fields: dict[str, str]) -> str:
        """Run the pod of the DaemonSet or Deployment that `helm install` stored."""
        kind = {"operator": "deployment", "agent": "daemonset"}[role]
        workload = json.loads(
            self.kubectl("get", "-n", "weir-system", kind, f"weir-{role}", "-o", "json")
        )
        name = f"weir-{role}-{self.suffix}"
        pod = as_pod(
            workload,
            name=name,
            fields=fields,
            api=(self.gateway, self.port),
            service_account=self.service_account(f"weir-{role}"),
        )
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pod))
        podman("kube", "play", "--network", "podman", str(path), timeout=300)
        self.pods.append(path)
        return name

    def logs(self, pod: str, role: str) -> str:
        result = subprocess.run(
            ["podman", "logs", f"{pod}-{role}"], capture_output=True, text=True, timeout=60
        )
        return (result.stdout + result.stderr)[-6000:]

    def stop(self, name: str) -> None:
        """Stop one pod (its containers get SIGTERM, as from the kubelet)."""
        path = next(p for p in self.pods if p.stem == name)
        self._down(path)
        self.pods.remove(path)

    def _down(self, path: Path) -> None:
        # As the kubelet stops a pod: SIGTERM and a grace period for the app container while
        # the sandbox keeps the pod's network up, then the sandbox. (`podman pod stop` stops
        # the infra container alongside, so a stopping agent lost its network mid-request
        # and, unable to read its DaemonSet, left its hooks pinned; `kube down` alone kills.)
        # What the container logged is kept for the assertions that follow.
        for role in ("operator", "agent"):
            if path.stem.startswith(f"weir-{role}-"):
                podman("stop", "--time", "30", f"{path.stem}-{role}", check=False, timeout=120)
                self.stopped_logs[role] = self.logs(path.stem, role)
        podman("pod", "stop", "--time", "30", path.stem, check=False, timeout=120)
        podman("kube", "down", str(path), check=False, timeout=120)

    def uninstall(self) -> None:
        """`helm uninstall`, then the pods stop (as the kubelet stops them once the garbage
        collector deleted them): the agent, seeing its DaemonSet gone, detaches its hooks."""
        subprocess.run(
            [str(roles.HELM), "uninstall", "weir", "--namespace", "weir-system",
             "--kubeconfig", str(self.kubeconfig)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        for path in self.pods:
            self._down(path)
        self.pods = []

    def close(self) -> None:
        self.uninstall()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[PodCluster]:
    require_podman()
    cluster = PodCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


PINS = Path("/sys/fs/bpf/weir")  # the node's bpffs (hostPath), where the agent pins
CAPABILITIES = {"SYS_ADMIN": 21, "SYS_PTRACE": 19, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}
MINIMAL = ["agent.capabilities={BPF,PERFMON,SYS_PTRACE}", "agent.seccompProfile=Unconfined"]


def process_status(container: str) -> dict[str, str]:
    pid = podman("inspect", container, "--format", "{{.State.Pid}}").strip()
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (x.partition(":") for x in lines)}


def effective_capabilities(container: str) -> set[str]:
    mask = int(process_status(container)["CapEff"], 16)
    names = {bit: name for name, bit in CAPABILITIES.items()}
    unknown = {f"cap{bit}" for bit in range(64) if mask >> bit & 1 and bit not in names}
    return {names[bit] for bit in names if mask >> bit & 1} | unknown


def install_and_run(pods: PodCluster, sets: list[str]) -> tuple[str, str]:
    """The README's install against kubesim (helm creates the CRDs, the namespace, RBAC, the
    Deployment and the DaemonSet), then the pods of what the cluster stored; returns the
    operator's and the agent's pod names."""
    base = [
        "image.repository=" + IMAGE,
        "image.tag=" + VERSION,
        "image.pullPolicy=Never",
        "operator.rollupSeconds=1",
        "agent.reportInterval=1",
    ]
    result = subprocess.run(
        [
            str(roles.HELM),
            "install",
            "weir",
            str(roles.CHART),
            "--namespace",
            "weir-system",
            "--create-namespace",
            "--kubeconfig",
            str(pods.kubeconfig),
            *(a for s in [*base, *sets] for a in ("--set", s)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "STATUS: deployed" in result.stdout, result.stderr
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    pods.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(node))
    return pods.play("operator", fields={}), pods.play("agent", fields={"spec.nodeName": "n1"})


@pytest.mark.parametrize("security", [[], MINIMAL], ids=["chart-defaults", "without-sys-admin"])
def test_chart_pods_count_exactly_and_report_ready(pods: PodCluster, security: list[str]) -> None:
    operator, agent = install_and_run(pods, security)
    daemonset = json.loads(
        pods.kubectl("get", "-n", "weir-system", "ds", "weir-agent", "-o", "json")
    )
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    wanted = set(container["securityContext"]["capabilities"]["add"])
    agent_ip = pod_ip(agent)
    # Exactly the chart's capabilities, nothing more (podman may not grant SYS_RESOURCE).
    assert effective_capabilities(f"{agent}-agent") <= wanted
    assert effective_capabilities(f"{agent}-agent") >= wanted - {"SYS_RESOURCE"}
    seccomp = process_status(f"{agent}-agent")["Seccomp"]
    assert seccomp == ("0" if security == MINIMAL else "2")

    def logs() -> str:
        return pods.logs(operator, "operator") + "\n----\n" + pods.logs(agent, "agent")

    # The probes the chart wires, asked the way the kubelet asks them.
    wait_for(lambda: http_status(f"http://{agent_ip}:9400/readyz") == 200, "agent ready", logs=logs)
    assert http_status(f"http://{agent_ip}:9400/healthz") == 200
    operator_ip = pod_ip(operator)
    wait_for(
        lambda: http_status(f"http://{operator_ip}:8080/healthz") == 200, "operator live", logs=logs
    )

    data = Path("/tmp") / f"weir-pods-{uuid.uuid4().hex[:10]}"
    (data / "posted").mkdir(parents=True)
    try:
        (data / "f").write_text("x")
        (data / "posted" / "p").write_text("x")
        rule = {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "AggregationRule",
            "metadata": {"name": "pod-opens"},
            "spec": {
                "policyRef": {"name": "pod-opens"},
                "groupBy": ["namespace"],
                "metric": {"name": "weir_pod_test_opens", "help": "opens"},
            },
        }
        documents = [
            openat_policy("pod-opens", f"{data}/f"),
            rule,
            openat_policy("pod-posts", f"{data}/posted/", action="Post"),
        ]
        pods.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
        for name in ("pod-opens", "pod-posts"):
            out = pods.kubectl(
                "wait",
                "--for=condition=Ready",
                f"tracingpolicy/{name}",
                "--timeout=90s",
                check=False,
            )
            assert "condition met" in out, (
                pods.kubectl("get", "tracingpolicy", name, "-o", "yaml") + logs()
            )
        for _ in range(9):
            (data / "f").read_text()
        for _ in range(3):
            (data / "posted" / "p").read_text()
        wait_for(
            lambda: (
                scrape_http(9400, agent_ip)["weir_pod_test_opens_total"][(("namespace", ""),)]
                == 9.0
            ),
            "exactly 9 opens counted by the agent pod",
            logs=logs,
        )
        table = pods.kubectl("get", "tracingpolicies")
        row = next(line.split() for line in table.splitlines() if line.startswith("pod-opens"))
        assert row[1:3] == ["True", "1/1"], table
        # The README's next two commands, as written there.
        pods.kubectl("apply", "-f", str(ROOT / "examples" / "policies" / "file-opens.yaml"))
        waited = pods.kubectl(
            "wait", "--for=condition=Ready", "tracingpolicy/file-opens-etc", "--timeout=90s"
        )
        assert "condition met" in waited

        # Posted events are JSON lines on the agent container's stdout (kubectl logs).
        def posted() -> list[dict[str, Any]]:
            out = subprocess.run(
                ["podman", "logs", f"{agent}-agent"], capture_output=True, text=True, timeout=60
            ).stdout
            lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            return [e for e in lines if e.get("policy") == "pod-posts"]

        events = wait_for(lambda: len(posted()) == 3 and posted(), "3 events on stdout", logs=logs)
        assert {e["node"] for e in events} == {"n1"}
        assert {e["hook"] for e in events} == {"tracepoint:syscalls:sys_enter_openat"}
        report = json.loads(pods.kubectl("get", "nodereport", "n1", "-o", "json"))
        assert report["status"]["headers"] == "btf"  # the image's, before the node's
        # Each role authenticated with its own service-account token.
        users = pods.emulator.requests_by_user
        assert users["system:serviceaccount:weir-system:weir-operator"] > 0
        assert users["system:serviceaccount:weir-system:weir-agent"] > 0

        # A restart: the pod stops while its DaemonSet stays, its hooks stay pinned and
        # count; the next pod adopts them, so opens made while no agent ran are counted.
        pinned = {p.name for p in PINS.iterdir() if p.is_dir()}
        assert len(pinned - {"tracker"}) == 3  # one per hook
        assert "tracker" in pinned  # the exec tracker (a rule groups by namespace)
        pods.stop(agent)
        # The stopped agent's NodeReport says its hooks run on: the operator still shows the
        # node running the policy, not Pending.
        left = json.loads(pods.kubectl("get", "nodereport", "n1", "-o", "json"))["status"]
        ready = next(c for c in left["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "AgentStoppedHooksAttached", ready
        for _ in range(4):  # over several roll-ups (operator.rollupSeconds=1)
            time.sleep(1)
            table = pods.kubectl("get", "tracingpolicies")
            row = next(x.split() for x in table.splitlines() if x.startswith("pod-opens"))
            assert row[1:3] == ["True", "1/1"], table
        for _ in range(4):
            (data / "f").read_text()
        agent = pods.play("agent", fields={"spec.nodeName": "n1"})
        agent_ip = pod_ip(agent)
        wait_for(
            lambda: (
                scrape_http(9400, agent_ip)["weir_pod_test_opens_total"][(("namespace", ""),)]
                == 13.0
            ),
            "the 4 opens made while no agent ran counted by the next one",
            logs=logs,
        )
        # An uninstall: the DaemonSet goes, the agent detaches and removes its pins.
        pods.uninstall()
        left = sorted(str(p.relative_to(PINS)) for p in PINS.rglob("*")) if PINS.exists() else []
        assert not left, f"pins left after the uninstall: {left}\n" + pods.stopped_logs["agent"]
    finally:
        for path in (data / "f", data / "posted" / "p"):
            path.unlink(missing_ok=True)
        (data / "posted").rmdir()
        data.rmdir()


def test_an_agent_without_host_headers_runs_every_example_from_btf(pods: PodCluster) -> None:
    # agent.mountHostHeaders=false (a COS, Bottlerocket or Flatcar node): the image's generic
    # headers and the kernel's BTF serve. Every example and the container-metrics pack run
    # to Ready (the kprobe example passes compile and verify; this VM cannot attach kprobes),
    # and the struct reads count exactly: socket addresses (egress bytes), executables and
    # signals (segfaults).
    operator, agent = install_and_run(pods, ["agent.mountHostHeaders=false"])
    agent_ip = pod_ip(agent)

    def logs() -> str:
        return pods.logs(operator, "operator") + "\n----\n" + pods.logs(agent, "agent")

    wait_for(lambda: http_status(f"http://{agent_ip}:9400/readyz") == 200, "agent ready", logs=logs)
    pack = ROOT / "examples" / "packs" / "container-metrics"
    files = [*sorted((ROOT / "examples" / "policies").glob("*.yaml")), *sorted(pack.glob("*.yaml"))]
    names = []
    for path in files:
        pods.kubectl("apply", "-f", str(path))
        names += [d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text())
                  if d and d["kind"] == "TracingPolicy"]  # fmt: skip
    kprobe = "egress-bytes-kprobe"
    for name in names:
        if name == kprobe:
            continue
        out = pods.kubectl(
            "wait", "--for=condition=Ready", f"tracingpolicy/{name}", "--timeout=100s", check=False
        )
        assert "condition met" in out, (
            pods.kubectl("get", "tracingpolicy", name, "-o", "yaml") + logs()
        )

    def kprobe_programs() -> list[dict[str, Any]]:
        report = json.loads(pods.kubectl("get", "nodereport", "n1", "-o", "json"))
        found = [p for p in report["status"]["policies"] if p["name"] == kprobe]
        return found[0]["programs"] if found else []

    programs = wait_for(kprobe_programs, "the kprobe example's programs reported", logs=logs)
    assert {p.get("failurePhase") for p in programs} == {"attach"}, programs  # compiled, verified
    report = json.loads(pods.kubectl("get", "nodereport", "n1", "-o", "json"))
    assert report["status"]["headers"] == "btf"

    # Egress bytes: a struct sock's destination read at BTF offsets; 127.0.0.2 is "outside"
    # to the example's NotDAddr 127.0.0.1/32, and nothing else on this machine sends TCP there.
    server = socket.create_server(("127.0.0.2", 0))
    port = server.getsockname()[1]
    sent = 0
    with socket.create_connection(("127.0.0.2", port)) as client:
        peer, _ = server.accept()
        for size in (100, 2000, 30000):
            client.sendall(b"x" * size)
            sent += size
        peer.close()
    server.close()
    loopback = (("namespace", ""), ("pod", ""), ("sk_class", "loopback"))
    wait_for(
        lambda: scrape_http(9400, agent_ip)["weir_egress_sent_bytes_total"].get(loopback) == sent,
        f"exactly {sent} bytes sent to 127.0.0.2 counted",
        logs=logs,
    )
    # Segfaults: 3 processes of an executable only this test runs raise SIGSEGV at themselves
    # (the signal's current task is the crashing one, as in a fault): a shell, copied.
    crasher = Path("/tmp") / f"weir-crasher-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/dash", crasher)
    try:
        for _ in range(3):
            done = subprocess.run([str(crasher), "-c", "kill -SEGV $$"], timeout=10)
            assert done.returncode == -signal.SIGSEGV
        crashes = (("binary", str(crasher)), ("namespace", ""), ("workload", ""))

        def segfaults() -> str:
            return str(scrape_http(9400, agent_ip).get("weir_segfaults_total"))

        wait_for(
            lambda: scrape_http(9400, agent_ip)["weir_segfaults_total"].get(crashes) == 3.0,
            "exactly 3 segfaults of the test's executable counted",
            logs=segfaults,
        )
    finally:
        crasher.unlink()
