/* LLaMA forward pass over a batch of sequences with a paged f16 KV cache. */
#include "llama.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "common/text.h"
#include "kernels/fp16.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/convert.h"

/* The weight matrices of one layer that go through matmul (wq, wk, wv, wo,
 * w_gate, w_up, w_down); the model adds one more, output. */
#define LLAMA_MATRICES_PER_LAYER 7
/* Alignment of each interleaved matrix in the repack buffer (a cache line,
 * as in a shared image). */
#define LLAMA_REPACK_ALIGN 64
/* Largest hyper-parameter value accepted from a file (2^24). */
#define LLAMA_HP_MAX (1 << 24)
#define LLAMA_MAX_LAYERS 4096
#define LLAMA_MAX_ROT 1024

/* Matrices model_matrices lists: every layer's plus output. */
static int n_matrices(const llama_model *m)
{
	return m->hp.n_layer * LLAMA_MATRICES_PER_LAYER + 1;
}

/* ---- loading ---------------------------------------------------------- */

static int hp_int(const gguf_ctx *g, const char *key, int required, int dflt, int *out,
		  char *err, size_t errlen)
{
	int64_t v;
	int rc = gguf_get_int(g, key, &v);
	if (rc == HERD_E_MISSING && !required) {
		*out = dflt;
		return 0;
	}
	if (rc == HERD_E_MISSING)
		return herd_errf(err, errlen, rc, "missing key '%s'", key);
	if (rc)
		return herd_errf(err, errlen, rc, "key '%s' is not an integer", key);
	if (v <= 0 || v > LLAMA_HP_MAX)
		return herd_errf(err, errlen, HERD_E_RANGE, "key '%s' = %lld out of range", key,
				 (long long)v);
	*out = (int)v;
	return 0;
}

static int hp_float(const gguf_ctx *g, const char *key, float dflt, float *out, char *err,
		    size_t errlen)
{
	double v;
	int rc = gguf_get_float(g, key, &v);
	if (rc == HERD_E_MISSING) {
		*out = dflt;
		return 0;
	}
	if (rc)
		return herd_errf(err, errlen, rc, "key '%s' is not a float", key);
	if (!(v > 0) || !isfinite(v))
		return herd_errf(err, errlen, HERD_E_RANGE, "key '%s' = %g out of range", key, v);
	*out = (float)v;
	return 0;
}

/* Finds tensor name with shape [ne0, ne1] (ne1 = 1 for vectors). */
static int get_weight(const gguf_ctx *g, const char *name, int64_t ne0, int64_t ne1,
		      llama_weight *w, char *err, size_t errlen)
{
	const gguf_tensor *t = gguf_find_tensor(g, name);
	if (!t)
		return herd_errf(err, errlen, HERD_E_MISSING, "missing tensor '%s'", name);
	if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
		return herd_errf(err, errlen, HERD_E_SHAPE,
				 "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
				 name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
				 (long long)t->ne[3], (long long)ne0, (long long)ne1);
	*w = (llama_weight){t->type, ne0, ne1, t->data, t->name.ptr};
	return 0;
}

/* A norm vector as an owned f32 copy (files may store it in any float type). */
static int get_norm(const gguf_ctx *g, const char *name, int64_t n, float **out, char *err,
		    size_t errlen)
{
	llama_weight w;
	int rc = get_weight(g, name, n, 1, &w, err, errlen);
	if (rc)
		return rc;
	if (w.type != KERN_TYPE_F32 && w.type != KERN_TYPE_F16 && w.type != KERN_TYPE_BF16)
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED, "tensor '%s' has type %s, expected a float type",
				 name, kern_type_name(w.type));
	float *v = malloc(sizeof(float) * n);
	if (!v)
		return -ENOMEM;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	ops.to_float[w.type](w.data, v, n);
	*out = v;
	return 0;
}

static int model_matrices(llama_model *m, llama_weight **out, int cap);

/* Every matrix must be one the matmul can run, and token_embd one whose rows
 * can be read back as floats (row-interleaved types cannot). */
