/* The attacks of `herd abuse` (the issue "no agent, local user or broken
 * client can hurt the broker or the other agents"), one hostile or careless
 * client each, speaking the wire protocol directly over raw sockets: proto's
 * encoders for well-formed frames, proto_writer and hand-written bytes for
 * what the encoders refuse or never write (partial frames, huge maps).
 *
 * Every attack runs in one process until the deadline, then returns its
 * counts. Sockets are non-blocking; one poll loop sends what the attack
 * queued and (except for `noread`) reads and counts the broker's replies. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "abuse.h"
#include "common/clock.h"
#include "herd/error.h"
#include "proto/proto.h"

#define RAW_OUT_HIGH (1u << 20)  /* queue more frames while less than this is unsent */
#define RAW_IN_MAX (64u << 20)   /* largest reply frame the attacker accepts */
#define RAW_WELCOME_MS 10000     /* wait for welcome */
#define FLOOD_REQUESTS 30000     /* `flood`: queued requests */
#define MAXTOK_REQUESTS 1000     /* `maxtok`: requests with max_tokens 2^31-1 */
#define PRIO_INFLIGHT 32         /* `prio`: requests kept in flight */
#define NOREAD_REQUESTS 4000     /* `noread`: streamed requests never read */
#define PARTIAL_CONNS 500        /* `partial`: connections holding a partial frame */
#define CONNS_MAX 19000          /* `conns`: at most this many (and the fd limit) */
#define CANCEL_INFLIGHT 8        /* `cancel`: real requests beside the cancels */
#define BIG_INFLIGHT 4           /* `bigprompt`, `bigmap`: frames in flight */
#define STOP_INFLIGHT 16         /* `stop`: requests with 64 long stop strings */
#define ABUSE_FRAME_SLACK 1024   /* bytes left for the rest of a max-size frame */

const char *const abuse_attack_names[] = {
	"none", "flood", "maxtok", "prio", "noread", "partial", "conns",
	"cancel", "bigprompt", "stop", "bigmap", NULL,
};

static const char *const abuse_attack_helps[] = {
	"no attacker (the baseline)",
	"one agent queues 30000 requests (16 tokens each)",
	"1000 requests with max_tokens 2^31-1",
	"hello and every request with prio 2^31-1, 32 long requests in flight",
	"4000 streamed requests, replies never read (receive buffer at its minimum)",
	"500 connections each holding a frame whose body never completes",
	"as many idle connections as the fd limit allows (up to 19000)",
	"an endless stream of cancel frames for unknown ids beside 8 requests",
	"prompts of max_frame bytes (1 MiB by default), 4 in flight",
	"64 stop strings of max_frame/64 bytes per request, 16 in flight",
	"gen frames of max_frame bytes holding a map of ~100000 unknown keys",
};

const char *abuse_attack_help(const char *name)
{
	for (int i = 0; abuse_attack_names[i]; i++)
		if (!strcmp(name, abuse_attack_names[i]))
			return abuse_attack_helps[i];
	return NULL;
}

/* ---- raw connections ---------------------------------------------------- */

typedef struct raw_conn {
	int fd;          /* -1 when closed */
	proto_buf out;   /* bytes queued, not yet sent */
	uint8_t *in;     /* bytes received, not yet a whole frame */
	size_t in_len, in_cap;
	long sent_gen, answered; /* gen frames sent; done or err with an id read */
} raw_conn;

typedef struct abuse_ctx {
	const abuse_target *t;
	abuse_stats *st;
	raw_conn *c;
	int n_c, cap_c;
	int read;            /* read replies (0: `noread`) */
	uint32_t max_frame;  /* from welcome */
	uint64_t next_id;
	char *big;           /* `bigprompt` / `stop` scratch */
	size_t big_len;
	gen_str stop[PROTO_MAX_STOP];
	double t_check;      /* `partial` / `conns`: next look for closed connections */
} abuse_ctx;

