/* The LLaMA model: weights from a GGUF file, a paged KV cache, and a batched
 * forward pass.
 *
 * Ownership and threading:
 * - llama_model is immutable after load; any number of contexts (and
 *   processes, when the GGUF image lives in shared memory) may read it.
 * - llama_ctx owns a thread pool, scratch buffers and a KV page pool. Only
 *   one thread may call into a given ctx at a time.
 * - llama_seq is one sequence's KV state (a list of pages of its ctx's pool).
 *
 * A step (llama_decode) runs any set of sequences together, each with its own
 * position and number of new tokens (1 for decode, many for a prompt chunk):
 * every weight matrix is read once for all tokens of the step.
 */
#ifndef HERD_MODEL_LLAMA_H
#define HERD_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/threadpool.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens per KV page. */
#define LLAMA_KV_PAGE 16
/* Largest head size a quantized KV cache takes (the attention kernels keep
 * a query head's per-block corrections in registers: kernels/ops.h). */
#define LLAMA_KV_MAX_QHEAD 512

typedef struct llama_hparams {
	int n_vocab;
	int n_ctx_train;
	int n_embd;
	int n_layer;
	int n_head;
	int n_head_kv;
	int n_ff;
	int n_rot;      /* RoPE dimensions per head */
	int head_dim;   /* n_embd / n_head */
	float rms_eps;
	float rope_base;
} llama_hparams;

/* A weight matrix or vector inside the GGUF data. */
typedef struct llama_weight {
	kern_type type;
	int64_t ne0, ne1; /* ne0 = row length (input dim), ne1 = rows (output dim) */
	const void *data;
	const char *name; /* for messages */
} llama_weight;

typedef struct llama_layer {
	float *attn_norm; /* [n_embd], f32 copy */
	float *ffn_norm;
	llama_weight wq, wk, wv, wo;
	llama_weight w_gate, w_up, w_down;
} llama_layer;

typedef struct llama_model {
	llama_hparams hp;
	gguf_ctx *gguf;
	int owns_gguf;       /* loaded from a path: closed with the model */
	tok_vocab *vocab;
	llama_weight tok_embd;
	llama_weight output; /* == tok_embd when the file ties them */
	float *output_norm;
	llama_layer *layers;
	uint64_t weight_bytes; /* bytes of the matrices one token's step reads */
	uint64_t weight_macs;  /* multiply-adds of those matrices per token */
	void *repacked;        /* owned copy made by llama_model_repack, or NULL */
} llama_model;

/* Loads path (mmap) and validates architecture, hyper-parameters, tensor
 * names, shapes and types. Returns 0 or a negative code with a message in err
 * naming the problem (missing key or tensor, wrong shape, unsupported
 * architecture or type). */
int llama_model_load(llama_model **out, const char *path, char *err, size_t errlen);
/* Same over an open GGUF that must outlive the model (not owned). */
int llama_model_from_gguf(llama_model **out, gguf_ctx *g, char *err, size_t errlen);
void llama_model_destroy(llama_model *m); /* accepts NULL */

/* Converts every matrix the interleaving policy (KERN_REPACK_*,
 * kernels/gemm.h; normally convert_repack_enabled's) gives a row-interleaved
 * GEMM layout (Q4_0, Q8_0, Q4_K with rows a multiple of 16) into that
 * layout, in one owned buffer; the model then reads those matrices from it.
 * Prompt chunks and batched decoding run as GEMMs, several times faster.
 * Call once, before any context uses the model. A model whose matrices
 * already are interleaved (a shared image) needs nothing. Returns 0 or
 * -ENOMEM. */
int llama_model_repack(llama_model *m, int policy);

typedef struct llama_ctx_opts {
	int n_threads;       /* <= 0: all online CPUs */
	int n_ctx;           /* max positions per sequence; <= 0: the model's */
	int max_step_tokens; /* max tokens in one llama_decode step; <= 0: 512 */
	int n_kv_pages;      /* KV pool size in pages; <= 0: enough for 1 x n_ctx */
	int force_ref;       /* use scalar reference kernels */
	int max_isa;         /* > 0: kernels at most this kern_isa (KERN_ISA_AVX2:
			      * an AVX2 machine's; never above the CPU's); 0: the
			      * CPU's best */
	int kv_type;         /* KV cache element type: KERN_TYPE_F16 (also 0),
			      * KERN_TYPE_Q8_0 or KERN_TYPE_Q4_0 (head size a
			      * multiple of 32: llama_kv_type_fits) */
	const int *cpus;     /* n_cpus > 0: pin the compute threads to these CPUs
			      * (kern_pool_create_pinned); copied at create */
	int n_cpus;
} llama_ctx_opts;

