"""Policy sources. Standalone: a directory of YAML files, polled for changes.

Polling the (name, mtime, size) of each file is simple, works on every
filesystem (including ConfigMap volume symlink swaps) and costs nothing at a
one-second interval. A file that fails to parse affects only its own
documents. Files carry no generation, so ``Generations`` numbers each
policy's versions as the API server would: 1 at first sight, one more each
time its spec or the spec of one of its AggregationRules changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from weir_api import documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
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
