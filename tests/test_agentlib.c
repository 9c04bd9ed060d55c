/* libherd against no broker and against a fake broker: a thread in this
 * process that listens on a Unix socket in a temporary directory and speaks
 * the protocol with the project's own codec (broker/proto.h). Covers connect
 * errors (message names the path, timeout honoured), hello/welcome, blocking
 * and streamed generation, cancel from another thread and from the
 * callback, err frames, malformed and oversized frames, the broker going
 * away mid-request and herd_reconnect, and attaching a real shared image
 * (shm_image_create of a mkmodel model) with in-process generation checked
 * against the engine used directly. The real broker's integration tests
 * live elsewhere. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/proto.h"
#include "herd/herd.h"
#include "model/llama.h"
#include "model/mkmodel.h"
#include "model/sampler.h"
#include "shm/fdpass.h"
#include "shm/image.h"
#include "common/clock.h"

/* ---- helpers ------------------------------------------------------------ */

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static char tmpdir[64];
static char image_name[SHM_IMAGE_NAME_MAX]; /* removed at teardown, even after a failure */
static char model_file[128];

static void make_tmpdir(void)
{
	if (tmpdir[0])
		return;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/herd_test_agent.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
}

static void sock_path(char *buf, size_t n, const char *name)
{
	make_tmpdir();
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static int listen_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* ---- fake broker ------------------------------------------------------------ */

typedef struct peer {
	char path[108];
	int lfd;
	pthread_t th;
	int hello_err;       /* answer hello with err HERD_E_VERSION */
	uint32_t welcome_v;  /* v in welcome */
	int img_fd;          /* image for attach, -1: none */
	char img_model[64];
	char img_name[SHM_IMAGE_NAME_MAX];
	uint64_t img_size;
	char img_digest[SHM_DIGEST_HEX + 1];
	atomic_int n_conn;
	atomic_int n_cancel;
	atomic_int conn_fd;  /* connection being served, -1 none */
	char hello_name[64];
	int hello_prio;
	int last_has_prio, last_prio, last_cache, last_max_tokens;
	double last_temp;
	size_t last_n_stop;
} peer;

typedef struct conn {
	int fd;
	proto_buf rx;
	size_t used;
} conn;

/* Next frame into *m, waiting at most timeout_ms (< 0: forever). Returns 1
 * frame, 0 timeout, -1 connection closed or broken. */
static int conn_read(conn *c, proto_msg *m, int timeout_ms)
{
	size_t n;
	char err[256];
	proto_buf_consume(&c->rx, c->used);
	c->used = 0;
	for (;;) {
		int rc = proto_frame_next(c->rx.data, c->rx.len, PROTO_MAX_FRAME_DEFAULT, &n);
		if (rc == PROTO_FRAME_READY)
			break;
		if (rc < 0)
			return -1;
		struct pollfd pfd = {c->fd, POLLIN, 0};
		int k = poll(&pfd, 1, timeout_ms);
		if (k == 0)
			return 0;
		if (k < 0)
			return -1;
		if (proto_buf_reserve(&c->rx, 65536))
			return -1;
		ssize_t got = recv(c->fd, c->rx.data + c->rx.len, c->rx.cap - c->rx.len, 0);
		if (got <= 0)
			return -1;
		c->rx.len += (size_t)got;
	}
	if (proto_decode(c->rx.data + 4, n, m, err, sizeof(err))) {
		fprintf(stderr, "fake broker: bad frame from the client: %s\n", err);
		return -1;
	}
	c->used = 4 + n;
	return 1;
}

static int send_buf(int fd, proto_buf *b)
{
	size_t off = 0;
	while (off < b->len) {
		ssize_t k = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
		if (k <= 0)
			return -1;
		off += (size_t)k;
	}
	b->len = 0;
	return 0;
}

static void send_done(int fd, proto_buf *b, uint64_t id, herd_finish r, const char *text,
		      size_t text_len, uint32_t n_prompt, uint32_t n_gen)
{
	proto_done d = {.id = id, .reason = r, .has_text = text != NULL,
			.text = {text, text_len}, .n_prompt = n_prompt, .n_gen = n_gen,
			.n_cached = 2, .t_queue_ms = 0.5, .t_first_ms = 1.5, .t_total_ms = 3.0,
			.merged = 1};
	assert_int_equal(proto_encode_done(b, &d), 0);
	send_buf(fd, b);
}

static void send_tok(int fd, proto_buf *b, uint64_t id, const char *text, int32_t tok)
{
	proto_tok t = {id, proto_s(text), tok};
	assert_int_equal(proto_encode_tok(b, &t), 0);
	send_buf(fd, b);
}

/* "slow": tokens every 2 ms (streaming) or nothing (blocking) until a cancel
 * for this id arrives (or 5 s pass). Returns 0, or -1 when the client left. */
static int serve_slow(peer *p, conn *c, proto_buf *b, const gen_request *g)
{
	uint64_t id = g->id;
	int sent = 0;
	double until = clock_mono_ms() + 5000;
	while (clock_mono_ms() < until) {
		if (g->stream) {
			char piece[32];
			snprintf(piece, sizeof(piece), "t%d ", sent);
			send_tok(c->fd, b, id, piece, 100 + sent);
			sent++;
		}
		proto_msg m;
		proto_msg_init(&m);
		int k = conn_read(c, &m, 2);
		if (k < 0)
			return -1;
		if (k == 1 && m.type == PROTO_CANCEL) {
			atomic_fetch_add(&p->n_cancel, 1);
			if (m.cancel.id == id) {
				send_done(c->fd, b, id, HERD_FINISH_CANCEL, g->stream ? NULL : "partial",
					  7, 3, (uint32_t)sent);
				return 0;
			}
		}
		proto_msg_free(&m);
	}
	send_done(c->fd, b, id, HERD_FINISH_LENGTH, g->stream ? NULL : "", 0, 3, (uint32_t)sent);
	return 0;
}

static void serve_gen(peer *p, conn *c, proto_buf *b, const gen_request *g, int *close_now)
{
	char text[4096];
	p->last_has_prio = g->has_prio;
	p->last_prio = g->prio;
	p->last_cache = g->cache;
	p->last_max_tokens = g->params.max_tokens;
	p->last_temp = g->params.sampling.temperature;
	p->last_n_stop = g->params.n_stop;
	if (proto_str_eq(g->model, "echo")) {
		if (g->input == GEN_INPUT_PROMPT)
			snprintf(text, sizeof(text), "echo:%.*s", (int)g->prompt.len, g->prompt.ptr);
		else if (g->input == GEN_INPUT_TOKENS)
			snprintf(text, sizeof(text), "tokens:%zu", g->n_tokens);
		else
			snprintf(text, sizeof(text), "chat:%zu:%.*s:%.*s", g->n_messages,
				 (int)g->messages[0].role.len, g->messages[0].role.ptr,
				 (int)g->messages[g->n_messages - 1].content.len,
				 g->messages[g->n_messages - 1].content.ptr);
		if (g->stream) {
			/* one tok per character, plus an empty piece */
			size_t n = strlen(text);
			for (size_t i = 0; i < n; i++) {
				char one[2] = {text[i], 0};
				send_tok(c->fd, b, g->id, one, (int32_t)i);
				if (i == 2)
					send_tok(c->fd, b, g->id, "", 999);
			}
			send_done(c->fd, b, g->id, HERD_FINISH_STOP, NULL, 0, 5, (uint32_t)n + 1);
		} else {
			send_done(c->fd, b, g->id, HERD_FINISH_LENGTH, text, strlen(text), 5, 7);
		}
	} else if (proto_str_eq(g->model, "missing")) {
		proto_err e = {1, g->id, HERD_E_MISSING, proto_s("unknown model 'missing'")};
		assert_int_equal(proto_encode_err(b, &e), 0);
		send_buf(c->fd, b);
	} else if (proto_str_eq(g->model, "crash")) {
		if (g->stream)
			send_tok(c->fd, b, g->id, "a", 1);
		*close_now = 1;
	} else if (proto_str_eq(g->model, "garbage")) {
		static const uint8_t junk[] = {4, 0, 0, 0, 0xc1, 0xc1, 0xc1, 0xc1};
		proto_buf_append(b, junk, sizeof(junk));
		send_buf(c->fd, b);
		*close_now = 1;
	} else if (proto_str_eq(g->model, "huge")) {
		static char big[10000];
		memset(big, 'h', sizeof(big));
		send_done(c->fd, b, g->id, HERD_FINISH_LENGTH, big, sizeof(big), 1, 1);
	} else if (proto_str_eq(g->model, "slow")) {
		if (serve_slow(p, c, b, g))
			*close_now = 1;
	} else if (proto_str_eq(g->model, "other-id")) {
		/* frames of some earlier request first: must be ignored */
		send_tok(c->fd, b, g->id + 1000, "zzz", 1);
		send_done(c->fd, b, g->id + 1000, HERD_FINISH_STOP, "old", 3, 1, 1);
		send_done(c->fd, b, g->id, HERD_FINISH_STOP, "mine", 4, 1, 1);
	} else {
		proto_err e = {1, g->id, HERD_E_INVAL, proto_s("fake broker: unknown test model")};
		proto_encode_err(b, &e);
		send_buf(c->fd, b);
	}
}

static void serve_conn(peer *p, int fd)
{
	conn c = {fd, {0}, 0};
	proto_buf b;
	proto_buf_init(&b);
	for (;;) {
		proto_msg m;
		int close_now = 0;
		if (conn_read(&c, &m, -1) != 1)
			break;
		switch (m.type) {
		case PROTO_HELLO:
			snprintf(p->hello_name, sizeof(p->hello_name), "%.*s", (int)m.hello.name.len,
				 m.hello.name.ptr ? m.hello.name.ptr : "");
			p->hello_prio = m.hello.prio;
			if (p->hello_err) {
				proto_err e = {0, 0, HERD_E_VERSION, proto_s("protocol version 1 not supported")};
				proto_encode_err(&b, &e);
				send_buf(fd, &b);
				close_now = 1;
			} else {
				proto_model_info mi[2] = {
					{proto_s("echo"), proto_s("00ff"), {0}, 2048, 512, 0},
					{proto_s("tiny"), proto_s(p->img_digest), proto_s(p->img_name), 2048,
					 2048, p->img_size},
				};
				proto_welcome w = {p->welcome_v, 77, mi, 2, 1u << 20, 4096};
				assert_int_equal(proto_encode_welcome(&b, &w), 0);
				send_buf(fd, &b);
			}
			break;
		case PROTO_GEN:
			serve_gen(p, &c, &b, &m.gen, &close_now);
			break;
		case PROTO_CANCEL:
			atomic_fetch_add(&p->n_cancel, 1);
			break;
		case PROTO_ATTACH:
			if (p->img_fd >= 0 && proto_str_eq(m.attach.model, p->img_model)) {
				proto_image im = {m.attach.model, proto_s(p->img_name), p->img_size,
						  proto_s(p->img_digest)};
				assert_int_equal(proto_encode_image(&b, &im), 0);
				assert_int_equal(shm_fd_send(fd, b.data, b.len, p->img_fd), 0);
				b.len = 0;
			} else {
				proto_err e = {0, 0, HERD_E_MISSING, proto_s("no image for that model")};
				proto_encode_err(&b, &e);
				send_buf(fd, &b);
			}
			break;
		default:
			break;
		}
		proto_msg_free(&m);
		if (close_now)
			break;
	}
	proto_buf_fini(&c.rx);
	proto_buf_fini(&b);
	atomic_store(&p->conn_fd, -1);
	close(fd);
}

static void *peer_main(void *arg)
{
	peer *p = arg;
	for (;;) {
		int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			break; /* shutdown() of the listening socket */
		}
		atomic_fetch_add(&p->n_conn, 1);
		atomic_store(&p->conn_fd, fd);
		serve_conn(p, fd);
		atomic_store(&p->conn_fd, -1);
	}
	return NULL;
}

