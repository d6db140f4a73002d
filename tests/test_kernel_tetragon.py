"""Tetragon's vocabulary in the real kernel, with exact counts: fd and file arguments
read as paths through the kernel's own struct layouts (BTF), packets (skb) and sockets
by protocol, family and state, and the selectors on the calling task (matchPIDs,
matchNamespaces, matchCapabilities).

Every workload is the test's own (a fresh directory, offsets and ports no other process
uses, children it starts), so the counts are exact on a busy machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenthelpers import apply, policy_yaml, stats
from conftest import free_port
from weir_agent.identity import cgroups, metadata
from weir_agent.outputs import eventing


def one_hook(
    name: str, hook: dict[str, Any], *selectors: dict[str, Any], post: bool = False
) -> str:
    action = [{"action": "Post" if post else "NoPost"}]
    spec = {
        "tracepoints": [{**hook, "selectors": [{**s, "matchActions": action} for s in selectors]}]
    }
    return policy_yaml(name, yaml.safe_dump(spec))


WRITE = {
    "subsystem": "syscalls",
    "event": "sys_enter_write",
    "args": [{"index": 5, "type": "fd", "label": "file"}],  # Tetragon numbering: fd
}


def path_is(operator: str, *values: str) -> dict[str, Any]:
    return {"label": "file", "operator": operator, "values": list(values)}


def mine() -> dict[str, Any]:
    return {"operator": "In", "values": [os.getpid()]}


@pytest.fixture
def tree() -> Iterator[Path]:
    base = Path("/tmp") / f"weir-fd-{uuid.uuid4().hex[:12]}"
    (base / "sub").mkdir(parents=True)
    yield base
    shutil.rmtree(base)


def write_times(path: Path, times: int) -> None:
    with open(path, "a") as file:
        for _ in range(times):
            file.write("x")
            file.flush()


def test_an_fd_is_read_as_its_files_path(core, tree: Path) -> None:
    apply(
        core,
        one_hook("fd-prefix", WRITE, {"matchArgs": [path_is("Prefix", f"{tree}/")]}),
        one_hook(
            "fd-postfix",
            WRITE,
            {"matchArgs": [path_is("Prefix", f"{tree}/"), path_is("Postfix", ".log")]},
        ),
        one_hook("fd-equal", WRITE, {"matchArgs": [path_is("Equal", f"{tree}/sub/b.txt")]}),
        # /dev is another mount (devtmpfs): the path crosses it; only this process counts.
        one_hook(
            "fd-devnull",
            WRITE,
            {"matchArgs": [path_is("Equal", "/dev/null")], "matchPIDs": [mine()]},
        ),
        one_hook("fd-post", WRITE, {"matchArgs": [path_is("Equal", f"{tree}/a.log")]}, post=True),
    )
    out = io.StringIO()
    resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
    events = eventing.EventWriter(core=core, resolver=resolver, node="n1", out=out)
    write_times(tree / "a.log", 3)
    write_times(tree / "sub" / "b.txt", 2)
    write_times(tree / "sub" / "c.log", 4)
    write_times(Path("/dev/null"), 5)
    assert stats(core, "fd-prefix")["matched"] == 3 + 2 + 4
    assert stats(core, "fd-postfix")["matched"] == 3 + 4
    assert stats(core, "fd-equal")["matched"] == 2
    assert stats(core, "fd-devnull")["matched"] == 5
    assert events.pump() == 3
    posted = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [event["args"] for event in posted] == [{"file": f"{tree}/a.log"}] * 3


LSEEK = {
    "subsystem": "syscalls",
    "event": "sys_enter_lseek",
    "args": [{"field": "offset", "type": "long", "label": "offset"}],
}
BASE = 7_700_000_000  # offsets no other process seeks to
CHILD = "import os, sys\nfor _ in range(int(sys.argv[1])): os.lseek(0, {offset}, 0)\n"


def ours(offset: int) -> dict[str, Any]:
    return {"label": "offset", "operator": "Equal", "values": [str(offset)]}


def seek_times(offset: int, times: int) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for _ in range(times):
            os.lseek(fd, offset, os.SEEK_SET)
    finally:
        os.close(fd)


def child(offset: int, times: int, *prefix: str, setup: str = "") -> None:
    """A child process that seeks ``times`` times to ``offset`` (after ``setup``)."""
    code = setup + CHILD.format(offset=offset)
    subprocess.run(
        [*prefix, sys.executable, "-c", code, str(times)], stdin=subprocess.DEVNULL, check=True
    )


def test_selectors_on_the_calling_task(core) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a process in its own pid namespace")
    me = os.getpid()
    apply(
        core,
        one_hook("pid-in", LSEEK, {"matchArgs": [ours(BASE)], "matchPIDs": [mine()]}),
        one_hook(
            "pid-tree",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchPIDs": [{"operator": "In", "values": [str(me)], "followForks": True}],
            },
        ),
        one_hook(
            "pid-not-tree",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchPIDs": [{"operator": "NotIn", "values": [me], "followForks": True}],
            },
        ),
        one_hook(
            "ns-pid-1",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchPIDs": [{"operator": "In", "values": [1], "isNamespacePID": True}],
            },
        ),
        one_hook(
            "host-pidns",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchNamespaces": [{"namespace": "Pid", "operator": "In", "values": ["host_ns"]}],
            },
        ),
        one_hook(
            "my-mntns",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchNamespaces": [
                    {
                        "namespace": "Mnt",
                        "operator": "In",
                        "values": [str(os.stat("/proc/self/ns/mnt").st_ino)],
                    }
                ],
            },
        ),
        one_hook(
            "sys-admin",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchCapabilities": [{"operator": "In", "values": ["CAP_SYS_ADMIN"]}],
            },
        ),
        one_hook(
            "no-sys-admin",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchCapabilities": [
                    {"type": "Permitted", "operator": "NotIn", "values": ["CAP_SYS_ADMIN"]}
                ],
            },
        ),
        # isNamespaceCapability: only a task outside the host's user namespace.
        one_hook(
            "userns-sys-admin",
            LSEEK,
            {
                "matchArgs": [ours(BASE)],
                "matchCapabilities": [
                    {
                        "operator": "In",
                        "values": ["CAP_SYS_ADMIN"],
                        "isNamespaceCapability": True,
                    }
                ],
            },
        ),
    )
    seek_times(BASE, 3)  # this process: host pid namespace, root, CAP_SYS_ADMIN
    child(BASE, 5)  # a child: same namespaces and capabilities
    child(BASE, 7, "unshare", "--pid", "--fork", "--mount-proc")  # pid 1 of a new namespace
    child(BASE, 11, setup="import os\nos.setgroups([])\nos.setresuid(65534, 65534, 65534)\n")
    # root of a user namespace of its own: every capability there
    child(BASE, 13, "unshare", "--user", "--map-root-user")
    assert stats(core, "pid-in")["matched"] == 3
    # unshare --fork makes the namespace's pid 1 a grandchild: still under this process.
    assert stats(core, "pid-tree")["matched"] == 3 + 5 + 7 + 11 + 13
    assert stats(core, "pid-not-tree")["matched"] == 0
    assert stats(core, "ns-pid-1")["matched"] == 7
    assert stats(core, "host-pidns")["matched"] == 3 + 5 + 11 + 13
    # --mount-proc gives the namespaced child its own mount namespace too.
    assert stats(core, "my-mntns")["matched"] == 3 + 5 + 11 + 13
    assert stats(core, "sys-admin")["matched"] == 3 + 5 + 7 + 13
    assert stats(core, "no-sys-admin")["matched"] == 11
    assert stats(core, "userns-sys-admin")["matched"] == 13


NET_DEV_QUEUE = {
    "subsystem": "net",
    "event": "net_dev_queue",
    "args": [{"field": "skbaddr", "type": "skb", "label": "packet"}],
}
SOCK_STATE = {
    "subsystem": "sock",
    "event": "inet_sock_set_state",
    "args": [{"field": "skaddr", "type": "sock", "label": "sk"}],
}


def on(label: str, operator: str, *values: object) -> dict[str, Any]:
    return {"label": label, "operator": operator, "values": [str(v) for v in values]}


def test_packets_and_sockets_by_protocol_family_and_state(core) -> None:
    udp_port, tcp_port = free_port(), free_port()
    apply(
        core,
        one_hook(
            "udp-out",
            NET_DEV_QUEUE,
            {
                "matchArgs": [
                    on("packet", "DPort", udp_port),
                    on("packet", "Protocol", "IPPROTO_UDP"),
                    on("packet", "Family", "AF_INET"),
                    on("packet", "DAddr", "127.0.0.1"),
                ]
            },
        ),
        one_hook(
            "tcp-not-udp",
            NET_DEV_QUEUE,
            {
                "matchArgs": [
                    on("packet", "DPort", udp_port),
                    on("packet", "Protocol", "IPPROTO_TCP"),
                ]
            },
        ),
        one_hook(
            "not-tcp",
            NET_DEV_QUEUE,
            {
                "matchArgs": [
                    on("packet", "DPort", udp_port),
                    on("packet", "NotProtocol", "IPPROTO_TCP"),
                    on("packet", "NotFamily", "AF_INET6", "AF_UNIX"),
                ]
            },
        ),
        one_hook(
            "not-inet",
            NET_DEV_QUEUE,
            {"matchArgs": [on("packet", "DPort", udp_port), on("packet", "NotFamily", "AF_INET")]},
        ),
        # A client socket leaves SYN_SENT once per connection; the tracepoint sees the state
        # it leaves.
        one_hook(
            "connected",
            SOCK_STATE,
            {
                "matchArgs": [
                    on("sk", "DPort", tcp_port),
                    on("sk", "State", "TCP_SYN_SENT"),
                    on("sk", "Protocol", "IPPROTO_TCP"),
                    on("sk", "Family", "AF_INET"),
                ]
            },
        ),
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", udp_port))
    with sender, receiver:
        for _ in range(6):
            sender.sendto(b"x" * 32, ("127.0.0.1", udp_port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", tcp_port))
        server.listen(8)
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", tcp_port)):
                accepted, _ = server.accept()
                accepted.close()
    assert stats(core, "udp-out")["matched"] == 6
    assert stats(core, "tcp-not-udp")["matched"] == 0
    assert stats(core, "not-tcp")["matched"] == 6  # NotProtocol, NotFamily
    assert stats(core, "not-inet")["matched"] == 0
    assert stats(core, "connected")["matched"] == 4


def test_a_path_longer_than_a_string_keeps_its_last_components(core, tree: Path) -> None:
    deep = tree
    for n in range(12):  # 12 components of 24 bytes: past the 247 bytes a string holds
        deep = deep / f"{n:02d}{'d' * 22}"
    deep.mkdir(parents=True)
    apply(
        core,
        one_hook("fd-whole", WRITE, {"matchArgs": [path_is("Prefix", f"{tree}/")]}),
        one_hook("fd-tail", WRITE, {"matchArgs": [path_is("Postfix", f"/11{'d' * 22}/leaf.log")]}),
        one_hook(
            "fd-cut",
            WRITE,
            # 03/.../11/leaf.log is 233 bytes; 02/ more would pass 247: kept without its '/'
            {"matchArgs": [path_is("Prefix", "03ddd"), path_is("Postfix", "/leaf.log")]},
        ),
    )
    write_times(deep / "leaf.log", 3)
    assert stats(core, "fd-whole")["matched"] == 0  # the leading components are cut
    assert stats(core, "fd-tail")["matched"] == 3
    assert stats(core, "fd-cut")["matched"] == 3


def test_inmap_over_a_syscalls_list_counts_those_syscalls(core) -> None:
    # Tetragon's documented form: raw_syscalls:sys_enter's id declared at its tracefs
    # index (4, as syscall64), matched by position (matchArgs index 0) with InMap over
    # list:dups, a list of type syscalls; the numbers are this machine's architecture's.
    import ctypes
    import platform

    from agenthelpers import rule_yaml, scrape, series
    from weir_api.syscalls import TABLES

    spec = {
        "lists": [{"name": "dups", "type": "syscalls", "values": ["sys_dup", "sys_dup2", "dup3"]}],
        "tracepoints": [
            {
                "subsystem": "raw_syscalls",
                "event": "sys_enter",
                "args": [{"index": 4, "type": "syscall64", "label": "id"}],
                "selectors": [
                    {
                        "matchPIDs": [mine()],
                        "matchArgs": [{"index": 0, "operator": "InMap", "values": ["list:dups"]}],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ],
    }
    rules = rule_yaml("dups", "dups", "t_dups", group_by="[arg:id]")
    apply(core, policy_yaml("dups", yaml.safe_dump(spec), rules=rules))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for calls, dup in ((3, lambda: libc.dup(fd)), (5, lambda: libc.dup2(fd, 900)),
                           (7, lambda: libc.dup3(fd, 901, os.O_CLOEXEC))):  # fmt: skip
            for _ in range(calls):
                copy = dup()
                assert copy >= 0, ctypes.get_errno()
                os.close(copy)
    finally:
        os.close(fd)
    numbers = TABLES[platform.machine()]
    assert series(scrape(core), "t_dups_total") == {
        (("id", str(numbers["dup"])),): 3.0,
        (("id", str(numbers["dup2"])),): 5.0,
        (("id", str(numbers["dup3"])),): 7.0,
    }


# openat's path, and a selector on opens of one file: what the selectors on the calling
# process below are added to.
OPENAT_PATH = {
    "subsystem": "syscalls",
    "event": "sys_enter_openat",
    "args": [{"field": "filename", "type": "filename", "label": "path"}],
}


def opens_of(path: Path) -> dict[str, Any]:
    return {"matchArgs": [{"label": "path", "operator": "Equal", "values": [str(path)]}]}


CHANGES = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path = sys.argv[1]

def opens(times):
    for _ in range(times):
        open(path).close()

opens(2)
assert libc.unshare(0x04000000) == 0, ctypes.get_errno()  # CLONE_NEWUTS
opens(3)

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

header, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
data[0].effective &= ~(1 << 13)  # CAP_NET_RAW leaves the effective set
assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
opens(4)
child = os.fork()
if child == 0:  # no exec: what its parent started with is what it started with
    opens(5)
    os._exit(0)
os.waitpid(child, 0)
"""


