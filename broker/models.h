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
 * Threading: models_create/destroy on the main thread; entries are
 * immutable after create except through their sched (thread-safe).
 */
#ifndef HERD_BROKER_MODELS_H
#define HERD_BROKER_MODELS_H

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

int models_count(const models *ms);
models_entry *models_at(models *ms, int i);
/* By name (name[0..len), not NUL-terminated); NULL when unknown. */
models_entry *models_find(models *ms, const char *name, size_t len);
/* 1 when seg (with or without the leading '/') is the image of a loaded model. */
int models_owns_segment(const models *ms, const char *seg);

#ifdef __cplusplus
}
#endif
#endif
