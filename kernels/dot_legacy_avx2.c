/* AVX2 + FMA + F16C variants of the legacy dot products and activation
 * quantizers.
 *
 * Q-type dots work one 32-element block per 256-bit register: the block's 32
 * weight quants as bytes, times its 32 int8 activations, pairwise summed by
 * maddubs (u8 x s8 -> s16) and madd (-> 8 x s32), converted to float and
 * fused-multiply-added with the block's scale d_x*d_y. Offsets (q-8, q-16)
 * are applied as a second maddubs of the constant against the activations,
 * which keeps every intermediate exact (no s16 saturation for any input).
 */
#include "legacy.h"

#include <immintrin.h>
#include <string.h>

#include "fp16.h"

static inline float h2f(kern_fp16_t h)
{
	return _cvtsh_ss(h);
}

static inline float hsum_ps(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static inline int hsum_epi32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return _mm_cvtsi128_si32(s);
}

/* 16 bytes of packed nibbles -> 32 bytes in element order: byte j (j < 16) is
 * the low nibble of qs[j], byte 16+j its high nibble. */
static inline __m256i nibbles_32(const uint8_t *qs)
{
	const __m128i t = _mm_loadu_si128((const __m128i *)qs);
	const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* 32 bits of qh -> 32 bytes, byte j = 0x10 when bit j is set, else 0. */
static inline __m256i high_bits_32(const uint8_t qh[4])
{
	uint32_t u;
	memcpy(&u, qh, sizeof(u));
	/* byte j takes qh byte j/8 (within its 128-bit lane: lane 1 reads 2, 3) */
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
					       0x0101010101010101LL, 0);
	const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), shuf);
	b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
}

/* 8 x s32 partial sums of sum_j q_j * y_j; q unsigned bytes <= 127. */
static inline __m256i dot_u8_s8(__m256i q, __m256i y)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1));
}

/* Same for (q_j - off) with q, off unsigned <= 31: exact in s16. */
static inline __m256i dot_u8_off_s8(__m256i q, __m256i off, __m256i y)
{
	const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(off, y));
	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* s8 x s8 as |x| * sign(y, x). Exact for quants in [-127, 127], which is all
 * ggml's (and herd's) quantizers emit; a -128 (only possible in a hand-made
 * file) negates wrongly, exactly as in ggml's AVX2 kernel. */
static inline __m256i dot_s8_s8(__m256i x, __m256i y)
{
	const __m256i ax = _mm256_sign_epi8(x, x);
	const __m256i sy = _mm256_sign_epi8(y, x);
	return dot_u8_s8(ax, sy);
}

static inline __m256i load32(const int8_t *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/* -------------------------------------------------------------- Q4_0 x Q8_0 */

static inline __m256 q4_0_block(const kern_block_q4_0 *x, const kern_block_q8_0 *y, __m256 acc)
{
	const __m256 d = _mm256_set1_ps(h2f(x->d) * h2f(y->d));
	const __m256i p = dot_u8_off_s8(nibbles_32(x->qs), _mm256_set1_epi8(8), load32(y->qs));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_q4_0_q8_0_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q4_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = q4_0_block(x + i, y + i, acc0);
		acc1 = q4_0_block(x + i + 1, y + i + 1, acc1);
	}
	if (i < nb)
		acc0 = q4_0_block(x + i, y + i, acc0);
	*s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* -------------------------------------------------------------- Q4_1 x Q8_1 */

static inline __m256 q4_1_block(const kern_block_q4_1 *x, const kern_block_q8_1 *y, __m256 acc)
{
	const __m256 d = _mm256_set1_ps(h2f(x->d) * h2f(y->d));
	const __m256i p = dot_u8_s8(nibbles_32(x->qs), load32(y->qs));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_q4_1_q8_1_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q4_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / KERN_QK8_1;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	float summs = 0.0f; /* sum of m_x * s_y, the min terms */
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = q4_1_block(x + i, y + i, acc0);
		acc1 = q4_1_block(x + i + 1, y + i + 1, acc1);
		summs += h2f(x[i].m) * h2f(y[i].s) + h2f(x[i + 1].m) * h2f(y[i + 1].s);
	}
	if (i < nb) {
		acc0 = q4_1_block(x + i, y + i, acc0);
		summs += h2f(x[i].m) * h2f(y[i].s);
	}
	*s = hsum_ps(_mm256_add_ps(acc0, acc1)) + summs;
}

