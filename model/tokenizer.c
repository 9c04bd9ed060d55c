#include "model/tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/text.h"
#include "herd/error.h"

/* "▁" (U+2581), SentencePiece's escaped space. */
#define TOK_SPACE "\xe2\x96\x81"
#define TOK_SPACE_LEN 3

#define TOK_MAX_EOG 16

/* Open-addressing hash map from piece text to id. Slots hold id + 1; 0 is
 * empty. cap is a power of two, at least twice the number of entries. */
typedef struct tok_map {
	int32_t *slot;
	uint32_t mask;
} tok_map;

struct tok_vocab {
	int32_t n;
	char *text;        /* all pieces back to back */
	uint32_t *off;     /* [n + 1]: piece i is text[off[i]..off[i+1]) */
	float *score;      /* [n] */
	uint8_t *type;     /* [n] TOK_TYPE_* */
	uint8_t *byte_val; /* [n] the byte of a BYTE token */
	tok_map all;       /* every piece */
	tok_map merge;     /* pieces that text may produce (not CONTROL/UNKNOWN) */
	int32_t byte_tok[256]; /* byte-fallback token of each byte */
	int32_t *special;  /* CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
	int32_t n_special;
	int32_t eog[TOK_MAX_EOG];
	int n_eog;
	int32_t bos, eos, unk, pad;
	int add_bos;
	int add_space_prefix;
	int max_piece;     /* longest piece in bytes (decoded pieces are no longer) */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- hash map -------------------------------------------------------- */

static uint64_t tok_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 0x100000001b3ull;
	}
	return h ^ (h >> 29);
}

static const char *piece_ptr(const tok_vocab *v, int32_t id, size_t *len)
{
	*len = v->off[id + 1] - v->off[id];
	return v->text + v->off[id];
}

static int map_init(tok_map *m, int32_t n)
{
	uint32_t cap = 16;
	while (cap < 2u * (uint32_t)n)
		cap <<= 1;
	m->slot = calloc(cap, sizeof(*m->slot));
	m->mask = cap - 1;
	return m->slot ? 0 : -ENOMEM;
}

/* A later id with the same text replaces the earlier one (llama.cpp's
 * token_to_id keeps the last). */
static void map_put(const tok_vocab *v, tok_map *m, int32_t id)
{
	size_t len, l2;
	const char *s = piece_ptr(v, id, &len);
	uint32_t i = (uint32_t)tok_hash(s, len) & m->mask;
	for (;; i = (i + 1) & m->mask) {
		int32_t e = m->slot[i] - 1;
		if (e < 0)
			break;
		const char *t = piece_ptr(v, e, &l2);
		if (l2 == len && memcmp(s, t, len) == 0)
			break;
	}
	m->slot[i] = id + 1;
}

static int32_t map_get(const tok_vocab *v, const tok_map *m, const char *s, size_t len)
{
	size_t l2;
	uint32_t i = (uint32_t)tok_hash(s, len) & m->mask;
	for (;; i = (i + 1) & m->mask) {
		int32_t e = m->slot[i] - 1;
		if (e < 0)
			return -1;
		const char *t = piece_ptr(v, e, &l2);
		if (l2 == len && memcmp(s, t, len) == 0)
			return e;
	}
}

/* ---- construction ---------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Reads an optional token id key; out of range keeps *id (llama.cpp). */
static int read_id(const gguf_ctx *g, const char *key, int32_t n, int32_t *id, char *err,
		   size_t errlen)
{
	int64_t x;
	int rc = gguf_get_int(g, key, &x);
	if (rc == HERD_E_MISSING)
		return 0;
	if (rc) {
		set_err(err, errlen, "%s: not an integer", key);
		return rc;
	}
	if (x >= 0 && x < n)
		*id = (int32_t)x;
	return 0;
}

static int read_bool(const gguf_ctx *g, const char *key, int *val, char *err, size_t errlen)
{
	int rc = gguf_get_bool(g, key, val);
	if (rc == HERD_E_MISSING)
		return 0;
	if (rc)
		set_err(err, errlen, "%s: not a bool", key);
	return rc;
}

/* Order of the special tokens for the partition: longest text first, then
 * lower id. qsort has no context argument, so lengths go into the keys. */
typedef struct tok_special_key {
	uint32_t len;
	int32_t id;
} tok_special_key;

