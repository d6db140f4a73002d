"""The container-metrics pack (examples/packs/container-metrics) against the kernel's own
accounting, for a pod the test runs in a cgroup of its own: CPU against cpu.stat to the
microsecond (cpu.stat's unit), network and file bytes exactly. Then kube-prometheus's
recording rules, evaluated by Prometheus's promtool over the series the pack exported."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agenthelpers import apply, stats
from conftest import ROOT, require, wait_for
from test_kernel_engine import cgroup2_root

pytestmark = pytest.mark.kernel

PACK = ROOT / "examples" / "packs" / "container-metrics"
RULES = ROOT / "tests" / "kube-prometheus" / "k8s.rules.container_cpu_usage_seconds_total.yaml"
POD = {"namespace": "shop", "pod": "web-7c9f-abcde", "container": "app"}
IMAGE = "registry.example/web:1.2"

BURN = """
import time
end = time.process_time() + {seconds}
while time.process_time() < end:
    pass
"""

# File I/O between two reads of the process's own /proc/self/io: rchar counts what its
# read and pread calls returned (and, at exec, what the kernel read of the binary: that is
# why it is read here, once the interpreter runs). It waits for "go" on stdin in between,
# so that the test can scrape before the I/O. It prints the bytes weir should count
# after the scrape: its file reads and the second read of /proc/self/io, not the first
# one (before the scrape) nor the byte read from the pipe (not a file).
FILES = """
import os, sys

def io():
    fd = os.open("/proc/self/io", os.O_RDONLY)
    text = os.read(fd, 4096)
    os.close(fd)
    return int(text.split(b"rchar: ")[1].split(b"\\n")[0]), len(text)

before, first = io()
os.write(1, b"ready\\n")
os.read(0, 1)
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
for _ in range(30):
    os.write(fd, b"w" * 10_000)
os.pwrite(fd, b"p" * 1_000, 500_000)
os.lseek(fd, 0, 0)
while os.read(fd, 65_536):
    pass
os.pread(fd, 1_000, 500_000)
os.close(fd)
after, second = io()
os.write(1, f"{after - before - first - 1 + second}\\n".encode())
"""
WRITTEN = 30 * 10_000 + 1_000

# A TCP client: sends 100,000 bytes, receives 50,000.
NETWORK = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as s:
    s.sendall(b"s" * 100_000)
    got = 0
    while got < 50_000:
        got += len(s.recv(65_536))
"""


