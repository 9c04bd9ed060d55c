/* Real memory pressure: a memory-limited cgroup (v2 with the memory
 * controller, else v1's memory hierarchy) holding the broker and a hog
 * that reads a file twice the limit through a mapping over and over, so
 * every pass reclaims and refaults page cache (PSI memory stalls, no swap
 * needed, no OOM). The broker must shed in its documented order
 * (drop_prefix_pages, heap_trim, shrink_kv, refuse: ranks ascending),
 * refuse a new request with -EAGAIN naming the pressure, stay alive, and
 * once the hog is gone recover (the KV limit lifted) and serve again.
 * Before the hog, distinct long prompts write about 11 MiB of KV pages
 * that stay in the prefix cache; the model is pinned (so the KV actions
 * find it resident): dropping those pages must lower the broker's RssAnon
 * (/proc/<pid>/status) by what the KV trim gave back. Exits 77 without PSI or a writable memory
 * cgroup (not root, no cgroup fs). */
#include "pressure_harness.h"

#include "common/procfs.h"

#include <sys/mman.h>
#include <sys/statfs.h>

#include <linux/magic.h>

/* The cgroup's limit leaves the hog's page cache about 24 MiB beside the
 * broker (no swap: what the broker holds cannot be reclaimed, and a limit
 * that leaves too little ends in the cgroup's OOM killer, not in
 * pressure). An AddressSanitizer broker holds about twice the memory. */
#if defined(__SANITIZE_ADDRESS__)
#define LIMIT_MB 80
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIMIT_MB 80
#endif
#endif
#ifndef LIMIT_MB
#define LIMIT_MB 48
#endif
#define FILE_MB 160 /* at least twice the limit: every pass refaults */

static pw_cgroup cg;        /* the memory-limited cgroup we made */
static char hogfile[256];

/* A file of FILE_MB on a disk-backed file system (page cache that can be
 * reclaimed without swap), out of the cache. 0, or -1 (skip). */
static int make_hogfile(void)
{
	static const char *const dirs[] = {"/var/tmp", "/tmp"};
	for (size_t d = 0; d < 2; d++) {
		struct statfs sf;
		if (statfs(dirs[d], &sf) || sf.f_type == TMPFS_MAGIC)
			continue;
		snprintf(hogfile, sizeof(hogfile), "%s/herd-test-hog-%d", dirs[d], (int)getpid());
		int fd = open(hogfile, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			continue;
		char *blk = malloc(1 << 20);
		assert_non_null(blk);
		for (int i = 0; i < (1 << 20); i++)
			blk[i] = (char)(i * 31 + 7);
		int ok = 1;
		for (int i = 0; i < FILE_MB && ok; i++)
			ok = write(fd, blk, 1 << 20) == (1 << 20);
		free(blk);
		ok = ok && fsync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
		close(fd);
		if (ok)
			return 0;
		unlink(hogfile);
	}
	hogfile[0] = 0;
	return -1;
}

/* The hog: joins the cgroup, reads the file through a mapping forever. */
static pid_t start_hog(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid)
		return pid;
	if (pw_write_file(cg.procs, "0"))
		_exit(2);
	int fd = open(hogfile, O_RDONLY);
	const size_t size = (size_t)FILE_MB << 20;
	volatile unsigned char *p = fd < 0 ? MAP_FAILED : mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		_exit(3);
	unsigned long s = 0;
	for (;;)
		for (size_t o = 0; o < size; o += 4096)
			s += p[o];
	_exit((int)(s & 1));
}

static pid_t hog;

/* herdd's RssAnon in KiB. */
static long broker_rss_anon_kb(void)
{
	const uint64_t b = proc_mem_bytes(W.pid, "status", "RssAnon:");
	assert_true(b > 0);
	return (long)(b / 1024);
}

/* The first model's row of the `models` admin result. */
static const proto_value *model0(client *c)
{
	const proto_value *r = pw_admin(c, "models");
	assert_true(r->type == PROTO_V_ARRAY && r->arr.n >= 1);
	return &r->arr.v[0];
}

/* WARM_REQS greedy requests of distinct ~1900-token prompts (token input),
 * one at a time: each writes ~119 fresh KV pages, published to the prefix
 * cache and left there (unreferenced) when it ends. */
#define WARM_REQS 12
static void warm_kv(client *a)
{
	static int32_t toks[1900];
	for (int r = 0; r < WARM_REQS; r++) {
		for (int i = 0; i < 1900; i++)
			toks[i] = 3 + (i * 7 + r * 131 + (i * i) % 97) % 2000;
		proto_buf b;
		proto_buf_init(&b);
		gen_request g;
		gen_request_init(&g);
		g.id = 100 + (uint64_t)r;
		g.model = proto_s(W.model_name);
		g.input = GEN_INPUT_TOKENS;
		g.tokens = toks;
		g.n_tokens = 1900;
		g.params.max_tokens = 1;
		assert_int_equal(proto_encode_gen(&b, &g), 0);
		cl_send_buf(a, &b);
		do
			assert_int_equal(cl_next(a), 0);
		while (a->m.type == PROTO_TOK);
		assert_int_equal(a->m.type, PROTO_DONE);
	}
}

