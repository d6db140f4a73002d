"""Policy → programs: the flags and map seeds that configure bpf/hook.bpf.c.

Pure. For every hook of a policy this produces a ``Program``: integer flags that
say which arguments to read and how (its shape, ``shape_flags``: what the
compiler sees), which matchers each selector runs and which aggregations to fold
into (its configuration, ``config``: what the config map holds), plus the
``Seeds`` (strings, CIDRs, integer sets, ranges, bucket bounds) written into the
maps after load. No user-supplied string is ever placed in C text or in a flag:
flags are built from parsed integers and enumerations only, which
``Program.flags`` enforces.

Limits of the program's layout (8 args, 2 string and 2 address args, 8
selectors of 8 matchArgs, 4 aggregations per hook, 16 ranges per matcher)
that the API schema does not already enforce come back as ``Problem``s with
field paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from weir_agent.spec import abi, btf, configs
from weir_agent.spec.abi import Action, Clock, Deref, Kind, MarkOp, Op, Source, ValueKind
from weir_agent.spec.formats import Field
from weir_api import aggregations as agg_api
from weir_api import checks, limits, values
from weir_api.aggregations import AggregationRule
from weir_api.policies import (
    SOCK_MARK,
    Arg,
    KProbe,
    MatchAction,
    RawTracepoint,
    Selector,
    Tracepoint,
    TracingPolicy,
    UProbe,
)
from weir_api.problems import PathPart, Problem, at

# The C sources ship inside the package (weir_agent/bpf/*.c), so any install can compile.


def _bpf_dir() -> Path:
    """The C sources: package data of an installed wheel (weir_agent/bpf), or bpf/ at the
    top of a source checkout (pyproject.toml maps the one onto the other)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "bpf"
    return installed if installed.is_dir() else package.parent.parent / "bpf"


BPF_DIR = _bpf_dir()
HOOK_SOURCE = "hook.bpf.c"
STUB_SOURCE = "stub.bpf.c"
EXEC_SOURCE = "exec.bpf.c"
MASK64 = (1 << 64) - 1
RINGBUF_PAGES = limits.RINGBUF_PAGES  # per posting program (a power of two)
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
# The architecture (uname -m) whose syscall numbers a syscall:NAME value stands for.
SYSCALL_ARCHES = {"__x64_sys_": "x86_64", "__arm64_sys_": "aarch64"}
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
MIN_ROOM = 64  # smallest capacity of a seed or series map (entries, never preallocated)


@dataclasses.dataclass(frozen=True)
class ArgPlan:
    """How one argument is read and what it is called."""

    slot: int
    name: str
    type: str
    kind: Kind


@dataclasses.dataclass(frozen=True)
class AggSlot:
    """One AggregationRule folded by this program (map ``agg<slot>``)."""

    slot: int
    rule: str
    metric: str
    help: str
    value: ValueKind
    group_by: tuple[str, ...]
    # groupBy key → the weir_agg_key field holding it ("cgroup", "binary", "arg0", ...).
    key_fields: tuple[tuple[str, str], ...]
    bounds: tuple[int, ...]
    max_series: int
    seconds: bool = False  # a duration: values are nanoseconds, exported as seconds

    def layout(self) -> tuple[object, ...]:
        """What a series means: entries carry across versions while this is unchanged."""
        return (self.value, self.group_by, self.key_fields, self.bounds, self.seconds)

    @property
    def table(self) -> bytes:
        """The map that holds this rule's series: histograms apart from counts and sums."""
        return b"hist" if self.value >= ValueKind.HIST_EXP2 else b"agg"


