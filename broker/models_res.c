/* A model's residency: its image (adopted or built), the zero-copy gguf
 * view, the llama model and ctx, and the scheduler; built and freed by
 * models.c's loader thread (or at start), see models.h. */
#include "models_res.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"
#include "shm/digest.h"

#define MODELS_KV_AUTO_CAP (1ull << 30) /* bytes of KV per model by default */
/* Tokens per forward step. The step's activation scratch (about 90 KiB per
 * token for TinyLlama) is the broker's largest private memory after the KV
 * pages; 128 tokens already fill the GEMM tiles many times over, and a long
 * prompt in 128-token chunks re-reads the weights only every 128 tokens. */
#define MODELS_STEP_TOKENS 128

void models_res_free(models_entry *e)
{
	if (e->verify_started)
		pthread_join(e->verify_thread, NULL); /* it uses the sched and the fd */
	e->verify_started = 0;
	sched_destroy(e->sched);
	llama_ctx_destroy(e->ctx);
	llama_model_destroy(e->model);
	gguf_close(e->gguf);
	shm_image_unmap(&e->map);
	if (e->image_fd >= 0)
		close(e->image_fd);
	e->sched = NULL;
	e->ctx = NULL;
	e->model = NULL;
	e->gguf = NULL;
	memset(&e->map, 0, sizeof(e->map));
	e->image_fd = -1;
	e->adopted = 0;
	atomic_store(&e->trust, MODELS_TRUST_VERIFYING);
}

/* ---- trust ---------------------------------------------------------------- */

/* Unlinks the image name when it still names the object behind fd (a newer
 * image of the same name is left alone). */
