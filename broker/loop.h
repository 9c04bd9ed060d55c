/* The broker's io_uring event loop (one ring, on the calling thread).
 *
 * One ring drives everything: a multishot accept on the listening socket,
 * one recv per connection into its buffer (frames cut with
 * proto_frame_next, decoded with proto_decode, dispatched by session.c and
 * admin.c, which write their replies into the connection's outbox,
 * broker/conn.h), a send queue per connection (IORING_OP_SEND, or SENDMSG
 * for a frame that carries an image fd), a read on the schedulers' eventfd (their
 * tok/done/err events are encoded and queued to their connections), and a
 * read on a signalfd (SIGTERM/SIGINT: graceful shutdown). Each iteration
 * submits and waits, drains a batch of completions and dispatches on the
 * operation packed in user_data; multishot accept is re-armed when
 * IORING_CQE_F_MORE is clear.
 *
 * Errors close only the connection they concern: a malformed frame gets an
 * `err` (HERD_E_PROTO and a message) and the connection is closed after the
 * err is sent; so does a frame longer than max_frame, refused before its
 * body is read. Closing a connection cancels its requests in the
 * schedulers.
 *
 * Limits (cfg->limits, each counted for `herdctl status`): connections
 * past max_connections / max_connections_per_uid get an `err`
 * HERD_E_LIMIT at accept and are closed; a send queue past
 * send_queue_pause_bytes stops reading from its peer, past
 * send_queue_bytes the peer is cut off (checked whether or not a send is
 * in flight); a partial frame older than frame_timeout_ms, or a connection
 * idle longer than idle_timeout_ms (when set), gets an `err` and is
 * closed (a 100 ms housekeeping tick checks); accept failing with
 * EMFILE/ENFILE pauses accepting for accept_backoff_ms. SIGHUP is ignored
 * with a log line.
 *
 * Shutdown (signal or admin `shutdown`): accepting stops, every scheduler
 * cancels its requests with a `done` reason "cancel" that is delivered, and
 * loop_run returns once everything is sent (or after a 3 s grace period).
 */
#ifndef HERD_BROKER_LOOP_H
#define HERD_BROKER_LOOP_H

#include <stddef.h>

#include "broker/config.h"
#include "broker/log.h"
#include "broker/models.h"
#include "broker/pressure.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loop loop;

typedef struct loop_opts {
	const cfg *cfg;   /* max_frame, admin_group, max_tokens, socket path */
	models *models;   /* borrowed */
	const blog *log;
	int listen_fd;    /* from loop_listen; the loop owns it afterwards */
	int wake_fd;      /* the schedulers' eventfd (blocking: io_uring polls it); borrowed */
	int signal_fd;    /* blocking signalfd for SIGTERM/SIGINT, or -1; borrowed */
	pressure *pressure; /* memory pressure (refuse, eBPF pid registry), or NULL; borrowed */
	/* Called on the loop thread at every housekeeping tick (100 ms), or NULL:
	 * where work another thread asked for runs when it must run on the loop
	 * (herdd: memory-pressure shedding of models, models_shed). */
	void (*tick)(void *arg);
	void *tick_arg;
} loop_opts;

/* Binds path (mode 0660; creates its directory, mode 0755, when missing).
 * The directory is refused (-EPERM, message naming it and the reason) when
 * another uid than ours or root owns it, or group or others may write it
 * without the sticky bit.
 * A stale socket file (nobody accepts on it) is removed first; a live one
 * is refused: -EADDRINUSE with "socket ... is in use by a running broker".
 * Returns 0 with *fd listening (close-on-exec) or -errno /
 * HERD_E_RANGE (path too long) with a message in err. */
int loop_listen(const char *path, int *fd, char *err, size_t errlen);

/* Sets up the ring (-errno of io_uring_queue_init, -ENOMEM). */
int loop_create(loop **out, const loop_opts *o);
void loop_destroy(loop *l); /* accepts NULL; closes the listening socket */

/* Serves until shutdown. Returns 0 after a clean shutdown, or -errno when
 * the ring itself fails. */
int loop_run(loop *l);

/* Starts a graceful shutdown (the loop thread only). */
void loop_stop(loop *l);

#ifdef __cplusplus
}
#endif
#endif
