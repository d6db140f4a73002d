"""The kopf operator: validate, render ConfigMaps, roll NodeReports up into status.

- Handlers on TracingPolicy and AggregationRule changes render the policy's
  ConfigMap (only when its digest changed) in the operator's namespace. An
  invalid policy renders nothing: agents keep the last good version.
- One roll-up loop (``publishing.py``, a thread started at start-up) is the only
  status writer. It is not a per-object kopf timer on purpose: kopf puts a
  finalizer on every object that has a timer, so deleting a policy (or the CRDs
  after ``helm uninstall``) would hang whenever the operator is not running.
  Nothing here needs a finalizer, and none is added.
- When the operator itself cannot do its part (its namespace is missing, RBAC
  refuses a write), it says so in the policy's status, not only in its log.

The operator never writes ``spec`` and keeps nothing on the objects: its handlers
watch events, so kopf stores no progress or diff base in annotations (a copy of a
large spec there would pass the API's 256 KiB annotation limit). Run it with
``weir operator --namespace NS``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import kopf
from kubernetes import client as k8s

from weir_api import GROUP, VERSION, documents, handoff
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
from weir_operator import metrics, peering, publishing, rendering, requesting, summaries, watching
from weir_operator.state import OperatorState

log = logging.getLogger("weir.operator")


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """In a pod: the service account, at the address the kubelet puts in
    KUBERNETES_SERVICE_HOST/PORT (as client-go's in-cluster config does; kopf alone would
    use the DNS name kubernetes.default.svc, which a pod without cluster DNS cannot
    resolve). Elsewhere: the kubeconfig."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return kopf.login_with_kubeconfig(**kwargs)
    info = kopf.login_with_service_account(**kwargs)
    if info is None:
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    address = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{address}:{port}")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: OperatorState, **_: Any) -> None:
    logging.getLogger("kopf.objects").addFilter(_quiet_event_handlers)
    settings.posting.level = logging.WARNING
    settings.posting.loggers = True  # handler failures become Events on the object
    settings.watching.server_timeout = 60
    memo.namespace = memo.namespace or os.environ.get("WEIR_NAMESPACE", "weir-system")
    memo.api = requesting.Api.connect(namespace=memo.namespace)
    agent_labels = os.environ.get("WEIR_AGENT_SELECTOR", "")
    memo.knows_agents = bool(agent_labels)
    _watch_namespace(memo, agent_labels)
    active: Any = lambda: True  # noqa: E731 (standalone: the only operator)
    if memo.peering_name:
        settings.peering.lifetime = int(memo.peering_lifetime)
        memo.peering = peering.Peering(
            memo.api.custom, name=memo.peering_name, me=memo.identity, priority=memo.priority
        )
        memo.peering.ensure()  # before kopf's peering starts (after the startup handlers)
        threading.Thread(
            target=memo.peering.follow,
            args=(memo.stop_watches,),
            name="weir-peering",
            daemon=True,
        ).start()
        active = memo.peering.active
    rollup = memo.rollup = publishing.RollUp(
        custom=memo.api.custom,
        interval=float(os.environ.get("WEIR_ROLLUP_SECONDS", "10")),
        render_errors=memo.render_errors,
        rerender=lambda name: render_policy(memo, name),
        rendered=lambda: _rendered(memo),
        handled=lambda name: ("policy", name) in memo.handled,
        expected=lambda: _expected(memo),
        cache=memo.cache,
        stale_after=float(os.environ.get("WEIR_STALE_SECONDS", "180")),
        counters_interval=float(os.environ.get("WEIR_STATUS_COUNTERS_SECONDS", "60")),
        active=active,
    )
    # NodeReports go straight into the roll-up's index from a watch of the operator's own
    # (one per node, rewritten every heartbeat: kopf's per-event handling and a copy of
    # each report would cost more than the roll-up itself at thousands of nodes).
    threading.Thread(
        target=watching.follow,
        args=(memo.api.custom.list_cluster_custom_object, GROUP, VERSION, handoff.NODEREPORTS),
        kwargs={
            "on_list": rollup.reports_listed,
            "on_event": rollup.report_changed,
            "stop": memo.stop_watches,
            "what": "NodeReports",
        },
        name="weir-nodereports",
        daemon=True,
    ).start()
    rollup.start()


