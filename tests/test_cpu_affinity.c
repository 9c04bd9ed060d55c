/* cpu_affinity: the configuration key (cpulist strings and arrays, bad
 * entries refused with the entry named, CPUs checked against the online
 * ones) and a real herdd started with cpu_affinity [0]: after a request,
 * its compute threads (herd-pool workers and the herd-sched thread that
 * drives them) may run on CPU 0 only (/proc/PID/task/TID/status), and
 * `status` reports the list. Exit 77 when this process may not change its
 * own affinity (then herdd could not either). */
#include "broker_harness.h"

#include <dirent.h>
#include <sched.h>

#include "broker/config.h"
#include "kernels/threadpool.h"

/* ---- the configuration key ---------------------------------------------------- */

/* Parses text; returns the code, the message in err. */
static int parse(const char *text, cfg *c, char *err, size_t n)
{
	cfg_init(c);
	err[0] = 0;
	return cfg_parse_json(c, text, err, n);
}

static void expect_ok(const char *text, const char *want)
{
	cfg c;
	char err[512];
	int rc = parse(text, &c, err, sizeof(err));
	if (rc)
		fail_msg("%s: refused: %s", text, err);
	assert_non_null(c.cpu_affinity);
	assert_string_equal(c.cpu_affinity, want);
	cfg_fini(&c);
}

static void expect_bad(const char *text, const char *named)
{
	cfg c;
	char err[512];
	int rc = parse(text, &c, err, sizeof(err));
	if (!rc)
		fail_msg("%s: accepted", text);
	if (!strstr(err, named))
		fail_msg("%s: message '%s' does not name '%s'", text, err, named);
	cfg_fini(&c);
}

static void test_config_key(void **state)
{
	(void)state;
	expect_ok("{\"cpu_affinity\": \"0\"}", "0");
	expect_ok("{\"cpu_affinity\": [0]}", "0");
	expect_ok("{\"cpu_affinity\": \" 0-0 , 0 \"}", "0");
	expect_ok("{\"cpu_affinity\": [0, 0]}", "0");
	/* every online CPU, as the kernel lists them */
	int on[KERN_CPU_MAX], n_on = 0;
	assert_int_equal(kern_cpus_online(on, KERN_CPU_MAX, &n_on), 0);
	assert_true(n_on >= 1 && on[0] >= 0);
	char list[1024], text[1200];
	kern_cpulist_format(on, n_on, list, sizeof(list));
	snprintf(text, sizeof(text), "{\"cpu_affinity\": \"%s\"}", list);
	expect_ok(text, list);
	/* bad entries, each named */
	expect_bad("{\"cpu_affinity\": \"0,x\"}", "'x'");
	expect_bad("{\"cpu_affinity\": \"3-1\"}", "'3-1'");
	expect_bad("{\"cpu_affinity\": \"0-\"}", "'0-'");
	expect_bad("{\"cpu_affinity\": \"0,\"}", "empty entry");
	expect_bad("{\"cpu_affinity\": \"\"}", "empty");
	expect_bad("{\"cpu_affinity\": \"99999\"}", "'99999'");
	expect_bad("{\"cpu_affinity\": [0, -1]}", "cpu_affinity[1]");
	expect_bad("{\"cpu_affinity\": [\"0\"]}", "cpu_affinity[0]");
	expect_bad("{\"cpu_affinity\": []}", "empty");
	expect_bad("{\"cpu_affinity\": true}", "cpu_affinity");
	/* a CPU that is not online (the highest number allowed, unless online) */
	if (on[n_on - 1] < KERN_CPU_MAX - 1) {
		snprintf(text, sizeof(text), "{\"cpu_affinity\": [%d]}", KERN_CPU_MAX - 1);
		char named[64];
		snprintf(named, sizeof(named), "CPU %d is not online", KERN_CPU_MAX - 1);
		expect_bad(text, named);
	}
}