static void peer_start(peer *p, const char *name)
{
	memset(p, 0, sizeof(*p));
	p->img_fd = -1;
	p->welcome_v = 1;
	atomic_store(&p->conn_fd, -1);
	sock_path(p->path, sizeof(p->path), name);
	p->lfd = listen_at(p->path);
	assert_int_equal(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_stop(peer *p)
{
	shutdown(p->lfd, SHUT_RDWR);
	int cfd = atomic_load(&p->conn_fd);
	if (cfd >= 0)
		shutdown(cfd, SHUT_RDWR); /* a broker going away drops its clients */
	pthread_join(p->th, NULL);
	close(p->lfd);
	unlink(p->path);
}

static herd_client *connect_to(const char *path)
{
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = path;
	o.name = "test-agent";
	o.priority = 3;
	o.timeout_ms = 3000;
	herd_client *c = NULL;
	int rc = herd_connect(&c, &o);
	if (rc)
		fail_msg("connect: %s", herd_client_errmsg(c));
	return c;
}

/* ---- no broker ---------------------------------------------------------------- */

static void test_connect_errors(void **state)
{
	(void)state;
	char path[128];
	herd_client *c = NULL;
	herd_connect_opts o;
	herd_connect_opts_init(&o);

	/* nothing at the path */
	sock_path(path, sizeof(path), "absent.sock");
	o.socket_path = path;
	assert_int_equal(herd_connect(&c, &o), -ENOENT);
	assert_non_null(c);
	print_message("ENOENT: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "no broker is running at"));
	assert_non_null(strstr(herd_client_errmsg(c), path));
	assert_false(herd_connected(c));
	herd_request r;
	herd_request_init(&r);
	r.model = "echo";
	r.prompt = "x";
	herd_result res;
	assert_int_equal(herd_generate(c, &r, &res), -ENOTCONN);
	assert_null(res.text);
	assert_int_equal(herd_reconnect(c), -ENOENT); /* still nobody */
	herd_close(c);

	/* a socket file with nobody listening (a broker that died) */
	sock_path(path, sizeof(path), "stale.sock");
	int fd = listen_at(path);
	close(fd);
	assert_int_equal(herd_connect(&c, &o), -ECONNREFUSED);
	print_message("ECONNREFUSED: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), path));
	assert_non_null(strstr(herd_client_errmsg(c), "no broker is running"));
	herd_close(c);
	unlink(path);

	/* path too long for sun_path */
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	o.socket_path = longp;
	assert_int_equal(herd_connect(&c, &o), -ENAMETOOLONG);
	herd_close(c);

	assert_int_equal(herd_connect(NULL, &o), HERD_E_INVAL);
	herd_close(NULL);
	assert_non_null(herd_client_errmsg(NULL));
}

static void test_connect_timeout(void **state)
{
	(void)state;
	char path[128];
	sock_path(path, sizeof(path), "mute.sock");
	int lfd = listen_at(path); /* listens, never accepts, never answers */
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = path;
	o.timeout_ms = 300;
	herd_client *c = NULL;
	double t0 = clock_mono_ms();
	assert_int_equal(herd_connect(&c, &o), -ETIMEDOUT);
	double dt = clock_mono_ms() - t0;
	print_message("timeout after %.0f ms: %s\n", dt, herd_client_errmsg(c));
	assert_true(dt >= 290 && dt < 2000);
	assert_non_null(strstr(herd_client_errmsg(c), "300 ms"));
	assert_non_null(strstr(herd_client_errmsg(c), path));
	herd_close(c);
	close(lfd);
	unlink(path);
}

static void test_default_path(void **state)
{
	(void)state;
	char buf[256];
	char *old_sock = getenv("HERD_SOCKET") ? strdup(getenv("HERD_SOCKET")) : NULL;
	char *old_xdg = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;
	setenv("HERD_SOCKET", "/tmp/x/herd.sock", 1);
	assert_true(herd_default_socket_path(buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "/tmp/x/herd.sock");
	unsetenv("HERD_SOCKET");
	setenv("XDG_RUNTIME_DIR", "/nonexistent-xdg", 1);
	assert_true(herd_default_socket_path(buf, sizeof(buf)) > 0);
	struct stat st;
	if (stat(HERD_SYSTEM_SOCKET, &st) != 0)
		assert_string_equal(buf, "/nonexistent-xdg/herd/herd.sock");
	unsetenv("XDG_RUNTIME_DIR");
	assert_true(herd_default_socket_path(buf, sizeof(buf)) > 0);
	assert_string_equal(buf, HERD_SYSTEM_SOCKET);
	assert_int_equal(herd_default_socket_path(buf, 4), -ENAMETOOLONG);
	if (old_sock)
		setenv("HERD_SOCKET", old_sock, 1);
	if (old_xdg)
		setenv("XDG_RUNTIME_DIR", old_xdg, 1);
	free(old_sock);
	free(old_xdg);
}

/* ---- fake broker ----------------------------------------------------------------- */

static void test_hello_welcome(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, "welcome.sock");
	herd_client *c = connect_to(p.path);
	assert_true(herd_connected(c));
	assert_int_equal(herd_agent_id(c), 77);
	assert_string_equal(p.hello_name, "test-agent");
	assert_int_equal(p.hello_prio, 3);
	uint32_t mf, mt;
	herd_limits(c, &mf, &mt);
	assert_int_equal(mf, 1u << 20);
	assert_int_equal(mt, 4096);
	const herd_model_info *mi;
	size_t n;
	assert_int_equal(herd_models(c, &mi, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(mi[0].name, "echo");
	assert_string_equal(mi[0].digest, "00ff");
	assert_string_equal(mi[0].segment, "");
	assert_int_equal(mi[0].n_ctx, 512);
	assert_string_equal(mi[1].name, "tiny");
	herd_close(c);

	/* version refused by the broker */
	p.hello_err = 1;
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = p.path;
	assert_int_equal(herd_connect(&c, &o), HERD_E_VERSION);
	print_message("refused: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "not supported"));
	herd_close(c);
	/* a welcome of another version */
	p.hello_err = 0;
	p.welcome_v = 2;
	assert_int_equal(herd_connect(&c, &o), HERD_E_VERSION);
	assert_non_null(strstr(herd_client_errmsg(c), "version 2"));
	herd_close(c);
	peer_stop(&p);
}

/* A prompt with stop strings: the result's every field, and what the
 * broker received. */
static void gen_check_prompt(herd_client *c, const peer *p)
{
	herd_request r;
	herd_result res;
	herd_request_init(&r);
	r.model = "echo";
	r.prompt = "hello there";
	r.temperature = 0.5f;
	r.max_tokens = 9;
	const char *stops[2] = {"\n", "END"};
	r.stop = stops;
	r.n_stop = 2;
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "echo:hello there");
	assert_int_equal(res.text_len, strlen("echo:hello there"));
	assert_int_equal(res.reason, HERD_FINISH_LENGTH);
	assert_int_equal(res.n_prompt, 5);
	assert_int_equal(res.n_gen, 7);
	assert_int_equal(res.n_cached, 2);
	assert_true(res.t_queue_ms == 0.5 && res.t_first_ms == 1.5 && res.t_total_ms == 3.0);
	assert_true(res.merged && !res.cached);
	assert_true(res.id != 0);
	assert_false(p->last_has_prio); /* connection default */
	assert_int_equal(p->last_max_tokens, 9);
	assert_true(p->last_temp == 0.5);
	assert_int_equal(p->last_n_stop, 2);
	assert_int_equal(p->last_cache, 1);
	herd_result_free(&res);
	herd_result_free(&res); /* twice is fine */
}

/* Tokens, priority, no cache, own id; chat messages; frames of other ids
 * are skipped. */
static void gen_check_inputs(herd_client *c, const peer *p)
{
	herd_request r;
	herd_result res;
	/* tokens, priority, no cache, own id */
	int32_t toks[3] = {1, 2, 3};
	herd_request_init(&r);
	r.model = "echo";
	r.tokens = toks;
	r.n_tokens = 3;
	r.priority = 9;
	r.no_cache = 1;
	r.id = 5555;
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "tokens:3");
	assert_int_equal(res.id, 5555);
	assert_true(p->last_has_prio && p->last_prio == 9 && p->last_cache == 0);
	herd_result_free(&res);

	/* chat messages */
	herd_message msgs[2] = {{"system", "be brief"}, {"user", "hi!"}};
	herd_request_init(&r);
	r.model = "echo";
	r.messages = msgs;
	r.n_messages = 2;
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "chat:2:system:hi!");
	herd_result_free(&res);

	/* frames of other ids are skipped */
	herd_request_init(&r);
	r.model = "other-id";
	r.prompt = "x";
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "mine");
	herd_result_free(&res);
}

/* Invalid requests never reach the broker; an err frame gives the code and
 * the broker's message and keeps the connection. */
static void gen_check_errors(herd_client *c)
{
	herd_request r;
	herd_result res;
	int32_t toks[3] = {1, 2, 3};
	/* invalid requests never reach the broker */
	herd_request_init(&r);
	r.model = "echo";
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_INVAL); /* no input */
	assert_non_null(strstr(herd_client_errmsg(c), "none of prompt"));
	r.prompt = "x";
	r.tokens = toks;
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_INVAL);
	r.tokens = NULL;
	r.max_tokens = -1;
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_INVAL);
	r.max_tokens = 1;
	r.model = NULL;
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_INVAL);
	assert_int_equal(herd_generate(c, NULL, &res), HERD_E_INVAL);

	/* err frame: the error code and the broker's message; still connected */
	herd_request_init(&r);
	r.model = "missing";
	r.prompt = "x";
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_MISSING);
	print_message("err frame: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "unknown model 'missing'"));
	assert_null(res.text);
	assert_true(herd_connected(c));
	r.model = "echo";
	assert_int_equal(herd_generate(c, &r, &res), 0);
	herd_result_free(&res);
}

