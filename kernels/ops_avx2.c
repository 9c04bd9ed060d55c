/* AVX2 + F16C attention helpers over the f16 KV cache. */
#include <immintrin.h>

#include "fp16.h"
#include "ops.h"

float kern_dot_f32_f16_avx2(const float *x, const kern_fp16_t *y, int n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 16 <= n; i += 16) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i + 8))), a1);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), a0);
	a0 = _mm256_add_ps(a0, a1);
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	float r = _mm_cvtss_f32(s);
	for (; i < n; i++)
		r += x[i] * kern_fp16_to_fp32(y[i]);
	return r;
}

void kern_axpy_f16_avx2(float *y, float a, const kern_fp16_t *x, int n)
{
	const __m256 va = _mm256_set1_ps(a);
	int i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
						      _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * kern_fp16_to_fp32(x[i]);
}

void kern_f32_to_f16_row_avx2(kern_fp16_t *y, const float *x, int n)
{
	int i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		y[i] = kern_fp32_to_fp16(x[i]);
}

/* y[0..8) += a * (d * q[0..8)), q 8 int32 lanes. */
static inline void axpy8(float *y, __m256 va, __m256 vd, __m256i q)
{
	const __m256 v = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(q));
	_mm256_storeu_ps(y, _mm256_fmadd_ps(va, v, _mm256_loadu_ps(y)));
}

void kern_axpy_q8_0_avx2(float *y, float a, const void *x, int n)
{
	const kern_block_q8_0 *b = x;
	const __m256 va = _mm256_set1_ps(a);
	for (int i = 0; i < n / KERN_QK8_0; i++, y += KERN_QK8_0) {
		const __m256 vd = _mm256_set1_ps(kern_fp16_to_fp32(b[i].d));
		for (int j = 0; j < KERN_QK8_0; j += 8)
			axpy8(y + j, va, vd, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + j))));
	}
}

void kern_axpy_q4_0_avx2(float *y, float a, const void *x, int n)
{
	const kern_block_q4_0 *b = x;
	const __m256 va = _mm256_set1_ps(a);
	const __m128i m4 = _mm_set1_epi8(0x0f), off = _mm_set1_epi8(8);
	for (int i = 0; i < n / KERN_QK4_0; i++, y += KERN_QK4_0) {
		const __m256 vd = _mm256_set1_ps(kern_fp16_to_fp32(b[i].d));
		const __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
		const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), off);
		const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), off);
		axpy8(y, va, vd, _mm256_cvtepi8_epi32(lo));
		axpy8(y + 8, va, vd, _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
		axpy8(y + 16, va, vd, _mm256_cvtepi8_epi32(hi));
		axpy8(y + 24, va, vd, _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
	}
}
