"""Write the limits table (weir_api.limits.table) into a Markdown page, between the
`<!-- limits:begin -->` and `<!-- limits:end -->` markers. Run by `make crds`;
tests/test_crds.py fails when the page and the table disagree."""

from __future__ import annotations

import sys
from pathlib import Path

from weir_api import limits

BEGIN, END = "<!-- limits:begin -->\n", "<!-- limits:end -->\n"


def rewrite(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest or END not in rest:
        raise SystemExit(f"the page has no {BEGIN.strip()} ... {END.strip()} section")
    return head + BEGIN + limits.markdown() + END + tail


if __name__ == "__main__":
    page = Path(sys.argv[1])
    page.write_text(rewrite(page.read_text()))
    print(f"wrote the limits table into {page}")
