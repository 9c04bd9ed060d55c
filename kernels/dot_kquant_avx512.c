/* AVX-512 (F/BW/VL/DQ/VNNI) K-quant dots (Qx_K . Q8_K) and the Q8_K
 * activation quantizer. Compiled with the AVX-512 flags; reached only when
 * kern_isa_detect() reports KERN_ISA_AVX512.
 *
 * Scheme: 64 weight quants per zmm as unsigned bytes, maddubs with 64 Q8_K
 * bytes (int16 pairs; |q| <= 63 so no saturation), then VNNI vpdpwssd
 * multiplies the int16 pairs by per-lane 16-bit scales and accumulates into
 * int32 in one instruction. Scales are placed per lane with vpermw from a
 * register holding the block's scales. Offsets (Q3_K -4, Q6_K -32) and mins
 * go through Q8_K's bsums once per block. Results equal _ref up to float
 * summation order.
 */
#include "kquant.h"

#include <immintrin.h>
#include <string.h>

#include "fp16.h"

/* F16C conversion (same result as kern_fp16_to_fp32, one instruction). */
#define KQ_FP16(h) _cvtsh_ss(h)

/* vpermw indices. kq_idx_k4[c]: words 0..15 <- scale 2c, 16..31 <- 2c+1
 * (one 32-element sub-block per 256-bit half; Q4_K/Q5_K). kq_idx_g16[h][p]:
 * 128-bit chunk i <- scale 8h + 4p + i (16-element groups; Q2_K Q3_K Q6_K). */
#define KQ_W16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
#define KQ_W8(v) v, v, v, v, v, v, v, v
static const uint16_t kq_idx_k4[4][32] __attribute__((aligned(64))) = {
	{KQ_W16(0), KQ_W16(1)}, {KQ_W16(2), KQ_W16(3)},
	{KQ_W16(4), KQ_W16(5)}, {KQ_W16(6), KQ_W16(7)},
};
static const uint16_t kq_idx_g16[2][2][32] __attribute__((aligned(64))) = {
	{{KQ_W8(0), KQ_W8(1), KQ_W8(2), KQ_W8(3)}, {KQ_W8(4), KQ_W8(5), KQ_W8(6), KQ_W8(7)}},
	{{KQ_W8(8), KQ_W8(9), KQ_W8(10), KQ_W8(11)},
	 {KQ_W8(12), KQ_W8(13), KQ_W8(14), KQ_W8(15)}},
};
#undef KQ_W16
#undef KQ_W8

static inline __m512i kq_idx(const uint16_t *p)
{
	return _mm512_load_si512((const void *)p);
}

/* 512-bit vector with the 16-bit value a in the low 256 bits, b in the high. */
static inline __m512i kq_halves_epi16(short a, short b)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(a)),
				  _mm256_set1_epi16(b), 1);
}

static inline __m512i kq_halves_epi8(char a, char b)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8(a)),
				  _mm256_set1_epi8(b), 1);
}

static inline __m512i kq_bcast256(const void *p)
{
	return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

static inline float kq_hsum_ps128(__m128 r)
{
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

/* Sum of each adjacent bsums pair times the 8 mins (words 8..15 of ms):
 * the Q4_K/Q5_K min term as 4 int32. */
static inline __m128i kq_k4_mins(__m256i ms, const int16_t *bsums)
{
	const __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);
	const __m128i bs32 =
		_mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
	return _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), bs32);
}

/* ------------------------------------------------------------------ Q2_K */

void kern_dot_q2_k_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q2_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m512i m3 = _mm512_set1_epi8(3);
	const __m128i m4 = _mm_set1_epi8(0xF);
	const __m512i cnt01 = kq_halves_epi16(0, 2), cnt23 = kq_halves_epi16(4, 6);
	__m512 acc = _mm512_setzero_ps();
	__m256 acc_m = _mm256_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float dall = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[i].scales);
		const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m4));
		const __m256i summs = _mm256_madd_epi16(
			mins, _mm256_loadu_si256((const __m256i *)y[i].bsums));
		acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summs), acc_m);
		const __m512i sc = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sc8, m4)));
		__m512i sumi0 = _mm512_setzero_si512(), sumi1 = _mm512_setzero_si512();
		for (int h = 0; h < 2; h++) {
			const __m512i qv = kq_bcast256(x[i].qs + 32 * h);
			const int8_t *q8 = y[i].qs + 128 * h;
			/* shifts 0|2 then 4|6: elements 128h + 0..63, 64..127 */
			const __m512i qa = _mm512_and_si512(_mm512_srlv_epi16(qv, cnt01), m3);
			const __m512i qb = _mm512_and_si512(_mm512_srlv_epi16(qv, cnt23), m3);
			const __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512(q8));
			const __m512i pb = _mm512_maddubs_epi16(qb, _mm512_loadu_si512(q8 + 64));
			sumi0 = _mm512_dpwssd_epi32(
				sumi0, pa, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][0]), sc));
			sumi1 = _mm512_dpwssd_epi32(
				sumi1, pb, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][1]), sc));
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(dall),
				      _mm512_cvtepi32_ps(_mm512_add_epi32(sumi0, sumi1)), acc);
	}
	const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc),
					_mm512_extractf32x8_ps(acc, 1));
	const __m256 t = _mm256_add_ps(a8, acc_m);
	*s = kq_hsum_ps128(_mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}