static void test_generate_blocking(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, "gen.sock");
	herd_client *c = connect_to(p.path);
	gen_check_prompt(c, &p);
	gen_check_inputs(c, &p);
	gen_check_errors(c);
	herd_close(c);
	peer_stop(&p);
}

typedef struct stream_rec {
	char text[256];
	size_t len;
	int calls;
	int empty_calls;
	int cancel_after;  /* return 1 on this call (1-based), 0: never */
	herd_client *c;
	int cancel_via_api; /* call herd_cancel(c, 0) instead of returning 1 */
} stream_rec;

static int on_token(void *user, const char *text, size_t len, int32_t token)
{
	stream_rec *s = user;
	(void)token;
	s->calls++;
	if (!len)
		s->empty_calls++;
	if (s->len + len < sizeof(s->text)) {
		memcpy(s->text + s->len, text, len);
		s->len += len;
		s->text[s->len] = 0;
	}
	if (s->cancel_after && s->calls == s->cancel_after) {
		if (s->cancel_via_api) {
			assert_int_equal(herd_cancel(s->c, 0), 0);
			return 0;
		}
		return 1;
	}
	return 0;
}

static void test_generate_stream(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, "stream.sock");
	herd_client *c = connect_to(p.path);
	herd_request r;
	herd_result res;
	stream_rec s = {0};

	herd_request_init(&r);
	r.model = "echo";
	r.prompt = "abc";
	assert_int_equal(herd_generate_stream(c, &r, on_token, &s, &res), 0);
	assert_string_equal(s.text, "echo:abc");
	assert_int_equal(s.calls, 9); /* 8 characters + one empty piece */
	assert_int_equal(s.empty_calls, 1);
	assert_string_equal(res.text, "echo:abc");
	assert_int_equal(res.reason, HERD_FINISH_STOP);
	assert_int_equal(res.n_gen, 9);
	herd_result_free(&res);

	/* NULL callback: text still collected */
	assert_int_equal(herd_generate_stream(c, &r, NULL, NULL, &res), 0);
	assert_string_equal(res.text, "echo:abc");
	herd_result_free(&res);

	/* callback cancels after 3 tokens: no more callbacks, reason cancel */
	memset(&s, 0, sizeof(s));
	s.cancel_after = 3;
	r.model = "slow";
	int cancels0 = atomic_load(&p.n_cancel);
	assert_int_equal(herd_generate_stream(c, &r, on_token, &s, &res), 0);
	assert_int_equal(res.reason, HERD_FINISH_CANCEL);
	assert_int_equal(s.calls, 3);
	assert_int_equal(atomic_load(&p.n_cancel), cancels0 + 1);
	assert_true(res.n_gen >= 3);
	herd_result_free(&res);

	/* herd_cancel(c, 0) from inside the callback */
	memset(&s, 0, sizeof(s));
	s.cancel_after = 5;
	s.cancel_via_api = 1;
	s.c = c;
	assert_int_equal(herd_generate_stream(c, &r, on_token, &s, &res), 0);
	assert_int_equal(res.reason, HERD_FINISH_CANCEL);
	assert_true(s.calls >= 5);
	herd_result_free(&res);

	/* cancelling an unknown id, or with nothing in flight, is fine */
	assert_int_equal(herd_cancel(c, 0), 0);
	assert_int_equal(herd_cancel(c, 424242), 0);

	herd_close(c);
	peer_stop(&p);
}

