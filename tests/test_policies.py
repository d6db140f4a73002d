"""TracingPolicy and AggregationRule validation: every problem has a field path
and says what to do; valid neighbours are unaffected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from weir_api import checks, documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy


def test_every_example_parses_and_cross_checks(examples: list[Path]) -> None:
    parsed = []
    for path in examples:
        parsed.extend(documents.parse_text(path.read_text(), source=path.name))
    parsed = documents.cross_check(parsed)
    assert [p.problems for p in parsed] == [()] * len(parsed)
    kinds = sorted((p.kind, p.name) for p in parsed)
    assert kinds == [
        ("AggregationRule", "cpu-time"),
        ("AggregationRule", "egress-bytes"),
        ("AggregationRule", "egress-bytes-kprobe"),
        ("AggregationRule", "file-opens-etc"),
        ("AggregationRule", "segfaults"),
        ("TracingPolicy", "cpu-time"),
        ("TracingPolicy", "egress-bytes"),
        ("TracingPolicy", "egress-bytes-kprobe"),
        ("TracingPolicy", "file-opens-etc"),
        ("TracingPolicy", "segfaults"),
    ]


def test_every_pack_parses_and_cross_checks() -> None:
    packs = ROOT / "examples" / "packs"
    for pack in sorted(d for d in packs.iterdir() if d.is_dir()):
        parsed = []
        for path in sorted(pack.glob("*.yaml")):
            parsed.extend(documents.parse_text(path.read_text(), source=path.name))
        parsed = documents.cross_check(parsed)
        assert parsed and [p.problems for p in parsed] == [()] * len(parsed), pack


def policy(**hook: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subsystem": "syscalls",
        "event": "sys_enter_openat",
        "args": [
            {"field": "filename", "type": "filename", "label": "path"},
            {"field": "flags", "type": "int"},
        ],
        "selectors": [
            {"matchArgs": [{"label": "path", "operator": "Prefix", "values": ["/etc/"]}]}
        ],
    }
    base.update(hook)
    return {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "p"},
        "spec": {"tracepoints": [base]},
    }


def problems_of(document: dict[str, Any]) -> list[str]:
    return [str(p) for p in documents.parse_object(document, source="t").problems]


def test_valid_policy_has_no_problems() -> None:
    assert problems_of(policy()) == []


def match(operator: str, values: list[str], label: str = "path") -> list[dict[str, Any]]:
    return [{"matchArgs": [{"label": label, "operator": operator, "values": values}]}]


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (
            {"selectors": match("GT", ["1"])},
            "spec.tracepoints[0].selectors[0].matchArgs[0].operator: GT does not apply to 'path' "
            "of type filename; use one of Equal, InMap, NotEqual, NotInMap, NotPostfix, NotPrefix, "
            "Postfix, Prefix, SubString, SubStringIgnCase",
        ),
        (
            {"selectors": match("Equal", ["x", "a\x00b"])},
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[1]: contains a NUL byte, which "
            "a kernel string can never hold; remove it",
        ),
        (
            {"selectors": match("Equal", ["ten"], label="flags")},
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: 'ten' is not an integer; "
            "write e.g. 42, -1 or 0x1f",
        ),
        (
            {"selectors": match("Equal", ["1"], label="nope")},
            "spec.tracepoints[0].selectors[0].matchArgs[0]: no arg with label 'nope' in this "
            "hook's args (declared: path, flags); declare it in args first",
        ),
        (
            {"selectors": match("Prefix", ["x" * 300])},
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: is 300 characters; at "
            "most 247",
        ),
        (
            {"selectors": match("Prefix", ["é" * 200])},
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: is 400 bytes; the kernel "
            "compares at most 247 bytes",
        ),
        (
            {
                "args": [
                    {"field": "filename", "type": "filename", "label": "path"},
                    {"field": "flags", "type": "int", "label": "path"},
                ]
            },
            "spec.tracepoints[0].args[1]: label 'path' is already used by args[0]; labels must be "
            "unique within a hook",
        ),
        (
            {"selectors": [{"matchActions": [{"action": "Post", "rateLimit": "soon"}]}]},
            "spec.tracepoints[0].selectors[0].matchActions[0].rateLimit: 'soon' is not valid "
            "here: write a duration: a whole number and ms, s, m or h (e.g. 500ms, 10s, 1m; a "
            "bare number is seconds)",
        ),
        (
            {"selectors": [{"matchBinaries": [{"operator": "In", "values": ["curl"]}]}]},
            "spec.tracepoints[0].selectors[0].matchBinaries[0].values[0]: 'curl' is not valid "
            "here: write an absolute path, starting with / (e.g. /usr/bin/curl)",
        ),
        (
            {"event": "Sys-Enter"},
            "spec.tracepoints[0].event: 'Sys-Enter' is not valid here: write lower-case "
            "letters, digits and _, as tracefs names it (e.g. sys_enter_openat)",
        ),
        (
            {"selector": []},
            "spec.tracepoints[0].selector: unknown field; check the spelling against "
            "`kubectl explain` or docs/api.md",
        ),
        (
            {"args": [{"field": "sk", "type": "sokc"}]},
            "spec.tracepoints[0].args[0].type: must be one of 'int', 'uint', 'int8', 'uint8', "
            "'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'long', 'ulong', 'size_t', "
            "'capability', 'kernel_cap_t', 'cap_inheritable', 'cap_permitted', 'cap_effective', "
            "'syscall64', 'cred', 'user_namespace', 'string', 'filename', 'char_buf', 'sock', "
            "'sockaddr', 'skb', 'file', 'path', 'fd', 'linux_binprm', 'module', 'kernel_module', "
            "'load_info', 'bpf_attr', 'bpf_map', 'perf_event', 'bpf_prog', 'net_device', 'socket' "
            "or 'nop', got 'sokc'",
        ),
        (
            {"args": [{"field": "sk", "type": "dentry"}]},
            "spec.tracepoints[0].args[0].type: Tetragon's arg type dentry is not supported by "
            "weir (yet); read the value as an integer (uint64), or see docs/tetragon.md",
        ),
    ],
)
def test_problems_name_the_field_and_the_fix(hook: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(policy(**hook))


def test_kprobe_rules() -> None:
    doc = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "k"},
        "spec": {
            "kprobes": [
                {
                    "call": "tcp_sendmsg",
                    "args": [
                        {"index": 0, "type": "sock"},
                        {"field": "size", "type": "size_t"},
                        {"index": 7, "type": "int"},
                        {"index": 1, "type": "char_buf"},
                    ],
                    "selectors": [
                        {
                            "matchArgs": [
                                {
                                    "index": 0,
                                    "operator": "NotDAddr",
                                    "values": ["10.0.0.0/8", "300.1.1.1"],
                                },
                                {"index": 0, "operator": "Prefix", "values": ["x"]},
                            ]
                        }
                    ],
                }
            ]
        },
    }
    found = problems_of(doc)
    assert found == [
        "spec.kprobes[0].args[1].field: field names tracepoint fields; kprobes and uprobes take "
        "index (the argument's position, 0-5)",
        "spec.kprobes[0].args[1].index: required: the argument's position (0-5)",
        "spec.kprobes[0].args[2].index: is 7; functions pass at most six arguments in registers "
        "(0-5)",
        "spec.kprobes[0].args[3].sizeArgIndex: char_buf needs sizeArgIndex: the position of the "
        "argument that holds the buffer's length, counted from 1 as in Tetragon (3 for the "
        "argument at index 2), or returnCopy: true (its length is the return value)",
        "spec.kprobes[0].selectors[0].matchArgs[0].values[1]: '300.1.1.1' is not an IP address "
        "or CIDR; write e.g. 10.0.0.0/8 or 192.168.1.1",
        "spec.kprobes[0].selectors[0].matchArgs[1].operator: Prefix does not apply to 'arg0' of "
        "type sock; use one of DAddr, DPort, DPortPriv, Family, NotDAddr, NotDPort, "
        "NotDPortPriv, NotFamily, NotProtocol, NotSAddr, NotSPort, NotSPortPriv, Protocol, "
        "SAddr, SPort, SPortPriv, State",
    ]


def test_several_entries_on_one_target_and_empty_policy() -> None:
    from weir_api.policies import TracingPolicy

    doc = policy()
    doc["spec"]["tracepoints"].append(doc["spec"]["tracepoints"][0])
    doc["spec"]["tracepoints"].append(doc["spec"]["tracepoints"][0])
    assert problems_of(doc) == []  # as Tetragon: each entry is a program of its own
    assert [h.hook_id() for h in TracingPolicy.model_validate(doc).spec.hooks()] == [
        "tracepoint:syscalls:sys_enter_openat",
        "tracepoint:syscalls:sys_enter_openat#2",
        "tracepoint:syscalls:sys_enter_openat#3",
    ]
    doc["spec"] = {}
    assert problems_of(doc) == [
        "spec: a policy needs at least one of kprobes, tracepoints or uprobes"
    ]


def test_wrong_kind_and_api_version_and_yaml() -> None:
    assert problems_of(
        {
            "apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "x"},
            "spec": {},
        }
    )[0] == ("apiVersion: is 'cilium.io/v1alpha1'; weir objects are weir.dev/v1alpha1")
    assert problems_of({"apiVersion": "weir.dev/v1alpha1", "kind": "Nope"}) == [
        "kind: is 'Nope'; expected one of TracingPolicy, AggregationRule, NodeReport"
    ]
    broken = documents.parse_text("a: [1, 2\n", source="f.yaml")
    assert len(broken) == 1 and "not valid YAML" in str(broken[0].problems[0])


def test_a_broken_document_does_not_hide_its_neighbours() -> None:
    good = policy()
    bad = policy(event="BAD")
    bad["metadata"]["name"] = "bad"
    text = yaml.safe_dump_all([good, bad, good | {"metadata": {"name": "q"}}])
    parsed = documents.parse_text(text, source="mixed.yaml")
    assert [(p.name, p.ok) for p in parsed] == [("p", True), ("bad", False), ("q", True)]
    assert parsed[1].source == "mixed.yaml#1"


def rule(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "policyRef": {"name": "p"},
        "groupBy": ["namespace", "pod"],
        "metric": {"name": "weir_opens"},
    }
    base.update(spec)
    return {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AggregationRule",
        "metadata": {"name": "r"},
        "spec": base,
    }


def cross(rule_doc: dict[str, Any]) -> list[str]:
    parsed = documents.cross_check(
        [documents.parse_object(policy(), source="p"), documents.parse_object(rule_doc, source="r")]
    )
    return [str(p) for p in parsed[1].problems]


def test_aggregation_rule_checks() -> None:
    assert cross(rule()) == []
    assert cross(rule(value={"type": "sum", "arg": "path"})) == [
        "spec.value.arg: sum needs an integer arg; 'path' is filename"
    ]
    assert cross(rule(value={"type": "sum", "arg": "bytes"})) == [
        "spec.value.arg: hook tracepoint:syscalls:sys_enter_openat has no arg labelled 'bytes'"
    ]
    assert cross(rule(hook="kprobe:nope")) == [
        "spec.hook: policy 'p' has no hook 'kprobe:nope'; its hooks are: "
        "tracepoint:syscalls:sys_enter_openat"
    ]
    assert cross(rule(groupBy=["addressClass:flags"])) == [
        "spec.groupBy[0]: addressClass needs a sock, sockaddr or skb arg; 'flags' is int"
    ]
    assert cross(rule(groupBy=["pod", "pod"])) == [
        "spec.groupBy: lists a key twice; give each key once"
    ]
    assert cross(rule(metric={"name": "weir_opens_total"})) == [
        "spec.metric.name: 'weir_opens_total' ends in a suffix weir adds itself (_total, _bucket, "
        "_count, _sum, _created); drop it"
    ]
    assert cross(rule(groupBy=["cluster"])) == [
        "spec.groupBy[0]: 'cluster' is not valid here: write one of namespace, pod, container, "
        "workload, image, node, binary, arg:LABEL or addressClass:LABEL"
    ]
    assert cross(rule(maxSeries=0)) == ["spec.maxSeries: is 0; must be at least 1"]
    assert cross(
        rule(
            value={
                "type": "histogram",
                "arg": "flags",
                "buckets": {"type": "explicit", "bounds": [10, 5]},
            }
        )
    ) == ["spec.value.buckets.bounds: must be strictly increasing"]


def test_cpu_time_rule_checks() -> None:
    cpu = {"type": "cpu_time"}
    assert cross(rule(value=cpu)) == []
    assert cross(rule(value={**cpu, "arg": "flags"})) == [
        "spec.value: a cpu_time measures time; drop arg"
    ]
    assert cross(rule(value={**cpu, "output": "histogram"})) == [
        "spec.value: start, key and output apply to duration only"
    ]
    assert cross(rule(value={**cpu, "buckets": {"type": "exp2"}})) == [
        "spec.value: buckets apply to histograms only (histogram, or duration with output "
        "histogram)"
    ]


def test_duration_rule_checks() -> None:
    hook = "tracepoint:syscalls:sys_enter_openat"
    duration = {"type": "duration", "start": {"hook": hook}}
    assert cross(rule(hook=hook, value=duration)) == []
    assert cross(rule(value=duration)) == [
        "spec.hook: a duration needs hook: the hook that stops the clock"
    ]
    assert cross(rule(hook=hook, value={"type": "duration"})) == [
        "spec.value: a duration needs start: the hook that starts the clock"
    ]
    assert cross(rule(hook=hook, value={**duration, "arg": "flags"})) == [
        "spec.value: a duration measures time; drop arg"
    ]
    assert cross(rule(hook=hook, value={"type": "count", "output": "counter"})) == [
        "spec.value: start, key and output apply to duration only"
    ]
    assert cross(rule(hook=hook, value={**duration, "start": {"hook": "kprobe:nope"}})) == [
        "spec.value.start.hook: policy 'p' has no hook 'kprobe:nope'; its hooks are: " + hook
    ]
    assert cross(rule(hook=hook, value={**duration, "key": "arg:path"})) == [
        "spec.value.key: a key is an integer, sock, skb, file, path or fd arg (its value, or "
        "the address of the object); 'path' is filename"
    ]
    assert cross(rule(hook=hook, value={**duration, "start": {"hook": hook, "key": "arg:x"}})) == [
        f"spec.value.start.key: hook {hook} has no arg labelled 'x'"
    ]
    assert cross(rule(hook=hook, value={**duration, "key": "tid"})) == [
        "spec.value.key: 'tid' is not valid here: write thread, process or arg:LABEL (an "
        "integer argument, e.g. arg:next_pid)"
    ]
    # Explicit bounds: seconds for a duration, whole numbers for an argument's values.
    seconds = {"type": "explicit", "bounds": [0.001, 0.5, 2]}
    assert cross(rule(hook=hook, value={**duration, "buckets": seconds})) == []
    assert cross(rule(hook=hook, value={**duration, "buckets": {**seconds, "bounds": [0]}})) == [
        "spec.value.buckets.bounds: a duration's bounds are seconds, above 0 and below 9.2e9 "
        "(0.005 is 5 ms)"
    ]
    assert cross(rule(value={"type": "histogram", "arg": "flags", "buckets": seconds})) == [
        "spec.value.buckets.bounds: the bounds of an argument's histogram are whole numbers "
        "(64-bit); fractions are for a duration's seconds"
    ]
    counter = {**duration, "output": "counter", "buckets": seconds}
    assert cross(rule(hook=hook, value=counter)) == [
        "spec.value: buckets apply to histograms only (histogram, or duration with output "
        "histogram)"
    ]


def test_models_round_trip_on_the_wire(examples: list[Path]) -> None:
    for path in examples:
        for item in documents.parse_text(path.read_text(), source=path.name):
            assert isinstance(item.obj, TracingPolicy | AggregationRule)
            again = type(item.obj).model_validate(item.obj.to_wire())
            assert again == item.obj


def test_rules_sharing_a_metric_name_must_share_its_shape() -> None:
    first = rule(metric={"name": "weir_opens"})
    same = rule(metric={"name": "weir_opens"}) | {"metadata": {"name": "same"}}
    other = rule(metric={"name": "weir_opens"}, groupBy=["namespace"]) | {
        "metadata": {"name": "z-other"}
    }
    parsed = documents.cross_check(
        [documents.parse_object(policy(), source="p")]
        + [
            documents.parse_object(doc, source=doc["metadata"]["name"])
            for doc in (first, same, other)
        ]
    )
    assert [(p.name, [str(x) for x in p.problems]) for p in parsed[1:]] == [
        ("r", []),
        ("same", []),
        (
            "z-other",
            [
                "spec.metric.name: 'weir_opens' is also exported by AggregationRule 'r' with other "
                "labels, another value type or other buckets; give this rule its own metric name"
            ],
        ),
    ]
    # Histograms of one name must share their buckets too: one family has one set of le.
    histogram = {"type": "histogram", "arg": "flags"}
    explicit = {**histogram, "buckets": {"type": "explicit", "bounds": [1, 2]}}
    firsts = rule(metric={"name": "weir_flags"}, value=histogram)
    others = rule(metric={"name": "weir_flags"}, value=explicit) | {"metadata": {"name": "z"}}
    labelled = policy(
        args=[
            {"field": "filename", "type": "filename", "label": "path"},
            {"field": "flags", "type": "int", "label": "flags"},
        ]
    )
    parsed = documents.cross_check(
        [documents.parse_object(labelled, source="p")]
        + [documents.parse_object(doc, source="r") for doc in (firsts, others)]
    )
    assert [len(p.problems) for p in parsed[1:]] == [0, 1]


def test_weir_check_refuses_reserved_metric_names() -> None:
    from weir_api import documents

    text = (
        "apiVersion: weir.dev/v1alpha1\nkind: AggregationRule\nmetadata: {name: shadow}\n"
        "spec: {policyRef: {name: p}, metric: {name: weir_policy_events}}\n"
    )
    (parsed,) = documents.parse_text(text, source="rule.yaml")
    rendered = [str(p) for p in parsed.problems]
    assert rendered == [
        "spec.metric.name: 'weir_policy_events' is reserved: weir exports weir_policy_*, "
        "weir_program_*, weir_agent_*, weir_operator_* itself; choose another name"
    ]


def test_rules_that_would_pass_the_memory_budget_are_refused_with_the_numbers() -> None:
    labelled = policy(
        args=[
            {"field": "filename", "type": "filename", "label": "path"},
            {"field": "flags", "type": "int", "label": "flags"},
        ]
    )

    def check(*rules: dict[str, Any]) -> list[tuple[str, list[str]]]:
        parsed = documents.cross_check(
            [documents.parse_object(labelled, source="p")]
            + [documents.parse_object(r, source=r["metadata"]["name"]) for r in rules]
        )
        return [(p.name, [str(x) for x in p.problems]) for p in parsed[1:]]

    def named(name: str, doc: dict[str, Any]) -> dict[str, Any]:
        return doc | {"metadata": {"name": name}}

    huge = named("huge", rule(value={"type": "histogram", "arg": "flags"}, maxSeries=1_000_000))
    counts = named("counts", rule(metric={"name": "weir_counts"}, maxSeries=1_000_000))
    # A default rule takes about 1 MiB; the posting hook adds its ring buffer.
    assert check(named("small", rule())) == [("small", [])]
    assert check(counts) == [("counts", [])]  # 1M count series: 107 MiB, under the budget
    assert check(huge, counts) == [
        (
            "huge",
            [
                "spec.maxSeries: the policy's maps could take 720 MiB, past the budget of "
                "128 MiB per policy; this rule's series take up to 610.4 MiB (640 B per series "
                "per hook); lower maxSeries, or fold fewer hooks (spec.hook)"
            ],
        ),
        (
            "counts",
            [
                "spec.maxSeries: the policy's maps could take 720 MiB, past the budget of "
                "128 MiB per policy; this rule's series take up to 106.8 MiB (112 B per series "
                "per hook); lower maxSeries, or fold fewer hooks (spec.hook)"
            ],
        ),
    ]
    total, parts = checks.memory(
        TracingPolicy.model_validate(labelled).spec,
        [("huge", AggregationRule.model_validate(huge).spec)],
    )
    assert parts == {"huge": 1_000_001 * 640} and total == parts["huge"] + 512 * 4096 + 16_384 * 64


def test_a_hook_folds_at_most_four_rules_the_rest_are_refused_with_the_count() -> None:
    rules = []
    for name in ("e", "d", "c", "b", "a"):
        doc = rule(metric={"name": f"weir_opens_{name}"})
        doc["metadata"]["name"] = name
        rules.append(documents.parse_object(doc, source=name))
    parsed = documents.cross_check([documents.parse_object(policy(), source="p"), *rules])
    problems = {p.name: [str(x) for x in p.problems] for p in parsed[1:]}
    assert problems == {
        "a": [],
        "b": [],
        "c": [],
        "d": [],
        "e": [
            "spec: 5 AggregationRules fold hook tracepoint:syscalls:sys_enter_openat (a, b, c, "
            "d, e); at most 4, the first by name; set hook: to fold another hook, or merge rules"
        ],
    }


def test_program_limits_are_refused_before_any_node() -> None:
    ports = [{"field": "flags", "type": "int"}]
    assert problems_of(
        policy(args=ports, selectors=match("InRange", [f"{n}:{n}" for n in range(17)], "flags"))
    ) == [
        "spec.tracepoints[0].selectors[0].matchArgs[0].values: 17 values; InRange takes at most "
        "16 (ranges are checked in a bounded loop in the kernel)"
    ]
    strings = [{"field": "filename", "type": "string", "label": f"s{n}"} for n in range(3)]
    assert problems_of(policy(args=strings, selectors=[])) == [
        "spec.tracepoints[0].args: at most 2 string, filename, char_buf, file, path, fd, "
        "linux_binprm, module, kernel_module, load_info, bpf_attr, bpf_map and perf_event args "
        "per hook (each takes a per-CPU scratch slot); drop one, or split the hook across "
        "policies"
    ]
    keys = ["arg:a", "arg:b", "arg:c"]
    assert cross(rule(groupBy=keys))[0] == (
        "spec.groupBy: 3 arg: keys; at most 2 per rule (the series key holds 2 argument values)"
    )


def test_enforcement_parameters_are_accepted_and_said_to_be_ignored() -> None:
    from weir_api import checks
    from weir_api.policies import TracingPolicy

    doc = policy(selectors=[{"matchActions": [{"action": "Post", "argError": -1, "argSig": 9}]}])
    assert problems_of(doc) == []
    spec = TracingPolicy.model_validate(doc).spec
    assert [str(w) for w in checks.policy_warnings(spec)] == [
        "spec.tracepoints[0].selectors[0].matchActions[0].argError: ignored: an enforcement "
        "parameter, and weir observes",
        "spec.tracepoints[0].selectors[0].matchActions[0].argSig: ignored: an enforcement "
        "parameter, and weir observes",
    ]


def test_attachment_options_and_maxdata_are_accepted_and_said_to_be_ignored() -> None:
    from weir_api import checks
    from weir_api.policies import TracingPolicy

    doc = policy(args=[{"field": "filename", "type": "string", "maxData": True}], selectors=[])
    doc["spec"]["options"] = [{"name": "disable-kprobe-multi", "value": "1"}]
    assert problems_of(doc) == []
    spec = TracingPolicy.model_validate(doc).spec
    assert [str(w) for w in checks.policy_warnings(spec)] == [
        "spec.options[0].name: disable-kprobe-multi: ignored, a Tetragon attachment option; "
        "weir attaches one program per hook",
        "spec.tracepoints[0].args[0].maxData: ignored: weir reads at most 247 bytes of a "
        "string or buffer",
    ]


def test_returncopy_makes_a_return_probe_and_is_refused_on_tracepoints() -> None:
    from weir_api.policies import TracingPolicy

    read = {
        "call": "sys_read",
        "syscall": True,
        "args": [
            {"index": 0, "type": "fd"},
            {"index": 1, "type": "char_buf", "returnCopy": True},
            {"index": 2, "type": "size_t"},
        ],
    }
    doc = {**policy(), "spec": {"kprobes": [read]}}
    assert problems_of(doc) == []
    assert TracingPolicy.model_validate(doc).spec.kprobes[0].hook_id() == "kretprobe:sys_read"
    assert problems_of(
        policy(args=[{"field": "filename", "type": "string", "returnCopy": True}], selectors=[])
    ) == [
        "spec.tracepoints[0].args[0].returnCopy: applies to kprobes and uprobes (read on the "
        "function's return); a tracepoint's fields are read when it fires"
    ]


def test_generated_lists() -> None:
    from weir_api.policies import TracingPolicy

    every = {"name": "all", "type": "generated_syscalls"}
    doc = {**policy(), "spec": {"lists": [every], "kprobes": [{"call": "list:all"}]}}
    assert problems_of(doc) == []
    hooks = TracingPolicy.model_validate(doc).spec.hooks()
    assert [h.hook_id() for h in hooks] == ["tracepoint:raw_syscalls:sys_enter"]
    doc["spec"]["kprobes"][0]["args"] = [{"index": 0, "type": "int"}]
    assert problems_of(doc) == [
        "spec.kprobes[0]: every syscall is watched through raw_syscalls:sys_enter, which has "
        "no per-syscall args or return: drop args and return, or list the syscalls (type: "
        "syscalls)"
    ]
    ftrace = {"name": "ksys", "type": "generated_ftrace", "pattern": "^ksys_"}
    doc = {**policy(), "spec": {"lists": [ftrace], "kprobes": [{"call": "list:ksys"}]}}
    assert problems_of(doc) == [
        "spec.lists[0].type: Tetragon's generated_ftrace is not supported by weir (yet): weir "
        "loads one program per kprobe; list the functions (type: functions)"
    ]


def test_a_bare_rate_limit_is_seconds_as_in_tetragon() -> None:
    from weir_api import values
    from weir_api.policies import TracingPolicy

    doc = policy(selectors=[{"matchActions": [{"action": "Post", "rateLimit": 5}]}])
    assert problems_of(doc) == []
    action = TracingPolicy.model_validate(doc).spec.tracepoints[0].selectors[0].match_actions[0]
    assert action.rate_limit == "5"
    assert values.parse_duration_ns("5") == values.parse_duration_ns("5s") == 5_000_000_000


def test_mark_checks() -> None:
    def marked(*selectors: dict[str, Any], args: list[dict[str, Any]] | None = None) -> list[str]:
        hook: dict[str, Any] = {
            "subsystem": "syscalls",
            "event": "sys_enter_openat",
            "args": args
            or [
                {"field": "filename", "type": "filename", "label": "path"},
                {"field": "flags", "type": "int", "label": "flags"},
            ],
            "selectors": list(selectors),
        }
        doc = {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {"tracepoints": [hook]},
        }
        return problems_of(doc)

    mark = {"action": "Mark", "mark": "seen", "key": "process"}
    test = {"matchMarks": [{"mark": "seen", "key": "process"}]}
    assert marked({"matchActions": [{"action": "NoPost"}, mark]}, test) == []
    assert marked(test) == [
        "spec.tracepoints[0].selectors[0].matchMarks[0].mark: no hook of this policy sets "
        "mark 'seen'; add a matchActions entry {action: Mark, mark: seen} where it should be set"
    ]
    assert marked({"matchActions": [mark]}, {"matchMarks": [{"mark": "seen"}]}) == [
        "spec.tracepoints[0].selectors[1].matchMarks[0].key: mark 'seen' is set keyed by "
        "process (spec.tracepoints[0].selectors[0].matchActions[0]); test it by process too, "
        "or it never matches"
    ]
    assert marked({"matchActions": [{**mark, "key": "arg:path"}]}) == [
        "spec.tracepoints[0].selectors[0].matchActions[0].key: a key is an integer, sock, skb, "
        "file, path or fd arg (its value, or the address of the object); 'path' is filename"
    ]
    assert marked({"matchActions": [{"action": "Post"}, {"action": "NoPost"}]}) == [
        "spec.tracepoints[0].selectors[0].matchActions: give one of Post and NoPost, once"
    ]
    assert marked({"matchActions": [{"action": "Mark"}]}) == [
        "spec.tracepoints[0].selectors[0].matchActions[0]: Mark and Unmark need mark (its "
        "name); no other action takes it"
    ]
    assert marked({"matchActions": [{"action": "TrackSock", "argSock": 1}]}) == [
        "spec.tracepoints[0].selectors[0].matchActions[0].argSock: must be the index of a sock "
        "arg of this hook; args[] has no sock at index 1"
    ]
    assert marked({"matchActions": [mark, mark, mark]}) == [
        "spec.tracepoints[0].selectors[0].matchActions: at most 2 of Mark, Unmark, TrackSock "
        "and UntrackSock per selector"
    ]


def test_return_arg_action_checks() -> None:
    def kretprobe(**fields: Any) -> list[str]:
        hook = {"call": "sk_alloc", "return": True, **fields}
        doc = {
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {"kprobes": [hook]},
        }
        return problems_of(doc)

    sock = {"index": 0, "type": "sock", "label": "sk"}
    assert kretprobe(returnArg=sock, returnArgAction="TrackSock") == []
    assert kretprobe(returnArgAction="TrackSock") == [
        "spec.kprobes[0].returnArgAction: acts on the return value: needs return: true and "
        "returnArg"
    ]
    assert kretprobe(returnArg={"index": 0, "type": "string"}) == [
        "spec.kprobes[0].returnArg.type: a return value is an integer (int, long, size_t, ...) "
        "or a sock, skb, file, path or fd the function returns"
    ]
    # FollowFD on a return value: accepted, with a warning.
    doc = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "kprobes": [
                {
                    "call": "sk_alloc",
                    "return": True,
                    "returnArg": sock,
                    "returnArgAction": "FollowFD",
                }
            ]
        },
    }
    parsed = documents.parse_object(doc, source="t")
    assert parsed.ok
    assert isinstance(parsed.obj, TracingPolicy)
    assert [str(w) for w in checks.policy_warnings(parsed.obj.spec)] == [
        "spec.kprobes[0].returnArgAction: FollowFD has nothing to do in weir, ignored: an fd "
        "arg (type: fd) is read as its file's path through the task's descriptor table at "
        "each call"
    ]
