/* libherd client: connect + hello/welcome, blocking and streamed generation,
 * cancel from any thread, attach's request for an image descriptor.
 *
 * Concurrency: the request thread owns reading (rx buffer, received fds) and
 * c->tx; every write to the socket, the request thread's and herd_cancel's,
 * happens under send_mu, so frames never interleave. fd changes (connect,
 * disconnect) also happen under send_mu, so a concurrent herd_cancel sees
 * either the old open socket or -1, never a recycled descriptor. */
#include "agentlib/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "shm/fdpass.h"
#include "common/clock.h"

#define DEFAULT_MAX_FRAME (16u << 20)
#define MAX_PENDING_FDS 4

struct herd_client {
	/* options (copied) */
	char *path;
	char *name;
	int priority;
	int timeout_ms;
	uint32_t max_frame;

	pthread_mutex_t send_mu;
	int fd;                 /* -1 when disconnected; changed under send_mu */
	atomic_int connected;   /* welcome received and no connection error since */
	atomic_int busy;        /* a request is in flight */
	atomic_uint_fast64_t next_id;
	atomic_uint_fast64_t cur_id; /* id in flight, 0 none */

	proto_buf rx;           /* received bytes not yet consumed */
	size_t rx_used;         /* bytes of rx taken by the frame last returned */
	proto_buf tx;           /* request thread's outgoing frames */
	int fds[MAX_PENDING_FDS]; /* descriptors received, not yet claimed */
	int n_fds;

	/* from welcome */
	uint64_t agent_id;
	uint32_t broker_max_frame, broker_max_tokens;
	herd_model_info *models;
	char *model_strs;       /* backing store of the model strings */
	size_t n_models;

	char errmsg[512];
};

int herd_client_fail(herd_client *c, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

int herd_text_append(herd_text *t, const char *s, size_t n)
{
	if (t->cap - t->len <= n) {
		size_t cap = t->cap ? t->cap : 256;
		while (cap - t->len <= n)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p)
			return -ENOMEM;
		t->p = p;
		t->cap = cap;
	}
	if (n)
		memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = 0;
	return 0;
}

/* ---- options, paths ------------------------------------------------------ */

void herd_connect_opts_init(herd_connect_opts *o)
{
	memset(o, 0, sizeof(*o));
}

