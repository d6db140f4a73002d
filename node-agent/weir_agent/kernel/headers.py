"""Which kernel headers bcc compiles against, and how to say so.

bcc compiles every program (tracepoints and uprobes included) against kernel
headers, but weir's programs take only uapi definitions from them (pt_regs,
socket address structs): every kernel struct they read (sockets, tasks, paths)
is read at offsets from the running kernel's BTF, and tracepoint layouts come
from tracefs. So on a node they come, in this order of preference, from:

- ``btf``: the kernel has BTF (``/sys/kernel/btf/vmlinux``) and the image carries
  its one generic header set (``/opt/weir/kernel-headers/generic``): nothing
  from the node is needed (COS, Bottlerocket, Flatcar);
- ``host``: the node's own ``/lib/modules/$(uname -r)/build`` (the chart mounts
  the node's /lib/modules and /usr/src);
- ``fallback``: another kernel version's headers linked there by ``make setup``
  (it leaves a marker); kprobe programs that read kernel structs may see
  another layout;
- ``baked``: headers built into the image under ``/opt/weir/kernel-headers/RELEASE``
  (``make images WEIR_IMAGE_HEADERS=linux-headers-RELEASE``), handed to bcc
  through ``BCC_KERNEL_SOURCE``;
- ``kheaders``: the kernel's own ``/sys/kernel/kheaders.tar.xz``
  (CONFIG_IKHEADERS), which bcc extracts itself;
- ``missing``: none of these; nothing can compile, and every policy says what to
  mount or install.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

BAKED = Path("/opt/weir/kernel-headers")
GENERIC = "generic"  # the image's header set, for any kernel with BTF
MISSING_HELP = (
    "no kernel headers for kernel {release}, and no BTF with the image's generic headers: "
    "bcc compiles every program against headers. "
    "Mount the node's /lib/modules and /usr/src (chart value agent.mountHostHeaders: true) "
    "and install the node's linux-headers package, enable CONFIG_IKHEADERS "
    "(/sys/kernel/kheaders.tar.xz), or build the image with "
    "WEIR_IMAGE_HEADERS=linux-headers-{release}"
)


@dataclasses.dataclass(frozen=True)
class Headers:
    state: str  # btf | host | kheaders | baked | fallback | missing
    source: Path | None  # what bcc is pointed at (BCC_KERNEL_SOURCE), when not its default
    release: str

    @property
    def problem(self) -> str:
        return MISSING_HELP.format(release=self.release) if self.state == "missing" else ""


def locate(
    release: str,
    *,
    modules: Path = Path("/lib/modules"),
    baked: Path = BAKED,
    kheaders: Path = Path("/sys/kernel/kheaders.tar.xz"),
    btf: Path = Path("/sys/kernel/btf/vmlinux"),
) -> Headers:
    """Find the headers for ``release``; looks at the file system only."""
    if btf.exists() and (baked / GENERIC / "include").exists():
        return Headers("btf", baked / GENERIC, release)
    build = modules / release / "build"
    if (build / "include").exists():
        fallback = (modules / release / ".weir-fallback-headers").exists()
        return Headers("fallback" if fallback else "host", None, release)
    if (baked / release / "include").exists():
        return Headers("baked", baked / release, release)
    if kheaders.exists():
        return Headers("kheaders", None, release)
    return Headers("missing", None, release)


def use(headers: Headers) -> None:
    """Point bcc at the chosen headers (it reads BCC_KERNEL_SOURCE at every compile)."""
    if headers.source is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers.source)
