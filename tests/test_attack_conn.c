/* Attacks on the broker's connection handling, with real processes (a real
 * herdd on the "mini" model, raw clients speaking proto over the socket).
 * Each asserts a bounded outcome and that a victim agent is still answered:
 *
 * - test_never_reads: a client floods requests and never reads a byte of
 *   the replies; the broker stops reading from it (send queue past
 *   limits.send_queue_pause_bytes) and cuts it off once its streams push
 *   the queue past limits.send_queue_bytes. Broker RSS growth stays small,
 *   the victim is answered.
 * - test_partial_frames: 200 connections each hold a partial frame; every
 *   one gets an err HERD_E_LIMIT and is closed after limits.frame_timeout_ms.
 * - test_idle_timeout: with limits.idle_timeout_ms set (it is off by
 *   default), a quiet connection is closed, one awaiting its reply is not.
 * - test_connection_caps: connections past limits.max_connections_per_uid
 *   and limits.max_connections get an err HERD_E_LIMIT naming the limit and
 *   are closed; the others are served.
 * - test_refusal_storm: a client opens connections past its uid's cap as
 *   fast as the broker refuses them; the broker pauses accepting after a
 *   burst of refusals, so its CPU time over the storm stays small.
 * - test_fd_exhaustion: herdd runs with RLIMIT_NOFILE 64 and is sent 120
 *   connections: accept backs off (its CPU time over 2 s stays small, its
 *   log short), and once the connections are gone it serves again.
 * - test_log_forging: an agent name and an admin command with a newline and
 *   an escape sequence do not start a log line of their own.
 * - test_frame_budget: a client floods cancel frames for requests that do
 *   not exist (cheap for it, work for the broker's loop thread); with
 *   limits.frame_budget_per_s the broker stops reading it whenever its
 *   uid's budget is spent: the broker's CPU time over the flood stays
 *   small, and a victim of the SAME uid (sharing that budget) is still
 *   answered, because each connection keeps its own share.
 * - test_sighup: SIGHUP leaves the broker serving.
 * - test_socket_dir: a socket directory writable by others is refused.
 *
 * HERD_ATTACK_BASELINE=1 runs the attacks without the limits object in the
 * configuration (a broker from before the limits refuses that key): how the
 * tests were checked to fail on the unchanged code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "proto/proto.h"
#include "harness.h"

static int setup(void **state)
{
	*state = h_world_create("ha");
	return 0;
}

static int teardown(void **state)
{
	h_world_destroy(*state);
	return 0;
}

/* ---- broker with a configuration ------------------------------------------- */

/* Starts herdd with limits (a JSON object's text, or NULL) in a config file,
 * RLIMIT_NOFILE nofile (0: inherited) and --verbose when asked; waits until
 * it accepts. */
