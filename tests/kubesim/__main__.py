"""``python -m kubesim --port N --kubeconfig FILE``: serve until SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from kubesim.server import kubeconfig, serve


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="kubesim", description="a test-only Kubernetes API server"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--kubeconfig", type=Path, required=True, help="written once the server listens"
    )
    parser.add_argument(
        "--state-file", type=Path, help="load state from it at start, save it at stop"
    )
    args = parser.parse_args()
    server, emulator = serve(args.port)
    if args.state_file is not None and args.state_file.exists():
        emulator.store.restore(json.loads(args.state_file.read_text()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    args.kubeconfig.write_text(kubeconfig(args.port))
    stop.wait()
    server.shutdown()
    if args.state_file is not None:
        args.state_file.write_text(json.dumps(emulator.store.dump()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
