/* GGUF v2/v3 reader and v3 writer. See gguf.h for the contract.
 *
 * Reader: one bounds-checked cursor walks the header, key/values and tensor
 * directory; every length and count is checked against the bytes left before
 * anything is read or allocated from it. Arrays grow as items are parsed, so
 * memory stays proportional to what the file really holds.
 *
 * Layout (all little-endian):
 *   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { str key, u32 vtype, value },
 *   n_tensors x { str name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset },
 *   padding to the alignment, data section (tensor offsets relative to it).
 *   str = u64 length + bytes; array value = u32 elem type, u64 n, elements.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r, fallocate */
#endif
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herd/error.h"
#include "kernels/gemm.h"

#define GGUF_HEADER_SIZE 24      /* magic, version, n_tensors, n_kv */
#define GGUF_MAX_NESTING 8       /* arrays of arrays: deeper is refused */
#define GGUF_MIN_KV_SIZE 13      /* key len 8 + type 4 + 1-byte value */
#define GGUF_MIN_TENSOR_SIZE 32  /* name len 8 + n_dims 4 + ne 8 + type 4 + offset 8 */
#define GGUF_MAX_NAME 64         /* ggml's GGML_MAX_NAME, including the NUL */

/* Per-kv private data beside the public gguf_kv. */
typedef struct kv_priv {
	size_t val_off;  /* file offset of the value (after the u32 type) */
	size_t val_len;  /* bytes of the value, arrays including their header */
	gguf_str *strs;  /* index of a string array's elements, else NULL */
} kv_priv;

struct gguf_ctx {
	const uint8_t *base;
	size_t size;
	int mapped; /* base is our mmap */
	uint32_t version;
	size_t alignment;
	size_t data_offset;
	int64_t n_kv;
	gguf_kv *kv;
	kv_priv *kvp;
	int64_t *kv_sorted; /* kv indices sorted by key */
	int64_t n_tensors;
	gguf_tensor *tensors;
	int64_t *t_sorted; /* tensor indices sorted by name */
};


/* Printable copy of a (possibly hostile) name for messages. */
static const char *safe_name(char *buf, size_t bufsz, gguf_str s)
{
	size_t n = 0;
	for (uint64_t i = 0; i < s.len && n + 4 < bufsz; i++) {
		const unsigned char c = (unsigned char)s.ptr[i];
		buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (s.len > n && n + 4 <= bufsz) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static uint64_t rd_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static uint32_t rd_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* ---- reader ---------------------------------------------------------- */

typedef struct cursor {
	const uint8_t *p;
	size_t size;
	size_t pos;
	char *err;
	size_t errlen;
} cursor;

static size_t cur_left(const cursor *c)
{
	return c->size - c->pos;
}

static int cur_need(cursor *c, size_t n, const char *what)
{
	if (n > cur_left(c))
		return herd_errf(c->err, c->errlen, HERD_E_TRUNCATED,
			       "truncated: %s needs %zu bytes at offset %zu, file has %zu", what, n,
			       c->pos, c->size);
	return 0;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what)
{
	int rc = cur_need(c, 4, what);
	if (rc)
		return rc;
	*v = rd_u32(c->p + c->pos);
	c->pos += 4;
	return 0;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what)
{
	int rc = cur_need(c, 8, what);
	if (rc)
		return rc;
	*v = rd_u64(c->p + c->pos);
	c->pos += 8;
	return 0;
}

/* count items of at least min_size bytes each must fit in what is left. */
static int cur_check_count(cursor *c, uint64_t count, size_t min_size, const char *what)
{
	if (count <= cur_left(c) / min_size)
		return 0;
	if (count > c->size)
		return herd_errf(c->err, c->errlen, HERD_E_RANGE,
			       "%s: count %llu at offset %zu is larger than the whole file (%zu bytes)",
			       what, (unsigned long long)count, c->pos, c->size);
	return herd_errf(c->err, c->errlen, HERD_E_TRUNCATED,
		       "truncated: %s: %llu items of >= %zu bytes at offset %zu exceed the %zu bytes left",
		       what, (unsigned long long)count, min_size, c->pos, cur_left(c));
}

static int cur_str(cursor *c, gguf_str *s, const char *what)
{
	uint64_t len;
	int rc = cur_u64(c, &len, what);
	if (rc)
		return rc;
	if (len > cur_left(c))
		return herd_errf(c->err, c->errlen, len > c->size ? HERD_E_RANGE : HERD_E_TRUNCATED,
			       "%s: string length %llu at offset %zu exceeds the %zu bytes left in the file",
			       what, (unsigned long long)len, c->pos - 8, cur_left(c));
	s->ptr = (const char *)(c->p + c->pos);
	s->len = len;
	c->pos += (size_t)len;
	return 0;
}

/* Size of a fixed-size value type, 0 for string/array, -1 for unknown. */
static int vtype_size(uint32_t t)
{
	switch (t) {
	case GGUF_VT_UINT8:
	case GGUF_VT_INT8:
	case GGUF_VT_BOOL: return 1;
	case GGUF_VT_UINT16:
	case GGUF_VT_INT16: return 2;
	case GGUF_VT_UINT32:
	case GGUF_VT_INT32:
	case GGUF_VT_FLOAT32: return 4;
	case GGUF_VT_UINT64:
	case GGUF_VT_INT64:
	case GGUF_VT_FLOAT64: return 8;
	case GGUF_VT_STRING:
	case GGUF_VT_ARRAY: return 0;
	default: return -1;
	}
}

static const char *vtype_name(uint32_t t)
{
	static const char *const names[GGUF_VT_COUNT] = {
		[GGUF_VT_UINT8] = "uint8",     [GGUF_VT_INT8] = "int8",
		[GGUF_VT_UINT16] = "uint16",   [GGUF_VT_INT16] = "int16",
		[GGUF_VT_UINT32] = "uint32",   [GGUF_VT_INT32] = "int32",
		[GGUF_VT_FLOAT32] = "float32", [GGUF_VT_BOOL] = "bool",
		[GGUF_VT_STRING] = "string",   [GGUF_VT_ARRAY] = "array",
		[GGUF_VT_UINT64] = "uint64",   [GGUF_VT_INT64] = "int64",
		[GGUF_VT_FLOAT64] = "float64",
	};
	return t < GGUF_VT_COUNT ? names[t] : "unknown";
}

/* Skips over one value of type t (the u32 type tag already consumed). */
static int skip_value(cursor *c, uint32_t t, int depth, const char *what)
{
	int rc;
	const int sz = vtype_size(t);
	if (sz < 0)
		return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
			       "%s: unknown value type %u at offset %zu", what, t, c->pos - 4);
	if (sz > 0) {
		if ((rc = cur_need(c, (size_t)sz, what)))
			return rc;
		c->pos += (size_t)sz;
		return 0;
	}
	if (t == GGUF_VT_STRING) {
		gguf_str s;
		return cur_str(c, &s, what);
	}
	/* array */
	if (depth >= GGUF_MAX_NESTING)
		return herd_errf(c->err, c->errlen, HERD_E_UNSUPPORTED,
			       "%s: arrays nested deeper than %d levels at offset %zu", what,
			       GGUF_MAX_NESTING, c->pos);
	uint32_t et;
	uint64_t n;
	if ((rc = cur_u32(c, &et, what)) || (rc = cur_u64(c, &n, what)))
		return rc;
	const int esz = vtype_size(et);
	if (esz < 0)
		return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
			       "%s: unknown array element type %u at offset %zu", what, et,
			       c->pos - 12);
	if (esz > 0) {
		if ((rc = cur_check_count(c, n, (size_t)esz, what)))
			return rc;
		c->pos += (size_t)n * (size_t)esz;
		return 0;
	}
	if ((rc = cur_check_count(c, n, et == GGUF_VT_STRING ? 8 : 12, what)))
		return rc;
	for (uint64_t i = 0; i < n; i++)
		if ((rc = skip_value(c, et, depth + 1, what)))
			return rc;
	return 0;
}

