/* weir.h: data structures shared by every weir BPF program.
 *
 * The layouts here are the single source of truth: the agent decodes map keys
 * and values through the ctypes types bcc derives from these definitions, by
 * field name. Enumerations (operators, argument kinds, stat indexes, ...) are
 * defined once in Python (weir_agent/abi.py) and arrive as -D flags.
 *
 * Nothing in this file or in hook.bpf.c depends on a user-supplied string: a
 * policy specialises the program only through integer -D flags, and its
 * strings, CIDRs and value sets are written into the maps below after load.
 */
#ifndef WEIR_H
#define WEIR_H

/* WEIR_MAX_STR (bytes read of a string, NUL included) arrives as a -D flag from
 * weir_agent/abi.py: an LPM trie key holds at most 256 bytes after prefixlen,
 * and the string shares them with a 4-byte matcher id. */
#define WEIR_MAX_ARGS 8           /* argument slots per hook */
#define WEIR_STR_SLOTS 2          /* string arguments per hook */
#define WEIR_ADDR_SLOTS 2         /* sock/sockaddr arguments per hook */
#define WEIR_MAX_RANGES 16        /* ranges per InRange / port matcher */
#define WEIR_MAX_BOUNDS 64        /* explicit histogram bounds */

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

/* One socket address read from a struct sock or a struct sockaddr. */
struct weir_addr {
    u16 family;
    u16 sport;   /* host byte order */
    u16 dport;   /* host byte order */
    u16 valid;
    u8 saddr[16];
    u8 daddr[16];
};

/* Integer sets (Equal / NotEqual on integers). */
struct weir_intkey {
    u32 matcher;
    u32 pad;
    u64 value;
};

struct weir_range {
    s64 low;
    s64 high;
};

/* The executable of each process, recorded at exec (and seeded from /proc). */
struct weir_exe {
    u64 hash;                 /* FNV-1a 64 of path, as abi.fnv1a64 */
    struct weir_strkey path;  /* path.s holds the path; the header is scratch */
};

/* Per-CPU scratch: too big for the 512-byte BPF stack. */
struct weir_scratch {
    u64 ints[WEIR_MAX_ARGS];
    struct weir_strkey str[WEIR_STR_SLOTS];
    struct weir_strkey rev;
    struct weir_strkey exe;
    struct weir_addr addr[WEIR_ADDR_SLOTS];
    struct weir_addrkey akey;
    struct weir_classkey ckey;
};

/* Aggregation key: the fields a rule does not group by stay zero. */
struct weir_agg_key {
    u32 slot;      /* which AggregationRule (0-3) */
    u32 overflow;  /* 1: the slot's overflow entry */
    u64 cgroup;
    u64 binary;
    s64 arg0;
    s64 arg1;
    u32 aclass;
    u32 pad;
};

struct weir_agg_val {
    u64 count;
    u64 sum;
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
    s32 user_stack;     /* stack map id, or negative (-errno / not taken) */
    s32 kernel_stack;
    u32 pad;
    char comm[16];
    u64 ints[WEIR_MAX_ARGS];
#if EV_STRS > 0
    char str[EV_STRS][WEIR_MAX_STR];
#endif
#if EV_ADDRS > 0
    struct weir_addr addr[EV_ADDRS];
#endif
};

struct weir_rate_key {
    u32 selector;
    u32 tgid;
};

#endif
