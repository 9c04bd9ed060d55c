/* GGUF reader/writer: round trip of every value type and several tensor
 * types, v2 files, nested arrays, one test per validation rule, truncation
 * and byte-mutation sweeps (run under ASan/UBSan: every open must fail
 * cleanly or succeed, never read out of bounds), writer failure cleanup, and
 * the llama.cpp fixtures when HERD_FIXTURES points at them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "model/gguf.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

/* ---- helpers --------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(void *buf, size_t n, uint64_t seed)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rng_next(&seed);
}

static char *tmp_dir(void)
{
	char *d = strdup("/tmp/herd_test_gguf.XXXXXX");
	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_dir(char *d)
{
	DIR *dir = opendir(d);
	if (dir) {
		struct dirent *e;
		while ((e = readdir(dir))) {
			if (e->d_name[0] == '.')
				continue;
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
			unlink(p);
		}
		closedir(dir);
	}
	rmdir(d);
	free(d);
}

static int count_entries(const char *d)
{
	int n = 0;
	DIR *dir = opendir(d);
	assert_non_null(dir);
	struct dirent *e;
	while ((e = readdir(dir)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(dir);
	return n;
}

static uint8_t *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	const long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*size = (size_t)n;
	return buf;
}

/* Opens an exact-size heap copy of buf[0..n) so ASan sees any overread. */
static int open_copy(const uint8_t *buf, size_t n, char *err, size_t errlen)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n)
		memcpy(copy, buf, n);
	gguf_ctx *ctx = NULL;
	const int rc = gguf_open_mem(&ctx, copy, n, err, errlen);
	if (rc == 0) {
		/* touch everything the reader hands out */
		volatile uint8_t sink = 0;
		for (int64_t i = 0; i < gguf_n_kv(ctx); i++) {
			const gguf_kv *kv = gguf_kv_at(ctx, i);
			if (kv->key.len)
				sink ^= (uint8_t)kv->key.ptr[kv->key.len - 1];
		}
		for (int64_t i = 0; i < gguf_n_tensors(ctx); i++) {
			const gguf_tensor *t = gguf_tensor_at(ctx, i);
			sink ^= ((const uint8_t *)t->data)[0];
			sink ^= ((const uint8_t *)t->data)[t->size - 1];
		}
		(void)sink;
	} else {
		assert_null(ctx);
		assert_true(rc < 0);
		if (err && errlen)
			assert_true(err[0] != '\0');
	}
	gguf_close(ctx);
	free(copy);
	return rc;
}

/* ---- hand-built files (for what the writer will not produce) ---------- */

typedef struct gbuf {
	uint8_t *p;
	size_t n, cap;
} gbuf;

static void gb_put(gbuf *b, const void *v, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, v, n);
	b->n += n;
}

static void gb_u32(gbuf *b, uint32_t v)
{
	gb_put(b, &v, 4);
}

static void gb_u64(gbuf *b, uint64_t v)
{
	gb_put(b, &v, 8);
}

static void gb_str(gbuf *b, const char *s)
{
	gb_u64(b, strlen(s));
	gb_put(b, s, strlen(s));
}

static void gb_pad(gbuf *b, size_t a)
{
	static const uint8_t z[256];
	while (b->n % a)
		gb_put(b, z, 1);
}

static void gb_header(gbuf *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
	gb_u32(b, GGUF_MAGIC);
	gb_u32(b, version);
	gb_u64(b, n_t);
	gb_u64(b, n_kv);
}

static void gb_kv_u32(gbuf *b, const char *key, uint32_t v)
{
	gb_str(b, key);
	gb_u32(b, GGUF_VT_UINT32);
	gb_u32(b, v);
}

static void gb_tensor(gbuf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		      uint32_t type, uint64_t off)
{
	gb_str(b, name);
	gb_u32(b, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		gb_u64(b, ne[i]);
	gb_u32(b, type);
	gb_u64(b, off);
}

/* A file with one kv and one F32 tensor of ne (n_dims) at off, plus data. */
static void gb_one_tensor(gbuf *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
			  uint64_t off, size_t data_bytes)
{
	gb_header(b, 3, 1, 1);
	gb_kv_u32(b, "a.b", 7);
	gb_tensor(b, "t", n_dims, ne, type, off);
	gb_pad(b, 32);
	uint8_t *z = calloc(1, data_bytes + 1);
	gb_put(b, z, data_bytes);
	free(z);
}

static int open_gb(gbuf *b, char *err, size_t errlen)
{
	const int rc = open_copy(b->p, b->n, err, errlen);
	free(b->p);
	*b = (gbuf){0};
	return rc;
}

/* ---- the writer's full round trip ------------------------------------ */

typedef struct fill_ctx {
	uint64_t seed;
	int calls;
} fill_ctx;

static int fill_cb(void *user, void *buf, size_t size)
{
	fill_ctx *f = user;
	f->calls++;
	fill_random(buf, size, f->seed);
	return 0;
}

static int fill_fail(void *user, void *buf, size_t size)
{
	(void)user;
	(void)buf;
	(void)size;
	return HERD_E_CANCELLED;
}

enum { N_TENSORS = 6 };
static const struct {
	const char *name;
	kern_type type;
	uint32_t n_dims;
	int64_t ne[4];
} tensor_spec[N_TENSORS] = {
	{"token_embd.weight", KERN_TYPE_Q4_0, 2, {64, 10, 1, 1}},
	{"blk.0.attn_norm.weight", KERN_TYPE_F32, 1, {3, 1, 1, 1}},
	{"blk.0.ffn_down.weight", KERN_TYPE_Q6_K, 2, {256, 3, 1, 1}},
	{"f16.4d", KERN_TYPE_F16, 4, {5, 3, 2, 2}},
	{"q8", KERN_TYPE_Q8_0, 3, {32, 2, 3, 1}},
	{"bf16", KERN_TYPE_BF16, 2, {7, 1, 1, 1}},
};

static size_t spec_size(int i)
{
	int64_t n = 1;
	for (uint32_t d = 1; d < tensor_spec[i].n_dims; d++)
		n *= tensor_spec[i].ne[d];
	return kern_row_size(tensor_spec[i].type, tensor_spec[i].ne[0]) * (size_t)n;
}

static const char *const arr_strs[] = {"", "hello", "wörld ▁x", "<0x0A>"};

/* Scalar key/values of every type (and one replaced key). */
static void writer_set_scalars(gguf_writer *w)
{
	const uint8_t u8 = 200;
	const int8_t i8 = -100;
	const uint16_t u16 = 60000;
	const int16_t i16 = -30000;
	const int64_t i64 = -1234567890123ll;
	const double f64 = 3.25e100;
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.u8", GGUF_VT_UINT8, &u8), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.i8", GGUF_VT_INT8, &i8), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.u16", GGUF_VT_UINT16, &u16), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.i16", GGUF_VT_INT16, &i16), 0);
	assert_int_equal(gguf_writer_set_u32(w, "v.u32", 4000000000u), 0);
	assert_int_equal(gguf_writer_set_i32(w, "v.i32", -2000000000), 0);
	assert_int_equal(gguf_writer_set_f32(w, "v.f32", 1.5f), 0);
	assert_int_equal(gguf_writer_set_bool(w, "v.bool", 1), 0);
	assert_int_equal(gguf_writer_set_str(w, "v.str", "café ▁"), 0);
	assert_int_equal(gguf_writer_set_str(w, "v.empty", ""), 0);
	assert_int_equal(gguf_writer_set_u64(w, "v.u64", UINT64_MAX), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.i64", GGUF_VT_INT64, &i64), 0);
	assert_int_equal(gguf_writer_set_scalar(w, "v.f64", GGUF_VT_FLOAT64, &f64), 0);
	/* replaced later: must keep one entry with the last value */
	assert_int_equal(gguf_writer_set_u32(w, "v.replaced", 1), 0);
	assert_int_equal(gguf_writer_set_i32(w, "v.replaced", -5), 0);
}

