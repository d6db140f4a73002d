"""The node agent put together: the one place that wires sources, engine and outputs.

``weir agent`` (commands.py), the image and the tests all come here. ``Settings`` is what
the command line says; ``Agent`` builds the parts once and runs the loop: take the policy
source's latest set (a directory, or the operator's ConfigMaps filtered by this node's
labels), apply what changed to the engine, update pod scopes, write the NodeReport when it
changed, and on SIGTERM/SIGINT detach (or, with pins, leave attached) every program.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from prometheus_client import CollectorRegistry

from weir_agent import version
from weir_agent.identity import cgroups, metadata
from weir_agent.kernel import bpf, loading
from weir_agent.kernel import headers as kernel_headers
from weir_agent.outputs import eventing, exporting, reporting, retention, serving, table
from weir_agent.outputs.retention import Retention
from weir_agent.runtime import engine
from weir_agent.sources import directory
from weir_agent.spec import formats
from weir_api import documents, problems
from weir_api.policies import TracingPolicy
from weir_api.reports import NodeReport

if TYPE_CHECKING:  # Kubernetes mode imports the client when it starts, not before
    from weir_agent.cluster.connecting import Cluster
    from weir_agent.sources import configmaps

log = logging.getLogger("weir.agent")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What ``weir agent`` was asked to do (one field per command-line option)."""

    policies: Path | None  # standalone: a directory of YAML; None in Kubernetes mode
    kubernetes: bool = False
    namespace: str = "weir-system"
    report_interval: float = 10.0
    heartbeat: float = 60.0
    tracefs: Path = Path("/sys/kernel/tracing")
    metrics_addr: str
    report_file: Path | None
    events_file: str | None
    events_file_max_size: int = 0
    events_file_backups: int = 3
    ring_buffer_size: int = 2 * 2**20
    node: str
    interval: float
    table: bool
    stall_seconds: float = 120.0
    pin_root: Path | None = None
    series_retention: Retention = retention.DEFAULT
    compile_cache: Path | None = None  # compiled programs kept on disk (kernel/loading.py)


def run(settings: Settings) -> int:
    """Run the agent until SIGTERM or SIGINT; the process's exit status."""
    if settings.policies is not None and not settings.policies.is_dir():
        print(f"weir agent: {settings.policies} is not a directory", file=sys.stderr)
        return 2
    if settings.events_file == "-":  # events go to stdout: no table there
        settings = dataclasses.replace(settings, table=False)
    return Agent(settings).run()


