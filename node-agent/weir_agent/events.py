"""Posted events as JSON lines. Pure: a raw kernel event plus what user space
knows (labels, executable, symbolised stacks) in, one dict out.

Fields: ``time`` (RFC 3339, ns), ``node``, ``policy``, ``hook``, ``selector``,
``pid``, ``tid``, ``comm``, ``exe``, ``cgroup``, ``namespace``/``pod``/
``container``/``workload`` (when known), ``args`` (each declared argument by
label: integers as numbers, strings as text (file, path and fd as the file's
path), sockets and packets as ``{family, protocol, state, saddr, sport, daddr,
dport}`` as far as the argument holds them), and ``userStack``/``kernelStack``
when the action asked for them.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence

from weir_agent import abi, loading
from weir_agent.abi import Kind
from weir_agent.codegen import Program
from weir_agent.metadata import Labels
from weir_agent.symbols import Frame
from weir_api import values

FAMILIES = {value: name for name, value in values.FAMILIES.items()}
PROTOCOLS = {value: name for name, value in values.PROTOCOLS.items()}
STATES = {value: name for name, value in values.SOCK_STATES.items()}
STRING_KINDS = {
    Kind.STR_PTR,
    Kind.STR_DATALOC,
    Kind.STR_INLINE,
    Kind.CHAR_BUF,
    Kind.FILE,
    Kind.PATH,
    Kind.FD,
}
ADDRESS_KINDS = {Kind.SOCK, Kind.SOCKADDR, Kind.SKB}


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(unix_ns: int) -> str:
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return f"{_second(seconds)}.{nanos:09d}Z"


def encode(
    program: Program,
    raw: loading.RawEvent,
    *,
    node: str,
    labels: Labels,
    exe: str,
    user_frames: Sequence[Frame],
    kernel_frames: Sequence[str],
    monotonic_to_unix_ns: int,
) -> dict[str, object]:
    args: dict[str, object] = {}
    strings = addresses = 0
    for arg in program.args:
        if arg.kind == Kind.INT:
            value = raw.ints[arg.slot]
            bits, signed = values.INTEGER_TYPES.get(arg.type, (64, True))
            value &= (1 << bits) - 1
            if signed and value >= 1 << (bits - 1):
                value -= 1 << bits
            args[arg.name] = value
        elif arg.kind in STRING_KINDS:
            text = raw.strings[strings] if strings < len(raw.strings) else b""
            args[arg.name] = text.decode("utf-8", errors="replace")
            strings += 1
        elif arg.kind in ADDRESS_KINDS:
            if addresses < len(raw.addresses):
                family, sport, dport, valid, protocol, state, saddr, daddr = raw.addresses[
                    addresses
                ]
                entry: dict[str, object] = {"family": FAMILIES.get(family, str(family))}
                if arg.kind != Kind.SOCKADDR:
                    entry["protocol"] = PROTOCOLS.get(protocol, str(protocol))
                if arg.kind == Kind.SOCK and state:
                    entry["state"] = STATES.get(state, str(state))
                if valid:
                    if arg.kind != Kind.SOCKADDR:
                        entry["saddr"], entry["sport"] = abi.address_from16(saddr), sport
                    entry["daddr"], entry["dport"] = abi.address_from16(daddr), dport
                args[arg.name] = entry
            addresses += 1
    event: dict[str, object] = {
        "time": rfc3339(raw.time_ns + monotonic_to_unix_ns),
        "node": node,
        "policy": program.policy,
        "hook": program.hook,
        **({"message": program.message} if program.message else {}),
        **({"tags": list(program.tags)} if program.tags else {}),
        "selector": raw.selector,
        "pid": raw.pid,
        "tid": raw.tid,
        "comm": raw.comm.decode("utf-8", errors="replace"),
        "exe": exe,
        "cgroup": raw.cgroup,
    }
    for key in ("namespace", "pod", "container", "workload"):
        if getattr(labels, key):
            event[key] = getattr(labels, key)
    event["args"] = args
    if raw.user_stack != -1:
        event["userStack"] = [f.to_json() for f in user_frames]
    if raw.kernel_stack != -1:
        event["kernelStack"] = list(kernel_frames)
    return event


def line(event: dict[str, object]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
