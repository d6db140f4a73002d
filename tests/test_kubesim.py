"""Conformance of the in-repo API emulator, driven by the real kubectl and the
kubernetes client. Each test names the Kubernetes behaviour it pins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from conftest import EXAMPLES, ROOT, free_port
from kubesim.certs import certificates
from kubesim.server import Emulator, kubeconfig, serve

GROUP, VERSION = "weir.dev", "v1alpha1"


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.server, self.emulator = serve(self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig(self.port))
        self.cache = tmp / "kube-cache"  # kubectl caches discovery per host:port
        api = k8s_config.new_client_from_config(str(self.kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.ext = k8s.ApiextensionsV1Api(api)
        self.api = api

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def install(self) -> None:
        self.kubectl("apply", "-f", str(ROOT / "crds"))

    def policy(self, name: str = "p") -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TracingPolicy",
            "metadata": {"name": name},
            "spec": {"tracepoints": [{"subsystem": "syscalls", "event": "sys_enter_openat"}]},
        }

    def create_policy(self, name: str = "p") -> dict[str, Any]:
        return self.custom.create_cluster_custom_object(
            GROUP, VERSION, "tracingpolicies", self.policy(name)
        )

    def get_policy(self, name: str = "p") -> dict[str, Any]:
        return self.custom.get_cluster_custom_object(GROUP, VERSION, "tracingpolicies", name)

    def patch_policy(self, body: Any, name: str = "p", status: bool = False) -> dict[str, Any]:
        call = (
            self.custom.patch_cluster_custom_object_status
            if status
            else self.custom.patch_cluster_custom_object
        )
        return call(GROUP, VERSION, "tracingpolicies", name, body)

    def raw_watch(self, path: str, **params: str) -> list[dict[str, Any]]:
        """A watch over plain HTTP (asserting the 200), its events decoded line by line."""
        query = urllib.parse.urlencode({"watch": "true", **params})
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}{path}?{query}", timeout=30
        ) as response:
            assert response.status == 200
            return [json.loads(line) for line in response.read().decode().splitlines() if line]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    instance = Cluster(tmp_path)
    yield instance
    instance.close()


def status_of(error: k8s.ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def test_discovery_follows_crds_and_kubectl_shows_printer_columns(cluster: Cluster) -> None:
    # apiextensions: a CRD is Established and its resource appears in discovery at once;
    # deleting it removes the resource. Printer columns come from additionalPrinterColumns.
    cluster.install()
    crd = cluster.ext.read_custom_resource_definition("tracingpolicies.weir.dev")
    assert {c.type: c.status for c in crd.status.conditions} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    resources = json.loads(cluster.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}").stdout)[
        "resources"
    ]
    names = {r["name"]: r for r in resources}
    assert set(names) == {
        "tracingpolicies",
        "tracingpolicies/status",
        "aggregationrules",
        "aggregationrules/status",
        "nodereports",
        "nodereports/status",
    }
    assert names["tracingpolicies"]["shortNames"] == ["wtp"] and names["tracingpolicies"][
        "categories"
    ] == ["weir"]
    assert "shortNames" not in names["tracingpolicies/status"]
    cluster.kubectl("apply", "-f", str(EXAMPLES / "file-opens.yaml"))
    lines = cluster.kubectl("get", "tracingpolicies").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "NODES", "SAVED", "AGE"]
    assert lines[1].split()[0] == "file-opens-etc"
    wide = cluster.kubectl("get", "wtp", "-o", "wide").stdout.splitlines()[0].split()
    assert wide == ["NAME", "READY", "NODES", "SAVED", "AGE", "REASON"]
    assert "tracingpolicy.weir.dev/file-opens-etc" in cluster.kubectl("get", "weir").stdout
    cluster.kubectl("delete", "crd", "tracingpolicies.weir.dev")
    assert (
        cluster.kubectl(
            "get", "--raw", f"/apis/{GROUP}/{VERSION}/tracingpolicies", check=False
        ).returncode
        != 0
    )


def test_server_sets_metadata_and_generation_moves_on_spec_changes_only(cluster: Cluster) -> None:
    # metadata.generation: 1 at create, +1 per spec change, unchanged by metadata or status writes;
    # resourceVersion is one global counter; a no-op write changes nothing.
    cluster.install()
    created = cluster.create_policy()
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"]
    labelled = cluster.patch_policy({"metadata": {"labels": {"team": "a"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    noop = cluster.patch_policy({"metadata": {"labels": {"team": "a"}}})
    assert noop["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    status = cluster.patch_policy({"status": {"observedGeneration": 1}}, status=True)
    assert status["metadata"]["generation"] == 1
    changed = cluster.patch_policy(
        {"spec": {"tracepoints": [{"subsystem": "sched", "event": "sched_switch"}]}}
    )
    assert changed["metadata"]["generation"] == 2
    assert changed["status"] == {"observedGeneration": 1}  # the main resource keeps status


def test_status_subresource_splits_both_ways(cluster: Cluster) -> None:
    # With the status subresource, writes to the main resource ignore status and writes to
    # /status ignore everything else.
    cluster.install()
    cluster.create_policy()
    ignored = cluster.patch_policy({"status": {"observedGeneration": 7}})
    assert "status" not in ignored
    spec_ignored = cluster.patch_policy(
        {"spec": {"uprobes": []}, "status": {"observedGeneration": 3}}, status=True
    )
    assert spec_ignored["status"] == {"observedGeneration": 3}
    assert "uprobes" not in spec_ignored["spec"] and spec_ignored["metadata"]["generation"] == 1


def test_conflicts_and_already_exists_are_status_bodies(cluster: Cluster) -> None:
    # Optimistic concurrency: a PUT with a stale resourceVersion is 409 Conflict; a duplicate
    # create is 409 AlreadyExists; errors are kind: Status with reason, code and details.
    cluster.install()
    first = cluster.create_policy()
    cluster.patch_policy({"metadata": {"labels": {"x": "1"}}})
    stale = dict(first)
    with pytest.raises(k8s.ApiException) as caught:
        cluster.custom.replace_cluster_custom_object(GROUP, VERSION, "tracingpolicies", "p", stale)
    body = status_of(caught.value)
    assert (caught.value.status, body["kind"], body["reason"], body["code"]) == (
        409,
        "Status",
        "Conflict",
        409,
    )
    assert body["details"]["name"] == "p"
    with pytest.raises(k8s.ApiException) as caught:
        cluster.create_policy()
    assert status_of(caught.value)["reason"] == "AlreadyExists"
    with pytest.raises(k8s.ApiException) as caught:
        cluster.custom.get_cluster_custom_object(GROUP, VERSION, "tracingpolicies", "absent")
    assert (caught.value.status, status_of(caught.value)["reason"]) == (404, "NotFound")


def test_patch_formats(cluster: Cluster) -> None:
    # RFC 7386 merge patch (null deletes), RFC 6902 JSON patch (a failed test is 422), strategic
    # merge patch for built-in kinds only (415 for custom resources).
    cluster.install()
    cluster.create_policy()
    cluster.patch_policy({"metadata": {"labels": {"a": "1", "b": "2"}}})
    merged = cluster.patch_policy({"metadata": {"labels": {"a": None}}})
    assert merged["metadata"]["labels"] == {"b": "2"}
    failed = cluster.kubectl(
        "patch",
        "wtp",
        "p",
        "--type=json",
        "-p",
        '[{"op":"test","path":"/metadata/labels/b","value":"9"}]',
        check=False,
    )
    assert failed.returncode != 0 and "test operation failed" in failed.stderr
    cluster.kubectl(
        "patch",
        "wtp",
        "p",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/c","value":"3"}]',
    )
    assert cluster.get_policy()["metadata"]["labels"] == {"b": "2", "c": "3"}
    strategic = cluster.kubectl(
        "patch",
        "wtp",
        "p",
        "--type=strategic",
        "-p",
        '{"metadata":{"labels":{"d":"4"}}}',
        check=False,
    )
    assert (
        strategic.returncode != 0 and "strategic merge patch is not supported" in strategic.stderr
    )
    cm = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(
            name="c",
            owner_references=[k8s.V1OwnerReference(api_version="v1", kind="X", name="x", uid="u1")],
        ),
        data={"a": "1"},
    )
    cluster.core.create_namespaced_config_map("default", cm)
    cluster.core.patch_namespaced_config_map(
        "c",
        "default",
        {
            "metadata": {
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "y", "uid": "u2"}]
            },
            "data": {"b": "2"},
        },
    )
    patched = cluster.core.read_namespaced_config_map("c", "default")
    assert [r.uid for r in patched.metadata.owner_references] == ["u1", "u2"]  # merged by uid
    assert patched.data == {"a": "1", "b": "2"}


def test_finalizers_and_owner_garbage_collection(cluster: Cluster) -> None:
    # Deleting an object with finalizers only sets deletionTimestamp (and bumps generation);
    # removing the last finalizer deletes it; dependents with an ownerReference are collected.
    cluster.install()
    created = cluster.create_policy()
    cluster.patch_policy({"metadata": {"finalizers": ["weir.dev/test"]}})
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TracingPolicy",
        "name": "p",
        "uid": created["metadata"]["uid"],
    }
    cluster.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "weir-p", "ownerReferences": [owner]}}
    )
    cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "tracingpolicies", "p")
    marked = cluster.get_policy()
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    assert cluster.core.read_namespaced_config_map("weir-p", "default")
    cluster.patch_policy({"metadata": {"finalizers": None}})
    with pytest.raises(k8s.ApiException):
        cluster.get_policy()
    with pytest.raises(k8s.ApiException) as caught:
        cluster.core.read_namespaced_config_map("weir-p", "default")
    assert caught.value.status == 404


def test_watch_resumes_filters_bookmarks_and_expires(cluster: Cluster) -> None:
    # Watch: resume after a resourceVersion without replay; label and field selectors
    # (spec.nodeName for pods); bookmarks; an expired resourceVersion is HTTP 200 then an
    # ERROR event with code 410; the event's resourceVersion equals the write's.
    ns = "default"
    first = cluster.core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "a", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": []},
        },
    )
    rv = first.metadata.resource_version
    second = cluster.core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "b", "labels": {"app": "y"}},
            "spec": {"nodeName": "n2", "containers": []},
        },
    )
    third = cluster.core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "c", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": []},
        },
    )
    seen = []
    for event in k8s_watch.Watch().stream(
        cluster.core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=1
    ):
        seen.append(
            (
                event["type"],
                event["object"].metadata.name,
                event["object"].metadata.resource_version,
            )
        )
    assert seen == [
        ("ADDED", "b", second.metadata.resource_version),
        ("ADDED", "c", third.metadata.resource_version),
    ]
    by_node = [
        e["object"].metadata.name
        for e in k8s_watch.Watch().stream(
            cluster.core.list_namespaced_pod,
            ns,
            field_selector="spec.nodeName=n1",
            timeout_seconds=1,
        )
    ]
    assert by_node == ["a", "c"]
    by_label = [
        e["object"].metadata.name
        for e in k8s_watch.Watch().stream(
            cluster.core.list_namespaced_pod, ns, label_selector="app in (y)", timeout_seconds=1
        )
    ]
    assert by_label == ["b"]
    events = cluster.raw_watch(
        f"/api/v1/namespaces/{ns}/pods",
        resourceVersion=third.metadata.resource_version,
        allowWatchBookmarks="true",
        timeoutSeconds="2",
    )
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    cluster.emulator.store.compact()
    (error,) = cluster.raw_watch(
        f"/api/v1/namespaces/{ns}/pods", resourceVersion=rv
    )  # HTTP 200, then:
    assert (error["type"], error["object"]["code"], error["object"]["reason"]) == (
        "ERROR",
        410,
        "Expired",
    )


def test_schema_validation_pruning_defaulting_and_cel(cluster: Cluster) -> None:
    # Structural schemas: invalid values are 422 with causes; unknown fields are pruned (a
    # warning) or, with fieldValidation=Strict, refused with 400; defaults are applied; CEL
    # x-kubernetes-validations rules are enforced.
    cluster.install()
    bad = cluster.policy("bad")
    bad["spec"]["tracepoints"][0]["event"] = "Not-Valid"
    with pytest.raises(k8s.ApiException) as caught:
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "tracingpolicies", bad)
    body = status_of(caught.value)
    assert (caught.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.tracepoints[0].event"
    unknown = cluster.policy("unknown")
    unknown["spec"]["surprise"] = True
    created = cluster.custom.create_cluster_custom_object(
        GROUP, VERSION, "tracingpolicies", unknown
    )
    assert "surprise" not in created["spec"]
    strict = cluster.kubectl(
        "apply",
        "--validate=strict",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump(cluster.policy("strict") | {"spec": {"tracepoints": [], "oops": 1}}),
    )
    assert strict.returncode != 0 and 'unknown field "spec.oops"' in strict.stderr
    empty = cluster.policy("empty")
    empty["spec"] = {"tracepoints": []}
    with pytest.raises(k8s.ApiException) as caught:
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, "tracingpolicies", empty)
    assert "a policy needs at least one of kprobes, tracepoints or uprobes" in caught.value.body
    rule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AggregationRule",
        "metadata": {"name": "r"},
        "spec": {"policyRef": {"name": "p"}, "metric": {"name": "m"}},
    }
    stored = cluster.custom.create_cluster_custom_object(GROUP, VERSION, "aggregationrules", rule)
    assert stored["spec"]["maxSeries"] == 10000  # defaulted


def test_kubectl_wait_honours_observed_generation(cluster: Cluster) -> None:
    # kubectl wait --for=condition=Ready: met only when the condition is True for the current
    # generation (a condition observed for an older generation does not count).
    cluster.install()
    cluster.create_policy()
    cluster.patch_policy({"spec": {"uprobes": []}})
    cluster.patch_policy({"metadata": {"labels": {"bump": "1"}}})
    cluster.patch_policy({"spec": {"kprobes": []}})
    generation = cluster.get_policy()["metadata"]["generation"]
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "AllNodesReady",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    cluster.patch_policy(
        {
            "status": {
                "observedGeneration": generation - 1,
                "conditions": [ready | {"observedGeneration": generation - 1}],
            }
        },
        status=True,
    )
    stale = cluster.kubectl(
        "wait", "--for=condition=Ready", "tracingpolicy/p", "--timeout=2s", check=False
    )
    assert stale.returncode != 0

    def later() -> None:
        time.sleep(1)
        cluster.patch_policy(
            {
                "status": {
                    "observedGeneration": generation,
                    "conditions": [ready | {"observedGeneration": generation}],
                }
            },
            status=True,
        )

    threading.Thread(target=later).start()
    assert (
        "condition met"
        in cluster.kubectl(
            "wait", "--for=condition=Ready", "tracingpolicy/p", "--timeout=20s"
        ).stdout
    )


def test_kubectl_delete_waits_for_finalizers(cluster: Cluster) -> None:
    # kubectl delete waits until the object is really gone (a DELETED watch event).
    cluster.install()
    cluster.create_policy()
    cluster.patch_policy({"metadata": {"finalizers": ["weir.dev/x"]}})

    def release() -> None:
        time.sleep(1.5)
        cluster.patch_policy({"metadata": {"finalizers": None}})

    threading.Thread(target=release).start()
    started = time.monotonic()
    cluster.kubectl("delete", "tracingpolicy", "p", "--timeout=20s")
    assert time.monotonic() - started >= 1.4
    assert cluster.kubectl("get", "wtp", "p", check=False).returncode != 0


def test_limit_continue_and_events_with_generate_name(cluster: Cluster) -> None:
    # Lists carry kind, apiVersion and resourceVersion; limit/continue page through them;
    # generateName produces a unique name.
    for n in range(5):
        cluster.core.create_namespaced_config_map("default", {"metadata": {"name": f"c{n}"}})
    page = cluster.core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in page.items] == ["c0", "c1"] and page.metadata._continue
    rest = cluster.core.list_namespaced_config_map(
        "default", limit=10, _continue=page.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["c2", "c3", "c4"]
    raw = json.loads(
        cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/configmaps").stdout
    )
    assert (raw["kind"], raw["apiVersion"]) == ("ConfigMapList", "v1") and raw["metadata"][
        "resourceVersion"
    ]
    event = cluster.core.create_namespaced_event(
        "default",
        {"metadata": {"generateName": "weir-"}, "involvedObject": {"name": "x"}, "reason": "R"},
    )
    assert event.metadata.name.startswith("weir-") and len(event.metadata.name) > 5


def test_server_side_apply_owns_fields_conflicts_and_dry_runs(cluster: Cluster) -> None:
    # Server-side apply: the field manager owns what it applied (managedFields, FieldsV1);
    # another manager changing an owned field conflicts (409) unless forced; fields a manager
    # stops applying are removed; dryRun=All returns the result and stores nothing.
    cluster.install()
    example = str(EXAMPLES / "file-opens.yaml")
    dry = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", example)
    assert "serverside-applied (server dry run)" in dry.stdout
    assert cluster.kubectl("get", "wtp", "file-opens-etc", check=False).returncode != 0
    cluster.kubectl("apply", "--server-side", "-f", example)
    obj = json.loads(
        cluster.kubectl(
            "get", "wtp", "file-opens-etc", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    (entry,) = obj["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == (
        "kubectl",
        "Apply",
        "FieldsV1",
    )
    assert "f:tracepoints" in entry["fieldsV1"]["f:spec"]
    doc = yaml.safe_load(Path(example).read_text().split("---")[0])
    doc["spec"]["tracepoints"][0]["event"] = "sys_enter_open"
    other = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=argocd",
        "-f",
        "-",
        stdin=yaml.safe_dump(doc),
        check=False,
    )
    assert other.returncode != 0 and 'conflict with "kubectl"' in other.stderr
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=argocd",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump(doc),
    )
    forced = json.loads(
        cluster.kubectl(
            "get", "wtp", "file-opens-etc", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert forced["spec"]["tracepoints"][0]["event"] == "sys_enter_open"
    assert [e["manager"] for e in forced["metadata"]["managedFields"]] == ["argocd"]
    doc["metadata"]["labels"] = {"team": "x"}
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd", "-f", "-", stdin=yaml.safe_dump(doc)
    )
    del doc["metadata"]["labels"]
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd", "-f", "-", stdin=yaml.safe_dump(doc)
    )
    final = json.loads(
        cluster.kubectl(
            "get", "wtp", "file-opens-etc", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert "labels" not in final["metadata"]  # no longer applied, owned by nobody else: removed
    assert final["metadata"]["generation"] == 2


def test_unimplemented_features_refuse_loudly(cluster: Cluster) -> None:
    # Where kubesim is not faithful it says so: 501 with a Status body, never a silent success.
    cluster.install()
    cluster.kubectl("apply", "-f", str(EXAMPLES / "file-opens.yaml"))
    status = cluster.kubectl(
        "apply",
        "--server-side",
        "--subresource=status",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump(cluster.policy("file-opens-etc") | {"status": {}}),
    )
    assert (
        status.returncode != 0
        and "does not implement server-side apply on subresources" in status.stderr
    )


def test_fault_injection_throttles_with_retry_after(cluster: Cluster) -> None:
    # Priority and fairness answers 429 TooManyRequests with Retry-After; clients back off.
    cluster.emulator.faults.throttle = 1
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/v1/namespaces", timeout=10)
    assert caught.value.code == 429 and caught.value.headers["Retry-After"] == "1"
    assert json.loads(caught.value.read())["reason"] == "TooManyRequests"
    cluster.emulator.faults.errors = 1
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/v1/namespaces", timeout=10)
    assert caught.value.code == 500
    assert [n.metadata.name for n in cluster.core.list_namespace().items] == [
        "default",
        "kube-system",
    ]


def test_python_dash_m_kubesim_serves_stops_on_sigterm_and_keeps_state(tmp_path: Path) -> None:
    # The command-line server: writes its kubeconfig once it serves, stops on SIGTERM, and with
    # --state-file comes back with the same objects (uid, resourceVersion) after a restart.
    port = free_port()
    config, state = tmp_path / "kubeconfig", tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}

    def start() -> subprocess.Popen[bytes]:
        config.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubesim",
                "--port",
                str(port),
                "--kubeconfig",
                str(config),
                "--state-file",
                str(state),
            ],
            env=env,
        )
        deadline = time.monotonic() + 20
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return proc

    def kubectl(*args: str) -> str:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={config}", f"--cache-dir={tmp_path / 'c'}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    proc = start()
    try:
        assert json.loads(kubectl("version", "-o", "json"))["serverVersion"]["minor"] == "32"
        kubectl("apply", "-f", str(ROOT / "crds"))
        kubectl("apply", "-f", str(EXAMPLES / "segfaults.yaml"))
        before = json.loads(kubectl("get", "wtp", "segfaults", "-o", "json"))["metadata"]
    finally:
        proc.terminate()
    assert proc.wait(timeout=10) == 0
    proc = start()
    try:
        after = json.loads(kubectl("get", "wtp", "segfaults", "-o", "json"))["metadata"]
        assert (after["uid"], after["resourceVersion"]) == (
            before["uid"],
            before["resourceVersion"],
        )
        assert "segfaults" in kubectl("get", "war")
    finally:
        proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_fault_injection_drops_stalls_expires_and_pauses(cluster: Cluster) -> None:
    # Reliability tests need the failures real clusters have: dropped watch connections,
    # silent stalls, forced 410s, a paused server. /kubesim/faults sets them over HTTP.
    def faults(**settings: object) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{cluster.port}/kubesim/faults",
            method="POST",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    results: list[list[dict[str, Any]]] = []
    watcher = threading.Thread(
        target=lambda: results.append(
            cluster.raw_watch("/api/v1/namespaces", resourceVersion="1", timeoutSeconds="30")
        )
    )
    watcher.start()
    time.sleep(0.5)
    started = time.monotonic()
    faults(dropWatches=True)
    watcher.join(timeout=10)
    assert not watcher.is_alive() and time.monotonic() - started < 5  # the stream ended early
    faults(stallWatches=True)
    stalled = cluster.raw_watch(
        "/api/v1/namespaces",
        resourceVersion=cluster.core.list_namespace().metadata.resource_version,
        timeoutSeconds="1",
        allowWatchBookmarks="true",
    )
    cluster.core.create_namespace({"metadata": {"name": "during-stall"}})
    assert stalled == []  # not even bookmarks
    faults(stallWatches=False)
    resume = cluster.core.list_namespace().metadata.resource_version
    faults(expireWatches=True)
    (error,) = cluster.raw_watch("/api/v1/namespaces", resourceVersion=str(int(resume) - 1))
    assert error["object"]["code"] == 410
    faults(pause=True)
    blocked: list[int] = []
    caller = threading.Thread(
        target=lambda: blocked.append(len(cluster.core.list_namespace().items))
    )
    caller.start()
    time.sleep(0.5)
    assert caller.is_alive()  # the request waits while the server is paused
    faults(pause=False)  # over HTTP, while paused
    caller.join(timeout=10)
    assert blocked == [3]


def test_kubectl_create_sends_protobuf_and_succeeds(cluster: Cluster) -> None:
    # kubectl sends the built-in kinds it creates itself as protobuf, as to a real server.
    cluster.kubectl("create", "namespace", "team-a")
    cluster.kubectl("create", "configmap", "c", "-n", "team-a", "--from-literal=k=v")
    cluster.kubectl("create", "secret", "generic", "s", "-n", "team-a", "--from-literal=p=w")
    cluster.kubectl("create", "serviceaccount", "sa", "-n", "team-a")
    assert cluster.core.read_namespace("team-a").metadata.name == "team-a"
    assert cluster.core.read_namespaced_config_map("c", "team-a").data == {"k": "v"}
    assert cluster.core.read_namespaced_secret("s", "team-a").data == {"p": "dw=="}
    assert cluster.core.read_namespaced_service_account("sa", "team-a").metadata.name == "sa"
    refused = cluster.kubectl("create", "deployment", "d", "--image=x", check=False)
    assert refused.returncode != 0 and "protobuf" in refused.stderr  # says what it can't do


def test_openapi_v2_json_and_protobuf(cluster: Cluster) -> None:
    # /openapi/v2 as JSON, and as the protobuf kubectl asks for (its own parser reads it).
    cluster.install()
    swagger = json.loads(cluster.kubectl("get", "--raw", "/openapi/v2").stdout)
    patch = swagger["paths"]["/apis/weir.dev/v1alpha1/tracingpolicies/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "TracingPolicy"
    assert patch["parameters"][0]["name"] == "fieldValidation"
    explained = cluster.kubectl(
        "explain", "--output=plaintext-openapiv2", "tracingpolicies.spec.tracepoints"
    ).stdout
    assert "KIND:     TracingPolicy" in explained and "subsystem\t<string> -required-" in explained


def test_tokens_are_checked_when_issued(tmp_path: Path) -> None:
    # With a token table, an unknown token is 401 (kubectl: "Unauthorized"), a known one works.
    # Over HTTPS: kubectl sends no credentials to an http:// server.
    port = free_port()
    ca, cert, key = certificates(tmp_path, ips=["127.0.0.1"])
    server, emulator = serve(port, Emulator(tokens={"good": "alice"}), tls=(str(cert), str(key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for token, ok in (("good", True), ("bad", False)):
            config = tmp_path / f"kubeconfig-{token}"
            config.write_text(kubeconfig(port, token=token, ca=str(ca)))
            result = subprocess.run(
                ["kubectl", f"--kubeconfig={config}", "get", "namespaces"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (result.returncode == 0) == ok, result.stderr
            if not ok:
                assert "Unauthorized" in result.stderr
        assert emulator.requests_by_user["alice"] > 0
    finally:
        server.shutdown()
        server.server_close()
