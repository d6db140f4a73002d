"""Posted events without a kernel: ring buffer records as weir.h lays them out (built with
abi.event_type) become exactly the JSON lines the docs describe; event files rotate."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

from test_codegen import make
from weir_agent.identity.metadata import Labels
from weir_agent.kernel import ringbuf
from weir_agent.outputs import eventing, events
from weir_agent.outputs.symbols import Frame
from weir_agent.spec import abi

BUILD_ID = bytes(range(20))


def posting_program(action: dict[str, Any]) -> Any:
    spec = {
        "tracepoints": [
            {
                "subsystem": "sock",
                "event": "sock_send_length",
                "message": "100% sent",
                "tags": ["net"],
                "args": [
                    {"field": "sk", "type": "sock", "label": "sk"},
                    {"field": "ret", "type": "int", "label": "bytes"},
                ],
                "selectors": [{"matchActions": [action]}],
            }
        ]
    }
    return make(spec).programs[0]


def record(program: Any, **values: Any) -> bytes:
    """One ring buffer record (header, struct weir_event, padding) of ``program``."""
    layout = abi.event_type(dict(program.flags))
    event: Any = layout()
    event.user_stack = event.kernel_stack = abi.STACK_NOT_TAKEN
    for name, value in values.items():
        if name == "ints":
            for slot, number in value.items():
                event.ints[slot] = number & (2**64 - 1)
        elif name == "addr":
            family, saddr, sport, daddr, dport = value
            address = event.addr[0]
            address.family, address.sport, address.dport, address.valid = family, sport, dport, 1
            address.protocol, address.state = 6, 1
            for target, text in ((address.saddr, saddr), (address.daddr, daddr)):
                packed, _ = abi.mapped16(ipaddress.ip_network(text))
                ctypes.memmove(target, packed, 16)
        elif name == "ustack":
            for n, offset in enumerate(value):
                frame = event.ustack[n]
                frame.status, frame.offset = 1, offset
                ctypes.memmove(frame.build_id, BUILD_ID, 20)
        elif name == "kstack":
            for n, address in enumerate(value):
                event.kstack[n] = address
        else:
            setattr(event, name, value)
    size = ctypes.sizeof(layout)
    body = struct.pack("<II", size, 0) + bytes(event)
    return body + b"\0" * (ringbuf.record_stride(size) - len(body))


def encoder() -> events.Encoder:
    def frame(build_id: str, offset: int) -> Frame | None:
        if build_id != BUILD_ID.hex():
            return None
        return Frame(function=f"f{offset:x}", module="/bin/x", offset=offset)

    return events.Encoder(node="n%1", frame=frame, ksym=lambda address: f"k{address:x}+0x1")


def lines(program: Any, data: bytes) -> list[dict[str, Any]]:
    text = encoder().lines(
        program,
        data,
        labels=lambda cgroup: Labels(namespace="ns", pod=f"pod{cgroup}", container="c"),
        exes=lambda exe: {7: '/usr/bin/"quoted"'}.get(exe, ""),
        monotonic_to_unix_ns=1_700_000_000_000_000_000,
    )
    return [json.loads(line) for line in text]


def test_records_become_the_documented_lines() -> None:
    program = posting_program({"action": "Post"})
    slot = next(a.slot for a in program.args if a.name == "bytes")
    data = record(
        program,
        time_ns=5_000_000_123,
        cgroup=9,
        exe_hash=7,
        pid=100,
        tid=101,
        comm=b"curl\0junk",
        ints={slot: -5},
        addr=(2, "10.0.0.1/32", 40000, "1.2.3.4/32", 443),
    ) + record(program, time_ns=6, cgroup=9, pid=1, tid=1, comm=b"x", ints={slot: 2**31 - 1})
    first, second = lines(program, data)
    assert first == {
        "time": "2023-11-14T22:13:25.000000123Z",
        "node": "n%1",
        "policy": "p",
        "hook": "tracepoint:sock:sock_send_length",
        "message": "100% sent",
        "tags": ["net"],
        "selector": 0,
        "pid": 100,
        "tid": 101,
        "comm": "curl",
        "exe": '/usr/bin/"quoted"',
        "cgroup": 9,
        "namespace": "ns",
        "pod": "pod9",
        "container": "c",
        "args": {
            "sk": {
                "family": "AF_INET",
                "protocol": "IPPROTO_TCP",
                "state": "TCP_ESTABLISHED",
                "saddr": "10.0.0.1",
                "sport": 40000,
                "daddr": "1.2.3.4",
                "dport": 443,
            },
            "bytes": -5,
        },
    }
    assert (second["args"]["bytes"], second["exe"], second["comm"]) == (2**31 - 1, "", "x")
    assert "userStack" not in first and "userStackError" not in first


def test_stacks_are_symbolised_or_say_why_they_are_missing() -> None:
    program = posting_program({"action": "Post", "userStackTrace": True, "kernelStackTrace": True})
    data = (
        record(program, user_stack=2, ustack=[0x1130, 0x2000], kernel_stack=1, kstack=[0xFF01])
        + record(program, user_stack=-errno.EFAULT, kernel_stack=0)
        + record(program)  # a selector that took no stack
    )
    taken, failed, untaken = lines(program, data)
    assert taken["userStack"] == [
        {"function": "f1130", "module": "/bin/x", "offset": "0x1130"},
        {"function": "f2000", "module": "/bin/x", "offset": "0x2000"},
    ]
    assert taken["kernelStack"] == ["kff01+0x1"]
    assert "userStack" not in failed and "kernelStack" not in failed
    assert failed["userStackError"] == "bpf_get_stack failed: Bad address (EFAULT)"
    assert failed["kernelStackError"] == "no kernel frames"
    assert not {"userStack", "userStackError", "kernelStack", "kernelStackError"} & set(untaken)


def test_an_unknown_build_id_makes_the_process_known_once_then_names_the_frame() -> None:
    program = posting_program({"action": "Post", "userStackTrace": True})
    known: set[str] = set()
    learned: list[tuple[int, str]] = []

    def frame(build_id: str, offset: int) -> Frame | None:
        return Frame("main", "/bin/y", offset) if build_id in known else None

    def learn(pid: int, exe: str) -> None:
        learned.append((pid, exe))
        known.add(BUILD_ID.hex())

    coder = events.Encoder(node="n", frame=frame, ksym=str, learn=learn)
    data = record(program, pid=4, exe_hash=7, user_stack=1, ustack=[0x10]) * 3
    out = coder.lines(
        program, data, labels=lambda _: Labels(), exes=lambda _: "/bin/y", monotonic_to_unix_ns=0
    )
    assert [json.loads(line)["userStack"][0]["function"] for line in out] == ["main"] * 3
    assert learned == [(4, "/bin/y")]


def test_a_record_of_another_size_is_refused_loudly() -> None:
    program = posting_program({"action": "Post"})
    layout = events.layout(program, node="n")
    assert layout.record.size == ringbuf.record_stride(layout.record.size - ringbuf.HEADER)
    assert ringbuf.record_stride(128) == 136 and ringbuf.record_stride(130) == 144


def test_an_events_file_rotates_before_it_passes_its_size(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = eventing.RotatingFile(path, max_bytes=100, backups=2)
    line = '{{"n":{},"pad":"{}"}}\n'
    for n in range(5):
        sink.write(line.format(n, "x" * 30))  # 41 bytes a line
    sink.write(line.format(5, "x" * 30) + line.format(6, "x" * 30))  # a batch: split
    sink.close()
    files = {p.name: p.read_text().splitlines() for p in tmp_path.iterdir()}
    assert sorted(files) == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert [json.loads(x)["n"] for x in files["events.jsonl"]] == [6]
    assert [json.loads(x)["n"] for x in files["events.jsonl.1"]] == [4, 5]
    assert [json.loads(x)["n"] for x in files["events.jsonl.2"]] == [2, 3]
    assert all(len("\n".join(lines)) <= 100 for lines in files.values())
