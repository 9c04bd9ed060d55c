/* Demo-model generator. See mkmodel.h.
 *
 * Flow: resolve shape and file type, plan every tensor's type with the
 * llama.cpp mix (ftype.h), set the metadata and vocabulary on a gguf_writer,
 * register one fill callback per tensor, and let gguf_writer_write generate
 * each tensor when it is written: rows are split over a thread pool, each
 * row drawn from its own PRNG stream and quantized by the reference
 * quantizer, so the bytes never depend on thread count or CPU.
 */
#include "mkmodel.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "kernels/kernels.h"
#include "kernels/threadpool.h"
#include "model/ftype.h"
#include "model/gguf.h"

static const mkmodel_shape shapes[] = {
	{.name = "tinyllama-1.1b", .n_vocab = 32000, .n_embd = 2048, .n_ff = 5632, .n_layer = 22,
	 .n_head = 32, .n_head_kv = 4, .n_ctx = 2048, .rope_base = 10000.0f, .rms_eps = 1e-5f},
	{.name = "mini", .n_vocab = 2048, .n_embd = 256, .n_ff = 768, .n_layer = 2,
	 .n_head = 8, .n_head_kv = 2, .n_ctx = 2048, .rope_base = 10000.0f, .rms_eps = 1e-5f},
};

static const char chat_template[] =
	"{% for message in messages %}\n"
	"{% if message['role'] == 'user' %}\n"
	"{{ '<|user|>\n' + message['content'] + eos_token }}\n"
	"{% elif message['role'] == 'system' %}\n"
	"{{ '<|system|>\n' + message['content'] + eos_token }}\n"
	"{% elif message['role'] == 'assistant' %}\n"
	"{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
	"{% endif %}\n"
	"{% if loop.last and add_generation_prompt %}\n"
	"{{ '<|assistant|>' }}\n"
	"{% endif %}\n"
	"{% endfor %}";

const mkmodel_shape *mkmodel_shape_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(shapes) / sizeof(shapes[0]); i++)
		if (!strcmp(shapes[i].name, name))
			return &shapes[i];
	return NULL;
}

const char *mkmodel_shape_names(void)
{
	return "tinyllama-1.1b|mini";
}

const char *mkmodel_chat_template(void)
{
	return chat_template;
}


/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return h;
}

/* Row r of a tensor: near-normal values (sum of four 16-bit uniforms,
 * standardized) times std. */
static void gen_row(float *y, int64_t n, uint64_t seed, uint64_t name_hash, int64_t row, float std)
{
	uint64_t s = seed ^ name_hash;
	s = splitmix64(&s) ^ (uint64_t)row;
	splitmix64(&s);
	const float scale = std / 37837.23f; /* 65536 / sqrt(3): sd of the sum */
	for (int64_t i = 0; i < n; i++) {
		const uint64_t x = splitmix64(&s);
		const int32_t sum = (int32_t)(x & 0xffff) + (int32_t)((x >> 16) & 0xffff) +
				    (int32_t)((x >> 32) & 0xffff) + (int32_t)(x >> 48);
		y[i] = (float)(sum - 131070) * scale;
	}
}

/* ---- tensors --------------------------------------------------------- */

typedef struct mk_shared {
	kern_ops ops;
	kern_pool *pool;
	uint64_t seed;
} mk_shared;

typedef struct mk_tensor {
	char name[64];
	kern_type type;
	uint32_t n_dims;
	int64_t ne[2];  /* ne[0] = row length (inputs), ne[1] = rows (outputs) */
	int is_norm;    /* 1-D, all 1.0 */
	float std;
	mk_shared *sh;
} mk_tensor;

typedef struct fill_task {
	const mk_tensor *t;
	uint8_t *out;
	size_t row_size;
	atomic_int failed;
} fill_task;

static void fill_rows(void *arg, int ith, int nth)
{
	fill_task *ft = arg;
	const mk_tensor *t = ft->t;
	const int64_t n_rows = t->ne[1], n = t->ne[0];
	const int64_t r0 = n_rows * ith / nth, r1 = n_rows * (ith + 1) / nth;
	if (r0 >= r1)
		return;
	const uint64_t h = fnv1a(t->name);
	float *tmp = NULL;
	if (t->type != KERN_TYPE_F32) {
		tmp = malloc(sizeof(float) * (size_t)n);
		if (!tmp) {
			atomic_store(&ft->failed, 1);
			return;
		}
	}
	kern_from_float_fn q = t->sh->ops.from_float[t->type];
	for (int64_t r = r0; r < r1; r++) {
		uint8_t *dst = ft->out + (size_t)r * ft->row_size;
		if (t->type == KERN_TYPE_F32) {
			gen_row((float *)(void *)dst, n, t->sh->seed, h, r, t->std);
		} else {
			gen_row(tmp, n, t->sh->seed, h, r, t->std);
			q(tmp, dst, n);
		}
	}
	free(tmp);
}

