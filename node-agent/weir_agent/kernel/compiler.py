"""bcc's part, and the only module that imports it: compile a source into a ``Compiled``,
resolve a binary's symbol, name a kernel address.

The agent never compiles in its own process. ``loading.compile`` runs this module as a
child (``python -m weir_agent.kernel.compiler``) with a request on stdin; the child
compiles with bcc's clang, prints the ``Compiled`` (objects.py) as JSON on stdout and
exits. The compiler's diagnostics go to the child's stderr. A crash or a fatal LLVM error
(which calls exit()) ends the child, not the agent, and compiles of different shapes run
side by side. The child imports only bcc, bpf.py and objects.py.
"""

from __future__ import annotations

import ctypes
import json
import sys

from bcc import BPF
from bcc.libbcc import lib

from weir_agent.kernel import bpf, objects

# libbcc's table enumeration (bcc_common.h), which bcc's Python bindings leave undeclared.
lib.bpf_num_tables.restype = ctypes.c_size_t
lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
for _name, _restype in (
    ("bpf_table_name", ctypes.c_char_p),
    ("bpf_table_fd_id", ctypes.c_int),
    ("bpf_table_key_desc_id", ctypes.c_char_p),
    ("bpf_table_leaf_desc_id", ctypes.c_char_p),
):
    getattr(lib, _name).restype = _restype
    getattr(lib, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def compile_source(source: str, cflags: list[str]) -> objects.Compiled:
    """Compile ``source`` with ``cflags``; every function's instructions, their maps
    described by index. Raises whatever bcc raises (a bare Exception) on a failed compile."""
    module = BPF(src_file=source.encode(), cflags=cflags, debug=0)
    try:
        maps: list[objects.MapSpec] = []
        index_of: dict[int, int] = {}  # the compile's map fd -> index
        for table_id in range(lib.bpf_num_tables(module.module)):
            fd = lib.bpf_table_fd_id(module.module, table_id)
            if fd < 0:
                continue
            key = lib.bpf_table_key_desc_id(module.module, table_id).decode()
            leaf = lib.bpf_table_leaf_desc_id(module.module, table_id).decode()
            info = bpf.map_info(fd)
            index_of[fd] = len(maps)
            maps.append(
                objects.MapSpec(
                    name=lib.bpf_table_name(module.module, table_id).decode(),
                    type=int(info.type),
                    key_size=int(info.key_size),
                    value_size=int(info.value_size),
                    max_entries=int(info.max_entries),
                    flags=int(info.map_flags),
                    key=json.loads(key) if key else [],
                    leaf=json.loads(leaf) if leaf else [],
                )
            )
        functions = {
            lib.bpf_function_name(module.module, n).decode(): objects.relocate(
                module.dump_func(lib.bpf_function_name(module.module, n)), index_of
            )
            for n in range(lib.bpf_num_functions(module.module))
        }
        license = lib.bpf_module_license(module.module).decode()
        return objects.Compiled(functions=functions, maps=tuple(maps), license=license)
    finally:
        module.cleanup()


def resolve_symbol(path: str, symbol: str) -> tuple[str, int]:
    """A binary's (or library's, by name) symbol as (resolved path, file offset)."""
    found, offset = BPF._check_path_symbol(path.encode(), symbol.encode(), None, -1)
    return (found.decode() if isinstance(found, bytes) else str(found)), int(offset)


def ksym(address: int) -> str:
    """A kernel address as symbol+offset (from /proc/kallsyms, through bcc's cache)."""
    return str(BPF.ksym(address, show_offset=True).decode(errors="replace"))


def main() -> int:
    """The child: a request {"source", "cflags"} on stdin; the Compiled on stdout, or
    {"error": first line} and exit status 1. Diagnostics stay on stderr."""
    request = json.load(sys.stdin)
    try:
        compiled = compile_source(request["source"], request["cflags"])
    except Exception as error:  # bcc raises bare Exception
        sys.stderr.flush()
        print(
            json.dumps({"error": str(error).splitlines()[0][:500] if str(error) else repr(error)})
        )
        return 1
    sys.stderr.flush()
    sys.stdout.write(compiled.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
