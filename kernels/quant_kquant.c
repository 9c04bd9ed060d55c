/* K-quant reference dequantization and quantization.
 *
 * Layouts and numerics follow ggml (llama.cpp) so that files quantized by
 * either tool are interchangeable; the weight quantizers reproduce ggml's
 * reference-quality searches (make_qkx2_quants for the scale+min types Q2_K
 * Q4_K Q5_K, make_q3_quants / make_qx_quants for the symmetric types Q3_K
 * Q6_K), and Q8_K matches quantize_row_q8_K_ref bit for bit.
 */
#include "kquant.h"

#include <math.h>
#include <string.h>

#include "fp16.h"

/* Below this a group's max is treated as zero (ggml's GROUP_MAX_EPS). */
#define KQ_GROUP_MAX_EPS 1e-15f

static inline int kq_clamp(int v, int lo, int hi)
{
	return v < lo ? lo : (v > hi ? hi : v);
}

/* Asymmetric n-level fit x ~ scale * L + min with L in [0, nmax], weighted
 * by w (error |.| if use_mad else squared). Tries the plain min/max grid,
 * then nstep+1 rescaled grids with a closed-form least-squares refit of
 * scale and min; keeps the best. Returns scale, stores -min (>= 0) in
 * *the_min. L receives the chosen levels; laux is scratch of n bytes. */
static float kq_make_qkx2_quants(int n, int nmax, const float *restrict x,
				 const float *restrict w, uint8_t *restrict L, float *the_min,
				 uint8_t *restrict laux, float rmin, float rdelta, int nstep,
				 int use_mad)
{
	float min = x[0], max = x[0];
	float sum_w = w[0], sum_x = sum_w * x[0];
	for (int i = 1; i < n; i++) {
		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		sum_w += w[i];
		sum_x += w[i] * x[i];
	}
	if (min > 0)
		min = 0;
	if (max == min) {
		memset(L, 0, (size_t)n);
		*the_min = -min;
		return 0.f;
	}
	float iscale = nmax / (max - min);
	float scale = 1 / iscale;
	float best_mad = 0;
	for (int i = 0; i < n; i++) {
		const int l = kq_clamp(kern_nearest_int(iscale * (x[i] - min)), 0, nmax);
		L[i] = (uint8_t)l;
		float diff = scale * l + min - x[i];
		diff = use_mad ? fabsf(diff) : diff * diff;
		best_mad += w[i] * diff;
	}
	if (nstep < 1) {
		*the_min = -min;
		return scale;
	}
	for (int is = 0; is <= nstep; is++) {
		iscale = (rmin + rdelta * is + nmax) / (max - min);
		float sum_l = 0, sum_l2 = 0, sum_xl = 0;
		for (int i = 0; i < n; i++) {
			const int l = kq_clamp(kern_nearest_int(iscale * (x[i] - min)), 0, nmax);
			laux[i] = (uint8_t)l;
			sum_l += w[i] * l;
			sum_l2 += w[i] * l * l;
			sum_xl += w[i] * l * x[i];
		}
		const float det = sum_w * sum_l2 - sum_l * sum_l;
		if (det > 0) {
			float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
			float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
			if (this_min > 0) {
				this_min = 0;
				this_scale = sum_xl / sum_l2;
			}
			float mad = 0;
			for (int i = 0; i < n; i++) {
				float diff = this_scale * laux[i] + this_min - x[i];
				diff = use_mad ? fabsf(diff) : diff * diff;
				mad += w[i] * diff;
			}
			if (mad < best_mad) {
				memcpy(L, laux, (size_t)n);
				best_mad = mad;
				scale = this_scale;
				min = this_min;
			}
		}
	}
	*the_min = -min;
	return scale;
}

/* Symmetric fit x ~ scale * (L - nmax), L - nmax in [-nmax, nmax-1], with the
 * scale sign chosen so the largest-magnitude value maps to -nmax; then an
 * x^2-weighted least-squares refit over 18 nearby grids (ggml's
 * make_qx_quants with rmse_type 1). Returns the scale. */
