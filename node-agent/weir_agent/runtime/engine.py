"""The agent's engine: desired policies in, running programs and their numbers out.

``apply`` takes the parsed documents of a policy source (a directory or the
ConfigMaps) and makes the kernel match them: per policy it generates the
programs; an edit that keeps a program's shape is a configuration flip in its
maps (no compile, counters kept); a new shape is compiled and verified
*before* touching what runs, then new hooks are attached and changed ones
swapped through their stubs. If anything fails to generate, compile or
verify, the previous version keeps running and the failure is recorded in the
verifier's own words. Compiles run without the engine's lock, so scrapes and
event draining go on meanwhile.

Counters survive swaps: after a slot swap the old program's counters and
aggregation entries are harvested (after a grace period in which in-flight
runs finish) into a carried total, so nothing is lost or counted twice.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from weir_agent.identity import namespaces
from weir_agent.kernel import configuring, handles, reading, ringbuf
from weir_agent.runtime import kernels, savings
from weir_agent.spec import abi, btf, codegen, formats, plans, programs
from weir_agent.spec.programs import AggSlot, Program
from weir_api import documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
from weir_api.problems import Problem
from weir_api.reports import ProgramReport
from weir_api.statuses import Savings

log = logging.getLogger("weir.agent")
# Loads run in parallel: compiles (child processes, one per shape) and verifier runs.
LOAD_WORKERS = max(2, os.cpu_count() or 1)
TRACKER_PIN = "tracker"  # under the pin root: the exec tracker's maps and links
SeriesKey = tuple[int, int, int, int, int, bool]  # cgroup, binary, arg0, arg1, aclass, overflow


@dataclasses.dataclass
class SeriesValue:
    count: int = 0
    sum: int = 0
    buckets: tuple[int, ...] = ()

    def add(self, other: SeriesValue) -> SeriesValue:
        width = max(len(self.buckets), len(other.buckets))
        mine = self.buckets + (0,) * (width - len(self.buckets))
        theirs = other.buckets + (0,) * (width - len(other.buckets))
        return SeriesValue(
            self.count + other.count,
            self.sum + other.sum,
            tuple(a + b for a, b in zip(mine, theirs, strict=True)),
        )


@dataclasses.dataclass
class HookState:
    program: Program
    loaded: handles.Loaded
    stub: kernels.Attachment
    event_size: int
    carried_stats: Counter[abi.Stat] = dataclasses.field(default_factory=Counter)
    carried_series: dict[tuple[str, SeriesKey], SeriesValue] = dataclasses.field(
        default_factory=dict
    )


@dataclasses.dataclass
class PolicyState:
    name: str
    generation: int = 0  # the latest generation seen
    running_generation: int = 0  # the generation whose programs run
    digest: str = ""  # of what runs: every hook's program and configuration
    problems: tuple[Problem, ...] = ()
    failures: dict[str, ProgramReport] = dataclasses.field(default_factory=dict)
    hooks: dict[str, HookState] = dataclasses.field(default_factory=dict)
    rules: tuple[AggregationRule, ...] = ()
    exported_metric_bytes: int = 0
    exported_event_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class HookSnapshot:
    policy: str
    hook: str
    args: tuple[programs.ArgPlan, ...]
    stats: dict[abi.Stat, int]
    aggregations: tuple[tuple[AggSlot, dict[SeriesKey, SeriesValue]], ...]
    event_size: int
    report: ProgramReport
    run_time_ns: int
    run_count: int
    clocks: bool = False  # starts or stops duration clocks (its STARTED/UNSTARTED count)
    marks: bool = False  # sets, clears or tests marks (its MARKED/UNMARKED count)


@dataclasses.dataclass(frozen=True)
class RetiredSeries:
    """A gone container's series, deleted from the kernel: its final value."""

    policy: str
    hook: str
    args: tuple[programs.ArgPlan, ...]
    agg: AggSlot
    key: SeriesKey
    value: SeriesValue


@dataclasses.dataclass(frozen=True)
class PendingEvents:
    """Records one program posted, copied out of its ring buffer (headers included)."""

    program: Program
    data: bytes
    count: int


Layouts = Callable[[str, str], "list[formats.Field] | None"]