/* ------------------------------------------------------------------ Q3_K */

void kern_dot_q3_k_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q3_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m512i m3 = _mm512_set1_epi8(3);
	const __m512i four = _mm512_set1_epi8(4);
	const __m512i cnt01 = kq_halves_epi16(0, 2), cnt23 = kq_halves_epi16(4, 6);
	/* hmask bit selecting the high bit of each 32-element slice, by (h, p) */
	const __m512i hsel[2][2] = {
		{kq_halves_epi8(0x01, 0x02), kq_halves_epi8(0x04, 0x08)},
		{kq_halves_epi8(0x10, 0x20), kq_halves_epi8(0x40, (char)0x80)},
	};
	__m512 acc = _mm512_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		uint32_t a[4];
		kern_kquant_unpack_q3_u32(x[i].scales, a);
		/* built from registers: a 16-byte reload of four 4-byte stores
		 * would stall on store forwarding */
		const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(
			_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]), _mm_set1_epi8(32)));
		const __m256i off = _mm256_madd_epi16(
			sc16, _mm256_loadu_si256((const __m256i *)y[i].bsums));
		/* stored quants are q+4 in 0..7: start from -4 * sum(sc * bsums) */
		__m512i sumi0 = _mm512_zextsi256_si512(
			_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 2)));
		__m512i sumi1 = _mm512_setzero_si512();
		const __m512i sc = _mm512_zextsi256_si512(sc16);
		const __m512i hm = kq_bcast256(x[i].hmask);
		for (int h = 0; h < 2; h++) {
			const __m512i qv = kq_bcast256(x[i].qs + 32 * h);
			const int8_t *q8 = y[i].qs + 128 * h;
			__m512i qa = _mm512_and_si512(_mm512_srlv_epi16(qv, cnt01), m3);
			__m512i qb = _mm512_and_si512(_mm512_srlv_epi16(qv, cnt23), m3);
			qa = _mm512_mask_add_epi8(qa, _mm512_test_epi8_mask(hm, hsel[h][0]), qa, four);
			qb = _mm512_mask_add_epi8(qb, _mm512_test_epi8_mask(hm, hsel[h][1]), qb, four);
			const __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512(q8));
			const __m512i pb = _mm512_maddubs_epi16(qb, _mm512_loadu_si512(q8 + 64));
			sumi0 = _mm512_dpwssd_epi32(
				sumi0, pa, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][0]), sc));
			sumi1 = _mm512_dpwssd_epi32(
				sumi1, pb, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][1]), sc));
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(d),
				      _mm512_cvtepi32_ps(_mm512_add_epi32(sumi0, sumi1)), acc);
	}
	*s = _mm512_reduce_add_ps(acc);
}

/* ------------------------------------------------------------------ Q4_K */

