/* The eBPF memory counters move under a scripted fault storm: a real
 * herdd (bpf/herd_mem.bpf.c loaded), an agent process that attaches the
 * model's image (the broker registers its pid), maps it (private), and
 * writes every page, drops them with madvise(MADV_DONTNEED) and writes
 * them again, round after round. `admin pressure` must then show that
 * process's image faults (and its faults in total) at least as many as
 * the page touches that had to fault. Exits 77 when the broker could not
 * load the program (built without eBPF, no privilege, no BTF). */
#include "pressure_harness.h"

#include <sys/mman.h>

#include <json-c/json.h>

#define ROUNDS 20

/* The agent: attach, map, wait for the broker to read its mappings, storm,
 * report the pages touched on the pipe, then wait to be killed (a gone
 * process is dropped from the counters). */
static void storm_child(int wfd)
{
	client c;
	cl_open(&c);
	cl_hello(&c, "storm");
	proto_buf b;
	proto_buf_init(&b);
	proto_attach at = {.model = proto_s(W.model_name)};
	assert_int_equal(proto_encode_attach(&b, &at), 0);
	cl_send_buf(&c, &b);
	cl_expect(&c, PROTO_IMAGE);
	assert_true(c.got_fd >= 0);
	const size_t size = (size_t)c.m.image.size;
	/* private and written: every touch is a copy-on-write fault of its own
	 * (read faults map neighbours too: fault-around) */
	unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, c.got_fd, 0);
	assert_true(p != MAP_FAILED);
	usleep(1500 * 1000); /* the broker rereads mappings once a second */
	const long pg = sysconf(_SC_PAGESIZE);
	unsigned long sum = 0, touched = 0;
	for (int r = 0; r < ROUNDS; r++) {
		for (size_t o = 0; o < size; o += (size_t)pg, touched++)
			sum += ((volatile unsigned char *)p)[o]++;
		madvise(p, size, MADV_DONTNEED);
	}
	char line[64];
	int n = snprintf(line, sizeof(line), "%lu %lu\n", touched, sum & 1);
	if (write(wfd, line, (size_t)n) != n)
		_exit(3);
	pause();
	_exit(0);
}

static void test_fault_storm(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	const proto_value *r = pw_require_bpf(&c, "test_pressure_bpf", NULL);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		close(pfd[0]);
		storm_child(pfd[1]);
	}
	close(pfd[1]);
	char line[64] = "";
	ssize_t got = read(pfd[0], line, sizeof(line) - 1);
	close(pfd[0]);
	unsigned long touched = 0, dummy;
	assert_true(got > 0 && sscanf(line, "%lu %lu", &touched, &dummy) == 2);
	assert_true(touched > 1000);
	r = pw_admin(&c, "pressure");
	const proto_value *procs = proto_value_get(r, "bpf_procs");
	assert_non_null(procs);
	assert_int_equal(procs->type, PROTO_V_ARRAY);
	double faults = -1, image_faults = -1, ranges = -1;
	int broker_seen = 0;
	for (size_t i = 0; i < procs->arr.n; i++) {
		const proto_value *e = &procs->arr.v[i];
		broker_seen |= (pid_t)pw_num(e, "pid") == W.pid;
		if ((pid_t)pw_num(e, "pid") != kid)
			continue;
		faults = pw_num(e, "faults");
		image_faults = pw_num(e, "image_faults");
		ranges = pw_num(e, "image_ranges");
	}
	/* herdctl top shows the storm agent's image faults and its PSS */
	static char out[1 << 16];
	pw_herdctl("--json top --once", out, sizeof(out));
	json_object *top = json_tokener_parse(out), *agents = NULL;
	assert_non_null(top);
	assert_true(json_object_object_get_ex(top, "agents", &agents));
	assert_non_null(json_object_object_get(top, "pressure"));
	int64_t top_faults = -1, top_pss = -1;
	for (size_t i = 0; i < json_object_array_length(agents); i++) {
		json_object *o = json_object_array_get_idx(agents, i);
		if (json_object_get_int64(json_object_object_get(o, "pid")) != kid)
			continue;
		top_faults = json_object_get_int64(json_object_object_get(o, "image_faults"));
		top_pss = json_object_get_int64(json_object_object_get(o, "pss_kib"));
	}
	json_object_put(top);
	fprintf(stderr, "top: storm agent %lld image faults, PSS %lld KiB\n", (long long)top_faults,
		(long long)top_pss);
	assert_true((double)top_faults >= image_faults);
	assert_true(top_pss > 0);
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	fprintf(stderr, "storm: %lu page touches, %.0f faults, %.0f on the image (%.0f mappings)\n",
		touched, faults, image_faults, ranges);
	assert_true(broker_seen);  /* the broker registers itself */
	assert_true(ranges >= 1);  /* the child's mapping of the image was found */
	/* every round after MADV_DONTNEED faults every page again */
	assert_true(image_faults >= (double)touched * (ROUNDS - 1) / ROUNDS);
	assert_true(faults >= image_faults);
	/* and the counters are per process: the broker did not fault the storm */
	cl_close(&c);
}

static int setup(void **state)
{
	(void)state;
	pw_start("pbpf", "{\"pressure\": {\"bpf\": true}}\n");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pw_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_storm),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
