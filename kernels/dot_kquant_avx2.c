/* AVX2 K-quant dots (Qx_K . Q8_K) and the Q8_K activation quantizer.
 * Compiled with -mavx2 -mfma -mf16c; reached only when the CPU has them.
 *
 * Common scheme per super-block of 256: weight quants are widened to
 * unsigned bytes, multiplied with the signed Q8_K bytes by maddubs (pairs
 * into int16, no saturation possible: |q| <= 63, |q8| <= 128), then madd
 * with the 16-bit sub-block scale (int32), summed in an int32 vector. The
 * constant offsets of the symmetric types (-4 for Q3_K, -32 for Q6_K) and
 * the mins of Q2_K/Q4_K/Q5_K are applied once per block through Q8_K's
 * bsums (sum of each 16 activations), so the inner loop stays unsigned.
 * Results equal _ref up to float summation order.
 */
#include "kquant.h"

#include <immintrin.h>
#include <string.h>

#include "fp16.h"

/* F16C conversion (same result as kern_fp16_to_fp32, one instruction). */
#define KQ_FP16(h) _cvtsh_ss(h)

/* shuffle_epi8 masks over a vector whose two 128-bit lanes both hold the
 * same 8 int16 scales. kq_bcast_w[k]: every word = scale k. kq_pair_w[k]:
 * low lane = scale 2k, high lane = scale 2k+1 (16-element groups, as maddubs
 * output lanes map to input bytes 0..15 / 16..31). */
static const uint8_t kq_bcast_w[8][32] __attribute__((aligned(32))) = {
#define KQ_B(k) {2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, \
		 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, \
		 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1, 2*k, 2*k+1}
	KQ_B(0), KQ_B(1), KQ_B(2), KQ_B(3), KQ_B(4), KQ_B(5), KQ_B(6), KQ_B(7)
#undef KQ_B
};

static const uint8_t kq_pair_w[4][32] __attribute__((aligned(32))) = {
#define KQ_P(k) {4*k, 4*k+1, 4*k, 4*k+1, 4*k, 4*k+1, 4*k, 4*k+1, \
		 4*k, 4*k+1, 4*k, 4*k+1, 4*k, 4*k+1, 4*k, 4*k+1, \
		 4*k+2, 4*k+3, 4*k+2, 4*k+3, 4*k+2, 4*k+3, 4*k+2, 4*k+3, \
		 4*k+2, 4*k+3, 4*k+2, 4*k+3, 4*k+2, 4*k+3, 4*k+2, 4*k+3}
	KQ_P(0), KQ_P(1), KQ_P(2), KQ_P(3)
#undef KQ_P
};

static inline __m256i kq_mask(const uint8_t *m)
{
	return _mm256_load_si256((const __m256i *)m);
}

static inline float kq_hsum_ps(__m256 v)
{
	__m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

static inline float kq_hsum_ps128(__m128 r)
{
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

/* ------------------------------------------------------------------ Q2_K */

void kern_dot_q2_k_q8_k_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q2_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m256i m3 = _mm256_set1_epi8(3);
	const __m128i m4 = _mm_set1_epi8(0xF);
	__m256 acc = _mm256_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float dall = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[i].scales);
		const __m256i bsums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
		/* min term: 16 x (4-bit min * bsum) -> 8 int32 */
		const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m4));
		const __m256i summs = _mm256_madd_epi16(mins, bsums);
		const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, m4));
		const uint8_t *q2 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		__m256i sumi0 = _mm256_setzero_si256(), sumi1 = _mm256_setzero_si256();
		/* both lanes = scales 0..7 (sc_lo) or 8..15 (sc_hi) */
		const __m256i sc_lo = _mm256_permute4x64_epi64(sc16, 0x44);
		const __m256i sc_hi = _mm256_permute4x64_epi64(sc16, 0xEE);
		for (int h = 0; h < 2; h++, q2 += 32, q8 += 128) {
			const __m256i sc = h ? sc_hi : sc_lo;
			__m256i qv = _mm256_loadu_si256((const __m256i *)q2);
			for (int k = 0; k < 4; k++) {
				/* srli_epi16 leaks the upper byte's low bits into the
				 * lower byte's top, which the 2-bit mask discards. */
				const __m256i q = _mm256_and_si256(qv, m3);
				qv = _mm256_srli_epi16(qv, 2);
				const __m256i a = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
				const __m256i p = _mm256_madd_epi16(
					_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[k])),
					_mm256_maddubs_epi16(q, a));
				if (k & 1)
					sumi1 = _mm256_add_epi32(sumi1, p);
				else
					sumi0 = _mm256_add_epi32(sumi0, p);
			}
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(dall),
				      _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
		acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summs), acc);
	}
	*s = kq_hsum_ps(acc);
}

