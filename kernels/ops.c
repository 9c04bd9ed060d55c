#include "ops.h"

#include "kernels.h"

#include <math.h>

#include "fp16.h"
#include "legacy.h"
#include "variant.h"

void kern_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
	double sum = 0.0; /* ggml accumulates in double */
	for (int i = 0; i < n; i++)
		sum += (double)x[i] * x[i];
	const float scale = 1.0f / sqrtf((float)(sum / n) + eps);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * scale * w[i];
}

void kern_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float base)
{
	const float theta_scale = powf(base, -2.0f / (float)n_rot);
	float cs[512], sn[512]; /* n_rot / 2 angles, shared by all heads */
	float theta = (float)pos;
	const int half = n_rot / 2 < 512 ? n_rot / 2 : 512;
	for (int i = 0; i < half; i++) {
		cs[i] = cosf(theta);
		sn[i] = sinf(theta);
		theta *= theta_scale;
	}
	for (int h = 0; h < n_heads; h++) {
		float *v = x + (int64_t)h * head_dim;
		for (int i = 0; i < half; i++) {
			const float a = v[2 * i], b = v[2 * i + 1];
			v[2 * i] = a * cs[i] - b * sn[i];
			v[2 * i + 1] = a * sn[i] + b * cs[i];
		}
	}
}

void kern_softmax(float *x, int n)
{
	float max = x[0];
	for (int i = 1; i < n; i++)
		max = x[i] > max ? x[i] : max;
	double sum = 0.0;
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	const float inv = (float)(1.0 / sum);
	for (int i = 0; i < n; i++)
		x[i] *= inv;
}