int herd_default_socket_path(char *buf, size_t n)
{
	const char *env = getenv("HERD_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char user[sizeof(((struct sockaddr_un *)0)->sun_path) + 64];
	struct stat st;
	int k;

	if (env && *env)
		k = snprintf(buf, n, "%s", env);
	else {
		user[0] = 0;
		if (xdg && *xdg)
			snprintf(user, sizeof(user), "%s/herd/herd.sock", xdg);
		if (user[0] && stat(user, &st) == 0)
			k = snprintf(buf, n, "%s", user);
		else if (stat(HERD_SYSTEM_SOCKET, &st) == 0 || !user[0])
			k = snprintf(buf, n, "%s", HERD_SYSTEM_SOCKET);
		else
			k = snprintf(buf, n, "%s", user);
	}
	if (k < 0 || (size_t)k >= n)
		return -ENAMETOOLONG;
	return k;
}

const char *herd_client_errmsg(const herd_client *c)
{
	return c ? c->errmsg : "no client (herd_connect failed to allocate one)";
}

int herd_connected(const herd_client *c)
{
	return c && c->connected;
}

uint64_t herd_agent_id(const herd_client *c)
{
	return c ? c->agent_id : 0;
}

void herd_limits(const herd_client *c, uint32_t *max_frame, uint32_t *max_tokens)
{
	if (max_frame)
		*max_frame = c ? c->broker_max_frame : 0;
	if (max_tokens)
		*max_tokens = c ? c->broker_max_tokens : 0;
}

int herd_models(const herd_client *c, const herd_model_info **models, size_t *n)
{
	if (!c || !models || !n)
		return HERD_E_INVAL;
	if (!c->agent_id && !c->connected) {
		*models = NULL;
		*n = 0;
		return -ENOTCONN;
	}
	*models = c->models;
	*n = c->n_models;
	return 0;
}

uint64_t herd_request_id(herd_client *c)
{
	return atomic_fetch_add(&c->next_id, 1);
}

/* ---- low-level I/O ---------------------------------------------------------- */

static void close_fds(herd_client *c)
{
	for (int i = 0; i < c->n_fds; i++)
		close(c->fds[i]);
	c->n_fds = 0;
}

/* Closes the socket and forgets buffered input. */
static void drop_connection(herd_client *c)
{
	pthread_mutex_lock(&c->send_mu);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->connected = 0;
	pthread_mutex_unlock(&c->send_mu);
	c->rx.len = 0;
	c->rx_used = 0;
	close_fds(c);
}

/* Marks the connection broken (the socket stays open so a concurrent
 * herd_cancel gets EPIPE rather than a recycled fd) and returns rc. */
static int broken(herd_client *c, int rc)
{
	c->connected = 0;
	return rc;
}

static int send_locked(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Sends c->tx (then empties it). */
static int send_tx(herd_client *c)
{
	int rc;
	pthread_mutex_lock(&c->send_mu);
	rc = c->fd >= 0 ? send_locked(c->fd, c->tx.data, c->tx.len) : -ENOTCONN;
	pthread_mutex_unlock(&c->send_mu);
	c->tx.len = 0;
	if (rc == -EPIPE || rc == -ECONNRESET)
		return broken(c, herd_client_fail(c, -ECONNRESET, "broker closed the connection (%s)",
						  c->path));
	if (rc)
		return broken(c, herd_client_fail(c, rc, "cannot send to the broker at %s: %s",
						  c->path, herd_strerror(rc)));
	return 0;
}

/* One recvmsg into rx, keeping any descriptors that come along. deadline
 * < 0: none. */
static int recv_some(herd_client *c, double deadline)
{
	if (deadline >= 0) {
		struct pollfd pfd = {c->fd, POLLIN, 0};
		for (;;) {
			double left = deadline - clock_mono_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			int k = poll(&pfd, 1, (int)(left + 1));
			if (k > 0)
				break;
			if (k < 0 && errno != EINTR)
				return -errno;
		}
	}
	int rc = proto_buf_reserve(&c->rx, 64 * 1024);
	if (rc)
		return rc;
	size_t n = 0;
	int fd = -1;
	rc = shm_fd_recv(c->fd, c->rx.data + c->rx.len, c->rx.cap - c->rx.len, &n, &fd);
	if (rc == HERD_E_PROTO)
		return rc; /* several descriptors at once: not from a broker */
	if (rc)
		return rc;
	if (fd >= 0) {
		if (c->n_fds < MAX_PENDING_FDS)
			c->fds[c->n_fds++] = fd;
		else
			close(fd);
	}
	if (n == 0)
		return -ECONNRESET; /* orderly shutdown by the broker */
	c->rx.len += (size_t)n;
	return 0;
}

/* Receives the next frame into *msg (strings point into c->rx until the
 * next call). Returns 0 or an error with the message set; connection
 * errors mark the client broken. */
static int recv_frame(herd_client *c, double deadline, proto_msg *msg)
{
	char err[256];
	size_t n;
	int rc;

	proto_buf_consume(&c->rx, c->rx_used);
	c->rx_used = 0;
	for (;;) {
		rc = proto_frame_next(c->rx.data, c->rx.len, c->max_frame, &n);
		if (rc == PROTO_FRAME_READY)
			break;
		if (rc < 0)
			return broken(c, herd_client_fail(c, HERD_E_PROTO,
							  "broker sent a frame of %zu bytes (limit %u)",
							  n, c->max_frame));
		rc = recv_some(c, deadline);
		if (rc == -ETIMEDOUT)
			return herd_client_fail(c, rc, "no answer from the broker at %s within %d ms",
						c->path, c->timeout_ms);
		if (rc == -ECONNRESET)
			return broken(c, herd_client_fail(c, rc, "broker closed the connection (%s)",
							  c->path));
		if (rc == HERD_E_PROTO)
			return broken(c, herd_client_fail(c, rc, "broker sent several file descriptors "
							  "at once"));
		if (rc)
			return broken(c, herd_client_fail(c, rc, "cannot read from the broker at %s: %s",
							  c->path, herd_strerror(rc)));
	}
	rc = proto_decode(c->rx.data + PROTO_HDR_SIZE, n, msg, err, sizeof(err));
	c->rx_used = PROTO_HDR_SIZE + n;
	if (rc == HERD_E_PROTO)
		return broken(c, herd_client_fail(c, rc, "malformed frame from the broker: %s", err));
	if (rc)
		return herd_client_fail(c, rc, "cannot decode a frame: %s", herd_strerror(rc));
	return 0;
}

/* ---- connect --------------------------------------------------------------- */

static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void free_models(herd_client *c)
{
	free(c->models);
	free(c->model_strs);
	c->models = NULL;
	c->model_strs = NULL;
	c->n_models = 0;
}

/* Copies welcome's model list into c (strings NUL-terminated). */
static int keep_models(herd_client *c, const proto_welcome *w)
{
	size_t bytes = 0;
	free_models(c);
	for (size_t i = 0; i < w->n_models; i++)
		bytes += w->models[i].name.len + w->models[i].digest.len +
			 w->models[i].segment.len + 3;
	if (!w->n_models)
		return 0;
	c->models = calloc(w->n_models, sizeof(*c->models));
	c->model_strs = malloc(bytes);
	if (!c->models || !c->model_strs) {
		free_models(c);
		return -ENOMEM;
	}
	char *p = c->model_strs;
	for (size_t i = 0; i < w->n_models; i++) {
		const proto_model_info *s = &w->models[i];
		herd_model_info *d = &c->models[i];
		const proto_str *src[3] = {&s->name, &s->digest, &s->segment};
		const char **dst[3] = {&d->name, &d->digest, &d->segment};
		for (int j = 0; j < 3; j++) {
			if (src[j]->len)
				memcpy(p, src[j]->ptr, src[j]->len);
			p[src[j]->len] = 0;
			*dst[j] = p;
			p += src[j]->len + 1;
		}
		d->n_vocab = s->n_vocab;
		d->n_ctx = s->n_ctx;
		d->image_bytes = s->image_bytes;
	}
	c->n_models = w->n_models;
	return 0;
}

static int open_socket(herd_client *c, double deadline)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(c->path) >= sizeof(sa.sun_path))
		return herd_client_fail(c, -ENAMETOOLONG,
					"socket path %s is too long for a Unix socket (%zu bytes max)",
					c->path, sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return herd_client_fail(c, -errno, "socket: %s", strerror(errno));
	int rc;
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		rc = -errno;
		if (rc == -EINTR)
			continue;
		if (rc == -EAGAIN && (deadline < 0 || clock_mono_ms() < deadline)) {
			/* listen backlog full: the broker is busy accepting */
			struct timespec ts = {0, 5 * 1000 * 1000};
			nanosleep(&ts, NULL);
			continue;
		}
		close(fd);
		switch (rc) {
		case -ENOENT:
			return herd_client_fail(c, rc, "no broker is running at %s (no such socket; "
						"start herdd or set HERD_SOCKET)", c->path);
		case -ECONNREFUSED:
			return herd_client_fail(c, rc, "no broker is running at %s (connection refused: "
						"stale socket of a broker that exited?)", c->path);
		case -EACCES:
		case -EPERM:
			return herd_client_fail(c, rc, "permission denied connecting to %s (is this "
						"user in the broker's group?)", c->path);
		case -EAGAIN:
			return herd_client_fail(c, -ETIMEDOUT, "broker at %s did not accept the "
						"connection within %d ms", c->path, c->timeout_ms);
		default:
			return herd_client_fail(c, rc, "cannot connect to %s: %s", c->path,
						strerror(-rc));
		}
	}
	/* blocking from here on; reads use poll when they have a deadline */
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		rc = -errno;
		close(fd);
		return herd_client_fail(c, rc, "fcntl: %s", strerror(-rc));
	}
	pthread_mutex_lock(&c->send_mu);
	c->fd = fd;
	pthread_mutex_unlock(&c->send_mu);
	return 0;
}

