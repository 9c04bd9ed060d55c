/* AVX-512 (BW/VL/DQ/VNNI) i-quant dots: two 32-element sub-blocks per zmm,
 * decoded by the shared 256-bit decoders (kernels/iquant_simd.h); the
 * activations take the weights' signs through a byte mask, maddubs makes
 * s16 pairs and vpdpwssd multiplies them by the int16 scales into int32 in
 * one instruction. Results equal _ref up to float summation order. */
#include "iquant_simd.h"

#include <stdlib.h>

static inline __m512i cat256(__m256i lo, __m256i hi)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* acc + (per lane) ls * w * q8 over sub-blocks a, b (64 activations). */
static inline __m512i sub64(iq_v a, iq_v b, const int8_t *q8, __m512i acc)
{
	const __mmask64 neg = _mm512_movepi8_mask(cat256(a.sgn, b.sgn));
	__m512i y = _mm512_loadu_si512((const void *)q8);
	y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
	return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(cat256(a.mag, b.mag), y), cat256(a.sc, b.sc));
}

/* F: the type's kern_iq_desc unit (the SIMD tests would catch a mismatch). */
#define IQ_DOT_AVX512(N, F, D)                                                                    \
	void kern_dot_##N##_q8_k_avx512(int n, float *restrict s, const void *restrict vx,        \
					const void *restrict vy)                                  \
	{                                                                                         \
		const kern_block_##N *x = vx;                                                     \
		const kern_block_q8_K *y = vy;                                                    \
		__m512 acc = _mm512_setzero_ps();                                                 \
		for (int i = 0; i < n / KERN_QK_K; i++) {                                         \
			const int8_t *q8 = y[i].qs;                                               \
			__m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();         \
			for (int ib = 0; ib < KERN_QK_K / 32; ib += 4, q8 += 128) {               \
				s0 = sub64(iqs_dec_##N(x + i, ib), iqs_dec_##N(x + i, ib + 1), q8, s0); \
				s1 = sub64(iqs_dec_##N(x + i, ib + 2), iqs_dec_##N(x + i, ib + 3),  \
					   q8 + 64, s1);                                          \
			}                                                                         \
			acc = _mm512_fmadd_ps(_mm512_set1_ps(D(x[i]) * y[i].d * (F)),               \
					      _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc); \
		}                                                                                 \
		*s = _mm512_reduce_add_ps(acc);                                                   \
	}

IQ_DOT_AVX512(iq2_s, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX512(iq2_xs, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX512(iq1_s, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX512(iq1_m, 0.125f, IQS_D_IQ1M)
#undef IQ_DOT_AVX512

/* IQ4_XS: 64 indices (two sub-blocks) straight into a zmm, values and
 * signs from two table lookups (|value| and index < 8). */
static inline __m512i iq4_idx64(const uint8_t *qs)
{
	const __m256i t = _mm256_loadu_si256((const __m256i *)qs);
	const __m256i m = _mm256_set1_epi8(0x0F);
	const __m512i z = cat256(_mm256_and_si256(t, m), _mm256_and_si256(_mm256_srli_epi16(t, 4), m));
	/* [lo 0..15, lo 16..31, hi 0..15, hi 16..31] -> [lo 0..15, hi 0..15, lo 16..31, hi 16..31] */
	return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

/* |value| of every IQ4 index, in each 128-bit lane. */
static inline __m512i iq4_abs_table(void)
{
	int8_t absv[16];
	for (int k = 0; k < 16; k++)
		absv[k] = (int8_t)abs(kern_iq4nl_values[k]);
	return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)absv));
}

/* sum + ls * value * q8 over sub-blocks ib, ib + 1 of one activation row,
 * the weights given as |value| (mag), their sign mask and the scales. */
static inline __m512i iq4_pair(__m512i sum, __m512i mag, __mmask64 neg, __m512i sc, const int8_t *q8)
{
	__m512i y = _mm512_loadu_si512((const void *)q8);
	y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
	return _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(mag, y), sc);
}

static inline __m512i iq4_xs_sc(const kern_block_iq4_xs *b, int ib)
{
	return cat256(_mm256_set1_epi16((short)kern_iq4xs_scale(b, ib)),
		      _mm256_set1_epi16((short)kern_iq4xs_scale(b, ib + 1)));
}

void kern_dot_iq4_xs_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
				 const void *restrict vy)
{
	const kern_block_iq4_xs *x = vx;
	const kern_block_q8_K *y = vy;
	const __m512i tab = iq4_abs_table(), eight = _mm512_set1_epi8(8);
	__m512 acc = _mm512_setzero_ps();
	for (int i = 0; i < n / KERN_QK_K; i++) {
		__m512i sum = _mm512_setzero_si512();
		for (int ib = 0; ib < KERN_QK_K / 32; ib += 2) {
			const __m512i idx = iq4_idx64(x[i].qs + 16 * ib);
			sum = iq4_pair(sum, _mm512_shuffle_epi8(tab, idx), _mm512_cmplt_epu8_mask(idx, eight),
				       iq4_xs_sc(x + i, ib), y[i].qs + 32 * ib);
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(x[i].d) * y[i].d), _mm512_cvtepi32_ps(sum), acc);
	}
	*s = _mm512_reduce_add_ps(acc);
}

