/* Loop internals shared by loop.c (ring, connections, send queues),
 * session.c (agent frames) and admin.c (admin frames). Everything here runs
 * on the loop thread only. */
#ifndef HERD_BROKER_LOOP_INT_H
#define HERD_BROKER_LOOP_INT_H

#include <stdint.h>
#include <sys/signalfd.h>
#include <sys/types.h>

#include <liburing.h>

#include "broker/loop.h"
#include "proto/proto.h"
#include "shm/fdpass.h"

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
};
#define LOOP_OP_MASK 15u

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
	uint8_t *rbuf;      /* received bytes [rlen] of rcap */
	size_t rlen, rcap;
	out_buf *sq_head, *sq_tail;
	size_t queued;      /* bytes in the send queue */
	int recv_inflight, send_inflight;
	int closing;        /* no more input or output; freed when no op is pending */
	int close_after_send; /* input stopped; close once the queue is sent */
	pid_t pid;          /* SO_PEERCRED */
	uid_t uid;
	gid_t gid;
	int hello;
	uint64_t agent;     /* agent id (assigned at hello or first gen) */
	char name[64];      /* agent name from hello */
	int prio;           /* default priority from hello */
	uint64_t n_requests, n_tokens;
	int in_flight;      /* requests without their done/err yet */
	double t_connect;   /* monotonic ms */
	struct conn *znext; /* closed, waiting for its pending ops: loop's zombie list */
} conn;

struct loop {
	struct io_uring ring;
	int ring_ok;
	const cfg *cfg;
	models *models;
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
};

/* A buffer at the tail of c's send queue to append whole frames to; NULL
 * on ENOMEM. Call loop_kick afterwards. */
proto_buf *loop_outbuf(loop *l, conn *c);
/* Starts sending c's queue if nothing is in flight. */
void loop_kick(loop *l, conn *c);
/* Queues one frame (already encoded in frame[0..len)) with fd attached. */
int loop_send_fd(loop *l, conn *c, const uint8_t *frame, size_t len, int fd);
/* Queues an err frame; has_id 0: about the connection. */
void loop_send_err(loop *l, conn *c, int has_id, uint64_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
/* Stops reading from c and closes it once its queue is sent. */
void loop_close_after_send(loop *l, conn *c);
/* Closes c now (its requests are cancelled silently). */
void loop_close_conn(loop *l, conn *c);
/* Looks a connection up by id; NULL when gone. */
conn *loop_conn_by_id(loop *l, uint64_t id);

/* session.c: one decoded-or-not frame body from c. */
void session_frame(loop *l, conn *c, const uint8_t *body, size_t len);
/* admin.c: an admin frame (m->type == PROTO_ADMIN). */
void admin_frame(loop *l, conn *c, const proto_msg *m);
/* admin.c: 1 when c's peer may use admin commands. */
int admin_allowed(const loop *l, const conn *c);

#endif
