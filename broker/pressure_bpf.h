/* The loader of bpf/herd_mem.bpf.c (libbpf skeleton), used by
 * pressure.c only. Built with HERD_HAVE_BPF when CMake found clang,
 * bpftool, libbpf and the kernel's BTF; without it pbpf_open says so. */
#ifndef HERD_BROKER_PRESSURE_BPF_H
#define HERD_BROKER_PRESSURE_BPF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/pressure.h"

typedef struct pbpf pbpf;

/* Opens, loads and attaches the program. Returns 0, or -errno /
 * HERD_E_UNSUPPORTED with the reason in err (no privilege, no BTF, a
 * tracepoint the kernel lacks, built without eBPF). */
int pbpf_open(pbpf **out, char *err, size_t errlen);
void pbpf_close(pbpf *b); /* accepts NULL */
/* Registers a process (its counters start at 0): one map update, no /proc
 * reading (the next pbpf_refresh finds its mappings). Any thread. */
int pbpf_add_pid(pbpf *b, pid_t pid);
/* Drops processes that are gone and rereads every registered process's
 * image mappings (/proc/PID/maps lines of /dev/shm/herd.*). */
void pbpf_refresh(pbpf *b);
/* Direct-reclaim nanoseconds summed over the registered processes. */
uint64_t pbpf_herd_reclaim_ns(pbpf *b);
/* The global entry (pid 0) and up to cap registered processes. */
void pbpf_read(pbpf *b, pressure_proc *global, pressure_proc *procs, int cap, int *n);

#endif
