/* File descriptor passing over Unix sockets (SCM_RIGHTS). See fdpass.h. */
#include "shm/fdpass.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "herd/error.h"

void shm_fdmsg_init(shm_fdmsg *m, const void *buf, size_t len, int fd)
{
	memset(m, 0, sizeof(*m));
	m->iov.iov_base = (void *)buf;
	m->iov.iov_len = len;
	m->msg.msg_iov = &m->iov;
	m->msg.msg_iovlen = 1;
	if (fd >= 0) {
		m->msg.msg_control = m->ctl.buf;
		m->msg.msg_controllen = sizeof(m->ctl.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
}

void shm_fdmsg_advance(shm_fdmsg *m, size_t n)
{
	if (n == 0)
		return;
	if (n > m->iov.iov_len)
		n = m->iov.iov_len;
	m->iov.iov_base = (char *)m->iov.iov_base + n;
	m->iov.iov_len -= n;
	m->msg.msg_control = NULL;
	m->msg.msg_controllen = 0;
}

size_t shm_fdmsg_remaining(const shm_fdmsg *m)
{
	return m->iov.iov_len;
}

int shm_fd_send(int sock, const void *buf, size_t len, int fd)
{
	shm_fdmsg m;
	if (!buf || len == 0)
		return HERD_E_INVAL;
	shm_fdmsg_init(&m, buf, len, fd);
	while (shm_fdmsg_remaining(&m) > 0) {
		const ssize_t r = sendmsg(sock, &m.msg, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd p = {.fd = sock, .events = POLLOUT};
				if (poll(&p, 1, -1) < 0 && errno != EINTR)
					return -errno;
				continue;
			}
			return -errno;
		}
		shm_fdmsg_advance(&m, (size_t)r);
	}
	return 0;
}

/* Walks the control data of msg: keeps the single SCM_RIGHTS fd, closes
 * every descriptor when there are several or the control data was cut. */
static int take_fds(struct msghdr *msg, int *fd)
{
	int n_fds = 0, first = -1;
	*fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;
			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n_fds++ == 0)
				first = f;
			else
				close(f);
		}
	}
	if (n_fds > 1 || (msg->msg_flags & MSG_CTRUNC)) {
		if (first >= 0)
			close(first);
		return HERD_E_PROTO;
	}
	*fd = first;
	return 0;
}

int shm_fd_recv(int sock, void *buf, size_t cap, size_t *len, int *fd)
{
	shm_fdrecv r;
	if (!len || !fd || !buf || cap == 0)
		return HERD_E_INVAL;
	*len = 0;
	*fd = -1;
	shm_fdrecv_init(&r, buf, cap);
	ssize_t n;
	do
		n = recvmsg(sock, &r.msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	*len = (size_t)n;
	return shm_fdrecv_finish(&r, fd);
}

void shm_fdrecv_init(shm_fdrecv *r, void *buf, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->iov.iov_base = buf;
	r->iov.iov_len = cap;
	r->msg.msg_iov = &r->iov;
	r->msg.msg_iovlen = 1;
	r->msg.msg_control = r->ctl.buf;
	r->msg.msg_controllen = sizeof(r->ctl.buf);
}

int shm_fdrecv_finish(shm_fdrecv *r, int *fd)
{
	if (!fd)
		return HERD_E_INVAL;
	return take_fds(&r->msg, fd);
}
