"""Attach a hook: its permanent stub, through a BPF link, with a program in its slot.

Each hook gets a small stub program (bpf/stub.bpf.c) attached once, to a perf event or a
raw tracepoint, through a BPF link; it tail-calls whatever program its prog-array slot
holds, so replacing a hook's program is one atomic slot update (``Stub.swap``): no event
lost, none counted twice. With a pin directory the link and slot are pinned in bpffs, the
hook keeps running while no agent does, and the next agent adopts the stub.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from pathlib import Path

from weir_agent.kernel import bpf, loading, objects
from weir_agent.kernel.handles import Loaded, LoadError
from weir_agent.spec.programs import Program


@dataclasses.dataclass
class Stub:
    """The permanent program on a hook: a tail call through ``slot``, attached by a BPF
    link. Pinned (``pin``), the link and the slot outlive the agent: the hook keeps
    running its program while no agent is there, and the next agent adopts it."""

    slot_fd: int
    link_fd: int
    pin: Path | None
    copy: objects.Instance | None = None  # the stub program this agent loaded (None: adopted)
    adopted: bool = False

    def swap(self, loaded: Loaded) -> None:
        bpf.set_slot(self.slot_fd, loaded.fd)

    def program_ids(self) -> list[int]:
        info = bpf.LinkInfo()
        size, address = ctypes.sizeof(info), ctypes.addressof(info)
        bpf.call(
            bpf.BPF_OBJ_GET_INFO_BY_FD,
            bpf.InfoAttr(bpf_fd=self.link_fd, info_len=size, info=address),
        )
        return [int(info.prog_id)]

    def close(self, *, detach: bool = True) -> None:
        """Close this agent's handles; with ``detach``, remove the pins too, so the hook
        is detached once nothing else holds them."""
        if detach and self.pin is not None:
            bpf.remove_pins(self.pin)
        for fd in (self.link_fd, self.slot_fd):
            os.close(fd)
        if self.copy is not None:
            self.copy.cleanup()


def attach_stub(program: Program, first: Loaded, *, pin: Path | None = None) -> Stub:
    """Attach the hook's stub with ``first`` in its slot, or adopt the stub a previous
    agent pinned at ``pin`` and put ``first`` in its slot; raises LoadError."""
    if pin is not None and (pin / "link").exists() and (pin / "slot").exists():
        try:
            stub = Stub(bpf.obj_get(pin / "slot"), bpf.obj_get(pin / "link"), pin, adopted=True)
            stub.swap(first)
        except OSError as error:
            raise LoadError("attach", f"adopting {pin}: {error}") from error
        return stub
    copy, fd, slot_fd = loading.load_stub(program)
    try:
        bpf.set_slot(slot_fd, first.fd)
        if program.kind == "raw_tracepoint":  # the open returns the link
            link = bpf.raw_tracepoint_open(fd, program.target[0].split(":", 1)[1])
        else:
            event = loading.perf_event(program)
    except OSError as error:
        copy.cleanup()
        raise LoadError("attach", str(error)) from error
    except LoadError:
        copy.cleanup()
        raise
    if program.kind != "raw_tracepoint":
        try:
            link = bpf.link_create(fd, event)
        except OSError as error:
            copy.cleanup()
            raise LoadError("attach", f"BPF_LINK_CREATE: {error}") from error
        finally:
            os.close(event)
    stub = Stub(os.dup(slot_fd), link, pin, copy=copy)
    if pin is not None:
        try:
            pin.mkdir(parents=True, exist_ok=True)
            bpf.obj_pin(stub.slot_fd, pin / "slot")
            bpf.obj_pin(stub.link_fd, pin / "link")
        except OSError as error:
            stub.close()
            raise LoadError("attach", f"pinning under {pin}: {error}") from error
    return stub