static void raw_close(abuse_ctx *x, raw_conn *c, int by_broker)
{
	if (c->fd < 0)
		return;
	close(c->fd);
	c->fd = -1;
	x->st->closed += by_broker;
	c->out.len = 0;
	c->in_len = 0;
}

/* Opens a non-blocking connection into a new slot. The slot index, or -1
 * (counted in conn_fail; the error in first_err when nothing ever worked). */
static int raw_open(abuse_ctx *x)
{
	if (x->n_c == x->cap_c) {
		const int cap = x->cap_c ? x->cap_c * 2 : 16;
		raw_conn *nc = realloc(x->c, sizeof(*nc) * (size_t)cap);
		if (!nc)
			return -1;
		x->c = nc;
		x->cap_c = cap;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", x->t->socket);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		if (!x->st->conns && !x->st->first_err[0])
			snprintf(x->st->first_err, sizeof(x->st->first_err), "connect: %s",
				 strerror(errno));
		if (fd >= 0)
			close(fd);
		x->st->conn_fail++;
		return -1;
	}
	raw_conn *c = &x->c[x->n_c];
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	proto_buf_init(&c->out);
	x->st->conns++;
	return x->n_c++;
}

/* Sends what c has queued, as much as the socket takes now. */
static void raw_flush(abuse_ctx *x, raw_conn *c)
{
	while (c->fd >= 0 && c->out.len) {
		ssize_t w = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w <= 0) {
			raw_close(x, c, 1);
			return;
		}
		x->st->bytes += (uint64_t)w;
		proto_buf_consume(&c->out, (size_t)w);
	}
}

/* Counts one reply frame's body. */
static void raw_count(abuse_ctx *x, raw_conn *c, const uint8_t *body, size_t len)
{
	proto_msg m;
	if (proto_decode(body, len, &m, NULL, 0))
		return;
	if (m.type == PROTO_DONE) {
		x->st->done++;
		c->answered++;
	} else if (m.type == PROTO_TOK) {
		x->st->tok++;
	} else if (m.type == PROTO_ERR) {
		x->st->err++;
		c->answered += m.err.has_id;
		if (!x->st->first_err[0])
			snprintf(x->st->first_err, sizeof(x->st->first_err), "%d: %.*s", m.err.code,
				 (int)m.err.msg.len, m.err.msg.ptr);
	} else if (m.type == PROTO_WELCOME && m.welcome.max_frame) {
		x->max_frame = m.welcome.max_frame;
	}
	proto_msg_free(&m);
}

/* Reads what c has received and counts the whole frames in it. */
static void raw_read(abuse_ctx *x, raw_conn *c)
{
	for (;;) {
		if (c->in_cap - c->in_len < 65536) {
			size_t cap = c->in_cap ? c->in_cap * 2 : 131072;
			uint8_t *ni = cap <= RAW_IN_MAX + 65536 ? realloc(c->in, cap) : NULL;
			if (!ni) {
				raw_close(x, c, 0);
				return;
			}
			c->in = ni;
			c->in_cap = cap;
		}
		ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			raw_close(x, c, 1);
			return;
		}
		c->in_len += (size_t)r;
	}
	size_t off = 0, flen;
	while (proto_frame_next(c->in + off, c->in_len - off, RAW_IN_MAX, &flen) ==
	       PROTO_FRAME_READY) {
		raw_count(x, c, c->in + off + PROTO_HDR_SIZE, flen);
		off += PROTO_HDR_SIZE + flen;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
}

/* One poll over every open connection (up to ms): send, and read unless
 * this is `noread`. */