void models_res_drop_image(const models_entry *e)
{
	char path[SHM_IMAGE_NAME_MAX + 16];
	struct stat a, b;
	snprintf(path, sizeof(path), SHM_IMAGE_DIR "%s", e->info.name);
	if (fstat(e->image_fd, &a) == 0 && lstat(path, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino)
		shm_image_remove(e->info.name);
}

/* The entry's verify thread: the payload digest of an adopted image. */
static void *entry_verify_main(void *arg)
{
	models_entry *e = arg;
	char msg[256] = "";
	const double t0 = clock_mono_ms();
	const int rc = shm_image_verify_fd(e->image_fd, msg, sizeof(msg));
	e->verify_ms = clock_mono_ms() - t0;
	if (rc == 0) {
		atomic_store(&e->trust, MODELS_TRUST_OK);
		blog_msg(e->log, BLOG_INFO, "model %s: image %s verified (digest %.16s, %.0f ms): serving",
			 e->name, e->info.name, e->info.digest_hex, e->verify_ms);
		return NULL;
	}
	snprintf(e->trust_msg, sizeof(e->trust_msg), "%s", msg[0] ? msg : herd_strerror(rc));
	atomic_store(&e->trust, MODELS_TRUST_FAILED);
	models_res_drop_image(e);
	blog_msg(e->log, BLOG_ERR,
		 "model %s: adopted image %s failed its digest check (%s): dropped and never served; "
		 "the model is refused until herdd restarts and rebuilds it from %s",
		 e->name, e->info.name, e->trust_msg, e->file);
	sched_shutdown(e->sched); /* what was held in the queue is cancelled */
	return NULL;
}

/* The scheduler's hold (sched_opts.hold): nothing runs until trusted. */
static int entry_hold(void *arg)
{
	const models_entry *e = arg;
	return atomic_load(&e->trust) != MODELS_TRUST_OK;
}

/* Starts the digest check of an adopted image (the entry is complete). */
static int entry_verify_start(models_entry *e, char *err, size_t errlen)
{
	if (atomic_load(&e->trust) != MODELS_TRUST_VERIFYING)
		return 0;
	const int rc = pthread_create(&e->verify_thread, NULL, entry_verify_main, e);
	if (rc)
		return herd_errf(err, errlen, -rc, "model %s: cannot start the digest check: %s",
			     e->name, strerror(rc));
	e->verify_started = 1;
	return 0;
}

int models_usable(const models_entry *e, int attach, char *msg, size_t msglen)
{
	const int t = atomic_load(&e->trust);
	if (t == MODELS_TRUST_OK)
		return 0;
	if (t == MODELS_TRUST_FAILED)
		return herd_errf(msg, msglen, HERD_E_UNTRUSTED,
			       "model %s: its image %s failed the digest check (%s) and was dropped; "
			       "herdd must be restarted to rebuild it",
			       e->name, e->info.name,
			       strstr(e->trust_msg, "digest mismatch") ? "changed or damaged" : e->trust_msg);
	if (!attach)
		return 0; /* the scheduler holds it until the check ends */
	return herd_errf(msg, msglen, -EAGAIN,
		       "model %s: image %s (%.0f MiB) is still being verified after a restart; retry "
		       "in a moment",
		       e->name, e->info.name, (double)e->info.image_size / (1 << 20));
}

/* Adopts a trusted image of the model (header and owner checks only: the
 * digest is checked later by the verify thread). 0 adopted, HERD_E_MISSING
 * (none: build one) or another error. */
static int entry_adopt(models_entry *e, const models_opts *o, char *err, size_t errlen)
{
	char sub[512] = "";
	int rc = shm_image_find_fd(e->name, e->file, e->type, o->no_repack, SHM_IMAGE_MODE,
				   &e->image_fd, &e->info, sub, sizeof(sub));
	e->n_untrusted += e->info.n_untrusted;
	if (e->info.notice[0])
		blog_msg(o->log, BLOG_WARN, "model %s: %d image object(s) not trusted, not adopted (%s)",
			 e->name, e->info.n_untrusted, e->info.notice);
	if (rc == HERD_E_MISSING)
		return rc;
	if (rc)
		return herd_errf(err, errlen, rc, "model %s (%s): %s", e->name, e->file,
			     sub[0] ? sub : herd_strerror(rc));
	rc = shm_image_map(e->image_fd, &e->map, sub, sizeof(sub));
	if (rc == 0) {
		e->adopted = 1;
		atomic_store(&e->trust, MODELS_TRUST_VERIFYING);
		return 0;
	}
	blog_msg(o->log, BLOG_WARN, "model %s: cannot adopt %s (%s); building a new image", e->name,
		 e->info.name, sub[0] ? sub : herd_strerror(rc));
	close(e->image_fd);
	e->image_fd = -1;
	return HERD_E_MISSING;
}

/* Opens the image this broker just built or reused, checking it is ours. */
static int entry_open_built(models_entry *e, char *err, size_t errlen)
{
	char sub[512] = "";
	struct stat st;
	int rc = shm_image_open(e->info.name, &e->image_fd);
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: cannot open %s: %s", e->name, e->info.name,
			     herd_strerror(rc));
	if (fstat(e->image_fd, &st) != 0)
		return herd_errf(err, errlen, -errno, "model %s: fstat %s: %s", e->name, e->info.name,
			     strerror(errno));
	if ((rc = shm_image_check_trust(&st, SHM_IMAGE_MODE, sub, sizeof(sub))))
		return herd_errf(err, errlen, rc, "model %s: image %s: %s", e->name, e->info.name, sub);
	rc = shm_image_map(e->image_fd, &e->map, sub, sizeof(sub));
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: %s", e->name, sub);
	return 0;
}

/* A shared model's source: its file copied through the agent's descriptor
 * (pread: the broker never opens the agent's path) into e->file, a private
 * file of the state directory, so the agent can neither change nor truncate
 * what the image is built from. */
static int share_copy(models_entry *e, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(e->src_fd, &st) != 0 || !S_ISREG(st.st_mode))
		return herd_errf(err, errlen, HERD_E_INVAL, "model %s: the shared descriptor is no longer a "
			       "regular file", e->name);
	const uint64_t size = (uint64_t)st.st_size < e->src_size ? (uint64_t)st.st_size : e->src_size;
	int out = open(e->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return herd_errf(err, errlen, -errno, "model %s: cannot create %s: %s", e->name, e->file,
			       strerror(errno));
	enum { CHUNK = 1 << 20 };
	char *buf = malloc(CHUNK);
	int rc = buf ? 0 : -ENOMEM;
	for (uint64_t off = 0; !rc && off < size;) {
		const size_t want = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		const ssize_t k = pread(e->src_fd, buf, want, (off_t)off);
		if (k <= 0) {
			rc = k < 0 ? -errno : HERD_E_TRUNCATED;
			break;
		}
		const ssize_t w = write(out, buf, (size_t)k);
		if (w != k)
			rc = w < 0 ? -errno : -EIO;
		off += (uint64_t)k;
	}
	free(buf);
	if (close(out) != 0 && !rc)
		rc = -errno;
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: copying the shared file (%llu bytes) through its "
			       "descriptor: %s", e->name, (unsigned long long)size, herd_strerror(rc));
	return 0;
}

