"""The agent's subcommands as the command line gives them: ``agent``, ``check``, ``render``.

Only argument handling lives here. ``weir agent --policies DIR`` (standalone) and
``weir agent --kubernetes`` run the agent (app.py); ``check`` and ``render`` judge and
show a policy file (checking.py); ``--cleanup`` detaches what a previous agent left pinned.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("WEIR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if args.command == "check":
        from weir_agent import checking

        return checking.check(files=args.files, kernel=not args.no_kernel)
    if args.command == "render":
        from weir_agent import checking

        return checking.render(file=args.file)
    from weir_agent import app

    if args.cleanup:
        return app.cleanup(bpffs=args.bpffs)
    if (args.policies is None) == (not args.kubernetes):
        print(
            "weir agent: give either --policies DIR (standalone) or --kubernetes", file=sys.stderr
        )
        return 2
    from weir_agent.outputs.retention import Retention

    try:
        retention = Retention.parse(args.series_retention)
    except ValueError as error:
        print(f"weir agent: --series-retention {error}", file=sys.stderr)
        return 2
    return app.run(
        app.Settings(
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
            series_retention=retention,
            compile_cache=Path(args.compile_cache) if args.compile_cache else None,
        )
    )