static void raw_pump(abuse_ctx *x, int ms)
{
	struct pollfd *p = calloc((size_t)x->n_c + 1, sizeof(*p));
	int *who = calloc((size_t)x->n_c + 1, sizeof(*who));
	int n = 0;
	for (int i = 0; p && who && i < x->n_c; i++)
		if (x->c[i].fd >= 0) {
			who[n] = i;
			p[n++] = (struct pollfd){.fd = x->c[i].fd,
						 .events = (short)((x->read ? POLLIN : 0) |
								   (x->c[i].out.len ? POLLOUT : 0))};
		}
	if (n == 0 || !p || !who) {
		usleep((useconds_t)ms * 1000);
	} else if (poll(p, (nfds_t)n, ms) > 0) {
		for (int k = 0; k < n; k++) {
			raw_conn *c = &x->c[who[k]];
			if (p[k].revents & POLLOUT)
				raw_flush(x, c);
			if (c->fd >= 0 && (p[k].revents & (POLLIN | POLLHUP | POLLERR)) && x->read)
				raw_read(x, c);
			else if (c->fd >= 0 && (p[k].revents & (POLLHUP | POLLERR)))
				raw_close(x, c, 1);
		}
	}
	free(p);
	free(who);
}

/* ---- frames ----------------------------------------------------------------- */

/* Queues a hello (prio as given) on c. */
static void raw_hello(abuse_ctx *x, raw_conn *c, int32_t prio)
{
	proto_hello h = {.v = PROTO_VERSION, .name = proto_s("abuser"), .prio = prio};
	if (proto_encode_hello(&c->out, &h) == 0)
		x->st->frames++;
}

/* Queues a hello on a new connection and waits for the welcome (max_frame).
 * The slot, or -1. */
static int raw_hello_wait(abuse_ctx *x, int32_t prio)
{
	const int i = raw_open(x);
	if (i < 0)
		return -1;
	raw_hello(x, &x->c[i], prio);
	const double t0 = clock_mono_ms();
	while (x->c[i].fd >= 0 && clock_mono_ms() - t0 < RAW_WELCOME_MS) {
		const int was = x->read;
		x->read = 1;
		raw_pump(x, 50);
		x->read = was;
		if (x->max_frame)
			return i;
	}
	snprintf(x->st->first_err, sizeof(x->st->first_err), "no welcome from the broker");
	return -1;
}

typedef struct gen_spec {
	const char *prompt;
	size_t prompt_len; /* 0: strlen */
	int32_t max_tokens;
	int stream, prio_max;
	const gen_str *stop;
	size_t n_stop;
} gen_spec;

/* Queues one gen frame on c. */
static void raw_gen(abuse_ctx *x, raw_conn *c, const gen_spec *s)
{
	gen_request r;
	gen_request_init(&r);
	r.id = ++x->next_id;
	r.model = proto_s(x->t->model);
	r.input = GEN_INPUT_PROMPT;
	r.prompt = (gen_str){s->prompt, s->prompt_len ? s->prompt_len : strlen(s->prompt)};
	r.params.max_tokens = s->max_tokens;
	r.params.stop = s->stop;
	r.params.n_stop = s->n_stop;
	r.stream = s->stream;
	r.cache = 0;
	if (s->prio_max) {
		r.has_prio = 1;
		r.prio = INT32_MAX;
	}
	if (proto_encode_gen(&c->out, &r) == 0) {
		x->st->frames++;
		c->sent_gen++;
	}
}

/* A gen frame of about max_frame bytes whose map holds ~100000 unknown keys
 * before the real ones (written by hand: no encoder writes unknown keys). */
