/* I-quant kernels (internal): IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS
 * IQ2_XXS IQ1_S IQ1_M weights, in ggml's exact block layouts
 * (quant_blocks.h) and numerics. IQ4_NL has blocks of 32 and dots with
 * Q8_0; every other type has super-blocks of 256 and dots with Q8_K.
 *
 * One model of every type: each 32-element sub-block decodes to 32 signed
 * integer weights w[j] and two integer scales ls[0] (elements 0..15) and
 * ls[1] (16..31), and element j is  d * ls[j/16] * w[j] * F  with d the
 * block's fp16 scale and F a power of two per type (kern_iq_unit). IQ1's
 * "grid value + delta" is folded in as w = 8 * grid +- 1 with F = 1/8.
 * Dequantization computes the float factor d * ls * F first and multiplies
 * it by w, which rounds exactly as ggml's formulas do; dots sum w * q8 and
 * ls * (that) in int32 (bounds below 2^28 for every type) and apply
 * d * d_y * F once per super-block.
 *
 * All functions are pure and thread-safe; x and y must not overlap. SIMD
 * variants are reached through kern_ops_init_iquant only after checking
 * the CPU.
 */
#ifndef HERD_KERNELS_IQUANT_H
#define HERD_KERNELS_IQUANT_H

#include <stdint.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Codebooks (kernels/iq_tables.c, data from llama.cpp's ggml-common.h). */
extern const uint8_t kern_iq_ksigns[128];
extern const uint64_t kern_iq2xxs_grid[256];
extern const uint64_t kern_iq2xs_grid[512];
extern const uint64_t kern_iq2s_grid[1024];
extern const uint32_t kern_iq3xxs_grid[256];
extern const uint32_t kern_iq3s_grid[512];
extern const uint64_t kern_iq1s_grid[2048];
/* IQ4_NL/IQ4_XS's 16 non-linear values (ggml's kvalues_iq4nl). */
extern const int8_t kern_iq4nl_values[16];

/* Decoder of sub-block ib (0..7; 0 for IQ4_NL) of one block. */
typedef void (*kern_iq_decode_fn)(const void *restrict blk, int ib, int8_t w[32], int ls[2]);

typedef struct kern_iq_desc {
	kern_type type;
	int blck_size;     /* 32 (IQ4_NL) or 256 */
	size_t type_size;  /* bytes per block */
	float unit;        /* F above */
	kern_iq_decode_fn decode;
} kern_iq_desc;

/* The descriptor of an i-quant type, or NULL for any other type. */
const kern_iq_desc *kern_iq_desc_of(kern_type t);
/* The fp16 block scale d of any i-quant block (IQ1_M spreads it). */
float kern_iq_block_d(kern_type t, const void *blk);

/* IQ1_M's super-block scale, as fp16 bits, from the top nibbles of its four
 * 16-bit scale words. */
static inline uint16_t kern_iq1m_scale_bits(const uint8_t scales[8])
{
	const uint16_t s0 = (uint16_t)(scales[0] | scales[1] << 8), s1 = (uint16_t)(scales[2] | scales[3] << 8);
	const uint16_t s2 = (uint16_t)(scales[4] | scales[5] << 8), s3 = (uint16_t)(scales[6] | scales[7] << 8);
	return (uint16_t)((s0 >> 12) | ((s1 >> 8) & 0x00f0) | ((s2 >> 4) & 0x0f00) | (s3 & 0xf000));
}

