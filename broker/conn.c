/* A connection's outbox: queued frames, error frames, close requests. See
 * conn.h for who calls what. */
#include "broker/conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_ERR_MSG_MAX 512 /* bytes of an err frame's message, NUL included */

static out_buf *run_new(int fd)
{
	out_buf *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	proto_buf_init(&o->buf);
	o->fd = fd;
	return o;
}

static void run_free(out_buf *o)
{
	proto_buf_fini(&o->buf);
	free(o);
}

static void run_append(conn *c, out_buf *o)
{
	if (c->sq_tail)
		c->sq_tail->next = o;
	else
		c->sq_head = o;
	c->sq_tail = o;
}

proto_buf *conn_outbuf(conn *c)
{
	out_buf *t = c->sq_tail;
	if (t && !t->inflight && t->fd < 0)
		return &t->buf;
	out_buf *o = run_new(-1);
	if (!o)
		return NULL;
	run_append(c, o);
	return &o->buf;
}

int conn_queue_fd(conn *c, const uint8_t *frame, size_t len, int fd)
{
	out_buf *o = run_new(fd);
	if (!o)
		return -ENOMEM;
	if (proto_buf_append(&o->buf, frame, len)) {
		run_free(o);
		return -ENOMEM;
	}
	run_append(c, o);
	return 0;
}

void conn_queue_err(conn *c, int has_id, uint64_t id, int code, const char *fmt, ...)
{
	char msg[CONN_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	proto_buf *b = conn_outbuf(c);
	if (!b)
		return;
	proto_err e = {.has_id = has_id, .id = id, .code = code, .msg = proto_s(msg)};
	if (proto_encode_err(b, &e))
		blog_msg(c->log, BLOG_ERR, "cannot encode an err frame");
}

void conn_close_after_send(conn *c)
{
	c->close_after_send = 1;
}

void conn_close_soon(conn *c)
{
	c->close_now = 1;
}

void conn_pop_run(conn *c)
{
	out_buf *o = c->sq_head;
	if (!o)
		return;
	c->sq_head = o->next;
	if (!c->sq_head)
		c->sq_tail = NULL;
	run_free(o);
}

void conn_drop_queue(conn *c)
{
	while (c->sq_head)
		conn_pop_run(c);
}

int conn_in_group(const conn *c, gid_t gid)
{
	if (c->gid == gid)
		return 1;
	for (int i = 0; i < c->n_groups; i++)
		if (c->groups[i] == gid)
			return 1;
	return 0;
}

int conn_push_fd(conn *c, int fd)
{
	if (c->n_rx_fds == CONN_RX_FDS) {
		close(fd);
		return -EMFILE;
	}
	c->rx_fds[c->n_rx_fds++] = fd;
	return 0;
}

int conn_take_fd(conn *c)
{
	if (!c->n_rx_fds)
		return -1;
	const int fd = c->rx_fds[0];
	memmove(c->rx_fds, c->rx_fds + 1, sizeof(int) * (size_t)--c->n_rx_fds);
	return fd;
}

void conn_close_rx_fds(conn *c)
{
	while (c->n_rx_fds)
		close(c->rx_fds[--c->n_rx_fds]);
}