typedef struct gen_job {
	herd_client *c;
	herd_request r;
	herd_result res;
	int rc;
	double ms;
} gen_job;

static void *gen_thread(void *arg)
{
	gen_job *j = arg;
	double t0 = clock_mono_ms();
	j->rc = herd_generate(j->c, &j->r, &j->res);
	j->ms = clock_mono_ms() - t0;
	return NULL;
}

static void test_cancel_other_thread(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, "cancel.sock");
	herd_client *c = connect_to(p.path);
	gen_job j = {0};
	pthread_t th;

	j.c = c;
	herd_request_init(&j.r);
	j.r.model = "slow";
	j.r.prompt = "wait for it";
	j.r.id = herd_request_id(c);
	assert_int_equal(pthread_create(&th, NULL, gen_thread, &j), 0);
	sleep_ms(100);

	/* one request per client: a second one is refused meanwhile */
	herd_request r2;
	herd_result res2;
	herd_request_init(&r2);
	r2.model = "echo";
	r2.prompt = "x";
	assert_int_equal(herd_generate(c, &r2, &res2), -EBUSY);

	assert_int_equal(herd_cancel(c, j.r.id), 0);
	pthread_join(th, NULL);
	print_message("blocking request cancelled from another thread after %.0f ms\n", j.ms);
	assert_int_equal(j.rc, 0);
	assert_int_equal(j.res.reason, HERD_FINISH_CANCEL);
	assert_string_equal(j.res.text, "partial");
	assert_true(j.ms < 4000);
	herd_result_free(&j.res);

	/* herd_cancel(c, 0) targets the request in flight */
	j.r.id = 0;
	assert_int_equal(pthread_create(&th, NULL, gen_thread, &j), 0);
	sleep_ms(100);
	assert_int_equal(herd_cancel(c, 0), 0);
	pthread_join(th, NULL);
	assert_int_equal(j.rc, 0);
	assert_int_equal(j.res.reason, HERD_FINISH_CANCEL);
	herd_result_free(&j.res);

	herd_close(c);
	peer_stop(&p);
}

