"""The ``weir`` console script, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

WEIR = [sys.executable, "-m", "weir_cli.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WEIR, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_lists_the_subcommands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("agent", "check", "render", "operator", "crds"):
        assert command in result.stdout


def test_crds_writes_what_is_committed(tmp_path: Path) -> None:
    result = run("crds", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for path in tmp_path.iterdir():
        assert path.read_text() == (ROOT / "crds" / path.name).read_text()


def test_check_reports_field_paths_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: weir.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {name: bad}\n"
        "spec:\n  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_openat\n"
        "    args: [{field: filename, type: filename}]\n"
        "    selectors: [{matchArgs: [{index: 5, operator: Prefix, values: [/etc]}]}]\n"
    )
    result = run("check", "--no-kernel", str(bad))
    assert result.returncode == 1
    assert (
        "spec.tracepoints[0].selectors[0].matchArgs[0]: no arg with index 5 in this hook's args"
        in result.stderr
    )
    missing = run("check", "--no-kernel", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_check_warns_when_a_hook_would_post_every_call(kernel: None, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy.yaml"
    noisy.write_text(
        "apiVersion: weir.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {name: noisy}\n"
        "spec:\n  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_getppid\n"
    )
    result = run("check", "--no-kernel", str(noisy))  # tracefs is read for the layout
    assert result.returncode == 0, result.stderr
    assert (
        "tracepoint:syscalls:sys_enter_getppid has no selectors, so every call is posted"
        in result.stderr
    )


def test_json_log_lines_carry_time_level_logger_message_and_the_object() -> None:
    import logging

    from weir_cli import logs

    record = logging.LogRecord("kopf.objects", logging.WARNING, "x", 1, "retrying %s", ("a",), None)
    record.k8s_ref = {"kind": "TracingPolicy", "name": "p", "apiVersion": "weir.dev/v1alpha1"}
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["time"].endswith("Z") and line["level"] == "WARNING"
    assert (line["logger"], line["message"]) == ("kopf.objects", "retrying a")
    assert line["object"] == {"kind": "TracingPolicy", "name": "p"}
