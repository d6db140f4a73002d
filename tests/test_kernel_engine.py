"""The engine in the real kernel: binaries and containers, swaps under load,
verifier rejections, hostile input and broken neighbours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agenthelpers import apply, policy_yaml, rule_yaml, scrape, series, stats
from conftest import ROOT
from weir_agent.kernel import bpf
from weir_agent.outputs import reporting
from weir_agent.runtime import engine
from weir_agent.sources import directory as sources
from weir_agent.spec import formats, programs
from weir_api import documents

BASE = 7_400_000_000


def openat_policy(
    name: str,
    matches: list[dict[str, object]],
    *,
    binaries: list[dict[str, object]] | None = None,
    rules: str = "",
) -> str:
    selector: dict[str, object] = {"matchArgs": matches, "matchActions": [{"action": "NoPost"}]}
    if binaries:
        selector["matchBinaries"] = binaries
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_openat",
                "args": [{"field": "filename", "type": "filename", "label": "path"}],
                "selectors": [selector],
            }
        ]
    }
    return policy_yaml(name, yaml.safe_dump(spec), rules=rules)


@pytest.fixture
def scratch() -> Path:
    path = Path("/tmp") / f"weir-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    (path / "f").write_text("x")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def cgroup2_root() -> Path:
    from weir_agent.identity import cgroups

    root = cgroups.cgroup2_mount(Path("/proc/mounts").read_text())
    assert root is not None, "no cgroup2 mount"
    return root


def test_binaries_and_containers(core, scratch: Path) -> None:
    prefix = {"label": "path", "operator": "Prefix", "values": [f"{scratch}/"]}
    apply(
        core,
        openat_policy(
            "cat-only", [prefix], binaries=[{"operator": "In", "values": ["/usr/bin/cat"]}]
        ),
        openat_policy(
            "not-cat", [prefix], binaries=[{"operator": "NotIn", "values": ["/usr/bin/cat"]}]
        ),
        openat_policy(
            "usr-bin",
            [prefix],
            binaries=[{"operator": "Prefix", "values": ["/usr/bin/"]}],
            rules=rule_yaml("usr-bin", "usr-bin", "t_by_binary", group_by="[binary]"),
        ),
        openat_policy(
            "per-container",
            [prefix],
            rules=rule_yaml(
                "per-container",
                "per-container",
                "t_by_container",
                group_by="[namespace, pod, container]",
            ),
        ),
    )
    container = uuid.uuid4().hex + uuid.uuid4().hex
    group = cgroup2_root() / f"weir-test-{container[:8]}" / f"docker-{container}.scope"
    group.mkdir(parents=True)
    try:
        for _ in range(4):  # cat, inside the "container" cgroup
            subprocess.run(
                [
                    "/bin/sh",
                    "-c",
                    f'echo $$ > "{group}/cgroup.procs" && exec /usr/bin/cat "{scratch}/f"',
                ],
                check=True,
                capture_output=True,
            )
        for _ in range(2):  # this Python process, in its own cgroup
            (scratch / "f").read_text()
        samples = scrape(core)  # while the container's cgroup exists, as a running pod's does
    finally:
        group.rmdir()
        group.parent.rmdir()
    assert stats(core, "cat-only")["matched"] == 4
    assert stats(core, "not-cat")["matched"] == 2
    python = os.readlink("/proc/self/exe")
    by_binary = series(samples, "t_by_binary_total")
    expected = {(("binary", "/usr/bin/cat"),): 4.0}
    if python.startswith("/usr/bin/"):
        expected[(("binary", python),)] = 2.0
    assert by_binary == expected
    by_container = series(samples, "t_by_container_total", namespace="", pod="")
    assert by_container[(("container", container[:12]),)] == 4.0
    assert sum(by_container.values()) == 6.0


WORKLOAD = """
import os, sys
fd = os.open("/dev/null", os.O_RDONLY)
stop, count = sys.argv[1], 0
while not os.path.exists(stop):
    for _ in range(1000):
        os.lseek(fd, {offset}, 0)
    count += 1000
