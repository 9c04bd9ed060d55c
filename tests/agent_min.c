/* The smallest agent: links against an installed libherd through
 * pkg-config (tests/check_install.sh) and touches the public API without a
 * broker. Exits 0 when the calls behave as documented. */
#include <stdio.h>
#include <string.h>

#include <herd/error.h>
#include <herd/herd.h>

int main(void)
{
	char path[256];
	herd_request r;
	herd_request_init(&r);
	if (strcmp(herd_strerror(HERD_E_PROTO), "") == 0 ||
	    herd_default_socket_path(path, sizeof(path)) < 0) {
		fprintf(stderr, "agent_min: unexpected result from libherd\n");
		return 1;
	}
	printf("agent_min: %s; default socket %s\n", herd_strerror(HERD_E_PROTO), path);
	return 0;
}