static int special_cmp(const void *pa, const void *pb)
{
	const tok_special_key *a = pa, *b = pb;
	if (a->len != b->len)
		return a->len > b->len ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static void add_eog(tok_vocab *v, int32_t id)
{
	if (id < 0)
		return;
	for (int i = 0; i < v->n_eog; i++)
		if (v->eog[i] == id)
			return;
	if (v->n_eog < TOK_MAX_EOG)
		v->eog[v->n_eog++] = id;
}

#define TOK_KEY_MODEL "tokenizer.ggml.model"
#define TOK_KEY_TOKENS "tokenizer.ggml.tokens"
#define TOK_KEY_SCORES "tokenizer.ggml.scores"
#define TOK_KEY_TYPES "tokenizer.ggml.token_type"
/* Longest piece a vocabulary may hold, in bytes (offsets are uint32). */
#define TOK_MAX_PIECE 0xffff
/* At most this many bytes of a malformed byte token are quoted. */
#define TOK_QUOTE_BYTE_TOKEN 32

/* Texts llama.cpp also treats as end of generation when they are CONTROL
 * tokens of the vocabulary. */
static const char *const tok_eog_texts[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
	"<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
};

/* tokenizer.ggml.model must be "llama" (SentencePiece). */
static int check_model_kind(const gguf_ctx *g, char *err, size_t errlen)
{
	gguf_str s;
	int rc = gguf_get_str(g, TOK_KEY_MODEL, &s);
	if (rc == HERD_E_MISSING) {
		set_err(err, errlen, TOK_KEY_MODEL ": missing");
		return rc;
	}
	if (rc) {
		set_err(err, errlen, TOK_KEY_MODEL ": not a string");
		return rc;
	}
	if (s.len != 5 || memcmp(s.ptr, "llama", 5) != 0) {
		set_err(err, errlen,
			"tokenizer model '%.*s' is not supported (only 'llama', SentencePiece)",
			HERD_QUOTE_LEN(s.len), s.ptr);
		return HERD_E_UNSUPPORTED;
	}
	return 0;
}

/* The vocabulary size: tokenizer.ggml.tokens is a non-empty string array
 * whose length fits an int32 id. */
static int count_tokens(const gguf_ctx *g, int32_t *n, char *err, size_t errlen)
{
	gguf_vtype at;
	uint64_t an;
	const void *ad;
	int rc = gguf_get_arr(g, TOK_KEY_TOKENS, &at, &an, &ad);
	if (rc == HERD_E_MISSING) {
		set_err(err, errlen, "%s: missing", TOK_KEY_TOKENS);
		return rc;
	}
	if (rc || at != GGUF_VT_STRING) {
		set_err(err, errlen, "%s: not an array of strings", TOK_KEY_TOKENS);
		return HERD_E_FORMAT;
	}
	if (an == 0) {
		set_err(err, errlen, "%s: empty vocabulary", TOK_KEY_TOKENS);
		return HERD_E_FORMAT;
	}
	if (an > INT32_MAX - 1) {
		set_err(err, errlen, "%s: %llu tokens is too many", TOK_KEY_TOKENS,
			(unsigned long long)an);
		return HERD_E_RANGE;
	}
	*n = (int32_t)an;
	return 0;
}

/* A vocabulary of n tokens with its per-token arrays allocated, or NULL. */
static tok_vocab *vocab_alloc(int32_t n)
{
	tok_vocab *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->n = n;
	v->off = malloc(((size_t)v->n + 1) * sizeof(*v->off));
	v->score = calloc((size_t)v->n, sizeof(*v->score));
	v->type = malloc((size_t)v->n);
	v->byte_val = calloc((size_t)v->n, 1);
	if (!v->off || !v->score || !v->type || !v->byte_val) {
		tok_destroy(v);
		return NULL;
	}
	return v;
}

static int token_text(const gguf_ctx *g, int32_t i, gguf_str *s, char *err, size_t errlen)
{
	const int rc = gguf_get_arr_str(g, TOK_KEY_TOKENS, (uint64_t)i, s);
	if (rc)
		set_err(err, errlen, "%s: cannot read element", TOK_KEY_TOKENS);
	return rc;
}

/* Piece texts, back to back in v->text: one pass for the total size (and
 * the longest piece), one to copy. */
static int load_texts(tok_vocab *v, const gguf_ctx *g, char *err, size_t errlen)
{
	gguf_str s;
	uint64_t total = 0;
	int rc;
	for (int32_t i = 0; i < v->n; i++) {
		if ((rc = token_text(g, i, &s, err, errlen)))
			return rc;
		total += s.len;
		if (s.len > TOK_MAX_PIECE || total > UINT32_MAX - 1) {
			set_err(err, errlen, "%s: token %d: pieces too long", TOK_KEY_TOKENS, (int)i);
			return HERD_E_RANGE;
		}
		if ((int)s.len > v->max_piece)
			v->max_piece = (int)s.len;
	}
	v->text = malloc(total ? total : 1);
	if (!v->text)
		return -ENOMEM;
	total = 0;
	for (int32_t i = 0; i < v->n; i++) {
		if ((rc = token_text(g, i, &s, err, errlen)))
			return rc;
		v->off[i] = (uint32_t)total;
		memcpy(v->text + total, s.ptr, s.len);
		total += s.len;
	}
	v->off[v->n] = (uint32_t)total;
	return 0;
}

/* Optional scores: n float32 values (all 0 when the key is missing). */
static int load_scores(tok_vocab *v, const gguf_ctx *g, char *err, size_t errlen)
{
	gguf_vtype at;
	uint64_t an;
	const void *ad;
	int rc = gguf_get_arr(g, TOK_KEY_SCORES, &at, &an, &ad);
	if (rc == HERD_E_MISSING)
		return 0;
	if (rc) {
		set_err(err, errlen, "%s: not an array", TOK_KEY_SCORES);
		return rc;
	}
	if (at != GGUF_VT_FLOAT32 || an != (uint64_t)v->n) {
		set_err(err, errlen, "%s: expected %d float32 values, have %llu of type %d",
			TOK_KEY_SCORES, (int)v->n, (unsigned long long)an, (int)at);
		return HERD_E_FORMAT;
	}
	memcpy(v->score, ad, (size_t)v->n * sizeof(float));
	return 0;
}

/* Optional token types: n int32 values (all NORMAL when the key is missing). */
static int load_types(tok_vocab *v, const gguf_ctx *g, char *err, size_t errlen)
{
	gguf_vtype at;
	uint64_t an;
	const void *ad;
	memset(v->type, TOK_TYPE_NORMAL, (size_t)v->n);
	int rc = gguf_get_arr(g, TOK_KEY_TYPES, &at, &an, &ad);
	if (rc == HERD_E_MISSING)
		return 0;
	if (rc) {
		set_err(err, errlen, "%s: not an array", TOK_KEY_TYPES);
		return rc;
	}
	if ((at != GGUF_VT_INT32 && at != GGUF_VT_UINT32) || an != (uint64_t)v->n) {
		set_err(err, errlen, "%s: expected %d int32 values, have %llu of type %d",
			TOK_KEY_TYPES, (int)v->n, (unsigned long long)an, (int)at);
		return HERD_E_FORMAT;
	}
	for (int32_t i = 0; i < v->n; i++) {
		int32_t t;
		memcpy(&t, (const char *)ad + sizeof(int32_t) * (size_t)i, sizeof(t));
		/* unknown values behave as UNDEFINED: decoded as nothing */
		v->type[i] = (t >= 0 && t <= TOK_TYPE_BYTE) ? (uint8_t)t : TOK_TYPE_UNDEFINED;
	}
	return 0;
}

/* The byte each BYTE token ("<0xXX>") stands for. */
static int load_byte_values(tok_vocab *v, char *err, size_t errlen)
{
	for (int32_t i = 0; i < v->n; i++) {
		size_t len;
		const char *p;
		if (v->type[i] != TOK_TYPE_BYTE)
			continue;
		p = piece_ptr(v, i, &len);
		if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>' || hexval(p[3]) < 0 ||
		    hexval(p[4]) < 0) {
			set_err(err, errlen, "token %d: byte token '%.*s' is not of the form <0xXX>",
				(int)i, (int)(len > TOK_QUOTE_BYTE_TOKEN ? TOK_QUOTE_BYTE_TOKEN : len), p);
			return HERD_E_FORMAT;
		}
		v->byte_val[i] = (uint8_t)(hexval(p[3]) * 16 + hexval(p[4]));
	}
	return 0;
}

