"""The operator's own metrics, served on ``--metrics-addr`` (chart operator.metricsPort).

What an admin asks of a controller: is it reconciling, is it failing, how much does it
write, and what does the API server answer it. Names start with ``weir_operator_``, a
prefix AggregationRules may not take.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RENDERS = Counter(
    "weir_operator_renders",
    "Policy renders by result: written (the ConfigMap changed), unchanged, invalid (the "
    "policy is refused; nothing rendered), error (the API refused the write).",
    ["result"],
    registry=REGISTRY,
)
PASSES = Counter(
    "weir_operator_rollup_passes",
    "Roll-up passes (NodeReports into status) by result: ok or error.",
    ["result"],
    registry=REGISTRY,
)
PASS_SECONDS = Histogram(
    "weir_operator_rollup_duration_seconds",
    "How long a roll-up pass took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
COMPUTED = Counter(
    "weir_operator_statuses_computed",
    "Statuses worked out again by kind: only objects a changed NodeReport, spec or node "
    "touched are, so a quiet cluster costs none.",
    ["kind"],
    registry=REGISTRY,
)
REPORTS_PARSED = Counter(
    "weir_operator_nodereports_parsed",
    "NodeReports parsed into the roll-up's index (each once per change).",
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "weir_operator_status_writes",
    "Status writes by kind (tracingpolicies, aggregationrules) and result (ok, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "weir_operator_api_errors",
    "API requests the operator could not make, by operation and HTTP status code.",
    ["operation", "code"],
    registry=REGISTRY,
)


def api_error(operation: str, error: BaseException) -> None:
    code = getattr(error, "status", None)
    API_ERRORS.labels(operation=operation, code=str(code) if code else "none").inc()


def serve(addr: str) -> None:
    """Serve /metrics on ``HOST:PORT`` in a daemon thread."""
    host, _, port = addr.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=REGISTRY)
