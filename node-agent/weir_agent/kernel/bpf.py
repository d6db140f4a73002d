"""The bpf() and perf_event_open() system calls weir makes itself, through ctypes.

bcc compiles and loads; everything it does not offer is here: program and map info
(sizes, instruction counts, bpf_stats), creating a map like another, pinning and getting
objects in bpffs, the atomic prog-array update that swaps a hook's program, BPF links to
perf events and raw tracepoints. The structures are the kernel's UAPI unions, cut to the
members weir uses.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path


class ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_OBJ_GET_INFO_BY_FD = 15


libc = ctypes.CDLL(None, use_errno=True)


def prog_map_ids(fd: int) -> set[int]:
    """The ids of the maps a loaded program uses."""
    count = prog_info(fd).nr_map_ids
    ids = (ctypes.c_uint32 * max(count, 1))()
    info = ProgInfo(nr_map_ids=count, map_ids=ctypes.addressof(ids))
    call(
        BPF_OBJ_GET_INFO_BY_FD,
        InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)),
    )
    return set(ids[: info.nr_map_ids])


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    result = libc.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr))
    if result != 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD")
    return info


BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_TYPE_ARRAY = 2
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_PERF_EVENT = 41  # the attach type of a link to a perf event
BPF_PSEUDO_MAP_FD = 1


class MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 64),
    ]


class MapCreate(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 48),
    ]


def call(cmd: int, attr: ctypes.Structure) -> int:
    result = int(libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)))
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    call(
        BPF_OBJ_GET_INFO_BY_FD,
        InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)),
    )
    return info


def same_map(a: int, b: int) -> bool:
    x, y = map_info(a), map_info(b)
    fields = ("type", "key_size", "value_size", "max_entries", "map_flags")
    return all(getattr(x, f) == getattr(y, f) for f in fields)


class ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("path_fd", ctypes.c_int32),
        ("pad", ctypes.c_uint32),
    ]


def obj_pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(str(path).encode())
    call(BPF_OBJ_PIN, ObjAttr(pathname=ctypes.addressof(name), bpf_fd=fd))


def obj_get(path: Path) -> int:
    name = ctypes.create_string_buffer(str(path).encode())
    return call(BPF_OBJ_GET, ObjAttr(pathname=ctypes.addressof(name)))


class ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


def set_slot(map_fd: int, prog_fd: int) -> None:
    """prog_array[0] = prog_fd: one atomic update (the tail-call swap)."""
    key, value = ctypes.c_uint32(0), ctypes.c_uint32(prog_fd)
    attr = ElemAttr(
        map_fd=map_fd, key=ctypes.addressof(key), value=ctypes.addressof(value), flags=0
    )
    call(BPF_MAP_UPDATE_ELEM, attr)


def clone_map(fd: int) -> int:
    """A new, empty map defined as the map ``fd`` is."""
    info = map_info(fd)
    attr = MapCreate(
        map_type=info.type,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
        map_name=info.name,
    )
    return call(BPF_MAP_CREATE, attr)


class LinkInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 52),
    ]


SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(platform.machine(), 298)
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8


class PerfAttr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 56),
    ]


class LinkAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("bpf_cookie", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 32),
    ]


class RawTracepointAttr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_uint64),
        ("prog_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("cookie", ctypes.c_uint64),
    ]


def raw_tracepoint_open(prog_fd: int, event: str) -> int:
    """Attach a raw tracepoint program; the fd is its link (pinnable, like the others)."""
    name = ctypes.create_string_buffer(event.encode())
    attr = RawTracepointAttr(name=ctypes.addressof(name), prog_fd=prog_fd)
    try:
        return call(BPF_RAW_TRACEPOINT_OPEN, attr)
    except OSError as error:
        raise OSError(error.errno, f"raw tracepoint {event}: {error.strerror}") from None


def link_create(prog_fd: int, event_fd: int) -> int:
    attr = LinkAttr(prog_fd=prog_fd, target_fd=event_fd, attach_type=BPF_PERF_EVENT)
    return call(BPF_LINK_CREATE, attr)


def remove_pins(path: Path) -> None:
    """Remove a pin directory; its objects go once no program or fd holds them (the
    link's pin first, so the hook is detached before anything else goes)."""
    if not path.exists():
        return
    link = path / "link"
    if link.exists():
        link.unlink()
    for child in sorted(path.iterdir()):
        if child.is_dir():
            remove_pins(child)
        else:
            child.unlink()
    path.rmdir()