/* Arrays of every element type, and the array kinds that are refused. */
static void writer_set_arrays(gguf_writer *w)
{
	const uint8_t a8[3] = {1, 2, 255};
	const int32_t a32[4] = {-1, 0, 1, 2147483647};
	const float af[2] = {0.25f, -8.0f};
	const double ad[2] = {1e-300, 2.0};
	const uint8_t ab[2] = {1, 0};
	assert_int_equal(gguf_writer_set_arr(w, "a.u8", GGUF_VT_UINT8, a8, 3), 0);
	assert_int_equal(gguf_writer_set_arr(w, "a.i32", GGUF_VT_INT32, a32, 4), 0);
	assert_int_equal(gguf_writer_set_arr(w, "a.f32", GGUF_VT_FLOAT32, af, 2), 0);
	assert_int_equal(gguf_writer_set_arr(w, "a.f64", GGUF_VT_FLOAT64, ad, 2), 0);
	assert_int_equal(gguf_writer_set_arr(w, "a.bool", GGUF_VT_BOOL, ab, 2), 0);
	assert_int_equal(gguf_writer_set_arr(w, "a.empty", GGUF_VT_UINT16, NULL, 0), 0);
	gguf_str s[4];
	for (int i = 0; i < 4; i++)
		s[i] = (gguf_str){arr_strs[i], strlen(arr_strs[i])};
	assert_int_equal(gguf_writer_set_arr_str(w, "a.str", s, 4), 0);
	assert_int_equal(gguf_writer_set_arr(w, "bad", GGUF_VT_STRING, a8, 1), HERD_E_INVAL);
	assert_int_equal(gguf_writer_set_scalar(w, "bad", GGUF_VT_ARRAY, a8), HERD_E_INVAL);
}

/* The tensors of tensor_spec with random bytes (data[i], malloc'd); tensor
 * 2 is generated by fill_cb at write time from the same seed. */
static void writer_add_tensors(gguf_writer *w, uint8_t *data[N_TENSORS], fill_ctx *fc)
{
	for (int i = 0; i < N_TENSORS; i++) {
		const size_t sz = spec_size(i);
		data[i] = malloc(sz);
		assert_non_null(data[i]);
		fill_random(data[i], sz, 1000 + (uint64_t)i);
		if (i == 2) {
			fc->seed = 1000 + (uint64_t)i;
			assert_int_equal(gguf_writer_add_tensor_fill(w, tensor_spec[i].name,
								     tensor_spec[i].type,
								     tensor_spec[i].n_dims,
								     tensor_spec[i].ne, fill_cb, fc),
					 0);
		} else {
			assert_int_equal(gguf_writer_add_tensor(w, tensor_spec[i].name,
								tensor_spec[i].type,
								tensor_spec[i].n_dims,
								tensor_spec[i].ne, data[i]),
					 0);
		}
	}
}

/* Bad tensors are refused (data[0] is only their borrowed bytes). */
static void writer_check_bad_tensors(gguf_writer *w, uint8_t *data[N_TENSORS])
{
	const int64_t ne_bad[2] = {33, 1}, ne_ok[1] = {32}, ne_zero[1] = {0};
	assert_int_equal(gguf_writer_add_tensor(w, "x", KERN_TYPE_Q4_0, 2, ne_bad, data[0]),
			 HERD_E_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "x", (kern_type)4, 1, ne_ok, data[0]),
			 HERD_E_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "x", KERN_TYPE_F32, 0, ne_ok, data[0]),
			 HERD_E_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "x", KERN_TYPE_F32, 1, ne_zero, data[0]),
			 HERD_E_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q8", KERN_TYPE_F32, 1, ne_ok, data[0]),
			 HERD_E_INVAL);
	assert_int_equal(
		gguf_writer_add_tensor(
			w, "a_name_that_is_far_too_long_for_ggml_because_it_has_64_or_more_chars",
			KERN_TYPE_F32, 1, ne_ok, data[0]),
		HERD_E_RANGE);
}

/* Builds the reference writer; data[] holds borrowed tensor bytes. */
static gguf_writer *make_writer(uint8_t *data[N_TENSORS], fill_ctx *fc, uint32_t align)
{
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	writer_set_scalars(w);
	writer_set_arrays(w);
	if (align)
		assert_int_equal(gguf_writer_set_u32(w, "general.alignment", align), 0);
	writer_add_tensors(w, data, fc);
	/* bad tensors are refused */
	writer_check_bad_tensors(w, data);
	return w;
}

/* Every scalar written by writer_set_scalars reads back, with the typed
 * getters' conversions and refusals. */
