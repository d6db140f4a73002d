"""Policy sources. Standalone: a directory of YAML files, polled for changes.

Polling the (name, mtime, size) of each file is simple, works on every
filesystem (including ConfigMap volume symlink swaps) and costs nothing at a
one-second interval. A file that fails to parse affects only its own
documents.
"""

from __future__ import annotations

from pathlib import Path

from weir_api import documents
from weir_api.problems import Problem

PATTERNS = ("*.yaml", "*.yml")


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
