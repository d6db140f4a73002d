"""The CRDs in crds/ are generated from the models, stay in sync, and are what
the Kubernetes API server accepts."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from kube_schema import apply_defaults, cel_failures, structural_errors, validations
from weir_api import limits
from weir_cli import crds_command

CRD_DIR = ROOT / "crds"


def load_crds() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))}


def schema_of(kind: str) -> dict[str, Any]:
    for crd in load_crds().values():
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]
    raise KeyError(kind)


def test_crds_directory_matches_the_models() -> None:
    expected = crds_command.render_all()
    on_disk = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert sorted(on_disk) == sorted(expected), "run `make crds`"
    for name, text in expected.items():
        assert on_disk[name] == text, f"crds/{name} is stale: run `make crds` and commit"


WEIR_CRDS = sorted(n for n in crds_command.render_all() if n.endswith(".weir.dev.yaml"))


def test_kopf_peering_crd_is_what_kopf_expects() -> None:
    # kopf finds it by group, version and plural; it patches the status as a plain field.
    crd = load_crds()["clusterkopfpeerings.kopf.dev.yaml"]
    version = crd["spec"]["versions"][0]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["scope"]) == (
        "kopf.dev",
        "v1",
        "Cluster",
    )
    assert crd["spec"]["names"]["plural"] == "clusterkopfpeerings"
    assert "subresources" not in version
    assert structural_errors(version["schema"]["openAPIV3Schema"]) == []


@pytest.mark.parametrize("name", WEIR_CRDS)
def test_crd_schema_is_structural(name: str) -> None:
    crd = load_crds()[name]
    version = crd["spec"]["versions"][0]
    assert structural_errors(version["schema"]["openAPIV3Schema"]) == []
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["categories"] == ["weir"]
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.weir.dev"


def test_generated_sections_match_their_sources() -> None:
    # docs/api.md's limits table and bpf/weir.h's capacities come from weir_api.limits.
    spec = importlib.util.spec_from_file_location("generated", ROOT / "scripts" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.stale() == [], "generated sections are stale: run `make docs`"
    assert "| AggregationRules per hook | 4 |" in (ROOT / "docs" / "api.md").read_text()
    header = (ROOT / "bpf" / "weir.h").read_text()
    assert f"#define WEIR_MAX_AGGS {limits.MAX_RULES_PER_HOOK} " in header
    assert f"#define WEIR_MAX_SERIES_IDS {2 * limits.MAX_RULES_PER_HOOK} " in header


def test_a_stale_section_is_found() -> None:
    spec = importlib.util.spec_from_file_location("generated", ROOT / "scripts" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    begin, end = "/* capacities:begin */\n", "/* capacities:end */\n"
    text = f"a\n{begin}#define WEIR_MAX_AGGS 3\n{end}b\n"
    assert module.rewrite(text, begin, end, "X\n") == f"a\n{begin}X\n{end}b\n"


def test_structural_checker_catches_what_the_api_server_rejects() -> None:
    # The checker above must be able to fail: each of these is refused by Kubernetes.
    assert structural_errors({"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    assert structural_errors({"type": "object", "properties": {"a": {"description": "untyped"}}})
    assert structural_errors(
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    )
    assert structural_errors({"anyOf": [{"type": "string"}, {"type": "integer"}]})


def test_names_short_names_and_printer_columns() -> None:
    crds = {c["spec"]["names"]["plural"]: c for c in load_crds().values()}
    assert set(crds) == {
        "tracingpolicies",
        "aggregationrules",
        "nodereports",
        "clusterkopfpeerings",
    }
    assert crds["tracingpolicies"]["spec"]["names"]["shortNames"] == ["wtp"]
    assert crds["aggregationrules"]["spec"]["names"]["shortNames"] == ["war"]
    columns = crds["tracingpolicies"]["spec"]["versions"][0]["additionalPrinterColumns"]
    visible = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert visible == ["Ready", "Nodes", "Saved", "Age"]
    ready = next(c for c in columns if c["name"] == "Ready")
    assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def test_every_cel_rule_compiles() -> None:
    import celpy

    env = celpy.Environment()
    rules = [
        r for kind in ("TracingPolicy", "AggregationRule") for r in validations(schema_of(kind))
    ]
    assert len(rules) >= 8
    for path, rule in rules:
        env.compile(rule["rule"])  # raises on a syntax error
        assert rule["message"], path


def example_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted((ROOT / "examples" / "policies").glob("*.yaml")):
        objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return objects


def test_examples_pass_every_cel_rule() -> None:
    objects = example_objects()
    assert len(objects) == 10
    for obj in objects:
        schema = schema_of(obj["kind"])
        assert cel_failures(schema, apply_defaults(schema, obj)) == [], obj["metadata"]["name"]


def test_capabilities_gained_on_a_cred_arg_passes_the_cel_rules() -> None:
    obj = {
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "creds"},
        "spec": {
            "kprobes": [
                {
                    "call": "commit_creds",
                    "args": [{"index": 0, "type": "cred"}],
                    "selectors": [
                        {
                            "matchArgs": [
                                {
                                    "index": 0,
                                    "operator": "CapabilitiesGained",
                                    "values": ["CAP_SETUID"],
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
    schema = schema_of("TracingPolicy")
    assert cel_failures(schema, apply_defaults(schema, obj)) == []


def _segfaults() -> dict[str, Any]:
    return copy.deepcopy(next(o for o in example_objects() if o["metadata"]["name"] == "segfaults"))


CEL_CASES = [
    (
        "policy without hooks",
        "TracingPolicy",
        lambda o: o["spec"].update(tracepoints=[]),
        "a policy needs at least one of kprobes, tracepoints or uprobes",
    ),
    (
        "arg with neither index nor field",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["args"][0].pop("field"),
        "an arg needs index or field",
    ),
    (
        "GT with two values",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0].update(
            operator="GT", values=["1", "2"]
        ),
        "GT, LT and Mask take exactly one value",
    ),
    (
        "stack trace on NoPost",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["selectors"][0]["matchActions"][0].update(
            action="NoPost", rateLimit=None
        ),
        "stack traces are taken for Post only",
    ),
    (
        "GT on a filename",
        "TracingPolicy",
        lambda o: (
            o["spec"]["tracepoints"][0].update(
                args=[{"field": "sig", "type": "filename", "label": "sig"}]
            )
            or o["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0].update(operator="GT")
        ),
        "a matchArgs operator must fit its arg's type: integers take Equal, GT, GreaterThan, "
        "InMap, InRange, LT, LessThan, Mask, NotEqual, NotInMap, NotInRange; strings (string, "
        "filename, char_buf, file, path, fd, linux_binprm, module, kernel_module, load_info, "
        "bpf_attr, bpf_map and perf_event) take Equal, InMap, NotEqual, NotInMap, NotPostfix, "
        "NotPrefix, Postfix, Prefix, SubString, SubStringIgnCase; sock, sockaddr and skb take "
        "DAddr, DPort, DPortPriv, NotDAddr, NotDPort, NotDPortPriv, NotSAddr, NotSPort, "
        "NotSPortPriv, SAddr, SPort, SPortPriv and Family, NotFamily (all three), Protocol, "
        "NotProtocol (sock, skb), State (sock)",
    ),
    (
        "an undeclared label",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0].update(label="nope"),
        "every matchArgs entry names an arg of this hook (by label, or by index); declare the "
        "arg in args first",
    ),
    (
        "an undeclared index",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0].update(
            label=None, index=7
        ),
        "every matchArgs entry names an arg of this hook (by label, or by index); declare the "
        "arg in args first",
    ),
    (
        "a label twice",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["args"][1].update(label="sig"),
        "each arg's label must be unique within the hook (it defaults to the field name, or "
        "arg<index>)",
    ),
    (
        "a default label twice",
        "TracingPolicy",
        lambda o: (
            o["spec"]["tracepoints"][0].update(
                args=[
                    {"field": "sig", "type": "int"},
                    {"field": "sig", "type": "int", "label": "s"},
                ]
            )
            or o["spec"]["tracepoints"][0]["args"][0].update(label=None, field="x", index=None)
            or o["spec"]["tracepoints"][0]["args"][1].update(label="x")
        ),
        "each arg's label must be unique within the hook (it defaults to the field name, or "
        "arg<index>)",
    ),
    (
        "field and index on a tracepoint arg",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["args"][0].update(index=0),
        "a tracepoint arg takes field or index, not both",
    ),
    (
        "char_buf on a tracepoint",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["args"][0].update(type="char_buf", sizeArgIndex=1),
        "char_buf is for kprobes and uprobes; on a tracepoint use string (a __data_loc or "
        "char[] field) or filename (a user pointer)",
    ),
    (
        "field on a kprobe arg",
        "TracingPolicy",
        lambda o: o["spec"].update(
            kprobes=[{"call": "tcp_sendmsg", "args": [{"field": "size", "type": "int"}]}]
        ),
        "kprobe args take index, the function argument's position (0-5); field is for tracepoints",
    ),
    (
        "a string returnArg",
        "TracingPolicy",
        lambda o: o["spec"].update(
            kprobes=[
                {
                    "call": "do_sys_openat2",
                    "return": True,
                    "returnArg": {"index": 0, "type": "string"},
                }
            ]
        ),
        "return values are read as integers: returnArg takes an integer type (int, long, "
        "size_t, ...)",
    ),
    (
        "sizeArgIndex on an int",
        "TracingPolicy",
        lambda o: o["spec"]["tracepoints"][0]["args"][0].update(sizeArgIndex=1),
        "sizeArgIndex applies to char_buf args only; remove it",
    ),
]


def test_a_kprobe_matching_its_return_arg_passes_the_rules() -> None:
    obj = _segfaults()
    obj["spec"] = {
        "kprobes": [
            {
                "call": "tcp_sendmsg",
                "return": True,
                "args": [{"index": 0, "type": "sock", "label": "sk"}],
                "returnArg": {"index": 0, "type": "int", "label": "ret"},
                "selectors": [
                    {
                        "matchArgs": [
                            {"label": "ret", "operator": "GT", "values": ["0"]},
                            {"label": "sk", "operator": "NotDAddr", "values": ["10.0.0.0/8"]},
                            {"index": 0, "operator": "DPort", "values": ["443"]},
                        ]
                    }
                ],
            }
        ]
    }
    schema = schema_of("TracingPolicy")
    assert cel_failures(schema, apply_defaults(schema, obj)) == []


@pytest.mark.parametrize(
    ("case", "kind", "mutate", "message"), CEL_CASES, ids=[c[0] for c in CEL_CASES]
)
def test_cel_rules_reject_cross_field_mistakes(
    case: str, kind: str, mutate: Any, message: str
) -> None:
    obj = _segfaults()
    mutate(obj)
    obj = _drop_nones(obj)
    schema = schema_of(kind)
    failures = cel_failures(schema, apply_defaults(schema, obj))
    assert any(f.endswith(message) for f in failures), failures


def test_cel_rules_on_aggregation_rules() -> None:
    schema = schema_of("AggregationRule")
    rule = next(o for o in example_objects() if o["kind"] == "AggregationRule")
    bad = copy.deepcopy(rule)
    bad["spec"]["value"] = {"type": "histogram"}
    assert any(
        f.endswith("sum and histogram need arg")
        for f in cel_failures(schema, apply_defaults(schema, bad))
    )
    bad["spec"]["value"] = {"type": "histogram", "arg": "bytes", "buckets": {"type": "explicit"}}
    assert any(
        f.endswith("explicit buckets need bounds")
        for f in cel_failures(schema, apply_defaults(schema, bad))
    )


def _drop_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def test_generated_schema_rejects_unknown_top_level_spec_fields_by_pruning() -> None:
    # Structural schemas prune what they do not declare: a spec field we forgot to
    # declare would silently vanish on a real cluster. Every model field is declared.
    spec = schema_of("TracingPolicy")["properties"]["spec"]["properties"]
    assert {
        "kprobes",
        "tracepoints",
        "uprobes",
        "podSelector",
        "namespaceSelector",
        "nodeSelector",
        "lists",
        "options",
        "lsmhooks",
        "fentries",
        "rawtracepoints",
        "containerSelector",
    } == set(spec)
    selector = spec["kprobes"]["items"]["properties"]["selectors"]["items"]["properties"]
    assert set(selector) == {
        "matchArgs",
        "matchBinaries",
        "matchActions",
        "matchReturnArgs",
        "matchPIDs",
        "matchNamespaces",
        "matchCapabilities",
        "matchNamespaceChanges",
        "matchCapabilityChanges",
        "matchMarks",
    }
    assert Path(CRD_DIR).is_dir()