/* -------------------------------------------------------------- Q5_0 x Q8_0 */

static inline __m256 q5_0_block(const kern_block_q5_0 *x, const kern_block_q8_0 *y, __m256 acc)
{
	const __m256 d = _mm256_set1_ps(h2f(x->d) * h2f(y->d));
	const __m256i q = _mm256_or_si256(nibbles_32(x->qs), high_bits_32(x->qh));
	const __m256i p = dot_u8_off_s8(q, _mm256_set1_epi8(16), load32(y->qs));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_q5_0_q8_0_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q5_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = q5_0_block(x + i, y + i, acc0);
		acc1 = q5_0_block(x + i + 1, y + i + 1, acc1);
	}
	if (i < nb)
		acc0 = q5_0_block(x + i, y + i, acc0);
	*s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* -------------------------------------------------------------- Q5_1 x Q8_1 */

static inline __m256 q5_1_block(const kern_block_q5_1 *x, const kern_block_q8_1 *y, __m256 acc)
{
	const __m256 d = _mm256_set1_ps(h2f(x->d) * h2f(y->d));
	const __m256i q = _mm256_or_si256(nibbles_32(x->qs), high_bits_32(x->qh));
	const __m256i p = dot_u8_s8(q, load32(y->qs));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_q5_1_q8_1_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q5_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / KERN_QK8_1;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	float summs = 0.0f;
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = q5_1_block(x + i, y + i, acc0);
		acc1 = q5_1_block(x + i + 1, y + i + 1, acc1);
		summs += h2f(x[i].m) * h2f(y[i].s) + h2f(x[i + 1].m) * h2f(y[i + 1].s);
	}
	if (i < nb) {
		acc0 = q5_1_block(x + i, y + i, acc0);
		summs += h2f(x[i].m) * h2f(y[i].s);
	}
	*s = hsum_ps(_mm256_add_ps(acc0, acc1)) + summs;
}

/* -------------------------------------------------------------- Q8_0 x Q8_0 */

static inline __m256 q8_0_block(const kern_block_q8_0 *x, const kern_block_q8_0 *y, __m256 acc)
{
	const __m256 d = _mm256_set1_ps(h2f(x->d) * h2f(y->d));
	const __m256i p = dot_s8_s8(load32(x->qs), load32(y->qs));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

void kern_dot_q8_0_q8_0_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q8_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / KERN_QK8_0;
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 1 < nb; i += 2) {
		acc0 = q8_0_block(x + i, y + i, acc0);
		acc1 = q8_0_block(x + i + 1, y + i + 1, acc1);
	}
	if (i < nb)
		acc0 = q8_0_block(x + i, y + i, acc0);
	*s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* -------------------------------------------------------------- float types */

/* Loaders: 8 elements -> 8 floats. */
static inline __m256 ld_f32(const void *p, int i)
{
	return _mm256_loadu_ps((const float *)p + i);
}

static inline __m256 ld_f16(const void *p, int i)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const kern_fp16_t *)p + i)));
}

/* bf16 is the upper half of a float: widen and shift, no rounding. */
static inline __m256 ld_bf16(const void *p, int i)
{
	const __m128i h = _mm_loadu_si128((const __m128i *)((const kern_bf16_t *)p + i));
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Four accumulators of 8 lanes: 32 elements per iteration, then 8 at a time,
 * then a scalar tail. Shared by the three float types via the loader. */
#define FLOAT_DOT_BODY(ld, scalar)                                                        \
	do {                                                                              \
		__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();               \
		__m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();               \
		int i = 0;                                                                \
		for (; i + 32 <= n; i += 32) {                                            \
			a0 = _mm256_fmadd_ps(ld(vx, i), ld(vy, i), a0);                   \
			a1 = _mm256_fmadd_ps(ld(vx, i + 8), ld(vy, i + 8), a1);           \
			a2 = _mm256_fmadd_ps(ld(vx, i + 16), ld(vy, i + 16), a2);         \
			a3 = _mm256_fmadd_ps(ld(vx, i + 24), ld(vy, i + 24), a3);         \
		}                                                                         \
		for (; i + 8 <= n; i += 8)                                                \
			a0 = _mm256_fmadd_ps(ld(vx, i), ld(vy, i), a0);                   \
		float tail = 0.0f;                                                        \
		for (; i < n; i++)                                                        \
			tail += scalar(x[i]) * scalar(y[i]);                              \
		*s = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + tail; \
	} while (0)

static inline float id_f32(float v)
{
	return v;
}

void kern_dot_f32_f32_avx2(int n, float *restrict s, const void *restrict vx,
			   const void *restrict vy)
{
	const float *x = vx, *y = vy;
	FLOAT_DOT_BODY(ld_f32, id_f32);
}

void kern_dot_f16_f16_avx2(int n, float *restrict s, const void *restrict vx,
			   const void *restrict vy)
{
	const kern_fp16_t *x = vx, *y = vy;
	FLOAT_DOT_BODY(ld_f16, h2f);
}

void kern_dot_bf16_bf16_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_bf16_t *x = vx, *y = vy;
	FLOAT_DOT_BODY(ld_bf16, kern_bf16_to_fp32);
}

