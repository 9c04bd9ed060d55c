/* Loader and map reader of the eBPF memory counters (pressure_bpf.h). */
#include "broker/pressure_bpf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"

#ifdef HERD_HAVE_BPF

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "herd_mem.skel.h"
#include "bpf/herd_mem.h"

struct pbpf {
	struct herd_mem_bpf *skel;
	int procs_fd, ranges_fd, global_fd;
};

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	(void)fmt;
	(void)ap;
	return 0; /* the caller reports one clear line instead */
}

/* mark_victim passes a task_struct * since Linux 6.2 (an int pid before):
 * the second parameter of btf_trace_mark_victim (after the ctx) says which. */
static int victim_is_task(const struct btf *vm)
{
	if (!vm)
		return 0;
	int is_ptr = 0;
	int id = btf__find_by_name_kind(vm, "btf_trace_mark_victim", BTF_KIND_TYPEDEF);
	const struct btf_type *t = id > 0 ? btf__type_by_id(vm, id) : NULL;
	t = t ? btf__type_by_id(vm, t->type) : NULL; /* pointer to the proto */
	t = t && btf_is_ptr(t) ? btf__type_by_id(vm, t->type) : NULL;
	if (t && btf_is_func_proto(t) && btf_vlen(t) >= 2) {
		const struct btf_param *pa = btf_params(t);
		const struct btf_type *a1 = btf__type_by_id(vm, btf__resolve_type(vm, pa[1].type));
		is_ptr = a1 && btf_is_ptr(a1);
	}
	return is_ptr;
}

static int has_tracepoint(const struct btf *vm, const char *name)
{
	char t[96];
	snprintf(t, sizeof(t), "btf_trace_%s", name);
	return vm && btf__find_by_name_kind(vm, t, BTF_KIND_TYPEDEF) > 0;
}

static int load(struct herd_mem_bpf *s, char *err, size_t errlen)
{
	struct btf *vm = btf__load_vmlinux_btf();
	s->rodata->victim_is_task = victim_is_task(vm);
	if (!has_tracepoint(vm, "mm_vmscan_memcg_reclaim_begin") ||
	    !has_tracepoint(vm, "mm_vmscan_memcg_reclaim_end")) {
		bpf_program__set_autoload(s->progs.herd_memcg_reclaim_begin, false);
		bpf_program__set_autoload(s->progs.herd_memcg_reclaim_end, false);
	}
	btf__free(vm);
	int rc = herd_mem_bpf__load(s);
	if (rc)
		return herd_errf(err, errlen, rc < 0 ? rc : -EINVAL,
				 "cannot load the eBPF program: %s (needs root or CAP_BPF+CAP_PERFMON, "
				 "and a kernel with BTF)",
				 strerror(rc < 0 ? -rc : EINVAL));
	rc = herd_mem_bpf__attach(s);
	if (rc)
		return herd_errf(err, errlen, rc < 0 ? rc : -EINVAL,
				 "cannot attach the eBPF program to page_fault_user, "
				 "mm_vmscan_direct_reclaim_begin/end, mm_vmscan_memcg_reclaim_begin/end "
				 "and mark_victim: %s",
				 strerror(rc < 0 ? -rc : EINVAL));
	return 0;
}

int pbpf_open(pbpf **out, char *err, size_t errlen)
{
	*out = NULL;
	libbpf_set_print(quiet_print);
	struct herd_mem_bpf *s = herd_mem_bpf__open();
	if (!s)
		return herd_errf(err, errlen, -errno ? -errno : -ENOMEM,
				 "cannot open the eBPF program: %s", strerror(errno ? errno : ENOMEM));
	int rc = load(s, err, errlen);
	pbpf *b = rc ? NULL : calloc(1, sizeof(*b));
	if (!rc && !b)
		rc = herd_errf(err, errlen, -ENOMEM, "out of memory");
	if (rc) {
		herd_mem_bpf__destroy(s);
		return rc;
	}
	b->skel = s;
	b->procs_fd = bpf_map__fd(s->maps.procs);
	b->ranges_fd = bpf_map__fd(s->maps.ranges);
	b->global_fd = bpf_map__fd(s->maps.global);
	*out = b;
	return 0;
}

void pbpf_close(pbpf *b)
{
	if (!b)
		return;
	herd_mem_bpf__destroy(b->skel);
	free(b);
}

