/* Scalar reference dot products of the legacy types, in ggml's generic
 * arithmetic: integer sums per 32-element block, scaled and accumulated in
 * float. F32/F16/BF16 accumulate in double (ggml_float), which makes these the
 * most accurate variants and a good yardstick for the SIMD ones. */
#include "legacy.h"

#include <string.h>

#include "fp16.h"

void kern_dot_f32_f32_ref(int n, float *restrict s, const void *restrict vx,
			  const void *restrict vy)
{
	const float *x = vx, *y = vy;
	double sum = 0.0;
	for (int i = 0; i < n; i++)
		sum += (double)(x[i] * y[i]);
	*s = (float)sum;
}

void kern_dot_f16_f16_ref(int n, float *restrict s, const void *restrict vx,
			  const void *restrict vy)
{
	const kern_fp16_t *x = vx, *y = vy;
	double sum = 0.0;
	for (int i = 0; i < n; i++)
		sum += (double)(kern_fp16_to_fp32(x[i]) * kern_fp16_to_fp32(y[i]));
	*s = (float)sum;
}

void kern_dot_bf16_bf16_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const kern_bf16_t *x = vx, *y = vy;
	double sum = 0.0;
	for (int i = 0; i < n; i++)
		sum += (double)(kern_bf16_to_fp32(x[i]) * kern_bf16_to_fp32(y[i]));
	*s = (float)sum;
}

void kern_dot_q4_0_q8_0_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_0;
	const kern_block_q4_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		int sumi0 = 0, sumi1 = 0;
		for (int j = 0; j < qk / 2; j++) {
			const int v0 = (x[ib].qs[j] & 0x0F) - 8;
			const int v1 = (x[ib].qs[j] >> 4) - 8;
			sumi0 += v0 * y[ib].qs[j];
			sumi1 += v1 * y[ib].qs[j + qk / 2];
		}
		const int sumi = sumi0 + sumi1;
		sumf += (float)sumi * kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d);
	}
	*s = sumf;
}

void kern_dot_q4_1_q8_1_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_1;
	const kern_block_q4_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		int sumi0 = 0, sumi1 = 0;
		for (int j = 0; j < qk / 2; j++) {
			const int v0 = x[ib].qs[j] & 0x0F;
			const int v1 = x[ib].qs[j] >> 4;
			sumi0 += v0 * y[ib].qs[j];
			sumi1 += v1 * y[ib].qs[j + qk / 2];
		}
		const int sumi = sumi0 + sumi1;
		/* sum_j (d_x q_j + m)(d_y y_j) = d_x d_y sum q_j y_j + m * s_y */
		sumf += (kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d)) * (float)sumi +
			kern_fp16_to_fp32(x[ib].m) * kern_fp16_to_fp32(y[ib].s);
	}
	*s = sumf;
}

void kern_dot_q5_0_q8_0_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_0;
	const kern_block_q5_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		uint32_t qh;
		memcpy(&qh, x[ib].qh, sizeof(qh));
		int sumi0 = 0, sumi1 = 0;
		for (int j = 0; j < qk / 2; j++) {
			const int h0 = (int)((qh >> j) & 1u) << 4;
			const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
			const int v0 = ((x[ib].qs[j] & 0x0F) | h0) - 16;
			const int v1 = ((x[ib].qs[j] >> 4) | h1) - 16;
			sumi0 += v0 * y[ib].qs[j];
			sumi1 += v1 * y[ib].qs[j + qk / 2];
		}
		const int sumi = sumi0 + sumi1;
		sumf += (kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d)) * (float)sumi;
	}
	*s = sumf;
}

void kern_dot_q5_1_q8_1_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_1;
	const kern_block_q5_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		uint32_t qh;
		memcpy(&qh, x[ib].qh, sizeof(qh));
		int sumi0 = 0, sumi1 = 0;
		for (int j = 0; j < qk / 2; j++) {
			const int h0 = (int)((qh >> j) & 1u) << 4;
			const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
			const int v0 = (x[ib].qs[j] & 0x0F) | h0;
			const int v1 = (x[ib].qs[j] >> 4) | h1;
			sumi0 += v0 * y[ib].qs[j];
			sumi1 += v1 * y[ib].qs[j + qk / 2];
		}
		const int sumi = sumi0 + sumi1;
		sumf += (kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d)) * (float)sumi +
			kern_fp16_to_fp32(x[ib].m) * kern_fp16_to_fp32(y[ib].s);
	}
	*s = sumf;
}

void kern_dot_q8_0_q8_0_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_0;
	const kern_block_q8_0 *x = vx;
	const kern_block_q8_0 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		int sumi = 0;
		for (int j = 0; j < qk; j++)
			sumi += x[ib].qs[j] * y[ib].qs[j];
		sumf += (float)sumi * (kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d));
	}
	*s = sumf;
}

void kern_dot_q8_1_q8_1_ref(int n, float *restrict s, const void *restrict vx,
			    const void *restrict vy)
{
	const int qk = KERN_QK8_1;
	const kern_block_q8_1 *x = vx;
	const kern_block_q8_1 *y = vy;
	const int nb = n / qk;
	float sumf = 0.0f;

	for (int ib = 0; ib < nb; ib++) {
		int sumi = 0;
		for (int j = 0; j < qk; j++)
			sumi += x[ib].qs[j] * y[ib].qs[j];
		sumf += (float)sumi * (kern_fp16_to_fp32(x[ib].d) * kern_fp16_to_fp32(y[ib].d));
	}
	*s = sumf;
}
