"""``weir operator``: the one entrypoint of the operator role.

The image, the chart and every test start the operator through this function
(``weir operator --namespace NS``): kopf, cluster-wide (pods only the agent's, in its
namespace, selected by the API server), standalone (one active operator), with its
liveness endpoint for the Deployment's probe.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from weir_operator import handlers, metrics


def run(*, namespace: str, liveness: str | None, metrics_addr: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    memo = kopf.Memo(namespace=namespace)
    if metrics_addr:
        metrics.serve(metrics_addr)
    assert handlers.policy_event  # importing handlers registers them with kopf
    asyncio.run(
        kopf.operator(clusterwide=True, standalone=True, memo=memo, liveness_endpoint=liveness)
    )
    return 0
