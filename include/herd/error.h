/* herd: error codes shared by every module.
 *
 * Functions return int: 0 on success, -errno for system errors, or one of the
 * HERD_E_* codes below, which sit in a negative band below errno's range so
 * the two never collide. herd_strerror() names both kinds.
 */
#ifndef HERD_ERROR_H
#define HERD_ERROR_H

#include <stddef.h>

/* Marks a function of libherd's public ABI. Everything else in the library
 * is built with hidden visibility, so libherd.so exports exactly the
 * functions declared with HERD_API in include/herd/. */
#if defined(__GNUC__) || defined(__clang__)
#define HERD_API __attribute__((visibility("default")))
#else
#define HERD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum {
	HERD_E_BASE = -10000,
	HERD_E_FORMAT = -10001,      /* malformed file or frame */
	HERD_E_TRUNCATED = -10002,   /* data ends before a declared size */
	HERD_E_RANGE = -10003,       /* offset, size or count out of range */
	HERD_E_UNSUPPORTED = -10004, /* unknown type, architecture or version */
	HERD_E_MISSING = -10005,     /* required key or tensor absent */
	HERD_E_SHAPE = -10006,       /* tensor shape does not match the model */
	HERD_E_INVAL = -10007,       /* bad argument */
	HERD_E_NOSPACE = -10008,     /* context, KV pages or batch slots exhausted */
	HERD_E_PROTO = -10009,       /* wire protocol violation */
	HERD_E_VERSION = -10010,     /* incompatible version */
	HERD_E_CANCELLED = -10011,   /* request cancelled */
	HERD_E_LIMIT = -10012,       /* a configured limit of the broker refused it */
	HERD_E_UNTRUSTED = -10013,   /* an object failed a trust check (owner, mode, digest) */
	HERD_E_LAST = -10014
};

/* Returns a static string naming err (a HERD_E_* code or -errno). Never NULL.
 * Thread-safe. */
HERD_API const char *herd_strerror(int err);

/* Formats a message into err (when err and errlen are non-zero) and returns
 * code, for the "return herd_errf(err, errlen, HERD_E_X, ...)" pattern of
 * functions that report what went wrong in words. Exported because this
 * public header declares it; meant for herd's own modules. */
HERD_API int herd_errf(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