static int str_cmp(gguf_str a, gguf_str b)
{
	const size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
	const int r = n ? memcmp(a.ptr, b.ptr, n) : 0;
	if (r)
		return r;
	return a.len < b.len ? -1 : a.len > b.len;
}

/* qsort_r comparators over index arrays. */
static int cmp_kv_idx(const void *a, const void *b, void *arg)
{
	const gguf_kv *kv = arg;
	return str_cmp(kv[*(const int64_t *)a].key, kv[*(const int64_t *)b].key);
}

static int cmp_t_idx(const void *a, const void *b, void *arg)
{
	const gguf_tensor *t = arg;
	return str_cmp(t[*(const int64_t *)a].name, t[*(const int64_t *)b].name);
}

static int64_t *sorted_index(int64_t n, int (*cmp)(const void *, const void *, void *),
			     void *arg)
{
	int64_t *idx = malloc(sizeof(*idx) * (size_t)(n ? n : 1));
	if (!idx)
		return NULL;
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, (size_t)n, sizeof(*idx), cmp, arg);
	return idx;
}

static int grow(void **arr, int64_t *cap, int64_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	int64_t nc = *cap ? *cap * 2 : 16;
	while (nc < need)
		nc *= 2;
	void *p = realloc(*arr, (size_t)nc * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = nc;
	return 0;
}

static int parse_kvs(gguf_ctx *ctx, cursor *c, uint64_t n_kv)
{
	int rc;
	int64_t cap = 0, cap_p = 0;
	char nb[96];
	for (uint64_t i = 0; i < n_kv; i++) {
		if ((rc = grow((void **)&ctx->kv, &cap, (int64_t)i + 1, sizeof(gguf_kv))) ||
		    (rc = grow((void **)&ctx->kvp, &cap_p, (int64_t)i + 1, sizeof(kv_priv))))
			return herd_errf(c->err, c->errlen, rc, "out of memory reading key/values");
		gguf_kv *kv = &ctx->kv[i];
		kv_priv *kp = &ctx->kvp[i];
		memset(kv, 0, sizeof(*kv));
		memset(kp, 0, sizeof(*kp));
		ctx->n_kv = (int64_t)i + 1;
		char what[160];
		snprintf(what, sizeof(what), "key/value #%llu", (unsigned long long)i);
		if ((rc = cur_str(c, &kv->key, what)))
			return rc;
		snprintf(what, sizeof(what), "key '%s'", safe_name(nb, sizeof(nb), kv->key));
		uint32_t t;
		if ((rc = cur_u32(c, &t, what)))
			return rc;
		if (vtype_size(t) < 0)
			return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
				       "%s: unknown value type %u at offset %zu", what, t, c->pos - 4);
		kv->type = (gguf_vtype)t;
		kp->val_off = c->pos;
		if (t == GGUF_VT_ARRAY) {
			if (c->pos > c->size || cur_left(c) < 12) {
				rc = cur_need(c, 12, what);
				return rc;
			}
			const uint32_t et = rd_u32(c->p + c->pos);
			const uint64_t n = rd_u64(c->p + c->pos + 4);
			if ((rc = skip_value(c, t, 0, what)))
				return rc;
			kv->arr_type = (gguf_vtype)et;
			kv->arr_n = n;
			kv->data = c->p + kp->val_off + 12;
			if (et == GGUF_VT_STRING) {
				/* validated above; index the elements */
				kp->strs = malloc(sizeof(gguf_str) * (size_t)(n ? n : 1));
				if (!kp->strs)
					return herd_errf(c->err, c->errlen, -ENOMEM,
						       "%s: out of memory indexing %llu strings", what,
						       (unsigned long long)n);
				size_t pos = kp->val_off + 12;
				for (uint64_t j = 0; j < n; j++) {
					kp->strs[j].len = rd_u64(c->p + pos);
					kp->strs[j].ptr = (const char *)c->p + pos + 8;
					pos += 8 + (size_t)kp->strs[j].len;
				}
			}
		} else {
			kv->data = c->p + c->pos;
			if ((rc = skip_value(c, t, 0, what)))
				return rc;
		}
		kp->val_len = c->pos - kp->val_off;
	}
	ctx->kv_sorted = sorted_index(ctx->n_kv, cmp_kv_idx, ctx->kv);
	if (!ctx->kv_sorted)
		return herd_errf(c->err, c->errlen, -ENOMEM, "out of memory");
	for (int64_t i = 1; i < ctx->n_kv; i++) {
		const gguf_str a = ctx->kv[ctx->kv_sorted[i - 1]].key;
		if (str_cmp(a, ctx->kv[ctx->kv_sorted[i]].key) == 0)
			return herd_errf(c->err, c->errlen, HERD_E_FORMAT, "duplicate key '%s'",
				       safe_name(nb, sizeof(nb), a));
	}
	return 0;
}