class Engine:
    def __init__(
        self,
        *,
        node_name: str,
        layouts: Layouts = formats.read_format,
        syscall_prefix: str | None = None,
        ringbuf_pages: int = programs.RINGBUF_PAGES,
        pin_root: Path | None = None,
        kernel: kernels.Kernel | None = None,
    ) -> None:
        """``pin_root``: pin every hook's link, slot and maps there (e.g. /sys/fs/bpf/weir),
        so hooks keep counting while no agent runs and the next agent adopts them.
        ``kernel``: the kernel the engine loads into (the real one by default)."""
        self.kernel: kernels.Kernel = kernel if kernel is not None else kernels.LiveKernel()
        self.node_name = node_name
        self.pin_root = pin_root
        self.layouts = layouts
        self.ringbuf_pages = ringbuf_pages
        self._pending: list[PendingEvents] = []
        self.waiter = ringbuf.Waiter()  # wakes the event writer when a ring has records
        self.scopes: dict[str, set[int]] = {}  # policy -> cgroup ids its selectors pick
        machine = platform.machine()
        self.syscall_prefix = syscall_prefix or (
            "__arm64_sys_" if machine == "aarch64" else "__x64_sys_"
        )
        self.policies: dict[str, PolicyState] = {}
        self.lock = threading.RLock()  # guards what readers see (policies, hooks, events)
        self._applying = threading.Lock()  # one apply at a time; held across compiles
        self.exec_tracker: kernels.Tracker | None = None
        self.host_namespaces = namespaces.host_namespaces()  # for host_ns

    # --- desired state --------------------------------------------------------------
    def apply(self, parsed: Sequence[documents.Parsed]) -> None:
        """Make the kernel match these documents (everything not in them is unloaded)."""
        parsed = documents.cross_check(list(parsed))
        wanted: dict[str, documents.Parsed] = {}
        rules: dict[str, list[AggregationRule]] = {}
        rule_problems: dict[str, list[Problem]] = {}
        for item in parsed:
            if item.kind == "TracingPolicy" and item.name:
                wanted[item.name] = item
            elif item.kind == "AggregationRule" and isinstance(item.obj, AggregationRule):
                target = item.obj.spec.policy_ref.name
                if item.problems:
                    rule_problems.setdefault(target, []).extend(
                        Problem(f"aggregationrule {item.name}: {p.path}", p.message)
                        for p in item.problems
                    )
                else:
                    rules.setdefault(target, []).append(item.obj)
        with self._applying:
            with self.lock:
                for name in sorted(set(self.policies) - set(wanted)):
                    self._unload_policy(name)
            prepared = [
                self._prepare(item, rules.get(name, []), rule_problems.get(name, []))
                for name, item in sorted(wanted.items())
            ]
            # Phase 1, without the lock: compile (once per shape) and verify every new
            # program of every policy before touching what runs; loads run in parallel.
            jobs = [p for ready in prepared if ready for p in ready.plan.load + ready.plan.replace]
            with concurrent.futures.ThreadPoolExecutor(2) as aside:
                # Compiled beside the programs: the stub every new hook attaches with, and
                # the exec tracker when only cgroup paths are wanted of it. Programs that
                # use its maps wait for it, so it comes first then.
                if jobs:
                    aside.submit(self.kernel.prepare)
                if any(p.needs_tracker for p in jobs):
                    self._ensure_exec_tracker(jobs)
                tracker = aside.submit(self._ensure_exec_tracker, jobs)
                with concurrent.futures.ThreadPoolExecutor(LOAD_WORKERS) as pool:
                    results = dict(zip(map(id, jobs), pool.map(self._load, jobs), strict=True))
                tracker.result()
            retirements = []
            for ready in prepared:
                if ready is not None:
                    retirements += self._finish(ready, results)
            if retirements:
                time.sleep(self.kernel.grace_seconds)  # runs that read old configurations end
                with self.lock:
                    for loaded, retirement in retirements:
                        self.kernel.retire(loaded, retirement)

    def _prepare(
        self, item: documents.Parsed, rules: list[AggregationRule], rule_problems: list[Problem]
    ) -> _Prepared | None:
        """Generate a policy's programs and plan them against what runs (None: nothing to
        do but record its problems). Called with ``_applying`` held: only this thread
        changes ``self.policies``, so reading them needs no lock; every change is made
        under ``self.lock``."""
        policy = item.obj if isinstance(item.obj, TracingPolicy) else None
        with self.lock:
            state = self.policies.setdefault(item.name, PolicyState(name=item.name))
            state.generation = policy.metadata.generation if policy else state.generation + 1
            state.failures = {}
            state.problems = tuple(item.problems) + tuple(rule_problems)
        if policy is None or item.problems:
            log.warning(
                "policy %s is invalid; keeping what runs: %s",
                item.name,
                "; ".join(map(str, item.problems)),
            )
            return None
        layouts = {
            t.target_id(): self.layouts(t.subsystem, t.event)
            for t in policy.spec.tracepoint_hooks()
        }
        generated = codegen.generate(
            policy,
            rules,
            layouts=layouts,
            syscall_prefix=self.syscall_prefix,
            ringbuf_pages=self.ringbuf_pages,
            kernel_layout=btf.kernel_layout(),
            host_namespaces=self.host_namespaces,
            kernel_types=btf.kernel_types(),
            cpus=self.kernel.cpus,
        )
        if generated.problems:
            with self.lock:
                state.problems += generated.problems
            log.warning(
                "policy %s cannot be generated: %s",
                item.name,
                "; ".join(map(str, generated.problems)),
            )
            return None
        desired = {(p.policy, p.hook): p for p in generated.programs}
        running = {(item.name, h): s.program for h, s in state.hooks.items()}
        return _Prepared(state, tuple(rules), plans.plan(desired, running))

    def _pins(self, program: Program) -> tuple[Path | None, Path | None]:
        """Where a program's stub and its maps are pinned (None, None: not pinned)."""
        if self.pin_root is None:
            return None, None
        hook = self.pin_root / program.pin_id
        return hook, hook / program.shape_digest()

    def _load(self, program: Program) -> handles.Loaded | ProgramReport:
        try:
            loaded = self.kernel.load(program, pin=self._pins(program)[1])
        except handles.LoadError as error:
            return _failure(program.hook, error)
        if program.posts:
            self.waiter.add(self.kernel.open_ring(loaded).fd)
        return loaded

    def _finish(
        self, ready: _Prepared, results: dict[int, handles.Loaded | ProgramReport]
    ) -> list[tuple[handles.Loaded, configuring.Retirement]]:
        """Phase 2 for one policy: switch to what phase 1 loaded, or keep what runs when
        any of its programs failed. Returns what the configuration flips left behind, to
        retire after the grace period."""
        state, plan, rules = ready.state, ready.plan, ready.rules
        fresh: dict[str, handles.Loaded] = {}
        failures: dict[str, ProgramReport] = {}
        for program in plan.load + plan.replace:
            result = results[id(program)]
            if isinstance(result, ProgramReport):
                failures[program.hook] = result
            else:
                fresh[program.hook] = result
        if failures:
            for loaded in fresh.values():
                loaded.close(detach=not loaded.adopted)  # adopted maps: a hook still runs
            with self.lock:
                state.failures = failures
            log.warning(
                "policy %s generation %d failed; previous version keeps running",
                state.name,
                state.generation,
            )
            return []
        with self.lock:
            retirements = self._switch(state, plan, fresh)
            state.rules = tuple(rules)
            if not state.failures:
                state.running_generation = state.generation
            state.digest = _digest(state.hooks)
        log.info(
            "policy %s generation %d: %d loaded, %d replaced, %d reconfigured, %d unloaded, "
            "%d kept, %d failed",
            state.name,
            state.generation,
            len(plan.load) - len(state.failures),
            len(plan.replace),
            len(plan.reconfigure),
            len(plan.unload),
            len(plan.keep),
            len(state.failures),
        )
        return retirements

    def _switch(
        self, state: PolicyState, plan: plans.Plan, fresh: dict[str, handles.Loaded]
    ) -> list[tuple[handles.Loaded, configuring.Retirement]]:
        """Phase 2, with the lock: attach new hooks, reconfigure and swap changed ones,
        drop removed ones."""
        for program in plan.load + plan.replace:
            if program.scoped:  # before it runs: a scoped program starts with its pods
                self.kernel.set_scope(fresh[program.hook], self.scopes.get(program.policy, set()))
        retirements = []
        for program in plan.reconfigure:
            hook = state.hooks[program.hook]
            before = hook.loaded.program
            retirements.append((hook.loaded, self.kernel.configure(hook.loaded, program)))
            _forget_changed(hook, before, program)
            hook.program = program
        for program in plan.load:
            loaded = fresh[program.hook]
            stub_pin, maps_pin = self._pins(program)
            try:
                stub = self.kernel.attach(program, loaded, pin=stub_pin)
            except handles.LoadError as error:
                loaded.close(detach=not loaded.adopted)
                state.failures[program.hook] = _failure(program.hook, error, loaded)
                continue
            if stub.adopted and stub_pin is not None:  # maps of another shape it ran
                for other in stub_pin.iterdir():
                    if other.is_dir() and other != maps_pin:
                        self.kernel.remove_pins(other)
            size = savings.event_size(program.policy, program.hook, program.args)
            state.hooks[program.hook] = HookState(program, loaded, stub, size)
        swapped: list[tuple[HookState, handles.Loaded]] = []
        for program in plan.replace:
            hook = state.hooks[program.hook]
            hook.stub.swap(fresh[program.hook])
            swapped.append((hook, hook.loaded))
            hook.loaded = fresh[program.hook]
        if swapped:
            time.sleep(self.kernel.grace_seconds)  # let runs of the old programs finish
            for hook, old in swapped:
                self._harvest(hook, old)
                hook.program = hook.loaded.program
                old.close()
        for _, hook_id in plan.unload:
            self._unload_hook(state, hook_id)
        return retirements

    def update_scopes(self, scopes: dict[str, set[int]]) -> None:
        """Set the cgroup ids each scoped policy runs for (from its pod/namespace selectors)."""
        with self.lock:
            if scopes == self.scopes:
                return
            self.scopes = {name: set(ids) for name, ids in scopes.items()}
            log.info(
                "scopes: %s", ", ".join(f"{n} {len(i)} cgroups" for n, i in sorted(scopes.items()))
            )
            for state in self.policies.values():
                for hook in state.hooks.values():
                    if hook.program.scoped:
                        self.kernel.set_scope(hook.loaded, self.scopes.get(state.name, set()))

    def _ensure_exec_tracker(self, programs: Sequence[Program]) -> None:
        needs = any(p.needs_tracker or p.groups_by_cgroup for p in programs)
        if needs and self.exec_tracker is None:
            pin = self.pin_root / TRACKER_PIN if self.pin_root is not None else None
            self.exec_tracker = self.kernel.exec_tracker(pin=pin)

    def wait_events(self, timeout: float) -> bool:
        """Block until a posting program's ring buffer has records, or ``timeout`` s."""
        return self.waiter.wait(timeout)

    def drain_events(self, *, copy: bool = True) -> list[PendingEvents]:
        """Every record posted since the last call, from every posting program (and
        what retired programs posted before they closed). ``copy=False``: the records
        are skipped, not copied (nobody wants them), and only counted."""
        with self.lock:
            for state in self.policies.values():
                for hook in state.hooks.values():
                    self._take(hook.loaded, copy=copy)
            pending, self._pending = self._pending, []
        return pending

    def _take(self, loaded: handles.Loaded, *, copy: bool = True) -> None:
        if loaded.ring is not None:
            data, count = loaded.ring.read(copy=copy)
            if count:
                self._pending.append(PendingEvents(loaded.program, data, count))

    def _harvest(self, hook: HookState, old: handles.Loaded) -> None:
        """Fold a retired program's final counts into the hook's carried totals."""
        self._take(old)  # its last events, before it is closed
        hook.carried_stats.update(self.kernel.read_stats(old))
        new_layout = {a.rule: a for a in hook.loaded.program.aggregations}
        for agg in old.program.aggregations:
            same = new_layout.get(agg.rule)
            if same is None or same.layout() != agg.layout():
                continue  # the rule's shape changed: its series start afresh
            for entry in self.kernel.read_aggregation(old, agg):
                key = (agg.rule, _series_key(entry))
                value = SeriesValue(entry.count, entry.sum, entry.buckets)
                hook.carried_series[key] = hook.carried_series.get(key, SeriesValue()).add(value)
        _forget_changed(hook, old.program, hook.loaded.program)

    def _unload_hook(self, state: PolicyState, hook_id: str, *, detach: bool = True) -> None:
        hook = state.hooks.pop(hook_id)
        hook.stub.close(detach=detach)
        self._take(hook.loaded)  # keep what it posted before detaching
        hook.loaded.close(detach=detach)

    def _unload_policy(self, name: str, *, detach: bool = True) -> None:
        state = self.policies.pop(name)
        for hook_id in list(state.hooks):
            self._unload_hook(state, hook_id, detach=detach)
        log.info("policy %s %s", name, "unloaded" if detach else "left running, pinned")

    def close(self, *, detach: bool = True) -> None:
        """Let go of every program; ``detach=False`` leaves pinned hooks running (their
        counts go on in their maps) for the next agent to adopt."""
        with self.lock:
            for name in list(self.policies):
                self._unload_policy(name, detach=detach or self.pin_root is None)
            if self.exec_tracker is not None and detach:
                self.exec_tracker.unpin()  # it stops with the process
            self.exec_tracker = None  # shared by the process; see kernel/loading.exec_tracker

    def prune_pins(self) -> list[str]:
        """Remove pins of hooks no policy has now (a policy deleted while no agent ran);
        call once the policy source is complete. Returns the pin ids removed."""
        if self.pin_root is None or not self.pin_root.is_dir():
            return []
        with self.lock:
            keep = {h.program.pin_id for s in self.policies.values() for h in s.hooks.values()}
            keep.add(TRACKER_PIN)
            gone = sorted(d.name for d in self.pin_root.iterdir() if d.name not in keep)
            for name in gone:
                self.kernel.remove_pins(self.pin_root / name)
        if gone:
            log.info("removed the pins of %d hooks no policy has", len(gone))
        return gone

    # --- reading --------------------------------------------------------------------
    def snapshot(self) -> list[HookSnapshot]:
        """Every running hook's counters and aggregation series, read now."""
        with self.lock:
            out = []
            for state in self.policies.values():
                for hook_id, hook in sorted(state.hooks.items()):
                    stats = Counter(hook.carried_stats)
                    stats.update(self.kernel.read_stats(hook.loaded))
                    aggregations = []
                    for agg in hook.loaded.program.aggregations:
                        series: dict[SeriesKey, SeriesValue] = {
                            key: value
                            for (rule, key), value in hook.carried_series.items()
                            if rule == agg.rule
                        }
                        for entry in self.kernel.read_aggregation(hook.loaded, agg):
                            key = _series_key(entry)
                            live = SeriesValue(entry.count, entry.sum, entry.buckets)
                            series[key] = series.get(key, SeriesValue()).add(live)
                        aggregations.append((agg, series))
                    run_time_ns, run_count = self.kernel.run_stats(hook.loaded)
                    shape = dict(hook.loaded.program.flags)
                    out.append(
                        HookSnapshot(
                            policy=state.name,
                            hook=hook_id,
                            args=hook.loaded.program.args,
                            stats=dict(stats),
                            aggregations=tuple(aggregations),
                            event_size=hook.event_size,
                            report=_running(hook),
                            run_time_ns=run_time_ns,
                            run_count=run_count,
                            clocks=bool(shape.get("USE_STARTS")),
                            marks=bool(shape.get("USE_MARKS")),
                        )
                    )
            return out

    def retire_series(self, cgroups: frozenset[int]) -> list[RetiredSeries]:
        """Delete the series of these (gone) cgroups from every rule's map, and from what
        swaps carried; returns what they held, for the exporter to fold and forget."""
        out: list[RetiredSeries] = []
        if not cgroups:
            return out
        with self.lock:
            for state in self.policies.values():
                for hook_id, hook in sorted(state.hooks.items()):
                    for agg in hook.loaded.program.aggregations:
                        if not agg.by_cgroup:
                            continue
                        taken: dict[SeriesKey, SeriesValue] = {}
                        for carried in [
                            k
                            for k in hook.carried_series
                            if k[0] == agg.rule and k[1][0] in cgroups
                        ]:
                            taken[carried[1]] = hook.carried_series.pop(carried)
                        for entry in self.kernel.take_series(hook.loaded, agg, cgroups):
                            key = _series_key(entry)
                            value = SeriesValue(entry.count, entry.sum, entry.buckets)
                            taken[key] = taken.get(key, SeriesValue()).add(value)
                        out.extend(
                            RetiredSeries(state.name, hook_id, hook.program.args, agg, key, value)
                            for key, value in taken.items()
                        )
            if self.exec_tracker is not None:
                self.exec_tracker.forget_cgroups(cgroups)
        return out

    def cgroup_path(self, cgroup_id: int) -> str | None:
        """The path of a cgroup the exec tracker saw made (it may be gone now)."""
        tracker = self.exec_tracker
        return tracker.cgroup_path(cgroup_id) if tracker is not None else None

    def add_exported(self, policy: str, *, metrics: int = 0, events: int = 0) -> None:
        """Count bytes user space emitted for a policy (scrapes, event lines)."""
        with self.lock:
            state = self.policies.get(policy)
            if state is not None:
                state.exported_metric_bytes += metrics
                state.exported_event_bytes += events

    def failures(self) -> dict[str, dict[str, ProgramReport]]:
        with self.lock:
            return {name: dict(s.failures) for name, s in self.policies.items() if s.failures}

    def savings(self, snapshots: Sequence[HookSnapshot]) -> dict[str, PolicyTotals]:
        """Per policy: kernel counters summed over hooks, bytes, and the saved ratio."""
        with self.lock:
            out = {}
            for name, state in self.policies.items():
                hooks = [s for s in snapshots if s.policy == name]
                out[name] = totals(hooks, state.exported_metric_bytes, state.exported_event_bytes)
            return out

    def binary_paths(self) -> dict[int, str]:
        return self.exec_tracker.paths() if self.exec_tracker is not None else {}

    def correlation(self) -> dict[str, handles.CorrelationMap]:
        """The shared marks and clocks maps: size, entries, and what LRU evicted."""
        return self.exec_tracker.correlation() if self.exec_tracker is not None else {}

    def program_ids(self) -> dict[tuple[str, str], list[int]]:
        """(policy, hook) → ids of the kernel programs (stub and current) it runs."""
        with self.lock:
            return {
                (state.name, hook_id): [*hook.stub.program_ids(), hook.loaded.prog_id]
                for state in self.policies.values()
                for hook_id, hook in state.hooks.items()
            }


