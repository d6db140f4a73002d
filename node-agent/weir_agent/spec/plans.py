"""What to load, replace and unload: desired programs against running ones. Pure.

A program is identified by (policy, hook), its structure by its shape digest
and its content by its digest (flags, seeds, aggregation layout). Same digest:
keep it, even when the policy's generation moved (an edit to a comment or
another hook changes nothing in the kernel). Same shape: reconfigure it in
place (map writes, no compile). Different shape: compile a new program and
replace the old one through the stub's slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from weir_agent.spec.programs import Program

HookKey = tuple[str, str]  # (policy, hook id)


@dataclasses.dataclass(frozen=True)
class Plan:
    load: tuple[Program, ...] = ()
    replace: tuple[Program, ...] = ()
    reconfigure: tuple[Program, ...] = ()
    unload: tuple[HookKey, ...] = ()
    keep: tuple[HookKey, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.load or self.replace or self.reconfigure or self.unload)


def plan(desired: Mapping[HookKey, Program], running: Mapping[HookKey, Program]) -> Plan:
    """``running`` maps each loaded hook to the program that runs there."""
    load, replace, reconfigure, keep = [], [], [], []
    for key, program in sorted(desired.items()):
        if key not in running:
            load.append(program)
        elif running[key].digest() == program.digest():
            keep.append(key)
        elif running[key].shape_digest() == program.shape_digest():
            reconfigure.append(program)
        else:
            replace.append(program)
    unload = sorted(key for key in running if key not in desired)
    return Plan(
        load=tuple(load),
        replace=tuple(replace),
        reconfigure=tuple(reconfigure),
        unload=tuple(unload),
        keep=tuple(keep),
    )