static float kq_make_qx_quants(int n, int nmax, const float *restrict x, uint8_t *restrict L)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++) {
		const float ax = fabsf(x[i]);
		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < KQ_GROUP_MAX_EPS) {
		memset(L, 0, (size_t)n);
		return 0.f;
	}
	float iscale = -nmax / max;
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		const int l = kq_clamp(kern_nearest_int(iscale * x[i]), -nmax, nmax - 1);
		L[i] = (uint8_t)(l + nmax);
		const float w = x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	float scale = suml2 ? sumlx / suml2 : 0.f;
	float best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		iscale = -(nmax + 0.1f * is) / max;
		sumlx = suml2 = 0;
		for (int i = 0; i < n; i++) {
			const int l = kq_clamp(kern_nearest_int(iscale * x[i]), -nmax, nmax - 1);
			const float w = x[i] * x[i];
			sumlx += w * x[i] * l;
			suml2 += w * l * l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (int i = 0; i < n; i++) {
				const int l = kq_clamp(kern_nearest_int(iscale * x[i]), -nmax,
						       nmax - 1);
				L[i] = (uint8_t)(nmax + l);
			}
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

/* Symmetric fit for Q3_K (ggml's make_q3_quants with do_rmse): start from the
 * max-abs grid, then up to 5 passes of coordinate descent on each level,
 * keeping a change when it raises sumlx^2/suml2 (x^2-weighted). L gets
 * level + nmax in [0, 2*nmax). Returns the scale. */
static float kq_make_q3_quants(int n, int nmax, const float *restrict x, int8_t *restrict L)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++) {
		const float ax = fabsf(x[i]);
		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < KQ_GROUP_MAX_EPS) {
		memset(L, 0, (size_t)n);
		return 0.f;
	}
	const float iscale = -nmax / max;
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		const int l = kq_clamp(kern_nearest_int(iscale * x[i]), -nmax, nmax - 1);
		L[i] = (int8_t)l;
		const float w = x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	for (int itry = 0; itry < 5; itry++) {
		int n_changed = 0;
		for (int i = 0; i < n; i++) {
			const float w = x[i] * x[i];
			float slx = sumlx - w * x[i] * L[i];
			if (slx > 0) {
				float sl2 = suml2 - w * L[i] * L[i];
				int new_l = kq_clamp(kern_nearest_int(x[i] * sl2 / slx), -nmax,
						     nmax - 1);
				if (new_l != L[i]) {
					slx += w * x[i] * new_l;
					sl2 += w * new_l * new_l;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (int8_t)new_l;
						sumlx = slx;
						suml2 = sl2;
						n_changed++;
					}
				}
			}
		}
		if (!n_changed)
			break;
	}
	for (int i = 0; i < n; i++)
		L[i] = (int8_t)(L[i] + nmax);
	return sumlx / suml2;
}

/* ------------------------------------------------------------------ Q2_K */

/* Element 128h + 32j + l (h half, j bit pair, l in 0..31) is bits 2j..2j+1
 * of qs[32h + l]; its scale|min byte is scales[8h + 2j + l/16]. */
void kern_dequant_q2_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q2_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const float dmin = kern_fp16_to_fp32(x[i].dmin);
		const uint8_t *q = x[i].qs;
		int is = 0;
		for (int h = 0; h < 2; h++) {
			for (int j = 0; j < 4; j++) {
				const int shift = 2 * j;
				for (int half = 0; half < 2; half++) {
					const uint8_t sc = x[i].scales[is++];
					const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
					for (int l = 0; l < 16; l++)
						*y++ = dl * ((q[16 * half + l] >> shift) & 3) - ml;
				}
			}
			q += 32;
		}
	}
}

void kern_quant_q2_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q2_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	const float q4scale = 15.f;
	uint8_t L[KERN_QK_K], laux[16];
	float w[16], mins[KERN_QK_K / 16], scales[KERN_QK_K / 16];

	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		float max_scale = 0, max_min = 0; /* both >= 0: the min is split off */
		for (int j = 0; j < KERN_QK_K / 16; j++) {
			for (int l = 0; l < 16; l++)
				w[l] = fabsf(x[16 * j + l]);
			scales[j] = kq_make_qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j],
							laux, -0.5f, 0.1f, 15, 1);
			if (scales[j] > max_scale)
				max_scale = scales[j];
			if (mins[j] > max_min)
				max_min = mins[j];
		}
		if (max_scale > 0) {
			const float iscale = q4scale / max_scale;
			for (int j = 0; j < KERN_QK_K / 16; j++)
				y[i].scales[j] = (uint8_t)kern_nearest_int(iscale * scales[j]);
			y[i].d = kern_fp32_to_fp16(max_scale / q4scale);
		} else {
			memset(y[i].scales, 0, sizeof y[i].scales);
			y[i].d = kern_fp32_to_fp16(0.f);
		}
		if (max_min > 0) {
			const float iscale = q4scale / max_min;
			for (int j = 0; j < KERN_QK_K / 16; j++)
				y[i].scales[j] |= (uint8_t)(kern_nearest_int(iscale * mins[j]) << 4);
			y[i].dmin = kern_fp32_to_fp16(max_min / q4scale);
		} else {
			y[i].dmin = kern_fp32_to_fp16(0.f);
		}
		/* Re-fit the levels against the rounded 4-bit scales and mins. */
		for (int j = 0; j < KERN_QK_K / 16; j++) {
			const float d = kern_fp16_to_fp32(y[i].d) * (y[i].scales[j] & 0xF);
			if (!d)
				continue;
			const float dm = kern_fp16_to_fp32(y[i].dmin) * (y[i].scales[j] >> 4);
			for (int ii = 0; ii < 16; ii++)
				L[16 * j + ii] = (uint8_t)kq_clamp(
					kern_nearest_int((x[16 * j + ii] + dm) / d), 0, 3);
		}
		for (int j = 0; j < KERN_QK_K; j += 128)
			for (int l = 0; l < 32; l++)
				y[i].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
							       (L[j + l + 64] << 4) |
							       (L[j + l + 96] << 6));
	}
}

