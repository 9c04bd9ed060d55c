/* Model images in shared memory, opened zero-copy, one ctx + scheduler each. */
#include "models.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"

#define MODELS_KV_AUTO_CAP (1ull << 30) /* bytes of KV per model by default */
/* Tokens per forward step. The step's activation scratch (about 90 KiB per
 * token for TinyLlama) is the broker's largest private memory after the KV
 * pages; 128 tokens already fill the GEMM tiles many times over, and a long
 * prompt in 128-token chunks re-reads the weights only every 128 tokens. */
#define MODELS_STEP_TOKENS 128

struct models {
	models_entry *e;
	int n;
	const blog *log;
};


static void entry_fini(models_entry *e)
{
	sched_destroy(e->sched);
	llama_ctx_destroy(e->ctx);
	llama_model_destroy(e->model);
	gguf_close(e->gguf);
	shm_image_unmap(&e->map);
	if (e->image_fd >= 0)
		close(e->image_fd);
	free(e->file);
	free(e->type);
	memset(e, 0, sizeof(*e));
	e->image_fd = -1;
}

/* Adopts an image of the model (header check only) or builds one. */
static int entry_image(models_entry *e, const models_opts *o, char *err, size_t errlen)
{
	char sub[512] = "";
	int rc = shm_image_find(e->name, e->file, e->type, o->no_repack, &e->info, sub, sizeof(sub));
	if (rc == 0) {
		rc = shm_image_open(e->info.name, &e->image_fd);
		if (rc == 0)
			rc = shm_image_map(e->image_fd, &e->map, sub, sizeof(sub));
		if (rc == 0) {
			e->adopted = 1;
			return 0;
		}
		blog_msg(o->log, BLOG_WARN, "model %s: cannot adopt %s (%s); building a new image",
			 e->name, e->info.name, sub[0] ? sub : herd_strerror(rc));
		shm_image_unmap(&e->map);
		if (e->image_fd >= 0)
			close(e->image_fd);
		e->image_fd = -1;
	} else if (rc != HERD_E_MISSING) {
		return herd_errf(err, errlen, rc, "model %s (%s): %s", e->name, e->file,
			     sub[0] ? sub : herd_strerror(rc));
	}
	shm_create_opts co = {.source_path = e->file, .model_name = e->name, .weight_type = e->type,
			      .gid = (gid_t)-1, .mode = 0440, .no_repack = o->no_repack};
	sub[0] = 0;
	rc = shm_image_create(&co, &e->info, sub, sizeof(sub));
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: %s", e->name, sub[0] ? sub : herd_strerror(rc));
	e->adopted = e->info.adopted;
	rc = shm_image_open(e->info.name, &e->image_fd);
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: cannot open %s: %s", e->name, e->info.name,
			     herd_strerror(rc));
	rc = shm_image_map(e->image_fd, &e->map, sub, sizeof(sub));
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: %s", e->name, sub);
	return 0;
}

