/* Shared between the eBPF program (herd_mem.bpf.c) and its loader
 * (broker/pressure_bpf.c): the map value layouts. Plain fixed-width types
 * so both the BPF target and the host compile them the same. */
#ifndef HERD_MEM_BPF_H
#define HERD_MEM_BPF_H

#define HERD_MEM_MAX_PROCS 1024  /* registered processes (broker + agents) */
#define HERD_MEM_MAX_RANGES 8    /* image mappings per process */

/* Per registered process (key: tgid), and one global entry (array key 0,
 * every process of the machine: OOM kills, direct-reclaim stalls). */
struct herd_mem_stats {
	unsigned long long faults;        /* user page faults of the process */
	unsigned long long image_faults;  /* of them, inside a registered image mapping */
	unsigned long long reclaim_ns;    /* time spent in direct reclaim */
	unsigned long long reclaims;      /* direct-reclaim episodes */
	unsigned long long oom_kills;     /* OOM-killer victims */
};

/* The image mappings of one process: [start, end) address ranges. */
struct herd_mem_ranges {
	unsigned long long start[HERD_MEM_MAX_RANGES];
	unsigned long long end[HERD_MEM_MAX_RANGES];
	unsigned int n;
	unsigned int pad;
};

#endif
