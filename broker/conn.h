/* One client connection of the broker: its peer, its session state and its
 * outbox (the queue of frames to send).
 *
 * The frame handlers (session.c, admin.c) write into a connection through
 * this module only: they append frames, queue an err, ask for the
 * connection to be closed after its queue is sent or as soon as the handler
 * returns. The event loop (loop.c) owns the socket: after every handler it
 * settles the connection (closes it when asked, else starts sending), and it
 * drains the queue with io_uring sends. So the handlers never call into the
 * loop, and the calls between broker files go one way: loop -> session ->
 * admin -> conn.
 *
 * Everything here runs on the loop thread only. */
#ifndef HERD_BROKER_CONN_H
#define HERD_BROKER_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/budget.h"
#include "broker/log.h"
#include "proto/proto.h"
#include "shm/fdpass.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONN_NAME_MAX 64 /* agent name from hello, NUL included */
#define CONN_RX_FDS 4    /* descriptors received and not taken yet (share frames) */

/* One queued run of output bytes: whole frames, possibly with one fd that
 * travels with the first byte (then the run holds exactly that frame). */
typedef struct out_buf {
	struct out_buf *next;
	proto_buf buf;
	size_t off;      /* bytes already sent */
	int fd;          /* -1, or an image fd (borrowed from models) */
	int inflight;    /* a SEND/SENDMSG on it is pending: append nothing */
	shm_fdmsg msg;   /* for SENDMSG: points into buf */
} out_buf;

typedef struct conn {
	uint64_t id;        /* slot (low 32 bits) | generation (high 32): events carry it */
	int fd;
	const blog *log;    /* borrowed from the loop */
	uint8_t *rbuf;      /* received bytes [rlen] of rcap */
	size_t rlen, rcap;
	shm_fdrecv rmsg;    /* the pending RECVMSG: a descriptor may come with the bytes */
	int rx_fds[CONN_RX_FDS]; /* received descriptors not taken by a frame yet, oldest first */
	int n_rx_fds;
	out_buf *sq_head, *sq_tail;
	size_t queued;      /* bytes in the send queue */
	int recv_inflight, send_inflight;
	int closing;        /* no more input or output; freed when no op is pending */
	int close_after_send; /* input stopped; close once the queue is sent */
	int close_now;      /* a handler asked: the loop closes it when the handler returns */
	pid_t pid;          /* SO_PEERCRED, captured at accept */
	uid_t uid;
	gid_t gid;
	gid_t *groups;      /* SO_PEERGROUPS at accept (supplementary groups), owned */
	int n_groups;
	int rx_paused;      /* send queue past limits.send_queue_pause_bytes: input not read */
	int rx_throttled;   /* its uid's frame budget is spent: input not read until it refills */
	int budget;         /* index of its uid's bucket in the loop's budget_tab */
	budget_share share; /* its own share of that budget (broker/budget.h) */
	double t_frame;     /* monotonic ms when the pending partial frame began; 0: none */
	double t_active;    /* monotonic ms of the last byte received or sent */
	int hello;
	uint64_t agent;     /* agent id (assigned at hello or first gen) */
	char name[CONN_NAME_MAX]; /* agent name from hello */
	int prio;           /* default priority from hello (clamped to max_prio) */
	int max_prio;       /* priority allowance (session.c, from cfg.agents) */
	uint64_t domain;    /* prefix-sharing trust domain (session.c, cfg.prefix_sharing) */
	uint64_t n_requests, n_tokens;
	int in_flight;      /* requests without their done/err yet */
	double t_connect;   /* monotonic ms */
	struct conn *znext; /* closed, waiting for its pending ops: loop's zombie list */
} conn;

/* A buffer at the tail of c's send queue to append whole frames to (a new
 * run when the tail is being sent or carries an fd); NULL on ENOMEM. The
 * loop sends it after the handler returns. */
proto_buf *conn_outbuf(conn *c);

/* 1 when gid is c's primary group or one of the supplementary groups
 * captured at accept (SO_PEERGROUPS): never looked up by pid later, which
 * may by then name another process. */
int conn_in_group(const conn *c, gid_t gid);

/* Queues one frame (already encoded in frame[0..len)) with fd attached, as
 * a run of its own. Returns 0 or -ENOMEM (nothing queued). fd is borrowed:
 * it must stay open until the connection is gone. */
int conn_queue_fd(conn *c, const uint8_t *frame, size_t len, int fd);

/* Queues an err frame (has_id 0: about the connection, not a request)
 * with a printf-style message, cut at 511 bytes. A failure to queue it is
 * logged and otherwise ignored: the connection goes on. */
void conn_queue_err(conn *c, int has_id, uint64_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Stops reading from c; the loop closes it once its queue is sent. */
void conn_close_after_send(conn *c);

/* Asks the loop to close c (its requests cancelled silently) as soon as
 * the current handler returns; nothing more is read or sent. */
void conn_close_soon(conn *c);

/* Keeps a descriptor that came with c's input (it belongs to the next
 * frame that takes one, in order). Returns 0, or -EMFILE when CONN_RX_FDS
 * are already waiting (fd is closed: the peer sends more than it uses). */
int conn_push_fd(conn *c, int fd);
/* The oldest received descriptor not taken yet (the caller's), or -1. */
int conn_take_fd(conn *c);
/* Closes every received descriptor not taken. */
void conn_close_rx_fds(conn *c);

/* Removes the head run (sent, or empty) from the queue and frees it. */
void conn_pop_run(conn *c);

/* Frees every queued run (the connection is going away). */
void conn_drop_queue(conn *c);

#ifdef __cplusplus
}
#endif
#endif
