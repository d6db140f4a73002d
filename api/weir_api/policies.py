"""TracingPolicy: what to hook, how to filter in the kernel, what to do with a match.

The shape follows Tetragon's TracingPolicy so a Tetragon user can read it at a
glance: ``kprobes``, ``tracepoints`` and ``uprobes``, each with ``args`` and
``selectors``; a selector ANDs its ``matchArgs`` and ``matchBinaries`` and
carries ``matchActions``; the selectors of a hook are ORed and the first that
matches decides the action. A hook with no selectors matches every call.

What weir adds: ``podSelector``/``namespaceSelector``/``nodeSelector`` to scope a
policy to workloads and nodes, and AggregationRules (see ``aggregations``) that
fold matches into in-kernel maps instead of streaming them.

The models check shapes; ``checks`` adds the semantic rules (operator fits the
argument type, values parse, references resolve).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, PrivateAttr, model_validator

from weir_api import API_VERSION, limits, values
from weir_api.meta import LabelSelector, Model, cel
from weir_api.statuses import TracingPolicyStatus

ArgType = Literal[
    "int",
    "uint",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "long",
    "ulong",
    "size_t",
    "capability",
    "kernel_cap_t",
    "cap_inheritable",
    "cap_permitted",
    "cap_effective",
    "syscall64",
    "cred",
    "user_namespace",
    "string",
    "filename",
    "char_buf",
    "sock",
    "sockaddr",
    "skb",
    "file",
    "path",
    "fd",
    "linux_binprm",
    "module",
    "kernel_module",
    "load_info",
    "bpf_attr",
    "bpf_map",
    "perf_event",
    "bpf_prog",
    "net_device",
    "socket",
    "nop",
]
assert set(ArgType.__args__) == set(values.ARG_TYPES)  # type: ignore[attr-defined]

MatchArgOperator = Literal[
    "Equal",
    "NotEqual",
    "Prefix",
    "NotPrefix",
    "Postfix",
    "NotPostfix",
    "GT",
    "LT",
    "Mask",
    "InRange",
    "DAddr",
    "NotDAddr",
    "SAddr",
    "NotSAddr",
    "DPort",
    "NotDPort",
    "SPort",
    "NotSPort",
    "SPortPriv",
    "NotSPortPriv",
    "DPortPriv",
    "NotDPortPriv",
    "Family",
    "NotFamily",
    "Protocol",
    "NotProtocol",
    "State",
    "NotInRange",
    "InMap",
    "NotInMap",
    "GreaterThan",
    "LessThan",
    "FileType",
    "NotFileType",
    "SubString",
    "SubStringIgnCase",
    "CapabilitiesGained",
]

LABEL_PATTERN = r"^[a-z_][a-z0-9_]*$"
# The schema counts characters, the kernel bytes: a value of multi-byte characters within
# the schema's bound can still be refused by `weir check` and the operator (UTF-8 bytes).
ValueString = Annotated[str, Field(min_length=1, max_length=limits.MAX_STRING)]
BinaryPath = Annotated[str, Field(min_length=1, max_length=limits.MAX_STRING, pattern=r"^/")]
SYMBOL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
CALL_PATTERN = r"^([A-Za-z_][A-Za-z0-9_.]*|list:[a-z0-9]([-a-z0-9_]*[a-z0-9])?)$"
UprobeSymbol = Annotated[
    str, Field(max_length=limits.MAX_NAME, pattern=r"^[A-Za-z_.$][A-Za-z0-9_.$@]*$")
]
MAX_FUNCTION_ARG = 5  # x86-64 and arm64 pass six arguments in registers
RANGE_OPERATORS = frozenset({"InRange", "NotInRange"}) | values.PORT_OPERATORS


def _int_as_text(value: object) -> object:
    """Tetragon writes pids and namespace inodes as numbers or strings: keep the text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IntOrText = Annotated[
    str,
    BeforeValidator(_int_as_text),
    Field(min_length=1, max_length=32, json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def _cel_list(items: Any) -> str:
    return "[" + ", ".join(f"'{item}'" for item in sorted(items)) + "]"


class Arg(Model):
    """An argument the hook reads; only the arguments a policy declares are read."""

    model_config = {
        "json_schema_extra": cel(
            ("has(self.index) || has(self.field)", "an arg needs index or field"),
            (
                "self.type != 'char_buf' || has(self.sizeArgIndex) || "
                "(has(self.returnCopy) && self.returnCopy)",
                "a char_buf arg needs sizeArgIndex: the argument holding its length, counted "
                "from 1 (or returnCopy: true, whose length is the return value)",
            ),
            (
                "self.type == 'char_buf' || !has(self.sizeArgIndex)",
                "sizeArgIndex applies to char_buf args only; remove it",
            ),
        )
    }

    index: int | None = Field(
        default=None,
        ge=0,
        le=63,
        description="kprobes/uprobes: the function argument's position (0-5). Tracepoints: "
        "the field's position in the event's tracefs format counted from its first line, the "
        "common_* header included, as Tetragon counts (raw_syscalls:sys_enter's id is 4); "
        "`field:` names it instead.",
    )
    field: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Tracepoints only: the name of the field in the event's tracefs format, "
        "e.g. `filename` for syscalls/sys_enter_openat.",
    )
    type: ArgType = Field(
        description="How to read and compare the value: integers (int, uint, int8..uint64, "
        "long, ulong, size_t), string (kernel char *), filename (user-space path pointer, as "
        "syscalls take), char_buf (user buffer, length in sizeArgIndex), file (struct file *), "
        "path (struct path *) and fd (a descriptor of the calling process), each read as the "
        "file's path; sock (struct sock *), sockaddr (struct sockaddr *), skb (struct sk_buff "
        "*: its IP and transport headers), nop (read nothing: a placeholder, as in Tetragon). "
        "Kernel functions' struct args, as Tetragon reads them: capability (a number), "
        "kernel_cap_t, cap_inheritable, cap_permitted, cap_effective (a capability set, read "
        "through the pointer), linux_binprm (the executed file's path), module, "
        "kernel_module and load_info (the module's name)."
    )
    label: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_PATTERN,
        description="A name for the value in events and metrics labels (e.g. `bytes`); "
        "defaults to the field name or `arg<index>`.",
    )
    size_arg_index: int | None = Field(
        default=None,
        ge=1,
        le=MAX_FUNCTION_ARG + 1,
        description="char_buf only: the argument that holds the buffer's length, counted from "
        "1 as Tetragon counts it (3 is the argument at index 2).",
    )
    resolve: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,15}$",
        description="kprobes and raw tracepoints: a field reached from this struct pointer "
        "argument through the kernel's BTF, pointers followed (mm.owner.real_parent.comm "
        "from a linux_binprm), read as type says (an integer, a string, or a file, path, "
        "sock or skb), as Tetragon's resolve.",
    )
    extract_param: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,15}$",
        description="Tetragon's earlier name for resolve (lsmhooks): taken as resolve.",
    )
    overwrite_type: ArgType | None = Field(
        default=None,
        description="Tetragon's type for the field extractParam reaches: taken as type.",
    )
    btf_type: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="With resolve: the struct the argument points to, when the function's "
        "prototype does not say (a void *), as Tetragon's btfType.",
    )
    return_copy: bool = Field(
        default=False,
        description="kprobes and uprobes: read the argument when the function returns (what "
        "the call wrote into a buffer), as Tetragon: the hook becomes a return probe "
        "(kretprobe:CALL, uretprobe:...), its args saved at entry. A char_buf with returnCopy "
        "and no sizeArgIndex is as long as the return value.",
    )
    max_data: bool = Field(
        default=False,
        description="Accepted for Tetragon's policies, no effect: weir reads at most "
        f"{limits.MAX_STRING} bytes of a string or buffer.",
    )

    @model_validator(mode="after")
    def _tetragon_spelling(self) -> Arg:
        """extractParam and overwriteType are resolve and type by Tetragon's older names."""
        if self.extract_param is not None and self.resolve is None:
            self.resolve = self.extract_param
        if self.overwrite_type is not None:
            self.type = self.overwrite_type
        return self

    def name(self) -> str:
        """The label this arg is known by in events and metrics."""
        if self.label:
            return self.label
        if self.field:
            return self.field
        return f"arg{self.index}"


