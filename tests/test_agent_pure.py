"""The agent's pure pieces: plans, savings, formats, series decoding, cgroups, tables."""

from __future__ import annotations

import json
from pathlib import Path

from weir_agent.identity import cgroups
from weir_agent.identity.metadata import Labels
from weir_agent.kernel import headers
from weir_agent.outputs import series
from weir_agent.runtime import savings
from weir_agent.spec import abi, plans
from weir_agent.spec.formats import parse_format
from weir_agent.spec.programs import AggSlot, ArgPlan
from weir_api import documents, statuses
from weir_api.policies import TracingPolicy


def test_saved_ratio_on_a_hand_computed_case() -> None:
    # 1,000,000 observed events of a 450-byte line is 450,000,000 raw bytes; 4,500 bytes of
    # metrics exported: 1 - 4500 / 450e6 = 0.99999.
    assert statuses.saved_ratio(450_000_000, 4_500) == 0.99999
    assert statuses.saved_ratio(0, 100) == 0.0
    assert statuses.saved_ratio(100, 1000) == 0.0  # clamped: exporting more than raw saves nothing
    assert statuses.percent(0.99999) == "99.99%" and statuses.percent(1.0) == "100%"


def test_event_size_is_the_json_line_length() -> None:
    args = (ArgPlan(slot=0, name="path", type="filename", kind=abi.Kind.STR_PTR),)
    event = savings.canonical_event("p", "tracepoint:a:b", args)
    assert (
        savings.event_size("p", "tracepoint:a:b", args)
        == len(json.dumps(event, separators=(",", ":"))) + 1
    )
    assert event["args"] == {"path": "x" * 64}


def test_totals_from_counters() -> None:
    from weir_agent.runtime.engine import HookSnapshot, totals
    from weir_api.reports import ProgramReport

    snap = HookSnapshot(
        policy="p",
        hook="h",
        args=(),
        aggregations=(),
        event_size=100,
        report=ProgramReport(hook="h", state="attached"),
        run_time_ns=0,
        run_count=0,
        stats={
            abi.Stat.OBSERVED: 1000,
            abi.Stat.MATCHED: 10,
            abi.Stat.AGGREGATED: 10,
            abi.Stat.OVERFLOW: 2,
        },
    )
    result = totals([snap], 500, 0).savings
    assert (
        result.observed,
        result.matched,
        result.dropped,
        result.raw_bytes,
        result.exported_bytes,
    ) == (1000, 10, 2, 100_000, 500)
    assert result.saved_ratio == 0.995 and result.saved == "99.50%"


def test_plan() -> None:
    class P:
        def __init__(self, hook: str, shape: str, digest: str) -> None:
            self.policy, self.hook, self._shape, self._digest = "p", hook, shape, digest

        def digest(self) -> str:
            return self._digest

        def shape_digest(self) -> str:
            return self._shape

    desired = {
        ("p", "a"): P("a", "s", "1"),
        ("p", "b"): P("b", "s", "2"),
        ("p", "c"): P("c", "s", "3"),
        ("p", "e"): P("e", "s", "5"),
    }
    running = {
        ("p", "a"): P("a", "s", "1"),  # same content: kept
        ("p", "b"): P("b", "t", "old"),  # new shape: compiled and swapped
        ("p", "d"): P("d", "s", "4"),  # gone: unloaded
        ("p", "e"): P("e", "s", "old"),  # same shape, new configuration: map writes
    }
    result = plans.plan(desired, running)  # type: ignore[arg-type]
    assert [p.hook for p in result.load] == ["c"]
    assert [p.hook for p in result.replace] == ["b"]
    assert [p.hook for p in result.reconfigure] == ["e"]
    assert result.unload == (("p", "d"),) and result.keep == (("p", "a"),)


def test_parse_format() -> None:
    fields = parse_format(
        "name: x\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n"
        "\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n"
        "\tfield:const char * name;\toffset:32;\tsize:8;\tsigned:0;\n"
    )
    assert [(f.name, f.type, f.offset, f.size) for f in fields] == [
        ("filename", "__data_loc char[]", 8, 4),
        ("comm", "char[16]", 12, 16),
        ("name", "const char *", 32, 8),
    ]
    assert fields[0].is_data_loc and fields[1].inline_array == 16 and fields[2].is_pointer