static void broker_start_cfg(h_world *w, const char *limits, rlim_t nofile, int verbose)
{
	char cfgp[200];
	snprintf(cfgp, sizeof(cfgp), "%s/attack.json", w->dir);
	FILE *f = fopen(cfgp, "w");
	assert_non_null(f);
	if (limits && !getenv("HERD_ATTACK_BASELINE"))
		fprintf(f, "{\"limits\": %s}\n", limits);
	else
		fprintf(f, "{}\n");
	fclose(f);
	char *argv[] = {w->herdd, "--config", cfgp, "--socket", w->sock, "--model", w->spec,
			"--threads", "2", "--state-dir", w->dir, "--max-batch", "16",
			verbose ? "--verbose" : NULL, NULL};
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int e = open(w->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (e >= 0) {
			dup2(e, STDERR_FILENO);
			dup2(e, STDOUT_FILENO);
		}
		if (nofile) {
			struct rlimit rl = {nofile, nofile};
			if (setrlimit(RLIMIT_NOFILE, &rl))
				_exit(126);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	h_track(w, pid);
	w->broker = pid;
	for (int i = 0; i < 3000; i++) {
		int fd = h_sock_connect(w);
		if (fd >= 0) {
			close(fd);
			unlink(cfgp);
			return;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			h_untrack(w, pid);
			w->broker = 0;
			unlink(cfgp);
			h_dump(w->log, "herdd log");
			fail_msg("herdd exited during start-up (status %d)", st);
		}
		usleep(20000);
	}
	unlink(cfgp);
	fail_msg("herdd did not start listening");
}

/* ---- raw protocol ------------------------------------------------------------ */

static void send_all(int fd, const proto_buf *b)
{
	size_t off = 0;
	while (off < b->len) {
		ssize_t r = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
		assert_true(r > 0);
		off += (size_t)r;
	}
}

/* A decoded frame and the body its strings point into. */
typedef struct frame {
	proto_msg m;
	uint8_t *body;
} frame;

/* Reads one frame into fr (msg_free) before deadline (monotonic s).
 * Returns 0, or -1 at EOF / timeout / error. */
static int read_frame(int fd, frame *fr, double deadline)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	uint8_t *body = NULL;
	size_t got = 0, need = PROTO_HDR_SIZE, flen = 0;
	while (got < need) {
		const double left = deadline - clock_mono_s();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			goto fail;
		uint8_t *dst = body ? body + got - PROTO_HDR_SIZE : hdr + got;
		ssize_t r = recv(fd, dst, need - got, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			goto fail;
		got += r > 0 ? (size_t)r : 0;
		if (!body && got == PROTO_HDR_SIZE) {
			flen = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 |
			       (size_t)hdr[3] << 24;
			assert_true(flen > 0 && flen < (64u << 20));
			body = malloc(flen);
			assert_non_null(body);
			need += flen;
		}
	}
	char err[256];
	int rc = proto_decode(body, flen, &fr->m, err, sizeof(err));
	if (rc)
		fail_msg("undecodable frame from the broker: %s", err);
	fr->body = body; /* the message's strings point into it */
	return 0;
fail:
	free(body);
	return -1;
}

static void msg_free(frame *fr)
{
	proto_msg_free(&fr->m);
	free(fr->body);
	fr->body = NULL;
}

static void send_hello(int fd, const char *name)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_hello h = {.v = PROTO_VERSION, .name = proto_s(name)};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	send_all(fd, &b);
	proto_buf_fini(&b);
}

static void encode_gen(proto_buf *b, const h_world *w, uint64_t id, int max_tokens, int stream)
{
	gen_request g;
	gen_request_init(&g);
	g.id = id;
	g.model = proto_s(w->model_name);
	g.input = GEN_INPUT_PROMPT;
	g.prompt = proto_s("Once upon a time");
	g.params.max_tokens = max_tokens;
	g.stream = stream;
	assert_int_equal(proto_encode_gen(b, &g), 0);
}

/* A victim agent: hello, one 8-token request; the seconds until its `done`,
 * or -1 when none came within timeout_s. */
static double victim(const h_world *w, double timeout_s)
{
	const double t0 = clock_mono_s(), deadline = t0 + timeout_s;
	int fd = h_sock_connect(w);
	if (fd < 0)
		return -1;
	send_hello(fd, "victim");
	proto_buf b;
	proto_buf_init(&b);
	encode_gen(&b, w, 7, 8, 0);
	send_all(fd, &b);
	proto_buf_fini(&b);
	double t = -1;
	frame f;
	while (t < 0 && read_frame(fd, &f, deadline) == 0) {
		if (f.m.type == PROTO_DONE && f.m.done.id == 7)
			t = clock_mono_s() - t0;
		else if (f.m.type == PROTO_ERR)
			fprintf(stderr, "victim: err %d %.*s\n", f.m.err.code, (int)f.m.err.msg.len,
				f.m.err.msg.ptr);
		msg_free(&f);
	}
	close(fd);
	return t;
}

static void assert_victim(const h_world *w, const char *during)
{
	const double t = victim(w, 10);
	if (t < 0)
		fail_msg("victim not answered within 10 s %s", during);
	printf("victim answered in %.2f s %s\n", t, during);
}

/* Expects an err HERD_E_LIMIT whose message holds `needle`, then EOF. */
static void expect_limit_err(int fd, const char *needle, double timeout_s)
{
	const double deadline = clock_mono_s() + timeout_s;
	frame f;
	if (read_frame(fd, &f, deadline))
		fail_msg("no err frame within %.0f s (expected one naming %s)", timeout_s, needle);
	assert_int_equal(f.m.type, PROTO_ERR);
	assert_int_equal(f.m.err.code, HERD_E_LIMIT);
	char msg[600];
	snprintf(msg, sizeof(msg), "%.*s", (int)f.m.err.msg.len, f.m.err.msg.ptr);
	if (!strstr(msg, needle))
		fail_msg("err '%s' does not name %s", msg, needle);
	msg_free(&f);
	uint8_t c;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_true(poll(&p, 1, (int)(timeout_s * 1000)) == 1);
	assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), 0);
}