/* Text -> id maps: every piece, and the pieces text may produce. */
static int build_maps(tok_vocab *v)
{
	int rc = map_init(&v->all, v->n);
	if (rc)
		return rc;
	if ((rc = map_init(&v->merge, v->n)))
		return rc;
	for (int32_t i = 0; i < v->n; i++) {
		map_put(v, &v->all, i);
		if (v->type[i] != TOK_TYPE_CONTROL && v->type[i] != TOK_TYPE_UNKNOWN)
			map_put(v, &v->merge, i);
	}
	return 0;
}

/* BOS/EOS/UNK/PAD ids (llama.cpp's defaults where a key is missing), the
 * end-of-generation set, and the add-BOS / space-prefix flags. */
static int load_special_ids(tok_vocab *v, const gguf_ctx *g, char *err, size_t errlen)
{
	int32_t eot = -1, eom = -1;
	int rc;
	v->bos = v->n > 1 ? 1 : -1;
	v->eos = v->n > 2 ? 2 : -1;
	v->unk = 0;
	v->pad = -1;
	if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", v->n, &v->bos, err, errlen)) ||
	    (rc = read_id(g, "tokenizer.ggml.eos_token_id", v->n, &v->eos, err, errlen)) ||
	    (rc = read_id(g, "tokenizer.ggml.unknown_token_id", v->n, &v->unk, err, errlen)) ||
	    (rc = read_id(g, "tokenizer.ggml.padding_token_id", v->n, &v->pad, err, errlen)) ||
	    (rc = read_id(g, "tokenizer.ggml.eot_token_id", v->n, &eot, err, errlen)) ||
	    (rc = read_id(g, "tokenizer.ggml.eom_token_id", v->n, &eom, err, errlen)))
		return rc;
	add_eog(v, v->eos);
	add_eog(v, eot);
	add_eog(v, eom);
	for (size_t i = 0; i < sizeof(tok_eog_texts) / sizeof(tok_eog_texts[0]); i++) {
		int32_t id = map_get(v, &v->all, tok_eog_texts[i], strlen(tok_eog_texts[i]));
		if (id >= 0 && v->type[id] == TOK_TYPE_CONTROL)
			add_eog(v, id);
	}
	v->add_bos = 1;
	v->add_space_prefix = 1;
	if ((rc = read_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err, errlen)) ||
	    (rc = read_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err,
			    errlen)))
		return rc;
	return 0;
}