void kern_dot_q4_k_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q4_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m512i m4 = _mm512_set1_epi8(0xF);
	const __m512i cnt = kq_halves_epi16(0, 4); /* low nibbles | high nibbles */
	__m512 acc = _mm512_setzero_ps();
	__m128 acc_m = _mm_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		uint32_t u[4];
		kern_kquant_unpack_k4_u32(x[i].scales, u);
		const __m256i ms = _mm256_cvtepu8_epi16(
			_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
		acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(kq_k4_mins(ms, y[i].bsums)),
				     acc_m);
		const __m512i sc = _mm512_zextsi256_si512(ms);
		const uint8_t *q4 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		__m512i sumi0 = _mm512_setzero_si512(), sumi1 = _mm512_setzero_si512();
		for (int c = 0; c < 4; c += 2) {
			/* 64 elements each: sub-blocks 2c | 2c+1, then 2c+2 | 2c+3 */
			const __m512i qa = _mm512_and_si512(
				_mm512_srlv_epi16(kq_bcast256(q4 + 32 * c), cnt), m4);
			const __m512i qb = _mm512_and_si512(
				_mm512_srlv_epi16(kq_bcast256(q4 + 32 * c + 32), cnt), m4);
			const __m512i pa =
				_mm512_maddubs_epi16(qa, _mm512_loadu_si512(q8 + 64 * c));
			const __m512i pb =
				_mm512_maddubs_epi16(qb, _mm512_loadu_si512(q8 + 64 * c + 64));
			sumi0 = _mm512_dpwssd_epi32(
				sumi0, pa, _mm512_permutexvar_epi16(kq_idx(kq_idx_k4[c]), sc));
			sumi1 = _mm512_dpwssd_epi32(
				sumi1, pb, _mm512_permutexvar_epi16(kq_idx(kq_idx_k4[c + 1]), sc));
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(d),
				      _mm512_cvtepi32_ps(_mm512_add_epi32(sumi0, sumi1)), acc);
	}
	*s = _mm512_reduce_add_ps(acc) + kq_hsum_ps128(acc_m);
}

/* ------------------------------------------------------------------ Q5_K */

void kern_dot_q5_k_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q5_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m512i m4 = _mm512_set1_epi8(0xF);
	const __m512i m16 = _mm512_set1_epi8(0x10);
	const __m512i cnt = kq_halves_epi16(0, 4);
	const __m512i hcnt = kq_halves_epi16(0, 1);
	__m512 acc = _mm512_setzero_ps();
	__m128 acc_m = _mm_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const float dmin = -y[i].d * KQ_FP16(x[i].dmin);
		uint32_t u[4];
		kern_kquant_unpack_k4_u32(x[i].scales, u);
		const __m256i ms = _mm256_cvtepu8_epi16(
			_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
		acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(kq_k4_mins(ms, y[i].bsums)),
				     acc_m);
		const __m512i sc = _mm512_zextsi256_si512(ms);
		const uint8_t *q5 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		/* qh: low half holds bit 2c, high half (shifted by 1) bit 2c+1, at
		 * bit 0 after c steps of >> 2; shift leaks stay above bit 0. */
		__m512i hb = _mm512_srlv_epi16(kq_bcast256(x[i].qh), hcnt);
		__m512i sumi0 = _mm512_setzero_si512(), sumi1 = _mm512_setzero_si512();
		for (int c = 0; c < 4; c++) {
			const __m512i lo = _mm512_and_si512(
				_mm512_srlv_epi16(kq_bcast256(q5 + 32 * c), cnt), m4);
			/* (m16 & (hb << 4)) | lo */
			const __m512i q = _mm512_ternarylogic_epi32(m16, _mm512_slli_epi16(hb, 4),
								    lo, 0xEA);
			hb = _mm512_srli_epi16(hb, 2);
			const __m512i p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(q8 + 64 * c));
			const __m512i scv = _mm512_permutexvar_epi16(kq_idx(kq_idx_k4[c]), sc);
			if (c & 1)
				sumi1 = _mm512_dpwssd_epi32(sumi1, p, scv);
			else
				sumi0 = _mm512_dpwssd_epi32(sumi0, p, scv);
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(d),
				      _mm512_cvtepi32_ps(_mm512_add_epi32(sumi0, sumi1)), acc);
	}
	*s = _mm512_reduce_add_ps(acc) + kq_hsum_ps128(acc_m);
}

/* ------------------------------------------------------------------ Q6_K */

