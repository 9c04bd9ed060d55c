/* The HTTP server: libmicrohttpd in external epoll mode on the loop thread,
 * routing, bearer tokens, Host/Origin checks, bounded bodies, the HTTP
 * agents and the streaming of scheduler events. See http.h. */
#include "http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "herd/error.h"

#define HTTP_BACKLOG 512
#define HTTP_STREAM_BLOCK 4096
#define HTTP_AGENT_IDLE_MS 300000.0 /* an HTTP agent with nothing in flight is forgotten after */
#define HTTP_UI_PERIOD_MS 1000.0

static const http_route routes[] = {
	{"GET", "/healthz", stats_healthz, HK_NONE, 1},
	{"GET", "/readyz", stats_readyz, HK_NONE, 1},
	{"GET", "/metrics", stats_metrics, HK_NONE, 0},
	{"GET", "/api/v1/cache/stats", stats_cache, HK_NONE, 0},
	{"GET", "/api/v1/batch/metrics", stats_batch, HK_NONE, 0},
	{"GET", "/v1/models", stats_oai_models, HK_NONE, 0},
	{"POST", "/v1/chat/completions", NULL, HK_OAI_CHAT, 0},
	{"POST", "/v1/completions", NULL, HK_OAI_COMPLETE, 0},
	{"POST", "/api/generate", NULL, HK_OLL_GENERATE, 0},
	{"POST", "/api/chat", NULL, HK_OLL_CHAT, 0},
	{"GET", "/api/tags", stats_tags, HK_NONE, 0},
	{"GET", "/api/ps", stats_ps, HK_NONE, 0},
	{"POST", "/api/show", stats_show, HK_NONE, 0},
	{"GET", "/api/version", stats_healthz, HK_NONE, 1},
	{"GET", "/ui", ui_page, HK_NONE, 1},
	{"GET", "/ui/chart.js", ui_chartjs, HK_NONE, 1},
	{"GET", "/ui/events", NULL, HK_UI_EVENTS, 0},
};
#define N_ROUTES ((int)(sizeof(routes) / sizeof(routes[0])))

/* ---- replies ------------------------------------------------------------ */

static void count_status(http *h, int status)
{
	h->n_requests++;
	if (status >= 100 && status < 600)
		h->n_status[status / 100]++;
}

static int queue(http_req *r, int status, struct MHD_Response *resp, const char *ctype)
{
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", ctype);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (status == 401)
		MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"herd\"");
	const int rc = MHD_queue_response(r->mc, (unsigned)status, resp);
	MHD_destroy_response(resp);
	count_status(r->h, status);
	return rc;
}

int http_reply(http_req *r, int status, const char *ctype, const char *body, size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	return queue(r, status, resp, ctype);
}

int http_reply_json(http_req *r, int status, json_object *o)
{
	if (!o)
		return http_reply(r, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	int rc = http_reply(r, status, "application/json", s, strlen(s));
	json_object_put(o);
	return rc;
}

/* {"error": {"message", "type", "param", "code"}} for the OpenAI routes,
 * {"error": "..."} for the others. */
json_object *http_error_object(const http_req *r, int status, const char *param, const char *msg)
{
	json_object *o = json_object_new_object();
	if (r->kind == HK_OAI_CHAT || r->kind == HK_OAI_COMPLETE) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "message", json_object_new_string(msg));
		json_object_object_add(e, "type", json_object_new_string(
			status == 401 ? "authentication_error" : status == 429 ? "rate_limit_error"
			: status >= 500 ? "server_error" : "invalid_request_error"));
		json_object_object_add(e, "param", param ? json_object_new_string(param) : NULL);
		json_object_object_add(e, "code", status == 404 && param && !strcmp(param, "model")
							? json_object_new_string("model_not_found") : NULL);
		json_object_object_add(o, "error", e);
	} else {
		json_object_object_add(o, "error", json_object_new_string(msg));
	}
	return o;
}

int http_reply_error(http_req *r, int status, const char *param, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (status == 400)
		r->h->n_bad_json++;
	return http_reply_json(r, status, http_error_object(r, status, param, msg));
}

int http_out(http_req *r, const char *p, size_t n)
{
	if (r->out_off && r->out_off == r->out_len)
		r->out_off = r->out_len = 0;
	if (r->out_len + n + 1 > r->out_cap) {
		size_t cap = r->out_cap ? r->out_cap : 1024;
		while (cap < r->out_len + n + 1)
			cap *= 2;
		char *nb = realloc(r->out, cap);
		if (!nb)
			return -ENOMEM;
		r->out = nb;
		r->out_cap = cap;
	}
	memcpy(r->out + r->out_len, p, n);
	r->out_len += n;
	r->out[r->out_len] = 0;
	return 0;
}

