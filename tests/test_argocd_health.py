"""The Argo CD health check for weir kinds, run with a real Lua (lupa) on fixture objects."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conftest import ROOT

ARGOCD = ROOT / "charts" / "weir" / "argocd"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    script = (ARGOCD / "health.lua").read_text()
    result = lua.execute(
        f"return (function(obj)\n{script}\nend)",
    )(table(obj))
    return str(result["status"]), str(result["message"])


def policy(generation: int = 2, observed: int | None = 2, **conditions: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "p", "generation": generation},
    }
    if observed is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": [
                {"type": t, "status": s.split(":")[0], "message": s.partition(":")[2]}
                for t, s in conditions.items()
            ],
        }
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (policy(observed=None), ("Progressing", "Waiting for the weir operator to report status")),
        (
            policy(generation=3, observed=2, Ready="True"),
            ("Progressing", "Waiting for the operator to observe generation 3"),
        ),
        (
            policy(Ready="True:3 nodes run generation 2", Stalled="False", Degraded="False"),
            ("Healthy", "3 nodes run generation 2"),
        ),
        (
            policy(
                Ready="False", Reconciling="True:1 of 3 nodes not at generation 2", Degraded="False"
            ),
            ("Progressing", "1 of 3 nodes not at generation 2"),
        ),
        (
            policy(Ready="False", Degraded="True:1 of 3 nodes failed; first: node n1 ..."),
            ("Degraded", "1 of 3 nodes failed; first: node n1 ..."),
        ),
        (
            policy(Ready="False", Stalled="True:spec.kprobes[0].call: required field is missing"),
            ("Degraded", "Invalid spec: spec.kprobes[0].call: required field is missing"),
        ),
    ],
)
def test_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected


def test_argocd_cm_snippet_carries_the_same_lua() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    lua = (ARGOCD / "health.lua").read_text()
    assert snippet["data"]["resource.customizations.health.weir.dev_TracingPolicy"] == lua
    assert snippet["data"]["resource.customizations.health.weir.dev_AggregationRule"] == lua