/* Adopts an image of the model (cheap checks) or builds one. A shared
 * model's image is always built from the fresh copy. */
static int entry_image(models_entry *e, const models_opts *o, char *err, size_t errlen)
{
	char sub[512] = "";
	int rc = e->shared ? HERD_E_MISSING : entry_adopt(e, o, err, errlen);
	if (rc != HERD_E_MISSING)
		return rc;
	/* our own image: digest computed while writing (or verified on reuse) */
	atomic_store(&e->trust, MODELS_TRUST_OK);
	shm_create_opts co = {.source_path = e->file, .model_name = e->name, .weight_type = e->type,
			      .gid = (gid_t)-1, .mode = SHM_IMAGE_MODE, .no_repack = o->no_repack,
			      .no_adopt = 1};
	rc = shm_image_create(&co, &e->info, sub, sizeof(sub));
	if (rc)
		return herd_errf(err, errlen, rc, "model %s: %s", e->name, sub[0] ? sub : herd_strerror(rc));
	e->n_untrusted += e->info.n_untrusted;
	if (e->info.notice[0])
		blog_msg(o->log, BLOG_WARN, "model %s: %s; image published as %s", e->name,
			 e->info.notice, e->info.name);
	e->adopted = e->info.adopted;
	return entry_open_built(e, err, errlen);
}

uint64_t models_res_kv_pages(const cfg *c, const llama_hparams *hp, int *n_ctx_out,
			     uint64_t *page_bytes_out)
{
	const int n_ctx = c->ctx_size > 0 ? c->ctx_size : hp->n_ctx_train;
	uint64_t page_bytes = llama_kv_page_bytes(hp, (kern_type)c->kv_type);
	if (!page_bytes)
		page_bytes = 1;
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
	*n_ctx_out = n_ctx;
	*page_bytes_out = page_bytes;
	return pages;
}

uint64_t models_res_estimate(const cfg *c, const char *file)
{
	struct stat st;
	if (stat(file, &st) != 0)
		return 0;
	llama_model *m = NULL;
	char err[256];
	uint64_t kv = 0;
	if (llama_model_load(&m, file, err, sizeof(err)) == 0) {
		int n_ctx;
		uint64_t page_bytes;
		kv = models_res_kv_pages(c, &m->hp, &n_ctx, &page_bytes) * page_bytes;
	}
	llama_model_destroy(m);
	return (uint64_t)st.st_size + kv;
}

/* The scheduler over e's ctx. What an answer depends on (the response
 * cache's key): the weights (the image digest) and the kernels that run
 * them (another ISA may round differently). */
static int res_sched_start(models_entry *e, const models_opts *o, respcache *rcache)
{
	const cfg *c = o->cfg;
	uint8_t answer_id[SHM_DIGEST_SIZE + 32] = {0};
	memcpy(answer_id, e->info.digest, SHM_DIGEST_SIZE);
	snprintf((char *)answer_id + SHM_DIGEST_SIZE, 32, "%s", kern_isa_name(llama_ctx_isa(e->ctx)));
	shm_digest(answer_id, sizeof(answer_id), answer_id);
	sched_opts so = {.ctx = e->ctx, .max_batch = c->max_batch_size, .max_wait_ms = c->max_wait_time_ms,
			 .dynamic_batching = c->dynamic_batching, .priority_threshold = c->priority_threshold,
			 .prefill_chunk = c->prefill_chunk, .max_tokens = c->max_tokens,
			 .target_tpot_ms = c->target_tpot_ms,
			 .max_decode_delay_ms = c->max_decode_delay_ms,
			 .max_running_per_agent = c->agents.max_running > 0 ? c->agents.max_running
			 : (c->max_batch_size / 4 > 0 ? c->max_batch_size / 4 : 1),
			 .wake_fd = o->wake_fd, .log = o->log, .name = e->name,
			 .hold = entry_hold, .hold_arg = e, .respcache = rcache,
			 .digest = answer_id, .prefix_cache = c->prefix_cache,
			 .draft_tokens = c->draft_tokens,
			 .model_id = e->info.digest_hex, .model_id_len = strlen(e->info.digest_hex)};
	return sched_create(&e->sched, &so);
}

