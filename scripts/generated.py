"""Write the generated sections of hand-written files, each between its begin and end
markers, from the one source it comes from: the limits table in docs/api.md and the
capacities in bpf/weir.h from weir_api.limits; the operator's and agent's command lines in
docs/operator.md from the chart (`helm template`, default values); what `weir check` says of
a wrong policy, in the README, and the agent's and operator's flags, in docs/, from running
them. Run by `make docs` (and
`make crds`); tests/test_crds.py fails when a section and its source disagree.

    python scripts/generated.py            # rewrite every section
    python scripts/generated.py --capture  # and the ones captured from a running agent (root)
    python scripts/generated.py --bench    # only the README's tables of the last make bench
    python scripts/generated.py --check    # exit 1 and name the stale files
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from weir_api import limits

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / ".tools" / "helm"  # make setup fetches it


def chart_commands() -> str:
    """The roles' command lines exactly as the chart renders them (default values)."""
    rendered = subprocess.run(
        [str(HELM), "template", "weir", str(ROOT / "charts" / "weir"), "-n", "weir-system"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    lines = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            words = ["weir", *container.get("args", [])]
            groups = (shlex.join(words[i : i + 3]) for i in range(0, len(words), 3))
            lines.append(" \\\n    ".join(groups))
    return "```sh\n" + "\n".join(sorted(lines, reverse=True)) + "\n```\n"


BAD_POLICY = """\
apiVersion: weir.dev/v1alpha1
kind: TracingPolicy
metadata: {name: opens}
spec:
  tracepoints:
    - subsystem: syscalls
      event: sys_enter_openat
      args: [{field: filename, type: filename, label: path}]
      selectors:
        - matchArgs: [{label: path, operator: GT, values: ["/etc/"]}]
"""


def check_example() -> str:
    """What `weir check` says of a policy with a wrong operator, as it prints it."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "opens.yaml").write_text(BAD_POLICY)
        result = subprocess.run(
            [sys.executable, "-m", "weir_cli.main", "check", "--no-kernel", "opens.yaml"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
    return f"```\n$ weir check --no-kernel opens.yaml\n{result.stdout}{result.stderr}```\n"


def run_table(seconds: float = 5.0) -> str:
    """What `make run` shows a few seconds after it is ready: the agent on
    examples/policies, its table and failures (needs root and BPF: ``--capture``)."""
    from weir_agent.outputs import table
    from weir_api.reports import NodeReport

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "nodereport.json"
        agent = subprocess.Popen(
            [sys.executable, "-m", "weir_cli.main", "agent", "--policies",
             str(ROOT / "examples" / "policies"), "--report-file", str(report), "--no-table",
             f"--metrics-addr=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while not _ready(port):
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the agent did not become ready")
                time.sleep(0.2)
            time.sleep(seconds)
            shown = NodeReport.model_validate(json.loads(report.read_text()))
        finally:
            agent.terminate()
            agent.wait(timeout=60)
    return "```\n" + table.render(shown, failures=table.failure_lines(shown)) + "\n```\n"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def help_text(command: str) -> Callable[[], str]:
    """`weir COMMAND --help`, as it prints it (100 columns wide)."""

    def text() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "weir_cli.main", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "100"},
        )
        return f"```\n$ weir {command} --help\n{result.stdout}```\n"

    return text


# file, begin marker, end marker, what goes between them
SECTIONS: list[tuple[str, str, str, Callable[[], str]]] = [
    ("docs/api.md", "<!-- limits:begin -->\n", "<!-- limits:end -->\n", limits.markdown),
    ("bpf/weir.h", "/* capacities:begin */\n", "/* capacities:end */\n", limits.c_defines),
    ("README.md", "<!-- check-example:begin -->\n", "<!-- check-example:end -->\n", check_example),
    (
        "docs/agent.md",
        "<!-- agent-help:begin -->\n",
        "<!-- agent-help:end -->\n",
        help_text("agent"),
    ),
    (
        "docs/operator.md",
        "<!-- operator-help:begin -->\n",
        "<!-- operator-help:end -->\n",
        help_text("operator"),
    ),
    (
        "docs/operator.md",
        "<!-- chart-args:begin -->\n",
        "<!-- chart-args:end -->\n",
        chart_commands,
    ),
]


def bench_results() -> str:
    """The tables of the last `make bench` (bench/out/results.md without its title, then
    bench/out/edits.md, kube_edits.md and startup.md)."""
    out = ROOT / "bench" / "out"
    text = (out / "results.md").read_text().partition("\n")[2]
    parts = [text, *((out / n).read_text() for n in ("edits.md", "kube_edits.md", "startup.md"))]
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


BENCH = [("README.md", "<!-- bench:begin -->\n", "<!-- bench:end -->\n", bench_results)]
# Captured from a running agent (root, BPF): rewritten by --capture (make docs); a kernel test
# (test_kernel_agent.py) compares what does not change from run to run.
CAPTURED: list[tuple[str, str, str, Callable[[], str]]] = [
    ("README.md", "<!-- run-table:begin -->\n", "<!-- run-table:end -->\n", run_table),
]


def rewrite(text: str, begin: str, end: str, body: str) -> str:
    head, _, rest = text.partition(begin)
    if not rest or end not in rest:
        raise SystemExit(f"no {begin.strip()} ... {end.strip()} section")
    _, _, tail = rest.partition(end)
    return head + begin + body + end + tail


def stale() -> list[str]:
    """The files whose sections differ from what their sources say now."""
    out = []
    for name, begin, end, make in SECTIONS:
        text = (ROOT / name).read_text()
        if rewrite(text, begin, end, make()) != text:
            out.append(name)
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        names = stale()
        for name in names:
            print(f"{name}: a generated section is stale: run `make docs`", file=sys.stderr)
        return 1 if names else 0
    chosen = SECTIONS + (CAPTURED if "--capture" in argv else [])
    for name, begin, end, make in BENCH if "--bench" in argv else chosen:
        path = ROOT / name
        text = path.read_text()
        path.write_text(rewrite(text, begin, end, make()))
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
