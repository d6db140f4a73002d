/* weir.h: data structures shared by every weir BPF program.
 *
 * The layouts here are the single source of truth: the agent decodes map keys
 * and values through the ctypes types bcc derives from these definitions, by
 * field name. Enumerations (operators, argument kinds, stat indexes, ...) are
 * defined once in Python (weir_agent/spec/abi.py) and arrive as -D flags.
 *
 * Nothing in this file or in hook.bpf.c depends on a user-supplied string: a
 * policy specialises the program only through integer -D flags, and its
 * strings, CIDRs and value sets are written into the maps below after load.
 */
#ifndef WEIR_H
#define WEIR_H

/* WEIR_MAX_STR (bytes read of a string, NUL included) arrives as a -D flag from
 * weir_agent/spec/abi.py: an LPM trie key holds at most 256 bytes after prefixlen,
 * and the string shares them with a 4-byte matcher id. */
/* capacities:begin */
#define WEIR_MAX_ARGS 8 /* argument slots per hook */
#define WEIR_STR_SLOTS 2 /* string arguments per hook */
#define WEIR_ADDR_SLOTS 2 /* sock/sockaddr arguments per hook */
#define WEIR_MAX_BOUNDS 64 /* explicit histogram bounds */
#define WEIR_MAX_SELECTORS 8 /* selectors per hook */
#define WEIR_MAX_MATCHERS 8 /* matchArgs per selector */
#define WEIR_MAX_BINARIES 4 /* matchBinaries per selector */
#define WEIR_MAX_AGGS 4 /* AggregationRules per hook */
#define WEIR_MAX_SERIES_IDS 8 /* series ids: 4 in use, 4 for the next configuration */
#define WEIR_MAX_STARTS 4 /* duration start keys recorded per hook */
#define WEIR_MAX_MARK_ACTIONS 2 /* Mark, Unmark, TrackSock, UntrackSock */
/* capacities:end */
#define WEIR_RAW_KEYS 16          /* sc->raw: 8 args, thread and process ids, padding */

/* Key of the string LPM trie: Equal, Prefix and Postfix (on the reversed string)
 * are all longest-prefix lookups; the matcher id (big-endian) is part of the
 * prefix so every matcher of a program shares one trie. Equal inserts the
 * string with its NUL, so only the whole string matches. */
struct weir_strkey {
    u32 prefixlen;
    u32 matcher;
    char s[WEIR_MAX_STR];
};

/* Key of the address LPM trie: IPv4 is stored IPv4-mapped (::ffff:a.b.c.d). */
struct weir_addrkey {
    u32 prefixlen;
    u32 matcher;
    u8 addr[16];
};

/* Key of the address-class LPM trie (loopback, private, ... see abi.py). */
struct weir_classkey {
    u32 prefixlen;
    u8 addr[16];
};

/* One socket address read from a struct sock, a struct sockaddr or a struct
 * sk_buff's headers. */
struct weir_addr {
    u16 family;
    u16 sport;     /* host byte order */
    u16 dport;     /* host byte order */
    u16 valid;
    u16 protocol;  /* IPPROTO_*: sock and skb (0 for a sockaddr) */
    u16 state;     /* TCP_*: sock only */
    u32 pad;
    u8 saddr[16];
    u8 daddr[16];
};

/* What a selector may test about the current task (matchPIDs, matchNamespaces,
 * matchCapabilities), read once per event when a selector of the hook needs it. */
#define WEIR_ANCESTORS 8   /* followForks: generations of parents looked at */
#define WEIR_NAMESPACES 16 /* abi.Namespace order (10 in use; a power of two) */
struct weir_task {
    u64 pid[2];                       /* tgid: [0] as the host sees it, [1] in its pid namespace */
    u64 ancestors[2][WEIR_ANCESTORS]; /* the parents' tgids, nearest first, 0 past the top */
    u64 ns[WEIR_NAMESPACES];          /* namespace inode numbers */
    u64 caps[4];                      /* effective, inheritable, permitted (abi.CapSet) */
};

/* Key of the integer-range LPM trie (InRange, DPort, SPort): a range is stored
 * as the prefixes that cover it, so a match is one lookup. The value is
 * big-endian, with the sign bit flipped for signed arguments (order kept). */
struct weir_rangekey {
    u32 prefixlen;
    u32 matcher;
    u8 value[8];
};

/* Explicit histogram bounds of one rule, ascending, padded with the largest s64. */
struct weir_bounds {
    s64 b[WEIR_MAX_BOUNDS];
};

/* Integer sets (Equal / NotEqual on integers). */
struct weir_intkey {
    u32 matcher;
    u32 pad;
    u64 value;
};