static void test_broker_disconnect(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, "crash.sock");
	herd_client *c = connect_to(p.path);
	herd_request r;
	herd_result res;
	stream_rec s = {0};

	herd_request_init(&r);
	r.model = "crash";
	r.prompt = "x";
	assert_int_equal(herd_generate_stream(c, &r, on_token, &s, &res), -ECONNRESET);
	print_message("disconnect: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "broker closed the connection"));
	assert_int_equal(s.calls, 1);
	assert_null(res.text);
	assert_false(herd_connected(c));
	r.model = "echo";
	assert_int_equal(herd_generate(c, &r, &res), -ENOTCONN);
	assert_int_equal(herd_cancel(c, 1), -ECONNRESET); /* socket kept open until reconnect */

	/* the broker is still (or again) there: reconnect and go on */
	assert_int_equal(herd_reconnect(c), 0);
	assert_true(herd_connected(c));
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "echo:x");
	herd_result_free(&res);

	/* blocking request cut off */
	r.model = "crash";
	assert_int_equal(herd_generate(c, &r, &res), -ECONNRESET);
	assert_int_equal(herd_reconnect(c), 0);

	/* malformed frame from the broker */
	r.model = "garbage";
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_PROTO);
	print_message("garbage: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "malformed frame"));
	assert_false(herd_connected(c));
	assert_int_equal(herd_reconnect(c), 0);
	herd_close(c);

	/* a frame over our limit is refused without reading it */
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = p.path;
	o.max_frame = 4096;
	assert_int_equal(herd_connect(&c, &o), 0);
	r.model = "huge";
	assert_int_equal(herd_generate(c, &r, &res), HERD_E_PROTO);
	print_message("huge: %s\n", herd_client_errmsg(c));
	assert_non_null(strstr(herd_client_errmsg(c), "limit 4096"));
	herd_close(c);

	/* the broker restarts: new listener at the same path */
	c = connect_to(p.path);
	peer_stop(&p);
	r.model = "echo";
	assert_int_equal(herd_generate(c, &r, &res), -ECONNRESET);
	assert_int_equal(herd_reconnect(c), -ENOENT); /* down */
	char saved[108];
	snprintf(saved, sizeof(saved), "%s", p.path);
	peer p2;
	peer_start(&p2, "crash.sock");
	assert_string_equal(p2.path, saved);
	assert_int_equal(herd_reconnect(c), 0);
	assert_int_equal(herd_generate(c, &r, &res), 0);
	assert_string_equal(res.text, "echo:x");
	herd_result_free(&res);
	herd_close(c);
	peer_stop(&p2);
}

