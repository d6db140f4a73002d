"""From YAML text to typed objects, with every problem found along the way.

A directory of policies, a ConfigMap or a ``weir check`` argument is a stream
of YAML documents. Each becomes a ``Parsed`` entry: the object when it is
valid, or the problems (with field paths) when it is not. A broken document
never hides its valid neighbours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml
from pydantic import ValidationError

from weir_api import API_VERSION, checks
from weir_api.aggregations import AggregationRule, AggregationRuleSpec
from weir_api.policies import KProbe, Tracepoint, TracingPolicy, UProbe
from weir_api.problems import Problem, from_validation_error
from weir_api.reports import NodeReport

KINDS: dict[str, type[TracingPolicy] | type[AggregationRule] | type[NodeReport]] = {
    "TracingPolicy": TracingPolicy,
    "AggregationRule": AggregationRule,
    "NodeReport": NodeReport,
}
Object = TracingPolicy | AggregationRule | NodeReport


@dataclasses.dataclass(frozen=True)
class Parsed:
    """One document: where it came from, what it is, and what is wrong with it."""

    source: str  # e.g. "examples/policies/x.yaml#1"
    kind: str
    name: str
    obj: Object | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.obj is not None and not self.problems


def parse_text(text: str, *, source: str) -> list[Parsed]:
    """Every document in a YAML stream (empty documents are skipped)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = Problem(path="", message=f"not valid YAML{line}: {error}")
        return [Parsed(source=source, kind="", name="", obj=None, problems=(problem,))]
    return [
        parse_object(document, source=f"{source}#{number}" if len(documents) > 1 else source)
        for number, document in enumerate(documents)
    ]


def parse_object(document: Any, *, source: str) -> Parsed:
    """One decoded document → a typed object checked on its own."""
    if not isinstance(document, dict):
        problem = Problem(path="", message="a document must be a mapping with apiVersion and kind")
        return Parsed(source=source, kind="", name="", obj=None, problems=(problem,))
    kind = str(document.get("kind", ""))
    metadata = document.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, dict) else ""
    problems: list[Problem] = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(
            Problem(
                path="apiVersion",
                message=f"is {document.get('apiVersion')!r}; weir objects are {API_VERSION}",
            )
        )
    model = KINDS.get(kind)
    if model is None:
        problems.append(
            Problem(path="kind", message=f"is {kind!r}; expected one of {', '.join(KINDS)}")
        )
        return Parsed(source=source, kind=kind, name=name, obj=None, problems=tuple(problems))
    try:
        obj: Object = model.model_validate(document)
    except ValidationError as error:
        problems.extend(from_validation_error(error))
        if kind == "TracingPolicy":  # the rest of what is wrong, in the same pass
            found = set(problems)
            problems.extend(p for p in _hook_checks(document.get("spec")) if p not in found)
        return Parsed(source=source, kind=kind, name=name, obj=None, problems=tuple(problems))
    if isinstance(obj, TracingPolicy):
        problems.extend(checks.check_policy(obj.spec))
    elif isinstance(obj, AggregationRule):
        problems.extend(checks.check_rule(obj.spec, None))
    return Parsed(source=source, kind=kind, name=name, obj=obj, problems=tuple(problems))


def _hook_checks(spec: Any) -> list[Problem]:
    """When a policy fails its schema, the semantic checks of every hook that passes its
    own: a user sees all that is wrong at once, not in rounds."""
    if not isinstance(spec, dict):
        return []
    found: list[Problem] = []
    for group, model in (("kprobes", KProbe), ("tracepoints", Tracepoint), ("uprobes", UProbe)):
        items = spec.get(group)
        for index, item in enumerate(items if isinstance(items, list) else []):
            try:
                hook = model.model_validate(item)
            except ValidationError:
                continue  # its schema problems are already listed
            # A uprobe's symbols share its args and selectors: its first symbol stands for all.
            one = hook.expanded()[0] if isinstance(hook, UProbe) else hook
            found.extend(checks.check_hook(one, ("spec", group, index)))
    return found


def cross_check(parsed: list[Parsed]) -> list[Parsed]:
    """Check each AggregationRule against the policy it names, when that is present."""
    policies = {p.obj.name: p.obj for p in parsed if isinstance(p.obj, TracingPolicy) and p.ok}
    shared = checks.check_metric_names(
        [(p.obj.name, p.obj.spec) for p in parsed if isinstance(p.obj, AggregationRule) and p.ok]
    )
    by_policy: dict[str, list[tuple[str, AggregationRuleSpec]]] = {}
    for item in parsed:
        if isinstance(item.obj, AggregationRule) and item.ok:
            by_policy.setdefault(item.obj.spec.policy_ref.name, []).append(
                (item.obj.name, item.obj.spec)
            )
    for name, rules in by_policy.items():
        if name in policies:
            spec = policies[name].spec
            for rule, found in checks.check_rules_per_hook(spec, rules).items():
                shared.setdefault(rule, []).extend(found)
            refused = set(shared)
            kept = [(n, r) for n, r in rules if n not in refused]
            for rule, found in checks.check_memory(spec, kept).items():
                shared.setdefault(rule, []).extend(found)
    result = []
    for item in parsed:
        if isinstance(item.obj, AggregationRule) and not item.problems:
            policy = policies.get(item.obj.spec.policy_ref.name)
            extra = checks.check_rule(item.obj.spec, policy.spec) if policy is not None else []
            extra += shared.get(item.obj.name, [])
            if extra:
                item = dataclasses.replace(item, problems=(*item.problems, *extra))
        result.append(item)
    return result
