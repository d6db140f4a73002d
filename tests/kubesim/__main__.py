"""``python -m kubesim --port N --kubeconfig FILE``: serve until SIGTERM."""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    server, _ = serve(args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    args.kubeconfig.write_text(kubeconfig(args.port))
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
