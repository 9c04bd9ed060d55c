/* Small text conventions shared by every module's messages. */
#ifndef HERD_COMMON_TEXT_H
#define HERD_COMMON_TEXT_H

/* At most this many bytes of a peer- or file-supplied name are quoted in an
 * error message ("unknown model '%.*s'"): enough to recognise it, never a
 * whole megabyte of garbage in a log line. */
#define HERD_QUOTE_MAX 64

/* The precision argument for "%.*s" that quotes at most HERD_QUOTE_MAX bytes
 * of a string of len bytes. */
#define HERD_QUOTE_LEN(len) ((int)((len) > HERD_QUOTE_MAX ? HERD_QUOTE_MAX : (len)))

#endif
