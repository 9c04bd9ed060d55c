/* Quantized block layouts, bit-for-bit those of ggml (llama.cpp), so GGUF
 * tensors are used in place. Every block is a fixed-size struct; the
 * _Static_asserts pin sizes so a layout change cannot slip in silently.
 * Half-precision fields are raw IEEE binary16 bits (kern_fp16_t).
 */
#ifndef HERD_KERNELS_QUANT_BLOCKS_H
#define HERD_KERNELS_QUANT_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

typedef uint16_t kern_fp16_t; /* IEEE binary16 bits */
typedef uint16_t kern_bf16_t; /* bfloat16 bits (upper half of a float) */

#define KERN_QK4_0 32
#define KERN_QK4_1 32
#define KERN_QK5_0 32
#define KERN_QK5_1 32
#define KERN_QK8_0 32
#define KERN_QK8_1 32
#define KERN_QK_K 256
#define KERN_K_SCALE_SIZE 12

/* 4-bit, scale only: x = d * (q - 8). qs[j] low nibble = element j,
 * high nibble = element j + 16. */
typedef struct {
	kern_fp16_t d;
	uint8_t qs[KERN_QK4_0 / 2];
} kern_block_q4_0;

/* 4-bit, scale and min: x = d * q + m. */
typedef struct {
	kern_fp16_t d;
	kern_fp16_t m;
	uint8_t qs[KERN_QK4_1 / 2];
} kern_block_q4_1;

/* 5-bit: low 4 bits in qs as Q4_0, 5th bit of element j in bit j of qh. */
typedef struct {
	kern_fp16_t d;
	uint8_t qh[4];
	uint8_t qs[KERN_QK5_0 / 2];
} kern_block_q5_0;

typedef struct {
	kern_fp16_t d;
	kern_fp16_t m;
	uint8_t qh[4];
	uint8_t qs[KERN_QK5_1 / 2];
} kern_block_q5_1;

typedef struct {
	kern_fp16_t d;
	int8_t qs[KERN_QK8_0];
} kern_block_q8_0;

/* Activation format for Q4_1/Q5_1 dots: s = d * sum(qs). */
typedef struct {
	kern_fp16_t d;
	kern_fp16_t s;
	int8_t qs[KERN_QK8_1];
} kern_block_q8_1;

/* K-quants: super-blocks of 256 elements. */
typedef struct {
	uint8_t scales[KERN_QK_K / 16]; /* 4-bit scale | 4-bit min per 16 */
	uint8_t qs[KERN_QK_K / 4];      /* 2-bit quants */
	kern_fp16_t d;
	kern_fp16_t dmin;
} kern_block_q2_K;

typedef struct {
	uint8_t hmask[KERN_QK_K / 8]; /* high bit */
	uint8_t qs[KERN_QK_K / 4];    /* low 2 bits */
	uint8_t scales[12];           /* 16 x 6-bit scales */
	kern_fp16_t d;
} kern_block_q3_K;

typedef struct {
	kern_fp16_t d;
	kern_fp16_t dmin;
	uint8_t scales[KERN_K_SCALE_SIZE]; /* 8 x (6-bit scale, 6-bit min) */
	uint8_t qs[KERN_QK_K / 2];
} kern_block_q4_K;

typedef struct {
	kern_fp16_t d;
	kern_fp16_t dmin;
	uint8_t scales[KERN_K_SCALE_SIZE];
	uint8_t qh[KERN_QK_K / 8];
	uint8_t qs[KERN_QK_K / 2];
} kern_block_q5_K;

typedef struct {
	uint8_t ql[KERN_QK_K / 2];
	uint8_t qh[KERN_QK_K / 4];
	int8_t scales[KERN_QK_K / 16];
	kern_fp16_t d;
} kern_block_q6_K;

/* Activation format for K-quant dots. bsums[i] = sum of qs[16*i .. 16*i+15]. */
typedef struct {
	float d;
	int8_t qs[KERN_QK_K];
	int16_t bsums[KERN_QK_K / 16];
} kern_block_q8_K;

/* I-quants (ggml's "importance" types): codebook quants, super-blocks of
 * 256 except IQ4_NL (32). Grids and sign tables: kernels/iq_tables.c.
 * IQ4_NL/IQ4_XS: 4-bit indices into a fixed non-linear 16-value table;
 * IQ4_NL qs as Q4_0 (low nibble element j, high nibble j + 16). */
