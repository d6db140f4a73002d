"""Large policies stay manageable: the largest policy weir allows applies with plain
`kubectl apply` (which copies it into an annotation), is rendered, edited and deleted at
once; one past the limit is refused with its size in status and deletes as quickly. The
operator keeps nothing of its own on the objects (no kopf progress or diff base in
annotations), and removes what older operators left there. `weir operator` runs as the
chart runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

import roles
from conftest import free_port, wait_for
from test_kubesim import GROUP, VERSION, Cluster
from weir_api import limits
from weir_api.checks import policy_bytes
from weir_api.policies import TracingPolicySpec


def sized_policy(name: str, target: int, tag: str = "a") -> dict[str, Any]:
    """A policy of 1,024 Prefix values whose spec is ``target`` bytes as JSON, exactly."""

    def spec(width: int, extra: int) -> dict[str, Any]:
        values = [
            f"/srv/{tag}{i:04d}/" + "x" * (width + (i < extra)) for i in range(limits.MAX_VALUES)
        ]
        match = {"label": "path", "operator": "Prefix", "values": values}
        return {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_openat",
                    "args": [{"field": "filename", "type": "filename", "label": "path"}],
                    "selectors": [
                        {"matchArgs": [match], "matchActions": [{"action": "NoPost"}]},
                    ],
                }
            ]
        }

    def size(body: dict[str, Any]) -> int:
        return policy_bytes(TracingPolicySpec.model_validate(body))

    base = size(spec(0, 0))
    width = (target - base) // limits.MAX_VALUES
    body = spec(width, target - size(spec(width, 0)))
    assert size(body) == target
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any] | None:
    status = cluster.get_policy(name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_the_largest_allowed_policy_applies_renders_edits_and_deletes(
    cluster: Cluster, tmp_path: Path
) -> None:
    largest = sized_policy("largest", limits.MAX_POLICY_BYTES)
    too_large = sized_policy("too-large", limits.MAX_POLICY_BYTES + 1, tag="b")
    docs = roles.render({"operator": {"rollupSeconds": 0.5, "healthPort": free_port()}})
    log = tmp_path / "operator.log"

    def apply(body: dict[str, Any]) -> str:
        path = tmp_path / f"{body['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(body))
        return cluster.kubectl("apply", "-f", str(path)).stdout

    def rendered() -> dict[str, Any] | None:
        items = cluster.core.list_namespaced_config_map("weir-system").items
        return next((c for c in items if c.metadata.name == "weir-policy-largest"), None)

    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        assert "created" in apply(largest)  # client-side: kubectl's annotation holds it all
        assert "created" in apply(too_large)
        first = wait_for(rendered, "the largest policy rendered")
        assert json.dumps(first.data).count("/srv/a") == limits.MAX_VALUES
        wait_for(lambda: condition(cluster, "largest", "Reconciling"), "status written")
        # An edit is rendered again (the operator renders on a new generation).
        largest["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0]["values"][1] = "/edited/"
        assert "configured" in apply(largest)
        wait_for(
            lambda: (c := rendered()) and "/edited/" in json.dumps(c.data),
            "the edit rendered",
        )
        stalled = wait_for(
            lambda: (
                (c := condition(cluster, "too-large", "Stalled")) and c["status"] == "True" and c
            ),
            "the policy past the limit refused in status",
        )
        assert stalled["reason"] == "InvalidSpec"
        assert (
            f"spec: is {limits.MAX_POLICY_BYTES + 1:,} bytes as JSON; a policy may take at most "
            f"{limits.MAX_POLICY_BYTES:,}" in stalled["message"]
        )
        names = {
            c.metadata.name for c in cluster.core.list_namespaced_config_map("weir-system").items
        }
        assert names == {"weir-policy-largest"}, "nothing rendered for the refused policy"
        for name in ("largest", "too-large"):
            annotations = cluster.get_policy(name)["metadata"].get("annotations") or {}
            assert set(annotations) == {"kubectl.kubernetes.io/last-applied-configuration"}
        for name in ("largest", "too-large"):
            done = cluster.kubectl("delete", "tracingpolicy", name, "--timeout=20s")
            assert "deleted" in done.stdout
    text = log.read_text()
    assert "Too long" not in text and "Traceback" not in text, text[-3000:]


def test_what_older_operators_left_on_objects_is_removed(cluster: Cluster, tmp_path: Path) -> None:
    # Before the operator moved to watch-event handlers, kopf kept a copy of the spec and
    # its progress in annotations, and a finalizer on every policy.
    cluster.create_policy("legacy")
    legacy = {
        "weir.dev/last-handled-configuration": json.dumps({"spec": {}}),
        "weir.dev/policy_changed": json.dumps({"success": True}),
        "team.example/owner": "ops",
    }
    cluster.patch_policy(
        {"metadata": {"annotations": legacy, "finalizers": ["weir.dev/operator"]}}, name="legacy"
    )
    docs = roles.render({"operator": {"rollupSeconds": 0.5, "healthPort": free_port()}})
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=tmp_path / "op.log"):
        meta = wait_for(
            lambda: (
                not (m := cluster.get_policy("legacy")["metadata"]).get("finalizers")
                and "weir.dev/policy_changed" not in (m.get("annotations") or {})
                and m
            ),
            "the legacy annotations and finalizer removed",
        )
    assert meta["annotations"] == {"team.example/owner": "ops"}
