/* Broker log lines: "herdd[pid] LEVEL: message". */
#include "log.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void blog_init(blog *l, int verbose)
{
	l->out = NULL;
	l->level = verbose ? BLOG_DEBUG : BLOG_INFO;
}

int blog_enabled(const blog *l, int level)
{
	return level <= (l ? l->level : BLOG_INFO);
}

size_t blog_escape(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	if (!cap)
		return 0;
	for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
		const int ctl = *p < 0x20 || *p == 0x7f || *p == '\\';
		const size_t need = ctl ? 4 : 1;
		if (n + need >= cap)
			break;
		if (!ctl) {
			dst[n++] = (char)*p;
		} else {
			dst[n++] = '\\';
			dst[n++] = 'x';
			dst[n++] = hex[*p >> 4];
			dst[n++] = hex[*p & 15];
		}
	}
	dst[n] = 0;
	return n;
}

void blog_msg(const blog *l, int level, const char *fmt, ...)
{
	if (!blog_enabled(l, level))
		return;
	static const char *const names[] = {"error", "warning", "info", "debug"};
	char line[1024], msg[1024];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	localtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld herdd[%d] %s: ", tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
			 names[level < 0 ? 0 : level > 3 ? 3 : level]);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A message is one line: peer data in it (names, commands, model names)
	 * can neither start a forged line nor send escape sequences to a
	 * terminal. */
	if (n > 0 && (size_t)n < sizeof(line))
		blog_escape(line + n, sizeof(line) - (size_t)n, msg);
	size_t len = strlen(line);
	if (len + 1 < sizeof(line)) {
		line[len] = '\n';
		line[len + 1] = 0;
	} else {
		line[sizeof(line) - 2] = '\n';
	}
	fputs(line, l && l->out ? l->out : stderr);
}