/* ------------------------------------------------------------------ Q3_K */

/* Element 128h + 32j + l: low 2 bits at bits 2j of qs[32h + l], high bit
 * (set means +0, clear means -4) at bit 4h + j of hmask[l]; scale index
 * 8h + 2j + l/16. Value = d * scale * (q - 4). */
void kern_dequant_q3_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q3_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d_all = kern_fp16_to_fp32(x[i].d);
		int8_t sc[16];
		kern_kquant_unpack_scales_q3_k(x[i].scales, sc);
		const uint8_t *q = x[i].qs;
		const uint8_t *hm = x[i].hmask;
		int is = 0;
		uint8_t m = 1;
		for (int h = 0; h < 2; h++) {
			for (int j = 0; j < 4; j++) {
				const int shift = 2 * j;
				for (int half = 0; half < 2; half++) {
					const float dl = d_all * sc[is++];
					for (int l = 16 * half; l < 16 * half + 16; l++) {
						const int v = ((q[l] >> shift) & 3) -
							      ((hm[l] & m) ? 0 : 4);
						*y++ = dl * v;
					}
				}
				m <<= 1;
			}
			q += 32;
		}
	}
}

void kern_quant_q3_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q3_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	int8_t L[KERN_QK_K];
	float scales[KERN_QK_K / 16];

	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		float max_scale = 0, amax = 0;
		for (int j = 0; j < KERN_QK_K / 16; j++) {
			scales[j] = kq_make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
			const float a = fabsf(scales[j]);
			if (a > amax) {
				amax = a;
				max_scale = scales[j];
			}
		}
		memset(y[i].scales, 0, sizeof y[i].scales);
		if (max_scale) {
			/* Signed 6-bit scales: the largest-magnitude one maps to -32. */
			const float iscale = -32.f / max_scale;
			for (int j = 0; j < 16; j++) {
				int l = kq_clamp(kern_nearest_int(iscale * scales[j]), -32, 31) + 32;
				if (j < 8)
					y[i].scales[j] = (uint8_t)(l & 0xF);
				else
					y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
				l >>= 4;
				y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
			}
			y[i].d = kern_fp32_to_fp16(1 / iscale);
		} else {
			y[i].d = kern_fp32_to_fp16(0.f);
		}
		int8_t sc[16];
		kern_kquant_unpack_scales_q3_k(y[i].scales, sc);
		for (int j = 0; j < 16; j++) {
			const float d = kern_fp16_to_fp32(y[i].d) * sc[j];
			if (!d)
				continue;
			for (int ii = 0; ii < 16; ii++)
				L[16 * j + ii] = (int8_t)(
					kq_clamp(kern_nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
		}
		/* High bit of element k goes to hmask[k % 32], bit k / 32. */
		memset(y[i].hmask, 0, sizeof y[i].hmask);
		for (int k = 0; k < KERN_QK_K; k++) {
			if (L[k] > 3) {
				y[i].hmask[k % 32] |= (uint8_t)(1u << (k / 32));
				L[k] -= 4;
			}
		}
		for (int j = 0; j < KERN_QK_K; j += 128)
			for (int l = 0; l < 32; l++)
				y[i].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
							       (L[j + l + 64] << 4) |
							       (L[j + l + 96] << 6));
	}
}

/* ------------------------------------------------------------------ Q4_K */

