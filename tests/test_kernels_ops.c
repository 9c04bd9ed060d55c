/* Row operations of the forward pass: known values for RMSNorm, RoPE,
 * softmax and SwiGLU; attention helpers of every ISA against the scalar
 * reference at awkward lengths. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/fp16.h"
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_softmax_swiglu),
		cmocka_unit_test(test_attention_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