/* IQ4_XS's 6-bit scale of sub-block ib, minus 32. */
static inline int kern_iq4xs_scale(const kern_block_iq4_xs *b, int ib)
{
	return (((b->scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((b->scales_h >> 2 * ib) & 3) << 4)) - 32;
}

/* --- reference dequantization: y[0..n) = x --- */
void kern_dequant_iq4_nl_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq4_xs_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq3_s_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq3_xxs_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq2_s_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq2_xs_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq2_xxs_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq1_s_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_iq1_m_ref(const void *restrict x, float *restrict y, int64_t n);

/* --- reference quantization without an importance matrix (ggml's search
 * for IQ4_NL/IQ4_XS as llama-quantize runs it: weights x^2, 7 scale tries) --- */
void kern_quant_iq4_nl_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_iq4_xs_ref(const float *restrict x, void *restrict y, int64_t n);
/* IQ3_S by herd's own search (kernels/quant_iq3s.c; weights x^2): not
 * ggml's bytes, an error of the same size. */
void kern_quant_iq3_s_ref(const float *restrict x, void *restrict y, int64_t n);

/* --- dots: *s = sum_i x[i] * y[i]; y is Q8_0 for IQ4_NL, Q8_K otherwise --- */
#define KERN_IQ_DOTS(isa)                                                                        \
	void kern_dot_iq4_nl_q8_0_##isa(int n, float *restrict s, const void *restrict x,         \
					const void *restrict y);                                  \
	void kern_dot_iq4_xs_q8_k_##isa(int n, float *restrict s, const void *restrict x,         \
					const void *restrict y);                                  \
	void kern_dot_iq3_s_q8_k_##isa(int n, float *restrict s, const void *restrict x,          \
				       const void *restrict y);                                   \
	void kern_dot_iq3_xxs_q8_k_##isa(int n, float *restrict s, const void *restrict x,        \
					 const void *restrict y);                                 \
	void kern_dot_iq2_s_q8_k_##isa(int n, float *restrict s, const void *restrict x,          \
				       const void *restrict y);                                   \
	void kern_dot_iq2_xs_q8_k_##isa(int n, float *restrict s, const void *restrict x,         \
					const void *restrict y);                                  \
	void kern_dot_iq2_xxs_q8_k_##isa(int n, float *restrict s, const void *restrict x,        \
					 const void *restrict y);                                 \
	void kern_dot_iq1_s_q8_k_##isa(int n, float *restrict s, const void *restrict x,          \
				       const void *restrict y);                                   \
	void kern_dot_iq1_m_q8_k_##isa(int n, float *restrict s, const void *restrict x,          \
				       const void *restrict y);
KERN_IQ_DOTS(ref)
KERN_IQ_DOTS(avx2)
KERN_IQ_DOTS(avx512)
#undef KERN_IQ_DOTS

/* --- four activation rows per weight row (kern_vec_dot4_fn): the reference
 * is four reference dots; AVX2 decodes once (and serves AVX-512 too, but
 * for IQ4_XS) --- */
#define KERN_IQ_DOT4(N, VD, isa)                                                                  \
	void kern_dot4_##N##_##VD##_##isa(int n, float *restrict s, int64_t ls, const void *restrict x, \
					  const void *restrict y, size_t ys);
#define KERN_IQ_DOT4S(isa)                                                                        \
	KERN_IQ_DOT4(iq4_nl, q8_0, isa)                                                           \
	KERN_IQ_DOT4(iq4_xs, q8_k, isa)                                                           \
	KERN_IQ_DOT4(iq3_s, q8_k, isa)                                                            \
	KERN_IQ_DOT4(iq3_xxs, q8_k, isa)                                                          \
	KERN_IQ_DOT4(iq2_s, q8_k, isa)                                                            \
	KERN_IQ_DOT4(iq2_xs, q8_k, isa)                                                           \
	KERN_IQ_DOT4(iq2_xxs, q8_k, isa)                                                          \
	KERN_IQ_DOT4(iq1_s, q8_k, isa)                                                            \
	KERN_IQ_DOT4(iq1_m, q8_k, isa)
KERN_IQ_DOT4S(ref)
KERN_IQ_DOT4S(avx2)
#undef KERN_IQ_DOT4S
KERN_IQ_DOT4(iq4_xs, q8_k, avx512) /* the one with its own AVX-512 version */
#undef KERN_IQ_DOT4

#ifdef __cplusplus
}
#endif
#endif
