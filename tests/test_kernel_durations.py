"""Durations measured in the kernel: a start hook starts a clock per key, an end hook
stops it and folds the seconds into a histogram or a counter. Workloads with known
delays land in known buckets, counted exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from agenthelpers import apply, scrape, series, stats
from conftest import wait_for
from test_kernel_engine import cgroup2_root

pytestmark = pytest.mark.kernel

SLEEPS = [0.01, 0.01, 0.01, 0.1, 0.1, 0.4]  # seconds, each one process's one clock_nanosleep
BOUNDS = [0.005, 0.05, 0.25, 1.0]
# The most a sleep may overrun on a busy machine and still land in its bucket.
SLACK = 0.04


def sleeper(tmp_path: Path) -> Path:
    """A copy of sleep(1) under a name of its own, so the policy sees only its calls."""
    path = tmp_path / f"weir-sleep-{uuid.uuid4().hex[:8]}"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", path)
    return path


def sleep_policy(name: str, binary: Path, rules: list[dict[str, object]]) -> str:
    selector = {
        "matchBinaries": [{"operator": "In", "values": [str(binary)]}],
        "matchActions": [{"action": "NoPost"}],
    }
    hooks = [
        {"subsystem": "syscalls", "event": f"sys_{side}_clock_nanosleep", "selectors": [selector]}
        for side in ("enter", "exit")
    ]
    documents: list[dict[str, object]] = [
        {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": name},
            "spec": {"tracepoints": hooks},
        }
    ]
    for rule in rules:
        documents.append(
            {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "AggregationRule",
                "metadata": {"name": rule.pop("name")},
                "spec": {
                    "policyRef": {"name": name},
                    "hook": "tracepoint:syscalls:sys_exit_clock_nanosleep",
                    **rule,
                },
            }
        )
    return yaml.safe_dump_all(documents)


def test_sleeps_land_in_their_buckets_and_a_counter_adds_the_same_seconds(
    core, tmp_path: Path
) -> None:
    binary = sleeper(tmp_path)
    start = {"hook": "tracepoint:syscalls:sys_enter_clock_nanosleep"}
    apply(
        core,
        sleep_policy(
            "sleeps",
            binary,
            [
                {
                    "name": "sleep-latency",
                    "value": {
                        "type": "duration",
                        "start": start,
                        "buckets": {"type": "explicit", "bounds": BOUNDS},
                    },
                    "metric": {"name": "weir_test_sleep_seconds"},
                },
                {
                    # The same clock read by a second rule of the same call, as a counter.
                    "name": "sleep-total",
                    "value": {"type": "duration", "start": start, "output": "counter"},
                    "metric": {"name": "weir_test_slept_seconds"},
                },
            ],
        ),
    )
    for seconds in SLEEPS:
        subprocess.run([str(binary), str(seconds)], check=True, timeout=30)

    samples = scrape(core)
    buckets = series(samples, "weir_test_sleep_seconds_bucket")
    assert buckets == {
        (("le", "0.005"),): 0.0,
        (("le", "0.05"),): 3.0,
        (("le", "0.25"),): 5.0,
        (("le", "1"),): 6.0,
        (("le", "+Inf"),): 6.0,
    }
    assert samples["weir_test_sleep_seconds_count"][()] == 6.0
    slept = samples["weir_test_sleep_seconds_sum"][()]
    # Never less than asked for (the kernel's own timer), at most SLACK late each.
    assert sum(SLEEPS) <= slept <= sum(SLEEPS) + SLACK * len(SLEEPS), slept
    assert samples["weir_test_slept_seconds_total"][()] == pytest.approx(slept, abs=1e-9)
    counts = stats(core, "sleeps")
    assert counts["started"] == 6  # one clock per sleep, started at entry
    assert counts["unstarted"] == 0  # every exit found its clock
    assert counts["unrecorded"] == 0  # the map took every start
    clocks = series(
        samples,
        "weir_policy_duration_clocks_total",
        policy="sleeps",
        hook="tracepoint:syscalls:sys_enter_clock_nanosleep",
    )
    assert clocks[(("event", "started"),)] == 6


BURN = """
import time
end = time.process_time() + {seconds}
while time.process_time() < end:
    pass
"""


def test_cpu_time_per_container_agrees_with_the_cgroups_own_accounting(core) -> None:
    # cpu_time on sched_switch: the thread switched out adds the CPU time it used since
    # its last switch, summed per container, against the kernel's cpu.stat usage_usec for a
    # cgroup the test creates. (Each shell moves itself into the cgroup while it runs: the
    # moment it ran before, in the test's cgroup, is counted at its next switch, in the
    # new one; hence 2%, not the microsecond test_container_metrics holds it to.)
    policy = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "oncpu"},
        "spec": {
            "tracepoints": [
                {
                    "subsystem": "sched",
                    "event": "sched_switch",
                    "selectors": [{"matchActions": [{"action": "NoPost"}]}],
                }
            ]
        },
    }
    rule = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AggregationRule",
        "metadata": {"name": "oncpu"},
        "spec": {
            "policyRef": {"name": "oncpu"},
            "hook": "tracepoint:sched:sched_switch",
            "groupBy": ["container"],
            "value": {"type": "cpu_time"},
            "metric": {"name": "weir_test_cpu_seconds"},
        },
    }
    apply(core, yaml.safe_dump_all([policy, rule]))
    container = uuid.uuid4().hex + uuid.uuid4().hex
    group = cgroup2_root() / f"weir-test-{container[:8]}" / f"docker-{container}.scope"
    group.mkdir(parents=True)
    try:
        for seconds in (0.3, 0.2):  # two processes, one after the other
            subprocess.run(
                [
                    "/bin/sh",
                    "-c",
                    f'echo $$ > "{group}/cgroup.procs" && exec "$0" -c "$1"',
                    sys.executable,
                    BURN.format(seconds=seconds),
                ],
                check=True,
                timeout=60,
            )
        # A process's last slice is counted at its final switch off the CPU, which can
        # come a moment after its parent saw it exit: wait for the two to agree.
        found: list[float] = []

        def agreed() -> bool:
            usage = next(
                int(line.split()[1])
                for line in (group / "cpu.stat").read_text().splitlines()
                if line.startswith("usage_usec ")
            )
            samples = scrape(core)
            by_container = series(samples, "weir_test_cpu_seconds_total", container=container[:12])
            found[:] = [by_container.get((), 0.0), usage / 1e6]
            return bool(found[0] == pytest.approx(found[1], rel=0.02))

        wait_for(agreed, "weir's CPU seconds to agree with cpu.stat within 2%", timeout=10)
    finally:
        group.rmdir()
        group.parent.rmdir()
    assert found[1] >= 0.5
