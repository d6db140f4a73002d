"""Aggregation entries → labelled series. Pure decoding.

A kernel key holds ids (cgroup id, binary hash, raw argument values, address
class numbers); a series has the label values people query by. The labels of
a rule are its groupBy keys, named: ``namespace``, ``pod``, ``container``,
``workload``, ``node``, ``binary``, ``arg:LABEL`` → ``LABEL``,
``addressClass:LABEL`` → ``LABEL_class``. The overflow entry becomes one
series whose every label is ``__overflow__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from weir_agent.identity.metadata import Labels
from weir_agent.spec import abi
from weir_agent.spec.programs import AggSlot

OVERFLOW = "__overflow__"
SeriesKey = tuple[int, int, int, int, int, bool]


def label_names(agg: AggSlot) -> list[str]:
    names = []
    for key in agg.group_by:
        kind, _, label = key.partition(":")
        names.append(label if kind == "arg" else f"{label}_class" if label else kind)
    return names


@dataclasses.dataclass(frozen=True)
class Context:
    """What decoding needs from the world."""

    node: str
    labels: Callable[[int], Labels]  # cgroup id → labels
    binaries: Mapping[int, str]  # binary hash → path
    signed_args: Mapping[str, bool]  # weir_agg_key field (arg0/arg1) → signed


def decode(agg: AggSlot, key: SeriesKey, context: Context) -> tuple[str, ...]:
    cgroup, binary, arg0, arg1, aclass, overflow = key
    if overflow:
        return tuple(OVERFLOW for _ in agg.group_by)
    fields = dict(agg.key_fields)
    out = []
    labels: Labels | None = None
    for group_key in agg.group_by:
        field = fields.get(group_key, "")
        if field == "cgroup":
            labels = labels or context.labels(cgroup)
            out.append(getattr(labels, group_key))
        elif field == "binary":
            out.append(context.binaries.get(binary, "unknown" if binary else ""))
        elif field == "node":
            out.append(context.node)
        elif field in {"arg0", "arg1"}:
            raw = arg0 if field == "arg0" else arg1
            signed = context.signed_args.get(field, True)
            out.append(str(raw if signed else raw & 0xFFFFFFFFFFFFFFFF))
        elif field == "aclass":
            out.append(abi.AddressClass(aclass).name.lower() if aclass else "none")
        else:
            out.append("")
    return tuple(out)


def exp2_upper_bound(bucket: int) -> float:
    """The le of exp2 bucket k: 0 for k=0, else 2^k - 1 (values are integers)."""
    return float((1 << bucket) - 1)
