"""Start-up: from exec of the agent process to every policy Ready, cold and warm.

Measured from outside, on the process as `make run` starts it (`weir agent --policies DIR
--no-table`): the script execs the agent and polls /readyz, which answers 200 once every
policy of the directory has been applied (compiled, verified, attached or refused). Cold: no
pins and an empty compile cache (`--compile-cache`, as the chart sets it). Warm: the same
directory again after an agent with `--keep-attached` stopped, leaving its hooks pinned and
its compiled programs in the cache (the DaemonSet's rollout case). Beside it, the peer:
bpftrace counting the same first hook, from exec to its "Attaching" line. Also the agent's
RSS: steady (VmRSS after it has run and been scraped for a few seconds) and peak (VmHWM).

Run as root: `make bench` runs it; it writes bench/out/startup.md.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RUNS = 3
TARGETS = {"1 policy, cold": 2.0, "10 policies, cold": 3.0, "10 policies, warm (pinned)": 1.0}
RSS_TARGETS = (120, 200)  # MiB with 10 policies: steady, peak
STEADY_SECONDS = 5
# Ten hooks, each a policy of its own: different syscalls, so different programs.
SYSCALLS = ["openat", "read", "write", "close", "getpid", "dup", "lseek", "fstat", "mmap", "pipe2"]


def policy(name: str, syscall: str) -> str:
    return f"""\
apiVersion: weir.dev/v1alpha1
kind: TracingPolicy
metadata: {{name: {name}}}
spec:
  tracepoints:
    - subsystem: syscalls
      event: sys_enter_{syscall}
      selectors:
        - matchActions: [{{action: NoPost}}]
---
apiVersion: weir.dev/v1alpha1
kind: AggregationRule
metadata: {{name: {name}}}
spec:
  policyRef: {{name: {name}}}
  groupBy: [container]
  metric: {{name: bench_start_{syscall}, help: calls}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PORTS: dict[int, int] = {}  # agent pid -> its metrics port


def start(policies: Path, extra: list[str]) -> tuple[float, int, subprocess.Popen[bytes]]:
    """Seconds from exec to /readyz 200, the peak RSS then (KiB), and the process."""
    port = free_port()
    began = time.monotonic()
    agent = subprocess.Popen(
        [sys.executable, "-m", "weir_cli.main", "agent", "--policies", str(policies),
         "--no-table", f"--metrics-addr=127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).close()
            break
        except OSError:
            if agent.poll() is not None or time.monotonic() - began > 300:
                raise SystemExit("the agent did not become ready") from None
            time.sleep(0.01)
    took = time.monotonic() - began
    PORTS[agent.pid] = port
    return took, memory(agent)[1], agent


def memory(agent: subprocess.Popen[bytes]) -> tuple[int, int]:
    """The process's resident and peak resident memory now (KiB)."""
    status = Path(f"/proc/{agent.pid}/status").read_text().splitlines()
    return tuple(int(next(x for x in status if x.startswith(f)).split()[1])  # type: ignore[return-value]
                 for f in ("VmRSS", "VmHWM"))  # fmt: skip


def steady(agent: subprocess.Popen[bytes]) -> tuple[int, int]:
    """RSS and peak RSS (KiB) after the agent has run, and been scraped once a second, for
    STEADY_SECONDS."""
    for _ in range(STEADY_SECONDS):
        time.sleep(1)
        urllib.request.urlopen(f"http://127.0.0.1:{PORTS[agent.pid]}/metrics", timeout=10).read()
    return memory(agent)


def stop(agent: subprocess.Popen[bytes]) -> None:
    agent.terminate()
    agent.wait(timeout=120)


def agent_starts(count: int, *, warm: bool) -> tuple[list[float], list[int], list[int]]:
    """Start times, peak RSS at ready, and steady RSS (the last two in KiB)."""
    times, peaks, steadies = [], [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory(prefix="weir-start-") as directory:
            policies = Path(directory) / "policies"
            policies.mkdir()
            for index, syscall in enumerate(SYSCALLS[:count]):
                (policies / f"p{index}.yaml").write_text(policy(f"p{index}", syscall))
            pins = Path("/sys/fs/bpf") / f"weir-bench-{Path(directory).name}"
            extra = [f"--compile-cache={Path(directory) / 'cache'}"]
            extra += ["--keep-attached", f"--bpffs={pins}"] if warm else []
            try:
                if warm:  # the agent before the restart, leaving its hooks pinned
                    stop(start(policies, extra)[2])
                took, rss, agent = start(policies, extra)
                resident, peak = steady(agent)
                stop(agent)
            finally:
                if pins.exists():
                    subprocess.run(
                        [sys.executable, "-m", "weir_cli.main", "agent", "--cleanup",
                         f"--bpffs={pins}"], capture_output=True, check=False,
                    )  # fmt: skip
            times.append(took)
            peaks.append(max(rss, peak))
            steadies.append(resident)
    return times, peaks, steadies


def bpftrace_starts() -> list[float]:
    out = []
    for _ in range(RUNS):
        began = time.monotonic()
        peer = subprocess.Popen(
            ["bpftrace", "-e", "tracepoint:syscalls:sys_enter_openat { @[cgroup] = count(); }"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert peer.stdout is not None
        for line in peer.stdout:
            if line.startswith("Attaching"):
                break
        out.append(time.monotonic() - began)
        peer.kill()  # its output is not wanted; on SIGTERM it would print every map
        peer.wait(timeout=60)
    return out


def main() -> int:
    rows = {
        "1 policy, cold": agent_starts(1, warm=False),
        "10 policies, cold": agent_starts(10, warm=False),
        "10 policies, warm (pinned)": agent_starts(10, warm=True),
    }
    peer = bpftrace_starts() if shutil.which("bpftrace") else []
    peer_p50 = statistics.median(peer) if peer else 0.0
    lines = [
        "### Start-up",
        "",
        f"From exec of `weir agent --policies DIR` to /readyz (every policy applied), median of "
        f"{RUNS} starts; cold: no pins, an empty compile cache; warm: again after an agent with "
        "`--keep-attached` stopped (pins and compile cache kept). Each policy "
        "is one syscall tracepoint counted per container. Peer: bpftrace counting openat per "
        "cgroup, from exec to its `Attaching` line.",
        "",
        f"RSS is the agent process's: steady after {STEADY_SECONDS} s of running with a scrape "
        f"a second (median), peak the most it held (VmHWM, highest).",
        "",
        "| start | agent | x bpftrace | RSS steady | RSS peak | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, (times, peaks, steadies) in rows.items():
        median = statistics.median(times)
        ratio = f"{median / peer_p50:.1f}x" if peer_p50 else "-"
        memory_target = (f", RSS <= {RSS_TARGETS[0]} MiB steady, {RSS_TARGETS[1]} MiB peak"
                         if name.startswith("10") else "")  # fmt: skip
        lines.append(
            f"| {name} | {median:.2f} s | {ratio} | {statistics.median(steadies) / 1024:.0f} MiB "
            f"| {max(peaks) / 1024:.0f} MiB | <= {TARGETS[name]:.0f} s{memory_target} |"
        )
    if peer:
        lines.append(f"| bpftrace, 1 probe | {peer_p50:.2f} s | 1.0x | | | |")
    lines.append("")
    report = "\n".join(lines)
    OUT.mkdir(exist_ok=True)
    (OUT / "startup.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