/* ------------------------------------------------------------------ Q3_K */

void kern_dot_q3_k_q8_k_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q3_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m256i m3 = _mm256_set1_epi8(3);
	const __m256i m4b = _mm256_set1_epi8(4);
	__m256 acc = _mm256_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		uint32_t a[4];
		kern_kquant_unpack_q3_u32(x[i].scales, a);
		/* built from registers: a 16-byte reload of four 4-byte stores
		 * would stall on store forwarding */
		const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(
			_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]), _mm_set1_epi8(32)));
		/* quants are stored as q+4 in 0..7: subtract 4 * sum(sc * bsums) */
		const __m256i off = _mm256_madd_epi16(
			sc16, _mm256_loadu_si256((const __m256i *)y[i].bsums));
		__m256i sumi0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 2));
		__m256i sumi1 = _mm256_setzero_si256();
		/* hmask bit b (element 32b + l) walks down to bit 0; the shifts
		 * leak only into bits the masks drop. */
		__m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
		const uint8_t *q3 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		/* both lanes = scales 0..7 (sc_lo) or 8..15 (sc_hi) */
		const __m256i sc_lo = _mm256_permute4x64_epi64(sc16, 0x44);
		const __m256i sc_hi = _mm256_permute4x64_epi64(sc16, 0xEE);
		for (int h = 0; h < 2; h++, q3 += 32, q8 += 128) {
			const __m256i sc = h ? sc_hi : sc_lo;
			__m256i qv = _mm256_loadu_si256((const __m256i *)q3);
			for (int k = 0; k < 4; k++) {
				const __m256i q = _mm256_or_si256(
					_mm256_and_si256(qv, m3),
					_mm256_and_si256(_mm256_slli_epi16(hm, 2), m4b));
				qv = _mm256_srli_epi16(qv, 2);
				hm = _mm256_srli_epi16(hm, 1);
				const __m256i a = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
				const __m256i p = _mm256_madd_epi16(
					_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[k])),
					_mm256_maddubs_epi16(q, a));
				if (k & 1)
					sumi1 = _mm256_add_epi32(sumi1, p);
				else
					sumi0 = _mm256_add_epi32(sumi0, p);
			}
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d),
				      _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
	}
	*s = kq_hsum_ps(acc);
}

/* ------------------------------------------------------------------ Q4_K */

void kern_dot_q4_k_q8_k_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q4_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m256i m4 = _mm256_set1_epi8(0xF);
	__m256 acc = _mm256_setzero_ps();
	__m128 acc_m = _mm_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		uint32_t u[4];
		kern_kquant_unpack_k4_u32(x[i].scales, u);
		/* words 0..7 scales, 8..15 mins */
		const __m256i ms = _mm256_cvtepu8_epi16(
			_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
		const __m256i bs = _mm256_loadu_si256((const __m256i *)y[i].bsums);
		/* 8 sub-block sums of 32 activations (pairs of bsums) */
		const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs),
						    _mm256_extracti128_si256(bs, 1));
		const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), bs32);
		acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

		const __m256i sc = _mm256_permute4x64_epi64(ms, 0x44);
		const uint8_t *q4 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		__m256i sumi0 = _mm256_setzero_si256(), sumi1 = _mm256_setzero_si256();
		for (int c = 0; c < 4; c++, q4 += 32, q8 += 64) {
			const __m256i qb = _mm256_loadu_si256((const __m256i *)q4);
			const __m256i ql = _mm256_and_si256(qb, m4);
			const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
			const __m256i pl = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_bcast_w[2 * c])),
				_mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8)));
			const __m256i ph = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_bcast_w[2 * c + 1])),
				_mm256_maddubs_epi16(qh,
						     _mm256_loadu_si256((const __m256i *)(q8 + 32))));
			sumi0 = _mm256_add_epi32(sumi0, pl);
			sumi1 = _mm256_add_epi32(sumi1, ph);
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d),
				      _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
	}
	*s = kq_hsum_ps(acc) + kq_hsum_ps128(acc_m);
}

