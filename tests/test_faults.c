/* Fault tests with real processes (a real herdd on a "mini" model this test
 * makes, agents that are `herd agent` processes):
 *
 * - test_agent_killed_midstream: an agent is SIGKILLed in the middle of a
 *   streamed request; the other agents' requests all finish with the right
 *   answers, and the broker frees the dead agent's slot: no request in
 *   flight, nothing running or waiting, every KV page back in the pool, the
 *   agent gone from `herdctl agents`, and a clean exit (under ASan: no leak).
 * - test_bad_frames: while agents are being served, other connections send
 *   a malformed body, an oversized length, an unknown frame type and a wrong
 *   protocol version: each gets an `err` and is closed (the broker counts
 *   them); every agent's requests still succeed.
 * - test_broker_restart: the broker is SIGKILLed while an agent is streaming;
 *   the agent gets a clear error ("broker closed the connection"), retries,
 *   and reconnects once a new broker serves. The model file is overwritten
 *   with zeros between the two brokers (same size, same mtime), so the
 *   restarted broker can only serve by adopting the existing image without
 *   reading the model: its log and `herdctl models` say "adopted", and the
 *   answers are still the engine's.
 * - test_agent_write_segv: an agent (a child this test forks, attached
 *   through libherd like any agent) that writes into its read-only mapping
 *   of the image dies of SIGSEGV; the image's digest still verifies and the
 *   broker keeps serving. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "herd/herd.h"
#include "proto/proto.h"
#include "harness.h"

static int setup(void **state)
{
	*state = h_world_create("hf");
	return 0;
}

static int teardown(void **state)
{
	h_world_destroy(*state);
	return 0;
}

/* Polls `herdctl status` and `models` until the broker is idle with every KV
 * page free (or fails after timeout_s). */
static void wait_idle(h_world *w, int kv_total, double timeout_s)
{
	const double t0 = clock_mono_s();
	for (;;) {
		json_object *s = h_ctl(w, "status");
		json_object *m = h_ctl_model(w);
		assert_non_null(s);
		const int in_flight = (int)h_num(s, "requests_in_flight");
		const int running = (int)h_num(m, "running"), waiting = (int)h_num(m, "waiting");
		const int kv_free = (int)h_num(m, "kv_pages_free");
		json_object_put(s);
		json_object_put(m);
		if (in_flight == 0 && running == 0 && waiting == 0 && kv_free == kv_total)
			return;
		if (clock_mono_s() - t0 > timeout_s)
			fail_msg("broker not idle: %d in flight, %d running, %d waiting, KV %d of %d free",
				 in_flight, running, waiting, kv_free, kv_total);
		usleep(50000);
	}
}

static int agents_has_pid(h_world *w, pid_t pid)
{
	json_object *a = h_ctl(w, "agents");
	assert_non_null(a);
	int found = 0;
	for (size_t i = 0; i < json_object_array_length(a); i++)
		found |= (pid_t)h_num(json_object_array_get_idx(a, i), "pid") == pid;
	json_object_put(a);
	return found;
}

#define N_OTHERS 6

static void test_agent_killed_midstream(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "16");
	json_object *m = h_ctl_model(w);
	const int kv_total = (int)h_num(m, "kv_pages_total");
	assert_true(kv_total > 0);
	assert_int_equal((int)h_num(m, "kv_pages_free"), kv_total);
	json_object_put(m);

	h_barriers(w);
	const char *victim_args[] = {"--requests", "1", "--max-tokens", "1800", "--stream-every", "1",
				     "--report-first", NULL};
	h_agent *victim = h_agent_start(w, 1000, 1, NULL, victim_args);
	const char *other_args[] = {"--requests", "4", "--max-tokens", "48", "--stream-every", "2",
				    NULL};
	h_agent *ag[N_OTHERS];
	for (int i = 0; i < N_OTHERS; i++)
		ag[i] = h_agent_start(w, i, 1, NULL, other_args);
	h_pump(w, ag, N_OTHERS, H_READY, 60);
	h_pump(w, &victim, 1, H_READY, 60);
	h_release(&w->go_w);

	/* Kill the victim as soon as its stream has begun. */
	size_t cur = 0;
	json_object *first = h_agent_wait_ev(w, victim, "first", &cur, 60);
	assert_non_null(first);
	assert_true(agents_has_pid(w, victim->pid));
	assert_int_equal(kill(victim->pid, SIGKILL), 0);
	int st = h_agent_reap(w, victim, 10);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	cur = 0;
	if (h_agent_wait_ev(w, victim, "req", &cur, 1))
		fail_msg("the victim's request had already finished when it was killed");

	/* The others all finish, with the engine's answers. */
	h_pump(w, ag, N_OTHERS, H_FINISHED, 120);
	int n_stream = 0;
	long n_tok = 0;
	for (int i = 0; i < N_OTHERS; i++)
		assert_int_equal(h_check_agent(w, ag[i], &n_stream, &n_tok), 4);
	h_release(&w->exit_w);
	for (int i = 0; i < N_OTHERS; i++)
		assert_int_equal(h_agent_reap(w, ag[i], 30), 0);

	/* The dead agent's slot, sequence and KV pages are released. */
	wait_idle(w, kv_total, 20);
	assert_false(agents_has_pid(w, victim->pid));
	json_object *mm = h_ctl_model(w);
	printf("killed agent: broker idle, KV %d/%d pages free, %d requests cancelled\n",
	       (int)h_num(mm, "kv_pages_free"), kv_total, (int)h_num(mm, "requests_cancelled"));
	json_object_put(mm);
	h_broker_stop(w);
}