static void raw_bigmap(abuse_ctx *x, raw_conn *c)
{
	const uint32_t n_junk = (x->max_frame - ABUSE_FRAME_SLACK) / 9; /* "kXXXXXX": nil */
	size_t mark;
	if (proto_frame_begin(&c->out, &mark))
		return;
	proto_writer w;
	proto_writer_init(&w, &c->out);
	proto_write_map(&w, n_junk + 6);
	char key[16];
	for (uint32_t i = 0; i < n_junk; i++) {
		snprintf(key, sizeof(key), "k%06x", i & 0xffffff);
		proto_write_cstr(&w, key);
		proto_write_nil(&w);
	}
	proto_write_kv_str(&w, "t", "gen");
	proto_write_kv_uint(&w, "id", ++x->next_id);
	proto_write_kv_str(&w, "model", x->t->model);
	proto_write_kv_str(&w, "prompt", "big map");
	proto_write_kv_int(&w, "max_tokens", 1);
	proto_write_kv_bool(&w, "stream", 0);
	if (proto_writer_error(&w) || proto_frame_end(&c->out, mark)) {
		proto_frame_abort(&c->out, mark);
		return;
	}
	x->st->frames++;
	c->sent_gen++;
}

/* A cancel frame for an id nobody used. */
static void raw_cancel(abuse_ctx *x, raw_conn *c)
{
	proto_cancel m = {.id = (1ull << 62) + ++x->next_id};
	if (proto_encode_cancel(&c->out, &m) == 0)
		x->st->frames++;
}

/* ---- the attacks ------------------------------------------------------------- */

static long inflight(const raw_conn *c)
{
	return c->sent_gen - c->answered;
}

/* Queues the next frames of a one-connection attack on x->c[0]. */
static void feed_one(abuse_ctx *x, const char *name)
{
	raw_conn *c = &x->c[0];
	while (c->fd >= 0 && c->out.len < RAW_OUT_HIGH) {
		char prompt[64];
		snprintf(prompt, sizeof(prompt), "%s request %llu", name,
			 (unsigned long long)x->next_id + 1);
		gen_spec s = {.prompt = prompt, .max_tokens = 16};
		if (!strcmp(name, "flood") && c->sent_gen < FLOOD_REQUESTS) {
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "maxtok") && c->sent_gen < MAXTOK_REQUESTS) {
			s.max_tokens = INT32_MAX;
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "prio") && inflight(c) < PRIO_INFLIGHT) {
			s.max_tokens = 512;
			s.prio_max = 1;
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "noread") && c->sent_gen < NOREAD_REQUESTS) {
			s.max_tokens = 4096;
			s.stream = 1;
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "cancel")) {
			if (inflight(c) < CANCEL_INFLIGHT) {
				s.max_tokens = 256;
				raw_gen(x, c, &s);
			}
			for (int k = 0; k < 1024; k++)
				raw_cancel(x, c);
		} else if (!strcmp(name, "bigprompt") && inflight(c) < BIG_INFLIGHT) {
			s.prompt = x->big;
			s.prompt_len = x->big_len;
			s.max_tokens = 8;
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "stop") && inflight(c) < STOP_INFLIGHT) {
			s.max_tokens = 4096;
			s.stream = (c->sent_gen & 1) != 0;
			s.stop = x->stop;
			s.n_stop = PROTO_MAX_STOP;
			raw_gen(x, c, &s);
		} else if (!strcmp(name, "bigmap") && inflight(c) < BIG_INFLIGHT) {
			raw_bigmap(x, c);
		} else {
			break;
		}
	}
}

/* `partial` and `conns`: keep the connections open (reopen what the broker
 * closed, open new ones up to the target). */
static void feed_many(abuse_ctx *x, const char *name, int target)
{
	const int partial = !strcmp(name, "partial");
	int open = 0;
	for (int i = 0; i < x->n_c; i++)
		open += x->c[i].fd >= 0;
	for (int k = 0; k < 256 && open < target; k++, open++) {
		const int i = raw_open(x);
		if (i < 0)
			break;
		if (!partial)
			continue;
		/* hello, then a frame announcing 4096 bytes of which 100 come */
		raw_hello(x, &x->c[i], 0);
		static const uint8_t head[4] = {0x00, 0x10, 0x00, 0x00};
		uint8_t part[100];
		memset(part, 0xc0, sizeof(part));
		if (proto_buf_append(&x->c[i].out, head, 4) == 0 &&
		    proto_buf_append(&x->c[i].out, part, sizeof(part)) == 0)
			x->st->frames++;
	}
	/* reuse the slots of closed connections */
	int w = 0;
	for (int i = 0; i < x->n_c; i++) {
		if (x->c[i].fd < 0) {
			proto_buf_fini(&x->c[i].out);
			free(x->c[i].in);
			continue;
		}
		x->c[w++] = x->c[i];
	}
	x->n_c = w;
}