static int parse_alignment(gguf_ctx *ctx, char *err, size_t errlen)
{
	ctx->alignment = GGUF_DEFAULT_ALIGNMENT;
	const int64_t i = gguf_find_key(ctx, "general.alignment");
	if (i < 0)
		return 0;
	const gguf_kv *kv = &ctx->kv[i];
	if (kv->type != GGUF_VT_UINT32)
		return herd_errf(err, errlen, HERD_E_FORMAT,
			       "key 'general.alignment' has type %s, expected uint32",
			       vtype_name(kv->type));
	const uint32_t a = rd_u32(kv->data);
	/* GGUF requires a multiple of 8: below that, tensor data (fp16 scales,
	 * f32 values) would sit at misaligned addresses. */
	if (a < 8 || (a & (a - 1)) != 0)
		return herd_errf(err, errlen, HERD_E_FORMAT,
			       "general.alignment %u is not a power of two >= 8", a);
	ctx->alignment = a;
	return 0;
}

static int parse_tensors(gguf_ctx *ctx, cursor *c, uint64_t n_t)
{
	int rc;
	int64_t cap = 0;
	char nb[96];
	for (uint64_t i = 0; i < n_t; i++) {
		if ((rc = grow((void **)&ctx->tensors, &cap, (int64_t)i + 1, sizeof(gguf_tensor))))
			return herd_errf(c->err, c->errlen, rc, "out of memory reading tensor infos");
		gguf_tensor *t = &ctx->tensors[i];
		memset(t, 0, sizeof(*t));
		ctx->n_tensors = (int64_t)i + 1;
		char what[160];
		snprintf(what, sizeof(what), "tensor #%llu", (unsigned long long)i);
		if ((rc = cur_str(c, &t->name, what)))
			return rc;
		snprintf(what, sizeof(what), "tensor '%s'", safe_name(nb, sizeof(nb), t->name));
		uint32_t nd;
		if ((rc = cur_u32(c, &nd, what)))
			return rc;
		if (nd == 0 || nd > GGUF_MAX_DIMS)
			return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
				       "%s: n_dims %u is not in 1..%d", what, nd, GGUF_MAX_DIMS);
		t->n_dims = nd;
		int64_t nelem = 1;
		for (int d = 0; d < GGUF_MAX_DIMS; d++) {
			t->ne[d] = 1;
			if ((uint32_t)d >= nd)
				continue;
			uint64_t v;
			if ((rc = cur_u64(c, &v, what)))
				return rc;
			if (v == 0 || v > (uint64_t)INT64_MAX)
				return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
					       "%s: dimension %d is %lld (must be > 0)", what, d,
					       (long long)(int64_t)v);
			t->ne[d] = (int64_t)v;
			if (t->ne[d] > INT64_MAX / nelem)
				return herd_errf(c->err, c->errlen, HERD_E_RANGE,
					       "%s: element count overflows at dimension %d", what, d);
			nelem *= t->ne[d];
		}
		uint32_t ty;
		uint64_t off;
		if ((rc = cur_u32(c, &ty, what)) || (rc = cur_u64(c, &off, what)))
			return rc;
		const kern_type_traits *tt = kern_type_info((int)ty);
		if (!tt)
			return herd_errf(c->err, c->errlen, HERD_E_UNSUPPORTED,
				       "%s: unknown tensor type %u", what, ty);
		t->type = (kern_type)ty;
		if (t->ne[0] % tt->blck_size != 0)
			return herd_errf(c->err, c->errlen, HERD_E_FORMAT,
				       "%s: row length %lld is not a multiple of the %s block size %d",
				       what, (long long)t->ne[0], tt->name, tt->blck_size);
		const uint64_t nblocks = (uint64_t)(nelem / tt->blck_size);
		if (nblocks > SIZE_MAX / tt->type_size)
			return herd_errf(c->err, c->errlen, HERD_E_RANGE,
				       "%s: byte size overflows (%llu blocks of %zu bytes)", what,
				       (unsigned long long)nblocks, tt->type_size);
		t->size = (size_t)nblocks * tt->type_size;
		t->offset = off;
	}
	return 0;
}

static int finish_tensors(gguf_ctx *ctx, char *err, size_t errlen)
{
	char nb[96];
	const size_t a = ctx->alignment;
	for (int64_t i = 0; i < ctx->n_tensors; i++) {
		gguf_tensor *t = &ctx->tensors[i];
		const char *nm = safe_name(nb, sizeof(nb), t->name);
		if (t->offset % a != 0)
			return herd_errf(err, errlen, HERD_E_FORMAT,
				       "tensor '%s': data offset %llu is not a multiple of the alignment %zu",
				       nm, (unsigned long long)t->offset, a);
		/* the row-interleaved layouts come in whole groups of KERN_R rows */
		if (kern_type_is_r16(t->type) && (t->n_dims != 2 || t->ne[1] % KERN_R != 0))
			return herd_errf(err, errlen, HERD_E_FORMAT,
				       "tensor '%s': type %s needs a matrix of whole %d-row groups", nm,
				       kern_type_name(t->type), KERN_R);
		const size_t avail = ctx->size - ctx->data_offset;
		if (ctx->data_offset > ctx->size || t->offset > avail || t->size > avail - t->offset)
			return herd_errf(err, errlen, HERD_E_TRUNCATED,
				       "tensor '%s': data [offset %llu, size %zu] extends past end of file "
				       "(%zu bytes, data section at %zu)",
				       nm, (unsigned long long)t->offset, t->size, ctx->size,
				       ctx->data_offset);
		t->data = ctx->base + ctx->data_offset + t->offset;
	}
	ctx->t_sorted = sorted_index(ctx->n_tensors, cmp_t_idx, ctx->tensors);
	if (!ctx->t_sorted)
		return herd_errf(err, errlen, -ENOMEM, "out of memory");
	for (int64_t i = 1; i < ctx->n_tensors; i++) {
		const gguf_str x = ctx->tensors[ctx->t_sorted[i - 1]].name;
		if (str_cmp(x, ctx->tensors[ctx->t_sorted[i]].name) == 0)
			return herd_errf(err, errlen, HERD_E_FORMAT, "duplicate tensor name '%s'",
				       safe_name(nb, sizeof(nb), x));
	}
	return 0;
}