static double status_num(h_world *w, const char *key)
{
	json_object *s = h_ctl(w, "status");
	assert_non_null(s);
	const double v = h_num(s, key);
	json_object_put(s);
	return v;
}

/* ---- a client that never reads ------------------------------------------------ */

#define FLOOD_BYTES (4u << 20) /* of `models` admin frames: ~30x that in replies */
#define N_STREAMS 12

static void test_never_reads(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, "{\"send_queue_bytes\": 65536, \"send_queue_pause_bytes\": 16384}", 0, 0);
	assert_victim(w, "before the attack");
	const uint64_t rss0 = proc_mem_bytes(w->broker, "status", "VmRSS:");
	int fd = h_sock_connect(w);
	assert_true(fd >= 0);
	send_hello(fd, "never-reads");
	proto_buf b;
	proto_buf_init(&b);
	for (int i = 0; i < N_STREAMS; i++)
		encode_gen(&b, w, (uint64_t)i + 1, 1800, 1);
	send_all(fd, &b);
	proto_buf_fini(&b);
	/* then a flood of cheap requests with large replies, never reading */
	proto_buf_init(&b);
	proto_admin a = {.cmd = proto_s("models")};
	while (b.len < (64u << 10))
		assert_int_equal(proto_encode_admin(&b, &a), 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	size_t sent = 0, off = 0;
	const double t_end = clock_mono_s() + 5;
	while (sent < FLOOD_BYTES && clock_mono_s() < t_end) {
		ssize_t r = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno != EAGAIN)
				break; /* cut off */
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 50);
			continue;
		}
		sent += (size_t)r;
		off = (off + (size_t)r) % b.len;
		if (off % b.len == 0)
			off = 0;
	}
	proto_buf_fini(&b);
	assert_victim(w, "while a client never reads");
	/* its streams push its queue past the cap: it is cut off */
	double cut = 0;
	for (int i = 0; i < 200 && cut < 1; i++) {
		cut = status_num(w, "limit_send_queue_cutoffs");
		usleep(100000);
	}
	const uint64_t rss1 = proc_mem_bytes(w->broker, "status", "VmRSS:");
	const double growth = ((double)rss1 - (double)rss0) / (1 << 20);
	printf("never-reads: sent %zu bytes of requests; broker RSS %+.1f MiB; cut off %.0f; "
	       "paused %.0f\n",
	       sent, growth, cut, status_num(w, "limit_send_queue_paused"));
	assert_true(growth < 40);
	assert_true(cut >= 1);
	assert_true(status_num(w, "limit_send_queue_paused") >= 1);
	close(fd);
	assert_victim(w, "after the attack");
	h_broker_stop(w);
}

/* ---- partial frames ------------------------------------------------------------ */

#define N_PARTIAL 200

static void test_partial_frames(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, "{\"frame_timeout_ms\": 1000, \"max_connections_per_uid\": 400}", 0, 0);
	int fds[N_PARTIAL];
	for (int i = 0; i < N_PARTIAL; i++) {
		fds[i] = h_sock_connect(w);
		assert_true(fds[i] >= 0);
		/* half send part of a header, half a header and part of the body */
		static const uint8_t part[] = {100, 0, 0, 0, 0x82, 0xa1};
		const size_t n = i % 2 ? sizeof(part) : 2;
		assert_int_equal(send(fds[i], part, n, MSG_NOSIGNAL), (ssize_t)n);
	}
	assert_victim(w, "while 200 connections hold partial frames");
	for (int i = 0; i < N_PARTIAL; i++)
		expect_limit_err(fds[i], "limits.frame_timeout_ms", 15);
	for (int i = 0; i < N_PARTIAL; i++)
		close(fds[i]);
	const double n = status_num(w, "limit_frame_timeouts");
	printf("partial frames: %d connections closed, counter %.0f\n", N_PARTIAL, n);
	assert_true(n >= N_PARTIAL);
	/* an agent that is merely quiet stays (idle_timeout_ms is off) */
	int quiet = h_sock_connect(w);
	send_hello(quiet, "quiet");
	frame f;
	assert_int_equal(read_frame(quiet, &f, clock_mono_s() + 10), 0);
	assert_int_equal(f.m.type, PROTO_WELCOME);
	msg_free(&f);
	sleep(2);
	struct pollfd p = {.fd = quiet, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 0), 0);
	close(quiet);
	assert_victim(w, "after the partial frames");
	h_broker_stop(w);
}

