/* Reference (scalar) dequantize and quantize for the legacy types.
 *
 * Quantizers follow ggml's quantize_row_<type>_ref step for step (same
 * operations, same order, same float rounding) so a row quantized here is
 * byte-identical to one quantized by llama.cpp's reference path. Dequantizers
 * follow ggml's dequantize_row_<type>.
 */
#include "legacy.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "fp16.h"

/* ---------------------------------------------------------------- F32/F16/BF16 */

void kern_dequant_f32_ref(const void *restrict x, float *restrict y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

void kern_dequant_f16_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_fp16_t *x = vx;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_fp16_to_fp32(x[i]);
}

void kern_dequant_bf16_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_bf16_t *x = vx;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_bf16_to_fp32(x[i]);
}

void kern_quant_f32_ref(const float *restrict x, void *restrict y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

void kern_quant_f16_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_fp16_t *y = vy;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_fp32_to_fp16(x[i]);
}

void kern_quant_bf16_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_bf16_t *y = vy;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_fp32_to_bf16(x[i]);
}

/* ---------------------------------------------------------------- helpers */

/* The signed value of largest magnitude in x[0..k) (first one on ties), as
 * ggml's q4_0/q5_0 use it: the scale is chosen so that this value maps to
 * the most negative quant (-8 or -16) exactly. */
static float signed_absmax(const float *x, int k)
{
	float amax = 0.0f, max = 0.0f;
	for (int j = 0; j < k; j++) {
		const float v = x[j];
		if (amax < fabsf(v)) {
			amax = fabsf(v);
			max = v;
		}
	}
	return max;
}

static void min_max(const float *x, int k, float *min_out, float *max_out)
{
	float min = FLT_MAX, max = -FLT_MAX;
	for (int j = 0; j < k; j++) {
		if (x[j] < min)
			min = x[j];
		if (x[j] > max)
			max = x[j];
	}
	*min_out = min;
	*max_out = max;
}

/* ---------------------------------------------------------------- Q4_0 */

void kern_quant_q4_0_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK4_0;
	kern_block_q4_0 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		const float max = signed_absmax(x, qk);
		const float d = max / -8;
		const float id = d ? 1.0f / d : 0.0f;

		y[i].d = kern_fp32_to_fp16(d);
		for (int j = 0; j < qk / 2; j++) {
			const float x0 = x[j] * id;
			const float x1 = x[qk / 2 + j] * id;
			/* (int8_t) truncates; +8.5 turns that into round-half-up
			 * of x*id + 8. Only +8 (the opposite sign of max) can reach
			 * 16, hence the clamp. */
			const int8_t t0 = (int8_t)(x0 + 8.5f);
			const int8_t t1 = (int8_t)(x1 + 8.5f);
			const uint8_t xi0 = (uint8_t)(t0 < 15 ? t0 : 15);
			const uint8_t xi1 = (uint8_t)(t1 < 15 ? t1 : 15);
			y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
		}
	}
}

void kern_dequant_q4_0_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK4_0;
	const kern_block_q4_0 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		for (int j = 0; j < qk / 2; j++) {
			const int x0 = (x[i].qs[j] & 0x0F) - 8;
			const int x1 = (x[i].qs[j] >> 4) - 8;
			y[j] = (float)x0 * d;
			y[j + qk / 2] = (float)x1 * d;
		}
	}
}

/* ---------------------------------------------------------------- Q4_1 */

void kern_quant_q4_1_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK4_1;
	kern_block_q4_1 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		float min, max;
		min_max(x, qk, &min, &max);
		const float d = (max - min) / ((1 << 4) - 1);
		const float id = d ? 1.0f / d : 0.0f;

		y[i].d = kern_fp32_to_fp16(d);
		y[i].m = kern_fp32_to_fp16(min);
		for (int j = 0; j < qk / 2; j++) {
			const float x0 = (x[j] - min) * id;
			const float x1 = (x[qk / 2 + j] - min) * id;
			const int8_t t0 = (int8_t)(x0 + 0.5f);
			const int8_t t1 = (int8_t)(x1 + 0.5f);
			const uint8_t xi0 = (uint8_t)(t0 < 15 ? t0 : 15);
			const uint8_t xi1 = (uint8_t)(t1 < 15 ? t1 : 15);
			y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
		}
	}
}

void kern_dequant_q4_1_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK4_1;
	const kern_block_q4_1 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const float m = kern_fp16_to_fp32(x[i].m);
		for (int j = 0; j < qk / 2; j++) {
			const int x0 = x[i].qs[j] & 0x0F;
			const int x1 = x[i].qs[j] >> 4;
			y[j] = (float)x0 * d + m;
			y[j + qk / 2] = (float)x1 * d + m;
		}
	}
}

/* ---------------------------------------------------------------- Q5_0 */