/* ---- attach a real shared image ------------------------------------------------ */

static int reference_greedy(const char *path, const char *prompt, int n_gen, int32_t *out)
{
	llama_model *m = NULL;
	llama_ctx *ctx = NULL;
	char err[256];
	int rc = llama_model_load(&m, path, err, sizeof(err));
	if (rc)
		fail_msg("reference load: %s", err);
	llama_ctx_opts co = {.n_threads = 1, .n_ctx = 512};
	assert_int_equal(llama_ctx_create(&ctx, m, &co), 0);
	int32_t ids[256];
	int n = tok_encode(m->vocab, prompt, strlen(prompt), TOK_ADD_BOS, ids, 256);
	assert_true(n > 0 && n < 256);
	float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
	llama_seq seq;
	llama_seq_init(&seq);
	assert_int_equal(llama_eval(ctx, &seq, ids, n, 0, logits), 0);
	int got = 0;
	for (; got < n_gen; got++) {
		int32_t best = 0;
		for (int i = 1; i < m->hp.n_vocab; i++)
			if (logits[i] > logits[best])
				best = i;
		out[got] = best;
		if (tok_is_eog(m->vocab, best))
			break;
		llama_batch_seq b = {&seq, &best, 1, LLAMA_LOGITS_LAST, logits};
		assert_int_equal(llama_decode(ctx, &b, 1), 0);
	}
	llama_seq_reset(ctx, &seq);
	free(logits);
	llama_ctx_destroy(ctx);
	llama_model_destroy(m);
	return got;
}

/* Makes the mini model in tmpdir and its shared image (skips the test when
 * this machine cannot create one). */
