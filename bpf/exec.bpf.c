/* exec.bpf.c: records each process's executable at exec, for matchBinaries and
 * groupBy binary. Loaded once per agent; policy programs read weir_exes through
 * an extern declaration. The agent seeds it from /proc/PID/exe at start, so
 * processes that began before the agent are known too. */
#include "weir.h"
#include "task.h"

BPF_TABLE_SHARED("lru_hash", u32, struct weir_exe, weir_exes, 65536);
/* Return probes' arguments, saved at entry per thread and hook (hook.bpf.c, SAVE_ENTRY):
 * shared so the entry and return halves of a hook, and their next versions, meet. */
BPF_TABLE_SHARED("lru_hash", struct weir_entry_key, struct weir_entry, weir_entries, 65536);
/* Durations' clocks (hook.bpf.c, USE_STARTS), keyed by rule pair and thread, process or
 * argument value: shared by the start and end hooks of every policy. LRU: a clock whose
 * end never comes (the thread died) is the first to go when the map is full. */
BPF_TABLE_SHARED("lru_hash", struct weir_corr_key, u64, weir_starts, DURATION_STARTS);
/* Marks (hook.bpf.c, USE_MARKS): set by a selector's Mark or TrackSock, tested by
 * matchMarks; the value is when it was set. LRU: the least recently used mark goes first. */
BPF_TABLE_SHARED("lru_hash", struct weir_corr_key, u64, weir_marks, MARKS);
/* Entries added to and deleted from those maps by every program (CORR_*): with the
 * entries present, what LRU eviction took (the agent's weir_agent_correlation_*). */
BPF_TABLE_SHARED("percpu_array", u32, u64, weir_corr_stats, CORR_COUNT);
BPF_PERCPU_ARRAY(exe_scratch, struct weir_exe, 1);

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