static int entry_load(models_entry *e, const cfg_model *cm, const models_opts *o, char *err,
		      size_t errlen)
{
	const cfg *c = o->cfg;
	const double t0 = clock_mono_ms();
	snprintf(e->name, sizeof(e->name), "%s", cm->name);
	e->image_fd = -1;
	e->file = strdup(cm->file);
	e->type = cm->type ? strdup(cm->type) : NULL;
	if (!e->file || (cm->type && !e->type))
		return -ENOMEM;
	if (access(e->file, R_OK) != 0)
		return herd_errf(err, errlen, -errno, "model %s: cannot read '%s': %s", e->name, e->file,
			     strerror(errno));
	int rc = entry_image(e, o, err, errlen);
	if (rc)
		return rc;
	char sub[512] = "";
	if ((rc = shm_image_gguf(&e->map, &e->gguf, sub, sizeof(sub))))
		return herd_errf(err, errlen, rc, "model %s: image %s: %s", e->name, e->info.name, sub);
	if ((rc = llama_model_from_gguf(&e->model, e->gguf, sub, sizeof(sub))))
		return herd_errf(err, errlen, rc, "model %s (%s): %s", e->name, e->file, sub);
	const llama_hparams *hp = &e->model->hp;
	const int n_ctx = c->ctx_size > 0 ? c->ctx_size : hp->n_ctx_train;
	const uint64_t page_bytes = (uint64_t)hp->n_layer * 2 * LLAMA_KV_PAGE *
				    (uint64_t)(hp->head_dim * hp->n_head_kv) * 2;
	const uint64_t min_pages = ((uint64_t)n_ctx + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	uint64_t pages;
	if (c->kv_cache_mb > 0) {
		pages = ((uint64_t)c->kv_cache_mb << 20) / page_bytes;
	} else {
		pages = min_pages * (uint64_t)c->max_batch_size;
		if (pages * page_bytes > MODELS_KV_AUTO_CAP)
			pages = MODELS_KV_AUTO_CAP / page_bytes;
	}
	if (pages < min_pages)
		pages = min_pages;
	if (pages > (1u << 30))
		pages = 1u << 30;
	llama_ctx_opts lo = {.n_threads = c->threads, .n_ctx = n_ctx,
			     .max_step_tokens = MODELS_STEP_TOKENS > c->max_batch_size ? MODELS_STEP_TOKENS
											: c->max_batch_size,
			     .n_kv_pages = (int)pages, .force_ref = o->force_ref};
	if ((rc = llama_ctx_create(&e->ctx, e->model, &lo)))
		return herd_errf(err, errlen, rc, "model %s: cannot create a context (%d positions, %llu KV pages): %s",
			     e->name, n_ctx, (unsigned long long)pages, herd_strerror(rc));
	sched_opts so = {.ctx = e->ctx, .max_batch = c->max_batch_size, .max_wait_ms = c->max_wait_time_ms,
			 .dynamic_batching = c->dynamic_batching, .priority_threshold = c->priority_threshold,
			 .prefill_chunk = c->prefill_chunk, .max_tokens = c->max_tokens,
			 .max_running_per_agent = c->agents.max_running > 0 ? c->agents.max_running
			 : (c->max_batch_size / 4 > 0 ? c->max_batch_size / 4 : 1),
			 .wake_fd = o->wake_fd, .log = o->log, .name = e->name};
	if ((rc = sched_create(&e->sched, &so)))
		return herd_errf(err, errlen, rc, "model %s: cannot start the scheduler: %s", e->name,
			     herd_strerror(rc));
	e->load_ms = clock_mono_ms() - t0;
	blog_msg(o->log, BLOG_INFO,
		 "model %s: %s image %s (%.1f MiB, %s), %d layers, vocab %d, ctx %d, KV %llu pages "
		 "(%.0f MiB), %d threads, %s kernels, %.0f ms",
		 e->name, e->adopted ? "adopted" : "built", e->info.name,
		 (double)e->info.image_size / (1 << 20), e->info.weight_type, hp->n_layer, hp->n_vocab,
		 n_ctx, (unsigned long long)pages, (double)(pages * page_bytes) / (1 << 20),
		 llama_ctx_n_threads(e->ctx), kern_isa_name(llama_ctx_isa(e->ctx)), e->load_ms);
	return 0;
}

int models_create(models **out, const models_opts *o, char *err, size_t errlen)
{
	*out = NULL;
	if (!o || !o->cfg)
		return HERD_E_INVAL;
	models *ms = calloc(1, sizeof(*ms));
	if (!ms)
		return -ENOMEM;
	ms->log = o->log;
	int rc = 0;
	ms->e = calloc((size_t)(o->cfg->n_models > 0 ? o->cfg->n_models : 1), sizeof(*ms->e));
	if (!ms->e) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < o->cfg->n_models; i++) {
		ms->e[i].image_fd = -1;
		ms->n = i + 1;
		if ((rc = entry_load(&ms->e[i], &o->cfg->models[i], o, err, errlen)))
			goto fail;
	}
	*out = ms;
	return 0;
fail:
	if (rc == -ENOMEM && err && errlen && !err[0])
		herd_errf(err, errlen, rc, "out of memory loading models");
	models_destroy(ms);
	return rc;
}

void models_destroy(models *ms)
{
	if (!ms)
		return;
	for (int i = 0; i < ms->n; i++)
		entry_fini(&ms->e[i]);
	free(ms->e);
	free(ms);
}

int models_count(const models *ms)
{
	return ms ? ms->n : 0;
}

models_entry *models_at(models *ms, int i)
{
	return ms && i >= 0 && i < ms->n ? &ms->e[i] : NULL;
}

models_entry *models_find(models *ms, const char *name, size_t len)
{
	for (int i = 0; ms && i < ms->n; i++)
		if (strlen(ms->e[i].name) == len && !memcmp(ms->e[i].name, name, len))
			return &ms->e[i];
	return NULL;
}

int models_owns_segment(const models *ms, const char *seg)
{
	if (!seg)
		return 0;
	if (seg[0] == '/')
		seg++;
	for (int i = 0; ms && i < ms->n; i++) {
		const char *n = ms->e[i].info.name;
		if (n[0] == '/')
			n++;
		if (!strcmp(n, seg))
			return 1;
	}
	return 0;
}
