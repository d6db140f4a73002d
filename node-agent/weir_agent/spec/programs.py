"""What code generation produces: a ``Program`` per hook, and the pieces it is made of.

A program is bpf/hook.bpf.c specialised by integer flags: its *shape* (``shape_flags``:
which arguments it reads and how, which features it compiles in, map sizes) and its
*configuration* (``config``: selectors, matchers, aggregations, which the config map
holds), plus the ``Seeds`` (strings, CIDRs, integer sets, ranges, bucket bounds) written
into its maps after load. ``Flags`` accepts only integers (and 64-bit C literals made from
them): no user-supplied string is ever placed in C text or in a flag. Pure.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

from weir_agent.spec import abi, configs
from weir_agent.spec.abi import Action, Kind, ValueKind
from weir_api import limits
from weir_api.problems import Problem


# The C sources ship inside the package (weir_agent/bpf/*.c), so any install can compile.
def _bpf_dir() -> Path:
    """The C sources: package data of an installed wheel (weir_agent/bpf), or bpf/ at the
    top of a source checkout (pyproject.toml maps the one onto the other)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "bpf"
    return installed if installed.is_dir() else package.parent.parent / "bpf"


BPF_DIR = _bpf_dir()


HOOK_SOURCE = "hook.bpf.c"


STUB_SOURCE = "stub.bpf.c"


EXEC_SOURCE = "exec.bpf.c"


MASK64 = (1 << 64) - 1


RINGBUF_PAGES = limits.RINGBUF_PAGES  # per posting program (a power of two)


MIN_ROOM = 64  # smallest capacity of a seed or series map (entries, never preallocated)


@dataclasses.dataclass(frozen=True)
class ArgPlan:
    """How one argument is read and what it is called."""

    slot: int
    name: str
    type: str
    kind: Kind


@dataclasses.dataclass(frozen=True)
class AggSlot:
    """One AggregationRule folded by this program (map ``agg<slot>``)."""

    slot: int
    rule: str
    metric: str
    help: str
    value: ValueKind
    group_by: tuple[str, ...]
    # groupBy key → the weir_agg_key field holding it ("cgroup", "binary", "arg0", ...).
    key_fields: tuple[tuple[str, str], ...]
    bounds: tuple[int, ...]
    max_series: int
    seconds: bool = False  # a duration: values are nanoseconds, exported as seconds

    def layout(self) -> tuple[object, ...]:
        """What a series means: entries carry across versions while this is unchanged."""
        return (self.value, self.group_by, self.key_fields, self.bounds, self.seconds)

    @property
    def by_cgroup(self) -> bool:
        """Its key holds the cgroup id (namespace, pod, container, workload, image): its
        series belong to containers, and retire with them."""
        return any(field == "cgroup" for _, field in self.key_fields)

    @property
    def table(self) -> bytes:
        """The map that holds this rule's series: histograms apart from counts and sums."""
        return b"hist" if self.value >= ValueKind.HIST_EXP2 else b"agg"


