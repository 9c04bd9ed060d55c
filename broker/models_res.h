/* A model's residency (models.h): built by models_res_load, freed by
 * models_res_free; the static fields of the entry (name, file, type,
 * log) stay. Internal to models.c. */
#ifndef HERD_BROKER_MODELS_RES_H
#define HERD_BROKER_MODELS_RES_H

#include "broker/models.h"

/* Builds or adopts the image and starts the scheduler and (for an adopted
 * image) the digest check. Sets bytes, kv_bytes, n_vocab, n_ctx, load_ms.
 * On failure the caller frees with models_res_free. */
int models_res_load(models_entry *e, const models_opts *o, respcache *rcache, char *err,
		    size_t errlen);
/* The KV pool of a model of hyper-parameters hp under c: pages, and the
 * positions per sequence and bytes per page. */
uint64_t models_res_kv_pages(const cfg *c, const llama_hparams *hp, int *n_ctx,
			     uint64_t *page_bytes);
/* Bytes a model will take before it was ever loaded: the file's size (the
 * image is about as large) plus its KV pool (hyper-parameters read from the
 * file's header). 0 when the file cannot be read. */
uint64_t models_res_estimate(const cfg *c, const char *file);
/* Stops the scheduler and the digest check, unmaps, closes. */
void models_res_free(models_entry *e);
/* Unlinks the image name when it still names the object behind image_fd. */
void models_res_drop_image(const models_entry *e);

#endif