static int do_connect(herd_client *c)
{
	double deadline = c->timeout_ms < 0 ? -1 : clock_mono_ms() + c->timeout_ms;
	proto_msg msg;
	char defname[32];
	int rc;

	c->errmsg[0] = 0;
	drop_connection(c);
	free_models(c);
	c->agent_id = 0;
	if ((rc = open_socket(c, deadline)))
		return rc;
	if (!c->name)
		snprintf(defname, sizeof(defname), "pid-%ld", (long)getpid());
	proto_hello h = {HERD_PROTOCOL_VERSION, proto_s(c->name ? c->name : defname), c->priority};
	if ((rc = proto_encode_hello(&c->tx, &h)))
		goto fail;
	if ((rc = send_tx(c)))
		goto fail;
	for (;;) {
		if ((rc = recv_frame(c, deadline, &msg))) {
			if (rc == -ETIMEDOUT)
				herd_client_fail(c, rc, "broker at %s did not answer hello within %d ms",
						 c->path, c->timeout_ms);
			goto fail;
		}
		if (msg.type == PROTO_ERR) {
			rc = msg.err.code < 0 ? msg.err.code : HERD_E_PROTO;
			herd_client_fail(c, rc, "broker at %s refused the connection: %.*s", c->path,
					 (int)msg.err.msg.len, msg.err.msg.ptr ? msg.err.msg.ptr : "");
			proto_msg_free(&msg);
			goto fail;
		}
		if (msg.type == PROTO_WELCOME)
			break;
		proto_msg_free(&msg); /* anything else before welcome is ignored */
	}
	if (msg.welcome.v != HERD_PROTOCOL_VERSION) {
		rc = herd_client_fail(c, HERD_E_VERSION,
				      "broker at %s speaks protocol version %u, this libherd %d",
				      c->path, msg.welcome.v, HERD_PROTOCOL_VERSION);
		proto_msg_free(&msg);
		goto fail;
	}
	c->agent_id = msg.welcome.agent;
	c->broker_max_frame = msg.welcome.max_frame;
	c->broker_max_tokens = msg.welcome.max_tokens;
	rc = keep_models(c, &msg.welcome);
	proto_msg_free(&msg);
	if (rc) {
		herd_client_fail(c, rc, "out of memory");
		goto fail;
	}
	c->connected = 1;
	return 0;
fail:
	if (!c->errmsg[0])
		herd_client_fail(c, rc, "cannot connect to %s: %s", c->path, herd_strerror(rc));
	drop_connection(c);
	return rc;
}

