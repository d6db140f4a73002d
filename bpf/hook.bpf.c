/* hook.bpf.c: the one program every weir hook runs.
 *
 * The agent (weir_agent/codegen.py) compiles this file with integer -D flags
 * only. The *shape* flags say which arguments to read and how (ARGn_*),
 * whether the hook posts, takes stacks or is scoped, and how big the maps are.
 * The *configuration* (which matchers each selector runs, Ss_Mm_* and Ss_Bb_*,
 * and which aggregations to fold into, AGGn_*) comes one of two ways:
 *  - CONFIGURED=1 (what the agent runs): read at run time from the ``config``
 *    map, so an edit that keeps the shape is a map write, with no compile;
 *  - CONFIGURED=0 (specialised; `weir render` and the benchmark): as -D flags,
 *    so the compiler folds the unused branches away.
 * The C_* macros below read one or the other. Strings, CIDRs and value sets are
 * never part of the program: they are keys of the maps below, written after load.
 *
 * Flow: count observed -> read args -> selectors (AND within, OR across, first
 * match decides) -> count matched -> fold into aggregations (a duration reads the
 * clock its start hook started, then stops it) -> start clocks -> set or clear the
 * matching selector's marks -> post.
 * A permanent stub per hook (stub.bpf.c) tail-calls this program, so a new
 * version replaces it atomically.
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include "weir.h"
#include "task.h"

BPF_PERCPU_ARRAY(weir_scratch, struct weir_scratch, 1);
/* The counters, one struct per CPU: one lookup serves every counter of a run. */
struct weir_stats {
    u64 s[STAT_COUNT];
};
BPF_PERCPU_ARRAY(stats, struct weir_stats, 1);
BPF_LPM_TRIE(str_lpm, struct weir_strkey, u8, STR_LPM_MAX);
BPF_LPM_TRIE(addr_lpm, struct weir_addrkey, u8, ADDR_LPM_MAX);
BPF_LPM_TRIE(class_lpm, struct weir_classkey, u32, 64);
BPF_F_TABLE("hash", struct weir_intkey, u8, int_set, INT_SET_MAX, BPF_F_NO_PREALLOC);
BPF_LPM_TRIE(range_lpm, struct weir_rangekey, u8, RANGE_LPM_MAX);
#if USE_SUBSTR
/* SubString values -> the matchers (bits) whose values are prefixes of it. */
BPF_LPM_TRIE(sub_lpm, struct weir_strkey, u64, SUB_LPM_MAX);
#endif
/* Indexed by rule position (0-3) plus 4 for generation 1. */
BPF_ARRAY(bounds, struct weir_bounds, 2 * WEIR_MAX_AGGS);

#if CONFIGURED
BPF_ARRAY(config, struct weir_config, 2);
BPF_ARRAY(active, u32, 1);
#define C_NUM_SELECTORS (cfg->NUM_SELECTORS)
#define C_GEN (cfg->GEN)
#define C_REV_SLOTS (cfg->REV_SLOTS)
#define C_SUB_SLOTS (cfg->SUB_SLOTS)
#define C_S(s, f) (cfg->S[s].f)
#define C_M(s, m, f) (cfg->S[s].M[m].f)
#define C_B(s, b, f) (cfg->S[s].B[b].f)
#define C_AGG(n, f) (cfg->AGG[n].f)
#define C_MK(n, f) (cfg->MK[n].f)
#define C_A(s, a, f) (cfg->S[s].A[a].f)
#else
#define C_NUM_SELECTORS NUM_SELECTORS
#define C_GEN 0
#define C_REV_SLOTS REV_SLOTS
#define C_SUB_SLOTS SUB_SLOTS
#define C_S(s, f) S##s##_##f
#define C_M(s, m, f) S##s##_M##m##_##f
#define C_B(s, b, f) S##s##_B##b##_##f
#define C_AGG(n, f) AGG##n##_##f
#define C_MK(n, f) MK##n##_##f
#define C_A(s, a, f) S##s##_A##a##_##f
#endif
/* The exec tracker's maps (exec.bpf.c), declared as it declares them: the agent loads
 * this program with the tracker's maps in their place (loading.py, by name). */
#if USE_EXE
BPF_TABLE("lru_hash", u32, struct weir_exe, weir_exes, 65536);

static __always_inline struct weir_exe *current_exe(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return weir_exes.lookup(&tgid);
}
#endif
#if SAVE_ENTRY || USE_ENTRY
BPF_TABLE("lru_hash", struct weir_entry_key, struct weir_entry, weir_entries, 65536);
#endif
#if USE_STARTS
BPF_TABLE("lru_hash", struct weir_corr_key, u64, weir_starts, DURATION_STARTS);
#endif
#if USE_MARKS
BPF_TABLE("lru_hash", struct weir_corr_key, u64, weir_marks, MARKS);
#endif
#if USE_STARTS || USE_MARKS
BPF_TABLE("percpu_array", u32, u64, weir_corr_stats, CORR_COUNT);
#endif
#if USE_SCOPE
/* podSelector / namespaceSelector: the cgroup ids of the selected pods' containers,
 * kept current by the agent as pods come and go. */
BPF_HASH(scope, u64, u8, 65536);
#endif
#if ANY_POST
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_TABLE("lru_hash", struct weir_rate_key, u64, rate_limits, RATE_LIMIT_ENTRIES);
#endif

/* All aggregations of this program share one map per value shape; the key's
 * slot says which AggregationRule an entry belongs to. series[slot] counts the
 * keys of each slot so maxSeries holds exactly (the map is sized to the sum).
 * A histogram's count is the sum of its buckets (the agent adds them up): one add
 * fewer per event. */
struct weir_hist_val {
    u64 count;
    u64 sum;
    u64 buckets[WEIR_MAX_BOUNDS + 2];
};
/* Not preallocated: memory follows the series that exist, not maxSeries. With
 * AGG_PERCPU (HIST_PERCPU) each CPU adds to its own copy of a value, with no atomic
 * instruction; the agent chooses it when a copy per CPU of every series still fits the
 * policy's memory budget on this node (codegen.py), and adds the copies up. */
#if AGG_PERCPU
BPF_F_TABLE("percpu_hash", struct weir_agg_key, struct weir_agg_val, agg, AGG_PLAIN_MAX,
            BPF_F_NO_PREALLOC);
#define ADD_PLAIN(field, n) ((field) += (n))
#else
BPF_F_TABLE("hash", struct weir_agg_key, struct weir_agg_val, agg, AGG_PLAIN_MAX,
            BPF_F_NO_PREALLOC);
#define ADD_PLAIN(field, n) __sync_fetch_and_add(&(field), (n))
#endif
#if HIST_PERCPU
BPF_F_TABLE("percpu_hash", struct weir_agg_key, struct weir_hist_val, hist, AGG_HIST_MAX,
            BPF_F_NO_PREALLOC);
#define ADD_HIST(field, n) ((field) += (n))
#else
BPF_F_TABLE("hash", struct weir_agg_key, struct weir_hist_val, hist, AGG_HIST_MAX,
            BPF_F_NO_PREALLOC);
#define ADD_HIST(field, n) __sync_fetch_and_add(&(field), (n))
#endif
BPF_ARRAY(series, u64, WEIR_MAX_SERIES_IDS);
BPF_PERCPU_ARRAY(hist_zero, struct weir_hist_val, 1);

