/* GGUF reader and writer (format versions 2 and 3).
 *
 * Reader: gguf_open() maps a file read-only (or gguf_open_mem() takes a
 * caller-owned buffer) and validates everything before returning: magic,
 * version, counts against the file size, every key/value and string length,
 * tensor names, dimensions (1..4, no overflow of the element count or byte
 * size), known tensor types (kern_type_info), block-size multiples,
 * alignment, and that every tensor's data lies inside the file. Nothing is
 * read out of bounds for any input. All strings and tensor data returned
 * point into the mapping and stay valid until gguf_close().
 *
 * A gguf_ctx is immutable after open: concurrent readers are safe.
 */
#ifndef HERD_MODEL_GGUF_H
#define HERD_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum gguf_vtype {
	GGUF_VT_UINT8 = 0,
	GGUF_VT_INT8 = 1,
	GGUF_VT_UINT16 = 2,
	GGUF_VT_INT16 = 3,
	GGUF_VT_UINT32 = 4,
	GGUF_VT_INT32 = 5,
	GGUF_VT_FLOAT32 = 6,
	GGUF_VT_BOOL = 7,
	GGUF_VT_STRING = 8,
	GGUF_VT_ARRAY = 9,
	GGUF_VT_UINT64 = 10,
	GGUF_VT_INT64 = 11,
	GGUF_VT_FLOAT64 = 12,
	GGUF_VT_COUNT
} gguf_vtype;

/* A string inside the file: not NUL-terminated. */
typedef struct gguf_str {
	const char *ptr;
	uint64_t len;
} gguf_str;

typedef struct gguf_kv {
	gguf_str key;
	gguf_vtype type;      /* GGUF_VT_ARRAY for arrays */
	gguf_vtype arr_type;  /* element type when type == GGUF_VT_ARRAY */
	uint64_t arr_n;       /* element count when type == GGUF_VT_ARRAY */
	const void *data;     /* scalar value or first array element, in the file.
			       * A STRING value (or element) is stored as a u64
			       * length followed by the bytes: data points at the
			       * length; use gguf_get_str / gguf_get_arr_str. Arrays
			       * of arrays (allowed by the spec, validated up to 8
			       * levels deep) point at the first inner array's
			       * header (u32 type, u64 n, elements). */
} gguf_kv;

typedef struct gguf_tensor {
	gguf_str name;
	uint32_t n_dims;
	int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (contiguous); unused dims = 1 */
	kern_type type;
	uint64_t offset;           /* from the start of the data section */
	const void *data;          /* in the mapping, aligned as the file says */
	size_t size;               /* bytes */
} gguf_tensor;

typedef struct gguf_ctx gguf_ctx;

/* Opens and validates path. On failure returns a negative code (-errno or
 * HERD_E_FORMAT / HERD_E_TRUNCATED / HERD_E_RANGE / HERD_E_UNSUPPORTED), sets
 * *out to NULL and writes a message naming the problem (e.g. "tensor
 * 'blk.0.attn_q.weight': data [offset 1234, size 5678] extends past end of
 * file (4096 bytes)") into err (if errlen > 0). */
int gguf_open(gguf_ctx **out, const char *path, char *err, size_t errlen);
/* Same over a caller-owned buffer that must outlive the ctx. */
int gguf_open_mem(gguf_ctx **out, const void *buf, size_t size, char *err, size_t errlen);
void gguf_close(gguf_ctx *ctx); /* accepts NULL */

uint32_t gguf_version(const gguf_ctx *ctx);
size_t gguf_alignment(const gguf_ctx *ctx);
/* Start of the tensor data section within the file/buffer, and its base.
 * For a file without tensors that ends before the aligned data section
 * (vocabulary-only files), the data offset is the file size. */
size_t gguf_data_offset(const gguf_ctx *ctx);
const void *gguf_base(const gguf_ctx *ctx);
size_t gguf_size(const gguf_ctx *ctx);

