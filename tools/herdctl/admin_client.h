/* herdctl's side of the admin protocol: one blocking Unix-socket connection
 * to herdd that sends an `admin` frame and waits for its `admin_ok` or
 * `err` (docs/protocol.md). No hello is needed for admin frames.
 *
 * Usage: adm_init, adm_connect, adm_call (any number of times), adm_fini.
 * Caller-owned struct; not thread-safe. */
#ifndef HERD_TOOLS_HERDCTL_ADMIN_CLIENT_H
#define HERD_TOOLS_HERDCTL_ADMIN_CLIENT_H

#include <stddef.h>

#include "proto/proto.h"

typedef struct adm_client {
	int fd;          /* -1 when not connected */
	unsigned char *buf; /* received bytes [len] of cap */
	size_t len, cap;
	unsigned char *body; /* body of the last reply: msg's strings point here */
	proto_msg msg;   /* the last reply (admin_ok or err) */
	int timeout_ms;  /* per reply; default 30000 */
} adm_client;

void adm_init(adm_client *a);
/* Closes the connection and frees the last reply. Accepts a zeroed struct. */
void adm_fini(adm_client *a);

/* Connects to the broker's socket at path. Returns 0, or -errno of
 * socket/connect with a message in err: -ENOENT / -ECONNREFUSED ("no broker
 * at PATH"), -EACCES (not allowed to connect to the socket), -ENAMETOOLONG. */
int adm_connect(adm_client *a, const char *path, char *err, size_t errlen);

/* Sends admin cmd with n_args args and waits for the reply. Returns 0 with
 * a->msg holding admin_ok (a->msg.admin_ok.result: the result tree, valid
 * until the next call or adm_fini), or the err frame's code (-EPERM, HERD_E_*)
 * with the broker's message in err, or -ECONNRESET (the broker closed the
 * connection), -ETIMEDOUT, HERD_E_PROTO (malformed or unexpected reply),
 * -errno, with a message in err. */
int adm_call(adm_client *a, const char *cmd, const char *const *args, size_t n_args, char *err,
	     size_t errlen);

#endif