int models_res_load(models_entry *e, const models_opts *o, respcache *rcache, char *err,
		    size_t errlen)
{
	const cfg *c = o->cfg;
	const double t0 = clock_mono_ms();
	e->image_fd = -1;
	e->n_untrusted = 0;
	if (e->shared) {
		int rc = share_copy(e, err, errlen);
		if (!rc)
			rc = entry_image(e, o, err, errlen);
		unlink(e->file); /* the image holds the bytes now */
		if (rc)
			return rc;
	} else if (access(e->file, R_OK) != 0) {
		return herd_errf(err, errlen, -errno, "model %s: cannot read '%s': %s", e->name, e->file,
			     strerror(errno));
	}
	int rc = e->shared ? 0 : entry_image(e, o, err, errlen);
	if (rc)
		return rc;
	char sub[512] = "";
	if ((rc = shm_image_gguf(&e->map, &e->gguf, sub, sizeof(sub))))
		return herd_errf(err, errlen, rc, "model %s: image %s: %s", e->name, e->info.name, sub);
	if ((rc = llama_model_from_gguf(&e->model, e->gguf, sub, sizeof(sub))))
		return herd_errf(err, errlen, rc, "model %s (%s): %s", e->name, e->file, sub);
	const llama_hparams *hp = &e->model->hp;
	int n_ctx;
	uint64_t page_bytes;
	const uint64_t pages = models_res_kv_pages(c, hp, &n_ctx, &page_bytes);
	if (!llama_kv_type_fits(hp, (kern_type)c->kv_type))
		return herd_errf(err, errlen, HERD_E_INVAL,
				 "model %s: kv_type %s needs a head size that is a multiple of 32 (it is %d)",
				 e->name, kern_type_name(c->kv_type), hp->head_dim);
	llama_ctx_opts lo = {.n_threads = c->threads, .n_ctx = n_ctx,
			     .max_step_tokens = MODELS_STEP_TOKENS > c->max_batch_size ? MODELS_STEP_TOKENS
											: c->max_batch_size,
			     .n_kv_pages = (int)pages, .force_ref = o->force_ref, .kv_type = c->kv_type,
			     .cpus = c->cpus, .n_cpus = c->n_cpus};
	if ((rc = llama_ctx_create(&e->ctx, e->model, &lo)))
		return herd_errf(err, errlen, rc, "model %s: cannot create a context (%d positions, %llu KV pages): %s",
			     e->name, n_ctx, (unsigned long long)pages, herd_strerror(rc));
	if ((rc = res_sched_start(e, o, rcache)))
		return herd_errf(err, errlen, rc, "model %s: cannot start the scheduler: %s", e->name,
			     herd_strerror(rc));
	if ((rc = entry_verify_start(e, err, errlen)))
		return rc;
	e->load_ms = clock_mono_ms() - t0;
	e->kv_bytes = pages * page_bytes;
	e->bytes = e->info.image_size + e->kv_bytes;

	blog_msg(o->log, BLOG_INFO,
		 "model %s: %s image %s (%.1f MiB, %s), %d layers, vocab %d, ctx %d, KV %llu pages "
		 "(%.0f MiB, %s), %d threads, %s kernels, %.0f ms",
		 e->name,
		 atomic_load(&e->trust) == MODELS_TRUST_OK ? (e->adopted ? "adopted" : "built")
							    : "adopted (digest check running)",
		 e->info.name,
		 (double)e->info.image_size / (1 << 20), e->info.weight_type, hp->n_layer, hp->n_vocab,
		 n_ctx, (unsigned long long)pages, (double)(pages * page_bytes) / (1 << 20),
		 kern_type_name(c->kv_type), llama_ctx_n_threads(e->ctx), kern_isa_name(llama_ctx_isa(e->ctx)), e->load_ms);
	return 0;
}