def local_address() -> str:
    """An address of this host that is not loopback (the pack leaves loopback out)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    pytest.fail("no global IPv4 address on this host to send to")


def serve_once(address: str) -> tuple[int, threading.Thread]:
    server = socket.create_server((address, 0))
    port = server.getsockname()[1]

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                got = 0
                while got < 100_000:
                    got += len(conn.recv(65_536))
                conn.sendall(b"r" * 50_000)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


@pytest.fixture
def pod_cgroup(cluster: Any) -> Iterator[tuple[Path, Any]]:
    """A pod on n1 in kubesim whose container runs in a cgroup the test creates, and the
    agent's pod resolver following kubesim."""
    from kubernetes import client as k8s

    from weir_agent.cluster import pods
    from weir_agent.identity import cgroups

    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    cluster.core.create_namespace({"metadata": {"name": POD["namespace"]}})
    cluster.core.create_namespaced_pod(
        POD["namespace"],
        {
            "metadata": {"name": POD["pod"]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": IMAGE}]},
            "status": {
                "containerStatuses": [
                    {
                        "name": POD["container"],
                        "containerID": f"containerd://{container_id}",
                        "image": IMAGE,
                        "imageID": f"{IMAGE}@sha256:0",
                        "ready": True,
                        "restartCount": 0,
                    }
                ]
            },
        },
    )
    resolver = pods.PodResolver(
        core=k8s.CoreV1Api(cluster.api), node="n1", index=cgroups.CgroupIndex()
    )
    stop = threading.Event()
    threading.Thread(target=resolver.run, args=(stop,), daemon=True).start()
    wait_for(lambda: resolver.by_pod, "the resolver lists the pod", timeout=30)
    group = (
        cgroup2_root() / f"weir-pack-{container_id[:8]}" / f"cri-containerd-{container_id}.scope"
    )
    group.mkdir(parents=True)
    try:
        yield group, resolver
    finally:
        stop.set()
        group.rmdir()
        group.parent.rmdir()


def start_in_pod(group: Path, *argv: str) -> subprocess.Popen[str]:
    """Start a program inside the pod's cgroup: a shell stops itself, the test moves it
    into the cgroup and lets it exec the program, so every byte the pod reads or writes
    is the program's own."""
    process = subprocess.Popen(
        ["/bin/sh", "-c", 'kill -STOP $$ && exec "$@"', "sh", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stat = Path(f"/proc/{process.pid}/stat")
    wait_for(lambda: stat.read_text().split(")")[1].split()[0] == "T", "the shell stopped")
    (group / "cgroup.procs").write_text(f"{process.pid}\n")
    process.send_signal(signal.SIGCONT)
    return process


def in_pod(group: Path, *argv: str) -> str:
    """Run a program inside the pod's cgroup to the end: its stdout."""
    process = start_in_pod(group, *argv)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    return out


def scrape(core: Any, resolver: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    from weir_agent.outputs import exporting

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        exporting.WeirCollector(engine=core, resolver=resolver, node="n1", headers="host")
    )
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def pod_value(samples: dict[str, Any], name: str, default: float | None = None) -> float:
    labels = tuple(sorted({**POD, "image": IMAGE}.items()))
    found = samples.get(name, {}).get(labels, default)
    assert found is not None, f"no {name} series for the pod: {samples.get(name)}"
    return float(found)


def cpu_usage_usec(group: Path) -> int:
    for line in (group / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1])
    raise AssertionError("no usage_usec in cpu.stat")


def settled_cpu(group: Path, core: Any, resolver: Any) -> float:
    """The pod's CPU seconds once they agree with its cgroup's cpu.stat to the microsecond
    (both add up the kernel's per-task accounting; a process's last slice is counted at
    its final switch off the CPU, which can come a moment after its parent saw it exit).
    On failure: both figures and the policy's counters."""
    found: list[float] = []

    def agreed() -> bool:
        samples = scrape(core, resolver)
        found[:] = [pod_value(samples, "container_cpu_usage_seconds_total", default=0)]
        found.append(cpu_usage_usec(group))
        return round(found[0] * 1e9) // 1000 == found[1]

    try:
        wait_for(agreed, "the pod's CPU time to agree with cpu.stat's usage_usec", timeout=10)
    except AssertionError as error:
        raise AssertionError(
            f"{error}: weir {found[0]!r} s, cpu.stat {found[1]!r} us; "
            f"container-cpu's counters {stats(core, 'container-cpu')}"
        ) from None
    return found[0]


def test_the_pack_agrees_with_the_kernels_accounting_and_feeds_kube_prometheus(
    core: Any, pod_cgroup: tuple[Path, Any], tmp_path: Path
) -> None:
    group, resolver = pod_cgroup
    apply(core, *(path.read_text() for path in sorted(PACK.glob("*.yaml"))))

    in_pod(group, sys.executable, "-c", BURN.format(seconds=0.3))
    cpu_first = settled_cpu(group, core, resolver)

    address = local_address()
    port, server = serve_once(address)
    in_pod(group, sys.executable, "-c", NETWORK, address, str(port))
    server.join(timeout=30)
    files_process = start_in_pod(group, sys.executable, "-c", FILES, str(tmp_path / "data"))
    assert files_process.stdout is not None and files_process.stdin is not None
    assert files_process.stdout.readline() == "ready\n"
    before_files = scrape(core, resolver)
    out, _ = files_process.communicate("g", timeout=120)
    assert files_process.returncode == 0
    read_by_process = int(out)
    after_files = scrape(core, resolver)
    in_pod(group, sys.executable, "-c", BURN.format(seconds=0.2))
    cpu_second = settled_cpu(group, core, resolver)
    second = scrape(core, resolver)
    assert pod_value(second, "container_network_transmit_bytes_total") == 100_000
    assert pod_value(second, "container_network_receive_bytes_total") == 50_000

    def files(name: str) -> float:
        return pod_value(after_files, name) - pod_value(before_files, name, default=0)

    assert files("container_fs_writes_bytes_total") == WRITTEN
    # Every byte the process's read and pread calls on files returned, as it counts them
    # itself, and nothing else.
    assert files("container_fs_reads_bytes_total") == read_by_process

    # kube-prometheus's rule over the two scrapes, a minute apart, as Prometheus would
    # store them from a job it calls cadvisor; kube-state-metrics places the pod on n1.
    require(shutil.which("promtool") is not None, "promtool is not installed (make setup)")
    labels = {**POD, "image": IMAGE, "job": "cadvisor"}
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    info = ",".join(f'{k}="{v}"' for k, v in (("namespace", POD["namespace"]),
                                              ("pod", POD["pod"]), ("node", "n1")))  # fmt: skip
    expected = (cpu_second - cpu_first) / 60
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f"container_cpu_usage_seconds_total{{{selector}}}",
                        "values": f"{cpu_first!r} {cpu_second!r}",
                    },
                    {"series": f"kube_pod_info{{{info}}}", "values": "1 1"},
                ],
                "promql_expr_test": [
                    {
                        "expr": "node_namespace_pod_container:container_cpu_usage_seconds_total"
                        ":sum_irate",
                        "eval_time": "1m",
                        "exp_samples": [
                            {
                                "labels": "node_namespace_pod_container:container_cpu_usage_"
                                "seconds_total:sum_irate{"
                                + ",".join(
                                    f'{k}="{v}"' for k, v in sorted({**POD, "node": "n1"}.items())
                                )
                                + "}",
                                "value": expected,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    unit = tmp_path / "rules-test.yaml"
    unit.write_text(yaml.safe_dump(json.loads(json.dumps(tests)), sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