/* Element 64c + l (l < 32) is the low nibble of qs[32c + l] with sub-block
 * 2c; element 64c + 32 + l the high nibble with sub-block 2c + 1. Value =
 * d * sc * q - dmin * m. */
void kern_dequant_q4_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q4_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const float dmin = kern_fp16_to_fp32(x[i].dmin);
		uint8_t sc[8], m[8];
		kern_kquant_unpack_scale_min_k4(x[i].scales, sc, m);
		const uint8_t *q = x[i].qs;
		for (int c = 0; c < 4; c++, q += 32) {
			const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
			const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
			for (int l = 0; l < 32; l++)
				*y++ = d1 * (q[l] & 0xF) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * (q[l] >> 4) - m2;
		}
	}
}

/* Shared by Q4_K and Q5_K: fit 8 sub-blocks of 32 with qkx2 (weights
 * rms + |x|), quantize scales and mins to 6 bits against their maxima,
 * pack them into the 12-byte array, and re-fit levels to the rounded
 * values. L receives levels in [0, nmax]. */
static void kq_quant_k4_scales(const float *restrict x, int nmax, float rmin, int nstep,
			       uint8_t *restrict L, kern_fp16_t *d_out, kern_fp16_t *dmin_out,
			       uint8_t packed[12])
{
	uint8_t laux[32];
	float w[32], mins[8], scales[8];
	float max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		float sum_x2 = 0;
		for (int l = 0; l < 32; l++)
			sum_x2 += x[32 * j + l] * x[32 * j + l];
		const float av_x = sqrtf(sum_x2 / 32);
		for (int l = 0; l < 32; l++)
			w[l] = av_x + fabsf(x[32 * j + l]);
		scales[j] = kq_make_qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j],
						laux, rmin, 0.1f, nstep, 0);
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
	const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	for (int j = 0; j < 8; j++) {
		int ls = kern_nearest_int(inv_scale * scales[j]);
		int lm = kern_nearest_int(inv_min * mins[j]);
		ls = ls < 63 ? ls : 63;
		lm = lm < 63 ? lm : 63;
		if (j < 4) {
			packed[j] = (uint8_t)ls;
			packed[j + 4] = (uint8_t)lm;
		} else {
			packed[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
			packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
			packed[j] |= (uint8_t)((lm >> 4) << 6);
		}
	}
	*d_out = kern_fp32_to_fp16(max_scale / 63.f);
	*dmin_out = kern_fp32_to_fp16(max_min / 63.f);
	uint8_t sc[8], m[8];
	kern_kquant_unpack_scale_min_k4(packed, sc, m);
	for (int j = 0; j < 8; j++) {
		const float d = kern_fp16_to_fp32(*d_out) * sc[j];
		if (!d)
			continue;
		const float dm = kern_fp16_to_fp32(*dmin_out) * m[j];
		for (int ii = 0; ii < 32; ii++)
			L[32 * j + ii] = (uint8_t)kq_clamp(
				kern_nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
	}
}

void kern_quant_q4_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q4_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K];
	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		memset(y[i].scales, 0, sizeof y[i].scales);
		kq_quant_k4_scales(x, 15, -1.f, 20, L, &y[i].d, &y[i].dmin, y[i].scales);
		uint8_t *q = y[i].qs;
		for (int j = 0; j < KERN_QK_K; j += 64, q += 32)
			for (int l = 0; l < 32; l++)
				q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
	}
}

/* ------------------------------------------------------------------ Q5_K */

/* As Q4_K, plus a 5th bit: element 64c + l has it at bit 2c of qh[l],
 * element 64c + 32 + l at bit 2c + 1. */
void kern_dequant_q5_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q5_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const float dmin = kern_fp16_to_fp32(x[i].dmin);
		uint8_t sc[8], m[8];
		kern_kquant_unpack_scale_min_k4(x[i].scales, sc, m);
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;
		uint8_t u1 = 1, u2 = 2;
		for (int c = 0; c < 4; c++, ql += 32, u1 <<= 2, u2 <<= 2) {
			const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
			const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
			for (int l = 0; l < 32; l++)
				*y++ = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
		}
	}
}

void kern_quant_q5_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q5_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K];
	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		memset(y[i].scales, 0, sizeof y[i].scales);
		kq_quant_k4_scales(x, 31, -0.5f, 15, L, &y[i].d, &y[i].dmin, y[i].scales);
		memset(y[i].qh, 0, sizeof y[i].qh);
		uint8_t *ql = y[i].qs, *qh = y[i].qh;
		uint8_t m1 = 1, m2 = 2;
		for (int c = 0; c < KERN_QK_K; c += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
			for (int j = 0; j < 32; j++) {
				int l1 = L[c + j], l2 = L[c + j + 32];
				if (l1 > 15) {
					l1 -= 16;
					qh[j] |= m1;
				}
				if (l2 > 15) {
					l2 -= 16;
					qh[j] |= m2;
				}
				ql[j] = (uint8_t)(l1 | (l2 << 4));
			}
		}
	}
}

