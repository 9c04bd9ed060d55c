/* libherd local models: attach a shared image (descriptor from the broker),
 * map it read-only and run the model in this process on those pages. */
#include "agentlib/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "model/generate.h"
#include "model/llama.h"
#include "model/spec.h"
#include "shm/digest.h"
#include "shm/image.h"
#include "common/clock.h"

#define LOCAL_DEFAULT_CTX 512
#define LOCAL_DRAFT 8 /* prompt-lookup draft tokens per step (greedy requests) */

struct herd_local_model {
	shm_image_map_t map;   /* the shared pages (PROT_READ) */
	gguf_ctx *gguf;        /* over map.payload, no copy */
	llama_model *model;    /* weights point into map */
	llama_ctx *ctx;        /* private: scratch, KV pages, threads */
	float *logits;         /* [1 + LOCAL_DRAFT][n_vocab] (drafts: model/spec.h) */
	int n_ctx;
	int n_threads;
	char name[SHM_IMAGE_MODEL_MAX];
	char segment[SHM_IMAGE_NAME_MAX];
	char digest[SHM_DIGEST_HEX + 1];
	double attach_ms, load_ms;
	char errmsg[512];
};

void herd_local_detach(herd_local_model *m)
{
	if (!m)
		return;
	free(m->logits);
	llama_ctx_destroy(m->ctx);
	llama_model_destroy(m->model);
	gguf_close(m->gguf);
	shm_image_unmap(&m->map);
	free(m);
}

int herd_model_attach(herd_client *c, const char *model, herd_local_model **out)
{
	return herd_model_attach_opts(c, model, NULL, out);
}