static void check_file_scalars(gguf_ctx *c)
{
	int64_t iv;
	double dv;
	int bv;
	gguf_str sv;
	assert_int_equal(gguf_get_int(c, "v.u8", &iv), 0);
	assert_int_equal(iv, 200);
	assert_int_equal(gguf_get_int(c, "v.i8", &iv), 0);
	assert_int_equal(iv, -100);
	assert_int_equal(gguf_get_int(c, "v.u16", &iv), 0);
	assert_int_equal(iv, 60000);
	assert_int_equal(gguf_get_int(c, "v.i16", &iv), 0);
	assert_int_equal(iv, -30000);
	assert_int_equal(gguf_get_int(c, "v.u32", &iv), 0);
	assert_int_equal(iv, 4000000000ll);
	assert_int_equal(gguf_get_int(c, "v.i32", &iv), 0);
	assert_int_equal(iv, -2000000000);
	assert_int_equal(gguf_get_int(c, "v.i64", &iv), 0);
	assert_true(iv == -1234567890123ll);
	assert_int_equal(gguf_get_int(c, "v.u64", &iv), HERD_E_RANGE);
	assert_int_equal(gguf_get_int(c, "v.replaced", &iv), 0);
	assert_int_equal(iv, -5);
	assert_int_equal(gguf_get_int(c, "v.f32", &iv), HERD_E_FORMAT);
	assert_int_equal(gguf_get_int(c, "nope", &iv), HERD_E_MISSING);
	assert_int_equal(gguf_get_float(c, "v.f32", &dv), 0);
	assert_true(dv == 1.5);
	assert_int_equal(gguf_get_float(c, "v.f64", &dv), 0);
	assert_true(dv == 3.25e100);
	assert_int_equal(gguf_get_float(c, "v.u8", &dv), HERD_E_FORMAT);
	assert_int_equal(gguf_get_bool(c, "v.bool", &bv), 0);
	assert_int_equal(bv, 1);
	assert_int_equal(gguf_get_str(c, "v.str", &sv), 0);
	assert_int_equal(sv.len, strlen("café ▁"));
	assert_memory_equal(sv.ptr, "café ▁", sv.len);
	assert_int_equal(gguf_get_str(c, "v.empty", &sv), 0);
	assert_int_equal(sv.len, 0);
	assert_int_equal(gguf_get_str(c, "v.u8", &sv), HERD_E_FORMAT);
}