int herd_connect(herd_client **out, const herd_connect_opts *o)
{
	herd_connect_opts defaults;
	char path[256];
	int rc;

	if (!out)
		return HERD_E_INVAL;
	*out = NULL;
	if (!o) {
		herd_connect_opts_init(&defaults);
		o = &defaults;
	}
	herd_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	pthread_mutex_init(&c->send_mu, NULL);
	atomic_init(&c->busy, 0);
	atomic_init(&c->next_id, 1);
	atomic_init(&c->cur_id, 0);
	proto_buf_init(&c->rx);
	proto_buf_init(&c->tx);
	c->priority = o->priority;
	c->timeout_ms = o->timeout_ms ? o->timeout_ms : HERD_DEFAULT_TIMEOUT_MS;
	c->max_frame = o->max_frame ? o->max_frame : DEFAULT_MAX_FRAME;
	if (o->socket_path)
		c->path = strdup(o->socket_path);
	else if ((rc = herd_default_socket_path(path, sizeof(path))) >= 0)
		c->path = strdup(path);
	else
		c->path = strdup("(default socket path too long)");
	c->name = dup_str(o->name);
	if (!c->path || (o->name && !c->name)) {
		herd_close(c);
		return -ENOMEM;
	}
	*out = c;
	return do_connect(c);
}

int herd_reconnect(herd_client *c)
{
	if (!c)
		return HERD_E_INVAL;
	return do_connect(c);
}

void herd_close(herd_client *c)
{
	if (!c)
		return;
	drop_connection(c);
	free_models(c);
	proto_buf_fini(&c->rx);
	proto_buf_fini(&c->tx);
	pthread_mutex_destroy(&c->send_mu);
	free(c->path);
	free(c->name);
	free(c);
}

/* ---- requests -------------------------------------------------------------- */

void herd_request_init(herd_request *r)
{
	memset(r, 0, sizeof(*r));
	r->max_tokens = GEN_DEFAULT_MAX_TOKENS;
	r->top_p = 1.0f;
	r->repeat_penalty = 1.0f;
	r->priority = HERD_PRIORITY_DEFAULT;
}

const char *herd_finish_name(herd_finish f)
{
	return proto_finish_name(f); /* the wire's names; "none" otherwise */
}

