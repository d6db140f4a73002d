"""The control plane at scale: the operator against thousands of simulated agents.

kubesim (the in-repo API emulator, a process of its own) holds N Nodes, their agent pods
and their NodeReports (owned by their Node), 20 TracingPolicies and an AggregationRule
for each. The operator runs as the chart runs it (``weir operator`` with the chart's args
and env, its defaults: a roll-up every 10 s, counters in status at most every 60 s). The
simulated agents are this script: each node's report is rewritten (new counters, a new
heartbeat) once per agent heartbeat interval, spread over it, as N agents do.

Two phases are measured, each for the operator and for kubesim (so that what the
emulator costs is in view):
- steady: every node counting, nothing else changing;
- rollout: every policy gets a new generation and every node reports it, spread over the
  rollout window; then the time from the last node running it to every policy (and rule)
  Ready at that generation.

Figures: operator CPU seconds per minute and memory (RSS, peak), API requests per second
by verb (the operator's, from kubesim's request log, by the operator's own token), status
writes per second against the bound (one per object per roll-up interval), Ready latency
in roll-up intervals. Targets are printed beside them. Run: ``make bench-control-plane``
(``NODES=500`` for a smaller run). Writes bench/out/control-plane.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path[:0] = [str(ROOT / d) for d in ("api", "operator", "tests")]

import roles  # noqa: E402
from kubesim.server import kubeconfig  # noqa: E402
from weir_api import GROUP, VERSION  # noqa: E402

POLICIES = 20
NAMESPACE = "weir-system"
TICK = os.sysconf("SC_CLK_TCK")


def stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """Plain HTTP to kubesim as one user (its token), a connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.local = threading.local()

    def call(self, method: str, path: str, body: Any = None, kind: str = "json") -> Any:
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        content = {"json": "application/json", "merge": "application/merge-patch+json"}[kind]
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content}
        self.local.conn.request(method, path, body=data, headers=headers)
        response = self.local.conn.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


def policy(index: int, generation_mark: str = "") -> dict[str, Any]:
    values = [f"/srv/app-{index}/"] + ([generation_mark] if generation_mark else [])
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TracingPolicy",
        "metadata": {"name": f"p{index:02}"},
        "spec": {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "filename", "type": "filename", "label": "path"}],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"label": "path", "operator": "Prefix", "values": values}
                            ],
                            "matchActions": [{"action": "NoPost"}],
                        }
                    ],
                }
            ]
        },
    }


def rule(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AggregationRule",
        "metadata": {"name": f"p{index:02}"},
        "spec": {
            "policyRef": {"name": f"p{index:02}"},
            "groupBy": ["namespace", "workload"],
            "metric": {"name": f"bench_opens_{index:02}", "help": "opens"},
        },
    }


def report_status(node: int, generation: int, tick: int) -> dict[str, Any]:
    """What an agent running every policy at ``generation`` publishes."""
    policies = []
    for index in range(POLICIES):
        observed = 1000 * tick + node + index
        policies.append(
            {
                "name": f"p{index:02}",
                "generation": generation,
                "runningGeneration": generation,
                "digest": f"sha256:{generation:064x}",
                "state": "Ready",
                "programs": [
                    {
                        "hook": "tracepoint:syscalls:sys_enter_openat",
                        "state": "attached",
                        "instructions": 4100,
                        "programIds": [1000 + index, 2000 + index],
                    }
                ],
                "aggregations": [{"name": f"p{index:02}", "generation": 1, "series": 3 + node % 5}],
                "savings": {
                    "observed": observed,
                    "matched": observed // 2,
                    "aggregated": observed // 2,
                    "rawBytes": observed * 300,
                    "exportedBytes": 4000,
                },
            }
        )
    return {"heartbeatTime": stamp(), "agentVersion": "bench", "policies": policies}


class Process:
    """CPU seconds (user + system) and memory of a process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def memory(self) -> tuple[float, float]:
        """RSS and its peak, MB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]