int64_t gguf_n_kv(const gguf_ctx *ctx);
const gguf_kv *gguf_kv_at(const gguf_ctx *ctx, int64_t i);
/* Index of key, or -1. */
int64_t gguf_find_key(const gguf_ctx *ctx, const char *key);

/* Typed getters. Return 0, HERD_E_MISSING when the key is absent, or
 * HERD_E_FORMAT when the value has another type (get_int accepts any
 * integer type whose value fits int64 (a UINT64 above INT64_MAX gives
 * HERD_E_RANGE); get_float accepts FLOAT32/FLOAT64; get_bool reads any
 * nonzero byte as true). */
int gguf_get_int(const gguf_ctx *ctx, const char *key, int64_t *out);
int gguf_get_float(const gguf_ctx *ctx, const char *key, double *out);
int gguf_get_bool(const gguf_ctx *ctx, const char *key, int *out);
int gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out);
/* Array: element type, count and pointer to the raw first element (for
 * non-string arrays; little-endian, possibly unaligned: memcpy it). */
int gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_vtype *type, uint64_t *n,
		 const void **data);
/* Element i of a string array (O(1): the reader indexes string arrays).
 * HERD_E_RANGE when i >= the array's length. */
int gguf_get_arr_str(const gguf_ctx *ctx, const char *key, uint64_t i, gguf_str *out);

int64_t gguf_n_tensors(const gguf_ctx *ctx);
const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, int64_t i);
/* NULL when absent. */
const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name);

/* ---- writer ---------------------------------------------------------- */

typedef struct gguf_writer gguf_writer;

/* Produces the tensor's bytes into buf (size bytes) when the file is
 * written; returns 0 or a negative error, which aborts the write. */
typedef int (*gguf_fill_fn)(void *user, void *buf, size_t size);

int gguf_writer_create(gguf_writer **out);
void gguf_writer_destroy(gguf_writer *w); /* accepts NULL */

/* Set a key (a later set of the same key replaces it, keeping its place).
 * Values are copied. Keys are written in first-set order. Returns 0,
 * HERD_E_INVAL or -ENOMEM. */
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* Any fixed-size scalar type (not STRING/ARRAY): v points to the value's
 * bytes (1, 2, 4 or 8 as the type says), little-endian as in memory.
 * Returns HERD_E_INVAL for STRING, ARRAY or an unknown type. */
int gguf_writer_set_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v);
/* Array of fixed-size elements (not strings). */
int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype type, const void *data,
			uint64_t n);
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const gguf_str *v, uint64_t n);
/* Copy key/value i of another file as it is (any type, nested arrays too).
 * HERD_E_RANGE for a bad i, HERD_E_FORMAT for a key holding a NUL byte. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i);

/* Add a tensor, in write order. data is borrowed (must stay valid until
 * gguf_writer_write returns); or give fill/user to generate it at write
 * time (data NULL): fill is called once per tensor, in order, from the
 * thread calling gguf_writer_write, with a private buffer of the tensor's
 * byte size. ne[0] must be a multiple of the type's block size. Returns
 * HERD_E_INVAL for a bad argument (unknown type, n_dims not 1..4, ne <= 0,
 * ne[0] not a block multiple, duplicate name), HERD_E_RANGE for a name of
 * 64 bytes or more (ggml's limit) or an overflowing size, -ENOMEM. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, kern_type type, uint32_t n_dims,
			   const int64_t *ne, const void *data);
int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, kern_type type,
				uint32_t n_dims, const int64_t *ne, gguf_fill_fn fill, void *user);

/* Writes a GGUF v3 file (alignment general.alignment or 32) to path via a
 * temporary file in the same directory and rename(), so a failure (ENOSPC,
 * a fill error) leaves no partial file at path. Tensor data starts at an
 * aligned offset and every tensor is zero-padded to the alignment, as ggml
 * writes it. The file gets mode 0644. Returns 0 or a negative code (-errno,
 * HERD_E_INVAL for a bad general.alignment, or the fill's error) with a
 * message in err naming the path and the problem. The writer can be written
 * again afterwards. */
int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