/* Every array written by writer_set_arrays reads back. */
static void check_file_arrays(gguf_ctx *c)
{
	gguf_str sv;
	gguf_vtype t;
	uint64_t n;
	const void *p;
	assert_int_equal(gguf_get_arr(c, "a.i32", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_INT32);
	assert_int_equal(n, 4);
	int32_t a32[4];
	memcpy(a32, p, sizeof(a32));
	assert_int_equal(a32[0], -1);
	assert_int_equal(a32[3], 2147483647);
	assert_int_equal(gguf_get_arr(c, "a.u8", &t, &n, &p), 0);
	assert_int_equal(n, 3);
	assert_int_equal(((const uint8_t *)p)[2], 255);
	assert_int_equal(gguf_get_arr(c, "a.f64", &t, &n, &p), 0);
	double ad[2];
	memcpy(ad, p, sizeof(ad));
	assert_true(ad[0] == 1e-300 && ad[1] == 2.0);
	assert_int_equal(gguf_get_arr(c, "a.f32", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_FLOAT32);
	assert_int_equal(gguf_get_arr(c, "a.bool", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_BOOL);
	assert_int_equal(gguf_get_arr(c, "a.empty", &t, &n, &p), 0);
	assert_int_equal(n, 0);
	assert_int_equal(gguf_get_arr(c, "v.u8", &t, &n, &p), HERD_E_FORMAT);
	assert_int_equal(gguf_get_arr(c, "a.str", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_STRING);
	assert_int_equal(n, 4);
	for (uint64_t i = 0; i < 4; i++) {
		assert_int_equal(gguf_get_arr_str(c, "a.str", i, &sv), 0);
		assert_int_equal(sv.len, strlen(arr_strs[i]));
		if (sv.len)
			assert_memory_equal(sv.ptr, arr_strs[i], sv.len);
	}
	assert_int_equal(gguf_get_arr_str(c, "a.str", 4, &sv), HERD_E_RANGE);
	assert_int_equal(gguf_get_arr_str(c, "a.i32", 0, &sv), HERD_E_FORMAT);
	assert_int_equal(gguf_get_arr_str(c, "zzz", 0, &sv), HERD_E_MISSING);
}

/* Every tensor: name, type, shape, size, aligned offset, bytes. */
static void check_file_tensors(gguf_ctx *c, uint8_t *data[N_TENSORS], size_t align)
{
	assert_int_equal(gguf_n_tensors(c), N_TENSORS);
	for (int i = 0; i < N_TENSORS; i++) {
		const gguf_tensor *tt = gguf_tensor_at(c, i);
		assert_non_null(tt);
		assert_int_equal(tt->name.len, strlen(tensor_spec[i].name));
		assert_memory_equal(tt->name.ptr, tensor_spec[i].name, tt->name.len);
		assert_ptr_equal(gguf_find_tensor(c, tensor_spec[i].name), tt);
		assert_int_equal(tt->type, tensor_spec[i].type);
		assert_int_equal(tt->n_dims, tensor_spec[i].n_dims);
		for (int d = 0; d < 4; d++)
			assert_int_equal(tt->ne[d], tensor_spec[i].ne[d]);
		assert_int_equal(tt->size, spec_size(i));
		assert_int_equal(tt->offset % align, 0);
		assert_int_equal(((uintptr_t)tt->data - (uintptr_t)gguf_base(c)) % align, 0);
		assert_memory_equal(tt->data, data[i], tt->size);
	}
	assert_null(gguf_find_tensor(c, "missing"));
	assert_null(gguf_tensor_at(c, N_TENSORS));
	assert_null(gguf_kv_at(c, -1));
}

static void check_file(gguf_ctx *c, uint8_t *data[N_TENSORS], size_t align)
{
	assert_int_equal(gguf_alignment(c), align);
	assert_int_equal(gguf_data_offset(c) % align, 0);
	check_file_scalars(c);
	check_file_arrays(c);
	check_file_tensors(c, data, align);
}

static char *write_ref(const char *dir, const char *name, uint32_t align,
		       uint8_t *data[N_TENSORS])
{
	char err[512];
	fill_ctx fc = {0};
	gguf_writer *w = make_writer(data, &fc, align);
	char *path = malloc(4096);
	snprintf(path, 4096, "%s/%s", dir, name);
	const int rc = gguf_writer_write(w, path, err, sizeof(err));
	if (rc)
		fail_msg("write: %s", err);
	assert_int_equal(fc.calls, 1);
	gguf_writer_destroy(w);
	return path;
}

static void free_data(uint8_t *data[N_TENSORS])
{
	for (int i = 0; i < N_TENSORS; i++)
		free(data[i]);
}

static void test_roundtrip(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	const uint32_t aligns[3] = {0, 64, 8};
	for (int k = 0; k < 3; k++) {
		uint8_t *data[N_TENSORS];
		char *path = write_ref(dir, "rt.gguf", aligns[k], data);
		gguf_ctx *c;
		char err[512];
		const int rc = gguf_open(&c, path, err, sizeof(err));
		if (rc)
			fail_msg("open: %s", err);
		assert_int_equal(gguf_version(c), 3);
		check_file(c, data, aligns[k] ? aligns[k] : GGUF_DEFAULT_ALIGNMENT);
		struct stat st;
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(gguf_size(c), (size_t)st.st_size);
		assert_int_equal(st.st_mode & 0777, 0644);
		gguf_close(c);
		assert_int_equal(count_entries(dir), 1); /* no temp file left */
		free_data(data);
		free(path);
	}
	rm_dir(dir);
}

/* herd's row-interleaved image layouts are never accepted from a file, and
 * in memory only as whole groups of 16 rows */
static void write_typed(const char *path, kern_type type, int64_t rows)
{
	gguf_writer *w;
	char err[512];
	const int64_t ne[2] = {32, rows};
	uint8_t *buf = calloc((size_t)rows, 64);
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "w", type, 2, ne, buf), 0);
	if (gguf_writer_write(w, path, err, sizeof(err)))
		fail_msg("write: %s", err);
	gguf_writer_destroy(w);
	free(buf);
}

static void test_image_types(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	char path[4096], err[512];
	snprintf(path, sizeof(path), "%s/r16.gguf", dir);
	gguf_ctx *c;
	write_typed(path, KERN_TYPE_Q4_0_R16, 16);
	assert_int_equal(gguf_open(&c, path, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "image-only type Q4_0_R16"));
	write_typed(path, KERN_TYPE_Q8_0_R16, 17);
	int fd = open(path, O_RDONLY);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	assert_true(m != MAP_FAILED);
	assert_int_equal(gguf_open_mem(&c, m, (size_t)st.st_size, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "whole 16-row groups"));
	munmap(m, (size_t)st.st_size);
	close(fd);
	write_typed(path, KERN_TYPE_Q4_0, 17); /* the plain type of any shape is fine */
	assert_int_equal(gguf_open(&c, path, err, sizeof(err)), 0);
	gguf_close(c);
	unlink(path);
	rm_dir(dir);
}

/* copy_kv of every key reproduces the file's metadata byte for byte */
static void test_copy_kv(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	uint8_t *data[N_TENSORS];
	char *path = write_ref(dir, "src.gguf", 0, data);
	gguf_ctx *c;
	char err[512];
	assert_int_equal(gguf_open(&c, path, err, sizeof(err)), 0);
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	for (int64_t i = 0; i < gguf_n_kv(c); i++)
		assert_int_equal(gguf_writer_copy_kv(w, c, i), 0);
	assert_int_equal(gguf_writer_copy_kv(w, c, gguf_n_kv(c)), HERD_E_RANGE);
	for (int64_t i = 0; i < gguf_n_tensors(c); i++) {
		const gguf_tensor *t = gguf_tensor_at(c, i);
		char name[128];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		assert_int_equal(gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data),
				 0);
	}
	char path2[4096];
	snprintf(path2, sizeof(path2), "%s/copy.gguf", dir);
	assert_int_equal(gguf_writer_write(w, path2, err, sizeof(err)), 0);
	gguf_writer_destroy(w);
	size_t n1, n2;
	uint8_t *b1 = read_file(path, &n1), *b2 = read_file(path2, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(b1, b2, n1);
	free(b1);
	free(b2);
	gguf_close(c);
	free_data(data);
	free(path);
	rm_dir(dir);
}

static void test_versions(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	uint8_t *data[N_TENSORS];
	char *path = write_ref(dir, "v.gguf", 0, data);
	size_t n;
	uint8_t *buf = read_file(path, &n);
	char err[512];
	/* v2 has the same layout as v3 */
	buf[4] = 2;
	gguf_ctx *c;
	assert_int_equal(gguf_open_mem(&c, buf, n, err, sizeof(err)), 0);
	assert_int_equal(gguf_version(c), 2);
	check_file(c, data, 32);
	gguf_close(c);
	buf[4] = 1;
	assert_int_equal(open_copy(buf, n, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "version 1"));
	buf[4] = 4;
	assert_int_equal(open_copy(buf, n, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "version 4"));
	/* a big-endian file reads as a huge version */
	buf[4] = 0;
	buf[7] = 3;
	assert_int_equal(open_copy(buf, n, err, sizeof(err)), HERD_E_UNSUPPORTED);
	buf[7] = 0;
	buf[4] = 3;
	buf[0] = 'X';
	assert_int_equal(open_copy(buf, n, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "magic"));
	free(buf);
	free_data(data);
	free(path);
	rm_dir(dir);
}

static void test_open_errors(void **state)
{
	(void)state;
	char err[512];
	gguf_ctx *c = (gguf_ctx *)1;
	assert_int_equal(gguf_open(&c, "/nonexistent/x.gguf", err, sizeof(err)), -ENOENT);
	assert_null(c);
	assert_non_null(strstr(err, "/nonexistent/x.gguf"));
	assert_true(gguf_open(&c, "/tmp", err, sizeof(err)) < 0);
	assert_null(c);
	/* empty file */
	char *dir = tmp_dir();
	char p[4096];
	snprintf(p, sizeof(p), "%s/empty.gguf", dir);
	FILE *f = fopen(p, "wb");
	fclose(f);
	assert_int_equal(gguf_open(&c, p, err, sizeof(err)), HERD_E_TRUNCATED);
	assert_null(c);
	assert_int_equal(open_copy(NULL, 0, err, sizeof(err)), HERD_E_TRUNCATED);
	/* a tensor-less, data-less file (like a vocabulary GGUF) is fine */
	gbuf b = {0};
	gb_header(&b, 3, 0, 1);
	gb_kv_u32(&b, "k", 1);
	assert_int_equal(open_gb(&b, err, sizeof(err)), 0);
	/* err may be NULL */
	assert_int_equal(open_copy((const uint8_t *)"GGUF", 4, NULL, 0), HERD_E_TRUNCATED);
	rm_dir(dir);
}

/* Nested arrays are valid GGUF: validated, skipped, copied. */
static void test_nested_arrays(void **state)
{
	(void)state;
	char err[512];
	gbuf b = {0};
	gb_header(&b, 3, 0, 3);
	gb_str(&b, "nested");
	gb_u32(&b, GGUF_VT_ARRAY);
	gb_u32(&b, GGUF_VT_ARRAY); /* array of 2 arrays */
	gb_u64(&b, 2);
	gb_u32(&b, GGUF_VT_UINT32);
	gb_u64(&b, 2);
	gb_u32(&b, 5);
	gb_u32(&b, 6);
	gb_u32(&b, GGUF_VT_STRING);
	gb_u64(&b, 2);
	gb_str(&b, "ab");
	gb_str(&b, "");
	gb_str(&b, "after");
	gb_u32(&b, GGUF_VT_STRING);
	gb_str(&b, "ok");
	gb_str(&b, "empty_outer");
	gb_u32(&b, GGUF_VT_ARRAY);
	gb_u32(&b, GGUF_VT_ARRAY);
	gb_u64(&b, 0);
	gguf_ctx *c;
	assert_int_equal(gguf_open_mem(&c, b.p, b.n, err, sizeof(err)), 0);
	gguf_vtype t;
	uint64_t n;
	const void *p;
	assert_int_equal(gguf_get_arr(c, "nested", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_ARRAY);
	assert_int_equal(n, 2);
	uint32_t inner_t;
	memcpy(&inner_t, p, 4);
	assert_int_equal(inner_t, GGUF_VT_UINT32);
	gguf_str s;
	assert_int_equal(gguf_get_str(c, "after", &s), 0);
	assert_int_equal(s.len, 2);
	assert_memory_equal(s.ptr, "ok", 2);
	/* copy through the writer and compare the metadata bytes */
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	for (int64_t i = 0; i < gguf_n_kv(c); i++)
		assert_int_equal(gguf_writer_copy_kv(w, c, i), 0);
	char *dir = tmp_dir();
	char path[4096];
	snprintf(path, sizeof(path), "%s/n.gguf", dir);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), 0);
	gguf_writer_destroy(w);
	size_t n2;
	uint8_t *b2 = read_file(path, &n2);
	assert_true(n2 >= b.n);
	assert_memory_equal(b2, b.p, b.n);
	free(b2);
	gguf_close(c);
	rm_dir(dir);
	/* the nested content is validated: a bad inner type fails */
	b.p[24 + 8 + 6 + 4 + 4 + 8] = 99;
	assert_int_equal(open_copy(b.p, b.n, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "nested"));
	free(b.p);
	/* nesting deeper than the limit is refused, not recursed into forever */
	b = (gbuf){0};
	gb_header(&b, 3, 0, 1);
	gb_str(&b, "deep");
	gb_u32(&b, GGUF_VT_ARRAY);
	for (int i = 0; i < 100; i++) {
		gb_u32(&b, GGUF_VT_ARRAY);
		gb_u64(&b, 1);
	}
	gb_u32(&b, GGUF_VT_UINT8);
	gb_u64(&b, 0);
	assert_int_equal(open_gb(&b, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "deep"));
}

static void expect_err(gbuf *b, int code, const char *needle)
{
	char err[512];
	const int rc = open_gb(b, err, sizeof(err));
	if (rc != code || (needle && !strstr(err, needle)))
		fail_msg("expected %d containing '%s', got %d: %s", code, needle ? needle : "",
			 rc, err);
}

/* Duplicate keys and tensor names. */
static void validate_duplicates(gbuf *b)
{
	const uint64_t ne4[1] = {4};
	gb_header(b, 3, 0, 2);
	gb_kv_u32(b, "dup", 1);
	gb_kv_u32(b, "dup", 2);
	expect_err(b, HERD_E_FORMAT, "duplicate key 'dup'");

	gb_header(b, 3, 2, 0);
	gb_tensor(b, "same", 1, ne4, KERN_TYPE_F32, 0);
	gb_tensor(b, "same", 1, ne4, KERN_TYPE_F32, 32);
	gb_pad(b, 32);
	gb_put(b, (uint8_t[64]){0}, 64);
	expect_err(b, HERD_E_FORMAT, "duplicate tensor name 'same'");
}

/* Tensor dimensions: count, zero, negative, overflowing sizes. */
static void validate_shapes(gbuf *b)
{
	const uint64_t ne4[1] = {4};
	gb_one_tensor(b, 0, ne4, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_FORMAT, "n_dims 0");

	const uint64_t ne5[5] = {1, 1, 1, 1, 1};
	gb_one_tensor(b, 5, ne5, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_FORMAT, "n_dims 5");

	const uint64_t ne0[2] = {4, 0};
	gb_one_tensor(b, 2, ne0, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_FORMAT, "dimension 1");

	const uint64_t neneg[1] = {(uint64_t)-4};
	gb_one_tensor(b, 1, neneg, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_FORMAT, "'t'");

	const uint64_t nebig[4] = {1ull << 40, 1ull << 40, 1, 1};
	gb_one_tensor(b, 4, nebig, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_RANGE, "overflow");

	const uint64_t nebytes[2] = {1ull << 32, 1ull << 30}; /* 2^62 elems * 4 bytes */
	gb_one_tensor(b, 2, nebytes, KERN_TYPE_F32, 0, 16);
	expect_err(b, HERD_E_RANGE, "overflow");
}

/* Tensor types, block sizes, offsets and data past the end. */
static void validate_types_and_offsets(gbuf *b)
{
	const uint64_t ne4[1] = {4}, ne2x2[2] = {2, 2};
	gb_one_tensor(b, 1, ne4, 99, 0, 16);
	expect_err(b, HERD_E_UNSUPPORTED, "99");
	gb_one_tensor(b, 1, ne4, 4, 0, 16); /* ggml's removed Q4_2 */
	expect_err(b, HERD_E_UNSUPPORTED, "type 4");

	const uint64_t ne33[1] = {33};
	gb_one_tensor(b, 1, ne33, KERN_TYPE_Q4_0, 0, 64);
	expect_err(b, HERD_E_FORMAT, "block size");

	gb_one_tensor(b, 1, ne4, KERN_TYPE_F32, 8, 64);
	expect_err(b, HERD_E_FORMAT, "not a multiple of the alignment");

	gb_one_tensor(b, 1, ne4, KERN_TYPE_F32, 32, 16);
	expect_err(b, HERD_E_TRUNCATED, "extends past end of file");

	gb_one_tensor(b, 1, ne4, KERN_TYPE_F32, 0xffffffffffffffe0ull, 16);
	expect_err(b, HERD_E_TRUNCATED, "extends past end of file");

	gb_one_tensor(b, 2, ne2x2, KERN_TYPE_F32, 0, 15);
	expect_err(b, HERD_E_TRUNCATED, "size 16");
}

/* general.alignment: a uint32 power of two, honoured when valid. */
static void validate_alignment(gbuf *b)
{
	const uint64_t ne4[1] = {4};
	gb_header(b, 3, 0, 1);
	gb_kv_u32(b, "general.alignment", 48);
	expect_err(b, HERD_E_FORMAT, "power of two");
	gb_header(b, 3, 0, 1);
	gb_kv_u32(b, "general.alignment", 0);
	expect_err(b, HERD_E_FORMAT, "power of two");
	/* fuzz_gguf found it (tests/fuzz/corpus/gguf/regress_align1.gguf):
	 * alignment 1 put fp16 norm weights at odd addresses, a misaligned
	 * load in llama_model_from_gguf. GGUF requires a multiple of 8. */
	for (uint32_t a = 1; a < 8; a *= 2) {
		gb_header(b, 3, 1, 1);
		gb_kv_u32(b, "general.alignment", a);
		gb_tensor(b, "t", 1, ne4, KERN_TYPE_F32, 0);
		gb_pad(b, a);
		gb_put(b, (uint8_t[16]){0}, 16);
		expect_err(b, HERD_E_FORMAT, "power of two >= 8");
	}
	gb_header(b, 3, 0, 1);
	gb_str(b, "general.alignment");
	gb_u32(b, GGUF_VT_UINT64);
	gb_u64(b, 32);
	expect_err(b, HERD_E_FORMAT, "uint32");
	/* a valid non-default alignment is honoured */
	gb_header(b, 3, 1, 1);
	gb_kv_u32(b, "general.alignment", 256);
	gb_tensor(b, "t", 1, ne4, KERN_TYPE_F32, 256);
	gb_pad(b, 256);
	gb_put(b, (uint8_t[512]){0}, 512);
	expect_err(b, 0, NULL);
	gb_header(b, 3, 1, 1);
	gb_kv_u32(b, "general.alignment", 256);
	gb_tensor(b, "t", 1, ne4, KERN_TYPE_F32, 32);
	gb_pad(b, 256);
	gb_put(b, (uint8_t[512]){0}, 512);
	expect_err(b, HERD_E_FORMAT, "alignment 256");
}

/* String lengths, key/value and tensor counts, array sizes, value types. */
static void validate_lengths(gbuf *b)
{
	gb_header(b, 3, 0, 1);
	gb_u64(b, 40);
	gb_put(b, "key-and-some-more-bytes", 23);
	expect_err(b, HERD_E_TRUNCATED, "string length 40");
	gb_header(b, 3, 0, 1);
	gb_u64(b, UINT64_MAX);
	gb_put(b, "keykeykeykeykey", 15);
	expect_err(b, HERD_E_RANGE, "string length");
	gb_header(b, 3, 0, UINT64_MAX);
	gb_kv_u32(b, "k", 1);
	expect_err(b, HERD_E_RANGE, "key/value count");
	gb_header(b, 3, 1ull << 62, 1);
	gb_kv_u32(b, "k", 1);
	expect_err(b, HERD_E_RANGE, "tensor count");
	gb_header(b, 3, 2, 1);
	gb_kv_u32(b, "k", 1);
	expect_err(b, HERD_E_TRUNCATED, "tensor count");
	gb_header(b, 3, 0, 1);
	gb_str(b, "arr");
	gb_u32(b, GGUF_VT_ARRAY);
	gb_u32(b, GGUF_VT_UINT64);
	gb_u64(b, 1ull << 61); /* * 8 overflows 64 bits */
	gb_u64(b, 0);
	expect_err(b, HERD_E_RANGE, "'arr'");
	gb_header(b, 3, 0, 1);
	gb_str(b, "arr");
	gb_u32(b, GGUF_VT_ARRAY);
	gb_u32(b, GGUF_VT_STRING);
	gb_u64(b, 2);
	gb_str(b, "a");
	gb_u64(b, 0x7fffffffffffffffull);
	expect_err(b, HERD_E_RANGE, "'arr'");
	gb_header(b, 3, 0, 1);
	gb_str(b, "ty");
	gb_u32(b, 13);
	gb_u32(b, 0);
	expect_err(b, HERD_E_FORMAT, "unknown value type 13");
	gb_header(b, 3, 0, 1);
	gb_str(b, "ty");
	gb_u32(b, GGUF_VT_ARRAY);
	gb_u32(b, 77);
	gb_u64(b, 1);
	gb_u32(b, 0);
	expect_err(b, HERD_E_FORMAT, "element type 77");
}

static void test_validation(void **state)
{
	(void)state;
	gbuf b = {0};
	const uint64_t ne4[1] = {4};

	/* baseline is valid */
	gb_one_tensor(&b, 1, ne4, KERN_TYPE_F32, 0, 16);
	expect_err(&b, 0, NULL);

	validate_duplicates(&b);
	validate_shapes(&b);
	validate_types_and_offsets(&b);
	/* alignment */
	validate_alignment(&b);
	/* lengths and counts */
	validate_lengths(&b);
}

/* The i-quant ids llama-quantize writes: accepted with ggml's block sizes
 * and bytes (a [2 blocks, 3 rows] tensor is exactly 6 blocks), refused one
 * byte short, and a row of 288 (9 x 32, not a multiple of 256) is refused
 * with the block size named for every type but IQ4_NL. */
static void test_iquant_types(void **state)
{
	(void)state;
	static const struct {
		uint32_t id;
		int blck;
		size_t bytes;
	} iq[] = {{16, 256, 66}, {17, 256, 74}, {18, 256, 98},  {19, 256, 50}, {20, 32, 18},
		  {21, 256, 110}, {22, 256, 82}, {23, 256, 136}, {29, 256, 56}};
	for (size_t k = 0; k < sizeof iq / sizeof iq[0]; k++) {
		const uint64_t ne[2] = {2 * (uint64_t)iq[k].blck, 3};
		gbuf b = {0};
		gb_one_tensor(&b, 2, ne, iq[k].id, 0, 6 * iq[k].bytes);
		uint8_t *copy = malloc(b.n);
		assert_non_null(copy);
		memcpy(copy, b.p, b.n);
		gguf_ctx *c = NULL;
		char err[512] = "";
		if (gguf_open_mem(&c, copy, b.n, err, sizeof err))
			fail_msg("type %u: %s", iq[k].id, err);
		const gguf_tensor *t = gguf_find_tensor(c, "t");
		assert_non_null(t);
		assert_int_equal(t->type, iq[k].id);
		assert_int_equal(t->size, 6 * iq[k].bytes);
		gguf_close(c);
		free(copy);
		free(b.p);
		b = (gbuf){0};
		gb_one_tensor(&b, 2, ne, iq[k].id, 0, 6 * iq[k].bytes - 1);
		expect_err(&b, HERD_E_TRUNCATED, "extends past end of file");
		const uint64_t ne288[1] = {288};
		gb_one_tensor(&b, 1, ne288, iq[k].id, 0, 9 * 18);
		expect_err(&b, iq[k].blck == 32 ? 0 : HERD_E_FORMAT, iq[k].blck == 32 ? NULL : "block size 256");
	}
}

/* The reference file cut at many lengths: every prefix that loses part of
 * the metadata or a tensor must be refused. */
static void test_truncation(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	uint8_t *data[N_TENSORS];
	char *path = write_ref(dir, "t.gguf", 0, data);
	size_t n;
	uint8_t *buf = read_file(path, &n);
	gguf_ctx *c;
	char err[512];
	assert_int_equal(gguf_open_mem(&c, buf, n, err, sizeof(err)), 0);
	size_t end = 0; /* end of the last tensor's data */
	for (int64_t i = 0; i < gguf_n_tensors(c); i++) {
		const gguf_tensor *t = gguf_tensor_at(c, i);
		const size_t e = gguf_data_offset(c) + t->offset + t->size;
		if (e > end)
			end = e;
	}
	gguf_close(c);
	for (size_t len = 0; len < n; len++) {
		const int rc = open_copy(buf, len, err, sizeof(err));
		if (len < end && rc == 0)
			fail_msg("prefix of %zu bytes (of %zu) opened", len, n);
	}
	free(buf);
	free_data(data);
	free(path);
	rm_dir(dir);
}

/* Deterministic corruption of every header/metadata byte and many data
 * positions, plus 8-byte windows set to huge values. Outcome is free (most
 * corruptions are still valid files); only memory safety is checked. */
static int open_check(const uint8_t *buf, size_t n)
{
	gguf_ctx *c = NULL;
	const int rc = gguf_open_mem(&c, buf, n, NULL, 0);
	if (rc == 0) {
		volatile uint8_t sink = 0;
		for (int64_t i = 0; i < gguf_n_tensors(c); i++) {
			const gguf_tensor *t = gguf_tensor_at(c, i);
			sink ^= ((const uint8_t *)t->data)[t->size - 1];
		}
		(void)sink;
	} else {
		assert_null(c);
	}
	gguf_close(c);
	return rc;
}

static void mutate_sweep(const uint8_t *orig, size_t n, size_t meta_end, size_t stride)
{
	static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x20};
	static const uint64_t wide[] = {UINT64_MAX, 0x7fffffffffffffffull, 0x8000000000000000ull,
					0x100000000ull, 0xffffffffull};
	/* one exact-size heap buffer, mutated in place and restored: ASan
	 * still catches any read past its end */
	uint8_t *buf = malloc(n);
	assert_non_null(buf);
	memcpy(buf, orig, n);
	uint64_t seed = 42;
	int ok = 0, bad = 0;
	for (size_t pos = 0; pos < n; pos += (pos < meta_end ? stride : 997)) {
		for (size_t k = 0; k < sizeof(vals) + 1; k++) {
			buf[pos] = k < sizeof(vals) ? vals[k]
						    : (uint8_t)(orig[pos] ^ (1u << (rng_next(&seed) & 7)));
			(*(open_check(buf, n) == 0 ? &ok : &bad))++;
		}
		buf[pos] = orig[pos];
		if (pos + 8 <= n && pos < meta_end) {
			for (size_t k = 0; k < sizeof(wide) / sizeof(wide[0]); k++) {
				memcpy(buf + pos, &wide[k], 8);
				(*(open_check(buf, n) == 0 ? &ok : &bad))++;
			}
			memcpy(buf + pos, orig + pos, 8);
		}
	}
	/* random multi-byte damage */
	for (int it = 0; it < 300; it++) {
		size_t at[4];
		for (int j = 0; j < 4; j++) {
			at[j] = rng_next(&seed) % meta_end;
			buf[at[j]] = (uint8_t)rng_next(&seed);
		}
		(*(open_check(buf, n) == 0 ? &ok : &bad))++;
		for (int j = 0; j < 4; j++)
			buf[at[j]] = orig[at[j]];
	}
	assert_memory_equal(buf, orig, n);
	assert_true(bad > 0 && ok > 0);
	free(buf);
}

