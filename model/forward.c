/* llama_ctx: scratch buffers, thread pool, KV pages, and the batched forward
 * step. Shapes in comments: T = tokens in the step, E = n_embd, KV = kv_dim,
 * F = n_ff, V = n_vocab. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herd/error.h"
#include "kernels/fp16.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/kv_cache.h"
#include "model/llama.h"

/* Logit rows computed per output matmul (bounds the logits scratch). */
#define OUT_CHUNK 32

struct llama_ctx {
	const llama_model *m;
	kern_ops ops;
	kern_pool *pool;
	kv_pool kv;
	int n_ctx;
	int max_t;
	/* step scratch, [max_t][dim] each */
	float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
	void *xq;            /* quantized activations (largest need) */
	float *scores;       /* [n_threads][n_ctx] attention scores */
	uint8_t *qq;         /* [n_threads][qq_bytes] a query head in Q8_0 (quantized K) */
	size_t qq_bytes;
	float *logit_buf;    /* [OUT_CHUNK][V] */
	float *out_rows;     /* [OUT_CHUNK][E] gathered rows for the output matmul */
	int32_t *tok_pos;    /* [max_t] position of each step token */
	int32_t *tok_seq;    /* [max_t] index of its batch entry */
	llama_observe_fn observe; /* llama_ctx_set_observer */
	void *observe_user;
};

static size_t max_sz(size_t a, size_t b)
{
	return a > b ? a : b;
}

static size_t xq_need(const llama_model *m, int T)
{
	const llama_hparams *hp = &m->hp;
	size_t n = kern_matmul_xq_size(m->output.type, hp->n_embd, OUT_CHUNK);
	for (int i = 0; i < hp->n_layer; i++) {
		const llama_layer *L = &m->layers[i];
		const llama_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
		for (size_t j = 0; j < sizeof(ws) / sizeof(ws[0]); j++)
			n = max_sz(n, kern_matmul_xq_size(ws[j]->type, ws[j]->ne0, T));
	}
	return n;
}

int llama_ctx_create(llama_ctx **out, const llama_model *m, const llama_ctx_opts *o)
{
	*out = NULL;
	llama_ctx_opts d = {0};
	if (!o)
		o = &d;
	llama_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	const llama_hparams *hp = &m->hp;
	c->m = m;
	kern_ops_init(&c->ops, o->force_ref ? KERN_ISA_REF
				   : o->max_isa > 0 ? kern_isa_clamp((kern_isa)o->max_isa)
						    : kern_isa_detect());
	c->n_ctx = o->n_ctx > 0 ? o->n_ctx : hp->n_ctx_train;
	c->max_t = o->max_step_tokens > 0 ? o->max_step_tokens : 512;
	int rc = kern_pool_create_pinned(&c->pool, o->n_threads, o->cpus, o->n_cpus);
	if (rc)
		goto fail;
	const int kv_dim = hp->head_dim * hp->n_head_kv;
	int n_pages = o->n_kv_pages > 0 ? o->n_kv_pages : (c->n_ctx + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	const kern_type kvt = o->kv_type ? (kern_type)o->kv_type : KERN_TYPE_F16;
	rc = HERD_E_INVAL;
	if (!llama_kv_type_fits(hp, kvt))
		goto fail;
	rc = kv_pool_init(&c->kv, kvt, hp->n_layer, kv_dim, LLAMA_KV_PAGE, n_pages);
	if (rc)
		goto fail;
	const size_t T = (size_t)c->max_t, E = hp->n_embd, F = hp->n_ff;
	const int nth = kern_pool_size(c->pool);
	rc = -ENOMEM;
#define ALLOC(p, n)                                                    \
	do {                                                           \
		(p) = aligned_alloc(64, ((n) * sizeof(*(p)) + 63) / 64 * 64); \
		if (!(p))                                              \
			goto fail;                                     \
	} while (0)
	ALLOC(c->x, T * E);
	ALLOC(c->xn, T * E);
	ALLOC(c->q, T * E);
	ALLOC(c->k, T * kv_dim);
	ALLOC(c->v, T * kv_dim);
	ALLOC(c->att, T * E);
	ALLOC(c->tmp, T * E);
	ALLOC(c->gate, T * F);
	ALLOC(c->up, T * F);
	ALLOC(c->scores, (size_t)nth * c->n_ctx);
	c->qq_bytes = (kern_row_size(KERN_TYPE_Q8_0, hp->head_dim) + 63) / 64 * 64;
	ALLOC(c->qq, (size_t)nth * (c->qq_bytes ? c->qq_bytes : 64));
	ALLOC(c->logit_buf, (size_t)OUT_CHUNK * hp->n_vocab);
	ALLOC(c->out_rows, (size_t)OUT_CHUNK * E);
	ALLOC(c->tok_pos, T);
	ALLOC(c->tok_seq, T);
	c->xq = aligned_alloc(64, (xq_need(m, c->max_t) + 63) / 64 * 64);
	if (!c->xq)
		goto fail;
#undef ALLOC
	*out = c;
	return 0;
fail:
	llama_ctx_destroy(c);
	return rc;
}

void llama_ctx_destroy(llama_ctx *c)
{
	if (!c)
		return;
	kern_pool_destroy(c->pool);
	kv_pool_fini(&c->kv);
	free(c->x);
	free(c->xn);
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->att);
	free(c->tmp);
	free(c->gate);
	free(c->up);
	free(c->xq);
	free(c->scores);
	free(c->qq);
	free(c->logit_buf);
	free(c->out_rows);
	free(c->tok_pos);
	free(c->tok_seq);
	free(c);
}