void herd_result_free(herd_result *r)
{
	if (!r)
		return;
	free(r->text);
	memset(r, 0, sizeof(*r));
}

int herd_request_check(const herd_request *r, int need_model, char *err, size_t errlen)
{
	const char *why = NULL;
	int inputs = (r->prompt != NULL) + (r->tokens != NULL) + (r->messages != NULL);
	if (need_model && (!r->model || !*r->model))
		why = "no model named";
	else if (inputs != 1)
		why = inputs ? "more than one of prompt, tokens and messages set"
			     : "none of prompt, tokens and messages set";
	else if (r->messages && !r->n_messages)
		why = "messages set but n_messages is 0";
	else if (r->max_tokens < 0)
		why = "negative max_tokens";
	else if (r->n_tokens > PROTO_MAX_TOKENS)
		why = "too many prompt tokens";
	else if (r->n_messages > PROTO_MAX_MESSAGES)
		why = "too many messages";
	else if (r->n_stop > PROTO_MAX_STOP)
		why = "too many stop strings";
	else if (r->n_stop && !r->stop)
		why = "n_stop set but stop is NULL";
	for (size_t i = 0; !why && r->messages && i < r->n_messages; i++)
		if (!r->messages[i].role || !r->messages[i].content)
			why = "a message without role or content";
	for (size_t i = 0; !why && i < r->n_tokens; i++)
		if (r->tokens[i] < 0)
			why = "a negative token id";
	for (size_t i = 0; !why && i < r->n_stop; i++)
		if (!r->stop[i] || !*r->stop[i])
			why = "an empty stop string";
	if (!why)
		return 0;
	snprintf(err, errlen, "invalid request: %s", why);
	return HERD_E_INVAL;
}

static gen_str view_of(const char *s)
{
	return (gen_str){s, s ? strlen(s) : 0};
}

int herd_request_describe(const herd_request *r, gen_request *g, void **scratch)
{
	const size_t bytes = sizeof(gen_msg) * r->n_messages + sizeof(gen_str) * r->n_stop;
	gen_request_init(g);
	*scratch = NULL;
	if (bytes && !(*scratch = malloc(bytes)))
		return -ENOMEM;
	gen_msg *msgs = *scratch;
	gen_str *stop = (gen_str *)(msgs + r->n_messages);
	g->id = r->id;
	g->model = view_of(r->model);
	if (r->prompt) {
		g->input = GEN_INPUT_PROMPT;
		g->prompt = view_of(r->prompt);
	} else if (r->tokens) {
		g->input = GEN_INPUT_TOKENS;
		g->tokens = r->tokens;
		g->n_tokens = r->n_tokens;
	} else {
		g->input = GEN_INPUT_MESSAGES;
		for (size_t i = 0; i < r->n_messages; i++)
			msgs[i] = (gen_msg){view_of(r->messages[i].role), view_of(r->messages[i].content)};
		g->messages = msgs;
		g->n_messages = r->n_messages;
	}
	for (size_t i = 0; i < r->n_stop; i++)
		stop[i] = view_of(r->stop[i]);
	g->params = (gen_params){.max_tokens = r->max_tokens, .sampling = g->params.sampling,
				 .stop = r->n_stop ? stop : NULL, .n_stop = r->n_stop,
				 .deadline_ms = r->deadline_ms};
	g->params.sampling.temperature = r->temperature;
	g->params.sampling.top_k = r->top_k;
	g->params.sampling.top_p = r->top_p;
	g->params.sampling.min_p = r->min_p;
	g->params.sampling.repeat_penalty = r->repeat_penalty;
	g->params.sampling.seed = r->seed;
	g->has_prio = r->priority != HERD_PRIORITY_DEFAULT;
	g->prio = r->priority;
	g->cache = !r->no_cache; /* the broker's response cache */
	return 0;
}

/* Claims c's in-flight slot. */
static int begin_request(herd_client *c)
{
	int expect = 0;
	if (!atomic_compare_exchange_strong(&c->busy, &expect, 1))
		return herd_client_fail(c, -EBUSY, "another request is in flight on this client");
	c->errmsg[0] = 0;
	if (!c->connected || c->fd < 0) {
		atomic_store(&c->busy, 0);
		return herd_client_fail(c, -ENOTCONN,
					"not connected to the broker at %s (herd_reconnect first)",
					c->path);
	}
	return 0;
}

