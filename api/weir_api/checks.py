"""Semantic checks beyond the schema: the rules a JSON schema cannot say.

The pydantic models (and the CRD schema generated from them) check shapes,
enums and bounds. These checks need context: an operator must fit the type of
the argument it tests, values must parse for that operator, references between
fields and objects must resolve. Each yields ``Problem``s with the field path
and what to do; an empty list means the object is valid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from weir_api import aggregations, limits, values
from weir_api.aggregations import AggregationRuleSpec
from weir_api.policies import (
    ADDRESS_TYPES_TEXT,
    FD_ACTIONS,
    MAX_FUNCTION_ARG,
    SOCK_MARK,
    STRING_TYPES_TEXT,
    Arg,
    FunctionHook,
    Hook,
    KProbe,
    MatchAction,
    MatchArg,
    RawTracepoint,
    Selector,
    Tracepoint,
    TracingPolicySpec,
    UProbe,
)
from weir_api.problems import PathPart, Problem, at, format_path


def check_policy(spec: TracingPolicySpec) -> list[Problem]:
    return list(_policy(spec, ("spec",)))


def policy_warnings(spec: TracingPolicySpec) -> list[Problem]:
    """What is accepted but has no effect: Tetragon's enforcement parameters, attachment
    options and maxData."""
    found = [
        at(
            ("spec", "options", n, "name"),
            f"{option.name}: ignored, a Tetragon attachment option; weir attaches one "
            "program per hook",
        )
        for n, option in enumerate(spec.options)
    ]
    for where, hook in spec.hooks_with_paths():
        for n, arg in enumerate(hook.declared_args()):
            if arg.max_data:
                at_arg = ("args", n) if n < len(hook.args) else ("returnArg",)
                arg_path = ("spec", *where, *at_arg)
                found.append(
                    at(
                        (*arg_path, "maxData"),
                        f"ignored: weir reads at most {limits.MAX_STRING} bytes of a string "
                        "or buffer",
                    )
                )
        for s_number, selector in enumerate(hook.selectors):
            for a_number, action in enumerate(selector.match_actions):
                a_path = ("spec", *where, "selectors", s_number, "matchActions", a_number)
                for field, value in (("argError", action.arg_error), ("argSig", action.arg_sig)):
                    if value is not None:
                        found.append(
                            at(
                                (*a_path, field),
                                "ignored: an enforcement parameter, and weir observes",
                            )
                        )
                if action.action in FD_ACTIONS:
                    found.append(
                        at(
                            (*a_path, "action"),
                            f"{action.action} has nothing to do in weir, ignored: an fd arg "
                            "(type: fd) is read as its file's path through the task's "
                            "descriptor table at each call",
                        )
                    )
        if isinstance(hook, FunctionHook) and hook.return_arg_action in FD_ACTIONS:
            found.append(
                at(
                    ("spec", *where, "returnArgAction"),
                    f"{hook.return_arg_action} has nothing to do in weir, ignored: an fd arg "
                    "(type: fd) is read as its file's path through the task's descriptor "
                    "table at each call",
                )
            )
    return sorted(set(found), key=lambda p: p.path)


def policy_bytes(spec: TracingPolicySpec) -> int:
    """The spec's size as compact JSON, as the API server and kubectl store it."""
    text = json.dumps(spec.to_wire(), separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


def _policy(spec: TracingPolicySpec, path: Sequence[PathPart]) -> Iterator[Problem]:
    hooks = spec.hooks()
    groups = (spec.kprobes, spec.tracepoints, spec.uprobes, spec.rawtracepoints, spec.fentries)
    if not any((*groups, spec.lsmhooks)):
        yield at(path, "a policy needs at least one of kprobes, tracepoints or uprobes")
    size = policy_bytes(spec)
    if size > limits.MAX_POLICY_BYTES:
        yield at(
            path,
            f"is {size:,} bytes as JSON; a policy may take at most "
            f"{limits.MAX_POLICY_BYTES:,} (kubectl apply copies it into a 256 KiB annotation); "
            "split its hooks across policies, or shorten its value lists",
        )
    if len(hooks) > limits.MAX_HOOKS:
        yield at(path, f"{len(hooks)} hooks; at most {limits.MAX_HOOKS} per policy, split it")
    names = {item.name for item in spec.lists}
    for number, item in enumerate(spec.lists):
        if item.type == "generated_ftrace":
            yield at(
                (*path, "lists", number, "type"),
                "Tetragon's generated_ftrace is not supported by weir (yet): weir loads one "
                "program per kprobe; list the functions (type: functions)",
            )
        elif item.type == "generated_syscalls" and item.values:
            yield at((*path, "lists", number, "values"), "a generated list takes no values")
    every_syscall = {item.name for item in spec.lists if item.type == "generated_syscalls"}
    for number, kprobe in enumerate(spec.kprobes):
        if kprobe.list_name() in every_syscall and (kprobe.args or kprobe.returns()):
            yield at(
                (*path, "kprobes", number),
                "every syscall is watched through raw_syscalls:sys_enter, which has no "
                "per-syscall args or return: drop args and return, or list the syscalls "
                "(type: syscalls)",
            )
    functions = [("kprobes", n, k) for n, k in enumerate(spec.kprobes)]
    functions += [("fentries", n, k) for n, k in enumerate(spec.fentries)]
    for group, index, kprobe in functions:
        listed = kprobe.list_name()
        if listed is not None and listed not in names:
            known = ", ".join(sorted(names)) or "none"
            yield at(
                (*path, group, index, "call"),
                f"names list {listed!r}, which spec.lists does not have (lists: {known})",
            )
    yield from _marks(spec, path)
    checked: set[tuple[str, int]] = set()
    for where, hook in spec.hooks_with_paths():
        hook_path = (*path, *where)
        if isinstance(hook, UProbe) and hook.symbol is None and not (hook.offsets or hook.addrs):
            yield at(hook_path, "a uprobe needs symbol, symbols (a list), offsets or addrs")
            continue
        if where not in checked:  # a uprobe's symbols share its args and selectors
            checked.add(where)
            yield from _hook(hook, hook_path)


def check_hook(
    hook: KProbe | Tracepoint | UProbe | RawTracepoint, path: Sequence[PathPart]
) -> list[Problem]:
    """One hook's own problems (its args, selectors and actions)."""
    return list(_hook(hook, path))


def _hook(
    hook: KProbe | Tracepoint | UProbe | RawTracepoint, path: Sequence[PathPart]
) -> Iterator[Problem]:
    labels: dict[str, int] = {}
    indexes: dict[tuple[int, str], int] = {}
    for types, most, what in (
        (values.STRING_TYPES, limits.STRING_ARGS, STRING_TYPES_TEXT),
        (values.ADDRESS_TYPES, limits.ADDRESS_ARGS, ADDRESS_TYPES_TEXT),
    ):
        if sum(arg.type in types for arg in hook.args) > most:
            yield at(
                (*path, "args"),
                f"at most {most} {what} args per hook (each takes a per-CPU scratch slot); "
                "drop one, or split the hook across policies",
            )
    for number, arg in enumerate(hook.args):
        arg_path = (*path, "args", number)
        if isinstance(hook, Tracepoint):
            if arg.field is not None and arg.index is not None:
                yield at(arg_path, "give field or index, not both")
            if arg.type == "char_buf":
                yield at(
                    (*arg_path, "type"),
                    "char_buf is for kprobes/uprobes; on a tracepoint "
                    "use string (a __data_loc or char[] field) or filename (a user pointer)",
                )
        else:
            if arg.field is not None:
                yield at(
                    (*arg_path, "field"),
                    "field names tracepoint fields; kprobes and "
                    "uprobes take index (the argument's position, 0-5)",
                )
            if arg.index is None:
                yield at((*arg_path, "index"), "required: the argument's position (0-5)")
            elif arg.index > MAX_FUNCTION_ARG:
                yield at(
                    (*arg_path, "index"),
                    f"is {arg.index}; functions pass at most six arguments in registers (0-5)",
                )
        if arg.index is not None:
            read = (arg.index, arg.resolve or "")  # one struct arg, several resolve paths
            if read in indexes:
                yield at(
                    (*arg_path, "index"),
                    f"index {arg.index} is already read by "
                    f"args[{indexes[read]}]; give each argument once",
                )
            indexes.setdefault(read, number)
        name = arg.name()
        if name in labels:
            yield at(
                arg_path,
                f"label {name!r} is already used by args[{labels[name]}]; labels "
                "must be unique within a hook",
            )
        labels.setdefault(name, number)
        if arg.btf_type is not None and arg.resolve is None:
            yield at(
                (*arg_path, "btfType"),
                "names the struct a resolve path starts from; give resolve too",
            )
        if arg.return_copy and isinstance(hook, Tracepoint):
            yield at(
                (*arg_path, "returnCopy"),
                "applies to kprobes and uprobes (read on the function's return); a "
                "tracepoint's fields are read when it fires",
            )
        if arg.type == "char_buf":
            if arg.size_arg_index is None and not arg.return_copy:
                yield at(
                    (*arg_path, "sizeArgIndex"),
                    "char_buf needs sizeArgIndex: the "
                    "position of the argument that holds the buffer's length, counted from 1 "
                    "as in Tetragon (3 for the argument at index 2), or returnCopy: true (its "
                    "length is the return value)",
                )
        elif arg.size_arg_index is not None:
            yield at((*arg_path, "sizeArgIndex"), "applies to char_buf only; remove it")
    if isinstance(hook, FunctionHook) and hook.return_arg is not None:
        if not hook.returns():
            yield at((*path, "returnArg"), "needs return: true (a return probe)")
        if hook.return_arg.type not in values.KEY_TYPES:
            yield at(
                (*path, "returnArg", "type"),
                "a return value is an integer (int, long, size_t, ...) or a sock, skb, file, "
                "path or fd the function returns",
            )
    if (
        isinstance(hook, FunctionHook)
        and hook.return_arg_action is not None
        and (hook.return_arg is None or not hook.returns())
    ):
        yield at(
            (*path, "returnArgAction"),
            "acts on the return value: needs return: true and returnArg",
        )
    for number, selector in enumerate(hook.selectors):
        sel_path = (*path, "selectors", number)
        if selector.matcher_count() > limits.MAX_MATCH_ARGS:
            yield at(
                sel_path,
                f"{selector.matcher_count()} filters (matchArgs, matchReturnArgs, matchPIDs, "
                f"matchNamespaces and matchCapabilities together); a selector runs at most "
                f"{limits.MAX_MATCH_ARGS}: split it into two selectors",
            )
        for m_number, match in enumerate(selector.match_args):
            yield from _match_arg(hook, match, (*sel_path, "matchArgs", m_number))
        for m_number, match in enumerate(selector.match_return_args):
            m_path = (*sel_path, "matchReturnArgs", m_number)
            returned = getattr(hook, "return_arg", None)
            if returned is None:
                yield at(
                    m_path,
                    "matchReturnArgs tests a return probe's returnArg; set return: true "
                    "and returnArg (e.g. {index: 0, type: int})",
                )
            else:
                yield from _match_arg(hook, match, m_path, returned)
        for m_number, pids in enumerate(selector.match_pids):
            for v_number, text in enumerate(pids.values):
                try:
                    values.parse_int(text, "uint32")
                except ValueError as error:
                    yield at((*sel_path, "matchPIDs", m_number, "values", v_number), str(error))
        for m_number, namespaces in enumerate(selector.match_namespaces):
            for v_number, text in enumerate(namespaces.values):
                if text.strip() == "host_ns":
                    continue
                try:
                    values.parse_int(text, "uint32")
                except ValueError:
                    yield at(
                        (*sel_path, "matchNamespaces", m_number, "values", v_number),
                        f"{text!r} is not a namespace; write its inode number (as lsns shows "
                        "it, e.g. 4026531840) or host_ns",
                    )
        capability_filters = [
            ("matchCapabilities", m_number, caps)
            for m_number, caps in enumerate(selector.match_capabilities)
        ] + [
            ("matchCapabilityChanges", m_number, caps)
            for m_number, caps in enumerate(selector.match_capability_changes)
        ]
        for field, m_number, caps in capability_filters:
            c_path = (*sel_path, field, m_number)
            for v_number, text in enumerate(caps.values):
                try:
                    values.parse_capability(text)
                except ValueError as error:
                    yield at((*c_path, "values", v_number), str(error))
        for b_number, binary in enumerate(selector.match_binaries):
            b_path = (*sel_path, "matchBinaries", b_number)
            for v_number, text in enumerate(binary.values):
                try:  # the schema checks the leading /
                    values.parse_string(text)
                except ValueError as error:
                    yield at((*b_path, "values", v_number), str(error))
        events = [a for a in selector.match_actions if a.action in ("Post", "NoPost")]
        if len(events) > 1:
            yield at((*sel_path, "matchActions"), "give one of Post and NoPost, once")
        if len(selector.mark_actions()) + len(_return_marks(hook)) > limits.MAX_MARK_ACTIONS:
            yield at(
                (*sel_path, "matchActions"),
                f"at most {limits.MAX_MARK_ACTIONS} of Mark, Unmark, TrackSock and "
                "UntrackSock per selector",
            )
        for a_number, action in enumerate(selector.match_actions):
            a_path = (*sel_path, "matchActions", a_number)
            if (action.action in ("Mark", "Unmark")) != (action.mark is not None):
                yield at(a_path, "Mark and Unmark need mark (its name); no other action takes it")
            if action.key is not None and action.action not in ("Mark", "Unmark"):
                yield at((*a_path, "key"), "applies to Mark and Unmark only; remove it")
            if (action.action in ("TrackSock", "UntrackSock")) != (action.arg_sock is not None):
                yield at(
                    a_path,
                    "TrackSock and UntrackSock need argSock (the index of a sock arg); no "
                    "other action takes it",
                )
            if action.rate_limit is not None:
                if action.action != "Post":
                    yield at((*a_path, "rateLimit"), "applies to Post only; remove it")
                try:
                    values.parse_duration_ns(action.rate_limit)
                except ValueError as error:
                    yield at((*a_path, "rateLimit"), str(error))
            if action.action != "Post" and (action.user_stack_trace or action.kernel_stack_trace):
                yield at(a_path, "stack traces are taken for Post only; use action: Post")


def _match_arg(
    hook: Hook, match: MatchArg, path: Sequence[PathPart], returned: Arg | None = None
) -> Iterator[Problem]:
    arg = returned if returned is not None else hook.arg_by_ref(match.index, match.label)
    if arg is None:
        ref = f"label {match.label!r}" if match.label is not None else f"index {match.index}"
        known = ", ".join(a.name() for a in hook.declared_args()) or "none"
        yield at(
            path,
            f"no arg with {ref} in this hook's args (declared: {known}); declare it in args first",
        )
        return
    allowed = values.operators_for(arg.type)
    if arg.type in values.NOP_TYPES:
        yield at(path, f"{arg.name()!r} is a nop arg: it reads nothing, so nothing can match it")
        return
    if match.operator not in allowed:
        yield at(
            (*path, "operator"),
            f"{match.operator} does not apply to {arg.name()!r} of "
            f"type {arg.type}; use one of {', '.join(sorted(allowed))}",
        )
        return
    ranged = match.operator in {"InRange", "NotInRange"} | values.PORT_OPERATORS
    if ranged and len(match.values) > limits.MAX_RANGES:
        yield at(
            (*path, "values"),
            f"{len(match.values)} values; {match.operator} takes at most {limits.MAX_RANGES} "
            "(ranges are checked in a bounded loop in the kernel)",
        )
    if not match.values and match.operator not in values.PRIVILEGED_PORT_OPERATORS:
        yield at((*path, "values"), f"{match.operator} needs at least one value")
    if match.operator in values.SINGLE_VALUE_OPERATORS and len(match.values) != 1:
        yield at(
            (*path, "values"), f"{match.operator} takes exactly one value, got {len(match.values)}"
        )
    try:
        values.parse_match_values(match.operator, arg.type, match.values)
    except values.IndexedValueError as error:
        yield at((*path, "values", error.index), str(error))


def check_rule(rule: AggregationRuleSpec, policy: TracingPolicySpec | None) -> list[Problem]:
    """Check a rule on its own, and against its policy when that is known."""
    return list(_rule(rule, policy, ("spec",)))


def _rule(
    rule: AggregationRuleSpec, policy: TracingPolicySpec | None, path: Sequence[PathPart]
) -> Iterator[Problem]:
    name = rule.metric.name
    if name.endswith(aggregations.RESERVED_SUFFIXES):
        yield at(
            (*path, "metric", "name"),
            f"{name!r} ends in a suffix weir adds itself "
            f"({', '.join(aggregations.RESERVED_SUFFIXES)}); drop it",
        )
    if name.startswith(aggregations.RESERVED_PREFIXES):
        yield at(
            (*path, "metric", "name"),
            f"{name!r} is reserved: weir exports "
            f"{', '.join(p + '*' for p in aggregations.RESERVED_PREFIXES)} itself; "
            "choose another name",
        )
    if len(set(rule.group_by)) != len(rule.group_by):
        yield at((*path, "groupBy"), "lists a key twice; give each key once")
    arg_keys = [k for k in rule.group_by if k.startswith("arg:")]
    if len(arg_keys) > limits.MAX_GROUP_ARGS:
        yield at(
            (*path, "groupBy"),
            f"{len(arg_keys)} arg: keys; at most {limits.MAX_GROUP_ARGS} per rule (the series "
            f"key holds {limits.MAX_GROUP_ARGS} argument values)",
        )
    buckets = rule.value.buckets
    if buckets is not None and buckets.type == "explicit":
        if not buckets.bounds:
            yield at((*path, "value", "buckets", "bounds"), "explicit buckets need bounds")
        if any(b >= c for b, c in zip(buckets.bounds, buckets.bounds[1:], strict=False)):
            yield at((*path, "value", "buckets", "bounds"), "must be strictly increasing")
        if rule.value.type == "duration":
            if any(b <= 0 or b * 1e9 >= 2**63 for b in buckets.bounds):
                yield at(
                    (*path, "value", "buckets", "bounds"),
                    "a duration's bounds are seconds, above 0 and below 9.2e9 (0.005 is 5 ms)",
                )
        elif any(not float(b).is_integer() or abs(b) >= 2**63 for b in buckets.bounds):
            yield at(
                (*path, "value", "buckets", "bounds"),
                f"the bounds of an argument's {rule.value.type} are whole numbers (64-bit); "
                "fractions are for a duration's seconds",
            )
    value = rule.value
    if value.seconds() and value.arg is not None:
        yield at((*path, "value"), f"a {value.type} measures time; drop arg")
    if value.type == "duration":
        if value.start is None:
            yield at((*path, "value"), "a duration needs start: the hook that starts the clock")
    elif value.start is not None or value.key is not None or value.output is not None:
        yield at((*path, "value"), "start, key and output apply to duration only")
    if value.buckets is not None and not value.histogram():
        yield at(
            (*path, "value"),
            "buckets apply to histograms only (histogram, or duration with output histogram)",
        )
    if rule.value.type not in ("count", "duration", "cpu_time") and rule.value.arg is None:
        yield at(
            (*path, "value", "arg"),
            f"{rule.value.type} needs arg: the label of an integer argument",
        )
    if policy is None:
        return
    hooks = policy.hooks()
    if rule.hook is not None:
        hooks = [h for h in hooks if h.hook_id() == rule.hook]
        if not hooks:
            known = ", ".join(h.hook_id() for h in policy.hooks())
            yield at(
                (*path, "hook"),
                f"policy {rule.policy_ref.name!r} has no hook "
                f"{rule.hook!r}; its hooks are: {known}",
            )
            return
    for index, key in enumerate(rule.group_by):
        kind, _, label = key.partition(":")
        if not label:
            continue
        for hook in hooks:
            arg = hook.arg_by_ref(None, label)
            if arg is None:
                yield at(
                    (*path, "groupBy", index),
                    f"hook {hook.hook_id()} has no arg labelled "
                    f"{label!r}; declare it in the policy or set hook:",
                )
            elif kind == "addressClass" and arg.type not in values.ADDRESS_TYPES:
                yield at(
                    (*path, "groupBy", index),
                    f"addressClass needs a sock, sockaddr or skb arg; {label!r} is {arg.type}",
                )
            elif kind == "arg" and arg.type in values.STRING_TYPES | values.ADDRESS_TYPES:
                yield at(
                    (*path, "groupBy", index),
                    f"grouping by the {arg.type} arg {label!r} "
                    "is not supported (unbounded values); group by an integer arg, or by "
                    "addressClass for addresses",
                )
    if rule.value.type == "duration":
        yield from _duration(rule, policy, path)
    if rule.value.arg is not None:
        for hook in hooks:
            arg = hook.arg_by_ref(None, rule.value.arg)
            if arg is None:
                yield at(
                    (*path, "value", "arg"),
                    f"hook {hook.hook_id()} has no arg labelled {rule.value.arg!r}",
                )
            elif arg.type not in values.INTEGER_TYPES:
                yield at(
                    (*path, "value", "arg"),
                    f"{rule.value.type} needs an integer arg; {rule.value.arg!r} is {arg.type}",
                )


def _duration(
    rule: AggregationRuleSpec, policy: TracingPolicySpec, path: Sequence[PathPart]
) -> Iterator[Problem]:
    """A duration's start hook is one of the policy's, and each side's arg: key names an
    integer arg of its own hook."""
    value = rule.value
    by_id = {h.hook_id(): h for h in policy.hooks()}
    if rule.hook is None:
        yield at((*path, "hook"), "a duration needs hook: the hook that stops the clock")
    if value.start is None:
        return
    start = by_id.get(value.start.hook)
    if start is None:
        yield at(
            (*path, "value", "start", "hook"),
            f"policy {rule.policy_ref.name!r} has no hook {value.start.hook!r}; its hooks "
            f"are: {', '.join(by_id)}",
        )
    else:
        yield from _key_problems(start, value.start.key, (*path, "value", "start", "key"))
    end = by_id.get(rule.hook or "")
    if end is not None:
        yield from _key_problems(end, value.duration_key(), (*path, "value", "key"))


def _key_type_problem(label: str, type_: str) -> str:
    return (
        f"a key is an integer, sock, skb, file, path or fd arg (its value, or the address of "
        f"the object); {label!r} is {type_}"
    )


def _key_problems(
    hook: KProbe | Tracepoint | UProbe | RawTracepoint, key: str, path: Sequence[PathPart]
) -> Iterator[Problem]:
    """A mark's or a clock's key names an arg of its hook that can be a key."""
    kind, _, label = key.partition(":")
    if kind != "arg":
        return
    arg = hook.arg_by_ref(None, label)
    if arg is None:
        yield at(path, f"hook {hook.hook_id()} has no arg labelled {label!r}")
    elif arg.type not in values.KEY_TYPES:
        yield at(path, _key_type_problem(label, arg.type))


def _marks(spec: TracingPolicySpec, path: Sequence[PathPart]) -> Iterator[Problem]:
    """Marks: what a selector sets or clears, and what matchMarks test, agree across the
    policy's hooks (a mark tested is set somewhere, by the same kind of key)."""
    set_by: dict[str, tuple[str, str]] = {}  # mark -> key kind, where it is first set
    for where, hook in spec.hooks_with_paths():
        for s_number, selector in enumerate(hook.selectors):
            sel_path = (*path, *where, "selectors", s_number)
            for a_number, action in selector.mark_actions():
                a_path = (*sel_path, "matchActions", a_number)
                key = mark_key(hook, action)
                if action.action in ("TrackSock", "UntrackSock"):
                    arg = next((a for a in hook.args if a.index == action.arg_sock), None)
                    if arg is None or arg.type != "sock":
                        yield at(
                            (*a_path, "argSock"),
                            f"must be the index of a sock arg of this hook; args[] has no sock "
                            f"at index {action.arg_sock}",
                        )
                        continue
                else:
                    yield from _key_problems(hook, key, (*a_path, "key"))
                if action.action in ("Mark", "TrackSock"):
                    name = action.mark or SOCK_MARK
                    set_by.setdefault(name, (key.partition(":")[0], format_path(a_path)))
        for action, _ in _return_marks(hook):
            if action.action == "TrackSock":
                returned = format_path((*path, *where, "returnArgAction"))
                set_by.setdefault(SOCK_MARK, ("arg", returned))
    for where, hook in spec.hooks_with_paths():
        for s_number, selector in enumerate(hook.selectors):
            for m_number, match in enumerate(selector.match_marks):
                m_path = (*path, *where, "selectors", s_number, "matchMarks", m_number)
                yield from _key_problems(hook, match.key, (*m_path, "key"))
                found = set_by.get(match.mark)
                kind = match.key.partition(":")[0]
                if found is None:
                    yield at(
                        (*m_path, "mark"),
                        f"no hook of this policy sets mark {match.mark!r}; add a matchActions "
                        f"entry {{action: Mark, mark: {match.mark}}} where it should be set",
                    )
                elif found[0] != kind:
                    yield at(
                        (*m_path, "key"),
                        f"mark {match.mark!r} is set keyed by {found[0]} ({found[1]}); test it "
                        f"by {found[0]} too, or it never matches",
                    )


def _return_marks(
    hook: KProbe | Tracepoint | UProbe | RawTracepoint,
) -> list[tuple[MatchAction, str]]:
    """returnArgAction TrackSock / UntrackSock, as the mark action every matching call of
    the hook takes (weir runs it with the matching selector's own), keyed by the return
    value."""
    if not isinstance(hook, FunctionHook) or hook.return_arg is None:
        return []
    if hook.return_arg_action in ("TrackSock", "UntrackSock"):
        action = MatchAction.model_validate({"action": hook.return_arg_action, "argSock": 0})
        return [(action, f"arg:{hook.return_arg.name()}")]
    return []


def mark_actions(
    hook: KProbe | Tracepoint | UProbe | RawTracepoint, selector: Selector
) -> list[tuple[MatchAction, str]]:
    """Every mark a selector of the hook sets or clears when it matches, with its key: its
    own, then the hook's returnArgAction."""
    own = [(action, mark_key(hook, action)) for _, action in selector.mark_actions()]
    return own + _return_marks(hook)


def mark_key(hook: KProbe | Tracepoint | UProbe | RawTracepoint, action: MatchAction) -> str:
    """What a selector's mark action keys by: its key (thread by default), or TrackSock's
    sock arg."""
    if action.action in ("TrackSock", "UntrackSock"):
        arg = next((a for a in hook.args if a.index == action.arg_sock), None)
        return f"arg:{arg.name()}" if arg is not None else "arg:"
    return action.key or "thread"


def memory(
    policy: TracingPolicySpec, rules: Sequence[tuple[str, AggregationRuleSpec]]
) -> tuple[int, dict[str, int]]:
    """The most kernel memory a policy's maps can take (bytes), and each rule's part.

    Series count once per hook a rule folds (a rule without ``hook`` folds them all);
    posting hooks add their ring buffer and rate-limit map (stacks travel in the events)."""
    total = 0
    for hook in policy.hooks():
        actions = [s.action() for s in hook.selectors]
        if not hook.selectors or any(a.action == "Post" for a in actions):
            total += limits.RINGBUF_PAGES * 4096
            total += limits.RATE_LIMIT_ENTRIES * limits.RATE_LIMIT_BYTES
    parts = {}
    hooks = [h.hook_id() for h in policy.hooks()]
    for name, rule in rules:
        folded = sum(1 for h in hooks if rule.hook in (None, h))
        parts[name] = folded * (rule.max_series + 1) * _series_bytes(rule)
    return total + sum(parts.values()), parts


def _series_bytes(rule: AggregationRuleSpec) -> int:
    return limits.SERIES_BYTES["histogram" if rule.value.histogram() else "count"]


def check_memory(
    policy: TracingPolicySpec, rules: Sequence[tuple[str, AggregationRuleSpec]]
) -> dict[str, list[Problem]]:
    """Problems for the rules of a policy whose maps would pass the memory budget."""
    total, parts = memory(policy, rules)
    if total <= limits.POLICY_MEMORY_BUDGET:
        return {}
    mib = 2**20
    return {
        name: [
            at(
                ("spec", "maxSeries"),
                f"the policy's maps could take {total / mib:.0f} MiB, past the budget of "
                f"{limits.POLICY_MEMORY_BUDGET / mib:.0f} MiB per policy; this rule's series "
                f"take up to {part / mib:.1f} MiB ({_series_bytes(rule)} B "
                "per series per hook); lower maxSeries, or fold fewer hooks (spec.hook)",
            )
        ]
        for name, rule in rules
        for part in [parts[name]]
        if part > 0
    }


def check_rules_per_hook(
    policy: TracingPolicySpec, rules: Sequence[tuple[str, AggregationRuleSpec]]
) -> dict[str, list[Problem]]:
    """A hook folds at most MAX_RULES_PER_HOOK rules. The first ones by name keep their
    place; each rule past them gets a problem with the count, so the policy and the other
    rules keep working."""
    problems: dict[str, list[Problem]] = {}
    for hook in policy.hooks():
        hook_id = hook.hook_id()
        # Durations starting here: each distinct start key is one record per call.
        starts: dict[str, list[str]] = {}
        for name, rule in sorted(rules):
            start = rule.value.start if rule.value.type == "duration" else None
            if start is not None and start.hook == hook_id:
                starts.setdefault(start.key, []).append(name)
        for key in list(starts)[limits.MAX_STARTS_PER_HOOK :]:
            for name in starts[key]:
                problems.setdefault(name, []).append(
                    at(
                        ("spec", "value", "start", "key"),
                        f"{len(starts)} different keys start clocks on hook {hook_id}; at "
                        f"most {limits.MAX_STARTS_PER_HOOK}: share a key between rules",
                    )
                )
        folding = sorted(name for name, rule in rules if rule.hook in (None, hook_id))
        if len(folding) <= limits.MAX_RULES_PER_HOOK:
            continue
        for name in folding[limits.MAX_RULES_PER_HOOK :]:
            problems.setdefault(name, []).append(
                at(
                    ("spec",),
                    f"{len(folding)} AggregationRules fold hook {hook_id} "
                    f"({', '.join(folding)}); at most {limits.MAX_RULES_PER_HOOK}, the first by "
                    "name; set hook: to fold another hook, or merge rules",
                )
            )
    return problems


def _shape(rule: AggregationRuleSpec) -> tuple[object, ...]:
    """What one Prometheus family needs its rules to agree on: labels, value, buckets."""
    buckets = rule.value.buckets
    bounds = (buckets.type, tuple(buckets.bounds)) if buckets is not None else None
    return (tuple(rule.group_by), rule.value.type, rule.value.histogram(), bounds)


def check_metric_names(
    rules: Sequence[tuple[str, AggregationRuleSpec]],
) -> dict[str, list[Problem]]:
    """Rules sharing a metric name must export the same shape (value type and labels):
    one Prometheus family cannot have two label sets. The first rule by name keeps the
    name; the others get a problem."""
    first: dict[str, tuple[str, AggregationRuleSpec]] = {}
    problems: dict[str, list[Problem]] = {}
    for name, spec in sorted(rules, key=lambda r: r[0]):
        owner = first.setdefault(spec.metric.name, (name, spec))
        if owner[0] == name:
            continue
        other = owner[1]
        if _shape(other) != _shape(spec):
            problems.setdefault(name, []).append(
                at(
                    ("spec", "metric", "name"),
                    f"{spec.metric.name!r} is also exported by AggregationRule {owner[0]!r} "
                    "with other labels, another value type or other buckets; give this rule "
                    "its own metric name",
                )
            )
    return problems