/* Four activation rows, each index pair decoded once. */
void kern_dot4_iq4_xs_q8_k_avx512(int n, float *restrict s, int64_t ls, const void *restrict vx,
				  const void *restrict vy, size_t ys)
{
	const kern_block_iq4_xs *x = vx;
	const kern_block_q8_K *y[4];
	const __m512i tab = iq4_abs_table(), eight = _mm512_set1_epi8(8);
	__m512 acc[4];
	for (int k = 0; k < 4; k++) {
		y[k] = (const kern_block_q8_K *)((const char *)vy + k * ys);
		acc[k] = _mm512_setzero_ps();
	}
	for (int i = 0; i < n / KERN_QK_K; i++) {
		__m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
				  _mm512_setzero_si512()};
		for (int ib = 0; ib < KERN_QK_K / 32; ib += 2) {
			const __m512i idx = iq4_idx64(x[i].qs + 16 * ib);
			const __m512i mag = _mm512_shuffle_epi8(tab, idx), sc = iq4_xs_sc(x + i, ib);
			const __mmask64 neg = _mm512_cmplt_epu8_mask(idx, eight);
			for (int k = 0; k < 4; k++)
				sum[k] = iq4_pair(sum[k], mag, neg, sc, y[k][i].qs + 32 * ib);
		}
		const float dx = _cvtsh_ss(x[i].d);
		for (int k = 0; k < 4; k++)
			acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[k][i].d), _mm512_cvtepi32_ps(sum[k]), acc[k]);
	}
	for (int k = 0; k < 4; k++)
		s[k * ls] = _mm512_reduce_add_ps(acc[k]);
}

/* IQ3_S: 16 grid entries (two sub-blocks) in one gather, the stored sign
 * bits used as the mask as they are. */
static inline __m512i iq3_s_pair(const kern_block_iq3_s *b, int ib, const int8_t *q8, __m512i sum)
{
	const __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 8 * ib)));
	const __m512i h = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(b->qh[ib])),
					     _mm256_set1_epi32(b->qh[ib + 1]), 1);
	const __m512i sh = _mm512_setr_epi32(8, 7, 6, 5, 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1);
	const __m512i idx = _mm512_or_si512(lo, _mm512_and_si512(_mm512_sllv_epi32(h, sh), _mm512_set1_epi32(256)));
	const __m512i mag = _mm512_i32gather_epi32(idx, (const void *)kern_iq3s_grid, 4);
	uint64_t neg;
	memcpy(&neg, b->signs + 4 * ib, 8);
	const int l0 = 2 * (b->scales[ib / 2] & 0xf) + 1, l1 = 2 * (b->scales[ib / 2] >> 4) + 1;
	return iq4_pair(sum, mag, (__mmask64)neg, cat256(_mm256_set1_epi16((short)l0), _mm256_set1_epi16((short)l1)),
			q8);
}

/* The sign masks and scales of IQ2_XXS/IQ3_XXS sub-blocks ib, ib + 1:
 * their words of 4 x 7 sign bits (through the parity table) and 4-bit scale. */
