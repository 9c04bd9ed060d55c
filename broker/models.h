/* The broker's models: for each configured model a shared-memory image
 * (adopted from a previous broker or created), mapped read-only and opened
 * zero-copy (the weights the engine reads are the shared pages), one
 * llama_ctx, and the scheduler that drives it.
 *
 * Life cycle: models_create at start (slow: may build images), then the
 * loop reads entries and submits to their schedulers; models_destroy at exit
 * stops the schedulers and unmaps. The image objects stay in /dev/shm for
 * the next broker (or herdctl rm) to deal with.
 *
 * Trust (shm/image.h, "Trust rule"): an image left by a previous broker is
 * adopted only when it passes the trust rule (owned by this uid, mode 0440,
 * the source's path, device, inode, size and mtime as in its header): that
 * takes microseconds, so a warm restart stays in milliseconds. Its payload
 * digest is then checked by a thread of the entry (pread of the whole
 * image, ~0.2-0.6 s for TinyLlama) BEFORE the image is trusted for anything
 * else: until the check passes, the entry's scheduler holds every request
 * in its queue (no step reads the weights), and attach is refused with
 * -EAGAIN ("still being verified").
 * Metadata (hyper-parameters, vocabulary) is parsed from the image at
 * adoption: it comes from an object only this uid can write. When the
 * check fails the image is unlinked (if the name still holds it), the
 * failure is logged, the queued requests are cancelled, and the model
 * refuses requests and attach with HERD_E_UNTRUSTED until herdd restarts
 * (the restart builds a fresh image from the model file). An image built by
 * this broker is trusted at once (its digest was computed while writing).
 *
 * Threading: models_create/destroy on the main thread; entries are
 * immutable after create except through their sched (thread-safe) and the
 * trust state (atomic; written once by the entry's verify thread).
 */
#ifndef HERD_BROKER_MODELS_H
#define HERD_BROKER_MODELS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/config.h"
#include "broker/log.h"
#include "broker/scheduler.h"
#include "model/llama.h"
#include "shm/image.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
	MODELS_TRUST_VERIFYING = 0, /* adopted; digest check running: not served yet */
	MODELS_TRUST_OK = 1,        /* built by us, or adopted and verified */
	MODELS_TRUST_FAILED = 2,    /* adopted, digest mismatch: dropped, refused */
};

typedef struct models_entry {
	char name[SHM_IMAGE_MODEL_MAX];
	char *file;              /* source path as configured (owned) */
	char *type;              /* requested weight type or NULL (owned) */
	shm_image_info info;     /* info.name is the segment, info.digest_hex the digest */
	int adopted;             /* image re-used from a previous broker */
	int image_fd;            /* read-only descriptor passed to agents (SCM_RIGHTS) */
	shm_image_map_t map;
	gguf_ctx *gguf;          /* over map.payload: zero copy */
	llama_model *model;
	llama_ctx *ctx;
	sched *sched;
	double load_ms;          /* time to adopt or build + open */
	/* trust (see above) */
	atomic_int trust;        /* MODELS_TRUST_* */
	int n_untrusted;         /* objects of the model skipped by the trust rule */
	char trust_msg[256];     /* FAILED: why (written before trust is set) */
	double verify_ms;        /* duration of the digest check, once done */
	const blog *log;
	pthread_t verify_thread;
	int verify_started;
	/* LMDB cache metadata (digest, load count, hits, last use, score) will
	 * hang here once the cache manager lands: models_meta_* in models.c. */
} models_entry;

typedef struct models models;

typedef struct models_opts {
	const cfg *cfg;  /* models, threads, ctx_size, kv_cache_mb, batch settings */
	int wake_fd;     /* eventfd every scheduler writes when it posts events */
	const blog *log;
	int force_ref;   /* reference kernels (herdd: HERD_FORCE_REF) */
	int no_repack;   /* interleaving policy off for the images (herdd:
			  * HERD_NO_REPACK; model/convert.h) */
} models_opts;

/* Loads every configured model. On failure returns the first error (-errno,
 * HERD_E_* of shm_image_create / llama_model_from_gguf / llama_ctx_create /
 * sched_create) with a message naming the model and file in err, and
 * nothing stays loaded. */
int models_create(models **out, const models_opts *o, char *err, size_t errlen);
void models_destroy(models *ms); /* accepts NULL */

/* The response cache shared by the models' schedulers (config
 * "response_cache"), or NULL when it is off. */
respcache *models_respcache(models *ms);

int models_count(const models *ms);
models_entry *models_at(models *ms, int i);
/* By name (name[0..len), not NUL-terminated); NULL when unknown. */
models_entry *models_find(models *ms, const char *name, size_t len);
/* 1 when seg (with or without the leading '/') is the image of a loaded model. */
int models_owns_segment(const models *ms, const char *seg);

/* Whether e may serve now. attach = 0: a gen request (0 while verifying:
 * the scheduler holds it until the check ends); attach = 1: handing out the
 * image's descriptor. Returns 0, -EAGAIN (attach while the digest check
 * runs) or HERD_E_UNTRUSTED (the check failed); msg names the model, the
 * image and the reason. Any thread. */
int models_usable(const models_entry *e, int attach, char *msg, size_t msglen);

/* Trust counters for `herdctl status`. */
typedef struct models_trust_stats {
	uint64_t images_adopted;   /* images adopted from a previous broker */
	uint64_t images_untrusted; /* objects skipped by the trust rule: another
				    * owner or mode, or a squatted name */
	uint64_t digest_failures;  /* adopted images dropped by the digest check */
	int verifying;             /* digest checks still running */
} models_trust_stats;
void models_get_trust_stats(const models *ms, models_trust_stats *out);

#ifdef __cplusplus
}
#endif
#endif
