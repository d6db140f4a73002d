"""``weir operator``: the one entrypoint of the operator role.

The image, the chart and every test start the operator through this function
(``weir operator --namespace NS``): kopf, cluster-wide (pods only the agent's, in its
namespace, selected by the API server), with its liveness endpoint for the Deployment's
probe; standalone, or with ``--peering NAME`` one of several replicas of which one is
active (``peering``).
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from weir_operator import handlers, metrics
from weir_operator import peering as peering_module
from weir_operator.state import OperatorState


def run(
    *,
    namespace: str,
    liveness: str | None,
    metrics_addr: str | None = None,
    peering: str | None = None,
    peering_lifetime: int = 60,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    me, priority = peering_module.identity(), peering_module.start_priority()
    memo = OperatorState(
        namespace=namespace,
        peering_name=peering,
        peering_lifetime=peering_lifetime,
        identity=me,
        priority=priority,
    )
    if metrics_addr:
        metrics.serve(metrics_addr)
    assert handlers.policy_event  # importing handlers registers them with kopf
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            identity=me,  # type: ignore[arg-type]
            memo=memo,
            liveness_endpoint=liveness,
        )
    )
    return 0