class MatchArg(Model):
    """A filter on one argument, evaluated in the kernel."""

    model_config = {
        "json_schema_extra": cel(
            (
                "has(self.index) || has(self.label)",
                "matchArgs needs index or label of a declared arg",
            ),
            (
                f"!(self.operator in {_cel_list(values.SINGLE_VALUE_OPERATORS)})"
                " || size(self.values) == 1",
                "GT, LT and Mask take exactly one value",
            ),
            (
                f"self.operator in {_cel_list(values.PRIVILEGED_PORT_OPERATORS)}"
                " || size(self.values) >= 1",
                "give at least one value (only the *PortPriv operators take none)",
            ),
            (
                f"!(self.operator in {_cel_list(RANGE_OPERATORS)})"
                f" || size(self.values) <= {limits.MAX_RANGES}",
                f"InRange and the port operators take at most {limits.MAX_RANGES} values "
                "(ranges are checked in a bounded loop in the kernel)",
            ),
        )
    }

    index: int | None = Field(
        default=None, ge=0, le=63, description="The `index` of the arg to test, as in `args`."
    )
    label: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_PATTERN,
        description="Alternatively, the arg's label (for tracepoint args named by field).",
    )
    operator: MatchArgOperator = Field(
        description="Integers: Equal, NotEqual, GT, LT, Mask (any bit set), InRange, "
        "NotInRange (LOW:HIGH). Strings (and file, path, fd): Equal, NotEqual, Prefix, "
        "NotPrefix, Postfix, NotPostfix. sock/sockaddr/skb: DAddr, NotDAddr, SAddr, NotSAddr "
        "(CIDRs), DPort, NotDPort, SPort, NotSPort (ports or LOW:HIGH ranges), DPortPriv, "
        "SPortPriv and their Not* (ports below 1024, no values), Family (AF_INET, ...), "
        "Protocol (IPPROTO_TCP, ...; sock and skb), State (TCP_ESTABLISHED, ...; sock). "
        "Tetragon's GreaterThan, LessThan, InMap and NotInMap are GT, LT, Equal and NotEqual."
    )
    values: list[ValueString] = Field(
        default_factory=list,
        max_length=limits.MAX_VALUES,
        description="Values as strings; a positive operator matches when any value matches, a "
        "Not* operator when none does. Kept in BPF maps, never in program text.",
    )


class MatchBinary(Model):
    """A filter on the executable of the current process."""

    operator: Literal["In", "NotIn", "Prefix", "NotPrefix"] = Field(
        description="In/NotIn: exact executable paths. Prefix/NotPrefix: path prefixes."
    )
    values: list[BinaryPath] = Field(
        min_length=1,
        max_length=limits.MAX_VALUES,
        description="Absolute paths (or path prefixes) of executables, e.g. /usr/bin/curl.",
    )
    follow_children: bool = Field(
        default=False,
        description="Tetragon's followChildren: a process whose parent (up to 8 generations "
        "up) ran a matching executable matches too.",
    )


