/* Passing a file descriptor (an image's read-only shm fd) with a data buffer
 * (a frame) over a Unix stream socket, as SCM_RIGHTS ancillary data.
 *
 * The fd travels with the first byte of the data: a receiver that reads a
 * frame from its start gets the fd with the first recvmsg that returns bytes
 * of it (Linux never merges bytes that carry ancillary data with bytes sent
 * before them into one read). Received descriptors are close-on-exec
 * (MSG_CMSG_CLOEXEC).
 *
 * Blocking calls (shm_fd_send / shm_fd_recv) are for agents and tools. The
 * broker sends with io_uring: shm_fdmsg_init() builds the msghdr for
 * IORING_OP_SENDMSG, and shm_fdrecv_init()/shm_fdrecv_finish() do the same
 * for IORING_OP_RECVMSG.
 *
 * Errors: 0 or -errno; HERD_E_PROTO for unexpected ancillary data (see
 * shm_fd_recv); HERD_E_INVAL for bad arguments. No global state; distinct
 * sockets/structs may be used from any thread.
 */
#ifndef HERD_SHM_FDPASS_H
#define HERD_SHM_FDPASS_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Room for the control data of one fd; the union aligns it for cmsghdr. */
typedef union shm_fdctl {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
} shm_fdctl;

/* Sends len bytes of buf over sock, with fd (if fd >= 0) attached to the
 * first byte; loops over partial sends, retries EINTR, and on a
 * non-blocking socket waits (poll) for room, so it returns only when all
 * bytes are queued. MSG_NOSIGNAL: a closed peer gives -EPIPE, not SIGPIPE.
 * The caller keeps fd (the kernel duplicates it into the message).
 * len must be > 0 (ancillary data needs at least one byte).
 * Returns 0, HERD_E_INVAL, or -errno (-EPIPE, -ECONNRESET, ...). */
int shm_fd_send(int sock, const void *buf, size_t len, int fd);

/* One recvmsg(): receives up to cap (> 0) bytes into buf and at most one fd.
 * *len = bytes received (0 = the peer closed the connection), *fd = the
 * received descriptor (the caller's to close) or -1. Retries EINTR; on a
 * non-blocking socket without data returns -EAGAIN.
 * More than one descriptor, or control data cut short (MSG_CTRUNC), is a
 * protocol error: every received descriptor is closed, *fd = -1, *len still
 * tells the bytes consumed, and HERD_E_PROTO is returned. Ancillary data of
 * other kinds (e.g. SCM_CREDENTIALS) is ignored. */
int shm_fd_recv(int sock, void *buf, size_t cap, size_t *len, int *fd);

/* ---- io_uring helpers -------------------------------------------------- */

/* A sendmsg message carrying buf and (optionally) one fd. The struct holds
 * pointers into itself (msg -> iov, msg -> ctl): initialise it in the place
 * where it stays, and keep it (and buf) alive and unmoved until the SENDMSG
 * completes. Pass &m->msg to io_uring_prep_sendmsg() (flags MSG_NOSIGNAL
 * recommended). */
typedef struct shm_fdmsg {
	struct msghdr msg;
	struct iovec iov;
	shm_fdctl ctl;
} shm_fdmsg;

/* fd < 0: no control data. The fd is not duplicated: keep it open until the
 * operation completes (the kernel takes its reference during the send). */
void shm_fdmsg_init(shm_fdmsg *m, const void *buf, size_t len, int fd);
/* After a short send of n bytes: skips them; the fd went out with the first
 * byte, so the control data is dropped for the rest. */
void shm_fdmsg_advance(shm_fdmsg *m, size_t n);
/* Bytes still to send. */
size_t shm_fdmsg_remaining(const shm_fdmsg *m);

/* A recvmsg message for IORING_OP_RECVMSG with room for control data of a
 * few descriptors (so extras are seen and closed rather than lost to
 * MSG_CTRUNC). Same lifetime rules as shm_fdmsg. Submit &r->msg with flags
 * MSG_CMSG_CLOEXEC. */
typedef struct shm_fdrecv {
	struct msghdr msg;
	struct iovec iov;
	/* aligned for cmsghdr without holding one: a struct with a flexible
	 * member inside a union would make every struct holding this one
	 * variable-sized (clang refuses that anywhere but at the end) */
	struct {
		_Alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int) * 8)];
	} ctl;
} shm_fdrecv;

void shm_fdrecv_init(shm_fdrecv *r, void *buf, size_t cap);
/* After completion (r->msg.msg_flags as the kernel left it): extracts the fd
 * like shm_fd_recv does. Returns 0 with *fd = descriptor or -1, or
 * HERD_E_PROTO (all received descriptors closed, *fd = -1). */
int shm_fdrecv_finish(shm_fdrecv *r, int *fd);

#ifdef __cplusplus
}
#endif
#endif
