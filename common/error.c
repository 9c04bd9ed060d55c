#include "herd/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *herd_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case HERD_E_FORMAT: return "malformed data";
	case HERD_E_TRUNCATED: return "data truncated";
	case HERD_E_RANGE: return "value out of range";
	case HERD_E_UNSUPPORTED: return "unsupported type, architecture or version";
	case HERD_E_MISSING: return "required key or tensor missing";
	case HERD_E_SHAPE: return "tensor shape mismatch";
	case HERD_E_INVAL: return "invalid argument";
	case HERD_E_NOSPACE: return "out of context, cache pages or batch slots";
	case HERD_E_PROTO: return "protocol error";
	case HERD_E_VERSION: return "incompatible version";
	case HERD_E_CANCELLED: return "cancelled";
	case HERD_E_LIMIT: return "limit exceeded";
	case HERD_E_UNTRUSTED: return "not trusted";
	default: break;
	}
	if (err < 0 && err > HERD_E_BASE)
		return strerror(-err); /* strerror is MT-safe in glibc for valid codes */
	return "unknown error";
}

int herd_errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}
