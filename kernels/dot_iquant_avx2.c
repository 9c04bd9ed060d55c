/* AVX2 i-quant dots. Per 32-element sub-block (kernels/iquant_simd.h):
 * maddubs of the weight magnitudes with the Q8 activations carrying the
 * weights' signs (s16 pairs, |.| <= 2 * 127 * 127), madd with the int16
 * scales (s32), summed per super-block, then one fused multiply-add by
 * d_x * d_y * F. Results equal _ref up to float summation order. */
#include "iquant_simd.h"

/* F: the type's kern_iq_desc unit (the SIMD tests would catch a mismatch). */
#define IQ_DOT_AVX2(N, F, D)                                                                      \
	void kern_dot_##N##_q8_k_avx2(int n, float *restrict s, const void *restrict vx,          \
				      const void *restrict vy)                                    \
	{                                                                                         \
		const kern_block_##N *x = vx;                                                     \
		const kern_block_q8_K *y = vy;                                                    \
		__m256 acc = _mm256_setzero_ps();                                                 \
		for (int i = 0; i < n / KERN_QK_K; i++) {                                         \
			const int8_t *q8 = y[i].qs;                                               \
			__m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();         \
			for (int ib = 0; ib < KERN_QK_K / 32; ib += 2, q8 += 64) {                \
				s0 = _mm256_add_epi32(s0, iqs_sub32(iqs_dec_##N(x + i, ib), q8));     \
				s1 = _mm256_add_epi32(s1, iqs_sub32(iqs_dec_##N(x + i, ib + 1), q8 + 32)); \
			}                                                                         \
			acc = _mm256_fmadd_ps(_mm256_set1_ps(D(x[i]) * y[i].d * (F)),               \
					      _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc); \
		}                                                                                 \
		*s = iqs_hsum_ps(acc);                                                                \
	}

IQ_DOT_AVX2(iq4_xs, 1.0f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq3_s, 1.0f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq3_xxs, 0.25f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq2_s, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq2_xs, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq2_xxs, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq1_s, 0.125f, IQS_D_PLAIN)
IQ_DOT_AVX2(iq1_m, 0.125f, IQS_D_IQ1M)
#undef IQ_DOT_AVX2

void kern_dot_iq4_nl_q8_0_avx2(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_iq4_nl *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK4_NL;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = iqs_iq4_nl_block(x + i, y + i, acc0);
		acc1 = iqs_iq4_nl_block(x + i + 1, y + i + 1, acc1);
	}
	if (i < nb)
		acc0 = iqs_iq4_nl_block(x + i, y + i, acc0);
	*s = iqs_hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* Four activation rows: each sub-block decoded once, dotted with four. */
#define IQ_DOT4_AVX2(N, F, D)                                                                     \
	void kern_dot4_##N##_q8_k_avx2(int n, float *restrict s, int64_t ls, const void *restrict vx, \
				       const void *restrict vy, size_t ys)                         \
	{                                                                                         \
		const kern_block_##N *x = vx;                                                     \
		const kern_block_q8_K *y[4];                                                      \
		__m256 acc[4];                                                                    \
		for (int k = 0; k < 4; k++) {                                                     \
			y[k] = (const kern_block_q8_K *)((const char *)vy + k * ys);              \
			acc[k] = _mm256_setzero_ps();                                             \
		}                                                                                 \
		for (int i = 0; i < n / KERN_QK_K; i++) {                                         \
			__m256i sum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(),         \
					  _mm256_setzero_si256(), _mm256_setzero_si256()};        \
			for (int ib = 0; ib < KERN_QK_K / 32; ib++) {                             \
				const iq_v v = iqs_dec_##N(x + i, ib);                            \
				for (int k = 0; k < 4; k++)                                       \
					sum[k] = _mm256_add_epi32(sum[k], iqs_sub32(v, y[k][i].qs + 32 * ib)); \
			}                                                                         \
			const float dx = D(x[i]) * (F);                                           \
			for (int k = 0; k < 4; k++)                                               \
				acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[k][i].d),          \
							 _mm256_cvtepi32_ps(sum[k]), acc[k]);     \
		}                                                                                 \
		for (int k = 0; k < 4; k++)                                                       \
			s[k * ls] = iqs_hsum_ps(acc[k]);                                          \
	}

IQ_DOT4_AVX2(iq4_xs, 1.0f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq3_s, 1.0f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq3_xxs, 0.25f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq2_s, 0.125f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq2_xs, 0.125f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq2_xxs, 0.125f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq1_s, 0.125f, IQS_D_PLAIN)
IQ_DOT4_AVX2(iq1_m, 0.125f, IQS_D_IQ1M)
#undef IQ_DOT4_AVX2

void kern_dot4_iq4_nl_q8_0_avx2(int n, float *restrict s, int64_t ls, const void *restrict vx,
				const void *restrict vy, size_t ys)
{
	const kern_block_iq4_nl *x = vx;
	const kern_block_q8_0 *y[4];
	__m256 acc[4];
	for (int k = 0; k < 4; k++) {
		y[k] = (const kern_block_q8_0 *)((const char *)vy + k * ys);
		acc[k] = _mm256_setzero_ps();
	}
	for (int i = 0; i < n / KERN_QK4_NL; i++) {
		const iq_v v = iqs_signed(iqs_iq4_values(x[i].qs), _mm256_set1_epi16(1));
		const float dx = _cvtsh_ss(x[i].d);
		for (int k = 0; k < 4; k++)
			acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * _cvtsh_ss(y[k][i].d)),
						 _mm256_cvtepi32_ps(iqs_sub32(v, y[k][i].qs)), acc[k]);
	}
	for (int k = 0; k < 4; k++)
		s[k * ls] = iqs_hsum_ps(acc[k]);
}