class Agents:
    """The simulated agents: rewrite every node's report once per ``period``, spread."""

    def __init__(self, api: Api, nodes: int, period: float, workers: int = 8) -> None:
        self.api, self.nodes, self.period = api, nodes, period
        self.generation = {node: 1 for node in range(nodes)}
        self.tick = 1
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.writes = 0
        self.late = 0.0  # how far behind its schedule the writer fell, at most (s)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def write(self, node: int) -> None:
        status = report_status(node, self.generation[node], self.tick)
        self.api.call(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/nodereports/node-{node:05}/status",
            {"status": status},
            kind="merge",
        )
        self.writes += 1

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.tick += 1
            futures = []
            for node in range(self.nodes):
                due = start + node * self.period / self.nodes
                wait = due - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
                self.late = max(self.late, -wait)
                futures.append(self.pool.submit(self.write, node))
            for future in futures:
                future.result()
            start += self.period

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.pool.shutdown()


@contextmanager
def kubesim(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    config = workdir / "kubesim.kubeconfig"
    config.unlink(missing_ok=True)  # written again once kubesim listens
    process = subprocess.Popen(
        [sys.executable, "-m", "kubesim", "--port", str(port), "--kubeconfig", str(config)],
        cwd=ROOT / "tests",
    )
    try:
        deadline = time.monotonic() + 30
        while not config.exists():
            assert time.monotonic() < deadline, "kubesim did not start"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def most_writes_per_interval(api: Api, since: float, interval: float) -> int:
    """The most status writes one object got from the operator within any roll-up
    interval, since ``since`` (time.time())."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("GET", "/kubesim/requests?writes=1")
    writes = json.loads(conn.getresponse().read())
    times: dict[tuple[str, str], list[float]] = {}
    for at, user, _, resource, name in writes:
        if user == "operator" and resource.endswith("/status") and at >= since:
            times.setdefault((resource, name), []).append(at)
    most = 0
    for stamps in times.values():
        stamps.sort()
        for i, start in enumerate(stamps):
            # a pass takes a moment: writes of one pass are within a second of its start
            most = max(most, sum(1 for t in stamps[i:] if t < start + interval - 1.0))
    return most


def requests(api: Api) -> dict[str, dict[str, int]]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("GET", "/kubesim/requests")
    return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]


def setup(api: Api, nodes: int) -> None:
    """CRDs, namespace, Nodes, agent pods, NodeReports, policies and rules."""
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        api.call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            yaml.safe_load(crd.read_text()),
        )
    api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    docs = roles.render({})
    template = roles.workload(docs, "DaemonSet", "weir-agent")["spec"]["template"]
    labels = dict(template["metadata"]["labels"])

    def one(node: int) -> None:
        name = f"node-{node:05}"
        created = api.call(
            "POST",
            "/api/v1/nodes",
            {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}},
        )
        api.call(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "metadata": {"name": f"weir-agent-{node:05}", "labels": labels},
                "spec": {"nodeName": name, "containers": [{"name": "agent", "image": "weir"}]},
            },
        )
        owner = {
            "apiVersion": "v1",
            "kind": "Node",
            "name": name,
            "uid": created["metadata"]["uid"],
        }
        api.call(
            "POST",
            f"/apis/{GROUP}/{VERSION}/nodereports",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "NodeReport",
                "metadata": {"name": name, "ownerReferences": [owner]},
                "spec": {"nodeName": name},
            },
        )
        api.call(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/nodereports/{name}/status",
            {"status": report_status(node, 1, 1)},
            kind="merge",
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(nodes)))
    for index in range(POLICIES):
        api.call("POST", f"/apis/{GROUP}/{VERSION}/tracingpolicies", policy(index))
        api.call("POST", f"/apis/{GROUP}/{VERSION}/aggregationrules", rule(index))


def ready_at(api: Api, generation: int) -> bool:
    """Every policy and rule Ready at its generation (read by the bench's own token)."""
    for plural in ("tracingpolicies", "aggregationrules"):
        for item in api.call("GET", f"/apis/{GROUP}/{VERSION}/{plural}")["items"]:
            status = item.get("status") or {}
            want = item["metadata"]["generation"]
            if plural == "tracingpolicies" and want != generation:
                return False
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            if status.get("observedGeneration") != want or ready.get("status") != "True":
                return False
            if plural == "tracingpolicies" and status["nodes"]["ready"] != api_nodes[0]:
                return False
    return True


api_nodes = [0]


def window(
    operator: Process, sim: Process, api: Api, seconds: float, docs: list[Any]
) -> dict[str, Any]:
    """What the operator and kubesim did over ``seconds``."""
    cpu0, sim0, req0 = operator.cpu(), sim.cpu(), requests(api)
    writes0 = status_writes(docs)
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu1, sim1, req1 = operator.cpu(), sim.cpu(), requests(api)
    return figures(
        cpu0, cpu1, sim0, sim1, req0, req1, writes0, status_writes(docs), elapsed, operator
    )


def status_writes(docs: list[Any]) -> float:
    samples = roles.scrape(docs, "operator")
    return sum(
        v
        for k, v in samples.items()
        if k.startswith("weir_operator_status_writes_total") and 'result="ok"' in k
    )


def figures(
    cpu0: float,
    cpu1: float,
    sim0: float,
    sim1: float,
    req0: Any,
    req1: Any,
    writes0: float,
    writes1: float,
    elapsed: float,
    operator: Process,
) -> dict[str, Any]:
    def rates(user: str) -> dict[str, float]:
        """(verb resource) -> requests per second over the window."""
        out = {}
        for verb, resources in req1.get(user, {}).items():
            for resource, n in resources.items():
                before = req0.get(user, {}).get(verb, {}).get(resource, 0)
                if n != before:
                    out[f"{verb} {resource}"] = (n - before) / elapsed
        return out

    rss, peak = operator.memory()
    return {
        "seconds": elapsed,
        "operator_cpu_per_min": (cpu1 - cpu0) * 60 / elapsed,
        "kubesim_cpu_per_min": (sim1 - sim0) * 60 / elapsed,
        "rss_mb": rss,
        "peak_mb": peak,
        "operator_requests": rates("operator"),
        "agent_requests": rates("agents"),
        "status_writes_per_s": (writes1 - writes0) / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--steady", type=float, default=60.0, help="steady window (s)")
    parser.add_argument("--rollout", type=float, default=30.0, help="rollout spread (s)")
    args = parser.parse_args()
    api_nodes[0] = args.nodes
    OUT.mkdir(exist_ok=True)
    workdir = OUT / "control-plane"
    workdir.mkdir(exist_ok=True)
    port = free_port()
    container = roles.pod_spec(roles.render({}), "operator")["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    interval = float(env.get("WEIR_ROLLUP_SECONDS", "10"))
    heartbeat = 60.0  # the chart's agent.heartbeatSeconds and reportInterval
    with kubesim(port, workdir) as sim_process:
        bench = Api(port, "bench")
        began = time.monotonic()
        setup(bench, args.nodes)
        print(
            f"set up {args.nodes} nodes, {POLICIES} policies and rules in "
            f"{time.monotonic() - began:.0f} s",
            flush=True,
        )
        (workdir / "operator.kubeconfig").write_text(kubeconfig(port, token="operator"))
        docs = roles.render({"operator": {"healthPort": free_port()}})
        agents = Agents(Api(port, "agents"), args.nodes, heartbeat)
        agents.start()
        log = workdir / "operator.log"
        with roles.running(
            docs, "operator", kubeconfig=workdir / "operator.kubeconfig", log=log
        ) as process:
            operator, sim = Process(process.pid), Process(sim_process.pid)
            began = time.monotonic()
            while not ready_at(bench, 1):
                time.sleep(1)
            first_ready = time.monotonic() - began
            print(f"every policy Ready {first_ready:.0f} s after the operator started", flush=True)
            time.sleep(2 * interval)  # the first writes settle
            steady_began = time.time()
            steady = window(operator, sim, bench, args.steady, docs)
            steady["most_writes"] = most_writes_per_interval(bench, steady_began, interval)
            print("steady:", json.dumps(steady), flush=True)
            # The rollout: every policy gets generation 2; every node reports it over the
            # spread, in its own order, then goes on counting.
            cpu0, sim0, req0, w0 = operator.cpu(), sim.cpu(), requests(bench), status_writes(docs)
            rollout_began = time.monotonic()
            rollout_wall = time.time()
            for index in range(POLICIES):
                bench.call(
                    "PATCH",
                    f"/apis/{GROUP}/{VERSION}/tracingpolicies/p{index:02}",
                    {"spec": policy(index, "/srv/new/")["spec"]},
                    kind="merge",
                )
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = []
                for node in range(args.nodes):
                    due = rollout_began + node * args.rollout / args.nodes
                    time.sleep(max(0.0, due - time.monotonic()))
                    agents.generation[node] = 2
                    futures.append(pool.submit(agents.write, node))
                for future in futures:
                    future.result()
            last_node = time.monotonic()
            while not ready_at(bench, 2):
                time.sleep(0.2)
            latency = time.monotonic() - last_node
            time.sleep(max(0.0, 2 * interval - latency))
            rollout = figures(
                cpu0,
                operator.cpu(),
                sim0,
                sim.cpu(),
                req0,
                requests(bench),
                w0,
                status_writes(docs),
                time.monotonic() - rollout_began,
                operator,
            )
            rollout["ready_latency_s"] = latency
            rollout["most_writes"] = most_writes_per_interval(bench, rollout_wall, interval)
            print("rollout:", json.dumps(rollout), flush=True)
            agents.close()
    text = table(args.nodes, interval, steady, rollout, agents.late)
    print(text)
    (OUT / "control-plane.md").write_text(text)
    return 0


def table(
    nodes: int, interval: float, steady: dict[str, Any], rollout: dict[str, Any], late: float
) -> str:
    objects = 2 * POLICIES
    bound = objects / interval

    def verbs(rates: dict[str, float]) -> str:
        return "<br>".join(f"{v} {r:.3f}" for v, r in sorted(rates.items())) or "none"

    rows = [
        (
            "operator CPU (s per min)",
            f"{steady['operator_cpu_per_min']:.2f}",
            f"{rollout['operator_cpu_per_min']:.2f}",
            "-",
        ),
        (
            "kubesim CPU (s per min)",
            f"{steady['kubesim_cpu_per_min']:.2f}",
            f"{rollout['kubesim_cpu_per_min']:.2f}",
            "(the emulator's share)",
        ),
        (
            "operator memory, RSS / peak (MB)",
            f"{steady['rss_mb']:.0f} / {steady['peak_mb']:.0f}",
            f"{rollout['rss_mb']:.0f} / {rollout['peak_mb']:.0f}",
            "<= 500",
        ),
        (
            "operator requests/s by verb",
            verbs(steady["operator_requests"]),
            verbs(rollout["operator_requests"]),
            "no periodic GET or LIST",
        ),
        (
            "simulated agents' requests/s",
            verbs(steady["agent_requests"]),
            verbs(rollout["agent_requests"]),
            "-",
        ),
        (
            "status writes/s",
            f"{steady['status_writes_per_s']:.2f}",
            f"{rollout['status_writes_per_s']:.2f}",
            f"<= {bound:.1f} ({objects} objects / {interval:g} s)",
        ),
        (
            "most status writes of one object in one interval",
            f"{steady['most_writes']}",
            f"{rollout['most_writes']}",
            "<= 1",
        ),
        (
            "Ready after the last node (s)",
            "-",
            f"{rollout['ready_latency_s']:.1f}",
            f"<= {2 * interval:g} (2 roll-up intervals)",
        ),
    ]
    lines = [
        f"# Control plane: {nodes} simulated nodes, {POLICIES} policies with a rule each",
        "",
        f"Roll-up interval {interval:g} s; agents publish every 60 s (chart defaults); "
        f"steady window {steady['seconds']:.0f} s; rollout (every policy a new generation, "
        f"every node reporting it) over {rollout['seconds']:.0f} s. The simulated agents fell "
        f"at most {late:.1f} s behind their schedule.",
        "",
        "| figure | steady | rollout | target |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