def _seconds_as_text(value: object) -> object:
    """Tetragon writes ``rateLimit: 5`` for five seconds; keep it as the text "5"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# What a correlation mark or a duration's clock is keyed by: the current thread, its
# process, or an argument's value (an integer, or the address of a sock, skb or file).
KEY_PATTERN = r"^(thread|process|arg:[a-z_][a-z0-9_]*)$"
MARK_PATTERN = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"
# Actions that set or clear a mark; TrackSock and UntrackSock are Tetragon's words for
# marking a socket (the mark named ``sock``).
MARK_ACTIONS = ("Mark", "Unmark", "TrackSock", "UntrackSock")
# Tetragon's descriptor-following actions: weir reads an fd argument's file through the
# task's descriptor table at the call, so they are accepted and have nothing to do.
FD_ACTIONS = ("FollowFD", "UnfollowFD", "CopyFD")
SOCK_MARK = "sock"


class MatchAction(Model):
    """What to do when a selector matches."""

    model_config = {
        "json_schema_extra": cel(
            ("self.action == 'Post' || !has(self.rateLimit)", "rateLimit applies to Post only"),
            (
                "self.action == 'Post' || !((has(self.userStackTrace) && self.userStackTrace)"
                " || (has(self.kernelStackTrace) && self.kernelStackTrace))",
                "stack traces are taken for Post only",
            ),
            (
                "(self.action == 'Mark' || self.action == 'Unmark') == has(self.mark)",
                "Mark and Unmark need mark (its name); no other action takes it",
            ),
            (
                "(self.action == 'Mark' || self.action == 'Unmark') || !has(self.key)",
                "key applies to Mark and Unmark only",
            ),
            (
                "(self.action == 'TrackSock' || self.action == 'UntrackSock') == has(self.argSock)",
                "TrackSock and UntrackSock need argSock (the index of a sock arg); no other "
                "action takes it",
            ),
        )
    }

    action: Literal[
        "Post",
        "NoPost",
        "Mark",
        "Unmark",
        "TrackSock",
        "UntrackSock",
        "FollowFD",
        "UnfollowFD",
        "CopyFD",
    ] = Field(
        description="Post: send the event to user space (a JSON line). NoPost: count and "
        "aggregate only, nothing leaves the kernel per event. Mark / Unmark: set or clear "
        "the mark `mark` for `key`, for matchMarks of any hook of the policy to test. "
        "TrackSock / UntrackSock (Tetragon's): mark or unmark the sock arg at argSock (the "
        "mark named sock). FollowFD, UnfollowFD, CopyFD (Tetragon's): accepted, nothing to "
        "do: weir resolves fd args through the task's descriptor table. A selector takes "
        "at most one of Post and NoPost (none: Post) and any number of the others."
    )
    mark: str | None = Field(
        default=None,
        max_length=63,
        pattern=MARK_PATTERN,
        description="Mark / Unmark: the mark's name, shared by the policy's hooks.",
    )
    key: str | None = Field(
        default=None,
        max_length=80,
        pattern=KEY_PATTERN,
        description="Mark / Unmark: what is marked: thread (default), process, or arg:LABEL "
        "(an integer arg's value, or the address of a sock, skb, file or path arg).",
    )
    arg_sock: int | None = Field(
        default=None,
        ge=0,
        le=7,
        description="TrackSock / UntrackSock: the index of the sock arg (Tetragon's argSock).",
    )
    arg_fd: int | None = Field(
        default=None, description="FollowFD, UnfollowFD, CopyFD (Tetragon's): ignored."
    )
    arg_name: int | None = Field(
        default=None, description="FollowFD, CopyFD (Tetragon's): ignored."
    )
    rate_limit: Annotated[str | None, BeforeValidator(_seconds_as_text)] = Field(
        default=None,
        max_length=16,
        pattern=r"^[0-9]+(ms|s|m|h)?$",
        description="Post at most one event per this window (e.g. 10s, 1m; a bare number is "
        "seconds, as in Tetragon) per policy, hook, selector and process (tgid; see "
        "rateLimitScope); the rest are counted as dropped (reason rate_limit).",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    rate_limit_scope: Literal["process", "thread", "global"] | None = Field(
        default=None,
        description="Whose events rateLimit counts together (Tetragon's): process (weir's "
        "default), thread, or global (every process's, per selector).",
    )
    user_stack_trace: bool = Field(
        default=False, description="Attach the user-space stack, symbolised, to the event."
    )
    kernel_stack_trace: bool = Field(
        default=False, description="Attach the kernel stack, symbolised, to the event."
    )
    arg_error: int | None = Field(
        default=None,
        description="Tetragon's error for Override: enforcement only, accepted and ignored "
        "(weir observes), with a warning.",
    )
    arg_sig: int | None = Field(
        default=None,
        description="Tetragon's signal for Signal: enforcement only, accepted and ignored "
        "(weir observes), with a warning.",
    )


class MatchPID(Model):
    """A filter on the calling process's id (Tetragon's matchPIDs)."""

    operator: Literal["In", "NotIn"] = Field(description="In: one of values; NotIn: none.")
    values: list[IntOrText] = Field(
        min_length=1, max_length=limits.MAX_VALUES, description="Process ids (tgids)."
    )
    follow_forks: bool = Field(
        default=False,
        description="Also match the descendants of the listed processes (the nearest 8 "
        "generations of parents are looked at).",
    )
    is_namespace_pid: bool = Field(
        default=False,
        alias="isNamespacePID",
        description="The ids are as the process's own pid namespace numbers them (1 is a "
        "container's first process), not as the host does.",
    )


class MatchNamespace(Model):
    """A filter on one of the calling task's namespaces (Tetragon's matchNamespaces)."""

    namespace: NamespaceName = Field(description="Which namespace.")
    operator: Literal["In", "NotIn"] = Field(description="In: one of values; NotIn: none.")
    values: list[IntOrText] = Field(
        min_length=1,
        max_length=limits.MAX_VALUES,
        description="Namespace inode numbers (as `lsns` or /proc/PID/ns show them), or "
        "host_ns: the node's own namespace (that of its pid 1).",
    )


class MatchCapability(Model):
    """A filter on the calling task's capabilities (Tetragon's matchCapabilities)."""

    type: Literal["Effective", "Inheritable", "Permitted"] = Field(
        default="Effective", description="Which capability set."
    )
    operator: Literal["In", "NotIn"] = Field(
        description="In: the set holds any of values; NotIn: it holds none."
    )
    values: list[Annotated[str, Field(max_length=32)]] = Field(
        min_length=1,
        max_length=64,
        description="Capabilities by name (CAP_SYS_ADMIN) or number (linux/capability.h).",
    )
    is_namespace_capability: bool = Field(
        default=False,
        description="As in Tetragon: true matches only tasks outside the host's user "
        "namespace (it takes one more of the selector's filters).",
    )


NamespaceName = Literal[
    "Uts",
    "Ipc",
    "Mnt",
    "Pid",
    "PidForChildren",
    "Net",
    "Time",
    "TimeForChildren",
    "Cgroup",
    "User",
]


class MatchNamespaceChange(Model):
    """A filter on which of the calling process's namespaces changed since it was started
    (its exec, or its parent's; Tetragon's matchNamespaceChanges)."""

    operator: Literal["In", "NotIn"] = Field(
        description="In: any of values changed; NotIn: none of them did."
    )
    values: list[NamespaceName] = Field(
        min_length=1, max_length=10, description="Namespaces: Uts, Ipc, Mnt, Pid, Net, ..."
    )


class MatchMark(Model):
    """A filter on a mark that a Mark (or TrackSock) action of the policy set (weir's)."""

    mark: str = Field(
        max_length=63, pattern=MARK_PATTERN, description="The mark's name (sock: TrackSock's)."
    )
    key: str = Field(
        default="thread",
        max_length=80,
        pattern=KEY_PATTERN,
        description="Whose mark: thread (default), process, or arg:LABEL, as the Mark set it.",
    )
    operator: Literal["In", "NotIn"] = Field(
        default="In", description="In: the key is marked; NotIn: it is not."
    )


class Selector(Model):
    """Filters ANDed together, and the action taken when all match."""

    model_config = {
        "json_schema_extra": cel(
            (
                "!has(self.matchActions) || self.matchActions.filter(a, a.action == 'Post' || "
                "a.action == 'NoPost').size() <= 1",
                "give one of Post and NoPost, once",
            ),
            (
                "!has(self.matchActions) || self.matchActions.filter(a, a.action in "
                f"{_cel_list(MARK_ACTIONS)}).size() <= {limits.MAX_MARK_ACTIONS}",
                f"at most {limits.MAX_MARK_ACTIONS} of Mark, Unmark, TrackSock and UntrackSock "
                "per selector",
            ),
        )
    }

    match_args: list[MatchArg] = Field(
        default_factory=list, max_length=limits.MAX_MATCH_ARGS, description="Argument filters."
    )
    match_binaries: list[MatchBinary] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_BINARIES,
        description="Executable filters.",
    )
    match_return_args: list[MatchArg] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ARGS,
        description="Filters on the return value of a return probe (its returnArg); index "
        "and label may be left out.",
    )
    match_pids: list[MatchPID] = Field(
        default_factory=list,
        alias="matchPIDs",
        max_length=limits.MAX_MATCH_ARGS,
        description="Process id filters.",
    )
    match_namespaces: list[MatchNamespace] = Field(
        default_factory=list, max_length=limits.MAX_MATCH_ARGS, description="Namespace filters."
    )
    match_capabilities: list[MatchCapability] = Field(
        default_factory=list, max_length=limits.MAX_MATCH_ARGS, description="Capability filters."
    )
    match_namespace_changes: list[MatchNamespaceChange] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ARGS,
        description="Filters on the namespaces the process changed since it was started "
        "(Tetragon's).",
    )
    match_capability_changes: list[MatchCapability] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ARGS,
        description="Filters on the capabilities that changed (were gained or dropped) in a "
        "set since the process was started: In, any of values changed; NotIn, none did "
        "(Tetragon's).",
    )

    match_marks: list[MatchMark] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ARGS,
        description="Mark filters: what a Mark or TrackSock of the policy set (weir's).",
    )

    def matcher_count(self) -> int:
        """Matchers the selector takes in the program (at most MAX_MATCH_ARGS)."""
        return (
            len(self.match_args)
            + len(self.match_return_args)
            + len(self.match_pids)
            + len(self.match_namespaces)
            + len(self.match_capabilities)
            + sum(1 for c in self.match_capabilities if c.is_namespace_capability)
            + len(self.match_namespace_changes)
            + len(self.match_capability_changes)
            + sum(1 for c in self.match_capability_changes if c.is_namespace_capability)
            + len(self.match_marks)
        )

    match_actions: list[MatchAction] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ACTIONS,
        description="The actions on a match: at most one of Post and NoPost (none means "
        "Post, as in Tetragon), and marks to set or clear.",
    )

    def action(self) -> MatchAction:
        """The selector's Post or NoPost (Post when it gives neither)."""
        return next(
            (a for a in self.match_actions if a.action in ("Post", "NoPost")),
            MatchAction(action="Post"),
        )

    def mark_actions(self) -> list[tuple[int, MatchAction]]:
        """The actions that set or clear marks, with their positions."""
        return [(n, a) for n, a in enumerate(self.match_actions) if a.action in MARK_ACTIONS]


