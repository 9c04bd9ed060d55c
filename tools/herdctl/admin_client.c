/* Blocking admin client over the broker's Unix socket. */
#include "admin_client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"

#define ADM_MAX_REPLY (64u << 20) /* a segments list of thousands still fits */

void adm_init(adm_client *a)
{
	memset(a, 0, sizeof(*a));
	a->fd = -1;
	a->timeout_ms = 30000;
}

void adm_fini(adm_client *a)
{
	if (!a)
		return;
	proto_msg_free(&a->msg);
	if (a->fd >= 0)
		close(a->fd);
	free(a->buf);
	free(a->body);
	adm_init(a);
}

int adm_connect(adm_client *a, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int rc = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return rc;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int rc = -errno;
		if (rc == -ENOENT || rc == -ECONNREFUSED || rc == -ENOTDIR)
			snprintf(err, errlen, "no broker at %s", path);
		else if (rc == -EACCES || rc == -EPERM)
			snprintf(err, errlen, "permission denied: cannot connect to %s", path);
		else
			snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
		close(fd);
		return rc == -ENOTDIR ? -ENOENT : rc;
	}
	a->fd = fd;
	return 0;
}


/* Reads the next frame into a->msg. */
static int adm_read(adm_client *a, char *err, size_t errlen)
{
	const double deadline = clock_mono_ms() + a->timeout_ms;
	proto_msg_free(&a->msg);
	for (;;) {
		size_t flen = 0;
		int r = proto_frame_next(a->buf, a->len, ADM_MAX_REPLY, &flen);
		if (r == PROTO_FRAME_READY) {
			free(a->body);
			a->body = malloc(flen ? flen : 1);
			if (!a->body)
				return -ENOMEM;
			memcpy(a->body, a->buf + PROTO_HDR_SIZE, flen);
			a->len -= PROTO_HDR_SIZE + flen;
			memmove(a->buf, a->buf + PROTO_HDR_SIZE + flen, a->len);
			char perr[256] = "";
			int rc = proto_decode(a->body, flen, &a->msg, perr, sizeof(perr));
			if (rc)
				snprintf(err, errlen, "malformed reply from the broker: %s", perr);
			return rc;
		}
		if (r < 0) {
			snprintf(err, errlen, "the broker's reply is too large (%zu bytes)", flen);
			return HERD_E_PROTO;
		}
		if (a->len == a->cap) {
			size_t cap = a->cap ? a->cap * 2 : 65536;
			unsigned char *nb = realloc(a->buf, cap);
			if (!nb)
				return -ENOMEM;
			a->buf = nb;
			a->cap = cap;
		}
		const double left = deadline - clock_mono_ms();
		struct pollfd p = {.fd = a->fd, .events = POLLIN};
		int pr = left > 0 ? poll(&p, 1, (int)left + 1) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0) {
			snprintf(err, errlen, "no answer from the broker within %d ms", a->timeout_ms);
			return -ETIMEDOUT;
		}
		ssize_t n = recv(a->fd, a->buf + a->len, a->cap - a->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "the broker closed the connection");
			return -ECONNRESET;
		}
		a->len += (size_t)n;
	}
}

int adm_call(adm_client *a, const char *cmd, const char *const *args, size_t n_args, char *err,
	     size_t errlen)
{
	proto_str sargs[PROTO_MAX_ARGS];
	if (n_args > PROTO_MAX_ARGS)
		return HERD_E_INVAL;
	for (size_t i = 0; i < n_args; i++)
		sargs[i] = proto_s(args[i]);
	proto_admin m = {.cmd = proto_s(cmd), .args = sargs, .n_args = n_args};
	proto_buf b;
	proto_buf_init(&b);
	int rc = proto_encode_admin(&b, &m);
	if (rc) {
		proto_buf_fini(&b);
		snprintf(err, errlen, "cannot encode the request: %s", herd_strerror(rc));
		return rc;
	}
	for (size_t off = 0; off < b.len;) {
		ssize_t w = send(a->fd, b.data + off, b.len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = -errno;
			proto_buf_fini(&b);
			snprintf(err, errlen, "cannot send to the broker: %s", strerror(-rc));
			return rc == -EPIPE ? -ECONNRESET : rc;
		}
		off += (size_t)w;
	}
	proto_buf_fini(&b);
	if ((rc = adm_read(a, err, errlen)))
		return rc;
	if (a->msg.type == PROTO_ERR) {
		const proto_err *e = &a->msg.err;
		snprintf(err, errlen, "%.*s", (int)e->msg.len, e->msg.ptr ? e->msg.ptr : "");
		return e->code ? e->code : HERD_E_PROTO;
	}
	if (a->msg.type != PROTO_ADMIN_OK) {
		snprintf(err, errlen, "unexpected '%s' frame from the broker",
			 proto_type_name(a->msg.type));
		return HERD_E_PROTO;
	}
	return 0;
}