const llama_model *llama_ctx_model(const llama_ctx *c) { return c->m; }

void llama_ctx_set_observer(llama_ctx *c, llama_observe_fn fn, void *user)
{
	c->observe = fn;
	c->observe_user = user;
}
int llama_ctx_n_ctx(const llama_ctx *c) { return c->n_ctx; }
int llama_ctx_n_threads(const llama_ctx *c) { return kern_pool_size(c->pool); }
int llama_ctx_max_step_tokens(const llama_ctx *c) { return c->max_t; }
kern_isa llama_ctx_isa(const llama_ctx *c) { return c->ops.isa; }
int llama_ctx_free_pages(const llama_ctx *c) { return kv_pool_avail(&c->kv); }
int llama_ctx_cached_pages(const llama_ctx *c) { return c->kv.n_cached; }
uint64_t llama_ctx_evictions(const llama_ctx *c) { return c->kv.evictions; }
kern_type llama_ctx_kv_type(const llama_ctx *c) { return c->kv.type; }

int llama_kv_type_fits(const llama_hparams *hp, kern_type type)
{
	if (type == KERN_TYPE_F16)
		return 1;
	return kv_type_ok(type) && hp->head_dim > 0 && hp->head_dim % KERN_QK8_0 == 0 &&
	       hp->head_dim <= LLAMA_KV_MAX_QHEAD;
}

size_t llama_kv_page_bytes(const llama_hparams *hp, kern_type type)
{
	return kv_page_bytes(type, hp->n_layer, hp->head_dim * hp->n_head_kv, LLAMA_KV_PAGE);
}

int llama_kv_type_parse(const char *s)
{
	static const struct { const char *name; kern_type t; } names[] = {
		{"f16", KERN_TYPE_F16}, {"q8_0", KERN_TYPE_Q8_0}, {"q4_0", KERN_TYPE_Q4_0}};
	for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(s, names[i].name))
			return (int)names[i].t;
	return -1;
}
int llama_ctx_kv_trim(llama_ctx *c) { return kv_pool_trim(&c->kv); }
int llama_ctx_kv_trimmable(const llama_ctx *c) { return kv_pool_trimmable(&c->kv); }
int llama_ctx_kv_limit(const llama_ctx *c) { return c->kv.limit; }
void llama_ctx_kv_set_limit(llama_ctx *c, int pages) { kv_pool_set_limit(&c->kv, pages); }