static void end_request(herd_client *c)
{
	atomic_store(&c->cur_id, 0);
	atomic_store(&c->busy, 0);
}

int herd_cancel(herd_client *c, uint64_t id)
{
	proto_buf b;
	int rc;
	if (!c)
		return HERD_E_INVAL;
	if (!id)
		id = atomic_load(&c->cur_id);
	if (!id)
		return 0; /* nothing in flight */
	proto_buf_init(&b);
	proto_cancel m = {id};
	if ((rc = proto_encode_cancel(&b, &m)))
		goto out;
	pthread_mutex_lock(&c->send_mu);
	rc = c->fd >= 0 ? send_locked(c->fd, b.data, b.len) : -ENOTCONN;
	pthread_mutex_unlock(&c->send_mu);
	if (rc == -EPIPE)
		rc = -ECONNRESET;
out:
	proto_buf_fini(&b);
	return rc;
}

/* Encodes req as a `gen` frame (stream as given) and sends it; *id gets
 * the request id. Returns 0 or an error with the message set. */
static int send_gen(herd_client *c, const herd_request *req, int stream, uint64_t *id)
{
	gen_request g;
	void *scratch;
	int rc = herd_request_describe(req, &g, &scratch);
	if (rc)
		return herd_client_fail(c, rc, "out of memory");
	g.id = req->id ? req->id : herd_request_id(c);
	g.stream = stream;
	*id = g.id;
	c->tx.len = 0;
	rc = proto_encode_gen(&c->tx, &g);
	free(scratch);
	if (rc)
		return herd_client_fail(c, rc, "cannot encode the request: %s", herd_strerror(rc));
	if (c->tx.len - PROTO_HDR_SIZE > c->broker_max_frame && c->broker_max_frame) {
		rc = herd_client_fail(c, HERD_E_INVAL, "request of %zu bytes exceeds the broker's "
				      "frame limit (%u bytes)", c->tx.len, c->broker_max_frame);
		c->tx.len = 0;
		return rc;
	}
	atomic_store(&c->cur_id, g.id);
	return send_tx(c);
}

/* A request being received: its text and whether a cancel went out. */
typedef struct rx_req {
	uint64_t id;
	int stream;
	herd_token_cb cb;
	void *user;
	herd_text text;
	int cancelled;
	int rc;          /* a local error kept while reading on to `done` */
} rx_req;

/* A `tok` of the request: text, callback, cancel. Returns 0, or an error
 * that ends the request (the cancel could not be sent). */
static int on_tok(herd_client *c, rx_req *q, const proto_tok *t)
{
	int rc = herd_text_append(&q->text, t->text.ptr, t->text.len);
	if (rc) {
		q->rc = rc;
		herd_client_fail(c, rc, "out of memory");
		/* keep reading until done so the connection stays in sync */
		if (!q->cancelled)
			herd_cancel(c, q->id);
		q->cancelled = 1;
		return 0;
	}
	if (!q->cb || q->cancelled || !q->cb(q->user, t->text.ptr ? t->text.ptr : "", t->text.len, t->tok))
		return 0;
	q->cancelled = 1;
	int crc = herd_cancel(c, q->id);
	if (crc)
		return broken(c, herd_client_fail(c, crc,
						  "cannot send cancel: broker closed the connection"));
	return 0;
}

/* The request's `done`: fills res (not its text). Returns the kept error,
 * or 0. */
static int on_done(herd_client *c, rx_req *q, const proto_done *d, herd_result *res)
{
	int rc = q->rc;
	res->reason = d->reason; /* herd_finish on both sides of the codec */
	res->n_prompt = d->n_prompt;
	res->n_gen = d->n_gen;
	res->n_cached = d->n_cached;
	res->t_queue_ms = d->t_queue_ms;
	res->t_first_ms = d->t_first_ms;
	res->t_total_ms = d->t_total_ms;
	res->merged = d->merged;
	res->cached = d->cached;
	if (!rc && d->has_text && !q->stream) {
		q->text.len = 0;
		rc = herd_text_append(&q->text, d->text.ptr, d->text.len);
	} else if (!rc) {
		rc = herd_text_append(&q->text, "", 0);
	}
	if (rc)
		herd_client_fail(c, rc, "out of memory");
	return rc;
}

