/* --mix auto: each tensor's type chosen from measured sensitivity to meet a
 * byte budget. See quantize.h (quant_mix_auto). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/ftype.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/quality.h"
#include "model/quantize.h"

#define MIX_MAX_CAND 16

/* The model's weights that point at tensor data (the tied output too). */
static int find_weights(llama_model *m, const void *data, llama_weight **out)
{
	int n = 0;
	if (m->tok_embd.data == data)
		out[n++] = &m->tok_embd;
	if (m->output.data == data && &m->output != &m->tok_embd)
		out[n++] = &m->output;
	for (int l = 0; l < m->hp.n_layer; l++) {
		llama_layer *L = &m->layers[l];
		llama_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
		for (int k = 0; k < 7; k++)
			if (ws[k]->data == data)
				out[n++] = ws[k];
	}
	return n;
}

typedef struct mix_eval {
	llama_ctx *ctx;
	const int32_t *toks;
	int n, len, V;
	float *ref, *cur; /* [n][len][V], [len][V] */
} mix_eval;

/* Mean KL of the model as it is now against the reference logits. */
static int mix_kl(mix_eval *e, double *kl)
{
	quality_acc a = {0};
	int rc = quality_init(&a, e->V);
	for (int s = 0; s < e->n && !rc; s++) {
		llama_seq seq;
		llama_seq_init(&seq);
		rc = llama_eval(e->ctx, &seq, e->toks + (size_t)s * e->len, e->len, 1, e->cur);
		llama_seq_reset(e->ctx, &seq);
		for (int p = 0; p < e->len && !rc; p++)
			rc = quality_add(&a, e->ref + ((size_t)s * e->len + p) * e->V, e->cur + (size_t)p * e->V,
					 -1);
	}
	*kl = quality_result_of(&a).kl_mean;
	quality_free(&a);
	return rc;
}

/* KL of tensor t alone in type `type`, run as that type (its activation
 * rounding included). */
static int mix_try(mix_eval *e, const kern_ops *ops, llama_model *m, const gguf_tensor *t,
		   const quant_stat *st, kern_type type, double *kl)
{
	const int64_t K = t->ne[0], rows = t->ne[1];
	float *W = malloc(sizeof(float) * (size_t)(K * rows));
	uint8_t *q = malloc(kern_row_size(type, K) * (size_t)rows);
	llama_weight *ws[4];
	int rc = W && q ? 0 : -ENOMEM;
	const int nw = find_weights(m, t->data, ws);
	for (int64_t r = 0; r < rows && !rc; r++)
		ops->to_float[t->type]((const uint8_t *)t->data + r * kern_row_size(t->type, K), W + r * K, K);
	if (!rc)
		rc = quant_rows(ops, type, W, rows, K, st, q);
	llama_weight saved[4];
	int n_saved = 0;
	for (; n_saved < nw && !rc; n_saved++) {
		saved[n_saved] = *ws[n_saved];
		ws[n_saved]->type = type;
		ws[n_saved]->data = q;
	}
	if (!rc)
		rc = mix_kl(e, kl);
	for (int i = 0; i < n_saved; i++)
		*ws[i] = saved[i];
	free(W);
	free(q);
	return rc;
}

typedef struct mix_tensor {
	int n_cand, pick;
	kern_type cand[MIX_MAX_CAND];
	double kl[MIX_MAX_CAND];
	size_t bytes[MIX_MAX_CAND];
} mix_tensor;

static size_t pad32(size_t n)
{
	return (n + 31) / 32 * 32;
}

/* Candidate types of tensor t: every quantized weight type dividing its
 * rows (herd's own unless standard_only) and F16. */
static void mix_candidates(const kern_ops *ops, const gguf_tensor *t, int standard_only, mix_tensor *mt)
{
	mt->n_cand = 0;
	for (int k = 0; k < KERN_TYPE_COUNT && mt->n_cand < MIX_MAX_CAND; k++) {
		const kern_type_traits *tt = kern_type_info(k);
		if (!quant_is_weight_type(ops, k) || t->ne[0] % tt->blck_size ||
		    (!tt->is_quantized && k != KERN_TYPE_F16) || (standard_only && k >= KERN_TYPE_HERD_FIRST))
			continue;
		mt->cand[mt->n_cand] = (kern_type)k;
		mt->bytes[mt->n_cand++] = pad32(kern_row_size(k, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]));
	}
}