void llama_seq_init(llama_seq *s)
{
	memset(s, 0, sizeof(*s));
}

/* Room in s->pages for need page ids. */
static int seq_cap(llama_seq *s, int need)
{
	if (need <= s->cap_pages)
		return 0;
	int cap = s->cap_pages ? s->cap_pages : 4;
	while (cap < need)
		cap *= 2;
	int32_t *p = realloc(s->pages, sizeof(int32_t) * cap);
	if (!p)
		return -ENOMEM;
	s->pages = p;
	s->cap_pages = cap;
	return 0;
}

/* ---- prefix sharing ----------------------------------------------------- */

/* After a truncation: the chain and partial block for the new n_past, taken
 * from s's published pages; publishing stops when they are not published. */
static void seq_rechain(llama_ctx *c, llama_seq *s)
{
	if (!s->hash_on)
		return;
	const kv_pool *p = &c->kv;
	const int b = s->n_past / LLAMA_KV_PAGE, off = s->n_past % LLAMA_KV_PAGE;
	s->chain = s->seed;
	if (b > 0) {
		if (!p->hashed[s->pages[b - 1]]) {
			s->hash_on = 0;
			return;
		}
		s->chain = p->hash[s->pages[b - 1]];
	}
	if (off > 0) {
		if (!p->hashed[s->pages[b]]) {
			s->hash_on = 0;
			return;
		}
		memcpy(s->blk, p->tok + (size_t)s->pages[b] * LLAMA_KV_PAGE, sizeof(int32_t) * (size_t)off);
	}
}

/* Publishes the pages the n tokens from position pos0 filled. */
static void seq_publish(llama_ctx *c, llama_seq *s, const int32_t *tokens, int n, int pos0)
{
	for (int j = 0; j < n; j++) {
		const int pos = pos0 + j, off = pos % LLAMA_KV_PAGE;
		s->blk[off] = tokens[j];
		if (off != LLAMA_KV_PAGE - 1)
			continue;
		const uint64_t h = kv_hash_block(&c->kv, s->chain, s->blk);
		kv_pool_publish(&c->kv, s->pages[pos / LLAMA_KV_PAGE], s->chain, h, s->blk);
		s->chain = h;
	}
}

uint64_t llama_prefix_seed(const llama_ctx *c, const void *id, size_t id_len, uint64_t domain)
{
	return kv_hash_seed(&c->kv, id, id ? id_len : 0, domain);
}

void llama_prefix_hashes(const llama_ctx *c, uint64_t seed, const int32_t *tokens, int n,
			 uint64_t *out)
{
	uint64_t h = seed;
	for (int b = 0; b < n / LLAMA_KV_PAGE; b++)
		out[b] = h = kv_hash_block(&c->kv, h, tokens + (size_t)b * LLAMA_KV_PAGE);
}

int llama_prefix_probe(const llama_ctx *c, uint64_t seed, const uint64_t *hashes,
		       const int32_t *tokens, int n_blocks, int *n_idle)
{
	int m = 0, idle = 0;
	for (uint64_t parent = seed; m < n_blocks; parent = hashes[m++]) {
		const int32_t pg = kv_pool_find(&c->kv, parent, hashes[m], tokens + (size_t)m * LLAMA_KV_PAGE);
		if (pg < 0)
			break;
		idle += c->kv.ref[pg] == 0;
	}
	if (n_idle)
		*n_idle = idle;
	return m;
}

/* The published page after the m full blocks of tokens[n] whose block
 * starts as the rest of tokens does (at most n - 1 - m * LLAMA_KV_PAGE
 * positions: the last token is always evaluated), or -1; *k its length. */
static int32_t prefix_tail(const llama_ctx *c, uint64_t parent, const int32_t *tokens, int n,
			   int m, int *k)
{
	*k = 0;
	const int left = n - 1 - m * LLAMA_KV_PAGE;
	if (left < 1)
		return -1;
	return kv_pool_find_prefix(&c->kv, parent, tokens + (size_t)m * LLAMA_KV_PAGE, left, k);
}

