"""The roles as the chart runs them: command, args and env come from `helm template`.

A test of the operator or the agent starts ``weir ...`` as a process with exactly
the container args and env the chart renders (``$(VAR)`` expanded and
``fieldRef`` env filled in the way the kubelet does), never from a hand-written
copy. Test-only settings go through the chart's own values (``extraArgs``,
``metricsPort``, ``rollupSeconds``, ...), as a user would set them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from conftest import ROOT, free_port, require

CHART = ROOT / "charts" / "weir"
HELM = ROOT / ".tools" / "helm"
WEIR = ROOT / ".venv" / "bin" / "weir"  # the console script the image's ENTRYPOINT runs
NAMESPACE = "weir-system"


BPFFS = Path("/sys/fs/bpf/weir-tests")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    require(HELM.exists(), "helm is not in .tools/ (make setup fetches it with npm)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def render(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> list[Any]:
    """`helm template` with these values (as a values file); the rendered documents. An
    operator's metrics port is a free one unless given: tests run many operators on one
    host."""
    chosen = copy.deepcopy(dict(values or {}))
    chosen.setdefault("operator", {}).setdefault("metricsPort", free_port())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(chosen, file)
        file.flush()
        out = helm("template", "weir", str(CHART), "--namespace", namespace, "-f", file.name)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def workload(docs: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_spec(docs: Sequence[dict[str, Any]], role: str) -> dict[str, Any]:
    """The pod template of the operator Deployment or the agent DaemonSet."""
    kind = {"operator": "Deployment", "agent": "DaemonSet"}[role]
    spec: dict[str, Any] = workload(docs, kind, f"weir-{role}")["spec"]["template"]["spec"]
    return spec


def container_env(container: Mapping[str, Any], *, fields: Mapping[str, str]) -> dict[str, str]:
    """The container's env as the kubelet sets it; ``fields`` answers fieldRefs
    (e.g. {"spec.nodeName": "n1"})."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = fields[path]
    return env


def expand(arg: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args ($$ escapes; unknown names stay as written)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg)


def command(
    docs: Sequence[dict[str, Any]], role: str, *, fields: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """argv (the image's entrypoint ``weir`` + the chart's args) and the chart's env."""
    container = pod_spec(docs, role)["containers"][0]
    env = container_env(container, fields=fields)
    argv = [str(WEIR), *(expand(a, env) for a in container["args"])]
    if role == "agent" and "spec.nodeName" in fields:
        # Each node has its own bpf filesystem, mounted at /sys/fs/bpf (hostPath): the
        # nodes this host plays get a directory each, where their agents pin.
        argv.append(f"--bpffs={BPFFS}/node-{fields['spec.nodeName']}/weir")
    return argv, env


def start(
    docs: Sequence[dict[str, Any]],
    role: str,
    *,
    fields: Mapping[str, str],
    env: Mapping[str, str],
    log: Path,
) -> subprocess.Popen[bytes]:
    """Start the role as a process, output to ``log``; ``env`` is the outside world (e.g.
    KUBECONFIG for a process that is not in a pod)."""
    argv, chart_env = command(docs, role, fields=fields)
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd="/",
            env={**os.environ, **env, **chart_env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def running(
    docs: Sequence[dict[str, Any]],
    role: str,
    *,
    kubeconfig: Path,
    log: Path,
    fields: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The role as a process against ``kubeconfig`` for the block; then SIGTERM, and (when
    the block succeeded) it must have exited 0, its log in the failure otherwise."""
    process = start(docs, role, fields=fields or {}, env={"KUBECONFIG": str(kubeconfig)}, log=log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()


def scrape(
    docs: Sequence[dict[str, Any]], role: str, port_name: str = "metrics"
) -> dict[str, float]:
    """GET the role's /metrics on the container port the chart names; every sample as
    ``name{label="value",...}`` -> value (labels sorted)."""
    from prometheus_client.parser import text_string_to_metric_families

    container = pod_spec(docs, role)["containers"][0]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == port_name)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples
