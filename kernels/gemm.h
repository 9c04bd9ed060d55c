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
 * A matrix of n_rows x K is n_rows/16 groups, each K/32 blocks in order.
 * Total bytes equal the plain type's, so an image stores it in place.
 *
 * Activation rows for these kernels (kern_act_fn output), per row b at
 * b * kern_act_stride(K):
 *   float d[nb]      Q8_0 scale of each block (nb = K/32)
 *   int32_t s[nb]    for Q4_0_R16: 8 * sum of the block's quants (Q4_0's
 *                    zero point); 0 for Q8_0_R16
 *   int8_t qs[K]     Q8_0 quants, bit-identical to kern_quant_q8_0_ref; for
 *                    Q8_0_R16 stored offset by +128 as uint8 (VNNI multiplies
 *                    unsigned by signed, and Q8_0 weights are the signed side)
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

_Static_assert(sizeof(kern_block_q4_0_r16) == KERN_R * sizeof(kern_block_q4_0), "q4_0_r16 layout");
_Static_assert(sizeof(kern_block_q8_0_r16) == KERN_R * sizeof(kern_block_q8_0), "q8_0_r16 layout");

/* Whether matrices should be interleaved on this machine: the CPU has the
 * SIMD GEMMs (elsewhere the plain types' dot products are faster than the
 * reference GEMM) and HERD_NO_REPACK is not set in the environment. Shared
 * images and the herd command follow this one policy, so a model run from a
 * file and from an image compute the same numbers. */
int kern_repack_worthwhile(void);

/* The row-interleaved type for t (Q4_0 -> Q4_0_R16, ...), or -1. */
int kern_repack_type(kern_type t);
/* Whether t is a row-interleaved type. */
int kern_type_is_r16(int t);
/* The plain type an interleaved type holds (Q4_0_R16 -> Q4_0), or -1. */
int kern_r16_base_type(int t);
/* Repacks a plain n_rows x K matrix of type t into its R16 layout at dst
 * (same size). n_rows must be a multiple of KERN_R. Returns 0 or
 * HERD_E_INVAL. */
int kern_repack(kern_type t, const void *src, int64_t n_rows, int64_t K, void *dst);
/* Inverse, for conversions and tests. */
int kern_unpack_r16(kern_type r16, const void *src, int64_t n_rows, int64_t K, void *dst);

/* Bytes of one prepared activation row of K elements (64-byte multiple). */
size_t kern_act_stride(int64_t K);

void kern_act_q8_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8u_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst);
void kern_act_q8u_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst);
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
