/* io_uring event loop: accept, per-connection recv and send queues, the
 * schedulers' eventfd, the signalfd. See loop.h. */
#include "loop_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"

#define LOOP_RING_ENTRIES 256
#define LOOP_RBUF_INIT (64u << 10)
#define LOOP_GRACE_MS 3000.0
#define LOOP_TICK_NS 50000000LL
#define LOOP_LISTEN_BACKLOG 512     /* pending connections the kernel holds */
#define LOOP_SOCKET_MODE 0660       /* owner and group may connect */
#define LOOP_SOCKET_DIR_MODE 0755
#define LOOP_HOUSE_NS 100000000LL   /* housekeeping tick: timeouts, accept back-off */
#define LOOP_RATELOG_MS 1000.0      /* peer-triggered log lines: at most one a second */
#define LOOP_STORM_REFUSALS 256     /* refusals within LOOP_STORM_WINDOW_MS that pause accept */
#define LOOP_STORM_WINDOW_MS 100.0
#define LOOP_MAX_GROUPS 65536       /* supplementary groups kept from SO_PEERGROUPS */
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

/* ---- listening socket ----------------------------------------------------- */

static int mkdir_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, LOOP_SOCKET_DIR_MODE) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, LOOP_SOCKET_DIR_MODE) && errno != EEXIST)
		return -errno;
	return 0;
}

/* Refuses the socket's directory when another uid (not root) owns it or
 * group or others may write it without the sticky bit: they could replace
 * the socket with their own (OpenSSH's StrictModes). */
static int check_socket_dir(const char *path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	struct stat st;
	if (stat(dir, &st))
		return herd_errf(err, errlen, -errno, "socket directory '%s': %s", dir, strerror(errno));
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return herd_errf(err, errlen, -EPERM,
				 "socket directory '%s' is owned by uid %u, not by this broker's uid %u "
				 "or root: refused",
				 dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
		return herd_errf(err, errlen, -EPERM,
				 "socket directory '%s' is writable by %s (mode %04o): refused "
				 "(chmod go-w it)",
				 dir, (st.st_mode & S_IWOTH) ? "others" : "its group",
				 (unsigned)(st.st_mode & 07777));
	return 0;
}

int loop_listen(const char *path, int *out, char *err, size_t errlen)
{
	*out = -1;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return herd_errf(err, errlen, HERD_E_RANGE, "socket path '%s' is longer than %zu bytes", path,
			     sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int rc = mkdir_parent(path);
	if (rc)
		return herd_errf(err, errlen, rc, "cannot create the directory of socket '%s': %s", path,
			     strerror(-rc));
	if ((rc = check_socket_dir(path, err, errlen)))
		return rc;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return herd_errf(err, errlen, -errno, "socket: %s", strerror(errno));
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			return herd_errf(err, errlen, -EEXIST, "'%s' exists and is not a socket", path);
		}
		/* Is somebody serving on it? */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (probe >= 0 && (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
				   errno == EAGAIN)) { /* EAGAIN: alive, backlog full */
			close(probe);
			close(fd);
			return herd_errf(err, errlen, -EADDRINUSE,
				     "socket '%s' is in use by a running broker", path);
		}
		if (probe >= 0)
			close(probe);
		if (unlink(path) && errno != ENOENT) {
			rc = -errno;
			close(fd);
			return herd_errf(err, errlen, rc, "cannot remove the stale socket '%s': %s", path,
				     strerror(-rc));
		}
	}
	/* LOOP_SOCKET_MODE from the start: no window in which others could
	 * connect (the umask clears every bit outside it). */
	mode_t old = umask(0777 & ~LOOP_SOCKET_MODE);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	umask(old);
	if (rc) {
		close(fd);
		return herd_errf(err, errlen, -e, "cannot bind '%s': %s", path, strerror(e));
	}
	if (chmod(path, LOOP_SOCKET_MODE) || listen(fd, LOOP_LISTEN_BACKLOG)) {
		rc = -errno;
		close(fd);
		unlink(path);
		return herd_errf(err, errlen, rc, "cannot listen on '%s': %s", path, strerror(-rc));
	}
	*out = fd;
	return 0;
}

/* ---- ring helpers --------------------------------------------------------- */

static void close_conn(loop *l, conn *c);

static struct io_uring_sqe *get_sqe(loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	if (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

static inline uint64_t pack(const void *p, unsigned op)
{
	return (uint64_t)(uintptr_t)p | op;
}

static void arm_accept(loop *l)
{
	if (l->accept_armed || l->accept_paused || l->stopping)
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	io_uring_prep_multishot_accept(sqe, l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_ACCEPT));
	l->accept_armed = 1;
}

static void arm_house(loop *l)
{
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	l->house_ts.tv_sec = 0;
	l->house_ts.tv_nsec = LOOP_HOUSE_NS;
	io_uring_prep_timeout(sqe, &l->house_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_HOUSE));
}