/* With limits.idle_timeout_ms set, a connection with nothing in flight is
 * closed after it (err naming the key); one waiting for its reply is not. */
static void test_idle_timeout(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, "{\"idle_timeout_ms\": 1000}", 0, 0);
	int idle = h_sock_connect(w), busy = h_sock_connect(w);
	assert_true(idle >= 0 && busy >= 0);
	send_hello(idle, "idle");
	frame f;
	assert_int_equal(read_frame(idle, &f, clock_mono_s() + 10), 0);
	msg_free(&f);
	send_hello(busy, "busy");
	proto_buf b;
	proto_buf_init(&b);
	encode_gen(&b, w, 1, 1800, 0); /* blocking: no byte for a while */
	send_all(busy, &b);
	proto_buf_fini(&b);
	expect_limit_err(idle, "limits.idle_timeout_ms", 15);
	close(idle);
	/* the busy one gets its welcome and its done, not an err */
	int got_done = 0;
	while (!got_done && read_frame(busy, &f, clock_mono_s() + 60) == 0) {
		assert_int_not_equal(f.m.type, PROTO_ERR);
		got_done = f.m.type == PROTO_DONE;
		msg_free(&f);
	}
	assert_true(got_done);
	close(busy);
	assert_true(status_num(w, "limit_idle_timeouts") >= 1);
	h_broker_stop(w);
}

/* ---- connection caps ------------------------------------------------------------- */

/* Opens n connections that each got their welcome. */
static void open_agents(h_world *w, int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		fds[i] = h_sock_connect(w);
		assert_true(fds[i] >= 0);
		send_hello(fds[i], "cap");
		frame f;
		if (read_frame(fds[i], &f, clock_mono_s() + 10))
			fail_msg("connection %d of %d not welcomed", i + 1, n);
		assert_int_equal(f.m.type, PROTO_WELCOME);
		msg_free(&f);
	}
}

static void test_connection_caps(void **state)
{
	h_world *w = *state;
	int fds[24];
	broker_start_cfg(w, "{\"max_connections\": 1000, \"max_connections_per_uid\": 20}", 0, 0);
	open_agents(w, fds, 20);
	int extra = h_sock_connect(w);
	assert_true(extra >= 0);
	expect_limit_err(extra, "limits.max_connections_per_uid", 10);
	close(extra);
	for (int i = 0; i < 20; i++)
		close(fds[i]);
	usleep(300000);
	assert_true(status_num(w, "limit_refused_per_uid") >= 1);
	assert_victim(w, "after the per-uid cap");
	h_broker_stop(w);

	broker_start_cfg(w, "{\"max_connections\": 10, \"max_connections_per_uid\": 100}", 0, 0);
	open_agents(w, fds, 10);
	extra = h_sock_connect(w);
	assert_true(extra >= 0);
	expect_limit_err(extra, "limits.max_connections", 10);
	close(extra);
	for (int i = 0; i < 10; i++)
		close(fds[i]);
	usleep(300000);
	assert_true(status_num(w, "limit_refused_max_connections") >= 1);
	assert_victim(w, "after the total cap");
	h_broker_stop(w);
}

/* ---- a storm of refused connections ------------------------------------------------ */

/* A child connecting (and closing) as fast as it can for s seconds. */
static pid_t connect_storm(h_world *w, double s)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid)
		return pid;
	const double t_end = clock_mono_s() + s;
	while (clock_mono_s() < t_end) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", w->sock);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno == EAGAIN)
			usleep(100); /* the backlog is full: the broker paused accepting */
		if (fd >= 0)
			close(fd);
	}
	_exit(0);
}