static inline __mmask64 xxs_neg(uint32_t a0, uint32_t a1)
{
	return (__mmask64)((uint64_t)iqs_ksigns4(a0) | (uint64_t)iqs_ksigns4(a1) << 32);
}

static inline __m512i xxs_sc(uint32_t a0, uint32_t a1)
{
	return cat256(_mm256_set1_epi16((short)(2 * (a0 >> 28) + 1)), _mm256_set1_epi16((short)(2 * (a1 >> 28) + 1)));
}

static inline __m512i iq3_xxs_pair(const kern_block_iq3_xxs *b, int ib, const int8_t *q8, __m512i sum)
{
	const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 8 * ib)));
	const __m512i mag = _mm512_i32gather_epi32(idx, (const void *)kern_iq3xxs_grid, 4);
	const uint32_t a0 = iqs_rd32(b->qs + KERN_QK_K / 4 + 4 * ib), a1 = iqs_rd32(b->qs + KERN_QK_K / 4 + 4 * ib + 4);
	return iq4_pair(sum, mag, xxs_neg(a0, a1), xxs_sc(a0, a1), q8);
}

static inline __m512i iq2_xxs_pair(const kern_block_iq2_xxs *b, int ib, const int8_t *q8, __m512i sum)
{
	const uint8_t *q = (const uint8_t *)(b->qs + 4 * ib);
	/* index bytes 0..3 and 8..11 of the two sub-blocks' 16 bytes */
	const __m128i sel = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, -1, -1, -1, -1, -1, -1, -1, -1);
	const __m256i idx = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)q), sel));
	const __m512i mag = _mm512_i32gather_epi64(idx, (const void *)kern_iq2xxs_grid, 8);
	const uint32_t a0 = iqs_rd32(q + 4), a1 = iqs_rd32(q + 12);
	return iq4_pair(sum, mag, xxs_neg(a0, a1), xxs_sc(a0, a1), q8);
}

#define IQ_PAIR_DOT(N, F, PAIR)                                                                   \
	void kern_dot_##N##_q8_k_avx512(int n, float *restrict s, const void *restrict vx,        \
					const void *restrict vy)                                  \
	{                                                                                         \
		const kern_block_##N *x = vx;                                                     \
		const kern_block_q8_K *y = vy;                                                    \
		__m512 acc = _mm512_setzero_ps();                                                 \
		for (int i = 0; i < n / KERN_QK_K; i++) {                                         \
			__m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();         \
			for (int ib = 0; ib < KERN_QK_K / 32; ib += 4) {                          \
				s0 = PAIR(x + i, ib, y[i].qs + 32 * ib, s0);                      \
				s1 = PAIR(x + i, ib + 2, y[i].qs + 32 * ib + 64, s1);             \
			}                                                                         \
			acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(x[i].d) * y[i].d * (F)),   \
					      _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc); \
		}                                                                                 \
		*s = _mm512_reduce_add_ps(acc);                                                   \
	}
IQ_PAIR_DOT(iq3_xxs, 0.25f, iq3_xxs_pair)
IQ_PAIR_DOT(iq2_xxs, 0.125f, iq2_xxs_pair)
IQ_PAIR_DOT(iq3_s, 1.0f, iq3_s_pair)
#undef IQ_PAIR_DOT

/* IQ4_NL x Q8_0: one block per ymm (blocks of 32 have one scale each),
 * the int8 products summed by VNNI vpdpbusd in one instruction. */
static inline __m256 iq4_nl_vnni(const kern_block_iq4_nl *x, const kern_block_q8_0 *y, __m256 acc)
{
	const __m256i w = iqs_iq4_values(x->qs);
	const __m256i q8 = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y->qs), w);
	const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), q8);
	return _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x->d) * _cvtsh_ss(y->d)), _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_iq4_nl_q8_0_avx512(int n, float *restrict s, const void *restrict vx,
				 const void *restrict vy)
{
	const kern_block_iq4_nl *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK4_NL;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = iq4_nl_vnni(x + i, y + i, acc0);
		acc1 = iq4_nl_vnni(x + i + 1, y + i + 1, acc1);
	}
	if (i < nb)
		acc0 = iq4_nl_vnni(x + i, y + i, acc0);
	*s = iqs_hsum_ps(_mm256_add_ps(acc0, acc1));
}
