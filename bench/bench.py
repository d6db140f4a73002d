"""weir's cost and data-volume benchmark: every configuration side by side, in one run.

A C loop (loop.c) pinned to one CPU calls close(-1) N times per repetition;
the time per call is measured with no program attached (baseline), with an
empty BPF program on the same tracepoint (the floor any hook pays), with a
hand-written program in ebpf_exporter's style (a per-CPU hash keyed by the cgroup
id), with the agent itself (`weir agent --policies DIR`, the process `make run`
starts) running a policy as a user writes it: counting by container, filtering on
an argument then counting, a histogram of an argument, and counting with no
selectors (which posts every call too, as Tetragon does); with the engine's
configured and specialised builds of the same policies, with bpftrace's
`@[cgroup] = count()`, with weir posting every event to user space through its
ring buffer, and with the same events through bcc's default perf buffer (a wakeup
per event). Medians of the repetitions and their spread are
reported, as ns per event *added* over the baseline: ratios are what to quote,
the machines are shared and noisy.

Run as root: `make bench` (it installs bpftrace and matplotlib first).
Writes bench/out/results.md and bench/out/added_ns.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CPU = "1" if (os.cpu_count() or 1) > 1 else "0"
SCRAPE_INTERVAL_S = 15.0

sys.path[:0] = [str(HERE.parent / d) for d in ("api", "node-agent")]

from weir_agent.identity import cgroups, metadata  # noqa: E402
from weir_agent.kernel import bpf, loading  # noqa: E402
from weir_agent.outputs import eventing, exporting  # noqa: E402
from weir_agent.runtime import engine  # noqa: E402
from weir_agent.spec import abi  # noqa: E402
from weir_api import documents  # noqa: E402


PACK = HERE.parent / "examples" / "packs" / "container-metrics"
HAND = "hand-written: per-CPU hash by cgroup id"
AGENT_COUNT = "agent: count by container"
AGENT_FILTER = "agent: filter fd, then count"
AGENT_HIST = "agent: histogram of fd"
AGENT_POST = "agent: count, no selectors (posts every call)"


def build_loop() -> Path:
    binary = OUT / "loop"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "loop.c")], check=True)
    return binary


def run_loop(loop: Path, n: int, rate: float = 0.0) -> float:
    args = [str(loop), CPU, str(n)] + ([str(rate)] if rate else [])
    return float(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def measure(loop: Path, n: int, reps: int) -> list[float]:
    run_loop(loop, n // 10)  # warm up
    return [run_loop(loop, n) for _ in range(reps)]


def policy(name: str, *, filtered: bool, post: bool, values: tuple[str, ...] = ("-1",),
           extra_arg: bool = False) -> str:
    selector: dict[str, object] = {"matchActions": [{"action": "Post" if post else "NoPost"}]}
    args = []
    if filtered:
        args = [{"field": "fd", "type": "int", "label": "fd"}]
        selector["matchArgs"] = [{"label": "fd", "operator": "Equal", "values": list(values)}]
    if extra_arg:  # another argument read: a new shape
        args.append({"field": "__syscall_nr", "type": "int", "label": "nr"})
    spec = {"tracepoints": [{"subsystem": "syscalls", "event": "sys_enter_close", "args": args,
                             "selectors": [selector]}]}
    text = json.dumps({"apiVersion": "weir.dev/v1alpha1", "kind": "TracingPolicy",
                       "metadata": {"name": name}, "spec": spec})
    if not post:
        text += "\n---\n" + json.dumps({
            "apiVersion": "weir.dev/v1alpha1", "kind": "AggregationRule", "metadata": {"name": name},
            "spec": {"policyRef": {"name": name}, "groupBy": ["namespace", "pod", "container"],
                     "metric": {"name": f"bench_{name.replace('-', '_')}_calls"}},
        })
    return text


@contextmanager
def weir(text: str, **options: object) -> Iterator[engine.Engine]:
    core = engine.Engine(node_name="bench", **options)  # type: ignore[arg-type]
    core.apply(documents.parse_text(text, source="bench"))
    state = next(iter(core.policies.values()))
    # Every document must be valid: an invalid rule is dropped, and the row would
    # measure a program without its aggregation.
    assert state.hooks and not state.failures and not state.problems, state.problems
    try:
        yield core
    finally:
        core.close()


@contextmanager
def empty_program() -> Iterator[object]:
    from bcc import BPF

    b = BPF(text="TRACEPOINT_PROBE(syscalls, sys_enter_close) { return 0; }")
    try:
        yield b
    finally:
        b.cleanup()


HAND_WRITTEN = r"""
BPF_PERCPU_HASH(counts, u64, u64, 10240);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 cgroup = bpf_get_current_cgroup_id();
    u64 *count = counts.lookup(&cgroup);
    if (count) {
        *count += 1;
    } else {
        u64 one = 1;
        counts.update(&cgroup, &one);
    }
    return 0;
}
"""


@contextmanager
def hand_written() -> Iterator[object]:
    """What a user would write by hand for a count by cgroup, as ebpf_exporter's examples
    do: a hash keyed by the cgroup id with a per-CPU value."""
    from bcc import BPF

    b = BPF(text=HAND_WRITTEN)
    try:
        yield b
    finally:
        b.cleanup()


def agent_policy(name: str, *, selectors: str = "filter", value: str = "count") -> str:
    """A policy on sys_enter_close as a user writes it, for the agent: ``selectors`` is
    "filter" (fd Equal -1, NoPost), "all" (one NoPost selector with no matchers) or "none"
    (no selectors: every call is posted, Tetragon's default, and counted); ``value`` "count"
    or "histogram" (of fd)."""
    hook: dict[str, object] = {"subsystem": "syscalls", "event": "sys_enter_close",
                               "args": [{"field": "fd", "type": "int", "label": "fd"}]}  # fmt: skip
    if selectors == "filter":
        hook["selectors"] = [{"matchArgs": [{"label": "fd", "operator": "Equal", "values": ["-1"]}],
                              "matchActions": [{"action": "NoPost"}]}]  # fmt: skip
    elif selectors == "all":
        hook["selectors"] = [{"matchActions": [{"action": "NoPost"}]}]
    rule_value = {"type": "histogram", "arg": "fd"} if value == "histogram" else {"type": "count"}
    return "\n---\n".join(json.dumps(doc) for doc in (
        {"apiVersion": "weir.dev/v1alpha1", "kind": "TracingPolicy", "metadata": {"name": name},
         "spec": {"tracepoints": [hook]}},
        {"apiVersion": "weir.dev/v1alpha1", "kind": "AggregationRule", "metadata": {"name": name},
         "spec": {"policyRef": {"name": name}, "groupBy": ["container"], "value": rule_value,
                  "metric": {"name": f"bench_{name.replace('-', '_')}_calls"}}},
    ))  # fmt: skip


def programs_shown() -> list[dict[str, object]]:
    return json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                     capture_output=True, text=True).stdout)  # type: ignore[no-any-return]  # fmt: skip


def stub_ids() -> set[int]:
    return {int(p["id"]) for p in programs_shown() if p.get("name") == "weir_stub"}  # type: ignore[call-overload]


def run_totals(ids: list[int]) -> tuple[int, int]:
    """bpf_stats of these programs, added up: (run time in ns, runs)."""
    shown = [p for p in programs_shown() if p["id"] in ids]
    return (sum(int(p.get("run_time_ns", 0)) for p in shown),  # type: ignore[call-overload]
            sum(int(p.get("run_cnt", 0)) for p in shown))  # type: ignore[call-overload]  # fmt: skip


@contextmanager
def agent(text: str) -> Iterator[list[int]]:
    """`weir agent --policies DIR`, as `make run` starts it, with one policy: yields the ids
    of the stubs it attached (bpf_stats on a stub times the program it tail-calls too)."""
    import startup

    before = stub_ids()
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as directory:
        policies = Path(directory) / "policies"
        policies.mkdir()
        (policies / "policy.yaml").write_text(text)
        process = startup.start(policies, [f"--compile-cache={Path(directory) / 'cache'}"])[2]
        try:
            yield sorted(stub_ids() - before)
            # A row measures what it says only if the policy and its rule were taken.
            port = startup.PORTS[process.pid]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            stages = {line.split('stage="')[1].split('"')[0]: float(line.split()[-1])
                      for line in text.splitlines() if line.startswith("weir_policy_events_total")}  # fmt: skip
            assert stages.get("matched", 0) > 0 and stages.get("aggregated") == stages["matched"], stages
        finally:
            startup.stop(process)


AGENT_ROWS = {
    AGENT_COUNT: agent_policy("agent-count", selectors="all"),
    AGENT_FILTER: agent_policy("agent-filter"),
    AGENT_HIST: agent_policy("agent-hist", selectors="all", value="histogram"),
    AGENT_POST: agent_policy("agent-post", selectors="none"),
}


def program_rows(loop: Path, n: int, reps: int, rows: dict[str, list[float]],
                 bpf_ns: dict[str, float]) -> None:
    """The empty program, the hand-written one and the agent's rows, in rounds: each round
    attaches each in turn and measures it once (wall clock, then BPF time with bpf_stats on),
    so that a slow spell of the machine falls on all of them alike. The empty program's
    samples replace the ones measured before."""
    contexts: dict[str, Callable[[], object]] = {
        "empty program (floor)": empty_program,
        HAND: hand_written,
        **{label: functools.partial(agent, text) for label, text in AGENT_ROWS.items()},
    }
    times: dict[str, list[float]] = {label: [] for label in contexts}
    spent: dict[str, list[float]] = {label: [] for label in contexts}
    run_loop(loop, n // 10)  # warm up
    for _ in range(reps):
        for label, context in contexts.items():
            loaded = {int(p["id"]) for p in programs_shown()}  # type: ignore[call-overload]
            with context() as attached:  # type: ignore[attr-defined]
                # The agent's stubs, or the program the context just loaded (and no other).
                ids = attached if isinstance(attached, list) else sorted(
                    int(p["id"]) for p in programs_shown()  # type: ignore[call-overload]
                    if p.get("type") == "tracepoint" and int(p["id"]) not in loaded)  # type: ignore[call-overload]  # fmt: skip
                times[label].append(run_loop(loop, n))
                stats_enabled(True)
                time_before, runs_before = run_totals(ids)
                run_loop(loop, n)
                time_after, runs_after = run_totals(ids)
                stats_enabled(False)
                runs = runs_after - runs_before
                spent[label].append((time_after - time_before) / runs if runs else float("nan"))
    for label in contexts:
        rows[label] = times[label]
        bpf_ns[label] = statistics.median(spent[label])


@contextmanager
def bpftrace() -> Iterator[None]:
    proc = subprocess.Popen(["bpftrace", "-e", "tracepoint:syscalls:sys_enter_close { @[cgroup] = count(); }"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    while not any("Attaching" in line for line in seen):  # it may warn about RLIMIT_MEMLOCK first
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bpftrace did not attach: {' '.join(seen)}")
        seen.append(line.strip())
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


PERF_SOURCE = r"""
struct event { u64 time_ns; u64 cgroup; u32 pid; u32 tid; char comm[16]; u64 fd; };
BPF_PERF_OUTPUT(events);
TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    if ((int)args->fd != -1) return 0;
    struct event e = {};
    e.time_ns = bpf_ktime_get_ns(); e.cgroup = bpf_get_current_cgroup_id();
    u64 id = bpf_get_current_pid_tgid(); e.pid = id >> 32; e.tid = id;
    bpf_get_current_comm(e.comm, sizeof(e.comm)); e.fd = args->fd;
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}
"""


class Consumer:
    """A consumer on its own thread, with its CPU time and events accounted: ``run(stop)``
    consumes until ``stop`` is set, ``total()`` counts the events consumed so far."""

    def __init__(self, run: Callable[[threading.Event], None], total: Callable[[], int]) -> None:
        self.run = run
        self.total = total
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.cpu = 0.0
        self.events = 0

    def _run(self) -> None:
        start, before = time.thread_time(), self.total()
        self.run(self.stop)
        self.cpu = time.thread_time() - start
        self.events = self.total() - before

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.3)
        self.stop.set()
        self.thread.join()


def draining(drain: Callable[[], int]) -> Callable[[threading.Event], None]:
    """A consumer's run that calls ``drain`` until stopped, and once more."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            drain()
        drain()

    return run


class CountingSink:
    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0

    def write(self, text: str) -> None:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")

    def flush(self) -> None:
        pass


def stats_enabled(on: bool) -> None:
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1" if on else "0")


def bpf_ns_per_event(fds: list[int]) -> float:
    infos = [bpf.prog_info(fd) for fd in fds]
    runs = sum(i.run_cnt for i in infos)
    return sum(i.run_time_ns for i in infos) / runs if runs else float("nan")


def restart_under_load(loop: Path, text: str) -> tuple[int, int]:
    """Calls made minus calls counted when one engine stops (hooks pinned) and another
    adopts its pins while the loop calls close(-1) at a steady 100k/s."""
    root = Path("/sys/fs/bpf") / f"weir-bench-{os.getpid()}"
    calls = 300_000
    first = engine.Engine(node_name="bench", pin_root=root)
    first.apply(documents.parse_text(text, source="restart"))
    worker = subprocess.Popen([str(loop), CPU, str(calls), "100000"], stdout=subprocess.DEVNULL)
    second = engine.Engine(node_name="bench", pin_root=root)
    try:
        time.sleep(0.8)
        first.close(detach=False)
        time.sleep(0.5)
        second.apply(documents.parse_text(text, source="restart"))
        worker.wait(timeout=60)
        matched = sum(s.stats.get(abi.Stat.MATCHED, 0) for s in second.snapshot())
    finally:
        second.close()
        bpf.remove_pins(root)
    return calls - matched, calls


