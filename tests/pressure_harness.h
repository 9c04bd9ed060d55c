/* Shared by tests/test_pressure_shed.c and tests/test_pressure_bpf.c: a
 * real herdd on the mini model with a configuration of the test's own,
 * and readers of its `pressure` admin result. */
#ifndef HERD_TESTS_PRESSURE_HARNESS_H
#define HERD_TESTS_PRESSURE_HARNESS_H

#include "broker_harness.h"

#include "model/generate.h"

/* Makes the mini model and starts herdd with config (JSON text). Exits 77
 * when herdd was not built. */
static inline void pw_start(const char *tag, const char *config)
{
	bh_world_setup(tag);
	bh_write_conf(config);
	const char *extra[] = {"--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
}

static inline void pw_stop(void)
{
	bh_world_teardown();
}

/* Sends `admin cmd` and returns the result (valid until the next read). */
static inline const proto_value *pw_admin(client *c, const char *cmd)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s(cmd)};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_ADMIN_OK);
	assert_non_null(c->m.admin_ok.result);
	return c->m.admin_ok.result;
}

/* A number of a result map (int, uint, float or bool); fails when absent. */
static inline double pw_num(const proto_value *m, const char *key)
{
	const proto_value *v = proto_value_get(m, key);
	if (!v)
		fail_msg("key '%s' missing from the admin result", key);
	switch (v->type) {
	case PROTO_V_INT: return (double)v->i;
	case PROTO_V_UINT: return (double)v->u;
	case PROTO_V_FLOAT: return v->f;
	case PROTO_V_BOOL: return v->b;
	default: fail_msg("key '%s' is not a number", key);
	}
	return 0;
}

static inline const char *pw_str(const proto_value *m, const char *key, char *buf, size_t n)
{
	const proto_value *v = proto_value_get(m, key);
	if (!v || v->type != PROTO_V_STR)
		fail_msg("key '%s' missing or not a string", key);
	snprintf(buf, n, "%.*s", (int)v->s.len, v->s.ptr ? v->s.ptr : "");
	return buf;
}

/* Runs `herdctl --socket SOCK ARGS` (next to herdd) and returns its
 * stdout in out (cut at n). */
static inline void pw_herdctl(const char *args, char *out, size_t n)
{
	char cmd[PATH_MAX + 256], dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", W.herdd);
	snprintf(cmd, sizeof(cmd), "%s/herdctl --socket %s %s", dirname(dir), W.sock, args);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t got = fread(out, 1, n - 1, f);
	out[got] = 0;
	assert_int_equal(pclose(f), 0);
}

/* ---- a memory-limited cgroup ------------------------------------------------ */

typedef struct pw_cgroup {
	char dir[256];     /* the cgroup we made ("" when none) */
	char procs[300];   /* its cgroup.procs */
	char origin[1024]; /* cgroup.procs of the test's own cgroup (to go back) */
} pw_cgroup;

static inline int pw_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	int e = n < 0 ? -errno : 0;
	close(fd);
	return e;
}

/* Where the test runs now in the memory hierarchy at base (v2: the "0::"
 * line of /proc/self/cgroup; v1: the ":memory:" one) into g->origin. */
static inline void pw_cgroup_origin(pw_cgroup *g, const char *base, int v2)
{
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *rel = v2 ? (!strncmp(line, "0::", 3) ? line + 3 : NULL) : strstr(line, ":memory:");
		if (!rel)
			continue;
		rel += v2 ? 0 : 8;
		rel[strcspn(rel, "\n")] = 0;
		snprintf(g->origin, sizeof(g->origin), "%s%s/cgroup.procs", base, rel);
	}
	if (f)
		fclose(f);
}

/* A cgroup herd-test-<tag>-<pid> limited to limit_mb, in the memory
 * controller's mount: v2 when it has the memory controller, else v1's
 * "memory" hierarchy. 0, or -1 (skip: not root, no cgroup fs). */
static inline int pw_make_cgroup(pw_cgroup *g, const char *tag, int limit_mb)
{
	char ctl[256] = "";
	const char *base = NULL, *limit_file = NULL;
	memset(g, 0, sizeof(*g));
	FILE *f = fopen("/sys/fs/cgroup/cgroup.controllers", "r");
	if (f && fgets(ctl, sizeof(ctl), f) && strstr(ctl, "memory"))
		base = "/sys/fs/cgroup", limit_file = "memory.max";
	if (f)
		fclose(f);
	if (!base && access("/sys/fs/cgroup/memory/memory.limit_in_bytes", W_OK) == 0)
		base = "/sys/fs/cgroup/memory", limit_file = "memory.limit_in_bytes";
	if (!base || access(base, W_OK))
		return -1;
	snprintf(g->dir, sizeof(g->dir), "%s/herd-test-%s-%d", base, tag, (int)getpid());
	if (mkdir(g->dir, 0755)) {
		g->dir[0] = 0;
		return -1;
	}
	char path[400], val[32];
	snprintf(path, sizeof(path), "%s/%s", g->dir, limit_file);
	snprintf(val, sizeof(val), "%d", limit_mb << 20);
	snprintf(g->procs, sizeof(g->procs), "%s/cgroup.procs", g->dir);
	if (pw_write_file(path, val)) {
		rmdir(g->dir);
		g->dir[0] = 0;
		return -1;
	}
	pw_cgroup_origin(g, base, !strcmp(limit_file, "memory.max"));
	if (!g->origin[0]) {
		rmdir(g->dir);
		g->dir[0] = 0;
		return -1;
	}
	return 0;
}

/* Removes the cgroup once its processes are gone (retries a few seconds). */
static inline void pw_remove_cgroup(pw_cgroup *g)
{
	for (int i = 0; g->dir[0] && rmdir(g->dir) && errno == EBUSY && i < 50; i++)
		usleep(100 * 1000);
	g->dir[0] = 0;
}

/* Exits 77 (skipped, the reason named) unless the broker's eBPF counters
 * are on; stops the broker and removes cg (when given) first. Returns the
 * `pressure` result that said they are. */
static inline const proto_value *pw_require_bpf(client *c, const char *test, pw_cgroup *cg)
{
	const proto_value *r = pw_admin(c, "pressure");
	if (proto_value_get(r, "bpf_on") && pw_num(r, "bpf_on"))
		return r;
	char bpf[200];
	fprintf(stderr, "%s: eBPF counters off in the broker (%s); skipping\n", test,
		proto_value_get(r, "bpf") ? pw_str(r, "bpf", bpf, sizeof(bpf)) : "pressure off");
	cl_close(c);
	pw_stop();
	if (cg)
		pw_remove_cgroup(cg);
	exit(77);
	return NULL;
}

/* Sends a short gen request. */
static inline void pw_gen(client *c, uint64_t id)
{
	cl_gen(c, id, W.model_name, "Once upon a time", 4, 0);
}

#endif
