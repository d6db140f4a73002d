"""Pod churn on a node, as the agent process meets it: hundreds of containers that live for
milliseconds, in cgroups named the way containerd names them, removed once they exit.

Every container's exact count is exported under its own label (its cgroup was gone long
before the scrape), its series stays for the retention and then stops, its entries leave
the kernel's map (back to the baseline), and nothing overflows although far more
containers ran than the rule's maxSeries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agenthelpers import openat_policy, scrape_http
from conftest import free_port
from test_kernel_agent import WEIR, wait_for
from test_kernel_engine import cgroup2_root

CONTAINERS = 200
BATCH = 10
MAX_SERIES = 16  # far below CONTAINERS: only live and retained containers hold entries


def bpf_maps() -> list[dict[str, object]]:
    out = subprocess.run(["bpftool", "map", "show", "-j"], capture_output=True, text=True)
    return list(json.loads(out.stdout))


def entries(map_id: int) -> int:
    out = subprocess.run(
        ["bpftool", "map", "dump", "id", str(map_id), "-j"], capture_output=True, text=True
    )
    return len(json.loads(out.stdout))


def run_container(slice_dir: Path, opens: int, path: Path) -> str:
    """One short-lived container: a process that opens ``path`` ``opens`` times in a cgroup
    of its own (kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope), which is removed once
    it has exited. Its container label: the id's first 12 characters."""
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    pod = slice_dir / f"kubepods-besteffort-pod{str(uuid.uuid4()).replace('-', '_')}.slice"
    group = pod / f"cri-containerd-{container_id}.scope"
    group.mkdir(parents=True)
    pid = os.fork()
    if pid == 0:  # the container's process: into its cgroup, open, exit
        try:
            (group / "cgroup.procs").write_text("0")
            for _ in range(opens):
                os.close(os.open(path, os.O_RDONLY))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    for _ in range(500):  # the cgroup is released just after its last process is reaped
        try:
            group.rmdir()
            pod.rmdir()
            break
        except OSError:
            time.sleep(0.01)
    else:
        raise AssertionError(f"{group} could not be removed")
    return container_id[:12]


@pytest.fixture
def slice_dir() -> Iterator[Path]:
    root = cgroup2_root() / f"weir-churn-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    yield root
    for child in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if child.is_dir():
            child.rmdir()
    root.rmdir()


def test_short_lived_containers_keep_their_labels_then_retire(
    kernel: None, tmp_path: Path, slice_dir: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    target = data / "f"
    target.write_text("x")
    rule = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AggregationRule",
        "metadata": {"name": "churn"},
        "spec": {
            "policyRef": {"name": "churn"},
            "groupBy": ["container"],
            "maxSeries": MAX_SERIES,
            "metric": {"name": "weir_churn_opens", "help": "opens"},
        },
    }
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "churn.yaml").write_text(
        yaml.safe_dump_all([openat_policy("churn", f"{data}/"), rule])
    )
    before = {int(str(m["id"])) for m in bpf_maps()}
    port = free_port()
    agent = subprocess.Popen(
        [*WEIR, "agent", "--policies", str(policies), "--metrics-addr", f"127.0.0.1:{port}",
         "--no-table", "--series-retention", "2scrapes"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: (
                "weir_churn_opens_total" in scrape_http(port)
                or scrape_http(port)["weir_policy_events_total"]
            ),
            "the agent running the policy",
        )
        agg = [
            int(str(m["id"]))
            for m in bpf_maps()
            if m["id"] not in before and m.get("name") == "agg"
        ]
        assert agg  # the running copy's (a compile's own maps go with its process)

        def present() -> int:
            return sum(entries(map_id) for map_id in agg)

        baseline = present()
        counted = 0
        for start in range(0, CONTAINERS, BATCH):
            expected = {
                run_container(slice_dir, 1 + (start + i) % 7, target): float(1 + (start + i) % 7)
                for i in range(BATCH)
            }
            counted += int(sum(expected.values()))
            for scrape in range(2):  # the retention: two scrapes see the final counts
                metrics = scrape_http(port)
                shown = {
                    dict(labels)["container"]: value
                    for labels, value in metrics.get("weir_churn_opens_total", {}).items()
                }
                assert shown == expected, f"batch at {start}, scrape {scrape + 1}"
            metrics = scrape_http(port)  # then they are gone, and so are their entries
            assert (
                "weir_churn_opens_total" not in metrics or not metrics["weir_churn_opens_total"]
            ), f"batch at {start}: series left after the retention"
            assert present() == baseline, f"batch at {start}"
            dropped = metrics["weir_policy_dropped_events_total"]
            assert dropped[(("hook", "tracepoint:syscalls:sys_enter_openat"),
                            ("policy", "churn"), ("reason", "overflow"))] == 0  # fmt: skip
        assert metrics["weir_agent_series_retired_total"][()] == CONTAINERS
        events = metrics["weir_policy_events_total"]
        aggregated = events[(("hook", "tracepoint:syscalls:sys_enter_openat"),
                             ("policy", "churn"), ("stage", "aggregated"))]  # fmt: skip
        assert aggregated == counted
    finally:
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, out