def test_changes_since_the_process_started(core, tree: Path) -> None:
    # matchNamespaceChanges and matchCapabilityChanges compare the calling process with
    # what it had when it started: at its exec (the exec tracker records it), or, for a
    # child forked without exec, at its parent's.
    from conftest import require

    require(os.geteuid() == 0, "unshare and capset need root")
    target = tree / "changes"
    target.write_text("x")
    hook, mine_path = OPENAT_PATH, opens_of(target)
    uts = {"operator": "In", "values": ["Uts"]}
    kept = {**uts, "operator": "NotIn"}
    raw = {"type": "Effective", "operator": "In", "values": ["CAP_NET_RAW"]}
    apply(
        core,
        one_hook("uts-changed", hook, {**mine_path, "matchNamespaceChanges": [uts]}),
        one_hook("uts-kept", hook, {**mine_path, "matchNamespaceChanges": [kept]}),
        one_hook("caps-changed", hook, {**mine_path, "matchCapabilityChanges": [raw]}),
    )
    subprocess.run([sys.executable, "-c", CHANGES, str(target)], check=True, timeout=60)
    assert stats(core, "uts-changed")["matched"] == 3 + 4 + 5
    assert stats(core, "uts-kept")["matched"] == 2
    assert stats(core, "caps-changed")["matched"] == 4 + 5