static int parse(gguf_ctx *ctx, char *err, size_t errlen)
{
	int rc;
	cursor c = {.p = ctx->base, .size = ctx->size, .pos = 0, .err = err, .errlen = errlen};
	if (ctx->size < GGUF_HEADER_SIZE) {
		if (ctx->size >= 4 && rd_u32(ctx->base) != GGUF_MAGIC)
			goto bad_magic;
		return herd_errf(err, errlen, HERD_E_TRUNCATED,
			       "truncated: file is %zu bytes, shorter than the %d-byte GGUF header",
			       ctx->size, GGUF_HEADER_SIZE);
	}
	if (rd_u32(ctx->base) != GGUF_MAGIC)
		goto bad_magic;
	ctx->version = rd_u32(ctx->base + 4);
	if (ctx->version == 1)
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
			       "GGUF version 1 is not supported (only 2 and 3)");
	if (ctx->version < 2 || ctx->version > 3)
		return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
			       "unsupported GGUF version %u (only 2 and 3; a big-endian file?)",
			       ctx->version);
	const uint64_t n_t = rd_u64(ctx->base + 8), n_kv = rd_u64(ctx->base + 16);
	c.pos = GGUF_HEADER_SIZE;
	if ((rc = cur_check_count(&c, n_kv, GGUF_MIN_KV_SIZE, "key/value count")))
		return rc;
	if ((rc = cur_check_count(&c, n_t, GGUF_MIN_TENSOR_SIZE, "tensor count")))
		return rc;
	if ((rc = parse_kvs(ctx, &c, n_kv)) || (rc = parse_alignment(ctx, err, errlen)))
		return rc;
	if ((rc = cur_check_count(&c, n_t, GGUF_MIN_TENSOR_SIZE, "tensor count")) ||
	    (rc = parse_tensors(ctx, &c, n_t)))
		return rc;
	/* data section: next multiple of the alignment (may be the end of a
	 * tensor-less file, or beyond it, then clamped) */
	const size_t a = ctx->alignment;
	const size_t pad = (a - c.pos % a) % a;
	if (pad > SIZE_MAX - c.pos)
		return herd_errf(err, errlen, HERD_E_RANGE, "data section offset overflows");
	ctx->data_offset = c.pos + pad;
	if (ctx->n_tensors == 0 && ctx->data_offset > ctx->size)
		ctx->data_offset = ctx->size;
	return finish_tensors(ctx, err, errlen);
bad_magic:
	return herd_errf(err, errlen, HERD_E_FORMAT,
		       "bad magic 0x%08x: not a GGUF file (expected 0x%08x \"GGUF\")",
		       rd_u32(ctx->base), GGUF_MAGIC);
}

void gguf_close(gguf_ctx *ctx)
{
	if (!ctx)
		return;
	for (int64_t i = 0; i < ctx->n_kv; i++)
		free(ctx->kvp[i].strs);
	free(ctx->kv);
	free(ctx->kvp);
	free(ctx->kv_sorted);
	free(ctx->tensors);
	free(ctx->t_sorted);
	if (ctx->mapped && ctx->size > 0)
		munmap((void *)ctx->base, ctx->size);
	free(ctx);
}

int gguf_open_mem(gguf_ctx **out, const void *buf, size_t size, char *err, size_t errlen)
{
	int rc;
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!buf && size > 0)
		return herd_errf(err, errlen, HERD_E_INVAL, "NULL buffer");
	gguf_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return herd_errf(err, errlen, -ENOMEM, "out of memory");
	static const uint8_t empty[1];
	ctx->base = buf ? buf : empty;
	ctx->size = size;
	if ((rc = parse(ctx, err, errlen)))
		goto fail;
	*out = ctx;
	return 0;
fail:
	gguf_close(ctx);
	return rc;
}

/* The row-interleaved types are herd's in-memory image layout: a file that
 * claims one is not a GGUF any tool writes. */
static int reject_image_types(const gguf_ctx *ctx, char *err, size_t errlen)
{
	char nb[96];
	for (int64_t i = 0; i < ctx->n_tensors; i++)
		if (kern_type_is_r16(ctx->tensors[i].type))
			return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
				       "tensor '%s' has herd's image-only type %s, not a file type",
				       safe_name(nb, sizeof(nb), ctx->tensors[i].name),
				       kern_type_name(ctx->tensors[i].type));
	return 0;
}

int gguf_open(gguf_ctx **out, const char *path, char *err, size_t errlen)
{
	int rc, fd = -1;
	void *map = NULL;
	size_t size = 0;
	gguf_ctx *ctx = NULL;
	char msg[512] = "";
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "cannot open: %s", strerror(errno));
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "cannot stat: %s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = HERD_E_INVAL;
		snprintf(msg, sizeof(msg), "not a regular file");
		goto fail;
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		rc = HERD_E_RANGE;
		snprintf(msg, sizeof(msg), "file too large");
		goto fail;
	}
	size = (size_t)st.st_size;
	if (size > 0) {
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			map = NULL;
			rc = -errno;
			snprintf(msg, sizeof(msg), "cannot mmap %zu bytes: %s", size,
				 strerror(errno));
			goto fail;
		}
	}
	close(fd);
	fd = -1;
	rc = gguf_open_mem(&ctx, map, size, msg, sizeof(msg));
	if (rc)
		goto fail;
	ctx->mapped = map != NULL;
	map = NULL; /* ctx owns it now */
	if ((rc = reject_image_types(ctx, msg, sizeof(msg))))
		goto fail;
	*out = ctx;
	return 0;
