"""The kopf operator: validate, render ConfigMaps, roll NodeReports up into status.

- Handlers on TracingPolicy and AggregationRule changes render the policy's
  ConfigMap (only when its digest changed) in the operator's namespace. An
  invalid policy renders nothing: agents keep the last good version.
- One roll-up loop (``rolling.py``, a thread started at start-up) is the only
  status writer. It is not a per-object kopf timer on purpose: kopf puts a
  finalizer on every object that has a timer, so deleting a policy (or the CRDs
  after ``helm uninstall``) would hang whenever the operator is not running.
  Nothing here needs a finalizer, and none is added.
- When the operator itself cannot do its part (its namespace is missing, RBAC
  refuses a write), it says so in the policy's status, not only in its log.

The operator never writes ``spec``; kopf keeps its handler progress in
annotations. Run it with ``weir operator --namespace NS``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from weir_api import GROUP, VERSION, documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
from weir_operator import rendering, rolling

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
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="weir.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="weir.dev")
    settings.persistence.finalizer = "weir.dev/operator"  # only to remove it from old objects
    settings.posting.level = logging.WARNING
    settings.posting.loggers = True  # handler failures become Events on the object
    settings.watching.server_timeout = 60
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = k8s.ApiClient()
    else:
        api = k8s_config.new_client_from_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    memo.core = k8s.CoreV1Api(api)
    memo.custom = k8s.CustomObjectsApi(api)
    memo.namespace = memo.get("namespace") or os.environ.get("WEIR_NAMESPACE", "weir-system")
    memo.render_lock = threading.Lock()
    memo.render_errors = {}
    memo.rollup = rolling.RollUp(
        custom=memo.custom,
        interval=float(os.environ.get("WEIR_ROLLUP_SECONDS", "10")),
        render_errors=memo.render_errors,
        rerender=lambda name: render_policy(memo, name),
        rendered=lambda: _rendered(memo),
        stale_after=float(os.environ.get("WEIR_STALE_SECONDS", "180")),
        counters_interval=float(os.environ.get("WEIR_STATUS_COUNTERS_SECONDS", "60")),
    )
    memo.rollup.start()


def _rendered(memo: kopf.Memo) -> set[str]:
    """Policies whose ConfigMap exists in the operator's namespace (one LIST)."""
    items = memo.core.list_namespaced_config_map(
        memo.namespace, label_selector=rendering.LABEL
    ).items
    return {(item.metadata.labels or {}).get(rendering.LABEL, "") for item in items}


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("rollup") is not None:
        memo.rollup.stop()


def _rules(memo: kopf.Memo) -> list[documents.Parsed]:
    items = memo.custom.list_cluster_custom_object(GROUP, VERSION, "aggregationrules")["items"]
    return [rolling.parse(item) for item in items]


def _policy(memo: kopf.Memo, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = memo.custom.get_cluster_custom_object(
            GROUP, VERSION, "tracingpolicies", name
        )
        return found
    except k8s.ApiException as error:
        if error.status == 404:
            return None
        raise


def render_policy(memo: kopf.Memo, name: str) -> None:
    """Write the policy's ConfigMap when it is valid and something changed.

    Policy and rule handlers may render the same policy at once (kopf runs sync
    handlers in threads): one lock serialises them, so the last render wins with
    everything it read."""
    with memo.render_lock:
        try:
            _render_policy(memo, name)
        except k8s.ApiException as error:
            memo.render_errors[name] = rolling.describe_api_error(
                error, doing=f"write ConfigMap weir-policy-{name} in namespace {memo.namespace}"
            )
            raise
        memo.render_errors.pop(name, None)


def _render_policy(memo: kopf.Memo, name: str) -> None:
    body = _policy(memo, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    parsed = rolling.parse(body)
    if not parsed.ok or not isinstance(parsed.obj, TracingPolicy):
        log.warning("policy %s is invalid; nothing rendered", name)
        return
    rules = [
        r.obj
        for r in documents.cross_check([parsed, *_rules(memo)])
        if isinstance(r.obj, AggregationRule) and r.ok and r.obj.spec.policy_ref.name == name
    ]
    desired = rendering.render(parsed.obj, rules, namespace=memo.namespace)
    cm_name = desired["metadata"]["name"]
    try:
        current = memo.core.read_namespaced_config_map(cm_name, memo.namespace).to_dict()
        current = {
            "metadata": {
                "annotations": current["metadata"]["annotations"],
                "labels": current["metadata"]["labels"],
            }
        }
    except k8s.ApiException as error:
        if error.status != 404:
            raise
        current = None
    if rendering.unchanged(current, desired):
        return
    if current is None:
        try:
            memo.core.create_namespaced_config_map(memo.namespace, desired)
        except k8s.ApiException as error:
            if error.status != 409:  # created meanwhile (another operator replica): replace it
                raise
            memo.core.replace_namespaced_config_map(cm_name, memo.namespace, desired)
    else:
        memo.core.replace_namespaced_config_map(cm_name, memo.namespace, desired)
    log.info(
        "rendered %s/%s for generation %s",
        memo.namespace,
        cm_name,
        body["metadata"].get("generation"),
    )


@kopf.on.resume(GROUP, VERSION, "tracingpolicies")
@kopf.on.create(GROUP, VERSION, "tracingpolicies")
@kopf.on.update(GROUP, VERSION, "tracingpolicies", field="spec")
def policy_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    _render_or_retry(memo, name)


def _render_or_retry(memo: kopf.Memo, name: str) -> None:
    """Render; when the API refuses, fail the handler with words an admin can act on (kopf
    logs them and posts them as an Event on the object) and retry soon."""
    try:
        render_policy(memo, name)
    except k8s.ApiException:
        raise kopf.TemporaryError(memo.render_errors.get(name, "render failed"), delay=5) from None


@kopf.on.resume(GROUP, VERSION, "aggregationrules")
@kopf.on.create(GROUP, VERSION, "aggregationrules")
@kopf.on.update(GROUP, VERSION, "aggregationrules", field="spec")
@kopf.on.delete(GROUP, VERSION, "aggregationrules", optional=True)
def rule_changed(spec: Any, old: Any, memo: kopf.Memo, **_: Any) -> None:
    names = {spec.get("policyRef", {}).get("name")}
    if old:
        names.add((old.get("spec") or {}).get("policyRef", {}).get("name"))
    for name in filter(None, names):
        _render_or_retry(memo, name)
