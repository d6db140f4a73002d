"""Helpers for kernel tests: a real engine, real programs, real scrapes."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from weir_agent.identity import cgroups, metadata
from weir_agent.outputs import exporting
from weir_agent.runtime import engine
from weir_agent.spec import abi
from weir_api import documents


def policy_yaml(name: str, hook: str, *, rules: str = "") -> str:
    """A TracingPolicy document (hook is the indented YAML of spec) plus rules."""
    body = textwrap.indent(textwrap.dedent(hook).strip(), "  ")
    head = "apiVersion: weir.dev/v1alpha1\nkind: TracingPolicy\n"
    text = f"{head}metadata:\n  name: {name}\nspec:\n{body}\n"
    if rules:
        text += "---\n" + textwrap.dedent(rules).strip() + "\n"
    return text


def rule_yaml(
    name: str,
    policy: str,
    metric: str,
    *,
    group_by: str = "[]",
    value: str = "{type: count}",
    max_series: int = 1000,
) -> str:
    return textwrap.dedent(f"""\
        apiVersion: weir.dev/v1alpha1
        kind: AggregationRule
        metadata: {{name: {name}}}
        spec:
          policyRef: {{name: {policy}}}
          groupBy: {group_by}
          value: {value}
          metric: {{name: {metric}, help: test metric}}
          maxSeries: {max_series}
        """)


def apply(core: engine.Engine, *texts: str) -> None:
    parsed = []
    for number, text in enumerate(texts):
        parsed.extend(documents.parse_text(text, source=f"test{number}.yaml"))
    bad = [p for p in parsed if not p.ok]
    assert not bad, [str(x) for p in bad for x in p.problems]
    core.apply(parsed)


def stats(core: engine.Engine, policy: str) -> dict[str, int]:
    """Kernel counters of a policy summed over its hooks, by stage name."""
    out: dict[str, int] = {}
    for snap in core.snapshot():
        if snap.policy == policy:
            for stat, value in snap.stats.items():
                out[stat.name.lower()] = out.get(stat.name.lower(), 0) + value
    return out


def scrape(
    core: engine.Engine, *, node: str = "n1"
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Everything the collector exposes: sample name → sorted label items → value."""
    registry = CollectorRegistry(auto_describe=False)
    resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
    registry.register(
        exporting.WeirCollector(
            engine=core,
            resolver=resolver,
            node=node,  # type: ignore[arg-type]
            headers="host",
        )
    )
    text = generate_latest(registry).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def series(
    samples: dict[str, dict[Any, float]], name: str, **fixed: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one name whose labels include ``fixed``, keyed by the other labels."""
    out = {}
    for labels, value in samples.get(name, {}).items():
        as_dict = dict(labels)
        if all(as_dict.get(k) == v for k, v in fixed.items()):
            out[tuple((k, v) for k, v in labels if k not in fixed)] = value
    return out


def running(core: engine.Engine) -> Iterator[engine.HookSnapshot]:
    yield from core.snapshot()


STAT = abi.Stat


def scrape_http(
    port: int, host: str = "127.0.0.1"
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """A running agent's /metrics over HTTP: sample name -> sorted label items -> value."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def openat_policy(name: str, *prefixes: str, action: str = "NoPost") -> dict[str, Any]:
    """A TracingPolicy object: openat calls whose path starts with one of ``prefixes``."""
    return {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "filename", "type": "filename", "label": "path"}],
                    "selectors": [
                        {
                            "matchArgs": [
                                {"label": "path", "operator": "Prefix", "values": list(prefixes)}
                            ],
                            "matchActions": [{"action": action}],
                        }
                    ],
                }
            ]
        },
    }
