/* AVX-512 (F/BW/VL/DQ + VNNI) variants of the legacy dot products and
 * activation quantizers.
 *
 * Q-type dots take two 32-element blocks per 512-bit register (block b in
 * bytes 0..31, block b+1 in bytes 32..63) and multiply with VNNI vpdpbusd
 * (u8 x s8, four products summed into s32, no saturation). Signed weights
 * are made unsigned by an offset that is subtracted back exactly:
 *   Q4_0: sum (q-8) y  = dpbusd(q, y)      - dpbusd(8, y)
 *   Q5_0: sum (q-16) y = dpbusd(q, y)      - dpbusd(16, y)
 *   Q8_0: sum x y      = dpbusd(x^0x80, y) - dpbusd(128, y)
 * so every integer sum is exact for all inputs, -128 included. An odd last
 * block runs the same scheme at 256 bits. Scales d_x*d_y are applied in
 * float with one FMA per pair of blocks.
 */
#include "legacy.h"

#include <immintrin.h>
#include <string.h>

#include "fp16.h"

static inline float h2f(kern_fp16_t h)
{
	return _cvtsh_ss(h);
}

static inline float hsum256_ps(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* d0 in lanes 0..7 (block b), d1 in lanes 8..15 (block b+1). */
static inline __m512 scale_pair(float d0, float d1)
{
	return _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
}

static inline __m512i load_pair(const int8_t *a, const int8_t *b)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
				  _mm256_loadu_si256((const __m256i *)b), 1);
}

static inline __m256i load32(const int8_t *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/* Packed nibbles of two blocks -> 64 bytes in element order: per block, 16
 * low nibbles then 16 high nibbles. */
static inline __m512i nibbles_pair(const uint8_t *qs0, const uint8_t *qs1)
{
	const __m256i t = _mm256_inserti128_si256(
		_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qs0)),
		_mm_loadu_si128((const __m128i *)qs1), 1);
	/* 128-bit lanes [qs0, qs0, qs1, qs1], then shift lanes 1 and 3 by 4 */
	const __m512i z = _mm512_permutexvar_epi64(_mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
						   _mm512_castsi256_si512(t));
	const __m512i sh = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
	return _mm512_and_si512(sh, _mm512_set1_epi8(0x0F));
}

static inline __m256i nibbles_32(const uint8_t *qs)
{
	const __m128i t = _mm_loadu_si128((const __m128i *)qs);
	const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

static inline uint32_t qh32(const uint8_t qh[4])
{
	uint32_t u;
	memcpy(&u, qh, sizeof(u));
	return u;
}

/* q + 16 where the element's bit in qh is set (5-bit quants). */
static inline __m512i add_high_pair(__m512i q, const uint8_t *qh0, const uint8_t *qh1)
{
	const __mmask64 m = (__mmask64)qh32(qh0) | ((__mmask64)qh32(qh1) << 32);
	return _mm512_mask_add_epi8(q, m, q, _mm512_set1_epi8(16));
}

static inline __m256i add_high_32(__m256i q, const uint8_t *qh)
{
	return _mm256_mask_add_epi8(q, (__mmask32)qh32(qh), q, _mm256_set1_epi8(16));
}

/* sum over groups of 4 of (q - off) * y, q and off unsigned bytes. */
static inline __m512i dot_off_512(__m512i q, __m512i off, __m512i y)
{
	const __m512i z = _mm512_setzero_si512();
	return _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y));
}

static inline __m256i dot_off_256(__m256i q, __m256i off, __m256i y)
{
	const __m256i z = _mm256_setzero_si256();
	return _mm256_sub_epi32(_mm256_dpbusd_epi32(z, q, y), _mm256_dpbusd_epi32(z, off, y));
}

/* Pair and tail loop shared by all Q dots. PAIR(i, acc) handles blocks i and
 * i+1 into a __m512 accumulator, ONE(i, acc) block i into a __m256, MINS(i)
 * is block i's scalar min term (0 for types without one). Two 512-bit and
 * two scalar accumulators keep the dependency chains short. */