fail:
	herd_errf(err, errlen, rc, "%s: %s", path, msg);
	if (ctx)
		gguf_close(ctx);
	if (map)
		munmap(map, size);
	if (fd >= 0)
		close(fd);
	return rc;
}

uint32_t gguf_version(const gguf_ctx *ctx)
{
	return ctx->version;
}

size_t gguf_alignment(const gguf_ctx *ctx)
{
	return ctx->alignment;
}

size_t gguf_data_offset(const gguf_ctx *ctx)
{
	return ctx->data_offset;
}

const void *gguf_base(const gguf_ctx *ctx)
{
	return ctx->base;
}

size_t gguf_size(const gguf_ctx *ctx)
{
	return ctx->size;
}

int64_t gguf_n_kv(const gguf_ctx *ctx)
{
	return ctx->n_kv;
}

const gguf_kv *gguf_kv_at(const gguf_ctx *ctx, int64_t i)
{
	return (i >= 0 && i < ctx->n_kv) ? &ctx->kv[i] : NULL;
}

int64_t gguf_find_key(const gguf_ctx *ctx, const char *key)
{
	const gguf_str k = {key, strlen(key)};
	int64_t lo = 0, hi = ctx->n_kv;
	while (lo < hi) {
		const int64_t mid = lo + (hi - lo) / 2;
		const int r = str_cmp(ctx->kv[ctx->kv_sorted[mid]].key, k);
		if (r == 0)
			return ctx->kv_sorted[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int find_kv(const gguf_ctx *ctx, const char *key, const gguf_kv **kv)
{
	const int64_t i = gguf_find_key(ctx, key);
	if (i < 0)
		return HERD_E_MISSING;
	*kv = &ctx->kv[i];
	return 0;
}

int gguf_get_int(const gguf_ctx *ctx, const char *key, int64_t *out)
{
	const gguf_kv *kv;
	int rc = find_kv(ctx, key, &kv);
	if (rc)
		return rc;
	const uint8_t *p = kv->data;
	switch (kv->type) {
	case GGUF_VT_UINT8: *out = p[0]; return 0;
	case GGUF_VT_INT8: *out = (int8_t)p[0]; return 0;
	case GGUF_VT_UINT16: {
		uint16_t v;
		memcpy(&v, p, 2);
		*out = v;
		return 0;
	}
	case GGUF_VT_INT16: {
		int16_t v;
		memcpy(&v, p, 2);
		*out = v;
		return 0;
	}
	case GGUF_VT_UINT32: *out = rd_u32(p); return 0;
	case GGUF_VT_INT32: *out = (int32_t)rd_u32(p); return 0;
	case GGUF_VT_INT64: *out = (int64_t)rd_u64(p); return 0;
	case GGUF_VT_UINT64: {
		const uint64_t v = rd_u64(p);
		if (v > (uint64_t)INT64_MAX)
			return HERD_E_RANGE;
		*out = (int64_t)v;
		return 0;
	}
	default: return HERD_E_FORMAT;
	}
}

int gguf_get_float(const gguf_ctx *ctx, const char *key, double *out)
{
	const gguf_kv *kv;
	int rc = find_kv(ctx, key, &kv);
	if (rc)
		return rc;
	if (kv->type == GGUF_VT_FLOAT32) {
		float f;
		memcpy(&f, kv->data, 4);
		*out = f;
		return 0;
	}
	if (kv->type == GGUF_VT_FLOAT64) {
		memcpy(out, kv->data, 8);
		return 0;
	}
	return HERD_E_FORMAT;
}

int gguf_get_bool(const gguf_ctx *ctx, const char *key, int *out)
{
	const gguf_kv *kv;
	int rc = find_kv(ctx, key, &kv);
	if (rc)
		return rc;
	if (kv->type != GGUF_VT_BOOL)
		return HERD_E_FORMAT;
	*out = *(const uint8_t *)kv->data != 0;
	return 0;
}

int gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out)
{
	const gguf_kv *kv;
	int rc = find_kv(ctx, key, &kv);
	if (rc)
		return rc;
	if (kv->type != GGUF_VT_STRING)
		return HERD_E_FORMAT;
	const uint8_t *p = kv->data;
	out->len = rd_u64(p);
	out->ptr = (const char *)p + 8;
	return 0;
}

int gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_vtype *type, uint64_t *n,
		 const void **data)
{
	const gguf_kv *kv;
	int rc = find_kv(ctx, key, &kv);
	if (rc)
		return rc;
	if (kv->type != GGUF_VT_ARRAY)
		return HERD_E_FORMAT;
	*type = kv->arr_type;
	*n = kv->arr_n;
	*data = kv->data;
	return 0;
}

int gguf_get_arr_str(const gguf_ctx *ctx, const char *key, uint64_t i, gguf_str *out)
{
	const int64_t k = gguf_find_key(ctx, key);
	if (k < 0)
		return HERD_E_MISSING;
	const gguf_kv *kv = &ctx->kv[k];
	if (kv->type != GGUF_VT_ARRAY || kv->arr_type != GGUF_VT_STRING)
		return HERD_E_FORMAT;
	if (i >= kv->arr_n)
		return HERD_E_RANGE;
	*out = ctx->kvp[k].strs[i];
	return 0;
}

int64_t gguf_n_tensors(const gguf_ctx *ctx)
{
	return ctx->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, int64_t i)
{
	return (i >= 0 && i < ctx->n_tensors) ? &ctx->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name)
{
	const gguf_str k = {name, strlen(name)};
	int64_t lo = 0, hi = ctx->n_tensors;
	while (lo < hi) {
		const int64_t mid = lo + (hi - lo) / 2;
		const gguf_tensor *t = &ctx->tensors[ctx->t_sorted[mid]];
		const int r = str_cmp(t->name, k);
		if (r == 0)
			return t;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ---- writer ---------------------------------------------------------- */

typedef struct wkv {
	char *key;
	uint32_t type;
	uint8_t *val; /* serialized value as in the file (after the type tag) */
	size_t val_len;
} wkv;

typedef struct wtensor {
	char *name;
	kern_type type;
	uint32_t n_dims;
	int64_t ne[GGUF_MAX_DIMS];
	const void *data;
	gguf_fill_fn fill;
	void *user;
	size_t size;
	uint64_t offset;
} wtensor;

struct gguf_writer {
	wkv *kv;
	int64_t n_kv, cap_kv;
	wtensor *t;
	int64_t n_t, cap_t;
};

int gguf_writer_create(gguf_writer **out)
{
	*out = calloc(1, sizeof(gguf_writer));
	return *out ? 0 : -ENOMEM;
}

void gguf_writer_destroy(gguf_writer *w)
{
	if (!w)
		return;
	for (int64_t i = 0; i < w->n_kv; i++) {
		free(w->kv[i].key);
		free(w->kv[i].val);
	}
	for (int64_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->kv);
	free(w->t);
	free(w);
}

/* Takes ownership of val (freed on failure too). */
static int writer_put(gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
		      size_t val_len)
{
	int rc;
	if (!key) {
		free(val);
		return HERD_E_INVAL;
	}
	for (int64_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, key) == 0) {
			free(w->kv[i].val);
			w->kv[i].type = type;
			w->kv[i].val = val;
			w->kv[i].val_len = val_len;
			return 0;
		}
	}
	if ((rc = grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof(wkv))))
		goto fail;
	char *k = strdup(key);
	if (!k) {
		rc = -ENOMEM;
		goto fail;
	}
	w->kv[w->n_kv++] = (wkv){k, type, val, val_len};
	return 0;
fail:
	free(val);
	return rc;
}

