/* libFuzzer target: the GGUF reader (model/gguf.h) on arbitrary bytes.
 *
 * gguf_open_mem validates everything up front, so once a file opens every
 * public accessor must stay inside the buffer: this walks every key (typed
 * getters by the key's own name, every array element, every string byte)
 * and every tensor (name, find-by-name, first and last data byte), then
 * runs what sits on top of the reader: tok_create (tokenizer.ggml.* keys)
 * and llama_model_from_gguf (hyper-parameters, tensor names, shapes, types).
 * ASan sees every byte touched; the sums only keep the reads alive.
 * Deterministic, no global state. Build: -DHERD_FUZZ=ON (see README). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static uint64_t touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = s * 31 + b[i];
	return s;
}

/* p..p+n must lie inside the input buffer. */
static void in_buf(const gguf_ctx *g, const void *p, uint64_t n)
{
	const uint8_t *base = gguf_base(g), *q = p;
	if (n == 0)
		return;
	if (q < base || q > base + gguf_size(g) || n > (uint64_t)(base + gguf_size(g) - q))
		abort();
}

/* A NUL-terminated copy of s (keys and names may hold NUL bytes: then the
 * C-string lookups legitimately see a shorter name). */
static char *cstr(gguf_str s)
{
	char *c = malloc(s.len + 1);
	if (!c)
		abort();
	memcpy(c, s.ptr, s.len);
	c[s.len] = 0;
	return c;
}

static void walk_kv(const gguf_ctx *g, int64_t i)
{
	const gguf_kv *kv = gguf_kv_at(g, i);
	if (!kv)
		abort();
	in_buf(g, kv->key.ptr, kv->key.len);
	sink += touch(kv->key.ptr, kv->key.len);
	char *key = cstr(kv->key);
	const int plain = strlen(key) == kv->key.len;
	if (plain && gguf_find_key(g, key) != i)
		abort(); /* duplicate keys are refused at open */
	int64_t iv;
	double fv;
	int bv;
	gguf_str sv;
	gguf_vtype at;
	uint64_t n;
	const void *ad;
	if (gguf_get_int(g, key, &iv) == 0)
		sink += (uint64_t)iv;
	if (gguf_get_float(g, key, &fv) == 0)
		sink += (uint64_t)(fv == fv);
	if (gguf_get_bool(g, key, &bv) == 0)
		sink += (uint64_t)bv;
	if (gguf_get_str(g, key, &sv) == 0) {
		in_buf(g, sv.ptr, sv.len);
		sink += touch(sv.ptr, sv.len);
	}
	if (gguf_get_arr(g, key, &at, &n, &ad) == 0 && plain) {
		if (at != kv->arr_type || n != kv->arr_n)
			abort();
		if (at == GGUF_VT_STRING) {
			for (uint64_t j = 0; j < n; j++) {
				if (gguf_get_arr_str(g, key, j, &sv))
					abort();
				in_buf(g, sv.ptr, sv.len);
				sink += touch(sv.ptr, sv.len);
			}
			if (gguf_get_arr_str(g, key, n, &sv) != HERD_E_RANGE)
				abort();
		} else if (at != GGUF_VT_ARRAY && at < GGUF_VT_COUNT) {
			static const uint8_t esz[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
			in_buf(g, ad, n * esz[at]);
			sink += touch(ad, n * esz[at]);
		}
	}
	free(key);
}

static void walk_tensor(const gguf_ctx *g, int64_t i)
{
	const gguf_tensor *t = gguf_tensor_at(g, i);
	if (!t || t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
		abort();
	in_buf(g, t->name.ptr, t->name.len);
	sink += touch(t->name.ptr, t->name.len);
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
		if (t->ne[d] < 1)
			abort();
	in_buf(g, t->data, t->size);
	if (t->size) {
		const uint8_t *p = t->data;
		sink += p[0] + p[t->size - 1];
	}
	char *name = cstr(t->name);
	if (strlen(name) == t->name.len && gguf_find_tensor(g, name) != t)
		abort();
	free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gguf_ctx *g = NULL;
	char err[256];
	if (gguf_open_mem(&g, data, size, err, sizeof(err)) != 0) {
		if (g)
			abort(); /* *out is NULL on failure */
		return 0;
	}
	sink += gguf_version(g) + gguf_alignment(g);
	if (gguf_data_offset(g) > gguf_size(g) || gguf_size(g) != size || gguf_base(g) != data)
		abort();
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		walk_kv(g, i);
	if (gguf_kv_at(g, gguf_n_kv(g)) || gguf_kv_at(g, -1))
		abort();
	for (int64_t i = 0; i < gguf_n_tensors(g); i++)
		walk_tensor(g, i);
	if (gguf_tensor_at(g, gguf_n_tensors(g)) || gguf_tensor_at(g, -1))
		abort();

	tok_vocab *v = NULL;
	if (tok_create(&v, g, err, sizeof(err)) == 0) {
		int32_t ids[64];
		static const char text[] = " Hello world, <s>ünïcode </s>\n\t 123";
		const int n = tok_encode(v, text, sizeof(text) - 1, TOK_ADD_BOS | TOK_PARSE_SPECIAL,
					 ids, 64);
		if (n < 0 && n != -ENOMEM)
			abort();
		for (int j = 0; j < n && j < 64; j++)
			if (ids[j] < 0 || ids[j] >= tok_n_vocab(v))
				abort();
		tok_destroy(v);
	} else if (v) {
		abort();
	}

	llama_model *m = NULL;
	if (llama_model_from_gguf(&m, g, err, sizeof(err)) == 0)
		llama_model_destroy(m);
	else if (m)
		abort();
	gguf_close(g);
	return 0;
}