/* Spends what the bisection left of the budget: the upgrade with the most
 * KL saved per byte that still fits, again and again. */
static size_t mix_fill(mix_tensor *mt, int n, size_t total, size_t budget)
{
	for (;;) {
		int bi = -1, bc = -1;
		double best = 0;
		for (int i = 0; i < n; i++) {
			const int p = mt[i].pick;
			for (int c = 0; c < mt[i].n_cand; c++) {
				if (mt[i].bytes[c] <= mt[i].bytes[p] || mt[i].kl[c] >= mt[i].kl[p] ||
				    total - mt[i].bytes[p] + mt[i].bytes[c] > budget)
					continue;
				const double gain = (mt[i].kl[p] - mt[i].kl[c]) / (double)(mt[i].bytes[c] - mt[i].bytes[p]);
				if (gain > best) {
					best = gain;
					bi = i;
					bc = c;
				}
			}
		}
		if (bi < 0)
			return total;
		total = total - mt[bi].bytes[mt[bi].pick] + mt[bi].bytes[bc];
		mt[bi].pick = bc;
	}
}

/* Picks per tensor argmin kl + lambda * bytes, lambda bisected so the total
 * fits budget (bytes outside the chosen tensors in fixed). Returns the
 * total, or 0 when even the smallest choice does not fit. */
static size_t mix_allocate(mix_tensor *mt, int n, size_t fixed, size_t budget)
{
	double lo = 0, hi = 1e-3;
	size_t total = 0;
	for (int it = 0; it < 200; it++) {
		const double lam = it < 100 ? hi : 0.5 * (lo + hi);
		total = fixed;
		for (int i = 0; i < n; i++) {
			int best = 0;
			for (int c = 1; c < mt[i].n_cand; c++)
				if (mt[i].kl[c] + lam * (double)mt[i].bytes[c] <
				    mt[i].kl[best] + lam * (double)mt[i].bytes[best])
					best = c;
			mt[i].pick = best;
			total += mt[i].bytes[best];
		}
		if (it < 100) { /* grow hi until it fits */
			if (total <= budget)
				it = 99;
			else
				hi *= 4;
		} else if (total <= budget)
			hi = lam;
		else
			lo = lam;
	}
	/* end on the feasible side */
	total = fixed;
	for (int i = 0; i < n; i++) {
		int best = 0;
		for (int c = 1; c < mt[i].n_cand; c++)
			if (mt[i].kl[c] + hi * (double)mt[i].bytes[c] < mt[i].kl[best] + hi * (double)mt[i].bytes[best])
				best = c;
		mt[i].pick = best;
		total += mt[i].bytes[best];
	}
	return total <= budget ? mix_fill(mt, n, total, budget) : 0;
}

#define MIX_STREAMS 8      /* calibration streams the sensitivities are measured on */
#define MIX_HEADER_SLACK 512 /* keys herd quantize adds to the header, at most */

typedef struct mix_run {
	const kern_ops *ops;
	llama_model *m;
	const quant_calib *c;
	const quant_opts *o;
	mix_eval e;
	mix_tensor *mt;
	int *gi; /* gguf index of mt[i] */
	int n;
} mix_run;

/* Measures every candidate of every quantizable tensor. */
static int mix_measure(mix_run *r)
{
	const gguf_ctx *g = r->m->gguf;
	int total = 0, done = 0, rc = 0;
	for (int i = 0; i < r->n; i++)
		total += r->mt[i].n_cand;
	for (int i = 0; i < r->n && !rc; i++) {
		const gguf_tensor *t = gguf_tensor_at(g, r->gi[i]);
		char name[QUANT_NAME_MAX];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		const quant_stat *st = quant_calib_find(r->c, name);
		for (int k = 0; k < r->mt[i].n_cand && !rc; k++) {
			rc = mix_try(&r->e, r->ops, r->m, t, st, r->mt[i].cand[k], &r->mt[i].kl[k]);
			if (r->o->progress)
				r->o->progress(r->o->user, ++done, total, name);
		}
	}
	return rc;
}