int llama_prefix_probe_tail(const llama_ctx *c, uint64_t seed, const uint64_t *hashes,
			    const int32_t *tokens, int n, int m, int *idle)
{
	int k = 0;
	const int32_t pg = hashes ? prefix_tail(c, m > 0 ? hashes[m - 1] : seed, tokens, n, m, &k)
				  : -1;
	if (idle)
		*idle = pg >= 0 && c->kv.ref[pg] == 0;
	return pg >= 0 ? k : 0;
}

int llama_seq_begin_prefix(llama_ctx *c, llama_seq *s, uint64_t seed, const uint64_t *hashes,
			   const int32_t *tokens, int n)
{
	if (s->n_pages || s->n_past || n < 1)
		return HERD_E_INVAL;
	const int nb = hashes ? n / LLAMA_KV_PAGE : 0; /* no hashes: nothing to look up */
	if (seq_cap(s, nb + 1))
		return -ENOMEM;
	int m = 0;
	uint64_t parent = seed;
	for (; m < nb; parent = hashes[m++]) {
		const int32_t pg = kv_pool_find(&c->kv, parent, hashes[m], tokens + (size_t)m * LLAMA_KV_PAGE);
		if (pg < 0)
			break;
		kv_pool_retain(&c->kv, pg);
		s->pages[m] = pg;
	}
	s->n_pages = s->n_mapped = m;
	s->hash_on = 1;
	s->seed = seed;
	s->chain = parent;
	s->n_past = m * LLAMA_KV_PAGE;
	int k = 0;
	const int32_t tail = hashes ? prefix_tail(c, parent, tokens, n, m, &k) : -1;
	if (tail >= 0) {
		/* the block after the cached ones begins as another sequence's
		 * published block: map it too, copied before the first write */
		kv_pool_retain(&c->kv, tail);
		s->pages[m] = tail;
		s->n_pages = s->n_mapped = m + 1;
		s->n_past += k;
		memcpy(s->blk, tokens + (size_t)m * LLAMA_KV_PAGE, sizeof(int32_t) * (size_t)k);
	} else if (s->n_past == n) { /* all cached: the last token again, into a copy */
		s->n_past = n - 1;
		s->chain = m >= 2 ? hashes[m - 2] : seed;
		memcpy(s->blk, tokens + (size_t)(m - 1) * LLAMA_KV_PAGE, sizeof(int32_t) * (LLAMA_KV_PAGE - 1));
	}
	return s->n_past;
}