#define KERN_QK4_NL 32
typedef struct {
	kern_fp16_t d;
	uint8_t qs[KERN_QK4_NL / 2];
} kern_block_iq4_nl;

/* 8 sub-blocks of 32 with 6-bit scales (low 4 bits in scales_l, nibble
 * per sub-block; top 2 bits in scales_h, bit pair per sub-block); x =
 * d * (scale - 32) * value[q]. */
typedef struct {
	kern_fp16_t d;
	uint16_t scales_h;
	uint8_t scales_l[KERN_QK_K / 64];
	uint8_t qs[KERN_QK_K / 2];
} kern_block_iq4_xs;

/* Per 32: 4 bytes of 8-element grid indices, then a 32-bit word of 4 x 7
 * sign bits and a 4-bit scale (top). */
typedef struct {
	kern_fp16_t d;
	uint16_t qs[KERN_QK_K / 8];
} kern_block_iq2_xxs;

/* qs: 9-bit grid index | 7-bit signs << 9 per 8; two 4-bit scales per 32. */
typedef struct {
	kern_fp16_t d;
	uint16_t qs[KERN_QK_K / 8];
	uint8_t scales[KERN_QK_K / 32];
} kern_block_iq2_xs;

/* qs: 32 low index bytes then 32 bytes of explicit signs; qh: 2 high index
 * bits per 8 elements; two 4-bit scales per 32. */
typedef struct {
	kern_fp16_t d;
	uint8_t qs[KERN_QK_K / 4];
	uint8_t qh[KERN_QK_K / 32];
	uint8_t scales[KERN_QK_K / 32];
} kern_block_iq2_s;

/* 64 bytes of 4-element grid indices, then per 32 a word of signs+scale as
 * IQ2_XXS. */
typedef struct {
	kern_fp16_t d;
	uint8_t qs[3 * KERN_QK_K / 8];
} kern_block_iq3_xxs;

/* 9-bit indices of 4-element grid entries (high bit in qh), explicit signs,
 * one 4-bit scale per 32 (two per byte). */
typedef struct {
	kern_fp16_t d;
	uint8_t qs[KERN_QK_K / 4];
	uint8_t qh[KERN_QK_K / 32];
	uint8_t signs[KERN_QK_K / 8];
	uint8_t scales[KERN_QK_K / 64];
} kern_block_iq3_s;

/* 11-bit indices of ternary 8-element grid entries (low 8 in qs, 3 high per
 * 8 in qh), per 32 a 3-bit scale (qh bits 12..14) and a delta sign (bit 15). */
typedef struct {
	kern_fp16_t d;
	uint8_t qs[KERN_QK_K / 8];
	uint16_t qh[KERN_QK_K / 32];
} kern_block_iq1_s;

/* As IQ1_S, with per-8 delta signs and 3-bit scales per 16; the fp16 super
 * scale is spread over the top nibbles of the four scale words. */
typedef struct {
	uint8_t qs[KERN_QK_K / 8];
	uint8_t qh[KERN_QK_K / 16];
	uint8_t scales[KERN_QK_K / 32];
} kern_block_iq1_m;

_Static_assert(sizeof(kern_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(kern_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(kern_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(kern_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(kern_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(kern_block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(kern_block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(kern_block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(kern_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(kern_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(kern_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(kern_block_q8_K) == 292, "q8_K layout");
_Static_assert(offsetof(kern_block_q2_K, d) == 80, "q2_K d offset");
_Static_assert(offsetof(kern_block_q3_K, d) == 108, "q3_K d offset");
_Static_assert(offsetof(kern_block_q6_K, d) == 208, "q6_K d offset");

_Static_assert(sizeof(kern_block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(kern_block_iq4_xs) == 136, "iq4_xs layout");
_Static_assert(sizeof(kern_block_iq2_xxs) == 66, "iq2_xxs layout");
_Static_assert(sizeof(kern_block_iq2_xs) == 74, "iq2_xs layout");
_Static_assert(sizeof(kern_block_iq2_s) == 82, "iq2_s layout");
_Static_assert(sizeof(kern_block_iq3_xxs) == 98, "iq3_xxs layout");
_Static_assert(sizeof(kern_block_iq3_s) == 110, "iq3_s layout");
_Static_assert(sizeof(kern_block_iq1_s) == 50, "iq1_s layout");
_Static_assert(sizeof(kern_block_iq1_m) == 56, "iq1_m layout");

#endif