int http_out_json(http_req *r, const char *prefix, json_object *o, const char *suffix)
{
	if (!o)
		return -ENOMEM;
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	int rc = http_out(r, prefix, strlen(prefix));
	if (!rc)
		rc = http_out(r, s, strlen(s));
	if (!rc)
		rc = http_out(r, suffix, strlen(suffix));
	json_object_put(o);
	return rc;
}

int http_status_for(int code)
{
	switch (code) {
	case HERD_E_LIMIT: return 429;
	case HERD_E_MISSING: return 404;
	case HERD_E_INVAL: case HERD_E_NOSPACE: case HERD_E_PROTO: case HERD_E_RANGE: return 400;
	case -EAGAIN: case HERD_E_CANCELLED: case HERD_E_UNTRUSTED: return 503;
	default: return 500;
	}
}

/* ---- streams ---------------------------------------------------------------- */

static void req_wake(http_req *r)
{
	if (r->suspended) {
		r->suspended = 0;
		r->h->resumed = 1;
		MHD_resume_connection(r->mc);
	}
}

/* MHD asks for the next bytes of a streamed reply: what is buffered, the
 * end once the request finished, else the connection sleeps until the
 * next event (http_deliver resumes it). */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	http_req *r = cls;
	const size_t avail = r->out_len - r->out_off;
	if (avail) {
		const size_t n = avail < max ? avail : max;
		memcpy(buf, r->out + r->out_off, n);
		r->out_off += n;
		return (ssize_t)n;
	}
	if (r->finished)
		return r->status >= 500 ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
	MHD_suspend_connection(r->mc);
	r->suspended = 1;
	return 0;
}

int http_stream_start(http_req *r, const char *ctype)
{
	r->h->n_streams++;
	struct MHD_Response *resp =
		MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, stream_read, r, NULL);
	if (resp)
		MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	return queue(r, 200, resp, ctype);
}

static http_req *req_find(http *h, uint64_t conn_id)
{
	for (http_req *r = h->reqs; r; r = r->next)
		if (r->conn_id == conn_id)
			return r;
	return NULL;
}

void http_deliver(http *h, const sched_event *e)
{
	http_req *r = req_find(h, e->conn);
	if (!r || r->finished)
		return;
	if (e->type != SCHED_EV_TOK) {
		r->finished = 1;
		r->agent->c.in_flight--;
		r->agent->c.n_tokens += (uint64_t)e->n_gen;
	}
	if (e->type == SCHED_EV_TOK)
		api_tok(r, e);
	else if (e->type == SCHED_EV_DONE)
		api_done(r, e);
	else
		api_err(r, e);
	const cfg_limits *L = &h->l->cfg->limits;
	if (!r->finished && r->out_len - r->out_off > L->send_queue_bytes) {
		/* the client does not read: cut off, as a socket agent would be */
		models_cancel_conn(h->l->models, r->conn_id);
		r->agent->c.in_flight--;
		r->finished = 1;
		r->status = 500;
		h->l->lim.sendq_cutoffs++;
	}
	req_wake(r);
}

/* ---- agents ------------------------------------------------------------------ */

/* Forgets agents with nothing in flight that were idle for a while. */
static void agents_reap(http *h, double now)
{
	for (http_agent **p = &h->agents; *p;) {
		http_agent *a = *p;
		if (a->c.in_flight == 0 && now - a->t_last > HTTP_AGENT_IDLE_MS) {
			*p = a->next;
			free(a);
			h->n_agents--;
		} else {
			p = &a->next;
		}
	}
}

/* r's agent: one per (token, client), made on first use. NULL when the
 * table is full (limits.max_connections agents) or out of memory. */