def _expected(memo: OperatorState) -> summaries.Expected | None:
    if not memo.knows_agents:
        return None  # not told which pods are agents: count the reports only
    nodes = set(memo.agent_pods.values()) - {""}
    return summaries.Expected({node: dict(memo.node_labels.get(node, {})) for node in nodes})


def _quiet_event_handlers(record: logging.LogRecord) -> bool:
    """kopf logs every watch event's handler run; status writes alone would make one line
    per object per roll-up pass. What the handlers do is logged by them."""
    return not (
        record.levelno <= logging.INFO
        and record.getMessage()
        in {f"Handler '{n}' succeeded." for n in ("policy_event", "rule_event")}
    )


def _watch_namespace(memo: OperatorState, agent_labels: str) -> None:
    """Threads that follow the policy ConfigMaps and, when the chart says which pods are
    the agent's, those pods, in the operator's namespace."""

    def configmaps_listed(items: Iterable[Any]) -> None:
        memo.rendered_names = {_policy_label(item) for item in items}
        memo.configmaps_synced.set()

    def configmap_changed(kind: str, item: Any) -> None:
        if kind == "DELETED":
            memo.rendered_names.discard(_policy_label(item))
        else:
            memo.rendered_names.add(_policy_label(item))

    def pods_listed(items: Iterable[Any]) -> None:
        memo.agent_pods = {item.metadata.name: _node_of(memo, item) for item in items}

    def pod_changed(kind: str, item: Any) -> None:
        if kind == "DELETED":
            memo.agent_pods.pop(item.metadata.name, None)
        else:
            memo.agent_pods[item.metadata.name] = _node_of(memo, item)

    follows: list[tuple[str, Any, str, Any, Any]] = [
        (
            "policy ConfigMaps",
            memo.api.core.list_namespaced_config_map,
            handoff.POLICY_LABEL,
            configmaps_listed,
            configmap_changed,
        ),
    ]
    if agent_labels:
        follows.append(
            (
                "agent pods",
                memo.api.core.list_namespaced_pod,
                agent_labels,
                pods_listed,
                pod_changed,
            )
        )
    for what, call, labels, listed, changed in follows:
        threading.Thread(
            target=watching.follow,
            args=(call, memo.namespace),
            kwargs={
                "label_selector": labels,
                "on_list": listed,
                "on_event": changed,
                "stop": memo.stop_watches,
                "what": what,
            },
            name=f"weir-{what.replace(' ', '-').lower()}",
            daemon=True,
        ).start()


def _policy_label(item: Any) -> str:
    return str((item.metadata.labels or {}).get(handoff.POLICY_LABEL, ""))


def _node_of(memo: OperatorState, pod: Any) -> str:
    """The node of an agent pod: bound, or pinned by the DaemonSet before binding."""
    spec: dict[str, Any] = memo.api.core.api_client.sanitize_for_serialization(pod.spec)
    return str(spec.get("nodeName") or pinned_node(spec))


def _rendered(memo: OperatorState) -> set[str]:
    """Policies whose ConfigMap exists in the operator's namespace: from the watch (one
    LIST, then events); until the first list, a LIST."""
    if memo.configmaps_synced.is_set():
        return set(memo.rendered_names)
    return {_policy_label(item) for item in memo.api.policy_configmaps()}


@kopf.on.cleanup()
def cleanup(memo: OperatorState, **_: Any) -> None:
    memo.stop_watches.set()
    if memo.rollup is not None:
        memo.rollup.stop()