int herd_model_attach_opts(herd_client *c, const char *model, const herd_attach_opts *o,
			   herd_local_model **out)
{
	herd_image_reply rep = {.fd = -1};
	herd_local_model *m = NULL;
	char err[384];
	int rc;

	if (out)
		*out = NULL;
	if (!c || !model || !*model || !out)
		return c ? herd_client_fail(c, HERD_E_INVAL, "herd_model_attach: NULL argument")
			 : HERD_E_INVAL;
	double t0 = clock_mono_ms();
	if ((rc = herd_client_request_image(c, model, &rep)))
		return rc;
	m = calloc(1, sizeof(*m));
	if (!m) {
		rc = herd_client_fail(c, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = shm_image_map(rep.fd, &m->map, err, sizeof(err));
	close(rep.fd);
	rep.fd = -1;
	if (rc) {
		herd_client_fail(c, rc, "image %s of '%s': %s", rep.segment, model, err);
		goto fail;
	}
	if (m->map.size != rep.size) {
		rc = herd_client_fail(c, HERD_E_FORMAT, "image %s is %zu bytes, the broker said %llu",
				      rep.segment, m->map.size, (unsigned long long)rep.size);
		goto fail;
	}
	shm_digest_hex(m->map.hdr->digest, SHM_DIGEST_SIZE, m->digest);
	if (rep.digest[0] && strncasecmp(m->digest, rep.digest, strlen(rep.digest)) != 0) {
		rc = herd_client_fail(c, HERD_E_FORMAT, "image %s has digest %s, the broker said %s",
				      rep.segment, m->digest, rep.digest);
		goto fail;
	}
	m->attach_ms = clock_mono_ms() - t0;

	if ((rc = shm_image_gguf(&m->map, &m->gguf, err, sizeof(err)))) {
		herd_client_fail(c, rc, "image %s: %s", rep.segment, err);
		goto fail;
	}
	if ((rc = llama_model_from_gguf(&m->model, m->gguf, err, sizeof(err)))) {
		herd_client_fail(c, rc, "model '%s' in image %s: %s", model, rep.segment, err);
		goto fail;
	}
	llama_ctx_opts co = {0};
	co.n_threads = o && o->n_threads > 0 ? o->n_threads : 1;
	co.n_ctx = o && o->n_ctx > 0 ? o->n_ctx : LOCAL_DEFAULT_CTX;
	if (co.n_ctx > m->model->hp.n_ctx_train && !(o && o->n_ctx > 0))
		co.n_ctx = m->model->hp.n_ctx_train;
	if ((rc = llama_ctx_create(&m->ctx, m->model, &co))) {
		herd_client_fail(c, rc, "cannot create a compute context for '%s': %s", model,
				 herd_strerror(rc));
		goto fail;
	}
	m->logits = malloc(sizeof(float) * (size_t)m->model->hp.n_vocab * (1 + LOCAL_DRAFT));
	if (!m->logits) {
		rc = herd_client_fail(c, -ENOMEM, "out of memory");
		goto fail;
	}
	m->n_ctx = llama_ctx_n_ctx(m->ctx);
	m->n_threads = llama_ctx_n_threads(m->ctx);
	snprintf(m->name, sizeof(m->name), "%s", model);
	snprintf(m->segment, sizeof(m->segment), "%s", rep.segment);
	m->load_ms = clock_mono_ms() - t0;
	*out = m;
	return 0;
fail:
	if (rep.fd >= 0)
		close(rep.fd);
	herd_local_detach(m);
	return rc;
}

void herd_local_info_get(const herd_local_model *m, herd_local_info *info)
{
	memset(info, 0, sizeof(*info));
	if (!m)
		return;
	info->model = m->name;
	info->segment = m->segment;
	info->digest = m->digest;
	info->image_bytes = m->map.size;
	info->n_vocab = m->model->hp.n_vocab;
	info->n_ctx = m->n_ctx;
	info->n_threads = m->n_threads;
	info->attach_ms = m->attach_ms;
	info->load_ms = m->load_ms;
}

const char *herd_local_errmsg(const herd_local_model *m)
{
	return m ? m->errmsg : "no local model";
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int lfail(herd_local_model *m, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

/* spec_run's piece callback: the caller's, and the first token's time. */
typedef struct local_cb {
	herd_token_cb cb;
	void *user;
	double t0;
	herd_result *res;
	int first, cancelled;
} local_cb;

static int local_piece(void *arg, const gen_step *st)
{
	local_cb *l = arg;
	if (l->first && st->token >= 0)
		l->res->t_first_ms = clock_mono_ms() - l->t0;
	l->first = 0;
	if (l->cb && (st->is_text || st->len > 0) && l->cb(l->user, st->piece, st->len, st->token) &&
	    st->finish == HERD_FINISH_NONE)
		return l->cancelled = 1;
	return 0;
}

/* Decodes and steps until the sequence finishes (model/generate.h; greedy
 * requests draft by prompt lookup, model/spec.h), with one callback per
 * piece; a callback that returns nonzero cancels. Returns 0 or an error
 * with the message set. */
static int local_steps(herd_local_model *m, gen_seq *g, llama_seq *seq, const gen_request *r,
		       herd_token_cb cb, void *user, double t0, herd_result *res)
{
	spec_ctl sc;
	const int draft = r->params.sampling.temperature <= 0 ? LOCAL_DRAFT : 0;
	if (spec_init(&sc, draft, g->prompt, g->n_prompt, g->n_prompt + g->max_gen + 1))
		return lfail(m, -ENOMEM, "out of memory");
	local_cb l = {cb, user, t0, res, 1, 0};
	const int rc = spec_run(m->ctx, seq, g, &sc, m->logits, local_piece, &l);
	spec_fini(&sc);
	if (rc)
		return lfail(m, rc, "decoding failed after %d tokens: %s", g->n_gen, herd_strerror(rc));
	if (l.cancelled) {
		gen_step st;
		gen_seq_stop(g, HERD_FINISH_CANCEL, &st); /* the rest goes to res->text only */
	}
	return 0;
}

int herd_local_generate(herd_local_model *m, const herd_request *req, herd_token_cb cb,
			void *user, herd_result *res)
{
	gen_request g;
	gen_seq gs = {0};
	void *scratch = NULL;
	llama_seq seq;
	int rc;

	if (res)
		memset(res, 0, sizeof(*res));
	if (!m || !req || !res)
		return m ? lfail(m, HERD_E_INVAL, "NULL request or result") : HERD_E_INVAL;
	m->errmsg[0] = 0;
	if ((rc = herd_request_check(req, 0, m->errmsg, sizeof(m->errmsg))))
		return rc;
	llama_seq_init(&seq);
	const double t0 = clock_mono_ms();
	const gen_bounds b = {.n_ctx = m->n_ctx, .t_start = t0};
	if ((rc = herd_request_describe(req, &g, &scratch))) {
		lfail(m, rc, "out of memory");
		goto out;
	}
	if ((rc = gen_seq_begin(&gs, m->model, &b, &g, m->errmsg, sizeof(m->errmsg))))
		goto out;
	if ((rc = llama_eval(m->ctx, &seq, gs.prompt, gs.n_prompt, 0, m->logits))) {
		lfail(m, rc, "evaluating the prompt failed: %s", herd_strerror(rc));
		goto out;
	}
	if ((rc = local_steps(m, &gs, &seq, &g, cb, user, t0, res)))
		goto out;
	res->id = req->id;
	res->reason = gs.finish;
	res->n_prompt = (uint32_t)gs.n_prompt;
	res->n_gen = (uint32_t)gs.n_gen;
	res->text = gen_seq_take_text(&gs, &res->text_len);
	res->t_total_ms = clock_mono_ms() - t0;
	if (!res->text) {
		memset(res, 0, sizeof(*res));
		rc = lfail(m, -ENOMEM, "out of memory");
	}
out:
	gen_seq_end(&gs);
	free(scratch);
	llama_seq_reset(m->ctx, &seq);
	return rc;
}