/* ---- bad frames ---------------------------------------------------------- */

/* Sends bytes on a new connection; expects an err frame with code `code`
 * (0: any) and then the connection closed by the broker. */
static void bad_conn(h_world *w, const void *bytes, size_t n, int code, const char *what)
{
	int fd = h_sock_connect(w);
	assert_true(fd >= 0);
	assert_int_equal(send(fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
	uint8_t buf[4096];
	size_t len = 0;
	for (;;) {
		ssize_t r = recv(fd, buf + len, sizeof(buf) - len, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == sizeof(buf))
			break;
	}
	close(fd);
	size_t flen = 0;
	if (proto_frame_next(buf, len, sizeof(buf), &flen) != PROTO_FRAME_READY)
		fail_msg("%s: no complete frame before the broker closed (%zu bytes)", what, len);
	proto_msg m;
	char err[256];
	assert_int_equal(proto_decode(buf + PROTO_HDR_SIZE, flen, &m, err, sizeof(err)), 0);
	if (m.type != PROTO_ERR)
		fail_msg("%s: expected err, got %s", what, proto_type_name(m.type));
	if (code && m.err.code != code)
		fail_msg("%s: err code %d, expected %d", what, m.err.code, code);
	printf("%s: err %d \"%.*s\", connection closed\n", what, m.err.code, (int)m.err.msg.len,
	       m.err.msg.ptr);
	/* the err must be the last thing on the connection */
	assert_int_equal(len, PROTO_HDR_SIZE + flen);
	proto_msg_free(&m);
}

static void test_bad_frames(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "16");
	h_barriers(w);
	const char *args[] = {"--requests", "6", "--max-tokens", "64", "--stream-every", "2", NULL};
	h_agent *ag[4];
	for (int i = 0; i < 4; i++)
		ag[i] = h_agent_start(w, i, 1, NULL, args);
	h_pump(w, ag, 4, H_READY, 60);
	h_release(&w->go_w);

	/* malformed body: length 5, bytes that are not one msgpack map */
	static const uint8_t junk[] = {5, 0, 0, 0, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1};
	bad_conn(w, junk, sizeof(junk), HERD_E_PROTO, "malformed frame");
	/* oversized: announces 2 GiB; refused without reading the body */
	static const uint8_t big[] = {0, 0, 0, 0x80, 0x81, 0xa1, 't'};
	bad_conn(w, big, sizeof(big), HERD_E_PROTO, "oversized frame");
	/* a well-formed map of an unknown type */
	proto_buf b;
	proto_buf_init(&b);
	size_t mark;
	assert_int_equal(proto_frame_begin(&b, &mark), 0);
	proto_writer pk;
	proto_writer_init(&pk, &b);
	proto_write_map(&pk, 1);
	proto_write_kv_str(&pk, "t", "launch");
	assert_int_equal(proto_frame_end(&b, mark), 0);
	bad_conn(w, b.data, b.len, HERD_E_PROTO, "unknown frame type");
	proto_buf_fini(&b);
	/* hello with a protocol version nobody speaks */
	proto_buf_init(&b);
	proto_hello h = {.v = 99, .name = proto_s("time-traveller")};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	bad_conn(w, b.data, b.len, HERD_E_VERSION, "wrong protocol version");
	proto_buf_fini(&b);

	h_pump(w, ag, 4, H_FINISHED, 120);
	int n_stream = 0;
	long n_tok = 0;
	for (int i = 0; i < 4; i++)
		assert_int_equal(h_check_agent(w, ag[i], &n_stream, &n_tok), 6);
	h_release(&w->exit_w);
	for (int i = 0; i < 4; i++)
		assert_int_equal(h_agent_reap(w, ag[i], 30), 0);
	json_object *s = h_ctl(w, "status");
	assert_non_null(s);
	assert_true(h_num(s, "protocol_errors") >= 3);
	json_object_put(s);
	h_broker_stop(w);
}

/* ---- broker restart -------------------------------------------------------- */

/* Overwrites path with zeros, keeping its size and mtime (so the image's
 * recorded source still matches, but nothing could be loaded from it). */
static void zero_file_keep_stat(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	static char zero[1 << 16];
	for (off_t off = 0; off < st.st_size;) {
		size_t n = (size_t)(st.st_size - off) < sizeof(zero) ? (size_t)(st.st_size - off)
								       : sizeof(zero);
		assert_int_equal(pwrite(fd, zero, n, off), (ssize_t)n);
		off += (off_t)n;
	}
	const struct timespec ts[2] = {st.st_atim, st.st_mtim};
	assert_int_equal(futimens(fd, ts), 0);
	close(fd);
	struct stat now;
	assert_int_equal(stat(path, &now), 0);
	assert_int_equal(now.st_size, st.st_size);
	assert_true(now.st_mtim.tv_sec == st.st_mtim.tv_sec && now.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
	/* and indeed nothing can be loaded from it any more */
	llama_model *m = NULL;
	char err[256];
	assert_int_not_equal(llama_model_load(&m, path, err, sizeof(err)), 0);
}

static int log_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

static void test_broker_restart(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "16");
	json_object *m = h_ctl_model(w);
	char segment[SHM_IMAGE_NAME_MAX], digest[80];
	snprintf(segment, sizeof(segment), "%s", h_str(m, "segment"));
	snprintf(digest, sizeof(digest), "%s", h_str(m, "digest"));
	json_object_put(m);
	assert_true(segment[0] && digest[0]);

	/* request 0 streams 1500 tokens: the broker dies during it */
	const char *args[] = {"--requests", "3", "--max-tokens", "1500", "--stream-every", "1",
			      "--report-first", "--reconnect", "--reconnect-ms", "60000", NULL};
	h_agent *a = h_agent_start(w, 7, 0, NULL, args);
	size_t cur = 0;
	assert_non_null(h_agent_wait_ev(w, a, "first", &cur, 60));
	const pid_t old = w->broker;
	assert_int_equal(kill(old, SIGKILL), 0);
	waitpid(old, NULL, 0);
	h_untrack(w, old);
	w->broker = 0;

	/* The agent is told, clearly. */
	json_object *e = h_agent_wait_ev(w, a, "error", &cur, 30);
	assert_non_null(e);
	printf("agent saw: code %d: %s\n", (int)h_num(e, "code"), h_str(e, "msg"));
	assert_int_equal((int)h_num(e, "code"), -ECONNRESET);
	assert_non_null(strstr(h_str(e, "msg"), "broker closed the connection"));
	assert_int_equal((int)h_num(e, "req"), 0);

	/* No model file to load from any more: only adoption can work. */
	zero_file_keep_stat(w->model_path);
	const int adopted_before = log_contains(w->log, "adopted");
	usleep(200000); /* the agent retries against a dead socket meanwhile */
	h_broker_start(w, "16");
	json_object *m2 = h_ctl_model(w);
	assert_true(json_object_get_boolean(json_object_object_get(m2, "adopted")));
	assert_string_equal(h_str(m2, "segment"), segment);
	assert_string_equal(h_str(m2, "digest"), digest);
	printf("restarted broker adopted %s in %.1f ms\n", segment, h_num(m2, "load_ms"));
	json_object_put(m2);
	assert_true(log_contains(w->log, "adopted") > adopted_before);

	/* The agent reconnects and gets the engine's answers. */
	json_object *r = h_agent_wait_ev(w, a, "reconnected", &cur, 60);
	assert_non_null(r);
	printf("agent reconnected after %.0f ms (%d attempts)\n", h_num(r, "after_ms"),
	       (int)h_num(r, "attempts"));
	h_pump(w, &a, 1, H_FINISHED, 120);
	int n_stream = 0;
	long n_tok = 0;
	assert_int_equal(h_check_agent(w, a, &n_stream, &n_tok), 3);
	assert_int_equal(h_agent_reap(w, a, 30), 0);
	h_broker_stop(w);
}

/* ---- a write into the image ---------------------------------------------------- */

/* What the writer child reports on its pipe, and how it exits when the store
 * did not kill it (or it never got that far). */
#define WRITER_WRITING "writing\n"
#define WRITER_WROTE "wrote\n"
enum { WRITER_EXIT_WROTE = 3, WRITER_EXIT_SETUP = 4 };

/* The forked child: attaches the image through libherd exactly as an agent
 * does (connect, attach frame, descriptor over SCM_RIGHTS, PROT_READ map),
 * then stores one byte into the middle of the payload (weights, covered by
 * the digest). The mapping is read-only, so the store must fault. Never
 * returns; reports progress on report_fd. */
__attribute__((noreturn)) static void writer_child(const h_world *w, int report_fd)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = w->sock;
	co.name = "writer";
	herd_client *c = NULL;
	herd_local_model *lm = NULL;
	const herd_attach_opts ao = {.n_threads = 1};
	if (herd_connect(&c, &co) || herd_model_attach_opts(c, w->model_name, &ao, &lm))
		_exit(WRITER_EXIT_SETUP);
	herd_local_info info;
	herd_local_info_get(lm, &info);
	unsigned char *base = NULL;
	size_t len = 0;
	if (shm_image_mapped(info.segment, &base, &len))
		_exit(WRITER_EXIT_SETUP);
	/* The default action, not a sanitizer's SEGV handler (which would turn
	 * the signal into an exit status). */
	signal(SIGSEGV, SIG_DFL);
	if (write(report_fd, WRITER_WRITING, strlen(WRITER_WRITING)) < 0)
		_exit(WRITER_EXIT_SETUP);
	((volatile unsigned char *)base)[len / 2] ^= 0x5a;
	const ssize_t n = write(report_fd, WRITER_WROTE, strlen(WRITER_WROTE));
	(void)n; /* exits WRITER_EXIT_WROTE whether or not the parent hears */
	_exit(WRITER_EXIT_WROTE);
}

