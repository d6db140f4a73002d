/* task.h: reading the current task's namespaces and capabilities, shared by hook.bpf.c
 * (matchNamespaces, matchCapabilities and their *Changes) and exec.bpf.c (what a process
 * had when it was started, for the *Changes). The offsets are -D flags from the running
 * kernel's BTF (weir_agent/btf.py, TASK_FIELDS). */
#ifndef WEIR_TASK_H
#define WEIR_TASK_H

static __always_inline void *read_ptr(void *from)
{
    void *value = 0;
    bpf_probe_read_kernel(&value, sizeof(value), from);
    return value;
}

static __always_inline u64 read_u32(void *from)
{
    u32 value = 0;
    bpf_probe_read_kernel(&value, sizeof(value), from);
    return value;
}

#if USE_TASK
/* A task's tgid as its own pid namespace numbers it (task->group_leader->thread_pid:
 * numbers[level].nr), and that namespace. */
static __always_inline void *task_upid(void *task)
{
    void *pid = read_ptr(read_ptr(task + TASK_GROUP_LEADER) + TASK_THREAD_PID);
    if (!pid)
        return 0;
    u32 level = read_u32(pid + PID_LEVEL);
    return pid + PID_NUMBERS + (level & 31) * UPID_SIZE;
}

static __always_inline u64 ns_inum(void *ns, u32 inum_offset)
{
    return ns ? read_u32(ns + inum_offset) : 0;
}

/* The task's namespace inode numbers (abi.Namespace order) and capability sets
 * (effective, inheritable, permitted: abi.CapSet). */
static __always_inline void read_ns_caps(void *task, void *upid, u64 *ns, u64 *caps)
{
    void *nsproxy = read_ptr(task + TASK_NSPROXY);
    if (nsproxy) {
        ns[0] = ns_inum(read_ptr(nsproxy + NSPROXY_UTS), UTS_INUM);
        ns[1] = ns_inum(read_ptr(nsproxy + NSPROXY_IPC), IPC_INUM);
        ns[2] = ns_inum(read_ptr(nsproxy + NSPROXY_MNT), MNT_INUM);
        ns[4] = ns_inum(read_ptr(nsproxy + NSPROXY_PID_FOR_CHILDREN), PIDNS_INUM);
        ns[5] = ns_inum(read_ptr(nsproxy + NSPROXY_NET), NET_INUM);
        ns[6] = ns_inum(read_ptr(nsproxy + NSPROXY_TIME), TIME_INUM);
        ns[7] = ns_inum(read_ptr(nsproxy + NSPROXY_TIME_FOR_CHILDREN), TIME_INUM);
        ns[8] = ns_inum(read_ptr(nsproxy + NSPROXY_CGROUP), CGROUP_INUM);
    }
    ns[3] = upid ? ns_inum(read_ptr(upid + UPID_NS), PIDNS_INUM) : 0;
    void *cred = read_ptr(task + TASK_CRED);
    if (cred) {
        ns[9] = ns_inum(read_ptr(cred + CRED_USER_NS), USERNS_INUM);
        bpf_probe_read_kernel(&caps[0], 8, cred + CRED_CAP_EFFECTIVE);
        bpf_probe_read_kernel(&caps[1], 8, cred + CRED_CAP_INHERITABLE);
        bpf_probe_read_kernel(&caps[2], 8, cred + CRED_CAP_PERMITTED);
    }
}
#endif

#endif