static int writer_put_scalar(gguf_writer *w, const char *key, uint32_t type, const void *v,
			     size_t n)
{
	uint8_t *val = malloc(n);
	if (!val)
		return -ENOMEM;
	memcpy(val, v, n);
	return writer_put(w, key, type, val, n);
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
	return writer_put_scalar(w, key, GGUF_VT_UINT32, &v, 4);
}

int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
	return writer_put_scalar(w, key, GGUF_VT_INT32, &v, 4);
}

int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v)
{
	return writer_put_scalar(w, key, GGUF_VT_UINT64, &v, 8);
}

int gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
	return writer_put_scalar(w, key, GGUF_VT_FLOAT32, &v, 4);
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, int v)
{
	const uint8_t b = v != 0;
	return writer_put_scalar(w, key, GGUF_VT_BOOL, &b, 1);
}

int gguf_writer_set_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v)
{
	const int esz = vtype_size((uint32_t)type);
	if (esz <= 0 || !v)
		return HERD_E_INVAL;
	return writer_put_scalar(w, key, (uint32_t)type, v, (size_t)esz);
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
	if (!v)
		return HERD_E_INVAL;
	const uint64_t len = strlen(v);
	uint8_t *val = malloc(8 + (size_t)len);
	if (!val)
		return -ENOMEM;
	memcpy(val, &len, 8);
	memcpy(val + 8, v, (size_t)len);
	return writer_put(w, key, GGUF_VT_STRING, val, 8 + (size_t)len);
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype type, const void *data,
			uint64_t n)
{
	const int esz = vtype_size((uint32_t)type);
	if (esz <= 0 || (n > 0 && !data) || n > (SIZE_MAX - 12) / (size_t)esz)
		return HERD_E_INVAL;
	const size_t bytes = (size_t)n * (size_t)esz;
	uint8_t *val = malloc(12 + bytes);
	if (!val)
		return -ENOMEM;
	const uint32_t et = (uint32_t)type;
	memcpy(val, &et, 4);
	memcpy(val + 4, &n, 8);
	if (bytes)
		memcpy(val + 12, data, bytes);
	return writer_put(w, key, GGUF_VT_ARRAY, val, 12 + bytes);
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const gguf_str *v, uint64_t n)
{
	size_t total = 12;
	if (n > 0 && !v)
		return HERD_E_INVAL;
	for (uint64_t i = 0; i < n; i++) {
		if (v[i].len > 0 && !v[i].ptr)
			return HERD_E_INVAL;
		if (v[i].len > SIZE_MAX - total - 8)
			return HERD_E_RANGE;
		total += 8 + (size_t)v[i].len;
	}
	uint8_t *val = malloc(total);
	if (!val)
		return -ENOMEM;
	const uint32_t et = GGUF_VT_STRING;
	memcpy(val, &et, 4);
	memcpy(val + 4, &n, 8);
	size_t pos = 12;
	for (uint64_t i = 0; i < n; i++) {
		memcpy(val + pos, &v[i].len, 8);
		if (v[i].len)
			memcpy(val + pos + 8, v[i].ptr, (size_t)v[i].len);
		pos += 8 + (size_t)v[i].len;
	}
	return writer_put(w, key, GGUF_VT_ARRAY, val, total);
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i)
{
	if (i < 0 || i >= src->n_kv)
		return HERD_E_RANGE;
	const gguf_kv *kv = &src->kv[i];
	const kv_priv *kp = &src->kvp[i];
	if (memchr(kv->key.ptr, '\0', (size_t)kv->key.len))
		return HERD_E_FORMAT; /* key with an embedded NUL cannot be named in C */
	char *key = malloc((size_t)kv->key.len + 1);
	uint8_t *val = malloc(kp->val_len ? kp->val_len : 1);
	if (!key || !val) {
		free(key);
		free(val);
		return -ENOMEM;
	}
	memcpy(key, kv->key.ptr, (size_t)kv->key.len);
	key[kv->key.len] = '\0';
	memcpy(val, src->base + kp->val_off, kp->val_len);
	const int rc = writer_put(w, key, (uint32_t)kv->type, val, kp->val_len);
	free(key);
	return rc;
}

