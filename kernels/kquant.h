/* K-quant kernels (internal): Q2_K Q3_K Q4_K Q5_K Q6_K weights and the Q8_K
 * activation type, in ggml's exact block layouts (quant_blocks.h) and
 * numerics. Super-blocks of KERN_QK_K = 256 elements; every n below is a
 * multiple of 256. All functions are pure (no state, no allocation) and
 * thread-safe; x and y must not overlap.
 *
 * Signatures are kern_to_float_fn / kern_from_float_fn / kern_vec_dot_fn
 * from kernels.h. Dots take a row of the weight type (x) and a row of Q8_K
 * (y) and compute with integer quants and scales, so SIMD variants differ
 * from _ref only in float summation order.
 *
 * SIMD variants exist only in builds that compile the _avx2.c / _avx512.c
 * files with their flags; callers reach them through kern_ops_init_kquant
 * only after checking the CPU (kern_isa_detect).
 */
#ifndef HERD_KERNELS_KQUANT_H
#define HERD_KERNELS_KQUANT_H

#include <stdint.h>
#include <string.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Round to nearest, ties to even, via the float mantissa (valid for
 * |f| <= 4194303); the same rounding as ggml's nearest_int and as
 * cvtps2dq under the default MXCSR, which the SIMD Q8_K quantizer relies
 * on. */
static inline int kern_nearest_int(float f)
{
	const float v = f + 12582912.f;
	int32_t i;
	memcpy(&i, &v, 4);
	return (i & 0x007fffff) - 0x00400000;
}

/* --- reference dequantization: y[0..n) = x --- */
void kern_dequant_q2_k_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q3_k_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q4_k_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q5_k_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q6_k_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q8_k_ref(const void *restrict x, float *restrict y, int64_t n);

/* --- reference quantization (ggml's reference-quality searches) --- */
void kern_quant_q2_k_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q3_k_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q4_k_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q5_k_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q6_k_ref(const float *restrict x, void *restrict y, int64_t n);
/* Bit-identical to ggml's quantize_row_q8_K_ref (bsums also zeroed for an
 * all-zero block, where ggml leaves them unwritten). */
void kern_quant_q8_k_ref(const float *restrict x, void *restrict y, int64_t n);
/* SIMD activation quantizers: bit-identical to kern_quant_q8_k_ref. */
void kern_quant_q8_k_avx2(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_k_avx512(const float *restrict x, void *restrict y, int64_t n);

/* --- dots: *s = sum_i x[i] * y[i], x a row of the weight type, y Q8_K --- */
void kern_dot_q2_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);
void kern_dot_q3_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);
void kern_dot_q4_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);
void kern_dot_q5_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);
void kern_dot_q6_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);
/* Q8_K x Q8_K: only so the table has no hole; not a hot path. */
void kern_dot_q8_k_q8_k_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);

void kern_dot_q2_k_q8_k_avx2(int n, float *restrict s, const void *restrict x,
			     const void *restrict y);
void kern_dot_q3_k_q8_k_avx2(int n, float *restrict s, const void *restrict x,
			     const void *restrict y);
void kern_dot_q4_k_q8_k_avx2(int n, float *restrict s, const void *restrict x,
			     const void *restrict y);
void kern_dot_q5_k_q8_k_avx2(int n, float *restrict s, const void *restrict x,
			     const void *restrict y);
void kern_dot_q6_k_q8_k_avx2(int n, float *restrict s, const void *restrict x,
			     const void *restrict y);

void kern_dot_q2_k_q8_k_avx512(int n, float *restrict s, const void *restrict x,
			       const void *restrict y);
void kern_dot_q3_k_q8_k_avx512(int n, float *restrict s, const void *restrict x,
			       const void *restrict y);
void kern_dot_q4_k_q8_k_avx512(int n, float *restrict s, const void *restrict x,
			       const void *restrict y);
void kern_dot_q5_k_q8_k_avx512(int n, float *restrict s, const void *restrict x,
			       const void *restrict y);
void kern_dot_q6_k_q8_k_avx512(int n, float *restrict s, const void *restrict x,
			       const void *restrict y);

/* Unpack the 12-byte Q4_K/Q5_K scales array into 8 six-bit scales (sc) and
 * 8 six-bit mins (m), sub-block j covering elements 32j..32j+31. */
static inline void kern_kquant_unpack_scale_min_k4(const uint8_t q[12], uint8_t sc[8],
						   uint8_t m[8])
{
	for (int j = 0; j < 4; j++) {
		sc[j] = q[j] & 63;
		m[j] = q[j + 4] & 63;
	}
	for (int j = 4; j < 8; j++) {
		sc[j] = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		m[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

/* Same unpacking as 32-bit word arithmetic (what the SIMD paths use): out
 * bytes 0..7 are the 8 scales, bytes 8..15 the 8 mins. */
static inline void kern_kquant_unpack_k4_u32(const uint8_t q[12], uint32_t out[4])
{
	const uint32_t kmask1 = 0x3f3f3f3fu, kmask2 = 0x0f0f0f0fu, kmask3 = 0x03030303u;
	uint32_t u[3];
	memcpy(u, q, 12);
	out[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
	out[2] = u[1] & kmask1;
	out[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
	out[0] = u[0] & kmask1;
}

/* Unpack Q3_K's 12-byte scales into 16 unsigned 6-bit scales (bytes of a),
 * scale j covering elements 16j..16j+15. Low nibbles: bytes 0..7 (j < 8 low
 * nibble, j >= 8 high nibble of byte j-8); top 2 bits: byte 8 + j%4, bit
 * pair j/4. Done as 32-bit word arithmetic, four scales per operation. */
static inline void kern_kquant_unpack_q3_u32(const uint8_t q[12], uint32_t a[4])
{
	const uint32_t kmask1 = 0x03030303u, kmask2 = 0x0f0f0f0fu;
	uint32_t u[3];
	memcpy(u, q, 12);
	a[0] = (u[0] & kmask2) | (((u[2] >> 0) & kmask1) << 4);
	a[1] = (u[1] & kmask2) | (((u[2] >> 2) & kmask1) << 4);
	a[2] = ((u[0] >> 4) & kmask2) | (((u[2] >> 4) & kmask1) << 4);
	a[3] = ((u[1] >> 4) & kmask2) | (((u[2] >> 6) & kmask1) << 4);
}

/* As above, minus 32: signed scales -32..31. */
static inline void kern_kquant_unpack_scales_q3_k(const uint8_t q[12], int8_t sc[16])
{
	uint32_t a[4];
	kern_kquant_unpack_q3_u32(q, a);
	/* bytes are 0..63; subtract 32 from each byte without borrows across
	 * bytes: set bit 7 first, subtract, then flip bit 7 back. */
	for (int k = 0; k < 4; k++)
		a[k] = ((a[k] | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
	memcpy(sc, a, 16);
}

#ifdef __cplusplus
}
#endif
#endif