static void test_mutation(void **state)
{
	(void)state;
	char *dir = tmp_dir();
	uint8_t *data[N_TENSORS];
	char *path = write_ref(dir, "m.gguf", 0, data);
	size_t n;
	uint8_t *buf = read_file(path, &n);
	gguf_ctx *c;
	char err[512];
	assert_int_equal(gguf_open_mem(&c, buf, n, err, sizeof(err)), 0);
	const size_t meta_end = gguf_data_offset(c);
	gguf_close(c);
	mutate_sweep(buf, n, meta_end, 1);
	free(buf);
	free_data(data);
	free(path);
	rm_dir(dir);
}

static void test_writer_failures(void **state)
{
	(void)state;
	char err[512];
	char *dir = tmp_dir();
	char path[4096];
	const int64_t ne[1] = {64};
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_tensor_fill(w, "bad", KERN_TYPE_F32, 1, ne, fill_fail, NULL),
			 0);
	snprintf(path, sizeof(path), "%s/fail.gguf", dir);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), HERD_E_CANCELLED);
	assert_non_null(strstr(err, "'bad'"));
	assert_int_equal(count_entries(dir), 0);
	/* an existing file is left untouched by a failed write */
	FILE *f = fopen(path, "wb");
	fputs("old", f);
	fclose(f);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), HERD_E_CANCELLED);
	assert_int_equal(count_entries(dir), 1);
	size_t n;
	uint8_t *b = read_file(path, &n);
	assert_int_equal(n, 3);
	free(b);
	gguf_writer_destroy(w);
	/* missing directory */
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_write(w, "/nonexistent_dir/x.gguf", err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent_dir/x.gguf"));
	/* bad alignment */
	assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 24), 0);
	snprintf(path, sizeof(path), "%s/al.gguf", dir);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), HERD_E_INVAL);
	assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 4), 0); /* GGUF: >= 8 */
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "alignment"));
	/* an empty writer gives a valid empty file */
	assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 32), 0);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), 0);
	gguf_ctx *c;
	assert_int_equal(gguf_open(&c, path, err, sizeof(err)), 0);
	assert_int_equal(gguf_n_tensors(c), 0);
	assert_int_equal(gguf_n_kv(c), 1);
	gguf_close(c);
	gguf_writer_destroy(w);
	gguf_writer_destroy(NULL);
	gguf_close(NULL);
	/* a write that runs out of room (RLIMIT_FSIZE stands in for ENOSPC, in
	 * a child so the limit does not leak) fails and leaves nothing behind */
	const pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {4096, 4096};
		setrlimit(RLIMIT_FSIZE, &rl);
		static uint8_t big[1 << 16];
		const int64_t ne_big[1] = {1 << 14};
		gguf_writer *wc;
		if (gguf_writer_create(&wc))
			_exit(10);
		if (gguf_writer_add_tensor(wc, "big", KERN_TYPE_F32, 1, ne_big, big))
			_exit(11);
		snprintf(path, sizeof(path), "%s/big.gguf", dir);
		const int rc = gguf_writer_write(wc, path, err, sizeof(err));
		gguf_writer_destroy(wc);
		if (rc != -EFBIG)
			_exit(12);
		if (!strstr(err, "big.gguf"))
			_exit(13);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(count_entries(dir), 2); /* fail.gguf and al.gguf only */
	rm_dir(dir);
}