@dataclasses.dataclass(frozen=True)
class _Prepared:
    state: PolicyState
    rules: tuple[AggregationRule, ...]
    plan: plans.Plan


@dataclasses.dataclass(frozen=True)
class PolicyTotals:
    savings: Savings
    exported_metric_bytes: int
    exported_event_bytes: int


def totals(
    hooks: Sequence[HookSnapshot], exported_metric_bytes: int, exported_event_bytes: int
) -> PolicyTotals:
    """A policy's savings from its hooks' counters and the bytes user space emitted."""

    def stat(*which: abi.Stat) -> int:
        return sum(h.stats.get(s, 0) for h in hooks for s in which)

    raw = sum(h.stats.get(abi.Stat.OBSERVED, 0) * h.event_size for h in hooks)
    return PolicyTotals(
        savings=Savings(
            observed=stat(abi.Stat.OBSERVED),
            matched=stat(abi.Stat.MATCHED),
            posted=stat(abi.Stat.POSTED),
            aggregated=stat(abi.Stat.AGGREGATED),
            dropped=stat(abi.Stat.OVERFLOW, abi.Stat.RATE_LIMITED, abi.Stat.RINGBUF_FULL),
            raw_bytes=raw,
            exported_bytes=exported_metric_bytes + exported_event_bytes,
        ).completed(),
        exported_metric_bytes=exported_metric_bytes,
        exported_event_bytes=exported_event_bytes,
    )


