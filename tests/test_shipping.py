"""What ships besides the code: the Grafana dashboard, the shell scripts, the kind e2e."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT, require
from weir_agent.outputs import exporting

DASHBOARD = ROOT / "charts" / "weir" / "dashboards" / "weir.json"
# Every metric family the agent exports itself (exporting.py), plus the example rules' metrics.
KNOWN = {
    "weir_policy_events_total",
    "weir_policy_dropped_events_total",
    "weir_policy_exported_bytes_total",
    "weir_policy_raw_bytes_total",
    "weir_policy_saved_ratio",
    "weir_program_verified",
    "weir_program_instructions",
    "weir_program_run_time_seconds_total",
    "weir_program_runs_total",
    "weir_agent_info",
    "weir_egress_sent_bytes_total",
    "weir_tcp_egress_bytes_total",
    "weir_file_opens_total",
    "weir_segfaults_total",
}


def test_dashboard_structure_and_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("saved", "verifier", "dropped", "top pods"):
        assert topic in titles
    source = (ROOT / "node-agent" / "weir_agent" / "outputs" / "exporting.py").read_text()
    for panel in panels:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            for metric in re.findall(r"\b(weir_[a-z_]+)\b", expr):
                assert metric in KNOWN, f"{panel['title']}: unknown metric {metric}"
    for family in ("weir_policy_events", "weir_policy_exported_bytes", "weir_program_verified"):
        assert f'"{family}"' in source  # the names the dashboard relies on are the exporter's
    assert exporting.STAGES


def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck is not installed (make setup installs it)")
    scripts = [str(p) for p in (ROOT / "scripts").glob("*.sh")] + [str(ROOT / ".ci" / "run")]
    result = subprocess.run([str(shellcheck), *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_e2e_kind_skips_cleanly_without_a_container_engine() -> None:
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if shutil.which("kind", path=env["PATH"]) and shutil.which("docker", path=env["PATH"]):
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
        require(probe.returncode != 0, "a container engine is present: run `make e2e-kind` itself")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "e2e-kind.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("e2e-kind: SKIPPED: ")


def test_a_wheel_install_compiles_with_its_own_bpf_sources(tmp_path: Path, kernel: None) -> None:
    # A non-editable install: the C sources travel as package data, so `weir check` run from
    # anywhere compiles and verifies an example with nothing from this source tree.
    wheels = ROOT / ".weir" / "wheels"
    require(wheels.is_dir(), "no .weir/wheels (make images or make wheels builds them)")
    built = tmp_path / "built"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(built), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(built.glob("weir-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for source in ("hook.bpf.c", "stub.bpf.c", "exec.bpf.c", "weir.h"):
        assert f"weir_agent/bpf/{source}" in names
    venv = tmp_path / "venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(built),
            "--find-links",
            str(wheels),
            "weir",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    example = tmp_path / "file-opens.yaml"
    shutil.copy(ROOT / "examples" / "policies" / "file-opens.yaml", example)
    result = subprocess.run(
        [str(venv / "bin" / "weir"), "check", str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "sys_enter_openat: verified" in result.stdout