PACED_RATES = (100_000, 250_000, 500_000, 1_000_000)
PACED_SECONDS = 2


class PostResults:
    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}
        self.user_cpu: dict[str, float] = {}
        self.notes: dict[str, str] = {}
        self.line_bytes = 0.0
        # rate -> (weir posted, weir lost, weir user ns/event, perf received, perf lost, perf ns/event)
        self.paced: dict[int, tuple[int, int, float, int, int, float]] = {}
        self.ring_bytes = 0


def post_rows(loop: Path, n: int, reps: int, ring_pages: int | None = None) -> PostResults:
    """Post every matching close(-1) to user space: weir's ring buffer and writer (JSON to
    a counting sink) next to bcc's default perf buffer with a Python callback, at full
    speed and paced."""
    out = PostResults()
    name = "weir: Post every event (ring buffer)"
    options = {} if ring_pages is None else {"ringbuf_pages": ring_pages}
    with weir(policy("post", filtered=True, post=True), **options) as core:
        out.ring_bytes = core.ringbuf_pages * 4096
        sink = CountingSink()
        writer = eventing.EventWriter(core=core, resolver=metadata.CgroupResolver(cgroups.CgroupIndex()),
                                      node="bench", out=sink)  # type: ignore[arg-type]
        with Consumer(writer.run, lambda: writer.written) as consumer:
            out.rows[name] = measure(loop, n, reps)
        counts = core.snapshot()[0].stats
        posted, dropped = counts[abi.Stat.POSTED], counts[abi.Stat.RINGBUF_FULL]
        out.user_cpu[name] = consumer.cpu / max(consumer.events, 1) * 1e9
        out.line_bytes = sink.bytes / max(sink.lines, 1)
        out.notes["weir post"] = (f"{posted} posted, {dropped} dropped (ring buffer full) of "
                                  f"{counts[abi.Stat.MATCHED]} at full speed; "
                                  f"{sink.lines} lines written")
        for rate in PACED_RATES:
            before = dict(core.snapshot()[0].stats)
            with Consumer(writer.run, lambda: writer.written) as consumer:
                run_loop(loop, rate * PACED_SECONDS, rate)
            after = core.snapshot()[0].stats
            lost = after[abi.Stat.RINGBUF_FULL] - before[abi.Stat.RINGBUF_FULL]
            got = after[abi.Stat.POSTED] - before[abi.Stat.POSTED]
            matched = after[abi.Stat.MATCHED] - before[abi.Stat.MATCHED]
            assert got + lost == matched, (got, lost, matched)
            out.paced[rate] = (got, lost, consumer.cpu / max(consumer.events, 1) * 1e9, 0, 0, 0.0)

    from bcc import BPF

    perf = BPF(text=PERF_SOURCE)
    perf_events = [0]

    def on_perf(_cpu: int, data: object, _size: int) -> None:
        e = perf["events"].event(data)
        json.dumps({"time": e.time_ns, "cgroup": e.cgroup, "pid": e.pid, "tid": e.tid,
                    "comm": bytes(e.comm).decode(), "args": {"fd": -1}})
        perf_events[0] += 1

    lost_perf = [0]
    perf["events"].open_perf_buffer(on_perf, lost_cb=lambda lost: lost_perf.__setitem__(0, lost_perf[0] + lost))

    def drain_perf() -> int:
        before = perf_events[0]
        perf.perf_buffer_poll(timeout=20)
        return perf_events[0] - before

    label = "bcc default perf buffer, every event"
    with Consumer(draining(drain_perf), lambda: perf_events[0]) as consumer:
        out.rows[label] = measure(loop, n, reps)
    out.user_cpu[label] = consumer.cpu / max(consumer.events, 1) * 1e9
    out.notes["bcc perf"] = f"{consumer.events} received, {lost_perf[0]} lost at full speed"
    for rate in PACED_RATES:
        received, lost_before = perf_events[0], lost_perf[0]
        with Consumer(draining(drain_perf), lambda: perf_events[0]) as consumer:
            run_loop(loop, rate * PACED_SECONDS, rate)
        ours = out.paced[rate][:3]
        out.paced[rate] = (*ours, perf_events[0] - received, lost_perf[0] - lost_before,
                           consumer.cpu / max(consumer.events, 1) * 1e9)
    perf.cleanup()
    return out


