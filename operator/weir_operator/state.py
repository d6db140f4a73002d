"""What the operator keeps between handler calls, typed: one object kopf hands every handler.

kopf passes it to each handler as ``memo`` (a shallow copy per watched object: the fields
below are shared containers and clients, so every copy sees the same state). The command
line fills the first fields; the start-up handler the rest.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from weir_operator import caching

if TYPE_CHECKING:
    from weir_operator import peering, publishing, requesting


@dataclasses.dataclass(kw_only=True)
class OperatorState:
    """The operator's state; one per process."""

    # From the command line (running.py).
    namespace: str
    peering_name: str | None = None
    peering_lifetime: int = 60
    identity: str = ""
    priority: int = 0
    # The operator's requests and its API clients (api.core, api.custom), made at start-up.
    api: requesting.Api = dataclasses.field(default=None)  # type: ignore[assignment]
    # Renders: one at a time; what the API refused, by policy; what was last said of it.
    render_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    render_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    said: dict[tuple[Any, str, str], str] = dataclasses.field(default_factory=dict)
    # ("policy" | "rule", name) -> (uid, generation) rendered
    handled: dict[tuple[str, str], tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    rule_targets: dict[str, str | None] = dataclasses.field(default_factory=dict)
    # The nodes that should run an agent: those its DaemonSet placed a pod on (pods picked
    # by WEIR_AGENT_SELECTOR, which the chart sets), with the Nodes' labels.
    knows_agents: bool = False
    agent_pods: dict[str, str] = dataclasses.field(default_factory=dict)  # pod -> node
    node_labels: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # Policies whose ConfigMap exists, from the ConfigMap watch once it has listed.
    rendered_names: set[str] = dataclasses.field(default_factory=set)
    configmaps_synced: threading.Event = dataclasses.field(default_factory=threading.Event)
    cache: caching.Cache = dataclasses.field(default_factory=caching.Cache)
    stop_watches: threading.Event = dataclasses.field(default_factory=threading.Event)
    peering: peering.Peering | None = None
    rollup: publishing.RollUp | None = None
