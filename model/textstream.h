/* Streaming generated text: where stop strings end it, and how much of its
 * tail must be held back from a stream for now (a proper prefix of a stop
 * string, which a later token may complete, or the first bytes of a UTF-8
 * character whose remaining bytes come with a later token).
 * Pure functions over caller buffers: thread-safe. Empty stop strings are
 * ignored. Used by the one generation step (model/generate.h) that the
 * broker's scheduler, libherd's local generation and herd run share, so all
 * three stream the same way. */
#ifndef HERD_MODEL_TEXTSTREAM_H
#define HERD_MODEL_TEXTSTREAM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes at the end of text[0..len) that must not be streamed yet. */
size_t text_holdback(const char *text, size_t len, const char *const *stop, size_t n_stop);

/* Bytes at the end of text[0..len) that start an incomplete UTF-8
 * character (0..3). A byte that cannot start a character is not held. */
size_t text_utf8_incomplete(const char *text, size_t len);

/* Copies in[0..n) to out as valid UTF-8: every byte that does not belong
 * to a well-formed character (RFC 3629: no overlong forms, surrogates or
 * values past U+10FFFF) becomes U+FFFD. out holds 3 * n bytes; returns the
 * bytes written. For text that must be UTF-8 (JSON): a random-weight
 * model's byte tokens need not decode. */
size_t text_utf8_sanitize(const char *in, size_t n, char *out);

/* Offset of the earliest stop string occurrence in text[0..len) that ends
 * at or after offset `from` (the bytes appended since the last call), or -1. */
long text_find_stop(const char *text, size_t len, size_t from, const char *const *stop,
		    size_t n_stop);

#ifdef __cplusplus
}
#endif
#endif
