"""Policy → programs: the flags and map seeds that configure bpf/hook.bpf.c.

Pure. For every hook of a policy this produces a ``programs.Program``: integer flags that
say which arguments to read and how (its shape, ``shape_flags``: what the
compiler sees), which matchers each selector runs and which aggregations to fold
into (its configuration, ``config``: what the config map holds), plus the
``programs.Seeds`` (strings, CIDRs, integer sets, ranges, bucket bounds) written into the
maps after load. No user-supplied string is ever placed in C text or in a flag:
flags are built from parsed integers and enumerations only, which
``programs.Program.flags`` enforces.

Limits of the program's layout (8 args, 2 string and 2 address args, 8
selectors of 8 matchArgs, 4 aggregations per hook, 16 ranges per matcher)
that the API schema does not already enforce come back as ``Problem``s with
field paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from weir_agent.spec import abi, aggregations, arguments, btf, programs, selectors
from weir_agent.spec.abi import Action, Clock, Kind, Op, Source, ValueKind
from weir_agent.spec.formats import Field
from weir_api import checks, limits, values
from weir_api.aggregations import AggregationRule
from weir_api.policies import (
    Arg,
    KProbe,
    RawTracepoint,
    Selector,
    Tracepoint,
    TracingPolicy,
    UProbe,
)
from weir_api.problems import PathPart, Problem, at


def generate(
    policy: TracingPolicy,
    rules: Sequence[AggregationRule],
    *,
    layouts: Mapping[str, list[Field] | None],
    syscall_prefix: str = "__x64_sys_",
    ringbuf_pages: int = programs.RINGBUF_PAGES,
    kernel_layout: Mapping[str, int | str] | None = None,
    host_namespaces: Mapping[str, int | str] | None = None,
    kernel_types: btf.Types | None = None,
    cpus: int = 1,
) -> programs.Generated:
    """All programs of a policy. ``layouts`` maps tracepoint hook ids to their fields
    (None: no such tracepoint on this kernel); ``kernel_layout`` the running kernel's
    struct offsets (btf.kernel_layout: an offset, or why it is unknown, per flag);
    ``host_namespaces`` the node's own namespace inodes for host_ns, by /proc/1/ns name
    (or why each is unknown); ``kernel_types`` the running kernel's BTF, for args'
    resolve paths (None: the paths are not followed, e.g. checking without a kernel);
    ``cpus`` the node's possible CPUs (a per-CPU map holds a value for each)."""
    kernel_layout = kernel_layout if kernel_layout is not None else {}
    host_namespaces = host_namespaces if host_namespaces is not None else {}
    made: list[programs.Program] = []
    problems: list[Problem] = []
    # The clocks each hook starts for duration rules: start key -> pair id.
    starts: dict[str, dict[str, int]] = {}
    for rule in rules:
        start = rule.spec.value.start if rule.spec.value.type == "duration" else None
        if start is not None:
            pair = programs.clock_pair(policy.name, start.hook, start.key)
            starts.setdefault(start.hook, {})[start.key] = pair
    percpu = percpu_values(policy, rules, cpus)
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
            percpu,
        )
        problems.extend(found)
        if program is not None and not found:
            made.append(program)
            if dict(program.flags)["USE_ENTRY"]:
                made.append(programs.entry_half(program))
    return programs.Generated(programs=tuple(made), problems=tuple(problems))


def _program(
    scoped: bool,
    policy_name: str,
    hook: Hook,
    rules: Sequence[AggregationRule],
    starts: Sequence[tuple[str, int]],
    path: tuple[PathPart, ...],
    fields: list[Field] | None,
    syscall_prefix: str,
    ringbuf_pages: int,
    kernel_layout: Mapping[str, int | str],
    host_namespaces: Mapping[str, int | str],
    kernel_types: btf.Types | None,
    percpu: tuple[bool, bool] = (False, False),
) -> tuple[programs.Program | None, list[Problem]]:
    """One hook's program, built stage by stage (each stage sets its own flags)."""
    target = _target(hook, fields, path, syscall_prefix)
    if isinstance(target, Problem):
        return None, [target]
    build = _Build(policy_name, hook, path)
    build.flags.set("SYSCALL_WRAPPER", int(isinstance(hook, KProbe) and hook.syscall))
    build.flags.set("USE_SCOPE", int(scoped))
    build.read_args(fields, kernel_types)
    build.run_selectors(host_namespaces, selectors.SYSCALL_ARCHES.get(syscall_prefix))
    build.fold_rules(rules)
    build.start_clocks(starts)
    posts = build.events(ringbuf_pages)
    build.string_reads(posts)
    build.layouts(rules, kernel_layout)
    build.flags.set("AGG_PERCPU", int(percpu[0]))
    build.flags.set("HIST_PERCPU", int(percpu[1]))
    return build.program(target), build.problems