/* Byte fallback of each byte: its "<0xXX>" token, else the single byte as
 * a piece, else UNK. */
static void build_byte_fallback(tok_vocab *v)
{
	for (int b = 0; b < 256; b++)
		v->byte_tok[b] = -1;
	for (int32_t i = 0; i < v->n; i++)
		if (v->type[i] == TOK_TYPE_BYTE) {
			size_t len;
			const char *p = piece_ptr(v, i, &len);
			if (map_get(v, &v->all, p, len) == i)
				v->byte_tok[v->byte_val[i]] = i;
		}
	for (int b = 0; b < 256; b++) {
		if (v->byte_tok[b] < 0) {
			char c = (char)b;
			v->byte_tok[b] = map_get(v, &v->all, &c, 1);
		}
		if (v->byte_tok[b] < 0)
			v->byte_tok[b] = v->unk;
	}
}

/* Whether token i takes part in the special-token partition. */
static int is_partition_special(const tok_vocab *v, int32_t i)
{
	const uint8_t t = v->type[i];
	return (t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN) &&
	       v->off[i + 1] > v->off[i];
}

/* v->special: the special tokens for the partition, longest text first. */
static int build_special_list(tok_vocab *v)
{
	for (int32_t i = 0; i < v->n; i++)
		if (is_partition_special(v, i))
			v->n_special++;
	if (v->n_special == 0)
		return 0;
	int32_t k = 0;
	tok_special_key *keys = malloc((size_t)v->n_special * sizeof(*keys));
	v->special = malloc((size_t)v->n_special * sizeof(*v->special));
	if (!keys || !v->special) {
		free(keys);
		return -ENOMEM;
	}
	for (int32_t i = 0; i < v->n; i++)
		if (is_partition_special(v, i)) {
			keys[k].len = v->off[i + 1] - v->off[i];
			keys[k].id = i;
			k++;
		}
	qsort(keys, (size_t)k, sizeof(*keys), special_cmp);
	for (int32_t i = 0; i < k; i++)
		v->special[i] = keys[i].id;
	free(keys);
	return 0;
}

