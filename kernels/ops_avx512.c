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

/* y[0..16) += a * (d * q[0..16)), q 16 int8 values. */
static inline void axpy16(float *y, __m512 va, __m512 vd, __m128i q)
{
	const __m512 v = _mm512_mul_ps(vd, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
	_mm512_storeu_ps(y, _mm512_fmadd_ps(va, v, _mm512_loadu_ps(y)));
}

void kern_axpy_q8_0_avx512(float *y, float a, const void *x, int n)
{
	const kern_block_q8_0 *b = x;
	const __m512 va = _mm512_set1_ps(a);
	for (int i = 0; i < n / KERN_QK8_0; i++, y += KERN_QK8_0) {
		const __m512 vd = _mm512_set1_ps(kern_fp16_to_fp32(b[i].d));
		axpy16(y, va, vd, _mm_loadu_si128((const __m128i *)b[i].qs));
		axpy16(y + 16, va, vd, _mm_loadu_si128((const __m128i *)(b[i].qs + 16)));
	}
}

void kern_axpy_q4_0_avx512(float *y, float a, const void *x, int n)
{
	const kern_block_q4_0 *b = x;
	const __m512 va = _mm512_set1_ps(a);
	const __m128i m4 = _mm_set1_epi8(0x0f), off = _mm_set1_epi8(8);
	for (int i = 0; i < n / KERN_QK4_0; i++, y += KERN_QK4_0) {
		const __m512 vd = _mm512_set1_ps(kern_fp16_to_fp32(b[i].d));
		const __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
		axpy16(y, va, vd, _mm_sub_epi8(_mm_and_si128(q, m4), off));
		axpy16(y + 16, va, vd, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), off));
	}
}