void kern_dot_q6_k_q8_k_avx512(int n, float *restrict s, const void *restrict vx,
			       const void *restrict vy)
{
	const kern_block_q6_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	const __m512i m4 = _mm512_set1_epi8(0xF);
	const __m512i m30 = _mm512_set1_epi8(0x30);
	const __m512i hcnt = kq_halves_epi16(0, 2);
	__m512 acc = _mm512_setzero_ps();

	for (int i = 0; i < nb; i++) {
		const float d = y[i].d * KQ_FP16(x[i].d);
		const __m256i sc16 =
			_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
		const __m256i off = _mm256_madd_epi16(
			sc16, _mm256_loadu_si256((const __m256i *)y[i].bsums));
		/* stored quants are q+32: start from -32 * sum(sc * bsums) */
		__m512i sumi0 = _mm512_zextsi256_si512(
			_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5)));
		__m512i sumi1 = _mm512_setzero_si512();
		const __m512i sc = _mm512_zextsi256_si512(sc16);
		for (int h = 0; h < 2; h++) {
			const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);
			/* low half: qh (bits 0-1 / 4-5 for elements 0..31 / 64..95),
			 * high half: qh >> 2 (elements 32..63 / 96..127) */
			const __m512i qh = _mm512_srlv_epi16(kq_bcast256(x[i].qh + 32 * h), hcnt);
			const int8_t *q8 = y[i].qs + 128 * h;
			/* elements 0..63: low nibbles | (qh << 4) & 0x30 */
			const __m512i qa = _mm512_ternarylogic_epi32(
				m4, ql, _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30), 0xEA);
			/* elements 64..127: high nibbles | qh & 0x30 */
			const __m512i qb = _mm512_ternarylogic_epi32(
				m4, _mm512_srli_epi16(ql, 4), _mm512_and_si512(qh, m30), 0xEA);
			const __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512(q8));
			const __m512i pb = _mm512_maddubs_epi16(qb, _mm512_loadu_si512(q8 + 64));
			sumi0 = _mm512_dpwssd_epi32(
				sumi0, pa, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][0]), sc));
			sumi1 = _mm512_dpwssd_epi32(
				sumi1, pb, _mm512_permutexvar_epi16(kq_idx(kq_idx_g16[h][1]), sc));
		}
		acc = _mm512_fmadd_ps(_mm512_set1_ps(d),
				      _mm512_cvtepi32_ps(_mm512_add_epi32(sumi0, sumi1)), acc);
	}
	*s = _mm512_reduce_add_ps(acc);
}

/* ------------------------------------------------------------------ Q8_K */

/* Full sums of four int32x8 vectors -> one int32x4 (a, b, c, d). */
static inline __m128i kq_hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d)
{
	const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
	return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* Bit-identical to kern_quant_q8_k_ref (see the AVX2 variant's notes). */
void kern_quant_q8_k_avx512(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	const __m512i q127 = _mm512_set1_epi32(127);

	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		__m512 mx0 = _mm512_setzero_ps(), mx1 = mx0, mx2 = mx0, mx3 = mx0;
		for (int j = 0; j < KERN_QK_K; j += 64) {
			mx0 = _mm512_max_ps(mx0, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
			mx1 = _mm512_max_ps(mx1, _mm512_abs_ps(_mm512_loadu_ps(x + j + 16)));
			mx2 = _mm512_max_ps(mx2, _mm512_abs_ps(_mm512_loadu_ps(x + j + 32)));
			mx3 = _mm512_max_ps(mx3, _mm512_abs_ps(_mm512_loadu_ps(x + j + 48)));
		}
		const float amax = _mm512_reduce_max_ps(
			_mm512_max_ps(_mm512_max_ps(mx0, mx1), _mm512_max_ps(mx2, mx3)));
		if (!amax) {
			memset(&y[i], 0, sizeof y[i]);
			continue;
		}
		const __m512 vamax = _mm512_set1_ps(amax);
		float max = 0;
		for (int j = 0; j < KERN_QK_K; j += 16) {
			const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)),
							       vamax, _CMP_EQ_OQ);
			if (m) {
				max = x[j + __builtin_ctz((unsigned)m)];
				break;
			}
		}
		const float iscale = -127.f / max;
		const __m512 vis = _mm512_set1_ps(iscale);
		__m256i t[16]; /* per 16-element group, folded to int32x8 */
		for (int g = 0; g < 16; g++) {
			const __m512i v = _mm512_min_epi32(
				_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), vis)),
				q127);
			_mm_storeu_si128((__m128i *)(y[i].qs + 16 * g), _mm512_cvtsepi32_epi8(v));
			t[g] = _mm256_add_epi32(_mm512_castsi512_si256(v),
						_mm512_extracti64x4_epi64(v, 1));
		}
		for (int g = 0; g < 16; g += 8) {
			const __m128i s0 = kq_hsum4_epi32(t[g], t[g + 1], t[g + 2], t[g + 3]);
			const __m128i s1 = kq_hsum4_epi32(t[g + 4], t[g + 5], t[g + 6], t[g + 7]);
			_mm_storeu_si128((__m128i *)(y[i].bsums + g), _mm_packs_epi32(s0, s1));
		}
		y[i].d = 1 / iscale;
	}
}
