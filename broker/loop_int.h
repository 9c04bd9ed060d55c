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
};
#define LOOP_OP_MASK 15u

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

/* session.c: one frame body from c (decoded there). Writes replies and
 * close requests into c (conn.h); the loop settles c afterwards. Returns
 * SESSION_SHUTDOWN when an admin asked the broker to stop, else 0. */
enum { SESSION_SHUTDOWN = 1 };
int session_frame(loop *l, conn *c, const uint8_t *body, size_t len);
/* admin.c: an admin frame (m->type == PROTO_ADMIN). Returns
 * SESSION_SHUTDOWN for a successful `shutdown`, else 0. */
int admin_frame(loop *l, conn *c, const proto_msg *m);
/* admin.c: 1 when c's peer may use admin commands. */
int admin_allowed(const loop *l, const conn *c);

#endif