/* ------------------------------------------------------------------ Q5_K */

void kern_dot_q5_k_q8_k_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q5_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m256i m4 = _mm256_set1_epi8(0xF);
	const __m256i m16 = _mm256_set1_epi8(0x10);
	__m256 acc = _mm256_setzero_ps();
	__m128 acc_m = _mm_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		uint32_t u[4];
		kern_kquant_unpack_k4_u32(x[i].scales, u);
		const __m256i ms = _mm256_cvtepu8_epi16(
			_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
		const __m256i bs = _mm256_loadu_si256((const __m256i *)y[i].bsums);
		const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs),
						    _mm256_extracti128_si256(bs, 1));
		const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), bs32);
		acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

		const __m256i sc = _mm256_permute4x64_epi64(ms, 0x44);
		const uint8_t *q5 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		/* qh bit 2c / 2c+1 walks down to bits 0 / 1 (shift leaks land
		 * above the bits read) and is moved to bit 4. */
		__m256i hb = _mm256_loadu_si256((const __m256i *)x[i].qh);
		__m256i sumi0 = _mm256_setzero_si256(), sumi1 = _mm256_setzero_si256();
		for (int c = 0; c < 4; c++, q5 += 32, q8 += 64) {
			const __m256i qb = _mm256_loadu_si256((const __m256i *)q5);
			const __m256i ql = _mm256_or_si256(
				_mm256_and_si256(qb, m4),
				_mm256_and_si256(_mm256_slli_epi16(hb, 4), m16));
			const __m256i qh = _mm256_or_si256(
				_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
				_mm256_and_si256(_mm256_slli_epi16(hb, 3), m16));
			hb = _mm256_srli_epi16(hb, 2);
			const __m256i pl = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_bcast_w[2 * c])),
				_mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8)));
			const __m256i ph = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_bcast_w[2 * c + 1])),
				_mm256_maddubs_epi16(qh,
						     _mm256_loadu_si256((const __m256i *)(q8 + 32))));
			sumi0 = _mm256_add_epi32(sumi0, pl);
			sumi1 = _mm256_add_epi32(sumi1, ph);
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d),
				      _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
	}
	*s = kq_hsum_ps(acc) + kq_hsum_ps128(acc_m);
}

/* ------------------------------------------------------------------ Q6_K */

void kern_dot_q6_k_q8_k_avx2(int n, float *restrict s, const void *restrict vx,
			     const void *restrict vy)
{
	const kern_block_q6_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m256i m4 = _mm256_set1_epi8(0xF);
	const __m256i m30 = _mm256_set1_epi8(0x30);
	__m256 acc = _mm256_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const __m256i sc16 =
			_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
		/* quants are stored as q+32: subtract 32 * sum(sc * bsums) */
		const __m256i off = _mm256_madd_epi16(
			sc16, _mm256_loadu_si256((const __m256i *)y[i].bsums));
		__m256i sumi0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
		__m256i sumi1 = _mm256_setzero_si256();
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *q8 = y[i].qs;
		/* both lanes = scales 0..7 (sc_lo) or 8..15 (sc_hi) */
		const __m256i sc_lo = _mm256_permute4x64_epi64(sc16, 0x44);
		const __m256i sc_hi = _mm256_permute4x64_epi64(sc16, 0xEE);
		for (int h = 0; h < 2; h++, ql += 64, qh += 32, q8 += 128) {
			const __m256i sc = h ? sc_hi : sc_lo;
			const __m256i la = _mm256_loadu_si256((const __m256i *)ql);
			const __m256i lb = _mm256_loadu_si256((const __m256i *)(ql + 32));
			const __m256i hv = _mm256_loadu_si256((const __m256i *)qh);
			/* 6-bit unsigned quants of elements 32k..32k+31 of this half */
			const __m256i q0 = _mm256_or_si256(
				_mm256_and_si256(la, m4),
				_mm256_and_si256(_mm256_slli_epi16(hv, 4), m30));
			const __m256i q1 = _mm256_or_si256(
				_mm256_and_si256(lb, m4),
				_mm256_and_si256(_mm256_slli_epi16(hv, 2), m30));
			const __m256i q2 = _mm256_or_si256(
				_mm256_and_si256(_mm256_srli_epi16(la, 4), m4),
				_mm256_and_si256(hv, m30));
			const __m256i q3 = _mm256_or_si256(
				_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
				_mm256_and_si256(_mm256_srli_epi16(hv, 2), m30));
			const __m256i p0 = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[0])),
				_mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)q8)));
			const __m256i p1 = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[1])),
				_mm256_maddubs_epi16(q1,
						     _mm256_loadu_si256((const __m256i *)(q8 + 32))));
			const __m256i p2 = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[2])),
				_mm256_maddubs_epi16(q2,
						     _mm256_loadu_si256((const __m256i *)(q8 + 64))));
			const __m256i p3 = _mm256_madd_epi16(
				_mm256_shuffle_epi8(sc, kq_mask(kq_pair_w[3])),
				_mm256_maddubs_epi16(q3,
						     _mm256_loadu_si256((const __m256i *)(q8 + 96))));
			sumi0 = _mm256_add_epi32(sumi0, _mm256_add_epi32(p0, p2));
			sumi1 = _mm256_add_epi32(sumi1, _mm256_add_epi32(p1, p3));
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d),
				      _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
	}
	*s = kq_hsum_ps(acc);
}

