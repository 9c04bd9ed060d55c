/* Row-interleaved weight layouts and their GEMM kernels.
 *
 * A decode step over B sequences, or a prompt chunk of B tokens, multiplies
 * every weight matrix by B activation rows. Reading each weight block once
 * and applying it to all B rows is what makes batching pay, and SIMD lanes
 * work best as output rows: so weights are stored in groups of KERN_R = 16
 * consecutive rows, interleaved block by block, so that one 512-bit register
 * holds the same 4-element slice of all 16 rows and one VNNI dot-product
 * instruction advances 16 outputs at once.
 *
 * Q4_0_R16 block (one K-block of 32 elements for 16 rows, 288 bytes):
 *   d[16]      fp16 scales of the 16 rows
 *   qs[4][64]  chunk j holds, for each row r, the 4 bytes qs[4j .. 4j+3] of
 *              that row's Q4_0 block at bytes 4r .. 4r+3. Low nibbles are
 *              elements 4j..4j+3, high nibbles elements 16+4j..16+4j+3.
 * Q8_0_R16 block (544 bytes):
 *   d[16]      fp16 scales
 *   qs[8][64]  chunk g holds, for each row r, elements 4g..4g+3 of row r.
 * Q4_K_R16 super-block (256 elements for 16 rows, 2496 bytes):
 *   d[16], dmin[16]   fp16 super-block scales of the 16 rows
 *   sc[8][16]         6-bit sub-block scales, unpacked (sub-block s, row r)
 *   m[4][16][2]       6-bit sub-block mins as int16 pairs (2t, 2t+1) per row
 *                     (the VNNI int16 dot takes pairs)
 *   qs[4][8][64]      sub-block pair j, chunk c holds for each row r the
 *                     4 bytes qs[32j+4c .. 32j+4c+3] of its Q4_K block: low
 *                     nibbles are elements 4c.. of sub-block 2j, high
 *                     nibbles elements 4c.. of sub-block 2j+1
 * Q6_K_R16 super-block (256 elements for 16 rows, 4416 bytes):
 *   qs[16][4][64]     sub-block s (16 elements), chunk c holds for each row
 *                     r its elements 16s+4c .. 16s+4c+3 at bytes 4r .. 4r+3,
 *                     unpacked to one byte each: the unsigned 6-bit q
 *                     (0..63) of Q6_K, weight = d * sc * (q - 32)
 *   d[16]             fp16 super-block scales of the 16 rows
 *   sc[16][16]        int8 sub-block scales (sub-block s, row r)
 *   pad[32]           so every super-block, and each quant chunk, starts on
 *                     a cache line
 * A matrix of n_rows x K is n_rows/16 groups, each K/32 (K/256) blocks in
 * order. Q4_0/Q8_0_R16 hold exactly the plain type's bytes, so an image
 * stores them in place; Q4_K_R16 holds KERN_Q4_K_R16_ROW_BYTES (156) per row
 * and super-block against Q4_K's 144 (unpacked scales), Q6_K_R16
 * KERN_Q6_K_R16_ROW_BYTES (276) against Q6_K's 210 (unpacked quants), which
 * kern_row_size reports.
 *
 * Activation rows for these kernels (kern_act_fn output), per row b at
 * b * kern_act_stride(K):
 *   float d[nb]      Q8_0 scale of each block (nb = K/32)
 *   int32_t s[nb]    for Q4_0_R16: 8 * sum of the block's quants (Q4_0's
 *                    zero point); 0 for Q8_0_R16
 *   int8_t qs[K]     Q8_0 quants, bit-identical to kern_quant_q8_0_ref; for
 *                    Q8_0_R16 stored offset by +128 as uint8 (VNNI multiplies
 *                    unsigned by signed, and Q8_0 weights are the signed side)
 * For Q4_K_R16, per super-block of 256 (nsb = K/256), KERN_ACT_Q8K_BYTES each:
 *   float d; int16_t sums[8] (sum of each 32-element sub-block's quants);
 *   int8_t qs[256]: the Q8_K quantization of kern_quant_q8_k_ref
 * For Q6_K_R16, the plain Q8_K blocks themselves (kern_block_q8_K, 292
 * bytes: d, qs[256], bsums[16] summing each 16-element sub-block), row
 * after row: Q6_K's offset of 32 is -32 * bsums[s] per sub-block. The
 * quants are in [-127, 127], so |16 * bsums[s]| <= 32512 fits an int16.
 */
#ifndef HERD_KERNELS_GEMM_H
#define HERD_KERNELS_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KERN_R 16

typedef struct {
	kern_fp16_t d[KERN_R];
	uint8_t qs[4][64];
} kern_block_q4_0_r16;

typedef struct {
	kern_fp16_t d[KERN_R];
	int8_t qs[8][64];
} kern_block_q8_0_r16;

