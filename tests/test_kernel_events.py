"""Post: events through the ring buffer, symbolised stacks after the process is
gone, rate limits and full buffers counted exactly."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agenthelpers import apply, policy_yaml, stats
from conftest import free_port
from weir_agent.identity import cgroups, metadata
from weir_agent.outputs import eventing
from weir_agent.runtime import engine

CRASH = r"""
#include <stdio.h>
__attribute__((noinline)) void weir_crash_here(volatile int *p) {
    *p = 42;
}
__attribute__((noinline)) void weir_caller(void) {
    weir_crash_here((volatile int *)0);
    puts("unreachable");
}
int main(void) {
    weir_caller();
    return 0;
}
"""


@pytest.fixture(scope="module")
def crasher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the crashing program")
    directory = tmp_path_factory.mktemp("crash")
    (directory / "crash.c").write_text(CRASH)
    binary = directory / "weir-crash"
    subprocess.run(
        [
            "gcc",
            "-O0",
            "-g",
            "-fno-omit-frame-pointer",
            "-o",
            str(binary),
            str(directory / "crash.c"),
        ],
        check=True,
    )
    return binary


def writer(core: engine.Engine) -> tuple[eventing.EventWriter, io.StringIO]:
    out = io.StringIO()
    resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
    return eventing.EventWriter(core=core, resolver=resolver, node="n1", out=out), out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_segfault_is_posted_with_a_symbolised_stack_after_the_process_exited(
    core, crasher: Path
) -> None:
    spec = {
        "tracepoints": [
            {
                "subsystem": "signal",
                "event": "signal_generate",
                "args": [{"field": "sig", "type": "int", "label": "sig"}],
                "selectors": [
                    {
                        "matchArgs": [{"label": "sig", "operator": "Equal", "values": ["11"]}],
                        "matchBinaries": [{"operator": "In", "values": [str(crasher)]}],
                        "matchActions": [
                            {"action": "Post", "userStackTrace": True, "kernelStackTrace": True}
                        ],
                    }
                ],
            }
        ]
    }
    apply(core, policy_yaml("segv", yaml.safe_dump(spec)))
    events, out = writer(core)
    crash = subprocess.Popen([str(crasher)])
    assert crash.wait() == -11
    # Reaped before user space reads anything: /proc has nothing left to symbolise from.
    assert not Path(f"/proc/{crash.pid}").exists()
    assert events.pump() == 1
    (event,) = lines(out)
    assert event["pid"] == crash.pid
    assert (event["policy"], event["hook"], event["exe"]) == (
        "segv",
        "tracepoint:signal:signal_generate",
        str(crasher),
    )
    assert event["args"] == {"sig": 11}
    assert event["comm"] == "weir-crash"
    functions = [frame["function"] for frame in event["userStack"]]
    assert functions[:3] == ["weir_crash_here", "weir_caller", "main"]
    top = event["userStack"][0]
    assert top["module"] == str(crasher)
    assert top["file"].endswith("crash.c") and top["line"] == 4
    assert any(
        "force_sig_fault" in frame or "send_signal" in frame for frame in event["kernelStack"]
    )
    counts = stats(core, "segv")
    assert (counts["matched"], counts["posted"]) == (1, 1)


BASE = 7_500_000_000


def lseek_post(name: str, action: dict[str, object]) -> str:
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_lseek",
                "args": [{"field": "offset", "type": "long", "label": "offset"}],
                "selectors": [
                    {
                        "matchArgs": [
                            {"label": "offset", "operator": "Equal", "values": [str(BASE)]}
                        ],
                        "matchActions": [action],
                    }
                ],
            }
        ]
    }
    return policy_yaml(name, yaml.safe_dump(spec))


SEEKER = (
    "import os, sys\nfd = os.open('/dev/null', os.O_RDONLY)\n"
    "for _ in range(int(sys.argv[1])):\n    os.lseek(fd, {}, 0)\n"
)


def seek_in_new_process(times: int) -> None:
    subprocess.run([sys.executable, "-c", SEEKER.format(BASE), str(times)], check=True)


def test_rate_limit_posts_one_per_process_per_window_and_counts_the_rest(core) -> None:
    apply(core, lseek_post("limited", {"action": "Post", "rateLimit": "1m"}))
    events, out = writer(core)
    seek_in_new_process(10)
    seek_in_new_process(7)
    events.pump()
    posted = lines(out)
    assert len(posted) == 2
    assert {e["args"]["offset"] for e in posted} == {BASE}
    assert len({e["pid"] for e in posted}) == 2
    counts = stats(core, "limited")
    assert (counts["matched"], counts["posted"], counts["rate_limited"]) == (17, 2, 15)


THREADS = (
    "import os, sys, threading\nfd = os.open('/dev/null', os.O_RDONLY)\n"
    "def seek():\n    for _ in range(5):\n        os.lseek(fd, {}, 0)\n"
    "for _ in range(3):\n    t = threading.Thread(target=seek)\n    t.start()\n    t.join()\n"
)


def test_rate_limit_scope_thread_and_global(core) -> None:
    # Tetragon's rateLimitScope: thread counts each thread's window apart; global, every
    # process's together (one window per selector).
    apply(
        core,
        lseek_post("per-thread", {"action": "Post", "rateLimit": "1m", "rateLimitScope": "thread"}),
        lseek_post("global", {"action": "Post", "rateLimit": "1m", "rateLimitScope": "global"}),
    )
    events, out = writer(core)
    subprocess.run([sys.executable, "-c", THREADS.format(BASE)], check=True)  # 3 threads
    seek_in_new_process(4)
    events.pump()
    posted = lines(out)
    assert sum(1 for e in posted if e["policy"] == "per-thread") == 3 + 1
    assert sum(1 for e in posted if e["policy"] == "global") == 1
    assert stats(core, "per-thread")["rate_limited"] == 15 + 4 - 4
    assert stats(core, "global")["rate_limited"] == 15 + 4 - 1


def test_a_burst_larger_than_the_buffer_counts_its_losses_exactly(kernel: None) -> None:
    small = engine.Engine(node_name="n1", ringbuf_pages=1)  # one page: a few dozen events
    try:
        apply(small, lseek_post("burst", {"action": "Post"}))
        events, out = writer(small)
        seek_in_new_process(2000)  # nothing drains meanwhile
        events.pump()
        counts = stats(small, "burst")
        assert counts["matched"] == 2000
        assert counts["ringbuf_full"] > 0
        assert counts["posted"] + counts["ringbuf_full"] == counts["matched"]
        assert len(lines(out)) == counts["posted"]
    finally:
        small.close()


def test_a_posted_string_argument_arrives_whole(core, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The event of a hook reading strings carries them (a two-dimensional char array in
    # weir.h, decoded through abi.event_type): each open's path, exactly, once each.
    target = tmp_path / "posted-file"
    target.write_text("x")
    hook = f"""
        tracepoints:
          - subsystem: syscalls
            event: sys_enter_openat
            args: [{{field: filename, type: filename, label: path}}]
            selectors:
              - matchArgs: [{{label: path, operator: Prefix, values: ["{tmp_path}/"]}}]
                matchActions: [{{action: Post}}]
    """
    apply(core, policy_yaml("paths", hook))
    events, out = writer(core)
    for _ in range(3):
        target.read_text()
    events.pump()
    posted = lines(out)
    assert [e["args"]["path"] for e in posted] == [str(target)] * 3
    assert {e["pid"] for e in posted} == {os.getpid()}
    assert stats(core, "paths")["posted"] == 3


def test_a_posted_socket_argument_carries_both_addresses(core) -> None:  # type: ignore[no-untyped-def]
    # Address sections of the event (struct weir_addr in weir.h): two sends to a listener on
    # 127.0.0.2 and a fresh port, each posted with both ends of the connection.
    port = free_port()
    hook = f"""
        tracepoints:
          - subsystem: sock
            event: sock_send_length
            args:
              - {{field: sk, type: sock, label: sk}}
              - {{field: ret, type: int, label: bytes}}
            selectors:
              - matchArgs:
                  - {{label: sk, operator: DAddr, values: ["127.0.0.2/32"]}}
                  - {{label: sk, operator: DPort, values: ["{port}"]}}
                matchActions: [{{action: Post}}]
    """
    apply(core, policy_yaml("sockets", hook))
    events, out = writer(core)
    with socket.create_server(("127.0.0.2", port)) as server:
        client = socket.create_connection(("127.0.0.2", port))
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"hello")
            assert peer.recv(5) == b"hello"
            client.sendall(b"again!")
            assert peer.recv(6) == b"again!"
            local = client.getsockname()
    events.pump()
    posted = lines(out)
    assert [e["args"]["bytes"] for e in posted] == [5, 6]
    assert {json.dumps(e["args"]["sk"], sort_keys=True) for e in posted} == {
        json.dumps(
            {
                "family": "AF_INET",
                "protocol": "IPPROTO_TCP",
                "state": "TCP_ESTABLISHED",
                "saddr": local[0],
                "sport": local[1],
                "daddr": "127.0.0.2",
                "dport": port,
            },
            sort_keys=True,
        )
    }


# 2^17 call paths: the function at depth L (1..17) is weir_b when bit L-1 of the path is
# set, else weir_a; the deepest calls weir_leaf, which calls the probed weir_hit. Every
# STEP calls it waits for a line on stdin, so the test sets the pace, not the clock.
PATHS = r"""
#include <stdio.h>
#include <stdlib.h>
#define LEVELS 17
__attribute__((noinline)) void weir_hit(long path) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void weir_leaf(long path) { weir_hit(path); __asm__ volatile(""); }
__attribute__((noinline)) void weir_a(long path, int level);
__attribute__((noinline)) void weir_b(long path, int level);
void weir_a(long path, int level) {
    if (level == LEVELS) weir_leaf(path);
    else if ((path >> level) & 1) weir_b(path, level + 1);
    else weir_a(path, level + 1);
    __asm__ volatile("");
}
void weir_b(long path, int level) {
    if (level == LEVELS) weir_leaf(path);
    else if ((path >> level) & 1) weir_b(path, level + 1);
    else weir_a(path, level + 1);
    __asm__ volatile("");
}
int main(int argc, char **argv) {
    long n = atol(argv[1]), step = atol(argv[2]);
    char line[8];
    for (long p = 0; p < n; p++) {
        if (p % step == 0 && !fgets(line, sizeof line, stdin)) return 1;
        if (p & 1) weir_b(p, 1); else weir_a(p, 1);
    }
    return 0;
}
"""
DISTINCT_STACKS = 100_000
STEP = 5_000


def test_a_hundred_thousand_distinct_stacks_are_all_posted_and_symbolised(
    kernel: None, tmp_path: Path
) -> None:
    # Stacks travel in each event (bpf_get_stack), so no stack map fills up: every one of
    # 100,000 different call paths arrives, whole, and names its functions.
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the program of many call paths")
    (tmp_path / "paths.c").write_text(PATHS)
    binary = tmp_path / "weir-paths"
    build = ["gcc", "-O0", "-fno-omit-frame-pointer", "-o", str(binary), str(tmp_path / "paths.c")]
    subprocess.run(build, check=True)
    spec = {
        "uprobes": [
            {
                "path": str(binary),
                "symbol": "weir_hit",
                "args": [{"index": 0, "type": "long", "label": "path"}],
                "selectors": [{"matchActions": [{"action": "Post", "userStackTrace": True}]}],
            }
        ]
    }
    big = engine.Engine(node_name="n1", ringbuf_pages=4096)  # 16 MiB: STEP stacks fit
    try:
        apply(big, policy_yaml("paths", yaml.safe_dump(spec)))
        out = io.StringIO()
        resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
        events = eventing.EventWriter(core=big, resolver=resolver, node="n1", out=out)
        work = subprocess.Popen(
            [str(binary), str(DISTINCT_STACKS), str(STEP)], stdin=subprocess.PIPE, text=True
        )
        assert work.stdin is not None
        seen: set[int] = set()
        for done in range(0, DISTINCT_STACKS, STEP):
            work.stdin.write("go\n")
            work.stdin.flush()
            progress = time.monotonic()
            while events.written < done + STEP:
                # wait_events returns at once while a record is still being written, so
                # "nothing new" is measured in seconds, not in waits.
                big.wait_events(1.0)
                if events.pump():
                    progress = time.monotonic()
                assert work.poll() in (None, 0), "the workload failed"
                quiet = time.monotonic() - progress
                assert quiet < 30, (events.written, stats(big, "paths"))
            for line in out.getvalue().splitlines():
                event = json.loads(line)
                functions = [frame["function"] for frame in event["userStack"]]
                # At a function's entry the kernel adds the caller from the stack pointer.
                assert functions[:2] == ["weir_hit", "weir_leaf"], functions
                assert functions[19] == "main", functions
                levels = functions[2:19]  # depth 17 first
                assert set(levels) <= {"weir_a", "weir_b"}, functions
                path = sum(1 << (17 - 1 - n) for n, name in enumerate(levels) if name == "weir_b")
                assert event["args"]["path"] == path
                seen.add(path)
            out.seek(0)
            out.truncate()
        work.stdin.close()
        assert work.wait(timeout=30) == 0
        assert seen == set(range(DISTINCT_STACKS))
        counts = stats(big, "paths")
        assert (counts["matched"], counts["posted"]) == (DISTINCT_STACKS, DISTINCT_STACKS)
    finally:
        big.close()
