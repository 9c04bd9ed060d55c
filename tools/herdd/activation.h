/* systemd socket activation and readiness for herdd (tools/herdd/activation.c). */
#ifndef HERD_TOOLS_HERDD_ACTIVATION_H
#define HERD_TOOLS_HERDD_ACTIVATION_H

#include <stddef.h>

/* The listening socket systemd passed (LISTEN_FDS), or *fd = -1 when none
 * was passed. *path: the socket's path ("" when it has none). 0, or -1 with
 * err saying why the passed descriptors cannot be served. */
int activation_listen_fd(int *fd, char *path, size_t pathlen, char *err, size_t errlen);

/* sd_notify(state) to the service manager, e.g. "READY=1", "STOPPING=1". */
void activation_notify(const char *state);

#endif