/* Logs a line peers can trigger at any rate through r: at most one a
 * second, with the count of the ones left out since. */
__attribute__((format(printf, 4, 5))) static void log_limited(loop *l, loop_ratelog *r,
							      int level, const char *fmt, ...)
{
	const double now = clock_mono_ms();
	if (r->t_last > 0 && now - r->t_last < LOOP_RATELOG_MS) {
		r->suppressed++;
		return;
	}
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->suppressed)
		blog_msg(l->log, level, "%s (and %llu more like it)", msg,
			 (unsigned long long)r->suppressed);
	else
		blog_msg(l->log, level, "%s", msg);
	r->t_last = now;
	r->suppressed = 0;
}

static void arm_wake(loop *l)
{
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, l->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_WAKE));
}

static void arm_signal(loop *l)
{
	if (l->sig_fd < 0)
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, l->sig_fd, &l->siginfo, sizeof(l->siginfo), 0);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_SIGNAL));
}

static void arm_http(loop *l)
{
	const int fd = l->http ? http_poll_fd(l->http) : -1;
	if (fd < 0 || l->http_armed)
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_HTTP));
	l->http_armed = 1;
}

static void arm_timer(loop *l)
{
	if (l->timer_armed)
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe)
		return;
	l->timer_ts.tv_sec = 0;
	l->timer_ts.tv_nsec = LOOP_TICK_NS;
	io_uring_prep_timeout(sqe, &l->timer_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_TIMER));
	l->timer_armed = 1;
}

static void arm_recv(loop *l, conn *c)
{
	if (c->closing || c->close_after_send || c->recv_inflight || c->rx_paused || c->rx_throttled)
		return;
	if (c->rlen == c->rcap) {
		/* proto_frame_next said the frame fits in max_frame: make room */
		size_t cap = c->rcap * 2;
		uint8_t *nb = realloc(c->rbuf, cap);
		if (!nb) {
			close_conn(l, c);
			return;
		}
		c->rbuf = nb;
		c->rcap = cap;
	}
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe) {
		close_conn(l, c);
		return;
	}
	/* recvmsg: an agent's share frame carries a descriptor (SCM_RIGHTS) */
	shm_fdrecv_init(&c->rmsg, c->rbuf + c->rlen, c->rcap - c->rlen);
	io_uring_prep_recvmsg(sqe, c->fd, &c->rmsg.msg, MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, pack(c, LOOP_OP_RECV));
	c->recv_inflight = 1;
}

/* ---- connections ---------------------------------------------------------- */

/* Looks a connection up by id; NULL when gone. */
static conn *conn_by_id(loop *l, uint64_t id)
{
	uint32_t slot = (uint32_t)id;
	if ((int)slot >= l->n_slots)
		return NULL;
	conn *c = l->slots[slot];
	return c && c->id == id && !c->closing ? c : NULL;
}

static void conn_free(loop *l, conn *c)
{
	budget_detach(&l->budgets, c->budget);
	conn_drop_queue(c);
	conn_close_rx_fds(c);
	if (c->fd >= 0)
		close(c->fd);
	free(c->rbuf);
	free(c->groups);
	free(c);
}

/* Frees c once no operation refers to it any more. */
static void conn_maybe_free(loop *l, conn *c)
{
	if (!c->closing || c->recv_inflight || c->send_inflight)
		return;
	for (conn **p = &l->zombies; *p; p = &(*p)->znext)
		if (*p == c) {
			*p = c->znext;
			break;
		}
	conn_free(l, c);
}

/* Closes c now (its requests are cancelled silently). */
static void close_conn(loop *l, conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	uint32_t slot = (uint32_t)c->id;
	if ((int)slot < l->n_slots && l->slots[slot] == c)
		l->slots[slot] = NULL;
	l->n_conns--;
	models_cancel_conn(l->models, c->id);
	session_closed(l, c);
	blog_msg(l->log, BLOG_DEBUG, "connection %llu (pid %d, agent %llu '%s') closed",
		 (unsigned long long)(c->id & 0xffffffffu), (int)c->pid, (unsigned long long)c->agent,
		 c->name);
	/* Pending recv/send complete (with 0 or an error) after this. */
	shutdown(c->fd, SHUT_RDWR);
	if (c->recv_inflight || c->send_inflight) {
		c->znext = l->zombies;
		l->zombies = c;
	}
	conn_maybe_free(l, c);
}