static int check_types(llama_model *m, char *err, size_t errlen)
{
	if (kern_type_is_r16(m->tok_embd.type))
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
				 "tensor 'token_embd.weight' has the row-interleaved type %s", kern_type_name(m->tok_embd.type));
	const int cap = n_matrices(m);
	llama_weight **ws = malloc(sizeof(*ws) * cap);
	if (!ws)
		return -ENOMEM;
	const int n = model_matrices(m, ws, cap);
	int rc = 0;
	for (int i = 0; i < n && !rc; i++) {
		const llama_weight *w = ws[i];
		if (w->type == KERN_TYPE_Q8_K)
			rc = herd_errf(err, errlen, HERD_E_UNSUPPORTED, "tensor '%s' has type %s, which is not a weight type",
				       w->name, kern_type_name(w->type));
		else if (w->type == KERN_TYPE_Q8_1)
			rc = herd_errf(err, errlen, HERD_E_UNSUPPORTED, "tensor '%s' has type Q8_1, which is not a weight type",
				       w->name);
		else if (kern_type_is_r16(w->type) && w->ne1 % KERN_R)
			rc = herd_errf(err, errlen, HERD_E_SHAPE, "tensor '%s': %lld rows are not a multiple of %d",
				       w->name, (long long)w->ne1, KERN_R);
	}
	free(ws);
	return rc;
}

/* general.architecture must be "llama". */
static int check_arch(const gguf_ctx *g, char *err, size_t errlen)
{
	gguf_str arch;
	int rc = gguf_get_str(g, "general.architecture", &arch);
	if (rc)
		return herd_errf(err, errlen, rc, "missing or non-string key 'general.architecture'");
	if (arch.len != 5 || memcmp(arch.ptr, "llama", 5) != 0)
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
				 "unsupported architecture '%.*s' (herd runs 'llama')",
				 HERD_QUOTE_LEN(arch.len), arch.ptr);
	return 0;
}

/* The llama.* hyper-parameters, checked for consistency; n_vocab from
 * token_embd.weight's rows. */
static int read_hparams(const gguf_ctx *g, llama_hparams *hp, char *err, size_t errlen)
{
	int rc;
	if ((rc = hp_int(g, "llama.embedding_length", 1, 0, &hp->n_embd, err, errlen)) ||
	    (rc = hp_int(g, "llama.block_count", 1, 0, &hp->n_layer, err, errlen)) ||
	    (rc = hp_int(g, "llama.feed_forward_length", 1, 0, &hp->n_ff, err, errlen)) ||
	    (rc = hp_int(g, "llama.attention.head_count", 1, 0, &hp->n_head, err, errlen)) ||
	    (rc = hp_int(g, "llama.context_length", 0, 2048, &hp->n_ctx_train, err, errlen)) ||
	    (rc = hp_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err, errlen)) ||
	    (rc = hp_float(g, "llama.rope.freq_base", 10000.0f, &hp->rope_base, err, errlen)))
		return rc;
	if ((rc = hp_int(g, "llama.attention.head_count_kv", 0, hp->n_head, &hp->n_head_kv, err, errlen)))
		return rc;
	if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv || hp->n_layer > LLAMA_MAX_LAYERS)
		return herd_errf(err, errlen, HERD_E_RANGE,
				 "inconsistent hyper-parameters: n_embd %d, n_head %d, n_head_kv %d, n_layer %d",
				 hp->n_embd, hp->n_head, hp->n_head_kv, hp->n_layer);
	hp->head_dim = hp->n_embd / hp->n_head;
	if ((rc = hp_int(g, "llama.rope.dimension_count", 0, hp->head_dim, &hp->n_rot, err, errlen)))
		return rc;
	if (hp->n_rot > hp->head_dim || hp->n_rot % 2 || hp->head_dim % 2 || hp->n_rot > LLAMA_MAX_ROT)
		return herd_errf(err, errlen, HERD_E_RANGE, "rope dimension %d invalid for head size %d",
				 hp->n_rot, hp->head_dim);
	const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
	if (!te)
		return herd_errf(err, errlen, HERD_E_MISSING, "missing tensor 'token_embd.weight'");
	if (te->ne[1] <= 0 || te->ne[1] > LLAMA_HP_MAX)
		return herd_errf(err, errlen, HERD_E_RANGE, "token_embd.weight: bad vocabulary size");
	hp->n_vocab = (int)te->ne[1];
	return 0;
}

/* One matmul weight of layer i ("blk.<i>.<nm>.weight", shape [a, b]),
 * counted into the bytes and multiply-adds one token's step reads. */