print(count)
"""


def lseek_policy(
    name: str,
    values: list[int],
    rules: str = "",
    *,
    operator: str = "Equal",
    whence: bool = False,
) -> str:
    """lseek calls whose offset matches; ``whence`` also reads a second argument (a new
    shape: the program is compiled again and swapped)."""
    args = [{"field": "offset", "type": "long", "label": "offset"}]
    if whence:
        args.append({"field": "whence", "type": "int", "label": "whence"})
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_lseek",
                "args": args,
                "selectors": [
                    {
                        "matchArgs": [
                            {
                                "label": "offset",
                                "operator": operator,
                                "values": [str(v) for v in values],
                            }
                        ],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ]
    }
    return policy_yaml(name, yaml.safe_dump(spec), rules=rules)


def lseeks(*offsets: int) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for offset in offsets:
            os.lseek(fd, offset, 0)
    finally:
        os.close(fd)


def test_policies_of_one_shape_compile_once_and_count_apart(core) -> None:
    apply(core, lseek_policy("shape-a", [BASE + 11]), lseek_policy("shape-b", [BASE + 12]))
    a, b = (next(iter(core.policies[n].hooks.values())).loaded for n in ("shape-a", "shape-b"))
    assert a.program.shape_digest() == b.program.shape_digest()
    assert min(a.compile_ms, b.compile_ms) == 0.0  # the second (at least) was not compiled
    assert a.prog_id != b.prog_id
    lseeks(BASE + 11, BASE + 11, BASE + 12, BASE + 12, BASE + 12)
    assert (stats(core, "shape-a")["matched"], stats(core, "shape-b")["matched"]) == (2, 3)


def test_a_failed_compile_is_the_childs_and_the_compiled_are_kept_only_in_a_private_cache(
    kernel: None, tmp_path: Path
) -> None:
    # The compiler runs in a child: clang's error comes back as a compile failure with its
    # own words, and this process goes on.
    from weir_agent.kernel import handles, loading

    with pytest.raises(handles.LoadError) as failed:
        loading.compile_source(programs.STUB_SOURCE, ["-include", "/nonexistent/weir.h"])
    assert failed.value.phase == "compile"
    assert "/nonexistent/weir.h" in failed.value.log and "file not found" in failed.value.log
    # A compile cache only this user can write is used: the next compile of the same key
    # reads it; one that others can write is never read.
    cache = tmp_path / "cache"
    saved = loading.CACHE_DIR
    try:
        loading.CACHE_DIR = cache
        loading.forget_compiled()
        compiled, took = loading.compile_source(programs.STUB_SOURCE, [])
        assert took > 0 and len(list(cache.iterdir())) == 1
        assert oct(cache.stat().st_mode & 0o777) == "0o700"
        loading.forget_compiled()
        again, took = loading.compile_source(programs.STUB_SOURCE, [])
        assert (again, took) == (compiled, 0.0)  # from disk
        cache.chmod(0o777)
        loading.forget_compiled()
        assert loading.compile_source(programs.STUB_SOURCE, [])[1] > 0  # compiled again
    finally:
        loading.CACHE_DIR = saved
        loading.forget_compiled()


def test_the_lean_path_counts_sums_and_buckets_exactly_as_the_general_path(core) -> None:
    # The same policy twice: "lean" runs hook.bpf.c's lean path (integer args and matchers,
    # rules by the cgroup: packed keys, values per CPU); "general" adds a matchBinaries
    # that every call passes, which takes the general path. Both see the same calls.
    def rules(policy: str) -> str:
        return "---\n".join(
            [
                rule_yaml(f"{policy}-n", policy, f"t_{policy}_n", group_by="[container]"),
                rule_yaml(f"{policy}-s", policy, f"t_{policy}_s", value="{type: sum, arg: offset}"),
                rule_yaml(
                    f"{policy}-h",
                    policy,
                    f"t_{policy}_h",
                    value="{type: histogram, arg: offset, buckets: {type: explicit, "
                    "bounds: [7400000030, 7400000040]}}",
                ),
                rule_yaml(f"{policy}-o", policy, f"t_{policy}_o", group_by="[pod]", max_series=1),
            ]
        )

    values = [f"{BASE + 31}:{BASE + 33}", f"{BASE + 41}:{BASE + 41}"]
    lean = lseek_policy("lean", values, rules("lean"), operator="InRange")
    general = yaml.safe_load_all(
        lseek_policy("general", values, rules("general"), operator="InRange")
    )
    docs = list(general)
    docs[0]["spec"]["tracepoints"][0]["selectors"][0]["matchBinaries"] = [
        {"operator": "NotIn", "values": ["/no/such/binary"]}
    ]
    apply(core, lean, yaml.safe_dump_all(docs))
    flags = {
        name: dict(next(iter(core.policies[name].hooks.values())).program.flags)
        for name in ("lean", "general")
    }
    assert (flags["lean"]["LEAN"], flags["lean"]["AGG_PACKED"]) == (1, 1)
    assert flags["general"]["LEAN"] == 0

    calls = [BASE + 30, BASE + 31, BASE + 31, BASE + 32, BASE + 33, BASE + 34, BASE + 41]
    lseeks(*calls)
    matched = [c for c in calls if BASE + 31 <= c <= BASE + 33 or c == BASE + 41]
    samples = scrape(core)
    for name in ("lean", "general"):
        counters = stats(core, name)
        assert (counters["matched"], counters["aggregated"]) == (len(matched), len(matched))
        assert sum(series(samples, f"t_{name}_n_total").values()) == len(matched)
        assert series(samples, f"t_{name}_s_total") == {(): float(sum(matched))}
        buckets = series(samples, f"t_{name}_h_bucket")
        assert buckets == {
            (("le", "7400000030"),): 0.0,
            (("le", "7400000040"),): 4.0,
            (("le", "+Inf"),): 5.0,
        }
        assert series(samples, f"t_{name}_h_count") == {(): 5.0}
        assert sum(series(samples, f"t_{name}_o_total").values()) == len(matched)


def test_an_edit_that_keeps_the_shape_is_map_writes_and_keeps_the_counts(core) -> None:
    by_offset = rule_yaml("edit-a", "edit", "t_edit_a", group_by="[arg:offset]")
    total = rule_yaml("edit-b", "edit", "t_edit_b")
    regrouped = rule_yaml("edit-b", "edit", "t_edit_b", group_by="[arg:offset]")
    apply(core, lseek_policy("edit", [BASE + 1], by_offset + "---\n" + total))
    ids = core.program_ids()
    lseeks(BASE + 1, BASE + 1, BASE + 1, BASE + 2)

    # New values, and rule b groups by offset now: configuration only.
    apply(core, lseek_policy("edit", [BASE + 1, BASE + 2], by_offset + "---\n" + regrouped))
    assert core.program_ids() == ids, "an edit that keeps the shape must not load a program"
    lseeks(BASE + 1, BASE + 1, BASE + 2, BASE + 2, BASE + 2, BASE + 2, BASE + 3)
    assert stats(core, "edit")["matched"] == 3 + 6
    samples = scrape(core)
    assert series(samples, "t_edit_a_total") == {
        (("offset", str(BASE + 1)),): 5.0,
        (("offset", str(BASE + 2)),): 4.0,
    }
    # Its layout changed, so its series started afresh at the edit.
    assert series(samples, "t_edit_b_total") == {
        (("offset", str(BASE + 1)),): 2.0,
        (("offset", str(BASE + 2)),): 4.0,
    }

    # Another operator, and the rule that changed goes back: still the same program.
    apply(core, lseek_policy("edit", [f"{BASE + 2}:{BASE + 3}"], by_offset, operator="InRange"))
    assert core.program_ids() == ids
    lseeks(BASE + 1, BASE + 2, BASE + 3, BASE + 3, BASE + 4)
    assert stats(core, "edit")["matched"] == 9 + 3
    assert series(scrape(core), "t_edit_a_total") == {
        (("offset", str(BASE + 1)),): 5.0,
        (("offset", str(BASE + 2)),): 5.0,
        (("offset", str(BASE + 3)),): 2.0,
    }
    assert "t_edit_b_total" not in scrape(core)


@pytest.fixture
def pin_root() -> Iterator[Path]:
    root = Path("/sys/fs/bpf") / f"weir-test-{uuid.uuid4().hex[:12]}"
    yield root
    bpf.remove_pins(root)  # whatever a failing test left behind


def test_a_restart_under_load_loses_nothing_and_counts_go_on(
    kernel: None, tmp_path: Path, pin_root: Path
) -> None:
    """The first engine goes away with its hooks pinned; while no engine runs the hook
    keeps counting; the second adopts the pins: every call counted once, in one series."""
    rule = rule_yaml("restart", "restart", "t_restart", group_by="[arg:offset]")
    text = lseek_policy("restart", [BASE + 21], rule)
    first = engine.Engine(node_name="n1", pin_root=pin_root)
    apply(first, text)
    ids = first.program_ids()
    stop = tmp_path / "stop"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD.format(offset=BASE + 21), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    second = engine.Engine(node_name="n1", pin_root=pin_root)
    try:
        time.sleep(0.3)
        first.close(detach=False)  # the agent stops; its hook does not
        time.sleep(0.3)
        apply(second, text)
        adopted = second.program_ids()
        time.sleep(0.3)
    finally:
        stop.touch()
        out, _ = worker.communicate(timeout=60)
    sent = int(out)
    try:
        assert sent > 10_000, "the workload must overlap the restart"
        key = ("restart", "tracepoint:syscalls:sys_enter_lseek")
        assert adopted[key][0] == ids[key][0], "the stub stays attached"
        assert stats(second, "restart")["matched"] == sent
        assert series(scrape(second), "t_restart_total") == {
            (("offset", str(BASE + 21)),): float(sent)
        }
        assert second.policies["restart"].hooks[key[1]].loaded.adopted
    finally:
        second.close()
    assert not any(pin_root.iterdir()), "detaching removes the pins"
    assert key[1] not in str(list(pin_root.iterdir()))


def test_pins_of_a_policy_gone_while_no_agent_ran_are_removed(kernel: None, pin_root: Path) -> None:
    first = engine.Engine(node_name="n1", pin_root=pin_root)
    apply(first, lseek_policy("stays", [BASE + 31]), lseek_policy("goes", [BASE + 32]))
    first.close(detach=False)
    assert len(list(pin_root.iterdir())) == 2
    second = engine.Engine(node_name="n1", pin_root=pin_root)
    try:
        apply(second, lseek_policy("stays", [BASE + 31]))
        assert len(second.prune_pins()) == 1
        assert len(list(pin_root.iterdir())) == 1
        lseeks(BASE + 31, BASE + 32)
        assert stats(second, "stays")["matched"] == 1
    finally:
        second.close()


@pytest.mark.parametrize("shape", [False, True], ids=["reconfigure", "new-shape"])
def test_swap_under_load_loses_nothing_and_counts_nothing_twice(
    core, tmp_path: Path, shape: bool
) -> None:
    """Three edits while a process calls lseek as fast as it can: as configuration flips
    (same program), or as new programs swapped in through the stub (shape changes)."""
    rule = rule_yaml("swap", "swap", "t_swap", group_by="[arg:offset]")
    apply(core, lseek_policy("swap", [BASE], rule))
    ids = core.program_ids()
    stop = tmp_path / "stop"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD.format(offset=BASE), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)
        for version in range(1, 4):  # three real changes: each has a different value set
            whence = shape and version % 2 == 1  # a new shape each time
            apply(core, lseek_policy("swap", [BASE, BASE + 1000 + version], rule, whence=whence))
            assert (core.program_ids() != ids) == shape
            time.sleep(0.2)
    finally:
        stop.touch()
        out, _ = worker.communicate(timeout=60)
    sent = int(out)
    assert sent > 100_000, "the workload must overlap the swaps"
    assert stats(core, "swap")["matched"] == sent
    assert series(scrape(core), "t_swap_total") == {(("offset", str(BASE)),): float(sent)}
    assert core.policies["swap"].running_generation == 1  # metadata.generation is the document's


def test_a_program_the_verifier_rejects_keeps_the_previous_version(core) -> None:
    rule = rule_yaml("verify", "verify", "t_verify")
    apply(core, lseek_policy("verify", [BASE + 1], rule))

    def shifted(subsystem: str, event: str) -> list[formats.Field] | None:
        # A kernel whose layout put 'offset' far outside the record: the verifier must refuse.
        fields = formats.read_format(subsystem, event) or []
        return [
            formats.Field(f.name, f.type, 1 << 20, f.size, f.signed) if f.name == "offset" else f
            for f in fields
        ]

    core.layouts = shifted
    second = lseek_policy("verify", [BASE + 1, BASE + 2], rule).replace(
        "name: verify\nspec", "name: verify\n  generation: 2\nspec"
    )
    apply(core, second)
    state = core.policies["verify"]
    failure = state.failures["tracepoint:syscalls:sys_enter_lseek"]
    assert failure.failure_phase == "verify"
    assert "Permission denied" in failure.message or "Invalid argument" in failure.message
    assert "invalid" in failure.verifier_log or "disallowed" in failure.verifier_log, (
        failure.verifier_log
    )
    assert "processed" in failure.verifier_log
    assert (state.generation, state.running_generation) == (2, 1)
    fd = os.open("/dev/null", os.O_RDONLY)
    for offset in (BASE + 1, BASE + 1, BASE + 2):
        os.lseek(fd, offset, 0)
    os.close(fd)
    assert stats(core, "verify")["matched"] == 2  # the old program still runs, with its old values
    report = reporting.from_engine(
        core, node="n1", kernel="k", headers="host", agent_version="t", previous=None
    )
    policy = report.status.policies[0]
    assert (policy.state, policy.generation, policy.running_generation) == ("Failed", 2, 1)
    assert policy.programs[0].verifier_log == failure.verifier_log


HOSTILE = [
    "\"quote's",
    "back\\slash",
    "*/ comment end",
    "new\nline",
    "#include <stdio.h>",
    "%s%n${x}`id`",
    "\ttab",
]


def test_hostile_strings_never_reach_c_and_match_exactly(core, scratch: Path) -> None:
    weird_dir = scratch / "a\"b'c\\d*"
    weird_dir.mkdir()
    weird = weird_dir / "e\n#include <stdio.h> */"
    weird.write_text("x")
    values = [str(weird), *(f"{scratch}/{h}" for h in HOSTILE)]
    text = openat_policy(
        "hostile",
        [{"label": "path", "operator": "Equal", "values": values}],
        rules=rule_yaml("hostile", "hostile", "t_hostile").replace(
            "help: test metric", 'help: "line\\nbreak \\"quoted\\" \\\\ */"'
        ),
    )
    apply(core, text)
    for _ in range(3):
        weird.read_text()
    assert stats(core, "hostile")["matched"] == 3
    program = next(iter(core.policies["hostile"].hooks.values())).program
    for flag in program.cflags():
        assert (
            flag.startswith("-I")
            or flag.split("=", 1)[1].lstrip("-").replace("ULL", "").removeprefix("0x").isalnum()
        )
    joined = " ".join(program.cflags())
    for value in values:
        assert value not in joined
    assert programs.source_text(programs.HOOK_SOURCE) == (ROOT / "bpf" / "hook.bpf.c").read_text()
    samples = scrape(core)
    assert series(samples, "t_hostile_total") == {(): 3.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 10_240, "is 10240 characters; at most 247"),
        ("a\x00b", "contains a NUL byte"),
    ],
)
def test_hostile_values_the_kernel_cannot_hold_are_refused_with_the_field_path(
    core, value: str, message: str
) -> None:
    text = openat_policy(
        "refused", [{"label": "path", "operator": "Prefix", "values": ["/ok", value]}]
    )
    parsed = documents.parse_text(text, source="t.yaml")
    assert [str(p) for p in parsed[0].problems] == [
        f"spec.tracepoints[0].selectors[0].matchArgs[0].values[1]: {message}"
        + ("" if "NUL" not in message else ", which a kernel string can never hold; remove it")
    ]
    core.apply(parsed)  # does not crash, loads nothing, reports why
    assert core.policies["refused"].hooks == {}
    assert core.policies["refused"].problems


def test_hostile_uprobe_path_is_an_attach_failure_not_a_crash(core) -> None:
    spec = {"uprobes": [{"path": '/tmp/no"such; rm -rf /\n', "symbol": "main"}]}
    apply(core, policy_yaml("uprobe-hostile", yaml.safe_dump(spec)))
    failure = core.policies["uprobe-hostile"].failures['uprobe:/tmp/no"such; rm -rf /\n:main']
    assert failure.failure_phase == "attach"


def test_a_broken_policy_file_affects_only_itself(core, tmp_path: Path, scratch: Path) -> None:
    good = openat_policy(
        "good", [{"label": "path", "operator": "Prefix", "values": [f"{scratch}/"]}]
    )
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "broken.yaml").write_text("apiVersion: weir.dev/v1alpha1\nkind: [unclosed\n")
    (tmp_path / "invalid.yaml").write_text(
        good.replace("name: good", "name: invalid").replace("Prefix", "GT")
    )
    core.apply(sources.read_directory(tmp_path))
    (scratch / "f").read_text()
    assert stats(core, "good")["matched"] == 1
    assert core.policies["invalid"].hooks == {}
    assert "GT does not apply to 'path'" in str(core.policies["invalid"].problems[0])
    report = reporting.from_engine(
        core, node="n1", kernel="k", headers="host", agent_version="t", previous=None
    )
    states = {p.name: p.state for p in report.status.policies}
    assert states == {"good": "Ready", "invalid": "Failed"}


def test_tracepoint_index_counts_the_format_from_its_first_field_as_tetragon_does(core) -> None:
    # sys_enter_lseek: common_type, common_flags, common_preempt_count, common_pid (0-3),
    # __syscall_nr (4), fd (5), offset (6), whence (7). A Tetragon policy's `index: 6` is
    # the offset, never another field.
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_lseek",
                "args": [{"index": 6, "type": "int64"}],
                "selectors": [
                    {
                        "matchArgs": [
                            {"index": 6, "operator": "Equal", "values": [str(BASE + 77)]}
                        ],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ]
    }
    apply(core, policy_yaml("tetragon-index", yaml.safe_dump(spec)))
    lseeks(BASE + 77, BASE + 77, BASE + 77, BASE + 78)
    assert stats(core, "tetragon-index")["matched"] == 3
    header = yaml.safe_load(yaml.safe_dump(spec))
    header["tracepoints"][0]["args"][0]["index"] = 3
    header["tracepoints"][0]["selectors"][0]["matchArgs"][0]["index"] = 3
    apply(core, policy_yaml("header-index", yaml.safe_dump(header)))
    (problem,) = core.policies["header-index"].problems
    assert str(problem) == (
        "spec.tracepoints[0].args[0]: syscalls:sys_enter_lseek has no own field at index 3: "
        "indexes count the format's fields from the first, and 0-3 are the common_* header "
        "every event carries; its fields are: __syscall_nr (index 4), fd (index 5), offset "
        "(index 6), whence (index 7)"
    )


def test_rules_of_two_policies_sharing_a_metric_are_one_family(core, scratch: Path) -> None:
    # Two policies count their opens under one metric name: one family in the exposition
    # (a second TYPE line would make Prometheus refuse the whole scrape), both series in it.
    for name in ("first", "second"):
        (scratch / name).write_text("x")
    apply(
        core,
        *(
            openat_policy(
                name,
                [{"label": "path", "operator": "Equal", "values": [str(scratch / name)]}],
                rules=rule_yaml(name, name, "t_shared_opens", group_by="[binary]"),
            )
            for name in ("first", "second")
        ),
    )
    for name, times in (("first", 2), ("second", 3)):
        for _ in range(times):
            subprocess.run(["/usr/bin/cat", str(scratch / name)], check=True, capture_output=True)
    from prometheus_client import CollectorRegistry, generate_latest

    from weir_agent.identity import cgroups, metadata
    from weir_agent.outputs import exporting

    registry = CollectorRegistry(auto_describe=False)
    resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
    registry.register(
        exporting.WeirCollector(engine=core, resolver=resolver, node="n1", headers="host")
    )
    text = generate_latest(registry).decode()
    assert text.count("# TYPE t_shared_opens_total counter") == 1, text
    assert series(scrape(core), "t_shared_opens_total") == {(("binary", "/usr/bin/cat"),): 5.0}