/* The scratch of `bigprompt` (a prompt of max_frame - slack bytes of words)
 * and `stop` (64 stop strings of that / 64 bytes). 0 or -1. */
static int abuse_scratch(abuse_ctx *x, const char *name)
{
	if (strcmp(name, "bigprompt") && strcmp(name, "stop"))
		return 0;
	x->big_len = x->max_frame > 2 * ABUSE_FRAME_SLACK ? x->max_frame - ABUSE_FRAME_SLACK : 1024;
	x->big = malloc(x->big_len);
	if (!x->big)
		return -1;
	static const char words[] = "lorem ipsum dolor sit amet ";
	for (size_t i = 0; i < x->big_len; i++)
		x->big[i] = words[i % (sizeof(words) - 1)];
	const size_t each = x->big_len / PROTO_MAX_STOP;
	for (int i = 0; i < PROTO_MAX_STOP; i++) {
		/* distinct strings that never occur in the output */
		x->big[(size_t)i * each] = (char)('A' + i % 26);
		x->stop[i] = (gen_str){x->big + (size_t)i * each, each};
	}
	return 0;
}

/* Raises the soft fd limit to the hard one (`conns`); the target count. */
static int abuse_fd_target(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 1000;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	const rlim_t room = rl.rlim_cur > 64 ? rl.rlim_cur - 64 : 1;
	return room < CONNS_MAX ? (int)room : CONNS_MAX;
}

static void abuse_ctx_fini(abuse_ctx *x)
{
	for (int i = 0; i < x->n_c; i++) {
		if (x->c[i].fd >= 0)
			close(x->c[i].fd);
		proto_buf_fini(&x->c[i].out);
		free(x->c[i].in);
	}
	free(x->c);
	free(x->big);
}

/* 1 when the attack should end (deadline, or EOF on the stop pipe). */
static int abuse_over(const abuse_target *t)
{
	if (clock_mono_ms() >= t->deadline_ms)
		return 1;
	struct pollfd p = {.fd = t->stop_fd, .events = POLLIN};
	return t->stop_fd >= 0 && poll(&p, 1, 0) > 0;
}

int abuse_attack_run(const char *name, const abuse_target *t, abuse_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!abuse_attack_help(name)) {
		snprintf(st->first_err, sizeof(st->first_err), "unknown attack '%s'", name);
		return -1;
	}
	abuse_ctx x = {.t = t, .st = st, .read = strcmp(name, "noread") != 0};
	const int many = !strcmp(name, "partial") || !strcmp(name, "conns");
	const int target = !strcmp(name, "conns") ? abuse_fd_target() : PARTIAL_CONNS;
	int rc = 0;
	if (!strcmp(name, "none")) {
		while (!abuse_over(t))
			usleep(50 * 1000);
		goto out;
	}
	if (!many && raw_hello_wait(&x, !strcmp(name, "prio") ? INT32_MAX : 0) < 0) {
		rc = -1;
		goto out;
	}
	if (!strcmp(name, "noread")) {
		const int small = 1; /* the kernel rounds it up to its minimum */
		setsockopt(x.c[0].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	if (abuse_scratch(&x, name)) {
		rc = -1;
		goto out;
	}
	while (!abuse_over(t)) {
		if (many)
			feed_many(&x, name, target);
		else
			feed_one(&x, name);
		raw_pump(&x, 20);
	}
out:
	abuse_ctx_fini(&x);
	return rc;
}
