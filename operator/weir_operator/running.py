"""``weir operator``: run the kopf operator in this process (standalone, cluster-wide)."""

from __future__ import annotations

import asyncio
import logging

import kopf

from weir_operator import handlers


def run(*, namespace: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    memo = kopf.Memo(namespace=namespace)
    assert handlers.policy_changed  # registers the handlers with kopf's default registry
    asyncio.run(kopf.operator(clusterwide=True, standalone=True, memo=memo))
    return 0