static int fill_tensor(void *user, void *buf, size_t size)
{
	const mk_tensor *t = user;
	if (t->is_norm) {
		float *f = buf;
		for (size_t i = 0; i < size / sizeof(float); i++)
			f[i] = 1.0f;
		return 0;
	}
	fill_task ft = {.t = t, .out = buf, .row_size = kern_row_size(t->type, t->ne[0])};
	atomic_init(&ft.failed, 0);
	if (ft.row_size * (size_t)t->ne[1] != size)
		return HERD_E_SHAPE;
	kern_pool_run(t->sh->pool, fill_rows, &ft);
	return atomic_load(&ft.failed) ? -ENOMEM : 0;
}

static void tensor_set(mk_tensor *t, const char *name, int64_t ne0, int64_t ne1, int norm,
		       mk_shared *sh)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->ne[0] = ne0;
	t->ne[1] = ne1;
	t->is_norm = norm;
	t->n_dims = norm ? 1 : 2;
	t->std = 1.0f / sqrtf((float)ne0);
	t->sh = sh;
}

/* Tensor list in llama.cpp's order, with types; ts holds 3 + 9 * n_layer. */
static void plan_tensors(const mkmodel_shape *s, ftype_id ftype, mk_shared *sh, mk_tensor *ts)
{
	static const char *const blk[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
					   "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
	const int64_t n_embd = s->n_embd, n_ff = s->n_ff;
	const int64_t n_embd_kv = (int64_t)s->n_embd / s->n_head * s->n_head_kv;
	int n = 0;
	tensor_set(&ts[n++], "token_embd.weight", n_embd, s->n_vocab, 0, sh);
	for (int l = 0; l < s->n_layer; l++) {
		for (int k = 0; k < 9; k++) {
			char name[64];
			snprintf(name, sizeof(name), "blk.%d.%s.weight", l, blk[k]);
			int64_t ne0 = n_embd, ne1 = n_embd;
			const int norm = k == 0 || k == 5;
			if (norm)
				ne1 = 1;
			else if (k == 2 || k == 3) /* attn_k, attn_v: [n_embd, n_embd_kv] */
				ne1 = n_embd_kv;
			else if (k == 6 || k == 7) /* ffn_gate, ffn_up: [n_embd, n_ff] */
				ne1 = n_ff;
			else if (k == 8) /* ffn_down: [n_ff, n_embd] */
				ne0 = n_ff;
			tensor_set(&ts[n++], name, ne0, ne1, norm, sh);
		}
	}
	tensor_set(&ts[n++], "output_norm.weight", n_embd, 1, 1, sh);
	tensor_set(&ts[n++], "output.weight", n_embd, s->n_vocab, 0, sh);
	ftype_plan plan;
	ftype_plan_init(&plan, ftype, s->n_layer, s->n_head, s->n_head_kv, 1);
	for (int i = 0; i < n; i++)
		ts[i].type = ftype_tensor_type(&plan, ts[i].name, ts[i].n_dims, ts[i].ne,
					       KERN_TYPE_F32);
}

/* ---- vocabulary ------------------------------------------------------ */

/* A growing set of unique strings. */
typedef struct strset {
	char *arena;
	size_t len, cap;
	size_t *off;
	uint32_t *slen;
	int n, cap_n;
	int32_t *table; /* open addressing: index + 1, 0 = empty */
	size_t table_size;
} strset;

static int strset_init(strset *s, int max_n)
{
	memset(s, 0, sizeof(*s));
	s->table_size = 16;
	while (s->table_size < (size_t)max_n * 2)
		s->table_size *= 2;
	s->table = calloc(s->table_size, sizeof(int32_t));
	s->off = malloc(sizeof(size_t) * (size_t)max_n);
	s->slen = malloc(sizeof(uint32_t) * (size_t)max_n);
	s->cap = 1 << 16;
	s->arena = malloc(s->cap);
	s->cap_n = max_n;
	return (s->table && s->off && s->slen && s->arena) ? 0 : -ENOMEM;
}

static void strset_fini(strset *s)
{
	free(s->arena);
	free(s->off);
	free(s->slen);
	free(s->table);
}

/* Adds str[0..len) unless present or full. Returns 1 added, 0 not, <0 error. */
static int strset_add(strset *s, const char *str, size_t len)
{
	if (s->n >= s->cap_n || len == 0)
		return 0;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)str[i]) * 0x100000001b3ull;
	size_t slot = (size_t)h & (s->table_size - 1);
	while (s->table[slot]) {
		const int j = s->table[slot] - 1;
		if (s->slen[j] == len && !memcmp(s->arena + s->off[j], str, len))
			return 0;
		slot = (slot + 1) & (s->table_size - 1);
	}
	if (s->len + len > s->cap) {
		size_t nc = s->cap * 2;
		while (nc < s->len + len)
			nc *= 2;
		char *a = realloc(s->arena, nc);
		if (!a)
			return -ENOMEM;
		s->arena = a;
		s->cap = nc;
	}
	memcpy(s->arena + s->len, str, len);
	s->off[s->n] = s->len;
	s->slen[s->n] = (uint32_t)len;
	s->len += len;
	s->table[slot] = ++s->n;
	return 1;
}