# CEL over a hook's own fields: what `checks` says about args and matchArgs that needs no
# other object, refused by the API server at apply time. `a` is an arg, `m` a matchArgs
# entry; an arg is known by its label, else its field, else arg<index> (Arg.name).
_NAME = (
    "(has(a.label) ? a.label : (has(a.field) ? a.field"
    " : (has(a.index) ? 'arg' + string(a.index) : '')))"
)
_REFERS = f"(has(m.label) ? {_NAME} == m.label : (has(a.index) ? a.index == m.index : false))"
_FITS = (
    f"((a.type in {_cel_list(values.INTEGER_TYPES)}"
    f" && m.operator in {_cel_list(values.INTEGER_OPERATORS)})"
    f" || (a.type in {_cel_list(values.STRING_TYPES)}"
    f" && m.operator in {_cel_list(values.STRING_OPERATORS)})"
    f" || (a.type in {_cel_list(values.FILE_TYPES)}"
    f" && m.operator in {_cel_list(values.FILE_TYPE_OPERATORS)})"
    f" || (a.type == 'cred' && m.operator in {_cel_list(values.CRED_OPERATORS)})"
    + "".join(
        f" || (a.type == '{t}' && m.operator in {_cel_list(values.operators_for(t))})"
        for t in sorted(values.ADDRESS_TYPES)
    )
    + ")"
)