typedef struct llama_ctx llama_ctx;

typedef struct llama_seq {
	int32_t *pages;  /* page ids in position order */
	int n_pages;
	int cap_pages;
	int n_past;      /* positions already in the cache */
	/* prefix cache (llama_seq_begin_prefix): full pages get published */
	int hash_on;     /* publish full pages under the chain below */
	int n_mapped;    /* leading pages mapped from the cache, not allocated */
	uint64_t seed;   /* the chain's seed (model, trust domain) */
	uint64_t chain;  /* hash of the last full block (seed before any) */
	int32_t blk[LLAMA_KV_PAGE]; /* tokens of the partial block at n_past */
} llama_seq;

int llama_ctx_create(llama_ctx **out, const llama_model *m, const llama_ctx_opts *o);
void llama_ctx_destroy(llama_ctx *c); /* accepts NULL */
const llama_model *llama_ctx_model(const llama_ctx *c);
/* Calibration hook: fn (NULL: none) is called before every matrix product
 * of a step with the matrix w and its input x, T rows of K floats
 * (row-major), from the thread calling llama_decode. Set it before the
 * ctx is used; it must not call into the ctx. */
typedef void (*llama_observe_fn)(void *user, const llama_weight *w, const float *x, int64_t K,
				 int T);
void llama_ctx_set_observer(llama_ctx *c, llama_observe_fn fn, void *user);
int llama_ctx_n_ctx(const llama_ctx *c);
int llama_ctx_n_threads(const llama_ctx *c);
int llama_ctx_max_step_tokens(const llama_ctx *c);
kern_isa llama_ctx_isa(const llama_ctx *c);
/* Pages not held by any sequence: free ones and unreferenced cached ones
 * (evicted when needed). */
int llama_ctx_free_pages(const llama_ctx *c);
/* Unreferenced cached pages (the prefix cache's LRU pool). */
int llama_ctx_cached_pages(const llama_ctx *c);
/* Cached pages evicted for reuse since the ctx was created. */
uint64_t llama_ctx_evictions(const llama_ctx *c);
/* Memory pressure (model/kv_cache.h): drops the unreferenced cached pages
 * and gives the memory of every unreferenced page back (returns how many);
 * what that would give back now; the page limit of new work and setting
 * it (1 .. the pool's pages; llama_ctx_free_pages counts within it). */
int llama_ctx_kv_trim(llama_ctx *c);
int llama_ctx_kv_trimmable(const llama_ctx *c);
int llama_ctx_kv_limit(const llama_ctx *c);
void llama_ctx_kv_set_limit(llama_ctx *c, int pages);

/* The KV cache's element type. */
kern_type llama_ctx_kv_type(const llama_ctx *c);
/* 1 when a model of hp can keep its KV cache in type (F16 always; Q8_0 and
 * Q4_0 when the head size is a multiple of their block of 32, at most
 * LLAMA_KV_MAX_QHEAD). */
int llama_kv_type_fits(const llama_hparams *hp, kern_type type);
/* Bytes of one KV page (LLAMA_KV_PAGE positions, every layer) in type. */
size_t llama_kv_page_bytes(const llama_hparams *hp, kern_type type);
/* "f16", "q8_0", "q4_0" (any case) -> the kern_type, else -1. */
int llama_kv_type_parse(const char *s);

void llama_seq_init(llama_seq *s);
/* Returns s's pages to c's pool and resets it (n_past = 0). */
void llama_seq_reset(llama_ctx *c, llama_seq *s);
/* Drops positions >= n_past (releasing whole pages no longer needed). */
void llama_seq_truncate(llama_ctx *c, llama_seq *s, int n_past);

