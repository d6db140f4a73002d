"""Prometheus exposition: the engine's maps, read at scrape time.

One custom collector reads every running program's counters and aggregation
maps when Prometheus scrapes (pull, as ebpf_exporter does), decodes the keys
into labels and yields:

- one metric per AggregationRule, named by it (counters end in ``_total``,
  histograms in Prometheus form);
- ``weir_policy_events_total{policy,hook,stage}`` (observed, matched, posted,
  aggregated) and ``weir_policy_dropped_events_total{policy,hook,reason}``;
- ``weir_policy_exported_bytes_total``, ``weir_policy_raw_bytes_total`` and
  ``weir_policy_saved_ratio`` (see savings.py for the definitions);
- ``weir_program_verified``, ``weir_program_instructions`` and, when
  ``kernel.bpf_stats_enabled`` is on, the programs' run time.

The bytes of each policy's aggregation families are counted on every scrape:
that is what weir actually exported for the policy.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from weir_agent import version
from weir_agent.identity import cgroups
from weir_agent.identity.metadata import Resolver
from weir_agent.outputs import series
from weir_agent.outputs.retention import DEFAULT, Departures, Retention
from weir_agent.runtime.engine import Engine, HookSnapshot, SeriesValue
from weir_agent.spec import abi
from weir_agent.spec.programs import AggSlot, ArgPlan
from weir_api import values

STAGES = {
    "observed": (abi.Stat.OBSERVED,),
    "matched": (abi.Stat.MATCHED,),
    "posted": (abi.Stat.POSTED,),
    "aggregated": (abi.Stat.AGGREGATED,),
}  # drops are weir_policy_dropped_events_total{reason}, once (their sum is no stage)
DROP_REASONS = {
    "overflow": abi.Stat.OVERFLOW,
    "rate_limit": abi.Stat.RATE_LIMITED,
    "ring_buffer_full": abi.Stat.RINGBUF_FULL,
}


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def exposition_bytes(families: list[Metric]) -> int:
    """Exactly how many bytes these families take in the text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return len(generate_latest(registry))