/* Per-argument flags, folded to constants by slot number. */
#define PICK(prefix, suffix, i)                                                \
    ((i) == 0 ? prefix##0##suffix : (i) == 1 ? prefix##1##suffix               \
   : (i) == 2 ? prefix##2##suffix : (i) == 3 ? prefix##3##suffix               \
   : (i) == 4 ? prefix##4##suffix : (i) == 5 ? prefix##5##suffix               \
   : (i) == 6 ? prefix##6##suffix : prefix##7##suffix)
#define ARG_KIND(i) PICK(ARG, _KIND, i)
#define ARG_SIGNED(i) PICK(ARG, _SIGNED, i)
#define ARG_SLOT(i) PICK(ARG, _SLOT, i)

static __always_inline void stat_add(u32 index)
{
    u32 zero = 0;
    struct weir_stats *st = stats.lookup(&zero);
    if (st && index < STAT_COUNT)
        st->s[index] += 1;
}

/* A register's or argument's low bytes as the declared integer type. */
static __always_inline u64 narrow(u64 value, int size, int is_signed)
{
    if (size == 1) value = is_signed ? (u64)(s64)(s8)value : (u8)value;
    else if (size == 2) value = is_signed ? (u64)(s64)(s16)value : (u16)value;
    else if (size == 4) value = is_signed ? (u64)(s64)(s32)value : (u32)value;
    return value;
}

/* The raw 64-bit value of an argument source: a tracepoint field, a register, a raw
 * tracepoint's argument or the return value. */
static __always_inline u64 read_source(void *ctx, struct weir_scratch *sc, int from, int src,
                                       int size, int is_signed)
{
    u64 value = 0;
    if (from == SRC_FIELD) {
        if (size == 1)
            value = is_signed ? (u64)(s64)*(s8 *)(ctx + src) : *(u8 *)(ctx + src);
        else if (size == 2)
            value = is_signed ? (u64)(s64)*(s16 *)(ctx + src) : *(u16 *)(ctx + src);
        else if (size == 4)
            value = is_signed ? (u64)(s64)*(s32 *)(ctx + src) : *(u32 *)(ctx + src);
        else
            value = *(u64 *)(ctx + src);
        return value;
    }
    if (from == SRC_RAW) /* a raw tracepoint: ctx is the arguments (src is a constant) */
        return narrow(((u64 *)ctx)[src], size, is_signed);
    struct pt_regs *regs = ctx;
    if (from == SRC_SAVED) {
        value = sc->entry.raw[src & (WEIR_MAX_ARGS - 1)];
    } else if (from == SRC_RET) {
        value = PT_REGS_RC(regs);
    } else if (SYSCALL_WRAPPER) {
        /* __x64_sys_* / __arm64_sys_* take the user registers as one argument. */
        struct pt_regs *inner = (struct pt_regs *)PT_REGS_PARM1(regs);
#ifdef CONFIG_X86_64
        if (src == 0) bpf_probe_read_kernel(&value, 8, &inner->di);
        else if (src == 1) bpf_probe_read_kernel(&value, 8, &inner->si);
        else if (src == 2) bpf_probe_read_kernel(&value, 8, &inner->dx);
        else if (src == 3) bpf_probe_read_kernel(&value, 8, &inner->r10);
        else if (src == 4) bpf_probe_read_kernel(&value, 8, &inner->r8);
        else bpf_probe_read_kernel(&value, 8, &inner->r9);
#else
        bpf_probe_read_kernel(&value, 8, &inner->regs[src & 7]);
#endif
    } else {
        if (src == 0) value = PT_REGS_PARM1(regs);
        else if (src == 1) value = PT_REGS_PARM2(regs);
        else if (src == 2) value = PT_REGS_PARM3(regs);
        else if (src == 3) value = PT_REGS_PARM4(regs);
        else if (src == 4) value = PT_REGS_PARM5(regs);
        else value = PT_REGS_PARM6(regs);
    }
    return narrow(value, size, is_signed);
}

static __always_inline void zero_str(struct weir_strkey *key)
{
    u64 *words = (u64 *)key->s;
#pragma unroll
    for (int i = 0; i < WEIR_MAX_STR / 8; i++)
        words[i] = 0;
}

static __always_inline void mapped_v4(u8 *out, u32 addr)
{
    __builtin_memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    __builtin_memcpy(out + 12, &addr, 4);
}

#if USE_SOCK
/* struct sock's fields at the offsets the agent read from the running kernel's BTF
 * (SK_* flags, weir_agent/btf.py): no kernel header, so no other kernel's layout. */
static __always_inline void read_sock(struct weir_addr *a, void *sk)
{
    __builtin_memset(a, 0, sizeof(*a));
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), sk + SK_FAMILY);
    a->family = family;
    u16 dport = 0, sport = 0;
    bpf_probe_read_kernel(&dport, sizeof(dport), sk + SK_DPORT);
    bpf_probe_read_kernel(&sport, sizeof(sport), sk + SK_NUM);
    a->dport = bpf_ntohs(dport);
    a->sport = sport;
    u16 protocol = 0;
    u8 state = 0;
    bpf_probe_read_kernel(&protocol, sizeof(protocol), sk + SK_PROTOCOL);
    bpf_probe_read_kernel(&state, sizeof(state), sk + SK_STATE);
    a->protocol = protocol;
    a->state = state;
    if (family == AF_INET) {
        u32 d = 0, s = 0;
        bpf_probe_read_kernel(&d, 4, sk + SK_DADDR);
        bpf_probe_read_kernel(&s, 4, sk + SK_RCV_SADDR);
        mapped_v4(a->daddr, d);
        mapped_v4(a->saddr, s);
        a->valid = 1;
    } else if (family == AF_INET6) {
        bpf_probe_read_kernel(a->daddr, 16, sk + SK_V6_DADDR);
        bpf_probe_read_kernel(a->saddr, 16, sk + SK_V6_RCV_SADDR);
        a->valid = 1;
    }
}
#else
#define read_sock(a, sk)
#endif

static __always_inline void read_sockaddr(struct weir_addr *a, void *ptr, int user)
{
    __builtin_memset(a, 0, sizeof(*a));
    struct sockaddr_in6 sa = {};
    if (user)
        bpf_probe_read_user(&sa, sizeof(sa), ptr);
    else
        bpf_probe_read_kernel(&sa, sizeof(sa), ptr);
    a->family = sa.sin6_family;
    a->dport = bpf_ntohs(sa.sin6_port);
    if (sa.sin6_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&sa;
        mapped_v4(a->daddr, in->sin_addr.s_addr);
        a->valid = 1;
    } else if (sa.sin6_family == AF_INET6) {
        __builtin_memcpy(a->daddr, &sa.sin6_addr, 16);
        a->valid = 1;
    }
}

#if USE_SKB
/* A struct sk_buff's IP and transport headers (skb->head plus the header offsets
 * the kernel keeps in the skb; SKB_* offsets from BTF). IPv6 extension headers
 * are not walked: the protocol is the first next-header. */
static __always_inline void read_skb(struct weir_addr *a, void *skb)
{
    __builtin_memset(a, 0, sizeof(*a));
    void *head = read_ptr(skb + SKB_HEAD);
    u16 network = 0xffff, transport = 0xffff;
    bpf_probe_read_kernel(&network, 2, skb + SKB_NETWORK_HEADER);
    bpf_probe_read_kernel(&transport, 2, skb + SKB_TRANSPORT_HEADER);
    if (!head || network == 0xffff)
        return;
    void *ip = head + network;
    u8 version = 0;
    bpf_probe_read_kernel(&version, 1, ip);
    version >>= 4;
    u8 protocol = 0;
    if (version == 4) {
        u32 saddr = 0, daddr = 0;
        bpf_probe_read_kernel(&protocol, 1, ip + 9);
        bpf_probe_read_kernel(&saddr, 4, ip + 12);
        bpf_probe_read_kernel(&daddr, 4, ip + 16);
        a->family = AF_INET;
        mapped_v4(a->saddr, saddr);
        mapped_v4(a->daddr, daddr);
    } else if (version == 6) {
        bpf_probe_read_kernel(&protocol, 1, ip + 6);
        bpf_probe_read_kernel(a->saddr, 16, ip + 8);
        bpf_probe_read_kernel(a->daddr, 16, ip + 24);
        a->family = AF_INET6;
    } else {
        return;
    }
    a->protocol = protocol;
    a->valid = 1;
    /* TCP, UDP, SCTP and UDP-Lite start with the two ports. */
    if (transport != 0xffff && (protocol == 6 || protocol == 17 || protocol == 132 ||
                                protocol == 136)) {
        u16 ports[2] = {};
        bpf_probe_read_kernel(ports, sizeof(ports), head + transport);
        a->sport = bpf_ntohs(ports[0]);
        a->dport = bpf_ntohs(ports[1]);
    }
}
#else
#define read_skb(a, skb)
#endif

#if USE_PATH
/* The path of a struct path, as the mount tree names it (offsets of dentry, mount
 * and vfsmount fields from BTF, PATH_* flags): written from the last component back
 * into the scratch's path buffer, crossing mounts at their roots, then copied out as
 * a string. A path deeper than WEIR_PATH_DEPTH steps or longer than the string keeps
 * its last components without the leading '/', so it never passes for a whole path;
 * a file with no place in the tree (a pipe, a socket) gives its own name or "". */
#define WEIR_PATH_DEPTH 64
static __always_inline long read_path(struct weir_scratch *sc, struct weir_strkey *k, void *path)
{
    char *buf = sc->path;
    void *dentry = read_ptr(path + PATH_DENTRY);
    void *vfsmnt = read_ptr(path + PATH_MNT);
    void *mnt = vfsmnt - MOUNT_MNT;
    u32 off = 255;
    int whole = 0;
    buf[255] = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_PATH_DEPTH; i++) {
        if (!dentry || !vfsmnt)
            break;
        void *parent = read_ptr(dentry + DENTRY_PARENT);
        if (dentry == read_ptr(vfsmnt + VFSMOUNT_ROOT)) {
            void *up = read_ptr(mnt + MOUNT_PARENT);
            if (!up || up == mnt) {
                whole = 1; /* the root of the mount tree */
                break;
            }
            dentry = read_ptr(mnt + MOUNT_MOUNTPOINT);
            mnt = up;
            vfsmnt = mnt + MOUNT_MNT;
            continue;
        }
        u32 len = read_u32(dentry + DENTRY_NAME_LEN);
        if (len + 1 + (256 - WEIR_MAX_STR) > off)
            break; /* the string holds WEIR_MAX_STR - 1 bytes: keep the last components */
        off = (off - len - 1) & 255;
        buf[off] = '/';
        bpf_probe_read_kernel(buf + off + 1, len & 255, read_ptr(dentry + DENTRY_NAME));
        if (!parent || parent == dentry)
            break; /* not in the tree: keep its name, without the '/' */
        dentry = parent;
    }
    if (whole && off == 255) {
        off = 254;
        buf[254] = '/';
    } else if (!whole && off < 255) {
        off += 1;
    }
    long n = bpf_probe_read_kernel_str(k->s, WEIR_MAX_STR, buf + (off & 255));
    return n > 0 ? n : 0;
}