int pbpf_add_pid(pbpf *b, pid_t pid)
{
	struct herd_mem_stats zero = {0};
	__u32 k = (__u32)pid;
	/* one syscall: the loop thread calls this at attach; the mappings are
	 * read by the pressure thread's next refresh (the agent maps later) */
	if (bpf_map_update_elem(b->procs_fd, &k, &zero, BPF_NOEXIST) && errno != EEXIST)
		return -errno;
	return 0;
}

/* The /dev/shm/herd.* mappings of pid (up to HERD_MEM_MAX_RANGES). */
static int read_ranges(pid_t pid, struct herd_mem_ranges *r)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	memset(r, 0, sizeof(*r));
	while (fgets(line, sizeof(line), f) && r->n < HERD_MEM_MAX_RANGES) {
		unsigned long long lo, hi;
		const char *name = strstr(line, " /dev/shm/herd.");
		if (name && sscanf(line, "%llx-%llx", &lo, &hi) == 2) {
			r->start[r->n] = lo;
			r->end[r->n] = hi;
			r->n++;
		}
	}
	fclose(f);
	return 0;
}

void pbpf_refresh(pbpf *b)
{
	__u32 key, next, *prev = NULL;
	__u32 gone[64];
	int n_gone = 0;
	while (bpf_map_get_next_key(b->procs_fd, prev, &next) == 0) {
		struct herd_mem_ranges r;
		if (read_ranges((pid_t)next, &r) == -ENOENT) {
			if (n_gone < 64)
				gone[n_gone++] = next;
		} else {
			bpf_map_update_elem(b->ranges_fd, &next, &r, BPF_ANY);
		}
		key = next;
		prev = &key;
	}
	for (int i = 0; i < n_gone; i++) {
		bpf_map_delete_elem(b->procs_fd, &gone[i]);
		bpf_map_delete_elem(b->ranges_fd, &gone[i]);
	}
}

static void to_proc(pressure_proc *p, int pid, const struct herd_mem_stats *s, int n_ranges)
{
	*p = (pressure_proc){.pid = pid, .faults = s->faults, .image_faults = s->image_faults,
			     .reclaim_ns = s->reclaim_ns, .reclaims = s->reclaims,
			     .oom_kills = s->oom_kills, .n_ranges = n_ranges};
}

uint64_t pbpf_herd_reclaim_ns(pbpf *b)
{
	__u32 key, next, *prev = NULL;
	uint64_t ns = 0;
	while (bpf_map_get_next_key(b->procs_fd, prev, &next) == 0) {
		struct herd_mem_stats s;
		if (bpf_map_lookup_elem(b->procs_fd, &next, &s) == 0)
			ns += s.reclaim_ns;
		key = next;
		prev = &key;
	}
	return ns;
}

void pbpf_read(pbpf *b, pressure_proc *global, pressure_proc *procs, int cap, int *n)
{
	__u32 key = 0, next, *prev = NULL;
	struct herd_mem_stats s = {0};
	bpf_map_lookup_elem(b->global_fd, &key, &s);
	to_proc(global, 0, &s, 0);
	*n = 0;
	while (*n < cap && bpf_map_get_next_key(b->procs_fd, prev, &next) == 0) {
		struct herd_mem_ranges r = {0};
		if (bpf_map_lookup_elem(b->procs_fd, &next, &s) == 0) {
			bpf_map_lookup_elem(b->ranges_fd, &next, &r);
			to_proc(&procs[(*n)++], (int)next, &s, (int)r.n);
		}
		key = next;
		prev = &key;
	}
}

#else /* built without eBPF: PSI only */

int pbpf_open(pbpf **out, char *err, size_t errlen)
{
	*out = NULL;
	return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
			 "built without eBPF (clang, bpftool, libbpf or the kernel's BTF were missing "
			 "at build time)");
}
void pbpf_close(pbpf *b)
{
	(void)b;
}
int pbpf_add_pid(pbpf *b, pid_t pid)
{
	(void)b;
	(void)pid;
	return HERD_E_UNSUPPORTED;
}
void pbpf_refresh(pbpf *b)
{
	(void)b;
}
uint64_t pbpf_herd_reclaim_ns(pbpf *b)
{
	(void)b;
	return 0;
}
void pbpf_read(pbpf *b, pressure_proc *global, pressure_proc *procs, int cap, int *n)
{
	(void)b;
	(void)global;
	(void)procs;
	(void)cap;
	*n = 0;
}

#endif
