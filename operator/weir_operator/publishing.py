"""The roll-up loop: NodeReports into TracingPolicy and AggregationRule status.

One thread, one pass per interval: it reads policies and rules from a cache kopf's watch
events keep current (``caching``: one LIST of each kind seeds it, none after) and
NodeReports from an index its own watch keeps (``summaries.ReportIndex``: each report parsed
once per change), works out with the pure ``summaries`` module the status of each object a
change touched, and writes ``/status`` only for objects whose status changed, so each
object sees at most one status write per interval. With several replicas only the active
one makes passes (``peering``).

It replaces per-object kopf timers, which would make kopf put a finalizer on
every policy and rule: with the operator stopped or uninstalled, deleting a
policy or the CRDs would then hang.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client as k8s

from weir_api import GROUP, VERSION, documents
from weir_api.aggregations import AggregationRule
from weir_api.meta import LabelSelector
from weir_api.policies import TracingPolicy
from weir_api.problems import Problem
from weir_api.reports import NodeReport
from weir_api.statuses import AggregationRuleStatus, TracingPolicyStatus
from weir_operator import caching, metrics, summaries

log = logging.getLogger("weir.operator")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(body: Any) -> documents.Parsed:
    """A stored object as the API models see it (status and server fields dropped)."""
    raw = {k: v for k, v in dict(body).items() if k in {"apiVersion", "kind", "metadata", "spec"}}
    raw["metadata"] = {
        k: v for k, v in dict(raw.get("metadata", {})).items() if k in {"name", "generation", "uid"}
    }
    return documents.parse_object(raw, source=f"{raw.get('kind')}/{raw['metadata'].get('name')}")


def node_selector(parsed: documents.Parsed) -> LabelSelector | None:
    if isinstance(parsed.obj, TracingPolicy):
        return parsed.obj.spec.node_selector
    return None


def describe_api_error(error: k8s.ApiException, *, doing: str) -> str:
    """What the operator could not do, in words an admin can act on."""
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    hint = {
        401: "the operator's credentials were refused",
        403: "the operator's RBAC does not allow it; check the chart's Role and ClusterRole",
        404: "it does not exist; create the namespace or run the operator with --namespace",
    }.get(int(error.status or 0), "the operator retries")
    return f"the operator cannot {doing}: {message} (HTTP {error.status}); {hint}"


RETRY_FIRST = 0.5  # seconds before the first retry of a failed roll-up pass
STANDBY_CHECK = 1.0  # seconds between a standby's looks at whether it became active


class RollUp:
    """The only status writer; runs in its own thread until ``stop``."""

    def __init__(
        self,
        *,
        custom: Any,
        interval: float,
        render_errors: dict[str, str],
        rerender: Callable[[str], None],
        rendered: Callable[[], set[str]],
        handled: Callable[[str], bool] = lambda name: True,
        expected: Callable[[], summaries.Expected | None] = lambda: None,
        cache: caching.Cache | None = None,
        stale_after: float | None = None,
        counters_interval: float = 60.0,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        # Whether this replica is the active one (peering); a standby makes no pass.
        self.active = active
        self.standby = True
        self.stale_after = stale_after
        # A status whose only change is counters (savings, series) is written at most once
        # per counters_interval; conditions and node counts are written at once.
        self.counters_interval = counters_interval
        self.counters_written: dict[tuple[str, str], float] = {}
        self.custom = custom
        self.rendered = rendered  # names of the policies whose ConfigMap exists
        self.handled = handled  # whether the handlers rendered this policy already
        self.expected = expected  # the nodes that should run an agent (None: unknown)
        self.cache = cache  # kept current by watches; None: LIST each kind every pass
        self.interval = interval
        self.render_errors = render_errors
        self.rerender = rerender
        self.unwritten = 0  # status writes the API refused in the current pass
        # The NodeReports, parsed once per change, from a watch (``reports_listed``,
        # ``report_changed``), which also runs on a standby: a takeover starts warm.
        self.lock = threading.Lock()
        self.index = summaries.ReportIndex()
        self.report_versions: dict[str, str | None] = {}  # report -> resourceVersion parsed
        self.reports_synced = False
        self.touched: set[str] = set()  # policies changed reports touched since the last pass
        self.nodes_changed = False  # reports came or went since the last pass
        self.seen: Any = None  # specs, stale nodes, expected nodes, errors of the last pass
        self.decided: dict[tuple[str, str], dict[str, Any]] = {}  # the status last worked out
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="weir-rollup", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            if not self.active():
                self.standby = True
                self.stopping.wait(min(self.interval, STANDBY_CHECK))
                continue
            if self.standby:  # (again) the active replica: start from what is there now
                self.standby = False
                self._forget()
            started = time.monotonic()
            try:
                unwritten = self.once()
                if unwritten:  # retried soon, like a pass that failed
                    failures += 1
                    metrics.PASSES.labels(result="error").inc()
                    log.warning(
                        "roll-up pass: %d status writes failed; next try in %gs",
                        unwritten,
                        self.delay(failures),
                    )
                else:
                    failures = 0
                    metrics.PASSES.labels(result="ok").inc()
            except Exception as error:  # retried soon; said in one line meanwhile
                failures += 1
                metrics.PASSES.labels(result="error").inc()
                if isinstance(error, k8s.ApiException):
                    metrics.api_error("rollup", error)
                    words = describe_api_error(error, doing="roll NodeReports up into status")
                else:
                    words = str(error)
                log.warning("roll-up pass failed: %s; next try in %gs", words, self.delay(failures))
            metrics.PASS_SECONDS.observe(time.monotonic() - started)
            self.stopping.wait(self.delay(failures))

    def _forget(self) -> None:
        """Drop what a standby may have missed: the cache (kopf's watches were paused), and
        what was decided (another replica wrote since); the next pass lists and works out
        everything once."""
        if self.cache is not None:
            self.cache.reset()
        self.seen = None
        self.decided.clear()
        self.counters_written.clear()

    def delay(self, failures: int) -> float:
        """After a failed pass, retry sooner than a whole interval: RETRY_FIRST seconds,
        doubling, never more than the interval (a burst of API errors costs seconds)."""
        if failures == 0:
            return self.interval
        return min(self.interval, RETRY_FIRST * 2.0 ** (failures - 1))

    def _list(self, plural: str) -> list[dict[str, Any]]:
        """The objects of a kind: from the watch cache (one LIST to seed it), or a LIST."""
        if self.cache is not None and self.cache.is_seeded(plural):
            return self.cache.items(plural)
        items: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
            GROUP, VERSION, plural
        )["items"]
        if self.cache is not None:
            self.cache.seed(plural, items)
            return self.cache.items(plural)
        return items

    def once(self) -> int:
        """One pass; how many status writes the API refused (they are retried soon).

        Only the objects something touched are worked out again: the policies whose entries
        a changed NodeReport changed (and their rules), all of them when a spec, the set of
        nodes, the stale nodes, the expected nodes or an operator error changed, and any whose
        stored status is not what this operator last decided (a write that failed or was
        held back, or a status changed by someone else)."""
        self.unwritten = 0
        for name in list(self.render_errors):  # retry what the operator could not write
            with contextlib.suppress(k8s.ApiException):  # recorded in render_errors
                self.rerender(name)
        policies = self._list("tracingpolicies")
        self._restore(policies)
        rules = self._list("aggregationrules")
        with self.lock:
            if not self.reports_synced:
                return 0  # no status before the NodeReports are known
            return self._statuses(policies, rules)

    def _statuses(self, policies: list[dict[str, Any]], rules: list[dict[str, Any]]) -> int:
        touched, nodes_changed = self.touched, self.nodes_changed
        self.touched, self.nodes_changed = set(), False
        stamp = now()
        expected = self.expected()
        stale = self.index.stale_names(now=stamp, stale_after=self.stale_after)
        specs = {
            (body["kind"], body["metadata"]["name"]): (
                body["metadata"].get("uid"),
                body["metadata"].get("generation"),
                bool(body["metadata"].get("deletionTimestamp")),
            )
            for body in [*policies, *rules]
        }
        seen = (specs, stale, expected, dict(self.render_errors))
        everything = nodes_changed or seen != self.seen
        self.seen = seen
        by_name = {p["metadata"]["name"]: p for p in policies}
        parsed_rules = [parse(r) for r in rules]
        for body in policies:
            name = body["metadata"]["name"]
            stored = body.get("status") or {}
            key = ("tracingpolicies", name)
            if body["metadata"].get("deletionTimestamp"):
                continue
            if not everything and name not in touched and stored == self.decided.get(key):
                continue
            metrics.COMPUTED.labels(kind="tracingpolicies").inc()
            previous = TracingPolicyStatus.model_validate(stored) if stored else None
            parsed = parse(body)
            result = summaries.policy_status(
                name=name,
                generation=int(body["metadata"].get("generation", 1)),
                problems=parsed.problems,
                expected=expected,
                selector=node_selector(parsed),
                reports=self.index,
                previous=previous,
                now=stamp,
                operator_error=self.render_errors.get(name, ""),
                stale_after=self.stale_after,
            )
            self._write("tracingpolicies", name, stored, result.to_wire())
        for body, parsed in zip(rules, parsed_rules, strict=True):
            name = body["metadata"]["name"]
            stored = body.get("status") or {}
            key = ("aggregationrules", name)
            policy = ((body.get("spec") or {}).get("policyRef") or {}).get("name")
            if body["metadata"].get("deletionTimestamp"):
                continue
            if not everything and policy not in touched and stored == self.decided.get(key):
                continue
            metrics.COMPUTED.labels(kind="aggregationrules").inc()
            self._write(
                "aggregationrules",
                name,
                stored,
                self._rule_status(body, parsed, parsed_rules, by_name, stored, stamp, expected),
            )
        return self.unwritten

    def reports_listed(self, items: Iterable[dict[str, Any]]) -> None:
        """A LIST of every NodeReport (the watch's first, or after a 410), page by page:
        what changed since the index last heard, and what is gone."""
        present = set()
        for item in items:  # pages come while the lock is free: a pass may run between
            with self.lock:
                if self._put(item):
                    present.add(item["metadata"]["name"])
        with self.lock:
            for name in set(self.index.node_of) - present:
                self.touched |= self.index.remove(name)
                self.nodes_changed = True
            self.reports_synced = True

    def report_changed(self, kind: str, item: dict[str, Any]) -> None:
        """A watch event of a NodeReport."""
        with self.lock:
            if kind == "DELETED":
                self.touched |= self.index.remove(item["metadata"]["name"])
                self.nodes_changed = True
            else:
                self._put(item)

    def _put(self, item: dict[str, Any]) -> bool:
        """Parse a report into the index (once per change: the watch says each change
        once); False when it is malformed (and left out)."""
        name = item["metadata"]["name"]
        version = item["metadata"].get("resourceVersion")
        if version is not None and self.report_versions.get(name) == version:
            return True
        metrics.REPORTS_PARSED.inc()
        known = name in self.index.node_of
        try:
            report = NodeReport.model_validate(item)
        except ValueError:
            log.warning("ignoring a malformed NodeReport %s", name)
            self.touched |= self.index.remove(name)
            self.nodes_changed |= known
            self.report_versions.pop(name, None)
            return False
        self.touched |= self.index.put(report)
        self.nodes_changed |= not known
        self.report_versions[name] = version
        return True

    def _restore(self, policies: list[dict[str, Any]]) -> None:
        """A valid policy whose ConfigMap is gone (deleted by hand, say) is rendered again:
        drift is repaired within one pass, not at the next operator restart. Policies the
        handlers have not seen yet are theirs to render."""
        present = self.rendered()
        for body in policies:
            name = body["metadata"]["name"]
            if name in present or name in self.render_errors or not self.handled(name):
                continue
            if body["metadata"].get("deletionTimestamp") or not parse(body).ok:
                continue
            log.info("policy %s has no ConfigMap; rendering it again", name)
            with contextlib.suppress(k8s.ApiException):  # recorded in render_errors
                self.rerender(name)

    def _rule_status(
        self,
        body: dict[str, Any],
        parsed: documents.Parsed,
        all_rules: list[documents.Parsed],
        policies: dict[str, dict[str, Any]],
        stored: dict[str, Any],
        stamp: str,
        expected: summaries.Expected | None,
    ) -> dict[str, Any]:
        problems: list[Problem] = list(parsed.problems)
        policy_generation = None
        selector = None
        if isinstance(parsed.obj, AggregationRule):
            policy_name = parsed.obj.spec.policy_ref.name
            policy_body = policies.get(policy_name)
            policy_docs = []
            if policy_body is None:
                problems.append(
                    Problem(
                        "spec.policyRef.name",
                        f"TracingPolicy {policy_name!r} does not exist; create it or fix the name",
                    )
                )
            else:
                policy_docs = [parse(policy_body)]
                policy_generation = int(policy_body["metadata"].get("generation", 1))
                selector = node_selector(policy_docs[0])
            # The checks the agent and `weir check` make too: against the policy, metric
            # names shared with other rules, the policy's memory budget.
            checked = documents.cross_check([*policy_docs, *all_rules])
            mine = next(r for r in checked if r.obj is parsed.obj)
            problems += [p for p in mine.problems if p not in parsed.problems]
        previous = AggregationRuleStatus.model_validate(stored) if stored else None
        return summaries.rule_status(
            name=body["metadata"]["name"],
            policy=(body.get("spec") or {}).get("policyRef", {}).get("name", ""),
            generation=int(body["metadata"].get("generation", 1)),
            policy_generation=policy_generation,
            problems=problems,
            reports=self.index,
            previous=previous,
            now=stamp,
            stale_after=self.stale_after,
            expected=expected,
            selector=selector,
        ).to_wire()

    def _write(
        self, plural: str, name: str, stored: dict[str, Any], desired: dict[str, Any]
    ) -> None:
        key = (plural, name)
        self.decided.pop(key, None)  # until written: worked out again next pass
        if stored == desired:
            self.decided[key] = desired
            return  # nothing changed: no write
        now = time.monotonic()
        recent = now - self.counters_written.get(key, -math.inf) < self.counters_interval
        if recent and _without_counters(stored) == _without_counters(desired):
            return  # counters only: they are in metrics at once, in status every interval
        self.counters_written[key] = now
        patch: dict[str, Any] = {field: None for field in set(stored) - set(desired)}
        patch.update(desired)
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, plural, name, {"status": patch}
            )
            metrics.STATUS_WRITES.labels(kind=plural, result="ok").inc()
            self.decided[key] = desired
            if self.cache is not None:
                self.cache.set_status(plural, name, desired)
        except k8s.ApiException as error:
            metrics.STATUS_WRITES.labels(kind=plural, result="error").inc()
            metrics.api_error("write_status", error)
            if error.status != 404:  # deleted meanwhile: nothing to write
                self.unwritten += 1
                self.counters_written.pop(key, None)  # not written: the next pass may
                log.warning("%s/%s: status write failed: %s", plural, name, error.reason)


COUNTERS = ("savings", "series", "overflowEvents")  # status fields that change by counting


def _without_counters(status: dict[str, Any]) -> dict[str, Any]:
    """The status but its counters; whether SAVED shows a value at all stays in (a policy
    that starts counting gets its SAVED column at once, not an interval later)."""
    rest = {k: v for k, v in status.items() if k not in COUNTERS}
    rest["savingsShown"] = bool((status.get("savings") or {}).get("saved"))
    return rest
