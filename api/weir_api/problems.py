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

from weir_api import tetragon

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
    loc = list(item.get("loc") or ())
    if kind == "extra_forbidden":
        return tetragon.unknown_field(loc) or (
            "unknown field; check the spelling against `kubectl explain` or docs/api.md"
        )
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        return f'must be a string, got {item.get("input")!r}; quote it (e.g. "{item.get("input")}")'
    if kind == "literal_error" and "expected" in ctx:
        return tetragon.unknown_value(loc, item.get("input")) or (
            f"must be one of {ctx['expected']}, got {item.get('input')!r}"
        )
    given = item.get("input")
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str(ctx.get("pattern")), f"match {ctx.get('pattern')}")
        return f"{given!r} is not valid here: write {words}"
    if kind == "string_too_long":
        length = len(given) if isinstance(given, str) else "too many"
        return f"is {length} characters; at most {ctx.get('max_length')}"
    if kind == "string_too_short":
        return "is empty; give a value or remove the field"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} items; at most {ctx.get('max_length')}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be a whole number, got {given!r}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"must be true or false, got {given!r}"
    if kind in {"list_type"}:
        return f"must be a list, got {given!r}"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"must be a mapping (key: value), got {given!r}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        bound = {
            "greater_than_equal": f"at least {ctx.get('ge')}",
            "less_than_equal": f"at most {ctx.get('le')}",
            "greater_than": f"more than {ctx.get('gt')}",
            "less_than": f"less than {ctx.get('lt')}",
        }[kind]
        return f"is {given!r}; must be {bound}"
    return message


# What each schema pattern asks for, in words (a test checks every pattern has them).
PATTERN_WORDS = {
    r"^[a-z_][a-z0-9_]*$": "lower-case letters, digits and _, not starting with a digit "
    "(e.g. bytes_sent)",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "a field name from the event's tracefs format (letters, "
    "digits and _, e.g. filename)",
    r"^[a-z0-9_]+$": "lower-case letters, digits and _, as tracefs names it (e.g. "
    "sys_enter_openat)",
    r"^/": "an absolute path, starting with / (e.g. /usr/bin/curl)",
    r"^[0-9]+(ms|s|m|h)?$": "a duration: a whole number and ms, s, m or h (e.g. 500ms, 10s, "
    "1m; a bare number is seconds)",
    r"^[A-Za-z_][A-Za-z0-9_.]*$": "a kernel function name (letters, digits, _ and ., e.g. "
    "tcp_sendmsg)",
    r"^([A-Za-z_][A-Za-z0-9_.]*|list:[a-z0-9]([-a-z0-9_]*[a-z0-9])?)$": "a kernel function "
    "name (e.g. tcp_sendmsg), or list:NAME for the functions of spec.lists NAME",
    r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$": "lower-case letters, digits, - and _ (e.g. dups)",
    r"^[A-Za-z_.$][A-Za-z0-9_.$@]*$": "a symbol name as the binary's symbol table has it "
    "(e.g. readline, or a mangled C++ name)",
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": "a Kubernetes object name: lower-case letters, "
    "digits, - and . (e.g. file-opens)",
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*$": "a Prometheus metric name: letters, digits, _ and :, not "
    "starting with a digit (e.g. weir_file_opens)",
    r"^(namespace|pod|container|workload|image|node|binary|(arg|addressClass):[a-z_][a-z0-9_]*)$": (
        "one of namespace, pod, container, workload, image, node, binary, arg:LABEL or "
        "addressClass:LABEL"
    ),
    r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$": "a CamelCase reason (e.g. VerifierRejected)",
    r"^(thread|process|arg:[a-z_][a-z0-9_]*)$": "thread, process or arg:LABEL (an integer "
    "argument, e.g. arg:next_pid)",
}


def render(problems: Iterable[Problem]) -> str:
    return "\n".join(f"  - {p}" for p in problems)