/* The peer's credentials, once, at accept: uid, gid, pid (SO_PEERCRED) and
 * supplementary groups (SO_PEERGROUPS), so that admin checks never look
 * the pid up later (it may have been reused). */
static void peer_creds(conn *c)
{
	struct ucred cr;
	socklen_t crl = sizeof(cr);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) == 0) {
		c->pid = cr.pid;
		c->uid = cr.uid;
		c->gid = cr.gid;
	} else {
		c->uid = (uid_t)-1;
		c->gid = (gid_t)-1;
	}
	gid_t small[64];
	socklen_t len = sizeof(small);
	gid_t *g = small;
	int rc = getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, g, &len);
	if (rc && errno == ERANGE && len <= LOOP_MAX_GROUPS * sizeof(gid_t) && len > 0) {
		g = malloc(len);
		rc = g ? getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) : -1;
	}
	size_t n = rc == 0 ? len / sizeof(gid_t) : 0;
	if (n && (c->groups = malloc(n * sizeof(gid_t)))) {
		memcpy(c->groups, g, n * sizeof(gid_t));
		c->n_groups = (int)n;
	}
	if (g != small)
		free(g);
}

/* A free slot (the table grows when full), or -1 on ENOMEM. */
static int slot_take(loop *l)
{
	for (int i = 0; i < l->n_slots; i++)
		if (!l->slots[i])
			return i;
	int n = l->n_slots ? l->n_slots * 2 : 64;
	conn **ns = realloc(l->slots, sizeof(*ns) * (size_t)n);
	if (!ns)
		return -1;
	l->slots = ns;
	uint32_t *ng = realloc(l->gens, sizeof(*ng) * (size_t)n);
	if (!ng)
		return -1;
	l->gens = ng;
	for (int i = l->n_slots; i < n; i++) {
		l->slots[i] = NULL;
		l->gens[i] = 0;
	}
	int slot = l->n_slots;
	l->n_slots = n;
	return slot;
}

/* Sends an err frame on a connection that is refused before it has a conn,
 * without blocking (the socket's buffer is empty), and closes it. */
