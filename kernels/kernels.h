/* herd kernels: weight types, (de)quantization, dot products, runtime
 * dispatch by CPU features.
 *
 * Types use ggml's numeric ids, so a GGUF tensor's type field indexes these
 * tables directly. Every supported type has a scalar reference for each
 * operation; SIMD variants (_avx2, _avx512) are chosen at run time from the
 * CPU-feature record (kernels/cpu.h), one way in every module
 * (kernels/variant.h), and can be forced down to KERN_ISA_REF.
 *
 * Function naming: kern_dequant_<type>_ref, kern_quant_<type>_ref,
 * kern_dot_<type>_<vec_dot_type>_<isa>, lower case (q4_k, not q4_K).
 */
#ifndef HERD_KERNELS_H
#define HERD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"
#include "quant_blocks.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kern_type {
	KERN_TYPE_F32 = 0,
	KERN_TYPE_F16 = 1,
	KERN_TYPE_Q4_0 = 2,
	KERN_TYPE_Q4_1 = 3,
	KERN_TYPE_Q5_0 = 6,
	KERN_TYPE_Q5_1 = 7,
	KERN_TYPE_Q8_0 = 8,
	KERN_TYPE_Q8_1 = 9,
	KERN_TYPE_Q2_K = 10,
	KERN_TYPE_Q3_K = 11,
	KERN_TYPE_Q4_K = 12,
	KERN_TYPE_Q5_K = 13,
	KERN_TYPE_Q6_K = 14,
	KERN_TYPE_Q8_K = 15,
	KERN_TYPE_IQ2_XXS = 16,
	KERN_TYPE_IQ2_XS = 17,
	KERN_TYPE_IQ3_XXS = 18,
	KERN_TYPE_IQ1_S = 19,
	KERN_TYPE_IQ4_NL = 20,
	KERN_TYPE_IQ3_S = 21,
	KERN_TYPE_IQ2_S = 22,
	KERN_TYPE_IQ4_XS = 23,
	KERN_TYPE_IQ1_M = 29,
	KERN_TYPE_BF16 = 30,
	/* herd's own row-interleaved layouts (kernels/gemm.h): never in files
	 * meant for other programs, only in herd's shared images. Ids far
	 * above ggml's so they cannot collide with a future ggml type. */
	KERN_TYPE_Q4_0_R16 = 128,
	KERN_TYPE_Q8_0_R16 = 129,
	KERN_TYPE_Q4_K_R16 = 130,
	KERN_TYPE_Q6_K_R16 = 131,
	/* herd's own weight types (kernels/quant_herd.c), from 133 up: HQb_B =
	 * b-bit codes in blocks of B with a half scale, f32 activations. For
	 * rows no GGUF block divides (172 = 4 * 43) and bit widths between
	 * ggml's; llama.cpp cannot load them (herd quantize warns and marks the
	 * file; --standard-only keeps them out). */
	KERN_TYPE_HQ4_32 = 133,
	KERN_TYPE_HQ5_32 = 134,
	KERN_TYPE_HQ6_32 = 135,
	KERN_TYPE_HQ7_32 = 136,
	KERN_TYPE_HQ8_32 = 137,
	KERN_TYPE_HQ4_43 = 138,
	KERN_TYPE_HQ5_43 = 139,
	KERN_TYPE_HQ6_43 = 140,
	KERN_TYPE_HQ7_43 = 141,
	KERN_TYPE_HQ8_43 = 142,
	KERN_TYPE_COUNT = 143
} kern_type;

#define KERN_TYPE_HERD_FIRST 133 /* ids from here up are herd's own */
/* Bytes of one HQb_B block: the half scale and B b-bit codes. */
#define KERN_HQ_BLOCK_BYTES(b, B) (2 + ((size_t)(B) * (b) + 7) / 8)
#define KERN_HQ_MAX_BLOCK 43

/* y[0..n) = dequantized x. n is a multiple of the type's block size. */
typedef void (*kern_to_float_fn)(const void *restrict x, float *restrict y, int64_t n);
/* y = x quantized into blocks of the type. n is a multiple of the block size. */
typedef void (*kern_from_float_fn)(const float *restrict x, void *restrict y, int64_t n);
/* *s = sum_i x[i]*y[i] over n elements; x is a row of the weight type, y a row
 * of its vec_dot_type. n is a multiple of both block sizes. */
typedef void (*kern_vec_dot_fn)(int n, float *restrict s, const void *restrict x,
				const void *restrict y);
/* Four dots of one weight row x with activation rows y, y + ys, y + 2 ys,
 * y + 3 ys (bytes): s[k * ls] = dot(x, row k). The weights are decoded once
 * for the four (prompts and batches of the types with no row-interleaved
 * GEMM); each result is vec_dot's up to float summation order. */