/* ---- prefix sharing (model/kv_cache.h) ----
 * A sequence begun with llama_seq_begin_prefix publishes each page it fills
 * under the hash chain of its blocks (LLAMA_KV_PAGE tokens each) from seed;
 * a later sequence with the same seed and leading blocks maps those pages
 * instead of evaluating them again. A shared page is never written: a
 * sequence that must write into a page that is shared or published copies it
 * first (copy-on-write). Sequences begun otherwise never publish. */

/* The seed of the chains of one trust domain: id names the model (its
 * digest; may be NULL), domain the domain. */
uint64_t llama_prefix_seed(const llama_ctx *c, const void *id, size_t id_len, uint64_t domain);
/* Hashes of the n / LLAMA_KV_PAGE full blocks of tokens into out. */
void llama_prefix_hashes(const llama_ctx *c, uint64_t seed, const int32_t *tokens, int n,
			 uint64_t *out);
/* How many leading blocks of tokens (hashes from llama_prefix_hashes,
 * n_blocks of them) are cached; *n_idle (may be NULL) gets how many of those
 * pages no sequence holds (mapping them takes them out of the pool). */
int llama_prefix_probe(const llama_ctx *c, uint64_t seed, const uint64_t *hashes,
		       const int32_t *tokens, int n_blocks, int *n_idle);
/* After the m cached leading blocks (llama_prefix_probe) of tokens[n]: how
 * many more positions a published block that starts as tokens' next block
 * does serves (0 when none or hashes is NULL; at most n - 1 - m *
 * LLAMA_KV_PAGE), *idle (may be NULL) 1 when no sequence holds that page. */
int llama_prefix_probe_tail(const llama_ctx *c, uint64_t seed, const uint64_t *hashes,
			    const int32_t *tokens, int n, int m, int *idle);
/* Begins empty s (n_past 0) as a publishing sequence of seed and maps the
 * cached leading blocks of tokens[n] into it (none when hashes is NULL),
 * then the published block that starts with the longest run of the next
 * tokens, if any (llama_prefix_probe_tail: a partial match, copied before s
 * writes into it). n_past becomes the positions
 * served from the cache, at most n - 1 (the last prompt token is always
 * evaluated: its logits are needed); the caller feeds tokens[n_past..n).
 * Returns n_past, HERD_E_INVAL (s not empty, n < 1) or -ENOMEM. */
int llama_seq_begin_prefix(llama_ctx *c, llama_seq *s, uint64_t seed, const uint64_t *hashes,
			   const int32_t *tokens, int n);
/* Makes empty dst share src's first n_past positions (its pages, the last
 * one possibly partial: whichever of them writes into it first copies it).
 * Returns 0, HERD_E_INVAL (dst not empty, n_past out of range) or -ENOMEM. */
int llama_seq_fork(llama_ctx *c, llama_seq *dst, const llama_seq *src, int n_past);

enum { LLAMA_LOGITS_NONE = 0, LLAMA_LOGITS_LAST = 1, LLAMA_LOGITS_ALL = 2 };

typedef struct llama_batch_seq {
	llama_seq *seq;
	const int32_t *tokens;
	int n_tokens;      /* >= 1 */
	int logits_mode;   /* LLAMA_LOGITS_* */
	float *logits;     /* caller-owned: n_vocab floats (LAST) or n_tokens * n_vocab (ALL) */
} llama_batch_seq;

/* One forward step over n_seqs sequences (each at most once). Appends the
 * tokens to each sequence's KV cache and writes the requested logits.
 * Errors: HERD_E_INVAL (bad token id, empty batch, a sequence twice),
 * HERD_E_NOSPACE (more than max_step_tokens, past n_ctx, or out of KV
 * pages): on error no sequence is changed. */
int llama_decode(llama_ctx *c, llama_batch_seq *seqs, int n_seqs);

/* Convenience: feeds n tokens to one sequence in chunks of max_step_tokens.
 * logits: n_vocab floats for the last token (logits_all == 0) or n * n_vocab. */
int llama_eval(llama_ctx *c, llama_seq *s, const int32_t *tokens, int n, int logits_all,
	       float *logits);

#ifdef __cplusplus
}
#endif
#endif
