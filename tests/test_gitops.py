"""GitOps paths through the real kubectl on kubesim: moving a policy from client-side to
server-side apply (what turning on Argo CD's ServerSideApply does to existing objects),
and a second field manager applying its own part of the same object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import EXAMPLES, ROOT
from test_kubesim import Cluster

PACKS = ROOT / "examples" / "packs"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    instance = Cluster(tmp_path)
    instance.install()
    yield instance
    instance.close()


@pytest.mark.parametrize(
    "example",
    sorted(str(p.relative_to(ROOT)) for p in [*EXAMPLES.glob("*.yaml"), *PACKS.glob("*/*.yaml")]),
)
def test_client_side_then_server_side_apply_does_not_conflict(
    cluster: Cluster, example: str
) -> None:
    path = str(ROOT / example)
    cluster.kubectl("apply", "-f", path)
    result = cluster.kubectl("apply", "--server-side", "-f", path, check=False)
    assert result.returncode == 0, result.stderr
    assert "serverside-applied" in result.stdout
    # and again: a no-op for the new manager
    assert cluster.kubectl("apply", "--server-side", "-f", path).returncode == 0


def test_a_second_field_manager_owns_only_what_it_applies(cluster: Cluster) -> None:
    policy = yaml.safe_load((EXAMPLES / "file-opens.yaml").read_text().split("\n---")[0])
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd", "-f", "-", stdin=yaml.safe_dump(policy)
    )
    labels = {
        "apiVersion": policy["apiVersion"],
        "kind": policy["kind"],
        "metadata": {"name": policy["metadata"]["name"], "labels": {"team": "platform"}},
    }
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=labeller",
        "-f",
        "-",
        stdin=yaml.safe_dump(labels),
    )
    live = cluster.get_policy(policy["metadata"]["name"])
    assert live["metadata"]["labels"] == {"team": "platform"}
    assert live["spec"]["tracepoints"] == policy["spec"]["tracepoints"]
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert {"argocd", "labeller"} <= managers
    # The first manager re-applies its manifest unchanged: no conflict, labels kept.
    again = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=argocd",
        "-f",
        "-",
        stdin=yaml.safe_dump(policy),
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert cluster.get_policy(policy["metadata"]["name"])["metadata"]["labels"] == {
        "team": "platform"
    }


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("weir_policy_events", "are weir's own metrics; choose another name"),
        ("weir_agent_info", "are weir's own metrics; choose another name"),
        ("my_opens_total", "drop the suffix: weir adds _total"),
    ],
)
def test_reserved_metric_names_are_refused_at_apply(
    cluster: Cluster, metric: str, message: str
) -> None:
    # `kubectl apply` (and so an Argo CD sync) fails with the field path: the series weir
    # exports about itself cannot be shadowed by a rule.
    rule = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AggregationRule",
        "metadata": {"name": "shadow"},
        "spec": {"policyRef": {"name": "p"}, "metric": {"name": metric}},
    }
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(rule), check=False)
    assert result.returncode != 0
    assert "spec.metric" in result.stderr and message in result.stderr, result.stderr


def _openat(arg_type: str, operator: str, value: str, label: str = "path") -> dict[str, object]:
    return {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "refused"},
        "spec": {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "filename", "type": arg_type, "label": "path"}],
                    "selectors": [
                        {"matchArgs": [{"label": label, "operator": operator, "values": [value]}]}
                    ],
                }
            ]
        },
    }


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        (
            _openat("filename", "GT", "1"),
            "spec.tracepoints[0]",
            "a matchArgs operator must fit its arg's type",
        ),
        (
            _openat("filename", "Prefix", "/etc/", label="nope"),
            "spec.tracepoints[0]",
            "every matchArgs entry names an arg of this hook",
        ),
        (
            _openat("filename", "Prefix", "x" * 300),
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]",
            "Too long: may not be more than 247",
        ),
        (
            _openat("filename", "Prefix", ""),
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]",
            "should be at least 1 chars long",
        ),
    ],
    ids=["GT on a filename", "an undeclared label", "a 300-byte string", "an empty string"],
)
def test_invalid_policies_are_refused_at_apply_with_the_field_path(
    cluster: Cluster, policy: dict[str, object], field: str, message: str
) -> None:
    for mode in ([], ["--server-side"]):
        result = cluster.kubectl(
            "apply", *mode, "-f", "-", stdin=yaml.safe_dump(policy), check=False
        )
        assert result.returncode != 0, result.stdout
        assert f"{field}: " in result.stderr and message in result.stderr, result.stderr
    assert "refused" not in cluster.kubectl("get", "tracingpolicies", "-o", "name").stdout


def test_a_tetragon_rate_limit_in_bare_seconds_applies(cluster: Cluster) -> None:
    policy = _openat("filename", "Prefix", "/etc/")
    policy["metadata"] = {"name": "bare-seconds"}
    spec: Any = policy["spec"]
    spec["tracepoints"][0]["selectors"][0]["matchActions"] = [{"action": "Post", "rateLimit": 5}]
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy), check=False)
    assert result.returncode == 0, result.stderr
    stored = cluster.get_policy("bare-seconds")["spec"]["tracepoints"][0]["selectors"][0]
    assert stored["matchActions"][0]["rateLimit"] == 5
    policy["spec"]["tracepoints"][0]["selectors"][0]["matchActions"][0]["rateLimit"] = "soon"
    refused = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy), check=False)
    assert refused.returncode != 0 and "rateLimit" in refused.stderr