int tok_create(tok_vocab **out, const gguf_ctx *g, char *err, size_t errlen)
{
	tok_vocab *v = NULL;
	int32_t n = 0;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return HERD_E_INVAL;
	*out = NULL;
	if (!g) {
		set_err(err, errlen, "no GGUF context");
		return HERD_E_INVAL;
	}
	if ((rc = check_model_kind(g, err, errlen)) || (rc = count_tokens(g, &n, err, errlen)))
		return rc;

	rc = -ENOMEM;
	if (!(v = vocab_alloc(n)))
		goto fail;
	if ((rc = load_texts(v, g, err, errlen)) || (rc = load_scores(v, g, err, errlen)) ||
	    (rc = load_types(v, g, err, errlen)) || (rc = load_byte_values(v, err, errlen)) ||
	    (rc = build_maps(v)) || (rc = load_special_ids(v, g, err, errlen)))
		goto fail;
	build_byte_fallback(v);
	if ((rc = build_special_list(v)))
		goto fail;
	*out = v;
	return 0;

fail:
	if (rc == -ENOMEM)
		set_err(err, errlen, "out of memory");
	tok_destroy(v);
	return rc;
}

void tok_destroy(tok_vocab *v)
{
	if (!v)
		return;
	free(v->special);
	free(v->merge.slot);
	free(v->all.slot);
	free(v->byte_val);
	free(v->type);
	free(v->score);
	free(v->off);
	free(v->text);
	free(v);
}

/* ---- accessors ------------------------------------------------------- */

int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
int32_t tok_unk(const tok_vocab *v) { return v->unk; }
int32_t tok_pad(const tok_vocab *v) { return v->pad; }
int tok_n_vocab(const tok_vocab *v) { return v->n; }
int tok_add_bos(const tok_vocab *v) { return v->add_bos; }
int tok_add_space_prefix(const tok_vocab *v) { return v->add_space_prefix; }
int tok_max_piece_len(const tok_vocab *v) { return v->max_piece; }

int tok_is_eog(const tok_vocab *v, int32_t id)
{
	for (int i = 0; i < v->n_eog; i++)
		if (v->eog[i] == id)
			return 1;
	return 0;
}

int tok_is_control(const tok_vocab *v, int32_t id)
{
	return id >= 0 && id < v->n && v->type[id] == TOK_TYPE_CONTROL;
}

int tok_type(const tok_vocab *v, int32_t id)
{
	return (id >= 0 && id < v->n) ? v->type[id] : -1;
}

float tok_score(const tok_vocab *v, int32_t id)
{
	return (id >= 0 && id < v->n) ? v->score[id] : 0.0f;
}

const char *tok_text(const tok_vocab *v, int32_t id, size_t *len)
{
	if (id < 0 || id >= v->n)
		return NULL;
	return piece_ptr(v, id, len);
}

int32_t tok_find(const tok_vocab *v, const char *text, size_t len)
{
	return map_get(v, &v->all, text, len);
}

/* ---- SPM merge session ----------------------------------------------- */

typedef struct spm_sym {
	int32_t prev, next; /* linked list of live symbols; -1 ends */
	uint32_t off, n;    /* bytes buf[off..off+n); n == 0 once merged away */
} spm_sym;

typedef struct spm_bigram {
	float score;
	int32_t left, right;
	uint32_t size;
} spm_bigram;

/* Output sink: counts every token, stores the first n_max. */
typedef struct tok_out {
	int32_t *ids;
	int n_max;
	int n;
} tok_out;

static void out_push(tok_out *o, int32_t id)
{
	if (o->n < o->n_max)
		o->ids[o->n] = id;
	if (o->n < INT32_MAX)
		o->n++;
}

/* Scratch reused across the fragments of one tok_encode call. */
typedef struct spm_work {
	char *buf;
	size_t buf_cap;
	spm_sym *sym;
	size_t sym_cap;
	spm_bigram *heap;
	size_t heap_cap, heap_n;
} spm_work;

/* a pops before b: higher score, then smaller left */
static int bigram_before(const spm_bigram *a, const spm_bigram *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm_work *w, spm_bigram b)
{
	size_t i = w->heap_n++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!bigram_before(&b, &w->heap[p]))
			break;
		w->heap[i] = w->heap[p];
		i = p;
	}
	w->heap[i] = b;
}