def _digest(hooks: dict[str, HookState]) -> str:
    text = ",".join(f"{hook_id}={hooks[hook_id].program.digest()}" for hook_id in sorted(hooks))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _forget_changed(hook: HookState, before: Program, after: Program) -> None:
    """Drop carried series of rules that are gone or whose layout changed."""
    kept = {a.rule for a in after.aggregations}
    old = {a.rule: a.layout() for a in before.aggregations}
    changed = {a.rule for a in after.aggregations if old.get(a.rule, a.layout()) != a.layout()}
    for key in [k for k in hook.carried_series if k[0] not in kept or k[0] in changed]:
        del hook.carried_series[key]


def _series_key(entry: reading.AggEntry) -> SeriesKey:
    return (entry.cgroup, entry.binary, entry.arg0, entry.arg1, entry.aclass, entry.overflow)


def _running(hook: HookState) -> ProgramReport:
    loaded = hook.loaded
    return ProgramReport(
        hook=hook.program.hook,
        state="attached",
        verifier_log=loaded.verifier_summary,
        instructions=loaded.instructions,
        program_ids=[*hook.stub.program_ids(), loaded.prog_id],
        translated_bytes=loaded.translated_bytes,
        jited_bytes=loaded.jited_bytes,
        compile_ms=round(loaded.compile_ms, 1),
        load_ms=round(loaded.load_ms, 1),
    )


def _failure(
    hook: str, error: handles.LoadError, loaded: handles.Loaded | None = None
) -> ProgramReport:
    report = ProgramReport(
        hook=hook,
        state="failed",
        failure_phase=error.phase,
        message=error.message[:4000],
        verifier_log=error.log,
    )
    if loaded is not None:
        report.instructions = loaded.instructions
        report.translated_bytes = loaded.translated_bytes
        report.jited_bytes = loaded.jited_bytes
        report.compile_ms = round(loaded.compile_ms, 1)
        report.load_ms = round(loaded.load_ms, 1)
    return report