#define SP "\xe2\x96\x81" /* U+2581, SentencePiece's space */

/* Adds every prefix (>= 2 characters) of SP+word, and of word, then the
 * whole forms: the chain a BPE needs to reach them. */
static int add_word(strset *s, const char *word, int with_space)
{
	char buf[128];
	int rc = 0;
	const size_t wl = strlen(word);
	const size_t pre = with_space ? strlen(SP) : 0;
	if (pre + wl >= sizeof(buf))
		return 0;
	memcpy(buf, SP, pre);
	memcpy(buf + pre, word, wl);
	/* prefixes end at character boundaries (ASCII words: every byte) */
	for (size_t k = pre + (with_space ? 1 : 2); k <= pre + wl && rc >= 0; k++)
		rc = strset_add(s, buf, k);
	return rc < 0 ? rc : 0;
}

static const char *const common_words[] = {
	"the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on",
	"be", "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an",
	"they", "which", "one", "you", "were", "her", "all", "she", "there", "would",
	"their", "we", "him", "been", "has", "when", "who", "will", "more", "no", "if",
	"out", "so", "said", "what", "up", "its", "about", "into", "than", "them", "can",
	"only", "other", "new", "some", "could", "time", "these", "two", "may", "then",
	"do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me",
	"even", "most", "made", "after", "also", "did", "many", "before", "must",
	"through", "back", "years", "where", "much", "your", "way", "well", "down",
	"should", "because", "each", "just", "those", "people", "how", "too", "little",
	"state", "good", "very", "make", "world", "still", "own", "see", "men", "work",
	"long", "get", "here", "between", "both", "life", "being", "under", "never",
	"day", "same", "another", "know", "while", "last", "might", "us", "great", "old",
	"year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
	"three", "upon", "once", "robot", "key", "tree", "named", "found", "shiny",
	"wondered", "open", "hello", "world", "ing", "ed", "er", "ly", "tion", "ation",
	"ment", "ness", "able", "ous", "ive", "est", "al", "ic", "ist", "ity",
};

static const char single_chars[] =
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	".,!?;:'\"-()[]{}<>/\\@#$%^&*_+=|~`";

/* The normal (type 1) pieces of a synthetic vocabulary: n of them. */
static int synth_pieces(strset *s, int n)
{
	static const char cons[] = "bcdfghjklmnprstvwz";
	static const char vows[] = "aeiou";
	const int n_single = (int)strlen(single_chars) + 1; /* + SP */
	int rc;
	const int reserve = n > n_single ? n_single : 0;
	const int cap_n = s->cap_n;
	s->cap_n = s->n + n - reserve; /* leave room for the single characters */
	for (size_t i = 0; i < sizeof(common_words) / sizeof(common_words[0]); i++)
		if ((rc = add_word(s, common_words[i], 1)) || (rc = add_word(s, common_words[i], 0)))
			goto out;
	/* syllable words: CV, CVCV, CVCVCV ... until full */
	char w[16];
	const int n_syl = (int)(strlen(cons) * strlen(vows));
	for (int len = 1; len <= 4 && s->n < s->cap_n; len++) {
		long total = 1;
		for (int k = 0; k < len; k++)
			total *= n_syl;
		for (long idx = 0; idx < total && s->n < s->cap_n; idx++) {
			long v = idx;
			for (int k = len - 1; k >= 0; k--) {
				const int sy = (int)(v % n_syl);
				v /= n_syl;
				w[2 * k] = cons[sy / (int)strlen(vows)];
				w[2 * k + 1] = vows[sy % (int)strlen(vows)];
			}
			w[2 * len] = '\0';
			if ((rc = add_word(s, w, 1)) || (len > 1 && (rc = add_word(s, w, 0))))
				goto out;
		}
	}
	s->cap_n = cap_n;
	if (reserve) {
		if ((rc = strset_add(s, SP, strlen(SP))) < 0)
			goto out;
		for (const char *c = single_chars; *c; c++)
			if ((rc = strset_add(s, c, 1)) < 0)
				goto out;
	}
	rc = 0;
out:
	s->cap_n = cap_n;
	return rc;
}

