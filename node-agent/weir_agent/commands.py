"""The agent's subcommands: ``agent``, ``check`` and ``render``.

``weir agent --policies DIR`` runs the engine on one host with no Kubernetes:
it loads every policy in DIR, reloads when files change, serves /metrics,
writes its NodeReport to a file when it changed, shows a live table on a
terminal (plain log lines otherwise), and on SIGTERM/SIGINT detaches every
program before it exits.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from weir_api import documents, problems
from weir_api.reports import NodeReport

log = logging.getLogger("weir.agent")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("WEIR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if args.command == "check":
        return check(files=args.files, kernel=not args.no_kernel)
    if args.command == "render":
        return render(file=args.file)
    if args.cleanup:
        return cleanup(bpffs=args.bpffs)
    if (args.policies is None) == (not args.kubernetes):
        print(
            "weir agent: give either --policies DIR (standalone) or --kubernetes", file=sys.stderr
        )
        return 2
    return agent(
        policies=args.policies,
        kubernetes=args.kubernetes,
        namespace=args.namespace,
        report_interval=args.report_interval,
        heartbeat=args.heartbeat_interval,
        tracefs=args.tracefs,
        metrics_addr=args.metrics_addr,
        report_file=args.report_file,
        events_file=args.events_file,
        events_file_max_size=args.events_file_max_size,
        events_file_backups=args.events_file_backups,
        ring_buffer_size=args.ring_buffer_size,
        node=args.node_name or socket.gethostname(),
        interval=args.interval,
        table=sys.stdout.isatty() and not args.no_table,
        stall_seconds=args.stall_seconds,
        pin_root=args.bpffs if args.keep_attached else None,
    )


def cleanup(*, bpffs: Path) -> int:
    """Detach every hook pinned under ``bpffs`` and remove the pins."""
    from weir_agent import loading

    if not bpffs.exists():
        print(f"weir agent --cleanup: nothing pinned under {bpffs}")
        return 0
    hooks = [p for p in bpffs.iterdir() if p.is_dir()]
    loading.remove_pins(bpffs)
    print(f"weir agent --cleanup: detached {len(hooks)} hooks and removed {bpffs}")
    return 0


def _read(files: list[Path]) -> tuple[list[documents.Parsed], int]:
    parsed: list[documents.Parsed] = []
    unreadable = 0
    for path in files:
        try:
            parsed.extend(documents.parse_text(path.read_text(), source=str(path)))
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror}", file=sys.stderr)
            unreadable += 1
    return documents.cross_check(parsed), unreadable


def check(*, files: list[Path], kernel: bool = True) -> int:
    """Validate, generate, compile and verify (never attach); non-zero on any failure."""
    parsed, failed = _read(files)
    rules = [p.obj for p in parsed if p.ok and p.kind == "AggregationRule"]
    for item in parsed:
        label = f"{item.source}: {item.kind or '?'} {item.name or '?'}"
        if not item.ok:
            failed += 1
            print(f"{label}: invalid\n{problems.render(item.problems)}", file=sys.stderr)
            continue
        if item.kind != "TracingPolicy":
            print(f"{label}: valid")
            continue
        failed += _check_policy(item, rules, label, kernel=kernel)
    return 1 if failed else 0


def _check_policy(
    item: documents.Parsed, rules: Sequence[object], label: str, *, kernel: bool
) -> int:
    from weir_agent import btf, codegen, formats, namespaces
    from weir_api import checks, limits
    from weir_api.aggregations import AggregationRule
    from weir_api.policies import TracingPolicy

    policy = item.obj
    assert isinstance(policy, TracingPolicy)
    mine = [
        r for r in rules if isinstance(r, AggregationRule) and r.spec.policy_ref.name == policy.name
    ]
    layouts = {
        t.target_id(): formats.read_format(t.subsystem, t.event)
        for t in policy.spec.tracepoint_hooks()
    }
    # Offline (no kernel) nothing is compiled: any layout will do to check the rest.
    kernel_layout = btf.kernel_layout() if kernel else btf.zero_layout()
    generated = codegen.generate(
        policy,
        mine,
        layouts=layouts,
        kernel_layout=kernel_layout,
        host_namespaces=namespaces.host_namespaces(),
        kernel_types=btf.kernel_types() if kernel else None,
    )
    if generated.problems:
        print(f"{label}: cannot generate\n{problems.render(generated.problems)}", file=sys.stderr)
        return 1
    for warning in checks.policy_warnings(policy.spec):
        print(f"{label}: warning: {warning}", file=sys.stderr)
    for hook in policy.spec.hooks():
        if not hook.selectors:
            print(
                f"{label}: warning: {hook.hook_id()} has no selectors, so every call is posted "
                "to user space (Tetragon's default); add a selector with matchActions "
                "[{action: NoPost}] to count and aggregate only",
                file=sys.stderr,
            )
    total, _ = checks.memory(policy.spec, [(r.name, r.spec) for r in mine])
    print(
        f"{label}: maps take up to {total / 2**20:.1f} MiB "
        f"(budget {limits.POLICY_MEMORY_BUDGET / 2**20:.0f} MiB per policy)"
    )
    if not kernel:
        print(f"{label}: valid ({len(generated.programs)} programs generated)")
        return 0
    from weir_agent import attachable, loading

    failed = 0
    if any(p.needs_tracker for p in generated.programs):
        loading.exec_tracker()
    for program in generated.programs:
        try:
            loaded = loading.compile_and_load(program)
        except loading.LoadError as error:
            failed = 1
            print(
                f"{label}: {program.hook}: {error.phase} failed: {error.message}\n{error.log}",
                file=sys.stderr,
            )
            continue
        loaded.close()
        cannot, notes = attachable.check(program)
        verified = (
            f"{label}: {program.hook}: verified, {loaded.instructions} instructions, "
            f"{loaded.translated_bytes} bytes, compile {loaded.compile_ms:.0f} ms"
        )
        if cannot:
            failed = 1
            print(f"{verified}; cannot attach: {'; '.join(cannot)}", file=sys.stderr)
        elif notes:
            print(f"{verified}; {'; '.join(notes)}")
        else:
            print(f"{verified}; can attach")
    return failed


def render(*, file: Path) -> int:
    """Print the C source and, per hook, the flags and map seeds that specialise it."""
    from weir_agent import abi, btf, codegen, formats, namespaces
    from weir_api.aggregations import AggregationRule
    from weir_api.policies import TracingPolicy

    parsed, failed = _read([file])
    bad = [p for p in parsed if not p.ok]
    if failed or bad:
        for item in bad:
            print(f"{item.source}: invalid\n{problems.render(item.problems)}", file=sys.stderr)
        return 1
    rules = [p.obj for p in parsed if isinstance(p.obj, AggregationRule)]
    print(f"/* {codegen.HOOK_SOURCE}: the program every hook runs, configured below */")
    print(codegen.source_text(codegen.HOOK_SOURCE))
    status = 0
    enums = set(abi.enum_flags())
    for item in parsed:
        if not isinstance(item.obj, TracingPolicy):
            continue
        policy = item.obj
        layouts = {
            t.target_id(): formats.read_format(t.subsystem, t.event)
            for t in policy.spec.tracepoint_hooks()
        }
        generated = codegen.generate(
            policy,
            [r for r in rules if r.spec.policy_ref.name == policy.name],
            layouts=layouts,
            kernel_layout=btf.kernel_layout(),
            host_namespaces=namespaces.host_namespaces(),
            kernel_types=btf.kernel_types(),
        )
        for problem in generated.problems:
            print(f"{item.source}: {problem}", file=sys.stderr)
            status = 1
        for program in generated.programs:
            print(f"\n/* ---- {policy.name} {program.hook} (shape {program.shape_digest()}) ----")
            print(" * shape: the compiler's flags (integers only):")
            for name, value in program.shape_flags():
                if name not in enums:
                    print(f" *   -D{name}={value}")
            print(" * configuration: the config map (an edit to these is a map write):")
            for name, number in program.config().items():
                if number:
                    print(f" *   {name} = {number}")
            print(" * map seeds (written after load, never part of the program):")
            for matcher, data, bits in program.seeds.strings:
                print(f" *   str_lpm matcher={matcher} prefix_bits={bits} bytes={_listed(data)}")
            for matcher, data, bits in program.seeds.addresses:
                print(f" *   addr_lpm matcher={matcher} prefix_bits={bits} addr={data.hex()}")
            for matcher, value in program.seeds.integers:
                print(f" *   int_set matcher={matcher} value={value}")
            for matcher, low, high in program.seeds.ranges:
                print(f" *   range_lpm matcher={matcher} keys {low}..{high}")
            for index, bound in program.seeds.bounds:
                print(f" *   bounds[{index}] = {bound}")
            print(" */")
    return status


def _listed(data: bytes) -> str:
    """A bytes literal that cannot end the listing's C comment."""
    return repr(data).replace("*/", "*\\x2f")


