/* AVX-512 attention helpers over the f16 KV cache. */
#include <immintrin.h>

#include "fp16.h"
#include "ops.h"

float kern_dot_f32_f16_avx512(const float *x, const kern_fp16_t *y, int n)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	int i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i))), a0);
		a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i + 16))), a1);
	}
	for (; i + 16 <= n; i += 16)
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i))), a0);
	float r = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
	for (; i < n; i++)
		r += x[i] * kern_fp16_to_fp32(y[i]);
	return r;
}

void kern_axpy_f16_avx512(float *y, float a, const kern_fp16_t *x, int n)
{
	const __m512 va = _mm512_set1_ps(a);
	int i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))),
						      _mm512_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * kern_fp16_to_fp32(x[i]);
}