@dataclasses.dataclass(frozen=True)
class Seeds:
    """What goes into the maps after load."""

    strings: tuple[tuple[int, bytes, int], ...] = ()  # matcher, bytes, prefix bits after header
    addresses: tuple[tuple[int, bytes, int], ...] = ()  # matcher, 16 bytes, prefix bits
    integers: tuple[tuple[int, int], ...] = ()  # matcher, value (u64)
    # matcher, low, high: as the kernel compares them (u64; signed ones with the sign bit
    # flipped, which keeps their order); stored as the prefixes that cover each range.
    ranges: tuple[tuple[int, int, int], ...] = ()
    bounds: tuple[tuple[int, int], ...] = ()  # index, bound
    # SubString values: bytes, and the matchers (bit = matcher id) with a value that is a
    # prefix of them (themselves included): the longest prefix found names them all.
    substrings: tuple[tuple[bytes, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything needed to load one hook of one policy."""

    policy: str
    hook: str  # the hook id, e.g. tracepoint:syscalls:sys_enter_openat
    kind: str  # tracepoint, kprobe, kretprobe, uprobe, uretprobe
    target: tuple[str, ...]  # ("sub:event",), (symbol,), (path, symbol)
    flags: tuple[tuple[str, int | str], ...]
    seeds: Seeds
    args: tuple[ArgPlan, ...]
    aggregations: tuple[AggSlot, ...]
    selector_actions: tuple[Action, ...]
    message: str = ""  # the hook's message and tags (Tetragon's), carried into its events
    tags: tuple[str, ...] = ()

    @property
    def pin_id(self) -> str:
        """Names the hook's pins (/sys/fs/bpf/weir/<pin_id>): no user text in a path."""
        return hashlib.sha256(f"{self.policy}\0{self.hook}".encode()).hexdigest()[:16]

    @property
    def entry_half(self) -> bool:
        """Saves a return probe's argument registers (codegen.entry_half), nothing else."""
        return bool(dict(self.flags).get("SAVE_ENTRY"))

    @property
    def needs_tracker(self) -> bool:
        """Reads the exec tracker's shared maps (executables, a return probe's args)."""
        flags = dict(self.flags)
        names = ("USE_EXE", "SAVE_ENTRY", "USE_ENTRY", "USE_STARTS", "USE_MARKS")
        return any(flags.get(name) for name in names)

    @property
    def posts(self) -> bool:
        return bool(dict(self.flags).get("ANY_POST"))

    @property
    def scoped(self) -> bool:
        """podSelector/namespaceSelector: runs only for the cgroups in its scope map."""
        return bool(dict(self.flags).get("USE_SCOPE"))

    def cflags(self, *, configured: bool = True) -> list[str]:
        """The compiler's flags: the shape only (configured), or every flag (specialised)."""
        flags = self.shape_flags() if configured else (*self.flags, ("CONFIGURED", 0))
        return [f"-I{BPF_DIR}", *(f"-D{name}={value}" for name, value in flags)]

    def shape_flags(self) -> tuple[tuple[str, int | str], ...]:
        """What a configured program is compiled with: everything but the configuration."""
        return (
            *((n, v) for n, v in self.flags if not configs.CONFIG_FLAG.match(n)),
            ("CONFIGURED", 1),
        )

    def shape_digest(self) -> str:
        """Programs with the same shape digest differ only in configuration and seeds."""
        text = json.dumps([self.kind, self.target, self.shape_flags()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @functools.cached_property
    def config(self) -> configs.Config:
        """What the program reads from its config map (weir.h's struct weir_config)."""
        return configs.from_flags(dict(self.flags))

    def digest(self) -> str:
        """Identifies what is loaded: same digest, same program and seeds."""
        text = json.dumps(
            [
                self.kind,
                self.target,
                self.flags,
                dataclasses.asdict(self.seeds),
                [dataclasses.asdict(a) for a in self.aggregations],
                self.message,
                self.tags,
            ],
            default=lambda b: b.hex() if isinstance(b, bytes) else str(b),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Generated:
    programs: tuple[Program, ...]
    problems: tuple[Problem, ...]


def _int_literal(value: int) -> str:
    # Hex with ULL suffix: any 64-bit pattern, negative values as two's complement.
    return f"{value & MASK64:#x}ULL"


def room(entries: int) -> int:
    """A map's capacity for ``entries``: two configurations fit while one replaces the
    other, rounded up to a power of two so small edits keep the program's shape."""
    return max(MIN_ROOM, 1 << max(0, 2 * entries - 1).bit_length())


class _Flags:
    """Collects -D flags; values must be ints or literals built from ints here."""

    def __init__(self) -> None:
        self.items: dict[str, int | str] = {}

    def set(self, name: str, value: int | str) -> None:
        if isinstance(value, str) and not value.startswith("0x"):
            raise ValueError(f"flag {name}: only integers become flags")
        self.items[name] = value


def generate(
    policy: TracingPolicy,
    rules: Sequence[AggregationRule],
    *,
    layouts: Mapping[str, list[Field] | None],
    syscall_prefix: str = "__x64_sys_",
    ringbuf_pages: int = RINGBUF_PAGES,
    kernel_layout: Mapping[str, int | str] | None = None,
    host_namespaces: Mapping[str, int | str] | None = None,
    kernel_types: btf.Types | None = None,
) -> Generated:
    """All programs of a policy. ``layouts`` maps tracepoint hook ids to their fields
    (None: no such tracepoint on this kernel); ``kernel_layout`` the running kernel's
    struct offsets (btf.kernel_layout: an offset, or why it is unknown, per flag);
    ``host_namespaces`` the node's own namespace inodes for host_ns, by /proc/1/ns name
    (or why each is unknown); ``kernel_types`` the running kernel's BTF, for args'
    resolve paths (None: the paths are not followed, e.g. checking without a kernel)."""
    kernel_layout = kernel_layout if kernel_layout is not None else {}
    host_namespaces = host_namespaces if host_namespaces is not None else {}
    programs: list[Program] = []
    problems: list[Problem] = []
    # The clocks each hook starts for duration rules: start key -> pair id.
    starts: dict[str, dict[str, int]] = {}
    for rule in rules:
        start = rule.spec.value.start if rule.spec.value.type == "duration" else None
        if start is not None:
            pair = clock_pair(policy.name, start.hook, start.key)
            starts.setdefault(start.hook, {})[start.key] = pair
    for where, hook in policy.spec.hooks_with_paths():
        path: tuple[PathPart, ...] = ("spec", *where)
        hook_rules = [r for r in rules if r.spec.hook in (None, hook.hook_id())]
        program, found = _program(
            policy.spec.scoped(),
            policy.name,
            hook,
            hook_rules,
            sorted(starts.get(hook.hook_id(), {}).items()),
            path,
            layouts.get(hook.target_id()),
            syscall_prefix,
            ringbuf_pages,
            kernel_layout,
            host_namespaces,
            kernel_types,
        )
        problems.extend(found)
        if program is not None and not found:
            programs.append(program)
            if dict(program.flags)["USE_ENTRY"]:
                programs.append(entry_half(program))
    return Generated(programs=tuple(programs), problems=tuple(problems))


def _name_id(*parts: str) -> int:
    """A 60-bit number naming something in a shared map, the same in every program and
    version that names it by the same parts."""
    return int(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:15], 16)


def clock_pair(policy: str, start_hook: str, start_key: str) -> int:
    """Names a duration's clocks in weir_starts: the start hook records under it, the
    end hook looks it up (a rule names the start hook and key, so both sides agree)."""
    return _name_id(policy, start_hook, start_key)


def _hook_key(policy: str, hook: str) -> int:
    """Names a hook's saved arguments in weir_entries: the same for every version."""
    return _name_id(policy, hook)


ENTRY_SUFFIX = ":entry"


def entry_half(program: Program) -> Program:
    """The entry probe that saves a return probe's argument registers (SAVE_ENTRY): the
    same target and args, no selectors, aggregations or events of its own."""
    values = dict(program.flags)
    for name in values:
        if configs.CONFIG_FLAG.match(name):
            values[name] = 0
    values.update(
        SAVE_ENTRY=1,
        USE_ENTRY=0,
        ANY_POST=0,
        EV_STRS=0,
        EV_ADDRS=0,
        EV_USTACK=0,
        EV_KSTACK=0,
        USE_EXE=0,
        USE_TASK=0,
        USE_CPU=0,
        USE_PID_TREE=0,
        USE_STARTS=0,
        USE_MARKS=0,
        USE_SUBSTR=0,
    )
    return dataclasses.replace(
        program,
        hook=program.hook + ENTRY_SUFFIX,
        kind=program.kind.replace("ret", ""),
        flags=tuple(sorted(values.items())),
        seeds=Seeds(),
        aggregations=(),
        selector_actions=(),
        message="",
        tags=(),
    )


def _program(
    scoped: bool,
    policy_name: str,
    hook: KProbe | Tracepoint | UProbe | RawTracepoint,
    rules: Sequence[AggregationRule],
    starts: Sequence[tuple[str, int]],
    path: tuple[PathPart, ...],
    fields: list[Field] | None,
    syscall_prefix: str,
    ringbuf_pages: int,
    kernel_layout: Mapping[str, int | str],
    host_namespaces: Mapping[str, int | str],
    kernel_types: btf.Types | None,
) -> tuple[Program | None, list[Problem]]:
    problems: list[Problem] = []
    flags = _Flags()
    for name, value in abi.enum_flags().items():
        flags.set(name, value)
    hook_id = hook.hook_id()
    kind = hook_id.split(":", 1)[0]
    syscall = isinstance(hook, KProbe) and hook.syscall
    flags.set("SYSCALL_WRAPPER", int(syscall))
    flags.set("USE_SCOPE", int(scoped))
    if isinstance(hook, Tracepoint):
        if fields is None:
            return None, [
                at(
                    path,
                    f"this kernel has no tracepoint {hook.subsystem}:{hook.event} "
                    "(see /sys/kernel/tracing/events)",
                )
            ]
        target: tuple[str, ...] = (f"{hook.subsystem}:{hook.event}",)
    elif isinstance(hook, RawTracepoint):
        target = (f"{hook.subsystem}:{hook.event}",)
    elif isinstance(hook, KProbe):
        # A syscall named as Tetragon writes it (sys_write, or with an architecture's
        # prefix: __x64_sys_write, __arm64_sys_write) or bare (write): the same syscall,
        # hooked through this node's own prefix.
        name = hook.call
        if syscall:
            for prefix in ("__x64_sys_", "__arm64_sys_", "sys_"):
                name = name.removeprefix(prefix)
        target = (f"{syscall_prefix}{name}" if syscall else hook.call,)
    else:
        # policies.hooks_with_paths gives one symbol or offset each (+0x...: an offset,
        # with its USDT semaphore's offset when it has one)
        target = (hook.path, hook.where(), *(f"{c:#x}" for c in hook.ref_ctr_offsets))

    # --- arguments -> slots (a nop arg reads nothing and takes no slot)
    declared = [arg for arg in hook.declared_args() if arg.type not in values.NOP_TYPES]
    # A return probe's args are read at entry by its entry half (``entry_half``), as in
    # Tetragon: the return half reads the saved registers, then the return value.
    with_entry = kind in {"kretprobe", "uretprobe"} and bool(hook.args)
    flags.set("SAVE_ENTRY", 0)
    flags.set("USE_ENTRY", int(with_entry))
    flags.set("HOOK_KEY", _hook_key(policy_name, hook_id) if with_entry else 0)
    arg_plans: list[ArgPlan] = []
    slots: dict[int, int] = {}  # id(arg) -> slot
    string_slots = address_slots = 0
    for slot in range(abi.MAX_ARGS):
        prefix = f"ARG{slot}"
        for suffix in (
            "KIND", "FROM", "SRC", "SIZE", "SIGNED", "SLOT", "USER", "LEN_ARG", "PATH", "DEREF",
            "OFF", "RESOLVE", "R0", "R1", "R2", "R3", "R4", "R5",
        ):  # fmt: skip
            flags.set(f"{prefix}_{suffix}", 0)
    for slot, arg in enumerate(declared):
        arg_path = (*path, "args", slot) if slot < len(hook.args) else (*path, "returnArg")
        is_return = arg is getattr(hook, "return_arg", None)
        plan, found = _arg(arg, slot, arg_path, hook, fields, is_return, kernel_types)
        if plan is not None and with_entry and not is_return:
            plan.flags["FROM"] = int(Source.SAVED)
        problems.extend(found)
        if plan is None:
            continue
        sub_slot = 0
        if plan.kind in STRING_KINDS:
            sub_slot, string_slots = string_slots, string_slots + 1
            if string_slots > abi.STR_SLOTS:
                problems.append(
                    at(arg_path, f"at most {abi.STR_SLOTS} string arguments per hook; drop one")
                )
        elif plan.kind in ADDRESS_KINDS:
            sub_slot, address_slots = address_slots, address_slots + 1
            if address_slots > abi.ADDR_SLOTS:
                problems.append(
                    at(
                        arg_path,
                        f"at most {abi.ADDR_SLOTS} sock/sockaddr arguments per hook; drop one",
                    )
                )
        for name, value in plan.flags.items():
            flags.set(f"ARG{slot}_{name}", value)
        flags.set(f"ARG{slot}_KIND", int(plan.kind))
        flags.set(f"ARG{slot}_SLOT", sub_slot)
        slots[id(arg)] = slot
        arg_plans.append(ArgPlan(slot=slot, name=arg.name(), type=arg.type, kind=plan.kind))
    for slot, arg in enumerate(declared):
        if arg.type == "char_buf" and arg.size_arg_index is not None:
            # 1-based, as in Tetragon: sizeArgIndex 3 is the argument at index 2.
            length = next((a for a in declared if a.index == arg.size_arg_index - 1), None)
            if length is None or length.type not in values.INTEGER_TYPES:
                problems.append(
                    at(
                        (*path, "args", slot, "sizeArgIndex"),
                        "must name an integer "
                        "argument that is also declared in args (read before it)",
                    )
                )
            else:
                flags.set(f"ARG{slot}_LEN_ARG", slots.get(id(length), 0))
        elif arg.type == "char_buf" and arg.return_copy:  # as long as the return value
            flags.set(f"ARG{slot}_LEN_ARG", abi.LEN_RETURN)

    # --- selectors -> matchers
    seeds = _SeedBuilder()
    actions: list[Action] = []
    uses_exe = uses_task = uses_pid_tree = False
    flags.set("NUM_SELECTORS", len(hook.selectors))
    for s in range(abi.MAX_SELECTORS):
        flags.set(f"S{s}_ACTION", 0)
        flags.set(f"S{s}_RATE_NS", 0)
        flags.set(f"S{s}_USTACK", 0)
        flags.set(f"S{s}_KSTACK", 0)
        for m in range(abi.MAX_MATCHERS):
            for suffix in ("OP", "NEG", "ARG", "VAL"):
                flags.set(f"S{s}_M{m}_{suffix}", 0)
        for b in range(abi.MAX_BINARIES):
            flags.set(f"S{s}_B{b}_OP", 0)
            flags.set(f"S{s}_B{b}_NEG", 0)
        for a in range(abi.MAX_MARK_ACTIONS):
            for suffix in ("ID", "ARG", "KEY", "OP"):
                flags.set(f"S{s}_A{a}_{suffix}", 0)
    uses_marks = False
    by_label = {plan.name: plan for plan in arg_plans}
    for s, selector in enumerate(hook.selectors):
        sel_path = (*path, "selectors", s)
        action = Action.POST if selector.action().action == "Post" else Action.NOPOST
        actions.append(action)
        flags.set(f"S{s}_ACTION", int(action))
        chosen = selector.action()
        if action == Action.POST:
            if chosen.rate_limit is not None:
                try:
                    rate = values.parse_duration_ns(chosen.rate_limit)
                except ValueError:
                    rate = 0  # reported by weir_api.checks
                scope = abi.RateScope[(chosen.rate_limit_scope or "process").upper()]
                if rate:
                    rate |= int(scope) << abi.RATE_SCOPE_SHIFT
                flags.set(f"S{s}_RATE_NS", _int_literal(rate))
            flags.set(f"S{s}_USTACK", int(chosen.user_stack_trace))
            flags.set(f"S{s}_KSTACK", int(chosen.kernel_stack_trace))
        returned = getattr(hook, "return_arg", None)
        arg_matches = [
            (("matchArgs", m), hook.arg_by_ref(match.index, match.label), match)
            for m, match in enumerate(selector.match_args)
        ] + [
            (("matchReturnArgs", m), returned, match)
            for m, match in enumerate(selector.match_return_args)
        ]
        for m, (where, found_arg, match) in enumerate(arg_matches[: abi.MAX_MATCHERS]):
            if found_arg is None or id(found_arg) not in slots:
                continue  # reported by weir_api.checks
            matcher = s * abi.MAX_MATCHERS + m
            found = _matcher(
                flags,
                seeds,
                f"S{s}_M{m}",
                matcher,
                match.operator,
                match.values,
                found_arg,
                slots[id(found_arg)],
                (*sel_path, *where),
                SYSCALL_ARCHES.get(syscall_prefix),
            )
            problems.extend(found)
            if match.operator in values.CRED_OPERATORS:  # against the task's permitted set
                uses_task = True
        task_matchers = _task_matchers(selector, host_namespaces, (*sel_path,))
        uses_task = uses_task or bool(task_matchers)
        # the *Changes compare with what the exec tracker recorded when the process started
        changes = selector.match_capability_changes or selector.match_namespace_changes
        uses_exe = uses_exe or bool(changes)
        for m, (op, arg_value, value, negated, set_values, problem) in enumerate(
            task_matchers, start=len(arg_matches)
        ):
            if problem is not None:
                problems.append(problem)
                continue
            if m >= abi.MAX_MATCHERS:
                continue  # reported by weir_api.checks
            matcher = s * abi.MAX_MATCHERS + m
            flags.set(f"S{s}_M{m}_OP", int(op))
            flags.set(f"S{s}_M{m}_ARG", arg_value)
            flags.set(f"S{s}_M{m}_VAL", _int_literal(value))
            flags.set(f"S{s}_M{m}_NEG", int(negated))
            for number in set_values:
                seeds.integers.append((matcher, number & MASK64))
            if op == Op.PID and value & 2:
                uses_pid_tree = True
        # matchMarks: one lookup each, in the shared marks map
        first = len(arg_matches) + len(task_matchers)
        for m, mark in enumerate(selector.match_marks, start=first):
            if m >= abi.MAX_MATCHERS:
                continue  # reported by weir_api.checks
            uses_marks = True
            clock, arg_slot = _clock(mark.key, by_label)
            if clock is None:
                continue  # reported by weir_api.checks
            flags.set(f"S{s}_M{m}_OP", int(Op.MARK))
            flags.set(f"S{s}_M{m}_ARG", arg_slot)
            tagged = (arg_slot << abi.MARK_ID_BITS) | mark_id(policy_name, mark.mark)
            flags.set(f"S{s}_M{m}_VAL", _int_literal(tagged))
            flags.set(f"S{s}_M{m}_NEG", int(mark.operator == "NotIn"))
        # Mark, Unmark, TrackSock, UntrackSock: set or clear when the selector matches
        marking = checks.mark_actions(hook, selector)
        uses_marks = _mark_actions(flags, s, marking, by_label, policy_name) or uses_marks
        for b, binary in enumerate(selector.match_binaries):
            uses_exe = True
            matcher = 64 + s * abi.MAX_BINARIES + b
            # OP 2: followChildren, the nearest parents' executables too (read_task's tree)
            flags.set(f"S{s}_B{b}_OP", 2 if binary.follow_children else 1)
            flags.set(f"S{s}_B{b}_NEG", int(binary.operator.startswith("Not")))
            if binary.follow_children:
                uses_task = uses_pid_tree = True
            exact = binary.operator in {"In", "NotIn"}
            for text in binary.values:
                data = values.parse_string(text)
                seeds.string(matcher, data + b"\0" if exact else data)
    if not hook.selectors:  # every call matches, as selector 0: the hook's returnArgAction
        marking = checks.mark_actions(hook, Selector())
        uses_marks = _mark_actions(flags, 0, marking, by_label, policy_name)

    # --- aggregations
    agg_slots: list[AggSlot] = []
    for n in range(abi.MAX_AGGREGATIONS):
        for suffix in ("ON", "VALUE", "CGROUP", "BINARY", "NBOUNDS", "DUR", "DARG", "DID"):
            flags.set(f"AGG{n}_{suffix}", 0)
        flags.set(f"AGG{n}_SID", n)
        for suffix in ("KARG0", "KARG1", "ACLASS", "VARG"):
            flags.set(f"AGG{n}_{suffix}", -1)
        flags.set(f"AGG{n}_MAX", 1)
    if len(rules) > abi.MAX_AGGREGATIONS:
        names = ", ".join(r.name for r in rules)
        problems.append(
            at(
                path,
                f"{len(rules)} AggregationRules fold this hook ({names}); at "
                f"most {abi.MAX_AGGREGATIONS}",
            )
        )
    flags.set("USE_MARKS", int(uses_marks))
    for n, rule in enumerate(rules[: abi.MAX_AGGREGATIONS]):
        slot_plan, found = _aggregation(flags, seeds, n, rule, by_label, policy_name)
        problems.extend(found)
        if slot_plan is not None:
            agg_slots.append(slot_plan)
            uses_exe = uses_exe or "binary" in slot_plan.group_by
    # --- clocks this hook starts for durations (of its own rules or another hook's)
    for n in range(abi.MAX_STARTS):
        flags.set(f"MK{n}_KEY", int(Clock.NONE))
        flags.set(f"MK{n}_ARG", 0)
        flags.set(f"MK{n}_ID", 0)
    if len(starts) > abi.MAX_STARTS:
        problems.append(
            at(
                path,
                f"duration rules start clocks under {len(starts)} keys on this hook; at most "
                f"{abi.MAX_STARTS}",
            )
        )
    for n, (key, pair) in enumerate(starts[: abi.MAX_STARTS]):
        clock, arg_slot = _clock(key, by_label)
        if clock is None:
            problems.append(at(path, f"a duration starts here keyed by {key}: no such int arg"))
            continue
        flags.set(f"MK{n}_KEY", int(clock))
        flags.set(f"MK{n}_ARG", arg_slot)
        flags.set(f"MK{n}_ID", _int_literal(pair))
    durations = any(a.seconds for a in agg_slots)
    flags.set("USE_STARTS", int(bool(starts) or durations))
    posts = [a for a in actions if a == Action.POST] or (
        [Action.POST] if not hook.selectors else []
    )
    flags.set("ANY_POST", int(bool(posts)))
    ustack = bool(posts) and any(sel.action().user_stack_trace for sel in hook.selectors)
    kstack = bool(posts) and any(sel.action().kernel_stack_trace for sel in hook.selectors)
    flags.set("EV_STRS", string_slots if posts else 0)
    flags.set("EV_ADDRS", address_slots if posts else 0)
    flags.set("EV_USTACK", limits.USER_STACK_FRAMES if ustack else 0)
    flags.set("EV_KSTACK", limits.KERNEL_STACK_FRAMES if kstack else 0)
    flags.set("RINGBUF_PAGES", ringbuf_pages)
    flags.set("RATE_LIMIT_ENTRIES", limits.RATE_LIMIT_ENTRIES)
    uses_exe = uses_exe or bool(posts)
    flags.set("USE_EXE", int(uses_exe))
    # Each matcher's (op, arg), for what a string slot needs before the selectors run.
    matchers = [
        (int(op_value), int(flags.items[name.removesuffix("_OP") + "_ARG"]))
        for name, op_value in flags.items.items()
        if name.endswith("_OP") and "_M" in name
    ]

    def slot_bit(arg_slot: int) -> int:
        return 1 << int(flags.items[f"ARG{arg_slot}_SLOT"])

    reversed_slots = 0
    searched_slots = 0  # bit n: slot n searched for SubString; bit 2+n: lower-cased
    for op_value, arg_slot in matchers:
        if op_value == Op.STR_POSTFIX:
            reversed_slots |= slot_bit(arg_slot)
        elif op_value == Op.STR_SUB:
            searched_slots |= slot_bit(arg_slot)
        elif op_value == Op.STR_SUB_ICASE:
            searched_slots |= slot_bit(arg_slot) << 2
    flags.set("REV_SLOTS", reversed_slots)
    flags.set("SUB_SLOTS", searched_slots)
    flags.set("USE_SUBSTR", int(bool(searched_slots)))
    # A file, path or fd arg's path is built (a walk of its dentries) only when a string
    # matcher tests it or an event carries it; FileType alone reads the inode's mode.
    string_ops = {Op.STR, Op.STR_POSTFIX, Op.STR_SUB, Op.STR_SUB_ICASE}
    tested = {arg_slot for op_value, arg_slot in matchers if op_value in string_ops}
    for read in arg_plans:
        if read.kind in {Kind.FILE, Kind.PATH, Kind.FD}:
            flags.set(f"ARG{read.slot}_PATH", int(bool(posts) or read.slot in tested))
    # Struct offsets from the kernel's BTF, for the groups this program reads (0 for the
    # rest, so that programs which read none keep one shape).
    users: dict[str, tuple[PathPart, ...] | None] = {group: None for group in btf.GROUPS}
    for arg_plan in reversed(arg_plans):
        at_slot = arg_plan.slot
        where = (*path, "args", at_slot) if at_slot < len(hook.args) else (*path, "returnArg")
        group = LAYOUT_GROUPS.get(arg_plan.kind)
        if group is not None:
            users[group] = where
        if arg_plan.type in STRUCT_READS:
            users[STRUCT_READS[arg_plan.type][1]] = where
    if uses_task:
        users["task"] = (*path, "selectors")
    for rule in rules[: abi.MAX_AGGREGATIONS]:
        if rule.spec.value.type == "cpu_time":
            users["cpu"] = ("aggregationrules", rule.name, "spec", "value")
    for group, group_fields in btf.GROUPS.items():
        flags.set(f"USE_{group.upper()}", int(users[group] is not None))
        for name in group_fields:
            flags.set(name, 0)
        user = users[group]
        if user is None:
            continue
        unknown = [kernel_layout.get(name, "no kernel layout given") for name in group_fields]
        reasons = [reason for reason in unknown if isinstance(reason, str)]
        if reasons:
            problems.append(
                at(user, f"{LAYOUT_USERS[group]} needs the kernel's layout: {reasons[0]}")
            )
            continue
        for name in group_fields:
            flags.set(name, int(kernel_layout[name]))
    for arg_plan in arg_plans:  # a struct arg's member, at the running kernel's offset
        if arg_plan.type in STRUCT_READS:
            offset = kernel_layout.get(STRUCT_READS[arg_plan.type][3])
            flags.set(f"ARG{arg_plan.slot}_OFF", offset if isinstance(offset, int) else 0)
    flags.set("USE_PID_TREE", int(uses_pid_tree))
    # One map per value shape; each slot's series plus its pre-seeded overflow entry.
    plain = [a.max_series + 1 for a in agg_slots if a.value < ValueKind.HIST_EXP2]
    hists = [a.max_series + 1 for a in agg_slots if a.value >= ValueKind.HIST_EXP2]
    # Capacities (not preallocated) with room for the next configuration's entries.
    # At least one rule's default maxSeries, so that adding or dropping a rule, or a
    # smaller maxSeries, keeps the shape (the series counters hold maxSeries exactly).
    flags.set("AGG_PLAIN_MAX", room(max(sum(plain), limits.MAX_SERIES_DEFAULT + 1)))
    flags.set("AGG_HIST_MAX", room(max(sum(hists), limits.MAX_SERIES_DEFAULT + 1)))
    built = seeds.build()
    flags.set("STR_LPM_MAX", room(len(built.strings)))
    flags.set("SUB_LPM_MAX", room(len(built.substrings)))
    flags.set("ADDR_LPM_MAX", room(len(built.addresses)))
    flags.set("INT_SET_MAX", room(len(built.integers)))
    flags.set("RANGE_LPM_MAX", room(sum(len(range_prefixes(lo, hi)) for _, lo, hi in built.ranges)))
    program = Program(
        policy=policy_name,
        hook=hook_id,
        kind=kind,
        target=target,
        flags=tuple(sorted(flags.items.items())),
        seeds=built,
        args=tuple(arg_plans),
        aggregations=tuple(agg_slots),
        selector_actions=tuple(actions),
        message=hook.message,
        tags=tuple(hook.tags),
    )
    return program, problems


# One matchPIDs, matchNamespaces or matchCapabilities entry as a matcher: the operator,
# its ARG and VAL fields, whether it is negated, the integer set it looks up, and what is
# wrong with it (host_ns that cannot be resolved).
_TaskMatcher = tuple[Op, int, int, bool, tuple[int, ...], Problem | None]


def _parsed(texts: Sequence[str], parse: Callable[[str], int]) -> list[int]:
    """The values that parse (weir_api.checks reports the others)."""
    out = []
    for text in texts:
        with contextlib.suppress(ValueError):
            out.append(parse(text))
    return out


def _task_matchers(
    selector: Selector,
    host_namespaces: Mapping[str, int | str],
    sel_path: tuple[PathPart, ...],
) -> list[_TaskMatcher]:
    out: list[_TaskMatcher] = []
    pid = functools.partial(values.parse_int, arg_type="uint32")
    for pids in selector.match_pids:
        # VAL: bit 0 the pid namespace's numbering, bit 1 followForks (hook.bpf.c).
        value = int(pids.is_namespace_pid) | (2 if pids.follow_forks else 0)
        found = tuple(_parsed(pids.values, pid))
        out.append((Op.PID, 0, value, pids.operator == "NotIn", found, None))
    for m, entry in enumerate(selector.match_namespaces):
        which = abi.Namespace[entry.namespace]
        inode = host_namespaces.get(
            abi.NAMESPACE_FILES[which], "the node's namespaces were not read"
        )
        given = [text for text in entry.values if text.strip() != "host_ns"]
        numbers = _parsed(given, pid)
        problem = None
        if len(given) < len(entry.values):
            if isinstance(inode, str):
                v = [text.strip() for text in entry.values].index("host_ns")
                problem = at((*sel_path, "matchNamespaces", m, "values", v), f"host_ns: {inode}")
            else:
                numbers.append(inode)
        out.append((Op.NS, 0, int(which), entry.operator == "NotIn", tuple(numbers), problem))
    capability_filters = [
        (Op.CAPS, "matchCapabilities", c, caps)
        for c, caps in enumerate(selector.match_capabilities)
    ] + [
        (Op.CAPS_CHANGED, "matchCapabilityChanges", c, caps)
        for c, caps in enumerate(selector.match_capability_changes)
    ]
    for op, field, c, caps in capability_filters:
        mask = sum({1 << bit for bit in _parsed(caps.values, values.parse_capability)})
        negated = caps.operator == "NotIn"
        out.append((op, int(abi.CapSet[caps.type]), mask, negated, (), None))
        if caps.is_namespace_capability:
            # Tetragon's isNamespaceCapability: only outside the host's user namespace,
            # i.e. one more filter, the user namespace NotIn the host's.
            inode = host_namespaces.get(
                abi.NAMESPACE_FILES[abi.Namespace.User], "the node's namespaces were not read"
            )
            problem = None
            if isinstance(inode, str):
                where = (*sel_path, field, c, "isNamespaceCapability")
                problem = at(where, f"needs the host's user namespace: {inode}")
            user = int(abi.Namespace.User)
            found = () if isinstance(inode, str) else (inode,)
            out.append((Op.NS, 0, user, True, found, problem))
    for changes in selector.match_namespace_changes:
        bits = sum({1 << int(abi.Namespace[name]) for name in changes.values})
        out.append((Op.NS_CHANGED, 0, bits, changes.operator == "NotIn", (), None))
    return out


@dataclasses.dataclass
class _ArgFlags:
    kind: Kind
    flags: dict[str, int]


def _arg(
    arg: Arg,
    slot: int,
    path: tuple[PathPart, ...],
    hook: KProbe | Tracepoint | UProbe | RawTracepoint,
    fields: list[Field] | None,
    is_return: bool,
    kernel_types: btf.Types | None = None,
) -> tuple[_ArgFlags | None, list[Problem]]:
    bits, signed = values.INTEGER_TYPES.get(arg.type, (64, False))
    if isinstance(hook, Tracepoint):
        assert fields is not None
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
            return _ArgFlags(Kind.INT, {**base, "SIZE": size, "SIGNED": int(signed)}), []
        if arg.type in {"string", "filename"}:
            if field.is_data_loc:
                return _ArgFlags(Kind.STR_DATALOC, base), []
            if field.inline_array is not None:
                size = min(field.inline_array, abi.MAX_STR)
                return _ArgFlags(Kind.STR_INLINE, {**base, "SIZE": size}), []
            if field.is_pointer:
                is_user = int(user or arg.type == "filename")
                return _ArgFlags(Kind.STR_PTR, {**base, "USER": is_user}), []
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
            return _ArgFlags(Kind.FD, {**base, "SIZE": min(field.size, 4)}), []
        if not field.is_pointer:
            return None, [
                at(path, f"field {field.name} is {field.type}; {arg.type} needs a pointer field")
            ]
        kind = {"sock": Kind.SOCK, "skb": Kind.SKB, **FILE_KINDS}.get(arg.type, Kind.SOCKADDR)
        return _ArgFlags(kind, {**base, "USER": int(user and kind == Kind.SOCKADDR)}), []
    # kprobes and uprobes: registers
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
        return _ArgFlags(Kind.INT, {**base, "DEREF": int(Deref.LOAD)}), []
    if arg.type in STRUCT_READS:  # ARGn_OFF comes from the kernel's layout (generate)
        kind, _, deref, _, read = STRUCT_READS[arg.type]
        return _ArgFlags(kind, {**base, "DEREF": int(deref), **read}), []
    if arg.type in values.INTEGER_TYPES:
        return _ArgFlags(Kind.INT, {**base, "SIZE": bits // 8, "SIGNED": int(signed)}), []
    if arg.type == "string":
        return _ArgFlags(Kind.STR_PTR, {**base, "USER": int(user)}), []
    if arg.type == "filename":
        return _ArgFlags(Kind.STR_PTR, {**base, "USER": 1}), []
    if arg.type == "char_buf":
        return _ArgFlags(Kind.CHAR_BUF, {**base, "USER": 1}), []
    if arg.type == "sock":
        return _ArgFlags(Kind.SOCK, base), []
    if arg.type == "skb":
        return _ArgFlags(Kind.SKB, base), []
    if arg.type in FILE_KINDS:
        return _ArgFlags(FILE_KINDS[arg.type], base), []
    if arg.type == "fd":
        return _ArgFlags(Kind.FD, {**base, "SIZE": 4}), []
    return _ArgFlags(Kind.SOCKADDR, {**base, "USER": int(user)}), []


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
) -> tuple[_ArgFlags | None, list[Problem]]:
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
        return _ArgFlags(kind, flags), []
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
    return _ArgFlags(kind, flags), []


def _field(arg: Arg, fields: list[Field]) -> Field | None:
    """A tracepoint arg's field: by name, or by ``index``, which counts the format's fields
    from the first, common_* included, as Tetragon does (raw_syscalls:sys_enter's ``id``
    is index 4)."""
    if arg.field is not None:
        return next((f for f in fields if f.name == arg.field), None)
    if arg.index is not None:
        return next((f for f in fields if f.position == arg.index), None)
    return None


class _SeedBuilder:
    def __init__(self) -> None:
        self.strings: list[tuple[int, bytes, int]] = []
        self.addresses: list[tuple[int, bytes, int]] = []
        self.integers: list[tuple[int, int]] = []
        self.ranges: list[tuple[int, int, int]] = []
        self.bounds: list[tuple[int, int]] = []
        self.substrings: list[tuple[int, bytes]] = []  # matcher, value

    def string(self, matcher: int, data: bytes) -> None:
        self.strings.append((matcher, data, 32 + 8 * len(data)))

    def substring_masks(self) -> tuple[tuple[bytes, int], ...]:
        masks = dict.fromkeys(data for _, data in self.substrings)
        return tuple(
            (data, sum({1 << m for m, other in self.substrings if data.startswith(other)}))
            for data in masks
        )

    def build(self) -> Seeds:
        return Seeds(
            strings=tuple(dict.fromkeys(self.strings)),
            addresses=tuple(dict.fromkeys(self.addresses)),
            integers=tuple(dict.fromkeys(self.integers)),
            ranges=tuple(self.ranges),
            bounds=tuple(self.bounds),
            substrings=self.substring_masks(),
        )


_STRING_OPS = {
    "Equal": (Op.STR, False),
    "NotEqual": (Op.STR, True),
    "Prefix": (Op.STR, False),
    "NotPrefix": (Op.STR, True),
    "Postfix": (Op.STR_POSTFIX, False),
    "NotPostfix": (Op.STR_POSTFIX, True),
    "SubString": (Op.STR_SUB, False),
    "SubStringIgnCase": (Op.STR_SUB_ICASE, False),
}
_ADDRESS_OPS = {
    "DAddr": (Op.DADDR, False),
    "NotDAddr": (Op.DADDR, True),
    "SAddr": (Op.SADDR, False),
    "NotSAddr": (Op.SADDR, True),
    "DPort": (Op.DPORT, False),
    "NotDPort": (Op.DPORT, True),
    "SPort": (Op.SPORT, False),
    "NotSPort": (Op.SPORT, True),
    "DPortPriv": (Op.DPORT, False),
    "NotDPortPriv": (Op.DPORT, True),
    "SPortPriv": (Op.SPORT, False),
    "NotSPortPriv": (Op.SPORT, True),
}
_SOCKET_OPS = {"Family": Op.FAMILY, "Protocol": Op.PROTOCOL, "State": Op.STATE}


def _matcher(
    flags: _Flags,
    seeds: _SeedBuilder,
    prefix: str,
    matcher: int,
    operator: str,
    texts: list[str],
    arg: Arg,
    slot: int,
    path: tuple[PathPart, ...],
    arch: str | None,
) -> list[Problem]:
    try:
        parsed = values.parse_match_values(operator, arg.type, texts, arch)
    except values.IndexedValueError as error:
        try:
            values.parse_match_values(operator, arg.type, texts)
        except values.IndexedValueError:
            return []  # reported by weir_api.checks
        return [at((*path, "values", error.index), str(error))]  # not on this architecture
    flags.set(f"{prefix}_ARG", slot)
    negated = operator in values.NEGATED_OPERATORS
    operator = values.canonical(operator)
    if operator in values.FILE_TYPE_OPERATORS:
        op = Op.FILE_TYPE
        for value in parsed.integers:
            seeds.integers.append((matcher, value))
    elif operator in values.CRED_OPERATORS:  # the mask of the listed capabilities
        op = Op.CAPS_GAINED
        flags.set(f"{prefix}_VAL", _int_literal(sum({1 << bit for bit in parsed.integers})))
    elif arg.type in values.STRING_TYPES:
        op, negated = _STRING_OPS[operator]
        for data in parsed.strings:
            if operator in {"Equal", "NotEqual"}:
                seeds.string(matcher, data + b"\0")
            elif op == Op.STR_POSTFIX:
                seeds.string(matcher, data[::-1])
            elif op == Op.STR_SUB:
                seeds.substrings.append((matcher, data))
            elif op == Op.STR_SUB_ICASE:
                seeds.substrings.append((matcher, data.lower()))  # ASCII, as the kernel
            else:
                seeds.string(matcher, data)
    elif operator in _SOCKET_OPS:
        op = _SOCKET_OPS[operator]
        for value in parsed.integers:
            seeds.integers.append((matcher, value))
    elif operator in _ADDRESS_OPS:
        op, negated = _ADDRESS_OPS[operator]
        if arg.type == "sockaddr" and op in {Op.SADDR, Op.SPORT}:
            return [
                at(
                    (*path, "operator"),
                    f"{operator} needs a sock argument; a sockaddr holds "
                    "only the destination (DAddr, DPort)",
                )
            ]
        for network in parsed.networks:
            data, bits = abi.mapped16(network)
            seeds.addresses.append((matcher, data, 32 + bits))
        _ranges(seeds, matcher, parsed.ranges, signed=False)
    elif operator in {"Equal", "NotEqual"} and len(parsed.integers) == 1:
        op = Op.EQ  # specialised: one value is a compare against a constant
        flags.set(f"{prefix}_VAL", _int_literal(parsed.integers[0]))
    elif operator in {"Equal", "NotEqual"}:
        op = Op.INT_SET
        for value in parsed.integers:
            seeds.integers.append((matcher, value & MASK64))
    elif operator in {"GT", "LT", "Mask"}:
        op = {"GT": Op.GT, "LT": Op.LT, "Mask": Op.MASK}[operator]
        flags.set(f"{prefix}_VAL", _int_literal(parsed.integers[0]))
    else:  # InRange, NotInRange
        op = Op.RANGE
        _ranges(seeds, matcher, parsed.ranges, signed=values.INTEGER_TYPES[arg.type][1])
    if len(parsed.ranges) > abi.MAX_RANGES:
        return [
            at(
                (*path, "values"),
                f"{len(parsed.ranges)} ranges; at most {abi.MAX_RANGES} "
                "per matchArgs entry (split it across selectors)",
            )
        ]
    flags.set(f"{prefix}_OP", int(op))
    flags.set(f"{prefix}_NEG", int(negated))
    return []


def _ranges(
    seeds: _SeedBuilder, matcher: int, ranges: tuple[tuple[int, int], ...], *, signed: bool
) -> None:
    bias = 1 << 63 if signed else 0
    for low, high in ranges[: abi.MAX_RANGES]:
        seeds.ranges.append((matcher, (low & MASK64) ^ bias, (high & MASK64) ^ bias))


def range_prefixes(low: int, high: int, bits: int = 64) -> list[tuple[int, int]]:
    """The fewest (value, prefix length) pairs whose prefixes cover exactly low..high."""
    out = []
    while low <= high:
        size = (low & -low).bit_length() - 1 if low else bits  # the alignment of low
        while size > 0 and low + (1 << size) - 1 > high:
            size -= 1
        out.append((low, bits - size))
        low += 1 << size
    return out


def _mark_actions(
    flags: _Flags,
    s: int,
    actions: Sequence[tuple[MatchAction, str]],
    by_label: Mapping[str, ArgPlan],
    policy_name: str,
) -> bool:
    """Selector ``s``'s mark actions (with their keys) as its S<s>_A<a>_* flags; whether it
    has any."""
    for a, (marking, key) in enumerate(actions[: abi.MAX_MARK_ACTIONS]):
        clock, arg_slot = _clock(key, by_label)
        if clock is None:
            continue  # reported by weir_api.checks
        name = marking.mark or SOCK_MARK
        setting = marking.action in ("Mark", "TrackSock")
        flags.set(f"S{s}_A{a}_OP", int(MarkOp.SET if setting else MarkOp.CLEAR))
        flags.set(f"S{s}_A{a}_KEY", int(clock))
        flags.set(f"S{s}_A{a}_ARG", arg_slot)
        flags.set(f"S{s}_A{a}_ID", _int_literal(mark_id(policy_name, name)))
    return bool(actions)


# Kinds whose raw value can key a mark or a clock: an integer, an object's address, an fd.
_KEY_KINDS = frozenset({Kind.INT, Kind.SOCK, Kind.SKB, Kind.FILE, Kind.PATH, Kind.FD})


def _clock(key: str, by_label: Mapping[str, ArgPlan]) -> tuple[Clock | None, int]:
    """A mark's or clock's key (thread, process, arg:LABEL) as CLOCK_* and the key's
    index in the program's sc->raw (an arg slot, KEY_THREAD or KEY_PROCESS)."""
    if key == "thread":
        return Clock.THREAD, abi.KEY_THREAD
    if key == "process":
        return Clock.PROCESS, abi.KEY_PROCESS
    plan = by_label.get(key.removeprefix("arg:"))
    if plan is None or plan.kind not in _KEY_KINDS:
        return None, 0  # reported by weir_api.checks
    return Clock.ARG, plan.slot


def mark_id(policy: str, name: str) -> int:
    """Names a policy's mark in weir_marks (every hook of the policy computes the same)."""
    return _name_id(policy, "mark", name)


def _aggregation(
    flags: _Flags,
    seeds: _SeedBuilder,
    n: int,
    rule: AggregationRule,
    by_label: Mapping[str, ArgPlan],
    policy_name: str,
) -> tuple[AggSlot | None, list[Problem]]:
    spec = rule.spec
    path: tuple[PathPart, ...] = ("aggregationrules", rule.name, "spec")
    problems: list[Problem] = []
    key_fields: list[tuple[str, str]] = []
    group_args = 0
    for index, key in enumerate(spec.group_by):
        kind, _, label = key.partition(":")
        if kind in agg_api.CGROUP_KEYS:
            flags.set(f"AGG{n}_CGROUP", 1)
            key_fields.append((key, "cgroup"))
        elif kind == "binary":
            flags.set(f"AGG{n}_BINARY", 1)
            key_fields.append((key, "binary"))
        elif kind == "node":
            key_fields.append((key, "node"))
        elif label not in by_label:
            problems.append(at((*path, "groupBy", index), f"no arg labelled {label!r} here"))
        elif kind == "arg":
            if group_args >= abi.MAX_GROUP_ARGS:
                problems.append(
                    at(
                        (*path, "groupBy", index),
                        f"at most {abi.MAX_GROUP_ARGS} arg: keys per rule",
                    )
                )
                continue
            flags.set(f"AGG{n}_KARG{group_args}", by_label[label].slot)
            key_fields.append((key, f"arg{group_args}"))
            group_args += 1
        else:  # addressClass
            flags.set(f"AGG{n}_ACLASS", by_label[label].slot)
            key_fields.append((key, "aclass"))
    value = spec.value
    bounds: tuple[int, ...] = ()
    seconds = value.seconds()
    if value.type == "cpu_time":
        # The thread's last seen CPU time, in weir_starts under the rule's own pair id.
        flags.set(f"AGG{n}_DUR", int(Clock.CPU))
        flags.set(f"AGG{n}_DARG", abi.KEY_THREAD)
        flags.set(f"AGG{n}_DID", _int_literal(_name_id(policy_name, "cpu_time", rule.name)))
    elif seconds and value.start is not None:
        clock, arg_slot = _clock(value.duration_key(), by_label)
        if clock is None:
            problems.append(at((*path, "value", "key"), "no int arg by that label here"))
        else:
            flags.set(f"AGG{n}_DUR", int(clock))
            flags.set(f"AGG{n}_DARG", arg_slot)
            pair = clock_pair(policy_name, value.start.hook, value.start.key)
            flags.set(f"AGG{n}_DID", _int_literal(pair))
    if value.type == "count":
        kind_value = ValueKind.COUNT
    elif value.type == "sum" or (seconds and not value.histogram()):
        kind_value = ValueKind.SUM
    elif value.buckets is not None and value.buckets.type == "explicit":
        kind_value = ValueKind.HIST_EXPLICIT
        # A duration's bounds are seconds; the kernel compares nanoseconds.
        scale = 1_000_000_000 if seconds else 1
        bounds = tuple(round(b * scale) for b in value.buckets.bounds)
        if len(bounds) > abi.MAX_BOUNDS:
            problems.append(at((*path, "value", "buckets", "bounds"), f"at most {abi.MAX_BOUNDS}"))
        for i, bound in enumerate(bounds[: abi.MAX_BOUNDS]):
            seeds.bounds.append((n * abi.MAX_BOUNDS + i, bound))
    else:
        kind_value = ValueKind.HIST_EXP2
    if value.arg is not None:
        if value.arg not in by_label:
            problems.append(at((*path, "value", "arg"), f"no arg labelled {value.arg!r} here"))
        else:
            flags.set(f"AGG{n}_VARG", by_label[value.arg].slot)
    flags.set(f"AGG{n}_ON", 1)
    flags.set(f"AGG{n}_VALUE", int(kind_value))
    flags.set(f"AGG{n}_NBOUNDS", len(bounds))
    flags.set(f"AGG{n}_MAX", spec.max_series)
    slot = AggSlot(
        slot=n,
        rule=rule.name,
        metric=spec.metric.name,
        help=spec.metric.help,
        value=kind_value,
        group_by=tuple(spec.group_by),
        key_fields=tuple(key_fields),
        bounds=bounds,
        max_series=spec.max_series,
        seconds=seconds,
    )
    return slot, problems


def base_cflags() -> list[str]:
    """Flags every weir program needs: the include path and the enumerations."""
    return [f"-I{BPF_DIR}", *(f"-D{name}={value}" for name, value in abi.enum_flags().items())]


def source_text(name: str) -> str:
    """A file of bpf/ (the C is never generated, only specialised by flags)."""
    return (BPF_DIR / name).read_text()
