"""Who an aggregation key belongs to: cgroup id → namespace, pod, container, workload,
image.

Standalone, only the cgroup path is known: the container label is the
container id found in it (first 12 characters, as ``docker ps`` shows), and
namespace, pod, workload and image are empty. In a cluster the agent's pod watch
fills the rest (the Kubernetes-mode resolver plugs into the same Protocol).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

from weir_agent.identity import cgroups


@dataclasses.dataclass(frozen=True)
class Labels:
    namespace: str = ""
    pod: str = ""
    container: str = ""
    workload: str = ""
    image: str = ""  # the container's image, as its status names it


class Resolver(Protocol):
    def labels(self, cgroup_id: int) -> Labels: ...

    def forget(self, cgroup_ids: Iterable[int]) -> None:
        """These cgroups are gone and their series retired: drop what was kept of them."""
        ...


class CgroupResolver:
    """Standalone: labels from the cgroup path alone."""

    def __init__(self, index: cgroups.CgroupIndex) -> None:
        self.index = index

    def labels(self, cgroup_id: int) -> Labels:
        path = self.index.path(cgroup_id)
        if path is None:
            return Labels()
        found = cgroups.container_id(path)
        return Labels(container=found[:12] if found else "")

    def forget(self, cgroup_ids: Iterable[int]) -> None:
        self.index.forget(cgroup_ids)
