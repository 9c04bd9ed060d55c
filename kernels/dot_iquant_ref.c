/* Scalar reference dots of i-quant rows with Q8_K rows (IQ4_NL: Q8_0),
 * through each type's decoder (kernels/iquant.h): integer sums of w * q8 per
 * 16 elements, times the integer scales, per super-block; floats enter once
 * per block as d_x * d_y * F. */
#include "iquant.h"

#include "fp16.h"

static int iq_isum32(const int8_t w[32], const int ls[2], const int8_t *q8)
{
	int a = 0, b = 0;
	for (int j = 0; j < 16; j++) {
		a += w[j] * q8[j];
		b += w[j + 16] * q8[j + 16];
	}
	return ls[0] * a + ls[1] * b;
}

static void iq_dot_q8_k(kern_type t, int n, float *restrict s, const void *restrict vx,
			const void *restrict vy)
{
	const kern_iq_desc *ds = kern_iq_desc_of(t);
	const uint8_t *x = vx;
	const kern_block_q8_K *y = vy;
	float sumf = 0;
	for (int i = 0; i < n / KERN_QK_K; i++, x += ds->type_size) {
		int isum = 0;
		for (int ib = 0; ib < KERN_QK_K / 32; ib++) {
			int8_t w[32];
			int ls[2];
			ds->decode(x, ib, w, ls);
			isum += iq_isum32(w, ls, y[i].qs + 32 * ib);
		}
		sumf += kern_iq_block_d(t, x) * y[i].d * ds->unit * (float)isum;
	}
	*s = sumf;
}

void kern_dot_iq4_nl_q8_0_ref(int n, float *restrict s, const void *restrict vx,
			      const void *restrict vy)
{
	const kern_iq_desc *ds = kern_iq_desc_of(KERN_TYPE_IQ4_NL);
	const kern_block_iq4_nl *x = vx;
	const kern_block_q8_0 *y = vy;
	float sumf = 0;
	for (int i = 0; i < n / KERN_QK4_NL; i++) {
		int8_t w[32];
		int ls[2];
		ds->decode(x + i, 0, w, ls);
		sumf += kern_fp16_to_fp32(x[i].d) * kern_fp16_to_fp32(y[i].d) *
			(float)iq_isum32(w, ls, y[i].qs);
	}
	*s = sumf;
}

#define IQ_DOT(N, T)                                                                          \
	void kern_dot_##N##_q8_k_ref(int n, float *restrict s, const void *restrict x,        \
				     const void *restrict y)                                  \
	{                                                                                     \
		iq_dot_q8_k(KERN_TYPE_##T, n, s, x, y);                                       \
	}
IQ_DOT(iq4_xs, IQ4_XS)
IQ_DOT(iq3_s, IQ3_S)
IQ_DOT(iq3_xxs, IQ3_XXS)
IQ_DOT(iq2_s, IQ2_S)
IQ_DOT(iq2_xs, IQ2_XS)
IQ_DOT(iq2_xxs, IQ2_XXS)
IQ_DOT(iq1_s, IQ1_S)
IQ_DOT(iq1_m, IQ1_M)
#undef IQ_DOT

#define IQ_DOT4(N, VD)                                                                               \
	void kern_dot4_##N##_##VD##_ref(int n, float *restrict s, int64_t ls, const void *restrict x, \
					const void *restrict y, size_t ys)                           \
	{                                                                                            \
		for (int k = 0; k < 4; k++)                                                          \
			kern_dot_##N##_##VD##_ref(n, &s[k * ls], x, (const char *)y + k * ys);       \
	}
IQ_DOT4(iq4_nl, q8_0)
IQ_DOT4(iq4_xs, q8_k)
IQ_DOT4(iq3_s, q8_k)
IQ_DOT4(iq3_xxs, q8_k)
IQ_DOT4(iq2_s, q8_k)
IQ_DOT4(iq2_xs, q8_k)
IQ_DOT4(iq2_xxs, q8_k)
IQ_DOT4(iq1_s, q8_k)
IQ_DOT4(iq1_m, q8_k)
#undef IQ_DOT4