static http_agent *agent_for(http_req *r)
{
	http *h = r->h;
	char key[HTTP_AGENT_KEY_MAX];
	snprintf(key, sizeof(key), "%s/%s", r->principal, r->client);
	const double now = clock_mono_ms();
	for (http_agent *a = h->agents; a; a = a->next)
		if (!strcmp(a->key, key)) {
			a->t_last = now;
			return a;
		}
	if (h->n_agents >= h->l->cfg->limits.max_connections)
		return NULL;
	http_agent *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	snprintf(a->key, sizeof(a->key), "%s", key);
	a->c.fd = -1;
	a->c.uid = (uid_t)-1;
	a->c.gid = (gid_t)-1;
	a->c.budget = -1;
	a->c.hello = 1; /* its name is known: agents.prio rules by name apply */
	if (r->principal[0])
		snprintf(a->c.name, sizeof(a->c.name), "%s", r->principal);
	else
		snprintf(a->c.name, sizeof(a->c.name), "http:%.50s", r->client);
	a->c.t_connect = a->t_last = now;
	session_agent(h->l, &a->c);
	/* trust domain of its token (kind 3), or one for every unauthenticated client */
	a->c.domain = 3ull << 32 | (uint32_t)(r->principal_idx >= 0 ? r->principal_idx : -1);
	a->next = h->agents;
	h->agents = a;
	h->n_agents++;
	return a;
}

int http_submit(http_req *r, const gen_request *g, char *why, size_t n)
{
	http_agent *a = r->agent ? r->agent : agent_for(r);
	if (!a)
		return herd_errf(why, n, HERD_E_LIMIT, "too many HTTP agents (limits.max_connections %d)",
				 r->h->l->cfg->limits.max_connections);
	r->agent = a;
	r->conn_id = HTTP_CONN_BIT | ++r->h->serial;
	int rc = session_submit(r->h->l, &a->c, r->conn_id, g, why, n);
	if (!rc) {
		r->submitted = 1;
		r->t0 = clock_mono_ms();
	}
	return rc;
}

/* ---- requests ------------------------------------------------------------ */

/* Constant-time comparison of a presented token with a configured one. */
static int token_eq(const char *a, size_t alen, const char *b)
{
	const size_t blen = strlen(b);
	unsigned char d = alen != blen;
	for (size_t i = 0; i < blen; i++)
		d |= (unsigned char)(b[i] ^ (i < alen ? a[i] : 0));
	return d == 0;
}

/* The token r presents (Authorization: Bearer ...): its index, or -1. */
static int find_token(http_req *r)
{
	const char *v = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Authorization");
	if (!v || strncasecmp(v, "Bearer ", 7))
		return -1;
	v += 7;
	const cfg_http *ch = &r->h->l->cfg->http;
	int found = -1;
	for (int i = 0; i < ch->n_tokens; i++) /* every token compared: no early exit */
		if (token_eq(v, strlen(v), ch->tokens[i].token))
			found = i;
	return found;
}

/* A loopback listener answers only Host names of the loopback (so that a
 * web page cannot reach it through DNS rebinding), and a browser's
 * cross-origin request is refused whatever the listener. */
static const char *bad_origin(http_req *r)
{
	const char *host = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Host");
	if (host && r->h->loopback) {
		static const char *const ok[] = {"127.0.0.1", "localhost", "[::1]"};
		int good = 0;
		for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
			size_t n = strlen(ok[i]);
			good |= !strncasecmp(host, ok[i], n) && (host[n] == 0 || host[n] == ':');
		}
		if (!good)
			return "the Host header does not name a loopback address";
	}
	const char *origin = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Origin");
	if (origin && (!host || strncmp(origin, "http://", 7) || strcasecmp(origin + 7, host)))
		return "cross-origin requests are refused";
	return NULL;
}

/* The client part of r's agent: the X-Herd-Agent header ([A-Za-z0-9._:+-],
 * up to 63 bytes), else the peer's address. */
static void client_of(http_req *r)
{
	const char *v = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "X-Herd-Agent");
	size_t n = 0;
	for (; v && v[n] && n < sizeof(r->client) - 1; n++) {
		const char ch = v[n];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      strchr("._:+-", ch)))
			break;
	}
	if (v && n > 0 && !v[n]) {
		memcpy(r->client, v, n);
		r->client[n] = 0;
		return;
	}
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(r->client, sizeof(r->client), "?");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client, sizeof(r->client));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client, sizeof(r->client));
}

/* First call for a request: route, checks (done before the body is read;
 * a refusal is answered once it has been). */
static http_req *req_new(http *h, struct MHD_Connection *mc, const char *url, const char *method)
{
	http_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->h = h;
	r->mc = mc;
	r->route = -1;
	r->principal = "";
	r->principal_idx = -1;
	r->next = h->reqs;
	h->reqs = r;
	int path_known = 0;
	for (int i = 0; i < N_ROUTES; i++)
		if (!strcmp(url, routes[i].path)) {
			path_known = 1;
			if (!strcmp(method, routes[i].method))
				r->route = i;
		}
	if (r->route >= 0)
		r->kind = routes[r->route].kind;
	if (r->route < 0)
		r->early_status = path_known ? 405 : 404;
	else if (bad_origin(r))
		r->early_status = 403;
	else if (h->l->cfg->http.n_tokens > 0 && !routes[r->route].open) {
		r->principal_idx = find_token(r);
		if (r->principal_idx < 0) {
			r->early_status = 401;
			h->n_unauthorized++;
		} else {
			r->principal = h->l->cfg->http.tokens[r->principal_idx].name;
		}
	}
	client_of(r);
	return r;
}

