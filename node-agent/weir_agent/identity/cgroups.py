"""cgroup id → cgroup path → container id and pod uid.

``bpf_get_current_cgroup_id()`` returns the id of the task's cgroup v2
directory, which is that directory's inode number. The index walks the cgroup2
mount once and again only when it meets an id it does not know (at most once
per ``rescan_seconds``). The parsing of paths into container ids and pod uids
is pure and covers the runtimes' layouts (containerd, CRI-O, Docker, systemd
and cgroupfs drivers).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_CONTAINER = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")
MAX_REMEMBERED = 100_000
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def container_id(path: str) -> str | None:
    """The 64-hex container id in a cgroup path, if any."""
    matches = _CONTAINER.findall(path)
    return matches[-1] if matches else None


def pod_uid(path: str) -> str | None:
    """The pod uid in a kubepods cgroup path (systemd escapes '-' as '_')."""
    match = _POD.search(path)
    return match.group(1).replace("_", "-") if match else None


def cgroup2_mount(mounts: str) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, from /proc/mounts text."""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


class CgroupIndex:
    """Maps cgroup ids to paths relative to the cgroup2 root, including cgroups that are
    gone (until ``forget``): a container's counts outlive it.

    ``births``, when set, answers for cgroups made since the last scan (the exec tracker
    records every cgroup v2 directory as it is made), so a container that lived for less
    than a scan still has its path."""

    def __init__(self, *, root: Path | None = None, rescan_seconds: float = 1.0) -> None:
        if root is None:
            root = cgroup2_mount(Path("/proc/mounts").read_text()) or Path("/sys/fs/cgroup")
        self.root = root
        self.rescan_seconds = rescan_seconds
        self.births: Callable[[int], str | None] | None = None
        self._paths: dict[int, str] = {}
        self._scanned_at = 0.0
        self._last: set[int] = set()
        self._lock = threading.Lock()

    def path(self, cgroup_id: int) -> str | None:
        with self._lock:
            return self._path(cgroup_id)

    def _path(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._paths and self.births is not None:
            born = self.births(cgroup_id)
            if born is not None:
                self._paths[cgroup_id] = born
        if cgroup_id not in self._paths and (
            time.monotonic() - self._scanned_at >= self.rescan_seconds
        ):
            self._scan()
        return self._paths.get(cgroup_id)

    def gone(self, cgroup_ids: Iterable[int]) -> set[int]:
        """Those of these cgroups whose directory no longer exists (ids are never reused:
        a directory made again under the same path has another id)."""
        out = set()
        walked: set[int] | None = None  # one fresh walk serves every truncated path
        with self._lock:
            for cgroup_id in cgroup_ids:
                path = self._path(cgroup_id)
                if path is None:
                    out.add(cgroup_id)
                    continue
                if path.startswith("..."):  # too long to look up by name
                    if walked is None:
                        self._scan()
                        walked = set(self._last)
                    if cgroup_id not in walked:
                        out.add(cgroup_id)
                    continue
                try:
                    alive = os.stat(self.root / path.lstrip("/")).st_ino == cgroup_id
                except OSError:
                    alive = False
                if not alive:
                    out.add(cgroup_id)
        return out

    def forget(self, cgroup_ids: Iterable[int]) -> None:
        with self._lock:
            for cgroup_id in cgroup_ids:
                self._paths.pop(cgroup_id, None)

    def ids_of(self, container_ids: set[str]) -> set[int]:
        """The cgroup ids whose paths name one of these containers (rescanning once if one
        is not found: it may have just started)."""

        def find() -> tuple[set[int], set[str]]:
            ids, seen = set(), set()
            for cgroup_id, path in self._paths.items():
                found = container_id(path)
                if found in container_ids:
                    ids.add(cgroup_id)
                    seen.add(found)
            return ids, seen

        with self._lock:
            ids, seen = find()
            if seen != container_ids and time.monotonic() - self._scanned_at >= self.rescan_seconds:
                self._scan()
                ids, seen = find()
            return ids

    def _scan(self) -> None:
        self._scanned_at = time.monotonic()
        paths: dict[int, str] = {}
        for directory, _, _ in os.walk(self.root):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue
            relative = "/" + os.path.relpath(directory, self.root)
            paths[inode] = "/" if relative == "/." else relative
        self._last = set(paths)
        # Keep ids seen before: a container that exited still owns its counts until they
        # are scraped. Bounded: the oldest entries go first.
        self._paths.update(paths)
        while len(self._paths) > MAX_REMEMBERED:
            del self._paths[next(iter(self._paths))]
