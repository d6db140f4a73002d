"""Correlation across hooks: one hook marks a process or a socket, another tests the
mark. Workloads the test controls are counted exactly; the shared map's accounting
(entries, evictions) adds up."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from agenthelpers import apply, scrape, series

pytestmark = pytest.mark.kernel

OFFSET = 7777  # the lseek offset the workloads use, and only they
BASE = 10**12  # the eviction test's offsets start here

WORKLOAD = """
import os, sys
null = os.open("/dev/null", os.O_RDONLY)
for step in sys.argv[1:]:
    kind, _, value = step.partition(":")
    if kind == "open":
        os.close(os.open(value, os.O_RDONLY))
    else:
        for _ in range(int(value)):
            os.lseek(null, {offset}, 0)
"""


def run(*steps: str) -> None:
    code = WORKLOAD.format(offset=OFFSET)
    subprocess.run([sys.executable, "-c", code, *steps], check=True, timeout=60)


def document(kind: str, name: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def scratch() -> Path:
    path = Path("/tmp") / f"weir-marks-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    for name in ("secret", "forget"):
        (path / name).write_text("x")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def readers(scratch: Path) -> str:
    """Policy "readers" and rule "reader-seeks" (weir_test_reader_seeks): openat of
    scratch/secret marks the process, of scratch/forget unmarks it, and lseek to OFFSET
    counts when the process is marked."""

    def opened(path: Path, action: dict[str, str]) -> dict[str, object]:
        return {
            "matchArgs": [{"label": "path", "operator": "Equal", "values": [str(path)]}],
            "matchActions": [{"action": "NoPost"}, action],
        }

    policy = document(
        "TracingPolicy",
        "readers",
        {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "filename", "type": "filename", "label": "path"}],
                    "selectors": [
                        opened(
                            scratch / "secret",
                            {"action": "Mark", "mark": "readers", "key": "process"},
                        ),
                        opened(
                            scratch / "forget",
                            {"action": "Unmark", "mark": "readers", "key": "process"},
                        ),
                    ],
                },
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_lseek",
                    "args": [{"field": "offset", "type": "int64", "label": "offset"}],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"label": "offset", "operator": "Equal", "values": [str(OFFSET)]}
                            ],
                            "matchMarks": [{"mark": "readers", "key": "process"}],
                            "matchActions": [{"action": "NoPost"}],
                        }
                    ],
                },
            ]
        },
    )
    rule = document(
        "AggregationRule",
        "reader-seeks",
        {
            "policyRef": {"name": "readers"},
            "hook": "tracepoint:syscalls:sys_enter_lseek",
            "metric": {"name": "weir_test_reader_seeks"},
        },
    )
    return yaml.safe_dump_all([policy, rule])


def test_processes_that_opened_a_file_are_matched_on_a_later_call(core, scratch: Path) -> None:
    # "Processes that opened a file under X, later matched on another call": openat of
    # the secret marks the process, openat of forget unmarks it, lseek tests the mark.
    apply(core, readers(scratch))
    secret, forget = f"open:{scratch / 'secret'}", f"open:{scratch / 'forget'}"
    run("seek:2", secret, "seek:5")  # marked after 2 seeks: 5 count
    run("seek:7")  # never opened the secret: none count
    run(secret, "seek:3", forget, "seek:4")  # unmarked after 3 seeks: 3 count
    samples = scrape(core)
    assert samples["weir_test_reader_seeks_total"][()] == 8.0
    marks = series(samples, "weir_policy_marks_total", policy="readers")
    openat = "tracepoint:syscalls:sys_enter_openat"
    assert marks[(("event", "set"), ("hook", openat))] == 2.0
    assert marks[(("event", "cleared"), ("hook", openat))] == 1.0
    # The first process exited marked: its mark stays until evicted (one entry, ours).
    entries = samples["weir_agent_correlation_entries"][(("map", "marks"),)]
    assert entries >= 1.0
    assert samples["weir_agent_correlation_capacity"][(("map", "marks"),)] == 65536.0


def test_sockets_tracked_at_connect_are_matched_when_they_send(core) -> None:
    # TrackSock and UntrackSock, in Tetragon's words, on tracepoints: a socket that
    # connects to port A is tracked (sock:inet_sock_set_state, SYN_SENT), untracked when
    # it closes; sock:sock_send_length counts sends on tracked sockets only.
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    port_a, port_b = (s.getsockname()[1] for s in servers)
    policy = document(
        "TracingPolicy",
        "tracked",
        {
            "tracepoints": [
                {
                    "subsystem": "sock",
                    "event": "inet_sock_set_state",
                    # Tetragon's numbering: the format's common fields count (skaddr is 4).
                    "args": [
                        {"index": 4, "type": "sock", "label": "sk"},
                        {"index": 6, "type": "int", "label": "newstate"},
                        {"index": 8, "type": "uint16", "label": "dport"},
                    ],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"index": 6, "operator": "Equal", "values": ["2"]},  # SYN_SENT
                                {"index": 8, "operator": "Equal", "values": [str(port_a)]},
                            ],
                            "matchActions": [
                                {"action": "NoPost"},
                                {"action": "TrackSock", "argSock": 4},
                            ],
                        },
                        {
                            "matchArgs": [
                                {"index": 6, "operator": "Equal", "values": ["7"]},  # CLOSE
                            ],
                            "matchActions": [
                                {"action": "NoPost"},
                                {"action": "UntrackSock", "argSock": 4},
                            ],
                        },
                    ],
                },
                {
                    "subsystem": "sock",
                    "event": "sock_send_length",
                    "args": [{"field": "sk", "type": "sock", "label": "sk"}],
                    "selectors": [
                        {
                            "matchMarks": [{"mark": "sock", "key": "arg:sk"}],
                            "matchActions": [{"action": "NoPost"}],
                        }
                    ],
                },
            ]
        },
    )
    rule = document(
        "AggregationRule",
        "tracked-sends",
        {
            "policyRef": {"name": "tracked"},
            "hook": "tracepoint:sock:sock_send_length",
            "metric": {"name": "weir_test_tracked_sends"},
        },
    )
    apply(core, yaml.safe_dump_all([policy, rule]))
    try:
        for port, sends in ((port_a, 3), (port_b, 4), (port_a, 2)):
            with socket.create_connection(("127.0.0.1", port)) as client:
                accepted, _ = servers[0 if port == port_a else 1].accept()
                for _ in range(sends):
                    client.sendall(b"x")
                    accepted.recv(1)
                accepted.close()
    finally:
        for server in servers:
            server.close()
    samples = scrape(core)
    assert samples["weir_test_tracked_sends_total"][()] == 5.0
    marks = series(
        samples,
        "weir_policy_marks_total",
        policy="tracked",
        hook="tracepoint:sock:inet_sock_set_state",
    )
    assert marks == {(("event", "set"),): 2.0, (("event", "cleared"),): 2.0}


def test_the_marks_map_counts_what_its_lru_evicted(core) -> None:
    # 70,000 distinct keys marked into a map of 65,536: whatever is not present any more
    # was evicted, and the agent's numbers add up to what was marked.
    policy = document(
        "TracingPolicy",
        "many",
        {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_lseek",
                    "args": [
                        {"field": "fd", "type": "int", "label": "fd"},
                        {"field": "offset", "type": "int64", "label": "offset"},
                        {"field": "whence", "type": "int", "label": "whence"},
                    ],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"label": "whence", "operator": "Equal", "values": ["1"]},
                                {"label": "offset", "operator": "GT", "values": [str(BASE - 1)]},
                            ],
                            "matchActions": [
                                {"action": "NoPost"},
                                {"action": "Mark", "mark": "offsets", "key": "arg:offset"},
                            ],
                        }
                    ],
                }
            ]
        },
    )
    apply(core, yaml.safe_dump(policy))
    before = core.correlation()["marks"]
    code = (
        "import os\nfd = os.open('/dev/null', os.O_RDONLY)\n"
        f"for n in range(70_000):\n    os.lseek(fd, {BASE} + n, 1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    after = core.correlation()["marks"]
    samples = scrape(core)
    set_here = samples["weir_policy_marks_total"][
        (("event", "set"), ("hook", "tracepoint:syscalls:sys_enter_lseek"), ("policy", "many"))
    ]
    assert set_here == 70_000.0
    assert after.entries <= 65_536
    # Every mark set is present or evicted (other policies' marks left as they were).
    gained = (after.entries - before.entries) + (after.evicted - before.evicted)
    assert gained == 70_000
    assert after.evicted - before.evicted >= 70_000 - 65_536