static spm_bigram heap_pop(spm_work *w)
{
	spm_bigram top = w->heap[0], last = w->heap[--w->heap_n];
	size_t i = 0, n = w->heap_n;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, c;
		if (l >= n)
			break;
		c = (r < n && bigram_before(&w->heap[r], &w->heap[l])) ? r : l;
		if (!bigram_before(&w->heap[c], &last))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	if (n > 0)
		w->heap[i] = last;
	return top;
}

static void try_add_bigram(const tok_vocab *v, spm_work *w, int32_t left, int32_t right)
{
	spm_bigram b;
	uint32_t size;
	int32_t id;

	if (left < 0 || right < 0)
		return;
	size = w->sym[left].n + w->sym[right].n;
	if (size > (uint32_t)v->max_piece)
		return;
	id = map_get(v, &v->merge, w->buf + w->sym[left].off, size);
	if (id < 0)
		return;
	b.score = v->score[id];
	b.left = left;
	b.right = right;
	b.size = size;
	heap_push(w, b);
}

static size_t utf8_len(uint8_t c)
{
	static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
	return lookup[c >> 4];
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	void *q;
	if (need <= *cap)
		return 0;
	q = realloc(*p, need * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = need;
	return 0;
}

/* Tokenizes one raw-text fragment (spaces not yet escaped). */
static int spm_fragment(const tok_vocab *v, spm_work *w, const char *text, size_t len,
			int space_prefix, tok_out *o)
{
	size_t n = 0, n_sym = 0;
	int rc;

	/* escape: worst case every byte is a space -> 3 bytes, plus the prefix */
	rc = grow((void **)&w->buf, &w->buf_cap, 3 * len + TOK_SPACE_LEN, 1);
	if (rc)
		return rc;
	if (space_prefix) {
		memcpy(w->buf, TOK_SPACE, TOK_SPACE_LEN);
		n = TOK_SPACE_LEN;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(w->buf + n, TOK_SPACE, TOK_SPACE_LEN);
			n += TOK_SPACE_LEN;
		} else {
			w->buf[n++] = text[i];
		}
	}
	if (n == 0)
		return 0;

	/* one symbol per UTF-8 character */
	rc = grow((void **)&w->sym, &w->sym_cap, n, sizeof(*w->sym));
	if (rc)
		return rc;
	for (size_t off = 0; off < n;) {
		size_t cl = utf8_len((uint8_t)w->buf[off]);
		spm_sym *s = &w->sym[n_sym];
		if (cl > n - off)
			cl = n - off;
		s->off = (uint32_t)off;
		s->n = (uint32_t)cl;
		s->prev = (int32_t)n_sym - 1;
		off += cl;
		s->next = off == n ? -1 : (int32_t)n_sym + 1;
		n_sym++;
	}

	/* every merge pushes at most two bigrams */
	rc = grow((void **)&w->heap, &w->heap_cap, 3 * n_sym, sizeof(*w->heap));
	if (rc)
		return rc;
	w->heap_n = 0;
	for (size_t i = 1; i < n_sym; i++)
		try_add_bigram(v, w, (int32_t)i - 1, (int32_t)i);

	while (w->heap_n > 0) {
		spm_bigram b = heap_pop(w);
		spm_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		/* stale: one side already merged away or grown */
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		try_add_bigram(v, w, l->prev, b.left);
		try_add_bigram(v, w, b.left, l->next);
	}

	/* Emit. Every merged symbol is a piece; only single characters can be
	 * missing from the vocabulary, so llama.cpp's resegmentation through the
	 * recorded merges never applies and is not needed here. */
	for (int32_t i = 0; i != -1; i = w->sym[i].next) {
		const spm_sym *s = &w->sym[i];
		int32_t id = map_get(v, &v->merge, w->buf + s->off, s->n);
		if (id >= 0) {
			out_push(o, id);
			continue;
		}
		for (uint32_t j = 0; j < s->n; j++)
			out_push(o, v->byte_tok[(uint8_t)w->buf[s->off + j]]);
	}
	return 0;
}

/* ---- special-token partition and the full encode --------------------- */

typedef struct tok_frag {
	int32_t tok;     /* >= 0: a special token; -1: raw text */
	uint32_t off, n; /* raw text range */
} tok_frag;

typedef struct frag_list {
	tok_frag *f;
	size_t n, cap;
} frag_list;

static int frag_add(frag_list *l, int32_t tok, size_t off, size_t n)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		tok_frag *f = realloc(l->f, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		l->f = f;
		l->cap = cap;
	}
	l->f[l->n].tok = tok;
	l->f[l->n].off = (uint32_t)off;
	l->f[l->n].n = (uint32_t)n;
	l->n++;
	return 0;
}