/* The struct file of a descriptor of the current task (TASK_FILES, FDT_* from BTF). */
static __always_inline void *fd_file(u64 fd)
{
    void *task = (void *)bpf_get_current_task();
    void *fdt = read_ptr(read_ptr(task + TASK_FILES) + FILES_FDT);
    if (!fdt || fd >= read_u32(fdt + FDT_MAX_FDS))
        return 0;
    return read_ptr(read_ptr(fdt + FDT_FD) + fd * sizeof(void *));
}

/* A file, path or fd arg: what kind of file it is (FileType: the inode's S_IFMT nibble,
 * in sc->ftype) and, when a matcher or a posted event needs it (ARGn_PATH), its path.
 * The path is the costly part: a walk of up to WEIR_PATH_DEPTH dentries. */
static __always_inline long read_file_arg(struct weir_scratch *sc, struct weir_strkey *k,
                                          int kind, u64 raw, int slot, int want_path)
{
    void *path = (void *)raw;
    void *inode = 0;
    sc->ftype[slot & 1] = 0;
    if (kind == KIND_FD) {
        void *file = fd_file(raw);
        if (!file)
            return 0;
        path = file + FILE_F_PATH;
        inode = read_ptr(file + FILE_F_INODE);
    } else if (kind == KIND_FILE) {
        if (!raw)
            return 0;
        path = (void *)raw + FILE_F_PATH;
        inode = read_ptr((void *)raw + FILE_F_INODE);
    }
    if (!path)
        return 0;
    if (kind == KIND_PATH)
        inode = read_ptr(read_ptr(path + PATH_DENTRY) + DENTRY_D_INODE);
    if (inode) {
        u16 mode = 0;
        bpf_probe_read_kernel(&mode, sizeof(mode), inode + INODE_I_MODE);
        sc->ftype[slot & 1] = mode >> 12;
    }
    return want_path ? read_path(sc, k, path) : 0;
}
#else
#define read_file_arg(sc, k, kind, raw, slot, want_path) 0
#endif

#if USE_TASK
/* What matchPIDs, matchNamespaces and matchCapabilities test, read once per event. */
static __always_inline void read_task(struct weir_task *t)
{
    void *task = (void *)bpf_get_current_task();
    t->pid[0] = bpf_get_current_pid_tgid() >> 32;
    void *upid = task_upid(task);
    t->pid[1] = upid ? read_u32(upid) : 0;
#if USE_PID_TREE
    void *up = task;
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_ANCESTORS; i++) {
        void *parent = up ? read_ptr(up + TASK_REAL_PARENT) : 0;
        if (parent == up)
            parent = 0; /* the top of the tree */
        up = parent;
        t->ancestors[0][i] = parent ? read_u32(parent + TASK_TGID) : 0;
        void *pupid = parent ? task_upid(parent) : 0;
        t->ancestors[1][i] = pupid ? read_u32(pupid) : 0;
    }
#endif
    read_ns_caps(task, upid, t->ns, t->caps);
}

#endif

/* A resolve path's step k (ARGn_Rk: the offset, shifted left once, and bit 0: load the
 * pointer or value there, else take the address): constants, so each is one read. */
#define RESOLVE_STEP(i, k)                                                      \
    if (ARG##i##_RESOLVE > k) {                                                 \
        u64 step = ARG##i##_R##k;                                               \
        raw = (step & 1) ? (u64)read_ptr((void *)raw + (step >> 1)) : raw + (step >> 1); \
    }

