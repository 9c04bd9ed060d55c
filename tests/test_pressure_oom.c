/* The eBPF stall and OOM counters move under a real OOM kill: a real herdd
 * with bpf/herd_mem.bpf.c loaded, outside the cgroup; a hog process that
 * attaches the model's image (so the broker registers its pid), joins a
 * memory-limited cgroup (v2, else v1's memory hierarchy) and writes
 * anonymous memory until the kernel's OOM killer kills it. Before the kill
 * the cgroup reclaims on the hog's charges (memcg reclaim: stall time),
 * then oom:mark_victim fires. `admin pressure` must show the machine-wide
 * OOM kills and reclaim stalls grown, the hog's own entry with one OOM
 * kill and reclaim time, and the broker alive and answering. Exits 77
 * without eBPF in the broker (built without, no privilege, no BTF) or a
 * writable memory cgroup. */
#include "pressure_harness.h"

#define LIMIT_MB 32
#define HOG_MAX_MB 1024 /* never reached: the limit is 32 MiB */

static pw_cgroup cg;

/* The hog: registered by attach, then into the cgroup, then anonymous
 * memory written 1 MiB at a time. Reports on the pipe when it starts
 * writing; exits 5 if it ever survives HOG_MAX_MB. */
static void hog_main(int wfd)
{
	client c;
	cl_open(&c);
	cl_hello(&c, "oom-hog");
	proto_buf b;
	proto_buf_init(&b);
	proto_attach at = {.model = proto_s(W.model_name)};
	assert_int_equal(proto_encode_attach(&b, &at), 0);
	cl_send_buf(&c, &b);
	cl_expect(&c, PROTO_IMAGE); /* the broker registered this pid */
	if (pw_write_file(cg.procs, "0"))
		_exit(2);
	if (write(wfd, "g", 1) != 1)
		_exit(3);
	usleep(1500 * 1000); /* the broker's pressure thread reads /proc/PID/maps once a second */
	for (int mb = 0; mb < HOG_MAX_MB; mb++) {
		char *p = malloc(1 << 20);
		if (!p)
			_exit(4);
		memset(p, mb & 0xff, 1 << 20);
	}
	_exit(5);
}

/* The entry of pid in bpf_procs, or NULL. */
static const proto_value *proc_entry(const proto_value *r, pid_t pid)
{
	const proto_value *procs = proto_value_get(r, "bpf_procs");
	assert_non_null(procs);
	for (size_t i = 0; i < procs->arr.n; i++)
		if ((pid_t)pw_num(&procs->arr.v[i], "pid") == pid)
			return &procs->arr.v[i];
	return NULL;
}

static void test_oom_counted(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	const proto_value *r = pw_require_bpf(&c, "test_pressure_oom", &cg);
	const proto_value *g = proto_value_get(r, "bpf_global");
	assert_non_null(g);
	const double oom0 = pw_num(g, "oom_kills"), recl0 = pw_num(g, "reclaims");
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	const pid_t hog = fork();
	assert_true(hog >= 0);
	if (hog == 0) {
		close(pfd[0]);
		hog_main(pfd[1]);
	}
	close(pfd[1]);
	char go = 0;
	assert_int_equal(read(pfd[0], &go, 1), 1);
	close(pfd[0]);
	/* wait for its death without reaping it: a zombie keeps its /proc
	 * entry, so the broker keeps its counters until we reap it */
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	assert_int_equal(waitid(P_PID, (id_t)hog, &si, WEXITED | WNOWAIT), 0);
	assert_int_equal(si.si_code, CLD_KILLED);
	assert_int_equal(si.si_status, SIGKILL);
	usleep(300 * 1000);
	r = pw_admin(&c, "pressure");
	g = proto_value_get(r, "bpf_global");
	const proto_value *h = proc_entry(r, hog);
	fprintf(stderr, "machine: OOM kills %.0f -> %.0f, reclaims %.0f -> %.0f (%.1f ms); hog: %s\n",
		oom0, pw_num(g, "oom_kills"), recl0, pw_num(g, "reclaims"), pw_num(g, "reclaim_ms"),
		h ? "registered" : "not found");
	assert_true(pw_num(g, "oom_kills") >= oom0 + 1);
	assert_true(pw_num(g, "reclaims") > recl0);
	assert_non_null(h);
	fprintf(stderr, "hog %d: oom_kills %.0f, reclaims %.0f, reclaim %.2f ms, faults %.0f\n", (int)hog,
		pw_num(h, "oom_kills"), pw_num(h, "reclaims"), pw_num(h, "reclaim_ms"), pw_num(h, "faults"));
	assert_int_equal(pw_num(h, "oom_kills"), 1);
	assert_true(pw_num(h, "reclaims") >= 1);
	assert_true(pw_num(h, "reclaim_ms") > 0);
	assert_true(pw_num(h, "faults") >= LIMIT_MB * 256 / 2); /* it wrote ~32 MiB of pages */
	waitpid(hog, NULL, 0);
	int st;
	assert_int_equal(waitpid(W.pid, &st, WNOHANG), 0); /* the broker lives */
	client a;
	cl_open(&a);
	cl_hello(&a, "after");
	pw_gen(&a, 1);
	do
		assert_int_equal(cl_next(&a), 0);
	while (a.m.type == PROTO_TOK);
	assert_int_equal(a.m.type, PROTO_DONE);
	cl_close(&a);
	cl_close(&c);
}

static int setup(void **state)
{
	(void)state;
	if (pw_make_cgroup(&cg, "oom", LIMIT_MB)) {
		fprintf(stderr, "test_pressure_oom: cannot make a memory-limited cgroup; skipping\n");
		exit(77);
	}
	/* shedding off: the kill may stall the whole machine a moment, and this
	 * test is about the counters, not the actions */
	pw_start("poom", "{\"pressure\": {\"bpf\": true, \"trigger_us\": 990000, \"window_us\": 1000000,"
			 " \"escalate_ms\": 60000}}\n");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pw_stop();
	pw_remove_cgroup(&cg);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oom_counted),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
