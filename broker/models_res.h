/* A model's residency (models.h): built by models_res_load, freed by
 * models_res_free; the static fields of the entry (name, file, type,
 * log) stay. Internal to models.c. */
#ifndef HERD_BROKER_MODELS_RES_H
#define HERD_BROKER_MODELS_RES_H

#include "broker/models.h"

/* Builds or adopts the image and starts the scheduler and (for an adopted
 * image) the digest check. Sets bytes, kv_bytes, n_vocab, n_ctx, load_ms.
 * On failure the caller frees with models_res_free. */
int models_res_load(models_entry *e, const models_opts *o, char *err, size_t errlen);
/* Stops the scheduler and the digest check, unmaps, closes. */
void models_res_free(models_entry *e);
/* Unlinks the image name when it still names the object behind image_fd. */
void models_res_drop_image(const models_entry *e);

#endif