/* The broker's `err` for the request (or the connection). */
static int on_err(herd_client *c, const proto_err *e)
{
	int rc = e->code < 0 ? e->code : HERD_E_PROTO;
	herd_client_fail(c, rc, "broker: %.*s", (int)e->msg.len, e->msg.ptr ? e->msg.ptr : "");
	if (!e->has_id && (rc == HERD_E_PROTO || rc == HERD_E_VERSION))
		broken(c, rc); /* the broker closes the connection after these */
	return rc;
}

/* Reads frames until the request's `done` or `err`. */
static int recv_until_done(herd_client *c, rx_req *q, herd_result *res)
{
	proto_msg msg;
	int rc;
	for (;;) {
		if ((rc = recv_frame(c, -1, &msg))) {
			if (rc == -ECONNRESET)
				herd_client_fail(c, rc, "broker closed the connection during request %llu",
						 (unsigned long long)q->id);
			return rc;
		}
		close_fds(c); /* no frame of a request carries descriptors */
		int end = 1;
		if (msg.type == PROTO_TOK && msg.tok.id == q->id)
			end = (rc = on_tok(c, q, &msg.tok)) != 0;
		else if (msg.type == PROTO_DONE && msg.done.id == q->id)
			rc = on_done(c, q, &msg.done, res);
		else if (msg.type == PROTO_ERR && (!msg.err.has_id || msg.err.id == q->id))
			rc = on_err(c, &msg.err);
		else
			end = 0; /* frames of other (earlier, cancelled) requests are dropped */
		proto_msg_free(&msg);
		if (end)
			return rc;
	}
}

static int run_request(herd_client *c, const herd_request *req, int stream, herd_token_cb cb,
		       void *user, herd_result *res)
{
	rx_req q = {.stream = stream, .cb = cb, .user = user};
	int rc;

	if (res)
		memset(res, 0, sizeof(*res));
	if (!c || !req || !res)
		return c ? herd_client_fail(c, HERD_E_INVAL, "NULL request or result") : HERD_E_INVAL;
	if ((rc = begin_request(c)))
		return rc;
	if (!(rc = herd_request_check(req, 1, c->errmsg, sizeof(c->errmsg))) &&
	    !(rc = send_gen(c, req, stream, &q.id))) {
		res->id = q.id;
		rc = recv_until_done(c, &q, res);
	}
	if (rc == 0) {
		res->text = q.text.p;
		res->text_len = q.text.len;
	} else {
		free(q.text.p);
		memset(res, 0, sizeof(*res));
	}
	end_request(c);
	return rc;
}

int herd_generate(herd_client *c, const herd_request *req, herd_result *res)
{
	return run_request(c, req, 0, NULL, NULL, res);
}

int herd_generate_stream(herd_client *c, const herd_request *req, herd_token_cb cb, void *user,
			 herd_result *res)
{
	return run_request(c, req, 1, cb, user, res);
}

/* ---- attach ----------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, proto_str s)
{
	size_t k = s.len < n - 1 ? s.len : n - 1;
	if (k)
		memcpy(dst, s.ptr, k);
	dst[k] = 0;
}

/* An err frame from the broker that answers what this client asked (an
 * attach or a share): its code (the message set), msg freed. */
static int broker_err(herd_client *c, proto_msg *msg)
{
	const int rc = msg->err.code < 0 ? msg->err.code : HERD_E_PROTO;
	herd_client_fail(c, rc, "broker: %.*s", (int)msg->err.msg.len,
			 msg->err.msg.ptr ? msg->err.msg.ptr : "");
	if (!msg->err.has_id && (rc == HERD_E_PROTO || rc == HERD_E_VERSION))
		broken(c, rc); /* the broker closes the connection after these */
	proto_msg_free(msg);
	return rc;
}