/* Whether special token id may be matched at text[pos..pos+n). */
static int special_allowed(const tok_vocab *v, int32_t id, const uint8_t *special_ok,
			   size_t pos, size_t n)
{
	if (v->type[id] == TOK_TYPE_USER_DEFINED)
		return 1; /* split out even without parse_special, as llama.cpp */
	if (!special_ok)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!special_ok[pos + i])
			return 0;
	return 1;
}

static const char *find_bytes(const char *hay, size_t hn, const char *needle, size_t nn)
{
	if (nn == 0 || nn > hn)
		return NULL;
	return memmem(hay, hn, needle, nn);
}

/* One raw fragment f of a, split at the allowed occurrences of special
 * token id (text st, sl bytes), appended to b; *any is set when one was
 * found. 0 or -ENOMEM. */
static int split_fragment(const tok_vocab *v, const char *text, tok_frag f, int32_t id,
			  const char *st, size_t sl, const uint8_t *special_ok, frag_list *b,
			  int *any)
{
	size_t pos = f.off;
	const size_t end = (size_t)f.off + f.n;
	int rc;
	while (pos < end) {
		const char *hit = find_bytes(text + pos, end - pos, st, sl);
		size_t at = hit ? (size_t)(hit - text) : end;
		/* skip occurrences that touch bytes where specials are off */
		while (hit && !special_allowed(v, id, special_ok, at, sl)) {
			hit = find_bytes(text + at + 1, end - at - 1, st, sl);
			at = hit ? (size_t)(hit - text) : end;
		}
		if (at > pos && (rc = frag_add(b, -1, pos, at - pos)))
			return rc;
		if (!hit)
			break;
		if ((rc = frag_add(b, id, 0, 0)))
			return rc;
		*any = 1;
		pos = at + sl;
	}
	return 0;
}

/* Partitions text[0..len) into raw fragments and special tokens (a holds
 * the result; b is scratch): each special token in turn, longest first, is
 * split out of the raw fragments left so far. 0 or -ENOMEM. */
static int partition_specials(const tok_vocab *v, const char *text, size_t len,
			      const uint8_t *special_ok, frag_list *a, frag_list *b)
{
	int rc = frag_add(a, -1, 0, len);
	if (rc)
		return rc;
	for (int32_t si = 0; si < v->n_special; si++) {
		int32_t id = v->special[si];
		size_t sl;
		const char *st = piece_ptr(v, id, &sl);
		int any = 0;

		if (v->type[id] != TOK_TYPE_USER_DEFINED && !special_ok)
			continue;
		b->n = 0;
		for (size_t fi = 0; fi < a->n; fi++) {
			const tok_frag f = a->f[fi];
			rc = f.tok >= 0 ? frag_add(b, f.tok, 0, 0)
					: split_fragment(v, text, f, id, st, sl, special_ok, b, &any);
			if (rc)
				return rc;
		}
		if (any) {
			frag_list t = *a;
			*a = *b;
			*b = t;
		}
	}
	return 0;
}

/* Emits the partition's tokens: special tokens as they are, raw fragments
 * through SentencePiece. 0 or an error of spm_fragment. */
static int encode_fragments(const tok_vocab *v, const char *text, const frag_list *a, int flags,
			    spm_work *w, tok_out *o)
{
	/* llama.cpp: the first raw fragment, and each one after a special
	 * token, gets the dummy prefix */
	int prev_special = !(flags & TOK_NO_SPACE_PREFIX);
	for (size_t fi = 0; fi < a->n; fi++) {
		if (a->f[fi].tok >= 0) {
			out_push(o, a->f[fi].tok);
			prev_special = 1;
			continue;
		}
		int rc = spm_fragment(v, w, text + a->f[fi].off, a->f[fi].n,
				      v->add_space_prefix && prev_special, o);
		if (rc)
			return rc;
		prev_special = 0;
	}
	return 0;
}

