"""Every program weir generates for the policies in this repository, as JSON: each one's
flags, seeds, args, aggregations, digest and shape digest. Run it before and after a change
to code generation and diff the outputs: a refactoring changes no program (it reads this
kernel's tracefs formats and BTF, so run both on one machine, as root).

    python scripts/dump_programs.py OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from weir_agent.identity import namespaces
from weir_agent.spec import btf, codegen, formats
from weir_api import documents

ROOT = Path(__file__).resolve().parent.parent


def dump() -> dict[str, object]:
    files = sorted([*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("tests/tetragon/**/*.yaml")])
    layout, types, host = btf.kernel_layout(), btf.kernel_types(), namespaces.host_namespaces()
    out: dict[str, object] = {}
    for path in files:
        parsed = documents.cross_check(documents.parse_text(path.read_text(), source=str(path)))
        rules = [p.obj for p in parsed if p.ok and p.kind == "AggregationRule"]
        for item in parsed:
            if not item.ok or item.kind != "TracingPolicy":
                continue
            policy = item.obj
            layouts = {
                t.target_id(): formats.read_format(t.subsystem, t.event)
                for t in policy.spec.tracepoint_hooks()
            }
            mine = [r for r in rules if r.spec.policy_ref.name == policy.name]
            generated = codegen.generate(
                policy, mine, layouts=layouts, kernel_layout=layout, host_namespaces=host,
                kernel_types=types,
            )  # fmt: skip
            out[f"{path.relative_to(ROOT)}:{policy.name}"] = {
                "problems": [str(p) for p in generated.problems],
                "programs": [
                    {**dataclasses.asdict(p), "digest": p.digest(), "shape": p.shape_digest()}
                    for p in generated.programs
                ],
            }
    return out


if __name__ == "__main__":
    programs = dump()
    text = json.dumps(programs, indent=1, sort_keys=True, default=lambda b: str(b))
    Path(sys.argv[1]).write_text(text)
    total = sum(len(v["programs"]) for v in programs.values())  # type: ignore[index]
    print(f"{len(programs)} policies, {total} programs")