# A series' value: a count and a sum; a histogram's count, sum and buckets.
PLAIN_VALUE_BYTES = 16
HIST_VALUE_BYTES = 8 * (2 + limits.MAX_BUCKETS + 2)


def percpu_values(
    policy: TracingPolicy, rules: Sequence[AggregationRule], cpus: int
) -> tuple[bool, bool]:
    """Whether counts and sums (then histograms) take a value per CPU: each CPU adds to its
    own copy with no atomic instruction, at the price of a copy per CPU of every series. Taken
    while the policy's maps, at their worst (every rule at maxSeries), still fit its memory
    budget on a node of ``cpus`` CPUs; otherwise the values are shared, added atomically."""
    mine = [(r.name, r.spec) for r in rules]
    total, _ = checks.memory(policy.spec, mine)
    hooks = [h.hook_id() for h in policy.spec.hooks()]

    def extra(histogram: bool) -> int:
        width = HIST_VALUE_BYTES if histogram else PLAIN_VALUE_BYTES
        return sum(
            sum(1 for h in hooks if spec.hook in (None, h)) * (spec.max_series + 1)
            * (cpus - 1) * width
            for _, spec in mine
            if spec.value.histogram() == histogram
        )  # fmt: skip

    plain = total + extra(False) <= limits.POLICY_MEMORY_BUDGET
    hist = plain and total + extra(False) + extra(True) <= limits.POLICY_MEMORY_BUDGET
    return plain, hist


Hook = KProbe | Tracepoint | UProbe | RawTracepoint


def _target(
    hook: Hook, fields: list[Field] | None, path: tuple[PathPart, ...], syscall_prefix: str
) -> tuple[str, ...] | Problem:
    """What the program attaches to, or why it cannot be here."""
    if isinstance(hook, Tracepoint):
        if fields is None:
            return at(
                path,
                f"this kernel has no tracepoint {hook.subsystem}:{hook.event} "
                "(see /sys/kernel/tracing/events)",
            )
        return (f"{hook.subsystem}:{hook.event}",)
    if isinstance(hook, RawTracepoint):
        return (f"{hook.subsystem}:{hook.event}",)
    if isinstance(hook, KProbe):
        # A syscall named as Tetragon writes it (sys_write, or with an architecture's
        # prefix: __x64_sys_write, __arm64_sys_write) or bare (write): the same syscall,
        # hooked through this node's own prefix.
        name = hook.call
        if hook.syscall:
            for prefix in ("__x64_sys_", "__arm64_sys_", "sys_"):
                name = name.removeprefix(prefix)
        return (f"{syscall_prefix}{name}" if hook.syscall else hook.call,)
    # policies.hooks_with_paths gives one symbol or offset each (+0x...: an offset,
    # with its USDT semaphore's offset when it has one)
    return (hook.path, hook.where(), *(f"{c:#x}" for c in hook.ref_ctr_offsets))


# The matchers the lean path runs: compares, and integer sets and ranges.
_LEAN_OPS = {Op.NONE, Op.EQ, Op.GT, Op.LT, Op.MASK, Op.INT_SET, Op.RANGE}
_MATCHER_OP = re.compile(r"^S\d+_M\d+_OP$")
_BINARY_OP = re.compile(r"^S\d+_B\d+_OP$")

ARG_FIELDS = ("KIND", "FROM", "SRC", "SIZE", "SIGNED", "SLOT", "USER", "LEN_ARG", "PATH", "DEREF",
              "OFF", "RESOLVE", "R0", "R1", "R2", "R3", "R4", "R5")  # fmt: skip


