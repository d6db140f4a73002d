"""Uninstall never hangs: the operator puts no finalizer on policies or rules, removes the
one older versions left, and with the operator gone (after `helm uninstall`) deleting a
policy and deleting the CRDs both complete. `weir operator` runs as the chart runs it."""

from __future__ import annotations

import json
from pathlib import Path

import roles
from conftest import ROOT, free_port, wait_for
from test_kubesim import GROUP, VERSION, Cluster

OLD_FINALIZER = "weir.dev/operator"  # what operators before 0.1.0's roll-up loop added


def test_no_finalizers_and_deletes_complete_without_the_operator(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "policies" / "file-opens.yaml"))
    old = cluster.create_policy("legacy")
    cluster.patch_policy({"metadata": {"finalizers": [OLD_FINALIZER]}}, name="legacy")
    assert cluster.get_policy("legacy")["metadata"]["finalizers"] == [OLD_FINALIZER]
    docs = roles.render(
        {"logFormat": "json", "operator": {"rollupSeconds": 0.5, "healthPort": free_port()}}
    )
    log = tmp_path / "operator.log"
    with roles.running(docs, "operator", kubeconfig=cluster.kubeconfig, log=log):
        wait_for(
            lambda: cluster.core.list_namespaced_config_map("weir-system").items,
            "the policy rendered",
        )
        wait_for(lambda: cluster.get_policy("file-opens-etc").get("status"), "status written")
        wait_for(
            lambda: not cluster.get_policy("legacy")["metadata"].get("finalizers"),
            "the old finalizer removed",
        )
        for plural, name in (
            ("tracingpolicies", "file-opens-etc"),
            ("aggregationrules", "file-opens-etc"),
        ):
            live = cluster.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            assert not live["metadata"].get("finalizers"), live["metadata"]
    assert old["metadata"]["name"] == "legacy"
    # logFormat json: every line the operator logged is a JSON object
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x.get("object", {}).get("kind") for x in lines), "kopf's object in the line"
    # The operator is gone (helm uninstall): deletes must not wait for it.
    done = cluster.kubectl("delete", "tracingpolicy", "file-opens-etc", "--timeout=20s")
    assert "deleted" in done.stdout
    done = cluster.kubectl("delete", "-f", str(ROOT / "crds"), "--timeout=30s")
    assert done.stdout.count("deleted") == 4, (done.stdout, done.stderr)
    listed = cluster.kubectl("api-resources", "--api-group=weir.dev", "--no-headers").stdout
    assert listed.strip() == ""
