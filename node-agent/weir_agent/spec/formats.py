"""Tracepoint layouts from tracefs: the stable ABI tracepoint programs read.

``parse_format`` is pure: it turns the text of
/sys/kernel/tracing/events/SUBSYSTEM/EVENT/format into fields with offset,
size and signedness. ``read_format`` is the one line of I/O.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)"
)


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a tracepoint record."""

    name: str
    type: str  # the C declaration without the name, e.g. "const char *", "__data_loc char[]"
    offset: int
    size: int
    signed: bool
    # The field's position in the whole format, common_* fields included: what a policy's
    # tracepoint `index` counts (Tetragon's numbering).
    position: int = -1

    @property
    def is_pointer(self) -> bool:
        return self.type.rstrip().endswith("*") and self.size == 8

    @property
    def is_data_loc(self) -> bool:
        return self.type.startswith("__data_loc")

    @property
    def inline_array(self) -> int | None:
        """N for a ``char name[N]`` field."""
        match = re.match(r"^(unsigned )?char\s*\[(\d+)\]$", self.type.strip())
        return int(match.group(2)) if match else None


def parse_format(text: str) -> list[Field]:
    """The event's own fields (common_* excluded), in order, each with its position in the
    whole format."""
    fields = []
    for position, match in enumerate(_FIELD.finditer(text)):
        declaration = match.group("decl").strip()
        array = re.search(r"\s*\[(\d*)\]$", declaration)
        base = declaration[: array.start()] if array else declaration
        name_match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)$", base)
        if not name_match:
            continue
        name = name_match.group(1)
        type_text = base[: name_match.start()].strip()
        if array:
            type_text += f"[{array.group(1)}]"
        if name.startswith("common_"):
            continue
        fields.append(
            Field(
                name=name,
                type=type_text,
                offset=int(match.group("offset")),
                size=int(match.group("size")),
                signed=match.group("signed") == "1",
                position=position,
            )
        )
    return fields


def read_format(subsystem: str, event: str, *, tracefs: Path = TRACEFS) -> list[Field] | None:
    """The fields of a tracepoint, or None when this kernel has no such tracepoint."""
    path = tracefs / "events" / subsystem / event / "format"
    try:
        return parse_format(path.read_text())
    except FileNotFoundError:
        return None
