"""Arguments: how a hook's declared args are read (a tracepoint's field, a register, a
raw tracepoint's slot, a struct member through BTF) and what kind of value they give.

``plan`` turns one declared arg into its ``ARGn_*`` flags and a ``Kind``, or into the
problem that stops it, with the field path. Pure.
"""

from __future__ import annotations

import dataclasses

from weir_agent.spec import abi, btf
from weir_agent.spec.abi import Deref, Kind, Source
from weir_agent.spec.formats import Field
from weir_api import values
from weir_api.policies import (
    Arg,
    KProbe,
    RawTracepoint,
    Tracepoint,
    UProbe,
)
from weir_api.problems import PathPart, Problem, at

STRING_KINDS = frozenset(
    {Kind.STR_PTR, Kind.STR_DATALOC, Kind.STR_INLINE, Kind.CHAR_BUF, Kind.FILE, Kind.PATH, Kind.FD}
)


ADDRESS_KINDS = frozenset({Kind.SOCK, Kind.SOCKADDR, Kind.SKB})


FILE_KINDS = {"file": Kind.FILE, "path": Kind.PATH}


LAYOUT_GROUPS = {
    Kind.SOCK: "sock",
    Kind.SKB: "skb",
    Kind.FILE: "path",
    Kind.PATH: "path",
    Kind.FD: "path",
}


LAYOUT_USERS = {
    "sock": "a sock argument",
    "skb": "an skb argument",
    "path": "a file, path or fd argument",
    "task": "matchPIDs, matchNamespaces or matchCapabilities",
    "cpu": "a cpu_time value",
    "binprm": "a linux_binprm argument",
    "module": "a module argument",
    "load_info": "a load_info argument",
    "bpf_attr": "a bpf_attr argument",
    "bpf_map": "a bpf_map argument",
    "perf_event": "a perf_event argument",
    "cred": "a cred argument",
    "user_namespace": "a user_namespace argument",
}


# Struct args read as one value: the type -> its layout group, how the value is reached
# (abi.Deref), the flag holding the member's offset (from BTF), and the read's own flags
# (a string in user memory; an integer's width).
STRUCT_READS: dict[str, tuple[Kind, str, Deref, str, dict[str, int]]] = {
    "linux_binprm": (Kind.FILE, "binprm", Deref.LOAD, "BPRM_FILE", {}),
    "module": (Kind.STR_PTR, "module", Deref.ADDRESS, "MODULE_NAME", {}),
    "kernel_module": (Kind.STR_PTR, "module", Deref.ADDRESS, "MODULE_NAME", {}),
    "load_info": (Kind.STR_PTR, "load_info", Deref.LOAD, "LOAD_INFO_NAME", {}),
    "bpf_attr": (Kind.STR_PTR, "bpf_attr", Deref.ADDRESS, "BPF_ATTR_PROG_NAME", {}),
    "bpf_map": (Kind.STR_PTR, "bpf_map", Deref.ADDRESS, "BPF_MAP_NAME", {}),
    "perf_event": (Kind.STR_PTR, "perf_event", Deref.LOAD, "PERF_EVENT_KPROBE_FUNC", {"USER": 1}),
    "cred": (Kind.INT, "cred", Deref.LOAD, "CRED_ARG_EUID", {"SIZE": 4}),
    "user_namespace": (Kind.INT, "user_namespace", Deref.LOAD, "USERNS_ARG_INUM", {"SIZE": 4}),
}


@dataclasses.dataclass
class ArgFlags:
    kind: Kind
    flags: dict[str, int]


def plan(
    arg: Arg,
    slot: int,
    path: tuple[PathPart, ...],
    hook: KProbe | Tracepoint | UProbe | RawTracepoint,
    fields: list[Field] | None,
    is_return: bool,
    kernel_types: btf.Types | None = None,
) -> tuple[ArgFlags | None, list[Problem]]:
    """How ``arg`` is read at ``slot``: its ARGn_* flags and kind, or why it cannot be."""
    bits, signed = values.INTEGER_TYPES.get(arg.type, (64, False))
    if isinstance(hook, Tracepoint):
        assert fields is not None
        return _from_field(arg, path, hook, fields, bits, signed)
    return _from_registers(arg, path, hook, is_return, kernel_types, bits, signed)


