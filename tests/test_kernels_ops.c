/* Row operations of the forward pass: known values for RMSNorm, RoPE,
 * softmax and SwiGLU; attention helpers of every ISA against the scalar
 * reference at awkward lengths; the dispatch tables' contract. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/fp16.h"
#include "kernels/gemm.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"

static void test_rmsnorm(void **state)
{
	(void)state;
	const float x[4] = {1, -2, 3, -4}, w[4] = {1, 1, 2, 0.5f};
	float y[4];
	kern_rmsnorm(y, x, w, 4, 0.0f);
	const float rms = sqrtf((1 + 4 + 9 + 16) / 4.0f);
	for (int i = 0; i < 4; i++)
		assert_float_equal(y[i], x[i] / rms * w[i], 1e-6);
}

static void test_rope(void **state)
{
	(void)state;
	/* position 0 is the identity; rotation preserves each pair's norm and
	 * the first pair turns by exactly pos radians */
	float x[8] = {1, 0, 0.5f, 0.25f, 3, 4, -1, 2}, y[8];
	memcpy(y, x, sizeof(x));
	kern_rope(y, 2, 4, 4, 0, 10000.0f);
	assert_memory_equal(x, y, sizeof(x));
	kern_rope(y, 2, 4, 4, 3, 10000.0f);
	assert_float_equal(y[0], cosf(3), 1e-6);
	assert_float_equal(y[1], sinf(3), 1e-6);
	for (int p = 0; p < 8; p += 2)
		assert_float_equal(hypotf(x[p], x[p + 1]), hypotf(y[p], y[p + 1]), 1e-5);
}

static void test_softmax_swiglu(void **state)
{
	(void)state;
	float x[3] = {1000, 1000, -1000};
	kern_softmax(x, 3);
	assert_float_equal(x[0], 0.5f, 1e-7);
	assert_float_equal(x[2], 0.0f, 1e-7);
	float g[2] = {0, 2}, u[2] = {5, 3};
	kern_swiglu(g, u, 2);
	assert_float_equal(g[0], 0.0f, 1e-7);
	assert_float_equal(g[1], 2.0f / (1.0f + expf(-2.0f)) * 3.0f, 1e-6);
}

static void test_attention_helpers(void **state)
{
	(void)state;
	kern_ops ref;
	kern_ops_init(&ref, KERN_ISA_REF);
	const int lens[] = {1, 3, 7, 8, 16, 31, 33, 64, 255, 257};
	float x[257], y0[257], y1[257];
	kern_fp16_t h[257], h2[257];
	for (int i = 0; i < 257; i++) {
		x[i] = sinf((float)i * 0.37f) * 3.0f;
		h[i] = kern_fp32_to_fp16(cosf((float)i * 0.11f));
	}
	for (int isa = KERN_ISA_AVX2; isa <= (int)kern_isa_detect(); isa++) {
		kern_ops o;
		kern_ops_init(&o, (kern_isa)isa);
		for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
			const int n = lens[k];
			const float a = ref.dot_f32_f16(x, h, n), b = o.dot_f32_f16(x, h, n);
			assert_float_equal(a, b, 1e-4 * (1 + fabsf(a)));
			for (int i = 0; i < n; i++)
				y0[i] = y1[i] = x[i];
			ref.axpy_f16(y0, 0.3f, h, n);
			o.axpy_f16(y1, 0.3f, h, n);
			for (int i = 0; i < n; i++)
				assert_float_equal(y0[i], y1[i], 1e-5);
			ref.f32_to_f16_row(h2, x, n);
			kern_fp16_t h3[257];
			o.f32_to_f16_row(h3, x, n);
			assert_memory_equal(h2, h3, sizeof(kern_fp16_t) * n);
		}
	}
}

/* Attention over quantized KV rows: the references against dequantized
 * arithmetic, every ISA against the references (head sizes 32..256, row
 * counts 1..16, rows a stride apart with a gap). */
static void check_kv_type(kern_type t, const kern_ops *ref, const float *x)
{
	enum { R = 16, HD = 256, STRIDE = HD + 64 };
	unsigned char rows[R * STRIDE], q[HD * 2];
	float deq[HD], w[R], y0[HD], y1[HD], want[HD], sc0[R], sc1[R];
	for (int j = 0; j < R; j++) {
		ref->from_float[t](x + j * 7, rows + j * STRIDE, HD);
		w[j] = 0.1f * (float)(j - 5);
	}
	ref->from_float[KERN_TYPE_Q8_0](x + 3, q, HD);
	ref->kv_scores[t](HD, q, rows, STRIDE, R, sc0);
	for (int j = 0; j < R; j++) {
		float d;
		ref->vec_dot[t](HD, &d, rows + j * STRIDE, q);
		assert_float_equal(sc0[j], d, 1e-5 * (1 + fabsf(d)));
	}
	memset(want, 0, sizeof(want));
	for (int j = 0; j < R; j++) {
		ref->to_float[t](rows + j * STRIDE, deq, HD);
		for (int i = 0; i < HD; i++)
			want[i] += w[j] * deq[i];
	}
	memset(y0, 0, sizeof(y0));
	ref->kv_values[t](HD, w, rows, STRIDE, R, y0);
	for (int i = 0; i < HD; i++)
		assert_float_equal(y0[i], want[i], 1e-4 * (1 + fabsf(want[i])));
	for (int isa = KERN_ISA_AVX2; isa <= (int)kern_isa_detect(); isa++) {
		kern_ops o;
		kern_ops_init(&o, (kern_isa)isa);
		for (int hd = 32; hd <= HD; hd += 96) /* 1, 4 and 7 blocks */
			for (int n = 1; n <= R; n += 5) {
				ref->kv_scores[t](hd, q, rows, STRIDE, n, sc0);
				o.kv_scores[t](hd, q, rows, STRIDE, n, sc1);
				for (int j = 0; j < n; j++)
					assert_float_equal(sc0[j], sc1[j], 1e-5 * (1 + fabsf(sc0[j])));
				for (int i = 0; i < HD; i++)
					y0[i] = y1[i] = x[i] * 0.5f;
				ref->kv_values[t](hd, w, rows, STRIDE, n, y0);
				o.kv_values[t](hd, w, rows, STRIDE, n, y1);
				for (int i = 0; i < HD; i++)
					assert_float_equal(y0[i], y1[i], 1e-5 * (1 + fabsf(y0[i])));
			}
	}
}