@dataclasses.dataclass(frozen=True)
class Seeds:
    """What goes into the maps after load."""

    strings: tuple[tuple[int, bytes, int], ...] = ()  # matcher, bytes, prefix bits after header
    addresses: tuple[tuple[int, bytes, int], ...] = ()  # matcher, 16 bytes, prefix bits
    integers: tuple[tuple[int, int], ...] = ()  # matcher, value (u64)
    # matcher, low, high: as the kernel compares them (u64; signed ones with the sign bit
    # flipped, which keeps their order); stored as the prefixes that cover each range.
    ranges: tuple[tuple[int, int, int], ...] = ()
    bounds: tuple[tuple[int, int], ...] = ()  # index, bound
    # SubString values: bytes, and the matchers (bit = matcher id) with a value that is a
    # prefix of them (themselves included): the longest prefix found names them all.
    substrings: tuple[tuple[bytes, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything needed to load one hook of one policy."""

    policy: str
    hook: str  # the hook id, e.g. tracepoint:syscalls:sys_enter_openat
    kind: str  # tracepoint, kprobe, kretprobe, uprobe, uretprobe
    target: tuple[str, ...]  # ("sub:event",), (symbol,), (path, symbol)
    flags: tuple[tuple[str, int | str], ...]
    seeds: Seeds
    args: tuple[ArgPlan, ...]
    aggregations: tuple[AggSlot, ...]
    selector_actions: tuple[Action, ...]
    message: str = ""  # the hook's message and tags (Tetragon's), carried into its events
    tags: tuple[str, ...] = ()

    @property
    def pin_id(self) -> str:
        """Names the hook's pins (/sys/fs/bpf/weir/<pin_id>): no user text in a path."""
        return hashlib.sha256(f"{self.policy}\0{self.hook}".encode()).hexdigest()[:16]

    @property
    def entry_half(self) -> bool:
        """Saves a return probe's argument registers (codegen.entry_half), nothing else."""
        return bool(dict(self.flags).get("SAVE_ENTRY"))

    @property
    def needs_tracker(self) -> bool:
        """Reads the exec tracker's shared maps (executables, a return probe's args)."""
        flags = dict(self.flags)
        names = ("USE_EXE", "SAVE_ENTRY", "USE_ENTRY", "USE_STARTS", "USE_MARKS")
        return any(flags.get(name) for name in names)

    @property
    def groups_by_cgroup(self) -> bool:
        """A rule's key holds the cgroup id (namespace, pod, container, workload, image):
        the engine then learns cgroups' paths as they are made (the exec tracker)."""
        return any(a.by_cgroup for a in self.aggregations)

    @property
    def posts(self) -> bool:
        return bool(dict(self.flags).get("ANY_POST"))

    @property
    def scoped(self) -> bool:
        """podSelector/namespaceSelector: runs only for the cgroups in its scope map."""
        return bool(dict(self.flags).get("USE_SCOPE"))

    def cflags(self, *, configured: bool = True) -> list[str]:
        """The compiler's flags: the shape only (configured), or every flag (specialised)."""
        flags = self.shape_flags() if configured else (*self.flags, ("CONFIGURED", 0))
        return [f"-I{BPF_DIR}", *(f"-D{name}={value}" for name, value in flags)]

    def shape_flags(self) -> tuple[tuple[str, int | str], ...]:
        """What a configured program is compiled with: everything but the configuration."""
        return (
            *((n, v) for n, v in self.flags if not configs.CONFIG_FLAG.match(n)),
            ("CONFIGURED", 1),
        )

    def shape_digest(self) -> str:
        """Programs with the same shape digest differ only in configuration and seeds."""
        text = json.dumps([self.kind, self.target, self.shape_flags()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @functools.cached_property
    def config(self) -> configs.Config:
        """What the program reads from its config map (weir.h's struct weir_config)."""
        return configs.from_flags(dict(self.flags))

    def digest(self) -> str:
        """Identifies what is loaded: same digest, same program and seeds."""
        text = json.dumps(
            [
                self.kind,
                self.target,
                self.flags,
                dataclasses.asdict(self.seeds),
                [dataclasses.asdict(a) for a in self.aggregations],
                self.message,
                self.tags,
            ],
            default=lambda b: b.hex() if isinstance(b, bytes) else str(b),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Generated:
    programs: tuple[Program, ...]
    problems: tuple[Problem, ...]


def int_literal(value: int) -> str:
    # Hex with ULL suffix: any 64-bit pattern, negative values as two's complement.
    return f"{value & MASK64:#x}ULL"


def room(entries: int) -> int:
    """A map's capacity for ``entries``: two configurations fit while one replaces the
    other, rounded up to a power of two so small edits keep the program's shape."""
    return max(MIN_ROOM, 1 << max(0, 2 * entries - 1).bit_length())


class Flags:
    """Collects -D flags; values must be ints or literals built from ints here."""

    def __init__(self) -> None:
        self.items: dict[str, int | str] = {}

    def set(self, name: str, value: int | str) -> None:
        if isinstance(value, str) and not value.startswith("0x"):
            raise ValueError(f"flag {name}: only integers become flags")
        self.items[name] = value


def name_id(*parts: str) -> int:
    """A 60-bit number naming something in a shared map, the same in every program and
    version that names it by the same parts."""
    return int(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:15], 16)


def clock_pair(policy: str, start_hook: str, start_key: str) -> int:
    """Names a duration's clocks in weir_starts: the start hook records under it, the
    end hook looks it up (a rule names the start hook and key, so both sides agree)."""
    return name_id(policy, start_hook, start_key)


def hook_key(policy: str, hook: str) -> int:
    """Names a hook's saved arguments in weir_entries: the same for every version."""
    return name_id(policy, hook)


ENTRY_SUFFIX = ":entry"


def entry_half(program: Program) -> Program:
    """The entry probe that saves a return probe's argument registers (SAVE_ENTRY): the
    same target and args, no selectors, aggregations or events of its own."""
    values = dict(program.flags)
    for name in values:
        if configs.CONFIG_FLAG.match(name):
            values[name] = 0
    values.update(
        SAVE_ENTRY=1,
        USE_ENTRY=0,
        ANY_POST=0,
        EV_STRS=0,
        EV_ADDRS=0,
        EV_USTACK=0,
        EV_KSTACK=0,
        USE_EXE=0,
        USE_TASK=0,
        USE_CPU=0,
        USE_PID_TREE=0,
        USE_STARTS=0,
        USE_MARKS=0,
        USE_SUBSTR=0,
    )
    return dataclasses.replace(
        program,
        hook=program.hook + ENTRY_SUFFIX,
        kind=program.kind.replace("ret", ""),
        flags=tuple(sorted(values.items())),
        seeds=Seeds(),
        aggregations=(),
        selector_actions=(),
        message="",
        tags=(),
    )


class SeedBuilder:
    def __init__(self) -> None:
        self.strings: list[tuple[int, bytes, int]] = []
        self.addresses: list[tuple[int, bytes, int]] = []
        self.integers: list[tuple[int, int]] = []
        self.ranges: list[tuple[int, int, int]] = []
        self.bounds: list[tuple[int, int]] = []
        self.substrings: list[tuple[int, bytes]] = []  # matcher, value

    def string(self, matcher: int, data: bytes) -> None:
        self.strings.append((matcher, data, 32 + 8 * len(data)))

    def substring_masks(self) -> tuple[tuple[bytes, int], ...]:
        masks = dict.fromkeys(data for _, data in self.substrings)
        return tuple(
            (data, sum({1 << m for m, other in self.substrings if data.startswith(other)}))
            for data in masks
        )

    def build(self) -> Seeds:
        return Seeds(
            strings=tuple(dict.fromkeys(self.strings)),
            addresses=tuple(dict.fromkeys(self.addresses)),
            integers=tuple(dict.fromkeys(self.integers)),
            ranges=tuple(self.ranges),
            bounds=tuple(self.bounds),
            substrings=self.substring_masks(),
        )


def mark_id(policy: str, name: str) -> int:
    """Names a policy's mark in weir_marks (every hook of the policy computes the same)."""
    return name_id(policy, "mark", name)


def base_cflags() -> list[str]:
    """Flags every weir program needs: the include path and the enumerations."""
    return [f"-I{BPF_DIR}", *(f"-D{name}={value}" for name, value in abi.enum_flags().items())]


def source_text(name: str) -> str:
    """A file of bpf/ (the C is never generated, only specialised by flags)."""
    return (BPF_DIR / name).read_text()