int herd_client_request_image(herd_client *c, const char *model, herd_image_reply *out)
{
	proto_msg msg;
	int rc;

	out->fd = -1;
	if ((rc = begin_request(c)))
		return rc;
	close_fds(c);
	proto_attach a = {proto_s(model)};
	c->tx.len = 0;
	if ((rc = proto_encode_attach(&c->tx, &a))) {
		herd_client_fail(c, rc, "cannot encode attach: %s", herd_strerror(rc));
		goto out;
	}
	if ((rc = send_tx(c)))
		goto out;
	for (;;) {
		if ((rc = recv_frame(c, -1, &msg))) {
			if (rc == -ECONNRESET)
				herd_client_fail(c, rc, "broker closed the connection while attaching '%s'",
						 model);
			goto out;
		}
		if (msg.type == PROTO_IMAGE) {
			if (!proto_str_eq(msg.image.model, model)) {
				rc = herd_client_fail(c, HERD_E_PROTO,
						      "broker sent the image of '%.*s' for '%s'",
						      (int)msg.image.model.len, msg.image.model.ptr, model);
				close_fds(c);
				proto_msg_free(&msg);
				goto out;
			}
			if (!c->n_fds) {
				rc = herd_client_fail(c, HERD_E_PROTO, "image frame for '%s' arrived "
						      "without a file descriptor", model);
				proto_msg_free(&msg);
				goto out;
			}
			out->fd = c->fds[0];
			for (int i = 1; i < c->n_fds; i++)
				close(c->fds[i]);
			c->n_fds = 0;
			out->size = msg.image.size;
			copy_str(out->segment, sizeof(out->segment), msg.image.segment);
			copy_str(out->digest, sizeof(out->digest), msg.image.digest);
			proto_msg_free(&msg);
			break;
		}
		if (msg.type == PROTO_ERR) {
			rc = broker_err(c, &msg);
			goto out;
		}
		close_fds(c);
		proto_msg_free(&msg);
	}
out:
	end_request(c);
	return rc;
}

/* ---- share ------------------------------------------------------------------ */

/* The share frame for name and targets in c->tx. */
static int encode_share(herd_client *c, const char *name, const char *const *targets)
{
	proto_str t[PROTO_MAX_TARGETS];
	size_t n = 0;
	for (; targets && targets[n]; n++) {
		if (n == PROTO_MAX_TARGETS)
			return herd_client_fail(c, HERD_E_INVAL, "share: more than %d targets",
						PROTO_MAX_TARGETS);
		t[n] = proto_s(targets[n]);
	}
	proto_share sh = {.name = proto_s(name), .targets = t, .n_targets = n};
	c->tx.len = 0;
	int rc = proto_encode_share(&c->tx, &sh);
	return rc ? herd_client_fail(c, rc, "cannot encode share: %s", herd_strerror(rc)) : 0;
}

int herd_model_share_fd(herd_client *c, const char *name, int fd, const char *const *targets,
			uint64_t *size)
{
	if (!c || !name || fd < 0)
		return c ? herd_client_fail(c, HERD_E_INVAL, "share: NULL name or bad descriptor")
			 : HERD_E_INVAL;
	int rc = begin_request(c);
	if (rc)
		return rc;
	if ((rc = encode_share(c, name, targets)))
		goto out;
	pthread_mutex_lock(&c->send_mu);
	rc = c->fd >= 0 ? shm_fd_send(c->fd, c->tx.data, c->tx.len, fd) : -ENOTCONN;
	pthread_mutex_unlock(&c->send_mu);
	c->tx.len = 0;
	if (rc) {
		rc = broken(c, herd_client_fail(c, rc, "cannot send share to the broker at %s: %s", c->path,
						herd_strerror(rc)));
		goto out;
	}
	for (;;) {
		proto_msg msg;
		if ((rc = recv_frame(c, -1, &msg)))
			break;
		close_fds(c);
		if (msg.type == PROTO_ERR) {
			rc = broker_err(c, &msg);
			break;
		}
		const int mine = msg.type == PROTO_SHARED && proto_str_eq(msg.shared.model, name);
		if (mine && size)
			*size = msg.shared.size;
		proto_msg_free(&msg);
		if (mine)
			break;
	}
out:
	end_request(c);
	return rc;
}

int herd_model_share(herd_client *c, const char *name, const char *path, const char *const *targets,
		     uint64_t *size)
{
	if (!c || !path)
		return c ? herd_client_fail(c, HERD_E_INVAL, "share: NULL path") : HERD_E_INVAL;
	const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return herd_client_fail(c, -errno, "share: cannot open %s: %s", path, strerror(errno));
	const int rc = herd_model_share_fd(c, name, fd, targets, size);
	close(fd);
	return rc;
}