/* ---- a pinned broker -------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	cpu_set_t old, one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_getaffinity(0, sizeof(old), &old) || !CPU_ISSET(0, &old) ||
	    sched_setaffinity(0, sizeof(one), &one) || sched_setaffinity(0, sizeof(old), &old)) {
		fprintf(stderr, "test_cpu_affinity: cannot pin to CPU 0 here (%s); skipping\n",
			strerror(errno));
		exit(77);
	}
	bh_world_setup("taf");
	bh_write_conf("{\"cpu_affinity\": [0]}\n");
	const char *extra[] = {"--config", W.conf, "--state-dir", W.dir, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bh_world_teardown();
	return 0;
}

/* One short request, so the scheduler thread has driven the pool. */
static void one_request(void)
{
	client c;
	cl_open(&c);
	proto_buf b;
	proto_buf_init(&b);
	proto_hello h = {.v = PROTO_VERSION, .name = proto_s("affinity")};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	cl_send_buf(&c, &b);
	cl_expect(&c, PROTO_WELCOME);
	const proto_welcome *w = &c.m.welcome;
	assert_true(w->models[0].segment.len < sizeof(W.segment));
	memcpy(W.segment, w->models[0].segment.ptr, w->models[0].segment.len);
	W.segment[w->models[0].segment.len] = 0;
	proto_buf_init(&b);
	gen_request g;
	gen_request_init(&g);
	g.id = 1;
	g.model = proto_s(W.model_name);
	g.input = GEN_INPUT_PROMPT;
	g.prompt = proto_s("Once upon a time");
	g.params.max_tokens = 4;
	assert_int_equal(proto_encode_gen(&b, &g), 0);
	cl_send_buf(&c, &b);
	cl_expect(&c, PROTO_DONE);
	/* status names the list */
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s("status")};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(&c, &b);
	cl_expect(&c, PROTO_ADMIN_OK);
	const proto_value *v = proto_value_get(c.m.admin_ok.result, "cpu_affinity");
	assert_non_null(v);
	assert_int_equal(v->type, PROTO_V_STR);
	assert_true(proto_str_eq(v->s, "0"));
	cl_close(&c);
}

/* The value of "Name:\t..." in /proc/PID/task/TID/status (trailing newline cut). */
static void task_field(const char *tid, const char *field, char *out, size_t n)
{
	char path[128], line[512];
	snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)W.pid, tid);
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	const size_t fl = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, fl) && line[fl] == ':') {
			const char *p = line + fl + 1;
			while (*p == ' ' || *p == '\t')
				p++;
			snprintf(out, n, "%.*s", (int)strcspn(p, "\n"), p);
			break;
		}
	fclose(f);
}

static void test_threads_pinned(void **state)
{
	(void)state;
	one_request();
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)W.pid);
	DIR *d = opendir(path);
	assert_non_null(d);
	int n_pool = 0, n_sched = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char name[64], cpus[256];
		task_field(e->d_name, "Name", name, sizeof(name));
		task_field(e->d_name, "Cpus_allowed_list", cpus, sizeof(cpus));
		const int pool = !strcmp(name, "herd-pool"), sched = !strcmp(name, "herd-sched");
		if (!pool && !sched)
			continue;
		n_pool += pool;
		n_sched += sched;
		if (strcmp(cpus, "0"))
			fail_msg("thread %s (%s) may run on CPUs %s, not only 0", e->d_name, name, cpus);
	}
	closedir(d);
	assert_int_equal(n_sched, 1);
	assert_int_equal(n_pool, 1); /* --threads 2: the scheduler thread + one worker */
}

int main(void)
{
	const struct CMUnitTest unit[] = {cmocka_unit_test(test_config_key)};
	const struct CMUnitTest broker[] = {cmocka_unit_test(test_threads_pinned)};
	int rc = cmocka_run_group_tests_name("cpu_affinity_config", unit, NULL, NULL);
	return rc | cmocka_run_group_tests_name("cpu_affinity_broker", broker, setup, teardown);
}
