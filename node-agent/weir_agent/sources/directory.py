"""Standalone: policies from a directory of YAML files.

The agent rereads the directory when inotify says it changed (``follow``: a file written
and closed, renamed in or out, created, deleted or re-moded; a ConfigMap volume swaps its
``..data`` symlink by a rename), and in any case every ``--interval``, which is all there is
where inotify is unavailable. Whether anything changed is the (name, mtime, size) of each
file (``fingerprint``). A file that fails to parse affects only its own documents. Files
carry no generation, so ``Generations`` numbers each policy's versions as the API server
would: 1 at first sight, one more each time its spec or the spec of one of its
AggregationRules changes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import select
import threading
from collections.abc import Sequence
from pathlib import Path

from weir_api import documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
from weir_api.problems import Problem

PATTERNS = ("*.yaml", "*.yml")
log = logging.getLogger("weir.agent")


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for pattern in PATTERNS:
        for path in directory.glob(pattern):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def read_directory(directory: Path) -> list[documents.Parsed]:
    parsed: list[documents.Parsed] = []
    for pattern in PATTERNS:
        for path in sorted(directory.glob(pattern)):
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as error:
                problem = Problem(path="", message=f"cannot read: {error}")
                parsed.append(
                    documents.Parsed(
                        source=str(path), kind="", name="", obj=None, problems=(problem,)
                    )
                )
                continue
            parsed.extend(documents.parse_text(text, source=str(path)))
    return parsed


class Generations:
    """Per policy name: the digest of its last version and its generation."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, int]] = {}

    def stamp(self, parsed: Sequence[documents.Parsed]) -> list[documents.Parsed]:
        """``parsed`` with each valid policy's metadata.generation set from its history."""
        rules: dict[str, list[object]] = {}
        for item in parsed:
            if item.ok and isinstance(item.obj, AggregationRule):
                spec = item.obj.spec.model_dump(mode="json", by_alias=True)
                rules.setdefault(item.obj.spec.policy_ref.name, []).append([item.name, spec])
        out = []
        for item in parsed:
            if item.ok and isinstance(item.obj, TracingPolicy):
                policy = item.obj
                spec = policy.spec.model_dump(mode="json", by_alias=True)
                text = json.dumps([spec, sorted(rules.get(item.name, []), key=str)], sort_keys=True)
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                last_digest, last = self.seen.get(item.name, (digest, 0))
                generation = last + 1 if last == 0 or last_digest != digest else last
                self.seen[item.name] = (digest, generation)
                metadata = policy.metadata.model_copy(update={"generation": generation})
                item = dataclasses.replace(
                    item, obj=policy.model_copy(update={"metadata": metadata})
                )
            out.append(item)
        return out


_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
# IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE,
# IN_DELETE_SELF, IN_MOVE_SELF: not IN_MODIFY, so a file is read once it is closed.
_MASK = 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
_libc = ctypes.CDLL(None, use_errno=True)


def follow(directory: Path, *, wake: threading.Event, stop: threading.Event) -> None:
    """Set ``wake`` on every change to ``directory`` until ``stop``; returns at once (with
    a log line) when inotify cannot watch it."""
    fd = int(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        log.warning("inotify unavailable (%s): rereading %s on a timer", _errno(), directory)
        return
    try:
        if _libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
            log.warning("cannot watch %s (%s): rereading it on a timer", directory, _errno())
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not stop.is_set():
            if poller.poll(500):  # wakes to look at ``stop`` twice a second
                _drain(fd)
                wake.set()
    finally:
        os.close(fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass


def _errno() -> str:
    return os.strerror(ctypes.get_errno())