class _Build:
    """One hook's program while it is generated: its flags and seeds, what it reads, what
    its selectors use, and the problems found on the way."""

    def __init__(self, policy_name: str, hook: Hook, path: tuple[PathPart, ...]) -> None:
        self.policy_name = policy_name
        self.hook = hook
        self.path = path
        self.kind = hook.hook_id().split(":", 1)[0]
        self.problems: list[Problem] = []
        self.flags = programs.Flags()
        for name, value in abi.enum_flags().items():
            self.flags.set(name, value)
        self.seeds = programs.SeedBuilder()
        self.arg_plans: list[programs.ArgPlan] = []
        self.by_label: dict[str, programs.ArgPlan] = {}
        self.slots: dict[int, int] = {}  # id(arg) -> slot
        self.string_slots = self.address_slots = 0
        self.actions: list[Action] = []
        self.agg_slots: list[programs.AggSlot] = []
        self.uses_exe = self.uses_task = self.uses_pid_tree = self.uses_marks = False

    # --- arguments -> slots (a nop arg reads nothing and takes no slot)
    def read_args(self, fields: list[Field] | None, kernel_types: btf.Types | None) -> None:
        hook, path, flags = self.hook, self.path, self.flags
        declared = [arg for arg in hook.declared_args() if arg.type not in values.NOP_TYPES]
        # A return probe's args are read at entry by its entry half (programs.entry_half),
        # as in Tetragon: the return half reads the saved registers, then the return value.
        with_entry = self.kind in {"kretprobe", "uretprobe"} and bool(hook.args)
        flags.set("SAVE_ENTRY", 0)
        flags.set("USE_ENTRY", int(with_entry))
        key = programs.hook_key(self.policy_name, hook.hook_id()) if with_entry else 0
        flags.set("HOOK_KEY", key)
        for slot in range(abi.MAX_ARGS):
            for suffix in ARG_FIELDS:
                flags.set(f"ARG{slot}_{suffix}", 0)
        for slot, arg in enumerate(declared):
            arg_path = (*path, "args", slot) if slot < len(hook.args) else (*path, "returnArg")
            is_return = arg is getattr(hook, "return_arg", None)
            plan, found = arguments.plan(arg, slot, arg_path, hook, fields, is_return, kernel_types)
            if plan is not None and with_entry and not is_return:
                plan.flags["FROM"] = int(Source.SAVED)
            self.problems.extend(found)
            if plan is not None:
                self._slot(slot, arg, plan, arg_path)
        for slot, arg in enumerate(declared):
            if arg.type == "char_buf" and arg.size_arg_index is not None:
                # 1-based, as in Tetragon: sizeArgIndex 3 is the argument at index 2.
                length = next((a for a in declared if a.index == arg.size_arg_index - 1), None)
                if length is None or length.type not in values.INTEGER_TYPES:
                    self.problems.append(
                        at(
                            (*path, "args", slot, "sizeArgIndex"),
                            "must name an integer "
                            "argument that is also declared in args (read before it)",
                        )
                    )
                else:
                    flags.set(f"ARG{slot}_LEN_ARG", self.slots.get(id(length), 0))
            elif arg.type == "char_buf" and arg.return_copy:  # as long as the return value
                flags.set(f"ARG{slot}_LEN_ARG", abi.LEN_RETURN)
        self.by_label = {plan.name: plan for plan in self.arg_plans}

    def _slot(
        self, slot: int, arg: Arg, plan: arguments.ArgFlags, arg_path: tuple[PathPart, ...]
    ) -> None:
        """Give a read arg its slot, and a string or address arg its scratch slot."""
        sub_slot = 0
        if plan.kind in arguments.STRING_KINDS:
            sub_slot, self.string_slots = self.string_slots, self.string_slots + 1
            if self.string_slots > abi.STR_SLOTS:
                self.problems.append(
                    at(arg_path, f"at most {abi.STR_SLOTS} string arguments per hook; drop one")
                )
        elif plan.kind in arguments.ADDRESS_KINDS:
            sub_slot, self.address_slots = self.address_slots, self.address_slots + 1
            if self.address_slots > abi.ADDR_SLOTS:
                self.problems.append(
                    at(
                        arg_path,
                        f"at most {abi.ADDR_SLOTS} sock/sockaddr arguments per hook; drop one",
                    )
                )
        for name, value in plan.flags.items():
            self.flags.set(f"ARG{slot}_{name}", value)
        self.flags.set(f"ARG{slot}_KIND", int(plan.kind))
        self.flags.set(f"ARG{slot}_SLOT", sub_slot)
        self.slots[id(arg)] = slot
        read = programs.ArgPlan(slot=slot, name=arg.name(), type=arg.type, kind=plan.kind)
        self.arg_plans.append(read)

    # --- selectors -> matchers
    def run_selectors(self, host_namespaces: Mapping[str, int | str], arch: str | None) -> None:
        hook, flags = self.hook, self.flags
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
        for s, selector in enumerate(hook.selectors):
            self._selector(s, selector, host_namespaces, arch)
        if not hook.selectors:  # every call matches, as selector 0: the hook's returnArgAction
            marking = checks.mark_actions(hook, Selector())
            self.uses_marks = selectors.mark_actions(
                flags, 0, marking, self.by_label, self.policy_name
            )

    def _selector(
        self,
        s: int,
        selector: Selector,
        host_namespaces: Mapping[str, int | str],
        arch: str | None,
    ) -> None:
        sel_path = (*self.path, "selectors", s)
        self._action(s, selector)
        arg_matches = self._arg_matchers(s, selector, sel_path, arch)
        task_matchers = selectors.task_matchers(selector, host_namespaces, (*sel_path,))
        self._task_matchers(s, selector, task_matchers, first=arg_matches)
        self._mark_matchers(s, selector, first=arg_matches + len(task_matchers))
        # Mark, Unmark, TrackSock, UntrackSock: set or clear when the selector matches
        marking = checks.mark_actions(self.hook, selector)
        marks = selectors.mark_actions(self.flags, s, marking, self.by_label, self.policy_name)
        self.uses_marks = marks or self.uses_marks
        self._binaries(s, selector)

    def _action(self, s: int, selector: Selector) -> None:
        """Post or NoPost, and for Post its rate limit and stacks."""
        flags = self.flags
        action = Action.POST if selector.action().action == "Post" else Action.NOPOST
        self.actions.append(action)
        flags.set(f"S{s}_ACTION", int(action))
        chosen = selector.action()
        if action != Action.POST:
            return
        if chosen.rate_limit is not None:
            try:
                rate = values.parse_duration_ns(chosen.rate_limit)
            except ValueError:
                rate = 0  # reported by weir_api.checks
            scope = abi.RateScope[(chosen.rate_limit_scope or "process").upper()]
            if rate:
                rate |= int(scope) << abi.RATE_SCOPE_SHIFT
            flags.set(f"S{s}_RATE_NS", programs.int_literal(rate))
        flags.set(f"S{s}_USTACK", int(chosen.user_stack_trace))
        flags.set(f"S{s}_KSTACK", int(chosen.kernel_stack_trace))

    def _arg_matchers(
        self, s: int, selector: Selector, sel_path: tuple[PathPart, ...], arch: str | None
    ) -> int:
        """matchArgs and matchReturnArgs, matchers 0...; how many the selector has."""
        hook = self.hook
        returned = getattr(hook, "return_arg", None)
        arg_matches = [
            (("matchArgs", m), hook.arg_by_ref(match.index, match.label), match)
            for m, match in enumerate(selector.match_args)
        ] + [
            (("matchReturnArgs", m), returned, match)
            for m, match in enumerate(selector.match_return_args)
        ]
        for m, (where, found_arg, match) in enumerate(arg_matches[: abi.MAX_MATCHERS]):
            if found_arg is None or id(found_arg) not in self.slots:
                continue  # reported by weir_api.checks
            found = selectors.arg_matcher(
                self.flags,
                self.seeds,
                f"S{s}_M{m}",
                s * abi.MAX_MATCHERS + m,
                match.operator,
                match.values,
                found_arg,
                self.slots[id(found_arg)],
                (*sel_path, *where),
                arch,
            )
            self.problems.extend(found)
            if match.operator in values.CRED_OPERATORS:  # against the task's permitted set
                self.uses_task = True
        return len(arg_matches)

    def _task_matchers(
        self, s: int, selector: Selector, task_matchers: list[selectors.TaskMatcher], first: int
    ) -> None:
        """matchPIDs, matchNamespaces, matchCapabilities and their *Changes."""
        flags = self.flags
        self.uses_task = self.uses_task or bool(task_matchers)
        # the *Changes compare with what the exec tracker recorded when the process started
        changes = selector.match_capability_changes or selector.match_namespace_changes
        self.uses_exe = self.uses_exe or bool(changes)
        for m, (op, arg_value, value, negated, set_values, problem) in enumerate(
            task_matchers, start=first
        ):
            if problem is not None:
                self.problems.append(problem)
                continue
            if m >= abi.MAX_MATCHERS:
                continue  # reported by weir_api.checks
            matcher = s * abi.MAX_MATCHERS + m
            flags.set(f"S{s}_M{m}_OP", int(op))
            flags.set(f"S{s}_M{m}_ARG", arg_value)
            flags.set(f"S{s}_M{m}_VAL", programs.int_literal(value))
            flags.set(f"S{s}_M{m}_NEG", int(negated))
            for number in set_values:
                self.seeds.integers.append((matcher, number & programs.MASK64))
            if op == Op.PID and value & 2:
                self.uses_pid_tree = True

    def _mark_matchers(self, s: int, selector: Selector, first: int) -> None:
        """matchMarks: one lookup each, in the shared marks map."""
        flags = self.flags
        for m, mark in enumerate(selector.match_marks, start=first):
            if m >= abi.MAX_MATCHERS:
                continue  # reported by weir_api.checks
            self.uses_marks = True
            clock, arg_slot = selectors.clock_key(mark.key, self.by_label)
            if clock is None:
                continue  # reported by weir_api.checks
            flags.set(f"S{s}_M{m}_OP", int(Op.MARK))
            flags.set(f"S{s}_M{m}_ARG", arg_slot)
            tagged = (arg_slot << abi.MARK_ID_BITS) | programs.mark_id(self.policy_name, mark.mark)
            flags.set(f"S{s}_M{m}_VAL", programs.int_literal(tagged))
            flags.set(f"S{s}_M{m}_NEG", int(mark.operator == "NotIn"))

    def _binaries(self, s: int, selector: Selector) -> None:
        """matchBinaries: executables' paths, in the string LPM trie."""
        for b, binary in enumerate(selector.match_binaries):
            self.uses_exe = True
            matcher = 64 + s * abi.MAX_BINARIES + b
            # OP 2: followChildren, the nearest parents' executables too (read_task's tree)
            self.flags.set(f"S{s}_B{b}_OP", 2 if binary.follow_children else 1)
            self.flags.set(f"S{s}_B{b}_NEG", int(binary.operator.startswith("Not")))
            if binary.follow_children:
                self.uses_task = self.uses_pid_tree = True
            exact = binary.operator in {"In", "NotIn"}
            for text in binary.values:
                data = values.parse_string(text)
                self.seeds.string(matcher, data + b"\0" if exact else data)

    # --- aggregations
    def fold_rules(self, rules: Sequence[AggregationRule]) -> None:
        flags = self.flags
        for n in range(abi.MAX_AGGREGATIONS):
            for suffix in ("ON", "VALUE", "CGROUP", "BINARY", "NBOUNDS", "DUR", "DARG", "DID"):
                flags.set(f"AGG{n}_{suffix}", 0)
            flags.set(f"AGG{n}_SID", n)
            for suffix in ("KARG0", "KARG1", "ACLASS", "VARG"):
                flags.set(f"AGG{n}_{suffix}", -1)
            flags.set(f"AGG{n}_MAX", 1)
        if len(rules) > abi.MAX_AGGREGATIONS:
            names = ", ".join(r.name for r in rules)
            self.problems.append(
                at(
                    self.path,
                    f"{len(rules)} AggregationRules fold this hook ({names}); at "
                    f"most {abi.MAX_AGGREGATIONS}",
                )
            )
        flags.set("USE_MARKS", int(self.uses_marks))
        for n, rule in enumerate(rules[: abi.MAX_AGGREGATIONS]):
            slot_plan, found = aggregations.aggregation(
                flags, self.seeds, n, rule, self.by_label, self.policy_name
            )
            self.problems.extend(found)
            if slot_plan is not None:
                self.agg_slots.append(slot_plan)
                self.uses_exe = self.uses_exe or "binary" in slot_plan.group_by

    # --- clocks this hook starts for durations (of its own rules or another hook's)
    def start_clocks(self, starts: Sequence[tuple[str, int]]) -> None:
        flags = self.flags
        for n in range(abi.MAX_STARTS):
            flags.set(f"MK{n}_KEY", int(Clock.NONE))
            flags.set(f"MK{n}_ARG", 0)
            flags.set(f"MK{n}_ID", 0)
        if len(starts) > abi.MAX_STARTS:
            self.problems.append(
                at(
                    self.path,
                    f"duration rules start clocks under {len(starts)} keys on this hook; at "
                    f"most {abi.MAX_STARTS}",
                )
            )
        for n, (key, pair) in enumerate(starts[: abi.MAX_STARTS]):
            clock, arg_slot = selectors.clock_key(key, self.by_label)
            if clock is None:
                self.problems.append(
                    at(self.path, f"a duration starts here keyed by {key}: no such int arg")
                )
                continue
            flags.set(f"MK{n}_KEY", int(clock))
            flags.set(f"MK{n}_ARG", arg_slot)
            flags.set(f"MK{n}_ID", programs.int_literal(pair))
        durations = any(a.seconds for a in self.agg_slots)
        flags.set("USE_STARTS", int(bool(starts) or durations))

    # --- events: what a posting program puts in each record
    def events(self, ringbuf_pages: int) -> bool:
        """Whether the program posts; sets what its events carry."""
        hook, flags = self.hook, self.flags
        posts = [a for a in self.actions if a == Action.POST] or (
            [Action.POST] if not hook.selectors else []
        )
        flags.set("ANY_POST", int(bool(posts)))
        ustack = bool(posts) and any(sel.action().user_stack_trace for sel in hook.selectors)
        kstack = bool(posts) and any(sel.action().kernel_stack_trace for sel in hook.selectors)
        flags.set("EV_STRS", self.string_slots if posts else 0)
        flags.set("EV_ADDRS", self.address_slots if posts else 0)
        flags.set("EV_USTACK", limits.USER_STACK_FRAMES if ustack else 0)
        flags.set("EV_KSTACK", limits.KERNEL_STACK_FRAMES if kstack else 0)
        flags.set("RINGBUF_PAGES", ringbuf_pages)
        flags.set("RATE_LIMIT_ENTRIES", limits.RATE_LIMIT_ENTRIES)
        self.uses_exe = self.uses_exe or bool(posts)
        flags.set("USE_EXE", int(self.uses_exe))
        return bool(posts)

    # --- what string slots need before the selectors run, and which paths are built
    def string_reads(self, posts: bool) -> None:
        flags = self.flags
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
        # A file, path or fd arg's path is built (a walk of its dentries) only when a
        # string matcher tests it or an event carries it; FileType alone reads the mode.
        string_ops = {Op.STR, Op.STR_POSTFIX, Op.STR_SUB, Op.STR_SUB_ICASE}
        tested = {arg_slot for op_value, arg_slot in matchers if op_value in string_ops}
        for read in self.arg_plans:
            if read.kind in {Kind.FILE, Kind.PATH, Kind.FD}:
                flags.set(f"ARG{read.slot}_PATH", int(posts or read.slot in tested))

    # --- struct offsets from the kernel's BTF
    def layouts(
        self, rules: Sequence[AggregationRule], kernel_layout: Mapping[str, int | str]
    ) -> None:
        """The offsets of the groups this program reads (0 for the rest, so that programs
        which read none keep one shape)."""
        flags, path = self.flags, self.path
        users: dict[str, tuple[PathPart, ...] | None] = {group: None for group in btf.GROUPS}
        for arg_plan in reversed(self.arg_plans):
            at_slot = arg_plan.slot
            where = (
                (*path, "args", at_slot) if at_slot < len(self.hook.args) else (*path, "returnArg")
            )
            group = arguments.LAYOUT_GROUPS.get(arg_plan.kind)
            if group is not None:
                users[group] = where
            if arg_plan.type in arguments.STRUCT_READS:
                users[arguments.STRUCT_READS[arg_plan.type][1]] = where
        if self.uses_task:
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
                needs = arguments.LAYOUT_USERS[group]
                self.problems.append(at(user, f"{needs} needs the kernel's layout: {reasons[0]}"))
                continue
            for name in group_fields:
                flags.set(name, int(kernel_layout[name]))
        for arg_plan in self.arg_plans:  # a struct arg's member, at the running kernel's offset
            if arg_plan.type in arguments.STRUCT_READS:
                offset = kernel_layout.get(arguments.STRUCT_READS[arg_plan.type][3])
                flags.set(f"ARG{arg_plan.slot}_OFF", offset if isinstance(offset, int) else 0)
        flags.set("USE_PID_TREE", int(self.uses_pid_tree))

    def _lean(self) -> bool:
        """Whether hook.bpf.c's lean path runs this program (LEAN): integer arguments read
        straight from the context, integer matchers only, and rules that count, sum or bucket
        by the cgroup or by nothing; nothing posted, no strings, addresses, task, executable,
        clocks or marks."""
        flags = self.flags.items
        general = ("ANY_POST", "USE_ENTRY", "SAVE_ENTRY", "USE_TASK", "USE_EXE", "USE_MARKS",
                   "USE_STARTS", "USE_SUBSTR", "REV_SLOTS", "SUB_SLOTS")  # fmt: skip
        if any(flags.get(name) for name in general):
            return False
        for plan in self.arg_plans:
            i = plan.slot
            if plan.kind != Kind.INT or flags.get(f"ARG{i}_RESOLVE") or flags.get(f"ARG{i}_DEREF"):
                return False
            if flags.get(f"ARG{i}_FROM") == Source.SAVED:
                return False
        for name, value in flags.items():
            if _MATCHER_OP.match(name) and value not in _LEAN_OPS:
                return False
            if _BINARY_OP.match(name) and value:
                return False
        return not any(a.seconds for a in self.agg_slots)

    # --- map capacities, and the program
    def program(self, target: tuple[str, ...]) -> programs.Program:
        flags, agg_slots = self.flags, self.agg_slots
        # One map per value shape; each slot's series plus its pre-seeded overflow entry.
        plain = [a.max_series + 1 for a in agg_slots if a.value < ValueKind.HIST_EXP2]
        hists = [a.max_series + 1 for a in agg_slots if a.value >= ValueKind.HIST_EXP2]
        # Capacities (not preallocated) with room for the next configuration's entries.
        # At least one rule's default maxSeries, so that adding or dropping a rule, or a
        # smaller maxSeries, keeps the shape (the series counters hold maxSeries exactly).
        floor = limits.MAX_SERIES_DEFAULT + 1
        flags.set("AGG_PLAIN_MAX", programs.room(max(sum(plain), floor)))
        flags.set("AGG_HIST_MAX", programs.room(max(sum(hists), floor)))
        # Keys by the cgroup alone (or nothing): one packed 64-bit key (bpf/weir.h).
        packed = all(field in {"cgroup", "node"} for a in agg_slots for _, field in a.key_fields)
        flags.set("AGG_PACKED", int(packed))
        flags.set("LEAN", int(packed and self._lean()))
        built = self.seeds.build()
        flags.set("STR_LPM_MAX", programs.room(len(built.strings)))
        flags.set("SUB_LPM_MAX", programs.room(len(built.substrings)))
        flags.set("ADDR_LPM_MAX", programs.room(len(built.addresses)))
        flags.set("INT_SET_MAX", programs.room(len(built.integers)))
        prefixes = sum(len(selectors.range_prefixes(lo, hi)) for _, lo, hi in built.ranges)
        flags.set("RANGE_LPM_MAX", programs.room(prefixes))
        return programs.Program(
            policy=self.policy_name,
            hook=self.hook.hook_id(),
            kind=self.kind,
            target=target,
            flags=tuple(sorted(flags.items.items())),
            seeds=built,
            args=tuple(self.arg_plans),
            aggregations=tuple(agg_slots),
            selector_actions=tuple(self.actions),
            message=self.hook.message,
            tags=tuple(self.hook.tags),
        )
