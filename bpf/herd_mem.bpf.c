// SPDX-License-Identifier: GPL-2.0
/* herd's memory counters, per herd process (the pids herdd registers in
 * `procs`: itself and the agents that attached an image):
 *
 *   raw_tp/page_fault_user                 user page faults, and those whose
 *                                          address lies in a registered image
 *                                          mapping (`ranges`, refreshed by
 *                                          herdd from /proc/PID/maps)
 *   raw_tp/mm_vmscan_direct_reclaim_begin  direct-reclaim stall time
 *   raw_tp/mm_vmscan_direct_reclaim_end    (per thread, summed per process)
 *   raw_tp/mm_vmscan_memcg_reclaim_begin   and memory-cgroup reclaim (a
 *   raw_tp/mm_vmscan_memcg_reclaim_end     limited cgroup's charge path)
 *   raw_tp/mark_victim                     OOM-killer victims
 *
 * Raw tracepoints (attached by name, no tracefs needed); CO-RE reads of
 * task_struct through vmlinux.h generated from the running kernel's BTF.
 * The global entry (`global`, key 0) counts stalls and OOM kills of every
 * process of the machine. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "herd_mem.h"

char LICENSE[] SEC("license") = "GPL";

/* mark_victim's first argument: a task_struct * since Linux 6.2, an int pid
 * before. The loader reads the kernel's BTF and sets this before loading. */
const volatile int victim_is_task = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HERD_MEM_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct herd_mem_stats);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HERD_MEM_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct herd_mem_ranges);
} ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct herd_mem_stats);
} global SEC(".maps");

/* reclaim start time per thread id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} reclaim_t0 SEC(".maps");

static __always_inline int in_ranges(const struct herd_mem_ranges *r, __u64 addr)
{
	unsigned int n = r->n;
#pragma unroll
	for (int i = 0; i < HERD_MEM_MAX_RANGES; i++)
		if (i < n && addr >= r->start[i] && addr < r->end[i])
			return 1;
	return 0;
}

SEC("raw_tp/page_fault_user")
int herd_fault(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct herd_mem_stats *s = bpf_map_lookup_elem(&procs, &pid);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->faults, 1);
	const struct herd_mem_ranges *r = bpf_map_lookup_elem(&ranges, &pid);
	if (r && in_ranges(r, ctx->args[0]))
		__sync_fetch_and_add(&s->image_faults, 1);
	return 0;
}

static __always_inline int reclaim_begin(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 t = bpf_ktime_get_ns();
	bpf_map_update_elem(&reclaim_t0, &tid, &t, BPF_ANY);
	return 0;
}

static __always_inline int reclaim_end(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, pid = id >> 32, zero = 0;
	__u64 *t0 = bpf_map_lookup_elem(&reclaim_t0, &tid);
	if (!t0)
		return 0;
	__u64 dt = bpf_ktime_get_ns() - *t0;
	bpf_map_delete_elem(&reclaim_t0, &tid);
	struct herd_mem_stats *g = bpf_map_lookup_elem(&global, &zero);
	if (g) {
		__sync_fetch_and_add(&g->reclaim_ns, dt);
		__sync_fetch_and_add(&g->reclaims, 1);
	}
	struct herd_mem_stats *s = bpf_map_lookup_elem(&procs, &pid);
	if (s) {
		__sync_fetch_and_add(&s->reclaim_ns, dt);
		__sync_fetch_and_add(&s->reclaims, 1);
	}
	return 0;
}

SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int herd_reclaim_begin(struct bpf_raw_tracepoint_args *ctx)
{
	return reclaim_begin();
}

SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int herd_reclaim_end(struct bpf_raw_tracepoint_args *ctx)
{
	return reclaim_end();
}

/* Reclaim a process does to charge its memory cgroup (a limited cgroup
 * reclaims this way, not through direct reclaim): the same stall. The
 * loader leaves these out on a kernel without the tracepoints. */
SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int herd_memcg_reclaim_begin(struct bpf_raw_tracepoint_args *ctx)
{
	return reclaim_begin();
}

SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int herd_memcg_reclaim_end(struct bpf_raw_tracepoint_args *ctx)
{
	return reclaim_end();
}

SEC("raw_tp/mark_victim")
int herd_oom_victim(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, pid;
	if (victim_is_task)
		pid = BPF_CORE_READ((struct task_struct *)ctx->args[0], tgid);
	else
		pid = (__u32)ctx->args[0];
	struct herd_mem_stats *g = bpf_map_lookup_elem(&global, &zero);
	if (g)
		__sync_fetch_and_add(&g->oom_kills, 1);
	struct herd_mem_stats *s = bpf_map_lookup_elem(&procs, &pid);
	if (s)
		__sync_fetch_and_add(&s->oom_kills, 1);
	return 0;
}
