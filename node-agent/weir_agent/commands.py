"""The agent's subcommands: ``agent``, ``check`` and ``render``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weir_api import documents, problems


def run(args: argparse.Namespace) -> int:
    if args.command == "check":
        return check(files=args.files)
    print(f"weir {args.command}: arrives with the node agent issue (#3)", file=sys.stderr)
    return 2


def check(*, files: list[Path]) -> int:
    failed = 0
    parsed: list[documents.Parsed] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror}", file=sys.stderr)
            failed += 1
            continue
        parsed.extend(documents.parse_text(text, source=str(path)))
    for item in documents.cross_check(parsed):
        label = f"{item.source}: {item.kind or '?'} {item.name or '?'}"
        if item.ok:
            print(f"{label}: valid")
        else:
            failed += 1
            print(f"{label}: invalid\n{problems.render(item.problems)}", file=sys.stderr)
    return 1 if failed else 0