def _from_field(
    arg: Arg,
    path: tuple[PathPart, ...],
    hook: Tracepoint,
    fields: list[Field],
    bits: int,
    signed: bool,
) -> tuple[ArgFlags | None, list[Problem]]:
    """A tracepoint's field, by its format."""
    field = _field(arg, fields)
    if field is None:
        known = ", ".join(f"{f.name} (index {f.position})" for f in fields)
        if arg.field:
            ref = f"field {arg.field!r}"
        elif fields and arg.index is not None and arg.index < fields[0].position:
            ref = (
                f"own field at index {arg.index}: indexes count the format's fields "
                f"from the first, and 0-{fields[0].position - 1} are the common_* header "
                "every event carries"
            )
        else:
            ref = f"field at index {arg.index}"
        return None, [
            at(path, f"{hook.subsystem}:{hook.event} has no {ref}; its fields are: {known}")
        ]
    if arg.type in STRUCT_READS or arg.type in values.CAP_SET_TYPES:
        return None, [
            at(
                path,
                f"{arg.type} is read from a kernel function's argument: use it on a "
                "kprobe (or read this field as an integer)",
            )
        ]
    user = hook.subsystem == "syscalls"
    base = {"FROM": int(Source.FIELD), "SRC": field.offset, "SIZE": field.size}
    if arg.type in values.INTEGER_TYPES:
        if field.size not in (1, 2, 4, 8) or field.is_data_loc or field.inline_array:
            return None, [
                at(path, f"field {field.name} is {field.type}, not an integer; use type string")
            ]
        # A narrower declared type reads the low bytes (syscall fields are 8 bytes wide).
        size = min(field.size, bits // 8)
        return ArgFlags(Kind.INT, {**base, "SIZE": size, "SIGNED": int(signed)}), []
    if arg.type in {"string", "filename"}:
        if field.is_data_loc:
            return ArgFlags(Kind.STR_DATALOC, base), []
        if field.inline_array is not None:
            size = min(field.inline_array, abi.MAX_STR)
            return ArgFlags(Kind.STR_INLINE, {**base, "SIZE": size}), []
        if field.is_pointer:
            is_user = int(user or arg.type == "filename")
            return ArgFlags(Kind.STR_PTR, {**base, "USER": is_user}), []
        return None, [
            at(
                path,
                f"field {field.name} is {field.type}; a string needs a char "
                "pointer, char[N] or __data_loc char[] field",
            )
        ]
    if arg.type == "fd":
        if field.size not in (1, 2, 4, 8) or field.is_data_loc or field.inline_array:
            return None, [
                at(path, f"field {field.name} is {field.type}; fd needs an integer field")
            ]
        return ArgFlags(Kind.FD, {**base, "SIZE": min(field.size, 4)}), []
    if not field.is_pointer:
        return None, [
            at(path, f"field {field.name} is {field.type}; {arg.type} needs a pointer field")
        ]
    kind = {"sock": Kind.SOCK, "skb": Kind.SKB, **FILE_KINDS}.get(arg.type, Kind.SOCKADDR)
    return ArgFlags(kind, {**base, "USER": int(user and kind == Kind.SOCKADDR)}), []


def _from_registers(
    arg: Arg,
    path: tuple[PathPart, ...],
    hook: KProbe | UProbe | RawTracepoint,
    is_return: bool,
    kernel_types: btf.Types | None,
    bits: int,
    signed: bool,
) -> tuple[ArgFlags | None, list[Problem]]:
    """A kprobe's or uprobe's register (the return value's, for a return arg), or a raw
    tracepoint's argument."""
    user = isinstance(hook, UProbe) or (isinstance(hook, KProbe) and hook.syscall)
    source = Source.RET if is_return else Source.REG
    if isinstance(hook, RawTracepoint):
        source = Source.RAW  # the tracepoint's own arguments: ctx is an array of u64
    base = {"FROM": int(source), "SRC": arg.index or 0, "SIZE": 8}
    if arg.resolve is None and arg.type in values.IMPLICIT_RESOLVE:
        implicit, as_type = values.IMPLICIT_RESOLVE[arg.type]
        arg = arg.model_copy(update={"resolve": implicit, "type": as_type})
    if arg.resolve is not None:
        return _resolved(arg, path, hook, base, kernel_types)
    if isinstance(hook, UProbe) and (arg.type in STRUCT_READS or arg.type in values.CAP_SET_TYPES):
        return None, [at(path, f"{arg.type} is a kernel struct: use it on a kprobe")]
    if arg.type in values.CAP_SET_TYPES:  # the set the argument points to
        return ArgFlags(Kind.INT, {**base, "DEREF": int(Deref.LOAD)}), []
    if arg.type in STRUCT_READS:  # ARGn_OFF comes from the kernel's layout (generate)
        kind, _, deref, _, read = STRUCT_READS[arg.type]
        return ArgFlags(kind, {**base, "DEREF": int(deref), **read}), []
    if arg.type in values.INTEGER_TYPES:
        return ArgFlags(Kind.INT, {**base, "SIZE": bits // 8, "SIGNED": int(signed)}), []
    if arg.type == "string":
        return ArgFlags(Kind.STR_PTR, {**base, "USER": int(user)}), []
    if arg.type == "filename":
        return ArgFlags(Kind.STR_PTR, {**base, "USER": 1}), []
    if arg.type == "char_buf":
        return ArgFlags(Kind.CHAR_BUF, {**base, "USER": 1}), []
    if arg.type == "sock":
        return ArgFlags(Kind.SOCK, base), []
    if arg.type == "skb":
        return ArgFlags(Kind.SKB, base), []
    if arg.type in FILE_KINDS:
        return ArgFlags(FILE_KINDS[arg.type], base), []
    if arg.type == "fd":
        return ArgFlags(Kind.FD, {**base, "SIZE": 4}), []
    return ArgFlags(Kind.SOCKADDR, {**base, "USER": int(user)}), []


# What a resolved field is read as, by the arg's type (the field's own kind decides
# whether it is loaded or taken by address).
_RESOLVED_KINDS = {"string": Kind.STR_PTR, "file": Kind.FILE, "path": Kind.PATH,
                   "sock": Kind.SOCK, "skb": Kind.SKB}  # fmt: skip


def _resolved(
    arg: Arg,
    path: tuple[PathPart, ...],
    hook: KProbe | Tracepoint | UProbe | RawTracepoint,
    base: dict[str, int],
    kernel_types: btf.Types | None,
) -> tuple[ArgFlags | None, list[Problem]]:
    """An arg's resolve path: steps from the struct pointer the function (or raw
    tracepoint) was passed to the field, through the kernel's BTF; the field is read as
    the arg's type says."""
    where = (*path, "resolve")
    if not isinstance(hook, KProbe | RawTracepoint) or (isinstance(hook, KProbe) and hook.syscall):
        return None, [
            at(
                where,
                "resolve follows a kernel function's struct argument: use it on a kprobe "
                "(not a syscall), an lsmhook or a raw tracepoint",
            )
        ]
    integer = arg.type in values.INTEGER_TYPES and arg.type not in values.CAP_SET_TYPES
    kind = Kind.INT if integer else _RESOLVED_KINDS.get(arg.type)
    if kind is None:
        return None, [
            at(
                (*path, "type"),
                "a resolved field is read as an integer, a string, or a file, path, sock or "
                f"skb; not {arg.type}",
            )
        ]
    bits, signed = values.INTEGER_TYPES.get(arg.type, (64, False))
    flags = {**base, "USER": 0, "SIZE": bits // 8 if integer else 8}
    flags["SIGNED"] = int(signed and integer)
    if kernel_types is None:  # not followed: checked where the kernel's BTF is
        return ArgFlags(kind, flags), []
    index = arg.index or 0
    try:
        if arg.btf_type is not None:  # the struct the (void *) argument points to
            start = kernel_types.pointer_to(arg.btf_type)
        elif isinstance(hook, RawTracepoint):
            start = kernel_types.tracepoint_argument(hook.event, index)
        else:
            start = kernel_types.parameter(hook.call, index)
        resolved = kernel_types.resolve(start, arg.resolve or "")
    except btf.BTFError as error:
        return None, [at(where, f"{error} (from the kernel's BTF)")]
    steps = list(resolved.steps)
    # The steps give the field's address: an integer, or a pointer the kind reads
    # through, is loaded from it; an array (a string) or an embedded struct is used there.
    if integer or resolved.field.kind == btf.PTR:
        offset, loaded = steps[-1]
        steps[-1:] = [(offset, True)] if not loaded else [(offset, True), (0, True)]
    if len(steps) > btf.MAX_RESOLVE_STEPS:
        return None, [at(where, f"takes {len(steps)} steps; at most {btf.MAX_RESOLVE_STEPS}")]
    flags["RESOLVE"] = len(steps)
    for k, (offset, load) in enumerate(steps):
        flags[f"R{k}"] = offset << 1 | int(load)
    return ArgFlags(kind, flags), []


def _field(arg: Arg, fields: list[Field]) -> Field | None:
    """A tracepoint arg's field: by name, or by ``index``, which counts the format's fields
    from the first, common_* included, as Tetragon does (raw_syscalls:sys_enter's ``id``
    is index 4)."""
    if arg.field is not None:
        return next((f for f in fields if f.name == arg.field), None)
    if arg.index is not None:
        return next((f for f in fields if f.position == arg.index), None)
    return None