typedef void (*kern_vec_dot4_fn)(int n, float *restrict s, int64_t ls, const void *restrict x,
				 const void *restrict y, size_t ys);

/* Prepares n_b rows of K activations for a row-interleaved GEMM (layout in
 * kernels/gemm.h); dst holds n_b * kern_act_stride(type, K) bytes. */
typedef void (*kern_act_fn)(const float *restrict x, int64_t K, int n_b, void *restrict dst);
/* For one group of 16 weight rows (K elements each, row-interleaved) and n_b
 * prepared activation rows (stride act_stride bytes):
 * y[b * ldy + i] = dot(row i, activation b), i < 16, b < n_b. */
typedef void (*kern_gemm_fn)(int64_t K, const void *restrict wg, const void *restrict act,
			     size_t act_stride, int n_b, float *restrict y, int64_t ldy);

/* Static facts about a type. */
typedef struct kern_type_traits {
	const char *name;        /* "Q4_0", as llama.cpp spells it */
	int blck_size;           /* elements per block (1 for F32/F16/BF16) */
	size_t type_size;        /* bytes per block */
	int is_quantized;
	kern_type vec_dot_type;  /* activation type its dot products take */
} kern_type_traits;

/* Per-ISA operation table, filled by kern_ops_init into caller-owned memory.
 * An entry is NULL only for a type herd does not support, and from_float
 * also for the codebook i-quants that need an importance matrix (IQ3_XXS
 * IQ2_S IQ2_XS IQ2_XXS IQ1_S IQ1_M), which herd reads but does not write. */
typedef struct kern_ops {
	kern_isa isa;
	kern_to_float_fn to_float[KERN_TYPE_COUNT];
	/* quantize: weights (reference quality) and activations alike. */
	kern_from_float_fn from_float[KERN_TYPE_COUNT];
	kern_vec_dot_fn vec_dot[KERN_TYPE_COUNT];
	/* NULL where the type has none (then vec_dot serves, row by row). */
	kern_vec_dot4_fn vec_dot4[KERN_TYPE_COUNT];
	/* Row-interleaved types only (kernels/gemm.h): activation preparation
	 * and the GEMM over one 16-row group. */
	kern_act_fn act[KERN_TYPE_COUNT];
	kern_gemm_fn gemm[KERN_TYPE_COUNT];
	/* Attention over the f16 KV cache (kernels/ops.h has the contracts). */
	float (*dot_f32_f16)(const float *x, const kern_fp16_t *y, int n);
	void (*axpy_f16)(float *y, float a, const kern_fp16_t *x, int n);
	void (*f32_to_f16_row)(kern_fp16_t *y, const float *x, int n);
	/* Attention over quantized KV rows (kernels/ops.h), set for Q8_0 and
	 * Q4_0 only: n rows stride bytes apart, one head of hd elements each. */
	void (*kv_scores[KERN_TYPE_COUNT])(int hd, const void *q, const void *k, size_t stride, int n,
					   float *sc);
	void (*kv_values[KERN_TYPE_COUNT])(int hd, const float *w, const void *v, size_t stride, int n,
					   float *o);
} kern_ops;

/* Traits of type t, or NULL when t is not a type herd knows. Thread-safe. */
const kern_type_traits *kern_type_info(int t);
/* "Q4_0" etc., or "unknown". Never NULL. */
const char *kern_type_name(int t);
/* Bytes of a row of n elements of type t (n a multiple of the block size);
 * 0 for an unknown type or a bad n. */
size_t kern_row_size(int t, int64_t n);

/* Fill ops for isa: every supported type gets its fastest variant at or
 * below isa, falling back to the reference. isa above what the CPU supports
 * is clamped to kern_isa_detect(). */
void kern_ops_init(kern_ops *ops, kern_isa isa);

/* Per-family fillers used by kern_ops_init (each sets only its own entries,
 * clamps isa to the CPU like kern_ops_init, and may be called directly, as
 * the kernel tests do). */
void kern_ops_init_legacy(kern_ops *ops, kern_isa isa); /* F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 */
void kern_ops_init_kquant(kern_ops *ops, kern_isa isa); /* Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K */
void kern_ops_init_iquant(kern_ops *ops, kern_isa isa); /* IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS IQ2_XXS IQ1_S IQ1_M */
void kern_ops_init_gemm(kern_ops *ops, kern_isa isa);   /* Q4_0_R16 Q8_0_R16 Q4_K_R16 Q6_K_R16 */
void kern_ops_init_attn(kern_ops *ops, kern_isa isa);   /* f16 KV-cache helpers */
void kern_ops_init_herd(kern_ops *ops, kern_isa isa);   /* herd's own HQ* types */

#ifdef __cplusplus
}
#endif
#endif
