"""Does this kernel show every context switch to BPF programs?

For SECONDS seconds, count each thread's switches off the CPU twice: as the kernel counts
them (/proc/PID/task/TID/status, voluntary + nonvoluntary ctxt_switches) and as a
sched:sched_switch program sees them (prev_pid). Prints the threads where the two differ,
then the totals. A thread whose switches the program never sees loses its slices in any
sched_switch duration (switch-in to switch-out); weir's cpu_time does not (it reads the
kernel's own per-task CPU time). Run as root: make hidden-switches [SWITCH_SECONDS=5]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bcc import BPF

PROGRAM = r"""
BPF_HASH(outs, u32, u64, 65536);
TRACEPOINT_PROBE(sched, sched_switch) {
    u32 prev = args->prev_pid;
    u64 zero = 0;
    u64 *seen = outs.lookup_or_try_init(&prev, &zero);
    if (seen)
        __sync_fetch_and_add(seen, 1);
    return 0;
}
"""


def switches() -> dict[int, tuple[str, int]]:
    """tid -> (comm, voluntary + nonvoluntary switches so far)."""
    out = {}
    for status in Path("/proc").glob("[0-9]*/task/[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue  # the thread ended
        counted = int(fields["voluntary_ctxt_switches"]) + int(
            fields["nonvoluntary_ctxt_switches"]
        )
        out[int(status.parent.name)] = (fields["Name"].strip(), counted)
    return out


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    program = BPF(text=PROGRAM)
    before = switches()
    time.sleep(seconds)
    after = switches()
    seen = {int(k.value): int(v.value) for k, v in program[b"outs"].items()}
    rows = []
    kernel_total = seen_total = 0
    for tid, (comm, counted) in after.items():
        if tid not in before:
            continue  # started during the run: its first switches came before the program
        kernel = counted - before[tid][1]
        by_bpf = seen.get(tid, 0)
        kernel_total += kernel
        seen_total += by_bpf
        # A thread's own read of /proc can switch it once between the two reads.
        if abs(kernel - by_bpf) > 1:
            rows.append((tid, comm, kernel, by_bpf))
    print(f"{'tid':>8}  {'comm':<16} {'kernel':>8} {'seen':>8}")
    for tid, comm, kernel, by_bpf in sorted(rows, key=lambda r: r[2] - r[3], reverse=True):
        print(f"{tid:>8}  {comm:<16} {kernel:>8} {by_bpf:>8}")
    print(f"every thread over {seconds:g} s: kernel {kernel_total}, seen {seen_total}")


if __name__ == "__main__":
    main()