static void attach_make_image(char *model_path, size_t cap, shm_image_info *info)
{
	char err[512];
	make_tmpdir();
	snprintf(model_path, cap, "%s/mini.gguf", tmpdir);
	mkmodel_opts mo = {.shape = "mini", .ftype = "F32", .out_path = model_path, .seed = 7,
			   .n_threads = 2};
	int rc = mkmodel_write(&mo, err, sizeof(err));
	if (rc)
		fail_msg("mkmodel: %s", err);
	char mname[64];
	snprintf(mname, sizeof(mname), "agtest%ld", (long)getpid());
	shm_create_opts so = {.source_path = model_path, .model_name = mname, .gid = (gid_t)-1,
			      .no_adopt = 1};
	snprintf(model_file, sizeof(model_file), "%s", model_path);
	rc = shm_image_create(&so, info, err, sizeof(err));
	if (rc) {
		print_message("cannot create a shared image (%s): skipping attach\n", err);
		skip();
	}
	snprintf(image_name, sizeof(image_name), "%s", info->name);
}

/* A fake broker that serves the image as model "tiny". */
static void attach_peer_start(peer *p, const shm_image_info *info)
{
	peer_start(p, "attach.sock");
	assert_int_equal(shm_image_open(info->name, &p->img_fd), 0);
	snprintf(p->img_model, sizeof(p->img_model), "tiny");
	snprintf(p->img_name, sizeof(p->img_name), "%s", info->name);
	snprintf(p->img_digest, sizeof(p->img_digest), "%s", info->digest_hex);
	p->img_size = info->image_size;
}

/* An unknown model is the broker's error with the connection kept; "tiny"
 * attaches and describes itself. Returns the attachment. */
static herd_local_model *check_attach_info(herd_client *c, const shm_image_info *info)
{
	/* unknown model: the broker's error, connection kept */
	herd_local_model *lm = NULL;
	assert_int_equal(herd_model_attach(c, "nope", &lm), HERD_E_MISSING);
	assert_null(lm);
	assert_true(herd_connected(c));

	double t0 = clock_mono_ms();
	int rc = herd_model_attach(c, "tiny", &lm);
	double t_all = clock_mono_ms() - t0;
	if (rc)
		fail_msg("attach: %s", herd_client_errmsg(c));
	herd_local_info li;
	herd_local_info_get(lm, &li);
	print_message("attach latency (request -> mapped, header verified): %.3f ms; model ready: "
		      "%.3f ms; total %.3f ms; image %llu bytes (%s)\n",
		      li.attach_ms, li.load_ms, t_all, (unsigned long long)li.image_bytes, li.segment);
	assert_string_equal(li.model, "tiny");
	assert_string_equal(li.segment, info->name);
	assert_string_equal(li.digest, info->digest_hex);
	assert_int_equal(li.image_bytes, info->image_size);
	assert_int_equal(li.n_vocab, 2048);
	assert_int_equal(li.n_ctx, 512);
	assert_int_equal(li.n_threads, 1);
	assert_true(li.attach_ms > 0 && li.attach_ms <= li.load_ms);
	return lm;
}

/* The text of the reference ids up to the first end-of-generation token,
 * decoded with the model file's vocabulary; returns its length. */
static size_t reference_text(const char *model_path, const int32_t *ref, int n_ref, char *ref_text,
			     size_t cap)
{
	char err[512];
	llama_model *rm = NULL;
	assert_int_equal(llama_model_load(&rm, model_path, err, sizeof(err)), 0);
	size_t rl = 0;
	for (int i = 0; i < n_ref && !tok_is_eog(rm->vocab, ref[i]); i++) {
		int k = tok_piece(rm->vocab, ref[i], ref_text + rl, cap - rl - 1);
		assert_true(k >= 0);
		rl += (size_t)k;
	}
	ref_text[rl] = 0;
	llama_model_destroy(rm);
	return rl;
}

/* In-process greedy generation equals the engine run directly on the file
 * (ids, text, streamed pieces). r is left set up for the next checks;
 * ref_text (cap bytes) gets the reference text, its length returned. */
static size_t check_local_greedy(herd_local_model *lm, const char *model_path, herd_request *r,
				 char *ref_text, size_t cap)
{
	const char *prompt = "Once upon a time";
	int32_t ref[16];
	int n_ref = reference_greedy(model_path, prompt, 12, ref);
	herd_result res;
	stream_rec s = {0};
	herd_request_init(r);
	r->prompt = prompt;
	r->max_tokens = 12;
	r->id = 31;
	int rc = herd_local_generate(lm, r, on_token, &s, &res);
	if (rc)
		fail_msg("local generate: %s", herd_local_errmsg(lm));
	assert_int_equal(res.id, 31);
	assert_int_equal(res.n_gen, n_ref);
	assert_true(res.n_prompt > 1);
	/* decode the reference ids the same way */
	const size_t rl = reference_text(model_path, ref, n_ref, ref_text, cap);
	assert_int_equal(res.text_len, rl);
	assert_memory_equal(res.text, ref_text, rl);
	assert_int_equal(s.len, rl); /* streamed pieces add up to the text */
	assert_memory_equal(s.text, ref_text, rl);
	print_message("local greedy text (%u tokens): \"%s\" reason %s, %.1f ms\n", res.n_gen,
		      res.text, herd_finish_name(res.reason), res.t_total_ms);
	herd_result_free(&res);
	return rl;
}