def agent(
    *,
    policies: Path | None,
    kubernetes: bool = False,
    namespace: str = "weir-system",
    report_interval: float = 10.0,
    heartbeat: float = 60.0,
    tracefs: Path = Path("/sys/kernel/tracing"),
    metrics_addr: str,
    report_file: Path | None,
    events_file: str | None,
    node: str,
    events_file_max_size: int = 0,
    events_file_backups: int = 3,
    ring_buffer_size: int = 2 * 2**20,
    interval: float,
    table: bool,
    stall_seconds: float = 120.0,
    pin_root: Path | None = None,
) -> int:
    from prometheus_client import CollectorRegistry

    from weir_agent import (
        cgroups,
        engine,
        eventing,
        exporting,
        formats,
        loading,
        metadata,
        reporting,
        serving,
        sources,
        version,
    )
    from weir_agent import headers as hdrs
    from weir_agent import table as tables

    if policies is not None and not policies.is_dir():
        print(f"weir agent: {policies} is not a directory", file=sys.stderr)
        return 2
    headers = loading.headers_state()
    if headers == "missing":
        log.error("%s", hdrs.locate(platform.release()).problem)
    elif headers == "fallback":
        log.info(
            "kernel headers for %s are another version's (fallback): programs take only uapi "
            "definitions from them; struct layouts come from the kernel's BTF",
            platform.release(),
        )
    else:
        log.info("kernel headers: %s", headers)
    core = engine.Engine(
        node_name=node,
        layouts=functools.partial(formats.read_format, tracefs=tracefs),
        pin_root=pin_root,
        ringbuf_pages=max(ring_buffer_size // os.sysconf("SC_PAGE_SIZE"), 1),
    )
    resolver = metadata.CgroupResolver(cgroups.CgroupIndex())
    registry = CollectorRegistry(auto_describe=False)
    collector = exporting.WeirCollector(engine=core, resolver=resolver, node=node, headers=headers)
    registry.register(collector)
    health = serving.Health(stall_seconds=stall_seconds)
    server, thread = serving.serve(addr=metrics_addr, registry=registry, health=health)
    log.info("serving /metrics, /readyz and /healthz on http://%s", metrics_addr)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: exiting", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink: TextIO | eventing.RotatingFile | None = None
    if events_file == "-":
        sink = sys.stdout
        table = False
    elif events_file:
        sink = eventing.RotatingFile(
            Path(events_file), max_bytes=events_file_max_size, backups=events_file_backups
        )
    writer = eventing.EventWriter(core=core, resolver=resolver, node=node, out=sink)
    pump = threading.Thread(target=writer.run, args=(stop,), name="weir-events", daemon=True)
    pump.start()
    previous: NodeReport | None = None
    cluster = (
        _Cluster.connect(
            namespace=namespace,
            node=node,
            report_interval=report_interval,
            heartbeat=heartbeat,
            stop=stop,
        )
        if kubernetes
        else None
    )
    if cluster is not None:
        collector.resolver = writer.resolver = cluster.pod_resolver(resolver)
        collector.publisher = cluster.publisher

    def report_now(pending: dict[str, int] | None = None) -> NodeReport:
        report = reporting.from_engine(
            core,
            node=node,
            kernel=platform.release(),
            headers=headers,
            agent_version=version.VERSION,
            previous=previous,
            not_targeted=cluster.not_targeted if cluster is not None else None,
        )
        return reporting.with_pending(report, pending) if pending else report

    def emit(report: NodeReport) -> None:
        nonlocal previous
        if cluster is not None:
            cluster.publisher.publish(report)
        if report != previous:
            if report_file is not None:
                _write_atomically(report_file, json.dumps(report.to_wire(), indent=2))
            if not table:
                _log_changes(previous, report)
            previous = report

    seen: object = None
    pruned = False  # pins of hooks no policy has are removed once the source is complete
    generations = sources.Generations()  # standalone: files carry no generation
    try:
        while not stop.is_set():
            health.beat()
            not_targeted: dict[str, int] = {}
            # Whether the source was complete before this poll (the watcher may finish its
            # first list while we apply what was there before it).
            complete = cluster is None or cluster.synced()
            if cluster is not None:
                current, parsed = cluster.poll()
            else:
                assert policies is not None
                current = sources.fingerprint(policies)
                parsed = (
                    generations.stamp(sources.read_directory(policies)) if current != seen else []
                )
            if current != seen:
                seen = current
                for item in parsed:
                    if not item.ok:
                        log.warning(
                            "%s: %s %s invalid:\n%s",
                            item.source,
                            item.kind,
                            item.name,
                            problems.render(item.problems),
                        )
                if cluster is not None:
                    parsed, not_targeted = cluster.targeted(parsed)
                    cluster.not_targeted = not_targeted
                    cluster.remember_scopes(parsed)
                # Say what is about to be compiled before compiling it.
                emit(report_now(_generations(parsed)))
                core.apply(parsed)
                if complete:
                    health.ready.set()
                    if not pruned:
                        core.prune_pins()
                        pruned = True
            if cluster is not None:
                core.update_scopes(cluster.scopes())
            emit(report_now())
            if table:
                assert previous is not None
                screen = tables.render(previous, failures=tables.failure_lines(previous))
                sys.stdout.write(
                    "\x1b[H\x1b[2J" + f"weir agent on {node} — {policies} — "
                    f"metrics http://{metrics_addr}/metrics\n\n" + screen + "\n"
                )
                sys.stdout.flush()
            stop.wait(interval)
    finally:
        stop.set()
        pump.join(timeout=5)
        final = report_now()
        detach = pin_root is None or (cluster is not None and cluster.uninstalling())
        core.close(detach=detach)
        writer.pump()
        if sink is not None and sink is not sys.stdout:
            sink.close()
        # Every program is detached now: the report left behind claims none.
        gone = reporting.stopped(final)
        if report_file is not None:
            _write_atomically(report_file, json.dumps(gone.to_wire(), indent=2))
        if cluster is not None:
            cluster.publisher.publish(gone)
        server.shutdown()
        thread.join(timeout=5)
    if detach:
        log.info("stopped; all programs detached")
    else:
        log.info(
            "stopped; hooks left running, pinned under %s (`weir agent --cleanup` detaches)",
            pin_root,
        )
    return 0


class _Cluster:
    """Kubernetes mode: ConfigMap source, node labels and the NodeReport publisher."""

    def __init__(
        self,
        *,
        core: Any,
        custom: Any,
        namespace: str,
        node: str,
        report_interval: float,
        heartbeat: float,
        stop: threading.Event,
        apps: Any = None,
    ) -> None:
        from weir_agent import apierrors, publishing, watching

        self.errors = apierrors.ApiErrors()
        self.core = core
        self.apps = apps
        self.namespace = namespace
        self.node = node
        self.source = watching.ConfigMapSource(core=core, namespace=namespace, errors=self.errors)
        self.publisher = publishing.NodeReportPublisher(
            core=core,
            custom=custom,
            node=node,
            min_interval=report_interval,
            heartbeat=heartbeat,
            errors=self.errors,
        )
        self.not_targeted: dict[str, int] = {}
        self.labels: dict[str, str] = {}
        self.stop = stop
        self.selectors: dict[str, tuple[Any, Any, Any]] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.namespaces_followed = False  # the Namespace watch starts with the first selector
        self.pods: Any = None
        self.node_lock = threading.Lock()
        self.node_labels: dict[str, str] = {}
        self.node_synced = threading.Event()
        threading.Thread(
            target=self.source.run, args=(stop,), name="weir-configmaps", daemon=True
        ).start()
        threading.Thread(target=self._follow_node, name="weir-node", daemon=True).start()

    @classmethod
    def connect(
        cls,
        *,
        namespace: str,
        node: str,
        report_interval: float,
        heartbeat: float,
        stop: threading.Event,
    ) -> _Cluster:
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        else:
            api = config.new_client_from_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        return cls(
            core=client.CoreV1Api(api),
            custom=client.CustomObjectsApi(api),
            apps=client.AppsV1Api(api),
            namespace=namespace,
            node=node,
            report_interval=report_interval,
            heartbeat=heartbeat,
            stop=stop,
        )

    def uninstalling(self) -> bool:
        """Whether this agent's DaemonSet (WEIR_DAEMONSET, set by the chart) is gone or
        being deleted, or the agent may no longer read it: an uninstall, not a restart or
        a rolling update, so its hooks are detached."""
        from kubernetes.client.exceptions import ApiException

        name = os.environ.get("WEIR_DAEMONSET")
        if not name or self.apps is None:
            return False
        try:
            found = self.apps.read_namespaced_daemon_set(name, self.namespace, _request_timeout=10)
        except ApiException as error:
            # Gone (404), or so are the agent's Role (403) or service account (401): helm
            # deletes the DaemonSet first and the RBAC after it, before the pod stops.
            if error.status in (401, 403, 404):
                return True
            self.errors.record("read DaemonSet", error)
            log.warning("cannot read DaemonSet %s (%s): leaving hooks attached", name, error)
            return False
        except Exception as error:  # the API may be unreachable
            self.errors.record("read DaemonSet", error)
            log.warning("cannot read DaemonSet %s (%s): leaving hooks attached", name, error)
            return False
        return found.metadata.deletion_timestamp is not None

    def pod_resolver(self, fallback: Any) -> Any:
        """Labels from the pods on this node (watched from now on)."""
        from weir_agent import pods

        self.pods = pods.PodResolver(core=self.core, node=self.node, index=fallback.index)
        self.pods.errors = self.errors
        threading.Thread(
            target=self.pods.run, args=(self.stop,), name="weir-pods", daemon=True
        ).start()
        return self.pods

    def remember_scopes(self, parsed: list[documents.Parsed]) -> None:
        from weir_api.policies import TracingPolicy

        self.selectors = {
            item.name: (
                item.obj.spec.pod_selector,
                item.obj.spec.namespace_selector,
                item.obj.spec.container_selector,
            )
            for item in parsed
            if isinstance(item.obj, TracingPolicy) and item.obj.spec.scoped()
        }

    def scopes(self) -> dict[str, set[int]]:
        """policy -> cgroup ids of the containers its podSelector/namespaceSelector pick."""
        if not self.selectors:
            return {}
        if any(ns is not None for _, ns, _ in self.selectors.values()):
            self._follow_namespaces()
        with self.node_lock:
            namespace_labels = dict(self.namespace_labels)
        out = {}
        for name, (pod, ns, container) in self.selectors.items():
            containers = self.pods.selected(pod, ns, namespace_labels, container)
            out[name] = self.pods.index.ids_of(containers)
            log.debug("scope %s: containers %s -> cgroups %s", name, containers, out[name])
        return out

    def _follow_namespaces(self) -> None:
        """Namespace labels for namespaceSelectors, from a watch started the first time a
        policy has one (never a poll); while the API is away the last known labels stay."""
        if self.namespaces_followed:
            return
        self.namespaces_followed = True
        from weir_agent import watching

        def listed(items: list[Any]) -> None:
            with self.node_lock:
                self.namespace_labels = {
                    n.metadata.name: dict(n.metadata.labels or {}) for n in items
                }

        def changed(kind: str, item: Any) -> None:
            with self.node_lock:
                if kind == "DELETED":
                    self.namespace_labels.pop(item.metadata.name, None)
                else:
                    self.namespace_labels[item.metadata.name] = dict(item.metadata.labels or {})

        threading.Thread(
            target=watching.follow,
            args=(self.core.list_namespace,),
            kwargs={
                "on_list": listed,
                "on_event": changed,
                "stop": self.stop,
                "what": "Namespaces",
                "errors": self.errors,
            },
            name="weir-namespaces",
            daemon=True,
        ).start()

    def synced(self) -> bool:
        """The policy ConfigMaps and this Node's labels have both been listed once."""
        return self.source.synced.is_set() and self.node_synced.is_set()

    def poll(self) -> tuple[object, list[documents.Parsed]]:
        # "synced" is part of the version: a namespace with no policy ConfigMaps at all
        # changes nothing else when its first list arrives, and readiness waits for it.
        synced = self.synced()
        version, parsed = self.source.snapshot()
        with self.node_lock:
            self.labels = dict(self.node_labels)
        return ("configmaps", version, synced, tuple(sorted(self.labels.items()))), parsed

    def _follow_node(self) -> None:
        """This node's labels, from a watch of its own Node (a field selector), never a
        poll. Before the first list no nodeSelector is judged; with no Node object (a
        host outside the cluster's nodes) there are no labels; while the API is away the
        last known labels stay."""
        from weir_agent import watching

        def listed(items: list[Any]) -> None:
            with self.node_lock:
                self.node_labels = dict(items[0].metadata.labels or {}) if items else {}
            self.node_synced.set()

        def changed(kind: str, item: Any) -> None:
            with self.node_lock:
                self.node_labels = {} if kind == "DELETED" else dict(item.metadata.labels or {})

        watching.follow(
            self.core.list_node,
            field_selector=f"metadata.name={self.node}",
            on_list=listed,
            on_event=changed,
            stop=self.stop,
            what="this Node",
            errors=self.errors,
        )

    def targeted(
        self, parsed: list[documents.Parsed]
    ) -> tuple[list[documents.Parsed], dict[str, int]]:
        """Drop policies whose nodeSelector excludes this node (and their rules)."""
        from weir_api.policies import TracingPolicy

        excluded: dict[str, int] = {}
        for item in parsed:
            selector = item.obj.spec.node_selector if isinstance(item.obj, TracingPolicy) else None
            if selector is not None and not selector.matches(self.labels):
                assert isinstance(item.obj, TracingPolicy)
                excluded[item.name] = item.obj.metadata.generation
        from weir_api.aggregations import AggregationRule

        def excluded_item(item: documents.Parsed) -> bool:
            if isinstance(item.obj, AggregationRule):
                return item.obj.spec.policy_ref.name in excluded
            return item.kind == "TracingPolicy" and item.name in excluded

        kept = [item for item in parsed if not excluded_item(item)]
        return kept, excluded


def _generations(parsed: Sequence[documents.Parsed]) -> dict[str, int]:
    """name -> generation of the valid policies about to be applied."""
    from weir_api.policies import TracingPolicy

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
