/* Internals shared by the HTTP files: http.c (the server, requests,
 * agents, streaming), http_api.c (OpenAI and Ollama bodies), http_stats.c
 * (the seed's endpoints, /metrics, model lists, the dashboard's
 * snapshots), http_ui.c (the dashboard's files). Loop thread only. */
#ifndef HERD_BROKER_HTTP_INT_H
#define HERD_BROKER_HTTP_INT_H

#include <stdint.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "broker/http.h"
#include "loop_int.h"

#define HTTP_AGENT_KEY_MAX 160
#define HTTP_MODEL_MAX 64

/* One HTTP client as the scheduler sees it: a conn that is never in the
 * loop's slot table (fd -1), carrying the agent id, allowance, trust
 * domain and the per-agent counters session.c checks (in_flight). */
typedef struct http_agent {
	struct http_agent *next;
	conn c;
	char key[HTTP_AGENT_KEY_MAX]; /* principal "/" client */
	double t_last;                /* monotonic ms of its last request */
} http_agent;

typedef enum http_kind {
	HK_NONE = 0,
	HK_OAI_CHAT,      /* POST /v1/chat/completions */
	HK_OAI_COMPLETE,  /* POST /v1/completions */
	HK_OLL_GENERATE,  /* POST /api/generate */
	HK_OLL_CHAT,      /* POST /api/chat */
	HK_UI_EVENTS,     /* GET /ui/events: dashboard snapshots (SSE) */
} http_kind;

/* One HTTP request (one per MHD connection at a time). */
typedef struct http_req {
	struct http_req *next;        /* the server's live requests */
	struct http *h;
	struct MHD_Connection *mc;
	uint64_t conn_id;             /* HTTP_CONN_BIT | serial: where events come back */
	http_agent *agent;            /* NULL until a generation request is submitted */
	const char *principal;        /* token name, or "" without tokens */
	int principal_idx;            /* token index, -1: none */
	char client[64];              /* peer address, or the X-Herd-Agent header */
	int route;                    /* index into the route table, -1: none */
	char *body;                   /* request body, NUL-terminated */
	size_t body_len, body_cap;
	int too_large;                /* the body passed the bound: 413 */
	int early_status;             /* a response queued before the body (0: none) */
	/* generation */
	http_kind kind;
	int stream, include_usage, submitted, finished, suspended, sent_role;
	char model[HTTP_MODEL_MAX];
	char id[48];                  /* chatcmpl-..., cmpl-... */
	long long created;            /* unix seconds */
	double t0;                    /* monotonic ms at submission */
	char *out;                    /* bytes ready for the client */
	size_t out_len, out_off, out_cap;
	int status;                   /* non-streamed: the status of the reply in out */
	const char *ctype;            /* its content type */
	double t_next_ui;             /* HK_UI_EVENTS: when the next snapshot is due */
	int n_ui;                     /* HK_UI_EVENTS: snapshots sent */
} http_req;

typedef struct http {
	loop *l;
	struct MHD_Daemon *d;
	int listen_fd, loopback, port;
	char host[64];                /* as configured, for Host/Origin checks */
	http_req *reqs;               /* live */
	http_agent *agents;
	int n_agents;
	uint64_t serial;
	uint64_t n_requests, n_status[6]; /* by status class 1xx..5xx (index 1..5) */
	uint64_t n_unauthorized, n_bad_json /* 400s */, n_too_large, n_streams;
	double t_ui;                  /* last dashboard tick */
	int resumed;                  /* a connection was resumed since the last MHD_run */
} http;

/* A route: method, exact path, handler kind. */
typedef struct http_route {
	const char *method, *path;
	int (*get)(http_req *r);  /* GET: queues the reply; returns the MHD result */
	http_kind kind;           /* POST generation kinds */
	int open;                 /* served without a token (health checks, the UI files) */
} http_route;

/* ---- http.c: replies --------------------------------------------------- */
/* Queues a complete reply (copied). Returns the MHD result. */
int http_reply(http_req *r, int status, const char *ctype, const char *body, size_t len);
/* Queues the JSON text of o (which it releases). */
int http_reply_json(http_req *r, int status, json_object *o);
/* Queues an error in the shape of r's API ({"error": {...}} for OpenAI,
 * {"error": "..."} elsewhere); param: the field at fault or NULL. */
int http_reply_error(http_req *r, int status, const char *param, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The error body of http_reply_error (new object). */
json_object *http_error_object(const http_req *r, int status, const char *param, const char *msg);
/* Appends bytes to r's outgoing stream buffer. 0 or -ENOMEM. */
int http_out(http_req *r, const char *p, size_t n);
int http_out_json(http_req *r, const char *prefix, json_object *o, const char *suffix);
/* Queues a streamed 200 reply fed from r->out (SSE or NDJSON). */
int http_stream_start(http_req *r, const char *ctype);
/* Submits g for r's agent (made on first use) through session.c's checks.
 * 0, or an error code with a message in why. */
int http_submit(http_req *r, const gen_request *g, char *why, size_t n);
/* HTTP status for a HERD_E_* / -errno code. */
int http_status_for(int code);

/* ---- http_api.c: generation ------------------------------------------- */
/* Parses r->body for r->kind into a submitted request (or queues a 400/404
 * naming the field). Returns the MHD result. */
int api_begin(http_req *r);
/* Scheduler events, formatted for r's API into r->out. */
void api_tok(http_req *r, const sched_event *e);
void api_done(http_req *r, const sched_event *e);
void api_err(http_req *r, const sched_event *e);

/* ---- http_stats.c: GET endpoints ------------------------------------ */
int stats_cache(http_req *r);    /* /api/v1/cache/stats */
int stats_batch(http_req *r);    /* /api/v1/batch/metrics */
int stats_metrics(http_req *r);  /* /metrics */
int stats_healthz(http_req *r);
int stats_readyz(http_req *r);
int stats_oai_models(http_req *r); /* /v1/models */
int stats_tags(http_req *r);     /* /api/tags */
int stats_ps(http_req *r);       /* /api/ps */
int stats_show(http_req *r);     /* POST /api/show */
/* The dashboard's snapshot (the admin results it shows), into r->out as
 * one SSE event. */
void stats_ui_event(http_req *r);
/* An admin result as JSON (admin_query + value_to_json), or NULL with a
 * message in err. */
json_object *stats_admin_json(http *h, const char *cmd, char *err, size_t errlen);

/* ---- http_ui.c ------------------------------------------------------------ */
int ui_page(http_req *r);    /* /ui */
int ui_chartjs(http_req *r); /* /ui/chart.js: the vendored Chart.js */

#endif
