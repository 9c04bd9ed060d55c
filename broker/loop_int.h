/* Loop internals shared by loop.c (ring, connections, send queues),
 * session.c (agent frames) and admin.c (admin frames). session.c and admin.c
 * read the loop's state here but call nothing of loop.c: they write into
 * connections through conn.h. Everything here runs on the loop thread
 * only. */
#ifndef HERD_BROKER_LOOP_INT_H
#define HERD_BROKER_LOOP_INT_H

#include <stdint.h>
#include <sys/signalfd.h>
#include <sys/types.h>

#include <liburing.h>

#include "broker/conn.h"
#include "broker/loop.h"
#include "proto/proto.h"

/* Operations packed into the low bits of user_data (the rest is a conn
 * pointer, 16-byte aligned from malloc, or 0). */
enum {
	LOOP_OP_ACCEPT = 1,
	LOOP_OP_RECV = 2,
	LOOP_OP_SEND = 3,
	LOOP_OP_WAKE = 4,
	LOOP_OP_SIGNAL = 5,
	LOOP_OP_TIMER = 6,
	LOOP_OP_IGNORE = 7, /* cancel requests and the like */
	LOOP_OP_HOUSE = 8,  /* housekeeping tick: timeouts, accept back-off */
	LOOP_OP_HTTP = 9,   /* the HTTP server's epoll fd is readable (broker/http.c) */
};

/* A log line that peers can trigger at any rate: at most one a second,
 * the others counted and reported with the next one. */
typedef struct loop_ratelog {
	double t_last;
	uint64_t suppressed;
} loop_ratelog;

/* How often each limit triggered (herdctl status). */
typedef struct loop_limit_stats {
	uint64_t sendq_paused;     /* input paused: send queue past the pause mark */
	uint64_t sendq_cutoffs;    /* cut off: send queue past send_queue_bytes */
	uint64_t frame_timeouts;   /* partial frame older than frame_timeout_ms */
	uint64_t idle_timeouts;    /* idle longer than idle_timeout_ms */
	uint64_t refused_total;    /* refused: max_connections */
	uint64_t refused_uid;      /* refused: max_connections_per_uid */
	uint64_t accept_backoffs;  /* accept paused at EMFILE/ENFILE */
	uint64_t accept_storms;    /* accept paused: a storm of refused connections */
	uint64_t sighups;          /* SIGHUPs received (ignored) */
	uint64_t frame_throttles;  /* input stopped: the uid's frame budget was spent */
} loop_limit_stats;
#define LOOP_OP_MASK 15u

struct loop {
	struct io_uring ring;
	int ring_ok;
	const cfg *cfg;
	models *models;
	pressure *pressure; /* or NULL */
	void (*tick)(void *arg);
	void *tick_arg;
	const blog *log;
	int listen_fd, wake_fd, sig_fd;
	conn **slots;       /* slot table: conn or NULL */
	uint32_t *gens;     /* generation per slot */
	int n_slots;
	int n_conns;
	conn *zombies;      /* closed connections with operations still pending */
	uint64_t next_agent;
	int stopping;
	double stop_deadline;
	int done;
	uint64_t wake_val;
	struct signalfd_siginfo siginfo;
	struct __kernel_timespec timer_ts;
	int timer_armed;
	double t_start;     /* monotonic ms */
	uint64_t total_conns, total_requests, proto_errors;
	loop_limit_stats lim;
	int accept_armed;   /* a multishot accept is pending */
	int accept_paused;  /* backing off after EMFILE/ENFILE */
	double accept_resume; /* monotonic ms */
	double storm_t0;      /* refusal-storm window start (monotonic ms) */
	int storm_n;          /* refusals in it */
	struct __kernel_timespec house_ts;
	loop_ratelog rl_accept, rl_refused, rl_timeout, rl_throttle;
	budget_tab budgets;   /* per-uid frame budgets (broker/budget.h) */
	struct http *http;    /* the HTTP face, or NULL (broker/http.h) */
	int http_armed;       /* a poll on its epoll fd is pending */
};

/* http.c, on the loop thread: the fd the loop polls for the HTTP server
 * (-1: none); run it (after its fd polled readable, at every housekeeping
 * tick and after events were delivered); hand it a scheduler event whose
 * conn has HTTP_CONN_BIT; stop it. */
#define HTTP_CONN_BIT (1ull << 63)
int http_poll_fd(struct http *h);
void http_run(struct http *h);
void http_deliver(struct http *h, const sched_event *e);
void http_destroy(struct http *h); /* accepts NULL */
/* http.c: 1 while a generation request has not ended or its last bytes
 * are not handed to the kernel (shutdown waits for it, within the grace
 * period). */
int http_busy(struct http *h);
/* http.c: the HTTP fields of `status` (HTTP_STATUS_KEYS of them; h may be
 * NULL: HTTP off). */
enum { HTTP_STATUS_KEYS = 4 };
void http_status(struct http *h, proto_writer *pk);

/* session.c: one frame body from c (decoded there). Writes replies and
 * close requests into c (conn.h); the loop settles c afterwards. Returns
 * SESSION_SHUTDOWN when an admin asked the broker to stop, else 0. */
enum { SESSION_SHUTDOWN = 1 };
int session_frame(loop *l, conn *c, const uint8_t *body, size_t len);
/* session.c: the checks, clamps and submission of one gen request of
 * agent c, whose events go to conn_id (c->id for a socket agent; an HTTP
 * request's own id, broker/http.c). 0, or an error code with a message
 * naming the problem in why (nothing was submitted). */
int session_submit(loop *l, conn *c, uint64_t conn_id, const gen_request *g, char *why, size_t n);
/* session.c: gives c its agent id and priority allowance when it has none. */
void session_agent(loop *l, conn *c);
/* session.c: c is being closed (its agent leaves the cache manager's
 * list of connected agents). */
void session_closed(loop *l, conn *c);
/* admin.c: an admin frame (m->type == PROTO_ADMIN). Returns
 * SESSION_SHUTDOWN for a successful `shutdown`, else 0. */
int admin_frame(loop *l, conn *c, const proto_msg *m);
/* admin_pressure.c: the `pressure` result, and the pressure fields of
 * `status` (ADMIN_STATUS_PRESSURE_KEYS of them). */
enum { ADMIN_STATUS_PRESSURE_KEYS = 11 };
void admin_res_pressure(loop *l, proto_writer *pk);
void admin_status_pressure(loop *l, proto_writer *pk);
/* admin.c: the result of the read-only admin command cmd (status, models,
 * cache, agents, batch, pressure) exactly as herdctl gets it, decoded into
 * *out (an admin_ok whose strings point into b, which the caller
 * initialised and frees after proto_msg_free(out)). 0 or an error with a
 * message in err. */
int admin_query(loop *l, const char *cmd, proto_buf *b, proto_msg *out, char *err, size_t errlen);
/* admin.c: 1 when c's peer may use admin commands. */
int admin_allowed(const loop *l, const conn *c);

#endif
