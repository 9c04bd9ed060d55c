/* systemd socket activation and readiness for herdd (activation.h).
 *
 * Under herd.socket, systemd binds /run/herd/herd.sock itself (owner, group
 * and mode from the unit) and passes the listening descriptor as fd 3 with
 * LISTEN_FDS=1 and LISTEN_PID set to herdd's pid; herdd then serves on it
 * instead of binding. sd_listen_fds checks LISTEN_PID and clears the
 * variables, so nothing herdd starts inherits them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

#include "activation.h"

int activation_listen_fd(int *fd, char *path, size_t pathlen, char *err, size_t errlen)
{
	*fd = -1;
	path[0] = 0;
	const int n = sd_listen_fds(1);
	if (n == 0)
		return 0;
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		return -1;
	}
	if (n != 1) {
		snprintf(err, errlen, "socket activation: systemd passed %d descriptors; herdd serves one "
			 "socket (one ListenStream= in herd.socket)", n);
		return -1;
	}
	const int s = SD_LISTEN_FDS_START;
	if (sd_is_socket_unix(s, SOCK_STREAM, 1, NULL, 0) <= 0) {
		snprintf(err, errlen, "socket activation: descriptor %d is not a listening Unix stream "
			 "socket (herd.socket must use ListenStream=PATH)", s);
		return -1;
	}
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	memset(&sa, 0, sizeof(sa));
	if (getsockname(s, (struct sockaddr *)&sa, &len) == 0 && len > offsetof(struct sockaddr_un, sun_path) &&
	    sa.sun_path[0] == '/')
		snprintf(path, pathlen, "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
			 sa.sun_path);
	if (fcntl(s, F_SETFD, FD_CLOEXEC)) {
		snprintf(err, errlen, "socket activation: fcntl: %s", strerror(errno));
		return -1;
	}
	*fd = s;
	return 0;
}

void activation_notify(const char *state)
{
	sd_notify(0, state); /* no-op without NOTIFY_SOCKET (not Type=notify) */
}
