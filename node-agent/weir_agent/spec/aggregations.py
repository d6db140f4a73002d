"""AggregationRules as a program's aggregation slots: what each series is keyed by
(cgroup, binary, args, address class), what it folds (count, sum, histogram, duration,
CPU time) and how many series it may hold. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from weir_agent.spec import abi, programs, selectors
from weir_agent.spec.abi import Clock, ValueKind
from weir_api import aggregations as agg_api
from weir_api.aggregations import AggregationRule
from weir_api.problems import PathPart, Problem, at


def aggregation(
    flags: programs.Flags,
    seeds: programs.SeedBuilder,
    n: int,
    rule: AggregationRule,
    by_label: Mapping[str, programs.ArgPlan],
    policy_name: str,
) -> tuple[programs.AggSlot | None, list[Problem]]:
    spec = rule.spec
    path: tuple[PathPart, ...] = ("aggregationrules", rule.name, "spec")
    problems: list[Problem] = []
    key_fields = _keys(flags, n, rule, by_label, problems)
    value = spec.value
    bounds: tuple[int, ...] = ()
    seconds = value.seconds()
    if value.type == "cpu_time":
        # The thread's last seen CPU time, in weir_starts under the rule's own pair id.
        flags.set(f"AGG{n}_DUR", int(Clock.CPU))
        flags.set(f"AGG{n}_DARG", abi.KEY_THREAD)
        flags.set(
            f"AGG{n}_DID",
            programs.int_literal(programs.name_id(policy_name, "cpu_time", rule.name)),
        )
    elif seconds and value.start is not None:
        clock, arg_slot = selectors.clock_key(value.duration_key(), by_label)
        if clock is None:
            problems.append(at((*path, "value", "key"), "no int arg by that label here"))
        else:
            flags.set(f"AGG{n}_DUR", int(clock))
            flags.set(f"AGG{n}_DARG", arg_slot)
            pair = programs.clock_pair(policy_name, value.start.hook, value.start.key)
            flags.set(f"AGG{n}_DID", programs.int_literal(pair))
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
    slot = programs.AggSlot(
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


def _keys(
    flags: programs.Flags,
    n: int,
    rule: AggregationRule,
    by_label: Mapping[str, programs.ArgPlan],
    problems: list[Problem],
) -> list[tuple[str, str]]:
    """groupBy: each key and the weir_agg_key field that holds it."""
    path: tuple[PathPart, ...] = ("aggregationrules", rule.name, "spec")
    key_fields: list[tuple[str, str]] = []
    group_args = 0
    for index, key in enumerate(rule.spec.group_by):
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
    return key_fields
