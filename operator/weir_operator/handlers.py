"""The kopf operator: validate, render ConfigMaps, roll NodeReports up into status.

- Handlers on TracingPolicy and AggregationRule changes render the policy's
  ConfigMap (only when its digest changed) in the operator's namespace. An
  invalid policy renders nothing: agents keep the last good version.
- One timer per object is the only status writer: it validates the object,
  rolls up the NodeReports and writes ``/status`` only when the result differs
  from what is stored (at most once per ``WEIR_ROLLUP_SECONDS``). The operator
  never writes ``spec``; kopf keeps its handler progress in annotations.

Run: ``weir operator --namespace NS`` or ``kopf run -A --standalone`` on this file.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from weir_api import GROUP, VERSION, checks, documents
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy
from weir_api.problems import Problem
from weir_api.reports import NodeReport
from weir_api.statuses import AggregationRuleStatus, TracingPolicyStatus
from weir_operator import rendering, rollup

ROLLUP_SECONDS = float(os.environ.get("WEIR_ROLLUP_SECONDS", "10"))
log = logging.getLogger("weir.operator")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="weir.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="weir.dev")
    settings.persistence.finalizer = "weir.dev/operator"
    settings.posting.level = logging.WARNING
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
    memo.last_write = {}


def _parse(body: Any) -> documents.Parsed:
    raw = {k: v for k, v in dict(body).items() if k in {"apiVersion", "kind", "metadata", "spec"}}
    raw["metadata"] = {
        k: v for k, v in dict(raw.get("metadata", {})).items() if k in {"name", "generation", "uid"}
    }
    return documents.parse_object(raw, source=f"{raw.get('kind')}/{raw['metadata'].get('name')}")


def _rules(memo: kopf.Memo) -> list[documents.Parsed]:
    items = memo.custom.list_cluster_custom_object(GROUP, VERSION, "aggregationrules")["items"]
    return [_parse(item) for item in items]


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
        _render_policy(memo, name)


def _render_policy(memo: kopf.Memo, name: str) -> None:
    body = _policy(memo, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    parsed = _parse(body)
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
    render_policy(memo, name)


@kopf.on.resume(GROUP, VERSION, "aggregationrules")
@kopf.on.create(GROUP, VERSION, "aggregationrules")
@kopf.on.update(GROUP, VERSION, "aggregationrules", field="spec")
@kopf.on.delete(GROUP, VERSION, "aggregationrules", optional=True)
def rule_changed(spec: Any, old: Any, memo: kopf.Memo, **_: Any) -> None:
    names = {spec.get("policyRef", {}).get("name")}
    if old:
        names.add((old.get("spec") or {}).get("policyRef", {}).get("name"))
    for name in filter(None, names):
        render_policy(memo, name)


def _reports(memo: kopf.Memo) -> list[NodeReport]:
    items = memo.custom.list_cluster_custom_object(GROUP, VERSION, "nodereports")["items"]
    reports = []
    for item in items:
        try:
            reports.append(NodeReport.model_validate(item))
        except ValueError:
            log.warning("ignoring a malformed NodeReport %s", item.get("metadata", {}).get("name"))
    return reports


def _write(
    patch: kopf.Patch, current: Any, desired: dict[str, Any], *, memo: kopf.Memo, key: str
) -> None:
    """Write status when it changed, and at most once per ROLLUP_SECONDS per object (kopf's
    timer may fire early after a restart or under load; the debounce is ours to keep)."""
    stored = {k: v for k, v in dict(current or {}).items()}
    if stored == desired:
        return  # nothing changed: no write
    now = time.monotonic()
    if now - memo.last_write.get(key, -ROLLUP_SECONDS) < ROLLUP_SECONDS:
        return  # debounced: the next timer run writes the newest result
    memo.last_write[key] = now
    for key in set(stored) - set(desired):
        patch.status[key] = None
    for key, value in desired.items():
        patch.status[key] = value


@kopf.timer(GROUP, VERSION, "tracingpolicies", interval=ROLLUP_SECONDS, initial_delay=0.5)
def policy_rollup(body: Any, status: Any, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    parsed = _parse(body)
    previous = TracingPolicyStatus.model_validate(dict(status)) if status else None
    result = rollup.policy_status(
        name=body["metadata"]["name"],
        generation=int(body["metadata"].get("generation", 1)),
        problems=parsed.problems,
        reports=_reports(memo),
        previous=previous,
        now=_now(),
    )
    _write(patch, status, result.to_wire(), memo=memo, key=f"policy/{body['metadata']['name']}")


@kopf.timer(GROUP, VERSION, "aggregationrules", interval=ROLLUP_SECONDS, initial_delay=0.5)
def rule_rollup(body: Any, status: Any, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    parsed = _parse(body)
    problems: list[Problem] = list(parsed.problems)
    policy_generation = None
    if isinstance(parsed.obj, AggregationRule):
        policy_name = parsed.obj.spec.policy_ref.name
        policy_body = _policy(memo, policy_name)
        if policy_body is None:
            problems.append(
                Problem(
                    "spec.policyRef.name",
                    f"TracingPolicy {policy_name!r} does not exist; create it or fix the name",
                )
            )
        else:
            policy = _parse(policy_body)
            policy_generation = int(policy_body["metadata"].get("generation", 1))
            if isinstance(policy.obj, TracingPolicy):
                problems += checks.check_rule(parsed.obj.spec, policy.obj.spec)
        others = [
            (r.obj.name, r.obj.spec) for r in _rules(memo) if isinstance(r.obj, AggregationRule)
        ]
        problems += checks.check_metric_names(others).get(parsed.obj.name, [])
    previous = AggregationRuleStatus.model_validate(dict(status)) if status else None
    result = rollup.rule_status(
        name=body["metadata"]["name"],
        policy=(body.get("spec") or {}).get("policyRef", {}).get("name", ""),
        generation=int(body["metadata"].get("generation", 1)),
        policy_generation=policy_generation,
        problems=problems,
        reports=_reports(memo),
        previous=previous,
        now=_now(),
    )
    _write(patch, status, result.to_wire(), memo=memo, key=f"rule/{body['metadata']['name']}")