static int layer_weight(const gguf_ctx *g, llama_model *m, int i, const char *nm, int64_t a,
			int64_t b, llama_weight *w, char *err, size_t errlen)
{
	char name[96];
	snprintf(name, sizeof(name), "blk.%d.%s.weight", i, nm);
	int rc = get_weight(g, name, a, b, w, err, errlen);
	if (rc)
		return rc;
	m->weight_bytes += kern_row_size(w->type, a) * (uint64_t)b;
	m->weight_macs += (uint64_t)a * (uint64_t)b;
	return 0;
}

/* Layer i's seven matrices and two norms. */
static int load_layer(const gguf_ctx *g, llama_model *m, int i, char *err, size_t errlen)
{
	const llama_hparams *hp = &m->hp;
	const int64_t E = hp->n_embd, KV = (int64_t)hp->head_dim * hp->n_head_kv, F = hp->n_ff;
	llama_layer *L = &m->layers[i];
	char name[96];
	int rc;
	if ((rc = layer_weight(g, m, i, "attn_q", E, E, &L->wq, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "attn_k", E, KV, &L->wk, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "attn_v", E, KV, &L->wv, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "attn_output", E, E, &L->wo, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "ffn_gate", E, F, &L->w_gate, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "ffn_up", E, F, &L->w_up, err, errlen)) ||
	    (rc = layer_weight(g, m, i, "ffn_down", F, E, &L->w_down, err, errlen)))
		return rc;
	snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", i);
	if ((rc = get_norm(g, name, E, &L->attn_norm, err, errlen)))
		return rc;
	snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", i);
	return get_norm(g, name, E, &L->ffn_norm, err, errlen);
}

/* Every weight: embeddings, output (tied to the embeddings when the file
 * has no output.weight), norms, the layers; then their types. */
static int load_weights(const gguf_ctx *g, llama_model *m, char *err, size_t errlen)
{
	const llama_hparams *hp = &m->hp;
	const int64_t E = hp->n_embd;
	int rc;
	if ((rc = get_weight(g, "token_embd.weight", E, hp->n_vocab, &m->tok_embd, err, errlen)))
		return rc;
	if (gguf_find_tensor(g, "output.weight")) {
		if ((rc = get_weight(g, "output.weight", E, hp->n_vocab, &m->output, err, errlen)))
			return rc;
	} else {
		m->output = m->tok_embd; /* tied embeddings */
	}
	if ((rc = get_norm(g, "output_norm.weight", E, &m->output_norm, err, errlen)))
		return rc;
	m->layers = calloc((size_t)hp->n_layer, sizeof(*m->layers));
	if (!m->layers)
		return -ENOMEM;
	m->weight_bytes = kern_row_size(m->output.type, E) * hp->n_vocab;
	m->weight_macs = (uint64_t)E * hp->n_vocab;
	for (int i = 0; i < hp->n_layer; i++)
		if ((rc = load_layer(g, m, i, err, errlen)))
			return rc;
	return check_types(m, err, errlen);
}

/* The tokenizer, whose vocabulary must match token_embd's rows. */
static int load_vocab(gguf_ctx *g, llama_model *m, char *err, size_t errlen)
{
	char terr[256] = "";
	int rc = tok_create(&m->vocab, g, terr, sizeof(terr));
	if (rc)
		return herd_errf(err, errlen, rc, "tokenizer: %s", terr);
	if (tok_n_vocab(m->vocab) != m->hp.n_vocab)
		return herd_errf(err, errlen, HERD_E_SHAPE,
				 "vocabulary has %d tokens but token_embd.weight has %d rows",
				 tok_n_vocab(m->vocab), m->hp.n_vocab);
	return 0;
}

int llama_model_from_gguf(llama_model **out, gguf_ctx *g, char *err, size_t errlen)
{
	*out = NULL;
	int rc;
	llama_model *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	if ((rc = check_arch(g, err, errlen)) || (rc = read_hparams(g, &m->hp, err, errlen)) ||
	    (rc = load_weights(g, m, err, errlen)) || (rc = load_vocab(g, m, err, errlen)))
		goto fail;
	m->gguf = g;
	*out = m;
	return 0;
fail:
	llama_model_destroy(m);
	return rc;
}

