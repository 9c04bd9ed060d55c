/* Broker log: one line per message on a stream (stderr by default), with a
 * level filter. A blog is caller-owned plain data (blog_init); it holds no
 * lock of its own: each message is one fprintf of a preformatted line, and
 * stdio locks the stream per call, so any thread may log through a shared
 * blog once it is initialised and no longer modified. */
#ifndef HERD_BROKER_LOG_H
#define HERD_BROKER_LOG_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { BLOG_ERR = 0, BLOG_WARN = 1, BLOG_INFO = 2, BLOG_DEBUG = 3 };

typedef struct blog {
	FILE *out;  /* NULL: stderr */
	int level;  /* messages above it are dropped */
} blog;

/* verbose != 0 enables BLOG_DEBUG. */
void blog_init(blog *l, int verbose);
/* l may be NULL (stderr, info level). */
void blog_msg(const blog *l, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int blog_enabled(const blog *l, int level);
/* Copies src into dst[cap] (NUL-terminated, cut at a whole character) with
 * every control character, DEL and backslash written as \xNN. Returns the
 * length written. blog_msg applies it to every message. */
size_t blog_escape(char *dst, size_t cap, const char *src);

#ifdef __cplusplus
}
#endif
#endif