class WeirCollector:
    def __init__(
        self,
        *,
        engine: Engine,
        resolver: Resolver,
        node: str,
        headers: str,
        index: cgroups.CgroupIndex | None = None,
        retention: Retention = DEFAULT,
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.node = node
        self.headers = headers
        self.publisher: Any = None  # in a cluster: its API errors and NodeReport writes
        self.index = index  # where gone cgroups are found (None: series are never retired)
        self.departures = Departures(retention)
        # Retired series' final values, by metric and labels, while series with the same
        # labels live on (a namespace's count must not drop when one of its pods goes).
        self.carry: dict[str, dict[tuple[str, ...], SeriesValue]] = {}
        self.retired = 0  # series deleted from the kernel's maps
        self._sweeping = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        snapshots = self.engine.snapshot()
        rule_families = self._rule_families(snapshots)
        self.sweep(snapshots, scraped=True)  # after the families: this scrape has them all
        for policy, families in rule_families.items():
            self.engine.add_exported(policy, metrics=exposition_bytes(families))
        for families in rule_families.values():
            yield from families
        yield from self._policy_families(snapshots)
        info = GaugeMetricFamily(
            "weir_agent_info", "The weir agent on this node.", labels=["node", "version", "headers"]
        )
        info.add_metric([self.node, version.VERSION, self.headers], 1)
        yield info
        retired = CounterMetricFamily(
            "weir_agent_series_retired",
            "Series of gone containers deleted from the kernel's maps after the retention "
            "(--series-retention).",
        )
        retired.add_metric([], self.retired)
        retiring = GaugeMetricFamily(
            "weir_agent_series_retiring",
            "Gone containers whose series are kept until the retention passes.",
        )
        retiring.add_metric([], self.departures.waiting())
        yield from (retired, retiring)
        if self.publisher is not None:
            yield from self._api_families(self.publisher)

    def sweep(self, snapshots: list[HookSnapshot] | None = None, *, scraped: bool) -> None:
        """Retire the series of containers gone for the retention: delete them from the
        kernel, keep their values where labels live on, forget their labels."""
        if self.index is None:
            return
        with self._sweeping:
            if snapshots is None:
                snapshots = self.engine.snapshot()
            present = {
                key[0]
                for snap in snapshots
                for agg, entries in snap.aggregations
                if agg.by_cgroup
                for key in entries
                if key[0] and not key[-1]
            }
            gone = self.index.gone(present)
            due = self.departures.due(gone, now=time.monotonic(), scraped=scraped)
            if not due:
                return
            retired = self.engine.retire_series(due)
            binaries = self.engine.binary_paths()
            for item in retired:
                context = series.Context(
                    node=self.node,
                    labels=self.resolver.labels,
                    binaries=binaries,
                    signed_args=_signed_key_args(item.args, item.agg),
                )
                labels = series.decode(item.agg, item.key, context)
                carried = self.carry.setdefault(item.agg.metric, {})
                carried[labels] = carried.get(labels, SeriesValue()).add(item.value)
            self.retired += len(retired)
            self.resolver.forget(due)

    def _correlation_families(self) -> Iterator[Metric]:
        maps = self.engine.correlation()
        if not maps:
            return
        capacity = GaugeMetricFamily(
            "weir_agent_correlation_capacity",
            "Entries the node's shared correlation map holds at most (marks; clocks of durations).",
            labels=["map"],
        )
        entries = GaugeMetricFamily(
            "weir_agent_correlation_entries", "Entries in the map now.", labels=["map"]
        )
        evicted = CounterMetricFamily(
            "weir_agent_correlation_evicted",
            "Entries the map's LRU evicted to make room: a mark or a running clock lost.",
            labels=["map"],
        )
        for name, found in sorted(maps.items()):
            capacity.add_metric([name], found.capacity)
            entries.add_metric([name], found.entries)
            evicted.add_metric([name], found.evicted)
        yield from (capacity, entries, evicted)

    @staticmethod
    def _api_families(publisher: Any) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "weir_agent_api_errors",
            "Kubernetes API requests this agent could not make, by operation and HTTP status "
            "(none: no answer).",
            labels=["operation", "code"],
        )
        for (operation, code), count in sorted(publisher.errors.snapshot().items()):
            errors.add_metric([operation, code], count)
        yield errors
        writes = CounterMetricFamily(
            "weir_agent_nodereport_writes",
            "NodeReport status writes by result (ok, failed).",
            labels=["result"],
        )
        writes.add_metric(["ok"], publisher.writes)
        writes.add_metric(["failed"], publisher.failures)
        yield writes

    def _rule_families(self, snapshots: list[HookSnapshot]) -> dict[str, list[Metric]]:
        binaries = self.engine.binary_paths()
        merged: dict[str, tuple[AggSlot, dict[tuple[str, ...], list[Any]]]] = {}
        owner: dict[str, str] = {}  # metric -> the policy its bytes are counted for
        for snap in snapshots:
            for agg, entries in snap.aggregations:
                signed = _signed_key_args(snap.args, agg)
                context = series.Context(
                    node=self.node,
                    labels=self.resolver.labels,
                    binaries=binaries,
                    signed_args=signed,
                )
                # Rules that share a metric name (one per hook, or in several policies)
                # are one family, or Prometheus would refuse the scrape for a second TYPE
                # line: weir_api.checks.check_metric_names holds them to one shape.
                _, by_labels = merged.setdefault(agg.metric, (agg, {}))
                owner[agg.metric] = min(snap.policy, owner.get(agg.metric, snap.policy))
                for key, value in entries.items():
                    if key[-1] and not value.count:
                        continue  # the overflow series appears once something overflowed
                    labels = series.decode(agg, key, context)
                    _add(by_labels.setdefault(labels, [0, 0, collections.Counter()]), value)
        with self._sweeping:
            for metric in list(self.carry):
                carried = self.carry[metric]
                by_labels = merged[metric][1] if metric in merged else {}
                for labels in list(carried):
                    if labels not in by_labels:
                        del carried[labels]  # nothing with these labels lives: it ends
                        continue
                    _add(by_labels[labels], carried[labels])
                if not carried:
                    del self.carry[metric]
        out: dict[str, list[Metric]] = collections.defaultdict(list)
        for metric, (agg, by_labels) in sorted(merged.items()):
            names = series.label_names(agg)
            help_text = agg.help or f"weir AggregationRule {agg.rule}"
            # A duration's values are nanoseconds in the kernel, seconds in Prometheus.
            unit = 1e9 if agg.seconds else 1
            if agg.value >= abi.ValueKind.HIST_EXP2:
                family: Metric = HistogramMetricFamily(agg.metric, help_text, labels=names)
                top = max((max(t[2], default=0) for t in by_labels.values()), default=0)
                for labels, (count, total, buckets) in sorted(by_labels.items()):
                    cumulative, rows = 0, []
                    if agg.value == abi.ValueKind.HIST_EXP2:
                        bounds = [series.exp2_upper_bound(k) for k in range(top + 1)]
                    else:
                        bounds = [float(b) for b in agg.bounds]
                    for index, bound in enumerate(bounds):
                        cumulative += buckets.get(index, 0)
                        rows.append((_le(bound / unit), cumulative))
                    rows.append(("+Inf", count))
                    family.add_metric(list(labels), buckets=rows, sum_value=total / unit)  # type: ignore[attr-defined]
            else:
                family = CounterMetricFamily(agg.metric, help_text, labels=names)
                for labels, (count, total, _) in sorted(by_labels.items()):
                    value = count if agg.value == abi.ValueKind.COUNT else total / unit
                    family.add_metric(list(labels), value)
            out[owner[metric]].append(family)  # a shared family's bytes: the first policy's
        return out

    def _policy_families(self, snapshots: list[HookSnapshot]) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "weir_policy_events",
            "Events per policy, hook and stage.",
            labels=["policy", "hook", "stage"],
        )
        dropped = CounterMetricFamily(
            "weir_policy_dropped_events",
            "Events dropped in the kernel, by reason.",
            labels=["policy", "hook", "reason"],
        )
        verified = GaugeMetricFamily(
            "weir_program_verified",
            "1 when the hook's current program passed the verifier.",
            labels=["policy", "hook"],
        )
        instructions = GaugeMetricFamily(
            "weir_program_instructions",
            "Instructions the verifier processed.",
            labels=["policy", "hook"],
        )
        run_time = CounterMetricFamily(
            "weir_program_run_time_seconds",
            "BPF run time (kernel.bpf_stats_enabled=1 only).",
            labels=["policy", "hook"],
        )
        runs = CounterMetricFamily(
            "weir_program_runs", "BPF runs (bpf_stats only).", labels=["policy", "hook"]
        )
        clocks = CounterMetricFamily(
            "weir_policy_duration_clocks",
            "Duration clocks by hook: started (a start hook's match recorded its time), "
            "unrecorded (the map refused a start) and unstarted (an end found no clock: it "
            "began before the hook was attached, was not recorded, or was evicted).",
            labels=["policy", "hook", "event"],
        )
        marks = CounterMetricFamily(
            "weir_policy_marks",
            "Marks by hook: set (a Mark or TrackSock marked a key not marked yet) and cleared "
            "(an Unmark or UntrackSock cleared a marked key).",
            labels=["policy", "hook", "event"],
        )
        for snap in snapshots:
            ids = [snap.policy, snap.hook]
            for stage, stats in STAGES.items():
                events.add_metric([*ids, stage], sum(snap.stats.get(s, 0) for s in stats))
            if snap.clocks:
                clocks.add_metric([*ids, "started"], snap.stats.get(abi.Stat.STARTED, 0))
                clocks.add_metric([*ids, "unstarted"], snap.stats.get(abi.Stat.UNSTARTED, 0))
                clocks.add_metric([*ids, "unrecorded"], snap.stats.get(abi.Stat.UNRECORDED, 0))
            if snap.marks:
                marks.add_metric([*ids, "set"], snap.stats.get(abi.Stat.MARKED, 0))
                marks.add_metric([*ids, "cleared"], snap.stats.get(abi.Stat.UNMARKED, 0))
            for reason, stat in DROP_REASONS.items():
                dropped.add_metric([*ids, reason], snap.stats.get(stat, 0))
            verified.add_metric(ids, 1)
            instructions.add_metric(ids, snap.report.instructions)
            if snap.run_count:
                run_time.add_metric(ids, snap.run_time_ns / 1e9)
                runs.add_metric(ids, snap.run_count)
        for policy, failures in self.engine.failures().items():
            for hook in failures:
                verified.add_metric([policy, hook], 0)
        yield from (events, dropped, verified, instructions, run_time, runs, clocks, marks)
        yield from self._correlation_families()
        exported = CounterMetricFamily(
            "weir_policy_exported_bytes",
            "Bytes weir emitted for the policy.",
            labels=["policy", "kind"],
        )
        raw = CounterMetricFamily(
            "weir_policy_raw_bytes",
            "Bytes a per-event JSON exporter would have emitted.",
            labels=["policy"],
        )
        saved = GaugeMetricFamily(
            "weir_policy_saved_ratio", "1 - exported / raw.", labels=["policy"]
        )
        for policy, totals in sorted(self.engine.savings(snapshots).items()):
            exported.add_metric([policy, "metrics"], totals.exported_metric_bytes)
            exported.add_metric([policy, "events"], totals.exported_event_bytes)
            raw.add_metric([policy], totals.savings.raw_bytes)
            saved.add_metric([policy], totals.savings.saved_ratio)
        yield from (exported, raw, saved)


def _signed_key_args(args: tuple[ArgPlan, ...], agg: AggSlot) -> dict[str, bool]:
    """Whether each arg0/arg1 key field holds a signed argument (for its label text)."""
    by_name = {a.name: a for a in args}
    out = {}
    for group_key, field in agg.key_fields:
        arg = by_name.get(group_key.partition(":")[2])
        if arg is not None and field in {"arg0", "arg1"}:
            out[field] = values.INTEGER_TYPES.get(arg.type, (64, True))[1]
    return out


def _add(total: list[Any], value: SeriesValue) -> None:
    """Fold a series' value into a [count, sum, Counter of bucket -> count] total."""
    total[0] += value.count
    total[1] += value.sum
    for bucket, count in enumerate(value.buckets):
        if count:
            total[2][bucket] += count


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)