def test_cgroup_paths() -> None:
    cid = "a" * 64
    assert (
        cgroups.container_id(f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope")
        == cid
    )
    assert cgroups.container_id(f"/docker/{cid}") == cid
    assert cgroups.container_id("/user.slice/session-1.scope") is None
    uid = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    assert (
        cgroups.pod_uid(f"/kubepods.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice")
        == uid
    )
    assert (
        cgroups.cgroup2_mount(
            "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
            "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        )
        is not None
    )


def test_series_decoding() -> None:
    agg = AggSlot(
        slot=0,
        rule="r",
        metric="m",
        help="",
        value=abi.ValueKind.COUNT,
        group_by=("namespace", "container", "binary", "node", "arg:fd", "addressClass:sk"),
        key_fields=(
            ("namespace", "cgroup"),
            ("container", "cgroup"),
            ("binary", "binary"),
            ("node", "node"),
            ("arg:fd", "arg0"),
            ("addressClass:sk", "aclass"),
        ),
        bounds=(),
        max_series=10,
    )
    assert series.label_names(agg) == ["namespace", "container", "binary", "node", "fd", "sk_class"]
    context = series.Context(
        node="n1",
        labels=lambda c: Labels(namespace="ns", container=f"c{c}"),
        binaries={7: "/bin/x"},
        signed_args={"arg0": False},
    )
    assert series.decode(agg, (5, 7, -1, 0, int(abi.AddressClass.PRIVATE), False), context) == (
        "ns",
        "c5",
        "/bin/x",
        "n1",
        str(2**64 - 1),
        "private",
    )
    assert series.decode(agg, (0, 0, 0, 0, 0, True), context) == ("__overflow__",) * 6
    assert series.exp2_upper_bound(0) == 0 and series.exp2_upper_bound(3) == 7


def test_headers_are_located_in_order_and_named(tmp_path: Path) -> None:

    release = "6.18.0-test"
    modules, baked, kheaders = tmp_path / "modules", tmp_path / "baked", tmp_path / "kh.tar.xz"
    btf = tmp_path / "vmlinux"  # absent: a kernel without BTF

    def where() -> headers.Headers:
        return headers.locate(release, modules=modules, baked=baked, kheaders=kheaders, btf=btf)

    (baked / "generic" / "include").mkdir(parents=True)  # the image's, useless without BTF
    missing = where()
    assert missing.state == "missing" and missing.source is None
    assert missing.problem.startswith("no kernel headers for kernel 6.18.0-test, and no BTF")
    assert "agent.mountHostHeaders" in missing.problem and "CONFIG_IKHEADERS" in missing.problem
    kheaders.write_bytes(b"")
    assert where().state == "kheaders" and where().problem == ""
    (baked / release / "include").mkdir(parents=True)
    assert where() == headers.Headers("baked", baked / release, release)
    (modules / release / "build" / "include").mkdir(parents=True)
    assert where() == headers.Headers("host", None, release)
    (modules / release / ".weir-fallback-headers").write_text("/usr/src/linux-headers-6.1\n")
    assert where().state == "fallback"
    btf.write_bytes(b"")  # with BTF, the image's generic headers serve before the node's
    assert where() == headers.Headers("btf", baked / "generic", release)


def test_probes_answer_from_the_health_state() -> None:
    from prometheus_client import CollectorRegistry

    from weir_agent.outputs import serving

    health = serving.Health(stall_seconds=60)
    app = serving.app(registry=CollectorRegistry(), health=health)

    def get(path: str) -> tuple[str, bytes]:
        answer: list[str] = []
        body = b"".join(app({"PATH_INFO": path}, lambda status, _h: answer.append(status)))
        return answer[0], body

    assert get("/readyz") == ("503 Service Unavailable", b"policies not attempted yet\n")
    health.ready.set()
    assert get("/readyz") == ("200 OK", b"ready\n")
    assert get("/healthz") == ("200 OK", b"ok\n")
    health.last_beat -= 61  # the main loop has not beaten for over a minute
    status, body = get("/healthz")
    assert status == "503 Service Unavailable" and body.startswith(b"main loop stalled for 61")


def test_standalone_generations_follow_the_spec_and_its_rules() -> None:
    from weir_agent.sources import directory as sources

    def docs(prefix: str, metric: str = "m") -> list[documents.Parsed]:
        text = f"""\
apiVersion: weir.dev/v1alpha1
kind: TracingPolicy
metadata: {{name: p}}
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{{field: filename, type: filename, label: path}}]
    selectors: [{{matchArgs: [{{label: path, operator: Prefix, values: ["{prefix}"]}}]}}]
---
apiVersion: weir.dev/v1alpha1
kind: AggregationRule
metadata: {{name: r}}
spec: {{policyRef: {{name: p}}, metric: {{name: {metric}}}}}
"""
        return documents.parse_text(text, source="p.yaml")

    generations = sources.Generations()

    def generation(parsed: list[documents.Parsed]) -> int:
        policy = generations.stamp(parsed)[0].obj
        assert isinstance(policy, TracingPolicy)
        return policy.metadata.generation

    assert generation(docs("/a")) == 1
    assert generation(docs("/a")) == 1  # read again, unchanged
    assert generation(docs("/b")) == 2  # its spec changed
    assert generation(docs("/b", metric="n")) == 3  # one of its rules changed
    assert generation(docs("/b", metric="n")) == 3


def test_parse_format_numbers_fields_from_the_first_common_one() -> None:
    fields = parse_format(
        "format:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
        "\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;\n"
        "\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;\n"
    )
    assert [(f.name, f.position) for f in fields] == [("id", 2), ("args", 3)]


def test_host_namespaces_fall_back_to_the_initial_namespaces_fixed_numbers(
    tmp_path: Path,
) -> None:
    from weir_agent.identity import namespaces

    (tmp_path / "1" / "ns").mkdir(parents=True)
    (tmp_path / "1" / "ns" / "net").write_text("")
    found = namespaces.host_namespaces(tmp_path, release="6.1.0-13-amd64")
    assert found["net"] == (tmp_path / "1" / "ns" / "net").stat().st_ino  # pid 1's own
    assert found["pid"] == 0xEFFFFFFC and found["user"] == 0xEFFFFFFD
    assert isinstance(found["mnt"], str) and "before Linux 6.18" in found["mnt"]
    assert namespaces.host_namespaces(tmp_path, release="6.18.2")["mnt"] == 0xEFFFFFF8


def test_series_retention_in_scrapes_or_time() -> None:
    import pytest

    from weir_agent.outputs.retention import Departures, Retention

    assert Retention.parse("2scrapes") == Retention(scrapes=2)
    assert Retention.parse("1scrape") == Retention(scrapes=1)
    assert Retention.parse("90s") == Retention(seconds=90)
    assert Retention.parse("5m") == Retention(seconds=300)
    for bad in ("", "5", "0scrapes", "1.5scrapes", "5d"):
        with pytest.raises(ValueError, match="2scrapes"):
            Retention.parse(bad)
    by_scrapes = Departures(Retention(scrapes=2))
    assert by_scrapes.due({1, 2}, now=0, scraped=False) == set()  # a look, not a scrape
    assert by_scrapes.due({1, 2}, now=0, scraped=True) == set()
    assert by_scrapes.due({1, 2, 3}, now=0, scraped=True) == {1, 2}
    assert by_scrapes.waiting() == 1
    by_time = Departures(Retention(seconds=60))
    assert by_time.due({1}, now=100, scraped=False) == set()
    assert by_time.due({1, 2}, now=150, scraped=True) == set()
    assert by_time.due({1, 2}, now=160, scraped=False) == {1}
    assert by_time.due({2}, now=210, scraped=False) == {2}


def test_the_cgroup_index_tells_gone_cgroups_by_id(tmp_path: Path) -> None:
    from weir_agent.identity import cgroups

    (tmp_path / "pod" / "c1").mkdir(parents=True)
    (tmp_path / "pod" / "c2").mkdir()
    c1, c2 = ((tmp_path / "pod" / n).stat().st_ino for n in ("c1", "c2"))
    index = cgroups.CgroupIndex(root=tmp_path, rescan_seconds=0)
    index.births = {424242: "...a-path-too-long-to-keep"}.get  # made and gone between scans
    assert index.path(c2) == "/pod/c2"
    (tmp_path / "pod" / "c2").rmdir()
    assert index.gone({c1, c2, 424242}) == {c2, 424242}
    assert index.path(c2) == "/pod/c2"  # remembered: its counts outlive it
    index.forget({c2})  # its series retired: a rescan does not find it again
    assert index.path(c2) is None
