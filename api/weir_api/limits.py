"""Generous, documented bounds on what a policy may ask for.

Tetragon allows 5 selectors per hook and 4 values per matchArgs because its
values live in the program. weir keeps value sets in BPF maps seeded after load,
so the only real costs are map memory and verifier complexity; the limits below
keep both bounded while leaving room for real policies. They are exported to the
CRD schema (maxItems, maxLength) so the API server enforces them as well.
"""

MAX_HOOKS = 32  # kprobes + tracepoints + uprobes in one policy
MAX_ARGS = 8  # args per hook
STRING_ARGS = 2  # string, filename and char_buf args per hook (per-CPU scratch slots)
ADDRESS_ARGS = 2  # sock and sockaddr args per hook
MAX_RANGES = 16  # values of one InRange or port matchArgs (a bounded loop in the kernel)
MAX_RULES_PER_HOOK = 4  # AggregationRules folding one hook
MAX_GROUP_ARGS = 2  # arg: keys of one AggregationRule
MAX_STARTS_PER_HOOK = 4  # distinct duration start keys recorded by one hook
# Duration clocks running at once on a node (one per key: thread, process or arg value),
# shared by every policy: an LRU map, so a start whose end never comes is evicted first.
DURATION_STARTS = 65_536
MAX_SELECTORS = 8  # selectors per hook (Tetragon: 5)
MAX_MATCH_ARGS = 8  # matchArgs per selector
MAX_MATCH_BINARIES = 4  # matchBinaries per selector
MAX_MATCH_ACTIONS = 4  # matchActions per selector: Post or NoPost, and marks
MAX_MARK_ACTIONS = 2  # Mark, Unmark, TrackSock, UntrackSock per selector
# Marks set at once on a node (Mark, TrackSock), shared by every policy: an LRU map, so
# the least recently set or tested mark is evicted first when it is full.
MARKS = 65_536
# cgroup paths the agent learns as cgroups are made (so that a container that lives for
# less than a scan still has its labels): an LRU map; entries go when series retire.
CGROUPS = 65_536
MAX_VALUES = 1024  # values per matchArgs / matchBinaries (kept in maps, not code)
MAX_STRING = 247  # bytes of a string value; the kernel reads 248 with the NUL (LPM key bound)
MAX_NAME = 253  # names and symbols
MAX_GROUP_BY = 6  # groupBy keys of one AggregationRule
MAX_SERIES_DEFAULT = 10_000
MAX_SERIES_LIMIT = 1_000_000
MAX_BUCKETS = 64
MAX_FAILING_NODES = 10  # failing nodes listed in a policy's status
MAX_VERIFIER_LOG = 4096  # bytes of verifier log kept per program in reports
MAX_MESSAGE = 32_768  # condition messages (metav1.Condition)
# A policy's spec as compact JSON (UTF-8). `kubectl apply` (client-side) copies the whole
# object into an annotation, and the API allows 256 KiB of annotations per object: this
# leaves room for metadata, and a rendered ConfigMap stays far below its 1 MiB.
MAX_POLICY_BYTES = 192 * 1024

# The kernel memory a policy's maps may take at most (their worst case, in bytes):
# `weir check`, the operator and the agent refuse rules that would take a policy past it.
POLICY_MEMORY_BUDGET = 128 * 2**20
# Per series (aggregation maps are not preallocated: a series costs memory once it
# exists): the 48-byte key, the value and the hash element's own ~48 bytes.
SERIES_BYTES = {"count": 112, "sum": 112, "histogram": 48 + 8 + 8 + 66 * 8 + 48}
# Per posting hook: the ring buffer (pages of 4 KiB) and the rate-limit LRU (preallocated).
RINGBUF_PAGES = 512  # 2 MiB: the agent's default (--ring-buffer-size)
RATE_LIMIT_ENTRIES = 16_384
RATE_LIMIT_BYTES = 64  # per entry: key, value and element
# Stacks travel in the event itself: the innermost frames, up to these many.
USER_STACK_FRAMES = 64  # 32 bytes each (build id and file offset)
KERNEL_STACK_FRAMES = 64  # 8 bytes each