def _rules(memo: OperatorState) -> list[documents.Parsed]:
    """Every AggregationRule: from the watch cache once the roll-up has seeded it (a render
    per policy edit costs no LIST), before that from a LIST (so that the first renders
    after a start see every rule, not only those whose watch events came first)."""
    if memo.cache.is_seeded("aggregationrules"):
        items = memo.cache.items("aggregationrules")
    else:
        items = memo.api.rules()
    return [publishing.parse(item) for item in items]


def render_policy(memo: OperatorState, name: str, logger: Any = log) -> None:
    """Write the policy's ConfigMap when it is valid and something changed.

    Policy and rule handlers may render the same policy at once (kopf runs sync
    handlers in threads): one lock serialises them, so the last render wins with
    everything it read."""
    with memo.render_lock:
        try:
            _render_policy(memo, name, logger)
        except k8s.ApiException as error:
            metrics.RENDERS.labels(result="error").inc()
            metrics.api_error("render", error)
            memo.render_errors[name] = publishing.describe_api_error(
                error, doing=f"write ConfigMap weir-policy-{name} in namespace {memo.namespace}"
            )
            raise
        memo.render_errors.pop(name, None)


def _render_policy(memo: OperatorState, name: str, logger: Any) -> None:
    body = memo.api.policy(name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    parsed = publishing.parse(body)
    if not parsed.ok or not isinstance(parsed.obj, TracingPolicy):
        logger.warning("policy %s is invalid; nothing rendered", name)
        metrics.RENDERS.labels(result="invalid").inc()
        return
    rules = [
        r.obj
        for r in documents.cross_check([parsed, *_rules(memo)])
        if isinstance(r.obj, AggregationRule) and r.ok and r.obj.spec.policy_ref.name == name
    ]
    desired = rendering.render(parsed.obj, rules, namespace=memo.namespace)
    cm_name = desired["metadata"]["name"]
    current = memo.api.configmap_meta(cm_name)
    if rendering.unchanged(current, desired):
        metrics.RENDERS.labels(result="unchanged").inc()
        return
    memo.api.write_configmap(desired, exists=current is not None)
    metrics.RENDERS.labels(result="written").inc()
    logger.info(
        "rendered %s/%s for generation %s",
        memo.namespace,
        cm_name,
        body["metadata"].get("generation"),
    )


# Annotations and the finalizer that kopf's change handlers kept on every object before
# the operator moved to watch-event handlers. The diff base held a copy of the whole spec,
# so a large policy pushed the object past the API's 256 KiB annotation limit.
LEGACY_ANNOTATIONS = (
    "weir.dev/last-handled-configuration",
    "weir.dev/policy_changed",
    "weir.dev/rule_changed",
)
LEGACY_FINALIZER = "weir.dev/operator"


@kopf.on.event(GROUP, VERSION, "tracingpolicies")
def policy_event(
    type: str | None, body: Any, name: str, memo: OperatorState, logger: Any, **_: Any
) -> None:
    """Render a policy when its spec is new to this operator (its generation changed, or
    the operator just started). Watch events, not kopf's change handlers: those keep their
    progress and a copy of the spec in annotations, which a large policy cannot afford.
    What was rendered is known from the ConfigMap's digest; the roll-up pass retries a
    render that failed and restores a ConfigMap deleted by hand."""
    _remember(memo, "tracingpolicies", type, body)
    if type == "DELETED":
        memo.handled.pop(("policy", name), None)
        return  # the ConfigMap goes with it (ownerReference)
    _drop_legacy(memo, "tracingpolicies", body)
    if body["metadata"].get("deletionTimestamp"):
        return
    seen = (body["metadata"].get("uid"), body["metadata"].get("generation"))
    if memo.handled.get(("policy", name)) == seen:
        return  # a status write or a metadata change: nothing to render
    if _render_or_say(memo, name, body, logger):
        memo.handled[("policy", name)] = seen


@kopf.on.event(GROUP, VERSION, "aggregationrules")
def rule_event(
    type: str | None, body: Any, name: str, memo: OperatorState, logger: Any, **_: Any
) -> None:
    """Render the policy a rule folds (and the one it folded before, when policyRef
    changed, or when the rule is deleted)."""
    _remember(memo, "aggregationrules", type, body)
    key = ("rule", name)
    before = memo.rule_targets.get(name)
    if type == "DELETED":
        memo.handled.pop(key, None)
        memo.rule_targets.pop(name, None)
        if before:
            _render_or_say(memo, before, body, logger)
        return
    _drop_legacy(memo, "aggregationrules", body)
    seen = (body["metadata"].get("uid"), body["metadata"].get("generation"))
    if memo.handled.get(key) == seen or body["metadata"].get("deletionTimestamp"):
        return
    target = ((body.get("spec") or {}).get("policyRef") or {}).get("name")
    memo.rule_targets[name] = target
    done = all([_render_or_say(memo, n, body, logger) for n in {target, before} if n])
    if done:
        memo.handled[key] = seen


def _render_or_say(memo: OperatorState, name: str, body: Any, logger: Any) -> bool:
    """Render; when the API refuses, say so in words an admin can act on, once per distinct
    failure: in the log and as a Warning Event on the object (what `kubectl describe` and
    `kubectl get events` show). The roll-up shows it in status and retries every pass."""
    said = (body.get("kind"), body["metadata"]["name"], name)
    try:
        render_policy(memo, name, logger)
    except k8s.ApiException:
        message = memo.render_errors.get(name, "render failed")
        if memo.said.get(said) != message:
            memo.said[said] = message
            logger.warning(message)
            kopf.warn(body, reason="OperatorError", message=message)
        return False
    memo.said.pop(said, None)
    return True


def _drop_legacy(memo: OperatorState, plural: str, body: Any) -> None:
    """Remove what earlier operators kept on the object (kopf's annotations, the old
    finalizer), with one merge patch; nothing when the object is clean."""
    meta = body["metadata"]
    annotations = [k for k in LEGACY_ANNOTATIONS if k in (meta.get("annotations") or {})]
    finalizers = list(meta.get("finalizers") or [])
    if not annotations and LEGACY_FINALIZER not in finalizers:
        return
    patch: dict[str, Any] = {}
    if annotations:
        patch["annotations"] = {k: None for k in annotations}
    if LEGACY_FINALIZER in finalizers:
        patch["finalizers"] = [f for f in finalizers if f != LEGACY_FINALIZER]
        patch["resourceVersion"] = meta.get("resourceVersion")  # a list: no lost update
    try:
        memo.api.patch_metadata(plural, meta["name"], patch)
    except k8s.ApiException as error:  # the next event tries again
        metrics.api_error("drop_legacy_metadata", error)
        log.info("%s/%s: could not drop legacy metadata: %s", plural, meta["name"], error.reason)


def _remember(memo: OperatorState, kind: str, type: str | None, body: Any) -> None:
    """Keep the roll-up's cache current with what a watch said."""
    if type == "DELETED":
        memo.cache.remove(kind, body["metadata"]["name"])
    else:
        memo.cache.put(kind, body)


@kopf.on.event("", "v1", "nodes")
def node_event(type: str | None, name: str, labels: Any, memo: OperatorState, **_: Any) -> None:
    """Node labels, for the policies' nodeSelectors (a watch, never a poll)."""
    if type == "DELETED":
        memo.node_labels.pop(name, None)
    else:
        memo.node_labels[name] = dict(labels)


def pinned_node(spec: Any) -> str:
    """The node of a DaemonSet pod not yet bound: its required node affinity on
    metadata.name."""
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                values = field.get("values") or []
                if len(values) == 1:
                    return str(values[0])
    return ""
