"""Prometheus for real: Debian's promtool accepts the agent's exposition, and a real
Prometheus server scraping a running agent stores exactly the count a workload produced."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agenthelpers import openat_policy, policy_yaml, rule_yaml
from conftest import ROOT, free_port, require


@pytest.fixture
def agent(kernel: None, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    data = Path("/tmp") / f"weir-prom-{uuid.uuid4().hex[:10]}"
    data.mkdir()
    (data / "f").write_text("x")
    policies = tmp_path / "policies"
    policies.mkdir()
    spec = openat_policy("prom", f"{data}/")["spec"]
    (policies / "p.yaml").write_text(
        policy_yaml(
            "prom",
            yaml.safe_dump(spec),
            rules=rule_yaml("prom", "prom", "weir_prom_opens", group_by="[container]"),
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weir_cli.main",
            "agent",
            "--policies",
            str(policies),
            "--metrics-addr",
            f"127.0.0.1:{port}",
            "--interval",
            "0.3",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    b"weir_program_verified{"
                    in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
                ):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield port, data
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        (data / "f").unlink()
        data.rmdir()


def tool(name: str) -> str:
    path = shutil.which(name)
    require(
        path is not None, f"{name} is not installed (Debian package prometheus; run `make setup`)"
    )
    assert path is not None
    return path


def test_promtool_accepts_the_exposition(agent: tuple[int, Path]) -> None:
    port, data = agent
    (data / "f").read_text()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_prometheus_scrapes_the_exact_count(agent: tuple[int, Path], tmp_path: Path) -> None:
    port, data = agent
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "weir", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(9):
            (data / "f").read_text()
        query = urllib.parse.urlencode({"query": 'sum(weir_prom_opens_total{job="weir"})'})
        deadline, value = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                answer = json.loads(
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{prom_port}/api/v1/query?{query}", timeout=5
                    ).read()
                )
                results = answer["data"]["result"]
                value = float(results[0]["value"][1]) if results else None
            except OSError:
                value = None
            if value == 9.0:
                break
            time.sleep(0.5)
        assert value == 9.0
        matched = urllib.parse.urlencode(
            {"query": 'weir_policy_events_total{policy="prom",stage="matched"}'}
        )
        answer = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{matched}").read()
        )
        assert float(answer["data"]["result"][0]["value"][1]) == 9.0
    finally:
        server.terminate()
        server.wait(timeout=30)