def test_a_raw_tracepoint_reads_the_kernels_own_arguments(core, tree: Path) -> None:
    # Tetragon's rawtracepoints example: sched_process_exec's third argument is the
    # linux_binprm, read as the path of the file being executed; counted exactly for a
    # binary only this test runs.
    binary = tree / "true"
    shutil.copy("/bin/true", binary)
    spec = {
        "rawtracepoints": [
            {
                "subsystem": "sched",
                "event": "sched_process_exec",
                "args": [{"index": 2, "type": "linux_binprm", "label": "exe"}],
                "selectors": [
                    {
                        "matchArgs": [
                            {"label": "exe", "operator": "Equal", "values": [str(binary)]}
                        ],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ]
    }
    # The same as a tracepoint with Tetragon's raw: true.
    flagged = {"tracepoints": [{**spec["rawtracepoints"][0], "raw": True}]}
    apply(
        core,
        policy_yaml("rawtp", yaml.safe_dump(spec)),
        policy_yaml("raw-flag", yaml.safe_dump(flagged)),
    )
    for _ in range(6):
        subprocess.run([str(binary)], check=True)
    subprocess.run(["/bin/true"], check=True)  # another file: not counted
    assert stats(core, "rawtp")["matched"] == 6
    assert stats(core, "raw-flag")["matched"] == 6


def test_resolve_follows_a_struct_argument_through_btf(core, tree: Path) -> None:
    # Tetragon's resolve: fields of sched_process_exec's linux_binprm, found in the
    # kernel's BTF and read as declared: its filename (a char *), its argc (an int) and
    # its file (a struct file *, read as the path).
    binary = tree / "true"
    shutil.copy("/bin/true", binary)
    bprm = [
        {"index": 2, "type": "string", "resolve": "filename", "label": "name"},
        {"index": 2, "type": "int", "resolve": "argc", "label": "argc"},
        {"index": 2, "type": "file", "resolve": "file", "label": "exe"},
        # as if the prototype said void *: btfType names the struct
        {"index": 2, "type": "int", "resolve": "envc", "btfType": "linux_binprm", "label": "envc"},
    ]
    selectors = [
        {
            "matchArgs": [
                {"label": "name", "operator": "Equal", "values": [str(binary)]},
                {"label": "argc", "operator": "Equal", "values": ["4"]},
                {"label": "exe", "operator": "Equal", "values": [str(binary)]},
                {"label": "envc", "operator": "Equal", "values": ["1"]},
            ],
            "matchActions": [{"action": "NoPost"}],
        }
    ]
    spec = {
        "rawtracepoints": [
            {
                "subsystem": "sched",
                "event": "sched_process_exec",
                "args": bprm,
                "selectors": selectors,
            }
        ]
    }
    apply(core, policy_yaml("resolved", yaml.safe_dump(spec)))
    for _ in range(5):
        subprocess.run([str(binary), "a", "b", "c"], check=True, env={"A": "1"})  # argc 4
    subprocess.run([str(binary), "a"], check=True)  # argc 2: not counted
    assert stats(core, "resolved")["matched"] == 5


def test_follow_children_matches_what_a_matching_binary_started(core, tree: Path) -> None:
    # matchBinaries followChildren: the cats a copy of sh starts match In [that sh]; the
    # same selector without followChildren matches none of them (their executable is cat).
    shell = tree / "sh"
    shutil.copy("/bin/sh", shell)
    target = tree / "read-me"
    target.write_text("x")
    hook, mine_path = OPENAT_PATH, opens_of(target)
    started_by = {"operator": "In", "values": [str(shell)]}
    apply(
        core,
        one_hook(
            "children",
            hook,
            {**mine_path, "matchBinaries": [{**started_by, "followChildren": True}]},
        ),
        one_hook("itself", hook, {**mine_path, "matchBinaries": [started_by]}),
    )
    script = f"cat {target}; cat {target}; cat {target}; true"
    subprocess.run([str(shell), "-c", script], check=True, capture_output=True)
    assert stats(core, "children")["matched"] == 3
    assert stats(core, "itself").get("matched", 0) == 0


SEVEN_GETPIDS = r"""
void _start(void) {
    for (int i = 0; i < 7; i++) {
        long ret;
        __asm__ volatile("syscall" : "=a"(ret) : "a"(39) : "rcx", "r11", "memory");
    }
    __asm__ volatile("syscall" : : "a"(60), "D"(0) : "rcx", "r11", "memory");
}
"""


def test_a_kprobe_on_every_syscall_is_one_raw_syscalls_program(core, tree: Path) -> None:
    # Tetragon's generated_syscalls list: every syscall a binary makes. weir watches them
    # through raw_syscalls:sys_enter; a static program that makes exactly 7 getpids and an
    # exit is counted 8 times.
    import platform

    from conftest import require

    require(platform.machine() == "x86_64", "the test program is x86_64 assembly")
    require(shutil.which("gcc") is not None, "gcc is needed to build the test program")
    (tree / "seven.c").write_text(SEVEN_GETPIDS)
    binary = tree / "seven"
    subprocess.run(
        ["gcc", "-O1", "-static", "-nostdlib", "-o", str(binary), str(tree / "seven.c")],
        check=True,
    )
    spec = {
        "lists": [{"name": "all-syscalls", "type": "generated_syscalls"}],
        "kprobes": [
            {
                "call": "list:all-syscalls",
                "selectors": [
                    {
                        "matchBinaries": [{"operator": "In", "values": [str(binary)]}],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ],
    }
    apply(core, policy_yaml("every-syscall", yaml.safe_dump(spec)))
    assert [s.hook for s in core.snapshot() if s.policy == "every-syscall"] == [
        "tracepoint:raw_syscalls:sys_enter"
    ]
    for _ in range(2):
        subprocess.run([str(binary)], check=True)
    assert stats(core, "every-syscall")["matched"] == 2 * 8
