/* exec.bpf.c: records each process's executable at exec, for matchBinaries and
 * groupBy binary. Loaded once per agent; policy programs declare the same maps
 * (hook.bpf.c) and the agent gives them these by name when it loads them. The agent
 * seeds weir_exes from /proc/PID/exe at start, so processes that began before the
 * agent are known too. */
#include "weir.h"
#include "task.h"

BPF_TABLE("lru_hash", u32, struct weir_exe, weir_exes, 65536);
/* Return probes' arguments, saved at entry per thread and hook (hook.bpf.c, SAVE_ENTRY):
 * shared so the entry and return halves of a hook, and their next versions, meet. */
BPF_TABLE("lru_hash", struct weir_entry_key, struct weir_entry, weir_entries, 65536);
/* Durations' clocks (hook.bpf.c, USE_STARTS), keyed by rule pair and thread, process or
 * argument value: shared by the start and end hooks of every policy. LRU: a clock whose
 * end never comes (the thread died) is the first to go when the map is full. */
BPF_TABLE("lru_hash", struct weir_corr_key, u64, weir_starts, DURATION_STARTS);
/* Marks (hook.bpf.c, USE_MARKS): set by a selector's Mark or TrackSock, tested by
 * matchMarks; the value is when it was set. LRU: the least recently used mark goes first. */
BPF_TABLE("lru_hash", struct weir_corr_key, u64, weir_marks, MARKS);
/* Entries added to and deleted from those maps by every program (CORR_*): with the
 * entries present, what LRU eviction took (the agent's weir_agent_correlation_*). */
BPF_TABLE("percpu_array", u32, u64, weir_corr_stats, CORR_COUNT);
BPF_PERCPU_ARRAY(exe_scratch, struct weir_exe, 1);
/* cgroup v2 directories as they are made: id -> path (its last WEIR_CGROUP_PATH - 1 bytes,
 * where a container id and its pod uid are), so that a container that lives for less than
 * a scan still resolves to its labels after its cgroup is gone. The agent deletes an entry
 * when it retires the container's series. LRU: the oldest cgroups go first. */
BPF_TABLE("lru_hash", u64, struct weir_cgroup_path, weir_cgroups, CGROUPS);
BPF_PERCPU_ARRAY(cgroup_scratch, struct weir_cgroup_path, 1);

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
    if (args->root != 0) /* 0: the cgroup v2 hierarchy; the others are v1 controllers' */
        return 0;
    u32 zero = 0;
    struct weir_cgroup_path *entry = cgroup_scratch.lookup(&zero);
    if (!entry)
        return 0;
    u32 loc = args->data_loc_path;
    u32 offset = loc & 0xffff;
    u32 length = loc >> 16; /* with its NUL */
    u32 skip = 0;
    if (length > WEIR_CGROUP_PATH)
        skip = length - WEIR_CGROUP_PATH;
    entry->truncated = skip;
    bpf_probe_read_kernel_str(entry->path, WEIR_CGROUP_PATH, (void *)args + offset + (skip & 0xffff));
    u64 id = args->id;
    weir_cgroups.update(&id, entry);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 zero = 0;
    struct weir_exe *exe = exe_scratch.lookup(&zero);
    if (!exe)
        return 0;
    u64 *words = (u64 *)exe->path.s;
#pragma unroll
    for (int i = 0; i < WEIR_MAX_STR / 8; i++)
        words[i] = 0;
    unsigned short loc = args->data_loc_filename & 0xffff;
    bpf_probe_read_kernel_str(exe->path.s, WEIR_MAX_STR, (void *)args + loc);
    /* FNV-1a 64 over the bytes up to the NUL, as weir_agent.abi.fnv1a64. */
    u64 hash = 0xcbf29ce484222325ULL;
    for (int i = 0; i < WEIR_MAX_STR; i++) {
        u8 c = exe->path.s[i];
        if (c == 0)
            break;
        hash ^= c;
        hash *= 0x100000001b3ULL;
    }
    exe->hash = hash;
    exe->path.prefixlen = 0;
    exe->path.matcher = 0;
    exe->started = 0;
#if USE_TASK
    /* The process's namespaces and capabilities as the exec left them. */
    void *task = (void *)bpf_get_current_task();
    u64 ns[WEIR_NAMESPACES] = {};
    __builtin_memset(exe->caps, 0, sizeof(exe->caps));
    read_ns_caps(task, task_upid(task), ns, exe->caps);
#pragma unroll
    for (int i = 0; i < WEIR_NAMESPACES; i++)
        exe->ns[i] = ns[i];
    exe->started = 1;
#endif
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    weir_exes.update(&tgid, exe);
    return 0;
}

#if USE_TASK
/* A new process (not a thread) starts with its parent's executable and state, as
 * Tetragon's process cache does, until it execs something of its own. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    void *child = (void *)ctx->args[1];
    u32 pid = read_u32(child + TASK_PID);
    u32 tgid = read_u32(child + TASK_TGID);
    if (pid != tgid)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    struct weir_exe *exe = weir_exes.lookup(&parent);
    if (exe)
        weir_exes.update(&tgid, exe);
    return 0;
}
#endif
