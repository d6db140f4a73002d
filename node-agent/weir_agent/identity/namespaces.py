"""The node's own namespaces, for matchNamespaces' ``host_ns``.

First choice: the inode numbers of pid 1's namespaces, as /proc/1/ns shows them (the
agent runs with the host's pid namespace, so its pid 1 is the node's init). When pid 1
cannot be inspected (a non-dumpable init refuses even root), the initial namespaces'
fixed inode numbers (uapi linux/nsfs.h, enum init_ns_ino): the kernel gives them to
its initial namespaces of every kind since 6.18, and to all but mnt and net before.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from weir_agent.spec import abi

INIT_INODES = {
    "ipc": 0xEFFFFFFF,
    "uts": 0xEFFFFFFE,
    "user": 0xEFFFFFFD,
    "pid": 0xEFFFFFFC,
    "pid_for_children": 0xEFFFFFFC,
    "cgroup": 0xEFFFFFFB,
    "time": 0xEFFFFFFA,
    "time_for_children": 0xEFFFFFFA,
    "net": 0xEFFFFFF9,  # fixed since 6.18
    "mnt": 0xEFFFFFF8,  # fixed since 6.18
}
FIXED_SINCE = {"net": (6, 18), "mnt": (6, 18)}


def kernel_version(release: str) -> tuple[int, int]:
    numbers = release.split("-", 1)[0].split(".")
    try:
        return int(numbers[0]), int(numbers[1])
    except (IndexError, ValueError):
        return (0, 0)


def host_namespaces(proc: Path = Path("/proc"), release: str | None = None) -> dict[str, int | str]:
    """/proc/1/ns name -> inode number, or why it is unknown."""
    version = kernel_version(release if release is not None else platform.release())
    found: dict[str, int | str] = {}
    for name in abi.NAMESPACE_FILES.values():
        path = proc / "1" / "ns" / name
        try:
            found[name] = os.stat(path).st_ino
        except OSError as error:
            if version >= FIXED_SINCE.get(name, (0, 0)):
                found[name] = INIT_INODES[name]
            else:
                found[name] = (
                    f"cannot read {path} ({error.strerror}), and before Linux 6.18 the "
                    f"initial {name} namespace has no fixed number; run the agent with the "
                    "host's /proc (the chart sets hostPID)"
                )
    return found