static void test_kv_quant_rows(void **state)
{
	(void)state;
	static float x[16 * 7 + 256];
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = sinf((float)i * 0.29f) * (1.0f + (float)(i % 7));
	kern_ops ref;
	kern_ops_init(&ref, KERN_ISA_REF);
	check_kv_type(KERN_TYPE_Q8_0, &ref, x);
	check_kv_type(KERN_TYPE_Q4_0, &ref, x);
}

/* The dispatch contract (kernels/variant.h): at every ISA the CPU runs,
 * every type has all of its operations and no other; an ISA above the CPU's
 * is clamped; the reference ISA hands out the scalar references. */
static void test_dispatch_tables(void **state)
{
	(void)state;
	const kern_isa best = kern_isa_detect();
	assert_int_equal(kern_isa_detect(), best); /* the record is written once */
	assert_int_equal(kern_isa_clamp(KERN_ISA_AVX512), best);
	assert_int_equal(kern_isa_clamp((kern_isa)-1), KERN_ISA_REF);
	assert_string_equal(kern_isa_name(KERN_ISA_REF), "ref");
	assert_string_equal(kern_isa_name((kern_isa)KERN_ISA_COUNT), "unknown");
	kern_ops o;
	kern_ops_init(&o, KERN_ISA_AVX512);
	assert_int_equal(o.isa, best);
	for (int isa = KERN_ISA_REF; isa <= (int)best; isa++) {
		kern_ops_init(&o, (kern_isa)isa);
		assert_int_equal(o.isa, isa);
		for (int t = 0; t < KERN_TYPE_COUNT; t++) {
			const int known = kern_type_info(t) != NULL;
			const int r16 = kern_type_is_r16(t);
			assert_int_equal(o.to_float[t] != NULL, known && !r16);
			/* the i-quants that need an importance matrix are read, never written */
			const int readonly = t == KERN_TYPE_IQ3_XXS || t == KERN_TYPE_IQ2_S ||
					     t == KERN_TYPE_IQ2_XS || t == KERN_TYPE_IQ2_XXS || t == KERN_TYPE_IQ1_S ||
					     t == KERN_TYPE_IQ1_M;
			assert_int_equal(o.from_float[t] != NULL, known && !r16 && !readonly);
			assert_int_equal(o.vec_dot[t] != NULL, known && !r16);
			assert_int_equal(o.act[t] != NULL, r16);
			assert_int_equal(o.gemm[t] != NULL, r16);
		}
		assert_non_null(o.dot_f32_f16);
		assert_non_null(o.axpy_f16);
		assert_non_null(o.f32_to_f16_row);
		for (int t = 0; t < KERN_TYPE_COUNT; t++) {
			const int kv = t == KERN_TYPE_Q8_0 || t == KERN_TYPE_Q4_0;
			assert_int_equal(o.kv_scores[t] != NULL, kv);
			assert_int_equal(o.kv_values[t] != NULL, kv);
		}
	}
	kern_ops_init(&o, KERN_ISA_REF);
	assert_ptr_equal(o.dot_f32_f16, kern_dot_f32_f16_ref);
	assert_ptr_equal(o.axpy_f16, kern_axpy_f16_ref);
	assert_ptr_equal(o.f32_to_f16_row, kern_f32_to_f16_row_ref);
	assert_ptr_equal(o.kv_scores[KERN_TYPE_Q8_0], kern_kv_scores_q8_0_ref);
	assert_ptr_equal(o.kv_values[KERN_TYPE_Q4_0], kern_kv_values_q4_0_ref);
	assert_ptr_equal(o.gemm[KERN_TYPE_Q4_0_R16], kern_gemm_q4_0_r16_ref);
	assert_ptr_equal(o.act[KERN_TYPE_Q4_K_R16], kern_act_q8k_ref);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_softmax_swiglu),
		cmocka_unit_test(test_attention_helpers),
		cmocka_unit_test(test_kv_quant_rows),
		cmocka_unit_test(test_dispatch_tables),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