int llama_seq_fork(llama_ctx *c, llama_seq *dst, const llama_seq *src, int n_past)
{
	if (dst->n_pages || dst->n_past || n_past < 0 || n_past > src->n_past)
		return HERD_E_INVAL;
	const int np = (n_past + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	if (seq_cap(dst, np ? np : 1))
		return -ENOMEM;
	for (int i = 0; i < np; i++) {
		kv_pool_retain(&c->kv, src->pages[i]);
		dst->pages[i] = src->pages[i];
	}
	dst->n_pages = dst->n_mapped = np;
	dst->n_past = n_past;
	dst->hash_on = src->hash_on;
	dst->seed = src->seed;
	seq_rechain(c, dst);
	return 0;
}

void llama_seq_truncate(llama_ctx *c, llama_seq *s, int n_past)
{
	if (n_past < 0)
		n_past = 0;
	if (n_past >= s->n_past)
		return;
	const int keep = (n_past + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	while (s->n_pages > keep)
		kv_pool_release(&c->kv, s->pages[--s->n_pages]);
	if (s->n_mapped > s->n_pages)
		s->n_mapped = s->n_pages;
	s->n_past = n_past;
	seq_rechain(c, s);
}

void llama_seq_reset(llama_ctx *c, llama_seq *s)
{
	llama_seq_truncate(c, s, 0);
	free(s->pages);
	llama_seq_init(s);
}

/* Copy-on-write: the page s writes next (the partial one at n_past) must be
 * s's alone and unpublished; a shared or published one is copied first. */
static int seq_cow(llama_ctx *c, llama_seq *s)
{
	const int i = s->n_past / LLAMA_KV_PAGE;
	if (s->n_past % LLAMA_KV_PAGE == 0 || i >= s->n_pages)
		return 0;
	const int32_t pg = s->pages[i];
	if (c->kv.ref[pg] <= 1 && !c->kv.hashed[pg])
		return 0;
	const int32_t id = kv_pool_cow(&c->kv, pg);
	if (id < 0)
		return HERD_E_NOSPACE;
	s->pages[i] = id;
	if (i < s->n_mapped)
		s->n_mapped = i;
	return 0;
}

/* Makes s hold pages for n positions. On failure nothing is kept. */
static int seq_reserve(llama_ctx *c, llama_seq *s, int n, int *added)
{
	const int need = (n + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	*added = 0;
	int rc = seq_cap(s, need);
	if (rc || (rc = seq_cow(c, s)))
		return rc;
	while (s->n_pages < need) {
		int32_t id = kv_pool_alloc(&c->kv);
		if (id < 0) {
			while ((*added)-- > 0)
				kv_pool_release(&c->kv, s->pages[--s->n_pages]);
			*added = 0;
			return HERD_E_NOSPACE;
		}
		s->pages[s->n_pages++] = id;
		(*added)++;
	}
	return 0;
}

/* ---- the step --------------------------------------------------------- */

struct step {
	llama_ctx *c;
	llama_batch_seq *seqs;
	int T;
	int layer;
	atomic_int next;
};

/* Runs the matrices in jobs (sharing input x, K columns, T rows), grouping
 * those whose weights take the same activation type so each input is
 * quantized once per group. */
static void run_matmuls(llama_ctx *c, const float *x, int64_t K, int T, const llama_weight *const *ws,
			float *const *ys, int64_t const *ldys, int n)
{
	int done[KERN_MATMUL_MAX] = {0};
	for (int i = 0; c->observe && i < n; i++)
		c->observe(c->observe_user, ws[i], x, K, T);
	for (int i = 0; i < n; i++) {
		if (done[i])
			continue;
		const kern_type vdt = kern_type_info(ws[i]->type)->vec_dot_type;
		kern_matmul_job jobs[KERN_MATMUL_MAX];
		int nj = 0;
		for (int j = i; j < n; j++) {
			if (done[j] || kern_type_info(ws[j]->type)->vec_dot_type != vdt)
				continue;
			jobs[nj++] = (kern_matmul_job){ws[j]->type, ws[j]->data, ws[j]->ne1, ys[j], ldys[j]};
			done[j] = 1;
		}
		kern_matmul_quantize(&c->ops, c->pool, ws[i]->type, x, K, T, c->xq);
		kern_matmul(&c->ops, c->pool, jobs, nj, K, c->xq, T);
	}
}

static void matmul1(llama_ctx *c, const float *x, int T, const llama_weight *w, float *y)
{
	const llama_weight *ws[1] = {w};
	float *ys[1] = {y};
	int64_t ld[1] = {w->ne1};
	run_matmuls(c, x, w->ne0, T, ws, ys, ld, 1);
}

/* RoPE on q and k of every token, then store k and v into the KV pages. */
static void step_rope_store(void *p, int ith, int nth)
{
	struct step *st = p;
	llama_ctx *c = st->c;
	const llama_hparams *hp = &c->m->hp;
	const int kv_dim = hp->head_dim * hp->n_head_kv;
	for (int t = ith; t < st->T; t += nth) {
		const int32_t pos = c->tok_pos[t];
		float *q = c->q + (size_t)t * hp->n_embd, *k = c->k + (size_t)t * kv_dim;
		kern_rope(q, hp->n_head, hp->head_dim, hp->n_rot, pos, hp->rope_base);
		kern_rope(k, hp->n_head_kv, hp->head_dim, hp->n_rot, pos, hp->rope_base);
		const llama_seq *s = st->seqs[c->tok_seq[t]].seq;
		const int32_t page = s->pages[pos / LLAMA_KV_PAGE];
		const int slot = pos % LLAMA_KV_PAGE;
		const float *v = c->v + (size_t)t * kv_dim;
		void *kr = kv_row_k(&c->kv, page, st->layer, slot), *vr = kv_row_v(&c->kv, page, st->layer, slot);
		if (c->kv.type == KERN_TYPE_F16) {
			c->ops.f32_to_f16_row(kr, k, kv_dim);
			c->ops.f32_to_f16_row(vr, v, kv_dim);
		} else {
			c->ops.from_float[c->kv.type](k, kr, kv_dim);
			c->ops.from_float[c->kv.type](v, vr, kv_dim);
		}
	}
}

/* Scores of query head q (hd floats) against K head g of positions [0, n)
 * into sc, scaled. Quantized K: the query is quantized to Q8_0 once (into
 * qq) and every row is an integer dot product, as llama.cpp does; one
 * kernel call per page. */
static void attn_scores(llama_ctx *c, const llama_seq *s, int layer, int g, const float *q, int n,
			float *sc, uint8_t *qq)
{
	const kv_pool *kv = &c->kv;
	const int hd = c->m->hp.head_dim;
	const float scale = 1.0f / sqrtf((float)hd);
	const size_t hoff = kern_row_size(kv->type, (int64_t)g * hd);
	if (kv->type == KERN_TYPE_F16) {
		for (int j = 0; j < n; j++) {
			const uint8_t *kr = kv_row_k(kv, s->pages[j / LLAMA_KV_PAGE], layer, j % LLAMA_KV_PAGE);
			sc[j] = c->ops.dot_f32_f16(q, (const kern_fp16_t *)(kr + hoff), hd) * scale;
		}
		return;
	}
	c->ops.from_float[KERN_TYPE_Q8_0](q, qq, hd);
	for (int j0 = 0; j0 < n; j0 += LLAMA_KV_PAGE) {
		const int m = n - j0 < LLAMA_KV_PAGE ? n - j0 : LLAMA_KV_PAGE;
		const uint8_t *kr = kv_row_k(kv, s->pages[j0 / LLAMA_KV_PAGE], layer, 0);
		c->ops.kv_scores[kv->type](hd, qq, kr + hoff, kv->row_bytes, m, sc + j0);
	}
	for (int j = 0; j < n; j++)
		sc[j] *= scale;
}

/* o[hd] = sum_j sc[j] * V head g of position j. */
static void attn_values(llama_ctx *c, const llama_seq *s, int layer, int g, const float *sc, int n,
			float *o)
{
	const kv_pool *kv = &c->kv;
	const int hd = c->m->hp.head_dim;
	const size_t hoff = kern_row_size(kv->type, (int64_t)g * hd);
	memset(o, 0, sizeof(float) * hd);
	if (kv->type == KERN_TYPE_F16) {
		for (int j = 0; j < n; j++) {
			const uint8_t *vr = kv_row_v(kv, s->pages[j / LLAMA_KV_PAGE], layer, j % LLAMA_KV_PAGE);
			c->ops.axpy_f16(o, sc[j], (const kern_fp16_t *)(vr + hoff), hd);
		}
		return;
	}
	for (int j0 = 0; j0 < n; j0 += LLAMA_KV_PAGE) {
		const int m = n - j0 < LLAMA_KV_PAGE ? n - j0 : LLAMA_KV_PAGE;
		const uint8_t *vr = kv_row_v(kv, s->pages[j0 / LLAMA_KV_PAGE], layer, 0);
		c->ops.kv_values[kv->type](hd, sc + j0, vr + hoff, kv->row_bytes, m, o);
	}
}

static void step_attention(void *p, int ith, int nth)
{
	(void)nth;
	struct step *st = p;
	llama_ctx *c = st->c;
	const llama_hparams *hp = &c->m->hp;
	const int hd = hp->head_dim;
	const int group = hp->n_head / hp->n_head_kv;
	float *sc = c->scores + (size_t)ith * c->n_ctx;
	uint8_t *qq = c->qq + (size_t)ith * c->qq_bytes;
	const int items = st->T * hp->n_head;
	for (;;) {
		const int it = atomic_fetch_add_explicit(&st->next, 1, memory_order_relaxed);
		if (it >= items)
			break;
		const int t = it / hp->n_head, h = it % hp->n_head, g = h / group;
		const llama_seq *s = st->seqs[c->tok_seq[t]].seq;
		const int n = c->tok_pos[t] + 1;
		const float *q = c->q + (size_t)t * hp->n_embd + (size_t)h * hd;
		attn_scores(c, s, st->layer, g, q, n, sc, qq);
		kern_softmax(sc, n);
		attn_values(c, s, st->layer, g, sc, n, c->att + (size_t)t * hp->n_embd + (size_t)h * hd);
	}
}

static void step_norm(llama_ctx *c, const float *w, int T)
{
	const int E = c->m->hp.n_embd;
	for (int t = 0; t < T; t++)
		kern_rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)t * E, w, E, c->m->hp.rms_eps);
}

static void step_layer(llama_ctx *c, struct step *st, int l)
{
	const llama_hparams *hp = &c->m->hp;
	const llama_layer *L = &c->m->layers[l];
	const int T = st->T, E = hp->n_embd, F = hp->n_ff;
	const int kv_dim = hp->head_dim * hp->n_head_kv;

	step_norm(c, L->attn_norm, T);
	{
		const llama_weight *ws[3] = {&L->wq, &L->wk, &L->wv};
		float *ys[3] = {c->q, c->k, c->v};
		int64_t ld[3] = {E, kv_dim, kv_dim};
		run_matmuls(c, c->xn, E, T, ws, ys, ld, 3);
	}
	st->layer = l;
	kern_pool_run(c->pool, step_rope_store, st);
	atomic_store(&st->next, 0);
	kern_pool_run(c->pool, step_attention, st);
	matmul1(c, c->att, T, &L->wo, c->tmp);
	for (int t = 0; t < T; t++)
		kern_add(c->x + (size_t)t * E, c->tmp + (size_t)t * E, E);

	step_norm(c, L->ffn_norm, T);
	{
		const llama_weight *ws[2] = {&L->w_gate, &L->w_up};
		float *ys[2] = {c->gate, c->up};
		int64_t ld[2] = {F, F};
		run_matmuls(c, c->xn, E, T, ws, ys, ld, 2);
	}
	for (int t = 0; t < T; t++)
		kern_swiglu(c->gate + (size_t)t * F, c->up + (size_t)t * F, F);
	matmul1(c, c->gate, T, &L->w_down, c->tmp);
	for (int t = 0; t < T; t++)
		kern_add(c->x + (size_t)t * E, c->tmp + (size_t)t * E, E);
}

/* Output logits for the rows that asked for them, OUT_CHUNK rows at a time. */
static void step_output(llama_ctx *c, llama_batch_seq *seqs, int n_seqs)
{
	const llama_hparams *hp = &c->m->hp;
	const int E = hp->n_embd, V = hp->n_vocab;
	float *dst[OUT_CHUNK];
	int n = 0, t0 = 0;
	for (int i = 0; i < n_seqs; i++) {
		llama_batch_seq *b = &seqs[i];
		for (int j = 0; j < b->n_tokens; j++) {
			const int t = t0 + j;
			float *d = NULL;
			if (b->logits_mode == LLAMA_LOGITS_ALL)
				d = b->logits + (size_t)j * V;
			else if (b->logits_mode == LLAMA_LOGITS_LAST && j == b->n_tokens - 1)
				d = b->logits;
			if (!d)
				continue;
			kern_rmsnorm(c->out_rows + (size_t)n * E, c->x + (size_t)t * E, c->m->output_norm, E,
				     hp->rms_eps);
			dst[n++] = d;
			if (n == OUT_CHUNK) {
				matmul1(c, c->out_rows, n, &c->m->output, c->logit_buf);
				for (int r = 0; r < n; r++)
					memcpy(dst[r], c->logit_buf + (size_t)r * V, sizeof(float) * V);
				n = 0;
			}
		}
		t0 += b->n_tokens;
	}
	if (n) {
		matmul1(c, c->out_rows, n, &c->m->output, c->logit_buf);
		for (int r = 0; r < n; r++)
			memcpy(dst[r], c->logit_buf + (size_t)r * V, sizeof(float) * V);
	}
}

int llama_decode(llama_ctx *c, llama_batch_seq *seqs, int n_seqs)
{
	const llama_hparams *hp = &c->m->hp;
	if (n_seqs <= 0)
		return HERD_E_INVAL;
	int T = 0;
	for (int i = 0; i < n_seqs; i++) {
		const llama_batch_seq *b = &seqs[i];
		if (!b->seq || b->n_tokens <= 0 || !b->tokens || (b->logits_mode && !b->logits))
			return HERD_E_INVAL;
		for (int j = 0; j < i; j++)
			if (seqs[j].seq == b->seq)
				return HERD_E_INVAL;
		for (int j = 0; j < b->n_tokens; j++)
			if (b->tokens[j] < 0 || b->tokens[j] >= hp->n_vocab)
				return HERD_E_INVAL;
		if (b->n_tokens > c->max_t - T || b->seq->n_past + b->n_tokens > c->n_ctx)
			return HERD_E_NOSPACE;
		T += b->n_tokens;
	}
	/* Reserve pages for every sequence first; roll all back on failure. */
	int added[n_seqs];
	for (int i = 0; i < n_seqs; i++) {
		int rc = seq_reserve(c, seqs[i].seq, seqs[i].seq->n_past + seqs[i].n_tokens, &added[i]);
		if (rc) {
			for (int j = 0; j < i; j++)
				while (added[j]-- > 0)
					kv_pool_release(&c->kv, seqs[j].seq->pages[--seqs[j].seq->n_pages]);
			return rc;
		}
	}
	const int E = hp->n_embd;
	for (int i = 0, t = 0; i < n_seqs; i++) {
		const llama_batch_seq *b = &seqs[i];
		const llama_weight *te = &c->m->tok_embd;
		const size_t row = kern_row_size(te->type, E);
		for (int j = 0; j < b->n_tokens; j++, t++) {
			c->tok_pos[t] = b->seq->n_past + j;
			c->tok_seq[t] = i;
			c->ops.to_float[te->type]((const char *)te->data + row * (size_t)b->tokens[j],
						  c->x + (size_t)t * E, E);
		}
	}
	struct step st = {.c = c, .seqs = seqs, .T = T};
	for (int l = 0; l < hp->n_layer; l++)
		step_layer(c, &st, l);
	step_output(c, seqs, n_seqs);
	for (int i = 0; i < n_seqs; i++) {
		llama_seq *q = seqs[i].seq;
		if (q->hash_on)
			seq_publish(c, q, seqs[i].tokens, seqs[i].n_tokens, q->n_past);
		q->n_past += seqs[i].n_tokens;
	}
	return 0;
}

int llama_eval(llama_ctx *c, llama_seq *s, const int32_t *tokens, int n, int logits_all,
	       float *logits)
{
	const int V = c->m->hp.n_vocab;
	for (int i = 0; i < n;) {
		int chunk = n - i < c->max_t ? n - i : c->max_t;
		llama_batch_seq b = {s, tokens + i, chunk, LLAMA_LOGITS_NONE, NULL};
		if (logits_all) {
			b.logits_mode = LLAMA_LOGITS_ALL;
			b.logits = logits + (size_t)i * V;
		} else if (i + chunk == n) {
			b.logits_mode = LLAMA_LOGITS_LAST;
			b.logits = logits;
		}
		int rc = llama_decode(c, &b, 1);
		if (rc)
			return rc;
		i += chunk;
	}
	return 0;
}
