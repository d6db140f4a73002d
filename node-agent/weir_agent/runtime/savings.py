"""Savings accounting: how much data the kernel held back. Pure; one definition.

Counters come from the kernel per policy and hook: ``observed`` (hook
invocations), ``matched`` (passed the selectors), ``posted`` (sent to user
space), ``aggregated`` (folded into maps), ``dropped`` (overflow, rate limit,
full buffer). User space counts the bytes it actually emits: metric samples
on each scrape and event lines.

The baseline is what a per-event JSON exporter would have emitted for the same
hooks: every observed invocation as one event line of this policy's own
encoding, ``raw_bytes = observed * event_size``. Then

    savedRatio = 1 - exported_bytes / raw_bytes   (0 when raw_bytes is 0,
                                                   clamped to [0, 1])

The ratio itself is ``weir_api.statuses.saved_ratio`` (the agent and the operator's roll-up
share it). ``event_size`` is the length of the JSON line weir would write for the hook
(see ``canonical_event``): fixed-width placeholders for time, ids and names,
and each declared argument at its widest rendering, so it depends on the
policy's shape and never on the traffic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from weir_agent.spec.abi import Kind
from weir_agent.spec.programs import ArgPlan


def canonical_event(policy: str, hook: str, args: Sequence[ArgPlan]) -> dict[str, object]:
    """The widest event line of a hook, used to size the per-event baseline."""
    rendered: dict[str, object] = {}
    for arg in args:
        if arg.kind == Kind.INT:
            rendered[arg.name] = -9223372036854775808
        elif arg.kind in {Kind.SOCK, Kind.SOCKADDR}:
            rendered[arg.name] = {
                "family": "AF_INET6",
                "saddr": "0" * 39,
                "sport": 65535,
                "daddr": "0" * 39,
                "dport": 65535,
            }
        else:
            rendered[arg.name] = "x" * 64  # a typical path; strings are read up to 247 bytes
    return {
        "time": "2026-01-01T00:00:00.000000000Z",
        "node": "x" * 16,
        "policy": policy,
        "hook": hook,
        "pid": 4194304,
        "tid": 4194304,
        "comm": "x" * 15,
        "exe": "x" * 32,
        "cgroup": 18446744073709551615,
        "namespace": "x" * 16,
        "pod": "x" * 32,
        "container": "x" * 16,
        "args": rendered,
    }


def event_size(policy: str, hook: str, args: Sequence[ArgPlan]) -> int:
    """Bytes of one event line (JSON + newline) for this hook."""
    return len(json.dumps(canonical_event(policy, hook, args), separators=(",", ":"))) + 1