/* Read argument slot i into scratch, as its -D flags say. */
#define READ_ARG(i)                                                             \
    if (ARG##i##_KIND != KIND_NONE) {                                           \
        /* a struct pointer to go through is read whole; SIZE is the field's */ \
        int through = ARG##i##_RESOLVE || ARG##i##_DEREF;                       \
        u64 raw = read_source(ctx, sc, ARG##i##_FROM, ARG##i##_SRC,             \
                              through ? 8 : ARG##i##_SIZE,                      \
                              through ? 0 : ARG##i##_SIGNED);                   \
        sc->passed[i] = raw;                                                    \
        RESOLVE_STEP(i, 0) RESOLVE_STEP(i, 1) RESOLVE_STEP(i, 2)                \
        RESOLVE_STEP(i, 3) RESOLVE_STEP(i, 4) RESOLVE_STEP(i, 5)                \
        if (ARG##i##_DEREF == DEREF_ADDRESS) /* a member stored in the struct */ \
            raw += ARG##i##_OFF;                                                \
        else if (ARG##i##_DEREF == DEREF_LOAD) /* a member pointer, or a value */ \
            raw = (u64)read_ptr((void *)raw + ARG##i##_OFF);                    \
        if (through && ARG##i##_KIND == KIND_INT) /* the field read, as declared */ \
            raw = narrow(raw, ARG##i##_SIZE, ARG##i##_SIGNED);                  \
        sc->raw[i] = raw;                                                       \
        if (ARG##i##_KIND == KIND_INT) {                                        \
            sc->ints[i] = raw;                                                  \
        } else if (ARG##i##_KIND == KIND_STR_PTR) {                             \
            struct weir_strkey *k = &sc->str[ARG##i##_SLOT & 1];                \
            zero_str(k);                                                        \
            long n = ARG##i##_USER                                              \
                ? bpf_probe_read_user_str(k->s, WEIR_MAX_STR, (void *)raw)      \
                : bpf_probe_read_kernel_str(k->s, WEIR_MAX_STR, (void *)raw);   \
            sc->ints[i] = n > 0 ? n : 0;                                        \
            sc->slen[ARG##i##_SLOT & 1] = sc->ints[i];                          \
        } else if (ARG##i##_KIND == KIND_STR_DATALOC) {                         \
            struct weir_strkey *k = &sc->str[ARG##i##_SLOT & 1];                \
            zero_str(k);                                                        \
            u32 loc = *(u32 *)(ctx + ARG##i##_SRC);                             \
            long n = bpf_probe_read_kernel_str(k->s, WEIR_MAX_STR,              \
                                               ctx + (loc & 0xffff));           \
            sc->ints[i] = n > 0 ? n : 0;                                        \
            sc->slen[ARG##i##_SLOT & 1] = sc->ints[i];                          \
        } else if (ARG##i##_KIND == KIND_STR_INLINE) {                          \
            struct weir_strkey *k = &sc->str[ARG##i##_SLOT & 1];                \
            zero_str(k);                                                        \
            long n = bpf_probe_read_kernel_str(k->s, ARG##i##_SIZE,             \
                                               ctx + ARG##i##_SRC);             \
            sc->ints[i] = n > 0 ? n : 0;                                        \
            sc->slen[ARG##i##_SLOT & 1] = sc->ints[i];                          \
        } else if (ARG##i##_KIND == KIND_CHAR_BUF) {                            \
            struct weir_strkey *k = &sc->str[ARG##i##_SLOT & 1];                \
            zero_str(k);                                                        \
            u32 len = sc->ints[ARG##i##_LEN_ARG & 7];                           \
            if (ARG##i##_LEN_ARG == LEN_RETURN) { /* returnCopy: what it returned */ \
                s64 returned = PT_REGS_RC((struct pt_regs *)ctx);               \
                len = returned > 0 ? returned : 0;                              \
            }                                                                   \
            if (len > WEIR_MAX_STR - 1)                                         \
                len = WEIR_MAX_STR - 1;                                         \
            /* hide len from clang, then bound it again where the verifier sees */ \
            asm volatile("" : "+r"(len));                                       \
            len &= 0xff;                                                        \
            bpf_probe_read_user(k->s, len, (void *)raw);                        \
            sc->ints[i] = len + 1;                                              \
            sc->slen[ARG##i##_SLOT & 1] = len + 1;                              \
        } else if (ARG##i##_KIND == KIND_SOCK) {                                \
            read_sock(&sc->addr[ARG##i##_SLOT & 1], (void *)raw);               \
        } else if (ARG##i##_KIND == KIND_SOCKADDR) {                            \
            read_sockaddr(&sc->addr[ARG##i##_SLOT & 1], (void *)raw,            \
                          ARG##i##_USER);                                       \
        } else if (ARG##i##_KIND == KIND_SKB) {                                 \
            read_skb(&sc->addr[ARG##i##_SLOT & 1], (void *)raw);                \
        } else if (ARG##i##_KIND == KIND_FILE || ARG##i##_KIND == KIND_PATH ||  \
                   ARG##i##_KIND == KIND_FD) {                                  \
            struct weir_strkey *k = &sc->str[ARG##i##_SLOT & 1];                \
            zero_str(k);                                                        \
            sc->ints[i] = read_file_arg(sc, k, ARG##i##_KIND, raw,              \
                                        ARG##i##_SLOT, ARG##i##_PATH);          \
            sc->slen[ARG##i##_SLOT & 1] = sc->ints[i];                          \
        }                                                                       \
    }

static __always_inline int int_in_set(struct weir_scratch *sc, u32 matcher, u64 value)
{
    sc->ikey.matcher = matcher;
    sc->ikey.pad = 0;
    sc->ikey.value = value;
    return int_set.lookup(&sc->ikey) != NULL;
}

/* InRange and ports: one lookup among the prefixes that cover the ranges. */
static __always_inline int in_ranges(struct weir_scratch *sc, u32 matcher, u64 value,
                                     int is_signed)
{
    sc->rkey.prefixlen = 32 + 64;
    sc->rkey.matcher = bpf_htonl(matcher);
    u64 key = __builtin_bswap64(is_signed ? value ^ (1ULL << 63) : value);
    __builtin_memcpy(sc->rkey.value, &key, 8);
    return range_lpm.lookup(&sc->rkey) != NULL;
}

static __always_inline int str_hit(struct weir_strkey *k, u32 matcher)
{
    k->prefixlen = 32 + 8 * WEIR_MAX_STR;
    k->matcher = bpf_htonl(matcher);
    return str_lpm.lookup(k) != NULL;
}

/* Reverse a string slot for Postfix (seeds are stored reversed): once per event,
 * in a loop without a branch per byte (unrolled, its temporaries would overflow
 * the stack). len counts the NUL. */
static __always_inline void reverse_slot(struct weir_scratch *sc, int slot)
{
    struct weir_strkey *in = &sc->str[slot & 1];
    struct weir_strkey *out = &sc->rev[slot & 1];
    u64 len = sc->slen[slot & 1];
    s64 n = len > 0 ? (s64)len - 1 : 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_MAX_STR; i++) {
        s64 j = n - 1 - i;
        u8 keep = (u8)(((u64)j >> 63) - 1); /* 0xff while j >= 0, else 0 */
        out->s[i] = in->s[j & 255] & keep;
    }
}

static __always_inline int addr_hit(struct weir_scratch *sc, u8 *addr, u32 matcher)
{
    sc->akey.prefixlen = 32 + 128;
    sc->akey.matcher = bpf_htonl(matcher);
    __builtin_memcpy(sc->akey.addr, addr, 16);
    return addr_lpm.lookup(&sc->akey) != NULL;
}

/* Marks and clocks: whom an entry belongs to. ``index`` picks a key in sc->raw: an
 * argument's raw value (0-7; a sock, skb, file or path arg is the object's address),
 * the thread id (KEY_THREAD) or the process id (KEY_PROCESS), filled in per event. One
 * load, no branch: a configured program tests marks in each of its 64 matcher slots,
 * and the verifier walks every one. A thread id is what tracepoints such as
 * sched_switch call a pid, so arg:next_pid meets thread. */
static __always_inline u64 clock_who(struct weir_scratch *sc, int index)
{
    return sc->raw[index & (WEIR_RAW_KEYS - 1)];
}

#if USE_STARTS || USE_MARKS
static __always_inline void corr_add(u32 index)
{
    u64 *value = weir_corr_stats.lookup(&index);
    if (value)
        *value += 1;
}
#endif

/* Set or clear a mark (Mark / TrackSock, Unmark / UntrackSock). A mark already set stays
 * as it was (its time is when it was first set). */
static __always_inline void mark(struct weir_scratch *sc, int op, int key, int arg, u64 id)
{
#if USE_MARKS
    if (key == CLOCK_NONE)
        return;
    sc->corr.pair = id;
    sc->corr.who = clock_who(sc, arg);
    if (op == MARK_SET) {
        u64 now = bpf_ktime_get_ns();
        if (weir_marks.insert(&sc->corr, &now) == 0) {
            corr_add(CORR_MARKS_ADDED);
            stat_add(STAT_MARKED);
        }
    } else if (weir_marks.delete(&sc->corr) == 0) {
        corr_add(CORR_MARKS_DELETED);
        stat_add(STAT_UNMARKED);
    }
#endif
}

#if USE_SUBSTR
/* SubString and SubStringIgnCase: a value occurs in the string iff it is a prefix of one
 * of the string's suffixes. Every such value of the program is in sub_lpm once, with the
 * matchers whose values are prefixes of it (itself included) as a bit mask, so the
 * longest prefix found at a start position names every matcher with a value there. Once
 * per event and searched slot, each start position costs one copy of the suffix to the
 * front of a key (one helper call: the bytes after the string's NUL are never compared,
 * a value holds no NUL) and one lookup; the matchers then test one bit. */
static __always_inline u64 substr_mask(struct weir_scratch *sc, char *text, int slot, u32 gen)
{
    u64 len = sc->slen[slot & 1];
    u64 n = len > 0 ? len - 1 : 0; /* bytes before the NUL */
    u64 mask = 0;
    sc->sub.prefixlen = 32 + 8 * WEIR_MAX_STR;
    sc->sub.matcher = bpf_htonl(gen << 7);
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_MAX_STR - 1; i++) {
        if (i >= n)
            break;
        bpf_probe_read_kernel(sc->sub.s, WEIR_MAX_STR, text + i);
        u64 *found = sub_lpm.lookup(&sc->sub);
        if (found)
            mask |= *found;
    }
    return mask;
}

/* The slot's string in lower case (ASCII letters), for SubStringIgnCase. */
static __always_inline void lower_slot(struct weir_scratch *sc, int slot)
{
    char *in = sc->str[slot & 1].s;
    char *out = sc->low[slot & 1];
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_MAX_STR; i++) {
        u8 c = in[i];
        out[i] = c + ((u8)((u8)(c - 'A') < 26) << 5);
    }
}

static __always_inline void substr_masks(struct weir_scratch *sc, u32 slots, u32 gen)
{
    __builtin_memset(sc->submask, 0, sizeof(sc->submask));
    if (slots & 1)
        sc->submask[0][0] = substr_mask(sc, sc->str[0].s, 0, gen);
    if (slots & 2)
        sc->submask[1][0] = substr_mask(sc, sc->str[1].s, 1, gen);
    if (slots & 4) {
        lower_slot(sc, 0);
        sc->submask[0][1] = substr_mask(sc, sc->low[0], 0, gen);
    }
    if (slots & 8) {
        lower_slot(sc, 1);
        sc->submask[1][1] = substr_mask(sc, sc->low[1], 1, gen);
    }
}
#endif

/* One matchArgs entry (op, neg, arg and value are constants in a specialised build). */
static __always_inline int match_arg(struct weir_scratch *sc, int op, int neg, int arg,
                                     s64 value, u32 matcher)
{
    int hit = 0;
    u64 v = sc->ints[arg & 7];
    if (op == OP_EQ) {
        hit = v == (u64)value;
    } else if (op == OP_INT_SET) {
        hit = int_in_set(sc, matcher, v);
    } else if (op == OP_PID || op == OP_NS || op == OP_CAPS || op == OP_CAPS_CHANGED ||
               op == OP_NS_CHANGED || op == OP_CAPS_GAINED) {
#if USE_TASK
        /* matchPIDs (value: bit 0 namespace numbering, bit 1 followForks),
         * matchNamespaces (value: abi.Namespace), matchCapabilities (arg: the set,
         * value: the mask of the listed capabilities), matchCapabilityChanges (the same,
         * against the set the process started with), matchNamespaceChanges (value: a
         * bit per abi.Namespace). */
        struct weir_task *t = &sc->task;
        if (op == OP_CAPS) {
            hit = (t->caps[arg & 3] & (u64)value) != 0;
        } else if (op == OP_CAPS_GAINED) {
            u64 permitted = 0;
            bpf_probe_read_kernel(&permitted, 8,
                                  (void *)sc->passed[arg & 7] + CRED_CAP_PERMITTED);
            hit = (permitted & ~t->caps[2] & (u64)value) != 0;
        } else if (op == OP_CAPS_CHANGED || op == OP_NS_CHANGED) {
#if USE_EXE
            struct weir_exe *exe = current_exe();
            if (exe && exe->started && op == OP_CAPS_CHANGED) {
                hit = ((t->caps[arg & 3] ^ exe->caps[arg & 3]) & (u64)value) != 0;
            } else if (exe && exe->started) {
#pragma unroll
                for (int k = 0; k < 10; k++)
                    if ((((u64)value >> k) & 1) && (u32)t->ns[k] != exe->ns[k])
                        hit = 1;
            }
#endif
        } else if (op == OP_NS) {
            hit = int_in_set(sc, matcher, t->ns[value & (WEIR_NAMESPACES - 1)]);
        } else {
            hit = int_in_set(sc, matcher, t->pid[value & 1]);
#if USE_PID_TREE
#pragma clang loop unroll(disable)
            for (int i = 0; i < WEIR_ANCESTORS && !hit && (value & 2); i++) {
                u64 up = t->ancestors[value & 1][i & (WEIR_ANCESTORS - 1)];
                if (!up)
                    break;
                hit = int_in_set(sc, matcher, up);
            }
#endif
        }
#endif
    } else if (op == OP_MARK) {
#if USE_MARKS
        /* matchMarks: value is the mark's id, with its key's index in the top 4 bits. */
        sc->corr.pair = (u64)value & MARK_ID_MASK;
        sc->corr.who = clock_who(sc, (u64)value >> 60);
        hit = weir_marks.lookup(&sc->corr) != NULL;
#endif
    } else if (op == OP_GT) {
        hit = ARG_SIGNED(arg) ? (s64)v > value : v > (u64)value;
    } else if (op == OP_LT) {
        hit = ARG_SIGNED(arg) ? (s64)v < value : v < (u64)value;
    } else if (op == OP_MASK) {
        hit = (v & (u64)value) != 0;
    } else if (op == OP_RANGE) {
        hit = in_ranges(sc, matcher, v, ARG_SIGNED(arg));
    } else if (op == OP_FILE_TYPE) {
        hit = int_in_set(sc, matcher, sc->ftype[ARG_SLOT(arg) & 1]);
    } else if (op == OP_STR) {
        hit = str_hit(&sc->str[ARG_SLOT(arg) & 1], matcher);
    } else if (op == OP_STR_POSTFIX) {
        hit = str_hit(&sc->rev[ARG_SLOT(arg) & 1], matcher);
    } else if (op == OP_STR_SUB || op == OP_STR_SUB_ICASE) {
#if USE_SUBSTR
        hit = (sc->submask[ARG_SLOT(arg) & 1][op == OP_STR_SUB_ICASE] >> (matcher & 63)) & 1;
#endif
    } else {
        struct weir_addr *a = &sc->addr[ARG_SLOT(arg) & 1];
        if (op == OP_FAMILY)
            return neg ^ int_in_set(sc, matcher, a->family);
        if (op == OP_PROTOCOL)
            return neg ^ int_in_set(sc, matcher, a->protocol);
        if (op == OP_STATE)
            return neg ^ int_in_set(sc, matcher, a->state);
        /* Address and port operators never match a non-IP socket. */
        if (!a->valid)
            return 0;
        if (op == OP_DADDR)
            hit = addr_hit(sc, a->daddr, matcher);
        else if (op == OP_SADDR)
            hit = addr_hit(sc, a->saddr, matcher);
        else if (op == OP_DPORT)
            hit = in_ranges(sc, matcher, a->dport, 0);
        else if (op == OP_SPORT)
            hit = in_ranges(sc, matcher, a->sport, 0);
    }
    return neg ? !hit : hit;
}

#if USE_EXE

/* op 2 (followChildren): the executables of the nearest parents count too. */
static __always_inline int match_binary(struct weir_scratch *sc, int op, int neg, u32 matcher)
{
    struct weir_exe *exe = current_exe();
    int hit = 0;
    if (exe) {
        __builtin_memcpy(sc->exe.s, exe->path.s, WEIR_MAX_STR);
        hit = str_hit(&sc->exe, matcher);
    }
#if USE_PID_TREE
#pragma clang loop unroll(disable)
    for (int i = 0; i < WEIR_ANCESTORS && !hit && op == 2; i++) {
        u32 up = sc->task.ancestors[0][i & (WEIR_ANCESTORS - 1)];
        if (!up)
            break;
        struct weir_exe *parent = weir_exes.lookup(&up);
        if (parent) {
            __builtin_memcpy(sc->exe.s, parent->path.s, WEIR_MAX_STR);
            hit = str_hit(&sc->exe, matcher);
        }
    }
#endif
    return neg ? !hit : hit;
}

static __always_inline u64 binary_hash(void)
{
    struct weir_exe *exe = current_exe();
    return exe ? exe->hash : 0;
}
#else
static __always_inline int match_binary(struct weir_scratch *sc, int op, int neg, u32 matcher)
{
    return 0;
}
static __always_inline u64 binary_hash(void) { return 0; }
#endif

/* Matcher ids: 0-63 matchArgs, 64-95 matchBinaries, plus 128 for generation 1.
 * Every operator is one map lookup or one compare, with no loop: a configured
 * program inlines all of them for each of its 64 matchers, and the verifier
 * walks them all. */
#define MATCH(s, m)                                                            \
    if (ok && C_M(s, m, OP) != OP_NONE)                                        \
        ok = match_arg(sc, C_M(s, m, OP), C_M(s, m, NEG), C_M(s, m, ARG) & 7,  \
                       C_M(s, m, VAL), (s) * 8 + (m) + (C_GEN << 7));
#define BINARY(s, b)                                                           \
    if (ok && C_B(s, b, OP) != OP_NONE)                                        \
        ok = match_binary(sc, C_B(s, b, OP), C_B(s, b, NEG), 64 + (s) * 4 + (b) + (C_GEN << 7));
#define SELECTOR(s)                                                            \
    if (action < 0 && C_NUM_SELECTORS > (s)) {                                 \
        int ok = 1;                                                            \
        MATCH(s, 0) MATCH(s, 1) MATCH(s, 2) MATCH(s, 3)                        \
        MATCH(s, 4) MATCH(s, 5) MATCH(s, 6) MATCH(s, 7)                        \
        BINARY(s, 0) BINARY(s, 1) BINARY(s, 2) BINARY(s, 3)                    \
        if (ok) {                                                              \
            action = C_S(s, ACTION);                                           \
            selector = (s);                                                    \
            rate_ns = C_S(s, RATE_NS);                                         \
            ustack = C_S(s, USTACK);                                           \
            kstack = C_S(s, KSTACK);                                           \
        }                                                                      \
    }

static __always_inline u32 address_class(struct weir_scratch *sc, int arg)
{
    struct weir_addr *a = &sc->addr[ARG_SLOT(arg) & 1];
    if (!a->valid)
        return ACLASS_NONE;
    sc->ckey.prefixlen = 128;
    __builtin_memcpy(sc->ckey.addr, a->daddr, 16);
    u32 *cls = class_lpm.lookup(&sc->ckey);
    return cls ? *cls : ACLASS_PUBLIC;
}

/* slot: the rule's position (0-3) plus 4 for generation 1. */
static __always_inline u32 explicit_bucket(u32 slot, s64 value, int nbounds)
{
    /* Binary search for the first bound >= value (the padding is the largest s64). */
    struct weir_bounds *b = bounds.lookup(&slot);
    if (!b)
        return nbounds;
    u32 below = 0;
#pragma unroll
    for (u32 step = WEIR_MAX_BOUNDS / 2; step > 0; step >>= 1)
        if (b->b[(below + step - 1) & (WEIR_MAX_BOUNDS - 1)] < value)
            below += step;
    if (b->b[below & (WEIR_MAX_BOUNDS - 1)] < value)
        below += 1;
    return below < (u32)nbounds ? below : (u32)nbounds;
}

/* Claim a new series for the key's series id, or say the id is full. Keys live in
 * the per-CPU scratch: a configured program inlines these four times, and stack
 * copies would pass the 512-byte BPF stack. */
#if AGG_PACKED
static __always_inline u32 key_slot(struct weir_agg_key *key)
{
    return key->packed >> WEIR_KEY_SLOT_SHIFT;
}
#else
static __always_inline u32 key_slot(struct weir_agg_key *key)
{
    return key->slot;
}
#endif

static __always_inline int claim_series(struct weir_agg_key *key, u64 max_series)
{
    u32 slot = key_slot(key);
    u64 *count = series.lookup(&slot);
    if (!count)
        return 0;
    if (__sync_fetch_and_add(count, 1) >= max_series) {
        __sync_fetch_and_add(count, -1);
        return 0;
    }
    return 1;
}

static __always_inline void release_series(struct weir_agg_key *key)
{
    u32 slot = key_slot(key);
    u64 *count = series.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, -1);
}

/* The key of the slot's overflow entry. */
static __always_inline void overflow_key(struct weir_agg_key *key)
{
    u32 slot = key_slot(key);
#if AGG_PACKED
    key->packed = ((u64)slot << WEIR_KEY_SLOT_SHIFT) | WEIR_KEY_OVERFLOW;
#else
    __builtin_memset(key, 0, sizeof(*key));
    key->slot = slot;
    key->overflow = 1;
#endif
}

/* key and zero: in the scratch (the general path) or on the stack (the lean path). */
static __always_inline int fold_plain(struct weir_agg_key *key, struct weir_agg_val *zero, u64 v,
                                      u64 max_series)
{
    int overflowed = 0;
    struct weir_agg_val *val = agg.lookup(key);
    if (!val) {
        if (claim_series(key, max_series)) {
            if (agg.insert(key, zero) != 0)
                release_series(key); /* another CPU inserted it first */
            val = agg.lookup(key);
        }
        if (!val) {
            overflow_key(key);
            val = agg.lookup(key);
            overflowed = 1;
        }
    }
    if (val) {
        ADD_PLAIN(val->count, 1);
        ADD_PLAIN(val->sum, v);
    }
    return overflowed;
}

static __always_inline int fold_hist(struct weir_agg_key *key, u64 v, u32 bucket, u64 max_series)
{
    int overflowed = 0;
    struct weir_hist_val *val = hist.lookup(key);
    if (!val) {
        if (claim_series(key, max_series)) {
            u32 z = 0;
            struct weir_hist_val *zero = hist_zero.lookup(&z);
            if (zero && hist.insert(key, zero) != 0)
                release_series(key);
            val = hist.lookup(key);
        }
        if (!val) {
            overflow_key(key);
            val = hist.lookup(key);
            overflowed = 1;
        }
    }
    if (val) {
        ADD_HIST(val->sum, v);
        if (bucket < WEIR_MAX_BOUNDS + 2)
            ADD_HIST(val->buckets[bucket], 1);
    }
    return overflowed;
}

/* Fold the event into one aggregation; its entries are keyed by its series id.
 * bslot: the rule's position (0-3) plus 4 for generation 1 (its bounds).
 * Returns 1 when the event went to the overflow entry. */
static __always_inline int fold(struct weir_scratch *sc, int value, int cgroup, int binary,
                                int karg0, int karg1, int aclass, u64 v, int nbounds,
                                u64 max_series, u32 sid, u32 bslot)
{
    struct weir_agg_key *key = &sc->key;
#if AGG_PACKED
    key->packed = ((u64)(sid & 7) << WEIR_KEY_SLOT_SHIFT) |
                  (cgroup ? bpf_get_current_cgroup_id() & WEIR_KEY_CGROUP_MASK : 0);
#else
    __builtin_memset(key, 0, sizeof(*key));
    key->slot = sid & 7;
    if (cgroup) key->cgroup = bpf_get_current_cgroup_id();
    if (binary) key->binary = binary_hash();
    if (karg0 >= 0) key->arg0 = sc->ints[karg0 & 7];
    if (karg1 >= 0) key->arg1 = sc->ints[karg1 & 7];
    if (aclass >= 0) key->aclass = address_class(sc, aclass);
#endif
    if (value == VAL_HIST_EXP2)
        return fold_hist(key, v, v ? bpf_log2l(v) : 0, max_series);
    if (value == VAL_HIST_EXPLICIT)
        return fold_hist(key, v, explicit_bucket(bslot, (s64)v, nbounds), max_series);
    return fold_plain(key, &sc->zero, v, max_series);
}

#if USE_STARTS && USE_CPU
#define TASK_DEAD_STATE 0x80 /* task->__state at a dying thread's last switch (TASK_DEAD) */
#define CPU_SINCE ((u64)-1)  /* weir_starts' who for a cpu_time rule's first call */

/* cpu_time: the nanoseconds the current thread ran since this rule last saw it, from the
 * task's own accounting (se.sum_exec_runtime, which sched_switch's caller has brought up
 * to date, and which cgroups' cpu.stat adds up). The last figure seen is kept in
 * weir_starts under the rule's id mixed with the thread's birth time (a reused thread id
 * starts afresh), and dropped at the thread's last switch. A thread not seen before
 * counts from 0 when it was born after the rule's first call; one that ran before that
 * counts from now on (stat unstarted). */
static __always_inline int cpu_time(struct weir_scratch *sc, u64 did, u64 now, u64 *v)
{
    void *task = (void *)bpf_get_current_task();
    u64 ran = 0, born = 0;
    bpf_probe_read_kernel(&ran, sizeof(ran), task + TASK_SUM_EXEC_RUNTIME);
    bpf_probe_read_kernel(&born, sizeof(born), task + TASK_START_TIME);
    sc->corr.pair = did;
    sc->corr.who = CPU_SINCE;
    u64 since = now;
    u64 *first = weir_starts.lookup(&sc->corr);
    if (first)
        since = *first;
    else
        weir_starts.insert(&sc->corr, &now);
    sc->corr.pair = did ^ born;
    sc->corr.who = sc->raw[KEY_THREAD];
    u64 *seen = weir_starts.lookup(&sc->corr);
    u64 base = ran;
    if (seen)
        base = *seen;
    else if (born >= since)
        base = 0;
    else
        stat_add(STAT_UNSTARTED);
    if (read_u32(task + TASK_STATE) & TASK_DEAD_STATE)
        weir_starts.delete(&sc->corr);
    else if (seen)
        *seen = ran;
    else if (weir_starts.update(&sc->corr, &ran) != 0)
        stat_add(STAT_UNRECORDED);
    *v = ran > base ? ran - base : 0;
    return *v != 0;
}
#endif

/* The value one aggregation folds: 1 (count), an integer argument (sum, histogram), the
 * nanoseconds since the clock this call stops was started, or the thread's CPU time since
 * the last call (cpu_time). 0: nothing to fold (a duration whose clock never started:
 * before the hook was attached, or evicted; no CPU time). */
static __always_inline int agg_value(struct weir_scratch *sc, int varg, int dur, int darg,
                                     u64 did, u64 now, u64 *v)
{
    *v = varg >= 0 ? sc->ints[varg & 7] : 1;
#if USE_STARTS && USE_CPU
    if (dur == CLOCK_CPU)
        return cpu_time(sc, did, now, v);
#endif
#if USE_STARTS
    if (dur != CLOCK_NONE) {
        sc->corr.pair = did;
        sc->corr.who = clock_who(sc, darg);
        u64 *began = weir_starts.lookup(&sc->corr);
        if (!began) {
            stat_add(STAT_UNSTARTED);
            return 0;
        }
        *v = now - *began;
    }
#endif
    return 1;
}

/* A duration's clock is stopped once every rule of this call has read it. */
static __always_inline void stop_clock(struct weir_scratch *sc, int dur, int darg, u64 did)
{
#if USE_STARTS
    if (dur != CLOCK_NONE && dur != CLOCK_CPU) {
        sc->corr.pair = did;
        sc->corr.who = clock_who(sc, darg);
        if (weir_starts.delete(&sc->corr) == 0)
            corr_add(CORR_CLOCKS_DELETED);
    }
#endif
}

/* Start the clocks this hook starts, after its own durations were folded (sched_switch
 * stops the clock of the task going off the CPU, then starts the next one's). */
static __always_inline void start_clock(struct weir_scratch *sc, int key, int arg, u64 id,
                                        u64 now)
{
#if USE_STARTS
    if (key != CLOCK_NONE) {
        sc->corr.pair = id;
        sc->corr.who = clock_who(sc, arg);
        if (weir_starts.insert(&sc->corr, &now) == 0)
            corr_add(CORR_CLOCKS_ADDED);
        else if (weir_starts.update(&sc->corr, &now) != 0) /* restarted: it began again */
            stat_add(STAT_UNRECORDED); /* the map refused it: its end will be unstarted */
        stat_add(STAT_STARTED);
    }
#endif
}

#define AGGREGATE(n)                                                           \
    if (C_AGG(n, ON) && agg_value(sc, C_AGG(n, VARG), C_AGG(n, DUR), C_AGG(n, DARG), \
                                  C_AGG(n, DID), now, &v))                     \
        overflowed |= fold(sc, C_AGG(n, VALUE), C_AGG(n, CGROUP), C_AGG(n, BINARY), \
                           C_AGG(n, KARG0), C_AGG(n, KARG1), C_AGG(n, ACLASS),  \
                           v, C_AGG(n, NBOUNDS), C_AGG(n, MAX),                 \
                           C_AGG(n, SID), (n) + (C_GEN << 2));
#define STOP(n)                                                                \
    if (C_AGG(n, ON))                                                          \
        stop_clock(sc, C_AGG(n, DUR), C_AGG(n, DARG), C_AGG(n, DID));
#define START(n) start_clock(sc, C_MK(n, KEY), C_MK(n, ARG), C_MK(n, ID), now);
#define MARKS(s)                                                               \
    if (selector == (s)) {                                                     \
        mark(sc, C_A(s, 0, OP), C_A(s, 0, KEY), C_A(s, 0, ARG), C_A(s, 0, ID));  \
        mark(sc, C_A(s, 1, OP), C_A(s, 1, KEY), C_A(s, 1, ARG), C_A(s, 1, ID));  \
    }

#if ANY_POST
/* Send one event to user space, unless the selector's rate limit for this
 * process is spent or the ring buffer is full (both counted as dropped).
 * Stacks are copied into the event (bpf_get_stack), so every event carries its
 * own and nothing is shared or left behind in a map. The submit uses the
 * kernel's adaptive wakeup: the reader is woken only when it had caught up,
 * once per batch it drains. */
static __always_inline void post(void *ctx, struct weir_scratch *sc, int selector, u64 rate_ns,
                                 int ustack, int kstack)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    if (rate_ns) {
        /* rateLimitScope in the top bits: whose events share the window */
        u64 scope = rate_ns >> RATE_SCOPE_SHIFT;
        rate_ns &= (1ULL << RATE_SCOPE_SHIFT) - 1;
        u32 who = scope == RATE_THREAD ? (u32)id : scope == RATE_GLOBAL ? 0 : id >> 32;
        struct weir_rate_key key = {.selector = selector, .tgid = who};
        u64 *last = rate_limits.lookup(&key);
        if (last && now - *last < rate_ns) {
            stat_add(STAT_RATE_LIMITED);
            return;
        }
        rate_limits.update(&key, &now);
    }
    struct weir_event *e = events.ringbuf_reserve(sizeof(struct weir_event));
    if (!e) {
        stat_add(STAT_RINGBUF_FULL);
        return;
    }
    e->time_ns = now;
    e->cgroup = bpf_get_current_cgroup_id();
    e->exe_hash = binary_hash();
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->selector = selector;
    e->pad = 0;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
#pragma unroll
    for (int i = 0; i < WEIR_MAX_ARGS; i++)
        e->ints[i] = sc->ints[i];
#if EV_STRS > 0
    __builtin_memcpy(e->str[0], sc->str[0].s, WEIR_MAX_STR);
#endif
#if EV_STRS > 1
    __builtin_memcpy(e->str[1], sc->str[1].s, WEIR_MAX_STR);
#endif
#if EV_ADDRS > 0
    __builtin_memcpy(&e->addr[0], &sc->addr[0], sizeof(struct weir_addr));
#endif
#if EV_ADDRS > 1
    __builtin_memcpy(&e->addr[1], &sc->addr[1], sizeof(struct weir_addr));
#endif
    e->user_stack = STACK_NOT_TAKEN;
    e->kernel_stack = STACK_NOT_TAKEN;
#if EV_USTACK > 0
    if (ustack) {
        long n = bpf_get_stack(ctx, e->ustack, sizeof(e->ustack),
                               BPF_F_USER_STACK | BPF_F_USER_BUILD_ID);
        e->user_stack = n < 0 ? n : n / sizeof(struct bpf_stack_build_id);
    }
#endif
#if EV_KSTACK > 0
    if (kstack) {
        long n = bpf_get_stack(ctx, e->kstack, sizeof(e->kstack), 0);
        e->kernel_stack = n < 0 ? n : n / sizeof(u64);
    }
#endif
    events.ringbuf_submit(e, 0);
    stat_add(STAT_POSTED);
}
#else
#define post(ctx, sc, selector, rate_ns, ustack, kstack)
#endif

#if LEAN && !AGG_PACKED
#error "the lean path keys by the cgroup alone: it needs AGG_PACKED"
#endif
#if LEAN && CONFIGURED
/* One integer matcher of the lean path: a compare, or one lookup with a key on the stack. */
static __always_inline int lean_match(int op, int neg, int arg, u64 v, s64 value, u32 matcher)
{
    int hit = 0;
    if (op == OP_EQ) {
        hit = v == (u64)value;
    } else if (op == OP_GT) {
        hit = ARG_SIGNED(arg) ? (s64)v > value : v > (u64)value;
    } else if (op == OP_LT) {
        hit = ARG_SIGNED(arg) ? (s64)v < value : v < (u64)value;
    } else if (op == OP_MASK) {
        hit = (v & (u64)value) != 0;
    } else if (op == OP_INT_SET) {
        struct weir_intkey key = {.matcher = matcher, .value = v};
        hit = int_set.lookup(&key) != NULL;
    } else if (op == OP_RANGE) {
        struct weir_rangekey key = {.prefixlen = 32 + 64, .matcher = bpf_htonl(matcher)};
        u64 ordered = __builtin_bswap64(ARG_SIGNED(arg) ? v ^ (1ULL << 63) : v);
        __builtin_memcpy(key.value, &ordered, 8);
        hit = range_lpm.lookup(&key) != NULL;
    }
    return neg ? !hit : hit;
}

/* Whether the program reads any argument (folded to a constant from the shape). */
#define LEAN_ARGS (ARG0_KIND || ARG1_KIND || ARG2_KIND || ARG3_KIND ||            \
                   ARG4_KIND || ARG5_KIND || ARG6_KIND || ARG7_KIND)
#define LEAN_READ(i)                                                            \
    if (ARG##i##_KIND == KIND_INT)                                              \
        ints[i] = read_source(ctx, 0, ARG##i##_FROM, ARG##i##_SRC, ARG##i##_SIZE, \
                              ARG##i##_SIGNED);

/* The common case, on its own (LEAN, codegen.py): integer arguments read straight from
 * the context, integer matchers, and rules that count, sum or bucket by the cgroup or by
 * nothing; no strings, addresses, task, executable, clocks, marks or posts. Everything
 * lives on the stack: no scratch, one packed key per rule, and the counters of a run in
 * one lookup. It keeps the general path's counters and semantics exactly. */
static __always_inline int lean(void *ctx)
{
    u32 zero = 0;
    struct weir_stats *st = stats.lookup(&zero);
    if (!st)
        return 0;
    u64 cgroup = bpf_get_current_cgroup_id();
#if USE_SCOPE
    if (!scope.lookup(&cgroup))
        return 0; /* outside the policy's pods: not this policy's event */
#endif
    st->s[STAT_OBSERVED] += 1;
    u32 *which = active.lookup(&zero);
    if (!which)
        return 0;
    u32 gen = *which & 1;
    struct weir_config *cfg = config.lookup(&gen);
    if (!cfg)
        return 0;
    u64 ints[WEIR_MAX_ARGS] = {};
    LEAN_READ(0) LEAN_READ(1) LEAN_READ(2) LEAN_READ(3)
    LEAN_READ(4) LEAN_READ(5) LEAN_READ(6) LEAN_READ(7)
    int matched = 0;
#pragma clang loop unroll(disable)
    for (u32 s = 0; s < WEIR_MAX_SELECTORS; s++) {
        if (s >= cfg->NUM_SELECTORS)
            break;
        struct weir_selector_cfg *sel = &cfg->S[s & (WEIR_MAX_SELECTORS - 1)];
        int ok = 1;
#pragma clang loop unroll(disable)
        for (u32 m = 0; m < WEIR_MAX_MATCHERS; m++) {
            struct weir_match_cfg *mc = &sel->M[m & (WEIR_MAX_MATCHERS - 1)];
            if (mc->OP == OP_NONE)
                break; /* matchers are packed from 0 */
            ok = LEAN_ARGS && lean_match(mc->OP, mc->NEG, mc->ARG & 7, ints[mc->ARG & 7],
                                         mc->VAL, s * WEIR_MAX_MATCHERS + m + (gen << 7));
            if (!ok)
                break;
        }
        if (ok) {
            matched = 1;
            break;
        }
    }
    if (!matched)
        return 0;
    st->s[STAT_MATCHED] += 1;
    cgroup &= WEIR_KEY_CGROUP_MASK;
    int overflowed = 0, aggregated = 0;
#pragma clang loop unroll(disable)
    for (u32 n = 0; n < WEIR_MAX_AGGS; n++) {
        struct weir_agg_cfg *a = &cfg->AGG[n & (WEIR_MAX_AGGS - 1)];
        if (!a->ON)
            break; /* rules are packed from 0 */
        aggregated = 1;
        u64 v = LEAN_ARGS && a->VARG >= 0 ? ints[a->VARG & 7] : 1;
        struct weir_agg_key key = {
            .packed = ((u64)(a->SID & 7) << WEIR_KEY_SLOT_SHIFT) | (a->CGROUP ? cgroup : 0),
        };
        if (a->VALUE == VAL_HIST_EXP2) {
            overflowed |= fold_hist(&key, v, v ? bpf_log2l(v) : 0, a->MAX);
        } else if (a->VALUE == VAL_HIST_EXPLICIT) {
            u32 bucket = explicit_bucket(n + (gen << 2), (s64)v, a->NBOUNDS);
            overflowed |= fold_hist(&key, v, bucket, a->MAX);
        } else {
            struct weir_agg_val first = {};
            overflowed |= fold_plain(&key, &first, v, a->MAX);
        }
    }
    if (aggregated)
        st->s[STAT_AGGREGATED] += 1;
    if (overflowed)
        st->s[STAT_OVERFLOW] += 1;
    return 0;
}
#endif

int weir_program(void *ctx)
{
#if LEAN && CONFIGURED
    return lean(ctx);
#endif
    u32 zero = 0;
    struct weir_scratch *sc = weir_scratch.lookup(&zero);
    if (!sc)
        return 0;
#if USE_SCOPE
    u64 cgroup = bpf_get_current_cgroup_id();
    if (!scope.lookup(&cgroup))
        return 0; /* outside the policy's pods: not this policy's event */
#endif
#if SAVE_ENTRY
    /* The entry half of a return probe with args: save the argument registers for the
     * return half, and nothing else (its call is counted once, by the return half). */
    struct weir_entry_key ekey = {.hook = HOOK_KEY, .tid = bpf_get_current_pid_tgid()};
#pragma unroll
    for (int i = 0; i < WEIR_MAX_ARGS; i++)
        sc->entry.raw[i] = 0;
#define SAVE(i)                                                                 \
    if (ARG##i##_KIND != KIND_NONE && ARG##i##_FROM == SRC_SAVED)               \
        sc->entry.raw[ARG##i##_SRC & 7] = read_source(ctx, sc, SRC_REG, ARG##i##_SRC, 8, 0);
    SAVE(0) SAVE(1) SAVE(2) SAVE(3) SAVE(4) SAVE(5) SAVE(6) SAVE(7)
    weir_entries.update(&ekey, &sc->entry);
    stat_add(STAT_SAVED);
    return 0;
#endif
#if USE_ENTRY
    /* The return half: the arguments its entry half saved for this thread; a call that
     * began before the hook was attached has none and is not this hook's event. */
    struct weir_entry_key ekey = {.hook = HOOK_KEY, .tid = bpf_get_current_pid_tgid()};
    struct weir_entry *saved = weir_entries.lookup(&ekey);
    if (!saved)
        return 0;
    __builtin_memcpy(&sc->entry, saved, sizeof(sc->entry));
    weir_entries.delete(&ekey);
#endif
    stat_add(STAT_OBSERVED);
#if CONFIGURED
    u32 *which = active.lookup(&zero);
    if (!which)
        return 0;
    u32 gen = *which & 1;
    struct weir_config *cfg = config.lookup(&gen);
    if (!cfg)
        return 0;
#endif

    READ_ARG(0) READ_ARG(1) READ_ARG(2) READ_ARG(3)
    READ_ARG(4) READ_ARG(5) READ_ARG(6) READ_ARG(7)
#if USE_STARTS || USE_MARKS
    {
        u64 id = bpf_get_current_pid_tgid();
        sc->raw[KEY_THREAD] = (u32)id;
        sc->raw[KEY_PROCESS] = id >> 32;
    }
#endif
#if USE_TASK
    read_task(&sc->task);
#endif

    if (C_REV_SLOTS & 1)
        reverse_slot(sc, 0);
    if (C_REV_SLOTS & 2)
        reverse_slot(sc, 1);
#if USE_SUBSTR
    substr_masks(sc, C_SUB_SLOTS, C_GEN);
#endif

#if CONFIGURED && USE_MARKS
    __builtin_memset(sc->marks, 0, sizeof(sc->marks)); /* no selectors: no marks */
#endif
    int action = -1;
    int selector = -1;
    u64 rate_ns = 0;
    int ustack = 0, kstack = 0;
    if (C_NUM_SELECTORS == 0) {
        action = ACTION_POST; /* no selectors: every call matches (as Tetragon) */
        selector = 0;
#if CONFIGURED && USE_MARKS
        /* selector 0's slots hold the hook's returnArgAction */
        __builtin_memcpy(sc->marks, cfg->S[0].A, sizeof(sc->marks));
#endif
    }
#if CONFIGURED
    /* Loops, not unrolled copies: one copy of each operator keeps the program (and its
     * compile) small; the verifier walks every iteration either way. */
#pragma clang loop unroll(disable)
    for (u32 s = 0; s < WEIR_MAX_SELECTORS; s++) {
        if (action >= 0 || s >= cfg->NUM_SELECTORS)
            break;
        struct weir_selector_cfg *sel = &cfg->S[s & (WEIR_MAX_SELECTORS - 1)];
        int ok = 1;
#pragma clang loop unroll(disable)
        for (u32 m = 0; m < WEIR_MAX_MATCHERS; m++) {
            struct weir_match_cfg *mc = &sel->M[m & (WEIR_MAX_MATCHERS - 1)];
            if (mc->OP == OP_NONE)
                break; /* matchers are packed from 0: the first unused one ends them */
            ok = match_arg(sc, mc->OP, mc->NEG, mc->ARG & 7, mc->VAL,
                           s * WEIR_MAX_MATCHERS + m + (C_GEN << 7));
            if (!ok)
                break;
        }
#pragma clang loop unroll(disable)
        for (u32 b = 0; ok && b < WEIR_MAX_BINARIES; b++) {
            struct weir_binary_cfg *bc = &sel->B[b & (WEIR_MAX_BINARIES - 1)];
            if (bc->OP == OP_NONE)
                break;
            ok = match_binary(sc, bc->OP, bc->NEG, 64 + s * WEIR_MAX_BINARIES + b + (C_GEN << 7));
        }
        if (ok) {
            action = sel->ACTION;
            selector = s;
            rate_ns = sel->RATE_NS;
            ustack = sel->USTACK;
            kstack = sel->KSTACK;
#if USE_MARKS
            __builtin_memcpy(sc->marks, sel->A, sizeof(sc->marks));
#endif
        }
    }
#else
    SELECTOR(0) SELECTOR(1) SELECTOR(2) SELECTOR(3)
    SELECTOR(4) SELECTOR(5) SELECTOR(6) SELECTOR(7)
#endif
    if (action < 0)
        return 0;
    stat_add(STAT_MATCHED);

    int overflowed = 0;
    u64 now = USE_STARTS ? bpf_ktime_get_ns() : 0;
    u64 v = 0;
#if CONFIGURED
    int aggregated = 0;
#pragma clang loop unroll(disable)
    for (u32 n = 0; n < WEIR_MAX_AGGS; n++) {
        struct weir_agg_cfg *a = &cfg->AGG[n & (WEIR_MAX_AGGS - 1)];
        if (!a->ON)
            break; /* rules are packed from 0 */
        aggregated = 1;
        if (agg_value(sc, a->VARG, a->DUR, a->DARG, a->DID, now, &v))
            overflowed |= fold(sc, a->VALUE, a->CGROUP, a->BINARY, a->KARG0, a->KARG1,
                               a->ACLASS, v, a->NBOUNDS, a->MAX, a->SID, n + (C_GEN << 2));
    }
    if (aggregated)
        stat_add(STAT_AGGREGATED);
#if USE_STARTS
#pragma clang loop unroll(disable)
    for (u32 n = 0; n < WEIR_MAX_AGGS; n++) {
        struct weir_agg_cfg *a = &cfg->AGG[n & (WEIR_MAX_AGGS - 1)];
        if (a->ON)
            stop_clock(sc, a->DUR, a->DARG, a->DID);
    }
#pragma clang loop unroll(disable)
    for (u32 n = 0; n < WEIR_MAX_STARTS; n++) {
        struct weir_start_cfg *m = &cfg->MK[n & (WEIR_MAX_STARTS - 1)];
        start_clock(sc, m->KEY, m->ARG, m->ID, now);
    }
#endif
#if USE_MARKS
    /* The matching selector's marks, copied when it matched: indexing the configuration
     * by the selector here would make the verifier walk the rest once per selector. */
#pragma clang loop unroll(disable)
    for (u32 a = 0; a < WEIR_MAX_MARK_ACTIONS; a++) {
        struct weir_mark_cfg *m = &sc->marks[a & (WEIR_MAX_MARK_ACTIONS - 1)];
        mark(sc, m->OP, m->KEY, m->ARG, m->ID);
    }
#endif
#else
    AGGREGATE(0) AGGREGATE(1) AGGREGATE(2) AGGREGATE(3)
    if (C_AGG(0, ON) || C_AGG(1, ON) || C_AGG(2, ON) || C_AGG(3, ON))
        stat_add(STAT_AGGREGATED);
    STOP(0) STOP(1) STOP(2) STOP(3)
    START(0) START(1) START(2) START(3)
#if USE_MARKS
    MARKS(0) MARKS(1) MARKS(2) MARKS(3) MARKS(4) MARKS(5) MARKS(6) MARKS(7)
#endif
#endif
    if (overflowed)
        stat_add(STAT_OVERFLOW);
    if (action == ACTION_POST)
        post(ctx, sc, selector, rate_ns, ustack, kstack);
    return 0;
}