static int body_add(http_req *r, const char *p, size_t n)
{
	const size_t max = r->h->l->cfg->max_frame;
	if (r->too_large || r->early_status)
		return 0;
	if (r->body_len + n > max) {
		r->too_large = 1;
		r->h->n_too_large++;
		return 0;
	}
	if (r->body_len + n + 1 > r->body_cap) {
		size_t cap = r->body_cap ? r->body_cap : 4096;
		while (cap < r->body_len + n + 1)
			cap *= 2;
		char *nb = realloc(r->body, cap);
		if (!nb)
			return -ENOMEM;
		r->body = nb;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, p, n);
	r->body_len += n;
	r->body[r->body_len] = 0;
	return 0;
}

static int early_reply(http_req *r)
{
	switch (r->early_status) {
	case 404: return http_reply_error(r, 404, NULL, "no such endpoint");
	case 405: return http_reply_error(r, 405, NULL, "method not allowed for this endpoint");
	case 403: return http_reply_error(r, 403, NULL, "%s", bad_origin(r));
	default:
		return http_reply_error(r, 401, NULL, "a bearer token is required (Authorization: Bearer ...)");
	}
}

/* The whole body is in: answer, start a stream, or submit and wait. */
static int req_ready(http_req *r)
{
	if (r->submitted && r->finished && !r->stream)
		return http_reply(r, r->status, r->ctype, r->out ? r->out : "", r->out_len);
	if (r->submitted)
		return MHD_YES; /* resumed without news: keep waiting */
	if (r->early_status)
		return early_reply(r);
	if (r->too_large)
		return http_reply_error(r, 413, NULL, "the request body is larger than %u bytes (max_frame)",
					(unsigned)r->h->l->cfg->max_frame);
	const http_route *rt = &routes[r->route];
	if (rt->get)
		return rt->get(r);
	if (r->kind == HK_UI_EVENTS) {
		r->t_next_ui = 0;
		return http_stream_start(r, "text/event-stream");
	}
	return api_begin(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
				 const char *method, const char *version, const char *upload,
				 size_t *upload_size, void **con_cls)
{
	(void)version;
	http *h = cls;
	http_req *r = *con_cls;
	if (!r) {
		if (!(r = req_new(h, mc, url, method)))
			return MHD_NO;
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_size) {
		int rc = body_add(r, upload, *upload_size);
		*upload_size = 0;
		return rc ? MHD_NO : MHD_YES;
	}
	return req_ready(r) == MHD_YES ? MHD_YES : MHD_NO;
}

static void req_free(http *h, http_req *r)
{
	for (http_req **p = &h->reqs; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	if (r->submitted && !r->finished) { /* the client went away: its request ends */
		models_cancel_conn(h->l->models, r->conn_id);
		r->agent->c.in_flight--;
	}
	free(r->body);
	free(r->out);
	free(r);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)mc;
	(void)toe;
	if (*con_cls)
		req_free(cls, *con_cls);
	*con_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
	http *h = cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = 0;
	blog_msg(h->l->log, BLOG_DEBUG, "http: %s", msg);
}

int http_busy(http *h)
{
	for (http_req *r = h->reqs; r; r = r->next)
		if (r->submitted && (!r->finished || r->out_off < r->out_len))
			return 1;
	return 0;
}

void http_status(http *h, proto_writer *pk)
{
	char url[96] = "";
	if (h)
		snprintf(url, sizeof(url), "http://%s:%d", h->host, h->port);
	proto_write_kv_str(pk, "http_listen", url);
	proto_write_kv_uint(pk, "http_requests", h ? h->n_requests : 0);
	proto_write_kv_uint(pk, "http_streams", h ? h->n_streams : 0);
	proto_write_kv_int(pk, "http_agents", h ? h->n_agents : 0);
}

/* ---- the server ------------------------------------------------------------- */

int http_poll_fd(http *h)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
	return di ? di->epoll_fd : -1;
}

/* A suspended connection is not watched by MHD: 1 when its peer has
 * closed it (a read would return 0). */
