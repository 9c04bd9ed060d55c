/* libherd internals shared between client.c (connection, generation) and
 * local.c (attached models). Not installed. */
#ifndef HERD_AGENTLIB_INTERNAL_H
#define HERD_AGENTLIB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "herd/herd.h"
#include "model/generate.h"
#include "shm/image.h"

/* What the broker's `image` frame said, NUL-terminated copies. */
typedef struct herd_image_reply {
	int fd;              /* read-only descriptor; the caller closes it */
	uint64_t size;
	char segment[SHM_IMAGE_NAME_MAX];
	char digest[80];
} herd_image_reply;

/* Sends `attach` for model and waits for its `image` frame and descriptor.
 * Uses c's in-flight slot. Returns 0 (out->fd open) or an error with the
 * message in c's errmsg (see herd_model_attach). */
int herd_client_request_image(herd_client *c, const char *model, herd_image_reply *out);

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
/* Writes a message into c's errmsg and returns rc. */
int herd_client_fail(herd_client *c, int rc, const char *fmt, ...);

/* Checks a request independently of where it runs: model (when
 * need_model), exactly one input, ranges. Returns 0 or HERD_E_INVAL with a
 * message in err. */
int herd_request_check(const herd_request *r, int need_model, char *err, size_t errlen);

/* The generation request r describes (model/generate.h), for the wire and
 * for local generation alike: the one place a herd_request's fields are
 * mapped. g's strings are views into r's; the message and stop-string views
 * live in *scratch (malloc'd, NULL when none), which the caller frees once
 * g is no longer used. r must have passed herd_request_check. g->stream is
 * 0. Returns 0 or -ENOMEM. */
int herd_request_describe(const herd_request *r, gen_request *g, void **scratch);

/* Growable byte string for result text. */
typedef struct herd_text {
	char *p;
	size_t len, cap;
} herd_text;

int herd_text_append(herd_text *t, const char *s, size_t n);

#endif