@dataclasses.dataclass
class PackResults:
    """The container-metrics pack: what each hook adds per event, and the cgroup files."""

    rows: list[tuple[str, str, float, float]]  # workload, pack file, base ns, added ns
    files_ns: float  # reading one container's cgroup files once (C: open, read, close)
    files: str
    scrape_ns: float  # a scrape of the pack's CPU series (weir's collector, Python)
    series: int  # how many series that scrape had (one per cgroup that ran on a CPU)


def pack_rows(n: int, reps: int) -> PackResults:
    """Each pack policy against the workload that drives its hooks (bench/pack.c)."""
    binary = OUT / "pack"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "pack.c")], check=True)
    data = OUT / "pack-data"
    data.write_bytes(b"x" * 4096)
    address = next(
        line.split()[3].split("/")[0]
        for line in subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                                   capture_output=True, text=True, check=True).stdout.splitlines()
    )  # fmt: skip

    def run(count: int, *mode: str) -> list[float]:
        args = [str(binary), CPU, str(count), *mode]
        subprocess.run(args, check=True, capture_output=True)  # warm up
        return [float(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
                for _ in range(reps)]  # fmt: skip

    cases = [
        ("context switch (pipe ping-pong)", "cpu.yaml", (n // 10, "switch")),
        ("pread of 1 byte of a file", "filesystem.yaml", (n, "pread", str(data))),
        ("UDP send of 1 byte to a local address", "network.yaml", (n // 10, "send", address)),
    ]
    rows = []
    scrape_ns, series = float("nan"), 0
    for label, name, (count, *mode) in cases:
        base = statistics.median(run(count, *mode))
        with weir((PACK / name).read_text()) as core:
            added = statistics.median(run(count, *mode)) - base
            if name == "cpu.yaml":  # a scrape of the pack's CPU series: every cgroup seen
                resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
                collector = exporting.WeirCollector(engine=core, resolver=resolver, node="bench",
                                                    headers="matching")  # fmt: skip
                snap = core.snapshot()
                series = sum(len(entries) for s in snap for _, entries in s.aggregations)
                started = time.perf_counter_ns()
                for _ in range(20):
                    collector._rule_families(core.snapshot())  # noqa: SLF001
                scrape_ns = (time.perf_counter_ns() - started) / 20
        rows.append((label, name, base, added))
    root = cgroups.cgroup2_mount(Path("/proc/mounts").read_text())
    group = Path(root or "/sys/fs/cgroup") / f"weir-bench-{os.getpid()}"
    group.mkdir()
    try:
        files = [str(group / f) for f in ("cpu.stat", "io.stat") if (group / f).exists()]
        files_ns = statistics.median(run(n // 10, "files", *files))
    finally:
        group.rmdir()
    return PackResults(rows, files_ns, " + ".join(Path(f).name for f in files), scrape_ns, series)


def substring_rows(n: int, reps: int) -> list[tuple[str, float, float]]:
    """SubString beside Prefix on sys_enter_openat: the same open, read and close of one
    file (bench/pack.c files) with no program and with each policy (NoPost)."""
    binary = OUT / "pack"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "pack.c")], check=True)
    data = OUT / "substring-data"
    data.write_bytes(b"x")

    def run() -> float:
        args = [str(binary), CPU, str(n // 10), "files", str(data)]
        subprocess.run(args, check=True, capture_output=True)  # warm up
        return statistics.median(
            float(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
            for _ in range(reps)
        )

    def policy(operator: str, values: list[str]) -> str:
        spec = {"tracepoints": [{
            "subsystem": "syscalls", "event": "sys_enter_openat",
            "args": [{"field": "filename", "type": "filename", "label": "path"}],
            "selectors": [{"matchArgs": [{"label": "path", "operator": operator, "values": values}],
                           "matchActions": [{"action": "NoPost"}]}],
        }]}  # fmt: skip
        return json.dumps({"apiVersion": "weir.dev/v1alpha1", "kind": "TracingPolicy",
                           "metadata": {"name": "substring"}, "spec": spec})  # fmt: skip

    many = [f"/nowhere-{i}/" for i in range(15)] + ["substring-data"]
    cases = [
        ("Prefix, 1 value", policy("Prefix", [str(OUT)])),
        ("SubString, 1 value", policy("SubString", ["substring-data"])),
        ("SubString, 16 values", policy("SubString", many)),
        ("SubStringIgnCase, 1 value", policy("SubStringIgnCase", ["SUBSTRING-DATA"])),
    ]
    base = run()
    rows = [("no program", base, 0.0)]
    for label, text in cases:
        with weir(text):
            rows.append((label, base, run() - base))
    return rows


def render_substring(rows: list[tuple[str, float, float]]) -> list[str]:
    path = OUT / "substring-data"
    lines = [
        "",
        "### SubString beside Prefix (sys_enter_openat)",
        "",
        f"open, read and close of {path} ({len(str(path))} bytes) pinned to CPU {CPU}; "
        "median ns per open without a program and added by each policy (NoPost).",
        "",
        "| matchArgs | ns/open, no program | added ns/open |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {base:.0f} | {added:.0f} |" for label, base, added in rows]
    return lines


def render_pack(pack: PackResults) -> list[str]:
    lines = [
        "",
        "### The container-metrics pack (examples/packs/container-metrics)",
        "",
        f"Workloads from bench/pack.c pinned to CPU {CPU}; median ns per event without and with "
        "the pack's policy, and the CPU the policy takes at 100,000 such events per second.",
        "",
        "| event | pack file | ns/event, no program | added ns/event | CPU at 100k events/s |",
        "|---|---|---|---|---|",
    ]
    for label, name, base, added in pack.rows:
        lines.append(f"| {label} | {name} | {base:.0f} | {added:.0f} | "
                     f"{added * 1e5 / 1e9 * 100:.1f}% of a CPU |")  # fmt: skip
    lines += [
        "",
        "| reading the numbers | time |",
        "|---|---|",
        f"| one container's cgroup files ({pack.files}): open, read, close, as a cAdvisor "
        f"collection reads them (C) | {pack.files_ns / 1000:.1f} µs |",
        f"| weir: one scrape of the pack's CPU series, {pack.series} series (one per cgroup "
        f"that ran): map reads and labels (Python) | {pack.scrape_ns / 1e6:.2f} ms |",
    ]
    return lines


def render_post(post: PostResults, base: float, floor: float) -> list[str]:
    name = "weir: Post every event (ring buffer)"
    added = statistics.median(post.rows[name]) - base
    lines = [
        "",
        f"Post, paced for {PACED_SECONDS} s per rate: weir's ring buffer ({post.ring_bytes // 2**20} MiB) "
        "and writer (JSON lines) beside bcc's default perf buffer with a Python callback "
        "(json.dumps per event). Consumer CPU is the consuming thread's CPU time per event.",
        "",
        "| paced rate | weir posted | weir lost | weir consumer ns/event | bcc perf received "
        "| bcc perf lost | bcc perf consumer ns/event |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate, (got, lost, cpu, perf_got, perf_lost, perf_cpu) in post.paced.items():
        lines.append(f"| {rate // 1000}k/s | {got:,} | {lost:,} | {cpu:.0f} | {perf_got:,} | "
                     f"{perf_lost:,} | {perf_cpu:.0f} |")
    lost_to_500k = sum(v[1] for r, v in post.paced.items() if r <= 500_000)
    worst = max(v[2] for r, v in post.paced.items() if r <= 500_000)
    lines += [
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| events lost, paced up to 500k/s | {lost_to_500k:,} | 0 |",
        f"| weir consumer CPU per event (worst paced rate up to 500k/s) | {worst / 1000:.2f} us | <= 2 us |",
        f"| weir consumer CPU per event, full speed | {post.user_cpu[name] / 1000:.2f} us | <= 2 us |",
        f"| Post added in-kernel cost / empty floor (added ns) | {added / floor:.2f}x | <= 2x |",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="calls per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=["post", "pack", "substring"],
                        help="run one section (post: Post's rows; pack: the container-metrics pack; "
                             "substring: SubString beside Prefix)")  # fmt: skip
    parser.add_argument("--ring-pages", type=int, help="Post's ring buffer, in pages")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    loop = build_loop()
    n, reps = args.events, args.reps
    stats_enabled(False)
    rows: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    bpf_ns: dict[str, float] = {}
    user_cpu: dict[str, float] = {}

    if args.only == "pack":
        print("\n".join(render_pack(pack_rows(n, reps))))
        return 0
    if args.only == "substring":
        print("\n".join(render_substring(substring_rows(n, reps))))
        return 0
    print(f"baseline: {n} calls x {reps}", flush=True)
    rows["no program"] = measure(loop, n, reps)
    with empty_program() as b:
        rows["empty program (floor)"] = measure(loop, n, reps)
        if args.only == "post":
            floor = statistics.median(rows["empty program (floor)"]) - statistics.median(rows["no program"])
            post = post_rows(loop, n, reps, args.ring_pages)
            print("\n".join(render_post(post, statistics.median(rows["no program"]), floor)))
            for key, value in post.notes.items():
                print(f"- {key}: {value}")
            return 0
        stats_enabled(True)
        before = measure(loop, n, 1)
        bpf_ns["empty program (floor)"] = bpf_ns_per_event([f.fd for f in b.funcs.values()])  # type: ignore[attr-defined]
        stats_cost = statistics.median(before) - statistics.median(rows["empty program (floor)"])
        stats_enabled(False)
    program_rows(loop, n, reps, rows, bpf_ns)

    def measure_weir(core: engine.Engine, label: str) -> None:
        rows[label] = measure(loop, n, reps)
        stubs = [h.stub.copy.prog_fds[loading.STUB_FUNCTION] for s in core.policies.values()
                 for h in s.hooks.values() if h.stub.copy is not None]
        stats_enabled(True)
        measure(loop, n, 1)
        bpf_ns[label] = bpf_ns_per_event(stubs)  # the stub's run time includes the tail call
        stats_enabled(False)

    def measure_specialised(core: engine.Engine, label: str) -> None:
        """The same configuration compiled in, swapped into the same stub for the measure."""
        hook = next(h for s in core.policies.values() for h in s.hooks.values())
        specialised = loading.compile_and_load(hook.program, configured=False)
        hook.stub.swap(specialised)
        try:
            measure_weir(core, label)
        finally:
            hook.stub.swap(hook.loaded)
            specialised.close()

    with weir(policy("count", filtered=False, post=False)) as core:
        measure_weir(core, "weir: count by cgroup")
        measure_specialised(core, "weir: count by cgroup (specialised)")
    filter_text = policy("filter", filtered=True, post=False)
    with weir(filter_text) as core:
        measure_weir(core, "weir: filter fd, then count")
        snap = core.snapshot()
        matched = sum(s.stats.get(abi.Stat.MATCHED, 0) for s in snap)
        expected = (n // 10 + n * reps) + (n // 10 + n)  # measured runs + the bpf_stats run
        resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
        collector = exporting.WeirCollector(engine=core, resolver=resolver, node="bench", headers="matching")
        families = list(collector._rule_families(snap).values())[0]
        exposition = exporting.exposition_bytes(families)
        list(collector.collect())  # one scrape: what the policy actually exported
        count_error = matched - expected
        totals = core.savings(core.snapshot())["filter"].savings
        measure_specialised(core, "weir: filter fd, then count (specialised)")
    try:
        with bpftrace():
            rows["bpftrace @[cgroup] = count()"] = measure(loop, n, reps)
    except (OSError, RuntimeError) as error:
        notes["bpftrace"] = f"not measured: {error}"

    post = post_rows(loop, n, reps, args.ring_pages)
    rows.update(post.rows)
    user_cpu.update(post.user_cpu)
    line_bytes = post.line_bytes
    notes.update(post.notes)

    # Policy edits: a new configuration (map writes and a flip: to the flip), and a new
    # shape (another argument read: compiled, verified, swapped in).
    flips, shapes = [], []
    with weir(filter_text) as core:
        hook = next(h for s in core.policies.values() for h in s.hooks.values())
        ids = core.program_ids()
        for version in range(5):
            changed = policy("filter", filtered=True, post=False, values=("-1", str(1000 + version)))
            started = time.monotonic()
            core.apply(documents.parse_text(changed, source="edit"))
            flips.append(hook.loaded.flipped - started)
        assert core.program_ids() == ids, "a configuration edit loaded a program"
        known = []
        for version in range(6):  # a shape never compiled, then one compiled before
            changed = policy("filter", filtered=True, post=False, extra_arg=version % 2 == 0)
            if version < 2:
                loading.forget_compiled()  # the benchmark measures a compile
            started = time.monotonic()
            core.apply(documents.parse_text(changed, source="shape"))
            (shapes if version < 2 else known).append(time.monotonic() - started)
        assert not next(iter(core.policies.values())).failures
    pack = pack_rows(n, reps)
    substring = substring_rows(n, reps)
    lost, restart_calls = restart_under_load(loop, filter_text)

    report = render(rows, bpf_ns, user_cpu, stats_cost, line_bytes, exposition, count_error, totals,
                    flips, shapes, known, lost, restart_calls, notes, n, reps, post, pack)
    report += "\n".join(render_substring(substring)) + "\n"
    (OUT / "results.md").write_text(report)
    print(report)
    chart(rows)
    return 0


def render(rows, bpf_ns, user_cpu, stats_cost, line_bytes, exposition, count_error, totals, flips, shapes,
           known, lost, restart_calls, notes, n, reps, post, pack) -> str:  # type: ignore[no-untyped-def]
    base = statistics.median(rows["no program"])
    floor = statistics.median(rows["empty program (floor)"]) - base
    lines = [
        f"# weir benchmark ({platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')})",
        "",
        f"close(-1) loop pinned to CPU {CPU}, {n:,} calls x {reps} repetitions; median (min-max) ns per call.",
        "",
        "| configuration | ns/call | added ns/event | x floor | BPF ns/event (bpf_stats) | user CPU ns/event |",
        "|---|---|---|---|---|---|",
    ]
    for name, samples in rows.items():
        median = statistics.median(samples)
        added = median - base
        ratio = f"{added / floor:.2f}" if floor > 0 and name != "no program" else "-"
        lines.append(
            f"| {name} | {median:.1f} ({min(samples):.1f}-{max(samples):.1f}) | "
            f"{added:.1f} | {ratio} | {bpf_ns.get(name, float('nan')):.1f} | "
            f"{user_cpu.get(name, float('nan')):.0f} |"
        )
    bpftrace_added = statistics.median(rows.get("bpftrace @[cgroup] = count()", [float("nan")])) - base

    def added(name: str) -> float:
        return statistics.median(rows[name]) - base

    weir_added = added("weir: count by cgroup")
    json_rate = 100_000 * line_bytes
    prom_rate = exposition / SCRAPE_INTERVAL_S
    floor_bpf = bpf_ns["empty program (floor)"]
    hand_added, hand_bpf = added(HAND), bpf_ns[HAND] - floor_bpf

    def versus_hand(label: str) -> str:
        return (f"{added(label) / hand_added:.2f}x ({(bpf_ns[label] - floor_bpf) / hand_bpf:.2f}x "
                "in BPF time)")  # fmt: skip

    lines += [
        "",
        f"bpf_stats itself added {stats_cost:.1f} ns/call on the empty program (not included above). "
        "Rows starting `agent:` are the agent process (`weir agent --policies DIR`) running the "
        "policy as a user writes it; its BPF time is its stub's, which includes the program the "
        "stub tail-calls.",
        "",
        "The agent's program against the hand-written one, as ns added above the empty program "
        "(wall clock per call; in brackets, the same from bpf_stats):",
        "",
        "| agent's program | x hand-written | target |",
        "|---|---|---|",
        f"| count by container | {versus_hand(AGENT_COUNT)} | <= 1.15x |",
        f"| filter fd, then count | {versus_hand(AGENT_FILTER)} | <= 1.3x |",
        f"| histogram of fd | {versus_hand(AGENT_HIST)} | <= 1.6x |",
        f"| count by container, no selectors (posts every call too) | {versus_hand(AGENT_POST)} | |",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| configured count / empty floor (added ns) | {weir_added / floor:.2f}x | <= 1.5x |",
        f"| specialised count / empty floor (added ns) | "
        f"{added('weir: count by cgroup (specialised)') / floor:.2f}x | <= 1.1x |",
        f"| configured filter then count / empty floor (added ns) | "
        f"{added('weir: filter fd, then count') / floor:.2f}x | <= 1.25x |",
        f"| specialised filter then count / empty floor (added ns) | "
        f"{added('weir: filter fd, then count (specialised)') / floor:.2f}x | |",
        f"| weir count / bpftrace (added ns) | {weir_added / bpftrace_added:.2f}x | <= 0.7x |",
        f"| per-event JSON at 100k events/s | {json_rate / 1e6:.1f} MB/s ({line_bytes:.0f} B/event) | |",
        f"| aggregated series, one scrape per {SCRAPE_INTERVAL_S:.0f} s | {prom_rate:.1f} B/s ({exposition} B/scrape) | |",
        f"| bytes ratio JSON / aggregated | {json_rate / prom_rate:,.0f}x | >= 10,000x |",
        f"| count error (weir filter+count vs calls made) | {count_error} | 0 |",
        f"| savedRatio reported for the filter policy | {totals.saved_ratio:.6f} ({totals.saved}) | |",
        f"| config change -> new configuration counting (no compile), median of {len(flips)} | "
        f"{statistics.median(flips) * 1000:.1f} ms | <= 50 ms |",
        f"| new shape -> attached (compile, verify, swap), median of {len(shapes)} | "
        f"{statistics.median(shapes):.2f} s | <= 1 s |",
        f"| known shape -> attached (cached: verify, swap), median of {len(known)} | "
        f"{statistics.median(known):.2f} s | |",
        f"| calls lost while the engine restarts under load (pinned), of {restart_calls:,} | "
        f"{lost} | 0 |",
    ]
    lines += render_post(post, base, floor)
    lines += render_pack(pack)
    lines += ["", *(f"- {k}: {v}" for k, v in notes.items())]
    return "\n".join(lines) + "\n"


def chart(rows: dict[str, list[float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart", file=sys.stderr)
        return
    base = statistics.median(rows["no program"])
    names = [n for n in rows if n != "no program"]
    added = [statistics.median(rows[n]) - base for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(names, added)
    ax.set_xlabel("ns added per event (median)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(OUT / "added_ns.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