/* The executable of each process, recorded at exec (and seeded from /proc). */
struct weir_exe {
    u64 hash;                 /* FNV-1a 64 of path, as abi.fnv1a64 */
    struct weir_strkey path;  /* path.s holds the path; the header is scratch */
    /* What the process had when it was started (its exec, or its parent's at fork), for
     * matchCapabilityChanges and matchNamespaceChanges; started is 0 when unknown. */
    u64 caps[4];                 /* effective, inheritable, permitted (abi.CapSet) */
    u32 ns[WEIR_NAMESPACES];     /* namespace inode numbers (abi.Namespace) */
    u64 started;
};


/* A cgroup's path as cgroup_mkdir gave it (exec.bpf.c): its tail when longer. */
#define WEIR_CGROUP_PATH 256
struct weir_cgroup_path {
    u32 truncated; /* bytes left out at the start */
    char path[WEIR_CGROUP_PATH];
};

/* Aggregation key: the fields a rule does not group by stay zero. */
#if AGG_PACKED
/* Every rule of the hook groups by the cgroup alone (namespace, pod, container and
 * workload all come from it) or by nothing: one 64-bit key, hashed and compared as
 * cheaply as a hand-written program's cgroup id. The series id sits in the top byte, the
 * overflow flag below it, the cgroup id in the rest (kernfs ids count a 32-bit inode
 * number and the times it wrapped: they never reach bit 55). */
#define WEIR_KEY_SLOT_SHIFT 56
#define WEIR_KEY_OVERFLOW (1ULL << 55)
#define WEIR_KEY_CGROUP_MASK (WEIR_KEY_OVERFLOW - 1)
struct weir_agg_key {
    u64 packed;
};
#else
struct weir_agg_key {
    u32 slot;      /* the rule's series id (AGGn_SID) */
    u32 overflow;  /* 1: the slot's overflow entry */
    u64 cgroup;
    u64 binary;
    s64 arg0;
    s64 arg1;
    u32 aclass;
    u32 pad;
};
#endif

struct weir_agg_val {
    u64 count;
    u64 sum;
};

/* A return probe's arguments, saved by its entry half (SAVE_ENTRY=1) per thread and
 * hook, read back by the return half (USE_ENTRY=1): the raw register values. */
struct weir_entry_key {
    u64 hook;  /* HOOK_KEY: the same for every version of one policy's hook */
    u64 tid;   /* bpf_get_current_pid_tgid */
};

struct weir_entry {
    u64 raw[WEIR_MAX_ARGS];
};

/* Correlation across hooks, in maps shared by every program (exec.bpf.c): a duration's
 * clock (weir_starts), started by a call of one hook, stopped and folded by a call of
 * another with the same key; a mark (weir_marks), set or cleared by a selector's Mark,
 * tested by matchMarks. */
struct weir_corr_key {
    u64 pair;  /* the clock's pair id (MKn_ID = AGGn_DID), or the mark's id */
    u64 who;   /* the thread id, the process id or an argument's value (CLOCK_*) */
};

/* A mark the selector sets or clears when it matches (Mark, Unmark, TrackSock, ...). */
struct weir_mark_cfg {
    u64 ID;        /* the mark's id */
    s16 ARG;       /* its key's index in sc->raw (an arg slot, KEY_THREAD, KEY_PROCESS) */
    u8 KEY;        /* CLOCK_*; CLOCK_NONE: unused */
    u8 OP;         /* MARK_SET or MARK_CLEAR */
    u8 pad[4];
};

/* Per-CPU scratch: too big for the 512-byte BPF stack. */
struct weir_scratch {
    u64 ints[WEIR_MAX_ARGS];
    struct weir_strkey str[WEIR_STR_SLOTS];
    struct weir_strkey rev[WEIR_STR_SLOTS];  /* reversed, for Postfix */
    u64 slen[WEIR_STR_SLOTS];                /* bytes read, NUL included */
    u64 ftype[WEIR_STR_SLOTS];               /* a file, path or fd arg: i_mode >> 12 */
    struct weir_rangekey rkey;
    struct weir_intkey ikey;
    struct weir_strkey exe;
    struct weir_addr addr[WEIR_ADDR_SLOTS];
    struct weir_addrkey akey;
    struct weir_classkey ckey;
    struct weir_agg_key key;
    struct weir_agg_val zero;  /* never written: the first value of a new series */
    struct weir_task task;
    struct weir_entry entry;   /* the entry half's saved arguments (USE_ENTRY) */
    struct weir_corr_key corr;
#if CONFIGURED
    struct weir_mark_cfg marks[WEIR_MAX_MARK_ACTIONS]; /* the matching selector's marks */
#endif
    u64 raw[WEIR_RAW_KEYS];    /* keys of marks and clocks: each arg's raw value, then the
                                  thread and process ids (KEY_THREAD, KEY_PROCESS) */
    u64 passed[WEIR_MAX_ARGS]; /* each arg as the function was passed it (a cred pointer,
                                  before reading its euid: CapabilitiesGained) */
#if USE_SUBSTR
    struct weir_strkey sub;    /* SubString: a suffix of the string, looked up as a prefix */
    char low[WEIR_STR_SLOTS][WEIR_MAX_STR]; /* SubStringIgnCase: the strings in lower case */
    u64 submask[WEIR_STR_SLOTS][2]; /* per slot: matchers whose SubString / SubStringIgnCase
                                       value occurs in it (bit: matcher id) */
#endif
    char path[512];            /* a file path, built from its last component back */
};