/* Polls the first model's row until key > above (30 s at most). */
static const proto_value *wait_model_key(client *c, const char *key, double above)
{
	for (int i = 0; i < 300; i++) {
		const proto_value *m = model0(c);
		if (pw_num(m, key) > above)
			return m;
		usleep(100 * 1000);
	}
	dump_log();
	fail_msg("models: '%s' stayed at most %g for 30 s", key, above);
	return NULL;
}

/* Polls `pressure` every 100 ms until key has value want (30 s at most). */
static const proto_value *wait_for(client *c, const char *key, double want)
{
	for (int i = 0; i < 300; i++) {
		const proto_value *r = pw_admin(c, "pressure");
		if (pw_num(r, key) == want)
			return r;
		int st;
		if (waitpid(W.pid, &st, WNOHANG) == W.pid) {
			dump_log();
			fail_msg("herdd died under pressure (status %d)", st);
		}
		usleep(100 * 1000);
	}
	dump_log();
	fail_msg("pressure: '%s' did not become %g within 30 s", key, want);
	return NULL;
}

/* The shedding events run so far: ranks ascending (the documented order),
 * heap_trim before refuse, each with the PSI values that triggered it. */
static void check_order(const proto_value *r, size_t first)
{
	const proto_value *ev = proto_value_get(r, "events");
	assert_non_null(ev);
	int last_rank = -1, heap_at = -1, refuse_at = -1, prefix_at = -1, kv_at = -1;
	char name[64], res[32];
	for (size_t i = first; i < ev->arr.n; i++) {
		const proto_value *e = &ev->arr.v[i];
		pw_str(e, "action", name, sizeof(name));
		pw_str(e, "result", res, sizeof(res));
		fprintf(stderr, "event %zu: %s %s rank %.0f some avg10 %.2f total %.0f window %.0f us\n", i,
			name, res, pw_num(e, "rank"), pw_num(e, "some_avg10"), pw_num(e, "some_total_us"),
			pw_num(e, "some_window_us"));
		assert_string_not_equal(res, "undone"); /* no recovery while the hog runs */
		assert_true(pw_num(e, "rank") >= last_rank);
		last_rank = (int)pw_num(e, "rank");
		assert_true(pw_num(e, "some_total_us") > 0);
		if (!strcmp(name, "heap_trim"))
			heap_at = (int)i;
		if (!strcmp(name, "refuse"))
			refuse_at = (int)i;
		if (!strcmp(name, "drop_prefix_pages"))
			prefix_at = (int)i;
		if (!strcmp(name, "shrink_kv"))
			kv_at = (int)i;
	}
	assert_true(prefix_at >= 0 && heap_at > prefix_at && kv_at > heap_at && refuse_at > kv_at);
}

/* A request while refusing gets err -EAGAIN naming the pressure. */
static void check_refused(client *a)
{
	pw_gen(a, 7);
	cl_expect(a, PROTO_ERR);
	assert_int_equal(a->m.err.code, -EAGAIN);
	char msg[300];
	snprintf(msg, sizeof(msg), "%.*s", (int)a->m.err.msg.len, a->m.err.msg.ptr);
	fprintf(stderr, "refused: %s\n", msg);
	assert_non_null(strstr(msg, "memory pressure"));
	assert_non_null(strstr(msg, "avg10="));
}

/* What the warm-up left: herdd's RssAnon, read before the counters. */
typedef struct {
	long rss0;
	double page_kb, total_pages, trimmed0;
} warm_state;

/* Warms the KV pages until at least 8 MiB are give-backable and the broker
 * is not refusing; returns the count of pressure events so far (the
 * machine's own pressure before the hog, if any). */
static size_t warm_until_ready(client *a, client *c, warm_state *w)
{
	for (int tries = 0;; tries++) {
		warm_kv(a);
		/* RssAnon first, then the counters: a trim in between shows as
		 * too few give-backable pages (warm up again), one after it
		 * counts in the hog's share */
		w->rss0 = broker_rss_anon_kb();
		const proto_value *m = model0(c);
		w->page_kb = pw_num(m, "kv_bytes") / pw_num(m, "kv_pages_total") / 1024;
		w->total_pages = pw_num(m, "kv_pages_total");
		w->trimmed0 = pw_num(m, "kv_pages_trimmed");
		fprintf(stderr, "warm: %.0f KV pages of %.0f KiB give-backable, %.0f cached, %.0f trimmed before\n",
			pw_num(m, "kv_pages_trimmable"), w->page_kb, pw_num(m, "prefix_pages_cached"), w->trimmed0);
		const int warm = pw_num(m, "kv_pages_trimmable") * w->page_kb >= 8 * 1024;
		const proto_value *r = pw_admin(c, "pressure");
		const proto_value *ev = proto_value_get(r, "events");
		const size_t first = ev ? ev->arr.n : 0;
		if (warm && !pw_num(r, "refusing"))
			return first;
		/* pressure from before the test (the suite's previous tests: PSI
		 * is the machine's on cgroup v1) shed the warm pages: again */
		assert_true(tries < 5);
		fprintf(stderr, "warm-up shed by pressure from before the hog; waiting, then again\n");
		sleep(5);
	}
}

