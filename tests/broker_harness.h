/* Helpers for the tests that start a real herdd and speak the wire
 * protocol to it raw (test_broker, test_attack_sched, test_batch_metrics,
 * test_cpu_affinity, test_prefix_broker, test_respcache, the pressure tests):
 * find the binaries, make the world (bh_world_setup: the mini model),
 * spawn herdd and wait for it, and a blocking client that sends frames and
 * reads typed messages. Header-only
 * (static inline), one world per test program. */
#ifndef HERD_TESTS_BROKER_HARNESS_H
#define HERD_TESTS_BROKER_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "model/mkmodel.h"
#include "proto/proto.h"
#include "shm/fdpass.h"
#include "shm/image.h"

typedef struct world {
	char herdd[PATH_MAX];
	char dir[64];
	char model_path[192];
	char sock[100];
	char log[192];
	char conf[192];       /* a config file the test writes, or "" */
	char model_name[32];
	char segment[SHM_IMAGE_NAME_MAX];
	char spec[256];
	pid_t pid;
} world;

static world W;

/* ---- process helpers ------------------------------------------------------ */

static inline int find_herdd(char *out, size_t n)
{
	const char *e = getenv("HERD_HERDD");
	if (e && access(e, X_OK) == 0) {
		snprintf(out, n, "%s", e);
		return 0;
	}
	const char *hb = getenv("HERD_BIN");
#ifdef HERD_BIN
	if (!hb)
		hb = HERD_BIN;
#endif
	if (hb) {
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s", hb);
		snprintf(out, n, "%s/herdd", dirname(tmp));
		if (access(out, X_OK) == 0)
			return 0;
	}
	char self[PATH_MAX];
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (l > 0) {
		self[l] = 0;
		char *d = dirname(self);
		snprintf(out, n, "%s/herdd", d);
		if (access(out, X_OK) == 0)
			return 0;
		snprintf(out, n, "%s/../herdd", d);
		if (access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

/* Starts herdd with extra args; stderr goes to W.log (appended). */
static inline pid_t spawn(const char *const *extra)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = W.herdd;
	argv[n++] = "--socket";
	argv[n++] = W.sock;
	argv[n++] = "--model";
	argv[n++] = W.spec;
	argv[n++] = "--threads";
	argv[n++] = "2";
	argv[n++] = "--max-batch";
	argv[n++] = "8";
	for (int i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(W.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			dup2(fd, STDOUT_FILENO);
		}
		execv(W.herdd, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static inline int sock_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", W.sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	struct timeval tv = {30, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static inline void dump_log(void)
{
	FILE *f = fopen(W.log, "r");
	if (!f)
		return;
	char line[1024];
	fprintf(stderr, "---- herdd log ----\n");
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

/* Waits until the broker accepts connections (or died). */
static inline void wait_ready(pid_t pid)
{
	for (int i = 0; i < 600; i++) {
		int fd = sock_connect();
		if (fd >= 0) {
			close(fd);
			return;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			dump_log();
			fail_msg("herdd exited during start-up (status %d)", st);
		}
		usleep(50000);
	}
	dump_log();
	fail_msg("herdd did not start listening");
}

/* ---- a protocol client ---------------------------------------------------- */

typedef struct client {
	int fd;
	uint8_t *buf;   /* received bytes not yet returned */
	size_t len, cap;
	uint8_t *body;  /* body of the last frame: decoded strings point here */
	int got_fd;     /* an fd received with the last read, or -1 */
	proto_msg m;
} client;

static inline void cl_open(client *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = sock_connect();
	assert_true(c->fd >= 0);
	c->cap = 1 << 20;
	c->buf = malloc(c->cap);
	assert_non_null(c->buf);
	c->got_fd = -1;
}

static inline void cl_close(client *c)
{
	proto_msg_free(&c->m);
	if (c->fd >= 0)
		close(c->fd);
	if (c->got_fd >= 0)
		close(c->got_fd);
	free(c->buf);
	free(c->body);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static inline void cl_send_raw(client *c, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			fail_msg("send: %s", strerror(errno));
		b += w;
		n -= (size_t)w;
	}
}

static inline void cl_send_buf(client *c, proto_buf *b)
{
	cl_send_raw(c, b->data, b->len);
	proto_buf_fini(b);
}

/* Reads the next frame into c->m. Returns 0, or -1 at EOF / connection
 * reset (no frame). */
static inline int cl_next(client *c)
{
	proto_msg_free(&c->m);
	for (;;) {
		size_t flen = 0;
		int r = proto_frame_next(c->buf, c->len, 1u << 30, &flen);
		if (r == PROTO_FRAME_READY) {
			free(c->body);
			c->body = malloc(flen ? flen : 1);
			assert_non_null(c->body);
			memcpy(c->body, c->buf + PROTO_HDR_SIZE, flen);
			memmove(c->buf, c->buf + PROTO_HDR_SIZE + flen, c->len - PROTO_HDR_SIZE - flen);
			c->len -= PROTO_HDR_SIZE + flen;
			char err[256];
			int rc = proto_decode(c->body, flen, &c->m, err, sizeof(err));
			if (rc)
				fail_msg("broker sent an undecodable frame: %s", err);
			return 0;
		}
		assert_int_equal(r, PROTO_FRAME_NEED_MORE);
		if (c->len == c->cap) {
			c->cap *= 2;
			c->buf = realloc(c->buf, c->cap);
			assert_non_null(c->buf);
		}
		size_t got = 0;
		int fd = -1;
		int rc = shm_fd_recv(c->fd, c->buf + c->len, c->cap - c->len, &got, &fd);
		if (rc == -ECONNRESET)
			return -1;
		if (rc)
			fail_msg("recv: %s", herd_strerror(rc));
		if (fd >= 0) {
			if (c->got_fd >= 0)
				close(c->got_fd);
			c->got_fd = fd;
		}
		if (got == 0)
			return -1;
		c->len += got;
	}
}

static inline void cl_expect(client *c, proto_type t)
{
	if (cl_next(c))
		fail_msg("connection closed while waiting for '%s'", proto_type_name(t));
	if (c->m.type != t) {
		if (c->m.type == PROTO_ERR)
			fail_msg("expected '%s', got err %d: %.*s", proto_type_name(t), c->m.err.code,
				 (int)c->m.err.msg.len, c->m.err.msg.ptr);
		fail_msg("expected '%s', got '%s'", proto_type_name(t), proto_type_name(c->m.type));
	}
}

/* Streams of replies to several requests on one connection, by id. */
typedef struct gen_out {
	char text[16384];
	size_t len;
	int n_tok, n_gen, done, is_err, code;
	herd_finish reason;
} gen_out;

/* Applies c->m to outs[id - base]; returns 1 when it ended a request. */
static inline int apply(client *c, gen_out *outs, int n, uint64_t base)
{
	const proto_msg *m = &c->m;
	uint64_t id = m->type == PROTO_TOK ? m->tok.id : m->type == PROTO_DONE ? m->done.id : m->err.id;
	if (m->type == PROTO_ERR && !m->err.has_id)
		fail_msg("connection error %d: %.*s", m->err.code, (int)m->err.msg.len, m->err.msg.ptr);
	assert_true(m->type == PROTO_TOK || m->type == PROTO_DONE || m->type == PROTO_ERR);
	assert_true(id >= base && id < base + (uint64_t)n);
	gen_out *o = &outs[id - base];
	assert_false(o->done);
	if (m->type == PROTO_TOK) {
		assert_true(o->len + m->tok.text.len < sizeof(o->text));
		memcpy(o->text + o->len, m->tok.text.ptr, m->tok.text.len);
		o->len += m->tok.text.len;
		o->n_tok++;
		return 0;
	}
	o->done = 1;
	if (m->type == PROTO_ERR) {
		o->is_err = 1;
		o->code = m->err.code;
		return 1;
	}
	o->reason = m->done.reason;
	o->n_gen = (int)m->done.n_gen;
	if (m->done.has_text) {
		assert_true(m->done.text.len < sizeof(o->text));
		memcpy(o->text, m->done.text.ptr, m->done.text.len);
		o->len = m->done.text.len;
	}
	return 1;
}

static inline void collect(client *c, gen_out *outs, int n, uint64_t base, int n_end)
{
	for (int ended = 0; ended < n_end;) {
		if (cl_next(c))
			fail_msg("connection closed with %d of %d requests open", n_end - ended, n_end);
		ended += apply(c, outs, n, base);
	}
}

/* ---- the usual world ------------------------------------------------------- */

/* A broker test's world: a directory /tmp/herd-test-<tag>-XXXXXX holding a
 * mini Q8_0 model (seed 11) named <tag><pid> (unique, so that concurrent
 * runs share no images), and the socket and log paths. Exits 77 when herdd
 * cannot be found. Start the broker with spawn + wait_ready. */
static inline void bh_world_setup(const char *tag)
{
	if (find_herdd(W.herdd, sizeof(W.herdd))) {
		fprintf(stderr, "test %s: herdd not found (set HERD_HERDD); skipping\n", tag);
		exit(77);
	}
	snprintf(W.dir, sizeof(W.dir), "/tmp/herd-test-%s-XXXXXX", tag);
	assert_non_null(mkdtemp(W.dir));
	snprintf(W.model_path, sizeof(W.model_path), "%s/mini.gguf", W.dir);
	snprintf(W.sock, sizeof(W.sock), "%s/herd.sock", W.dir);
	snprintf(W.log, sizeof(W.log), "%s/herdd.log", W.dir);
	snprintf(W.conf, sizeof(W.conf), "%s/herd.json", W.dir);
	snprintf(W.model_name, sizeof(W.model_name), "%s%d", tag, (int)getpid());
	snprintf(W.spec, sizeof(W.spec), "%s=%s", W.model_name, W.model_path);
	char err[512] = "";
	mkmodel_opts mo = {.shape = "mini", .ftype = "Q8_0", .out_path = W.model_path, .seed = 11,
			   .n_threads = 2};
	if (mkmodel_write(&mo, err, sizeof(err)))
		fail_msg("mkmodel_write: %s", err);
}

/* Writes text to the world's config file (W.conf). */
static inline void bh_write_conf(const char *text)
{
	FILE *f = fopen(W.conf, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static inline int bh_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static inline int bh_remove_image(void *user, const shm_image_info *in)
{
	(void)user;
	if (!strcmp(in->model, W.model_name))
		shm_image_remove(in->name);
	return 0;
}

/* Removes every image of the world's model (each broker start may have
 * published its own). */
static inline void bh_remove_images(void)
{
	shm_image_list(0, bh_remove_image, NULL);
}

/* Kills the broker (if any) and removes what bh_world_setup made, the
 * model's images and the state the broker kept in W.dir. */
static inline void bh_world_teardown(void)
{
	if (W.pid > 0) {
		kill(W.pid, SIGKILL);
		waitpid(W.pid, NULL, 0);
		W.pid = 0;
	}
	if (W.segment[0])
		shm_image_remove(W.segment);
	bh_remove_images();
	if (getenv("HERD_TEST_VERBOSE"))
		dump_log();
	if (W.dir[0])
		nftw(W.dir, bh_rm_one, 16, FTW_DEPTH | FTW_PHYS); /* the state directory's too */
}

/* hello as name, expecting welcome; remembers the model's image name. */
static inline void cl_hello(client *c, const char *name)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_hello h = {.v = PROTO_VERSION, .name = proto_s(name)};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_WELCOME);
	const proto_welcome *w = &c->m.welcome;
	if (!W.segment[0] && w->n_models == 1 && w->models[0].segment.len < sizeof(W.segment)) {
		memcpy(W.segment, w->models[0].segment.ptr, w->models[0].segment.len);
		W.segment[w->models[0].segment.len] = 0;
	}
}

/* A greedy text-prompt gen of max_tokens for model. */
static inline void cl_gen(client *c, uint64_t id, const char *model, const char *prompt,
			  int max_tokens, int stream)
{
	proto_buf b;
	proto_buf_init(&b);
	gen_request g;
	gen_request_init(&g);
	g.id = id;
	g.model = proto_s(model);
	g.input = GEN_INPUT_PROMPT;
	g.prompt = proto_s(prompt);
	g.params.max_tokens = max_tokens;
	g.stream = stream;
	assert_int_equal(proto_encode_gen(&b, &g), 0);
	cl_send_buf(c, &b);
}

/* The counter key of admin command cmd's result (in its map sub when sub is
 * not NULL), asked on a connection of its own; a bool counts as 0 or 1.
 * Fails when there is no such counter. */
static inline uint64_t bh_admin_u(const char *cmd, const char *sub, const char *key)
{
	client a;
	cl_open(&a);
	proto_buf b;
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s(cmd)};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(&a, &b);
	cl_expect(&a, PROTO_ADMIN_OK);
	const proto_value *m = sub ? proto_value_get(a.m.admin_ok.result, sub) : a.m.admin_ok.result;
	const proto_value *v = m ? proto_value_get(m, key) : NULL;
	if (!v || (v->type != PROTO_V_UINT && v->type != PROTO_V_INT && v->type != PROTO_V_BOOL))
		fail_msg("herdctl %s has no counter '%s%s%s'", cmd, sub ? sub : "", sub ? "." : "", key);
	const uint64_t u = v->type == PROTO_V_UINT ? v->u
			   : v->type == PROTO_V_BOOL ? (uint64_t)v->b
						     : (uint64_t)v->i;
	cl_close(&a);
	return u;
}

/* A counter of `herdctl status`. */
static inline uint64_t status_u64(const char *key)
{
	return bh_admin_u("status", NULL, key);
}

#endif