/* -------------------------------------------------------------- quantizers */

/* roundf (half away from zero) of 8 floats with |v| < 2^23, exactly:
 * truncate, then step one away from zero when the dropped fraction >= 0.5. */
static inline __m256 round_away(__m256 v)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	/* Keep the compiler from fusing the caller's x*id into v - t below
	 * (-ffp-contract=fast would make it an FMA and change the rounding). */
	__asm__("" : "+x"(v));
	const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
	const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
	const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
	const __m256 one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
	return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

/* Quantizes one 32-float block as ggml's Q8 reference: d = amax/127,
 * q = roundf(x * (1/d)). Writes 32 quants to qs, returns d; *sum gets the
 * sum of the quants. */
static inline float q8_block(const float *x, int8_t *qs, int *sum)
{
	__m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
	__m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
				 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
	__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
	m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
	const float amax = _mm_cvtss_f32(m4);
	const float d = amax / 127.0f;
	const float id = d != 0.0f ? 1.0f / d : 0.0f;
	const __m256 vid = _mm256_set1_ps(id);

	const __m256i i0 = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v0, vid)));
	const __m256i i1 = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v1, vid)));
	const __m256i i2 = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v2, vid)));
	const __m256i i3 = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v3, vid)));
	*sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));

	/* packs interleave 128-bit lanes; the permute restores element order */
	const __m256i p16a = _mm256_packs_epi32(i0, i1);
	const __m256i p16b = _mm256_packs_epi32(i2, i3);
	const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
	const __m256i ord = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)qs, ord);
	return d;
}

void kern_quant_q8_0_avx2(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	for (int64_t i = 0; i < nb; i++) {
		int sum;
		y[i].d = kern_fp32_to_fp16(q8_block(x + i * KERN_QK8_0, y[i].qs, &sum));
	}
}

void kern_quant_q8_1_avx2(const float *restrict x, void *restrict vy, int64_t n)
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

/* F16C rounds to nearest even like kern_fp32_to_fp16; NaNs are patched to
 * the reference's canonical quiet NaN (sign | 0x7E00). */
static inline __m128i f16_8(__m256 v)
{
	const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
	if (_mm256_movemask_ps(nan) == 0)
		return h;
	const __m128i nan16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(nan)),
					      _mm256_extracti128_si256(_mm256_castps_si256(nan), 1));
	const __m128i canon = _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16((short)0x8000)),
					   _mm_set1_epi16(0x7E00));
	return _mm_blendv_epi8(h, canon, nan16);
}

void kern_quant_f16_avx2(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_fp16_t *y = vy;
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i), f16_8(_mm256_loadu_ps(x + i)));
	for (; i < n; i++)
		y[i] = kern_fp32_to_fp16(x[i]);
}

/* Round-to-nearest-even to bf16 in integer arithmetic, NaN kept quiet, as
 * kern_fp32_to_bf16. */
static inline __m256i bf16_8(__m256 v)
{
	const __m256i u = _mm256_castps_si256(v);
	const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
	const __m256i r = _mm256_srli_epi32(
		_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
	const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
	const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
						  _mm256_set1_epi32(0x7f800000));
	return _mm256_blendv_epi8(r, q, is_nan); /* 8 x u32, values < 2^16 */
}

void kern_quant_bf16_avx2(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_bf16_t *y = vy;
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		const __m256i a = bf16_8(_mm256_loadu_ps(x + i));
		const __m256i b = bf16_8(_mm256_loadu_ps(x + i + 8));
		/* packus works per lane: a0 b0 a1 b1 -> reorder qwords */
		const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
		_mm256_storeu_si256((__m256i *)(y + i), p);
	}
	for (; i < n; i++)
		y[i] = kern_fp32_to_bf16(x[i]);
}