static void test_shed_in_order(void **state)
{
	(void)state;
	client c, a;
	cl_open(&c);
	cl_open(&a);
	cl_hello(&a, "late");
	const proto_value *r = pw_admin(&c, "pressure");
	assert_true(pw_num(r, "enabled"));
	assert_int_equal(pw_num(r, "refusing"), 0);
	static char out[16384];
	char pin[128];
	snprintf(pin, sizeof(pin), "pin %s", W.model_name);
	pw_herdctl(pin, out, sizeof(out));
	const proto_value *m;
	warm_state w;
	const size_t first = warm_until_ready(&a, &c, &w);
	const double page_kb = w.page_kb, total_pages = w.total_pages, trimmed0 = w.trimmed0;
	const long rss0 = w.rss0;
	hog = start_hog();
	/* what the hog's pressure trimmed: the counter is cumulative */
	m = wait_model_key(&c, "kv_pages_trimmed", trimmed0);
	const double trimmed_kb = (pw_num(m, "kv_pages_trimmed") - trimmed0) * page_kb;
	const long rss1 = broker_rss_anon_kb();
	fprintf(stderr, "RssAnon of herdd: %ld kB before, %ld kB after the KV trim (%.0f kB given back)\n",
		rss0, rss1, trimmed_kb);
	assert_true(trimmed_kb >= 8 * 1024);
	assert_true((double)(rss0 - rss1) >= trimmed_kb * 0.75);
	r = wait_for(&c, "refusing", 1);
	check_order(r, first);
	m = model0(&c);
	assert_true(pw_num(m, "kv_shrinks") >= 1);
	assert_true(pw_num(m, "kv_pages_limit") < total_pages);
	check_refused(&a);
	pw_herdctl("pressure", out, sizeof(out));
	assert_non_null(strstr(out, "REFUSING new requests"));
	assert_non_null(strstr(out, "1.drop_prefix_pages 2.heap_trim 3.evict_idle_models 4.shrink_kv "
				    "5.refuse_model_loads 6.refuse"));
	assert_non_null(strstr(out, "refusing new requests and loads with -EAGAIN"));
	pw_herdctl("--json status", out, sizeof(out));
	assert_non_null(strstr(out, "\"pressure_refusing\":true"));
	assert_true(pw_num(pw_admin(&c, "status"), "pressure_refused") >= 1);
	kill(hog, SIGKILL);
	waitpid(hog, NULL, 0);
	hog = 0;
	r = wait_for(&c, "refusing", 0);
	assert_true(pw_num(r, "recoveries") >= 1);
	for (int i = 0; i < 100 && pw_num(model0(&c), "kv_pages_limit") < total_pages; i++)
		usleep(100 * 1000);
	assert_true(pw_num(model0(&c), "kv_pages_limit") == total_pages); /* the limit lifted */
	/* served again */
	pw_gen(&a, 8);
	do
		assert_int_equal(cl_next(&a), 0);
	while (a.m.type == PROTO_TOK);
	assert_int_equal(a.m.type, PROTO_DONE);
	int st;
	assert_int_equal(waitpid(W.pid, &st, WNOHANG), 0); /* alive throughout */
	cl_close(&a);
	cl_close(&c);
}

static int setup(void **state)
{
	(void)state;
	if (access("/proc/pressure/memory", R_OK)) {
		fprintf(stderr, "test_pressure_shed: no PSI (/proc/pressure/memory); skipping\n");
		exit(77);
	}
	if (pw_make_cgroup(&cg, "pressure", LIMIT_MB)) {
		fprintf(stderr, "test_pressure_shed: cannot make a memory-limited cgroup; skipping\n");
		exit(77);
	}
	if (make_hogfile()) {
		fprintf(stderr, "test_pressure_shed: no disk-backed directory for the hog; skipping\n");
		pw_remove_cgroup(&cg);
		exit(77);
	}
	/* the broker starts inside the cgroup (and finds its memory.pressure on v2) */
	assert_int_equal(pw_write_file(cg.procs, "0"), 0);
	pw_start("pshed", "{\"kv_cache_mb\": 16, \"pressure\": {\"trigger_us\": 50000, \"window_us\": 1000000,"
			  " \"escalate_ms\": 300, \"recover_ms\": 1500, \"bpf\": false}}\n");
	assert_int_equal(pw_write_file(cg.origin, "0"), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (hog > 0) {
		kill(hog, SIGKILL);
		waitpid(hog, NULL, 0);
	}
	pw_stop();
	pw_remove_cgroup(&cg);
	if (hogfile[0])
		unlink(hogfile);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shed_in_order),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