/* ---- fixtures ------------------------------------------------------- */

static const char *fixtures_dir(void)
{
	const char *d = getenv("HERD_FIXTURES");
	if (!d || !*d)
		d = HERD_FIXTURES;
	struct stat st;
	if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
		return NULL;
	return d;
}

/* One llama.cpp "mini-*.gguf" fixture: its shape, metadata and tensors. */
static void fixture_check_mini(const char *p)
{
	char err[512];
	gguf_ctx *c;
	if (gguf_open(&c, p, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(gguf_n_tensors(c), 3 + 9 * 2);
	gguf_str s;
	assert_int_equal(gguf_get_str(c, "general.architecture", &s), 0);
	assert_int_equal(s.len, 5);
	assert_memory_equal(s.ptr, "llama", 5);
	int64_t v;
	assert_int_equal(gguf_get_int(c, "llama.embedding_length", &v), 0);
	assert_int_equal(v, 256);
	for (int64_t i = 0; i < gguf_n_tensors(c); i++) {
		const gguf_tensor *t = gguf_tensor_at(c, i);
		assert_non_null(kern_type_info(t->type));
		assert_true(t->type != KERN_TYPE_Q8_1 && t->type != KERN_TYPE_Q8_K);
		assert_true(t->n_dims <= 2);
		if (t->n_dims == 1)
			assert_int_equal(t->type, KERN_TYPE_F32);
	}
	const gguf_tensor *te = gguf_find_tensor(c, "token_embd.weight");
	assert_non_null(te);
	assert_int_equal(te->ne[0], 256);
	assert_int_equal(te->ne[1], 2048);
	assert_non_null(gguf_find_tensor(c, "blk.1.ffn_down.weight"));
	gguf_close(c);
}

/* Every mini-*.gguf model of the fixture directory d reads (at least 13). */
static void fixture_check_models(const char *d)
{
	DIR *dir = opendir(d);
	assert_non_null(dir);
	struct dirent *e;
	int n_models = 0;
	while ((e = readdir(dir))) {
		const size_t len = strlen(e->d_name);
		if (strncmp(e->d_name, "mini-", 5) != 0 || len < 5 ||
		    strcmp(e->d_name + len - 5, ".gguf") != 0)
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
		fixture_check_mini(p);
		n_models++;
	}
	closedir(dir);
	assert_true(n_models >= 13);
}

/* The vocabulary-only fixture: no tensors, the SentencePiece tokens. */
static void fixture_check_vocab(const char *d)
{
	char p[4096], err[512];
	snprintf(p, sizeof(p), "%s/ggml-vocab-llama-spm.gguf", d);
	gguf_ctx *c;
	if (gguf_open(&c, p, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(gguf_n_tensors(c), 0);
	gguf_str s;
	assert_int_equal(gguf_get_arr_str(c, "tokenizer.ggml.tokens", 31999, &s), 0);
	assert_int_equal(gguf_get_arr_str(c, "tokenizer.ggml.tokens", 1, &s), 0);
	assert_int_equal(s.len, 3);
	assert_memory_equal(s.ptr, "<s>", 3);
	int bv;
	assert_int_equal(gguf_get_bool(c, "tokenizer.ggml.add_bos_token", &bv), 0);
	assert_int_equal(bv, 1);
	gguf_close(c);
}

/* Rewriting the llama.cpp file p through the writer into tdir reproduces
 * it byte for byte: same header, kv encoding, tensor infos, offsets and
 * padding. */
static void fixture_check_rewrite(const char *p, const char *tdir)
{
	char err[512];
	gguf_ctx *c;
	if (gguf_open(&c, p, err, sizeof(err)))
		fail_msg("%s", err);
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	for (int64_t i = 0; i < gguf_n_kv(c); i++)
		assert_int_equal(gguf_writer_copy_kv(w, c, i), 0);
	for (int64_t i = 0; i < gguf_n_tensors(c); i++) {
		const gguf_tensor *t = gguf_tensor_at(c, i);
		char name[128];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		assert_int_equal(gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), 0);
	}
	char out[4096];
	snprintf(out, sizeof(out), "%s/re.gguf", tdir);
	if (gguf_writer_write(w, out, err, sizeof(err)))
		fail_msg("%s", err);
	gguf_writer_destroy(w);
	size_t n1, n2;
	uint8_t *b1 = read_file(p, &n1), *b2 = read_file(out, &n2);
	/* ggml pads the data section even for a tensor-less file */
	assert_true(n2 == n1 || (gguf_n_tensors(c) == 0 && n2 >= n1 && n2 - n1 < 32));
	assert_memory_equal(b1, b2, n1);
	free(b1);
	free(b2);
	gguf_close(c);
}

/* Truncations and corruption of a real quantized model are refused. */
static void fixture_check_damage(const char *d)
{
	char p[4096], err[512];
	gguf_ctx *c;
	snprintf(p, sizeof(p), "%s/mini-Q4_K_M.gguf", d);
	size_t n;
	uint8_t *buf = read_file(p, &n);
	assert_non_null(buf);
	assert_int_equal(gguf_open_mem(&c, buf, n, err, sizeof(err)), 0);
	const size_t meta_end = gguf_data_offset(c);
	gguf_close(c);
	for (size_t len = 0; len < n; len += (len < 2048 ? 1 : len < meta_end ? 61 : 4093))
		assert_true(open_copy(buf, len, err, sizeof(err)) < 0);
	assert_int_equal(open_copy(buf, n - 1, err, sizeof(err)), HERD_E_TRUNCATED);
	assert_non_null(strstr(err, "output.weight") ? strstr(err, "output.weight")
						      : strstr(err, "blk.1.ffn_up.weight"));
	mutate_sweep(buf, n, meta_end, 13);
	free(buf);
}

static void test_fixtures(void **state)
{
	(void)state;
	const char *d = fixtures_dir();
	if (!d) {
		print_message("fixtures not found, skipping\n");
		skip();
	}
	fixture_check_models(d);
	fixture_check_vocab(d);

	/* rewriting a llama.cpp file through the writer reproduces it byte for
	 * byte: same header, kv encoding, tensor infos, offsets and padding */
	char *tdir = tmp_dir();
	const char *const names[] = {"mini-Q4_K_M.gguf", "mini-F32.gguf",
				     "ggml-vocab-llama-spm.gguf"};
	for (int k = 0; k < 3; k++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", d, names[k]);
		fixture_check_rewrite(p, tdir);
	}
	rm_dir(tdir);

	/* truncations and corruption of a real quantized model */
	fixture_check_damage(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),    cmocka_unit_test(test_copy_kv),
		cmocka_unit_test(test_image_types),
		cmocka_unit_test(test_versions),     cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_nested_arrays), cmocka_unit_test(test_validation),
		cmocka_unit_test(test_truncation),   cmocka_unit_test(test_mutation),
		cmocka_unit_test(test_writer_failures), cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_iquant_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
