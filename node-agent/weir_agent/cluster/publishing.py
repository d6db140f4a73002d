"""Kubernetes mode: this node's NodeReport, published when it changed.

One NodeReport per node, named after it and owned by its Node when the Node
exists, written only by that node's agent: created once, then its status is
replaced through ``/status`` when the report differs from the last one
published: at once when what runs changed (a policy's generation or state),
otherwise (counters only) at most once per ``min_interval`` seconds; and at
least every ``heartbeat`` seconds even when nothing changed, stamped with
``heartbeatTime``, so the operator can tell a stopped agent from a quiet one.
Failures are logged and retried on the next round; the programs keep running
either way.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from kubernetes import client as k8s

from weir_agent.cluster.apierrors import ApiErrors
from weir_api import GROUP, VERSION, handoff
from weir_api.reports import NodeReport

log = logging.getLogger("weir.agent")


class NodeReportPublisher:
    def __init__(
        self,
        *,
        core: k8s.CoreV1Api,
        custom: k8s.CustomObjectsApi,
        node: str,
        min_interval: float,
        heartbeat: float = 60.0,
        errors: ApiErrors | None = None,
    ) -> None:
        self.errors = errors or ApiErrors()
        self.failures = 0
        self.core = core
        self.custom = custom
        self.node = node
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.published: NodeReport | None = None
        self.published_at = 0.0
        self.created = False
        self.writes = 0

    def _ensure(self) -> None:
        if self.created:
            return
        body: dict[str, object] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeReport",
            "metadata": {"name": handoff.nodereport_name(self.node)},
            "spec": {"nodeName": self.node},
        }
        try:
            node: Any = self.core.read_node(self.node)
            body["metadata"] = {
                "name": handoff.nodereport_name(self.node),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node,
                        "uid": node.metadata.uid,
                    }
                ],
            }
        except k8s.ApiException as error:
            if error.status != 404:
                raise
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, handoff.NODEREPORTS, body)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
        self.created = True

    def publish(self, report: NodeReport, *, last: bool = False) -> bool:
        """Write the report if it changed and the interval allows; True when written.
        ``last``: the stopping agent's final report, written whatever the interval."""
        since = time.monotonic() - self.published_at
        if report == self.published and since < self.heartbeat:
            return False
        urgent = last or states(report) != states(self.published) or since >= self.heartbeat
        if not urgent and since < self.min_interval:
            return False
        try:
            self._ensure()
            status = report.status.to_wire() if report.status else {}
            status["heartbeatTime"] = datetime.datetime.now(datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            self.custom.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                handoff.NODEREPORTS,
                handoff.nodereport_name(self.node),
                {"status": status},
            )
        except Exception as error:
            self.errors.record("publish NodeReport", error)
            self.failures += 1
            log.warning("publishing NodeReport %s failed: %s; will retry", self.node, error)
            self.created = False
            return False
        self.published, self.published_at = report, time.monotonic()
        self.writes += 1
        return True


def states(report: NodeReport | None) -> tuple[tuple[str, int, int, str], ...]:
    """What a report says runs, without its counters."""
    if report is None or report.status is None:
        return ()
    return tuple(
        (p.name, p.generation, p.running_generation, p.state) for p in report.status.policies
    )