int mkmodel_synth_vocab(gguf_writer *w, int n_vocab, char *err, size_t errlen)
{
	int rc;
	strset s;
	gguf_str *toks = NULL;
	float *scores = NULL;
	int32_t *types = NULL;
	if (n_vocab < 259 + 64) {
		return herd_errf(err, errlen, HERD_E_INVAL, "vocabulary of %d is too small", n_vocab);
	}
	if ((rc = strset_init(&s, n_vocab)))
		goto oom;
	char b[8];
	strset_add(&s, "<unk>", 5);
	strset_add(&s, "<s>", 3);
	strset_add(&s, "</s>", 4);
	for (int i = 0; i < 256; i++) {
		snprintf(b, sizeof(b), "<0x%02X>", i);
		strset_add(&s, b, 6);
	}
	if ((rc = synth_pieces(&s, n_vocab - s.n)))
		goto oom;
	if (s.n != n_vocab) {
		rc = herd_errf(err, errlen, HERD_E_RANGE,
			     "synthetic vocabulary has %d pieces, %d needed", s.n, n_vocab);
		goto fail;
	}
	toks = malloc(sizeof(*toks) * (size_t)n_vocab);
	scores = malloc(sizeof(*scores) * (size_t)n_vocab);
	types = malloc(sizeof(*types) * (size_t)n_vocab);
	if (!toks || !scores || !types)
		goto oom;
	for (int i = 0; i < n_vocab; i++) {
		toks[i] = (gguf_str){s.arena + s.off[i], s.slen[i]};
		scores[i] = i < 259 ? 0.0f : -(float)(i - 259);
		types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
	}
	if ((rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
	    (rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n_vocab)) ||
	    (rc = gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, scores,
				      (uint64_t)n_vocab)) ||
	    (rc = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types,
				      (uint64_t)n_vocab)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) ||
	    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1)) ||
	    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0)))
		goto oom;
	rc = 0;
	goto out;
oom:
	rc = herd_errf(err, errlen, rc ? rc : -ENOMEM, "out of memory building the vocabulary");
fail:
out:
	free(toks);
	free(scores);
	free(types);
	strset_fini(&s);
	return rc;
}

static int key_is(const gguf_kv *kv, const char *k)
{
	return kv->key.len == strlen(k) && !memcmp(kv->key.ptr, k, kv->key.len);
}

/* The vocabulary file has a tokenizer model and a string array of tokens,
 * at least n_vocab of them (their count in *n_tok). */
static int check_vocab_tokens(const gguf_ctx *g, const char *path, int n_vocab, uint64_t *n_tok,
			      char *err, size_t errlen)
{
	gguf_vtype t;
	const void *p;
	if (gguf_find_key(g, "tokenizer.ggml.model") < 0)
		return herd_errf(err, errlen, HERD_E_MISSING,
			       "vocabulary %s: no tokenizer.ggml.model key", path);
	int rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &t, n_tok, &p);
	if (rc || t != GGUF_VT_STRING)
		return herd_errf(err, errlen, rc == HERD_E_MISSING ? rc : HERD_E_FORMAT,
			       "vocabulary %s: tokenizer.ggml.tokens %s", path,
			       rc == HERD_E_MISSING ? "is missing" : "is not a string array");
	if (*n_tok < (uint64_t)n_vocab)
		return herd_errf(err, errlen, HERD_E_SHAPE,
			       "vocabulary %s has %llu tokens, the shape needs %d", path,
			       (unsigned long long)*n_tok, n_vocab);
	return 0;
}

/* rc from writing key; the message names it. */
static int copy_failed(char *err, size_t errlen, int rc, const char *path, const char *key)
{
	if (rc)
		herd_errf(err, errlen, rc, "vocabulary %s: copying %s failed", path, key);
	return rc;
}