int tok_encode_masked(const tok_vocab *v, const char *text, size_t len,
		      const uint8_t *special_ok, int flags, int32_t *ids, int n_max)
{
	frag_list a = {0}, b = {0};
	spm_work w = {0};
	tok_out o = {ids, n_max, 0};
	int rc = 0;

	if (!v || (!text && len > 0) || n_max < 0 || (!ids && n_max > 0))
		return HERD_E_INVAL;
	if (len > INT32_MAX / 4)
		return HERD_E_RANGE;

	if ((flags & TOK_ADD_BOS) && v->bos >= 0)
		out_push(&o, v->bos);
	if (len == 0)
		return o.n;

	if ((rc = partition_specials(v, text, len, special_ok, &a, &b)) ||
	    (rc = encode_fragments(v, text, &a, flags, &w, &o)))
		goto done;
	rc = o.n;
done:
	free(w.heap);
	free(w.sym);
	free(w.buf);
	free(b.f);
	free(a.f);
	return rc;
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, int flags, int32_t *ids,
	       int n_max)
{
	uint8_t *ok = NULL;
	int rc;

	if (!(flags & TOK_PARSE_SPECIAL))
		return tok_encode_masked(v, text, len, NULL, flags, ids, n_max);
	if (len > INT32_MAX / 4)
		return HERD_E_RANGE;
	ok = malloc(len ? len : 1);
	if (!ok)
		return -ENOMEM;
	memset(ok, 1, len);
	rc = tok_encode_masked(v, text, len, ok, flags, ids, n_max);
	free(ok);
	return rc;
}

/* ---- decoding -------------------------------------------------------- */

/* Writes the piece into buf when it fits in n; returns its length. */
static int piece_bytes(const tok_vocab *v, int32_t id, char *buf, size_t n)
{
	size_t len;
	const char *p = piece_ptr(v, id, &len);

	switch (v->type[id]) {
	case TOK_TYPE_NORMAL: {
		size_t out = 0;
		for (size_t i = 0; i < len;) {
			if (i + TOK_SPACE_LEN <= len && memcmp(p + i, TOK_SPACE, TOK_SPACE_LEN) == 0) {
				i += TOK_SPACE_LEN;
				out++;
			} else {
				i++;
				out++;
			}
		}
		if (out <= n) {
			size_t k = 0;
			for (size_t i = 0; i < len;) {
				if (i + TOK_SPACE_LEN <= len &&
				    memcmp(p + i, TOK_SPACE, TOK_SPACE_LEN) == 0) {
					buf[k++] = ' ';
					i += TOK_SPACE_LEN;
				} else {
					buf[k++] = p[i++];
				}
			}
		}
		return (int)out;
	}
	case TOK_TYPE_USER_DEFINED:
		if (len <= n)
			memcpy(buf, p, len);
		return (int)len;
	case TOK_TYPE_BYTE:
		if (n >= 1)
			buf[0] = (char)v->byte_val[id];
		return 1;
	default: /* CONTROL, UNKNOWN, UNUSED, UNDEFINED */
		return 0;
	}
}

int tok_piece(const tok_vocab *v, int32_t id, char *buf, size_t n)
{
	if (!v || id < 0 || id >= v->n)
		return HERD_E_RANGE;
	if (!buf)
		n = 0;
	return piece_bytes(v, id, buf, n);
}

int tok_decode(const tok_vocab *v, const int32_t *ids, int n_ids, int flags, char *buf,
	       size_t n)
{
	size_t total = 0;
	char *tmp = NULL;
	int rc;

	if (!v || n_ids < 0 || (!ids && n_ids > 0) || (!buf && n > 0))
		return HERD_E_INVAL;
	tmp = malloc((size_t)v->max_piece + 1);
	if (!tmp)
		return -ENOMEM;
	for (int i = 0; i < n_ids; i++) {
		int len;
		const char *p = tmp;
		if (ids[i] < 0 || ids[i] >= v->n) {
			rc = HERD_E_RANGE;
			goto done;
		}
		len = piece_bytes(v, ids[i], tmp, (size_t)v->max_piece + 1);
		if ((i == 0 || (i == 1 && ids[0] == v->bos)) && (flags & TOK_DECODE_STRIP_SPACE) &&
		    v->add_space_prefix && len > 0 && p[0] == ' ') {
			p++;
			len--;
		}
		for (int k = 0; k < len; k++, total++)
			if (total + 1 < n)
				buf[total] = p[k];
		if (total > INT32_MAX) {
			rc = HERD_E_RANGE;
			goto done;
		}
	}
	if (n > 0)
		buf[total < n ? total : n - 1] = '\0';
	rc = (int)total;
done:
	free(tmp);
	return rc;
}