/* Plans the quantizable tensors, the reference logits and the budget. */
static int mix_setup(mix_run *r, size_t *fixed, size_t *budget, char *err, size_t errlen)
{
	const gguf_ctx *g = r->m->gguf;
	const int64_t nt = gguf_n_tensors(g);
	r->mt = calloc((size_t)nt, sizeof(*r->mt));
	r->gi = calloc((size_t)nt, sizeof(int));
	if (!r->mt || !r->gi)
		return -ENOMEM;
	*fixed = gguf_data_offset(g) + MIX_HEADER_SLACK;
	int64_t n_weights = 0;
	for (int64_t i = 0; i < nt; i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		char name[QUANT_NAME_MAX];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		if (!ftype_is_quantizable(name, t->n_dims) || t->n_dims != 2) {
			*fixed += pad32(t->size);
			continue;
		}
		mix_candidates(r->ops, t, r->o->standard_only, &r->mt[r->n]);
		r->gi[r->n++] = (int)i;
		n_weights += t->ne[0] * t->ne[1];
	}
	*budget = r->o->target_bytes ? r->o->target_bytes
				     : *fixed + (size_t)(r->o->target_bpw * (double)n_weights / 8.0);
	size_t smallest = *fixed;
	for (int i = 0; i < r->n; i++) {
		size_t b = r->mt[i].bytes[0];
		for (int c = 1; c < r->mt[i].n_cand; c++)
			b = r->mt[i].bytes[c] < b ? r->mt[i].bytes[c] : b;
		smallest += b;
	}
	if (*budget < smallest)
		return herd_errf(err, errlen, HERD_E_INVAL, "a budget of %zu bytes is below what any plan "
				 "reaches: %zu bytes (%zu of header and unquantized tensors, the rest every "
				 "matrix in its smallest type)", *budget, smallest, *fixed);
	return 0;
}

static int mix_reference(mix_run *r)
{
	mix_eval *e = &r->e;
	const size_t per = (size_t)e->len * (size_t)e->V;
	e->ref = malloc(sizeof(float) * per * (size_t)e->n);
	e->cur = malloc(sizeof(float) * per);
	if (!e->ref || !e->cur)
		return -ENOMEM;
	int rc = 0;
	for (int s = 0; s < e->n && !rc; s++) {
		llama_seq seq;
		llama_seq_init(&seq);
		rc = llama_eval(e->ctx, &seq, e->toks + (size_t)s * e->len, e->len, 1, e->ref + per * s);
		llama_seq_reset(e->ctx, &seq);
	}
	return rc;
}

int quant_mix_auto(const char *in, const quant_calib *c, const quant_opts *o, kern_type *types,
		   char *err, size_t errlen)
{
	kern_ops ops;
	kern_ops_init(&ops, kern_isa_detect());
	mix_run r = {.ops = &ops, .c = c, .o = o};
	int32_t *toks = NULL;
	int n = 0;
	const int len = o->calib_len > 0 ? o->calib_len : 128;
	llama_ctx_opts co = {.n_ctx = len, .n_threads = o->n_threads};
	size_t fixed = 0, budget = 0;
	int rc = llama_model_load(&r.m, in, err, errlen);
	if (!rc && !(rc = quality_read_streams(o->calib, len, r.m->hp.n_vocab, &toks, &n, err, errlen)) &&
	    (rc = llama_ctx_create(&r.e.ctx, r.m, &co)))
		herd_errf(err, errlen, rc, "cannot create a context: %s", herd_strerror(rc));
	const int want = o->mix_streams > 0 ? o->mix_streams : MIX_STREAMS;
	r.e = (mix_eval){.ctx = r.e.ctx, .toks = toks, .n = n < want ? n : want, .len = len,
			 .V = r.m ? r.m->hp.n_vocab : 0};
	if (!rc && !(rc = mix_setup(&r, &fixed, &budget, err, errlen)) && !(rc = mix_reference(&r)) &&
	    !(rc = mix_measure(&r))) {
		const size_t total = mix_allocate(r.mt, r.n, fixed, budget);
		if (!total)
			rc = herd_errf(err, errlen, HERD_E_INVAL, "no choice of types fits %zu bytes (the "
				       "smallest plan needs more)", budget);
		for (int i = 0; i < r.n && total; i++)
			types[r.gi[i]] = r.mt[i].cand[r.mt[i].pick];
	} else if (rc && !err[0])
		herd_errf(err, errlen, rc, "sensitivity measurement failed: %s", herd_strerror(rc));
	free(r.e.ref);
	free(r.e.cur);
	free(r.mt);
	free(r.gi);
	free(toks);
	llama_ctx_destroy(r.e.ctx);
	llama_model_destroy(r.m);
	return rc;
}