static int peer_gone(http_req *r)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
	char c;
	return ci && recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* A client waiting for a whole (non-streamed) answer that went away: its
 * request is cancelled now rather than when it would have ended. */
static void drop_gone(http_req *r)
{
	if (r->stream || !r->submitted || r->finished || !r->suspended || !peer_gone(r))
		return;
	models_cancel_conn(r->h->l->models, r->conn_id);
	r->agent->c.in_flight--;
	r->finished = 1;
	r->status = 499; /* nobody reads it: MHD closes the connection on the write */
	r->ctype = "application/json";
	req_wake(r);
}

/* Every 100 ms: dashboard streams get a snapshot a second, waiting clients
 * that left are dropped, idle agents are forgotten. */
static void ui_tick(http *h, double now)
{
	if (now - h->t_ui < 100)
		return;
	h->t_ui = now;
	for (http_req *r = h->reqs; r; r = r->next) {
		drop_gone(r);
		if (r->kind == HK_UI_EVENTS && r->route >= 0 && !r->early_status && now >= r->t_next_ui &&
		    r->out_len == r->out_off) {
			r->t_next_ui = now + HTTP_UI_PERIOD_MS;
			stats_ui_event(r);
			r->n_ui++;
			req_wake(r);
		}
	}
	agents_reap(h, now);
}

void http_run(http *h)
{
	ui_tick(h, clock_mono_ms());
	/* MHD may have work that no fd will announce (a request read but not
	 * yet handled, connections resumed during the run): it says so with a
	 * zero timeout, and runs again at once rather than at the next
	 * housekeeping tick. Bounded: the loop has other work too. */
	for (int i = 0; i < 16; i++) {
		h->resumed = 0;
		MHD_run(h->d);
		MHD_UNSIGNED_LONG_LONG to = 1;
		if (!h->resumed && (MHD_get_timeout(h->d, &to) != MHD_YES || to > 0))
			break;
	}
}

/* The listening socket: bound here, so that port 0 and errors are ours to
 * report. */
static int http_bind(http *h, const char *listen_addr, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	unsigned salen;
	int rc = cfg_http_addr(listen_addr, &sa, &salen, &h->loopback, err, errlen);
	if (rc)
		return rc;
	int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return herd_errf(err, errlen, -errno, "http: socket: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, salen) || listen(fd, HTTP_BACKLOG)) {
		rc = -errno;
		close(fd);
		return herd_errf(err, errlen, rc, "http: cannot listen on %s: %s", listen_addr, strerror(-rc));
	}
	socklen_t len = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	h->port = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
						: ((struct sockaddr_in6 *)&sa)->sin6_port);
	const char *colon = strrchr(listen_addr, ':');
	snprintf(h->host, sizeof(h->host), "%.*s", (int)(colon - listen_addr), listen_addr);
	h->listen_fd = fd;
	return 0;
}

int http_start(loop *l, char *err, size_t errlen)
{
	const cfg *c = l->cfg;
	if (!c->http.listen)
		return 0;
	http *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->l = l;
	int rc = http_bind(h, c->http.listen, err, errlen);
	if (rc) {
		free(h);
		return rc;
	}
	const unsigned timeout_s = (unsigned)((c->limits.frame_timeout_ms + 999) / 1000);
	h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
				NULL, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, on_log, h,
				MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->limits.max_connections,
				MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)c->limits.max_connections_per_uid,
				MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_END);
	if (!h->d) {
		close(h->listen_fd);
		free(h);
		return herd_errf(err, errlen, -EIO, "http: libmicrohttpd did not start on %s", c->http.listen);
	}
	l->http = h;
	blog_msg(l->log, BLOG_INFO, "http: listening on http://%s:%d%s", h->host, h->port,
		 c->http.n_tokens ? " (bearer tokens required)" : "");
	return 0;
}

void http_destroy(http *h)
{
	if (!h)
		return;
	for (http_req *r = h->reqs; r; r = r->next) { /* MHD must not stop with suspended connections */
		r->finished = 1;
		req_wake(r);
	}
	MHD_run(h->d);
	MHD_quiesce_daemon(h->d); /* the listening socket stays ours to close */
	MHD_stop_daemon(h->d);    /* closes the connections: on_completed frees their requests */
	while (h->reqs)
		req_free(h, h->reqs);
	while (h->agents) {
		http_agent *a = h->agents;
		h->agents = a->next;
		free(a);
	}
	close(h->listen_fd);
	free(h);
}