/* Every connection past the per-uid cap is refused; a client opening them
 * as fast as the broker refuses them would keep the loop thread at 100%
 * of a core. Past a burst of refusals the broker pauses accepting instead:
 * its CPU time over the storm stays small, and it serves again after. */
static void test_refusal_storm(void **state)
{
	h_world *w = *state;
	int fds[4];
	broker_start_cfg(w, "{\"max_connections_per_uid\": 4}", 0, 0);
	open_agents(w, fds, 4);
	pid_t storm = connect_storm(w, 4);
	h_track(w, storm);
	sleep(1);
	const double c0 = proc_cpu_s(w->broker);
	sleep(2);
	const double cpu = proc_cpu_s(w->broker) - c0;
	int st;
	assert_int_equal(waitpid(storm, &st, 0), storm);
	h_untrack(w, storm);
	for (int i = 0; i < 4; i++) /* herdctl needs a connection of this uid too */
		close(fds[i]);
	usleep(300000);
	const double storms = status_num(w, "limit_accept_storms");
	printf("refusal storm: broker CPU %.2f s over 2 s, accept paused %.0f times, %.0f refused\n",
	       cpu, storms, status_num(w, "limit_refused_per_uid"));
	assert_true(storms >= 1);
	assert_true(cpu < 0.5);
	assert_victim(w, "after a storm of refused connections");
	h_broker_stop(w);
}

/* ---- descriptor exhaustion ------------------------------------------------------- */

#define N_FLOOD_CONNS 120


static long log_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	long n = 0;
	int ch;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

static void test_fd_exhaustion(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, NULL, 64, 0);
	int fds[N_FLOOD_CONNS];
	for (int i = 0; i < N_FLOOD_CONNS; i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		assert_true(fds[i] >= 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", w->sock);
		if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)))
			assert_true(errno == EAGAIN || errno == EINPROGRESS);
	}
	sleep(1);
	const double c0 = proc_cpu_s(w->broker);
	const long l0 = log_lines(w->log);
	sleep(2);
	const double cpu = proc_cpu_s(w->broker) - c0;
	const long lines = log_lines(w->log) - l0;
	printf("fd exhaustion: broker CPU %.2f s and %ld log lines over 2 s\n", cpu, lines);
	for (int i = 0; i < N_FLOOD_CONNS; i++)
		close(fds[i]);
	assert_true(cpu < 0.3);
	assert_true(lines < 20);
	assert_victim(w, "once the descriptors are free again");
	assert_true(status_num(w, "limit_accept_backoffs") >= 1);
	h_broker_stop(w);
}

/* ---- frame budget ------------------------------------------------------------------ */

/* A child process sending cancel frames for unknown ids on one connection
 * for seconds s; exits 0. */
static pid_t cancel_flood(h_world *w, double s)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid)
		return pid;
	int fd = h_sock_connect(w);
	if (fd < 0)
		_exit(1);
	send_hello(fd, "canceller");
	proto_buf b;
	proto_buf_init(&b);
	for (uint64_t id = 1; b.len < (64u << 10); id++) {
		proto_cancel c = {.id = id};
		if (proto_encode_cancel(&b, &c))
			_exit(1);
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	const double t_end = clock_mono_s() + s;
	size_t off = 0;
	while (clock_mono_s() < t_end) {
		ssize_t r = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno != EAGAIN)
				break;
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 20);
			continue;
		}
		off = (off + (size_t)r) % b.len;
	}
	_exit(0);
}

static void test_frame_budget(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, "{\"frame_budget_per_s\": 2000}", 0, 0);
	assert_victim(w, "before the attack");
	pid_t flood = cancel_flood(w, 5);
	h_track(w, flood);
	sleep(1);
	const double c0 = proc_cpu_s(w->broker);
	sleep(2);
	const double cpu = proc_cpu_s(w->broker) - c0;
	/* the victim shares the flooder's uid, hence its budget */
	assert_victim(w, "while a client of its uid floods cancels");
	int st;
	assert_int_equal(waitpid(flood, &st, 0), flood);
	h_untrack(w, flood);
	const double throttles = status_num(w, "limit_frame_throttles");
	printf("cancel flood: broker CPU %.2f s over 2 s, throttled %.0f times\n", cpu, throttles);
	assert_true(cpu < 0.5);
	assert_true(throttles >= 1);
	assert_victim(w, "after the attack");
	h_broker_stop(w);
}

