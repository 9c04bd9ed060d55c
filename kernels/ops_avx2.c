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