/* Writes the first n_vocab entries of the per-token array kv (tokens,
 * scores or types) under key. Sets err, except for -ENOMEM of its own
 * token list. */
static int copy_truncated(gguf_writer *w, const gguf_ctx *g, const gguf_kv *kv, const char *key,
			  const char *path, int n_vocab, char *err, size_t errlen)
{
	if (key_is(kv, "tokenizer.ggml.tokens")) {
		gguf_str *toks = malloc(sizeof(*toks) * (size_t)n_vocab);
		if (!toks)
			return -ENOMEM;
		for (int j = 0; j < n_vocab; j++)
			gguf_get_arr_str(g, key, (uint64_t)j, &toks[j]);
		const int rc = gguf_writer_set_arr_str(w, key, toks, (uint64_t)n_vocab);
		free(toks);
		return copy_failed(err, errlen, rc, path, key);
	}
	if (kv->type == GGUF_VT_ARRAY &&
	    (kv->arr_type == GGUF_VT_FLOAT32 || kv->arr_type == GGUF_VT_INT32))
		return copy_failed(err, errlen,
				   gguf_writer_set_arr(w, key, kv->arr_type, kv->data, (uint64_t)n_vocab),
				   path, key);
	return herd_errf(err, errlen, HERD_E_FORMAT,
		       "vocabulary %s: %s is not a float32/int32 array", path, key);
}

/* Copies key/value i of g when it is a tokenizer.* key: checked (per-token
 * arrays as long as the token list, *_token_id inside the vocabulary) and
 * cut to n_vocab entries where the file has more tokens. Sets
 * *has_template for tokenizer.chat_template. Sets err on failure. */
static int copy_vocab_kv(gguf_writer *w, const gguf_ctx *g, int64_t i, const char *path,
			 int n_vocab, uint64_t n_tok, int *has_template, char *err, size_t errlen)
{
	const gguf_kv *kv = gguf_kv_at(g, i);
	char key[256];
	snprintf(key, sizeof(key), "%.*s", (int)(kv->key.len < 255 ? kv->key.len : 255), kv->key.ptr);
	if (strncmp(key, "tokenizer.", 10) != 0)
		return 0;
	if (key_is(kv, "tokenizer.chat_template"))
		*has_template = 1;
	const int per_token = key_is(kv, "tokenizer.ggml.tokens") ||
			      key_is(kv, "tokenizer.ggml.scores") ||
			      key_is(kv, "tokenizer.ggml.token_type");
	if (per_token && kv->type == GGUF_VT_ARRAY && kv->arr_n != n_tok)
		return herd_errf(err, errlen, HERD_E_FORMAT,
			       "vocabulary %s: %s has %llu entries, tokens has %llu", path, key,
			       (unsigned long long)kv->arr_n, (unsigned long long)n_tok);
	const size_t klen = strlen(key);
	if (kv->type != GGUF_VT_ARRAY && klen > 9 && !strcmp(key + klen - 9, "_token_id")) {
		int64_t id;
		if (gguf_get_int(g, key, &id) == 0 && (id < 0 || id >= n_vocab))
			return herd_errf(err, errlen, HERD_E_SHAPE,
				       "vocabulary %s: %s = %lld is outside the %d-token vocabulary",
				       path, key, (long long)id, n_vocab);
	}
	if (per_token && n_tok != (uint64_t)n_vocab)
		return copy_truncated(w, g, kv, key, path, n_vocab, err, errlen);
	return copy_failed(err, errlen, gguf_writer_copy_kv(w, g, i), path, key);
}

static int copy_vocab(gguf_writer *w, const char *path, int n_vocab, int *has_template, char *err,
		      size_t errlen)
{
	char msg[512];
	gguf_ctx *g = NULL;
	uint64_t n_tok;
	int rc = gguf_open(&g, path, msg, sizeof(msg));
	if (rc)
		return herd_errf(err, errlen, rc, "vocabulary: %s", msg);
	if ((rc = check_vocab_tokens(g, path, n_vocab, &n_tok, err, errlen)))
		goto out;
	*has_template = 0;
	for (int64_t i = 0; i < gguf_n_kv(g) && rc == 0; i++)
		rc = copy_vocab_kv(w, g, i, path, n_vocab, n_tok, has_template, err, errlen);
out:
	gguf_close(g);
	return rc;
}

/* ---- the model ------------------------------------------------------- */