static void refuse(loop *l, int fd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(loop *l, int fd, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	proto_buf b;
	proto_buf_init(&b);
	proto_err e = {.code = HERD_E_LIMIT, .msg = proto_s(msg)};
	if (!proto_encode_err(&b, &e) && send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		(void)0; /* the peer may already be gone */
	proto_buf_fini(&b);
	close(fd);
	log_limited(l, &l->rl_refused, BLOG_WARN, "connection refused: %s", msg);
}

/* A refusal storm (a peer opening connections as fast as the broker
 * refuses them keeps the loop thread, and with it a core the compute
 * threads need, busy): past LOOP_STORM_REFUSALS refusals within
 * LOOP_STORM_WINDOW_MS, accepting pauses for accept_backoff_ms. Pending
 * connections wait in the kernel's backlog meanwhile (so does the flooding
 * peer, blocked in connect), and are taken in order when it resumes. */
static void refusal_storm(loop *l)
{
	const double now = clock_mono_ms();
	if (now - l->storm_t0 > LOOP_STORM_WINDOW_MS) {
		l->storm_t0 = now;
		l->storm_n = 0;
	}
	if (++l->storm_n < LOOP_STORM_REFUSALS || l->accept_paused || l->stopping)
		return;
	const int ms = l->cfg->limits.accept_backoff_ms;
	l->lim.accept_storms++;
	l->accept_paused = 1;
	l->accept_resume = now + ms;
	l->storm_n = 0;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (sqe) {
		io_uring_prep_cancel64(sqe, pack(NULL, LOOP_OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_IGNORE));
	}
	log_limited(l, &l->rl_accept, BLOG_WARN,
		    "%d connections refused within %.0f ms: pausing accept for %d ms "
		    "(limits.accept_backoff_ms)", LOOP_STORM_REFUSALS, LOOP_STORM_WINDOW_MS, ms);
}

/* 1 when c may stay: within max_connections and max_connections_per_uid
 * (c is not in the table yet). Else it is refused and freed. */
static int conn_admit(loop *l, conn *c)
{
	const cfg_limits *L = &l->cfg->limits;
	if (l->n_conns >= L->max_connections) {
		l->lim.refused_total++;
		refuse(l, c->fd, "too many connections: the broker's limit is %d (limits.max_connections)",
		       L->max_connections);
		refusal_storm(l);
		return 0;
	}
	int same = 0;
	for (int i = 0; i < l->n_slots; i++)
		same += l->slots[i] && l->slots[i]->uid == c->uid;
	if (same >= L->max_connections_per_uid) {
		l->lim.refused_uid++;
		refuse(l, c->fd,
		       "too many connections from uid %u: the limit is %d (limits.max_connections_per_uid)",
		       (unsigned)c->uid, L->max_connections_per_uid);
		refusal_storm(l);
		return 0;
	}
	return 1;
}

static void conn_new(loop *l, int fd)
{
	conn *c = calloc(1, sizeof(*c));
	if (!c) {
		blog_msg(l->log, BLOG_ERR, "out of memory accepting a connection");
		close(fd);
		return;
	}
	c->fd = fd;
	c->log = l->log;
	c->budget = -1;
	peer_creds(c);
	if (!conn_admit(l, c)) {
		free(c->groups);
		free(c);
		return;
	}
	c->rcap = LOOP_RBUF_INIT;
	c->rbuf = malloc(c->rcap);
	c->budget = budget_attach(&l->budgets, c->uid, l->cfg->limits.frame_budget_per_s, clock_mono_ms());
	c->share.t_last = clock_mono_ms();
	int slot = c->rbuf && c->budget >= 0 ? slot_take(l) : -1;
	if (slot < 0) {
		blog_msg(l->log, BLOG_ERR, "out of memory accepting a connection");
		conn_free(l, c);
		return;
	}
	l->gens[slot]++;
	c->id = (uint64_t)l->gens[slot] << 32 | (uint32_t)slot;
	c->t_connect = c->t_active = clock_mono_ms();
	l->slots[slot] = c;
	l->n_conns++;
	l->total_conns++;
	blog_msg(l->log, BLOG_DEBUG, "connection %d from pid %d uid %d", slot, (int)c->pid, (int)c->uid);
	arm_recv(l, c);
}

/* ---- sending -------------------------------------------------------------- */

static size_t sendq_bytes(const conn *c)
{
	size_t q = 0;
	for (const out_buf *p = c->sq_head; p; p = p->next)
		q += p->buf.len - p->off;
	return q;
}

/* Applies the send-queue limits to c's queue of q bytes, whether or not a
 * send is in flight (a peer that reads nothing keeps one in flight for
 * ever): past send_queue_pause_bytes its input is not read (it can ask for
 * nothing more), past send_queue_bytes it is cut off. Returns -1 when c
 * was closed. */
static int sendq_limit(loop *l, conn *c, size_t q)
{
	const cfg_limits *L = &l->cfg->limits;
	if (q > L->send_queue_bytes) {
		l->lim.sendq_cutoffs++;
		blog_msg(l->log, BLOG_WARN,
			 "connection pid %d uid %d agent '%s': %zu bytes unread, over "
			 "limits.send_queue_bytes %u: cut off",
			 (int)c->pid, (int)c->uid, c->name, q, L->send_queue_bytes);
		close_conn(l, c);
		return -1;
	}
	if (q > L->send_queue_pause_bytes && !c->rx_paused) {
		c->rx_paused = 1;
		l->lim.sendq_paused++;
		blog_msg(l->log, BLOG_DEBUG, "connection pid %d: %zu bytes unsent; not reading from it",
			 (int)c->pid, q);
	}
	return 0;
}

/* Starts sending c's queue if nothing is in flight; closes c when its
 * queue is empty and it was to close after sending, or when it is past the
 * send-queue cap. Returns -1 when c was closed (and may have been freed:
 * the caller must not touch it unless it holds an operation on it). */
static int kick(loop *l, conn *c)
{
	if (c->closing)
		return -1;
	out_buf *o = c->sq_head;
	while (o && o->off >= o->buf.len && !o->inflight) { /* empty runs (an encode that failed) */
		conn_pop_run(c);
		o = c->sq_head;
	}
	if (!o) {
		c->queued = 0;
		if (c->close_after_send && !c->send_inflight) {
			close_conn(l, c);
			return -1;
		}
		return 0;
	}
	c->queued = sendq_bytes(c);
	if (sendq_limit(l, c, c->queued))
		return -1;
	if (c->send_inflight)
		return 0;
	struct io_uring_sqe *sqe = get_sqe(l);
	if (!sqe) {
		close_conn(l, c);
		return -1;
	}
	o->inflight = 1;
	if (o->fd >= 0 && o->off == 0) {
		shm_fdmsg_init(&o->msg, o->buf.data, o->buf.len, o->fd);
		io_uring_prep_sendmsg(sqe, c->fd, &o->msg.msg, MSG_NOSIGNAL);
	} else {
		io_uring_prep_send(sqe, c->fd, o->buf.data + o->off, o->buf.len - o->off, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, pack(c, LOOP_OP_SEND));
	c->send_inflight = 1;
	return 0;
}

/* After a frame handler: closes c when the handler asked for it, else
 * sends what it queued (and closes c once sent when asked to). */
static void settle(loop *l, conn *c)
{
	if (c->close_now)
		close_conn(l, c);
	else
		kick(l, c);
}

static void process_input(loop *l, conn *c);

static void on_send(loop *l, conn *c, int res)
{
	c->send_inflight = 0;
	out_buf *o = c->sq_head;
	if (o)
		o->inflight = 0;
	if (c->closing) {
		conn_maybe_free(l, c);
		return;
	}
	if (res < 0) {
		blog_msg(l->log, BLOG_DEBUG, "send to pid %d: %s", (int)c->pid, strerror(-res));
		close_conn(l, c);
		return;
	}
	c->t_active = clock_mono_ms();
	if (o) {
		o->off += (size_t)res;
		if (o->fd >= 0)
			o->fd = -1; /* the fd went with the first byte */
		if (o->off >= o->buf.len)
			conn_pop_run(c);
	}
	if (kick(l, c))
		return; /* closed: c may be gone */
	if (c->rx_paused && c->queued <= l->cfg->limits.send_queue_pause_bytes / 2) {
		/* the peer reads again: take the frames it sent meanwhile (a recv
		 * still in flight does that when it completes) */
		c->rx_paused = 0;
		if (c->t_frame > 0)
			c->t_frame = clock_mono_ms(); /* the pause is not the peer's delay */
		if (!c->recv_inflight)
			process_input(l, c);
	}
}

/* ---- receiving ------------------------------------------------------------ */

/* Grows c's buffer to hold a frame of need bytes (within max_frame), after
 * moving the unread bytes from *off to the front. -1 on ENOMEM (closed). */
static int rbuf_fit(loop *l, conn *c, size_t *off, size_t need)
{
	if (need <= c->rcap)
		return 0;
	if (*off) {
		memmove(c->rbuf, c->rbuf + *off, c->rlen - *off);
		c->rlen -= *off;
		*off = 0;
	}
	uint8_t *nb = realloc(c->rbuf, need);
	if (!nb) {
		close_conn(l, c);
		return -1;
	}
	c->rbuf = nb;
	c->rcap = need;
	return 0;
}

/* 1 when c's uid may have one more frame of len bytes handled now; else
 * c stops reading until housekeeping finds its budget refilled. */
static int frame_budget(loop *l, conn *c, size_t len)
{
	const double rate = l->cfg->limits.frame_budget_per_s;
	if (budget_take(&l->budgets, c->budget, &c->share, budget_frame_cost(len), rate, clock_mono_ms()))
		return 1;
	c->rx_throttled = 1;
	l->lim.frame_throttles++;
	log_limited(l, &l->rl_throttle, BLOG_WARN,
		    "uid %u spent its frame budget (limits.frame_budget_per_s %d): not reading pid %d "
		    "until it refills",
		    (unsigned)c->uid, l->cfg->limits.frame_budget_per_s, (int)c->pid);
	return 0;
}

/* Handles the whole frames in c's buffer (until c stops reading or is
 * closed). Returns the bytes consumed. */
static size_t take_frames(loop *l, conn *c)
{
	size_t off = 0;
	while (!c->closing && !c->close_after_send && !c->rx_paused && !c->rx_throttled) {
		size_t flen = 0;
		int r = proto_frame_next(c->rbuf + off, c->rlen - off, l->cfg->max_frame, &flen);
		if (r == PROTO_FRAME_READY) {
			if (!frame_budget(l, c, flen))
				break;
			const int sr = session_frame(l, c, c->rbuf + off + PROTO_HDR_SIZE, flen);
			off += PROTO_HDR_SIZE + flen;
			settle(l, c);
			if (sr == SESSION_SHUTDOWN)
				loop_stop(l);
			continue;
		}
		if (r == PROTO_FRAME_NEED_MORE) {
			if (flen)
				rbuf_fit(l, c, &off, PROTO_HDR_SIZE + flen);
			break;
		}
		l->proto_errors++;
		conn_queue_err(c, 0, 0, HERD_E_PROTO, "frame of %zu bytes exceeds the maximum of %u bytes",
			       flen, (unsigned)l->cfg->max_frame);
		conn_close_after_send(c);
		kick(l, c);
		break;
	}
	return off;
}

/* After frames were taken: keeps the partial frame at the front (and when
 * it began, for limits.frame_timeout_ms), gives a large buffer back once
 * it is empty. */
static void rbuf_compact(conn *c, size_t off)
{
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
		c->t_frame = 0; /* a frame completed: what is left began now */
	}
	if (!c->rlen) {
		c->t_frame = 0;
		if (c->rcap > LOOP_RBUF_INIT) {
			uint8_t *nb = realloc(c->rbuf, LOOP_RBUF_INIT);
			if (nb) {
				c->rbuf = nb;
				c->rcap = LOOP_RBUF_INIT;
			}
		}
	} else if (c->t_frame == 0) {
		c->t_frame = clock_mono_ms();
	}
}

static void process_input(loop *l, conn *c)
{
	/* Hold c while dispatching: a handler may close it, which must not free
	 * it under us. */
	const int held = c->recv_inflight;
	c->recv_inflight = 1;
	size_t off = take_frames(l, c);
	c->recv_inflight = held;
	if (c->closing) {
		conn_maybe_free(l, c); /* or later, when its pending ops complete */
		return;
	}
	rbuf_compact(c, off);
	arm_recv(l, c);
}

static void on_recv(loop *l, conn *c, int res)
{
	c->recv_inflight = 0;
	if (c->closing) {
		conn_maybe_free(l, c);
		return;
	}
	if (res <= 0) {
		if (res < 0 && res != -ECONNRESET)
			blog_msg(l->log, BLOG_DEBUG, "recv from pid %d: %s", (int)c->pid, strerror(-res));
		close_conn(l, c);
		return;
	}
	int fd = -1;
	if (shm_fdrecv_finish(&c->rmsg, &fd) || (fd >= 0 && conn_push_fd(c, fd))) {
		/* several descriptors at once, cut control data, or more kept
		 * than any frame took: not a herd client */
		l->proto_errors++;
		conn_queue_err(c, 0, 0, HERD_E_PROTO,
			       "unexpected file descriptors (at most one per frame, %d waiting)",
			       CONN_RX_FDS);
		conn_close_after_send(c);
		kick(l, c);
		return;
	}
	c->rlen += (size_t)res;
	c->t_active = clock_mono_ms();
	process_input(l, c);
}

/* ---- scheduler events ----------------------------------------------------- */

static void deliver(loop *l, sched_event *e)
{
	if (e->conn & HTTP_CONN_BIT) {
		if (l->http)
			http_deliver(l->http, e);
		return;
	}
	conn *c = conn_by_id(l, e->conn);
	if (!c || c->close_after_send)
		return;
	if (e->type != SCHED_EV_TOK) {
		c->in_flight--;
		c->n_tokens += (uint64_t)e->n_gen;
	}
	proto_buf *b = conn_outbuf(c);
	if (!b) {
		close_conn(l, c);
		return;
	}
	int rc;
	if (e->type == SCHED_EV_TOK) {
		proto_tok t = {.id = e->id, .text = {e->text, e->text_len}, .tok = e->tok};
		rc = proto_encode_tok(b, &t);
	} else if (e->type == SCHED_EV_DONE) {
		proto_done d = {.id = e->id,
				.reason = e->reason, /* herd_finish end to end */
				.has_text = e->text != NULL,
				.text = {e->text, e->text_len},
				.n_prompt = (uint32_t)e->n_prompt,
				.n_gen = (uint32_t)e->n_gen,
				.n_cached = (uint32_t)e->n_cached,
				.t_queue_ms = e->t_queue_ms,
				.t_first_ms = e->t_first_ms > 0 ? e->t_first_ms : 0,
				.t_total_ms = e->t_total_ms,
				.merged = e->merged,
				.cached = e->cached};
		rc = proto_encode_done(b, &d);
	} else {
		proto_err x = {.has_id = 1, .id = e->id, .code = e->code, .msg = proto_s(e->msg)};
		rc = proto_encode_err(b, &x);
	}
	if (rc)
		blog_msg(l->log, BLOG_ERR, "cannot encode a frame for request %llu: %s",
			 (unsigned long long)e->id, herd_strerror(rc));
	kick(l, c);
}

static void drain_events(loop *l)
{
	sched_event *e = models_events_take(l->models);
	for (sched_event *p = e; p; p = p->next)
		deliver(l, p);
	sched_event_free(e);
	if (l->http)
		http_run(l->http); /* sends what the events queued */
	models_tick(l->models); /* loads finished or failed, drained models */
}

/* ---- shutdown --------------------------------------------------------------- */

void loop_stop(loop *l)
{
	if (l->stopping)
		return;
	l->stopping = 1;
	l->stop_deadline = clock_mono_ms() + LOOP_GRACE_MS;
	blog_msg(l->log, BLOG_INFO, "shutting down: cancelling requests of %d connections", l->n_conns);
	struct io_uring_sqe *sqe = get_sqe(l);
	if (sqe) {
		io_uring_prep_cancel64(sqe, pack(NULL, LOOP_OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, pack(NULL, LOOP_OP_IGNORE));
	}
	models_shutdown(l->models);
	arm_timer(l);
}

static int all_sent(loop *l)
{
	for (int i = 0; i < l->n_slots; i++) {
		conn *c = l->slots[i];
		if (c && (c->sq_head || c->send_inflight))
			return 0;
	}
	return !l->http || !http_busy(l->http);
}

static void check_stopped(loop *l)
{
	if (!l->stopping)
		return;
	if (!models_idle(l->models))
		goto not_yet;
	drain_events(l);
	if (all_sent(l)) {
		l->done = 1;
		return;
	}
not_yet:
	if (clock_mono_ms() >= l->stop_deadline) {
		blog_msg(l->log, BLOG_WARN, "shutdown grace period over; closing");
		l->done = 1;
	}
}

/* ---- the loop ---------------------------------------------------------------- */

/* ---- housekeeping --------------------------------------------------------- */

/* Closes c after an err naming the limit it overstayed. */
static void timeout_close(loop *l, conn *c, const char *what, const char *key, int ms)
{
	log_limited(l, &l->rl_timeout, BLOG_WARN, "connection pid %d uid %d: %s for %d ms (%s): closed",
		    (int)c->pid, (int)c->uid, what, ms, key);
	conn_queue_err(c, 0, 0, HERD_E_LIMIT, "%s for more than %d ms (%s): connection closed", what,
		       ms, key);
	conn_close_after_send(c);
	kick(l, c);
}

/* The time limits: a frame once begun completes within frame_timeout_ms;
 * a connection with nothing in flight or queued is closed after
 * idle_timeout_ms (when set). */
static void check_timeouts(loop *l, double now)
{
	const cfg_limits *L = &l->cfg->limits;
	for (int i = 0; i < l->n_slots; i++) {
		conn *c = l->slots[i];
		if (!c || c->closing)
			continue;
		if (c->close_after_send) {
			/* its last frames were never read: do not wait for ever */
			if (now - c->t_active > L->frame_timeout_ms)
				close_conn(l, c);
			continue;
		}
		if (c->t_frame > 0 && !c->rx_paused && !c->rx_throttled &&
		    now - c->t_frame > L->frame_timeout_ms) {
			l->lim.frame_timeouts++;
			timeout_close(l, c, "a frame left incomplete", "limits.frame_timeout_ms",
				      L->frame_timeout_ms);
		} else if (L->idle_timeout_ms > 0 && !c->in_flight && !c->sq_head &&
			   now - c->t_active > L->idle_timeout_ms) {
			l->lim.idle_timeouts++;
			timeout_close(l, c, "idle", "limits.idle_timeout_ms", L->idle_timeout_ms);
		}
	}
}

/* Reads again from the throttled connections whose uid's budget refilled:
 * first the frames already buffered, then the socket. */
static void resume_throttled(loop *l, double now)
{
	const double rate = l->cfg->limits.frame_budget_per_s;
	for (int i = 0; i < l->n_slots; i++) {
		conn *c = l->slots[i];
		if (!c || c->closing || !c->rx_throttled || !budget_ready(&l->budgets, c->budget, &c->share, rate, now))
			continue;
		c->rx_throttled = 0;
		if (c->t_frame > 0)
			c->t_frame = now; /* the wait was ours, not the peer's */
		process_input(l, c);
	}
}

static void housekeep(loop *l)
{
	const double now = clock_mono_ms();
	if (l->accept_paused && now >= l->accept_resume) {
		l->accept_paused = 0;
		arm_accept(l);
	}
	check_timeouts(l, now);
	resume_throttled(l, now);
	models_tick(l->models); /* loads waiting for memory */
	if (l->http)
		http_run(l->http); /* its timeouts, the dashboard's updates */
	if (l->tick)
		l->tick(l->tick_arg);
}

/* accept failed for want of descriptors (or memory): re-arming at once
 * would fail again at once, so accepting pauses for accept_backoff_ms
 * (pending connections wait in the backlog). */
static void accept_backoff(loop *l, int res)
{
	const int ms = l->cfg->limits.accept_backoff_ms;
	l->lim.accept_backoffs++;
	l->accept_paused = 1;
	l->accept_resume = clock_mono_ms() + ms;
	log_limited(l, &l->rl_accept, BLOG_WARN, "accept: %s; pausing accept for %d ms "
		    "(limits.accept_backoff_ms)", strerror(-res), ms);
}

static void on_accept(loop *l, int res, unsigned flags)
{
	if (!(flags & IORING_CQE_F_MORE))
		l->accept_armed = 0;
	if (res >= 0) {
		if (l->stopping)
			close(res);
		else
			conn_new(l, res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS) {
		accept_backoff(l, res);
	} else if (res != -ECANCELED) {
		log_limited(l, &l->rl_accept, BLOG_WARN, "accept: %s", strerror(-res));
	}
	arm_accept(l); /* no-op while armed, paused or stopping */
}

static void on_signal(loop *l, int res)
{
	if (res == (int)sizeof(l->siginfo)) {
		if (l->siginfo.ssi_signo == SIGHUP) {
			l->lim.sighups++;
			blog_msg(l->log, BLOG_INFO,
				 "SIGHUP ignored: the configuration is read at start-up only "
				 "(restart herdd to change it)");
		} else {
			blog_msg(l->log, BLOG_INFO, "signal %d received", (int)l->siginfo.ssi_signo);
			if (l->stopping)
				l->stop_deadline = 0; /* a second signal: stop now */
			loop_stop(l);
		}
	}
	arm_signal(l);
}

static void dispatch(loop *l, struct io_uring_cqe *cqe)
{
	const uint64_t ud = io_uring_cqe_get_data64(cqe);
	const unsigned op = (unsigned)(ud & LOOP_OP_MASK);
	conn *c = (conn *)(uintptr_t)(ud & ~(uint64_t)LOOP_OP_MASK);
	const int res = cqe->res;
	switch (op) {
	case LOOP_OP_ACCEPT:
		on_accept(l, res, cqe->flags);
		break;
	case LOOP_OP_RECV:
		on_recv(l, c, res);
		break;
	case LOOP_OP_SEND:
		on_send(l, c, res);
		break;
	case LOOP_OP_WAKE:
		drain_events(l);
		arm_wake(l);
		break;
	case LOOP_OP_SIGNAL:
		on_signal(l, res);
		break;
	case LOOP_OP_TIMER:
		l->timer_armed = 0;
		if (l->stopping)
			arm_timer(l);
		break;
	case LOOP_OP_HOUSE:
		housekeep(l);
		arm_house(l);
		break;
	case LOOP_OP_HTTP:
		l->http_armed = 0;
		if (l->http)
			http_run(l->http);
		arm_http(l);
		break;
	default:
		break;
	}
}

int loop_run(loop *l)
{
	arm_accept(l);
	arm_wake(l);
	arm_signal(l);
	arm_house(l);
	arm_http(l);
	blog_msg(l->log, BLOG_INFO, "serving %d model(s) on %s", models_count(l->models),
		 l->cfg->socket_path);
	int rc = 0;
	while (!l->done) {
		int r = io_uring_submit_and_wait(&l->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			blog_msg(l->log, BLOG_ERR, "io_uring_submit_and_wait: %s", strerror(-r));
			rc = r;
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe)
		{
			dispatch(l, cqe);
			n++;
		}
		io_uring_cq_advance(&l->ring, n);
		check_stopped(l);
	}
	/* Close whatever is left; the ring's teardown cancels pending ops. */
	for (int i = 0; i < l->n_slots; i++) {
		conn *c = l->slots[i];
		if (c) {
			close_conn(l, c);
		}
	}
	return rc;
}

int loop_create(loop **out, const loop_opts *o)
{
	*out = NULL;
	loop *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->cfg = o->cfg;
	l->models = o->models;
	l->pressure = o->pressure;
	l->tick = o->tick;
	l->tick_arg = o->tick_arg;
	l->log = o->log;
	l->listen_fd = o->listen_fd;
	l->wake_fd = o->wake_fd;
	l->sig_fd = o->signal_fd;
	l->next_agent = 1;
	l->t_start = clock_mono_ms();
	int rc = io_uring_queue_init(LOOP_RING_ENTRIES, &l->ring, 0);
	if (rc) {
		free(l);
		return rc;
	}
	l->ring_ok = 1;
	*out = l;
	return 0;
}

void loop_destroy(loop *l)
{
	if (!l)
		return;
	/* Connections still waiting for completions: the ring goes away, so no
	 * completion will come; free them here. */
	for (int i = 0; i < l->n_slots; i++)
		if (l->slots[i])
			close_conn(l, l->slots[i]);
	http_destroy(l->http); /* cancels its requests while the models still exist */
	if (l->ring_ok)
		io_uring_queue_exit(&l->ring);
	while (l->zombies) {
		conn *c = l->zombies;
		l->zombies = c->znext;
		conn_free(l, c);
	}
	free(l->slots);
	free(l->gens);
	budget_tab_free(&l->budgets);
	if (l->listen_fd >= 0)
		close(l->listen_fd);
	free(l);
}
