"""The live table ``weir agent`` shows on a terminal. Pure: rows in, text out."""

from __future__ import annotations

from collections.abc import Sequence

from weir_api.reports import NodeReport

COLUMNS = ("POLICY", "GEN", "STATE", "HOOKS", "INSNS", "OBSERVED", "MATCHED", "EXPORTED", "SAVED")


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{value}B"


def rows(report: NodeReport) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    assert report.status is not None
    for policy in report.status.policies:
        attached = [p for p in policy.programs if p.state == "attached"]
        out.append(
            (
                policy.name,
                str(policy.running_generation)
                + (
                    ""
                    if policy.generation == policy.running_generation
                    else f"→{policy.generation}"
                ),
                policy.state,
                f"{len(attached)}/{len(policy.programs)}",
                str(sum(p.instructions for p in attached)),
                str(policy.savings.observed),
                str(policy.savings.matched),
                human_bytes(policy.savings.exported_bytes),
                policy.savings.saved or "-",
            )
        )
    return out


def render(report: NodeReport, *, failures: Sequence[str] = ()) -> str:
    table = [COLUMNS, *rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    ]
    lines.extend(failures)
    return "\n".join(lines)


def failure_lines(report: NodeReport, *, limit: int = 6) -> list[str]:
    """The first lines of each failure, so a terminal shows why."""
    out: list[str] = []
    assert report.status is not None
    for policy in report.status.policies:
        for program in policy.programs:
            if program.state == "failed":
                detail = (program.verifier_log or program.message).strip().splitlines()[-limit:]
                out.append(
                    f"\n{policy.name} {program.hook}: {program.failure_phase} failed: "
                    f"{program.message.splitlines()[0] if program.message else ''}"
                )
                out.extend(f"    {line}" for line in detail)
    return out
