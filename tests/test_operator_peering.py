"""Two operator replicas (chart `operator.replicas: 2`) on kubesim: kopf's peering makes
exactly one active. A standby writes nothing; when the active replica dies it takes over
within the peering lifetime, when it stops cleanly at once; status writes never come from
two replicas at a time. Each replica runs as the chart runs it, with its own token, so that
kubesim's request log says who wrote what, and when."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import roles
from conftest import free_port, wait_for
from kubesim.server import kubeconfig
from test_kubesim import GROUP, VERSION, Cluster
from test_operator_rollup import report

LIFETIME = 5  # operator.peeringLifetimeSeconds
INTERVAL = 0.5  # operator.rollupSeconds


def degraded(cluster: Cluster) -> str | None:
    conditions = (cluster.get_policy("p").get("status") or {}).get("conditions", [])
    return next((c["status"] for c in conditions if c["type"] == "Degraded"), None)


def status_writers(cluster: Cluster) -> list[tuple[float, str]]:
    """(time, user) of every write of a policy's or rule's status, in order."""
    return [
        (at, user)
        for at, user, verb, resource, _ in list(cluster.emulator.writes)
        if resource in ("tracingpolicies/status", "aggregationrules/status")
    ]


def peers(cluster: Cluster) -> dict[str, Any]:
    peering = cluster.custom.get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "weir"
    )
    return dict(peering.get("status") or {})


def runs(writers: list[tuple[float, str]]) -> list[str]:
    """The writers in order, each run of writes by one replica once."""
    out: list[str] = []
    for _, user in writers:
        if not out or out[-1] != user:
            out.append(user)
    return out


def test_two_replicas_one_active_and_a_bounded_takeover(cluster: Cluster, tmp_path: Path) -> None:
    cluster.install()
    for name in ("n1", "n2", "n3"):
        body = report(name, 1, failing=False)
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodereports", body)
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", name, {"status": body["status"]}
        )
    cluster.create_policy("p")

    def fail(node: str, failing: bool) -> None:
        cluster.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodereports", node, {"status": report(node, 2, failing)["status"]}
        )

    def replica(token: str) -> tuple[subprocess.Popen[bytes], list[Any]]:
        # Pods have a network each; on one host each replica needs its own ports.
        docs = roles.render(
            {
                "operator": {
                    "replicas": 2,
                    "peeringLifetimeSeconds": LIFETIME,
                    "rollupSeconds": INTERVAL,
                    "healthPort": free_port(),
                }
            }
        )
        config = tmp_path / f"kubeconfig-{token}"
        config.write_text(kubeconfig(cluster.port, token=token))
        process = roles.start(
            docs, "operator", fields={}, env={"KUBECONFIG": str(config)}, log=tmp_path / token
        )
        return process, docs

    a, _ = replica("replica-a")
    b = a2 = None
    try:
        wait_for(lambda: degraded(cluster) == "False", "the first replica rolled p up")
        b, _ = replica("replica-b")  # started later: a standby
        wait_for(lambda: len(peers(cluster)) == 2, "both replicas in the peering")
        wait_for(lambda: "is a standby" in (tmp_path / "replica-b").read_text(), "b a standby")
        fail("n2", True)
        wait_for(lambda: degraded(cluster) == "True", "Degraded from the active replica")
        fail("n2", False)
        wait_for(lambda: degraded(cluster) == "False", "recovered, from the active replica")
        assert runs(status_writers(cluster)) == ["replica-a"]

        a.send_signal(signal.SIGKILL)  # dies without a word: its peering entry stays
        a.wait(timeout=10)
        killed = time.monotonic()
        fail("n3", True)
        wait_for(
            lambda: degraded(cluster) == "True",
            "the standby took over",
            timeout=LIFETIME + 30,
        )
        took_over = time.monotonic() - killed
        print(f"took over {took_over:.1f} s after the active replica was killed")
        assert took_over <= LIFETIME + 4 * INTERVAL + 2, took_over
        assert runs(status_writers(cluster)) == ["replica-a", "replica-b"]

        a2, _ = replica("replica-a2")  # a new replica: a standby behind b
        wait_for(
            lambda: "is a standby" in (tmp_path / "replica-a2").read_text(),
            "the new replica a standby",
        )
        b.send_signal(signal.SIGTERM)  # a clean stop: it leaves the peering
        assert b.wait(timeout=60) == 0, (tmp_path / "replica-b").read_text()
        stopped = time.monotonic()
        fail("n3", False)
        wait_for(lambda: degraded(cluster) == "False", "the new replica took over")
        assert time.monotonic() - stopped <= 4 * INTERVAL + 3  # not a lifetime: at once
        writers = status_writers(cluster)
        assert runs(writers) == ["replica-a", "replica-b", "replica-a2"], writers
    finally:
        for process in (a, b, a2):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    # Every replica said which role it had.
    assert "is active" in (tmp_path / "replica-a").read_text()
    log_b = (tmp_path / "replica-b").read_text()
    assert log_b.index("is a standby") < log_b.index("is active")