void kern_swiglu(float *g, const float *u, int n)
{
	for (int i = 0; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_add(float *y, const float *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += x[i];
}

double kern_kl_logits(const float *ref, const float *ours, int n)
{
	double mr = ref[0], mo = ours[0];
	for (int i = 1; i < n; i++) {
		mr = ref[i] > mr ? ref[i] : mr;
		mo = ours[i] > mo ? ours[i] : mo;
	}
	double sr = 0, so = 0;
	for (int i = 0; i < n; i++) {
		sr += exp(ref[i] - mr);
		so += exp(ours[i] - mo);
	}
	const double lr = log(sr), lo = log(so);
	double kl = 0;
	for (int i = 0; i < n; i++) {
		const double lp = ref[i] - mr - lr, lq = ours[i] - mo - lo;
		kl += exp(lp) * (lp - lq);
	}
	return kl;
}

float kern_dot_f32_f16_ref(const float *x, const kern_fp16_t *y, int n)
{
	float acc[8] = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += x[i + j] * kern_fp16_to_fp32(y[i + j]);
	float s = 0;
	for (; i < n; i++)
		s += x[i] * kern_fp16_to_fp32(y[i]);
	for (int j = 0; j < 8; j++)
		s += acc[j];
	return s;
}

void kern_axpy_f16_ref(float *y, float a, const kern_fp16_t *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * kern_fp16_to_fp32(x[i]);
}

void kern_f32_to_f16_row_ref(kern_fp16_t *y, const float *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] = kern_fp32_to_fp16(x[i]);
}

void kern_kv_scores_q8_0_ref(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	for (int j = 0; j < n; j++)
		kern_dot_q8_0_q8_0_ref(hd, &sc[j], (const char *)k + (size_t)j * stride, q);
}

void kern_kv_scores_q4_0_ref(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	for (int j = 0; j < n; j++)
		kern_dot_q4_0_q8_0_ref(hd, &sc[j], (const char *)k + (size_t)j * stride, q);
}

void kern_kv_values_q8_0_ref(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	for (int j = 0; j < n; j++) {
		const kern_block_q8_0 *b = (const void *)((const char *)v + (size_t)j * stride);
		for (int i = 0; i < hd / KERN_QK8_0; i++) {
			const float a = w[j] * kern_fp16_to_fp32(b[i].d);
			for (int e = 0; e < KERN_QK8_0; e++)
				o[i * KERN_QK8_0 + e] += a * (float)b[i].qs[e];
		}
	}
}

void kern_kv_values_q4_0_ref(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	for (int j = 0; j < n; j++) {
		const kern_block_q4_0 *b = (const void *)((const char *)v + (size_t)j * stride);
		for (int i = 0; i < hd / KERN_QK4_0; i++) {
			const float a = w[j] * kern_fp16_to_fp32(b[i].d);
			float *y = o + i * KERN_QK4_0;
			for (int e = 0; e < KERN_QK4_0 / 2; e++) {
				y[e] += a * (float)((b[i].qs[e] & 0x0f) - 8);
				y[e + KERN_QK4_0 / 2] += a * (float)((b[i].qs[e] >> 4) - 8);
			}
		}
	}
}

/* Attention helpers over the f16 KV cache; f32 -> f16 rows have no
 * AVX-512 variant of their own (the AVX2 one serves). */
static const struct attn_variants {
	float (*dot_f32_f16[KERN_ISA_COUNT])(const float *x, const kern_fp16_t *y, int n);
	void (*axpy_f16[KERN_ISA_COUNT])(float *y, float a, const kern_fp16_t *x, int n);
	void (*f32_to_f16_row[KERN_ISA_COUNT])(kern_fp16_t *y, const float *x, int n);
	void (*scores[2][KERN_ISA_COUNT])(int hd, const void *q, const void *k, size_t stride, int n,
					  float *sc);
	void (*values[2][KERN_ISA_COUNT])(int hd, const float *w, const void *v, size_t stride, int n,
					  float *o);
} attn_variants = {
	.dot_f32_f16 = {[KERN_ISA_REF] = kern_dot_f32_f16_ref, [KERN_ISA_AVX2] = kern_dot_f32_f16_avx2,
			[KERN_ISA_AVX512] = kern_dot_f32_f16_avx512},
	.axpy_f16 = {[KERN_ISA_REF] = kern_axpy_f16_ref, [KERN_ISA_AVX2] = kern_axpy_f16_avx2,
		     [KERN_ISA_AVX512] = kern_axpy_f16_avx512},
	.f32_to_f16_row = {[KERN_ISA_REF] = kern_f32_to_f16_row_ref,
			   [KERN_ISA_AVX2] = kern_f32_to_f16_row_avx2},
	/* [0] Q8_0 rows, [1] Q4_0 rows */
	.scores = {{[KERN_ISA_REF] = kern_kv_scores_q8_0_ref, [KERN_ISA_AVX2] = kern_kv_scores_q8_0_avx2,
		    [KERN_ISA_AVX512] = kern_kv_scores_q8_0_avx512},
		   {[KERN_ISA_REF] = kern_kv_scores_q4_0_ref, [KERN_ISA_AVX2] = kern_kv_scores_q4_0_avx2,
		    [KERN_ISA_AVX512] = kern_kv_scores_q4_0_avx512}},
	.values = {{[KERN_ISA_REF] = kern_kv_values_q8_0_ref, [KERN_ISA_AVX2] = kern_kv_values_q8_0_avx2,
		    [KERN_ISA_AVX512] = kern_kv_values_q8_0_avx512},
		   {[KERN_ISA_REF] = kern_kv_values_q4_0_ref, [KERN_ISA_AVX2] = kern_kv_values_q4_0_avx2,
		    [KERN_ISA_AVX512] = kern_kv_values_q4_0_avx512}},
};

void kern_ops_init_attn(kern_ops *ops, kern_isa isa)
{
	isa = kern_isa_clamp(isa);
	KERN_VARIANT_PICK(ops->dot_f32_f16, attn_variants.dot_f32_f16, isa);
	KERN_VARIANT_PICK(ops->axpy_f16, attn_variants.axpy_f16, isa);
	KERN_VARIANT_PICK(ops->f32_to_f16_row, attn_variants.f32_to_f16_row, isa);
	KERN_VARIANT_PICK(ops->kv_scores[KERN_TYPE_Q8_0], attn_variants.scores[0], isa);
	KERN_VARIANT_PICK(ops->kv_scores[KERN_TYPE_Q4_0], attn_variants.scores[1], isa);
	KERN_VARIANT_PICK(ops->kv_values[KERN_TYPE_Q8_0], attn_variants.values[0], isa);
	KERN_VARIANT_PICK(ops->kv_values[KERN_TYPE_Q4_0], attn_variants.values[1], isa);
}
