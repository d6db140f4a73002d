"""The engine's reconcile through a kernel in memory (tests/fakekernel.py): what is
loaded, flipped, swapped, retired, adopted and detached, and that counts carry across
every one of them. No root, no bpf(); the kernel tests run the same paths for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agenthelpers import apply, policy_yaml, rule_yaml
from fakekernel import FakeKernel
from weir_agent.identity.metadata import Labels
from weir_agent.outputs import exporting
from weir_agent.outputs.retention import Retention
from weir_agent.runtime import engine
from weir_agent.spec import abi
from weir_agent.spec.formats import Field, parse_format

CLOSE = "tracepoint:syscalls:sys_enter_close"
DUP = "tracepoint:syscalls:sys_enter_dup"
FORMATS = {
    "sys_enter_close": parse_format("field:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n"),
    "sys_enter_dup": parse_format("field:unsigned int fildes;\toffset:16;\tsize:8;\tsigned:0;\n"),
}


BINARIES = '\n                matchBinaries: [{operator: In, values: ["/bin/true"]}]'


def layouts(_subsystem: str, event: str) -> list[Field] | None:
    return FORMATS.get(event)


def counting(
    name: str, event: str, field: str, value: int, *, generation: int, binaries: bool, rule: bool
) -> str:
    """A policy on one syscall whose ``field`` equals ``value``, counted per container when
    ``rule``; ``binaries`` (a matchBinaries) makes it another shape."""
    more = BINARIES if binaries else ""
    hook = f"""
        tracepoints:
          - subsystem: syscalls
            event: {event}
            args: [{{field: {field}, type: int, label: fd}}]
            selectors:
              - matchArgs: [{{label: fd, operator: Equal, values: ["{value}"]}}]{more}
                matchActions: [{{action: NoPost}}]
        """
    rules = rule_yaml(name, name, f"weir_{name}", group_by="[container]") if rule else ""
    text = policy_yaml(name, hook, rules=rules)
    return text.replace(f"name: {name}\nspec", f"name: {name}\n  generation: {generation}\nspec")


def closes(fd: int = 3, *, generation: int = 1, binaries: bool = False) -> str:
    """close(fd), counted per container."""
    return counting(
        "closes", "sys_enter_close", "fd", fd, generation=generation, binaries=binaries, rule=True
    )


def dups(*, generation: int = 1, binaries: bool = False) -> str:
    """dup(1), with no rule."""
    return counting(
        "dups", "sys_enter_dup", "fildes", 1, generation=generation, binaries=binaries, rule=False
    )


def calls_since(kernel: FakeKernel, mark: int) -> list[tuple[str, str]]:
    return [(c[0], c[1]) for c in kernel.calls[mark:]]


def counted(core: engine.Engine, hook: str) -> tuple[int, dict[int, int]]:
    """(observed, series by cgroup) of one hook, as a scrape would read them."""
    (snap,) = [s for s in core.snapshot() if s.hook == hook]
    series = {
        key[0]: value.count for _, values in snap.aggregations for key, value in values.items()
    }
    return snap.stats[abi.Stat.OBSERVED], series


def test_a_new_policy_is_loaded_configured_and_attached() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    apply(core, closes())
    assert calls_since(kernel, 0) == [("load", CLOSE), ("configure", CLOSE), ("attach", CLOSE)]
    kernel.fire(CLOSE, 5)
    assert counted(core, CLOSE) == (5, {7: 5})
    assert core.policies["closes"].running_generation == 1


def test_an_edit_inside_the_shape_is_a_flip_retired_after_the_grace_period() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    apply(core, closes(3))
    kernel.fire(CLOSE, 5)
    mark = len(kernel.calls)
    apply(core, closes(4, generation=2))
    assert calls_since(kernel, mark) == [("configure", CLOSE), ("retire", CLOSE)]
    flipped, retired = kernel.calls[mark][2], kernel.calls[mark + 1][2]
    assert retired - flipped >= kernel.grace_seconds
    kernel.fire(CLOSE, 3)
    assert counted(core, CLOSE) == (8, {7: 8})  # same program, same maps: counts go on
    assert core.policies["closes"].running_generation == 2


def test_a_new_shape_is_swapped_in_and_the_old_counts_carry_over() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    apply(core, closes())
    kernel.fire(CLOSE, 5)
    old = kernel.hooks[CLOSE].slot
    mark = len(kernel.calls)
    apply(core, closes(generation=2, binaries=True))
    assert calls_since(kernel, mark) == [("load", CLOSE), ("configure", CLOSE), ("swap", CLOSE)]
    assert kernel.hooks[CLOSE].slot is not old and old.module.closed
    kernel.fire(CLOSE, 2)
    # The hook's counters and its unchanged rule's series carry across the swap.
    assert counted(core, CLOSE) == (7, {7: 7})


def test_a_deleted_policy_is_detached() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    apply(core, closes(), dups())
    mark = len(kernel.calls)
    apply(core, dups())
    assert calls_since(kernel, mark) == [("detach", CLOSE)]
    assert list(kernel.hooks) == [DUP] and "closes" not in core.policies


def test_a_refused_program_keeps_its_policy_running_and_the_others_move_on() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    apply(core, closes(), dups())
    kernel.fire(DUP, 2)
    kernel.refuse[DUP] = "R1 invalid mem access 'scalar'"
    mark = len(kernel.calls)
    apply(core, closes(4, generation=2), dups(generation=2, binaries=True))
    steps = calls_since(kernel, mark)
    assert ("configure", CLOSE) in steps and ("swap", DUP) not in steps
    failed = core.failures()["dups"][DUP]
    assert (failed.failure_phase, failed.message) == ("verify", "R1 invalid mem access 'scalar'")
    assert failed.verifier_log == "; the verifier's log"
    dups_state, closes_state = core.policies["dups"], core.policies["closes"]
    assert (dups_state.generation, dups_state.running_generation) == (2, 1)
    assert (closes_state.generation, closes_state.running_generation) == (2, 2)
    kernel.fire(DUP, 3)  # the previous version still counts
    assert counted(core, DUP)[0] == 5
    del kernel.refuse[DUP]
    apply(core, closes(4, generation=2), dups(generation=3, binaries=True))
    assert "dups" not in core.failures() and core.policies["dups"].running_generation == 3
    assert counted(core, DUP)[0] == 5


def test_a_restart_adopts_the_pinned_hooks_with_their_counts(tmp_path: Path) -> None:
    kernel, pins = FakeKernel(), tmp_path / "weir"
    first = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel, pin_root=pins)
    apply(first, closes())
    kernel.fire(CLOSE, 4)
    first.close(detach=False)
    assert ("detach", CLOSE) not in kernel.calls and CLOSE in kernel.hooks
    kernel.fire(CLOSE, 2)  # the hook runs on while no agent does
    mark = len(kernel.calls)
    second = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel, pin_root=pins)
    apply(second, closes())
    assert calls_since(kernel, mark) == [("adopt", CLOSE), ("adopt stub", CLOSE)]
    kernel.fire(CLOSE, 1)
    assert counted(second, CLOSE) == (7, {7: 7})  # nothing lost, nothing counted twice
    assert second.prune_pins() == []
    second.close()
    assert ("detach", CLOSE) in kernel.calls and not any(pins.iterdir())


def test_a_restart_with_an_edited_policy_adopts_then_reconfigures(tmp_path: Path) -> None:
    kernel, pins = FakeKernel(), tmp_path / "weir"
    first = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel, pin_root=pins)
    apply(first, closes(3))
    kernel.fire(CLOSE, 4)
    first.close(detach=False)
    mark = len(kernel.calls)
    second = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel, pin_root=pins)
    apply(second, closes(4, generation=2))  # same shape, another configuration
    assert calls_since(kernel, mark) == [
        ("adopt", CLOSE),
        ("configure", CLOSE),
        ("adopt stub", CLOSE),
    ]
    assert counted(second, CLOSE)[0] == 4


class Index:
    """Which cgroups are gone (the test says), as identity.cgroups.CgroupIndex answers."""

    def __init__(self) -> None:
        self.dead: set[int] = set()

    def gone(self, cgroup_ids: Any) -> set[int]:
        return set(cgroup_ids) & self.dead


class Namespaces:
    """cgroup 7 and 8 run in namespace "a"; forget() records what was dropped."""

    def __init__(self) -> None:
        self.forgotten: set[int] = set()

    def labels(self, cgroup_id: int) -> Labels:
        return Labels(namespace="a", container=str(cgroup_id))

    def forget(self, cgroup_ids: Any) -> None:
        self.forgotten |= set(cgroup_ids)


def test_retired_series_leave_the_kernel_and_shared_labels_never_go_backwards() -> None:
    kernel = FakeKernel()
    core = engine.Engine(node_name="n1", layouts=layouts, kernel=kernel)
    namespaced = (
        counting("ns", "sys_enter_dup", "fildes", 1, generation=1, binaries=False, rule=False)
        + "---\n"
        + rule_yaml("ns", "ns", "weir_ns", group_by="[namespace]")
    )
    apply(core, closes(), namespaced)
    index, names = Index(), Namespaces()
    collector = exporting.WeirCollector(
        engine=core, resolver=names, node="n1", headers="host", index=index,  # type: ignore[arg-type]
        retention=Retention.parse("1scrapes"),
    )  # fmt: skip

    def scrape() -> dict[str, dict[tuple[str, ...], float]]:
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family in collector.collect():
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sample.labels.values())] = sample.value
        return out

    kernel.fire(DUP, 5, cgroup=7)
    kernel.fire(DUP, 2, cgroup=8)
    kernel.fire(CLOSE, 3, cgroup=7)
    assert scrape()["weir_ns_total"] == {("a",): 7}
    index.dead.add(7)
    first = scrape()  # sees 7 gone: its final counts, then it is retired
    assert first["weir_ns_total"] == {("a",): 7}
    assert first["weir_closes_total"] == {("7",): 3}
    assert names.forgotten == {7}
    assert {c for (_, c) in kernel.hooks[DUP].slot.module.series} == {8}  # left the kernel
    kernel.fire(DUP, 1, cgroup=8)
    after = scrape()
    assert after["weir_ns_total"] == {("a",): 8}  # 8's series lives on: 7's counts stay in it
    assert after.get("weir_closes_total", {}) == {}  # 7's own series stopped
    assert after["weir_agent_series_retired_total"] == {(): 2}
    index.dead.add(8)
    scrape()
    assert scrape().get("weir_ns_total", {}) == {}  # nothing in "a" lives: the series ends