static int set_meta(gguf_writer *w, const mkmodel_shape *s, ftype_id ftype, uint64_t seed)
{
	int rc;
	char desc[256];
	snprintf(desc, sizeof(desc),
		 "deterministic random weights (herd mkmodel, shape %s, seed %llu): not a trained "
		 "model",
		 s->name, (unsigned long long)seed);
	if ((rc = gguf_writer_set_str(w, "general.architecture", "llama")) ||
	    (rc = gguf_writer_set_str(w, "general.name", "herd demo (random weights)")) ||
	    (rc = gguf_writer_set_str(w, "general.description", desc)) ||
	    (rc = gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)s->n_vocab)) ||
	    (rc = gguf_writer_set_u32(w, "llama.context_length", (uint32_t)s->n_ctx)) ||
	    (rc = gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)s->n_embd)) ||
	    (rc = gguf_writer_set_u32(w, "llama.block_count", (uint32_t)s->n_layer)) ||
	    (rc = gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)s->n_ff)) ||
	    (rc = gguf_writer_set_u32(w, "llama.rope.dimension_count",
				      (uint32_t)(s->n_embd / s->n_head))) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)s->n_head)) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_head_kv)) ||
	    (rc = gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", s->rms_eps)) ||
	    (rc = gguf_writer_set_f32(w, "llama.rope.freq_base", s->rope_base)) ||
	    (rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype)) ||
	    (rc = gguf_writer_set_u32(w, "general.quantization_version", 2)))
		return rc;
	return 0;
}

int mkmodel_write(const mkmodel_opts *o, char *err, size_t errlen)
{
	int rc = 0;
	gguf_writer *w = NULL;
	mk_tensor *ts = NULL;
	mk_shared sh = {0};
	if (err && errlen)
		err[0] = '\0';
	if (!o || !o->shape || !o->ftype || !o->out_path)
		return herd_errf(err, errlen, HERD_E_INVAL,
			       "mkmodel: shape, file type and output path are required");
	const mkmodel_shape *s = mkmodel_shape_find(o->shape);
	if (!s)
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED, "unknown shape '%s' (known: %s)",
			       o->shape, mkmodel_shape_names());
	ftype_id ftype;
	if (ftype_parse(o->ftype, &ftype))
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
			       "unknown file type '%s' (known: %s)", o->ftype, ftype_names());

	kern_ops_init(&sh.ops, KERN_ISA_REF); /* reference quantizers: CPU-independent bytes */
	sh.seed = o->seed;
	const int cap = 3 + 9 * s->n_layer;
	ts = calloc((size_t)cap, sizeof(*ts));
	if (!ts) {
		rc = herd_errf(err, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	const int n_t = cap;
	plan_tensors(s, ftype, &sh, ts);
	for (int i = 0; i < n_t; i++) {
		if (ts[i].type != KERN_TYPE_F32 && !sh.ops.from_float[ts[i].type]) {
			rc = herd_errf(err, errlen, HERD_E_UNSUPPORTED,
				     "no %s quantizer in this build (needed for %s)",
				     kern_type_name(ts[i].type), ts[i].name);
			goto fail;
		}
	}

	if ((rc = gguf_writer_create(&w)) || (rc = set_meta(w, s, ftype, o->seed))) {
		herd_errf(err, errlen, rc, "out of memory");
		goto fail;
	}
	int has_template = 0;
	if (o->vocab_path) {
		if ((rc = copy_vocab(w, o->vocab_path, s->n_vocab, &has_template, err, errlen)))
			goto fail;
	} else if ((rc = mkmodel_synth_vocab(w, s->n_vocab, err, errlen))) {
		goto fail;
	}
	if (!has_template && (rc = gguf_writer_set_str(w, "tokenizer.chat_template", chat_template))) {
		herd_errf(err, errlen, rc, "out of memory");
		goto fail;
	}
	for (int i = 0; i < n_t; i++) {
		rc = gguf_writer_add_tensor_fill(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne,
						 fill_tensor, &ts[i]);
		if (rc) {
			herd_errf(err, errlen, rc, "cannot add tensor %s: %s", ts[i].name,
				herd_strerror(rc));
			goto fail;
		}
	}
	if ((rc = kern_pool_create(&sh.pool, o->n_threads))) {
		herd_errf(err, errlen, rc, "cannot start %d threads: %s", o->n_threads,
			herd_strerror(rc));
		goto fail;
	}
	rc = gguf_writer_write(w, o->out_path, err, errlen);
fail:
	kern_pool_destroy(sh.pool);
	gguf_writer_destroy(w);
	free(ts);
	return rc;
}