int llama_model_load(llama_model **out, const char *path, char *err, size_t errlen)
{
	gguf_ctx *g;
	int rc = gguf_open(&g, path, err, errlen);
	if (rc)
		return rc;
	rc = llama_model_from_gguf(out, g, err, errlen);
	if (rc) {
		gguf_close(g);
		return rc;
	}
	(*out)->gguf = g;
	(*out)->owns_gguf = 1;
	return 0;
}

void llama_model_destroy(llama_model *m)
{
	if (!m)
		return;
	if (m->layers)
		for (int i = 0; i < m->hp.n_layer; i++) {
			free(m->layers[i].attn_norm);
			free(m->layers[i].ffn_norm);
		}
	free(m->layers);
	free(m->output_norm);
	tok_destroy(m->vocab);
	if (m->owns_gguf)
		gguf_close(m->gguf);
	free(m->repacked);
	free(m);
}

/* The matrices of m that go through matmul, in a fixed order. */
static int model_matrices(llama_model *m, llama_weight **out, int cap)
{
	int n = 0;
	for (int i = 0; i < m->hp.n_layer; i++) {
		llama_layer *L = &m->layers[i];
		llama_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
		for (size_t j = 0; j < sizeof(ws) / sizeof(ws[0]) && n < cap; j++)
			out[n++] = ws[j];
	}
	if (n < cap)
		out[n++] = &m->output;
	return n;
}

/* One matrix to interleave: source, destination, and its new type. */
struct repack_job {
	llama_weight *w;
	char *dst;
};

struct repack_task {
	struct repack_job *jobs;
	int n;
	atomic_int next;
};

static void repack_run(void *p, int ith, int nth)
{
	(void)ith;
	(void)nth;
	struct repack_task *t = p;
	for (int i; (i = atomic_fetch_add(&t->next, 1)) < t->n;) {
		const llama_weight *w = t->jobs[i].w;
		kern_repack(w->type, w->data, w->ne1, w->ne0, t->jobs[i].dst);
	}
}

/* Bytes matmul weight w takes interleaved (padded to LLAMA_REPACK_ALIGN),
 * or 0 when the policy (model/convert.h) keeps it as it is. Every matrix
 * here is a matmul use, the tied output's copy of token_embd included. */
static size_t repacked_size(const llama_weight *w, int policy)
{
	const kern_type run = convert_layout_type(policy, w->type, w->ne1, 1);
	if (run == w->type)
		return 0;
	const size_t bytes = kern_row_size(run, w->ne0) * (size_t)w->ne1;
	return (bytes + LLAMA_REPACK_ALIGN - 1) / LLAMA_REPACK_ALIGN * LLAMA_REPACK_ALIGN;
}

int llama_model_repack(llama_model *m, int policy)
{
	if (m->repacked)
		return 0;
	const int cap = n_matrices(m);
	llama_weight **ws = malloc(sizeof(*ws) * cap);
	struct repack_job *jobs = malloc(sizeof(*jobs) * cap);
	char *buf = NULL;
	kern_pool *pool = NULL;
	int rc = -ENOMEM, nj = 0;
	if (!ws || !jobs)
		goto out;
	const int n = model_matrices(m, ws, cap);
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += repacked_size(ws[i], policy);
	if (total == 0) {
		rc = 0;
		goto out;
	}
	if (!(buf = aligned_alloc(LLAMA_REPACK_ALIGN, total)))
		goto out;
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		llama_weight *w = ws[i];
		const size_t sz = repacked_size(w, policy);
		if (!sz)
			continue;
		jobs[nj++] = (struct repack_job){w, buf + off};
		off += sz;
	}
	/* Every core: a TinyLlama Q4_0 model is 600 MB to rewrite. */
	struct repack_task t = {.jobs = jobs, .n = nj};
	atomic_init(&t.next, 0);
	if ((rc = kern_pool_create(&pool, 0)))
		goto out;
	kern_pool_run(pool, repack_run, &t);
	for (int i = 0; i < nj; i++) {
		jobs[i].w->type = convert_layout_type(policy, jobs[i].w->type, jobs[i].w->ne1, 1);
		jobs[i].w->data = jobs[i].dst;
	}
	m->repacked = buf;
	buf = NULL;
	rc = 0;
out:
	kern_pool_destroy(pool);
	free(buf);
	free(jobs);
	free(ws);
	return rc;
}