typedef struct {
	kern_fp16_t d[KERN_R];
	kern_fp16_t dmin[KERN_R];
	uint8_t sc[8][KERN_R];
	int16_t m[4][KERN_R][2];
	uint8_t qs[4][8][64];
} kern_block_q4_K_r16;

typedef struct {
	uint8_t qs[16][4][64];
	kern_fp16_t d[KERN_R];
	int8_t sc[16][KERN_R];
	uint8_t pad[32];
} kern_block_q6_K_r16;

#define KERN_ACT_Q8K_BYTES 276 /* float d, int16 sums[8], int8 qs[256] */

/* Bytes of Q4_K_R16 per row and super-block (its type_size): d and dmin,
 * 8 unpacked 6-bit scales as bytes, 8 mins as int16, 256 4-bit quants.
 * 156 against Q4_K's 144, whose 12 bytes of scales are packed. */
#define KERN_Q4_K_R16_ROW_BYTES                                             \
	(2 * sizeof(kern_fp16_t) + 8 * sizeof(uint8_t) + 8 * sizeof(int16_t) + KERN_QK_K / 2)

_Static_assert(KERN_Q4_K_R16_ROW_BYTES == 156, "Q4_K_R16 row bytes");
_Static_assert(sizeof(kern_block_q4_K_r16) == KERN_R * KERN_Q4_K_R16_ROW_BYTES, "q4_K_r16 layout");
_Static_assert(offsetof(kern_block_q4_K_r16, qs) == 448, "q4_K_r16 quants offset");
/* Bytes of Q6_K_R16 per row and super-block (its type_size): 256 quants
 * unpacked to bytes, d, 16 int8 scales, 2 bytes of padding. 276 against
 * Q6_K's 210, whose quants are packed into 6 bits. */
#define KERN_Q6_K_R16_ROW_BYTES (KERN_QK_K + sizeof(kern_fp16_t) + KERN_QK_K / 16 + 2)

_Static_assert(KERN_Q6_K_R16_ROW_BYTES == 276, "Q6_K_R16 row bytes");
_Static_assert(sizeof(kern_block_q6_K_r16) == KERN_R * KERN_Q6_K_R16_ROW_BYTES, "q6_K_r16 layout");
_Static_assert(sizeof(kern_block_q6_K_r16) % 64 == 0, "q6_K_r16 super-blocks on cache lines");
_Static_assert(sizeof(kern_block_q4_0_r16) == KERN_R * sizeof(kern_block_q4_0), "q4_0_r16 layout");
_Static_assert(sizeof(kern_block_q8_0_r16) == KERN_R * sizeof(kern_block_q8_0), "q8_0_r16 layout");

/* For the SIMD files: a kern_gemm_fn `name` running `tile` (an always-inline
 * function taking K / 32 blocks, the group, the activations and their
 * stride, a column count nc <= TW, y and ldy) over full tiles of TW
 * columns, then the tail as one call with a constant column count so the
 * compiler unrolls it too. TW <= 8. */
#define KERN_GEMM_TILE_TAIL(n, tile, TW)                                                           \
	case n:                                                                                    \
		if (n < TW)                                                                        \
			tile(nb, wg, rest, act_stride, n, y + b * ldy, ldy);                       \
		break;