static int writer_add(gguf_writer *w, const char *name, kern_type type, uint32_t n_dims,
		      const int64_t *ne, const void *data, gguf_fill_fn fill, void *user)
{
	int rc;
	const kern_type_traits *tt = kern_type_info((int)type);
	if (!name || !ne || !tt || n_dims == 0 || n_dims > GGUF_MAX_DIMS || (!data && !fill))
		return HERD_E_INVAL;
	if (strlen(name) >= GGUF_MAX_NAME)
		return HERD_E_RANGE;
	int64_t nelem = 1;
	for (uint32_t d = 0; d < n_dims; d++) {
		if (ne[d] <= 0)
			return HERD_E_INVAL;
		if (ne[d] > INT64_MAX / nelem)
			return HERD_E_RANGE;
		nelem *= ne[d];
	}
	if (ne[0] % tt->blck_size != 0)
		return HERD_E_INVAL;
	const uint64_t nblocks = (uint64_t)(nelem / tt->blck_size);
	if (nblocks > (SIZE_MAX / 2) / tt->type_size)
		return HERD_E_RANGE;
	for (int64_t i = 0; i < w->n_t; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return HERD_E_INVAL;
	if ((rc = grow((void **)&w->t, &w->cap_t, w->n_t + 1, sizeof(wtensor))))
		return rc;
	wtensor *t = &w->t[w->n_t];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (!t->name)
		return -ENOMEM;
	t->type = type;
	t->n_dims = n_dims;
	for (int d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
	t->data = data;
	t->fill = fill;
	t->user = user;
	t->size = (size_t)nblocks * tt->type_size;
	w->n_t++;
	return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, kern_type type, uint32_t n_dims,
			   const int64_t *ne, const void *data)
{
	if (!data)
		return HERD_E_INVAL;
	return writer_add(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, kern_type type,
				uint32_t n_dims, const int64_t *ne, gguf_fill_fn fill, void *user)
{
	if (!fill)
		return HERD_E_INVAL;
	return writer_add(w, name, type, n_dims, ne, NULL, fill, user);
}

/* Buffered output to a file descriptor. */
typedef struct wbuf {
	int fd;
	uint8_t *buf;
	size_t len, cap;
	uint64_t written; /* bytes passed to wbuf_put so far */
} wbuf;

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		const ssize_t r = write(fd, b, n > (1u << 30) ? (1u << 30) : n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int wbuf_flush(wbuf *b)
{
	const int rc = write_all(b->fd, b->buf, b->len);
	b->len = 0;
	return rc;
}

static int wbuf_put(wbuf *b, const void *p, size_t n)
{
	int rc;
	b->written += n;
	if (n > b->cap - b->len) {
		if ((rc = wbuf_flush(b)))
			return rc;
		if (n >= b->cap)
			return write_all(b->fd, p, n);
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
	return 0;
}

static int wbuf_pad(wbuf *b, size_t align)
{
	static const uint8_t zeros[256];
	size_t pad = (size_t)((align - b->written % align) % align);
	while (pad > 0) {
		const size_t n = pad < sizeof(zeros) ? pad : sizeof(zeros);
		const int rc = wbuf_put(b, zeros, n);
		if (rc)
			return rc;
		pad -= n;
	}
	return 0;
}

static int wbuf_str(wbuf *b, const char *s)
{
	const uint64_t len = strlen(s);
	int rc = wbuf_put(b, &len, 8);
	return rc ? rc : wbuf_put(b, s, (size_t)len);
}

static size_t align_up(size_t x, size_t a)
{
	return (x + a - 1) / a * a;
}

#define GGUF_WRITE_VERSION 3        /* the GGUF version herd writes */
#define GGUF_WRITE_BUF (1u << 20)    /* output buffer, bytes */
#define GGUF_FILE_MODE 0644

/* *align = general.alignment when the writer has it (the last one wins;
 * each must be a uint32 power of two), else GGUF_DEFAULT_ALIGNMENT. */
static int writer_alignment(const gguf_writer *w, const char *path, size_t *align, char *err,
			    size_t errlen)
{
	*align = GGUF_DEFAULT_ALIGNMENT;
	for (int64_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, "general.alignment") != 0)
			continue;
		uint32_t a = 0;
		if (w->kv[i].type == GGUF_VT_UINT32)
			memcpy(&a, w->kv[i].val, 4);
		if (a < 8 || (a & (a - 1)) != 0)
			return herd_errf(err, errlen, HERD_E_INVAL,
				       "%s: general.alignment must be a uint32 power of two >= 8", path);
		*align = a;
	}
	return 0;
}

/* Gives each tensor its offset in the data section; returns the file's
 * total size in bytes (header and tensor infos, padding, data). */
static size_t writer_layout(gguf_writer *w, size_t align)
{
	size_t off = 0, header = GGUF_HEADER_SIZE;
	for (int64_t i = 0; i < w->n_kv; i++)
		header += 8 + strlen(w->kv[i].key) + 4 + w->kv[i].val_len;
	for (int64_t i = 0; i < w->n_t; i++) {
		wtensor *t = &w->t[i];
		header += 8 + strlen(t->name) + 4 + 8 * (size_t)t->n_dims + 4 + 8;
		t->offset = off;
		off = align_up(off + t->size, align);
	}
	return align_up(header, align) + off;
}

/* Creates the temporary file path.tmp.XXXXXX beside path (mode 0644) with
 * total bytes reserved, so ENOSPC shows before the long write. On success
 * *tmp (caller frees) and *fd are set; on failure *tmp is set only while
 * the file exists (the caller unlinks and frees it) and *fd only while open. */
static int create_temp(const char *path, size_t total, char **tmp, int *fd, char *err,
		       size_t errlen)
{
	const size_t plen = strlen(path), cap = plen + 16;
	char *name = malloc(cap);
	if (!name)
		return herd_errf(err, errlen, -ENOMEM, "%s: out of memory", path);
	snprintf(name, cap, "%s.tmp.XXXXXX", path);
	*fd = mkstemp(name);
	if (*fd < 0) {
		const int rc = -errno;
		herd_errf(err, errlen, rc, "%s: cannot create temporary file %s: %s", path, name,
			strerror(errno));
		free(name);
		return rc;
	}
	*tmp = name;
	if (fchmod(*fd, GGUF_FILE_MODE) != 0) {
		const int rc = -errno;
		return herd_errf(err, errlen, rc, "%s: chmod %s: %s", path, name, strerror(errno));
	}
	if (total > 0 && fallocate(*fd, 0, 0, (off_t)total) != 0 && errno != EOPNOTSUPP &&
	    errno != ENOSYS) {
		const int rc = -errno;
		return herd_errf(err, errlen, rc, "%s: cannot reserve %zu bytes: %s", path, total,
			       strerror(errno));
	}
	return 0;
}

/* rc, with the message for a failed write of the temporary file. */
static int write_failed(char *err, size_t errlen, int rc, const char *path, const char *tmp)
{
	return herd_errf(err, errlen, rc, "%s: writing %s failed: %s", path, tmp, herd_strerror(rc));
}

/* Magic, version, counts, key/values and tensor infos, padded to align.
 * 0 or -errno. */
static int write_header(wbuf *b, const gguf_writer *w, size_t align)
{
	const uint32_t magic = GGUF_MAGIC, version = GGUF_WRITE_VERSION;
	const uint64_t n_t = (uint64_t)w->n_t, n_kv = (uint64_t)w->n_kv;
	int rc;
	if ((rc = wbuf_put(b, &magic, 4)) || (rc = wbuf_put(b, &version, 4)) ||
	    (rc = wbuf_put(b, &n_t, 8)) || (rc = wbuf_put(b, &n_kv, 8)))
		return rc;
	for (int64_t i = 0; i < w->n_kv; i++) {
		const wkv *kv = &w->kv[i];
		if ((rc = wbuf_str(b, kv->key)) || (rc = wbuf_put(b, &kv->type, 4)) ||
		    (rc = wbuf_put(b, kv->val, kv->val_len)))
			return rc;
	}
	for (int64_t i = 0; i < w->n_t; i++) {
		const wtensor *t = &w->t[i];
		const uint32_t ty = (uint32_t)t->type;
		if ((rc = wbuf_str(b, t->name)) || (rc = wbuf_put(b, &t->n_dims, 4)) ||
		    (rc = wbuf_put(b, t->ne, 8 * (size_t)t->n_dims)) ||
		    (rc = wbuf_put(b, &ty, 4)) || (rc = wbuf_put(b, &t->offset, 8)))
			return rc;
	}
	return wbuf_pad(b, align);
}

/* Every tensor's bytes, each padded to align; a generated tensor is filled
 * into a buffer of its size first. Sets err on failure. */
static int write_data(wbuf *b, const gguf_writer *w, size_t align, const char *path,
		      const char *tmp, char *err, size_t errlen)
{
	for (int64_t i = 0; i < w->n_t; i++) {
		const wtensor *t = &w->t[i];
		void *tbuf = NULL;
		int rc;
		if (t->fill) {
			if (!(tbuf = malloc(t->size)))
				return herd_errf(err, errlen, -ENOMEM,
					       "%s: out of memory for tensor '%s' (%zu bytes)", path,
					       t->name, t->size);
			if ((rc = t->fill(t->user, tbuf, t->size))) {
				free(tbuf);
				return herd_errf(err, errlen, rc, "%s: generating tensor '%s' failed: %s",
					       path, t->name, herd_strerror(rc));
			}
		}
		rc = wbuf_put(b, tbuf ? tbuf : t->data, t->size);
		if (!rc)
			rc = wbuf_pad(b, align);
		free(tbuf);
		if (rc)
			return write_failed(err, errlen, rc, path, tmp);
	}
	return 0;
}

/* Flushes, syncs and closes the temporary file (*fd = -1 once closed) and
 * renames it into place. Sets err on failure. */
static int commit_file(wbuf *b, int *fd, const char *tmp, const char *path, char *err,
		       size_t errlen)
{
	int rc;
	if ((rc = wbuf_flush(b)))
		return write_failed(err, errlen, rc, path, tmp);
	if (fsync(*fd) != 0)
		return write_failed(err, errlen, -errno, path, tmp);
	rc = close(*fd) != 0 ? -errno : 0;
	*fd = -1;
	if (rc)
		return write_failed(err, errlen, rc, path, tmp);
	if (rename(tmp, path) != 0) {
		rc = -errno;
		return herd_errf(err, errlen, rc, "%s: cannot rename %s into place: %s", path, tmp,
			       strerror(errno));
	}
	return 0;
}

/* Makes the rename of path durable: fsync of its directory (best effort). */
static void sync_parent_dir(const char *path)
{
	char *dir = strdup(path);
	if (!dir)
		return;
	char *slash = strrchr(dir, '/');
	const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
	const int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dir);
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen)
{
	int rc = 0, fd = -1;
	char *tmp = NULL;
	wbuf b = {.fd = -1};
	size_t align;
	if (err && errlen)
		err[0] = '\0';
	if (!w || !path)
		return herd_errf(err, errlen, HERD_E_INVAL, "gguf writer: NULL argument");
	if ((rc = writer_alignment(w, path, &align, err, errlen)))
		return rc;
	const size_t total = writer_layout(w, align);

	if ((rc = create_temp(path, total, &tmp, &fd, err, errlen)))
		goto fail;
	b.fd = fd;
	b.cap = GGUF_WRITE_BUF;
	b.buf = malloc(b.cap);
	if (!b.buf) {
		rc = herd_errf(err, errlen, -ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	if ((rc = write_header(&b, w, align))) {
		write_failed(err, errlen, rc, path, tmp);
		goto fail;
	}
	if ((rc = write_data(&b, w, align, path, tmp, err, errlen)) ||
	    (rc = commit_file(&b, &fd, tmp, path, err, errlen)))
		goto fail;
	sync_parent_dir(path);
	free(b.buf);
	free(tmp);
	return 0;
fail:
	free(b.buf);
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	return rc;
}
