"""Write the generated sections of hand-written files, each between its begin and end
markers, from the one source it comes from: the limits table in docs/api.md and the
capacities in bpf/weir.h from weir_api.limits; the operator's and agent's command lines in
docs/operator.md from the chart (`helm template`, default values). Run by `make docs` (and
`make crds`); tests/test_crds.py fails when a section and its source disagree.

    python scripts/generated.py          # rewrite every section
    python scripts/generated.py --check  # exit 1 and name the stale files
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from weir_api import limits

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / ".tools" / "helm"  # make setup fetches it


def chart_commands() -> str:
    """The roles' command lines exactly as the chart renders them (default values)."""
    rendered = subprocess.run(
        [str(HELM), "template", "weir", str(ROOT / "charts" / "weir"), "-n", "weir-system"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    lines = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            words = ["weir", *container.get("args", [])]
            groups = (shlex.join(words[i : i + 3]) for i in range(0, len(words), 3))
            lines.append(" \\\n    ".join(groups))
    return "```sh\n" + "\n".join(sorted(lines, reverse=True)) + "\n```\n"


# file, begin marker, end marker, what goes between them
SECTIONS: list[tuple[str, str, str, Callable[[], str]]] = [
    ("docs/api.md", "<!-- limits:begin -->\n", "<!-- limits:end -->\n", limits.markdown),
    ("bpf/weir.h", "/* capacities:begin */\n", "/* capacities:end */\n", limits.c_defines),
    (
        "docs/operator.md",
        "<!-- chart-args:begin -->\n",
        "<!-- chart-args:end -->\n",
        chart_commands,
    ),
]


def rewrite(text: str, begin: str, end: str, body: str) -> str:
    head, _, rest = text.partition(begin)
    if not rest or end not in rest:
        raise SystemExit(f"no {begin.strip()} ... {end.strip()} section")
    _, _, tail = rest.partition(end)
    return head + begin + body + end + tail


def stale() -> list[str]:
    """The files whose sections differ from what their sources say now."""
    out = []
    for name, begin, end, make in SECTIONS:
        text = (ROOT / name).read_text()
        if rewrite(text, begin, end, make()) != text:
            out.append(name)
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        names = stale()
        for name in names:
            print(f"{name}: a generated section is stale: run `make docs`", file=sys.stderr)
        return 1 if names else 0
    for name, begin, end, make in SECTIONS:
        path = ROOT / name
        text = path.read_text()
        path.write_text(rewrite(text, begin, end, make()))
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
