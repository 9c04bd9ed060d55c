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

#include "model/chat.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/textstream.h"
#include "model/tokenizer.h"
#include "shm/digest.h"
#include "shm/image.h"
#include "common/clock.h"

#define LOCAL_DEFAULT_CTX 512
#define LOCAL_REPEAT_LAST_N 64

struct herd_local_model {
	shm_image_map_t map;   /* the shared pages (PROT_READ) */
	gguf_ctx *gguf;        /* over map.payload, no copy */
	llama_model *model;    /* weights point into map */
	llama_ctx *ctx;        /* private: scratch, KV pages, threads */
	float *logits;         /* [n_vocab] */
	int n_ctx;
	int n_threads;
	char name[SHM_IMAGE_MODEL_MAX];
	char segment[128];
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
	m->logits = malloc(sizeof(float) * (size_t)m->model->hp.n_vocab);
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

/* The prompt's token ids into a malloc'd array. */
static int prompt_tokens(herd_local_model *m, const herd_request *req, int32_t **ids, int *n)
{
	const tok_vocab *v = m->model->vocab;
	int cap = 256, k = 0;
	chat_msg *cm = NULL;
	int32_t *p = NULL;

	*ids = NULL;
	*n = 0;
	if (req->tokens) {
		p = malloc(sizeof(*p) * (req->n_tokens ? req->n_tokens : 1));
		if (!p)
			return lfail(m, -ENOMEM, "out of memory");
		for (size_t i = 0; i < req->n_tokens; i++) {
			if (req->tokens[i] >= m->model->hp.n_vocab) {
				free(p);
				return lfail(m, HERD_E_RANGE, "token id %d at position %zu is outside "
					     "the vocabulary (%d)", req->tokens[i], i,
					     m->model->hp.n_vocab);
			}
			p[i] = req->tokens[i];
		}
		*ids = p;
		*n = (int)req->n_tokens;
		return 0;
	}
	if (req->messages) {
		cm = calloc(req->n_messages, sizeof(*cm));
		if (!cm)
			return lfail(m, -ENOMEM, "out of memory");
		for (size_t i = 0; i < req->n_messages; i++)
			cm[i] = (chat_msg){req->messages[i].role, req->messages[i].content};
	}
	for (;;) {
		int32_t *q = realloc(p, sizeof(*p) * (size_t)cap);
		if (!q) {
			k = -ENOMEM;
			break;
		}
		p = q;
		if (cm)
			k = chat_tokenize(v, cm, (int)req->n_messages, 1, p, cap);
		else
			k = tok_encode(v, req->prompt, strlen(req->prompt),
				       tok_add_bos(v) ? TOK_ADD_BOS : 0, p, cap);
		if (k < 0 || k <= cap)
			break;
		cap = k;
	}
	free(cm);
	if (k < 0) {
		free(p);
		return lfail(m, k, "cannot tokenize the %s: %s", req->messages ? "messages" : "prompt",
			     herd_strerror(k));
	}
	*ids = p;
	*n = k;
	return 0;
}

int herd_local_generate(herd_local_model *m, const herd_request *req, herd_token_cb cb,
			void *user, herd_result *res)
{
	const tok_vocab *v;
	sampler *smp = NULL;
	int32_t *ids = NULL;
	herd_text text = {0};
	llama_seq seq;
	int n = 0, rc, gen = 0, cancelled = 0;
	size_t emitted = 0;
	int32_t tok = -1;
	herd_finish reason = HERD_FINISH_LENGTH;
	char piece[512];

	if (res)
		memset(res, 0, sizeof(*res));
	if (!m || !req || !res)
		return m ? lfail(m, HERD_E_INVAL, "NULL request or result") : HERD_E_INVAL;
	m->errmsg[0] = 0;
	if ((rc = herd_request_check(req, 0, m->errmsg, sizeof(m->errmsg))))
		return rc;
	v = m->model->vocab;
	llama_seq_init(&seq);
	double t0 = clock_mono_ms();
	double deadline = req->deadline_ms ? t0 + req->deadline_ms : -1;

	if ((rc = prompt_tokens(m, req, &ids, &n)))
		goto out;
	if (n == 0) {
		rc = lfail(m, HERD_E_INVAL, "empty prompt: nothing to continue from");
		goto out;
	}
	if (n >= m->n_ctx) {
		rc = lfail(m, HERD_E_NOSPACE, "prompt of %d tokens does not fit the context (%d)", n,
			   m->n_ctx);
		goto out;
	}
	sampler_params sp = sampler_params_default();
	sp.temperature = req->temperature;
	sp.top_k = req->top_k;
	sp.top_p = req->top_p;
	sp.min_p = req->min_p;
	sp.repeat_penalty = req->repeat_penalty;
	sp.repeat_last_n = LOCAL_REPEAT_LAST_N;
	sp.seed = req->seed;
	if ((rc = sampler_create(&smp, &sp, m->model->hp.n_vocab))) {
		lfail(m, rc, "bad sampling parameters: %s", herd_strerror(rc));
		goto out;
	}
	for (int i = 0; i < n; i++)
		sampler_accept(smp, ids[i]);
	if ((rc = herd_text_append(&text, "", 0)) ||
	    (rc = llama_eval(m->ctx, &seq, ids, n, 0, m->logits))) {
		lfail(m, rc, "evaluating the prompt failed: %s", herd_strerror(rc));
		goto out;
	}
	for (;;) {
		if (gen >= req->max_tokens) {
			reason = HERD_FINISH_LENGTH;
			break;
		}
		if (deadline >= 0 && clock_mono_ms() >= deadline) {
			reason = HERD_FINISH_DEADLINE;
			break;
		}
		tok = sampler_sample(smp, m->logits);
		sampler_accept(smp, tok);
		if (gen++ == 0)
			res->t_first_ms = clock_mono_ms() - t0;
		if (tok_is_eog(v, tok)) {
			reason = HERD_FINISH_STOP;
			break;
		}
		int len = tok_piece(v, tok, piece, sizeof(piece));
		if (len < 0 || len > (int)sizeof(piece))
			len = 0;
		size_t before = text.len;
		if ((rc = herd_text_append(&text, piece, (size_t)len))) {
			lfail(m, rc, "out of memory");
			goto out;
		}
		long hit = req->n_stop ? text_find_stop(text.p, text.len, before, req->stop, req->n_stop)
				       : -1;
		if (hit >= 0) {
			text.len = (size_t)hit;
			text.p[hit] = 0;
			reason = HERD_FINISH_STOP;
			break;
		}
		size_t upto = text.len - text_holdback(text.p + emitted, text.len - emitted, req->stop,
						       req->n_stop);
		if (cb && cb(user, text.p + emitted, upto - emitted, tok)) {
			emitted = upto;
			cancelled = 1;
			reason = HERD_FINISH_CANCEL;
			break;
		}
		emitted = upto;
		if (seq.n_past >= m->n_ctx) {
			reason = HERD_FINISH_LENGTH;
			break;
		}
		llama_batch_seq b = {&seq, &tok, 1, LLAMA_LOGITS_LAST, m->logits};
		if ((rc = llama_decode(m->ctx, &b, 1))) {
			lfail(m, rc, "decoding failed after %d tokens: %s", gen, herd_strerror(rc));
			goto out;
		}
	}
	/* text held back for a stop string that did not come */
	if (cb && !cancelled && emitted < text.len)
		cb(user, text.p + emitted, text.len - emitted, tok);
	res->id = req->id;
	res->text = text.p;
	res->text_len = text.len;
	text.p = NULL;
	res->reason = reason;
	res->n_prompt = (uint32_t)n;
	res->n_gen = (uint32_t)gen;
	res->t_total_ms = clock_mono_ms() - t0;
	rc = 0;
out:
	free(text.p);
	free(ids);
	sampler_destroy(smp);
	llama_seq_reset(m->ctx, &seq);
	return rc;
}