class Agent:
    """The parts of one agent process and its loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.wake = threading.Event()  # a policy source changed: look at once
        loading.CACHE_DIR = settings.compile_cache
        self.headers = loading.headers_state()
        _log_headers(self.headers)
        self.core = engine.Engine(
            node_name=settings.node,
            layouts=functools.partial(formats.read_format, tracefs=settings.tracefs),
            pin_root=settings.pin_root,
            ringbuf_pages=max(settings.ring_buffer_size // os.sysconf("SC_PAGE_SIZE"), 1),
        )
        index = cgroups.CgroupIndex()
        index.births = self.core.cgroup_path  # cgroups made since the last scan
        self.resolver = metadata.CgroupResolver(index)
        registry = CollectorRegistry(auto_describe=False)
        self.collector = exporting.WeirCollector(
            engine=self.core,
            resolver=self.resolver,
            node=settings.node,
            headers=self.headers,
            index=index,
            retention=settings.series_retention,
        )
        registry.register(self.collector)
        self.health = serving.Health(stall_seconds=settings.stall_seconds)
        self.server, self.server_thread = serving.serve(
            addr=settings.metrics_addr, registry=registry, health=self.health
        )
        log.info("serving /metrics, /readyz and /healthz on http://%s", settings.metrics_addr)
        self.sink: TextIO | eventing.RotatingFile | None = None
        if settings.events_file == "-":
            self.sink = sys.stdout
        elif settings.events_file:
            self.sink = eventing.RotatingFile(
                Path(settings.events_file),
                max_bytes=settings.events_file_max_size,
                backups=settings.events_file_backups,
            )
        self.writer = eventing.EventWriter(
            core=self.core, resolver=self.resolver, node=settings.node, out=self.sink
        )
        self.pump = threading.Thread(
            target=self.writer.run, args=(self.stop,), name="weir-events", daemon=True
        )
        self.previous: NodeReport | None = None
        self.cluster: Cluster | None = None
        self.source: configmaps.NodePolicies | None = None
        self.generations = directory.Generations()  # standalone: files carry no generation
        self.seen: object = None  # the source's version last applied

    def run(self) -> int:
        settings = self.settings

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: exiting", signum)
            self.stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.pump.start()
        if settings.kubernetes:
            from weir_agent.cluster.connecting import Cluster
            from weir_agent.sources import configmaps

            self.cluster = Cluster.connect(
                namespace=settings.namespace,
                node=settings.node,
                report_interval=settings.report_interval,
                heartbeat=settings.heartbeat,
                stop=self.stop,
                wake=self.wake,
            )
            self.source = configmaps.NodePolicies(self.cluster)
            resolver = self.cluster.pod_resolver(self.resolver)
            self.collector.resolver = self.writer.resolver = resolver
            self.collector.publisher = self.cluster.publisher
        detach = True
        try:
            self._loop()
        finally:
            detach = self._shut_down()
        if detach:
            log.info("stopped; all programs detached")
        else:
            log.info(
                "stopped; hooks left running, pinned under %s (`weir agent --cleanup` detaches)",
                settings.pin_root,
            )
        return 0

    def _poll(self) -> tuple[object, list[documents.Parsed]]:
        if self.source is not None:
            return self.source.poll()
        policies = self.settings.policies
        assert policies is not None
        current = directory.fingerprint(policies)
        if current == self.seen:
            return current, []
        return current, self.generations.stamp(directory.read_directory(policies))

    def _loop(self) -> None:
        """Each pass applies what the source changed, at once when a watch or inotify event
        wakes it; reports and the table go out when something was applied, else at most once
        per ``--interval``, which also paces the rereads of a source that cannot wake us."""
        pruned = False  # pins of hooks no policy has are removed once the source is complete
        due = 0.0  # when the next report and table are due
        if self.source is None:
            assert self.settings.policies is not None
            threading.Thread(
                target=directory.follow,
                args=(self.settings.policies,),
                kwargs={"wake": self.wake, "stop": self.stop},
                name="weir-inotify",
                daemon=True,
            ).start()
        while not self.stop.is_set():
            self.wake.clear()  # before reading the source: a later change wakes the next pass
            self.health.beat()
            # Whether the source was complete before this poll (the watcher may finish its
            # first list while we apply what was there before it).
            complete = self.source is None or self.source.synced()
            current, parsed = self._poll()
            changed = current != self.seen
            if changed:
                self.seen = current
                self._apply(parsed)
                if complete:
                    self.health.ready.set()
                    if not pruned:
                        self.core.prune_pins()
                        pruned = True
            if self.cluster is not None:
                self.core.update_scopes(self.cluster.scopes())
            if self.settings.series_retention.seconds:  # retired whether scraped or not
                self.collector.sweep(scraped=False)
            now = time.monotonic()
            if changed or now >= due:
                self._emit(self._report())
                if self.settings.table:
                    self._draw()
                due = now + self.settings.interval
            self.wake.wait(max(0.0, due - time.monotonic()))

    def _apply(self, parsed: list[documents.Parsed]) -> None:
        for item in parsed:
            if not item.ok:
                log.warning(
                    "%s: %s %s invalid:\n%s",
                    item.source,
                    item.kind,
                    item.name,
                    problems.render(item.problems),
                )
        if self.source is not None and self.cluster is not None:
            parsed, self.cluster.not_targeted = self.source.targeted(parsed)
            self.cluster.remember_scopes(parsed)
        # Say what is about to be compiled before compiling it.
        self._emit(self._report(_generations(parsed)))
        self.core.apply(parsed)

    def _report(self, pending: dict[str, int] | None = None) -> NodeReport:
        report = reporting.from_engine(
            self.core,
            node=self.settings.node,
            kernel=platform.release(),
            headers=self.headers,
            agent_version=version.VERSION,
            previous=self.previous,
            not_targeted=self.cluster.not_targeted if self.cluster is not None else None,
        )
        return reporting.with_pending(report, pending) if pending else report

    def _emit(self, report: NodeReport) -> None:
        if self.cluster is not None:
            self.cluster.publisher.publish(report)
        if report != self.previous:
            if self.settings.report_file is not None:
                _write_atomically(self.settings.report_file, json.dumps(report.to_wire(), indent=2))
            if not self.settings.table:
                _log_changes(self.previous, report)
            self.previous = report

    def _draw(self) -> None:
        assert self.previous is not None
        settings = self.settings
        screen = table.render(self.previous, failures=table.failure_lines(self.previous))
        sys.stdout.write(
            "\x1b[H\x1b[2J" + f"weir agent on {settings.node} — {settings.policies} — "
            f"metrics http://{settings.metrics_addr}/metrics\n\n" + screen + "\n"
        )
        sys.stdout.flush()

    def _shut_down(self) -> bool:
        """Stop the threads, detach or leave pinned, leave a last report; whether detached."""
        self.stop.set()
        self.pump.join(timeout=5)
        final = self._report()
        cluster = self.cluster
        detach = self.settings.pin_root is None or (cluster is not None and cluster.uninstalling())
        self.core.close(detach=detach)
        self.writer.pump()
        if self.sink is not None and self.sink is not sys.stdout:
            self.sink.close()
        # Detached, the report left behind claims no program; left pinned, it says which
        # hooks run on (the operator keeps counting the node as running them).
        gone = reporting.stopped(final, pinned=None if detach else str(self.settings.pin_root))
        if self.settings.report_file is not None:
            _write_atomically(self.settings.report_file, json.dumps(gone.to_wire(), indent=2))
        if cluster is not None:
            cluster.publisher.publish(gone, last=True)
        self.server.shutdown()
        self.server_thread.join(timeout=5)
        return detach


def cleanup(*, bpffs: Path) -> int:
    """Detach every hook pinned under ``bpffs`` and remove the pins."""
    if not bpffs.exists():
        print(f"weir agent --cleanup: nothing pinned under {bpffs}")
        return 0
    hooks = [p for p in bpffs.iterdir() if p.is_dir() and p.name != engine.TRACKER_PIN]
    bpf.remove_pins(bpffs)
    print(f"weir agent --cleanup: detached {len(hooks)} hooks and removed {bpffs}")
    return 0


def _log_headers(headers: str) -> None:
    if headers == "missing":
        log.error("%s", kernel_headers.locate(platform.release()).problem)
    elif headers == "fallback":
        log.info(
            "kernel headers for %s are another version's (fallback): programs take only uapi "
            "definitions from them; struct layouts come from the kernel's BTF",
            platform.release(),
        )
    else:
        log.info("kernel headers: %s", headers)


def _generations(parsed: Sequence[documents.Parsed]) -> dict[str, int]:
    """name -> generation of the valid policies about to be applied."""
    return {
        item.name: item.obj.metadata.generation
        for item in parsed
        if isinstance(item.obj, TracingPolicy) and item.ok
    }


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text + "\n")
    os.replace(temporary, path)


def _log_changes(previous: NodeReport | None, report: NodeReport) -> None:
    before = {
        p.name: (p.state, p.running_generation)
        for p in (previous.status.policies if previous and previous.status else [])
    }
    assert report.status is not None
    for policy in report.status.policies:
        now = (policy.state, policy.running_generation)
        if before.get(policy.name) != now:
            log.info(
                "policy %s: %s, generation %d running (latest %d), %d programs",
                policy.name,
                policy.state,
                policy.running_generation,
                policy.generation,
                len(policy.programs),
            )
            for program in policy.programs:
                if program.state == "failed":
                    log.warning(
                        "  %s: %s failed: %s\n%s",
                        program.hook,
                        program.failure_phase,
                        program.message,
                        program.verifier_log,
                    )