#define Q_DOT_LOOP(PAIR, ONE, MINS)                                                   \
	__m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                \
	__m256 acc_t = _mm256_setzero_ps();                                           \
	float ms0 = 0.0f, ms1 = 0.0f;                                                 \
	int i = 0;                                                                    \
	for (; i + 3 < nb; i += 4) {                                                  \
		acc0 = PAIR(i, acc0);                                                 \
		acc1 = PAIR(i + 2, acc1);                                             \
		ms0 += MINS(i) + MINS(i + 1);                                         \
		ms1 += MINS(i + 2) + MINS(i + 3);                                     \
	}                                                                             \
	for (; i + 1 < nb; i += 2) {                                                  \
		acc0 = PAIR(i, acc0);                                                 \
		ms0 += MINS(i) + MINS(i + 1);                                         \
	}                                                                             \
	if (i < nb) {                                                                 \
		acc_t = ONE(i, acc_t);                                                \
		ms1 += MINS(i);                                                       \
	}                                                                             \
	*s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + hsum256_ps(acc_t) + (ms0 + ms1)

#define NO_MINS(b) 0.0f
#define XY_MINS(b) (h2f(x[b].m) * h2f(y[b].s))

/* -------------------------------------------------------------- Q4_0 x Q8_0 */

void kern_dot_q4_0_q8_0_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q4_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	const __m512i off = _mm512_set1_epi8(8);

#define PAIR(b, acc)                                                                          \
	_mm512_fmadd_ps(scale_pair(h2f(x[b].d) * h2f(y[b].d), h2f(x[b + 1].d) * h2f(y[b + 1].d)), \
			_mm512_cvtepi32_ps(dot_off_512(nibbles_pair(x[b].qs, x[b + 1].qs), off,     \
						       load_pair(y[b].qs, y[b + 1].qs))),           \
			acc)
#define ONE(b, acc)                                                                         \
	_mm256_fmadd_ps(_mm256_set1_ps(h2f(x[b].d) * h2f(y[b].d)),                          \
			_mm256_cvtepi32_ps(dot_off_256(nibbles_32(x[b].qs),                 \
						       _mm512_castsi512_si256(off), load32(y[b].qs))), \
			acc)
	Q_DOT_LOOP(PAIR, ONE, NO_MINS);
#undef PAIR
#undef ONE
}

/* -------------------------------------------------------------- Q5_0 x Q8_0 */

void kern_dot_q5_0_q8_0_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q5_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	const __m512i off = _mm512_set1_epi8(16);

#define PAIR(b, acc)                                                                          \
	_mm512_fmadd_ps(scale_pair(h2f(x[b].d) * h2f(y[b].d), h2f(x[b + 1].d) * h2f(y[b + 1].d)), \
			_mm512_cvtepi32_ps(dot_off_512(                                      \
				add_high_pair(nibbles_pair(x[b].qs, x[b + 1].qs), x[b].qh,    \
					      x[b + 1].qh),                                   \
				off, load_pair(y[b].qs, y[b + 1].qs))),                       \
			acc)
#define ONE(b, acc)                                                                         \
	_mm256_fmadd_ps(_mm256_set1_ps(h2f(x[b].d) * h2f(y[b].d)),                          \
			_mm256_cvtepi32_ps(dot_off_256(add_high_32(nibbles_32(x[b].qs), x[b].qh), \
						       _mm512_castsi512_si256(off), load32(y[b].qs))), \
			acc)
	Q_DOT_LOOP(PAIR, ONE, NO_MINS);
#undef PAIR
#undef ONE
}

/* -------------------------------------------------------------- Q8_0 x Q8_0 */

void kern_dot_q8_0_q8_0_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q8_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	const __m512i off = _mm512_set1_epi8((char)0x80);

#define PAIR(b, acc)                                                                          \
	_mm512_fmadd_ps(scale_pair(h2f(x[b].d) * h2f(y[b].d), h2f(x[b + 1].d) * h2f(y[b + 1].d)), \
			_mm512_cvtepi32_ps(dot_off_512(                                      \
				_mm512_xor_si512(load_pair(x[b].qs, x[b + 1].qs), off), off,  \
				load_pair(y[b].qs, y[b + 1].qs))),                            \
			acc)