/* Forks the writer and waits for it (up to timeout_s, then SIGKILL); returns
 * its wait status and what it reported (NUL-terminated) in report. */
static int run_writer(h_world *w, char *report, size_t cap, double timeout_s)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	fflush(NULL); /* no buffered test output duplicated into the child */
	const pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		writer_child(w, p[1]);
	}
	close(p[1]);
	h_track(w, pid);
	const double t0 = clock_mono_s();
	int st = 0;
	pid_t r;
	while ((r = waitpid(pid, &st, WNOHANG)) == 0 && clock_mono_s() - t0 < timeout_s)
		usleep(10000);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	h_untrack(w, pid);
	size_t n = 0;
	ssize_t k;
	while (n + 1 < cap && (k = read(p[0], report + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	report[n] = 0;
	close(p[0]);
	return st;
}

/* The image is intact: the digest over every byte still verifies and is the
 * one the broker announced. */
static void check_image_intact(const char *segment, const char *digest)
{
	int fd = -1;
	assert_int_equal(shm_image_open(segment, &fd), 0);
	char err[512] = "";
	if (shm_image_verify_fd(fd, err, sizeof(err)))
		fail_msg("image digest check failed: %s", err);
	shm_image_map_t map;
	assert_int_equal(shm_image_map(fd, &map, err, sizeof(err)), 0);
	close(fd);
	shm_image_info info;
	shm_image_describe(&map, &info);
	assert_string_equal(info.digest_hex, digest);
	shm_image_unmap(&map);
}

static void test_agent_write_segv(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "16");
	json_object *m = h_ctl_model(w);
	char segment[SHM_IMAGE_NAME_MAX], digest[80];
	snprintf(segment, sizeof(segment), "%s", h_str(m, "segment"));
	snprintf(digest, sizeof(digest), "%s", h_str(m, "digest"));
	json_object_put(m);

	char report[256];
	const int st = run_writer(w, report, sizeof(report), 60);
	if (!strstr(report, WRITER_WRITING))
		fail_msg("the writer never reached its write (wait status %d)", st);
	if (strstr(report, WRITER_WROTE))
		fail_msg("an agent wrote into the shared image");
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
		fail_msg("the writing agent ended with wait status %d, not SIGSEGV", st);
	printf("writing agent killed by SIGSEGV\n");

	check_image_intact(segment, digest);

	/* And the broker keeps serving. */
	const char *ok_args[] = {"--attach", "--local", "--requests", "2", "--max-tokens", "16", NULL};
	h_agent *b = h_agent_start(w, 4, 0, NULL, ok_args);
	h_pump(w, &b, 1, H_FINISHED, 60);
	int n_stream = 0;
	long n_tok = 0;
	assert_int_equal(h_check_agent(w, b, &n_stream, &n_tok), 2);
	assert_int_equal(h_agent_reap(w, b, 30), 0);
	h_broker_stop(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_agent_killed_midstream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broker_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent_write_segv, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
