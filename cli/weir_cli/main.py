"""``weir``: the one console script, with a subcommand per role.

The parser is built when ``main`` runs, never at import. Each subcommand
imports its package only when chosen, so ``weir crds`` needs no bcc and
``weir operator`` never loads the agent.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weir",
        description="Kubernetes-native eBPF observability: filter and aggregate in the kernel, "
        "and report how much was held back.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = sub.add_parser("agent", help="run the node agent (standalone or in Kubernetes)")
    agent.add_argument("--policies", type=Path, help="directory of policy YAML (standalone)")
    agent.add_argument(
        "--metrics-addr",
        default="127.0.0.1:9400",
        help="HOST:PORT for /metrics, /readyz and /healthz",
    )
    agent.add_argument("--report-file", type=Path, help="write the NodeReport JSON here")
    agent.add_argument("--events-file", help="write JSON event lines here (- for stdout)")
    agent.add_argument(
        "--events-file-max-size",
        type=_size,
        default=0,
        metavar="SIZE",
        help="rotate --events-file before it passes SIZE (e.g. 100Mi; 0: never)",
    )
    agent.add_argument(
        "--events-file-backups",
        type=int,
        default=3,
        metavar="N",
        help="rotated files kept: FILE.1 (newest) to FILE.N",
    )
    agent.add_argument(
        "--ring-buffer-size",
        type=_ring_size,
        default=_ring_size("2Mi"),
        metavar="SIZE",
        help="each posting hook's ring buffer (a power of two, 4Ki or more; locked kernel "
        "memory, charged to the agent's cgroup)",
    )
    agent.add_argument("--node-name", help="this node's name (default: the hostname)")
    agent.add_argument(
        "--kubernetes",
        action="store_true",
        help="read policies from the operator's ConfigMaps, publish a NodeReport",
    )
    agent.add_argument("--namespace", default="weir-system", help="the operator's namespace")
    agent.add_argument(
        "--tracefs",
        type=Path,
        default=Path("/sys/kernel/tracing"),
        help="where tracefs is mounted (e.g. /host/sys/kernel/tracing in a pod)",
    )
    agent.add_argument(
        "--report-interval",
        type=float,
        default=10.0,
        help="publish the NodeReport at most this often (seconds)",
    )
    agent.add_argument(
        "--heartbeat-interval",
        type=float,
        default=60.0,
        help="publish the NodeReport at least this often, changed or not (seconds); the "
        "operator counts a node whose report is older than its stale age as Unknown",
    )
    agent.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between refreshes of the report and table (a changed policy source "
        "wakes the agent at once)",
    )
    agent.add_argument(
        "--stall-seconds",
        type=float,
        default=120.0,
        help="/healthz fails when the main loop made no progress for this long",
    )
    agent.add_argument(
        "--series-retention",
        default="5m",
        metavar="RETENTION",
        help="how long a gone container's series stay (its final counts under its own "
        "labels) before they are deleted from the kernel: a duration (90s, 5m) or a number "
        "of scrapes (2scrapes)",
    )
    agent.add_argument(
        "--compile-cache",
        default="/var/cache/weir",
        metavar="DIR",
        help="keep compiled programs here, by sources, flags, kernel, headers and bcc, so "
        "that a restart compiles nothing (created mode 0700; one not this user's alone is "
        'not used; "" turns it off)',
    )
    agent.add_argument(
        "--no-table", action="store_true", help="log lines instead of the live table"
    )
    agent.add_argument(
        "--keep-attached",
        action="store_true",
        help="pin every hook's programs and maps under --bpffs and leave them running when "
        "the agent stops, so a restart or upgrade loses no event and counts go on (in "
        "Kubernetes they are detached when the agent's DaemonSet is being deleted)",
    )
    agent.add_argument(
        "--bpffs",
        type=Path,
        default=Path("/sys/fs/bpf/weir"),
        help="where --keep-attached pins (a directory in a bpf filesystem)",
    )
    _log_format(agent)
    agent.add_argument(
        "--cleanup",
        action="store_true",
        help="detach every hook pinned under --bpffs, remove the pins and exit",
    )

    check = sub.add_parser(
        "check", help="validate, generate, compile and verify policies on this kernel"
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument(
        "--no-kernel", action="store_true", help="validate and generate only; load nothing"
    )

    render = sub.add_parser("render", help="print the C generated for a policy")
    render.add_argument("file", type=Path, metavar="FILE")

    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument("--namespace", default="weir-system", help="where ConfigMaps go")
    _log_format(operator)
    operator.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="URL kopf serves its liveness probe on ('' to disable)",
    )
    operator.add_argument(
        "--metrics-addr",
        default="0.0.0.0:9401",
        help="HOST:PORT to serve the operator's own /metrics on ('' to disable)",
    )
    operator.add_argument(
        "--peering",
        default="",
        metavar="NAME",
        help="run as one of several replicas: the ClusterKopfPeering NAME makes the oldest "
        "live one active, the others standbys (default: standalone, the only operator)",
    )
    operator.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        metavar="SECONDS",
        help="how long a replica that stopped renewing stays active in its peers' eyes (a "
        "standby takes over within it when the active replica dies)",
    )

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", type=Path, default=Path("crds"), help="directory to write")
    return parser


_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _size(text: str) -> int:
    """Bytes from ``N``, ``NKi``, ``NMi`` or ``NGi`` (Kubernetes' binary suffixes)."""
    number = text.rstrip("KMGi")
    unit = text[len(number) :]
    if not number.isdigit() or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: give bytes as N, NKi, NMi or NGi")
    return int(number) * _UNITS[unit]


def _ring_size(text: str) -> int:
    size = _size(text)
    if size < 4096 or size & (size - 1):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a ring buffer is a power of two of 4 KiB pages (e.g. 1Mi, 4Mi, 16Mi)"
        )
    return size


def _log_format(role: argparse.ArgumentParser) -> None:
    from weir_cli import logs

    role.add_argument(
        "--log-format", choices=logs.FORMATS, default="text", help="log lines, or JSON objects"
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`weir render ... | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from weir_cli import logs

    logs.configure(getattr(args, "log_format", "text"))
    if args.command == "crds":
        from weir_cli import crds_command

        return crds_command.run(out=args.out)
    if args.command in {"agent", "check", "render"}:
        from weir_agent import commands

        return commands.run(args)
    if args.command == "operator":
        from weir_operator import running

        return running.run(
            namespace=args.namespace,
            liveness=args.liveness or None,
            metrics_addr=args.metrics_addr or None,
            peering=args.peering or None,
            peering_lifetime=args.peering_lifetime,
        )
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