/* A stop string cuts the text and is held back from the callback. */
static void check_local_stop(herd_local_model *lm, herd_request *r, const char *ref_text,
			     size_t rl)
{
	herd_result res;
	stream_rec s;
	if (rl >= 6) {
		char stop[4];
		memcpy(stop, ref_text + 3, 3);
		stop[3] = 0;
		const char *stops[1] = {stop};
		const char *first = strstr(ref_text, stop);
		memset(&s, 0, sizeof(s));
		r->stop = stops;
		r->n_stop = 1;
		assert_int_equal(herd_local_generate(lm, r, on_token, &s, &res), 0);
		assert_int_equal(res.reason, HERD_FINISH_STOP);
		assert_int_equal(res.text_len, (size_t)(first - ref_text));
		assert_memory_equal(res.text, ref_text, res.text_len);
		assert_int_equal(s.len, res.text_len);
		herd_result_free(&res);
		r->stop = NULL;
		r->n_stop = 0;
	}
}

/* Sampled generation is deterministic for a seed; callback cancel. */
static void check_local_sampled(herd_local_model *lm, herd_request *r)
{
	herd_result a, b, res;
	stream_rec s;
	r->temperature = 0.9f;
	r->top_k = 40;
	r->seed = 1234;
	assert_int_equal(herd_local_generate(lm, r, NULL, NULL, &a), 0);
	assert_int_equal(herd_local_generate(lm, r, NULL, NULL, &b), 0);
	assert_int_equal(a.text_len, b.text_len);
	assert_memory_equal(a.text, b.text, a.text_len);
	herd_result_free(&a);
	herd_result_free(&b);
	memset(&s, 0, sizeof(s));
	s.cancel_after = 2;
	r->max_tokens = 50;
	assert_int_equal(herd_local_generate(lm, r, on_token, &s, &res), 0);
	assert_true(res.reason == HERD_FINISH_CANCEL || res.reason == HERD_FINISH_STOP);
	if (res.reason == HERD_FINISH_CANCEL)
		assert_int_equal(res.n_gen, 2);
	herd_result_free(&res);
}

/* Chat messages, an out-of-vocabulary token, a prompt longer than the
 * context. */
static void check_local_chat_and_errors(herd_local_model *lm)
{
	herd_request r;
	herd_result res;
	herd_message msgs[1] = {{"user", "hi"}};
	herd_request_init(&r);
	r.messages = msgs;
	r.n_messages = 1;
	r.max_tokens = 2;
	assert_int_equal(herd_local_generate(lm, &r, NULL, NULL, &res), 0);
	assert_true(res.n_prompt > 5);
	herd_result_free(&res);
	int32_t bad[2] = {1, 99999};
	herd_request_init(&r);
	r.tokens = bad;
	r.n_tokens = 2;
	assert_int_equal(herd_local_generate(lm, &r, NULL, NULL, &res), HERD_E_RANGE);
	assert_non_null(strstr(herd_local_errmsg(lm), "99999"));
	int32_t *longp = calloc(600, sizeof(int32_t));
	r.tokens = longp;
	r.n_tokens = 600;
	assert_int_equal(herd_local_generate(lm, &r, NULL, NULL, &res), HERD_E_NOSPACE);
	free(longp);
}

/* Several attachments of one image share its pages. */
static void check_shared_attach(herd_client *c)
{
	herd_local_info li;
	herd_local_model *l2 = NULL, *l3 = NULL;
	assert_int_equal(herd_model_attach(c, "tiny", &l2), 0);
	assert_int_equal(herd_model_attach(c, "tiny", &l3), 0);
	herd_local_info_get(l3, &li);
	print_message("second attach: %.3f ms to map\n", li.attach_ms);
	herd_local_detach(l2);
	herd_local_detach(l3);
}

static void test_attach(void **state)
{
	(void)state;
	char model_path[128];
	shm_image_info info;
	attach_make_image(model_path, sizeof(model_path), &info);

	peer p;
	attach_peer_start(&p, &info);
	herd_client *c = connect_to(p.path);
	herd_local_model *lm = check_attach_info(c, &info);

	herd_request r;
	char ref_text[1024] = "";
	const size_t rl = check_local_greedy(lm, model_path, &r, ref_text, sizeof(ref_text));
	check_local_stop(lm, &r, ref_text, rl);
	check_local_sampled(lm, &r);
	check_local_chat_and_errors(lm);

	/* the client remains usable; detach; the image outlives the mapping */
	herd_local_detach(lm);
	herd_local_detach(NULL);
	assert_true(herd_connected(c));

	check_shared_attach(c);

	herd_close(c);
	peer_stop(&p);
	close(p.img_fd);
	shm_image_remove(info.name);
	unlink(model_path);
}

static int teardown_all(void **state)
{
	(void)state;
	if (image_name[0])
		shm_image_remove(image_name);
	if (model_file[0])
		unlink(model_file);
	if (tmpdir[0])
		rmdir(tmpdir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_errors),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_default_path),
		cmocka_unit_test(test_hello_welcome),
		cmocka_unit_test(test_generate_blocking),
		cmocka_unit_test(test_generate_stream),
		cmocka_unit_test(test_cancel_other_thread),
		cmocka_unit_test(test_broker_disconnect),
		cmocka_unit_test(test_attach),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