#define ONE(b, acc)                                                                         \
	_mm256_fmadd_ps(_mm256_set1_ps(h2f(x[b].d) * h2f(y[b].d)),                          \
			_mm256_cvtepi32_ps(dot_off_256(                                     \
				_mm256_xor_si256(load32(x[b].qs), _mm512_castsi512_si256(off)), \
				_mm512_castsi512_si256(off), load32(y[b].qs))),             \
			acc)
	Q_DOT_LOOP(PAIR, ONE, NO_MINS);
#undef PAIR
#undef ONE
}

/* -------------------------------------------------------------- Q4_1 / Q5_1 x Q8_1 */

void kern_dot_q4_1_q8_1_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q4_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / KERN_QK8_1;

#define PAIR(b, acc)                                                                          \
	_mm512_fmadd_ps(scale_pair(h2f(x[b].d) * h2f(y[b].d), h2f(x[b + 1].d) * h2f(y[b + 1].d)), \
			_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(                              \
				_mm512_setzero_si512(), nibbles_pair(x[b].qs, x[b + 1].qs),   \
				load_pair(y[b].qs, y[b + 1].qs))),                            \
			acc)
#define ONE(b, acc)                                                                      \
	_mm256_fmadd_ps(_mm256_set1_ps(h2f(x[b].d) * h2f(y[b].d)),                       \
			_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(),   \
							       nibbles_32(x[b].qs),      \
							       load32(y[b].qs))),        \
			acc)
	Q_DOT_LOOP(PAIR, ONE, XY_MINS);
#undef PAIR
#undef ONE
}

void kern_dot_q5_1_q8_1_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q5_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / KERN_QK8_1;

#define PAIR(b, acc)                                                                          \
	_mm512_fmadd_ps(scale_pair(h2f(x[b].d) * h2f(y[b].d), h2f(x[b + 1].d) * h2f(y[b + 1].d)), \
			_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(                              \
				_mm512_setzero_si512(),                                       \
				add_high_pair(nibbles_pair(x[b].qs, x[b + 1].qs), x[b].qh,    \
					      x[b + 1].qh),                                   \
				load_pair(y[b].qs, y[b + 1].qs))),                            \
			acc)
#define ONE(b, acc)                                                                      \
	_mm256_fmadd_ps(_mm256_set1_ps(h2f(x[b].d) * h2f(y[b].d)),                       \
			_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(                          \
				_mm256_setzero_si256(),                                  \
				add_high_32(nibbles_32(x[b].qs), x[b].qh), load32(y[b].qs))), \
			acc)
	Q_DOT_LOOP(PAIR, ONE, XY_MINS);
#undef PAIR
#undef ONE
}

/* -------------------------------------------------------------- float types */

/* Loaders: 16 elements -> 16 floats; _m variants load only the lanes in mask
 * (zero elsewhere) for the tail, so no scalar remainder loop is needed. */
static inline __m512 ld_f32(const void *p, int i)
{
	return _mm512_loadu_ps((const float *)p + i);
}

static inline __m512 ld_f32_m(const void *p, int i, __mmask16 m)
{
	return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

static inline __m512 ld_f16(const void *p, int i)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const kern_fp16_t *)p + i)));
}

static inline __m512 ld_f16_m(const void *p, int i, __mmask16 m)
{
	return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const kern_fp16_t *)p + i));
}

static inline __m512 ld_bf16(const void *p, int i)
{
	const __m256i h = _mm256_loadu_si256((const __m256i *)((const kern_bf16_t *)p + i));
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __m512 ld_bf16_m(const void *p, int i, __mmask16 m)
{
	const __m256i h = _mm256_maskz_loadu_epi16(m, (const kern_bf16_t *)p + i);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Four accumulators x 16 lanes: 64 elements per iteration, then 16 at a
 * time, then one masked step. */
#define FLOAT_DOT_BODY(ld, ld_m)                                                               \
	do {                                                                                   \
		__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                     \
		__m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();                     \
		int i = 0;                                                                     \
		for (; i + 64 <= n; i += 64) {                                                 \
			a0 = _mm512_fmadd_ps(ld(vx, i), ld(vy, i), a0);                        \
			a1 = _mm512_fmadd_ps(ld(vx, i + 16), ld(vy, i + 16), a1);              \
			a2 = _mm512_fmadd_ps(ld(vx, i + 32), ld(vy, i + 32), a2);              \
			a3 = _mm512_fmadd_ps(ld(vx, i + 48), ld(vy, i + 48), a3);              \
		}                                                                              \
		for (; i + 16 <= n; i += 16)                                                   \
			a0 = _mm512_fmadd_ps(ld(vx, i), ld(vy, i), a0);                        \
		if (i < n) {                                                                   \
			const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);                 \
			a1 = _mm512_fmadd_ps(ld_m(vx, i, m), ld_m(vy, i, m), a1);              \
		}                                                                              \
		*s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
	} while (0)

void kern_dot_f32_f32_avx512(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	FLOAT_DOT_BODY(ld_f32, ld_f32_m);
}

void kern_dot_f16_f16_avx512(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	FLOAT_DOT_BODY(ld_f16, ld_f16_m);
}

void kern_dot_bf16_bf16_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	FLOAT_DOT_BODY(ld_bf16, ld_bf16_m);
}