def table() -> list[tuple[str, str, str]]:
    """(what, limit, why): the limits users meet, as docs/api.md shows them (generated
    from here by `make crds`; a test fails when the page drifts)."""
    return [
        ("hooks per policy", f"{MAX_HOOKS}", "schema"),
        (
            "policy size",
            f"{MAX_POLICY_BYTES // 1024} KiB of JSON",
            "`kubectl apply` copies the object into a 256 KiB annotation (operator)",
        ),
        ("args per hook", f"{MAX_ARGS}", "schema"),
        (
            "string args per hook (string, filename, char_buf)",
            f"{STRING_ARGS}",
            "per-CPU scratch slots (CEL)",
        ),
        ("sock and sockaddr args per hook", f"{ADDRESS_ARGS}", "per-CPU scratch slots (CEL)"),
        ("selectors per hook", f"{MAX_SELECTORS}", "schema"),
        (
            "matchArgs, matchBinaries per selector",
            f"{MAX_MATCH_ARGS}, {MAX_MATCH_BINARIES}",
            "schema",
        ),
        ("values per matchArgs or matchBinaries", f"{MAX_VALUES}", "kept in maps (schema)"),
        (
            "string value",
            f"{MAX_STRING} bytes, no NUL",
            "LPM trie keys hold 256 bytes after the prefix length (schema: characters; "
            "operator: UTF-8 bytes)",
        ),
        (
            "values per InRange or port matchArgs",
            f"{MAX_RANGES}",
            "a bounded loop in the kernel (CEL)",
        ),
        (
            "AggregationRules per hook",
            f"{MAX_RULES_PER_HOOK}",
            "the program's aggregation slots (operator)",
        ),
        (
            "Mark, Unmark, TrackSock, UntrackSock per selector",
            f"{MAX_MARK_ACTIONS}",
            "the program's mark slots (operator)",
        ),
        (
            "marks set at once, per node",
            f"{MARKS:,}",
            "one LRU map for every policy: the least recently used is evicted (agent)",
        ),
        (
            "duration start keys per hook",
            f"{MAX_STARTS_PER_HOOK}",
            "the program's start slots (operator)",
        ),
        (
            "duration clocks running at once, per node",
            f"{DURATION_STARTS:,}",
            "one LRU map for every policy: the oldest start is evicted (agent)",
        ),
        ("groupBy keys per rule", f"{MAX_GROUP_BY}", "schema"),
        ("arg: keys per rule", f"{MAX_GROUP_ARGS}", "the map key's layout (CEL)"),
        ("maxSeries", f"1 … {MAX_SERIES_LIMIT:,}", f"default {MAX_SERIES_DEFAULT:,} (schema)"),
        ("explicit histogram bounds", f"{MAX_BUCKETS}", "schema"),
        (
            "kernel memory per policy",
            f"{POLICY_MEMORY_BUDGET // 2**20} MiB",
            "the worst case of its maps: series, ring buffers, rate limits (operator)",
        ),
    ]


def markdown() -> str:
    """The limits table as Markdown."""
    rows = ["| what | limit | why (where it is enforced) |", "|---|---|---|"]
    rows += [f"| {what} | {limit} | {why} |" for what, limit, why in table()]
    return "\n".join(rows) + "\n"


def c_defines() -> str:
    """The capacities bpf/weir.h compiles with, as ``#define`` lines: the kernel's arrays
    are exactly as large as the API allows (scripts/generated.py writes them there)."""
    rules = MAX_RULES_PER_HOOK
    defines = [
        ("WEIR_MAX_ARGS", MAX_ARGS, "argument slots per hook"),
        ("WEIR_STR_SLOTS", STRING_ARGS, "string arguments per hook"),
        ("WEIR_ADDR_SLOTS", ADDRESS_ARGS, "sock/sockaddr arguments per hook"),
        ("WEIR_MAX_BOUNDS", MAX_BUCKETS, "explicit histogram bounds"),
        ("WEIR_MAX_SELECTORS", MAX_SELECTORS, "selectors per hook"),
        ("WEIR_MAX_MATCHERS", MAX_MATCH_ARGS, "matchArgs per selector"),
        ("WEIR_MAX_BINARIES", MAX_MATCH_BINARIES, "matchBinaries per selector"),
        ("WEIR_MAX_AGGS", rules, "AggregationRules per hook"),
        (
            "WEIR_MAX_SERIES_IDS",
            2 * rules,
            f"series ids: {rules} in use, {rules} for the next configuration",
        ),
        ("WEIR_MAX_STARTS", MAX_STARTS_PER_HOOK, "duration start keys recorded per hook"),
        ("WEIR_MAX_MARK_ACTIONS", MAX_MARK_ACTIONS, "Mark, Unmark, TrackSock, UntrackSock"),
    ]
    return "".join(f"#define {name} {value} /* {why} */\n" for name, value, why in defines)
