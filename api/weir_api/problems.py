"""Problems with user input, each tied to the field that causes it.

Every check in weir (schema, semantics, compilation) reports a ``Problem``: the
field path as a user would type it (``spec.kprobes[0].selectors[1].matchArgs[0]
.values[2]``), what is wrong, and what to do about it. A list of problems is
data: the CLI prints it, the operator puts it into ``status.conditions``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

PathPart = str | int


def format_path(parts: Sequence[PathPart]) -> str:
    """``("spec", "kprobes", 0, "call")`` → ``spec.kprobes[0].call``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with one field."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def at(parts: Sequence[PathPart], message: str) -> Problem:
    return Problem(path=format_path(parts), message=message)


def from_validation_error(
    error: ValidationError, *, prefix: Sequence[PathPart] = ()
) -> list[Problem]:
    """Translate pydantic's errors into problems with user-facing field paths."""
    problems = []
    for item in error.errors(include_url=False):
        loc = [part for part in item["loc"] if not _is_union_tag(part)]
        message = _humane(item)
        problems.append(at([*prefix, *loc], message))
    return problems


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the validator's name for some unions/functions; they are not fields.
    return isinstance(part, str) and (part.startswith("function-") or part in {"list[str]"})


def _humane(item: object) -> str:
    assert isinstance(item, dict)
    kind = item.get("type", "")
    message = str(item.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    ctx = item.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against `kubectl explain` or docs/api.md"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        return f'must be a string, got {item.get("input")!r}; quote it (e.g. "{item.get("input")}")'
    if kind == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}, got {item.get('input')!r}"
    return message


def render(problems: Iterable[Problem]) -> str:
    return "\n".join(f"  - {p}" for p in problems)
