/* Scalar reference dots of K-quant rows with Q8_K rows.
 *
 * Per super-block the sum is exact integer arithmetic on quants and scales
 * (as ggml's generic code); floats enter only as the per-block factors
 * d_x * d_y (and dmin_x * d_y for the min term). Per-block integer sums
 * stay below 2^28 in magnitude (worst case Q6_K: 16 groups x 16 x 32 x 128
 * x 128), so int32 is safe.
 */
#include "kquant.h"

#include "fp16.h"

void kern_dot_q2_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q2_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		const uint8_t *q2 = x[i].qs, *sc = x[i].scales;
		const int8_t *q8 = y[i].qs;
		/* min term: sum_j m_j * bsums_j (16 groups of 16) */
		int summs = 0;
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * (sc[j] >> 4);
		int isum = 0, is = 0;
		for (int h = 0; h < 2; h++, q2 += 32) {
			for (int shift = 0; shift < 8; shift += 2) {
				for (int half = 0; half < 2; half++) {
					int acc = 0;
					for (int l = 16 * half; l < 16 * half + 16; l++)
						acc += q8[l] * ((q2[l] >> shift) & 3);
					isum += (sc[is++] & 0xF) * acc;
				}
				q8 += 32;
			}
		}
		const float dall = y[i].d * kern_fp16_to_fp32(x[i].d);
		const float dmin = y[i].d * kern_fp16_to_fp32(x[i].dmin);
		sumf += dall * isum - dmin * summs;
	}
	*s = sumf;
}

void kern_dot_q3_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q3_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		int8_t sc[16];
		kern_kquant_unpack_scales_q3_k(x[i].scales, sc);
		const uint8_t *q3 = x[i].qs, *hm = x[i].hmask;
		const int8_t *q8 = y[i].qs;
		int isum = 0, is = 0;
		uint8_t m = 1;
		for (int h = 0; h < 2; h++, q3 += 32) {
			for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
				for (int half = 0; half < 2; half++) {
					int acc = 0;
					for (int l = 16 * half; l < 16 * half + 16; l++) {
						const int q = ((q3[l] >> shift) & 3) -
							      ((hm[l] & m) ? 0 : 4);
						acc += q8[l] * q;
					}
					isum += sc[is++] * acc;
				}
				q8 += 32;
			}
		}
		sumf += kern_fp16_to_fp32(x[i].d) * y[i].d * isum;
	}
	*s = sumf;
}

void kern_dot_q4_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q4_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		uint8_t sc[8], m[8];
		kern_kquant_unpack_scale_min_k4(x[i].scales, sc, m);
		const uint8_t *q4 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		int summs = 0; /* sub-block j (32 elements) = bsums 2j, 2j+1 */
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * m[j / 2];
		int isum = 0;
		for (int c = 0; c < 4; c++, q4 += 32, q8 += 64) {
			int lo = 0, hi = 0;
			for (int l = 0; l < 32; l++) {
				lo += q8[l] * (q4[l] & 0xF);
				hi += q8[l + 32] * (q4[l] >> 4);
			}
			isum += sc[2 * c] * lo + sc[2 * c + 1] * hi;
		}
		const float d = kern_fp16_to_fp32(x[i].d) * y[i].d;
		const float dmin = kern_fp16_to_fp32(x[i].dmin) * y[i].d;
		sumf += d * isum - dmin * summs;
	}
	*s = sumf;
}

void kern_dot_q5_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q5_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		uint8_t sc[8], m[8];
		kern_kquant_unpack_scale_min_k4(x[i].scales, sc, m);
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;
		const int8_t *q8 = y[i].qs;
		int summs = 0;
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * m[j / 2];
		int isum = 0;
		for (int c = 0; c < 4; c++, ql += 32, q8 += 64) {
			int lo = 0, hi = 0;
			for (int l = 0; l < 32; l++) {
				const int a = (ql[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
				const int b = (ql[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
				lo += q8[l] * a;
				hi += q8[l + 32] * b;
			}
			isum += sc[2 * c] * lo + sc[2 * c + 1] * hi;
		}
		const float d = kern_fp16_to_fp32(x[i].d) * y[i].d;
		const float dmin = kern_fp16_to_fp32(x[i].dmin) * y[i].d;
		sumf += d * isum - dmin * summs;
	}
	*s = sumf;
}

void kern_dot_q6_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q6_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;
		const int8_t *q8 = y[i].qs;
		int isum = 0;
		for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, q8 += 128) {
			int acc[8] = {0}; /* per 16-element group of this half */
			for (int l = 0; l < 32; l++) {
				const int g = l / 16;
				const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				acc[g + 0] += q8[l] * q1;
				acc[g + 2] += q8[l + 32] * q2;
				acc[g + 4] += q8[l + 64] * q3;
				acc[g + 6] += q8[l + 96] * q4;
			}
			for (int g = 0; g < 8; g++)
				isum += sc[g] * acc[g];
		}
		sumf += kern_fp16_to_fp32(x[i].d) * y[i].d * isum;
	}
	*s = sumf;
}

void kern_dot_q8_k_q8_k_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_block_q8_K *x = vx;
	const kern_block_q8_K *y = vy;
	const int nb = n / KERN_QK_K;
	float sumf = 0;
	for (int i = 0; i < nb; i++) {
		int isum = 0;
		for (int j = 0; j < KERN_QK_K; j++)
			isum += x[i].qs[j] * y[i].qs[j];
		sumf += x[i].d * y[i].d * isum;
	}
	*s = sumf;
}
