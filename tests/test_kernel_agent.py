"""``weir agent``, ``weir check`` and ``weir render`` as a user runs them: real
processes, a real /metrics endpoint over HTTP, real files, real signals."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agenthelpers import openat_policy, policy_yaml, rule_yaml, scrape_http
from conftest import EXAMPLES, ROOT, free_port
from test_kernel_events import BASE, lseek_post, seek_in_new_process

WEIR = [sys.executable, "-m", "weir_cli.main"]


def bpf_program_ids() -> set[int]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
    )
    return {int(p["id"]) for p in json.loads(out.stdout)}


def wait_for(predicate, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, KeyError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def opens_policy(name: str, prefix: str, metric: str) -> str:
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_openat",
                "args": [{"field": "filename", "type": "filename", "label": "path"}],
                "selectors": [
                    {
                        "matchArgs": [{"label": "path", "operator": "Prefix", "values": [prefix]}],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ]
    }
    return policy_yaml(name, yaml.safe_dump(spec), rules=rule_yaml(name, name, metric))


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    data = Path("/tmp") / f"weir-{uuid.uuid4().hex[:12]}"
    data.mkdir()
    (data / "f").write_text("x")
    yield data
    (data / "f").unlink()
    data.rmdir()


def test_agent_serves_metrics_reloads_and_detaches_on_sigterm(
    kernel: None, tmp_path: Path, workdir: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "opens.yaml").write_text(opens_policy("opens", f"{workdir}/", "t_agent_opens"))
    report_file = tmp_path / "report.json"
    port = free_port()
    agent = subprocess.Popen(
        [
            *WEIR,
            "agent",
            "--policies",
            str(policies),
            "--metrics-addr",
            f"127.0.0.1:{port}",
            "--report-file",
            str(report_file),
            "--events-file",
            str(tmp_path / "not-yet" / "events.jsonl"),
            "--interval",
            "0.3",
            "--node-name",
            "n1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                scrape_http(port)["weir_program_verified"][
                    (("hook", "tracepoint:syscalls:sys_enter_openat"), ("policy", "opens"))
                ]
                == 1.0
            ),
            "program verified",
        )
        for path in ("/readyz", "/healthz"):  # next to /metrics, for the chart's probes
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                assert answer.status == 200
        for _ in range(5):
            (workdir / "f").read_text()
        samples = scrape_http(port)
        assert samples["t_agent_opens_total"] == {(): 5.0}
        assert (
            samples["weir_policy_events_total"][
                (
                    ("hook", "tracepoint:syscalls:sys_enter_openat"),
                    ("policy", "opens"),
                    ("stage", "matched"),
                )
            ]
            == 5.0
        )
        # the NodeReport file follows
        report = wait_for(
            lambda: (
                json.loads(report_file.read_text())
                if json.loads(report_file.read_text())["status"]["policies"][0]["savings"][
                    "matched"
                ]
                == 5
                else None
            ),
            "report with 5 matches",
        )
        assert report["kind"] == "NodeReport" and report["metadata"]["name"] == "n1"
        policy = report["status"]["policies"][0]
        assert (policy["name"], policy["state"], policy["programs"][0]["state"]) == (
            "opens",
            "Ready",
            "attached",
        )
        assert policy["programs"][0]["instructions"] > 0
        assert (policy["generation"], len(policy["digest"])) == (1, 16)
        ids = policy["programs"][0]["programIds"]
        # Editing the file is generation 2; another prefix is configuration, not a program.
        (policies / "opens.yaml").write_text(
            opens_policy("opens", f"{workdir}/", "t_agent_opens").replace(
                f"- {workdir}/\n", f"- {workdir}/\n        - /nonexistent/\n"
            )
        )

        def generation_two() -> dict[str, object] | None:
            entry = json.loads(report_file.read_text())["status"]["policies"][0]
            return entry if entry["runningGeneration"] == 2 else None

        edited = wait_for(generation_two, "generation 2 running")
        assert edited["digest"] not in ("", policy["digest"])
        assert edited["programs"][0]["programIds"] == ids
        for _ in range(2):
            (workdir / "f").read_text()
        assert scrape_http(port)["t_agent_opens_total"] == {(): 7.0}  # counting went on
        # an edit reloads: a second file and a changed prefix
        (policies / "more.yaml").write_text(opens_policy("more", f"{workdir}/f", "t_agent_more"))
        wait_for(
            lambda: any(
                ("policy", "more") in k for k in scrape_http(port)["weir_program_verified"]
            ),
            "second policy",
        )
        (workdir / "f").read_text()
        samples = scrape_http(port)
        assert samples["t_agent_more_total"] == {(): 1.0}
        assert samples["t_agent_opens_total"] == {(): 8.0}
        (policies / "more.yaml").unlink()
        wait_for(lambda: "t_agent_more_total" not in scrape_http(port), "policy removed")

        def program_ids() -> set[int] | None:
            policies = json.loads(report_file.read_text())["status"]["policies"]
            if [p["name"] for p in policies] != ["opens"]:
                return None  # the report has not caught up with the removal yet
            return {i for p in policies for prog in p["programs"] for i in prog["programIds"]}

        ours = wait_for(program_ids, "the report without the removed policy")
        assert len(ours) == 2 and ours <= bpf_program_ids()  # the stub and its program
    finally:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, output
    assert "all programs detached" in output
    assert (tmp_path / "not-yet" / "events.jsonl").exists()  # the directory was created
    assert not ours & bpf_program_ids()  # detached and unloaded
    # Before compiling it said Pending (so nobody read a previous run's Ready meanwhile).
    pending = output.index("policy opens: Pending, generation 0 running (latest 1)")
    assert pending < output.index("policy opens: Ready, generation 1 running (latest 1)")
    # The report left behind claims no program: every id above is gone.
    left = json.loads(report_file.read_text())["status"]
    assert [(p["name"], p["state"], p["programs"]) for p in left["policies"]] == [
        ("opens", "Pending", [])
    ]
    ready = next(c for c in left["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AgentStopped")


def test_check_verifies_every_example_and_the_kprobe_variants(kernel: None) -> None:
    result = subprocess.run(
        [*WEIR, "check", *sorted(str(p) for p in EXAMPLES.glob("*.yaml"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    verified = [line for line in result.stdout.splitlines() if ": verified, " in line]
    hooks = sorted(line.split(": ")[2] for line in verified)
    assert hooks == [
        "kprobe:tcp_sendmsg",
        "tracepoint:sched:sched_switch",
        "tracepoint:signal:signal_generate",
        "tracepoint:sock:sock_send_length",
        "tracepoint:syscalls:sys_enter_openat",
    ]
    kprobe = next(line for line in verified if "kprobe:tcp_sendmsg" in line)
    if Path("/sys/bus/event_source/devices/kprobe/type").exists():
        assert kprobe.endswith("; can attach"), kprobe
    else:  # this kernel has no kprobes: valid, said plainly, not a failure
        assert kprobe.endswith(
            "; cannot attach on this kernel: no kprobe support "
            "(no /sys/bus/event_source/devices/kprobe)"
        ), kprobe


def test_check_refuses_hooks_that_can_never_attach(kernel: None, tmp_path: Path) -> None:
    spec = {
        "kprobes": [{"call": "no_such_kernel_function", "args": [{"index": 0, "type": "int"}]}],
        "uprobes": [
            {"path": "/nonexistent/libfoo.so", "symbol": "foo"},
            {"path": "/usr/bin/python3.11", "symbols": ["Py_Initialize", "no_such_symbol_here"]},
        ],
    }
    policy = tmp_path / "never.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "TracingPolicy",
                "metadata": {"name": "never"},
                "spec": spec,
            }
        )
    )
    result = subprocess.run(
        [*WEIR, "check", str(policy)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    said = result.stderr
    assert (
        "kprobe:no_such_kernel_function: verified, " in said
        and "cannot attach: kernel function no_such_kernel_function does not exist on this "
        "kernel (not in /proc/kallsyms)"
        in said
    ), said
    assert "cannot attach: /nonexistent/libfoo.so does not exist on this host" in said
    assert "/usr/bin/python3.11 has no symbol no_such_symbol_here" in said
    assert "uprobe:/usr/bin/python3.11:Py_Initialize: verified, " in result.stdout


def test_check_reports_the_verifier_and_generator_words(kernel: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_openat",
                "args": [{"field": "nosuchfield", "type": "int"}],
            }
        ]
    }
    bad.write_text(policy_yaml("bad", yaml.safe_dump(spec)))
    result = subprocess.run(
        [*WEIR, "check", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert (
        "spec.tracepoints[0].args[0]: syscalls:sys_enter_openat has no field 'nosuchfield'; "
        "its fields are: __syscall_nr (index 4), dfd (index 5), filename (index 6), flags "
        "(index 7), mode (index 8)"
    ) in result.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        policy_yaml(
            "missing", yaml.safe_dump({"tracepoints": [{"subsystem": "nosuch", "event": "thing"}]})
        )
    )
    result = subprocess.run(
        [*WEIR, "check", str(missing)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "this kernel has no tracepoint nosuch:thing" in result.stderr


def test_render_prints_the_fixed_source_and_integer_flags_only(kernel: None) -> None:
    result = subprocess.run(
        [*WEIR, "render", str(EXAMPLES / "file-opens.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (ROOT / "bpf" / "hook.bpf.c").read_text() in result.stdout
    flags = [
        line.split("-D", 1)[1] for line in result.stdout.splitlines() if line.startswith(" *   -D")
    ]
    assert flags and all(
        f.split("=", 1)[1].replace("ULL", "").lstrip("-").removeprefix("0x").isalnum()
        for f in flags
    )
    assert " *   str_lpm matcher=0 prefix_bits=72 bytes=b'/etc/'" in result.stdout
    assert " *   S0_M0_OP = 6" in result.stdout  # the configuration, apart from the shape
    assert os.path.exists(ROOT / "bpf" / "hook.bpf.c")


def test_render_escapes_comment_ends_and_stops_quietly_at_a_closed_pipe(
    kernel: None, tmp_path: Path
) -> None:
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(yaml.safe_dump(openat_policy("hostile", "/tmp/*/x */ int y;")))
    result = subprocess.run(
        [*WEIR, "render", str(hostile)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("---- hostile", 1)[1]
    assert listing.count("*/") == 1 and listing.rstrip().endswith("*/")  # only its own end
    assert r"bytes=b'/tmp/*\x2fx *\x2f int y;'" in listing
    # The reader is gone before the first write (as with `| head` on a slow writer).
    piped = subprocess.Popen(
        [*WEIR, "render", str(hostile)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert piped.stdout is not None and piped.stderr is not None
    piped.stdout.close()
    stderr = piped.stderr.read()
    assert piped.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_keep_attached_leaves_hooks_counting_and_cleanup_detaches_them(
    kernel: None, tmp_path: Path, workdir: Path
) -> None:
    """`weir agent --keep-attached` stops without detaching: opens made while no agent runs
    are counted by the next one; `weir agent --cleanup` detaches and removes the pins."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "kept.yaml").write_text(opens_policy("kept", f"{workdir}/", "t_kept_opens"))
    bpffs = Path("/sys/fs/bpf") / f"weir-test-{uuid.uuid4().hex[:12]}"
    report_file = tmp_path / "report.json"

    def start(*extra: str) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        agent = subprocess.Popen(
            [*WEIR, "agent", "--policies", str(policies), "--metrics-addr", f"127.0.0.1:{port}",
             "--report-file", str(report_file), "--interval", "0.3", "--node-name", "n1",
             "--keep-attached", "--bpffs", str(bpffs), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        verified = (("hook", "tracepoint:syscalls:sys_enter_openat"), ("policy", "kept"))
        wait_for(
            lambda: scrape_http(port)["weir_program_verified"][verified] == 1.0,
            "the policy attached",
        )
        return agent, port

    def stop(agent: subprocess.Popen[str]) -> str:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
        assert agent.returncode == 0, output
        return output

    try:
        agent, port = start()
        for _ in range(2):
            (workdir / "f").read_text()
        assert scrape_http(port)["t_kept_opens_total"] == {(): 2.0}
        policy = wait_for(
            lambda: next(
                (
                    p
                    for p in json.loads(report_file.read_text())["status"]["policies"]
                    if p["state"] == "Ready"
                ),
                None,
            ),
            "the report",
        )
        stub = policy["programs"][0]["programIds"][0]  # the stub, then its program
        output = stop(agent)
        assert "hooks left running, pinned under" in output
        # The report left behind says the policy runs on, with its programs, and where.
        left = json.loads(report_file.read_text())["status"]
        assert [(p["name"], p["state"]) for p in left["policies"]] == [("kept", "Ready")]
        assert left["policies"][0]["programs"][0]["programIds"][0] == stub
        ready = next(c for c in left["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "AgentStoppedHooksAttached")
        assert f"1 hooks stay attached and counting, pinned under {bpffs}" in ready["message"]
        for _ in range(3):  # no agent runs: the pinned hook counts
            (workdir / "f").read_text()
        agent, port = start("--log-format", "json")
        assert scrape_http(port)["t_kept_opens_total"] == {(): 5.0}
        lines = [json.loads(line) for line in stop(agent).splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
        assert any("hooks left running" in x["message"] for x in lines)
        assert stub in bpf_program_ids()  # the stub stayed attached the whole time
        cleanup = subprocess.run(
            [*WEIR, "agent", "--cleanup", "--bpffs", str(bpffs)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cleanup.returncode == 0, cleanup.stderr
        assert "detached 1 hooks" in cleanup.stdout
        assert not bpffs.exists()
        wait_for(lambda: stub not in bpf_program_ids(), "the stub unloaded")
    finally:
        if bpffs.exists():
            from weir_agent.kernel import bpf

            bpf.remove_pins(bpffs)


MARKER = """
import os, sys
null = os.open("/dev/null", os.O_RDONLY)
for line in sys.stdin:
    kind, _, value = line.strip().partition(" ")
    if kind == "open":
        os.close(os.open(value, os.O_RDONLY))
    else:
        for _ in range(int(value)):
            os.lseek(null, {offset}, 0)
    print("done", flush=True)
"""


def test_a_mark_set_before_a_restart_matches_after_it(kernel: None, tmp_path: Path) -> None:
    """The exec tracker's maps (marks, clocks, executables, cgroups) are pinned with the
    hooks: a process marked while one agent ran is matched by the next agent's program."""
    from test_kernel_marks import OFFSET, readers

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("secret", "forget"):
        (scratch / name).write_text("x")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "readers.yaml").write_text(readers(scratch))
    bpffs = Path("/sys/fs/bpf") / f"weir-test-{uuid.uuid4().hex[:12]}"
    cache = tmp_path / "cache"

    def start() -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        agent = subprocess.Popen(
            [*WEIR, "agent", "--policies", str(policies), "--metrics-addr", f"127.0.0.1:{port}",
             "--interval", "0.3", "--node-name", "n1", "--keep-attached", "--bpffs", str(bpffs),
             f"--compile-cache={cache}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200,
                 "the agent ready")  # fmt: skip
        return agent, port

    def stop(agent: subprocess.Popen[str]) -> None:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
        assert agent.returncode == 0, output

    marker = subprocess.Popen(
        [sys.executable, "-c", MARKER.format(offset=OFFSET)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert marker.stdin is not None and marker.stdout is not None

    def step(line: str) -> None:
        marker.stdin.write(line + "\n")  # type: ignore[union-attr]
        marker.stdin.flush()  # type: ignore[union-attr]
        assert marker.stdout.readline().strip() == "done"  # type: ignore[union-attr]

    try:
        agent, port = start()
        step("seek 2")  # not marked yet
        step(f"open {scratch / 'secret'}")  # marked
        step("seek 3")
        assert scrape_http(port)["weir_test_reader_seeks_total"] == {(): 3.0}
        stop(agent)
        assert (bpffs / "tracker" / "weir_marks").exists()
        agent, port = start()
        entries = scrape_http(port)["weir_agent_correlation_entries"][(("map", "marks"),)]
        assert entries >= 1.0  # the mark set before the restart is there
        step("seek 4")  # the new agent's program finds the old mark
        step(f"open {scratch / 'forget'}")
        step("seek 5")  # unmarked: none count
        assert scrape_http(port)["weir_test_reader_seeks_total"] == {(): 7.0}
        stop(agent)
        cleanup = subprocess.run(
            [*WEIR, "agent", "--cleanup", "--bpffs", str(bpffs)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "detached 2 hooks" in cleanup.stdout, cleanup.stdout  # not the tracker
        assert not bpffs.exists()
    finally:
        marker.kill()
        marker.wait(timeout=30)
        if bpffs.exists():
            from weir_agent.kernel import bpf

            bpf.remove_pins(bpffs)


TETRAGON = ROOT / "tests" / "tetragon"


def test_tetragon_style_policies_verify_or_say_why_not(kernel: None) -> None:
    # Policies written the way Tetragon's documentation writes them (apiVersion changed):
    # the observability ones verify; the rest name every field weir does not take.
    def check(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*WEIR, "check", str(TETRAGON / name)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    for name, hooks in (
        ("sys-write.yaml", ["kprobe:sys_write"]),
        ("raw-syscalls.yaml", ["tracepoint:raw_syscalls:sys_enter"]),
        ("uprobe-readline.yaml", ["uprobe:/usr/bin/bash:readline"]),
        ("list-syscalls.yaml", ["kprobe:sys_dup", "kprobe:sys_dup2"]),
        (
            "credentials-and-modules.yaml",
            [
                "kprobe:commit_creds",
                "kretprobe:security_kernel_read_file",
                "kretprobe:security_kernel_read_file:entry",
                "kprobe:bpf_check",
                "kprobe:security_bprm_check",
            ],
        ),
        (
            "raw-and-generated.yaml",
            [
                "tracepoint:raw_syscalls:sys_enter",
                "tracepoint:raw_syscalls:sys_enter#2",
                "raw_tracepoint:sched:sched_process_exec",
            ],
        ),
        (
            "file-monitoring.yaml",
            [
                "kprobe:security_file_permission",
                "kprobe:security_mmap_file",
                "kprobe:security_path_truncate",
            ],
        ),
        (
            "network.yaml",
            ["kprobe:tcp_connect", "kprobe:ip_output", "tracepoint:syscalls:sys_enter_write"],
        ),
        (
            "sock-tracking.yaml",
            [
                "kretprobe:sk_alloc",
                "kretprobe:sk_alloc:entry",
                "kprobe:__sk_free",
                "kprobe:tcp_sendmsg",
            ],
        ),
    ):
        result = check(name)
        assert result.returncode == 0, result.stderr
        verified = [line for line in result.stdout.splitlines() if ": verified, " in line]
        assert [line.split(": ")[2] for line in verified] == hooks, result.stdout
    # FollowFD: weir reads an fd arg's file at each call, so it is accepted, with a warning.
    followed = check("fd-install-file.yaml")
    assert followed.returncode == 0, followed.stderr
    assert "kprobe:fd_install: verified" in followed.stdout
    assert (
        "spec.kprobes[0].selectors[0].matchActions[0].action: FollowFD has nothing to do in "
        "weir, ignored"
    ) in followed.stderr
    enforce = check("enforce.yaml")
    assert enforce.returncode == 1
    assert (
        "spec.lsmhooks[0].selectors[0].matchActions[0].action: enforcement is not supported: "
        "weir observes; remove action Override"
    ) in enforce.stderr
    assert (
        "spec.kprobes[0].selectors[0].matchActions[0].action: enforcement is not supported: "
        "weir observes; remove action Sigkill"
    ) in enforce.stderr


def test_the_agent_writes_posted_events_to_a_rotated_file(kernel: None, tmp_path: Path) -> None:
    # The role as run: `weir agent` with a small ring buffer and a file rotated by size;
    # every posted event is in the files, none of which passed the size.
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "seeks.yaml").write_text(lseek_post("seeks", {"action": "Post"}))
    events_file = tmp_path / "events" / "events.jsonl"
    port = free_port()
    agent = subprocess.Popen(
        [
            *WEIR,
            "agent",
            "--policies",
            str(policies),
            "--metrics-addr",
            f"127.0.0.1:{port}",
            "--events-file",
            str(events_file),
            "--events-file-max-size",
            "4Ki",
            "--events-file-backups",
            "9",
            "--ring-buffer-size",
            "64Ki",
            "--interval",
            "0.3",
            "--no-table",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        posted = (("hook", "tracepoint:syscalls:sys_enter_lseek"), ("policy", "seeks"))
        wait_for(lambda: scrape_http(port)["weir_program_verified"][posted] == 1.0, "verified")
        seek_in_new_process(40)

        def written() -> list[dict[str, object]] | None:
            found = [
                json.loads(line)
                for path in events_file.parent.iterdir()
                for line in path.read_text().splitlines()
            ]
            return found if len(found) == 40 else None

        lines = wait_for(written, "40 events in the files")
        assert {e["args"]["offset"] for e in lines} == {BASE}  # type: ignore[index]
        assert len({e["pid"] for e in lines}) == 1
        files = sorted(p.name for p in events_file.parent.iterdir())
        assert files[0] == "events.jsonl" and len(files) >= 3, files
        assert all(p.stat().st_size <= 4096 for p in events_file.parent.iterdir())
        stage = (*posted, ("stage", "posted"))
        assert scrape_http(port)["weir_policy_events_total"][stage] == 40.0
    finally:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, output


def test_the_readme_shows_what_make_run_shows(kernel: None) -> None:
    # The README's table is captured from the agent on examples/policies (make docs). Counts
    # move from run to run; which policies run, their states, hooks, the verifier's
    # instruction counts and the failures' words must be what the agent shows now.
    spec = importlib.util.spec_from_file_location("generated", ROOT / "scripts" / "generated.py")
    assert spec is not None and spec.loader is not None
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    ((name, begin, end, capture),) = generated.CAPTURED

    def stable(text: str) -> list[list[str]]:
        lines = text.strip("`\n").splitlines()
        table = [line.split()[:5] for line in lines if line and not line[0].isspace()]
        return [row for row in table if row] + [[line] for line in lines if line[:1].isspace()]

    shown = (ROOT / name).read_text().partition(begin)[2].partition(end)[0]
    assert stable(shown) == stable(capture()), "README's run table is stale: run `make docs`"


def test_an_edit_is_applied_when_the_file_changes_not_at_the_next_interval(
    kernel: None, tmp_path: Path, workdir: Path
) -> None:
    # --interval 300: only inotify can explain each edit counting within a minute.
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "opens.yaml").write_text(opens_policy("opens", "/nonexistent/", "t_wake_opens"))
    port = free_port()
    agent = subprocess.Popen(
        [*WEIR, "agent", "--policies", str(policies), "--metrics-addr", f"127.0.0.1:{port}",
         "--interval", "300", "--no-table"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip

    def edit(prefix: str) -> None:
        # Written beside, then renamed into place, as editors and ConfigMap volumes do.
        staged = tmp_path / "staged.yaml"
        staged.write_text(opens_policy("opens", prefix, "t_wake_opens"))
        os.rename(staged, policies / "opens.yaml")

    def opens() -> float:
        return float(scrape_http(port).get("t_wake_opens_total", {}).get((), 0.0))

    def counts_an_open() -> bool:
        before = opens()
        (workdir / "f").read_text()
        return opens() == before + 1

    try:
        wait_for(lambda: scrape_http(port)["weir_program_verified"], "program verified")
        assert not counts_an_open()
        edit(f"{workdir}/")
        wait_for(counts_an_open, "the edited prefix counting", timeout=60)
        edit("/nonexistent/")
        wait_for(lambda: not counts_an_open(), "the edit back applied", timeout=60)
    finally:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, output