#define KERN_GEMM_TILED(name, tile, TW)                                                            \
	_Static_assert(TW <= 8, "the tail switch covers 7 columns");                               \
	void name(int64_t K, const void *restrict wg, const void *restrict act, size_t act_stride,   \
		  int n_b, float *restrict y, int64_t ldy)                                          \
	{                                                                                          \
		const int64_t nb = K / 32;                                                         \
		int b = 0;                                                                         \
		for (; b + TW <= n_b; b += TW)                                                     \
			tile(nb, wg, (const char *)act + (size_t)b * act_stride, act_stride, TW,   \
			     y + b * ldy, ldy);                                                    \
		const char *rest = (const char *)act + (size_t)b * act_stride;                     \
		switch (n_b - b) {                                                                 \
			KERN_GEMM_TILE_TAIL(7, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(6, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(5, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(4, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(3, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(2, tile, TW)                                           \
			KERN_GEMM_TILE_TAIL(1, tile, TW)                                           \
		default: break;                                                                    \
		}                                                                                  \
	}

/* Interleaving policies: which plain types get their row-interleaved
 * layout. Nonzero means on. */
#define KERN_REPACK_ALL 1  /* Q4_0, Q8_0, Q4_K, Q6_K: the AVX-512 VNNI GEMMs */
#define KERN_REPACK_AVX2 2 /* Q4_0 and Q6_K: the types AVX2 has a GEMM for
			    * (maddubs saturates on Q8_0_R16's unsigned
			    * activations, and Q4_K_R16 has none yet) */

/* The interleaving that pays on this machine: 0 where the CPU has no SIMD
 * GEMM (the plain types' dot products are faster than the reference GEMM),
 * KERN_REPACK_AVX2 with AVX2, KERN_REPACK_ALL with AVX-512 VNNI. The policy
 * built on it, with the caller's opt-out, is convert_repack_enabled
 * (model/convert.h); the kernels read no environment. */
int kern_repack_worthwhile(void);
/* The policy kern_repack_worthwhile gives on a CPU whose best is isa. */
int kern_repack_policy(kern_isa isa);

/* The row-interleaved type for t (Q4_0 -> Q4_0_R16, ...), or -1. */
int kern_repack_type(kern_type t);
/* The same under a policy (KERN_REPACK_*): -1 when policy leaves t plain
 * (0: every type). */
int kern_repack_type_at(kern_type t, int policy);
/* Whether t is a row-interleaved type. */
int kern_type_is_r16(int t);
/* The plain type an interleaved type holds (Q4_0_R16 -> Q4_0), or -1. */
int kern_r16_base_type(int t);
/* Repacks a plain n_rows x K matrix of type t into its R16 layout at dst
 * (kern_row_size(kern_repack_type(t), K) * n_rows bytes). n_rows must be a
 * multiple of KERN_R. Returns 0 or HERD_E_INVAL. */
int kern_repack(kern_type t, const void *src, int64_t n_rows, int64_t K, void *dst);
/* Inverse, for conversions and tests. */
int kern_unpack_r16(kern_type r16, const void *src, int64_t n_rows, int64_t K, void *dst);

/* Bytes of one prepared activation row of K elements for the interleaved
 * type r16 (a 64-byte multiple). */
size_t kern_act_stride(int r16, int64_t K);

/* Row b of a Q4_0_R16/Q8_0_R16 activation buffer (layout above, nb blocks
 * a row, rows stride bytes apart): its scales, zero-point sums and quants
 * (for Q8_0_R16 the quants are the +128 uint8 form). */
typedef struct kern_act_q8_row {
	float *d;
	int32_t *s;
	int8_t *qs;
} kern_act_q8_row;

static inline kern_act_q8_row kern_act_q8_row_at(const void *act, size_t stride, int64_t nb, int b)
{
	char *row = (char *)act + (size_t)b * stride;
	return (kern_act_q8_row){(float *)row, (int32_t *)(row + 4 * nb), (int8_t *)(row + 8 * nb)};
}

void kern_act_q8_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
/* The Q4_0_R16 (unsigned_q 0) or Q8_0_R16 (unsigned_q 1) activation rows,
 * quantizing each block with quant_q8_0 (the reference or a SIMD Q8_0
 * quantizer: the same bytes). Every ISA's act variant is this with its
 * quantizer: the quantizer is the costly part. */
void kern_act_q8_with(const float *restrict x, int64_t K, int n_b, void *restrict dst, int unsigned_q,
		      kern_from_float_fn quant_q8_0);
void kern_act_q8_avx2(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_gemm_q4_0_r16_avx2(int64_t K, const void *restrict wg, const void *restrict act,
			     size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_act_q8u_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8u_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8k_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
/* One Q8_K block into its KERN_ACT_Q8K_BYTES activation form. */
void kern_act_q8k_from_block(const kern_block_q8_K *q, char *dst);
/* The Q4_K_R16 activation rows, quantizing each super-block with
 * quant_q8_k (the reference or a SIMD Q8_K quantizer: same bytes). */
void kern_act_q8k_with(const float *restrict x, int64_t K, int n_b, void *restrict dst,
		       kern_from_float_fn quant_q8_k);
void kern_act_q8k_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_gemm_q4_k_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q4_k_r16_avx512(int64_t K, const void *restrict wg, const void *restrict act,
			       size_t act_stride, int n_b, float *restrict y, int64_t ldy);
/* The Q6_K_R16 activation rows: plain Q8_K blocks of quant_q8_k, rows
 * kern_act_stride apart. */
void kern_act_q8k16_with(const float *restrict x, int64_t K, int n_b, void *restrict dst,
			 kern_from_float_fn quant_q8_k);
void kern_act_q8k16_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8k16_avx2(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8k16_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_gemm_q6_k_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q6_k_r16_avx2(int64_t K, const void *restrict wg, const void *restrict act,
			     size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q6_k_r16_avx512(int64_t K, const void *restrict wg, const void *restrict act,
			       size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q4_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q8_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_act_q8_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_gemm_q4_0_r16_avx512(int64_t K, const void *restrict wg, const void *restrict act,
			       size_t act_stride, int n_b, float *restrict y, int64_t ldy);
void kern_gemm_q8_0_r16_avx512(int64_t K, const void *restrict wg, const void *restrict act,
			       size_t act_stride, int n_b, float *restrict y, int64_t ldy);

#ifdef __cplusplus
}
#endif
#endif