void kern_quant_q5_0_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK5_0;
	kern_block_q5_0 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		const float max = signed_absmax(x, qk);
		const float d = max / -16;
		const float id = d ? 1.0f / d : 0.0f;
		uint32_t qh = 0;

		y[i].d = kern_fp32_to_fp16(d);
		for (int j = 0; j < qk / 2; j++) {
			const float x0 = x[j] * id;
			const float x1 = x[qk / 2 + j] * id;
			const int8_t t0 = (int8_t)(x0 + 16.5f);
			const int8_t t1 = (int8_t)(x1 + 16.5f);
			const uint8_t xi0 = (uint8_t)(t0 < 31 ? t0 : 31);
			const uint8_t xi1 = (uint8_t)(t1 < 31 ? t1 : 31);
			y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
			/* 5th bit of element j -> bit j of qh (little-endian u32) */
			qh |= ((xi0 & 0x10u) >> 4) << j;
			qh |= ((xi1 & 0x10u) >> 4) << (j + qk / 2);
		}
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

void kern_dequant_q5_0_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK5_0;
	const kern_block_q5_0 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < qk / 2; j++) {
			const int xh0 = (int)((qh >> j) << 4) & 0x10;
			const int xh1 = (int)(qh >> (j + 12)) & 0x10;
			const int x0 = ((x[i].qs[j] & 0x0F) | xh0) - 16;
			const int x1 = ((x[i].qs[j] >> 4) | xh1) - 16;
			y[j] = (float)x0 * d;
			y[j + qk / 2] = (float)x1 * d;
		}
	}
}

/* ---------------------------------------------------------------- Q5_1 */

void kern_quant_q5_1_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK5_1;
	kern_block_q5_1 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		float min, max;
		min_max(x, qk, &min, &max);
		const float d = (max - min) / ((1 << 5) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		uint32_t qh = 0;

		y[i].d = kern_fp32_to_fp16(d);
		y[i].m = kern_fp32_to_fp16(min);
		for (int j = 0; j < qk / 2; j++) {
			const float x0 = (x[j] - min) * id;
			const float x1 = (x[qk / 2 + j] - min) * id;
			/* ggml has no clamp here: (x - min)*id <= 31 + rounding */
			const uint8_t xi0 = (uint8_t)(x0 + 0.5f);
			const uint8_t xi1 = (uint8_t)(x1 + 0.5f);
			y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
			qh |= ((xi0 & 0x10u) >> 4) << j;
			qh |= ((xi1 & 0x10u) >> 4) << (j + qk / 2);
		}
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

void kern_dequant_q5_1_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK5_1;
	const kern_block_q5_1 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		const float m = kern_fp16_to_fp32(x[i].m);
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < qk / 2; j++) {
			const int xh0 = (int)((qh >> j) << 4) & 0x10;
			const int xh1 = (int)(qh >> (j + 12)) & 0x10;
			const int x0 = (x[i].qs[j] & 0x0F) | xh0;
			const int x1 = (x[i].qs[j] >> 4) | xh1;
			y[j] = (float)x0 * d + m;
			y[j + qk / 2] = (float)x1 * d + m;
		}
	}
}

/* ---------------------------------------------------------------- Q8_0 / Q8_1 */

static float abs_max(const float *x, int k)
{
	float amax = 0.0f;
	for (int j = 0; j < k; j++) {
		const float a = fabsf(x[j]);
		amax = amax > a ? amax : a;
	}
	return amax;
}

void kern_quant_q8_0_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK8_0;
	kern_block_q8_0 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		const float amax = abs_max(x, qk);
		const float d = amax / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;

		y[i].d = kern_fp32_to_fp16(d);
		for (int j = 0; j < qk; j++) {
			const float x0 = x[j] * id;
			y[i].qs[j] = (int8_t)roundf(x0); /* half away from zero */
		}
	}
}

void kern_quant_q8_1_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	const int qk = KERN_QK8_1;
	kern_block_q8_1 *y = vy;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, x += qk) {
		const float amax = abs_max(x, qk);
		const float d = amax / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		int sum = 0;

		y[i].d = kern_fp32_to_fp16(d);
		for (int j = 0; j < qk / 2; j++) {
			const float v0 = x[j] * id;
			const float v1 = x[qk / 2 + j] * id;
			y[i].qs[j] = (int8_t)roundf(v0);
			y[i].qs[qk / 2 + j] = (int8_t)roundf(v1);
			sum += y[i].qs[j];
			sum += y[i].qs[qk / 2 + j];
		}
		/* s feeds the min term of Q4_1/Q5_1 dots: m * sum(d*q) */
		y[i].s = kern_fp32_to_fp16((float)sum * d);
	}
}

void kern_dequant_q8_0_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK8_0;
	const kern_block_q8_0 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		for (int j = 0; j < qk; j++)
			y[j] = (float)x[i].qs[j] * d;
	}
}

void kern_dequant_q8_1_ref(const void *restrict vx, float *restrict y, int64_t n)
{
	const int qk = KERN_QK8_1;
	const kern_block_q8_1 *x = vx;
	const int64_t nb = n / qk;

	for (int64_t i = 0; i < nb; i++, y += qk) {
		const float d = kern_fp16_to_fp32(x[i].d);
		for (int j = 0; j < qk; j++)
			y[j] = (float)x[i].qs[j] * d;
	}
}