/* ------------------------------------------------------------------ Q8_K */

/* Full sums of four int32x8 vectors -> one int32x4 (a, b, c, d). */
static inline __m128i kq_hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d)
{
	const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
	return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* Bit-identical to kern_quant_q8_k_ref: the same max-abs choice (first
 * index of largest |x|), the same float products, and cvtps2dq rounds to
 * nearest even like the reference's nearest_int (default MXCSR assumed). */
void kern_quant_q8_k_avx2(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	const __m256 sign = _mm256_set1_ps(-0.0f);
	const __m256i q127 = _mm256_set1_epi32(127);
	const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);

	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		__m256 mx0 = _mm256_setzero_ps(), mx1 = mx0, mx2 = mx0, mx3 = mx0;
		for (int j = 0; j < KERN_QK_K; j += 32) {
			mx0 = _mm256_max_ps(mx0, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
			mx1 = _mm256_max_ps(mx1, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 8)));
			mx2 = _mm256_max_ps(mx2, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 16)));
			mx3 = _mm256_max_ps(mx3, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 24)));
		}
		__m256 mx = _mm256_max_ps(_mm256_max_ps(mx0, mx1), _mm256_max_ps(mx2, mx3));
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		const float amax = _mm_cvtss_f32(m4);
		if (!amax) {
			memset(&y[i], 0, sizeof y[i]);
			continue;
		}
		const __m256 vamax = _mm256_set1_ps(amax);
		float max = 0;
		for (int j = 0; j < KERN_QK_K; j += 8) {
			const __m256 ax = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j));
			const int m = _mm256_movemask_ps(_mm256_cmp_ps(ax, vamax, _CMP_EQ_OQ));
			if (m) {
				max = x[j + __builtin_ctz((unsigned)m)];
				break;
			}
		}
		const float iscale = -127.f / max;
		const __m256 vis = _mm256_set1_ps(iscale);
		__m256i t[16]; /* per 16-element group: two int32x8 summed */
		for (int g = 0; g < KERN_QK_K / 32; g++) {
			const float *p = x + 32 * g;
			const __m256i i0 = _mm256_min_epi32(
				_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), vis)), q127);
			const __m256i i1 = _mm256_min_epi32(
				_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 8), vis)), q127);
			const __m256i i2 = _mm256_min_epi32(
				_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 16), vis)), q127);
			const __m256i i3 = _mm256_min_epi32(
				_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 24), vis)), q127);
			t[2 * g] = _mm256_add_epi32(i0, i1);
			t[2 * g + 1] = _mm256_add_epi32(i2, i3);
			/* packs interleave 4-element chunks across lanes; perm
			 * restores element order */
			const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1),
							     _mm256_packs_epi32(i2, i3));
			_mm256_storeu_si256((__m256i *)(y[i].qs + 32 * g),
					    _mm256_permutevar8x32_epi32(b, perm));
		}
		for (int g = 0; g < 16; g += 8) {
			const __m128i s0 = kq_hsum4_epi32(t[g], t[g + 1], t[g + 2], t[g + 3]);
			const __m128i s1 = kq_hsum4_epi32(t[g + 4], t[g + 5], t[g + 6], t[g + 7]);
			_mm_storeu_si128((__m128i *)(y[i].bsums + g), _mm_packs_epi32(s0, s1));
		}
		y[i].d = 1 / iscale;
	}
}
