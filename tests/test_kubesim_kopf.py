"""kopf's full create/update/delete cycle against kubesim, with finalizers, through
kopf.testing.KopfRunner: the framework the operator is built on, unmodified."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kopf.testing import KopfRunner

from test_kubesim import GROUP, VERSION, Cluster

OPERATOR = """
import json, kopf
from pathlib import Path

LOG = Path({log!r})

def record(*entry):
    with LOG.open("a") as f:
        f.write(json.dumps(entry) + "\\n")

@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)  # reads $KUBECONFIG at call time

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="weir.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="weir.dev")
    settings.persistence.finalizer = "weir.dev/test-operator"
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15

@kopf.on.create("weir.dev", "v1alpha1", "tracingpolicies")
def created(name, meta, **_):
    record("create", name, meta["generation"])

@kopf.on.update("weir.dev", "v1alpha1", "tracingpolicies")
def updated(name, meta, diff, **_):
    record("update", name, meta["generation"], [list(map(str, d[1])) for d in diff])

@kopf.on.delete("weir.dev", "v1alpha1", "tracingpolicies")
def deleted(name, **_):
    record("delete", name)
"""


def wait_for(predicate, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    instance = Cluster(tmp_path)
    instance.install()
    monkeypatch.setenv("KUBECONFIG", str(instance.kubeconfig))
    yield instance
    instance.close()


def test_kopf_create_update_delete_with_finalizers(cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "handled.jsonl"
    log.touch()
    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR.format(log=str(log)))

    def entries() -> list[list[object]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    started = time.monotonic()
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces", str(operator)], timeout=60
    ) as runner:
        cluster.create_policy("cycle")
        wait_for(lambda: ["create", "cycle", 1] in entries(), "the create handler")
        policy = wait_for(
            lambda: (p := cluster.get_policy("cycle"))["metadata"].get("finalizers") and p,
            "kopf's finalizer",
        )
        assert policy["metadata"]["finalizers"] == ["weir.dev/test-operator"]
        cluster.patch_policy(
            {"spec": {"uprobes": [{"path": "/bin/true", "symbol": "main"}]}}, name="cycle"
        )
        wait_for(lambda: any(e[0] == "update" for e in entries()), "the update handler")
        update = next(e for e in entries() if e[0] == "update")
        assert update[1:3] == ["cycle", 2] and ["spec", "uprobes"] in update[3]
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "tracingpolicies", "cycle")
        wait_for(lambda: ["delete", "cycle"] in entries(), "the delete handler")

        def gone() -> bool:
            try:
                cluster.get_policy("cycle")
            except Exception:
                return True
            return False

        wait_for(gone, "the finalizer released and the object deleted")
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert [e[0] for e in entries()] == ["create", "update", "delete"]
    assert time.monotonic() - started < 45, "no consistency-timeout stalls"
    assert "Creation is processed: 1 succeeded" in runner.output  # the log is captured
    for symptom in ("inconsisten", "Timed out", "Request attempt", "Traceback"):
        assert symptom not in runner.output, runner.output
