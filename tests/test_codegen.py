"""codegen: policies become integer flags and map seeds, never C text."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from weir_agent.spec import abi, btf, codegen, configs, programs, selectors
from weir_agent.spec.formats import Field, parse_format
from weir_api import documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy

OPENAT = parse_format(
    "field:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
    "field:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n"
    "field:int flags;\toffset:32;\tsize:8;\tsigned:0;\n"
)
SEND = parse_format(
    "field:void * sk;\toffset:8;\tsize:8;\tsigned:0;\n"
    "field:int ret;\toffset:20;\tsize:4;\tsigned:1;\n"
)


SOCK_LAYOUT: dict[str, int | str] = {name: 100 + n for n, name in enumerate(btf.ALL_FIELDS)}


def make(
    spec: dict[str, Any], rules: list[dict[str, Any]] | None = None, *, cpus: int = 1
) -> programs.Generated:
    policy = documents.parse_object(
        {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": spec,
        },
        source="t",
    )
    assert policy.ok, policy.problems
    assert isinstance(policy.obj, TracingPolicy)
    parsed_rules = []
    for number, rule in enumerate(rules or []):
        item = documents.parse_object(
            {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "AggregationRule",
                "metadata": {"name": f"r{number}"},
                "spec": rule,
            },
            source="r",
        )
        assert item.ok and isinstance(item.obj, AggregationRule), item.problems
        parsed_rules.append(item.obj)
    layouts: dict[str, list[Field] | None] = {
        "tracepoint:syscalls:sys_enter_openat": OPENAT,
        "tracepoint:sock:sock_send_length": SEND,
    }
    return codegen.generate(
        policy.obj, parsed_rules, layouts=layouts, kernel_layout=SOCK_LAYOUT, cpus=cpus
    )


def openat(*matches: dict[str, Any], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_openat",
                "args": args
                or [
                    {"field": "filename", "type": "filename", "label": "path"},
                    {"field": "flags", "type": "int", "label": "flags"},
                ],
                "selectors": [{"matchArgs": list(matches)}],
            }
        ]
    }


def flags(generated: programs.Generated) -> dict[str, int | str]:
    assert not generated.problems, generated.problems
    return dict(generated.programs[0].flags)


def test_flags_are_integers_and_every_slot_is_given() -> None:
    program = make(
        openat({"label": "path", "operator": "Prefix", "values": ['/a"b*/\n#x']})
    ).programs[0]
    values = dict(program.flags)
    for name, value in program.flags:
        assert isinstance(value, int) or (value.startswith("0x") and value.endswith("ULL")), name
    for s in range(abi.MAX_SELECTORS):
        for m in range(abi.MAX_MATCHERS):
            assert f"S{s}_M{m}_OP" in values
    assert all(f"ARG{n}_KIND" in values for n in range(abi.MAX_ARGS))
    assert program.seeds.strings == ((0, b'/a"b*/\n#x', 32 + 8 * 9),)


def test_args_follow_the_tracefs_layout() -> None:
    values = flags(make(openat()))
    assert (values["ARG0_KIND"], values["ARG0_SRC"], values["ARG0_USER"]) == (
        abi.Kind.STR_PTR,
        24,
        1,
    )
    assert (
        values["ARG1_KIND"],
        values["ARG1_SRC"],
        values["ARG1_SIZE"],
        values["ARG1_SIGNED"],
    ) == (abi.Kind.INT, 32, 4, 1)  # int reads the low 4 bytes of the 8-byte syscall field
    assert values["ARG2_KIND"] == abi.Kind.NONE


@pytest.mark.parametrize(
    ("match", "op", "neg", "seeds"),
    [
        (
            {"label": "path", "operator": "Equal", "values": ["/x"]},
            abi.Op.STR,
            0,
            {"strings": ((0, b"/x\0", 56),)},
        ),
        (
            {"label": "path", "operator": "NotPrefix", "values": ["/x"]},
            abi.Op.STR,
            1,
            {"strings": ((0, b"/x", 48),)},
        ),
        (
            {"label": "path", "operator": "Postfix", "values": [".log"]},
            abi.Op.STR_POSTFIX,
            0,
            {"strings": ((0, b"gol.", 64),)},
        ),
        (
            {"label": "flags", "operator": "NotEqual", "values": ["-1", "2"]},
            abi.Op.INT_SET,
            1,
            {"integers": ((0, 2**64 - 1), (0, 2))},
        ),
        (
            {"label": "flags", "operator": "InRange", "values": ["1:5", "9:9"]},
            abi.Op.RANGE,
            0,
            # flags is signed: the sign bit is flipped, which keeps the order
            {"ranges": ((0, 2**63 + 1, 2**63 + 5), (0, 2**63 + 9, 2**63 + 9))},
        ),
    ],
)
def test_operators_become_ops_and_seeds(
    match: dict[str, Any], op: abi.Op, neg: int, seeds: dict[str, Any]
) -> None:
    generated = make(openat(match))
    matcher = generated.programs[0].config.S[0].M[0]
    assert (op, neg) == (matcher.OP, matcher.NEG)
    for name, expected in seeds.items():
        assert getattr(generated.programs[0].seeds, name) == expected


def test_single_value_operators_become_flags() -> None:
    program = make(openat({"label": "flags", "operator": "GT", "values": ["-2"]})).programs[0]
    assert dict(program.flags)["S0_M0_VAL"] == "0xfffffffffffffffeULL"  # a specialised build's
    matcher = program.config.S[0].M[0]
    assert (matcher.OP, matcher.VAL) == (abi.Op.GT, -2)


def test_addresses_are_ipv4_mapped_with_prefix_bits() -> None:
    spec = {
        "tracepoints": [
            {
                "subsystem": "sock",
                "event": "sock_send_length",
                "args": [{"field": "sk", "type": "sock"}, {"field": "ret", "type": "int"}],
                "selectors": [
                    {
                        "matchArgs": [
                            {
                                "label": "sk",
                                "operator": "NotDAddr",
                                "values": ["10.0.0.0/8", "fd00::/8"],
                            },
                            {"label": "sk", "operator": "DPort", "values": ["443", "8000:8080"]},
                        ]
                    }
                ],
            }
        ]
    }
    generated = make(spec)
    values = flags(generated)
    matcher = generated.programs[0].config.S[0].M[0]
    assert (matcher.OP, matcher.NEG, values["USE_SOCK"]) == (abi.Op.DADDR, 1, 1)
    assert generated.programs[0].seeds.addresses == (
        (0, bytes(10) + b"\xff\xff\x0a\x00\x00\x00", 32 + 104),
        (0, b"\xfd" + bytes(15), 32 + 8),
    )
    assert generated.programs[0].seeds.ranges == ((1, 443, 443), (1, 8000, 8080))
    # struct sock's offsets come from the kernel's BTF, as flags; never from headers.
    assert {name: values[name] for name in btf.SOCK_FIELDS} == {
        name: SOCK_LAYOUT[name] for name in btf.SOCK_FIELDS
    }
    unknown = codegen.generate(
        documents.parse_object(
            {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "TracingPolicy",
                "metadata": {"name": "p"},
                "spec": spec,
            },
            source="t",
        ).obj,  # type: ignore[arg-type]
        [],
        layouts={"tracepoint:sock:sock_send_length": SEND},
        kernel_layout=dict.fromkeys(
            btf.ALL_FIELDS, "cannot read /sys/kernel/btf/vmlinux (No such file or directory)"
        ),
    )
    assert [str(p) for p in unknown.problems] == [
        "spec.tracepoints[0].args[0]: a sock argument needs the kernel's layout: "
        "cannot read /sys/kernel/btf/vmlinux (No such file or directory)"
    ]


def test_aggregations_fill_slots_and_size_the_maps() -> None:
    generated = make(
        openat({"label": "path", "operator": "Prefix", "values": ["/"]}),
        rules=[
            {
                "policyRef": {"name": "p"},
                "groupBy": ["pod", "arg:flags"],
                "metric": {"name": "a"},
                "maxSeries": 10,
            },
            {
                "policyRef": {"name": "p"},
                "value": {"type": "histogram", "arg": "flags"},
                "metric": {"name": "b"},
                "maxSeries": 5,
            },
        ],
    )
    values = flags(generated)
    first, second = generated.programs[0].config.AGG[:2]
    assert (first.ON, first.CGROUP, first.KARG0, first.VALUE) == (1, 1, 1, abi.ValueKind.COUNT)
    assert (second.VALUE, second.VARG) == (abi.ValueKind.HIST_EXP2, 1)
    # Capacities hold two configurations' entries, rounded to a power of two; aggregation
    # maps hold at least one default maxSeries, so adding or dropping a rule keeps the shape.
    assert (values["AGG_PLAIN_MAX"], values["AGG_HIST_MAX"]) == (32768, 32768)
    assert [programs.room(n) for n in (0, 11, 32, 33, 1000, 1024)] == [64, 64, 64, 128, 2048, 2048]
    assert generated.programs[0].aggregations[0].key_fields == (
        ("pod", "cgroup"),
        ("arg:flags", "arg0"),
    )


def test_range_prefixes_cover_exactly() -> None:
    for low, high in [(0, 0), (1, 5), (443, 443), (8000, 8080), (0, 2**64 - 1), (5, 2**64 - 1)]:
        prefixes = selectors.range_prefixes(low, high)
        covered = [(v, v + (1 << (64 - bits)) - 1) for v, bits in prefixes]
        assert covered[0][0] == low and covered[-1][1] == high
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))
        assert len(prefixes) <= 2 * 64
    assert selectors.range_prefixes(8000, 8080) == [(8000, 58), (8064, 60), (8080, 64)]


def test_shape_apart_from_configuration() -> None:
    """Values, operators and aggregations are configuration; arguments and posting are shape."""
    a = make(openat({"label": "path", "operator": "Prefix", "values": ["/a"]}))
    b = make(openat({"label": "path", "operator": "Postfix", "values": ["/b", "/c"]}))
    (pa,), (pb,) = a.programs, b.programs
    assert pa.digest() != pb.digest()
    assert pa.shape_digest() == pb.shape_digest()
    assert ("CONFIGURED", 1) in pa.shape_flags()
    assert not any(configs.CONFIG_FLAG.match(name) for name, _ in pa.shape_flags())
    assert pb.config.S[0].M[0].OP == abi.Op.STR_POSTFIX
    assert pa.config.NUM_SELECTORS == 1
    assert configs.from_flags(pa.config.flags()) == pa.config  # the names both ways
    assert "-DCONFIGURED=0" in pa.cflags(configured=False)
    assert "-DS0_M0_OP=6" in pa.cflags(configured=False)
    assert not any(f.startswith("-DS0_") for f in pa.cflags())


def test_limits_of_the_program_are_problems_with_paths() -> None:
    # The program's own limits are refused before generation (weir check, the operator, the
    # CRD's CEL); the generator keeps its guard for a policy that bypassed them.
    too_many = [{"field": "filename", "type": "filename", "label": f"s{n}"} for n in range(3)]
    with pytest.raises(AssertionError, match="at most 2 string, filename, char_buf, file, path"):
        make(openat(args=too_many))
    policy = TracingPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": openat(args=too_many)}
    )
    generated = codegen.generate(
        policy,
        [],
        layouts={"tracepoint:syscalls:sys_enter_openat": OPENAT},
        kernel_layout=SOCK_LAYOUT,
    )
    assert [str(p) for p in generated.problems] == [
        "spec.tracepoints[0].args[2]: at most 2 string arguments per hook; drop one"
    ]
    missing = make(
        {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "nope", "type": "int"}],
                }
            ]
        }
    )
    assert "has no field 'nope'" in str(missing.problems[0])


def test_digest_changes_with_seeds_only_when_they_change() -> None:
    one = make(openat({"label": "path", "operator": "Prefix", "values": ["/a"]})).programs[0]
    same = make(openat({"label": "path", "operator": "Prefix", "values": ["/a"]})).programs[0]
    other = make(openat({"label": "path", "operator": "Prefix", "values": ["/b"]})).programs[0]
    assert one.digest() == same.digest() != other.digest()


def test_tetragon_spellings_generate_what_they_mean() -> None:
    policy = TracingPolicy.model_validate(
        {
            "metadata": {"name": "t"},
            "spec": {
                "kprobes": [
                    {
                        "call": "sys_write",  # Tetragon's spelling of a syscall
                        "syscall": True,
                        "message": "a write",
                        "tags": ["observability.filesystem"],
                        "args": [
                            {"index": 0, "type": "int", "label": "fd"},
                            {"index": 1, "type": "char_buf", "sizeArgIndex": 3, "label": "buf"},
                            {"index": 2, "type": "size_t", "label": "count"},
                            {"index": 3, "type": "nop"},
                        ],
                    },
                    {"call": "write", "syscall": True},
                ],
                "uprobes": [{"path": "/bin/bash", "symbols": ["readline", "main"]}],
            },
        }
    )
    generated = codegen.generate(policy, [], layouts={}, kernel_layout=SOCK_LAYOUT)
    assert generated.problems == ()
    write, bare, *uprobes = generated.programs
    assert write.target == bare.target == ("__x64_sys_write",)
    assert (write.message, write.tags) == ("a write", ("observability.filesystem",))
    assert [a.name for a in write.args] == ["fd", "buf", "count"]  # nop reads nothing
    flags = dict(write.flags)
    buf = next(a for a in write.args if a.name == "buf")
    count = next(a for a in write.args if a.name == "count")
    assert flags[f"ARG{buf.slot}_LEN_ARG"] == count.slot  # 1-based: 3 is index 2
    assert [p.target for p in uprobes] == [("/bin/bash", "readline"), ("/bin/bash", "main")]
    assert [p.hook for p in uprobes] == ["uprobe:/bin/bash:readline", "uprobe:/bin/bash:main"]


def test_a_list_of_syscalls_is_one_kprobe_each() -> None:
    spec = {
        "lists": [{"name": "dups", "type": "syscalls", "values": ["sys_dup", "dup2"]}],
        "kprobes": [{"call": "list:dups", "args": [{"index": 0, "type": "int", "label": "fd"}]}],
    }
    generated = make(spec)
    assert [p.target for p in generated.programs] == [("__x64_sys_dup",), ("__x64_sys_dup2",)]
    assert [p.hook for p in generated.programs] == ["kprobe:sys_dup", "kprobe:dup2"]
    parsed = documents.parse_object(
        {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {**spec, "lists": []},
        },
        source="t",
    )
    assert [str(p) for p in parsed.problems] == [
        "spec.kprobes[0].call: names list 'dups', which spec.lists does not have (lists: none)"
    ]


def test_task_selectors_are_matchers_after_the_arg_matchers() -> None:
    spec = openat({"label": "flags", "operator": "Equal", "values": ["1"]})
    spec["tracepoints"][0]["selectors"][0].update(
        matchPIDs=[{"operator": "NotIn", "values": [1, "7"], "followForks": True,
                    "isNamespacePID": True}],
        matchNamespaces=[{"namespace": "Net", "operator": "In", "values": ["host_ns", "42"]}],
        matchCapabilities=[{"type": "Permitted", "operator": "In",
                            "values": ["CAP_SYS_ADMIN", "net_raw"]}],
    )  # fmt: skip
    policy = documents.parse_object(
        {"apiVersion": "weir.dev/v1alpha1", "kind": "TracingPolicy",
         "metadata": {"name": "p"}, "spec": spec},
        source="t",
    ).obj  # fmt: skip
    assert isinstance(policy, TracingPolicy)
    layouts: dict[str, list[Field] | None] = {"tracepoint:syscalls:sys_enter_openat": OPENAT}
    generated = codegen.generate(
        policy, [], layouts=layouts, kernel_layout=SOCK_LAYOUT, host_namespaces={"net": 99}
    )
    values = flags(generated)
    # matchArgs[0] is matcher 0; then matchPIDs, matchNamespaces, matchCapabilities.
    _, pids, namespaces, capabilities = generated.programs[0].config.S[0].M[:4]
    assert (int(abi.Op.PID), 1) == (pids.OP, pids.NEG)
    assert pids.VAL == 3  # namespace numbering | followForks
    assert (int(abi.Op.NS), int(abi.Namespace.Net)) == (namespaces.OP, namespaces.VAL)
    assert (int(abi.Op.CAPS), int(abi.CapSet.Permitted)) == (capabilities.OP, capabilities.ARG)
    assert capabilities.VAL == (1 << 21) | (1 << 13)
    assert set(generated.programs[0].seeds.integers) >= {(1, 1), (1, 7), (2, 42), (2, 99)}
    assert (values["USE_TASK"], values["USE_PID_TREE"]) == (1, 1)
    assert values["TASK_CRED"] == SOCK_LAYOUT["TASK_CRED"]
    assert values["SK_FAMILY"] == 0  # groups a program does not read keep one shape
    unknown = codegen.generate(
        policy,
        [],
        layouts=layouts,
        kernel_layout=SOCK_LAYOUT,
        host_namespaces={"net": "cannot read /proc/1/ns/net (Permission denied)"},
    )
    assert [str(p) for p in unknown.problems] == [
        "spec.tracepoints[0].selectors[0].matchNamespaces[0].values[0]: host_ns: cannot read "
        "/proc/1/ns/net (Permission denied)"
    ]


def test_file_and_fd_args_take_string_slots_and_the_path_layout() -> None:
    generated = make(
        {
            "kprobes": [
                {
                    "call": "security_file_permission",
                    "args": [{"index": 0, "type": "file"}, {"index": 1, "type": "fd"}],
                    "selectors": [
                        {"matchArgs": [{"index": 0, "operator": "Postfix", "values": [".so"]}]}
                    ],
                },
                {
                    "call": "ip_output",
                    "args": [{"index": 2, "type": "skb", "label": "pkt"}],
                    "selectors": [{"matchArgs": [{"label": "pkt", "operator": "DPortPriv"}]}],
                },
            ]
        }
    )
    assert not generated.problems, generated.problems
    files, packets = (dict(p.flags) for p in generated.programs)
    assert (files["ARG0_KIND"], files["ARG0_SLOT"]) == (int(abi.Kind.FILE), 0)
    assert (files["ARG1_KIND"], files["ARG1_SLOT"], files["ARG1_SIZE"]) == (int(abi.Kind.FD), 1, 4)
    assert (files["USE_PATH"], files["USE_SKB"], files["REV_SLOTS"]) == (1, 0, 1)
    assert files["DENTRY_PARENT"] == SOCK_LAYOUT["DENTRY_PARENT"]
    assert (packets["ARG0_KIND"], packets["USE_SKB"], packets["S0_M0_OP"]) == (
        int(abi.Kind.SKB),
        1,
        int(abi.Op.DPORT),
    )
    assert generated.programs[1].seeds.ranges == ((0, 0, 1023),)


def test_a_duration_starts_a_clock_on_one_hook_and_folds_it_on_another() -> None:
    enter, exit_ = (
        {"subsystem": "syscalls", "event": f"sys_{side}_openat", "args": args}
        for side, args in (
            ("enter", [{"field": "flags", "type": "int", "label": "flags"}]),
            ("exit", []),
        )
    )
    start = {"hook": "tracepoint:syscalls:sys_enter_openat", "key": "arg:flags"}
    end_hook = "tracepoint:syscalls:sys_exit_openat"
    policy = documents.parse_object(
        {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {"tracepoints": [enter, exit_]},
        },
        source="t",
    ).obj
    rules = [
        documents.parse_object(
            {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "AggregationRule",
                "metadata": {"name": name},
                "spec": {
                    "policyRef": {"name": "p"},
                    "hook": end_hook,
                    "value": {"type": "duration", "start": start, **value},
                    "metric": {"name": name},
                },
            },
            source="r",
        ).obj
        for name, value in (
            ("latency", {"buckets": {"type": "explicit", "bounds": [0.001, 2]}}),
            ("total", {"output": "counter", "key": "process"}),
        )
    ]
    assert isinstance(policy, TracingPolicy)
    exit_format = parse_format("field:long ret;\toffset:16;\tsize:8;\tsigned:1;\n")
    generated = codegen.generate(
        policy,
        [r for r in rules if isinstance(r, AggregationRule)],
        layouts={"tracepoint:syscalls:sys_enter_openat": OPENAT, end_hook: exit_format},
    )
    assert not generated.problems, generated.problems
    starter, ender = (dict(p.flags) for p in generated.programs)
    starts = generated.programs[0].config.MK
    latency_cfg, total_cfg = generated.programs[1].config.AGG[:2]
    pair = programs.clock_pair("p", start["hook"], start["key"])
    # The start hook records under the pair, keyed by its flags argument (slot 0).
    assert (abi.Clock.ARG, 0, pair) == (starts[0].KEY, starts[0].ARG, starts[0].ID)
    assert (starts[1].KEY, starter["USE_STARTS"]) == (abi.Clock.NONE, 1)
    assert (latency_cfg.DARG, total_cfg.DARG) == (abi.KEY_THREAD, abi.KEY_PROCESS)
    # The end hook looks the same pair up by thread (default) or process, and folds the
    # nanoseconds: a histogram with bounds in ns, or a sum exported as seconds.
    assert (latency_cfg.DUR, total_cfg.DUR) == (abi.Clock.THREAD, abi.Clock.PROCESS)
    assert {latency_cfg.DID, total_cfg.DID} == {pair}
    assert (latency_cfg.VALUE, total_cfg.VALUE) == (
        abi.ValueKind.HIST_EXPLICIT,
        abi.ValueKind.SUM,
    )
    latency, total = generated.programs[1].aggregations
    assert latency.bounds == (1_000_000, 2_000_000_000)
    assert (latency.seconds, total.seconds) == (True, True)
    assert (generated.programs[1].config.MK[0].KEY, ender["USE_STARTS"]) == (abi.Clock.NONE, 1)
    # Durations are configuration: the pair, key and value are config fields.
    assert all(configs.CONFIG_FLAG.match(n) for n in ("MK0_ID", "AGG0_DID", "AGG1_DUR"))


def test_marks_are_set_by_one_hook_and_tested_by_another() -> None:
    # TrackSock on tcp_connect marks the sock at index 0; tcp_sendmsg tests the mark by its
    # own sock arg, and a Mark keyed by process is tested by NotIn.
    generated = make(
        {
            "kprobes": [
                {
                    "call": "tcp_connect",
                    "args": [{"index": 0, "type": "sock", "label": "sk"}],
                    "selectors": [
                        {
                            "matchActions": [
                                {"action": "NoPost"},
                                {"action": "TrackSock", "argSock": 0},
                                {"action": "Mark", "mark": "talkers", "key": "process"},
                            ]
                        }
                    ],
                },
                {
                    "call": "tcp_sendmsg",
                    "args": [{"index": 0, "type": "sock", "label": "sk"}],
                    "selectors": [
                        {
                            "matchMarks": [
                                {"mark": "sock", "key": "arg:sk"},
                                {"mark": "talkers", "key": "process", "operator": "NotIn"},
                            ],
                            "matchActions": [{"action": "NoPost"}],
                        }
                    ],
                },
            ]
        }
    )
    assert not generated.problems, generated.problems
    connect, send = (dict(p.flags) for p in generated.programs)
    mark_sock, mark_talkers = generated.programs[0].config.S[0].A[:2]
    is_marked, is_not_talker = generated.programs[1].config.S[0].M[:2]
    sock, talkers = programs.mark_id("p", "sock"), programs.mark_id("p", "talkers")
    assert (mark_sock.OP, mark_sock.KEY, mark_sock.ARG) == (abi.MarkOp.SET, abi.Clock.ARG, 0)
    assert sock == mark_sock.ID
    assert (mark_talkers.KEY, mark_talkers.ARG) == (abi.Clock.PROCESS, abi.KEY_PROCESS)
    assert talkers == mark_talkers.ID
    assert (connect["USE_MARKS"], send["USE_MARKS"]) == (1, 1)
    assert (is_marked.OP, is_marked.NEG, is_not_talker.NEG) == (abi.Op.MARK, 0, 1)
    # A matcher's value carries the mark's id and, on top, where its key is (arg slot 0,
    # the process id).
    assert sock == is_marked.VAL
    assert (abi.KEY_PROCESS << 60) | talkers == is_not_talker.VAL & (2**64 - 1)
    assert all(configs.CONFIG_FLAG.match(n) for n in ("S0_A0_OP", "S0_A1_ID"))


def test_file_type_reads_the_inode_and_the_path_only_when_needed() -> None:
    def fd_hook(*matches: dict[str, Any], action: str = "NoPost") -> dict[str, str | int]:
        return flags(
            make(
                {
                    "kprobes": [
                        {
                            "call": "fd_install",
                            "args": [{"index": 0, "type": "fd", "label": "file"}],
                            "selectors": [
                                {"matchArgs": list(matches), "matchActions": [{"action": action}]}
                            ],
                        }
                    ]
                }
            )
        )

    regular = {"label": "file", "operator": "FileType", "values": ["reg", "SOCKET"]}
    only_type = fd_hook(regular)
    # Tetragon's file type names are the inode's S_IFMT nibble; no path walk is compiled in.
    assert (only_type["S0_M0_OP"], only_type["S0_M0_NEG"]) == (abi.Op.FILE_TYPE, 0)
    assert only_type["ARG0_PATH"] == 0
    prefix = {"label": "file", "operator": "Prefix", "values": ["/etc/"]}
    assert fd_hook(regular, prefix)["ARG0_PATH"] == 1  # a string matcher reads the path
    assert fd_hook(regular, action="Post")["ARG0_PATH"] == 1  # so does an event
    not_a_pipe = fd_hook({"label": "file", "operator": "NotFileType", "values": ["fifo"]})
    assert not_a_pipe["S0_M0_NEG"] == 1
    generated = make(
        {
            "kprobes": [
                {
                    "call": "fd_install",
                    "args": [{"index": 0, "type": "fd", "label": "file"}],
                    "selectors": [{"matchArgs": [regular]}],
                }
            ]
        }
    )
    assert sorted(v for _, v in generated.programs[0].seeds.integers) == [8, 12]


def test_a_selectors_tracksock_and_the_return_values_are_keyed_apart() -> None:
    # A kretprobe whose selector tracks its sock argument and whose returnArgAction tracks
    # what it returns: the first mark is keyed by the argument (slot 0), the second by the
    # return value (slot 1).
    values = flags(
        make(
            {
                "kprobes": [
                    {
                        "call": "inet_csk_accept",
                        "return": True,
                        "args": [{"index": 0, "type": "sock", "label": "listener"}],
                        "returnArg": {"index": 0, "type": "sock", "label": "accepted"},
                        "returnArgAction": "TrackSock",
                        "selectors": [
                            {
                                "matchActions": [
                                    {"action": "NoPost"},
                                    {"action": "TrackSock", "argSock": 0},
                                ]
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert (values["S0_A0_ARG"], values["S0_A1_ARG"]) == (0, 1)
    assert values["S0_A0_ID"] == values["S0_A1_ID"]  # both the mark named sock


def test_the_lean_path_packed_keys_and_per_cpu_values_are_chosen_from_the_policy() -> None:
    flags_of = ("LEAN", "AGG_PACKED", "AGG_PERCPU", "HIST_PERCPU")

    def chosen(matches: list[dict[str, Any]], rules: list[dict[str, Any]], cpus: int = 2) -> tuple:
        spec = openat(*matches, args=[{"field": "flags", "type": "int", "label": "flags"}])
        spec["tracepoints"][0]["selectors"][0]["matchActions"] = [{"action": "NoPost"}]
        generated = make(spec, rules, cpus=cpus)
        assert not generated.problems, generated.problems
        flags = dict(generated.programs[0].flags)
        return tuple(flags[name] for name in flags_of)

    by_pod = {"policyRef": {"name": "p"}, "groupBy": ["pod"], "metric": {"name": "m"}}
    flagged = {"label": "flags", "operator": "Mask", "values": ["64"]}
    # Integer matchers and rules by the cgroup: the lean path, packed keys, values per CPU.
    assert chosen([flagged], [by_pod]) == (1, 1, 1, 1)
    # A rule by an argument needs the wide key, and so the general path.
    by_arg = {**by_pod, "groupBy": ["arg:flags"]}
    assert chosen([flagged], [by_pod, by_arg]) == (0, 0, 1, 1)
    # A string matcher is the general path's; the key stays packed.
    spec = openat({"label": "path", "operator": "Prefix", "values": ["/etc/"]})
    spec["tracepoints"][0]["selectors"][0]["matchActions"] = [{"action": "NoPost"}]
    flags = dict(make(spec, [by_pod], cpus=2).programs[0].flags)
    assert (flags["LEAN"], flags["AGG_PACKED"]) == (0, 1)
    # No selectors: every call is posted, which only the general path does.
    bare = openat(args=[{"field": "flags", "type": "int", "label": "flags"}])
    del bare["tracepoints"][0]["selectors"]
    assert dict(make(bare, [by_pod]).programs[0].flags)["LEAN"] == 0
    # A copy per CPU is taken only while the worst case fits the policy's memory budget.
    many = {**by_pod, "maxSeries": 1_000_000}
    assert chosen([flagged], [many], cpus=2)[2:] == (1, 1)
    assert chosen([flagged], [many], cpus=64)[2:] == (0, 0)
    hist = {**by_pod, "value": {"type": "histogram", "arg": "flags"}}
    assert chosen([flagged], [hist], cpus=64)[2:] == (1, 0)