/* -------------------------------------------------------------- quantizers */

/* roundf (half away from zero) of 16 floats with |v| < 2^23, exactly. */
static inline __m512 round_away(__m512 v)
{
	/* Opaque to the optimizer: stops the caller's x*id from being fused
	 * into v - t below (an FMA would change the rounding). */
	__asm__("" : "+v"(v));
	const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
	const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
	const __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
	const __m512 one = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
	return _mm512_mask_add_ps(t, up, t, one);
}

/* One 32-float block as ggml's Q8 reference (d = amax/127, q = roundf(x/d)
 * via x * (1/d)); returns d, *sum = sum of the quants. */
static inline float q8_block(const float *x, int8_t *qs, int *sum)
{
	const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
	const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
	const float d = amax / 127.0f;
	const float id = d != 0.0f ? 1.0f / d : 0.0f;
	const __m512 vid = _mm512_set1_ps(id);
	const __m512i i0 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v0, vid)));
	const __m512i i1 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v1, vid)));
	*sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
	_mm_storeu_si128((__m128i *)qs, _mm512_cvtsepi32_epi8(i0));
	_mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtsepi32_epi8(i1));
	return d;
}

void kern_quant_q8_0_avx512(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	for (int64_t i = 0; i < nb; i++) {
		int sum;
		y[i].d = kern_fp32_to_fp16(q8_block(x + i * KERN_QK8_0, y[i].qs, &sum));
	}
}

void kern_quant_q8_1_avx512(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	for (int64_t i = 0; i < nb; i++) {
		int sum;
		const float d = q8_block(x + i * KERN_QK8_1, y[i].qs, &sum);
		y[i].d = kern_fp32_to_fp16(d);
		y[i].s = kern_fp32_to_fp16((float)sum * d);
	}
}

/* Hardware RNE conversion; NaNs patched to the reference's sign | 0x7E00. */
static inline __m256i f16_16(__m512 v)
{
	const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
	const __m256i canon = _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16((short)0x8000)),
					      _mm256_set1_epi16(0x7E00));
	return _mm256_mask_blend_epi16(nan, h, canon);
}

void kern_quant_f16_avx512(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_fp16_t *y = vy;
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm256_storeu_si256((__m256i *)(y + i), f16_16(_mm512_loadu_ps(x + i)));
	if (i < n) {
		const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
		_mm256_mask_storeu_epi16(y + i, m, f16_16(_mm512_maskz_loadu_ps(m, x + i)));
	}
}

/* Integer round-to-nearest-even to bf16, quiet NaN kept, as kern_fp32_to_bf16. */
static inline __m256i bf16_16(__m512 v)
{
	const __m512i u = _mm512_castps_si512(v);
	const __m512i hi = _mm512_srli_epi32(u, 16);
	const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
	const __m512i r = _mm512_srli_epi32(
		_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
	const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
						      _mm512_set1_epi32(0x7f800000));
	const __m512i res = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(64));
	return _mm512_cvtepi32_epi16(res);
}

void kern_quant_bf16_avx512(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_bf16_t *y = vy;
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm256_storeu_si256((__m256i *)(y + i), bf16_16(_mm512_loadu_ps(x + i)));
	if (i < n) {
		const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
		_mm256_mask_storeu_epi16(y + i, m, bf16_16(_mm512_maskz_loadu_ps(m, x + i)));
	}
}