/* One posted event. The string and address sections exist only when the hook
 * reads such arguments (EV_STRS / EV_ADDRS come from -D flags), so a segfault
 * event is ~130 bytes and a path event ~380. */
struct weir_event {
    u64 time_ns;        /* bpf_ktime_get_ns (monotonic) */
    u64 cgroup;
    u64 exe_hash;
    u32 pid;            /* tgid */
    u32 tid;
    u32 selector;
    s32 user_stack;     /* frames in ustack, -errno, or STACK_NOT_TAKEN */
    s32 kernel_stack;   /* frames in kstack, -errno, or STACK_NOT_TAKEN */
    u32 pad;
    char comm[16];
    u64 ints[WEIR_MAX_ARGS];
#if EV_STRS > 0
    char str[EV_STRS][WEIR_MAX_STR];
#endif
#if EV_ADDRS > 0
    struct weir_addr addr[EV_ADDRS];
#endif
#if EV_USTACK > 0
    struct bpf_stack_build_id ustack[EV_USTACK];
#endif
#if EV_KSTACK > 0
    u64 kstack[EV_KSTACK];
#endif
};

#if CONFIGURED
/* The run-time configuration of a configured program (CONFIGURED=1): what a
 * specialised build takes as -D flags, one field per flag. The field names are
 * the flags' suffixes (S0_M1_OP is sel[0].M[1].OP), so codegen.py fills them by
 * name. The program keeps two copies and reads the one ``active`` names; the
 * agent writes the other copy whole, then flips ``active``, so an event sees
 * one configuration or the other, never half of each. GEN (0 or 1) tags the
 * copy's matcher ids, ranges and bounds, which live in shared maps. */
struct weir_match_cfg {
    s64 VAL;
    u8 OP;
    u8 NEG;
    u8 ARG;
    u8 pad[5];
};

struct weir_binary_cfg {
    u8 OP;
    u8 NEG;
};


struct weir_selector_cfg {
    u64 RATE_NS;
    u8 ACTION;
    u8 USTACK;
    u8 KSTACK;
    u8 pad[5];
    struct weir_match_cfg M[WEIR_MAX_MATCHERS];
    struct weir_binary_cfg B[WEIR_MAX_BINARIES];
    struct weir_mark_cfg A[WEIR_MAX_MARK_ACTIONS];
};

struct weir_agg_cfg {
    u64 MAX;
    u8 ON;
    u8 VALUE;
    u8 CGROUP;
    u8 BINARY;
    s16 KARG0;     /* s16, not s8: bcc's table types have no signed char */
    s16 KARG1;
    s16 ACLASS;
    s16 VARG;
    u8 NBOUNDS;
    u8 SID;        /* series id: the slot of this rule's entries in agg/hist */
    u8 pad[2];
    u64 DID;       /* a duration: the clock's pair id (0: not a duration) */
    s16 DARG;      /* a duration: its key's index in sc->raw (an arg slot, KEY_THREAD, ...) */
    u8 DUR;        /* a duration: what its clock is looked up by (CLOCK_*) */
    u8 pad2[5];
};

/* A clock this hook starts for a duration rule (of its own or another hook). */
struct weir_start_cfg {
    u64 ID;        /* the pair id the end side looks up */
    s16 ARG;       /* its key's index in sc->raw (an arg slot, KEY_THREAD, KEY_PROCESS) */
    u8 KEY;        /* CLOCK_*; CLOCK_NONE: unused */
    u8 pad[5];
};

struct weir_config {
    u32 NUM_SELECTORS;
    u32 GEN;
    u32 REV_SLOTS;  /* bit n: string slot n is matched by a Postfix */
    u32 SUB_SLOTS;  /* bit n: slot n is searched for SubString values; bit 2+n: its lower-
                       cased copy for SubStringIgnCase values */
    struct weir_selector_cfg S[WEIR_MAX_SELECTORS];
    struct weir_agg_cfg AGG[WEIR_MAX_AGGS];
    struct weir_start_cfg MK[WEIR_MAX_STARTS];
};
#endif

struct weir_rate_key {
    u32 selector;
    u32 tgid;
};

#endif