STRING_TYPES_TEXT = (
    "string, filename, char_buf, file, path, fd, linux_binprm, module, kernel_module, "
    "load_info, bpf_attr, bpf_map and perf_event"
)
ADDRESS_TYPES_TEXT = "sock, sockaddr, skb and socket"


def _every_match(condition: str) -> str:
    # Guards are ternaries, not ||: CEL's || absorbs an error on either side, but not every
    # implementation (cel-python inside nested comprehensions) does.
    return (
        "has(self.selectors) ? self.selectors.all(s, has(s.matchArgs)"
        f" ? s.matchArgs.all(m, {condition}) : true) : true"
    )


def hook_rules(kind: Literal["kprobe", "tracepoint", "uprobe"]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for one hook kind (a probe's returnArg is an arg too)."""
    ret = "self.returnArg"
    refers_ret = _REFERS.replace("a.", f"{ret}.")
    fits_ret = _FITS.replace("a.", f"{ret}.")
    declared_args = f"(has(self.args) ? self.args.exists(a, {_REFERS}) : false)"
    declared = declared_args
    fits = f"(has(self.args) ? self.args.all(a, {_REFERS} ? {_FITS} : true) : true)"
    if kind == "tracepoint":  # or the arg at that position in args (Tracepoint.arg_by_ref)
        declared = (
            f"({declared} || (!has(m.label) && has(m.index) && has(self.args) "
            "&& m.index < size(self.args)))"
        )
    if kind != "tracepoint":  # args are looked up first, then the returnArg (Hook.arg_by_ref)
        declared = f"({declared} || (has({ret}) ? {refers_ret} : false))"
        fits = (
            f"({fits} && (has({ret}) && !{declared_args} ? (!{refers_ret} || {fits_ret}) : true))"
        )
    rules = [
        (
            _every_match(declared),
            "every matchArgs entry names an arg of this hook (by label, or by index); "
            "declare the arg in args first",
        ),
        (
            _every_match(fits),
            "a matchArgs operator must fit its arg's type: integers take "
            f"{', '.join(sorted(values.INTEGER_OPERATORS))}; strings ({STRING_TYPES_TEXT}) "
            f"take {', '.join(sorted(values.STRING_OPERATORS))}; "
            "sock, sockaddr and skb take "
            f"{', '.join(sorted(values.ADDRESS_OPERATORS | values.PORT_OPERATORS))} "
            "and Family, NotFamily (all three), Protocol, NotProtocol (sock, skb), State (sock)",
        ),
        (
            f"!has(self.args) || self.args.all(a, self.args.exists_one(b, "
            f"{_NAME.replace('a.', 'b.')} == {_NAME}))",
            "each arg's label must be unique within the hook (it defaults to the field "
            "name, or arg<index>)",
        ),
        (
            "!has(self.args) || self.args.all(a, has(a.index) ? "
            "self.args.exists_one(b, has(b.index) ? (b.index == a.index && "
            "(has(b.resolve) ? b.resolve : '') == (has(a.resolve) ? a.resolve : '')) : false) "
            ": true)",
            "each index is read once per hook (or once per resolve path); give each argument once",
        ),
    ]
    for types, most, what in (
        (values.STRING_TYPES, limits.STRING_ARGS, STRING_TYPES_TEXT),
        (values.ADDRESS_TYPES, limits.ADDRESS_ARGS, ADDRESS_TYPES_TEXT),
    ):
        rules.append(
            (
                f"!has(self.args) || self.args.filter(a, a.type in {_cel_list(types)}).size()"
                f" <= {most}",
                f"at most {most} {what} args per hook (each takes a per-CPU scratch slot)",
            )
        )
    if kind == "tracepoint":
        rules += [
            (
                "!has(self.args) || self.args.all(a, !(has(a.field) && has(a.index)))",
                "a tracepoint arg takes field or index, not both",
            ),
            (
                "!has(self.args) || self.args.all(a, a.type != 'char_buf')",
                "char_buf is for kprobes and uprobes; on a tracepoint use string (a "
                "__data_loc or char[] field) or filename (a user pointer)",
            ),
        ]
    else:
        rules.append(
            (
                "!has(self.args) || self.args.all(a, !has(a.field) && has(a.index)"
                f" && a.index <= {MAX_FUNCTION_ARG})",
                f"{kind} args take index, the function argument's position "
                f"(0-{MAX_FUNCTION_ARG}); field is for tracepoints",
            )
        )
    if kind != "tracepoint":
        rules.append(
            (
                f"!has({ret}) || {ret}.type in {_cel_list(values.INTEGER_TYPES)}",
                "return values are read as integers: returnArg takes an integer type "
                "(int, long, size_t, ...)",
            )
        )
    return cel(*rules)


class Hook(Model):
    """Fields every hook kind shares."""

    args: list[Arg] = Field(
        default_factory=list, max_length=limits.MAX_ARGS, description="Arguments to read."
    )
    selectors: list[Selector] = Field(
        default_factory=list,
        max_length=limits.MAX_SELECTORS,
        description="ORed in order, first match decides; none means every call matches and "
        "is posted.",
    )
    message: str = Field(
        default="",
        max_length=256,
        description="A short text for this hook's events (as Tetragon's), e.g. \"Sensitive "
        'file opened".',
    )
    tags: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description="Labels carried in this hook's events (as Tetragon's), e.g. "
        "observability.filesystem.",
    )

    # The 2nd, 3rd, ... entry of a policy on the same function or event (Tetragon allows
    # several; each is its own program): its id says which (hooks_with_paths sets it).
    _occurrence: int = PrivateAttr(default=1)

    def target_id(self) -> str:
        """What is hooked: kprobe:CALL, tracepoint:SUBSYSTEM:EVENT, uprobe:PATH:SYMBOL."""
        raise NotImplementedError

    def hook_id(self) -> str:
        """The hook's id in the policy: its target, and #N for the Nth entry on the same
        target (kprobe:openat, kprobe:openat#2)."""
        suffix = f"#{self._occurrence}" if self._occurrence > 1 else ""
        return self.target_id() + suffix

    def declared_args(self) -> list[Arg]:
        """Every argument the hook reads (kretprobes add their returnArg)."""
        return list(self.args)

    def arg_by_ref(self, index: int | None, label: str | None) -> Arg | None:
        for arg in self.declared_args():
            if label is not None and arg.name() == label:
                return arg
            if label is None and index is not None and arg.index == index:
                return arg
        return None


class FunctionHook(Hook):
    """What kprobes and uprobes share: probing a function's return, and its value."""

    return_: bool = Field(
        default=False,
        alias="return",
        description="Probe the function's return (kretprobe, uretprobe) instead.",
    )
    return_arg: Arg | None = Field(
        default=None,
        description="With return: true, the return value to read (an integer, or a sock, skb, "
        "file or path the function returns).",
    )
    return_arg_action: Literal["TrackSock", "UntrackSock", *FD_ACTIONS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="With returnArg, for every matching call: TrackSock / UntrackSock mark or "
        "unmark the returned value in the mark named sock (Tetragon's). FollowFD, "
        "UnfollowFD, CopyFD: accepted, nothing to do.",
    )

    def declared_args(self) -> list[Arg]:
        return [*self.args, *([self.return_arg] if self.return_arg is not None else [])]

    def returns(self) -> bool:
        """Probes the return: return: true, or an arg read on return (returnCopy)."""
        return self.return_ or any(arg.return_copy for arg in self.args)


class KProbe(FunctionHook):
    """A kernel function entry (or return) probe."""

    model_config = {"json_schema_extra": hook_rules("kprobe")}

    call: str = Field(
        max_length=limits.MAX_NAME,
        pattern=CALL_PATTERN,
        description="The kernel function, e.g. tcp_sendmsg (or a syscall name with syscall: "
        "true), or list:NAME for every function of spec.lists NAME (one hook each).",
    )
    syscall: bool = Field(
        default=False,
        description="`call` names a syscall (e.g. openat); the architecture's symbol prefix "
        "is added.",
    )

    def target_id(self) -> str:
        return f"{'kretprobe' if self.returns() else 'kprobe'}:{self.call}"

    def every_syscall(self) -> Tracepoint:
        """A kprobe on a generated_syscalls list, as the one tracepoint every syscall
        passes (raw_syscalls:sys_enter) with the same selectors."""
        return Tracepoint.model_validate(
            {
                "subsystem": "raw_syscalls",
                "event": "sys_enter",
                "selectors": [s.model_dump(by_alias=True) for s in self.selectors],
                "message": self.message,
                "tags": self.tags,
            }
        )

    def list_name(self) -> str | None:
        """NAME of ``call: list:NAME``."""
        return self.call.removeprefix("list:") if self.call.startswith("list:") else None

    def expanded(self, lists: Sequence[PolicyList]) -> list[KProbe]:
        """One kprobe per function of the list ``call`` names (a syscalls list makes them
        syscall kprobes); itself when it names one function; none for an unknown list."""
        name = self.list_name()
        if name is None:
            return [self]
        found = next((item for item in lists if item.name == name), None)
        if found is None:
            return []
        syscall = self.syscall or found.type == "syscalls"
        return [self.model_copy(update={"call": v, "syscall": syscall}) for v in found.values]


class RawTracepoint(Hook):
    """A raw tracepoint (Tetragon's rawtracepoints): the tracepoint's own arguments, as
    the kernel passes them (TP_PROTO), before the event's fields are filled in; args take
    index, the argument's position (sched_process_exec: 0 the task, 2 the linux_binprm)."""

    model_config = {"json_schema_extra": hook_rules("kprobe")}

    subsystem: str = Field(
        max_length=64, pattern=r"^[a-z0-9_]+$", description="e.g. sched, syscalls' raw_syscalls."
    )
    event: str = Field(
        max_length=128, pattern=r"^[a-z0-9_]+$", description="e.g. sched_process_exec."
    )

    def target_id(self) -> str:
        return f"raw_tracepoint:{self.subsystem}:{self.event}"


class LsmHook(Hook):
    """One of Tetragon's lsmhooks, observed: a kprobe on the kernel's security_* function
    that calls the LSM hook, with the same arguments (weir never decides the hook's
    answer; Override is refused as enforcement)."""

    model_config = {"json_schema_extra": hook_rules("kprobe")}

    hook: str = Field(
        max_length=limits.MAX_NAME,
        pattern=r"^[a-z0-9_]+$",
        description="The LSM hook, as lsm_hook_defs.h names it (file_open, "
        "bprm_check_security): weir hooks security_file_open, security_bprm_check.",
    )

    def function(self) -> str:
        """The security_* function that calls the hook: the hook's name, less the
        _security suffix some carry (bprm_check_security, sb_alloc_security)."""
        name = self.hook
        if name.endswith("_security") and name != "inode_init_security":
            name = name.removesuffix("_security")
        return f"security_{name}"

    def as_kprobe(self) -> KProbe:
        return KProbe.model_validate(
            {
                "call": self.function(),
                "args": [arg.model_dump(by_alias=True) for arg in self.args],
                "selectors": [s.model_dump(by_alias=True) for s in self.selectors],
                "message": self.message,
                "tags": self.tags,
            }
        )

    def target_id(self) -> str:
        return f"kprobe:{self.function()}"


class Tracepoint(Hook):
    """A kernel tracepoint (stable ABI; argument layouts come from tracefs)."""

    model_config = {"json_schema_extra": hook_rules("tracepoint")}

    subsystem: str = Field(
        max_length=64, pattern=r"^[a-z0-9_]+$", description="e.g. syscalls, sock, signal."
    )
    event: str = Field(
        max_length=128,
        pattern=r"^[a-z0-9_]+$",
        description="e.g. sys_enter_openat, sock_send_length, signal_generate.",
    )

    raw: bool = Field(
        default=False,
        description="Tetragon's raw: attach as a raw tracepoint, whose args are the "
        "tracepoint's own arguments by position (as under rawtracepoints).",
    )

    def target_id(self) -> str:
        return f"tracepoint:{self.subsystem}:{self.event}"

    def as_raw(self) -> RawTracepoint:
        fields = self.model_dump(by_alias=True, exclude={"raw"}, exclude_none=True)
        return RawTracepoint.model_validate(fields)

    def arg_by_ref(self, index: int | None, label: str | None) -> Arg | None:
        """As Tetragon: a matchArgs index names the arg with that (tracefs) index, or else
        the arg at that position in args (its raw_syscalls example matches index 0 for the
        arg it declares with index 4)."""
        found = super().arg_by_ref(index, label)
        if found is None and label is None and index is not None and index < len(self.args):
            return self.args[index]
        return found


class UProbe(FunctionHook):
    """A user-space function probe in one executable or library."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                *hook_rules("uprobe")["x-kubernetes-validations"],
                {
                    "rule": "(has(self.symbol) ? 1 : 0) + (has(self.symbols) && "
                    "size(self.symbols) > 0 ? 1 : 0) + (has(self.offsets) && "
                    "size(self.offsets) > 0 ? 1 : 0) + (has(self.addrs) && "
                    "size(self.addrs) > 0 ? 1 : 0) == 1",
                    "message": "give one of symbol, symbols, offsets or addrs (lists: one hook "
                    "each)",
                },
                {
                    "rule": "!has(self.refCtrOffsets) || size(self.refCtrOffsets) == 0 || "
                    "(has(self.offsets) && size(self.refCtrOffsets) == size(self.offsets))",
                    "message": "refCtrOffsets go with offsets, one each",
                },
            ]
        }
    }

    path: str = Field(
        max_length=4096,
        pattern=r"^/",
        description="Absolute path of the executable or shared library on the node.",
    )
    symbol: UprobeSymbol | None = Field(
        default=None, description="The function symbol, e.g. readline (mangled names for C++)."
    )
    symbols: list[UprobeSymbol] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Several symbols of the same binary, as Tetragon writes them: one hook "
        "each, sharing args and selectors.",
    )
    offsets: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Instead of symbols, file offsets in the binary to probe (Tetragon's "
        "offsets): one hook each, id uprobe:PATH:+0xOFFSET.",
    )
    addrs: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Instead of symbols, virtual addresses in the binary (Tetragon's addrs): "
        "one hook each, id uprobe:PATH:@0xADDRESS, turned into file offsets through the "
        "binary's loadable segments when attached.",
    )
    ref_ctr_offsets: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="With offsets, one each: the file offset of a USDT semaphore the kernel "
        "counts up while the probe is attached (Tetragon's refCtrOffsets).",
    )

    def where(self) -> str:
        """The symbol probed, +0xOFFSET for a file offset, @0xADDRESS for an address."""
        if self.symbol is not None:
            return self.symbol
        return f"+{self.offsets[0]:#x}" if self.offsets else f"@{self.addrs[0]:#x}"

    def target_id(self) -> str:
        return f"{'uretprobe' if self.returns() else 'uprobe'}:{self.path}:{self.where()}"

    def expanded(self) -> list[UProbe]:
        """One uprobe per symbol (``symbols`` lists several), or per offset."""
        if self.offsets:
            counters = self.ref_ctr_offsets or [0] * len(self.offsets)
            return [
                self.model_copy(update={"offsets": [o], "ref_ctr_offsets": [c] if c else []})
                for o, c in zip(self.offsets, counters, strict=False)
            ]
        if self.addrs:
            return [self.model_copy(update={"addrs": [a]}) for a in self.addrs]
        if not self.symbols:
            return [self]
        return [self.model_copy(update={"symbol": s, "symbols": []}) for s in self.symbols]


class PolicyList(Model):
    """A named list of kernel functions (Tetragon's spec.lists), used as ``call: list:NAME``."""

    model_config = {
        "json_schema_extra": cel(
            (
                "self.type.startsWith('generated') || (has(self.values) && size(self.values) > 0)",
                "a list of syscalls or functions needs values",
            ),
        )
    }

    name: str = Field(
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
        description="The name kprobes refer to as list:NAME.",
    )
    type: Literal["syscalls", "functions", "generated_syscalls", "generated_ftrace"] = Field(
        default="functions",
        description="syscalls: syscall names (sys_dup or dup; the architecture's prefix is "
        "added); functions: kernel function names; generated_syscalls: every syscall (a "
        "kprobe on it is watched through raw_syscalls:sys_enter, one program); "
        "generated_ftrace: not supported by weir (yet).",
    )
    values: list[Annotated[str, Field(max_length=limits.MAX_NAME, pattern=SYMBOL_PATTERN)]] = Field(
        default_factory=list, max_length=limits.MAX_HOOKS, description="The functions."
    )
    pattern: str | None = Field(
        default=None, max_length=256, description="generated_ftrace's regular expression."
    )


_H = TypeVar("_H", bound=Hook)


class PolicyOption(Model):
    """One of Tetragon's spec.options (e.g. disable-kprobe-multi): how Tetragon attaches,
    accepted with no effect (``weir check`` says so)."""

    name: str = Field(max_length=128, description="The option's name.")
    value: str = Field(default="", max_length=1024, description="Its value.")


class TracingPolicySpec(Model):
    """What to hook, how to filter in the kernel and what to do on a match."""

    model_config = {
        "json_schema_extra": cel(
            (
                "(has(self.kprobes) && size(self.kprobes) > 0)"
                " || (has(self.tracepoints) && size(self.tracepoints) > 0)"
                " || (has(self.uprobes) && size(self.uprobes) > 0)",
                "a policy needs at least one of kprobes, tracepoints or uprobes",
            ),
        )
    }

    kprobes: list[KProbe] = Field(
        default_factory=list, max_length=limits.MAX_HOOKS, description="Kernel function probes."
    )
    tracepoints: list[Tracepoint] = Field(
        default_factory=list, max_length=limits.MAX_HOOKS, description="Kernel tracepoints."
    )
    uprobes: list[UProbe] = Field(
        default_factory=list, max_length=limits.MAX_HOOKS, description="User function probes."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Only events from pods whose labels match (enforced in the kernel by "
        "cgroup id); unset: every process, pods and host alike.",
    )
    container_selector: LabelSelector | None = Field(
        default=None,
        description="Only events from the containers (of the selected pods) whose fields "
        "match, as Tetragon's containerSelector: key name, the container's name.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Only events from pods in namespaces whose labels match."
    )
    node_selector: LabelSelector | None = Field(
        default=None, description="Only nodes whose labels match load this policy."
    )
    lists: list[PolicyList] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Named lists of kernel functions for kprobes' call: list:NAME (as in "
        "Tetragon).",
    )

    rawtracepoints: list[RawTracepoint] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Raw tracepoints (Tetragon's): a tracepoint's arguments as the kernel "
        "passes them, by position.",
    )
    fentries: list[KProbe] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Tetragon's fentries (fentry, or fexit with return: true): the same "
        "function entries and returns as kprobes, observed as kprobes (hook ids kprobe:CALL, "
        "kretprobe:CALL).",
    )
    lsmhooks: list[LsmHook] = Field(
        default_factory=list,
        max_length=limits.MAX_HOOKS,
        description="Tetragon's LSM hooks, observed through kprobes on the security_* "
        "functions that call them (lsmhooks[].hook file_open: security_file_open).",
    )
    options: list[PolicyOption] = Field(
        default_factory=list,
        max_length=16,
        description="Tetragon's attachment options (disable-kprobe-multi, ...): accepted, no "
        "effect; weir attaches one program per hook.",
    )

    def hooks(self) -> list[KProbe | Tracepoint | UProbe | RawTracepoint]:
        return [hook for _, hook in self.hooks_with_paths()]

    def scoped(self) -> bool:
        """Runs only for the containers its pod, namespace or container selector picks."""
        selectors = (self.pod_selector, self.namespace_selector, self.container_selector)
        return any(s is not None for s in selectors)

    def tracepoint_hooks(self) -> list[Tracepoint]:
        """The tracepoints the policy hooks (those written, and those it implies: a
        kprobe on every syscall is raw_syscalls:sys_enter), for their tracefs formats."""
        return [hook for hook in self.hooks() if isinstance(hook, Tracepoint)]

    def hooks_with_paths(
        self,
    ) -> list[tuple[tuple[str, int], KProbe | Tracepoint | UProbe | RawTracepoint]]:
        """Every hook with where it is written ((group, index) under spec); a uprobe with
        ``symbols`` is one hook per symbol, all at its index."""
        out: list[tuple[tuple[str, int], KProbe | Tracepoint | UProbe | RawTracepoint]] = []
        every_syscall = {item.name for item in self.lists if item.type == "generated_syscalls"}
        for n, kprobe in enumerate(self.kprobes):
            if kprobe.list_name() in every_syscall:  # one program sees them all
                out.append((("kprobes", n), kprobe.every_syscall()))
                continue
            out += [(("kprobes", n), hook) for hook in kprobe.expanded(self.lists)]
        for n, fentry in enumerate(self.fentries):
            out += [(("fentries", n), hook) for hook in fentry.expanded(self.lists)]
        out += [
            (("tracepoints", n), hook.as_raw() if hook.raw else hook)
            for n, hook in enumerate(self.tracepoints)
        ]
        out += [(("rawtracepoints", n), hook) for n, hook in enumerate(self.rawtracepoints)]
        for n, uprobe in enumerate(self.uprobes):
            out += [(("uprobes", n), hook) for hook in uprobe.expanded()]
        out += [(("lsmhooks", n), lsm.as_kprobe()) for n, lsm in enumerate(self.lsmhooks)]
        seen: dict[str, int] = {}
        numbered: list[tuple[tuple[str, int], KProbe | Tracepoint | UProbe | RawTracepoint]] = []
        for where, hook in out:
            hook = self._listed_values(hook)
            target = hook.target_id()
            seen[target] = seen.get(target, 0) + 1
            if seen[target] > 1:
                hook = hook.model_copy()
                hook._occurrence = seen[target]
            numbered.append((where, hook))
        return numbered

    def _listed_values(self, hook: _H) -> _H:
        """The hook with each matchArgs value ``list:NAME`` that names a syscalls list
        replaced by that list's syscalls (``syscall:NAME``: a number on each architecture,
        as InMap over a list means in Tetragon)."""
        syscalls = {item.name: item.values for item in self.lists if item.type == "syscalls"}
        if not syscalls or not any(
            value.startswith("list:")
            for selector in hook.selectors
            for match in [*selector.match_args, *selector.match_return_args]
            for value in match.values
        ):
            return hook

        def expand(match: MatchArg) -> MatchArg:
            texts: list[str] = []
            for value in match.values:
                listed = value.startswith("list:")
                names = syscalls.get(value.removeprefix("list:")) if listed else None
                texts += [f"syscall:{name}" for name in names] if names is not None else [value]
            return match.model_copy(update={"values": texts})

        selectors = [
            selector.model_copy(
                update={
                    "match_args": [expand(m) for m in selector.match_args],
                    "match_return_args": [expand(m) for m in selector.match_return_args],
                }
            )
            for selector in hook.selectors
        ]
        return hook.model_copy(update={"selectors": selectors})


class ObjectMeta(Model):
    """The part of metav1.ObjectMeta weir reads; everything else passes through."""

    model_config = {"extra": "allow", "alias_generator": None}

    name: str = Field(max_length=limits.MAX_NAME, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    generation: int = 1
    uid: str | None = None


class TracingPolicy(Model):
    """A TracingPolicy object (cluster-scoped)."""

    api_version: Literal["weir.dev/v1alpha1"] = API_VERSION
    kind: Literal["TracingPolicy"] = "TracingPolicy"
    metadata: ObjectMeta
    spec: TracingPolicySpec
    status: TracingPolicyStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


def hook_kind(hook: KProbe | Tracepoint | UProbe | RawTracepoint) -> str:
    return hook.hook_id().split(":", 1)[0]


def spec_digest_input(spec: TracingPolicySpec) -> dict[str, Any]:
    """The normalised spec: what a digest of the policy is computed over."""
    return spec.to_wire()
