/* herdd's HTTP face (off unless the configuration has "http": {"listen":
 * ...}): the seed's JSON endpoints, Prometheus metrics, OpenAI- and
 * Ollama-compatible generation, and the live dashboard. docs/http.md has
 * the endpoints and the reasons for libmicrohttpd.
 *
 * libmicrohttpd runs without threads of its own, in its external epoll
 * mode: the broker's io_uring loop polls MHD's epoll fd and calls MHD_run
 * on the loop thread, so every handler runs where the socket's frame
 * handlers run and reads broker state (admin results, models, the agents'
 * counters) without locks. Generation requests go through session.c's
 * checks to the same schedulers as socket agents; their events come back
 * through the loop's deliver (ids with HTTP_CONN_BIT, loop_int.h). */
#ifndef HERD_BROKER_HTTP_H
#define HERD_BROKER_HTTP_H

#include <stddef.h>

#include "broker/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* When cfg->http.listen is set: binds it (port 0: any free port), starts
 * the server and hands it to l (loop_destroy stops it). Logs "http:
 * listening on http://HOST:PORT". 0 (also when HTTP is off), or an error
 * with a message in err (address in use, not permitted, ...). */
int http_start(loop *l, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
