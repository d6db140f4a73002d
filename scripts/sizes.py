"""Sizes of a package, to keep modules and functions small: how many modules, the largest
module, the longest functions, and what passes the project's limits (about 600 lines a module
and 80 a function, generated tables exempt).

    python scripts/sizes.py node-agent/weir_agent operator/weir_operator
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE_LINES = 600
FUNCTION_LINES = 80


def report(root: Path) -> str:
    modules = sorted(root.rglob("*.py"))
    lines = {path: len(path.read_text().splitlines()) for path in modules}
    functions = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path.relative_to(root)}:{node.name}"))
    functions.sort(reverse=True)
    largest = max(lines, key=lambda path: lines[path])
    long_modules = [f"{p.relative_to(root)} {n}" for p, n in lines.items() if n > MODULE_LINES]
    long_functions = [f"{name} {n}" for n, name in functions if n > FUNCTION_LINES]
    return "\n".join(
        [
            f"{root}: {len(modules)} modules",
            f"  largest module: {largest.relative_to(root)}, {lines[largest]} lines",
            f"  longest function: {functions[0][1]}, {functions[0][0]} lines",
            f"  modules over {MODULE_LINES} lines: {', '.join(long_modules) or 'none'}",
            f"  functions over {FUNCTION_LINES} lines: {', '.join(long_functions) or 'none'}",
        ]
    )


if __name__ == "__main__":
    print("\n".join(report(Path(arg)) for arg in sys.argv[1:]))