/* ---- log forging ------------------------------------------------------------------- */

static void test_log_forging(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, NULL, 0, 1);
	int fd = h_sock_connect(w);
	assert_true(fd >= 0);
	send_hello(fd, "x\nFORGED herdd[1] error: \x1b[2Jpwned");
	proto_buf b;
	proto_buf_init(&b);
	proto_admin a = {.cmd = proto_s("status\nFORGED herdd[1] error: \x1b]0;x\a")};
	assert_int_equal(proto_encode_admin(&b, &a), 0);
	send_all(fd, &b);
	proto_buf_fini(&b);
	frame f;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(read_frame(fd, &f, clock_mono_s() + 10), 0);
		msg_free(&f);
	}
	close(fd);
	h_broker_stop(w);
	FILE *lf = fopen(w->log, "r");
	assert_non_null(lf);
	char line[2048];
	int forged = 0, esc = 0, named = 0;
	while (fgets(line, sizeof(line), lf)) {
		forged += !strncmp(line, "FORGED", 6);
		esc += strchr(line, 0x1b) != NULL || strchr(line, '\a') != NULL;
		named += strstr(line, "x\\x0aFORGED") != NULL;
	}
	fclose(lf);
	printf("log forging: %d forged lines, %d with escapes, %d with the escaped name\n", forged,
	       esc, named);
	assert_int_equal(forged, 0);
	assert_int_equal(esc, 0);
	assert_true(named >= 1);
}

/* ---- SIGHUP --------------------------------------------------------------------- */

static void test_sighup(void **state)
{
	h_world *w = *state;
	broker_start_cfg(w, NULL, 0, 0);
	assert_int_equal(kill(w->broker, SIGHUP), 0);
	usleep(500000);
	int st;
	assert_int_equal(waitpid(w->broker, &st, WNOHANG), 0);
	assert_victim(w, "after SIGHUP");
	assert_int_equal(status_num(w, "sighup_ignored"), 1);
	h_broker_stop(w);
	struct stat sb;
	assert_int_not_equal(lstat(w->sock, &sb), 0);
}

/* ---- socket directory ------------------------------------------------------------ */

static void refused_dir(h_world *w, mode_t mode, const char *reason)
{
	char dir[200], sock[260];
	snprintf(dir, sizeof(dir), "%s/open", w->dir);
	snprintf(sock, sizeof(sock), "%s/herd.sock", dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, mode), 0);
	char *argv[] = {w->herdd, "--socket", sock, "--model", w->spec, "--threads", "1",
			"--state-dir", w->dir, NULL};
	truncate(w->log, 0);
	pid_t pid = h_spawn(w, argv, -1, w->log, NULL, 0, NULL);
	int st = 0;
	pid_t r = 0;
	for (int i = 0; i < 500 && r != pid; i++) {
		r = waitpid(pid, &st, WNOHANG);
		if (r != pid)
			usleep(20000);
	}
	struct stat sb;
	const int bound = lstat(sock, &sb) == 0;
	if (r != pid)
		kill(pid, SIGKILL), waitpid(pid, &st, 0);
	h_untrack(w, pid);
	unlink(sock);
	rmdir(dir);
	if (r != pid)
		fail_msg("herdd served on a socket in a directory of mode %04o", (unsigned)mode);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	assert_false(bound);
	FILE *f = fopen(w->log, "r");
	assert_non_null(f);
	char line[1024];
	int found = 0;
	while (fgets(line, sizeof(line), f))
		found |= strstr(line, dir) && strstr(line, reason);
	fclose(f);
	if (!found) {
		h_dump(w->log, "herdd log");
		fail_msg("no message naming %s and '%s'", dir, reason);
	}
	printf("socket directory of mode %04o refused\n", (unsigned)mode);
}

static void test_socket_dir(void **state)
{
	h_world *w = *state;
	refused_dir(w, 0777, "writable by others");
	refused_dir(w, 0770, "writable by its group");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_never_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_caps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusal_storm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_exhaustion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_forging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frame_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sighup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_dir, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