/* ------------------------------------------------------------------ Q6_K */

/* Element 128h + 32k + l (k 0..3, l 0..31): low 4 bits from
 * ql[64h + 32(k & 1) + l], low nibble for k < 2 and high nibble for k >= 2;
 * high 2 bits at bits 2k of qh[32h + l]; scale scales[8h + 2k + l/16].
 * Value = d * scale * (q - 32). */
void kern_dequant_q6_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q6_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;
		for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
			for (int l = 0; l < 32; l++) {
				const int is = l / 16;
				const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				y[l] = d * sc[is + 0] * q1;
				y[l + 32] = d * sc[is + 2] * q2;
				y[l + 64] = d * sc[is + 4] * q3;
				y[l + 96] = d * sc[is + 6] * q4;
			}
		}
	}
}

void kern_quant_q6_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q6_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K];
	float scales[KERN_QK_K / 16];

	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		float max_scale = 0, max_abs_scale = 0;
		for (int ib = 0; ib < KERN_QK_K / 16; ib++) {
			scales[ib] = kq_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
			const float a = fabsf(scales[ib]);
			if (a > max_abs_scale) {
				max_abs_scale = a;
				max_scale = scales[ib];
			}
		}
		if (max_abs_scale < KQ_GROUP_MAX_EPS) {
			memset(&y[i], 0, sizeof y[i]);
			y[i].d = kern_fp32_to_fp16(0.f);
			continue;
		}
		/* int8 scales: the largest-magnitude one maps to -128. */
		const float iscale = -128.f / max_scale;
		y[i].d = kern_fp32_to_fp16(1 / iscale);
		for (int ib = 0; ib < KERN_QK_K / 16; ib++) {
			const int v = kern_nearest_int(iscale * scales[ib]);
			y[i].scales[ib] = (int8_t)(v < 127 ? v : 127);
		}
		for (int j = 0; j < KERN_QK_K / 16; j++) {
			const float d = kern_fp16_to_fp32(y[i].d) * y[i].scales[j];
			if (!d)
				continue;
			for (int ii = 0; ii < 16; ii++)
				L[16 * j + ii] = (uint8_t)(
					kq_clamp(kern_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
		}
		uint8_t *ql = y[i].ql, *qh = y[i].qh;
		for (int j = 0; j < KERN_QK_K; j += 128, ql += 64, qh += 32) {
			for (int l = 0; l < 32; l++) {
				const uint8_t a = L[j + l], b = L[j + l + 32];
				const uint8_t c = L[j + l + 64], e = L[j + l + 96];
				ql[l] = (uint8_t)((a & 0xF) | ((c & 0xF) << 4));
				ql[l + 32] = (uint8_t)((b & 0xF) | ((e & 0xF) << 4));
				qh[l] = (uint8_t)((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) |
						  ((e >> 4) << 6));
			}
		}
	}
}

/* ------------------------------------------------------------------ Q8_K */

void kern_dequant_q8_k_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_block_q8_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++)
		for (int j = 0; j < KERN_QK_K; j++)
			*y++ = x[i].d * x[i].qs[j];
}

void kern_quant_q8_k_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++, x += KERN_QK_K) {
		/* max = the first value of largest magnitude, sign kept. */
		float max = 0, amax = 0;
		for (int j = 0; j < KERN_QK_K; j++) {
			const float ax = fabsf(x[j]);
			if (ax > amax) {
				amax = ax;
				max = x[j];
			}
		}
		if (!amax) {
			y[i].d = 0;
			memset(y[i].qs, 0, sizeof y[i].qs);
			memset(y[i].bsums, 0, sizeof y[i].bsums);
			continue;
		}
		const float iscale = -127.f / max;
		for (int j = 0; j < KERN_QK_K; j++) {
			const int v = kern_nearest_int(iscale * x[j]);
			y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
		}
		for (int j = 0; j < KERN_QK_K / 16; j++) {
			int sum = 0;
			for (int ii = 0; ii < 16; ii++)
				sum += y[i].qs[16 * j + ii];
			y[i].bsums[j] = (int16_t)sum;
		}
		y[i].d = 1 / iscale;
	}
}
