/* Sampler: greedy, determinism, top-k/top-p/min-p supports, repetition
 * penalty, and the distribution of many draws. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "herd/error.h"
#include "model/sampler.h"

#define NV 16

static sampler_params params_plain(float temp, uint64_t seed)
{
	sampler_params p = sampler_params_default();
	p.temperature = temp;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.repeat_penalty = 1.0f;
	p.seed = seed;
	return p;
}

static void fill_logits(float *l, int n)
{
	for (int i = 0; i < n; i++)
		l[i] = sinf((float)i * 1.7f) * 2.0f; /* arbitrary, distinct */
}

static int argmax(const float *l, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (l[i] > l[b])
			b = i;
	return b;
}

static void test_create_errors(void **state)
{
	(void)state;
	sampler *s = (sampler *)1;
	sampler_params p = sampler_params_default();
	assert_int_equal(sampler_create(&s, &p, 0), HERD_E_INVAL);
	assert_null(s);
	p.repeat_last_n = -1;
	assert_int_equal(sampler_create(&s, &p, 10), HERD_E_INVAL);
	p = sampler_params_default();
	p.repeat_penalty = 0.0f;
	assert_int_equal(sampler_create(&s, &p, 10), HERD_E_INVAL);
	assert_int_equal(sampler_create(&s, NULL, 10), HERD_E_INVAL);
	sampler_destroy(NULL);
}

static void test_greedy_argmax(void **state)
{
	(void)state;
	float l[NV], copy[NV];
	sampler *s;
	sampler_params p = params_plain(0.0f, 1);
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	fill_logits(l, NV);
	memcpy(copy, l, sizeof(l));
	assert_int_equal(sampler_sample(s, l), argmax(l, NV));
	assert_memory_equal(l, copy, sizeof(l)); /* logits untouched */
	l[3] = 100.0f;
	assert_int_equal(sampler_sample(s, l), 3);
	/* ties go to the lowest id; NaN never wins */
	for (int i = 0; i < NV; i++)
		l[i] = 1.0f;
	l[0] = NAN;
	assert_int_equal(sampler_sample(s, l), 1);
	sampler_destroy(s);

	p.temperature = -1.0f;
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	fill_logits(l, NV);
	assert_int_equal(sampler_sample(s, l), argmax(l, NV));
	sampler_destroy(s);
}

static void test_seed_determinism(void **state)
{
	(void)state;
	float l[NV];
	sampler *a, *b, *c;
	sampler_params p = params_plain(1.0f, 42);
	int32_t seq_a[200], seq_c[200];
	int differ = 0;

	fill_logits(l, NV);
	assert_int_equal(sampler_create(&a, &p, NV), 0);
	assert_int_equal(sampler_create(&b, &p, NV), 0);
	p.seed = 43;
	assert_int_equal(sampler_create(&c, &p, NV), 0);
	for (int i = 0; i < 200; i++) {
		seq_a[i] = sampler_sample(a, l);
		assert_int_equal(sampler_sample(b, l), seq_a[i]);
		seq_c[i] = sampler_sample(c, l);
		differ += seq_a[i] != seq_c[i];
		sampler_accept(a, seq_a[i]);
		sampler_accept(b, seq_a[i]);
	}
	assert_true(differ > 0);
	/* reset restarts the same sequence */
	sampler_reset(a);
	for (int i = 0; i < 200; i++)
		assert_int_equal(sampler_sample(a, l), seq_a[i]);
	sampler_destroy(a);
	sampler_destroy(b);
	sampler_destroy(c);
}

static void test_top_k_1_is_greedy(void **state)
{
	(void)state;
	float l[NV];
	sampler *s;
	sampler_params p = params_plain(1.5f, 7);
	p.top_k = 1;
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	for (int r = 0; r < 50; r++) {
		for (int i = 0; i < NV; i++)
			l[i] = sinf((float)(i * 31 + r * 7)) * 3.0f;
		assert_int_equal(sampler_sample(s, l), argmax(l, NV));
	}
	sampler_destroy(s);
}

static void test_top_k_support(void **state)
{
	(void)state;
	float l[NV];
	sampler *s;
	sampler_params p = params_plain(1.0f, 9);
	int seen[NV] = {0};
	p.top_k = 3;
	for (int i = 0; i < NV; i++)
		l[i] = (float)i * 0.1f; /* best: 15, 14, 13 */
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	for (int i = 0; i < 3000; i++)
		seen[sampler_sample(s, l)]++;
	for (int i = 0; i < 13; i++)
		assert_int_equal(seen[i], 0);
	assert_true(seen[13] > 0 && seen[14] > 0 && seen[15] > 0);
	sampler_destroy(s);
}

/* probabilities 0.5, 0.25, 0.125, ... (logits ln 2 apart) */
static void halving_logits(float *l, int n)
{
	for (int i = 0; i < n; i++)
		l[i] = -(float)i * logf(2.0f);
}

static void test_top_p_support(void **state)
{
	(void)state;
	float l[NV];
	sampler *s;
	sampler_params p = params_plain(1.0f, 11);
	int seen[NV] = {0};
	/* cumulative 0.5, 0.75, 0.875 -> top_p 0.8 keeps exactly 3 tokens */
	p.top_p = 0.8f;
	halving_logits(l, NV);
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	for (int i = 0; i < 4000; i++)
		seen[sampler_sample(s, l)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
	for (int i = 3; i < NV; i++)
		assert_int_equal(seen[i], 0);
	sampler_destroy(s);
}

static void test_min_p_support(void **state)
{
	(void)state;
	float l[NV];
	sampler *s;
	sampler_params p = params_plain(1.0f, 13);
	int seen[NV] = {0};
	/* p_i / p_max = 2^-i: min_p 0.2 keeps i = 0, 1, 2 (1, .5, .25) */
	p.min_p = 0.2f;
	halving_logits(l, NV);
	assert_int_equal(sampler_create(&s, &p, NV), 0);
	for (int i = 0; i < 4000; i++)
		seen[sampler_sample(s, l)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
	for (int i = 3; i < NV; i++)
		assert_int_equal(seen[i], 0);
	sampler_destroy(s);
}

static void test_repeat_penalty(void **state)
{
	(void)state;
	float l[4] = {2.0f, 1.5f, -1.0f, -1.2f};
	sampler *s;
	sampler_params p = params_plain(0.0f, 1);
	p.repeat_penalty = 2.0f;
	p.repeat_last_n = 2;
	assert_int_equal(sampler_create(&s, &p, 4), 0);
	assert_int_equal(sampler_sample(s, l), 0);
	sampler_accept(s, 0); /* 2.0 -> 1.0 < 1.5 */
	assert_int_equal(sampler_sample(s, l), 1);
	sampler_accept(s, 1); /* 1.5 -> 0.75 < 1.0 */
	assert_int_equal(sampler_sample(s, l), 0);
	/* the window holds 2: accepting 3 evicts 0 */
	sampler_accept(s, 3);
	assert_int_equal(sampler_sample(s, l), 0);
	sampler_destroy(s);

	/* negative logits are multiplied: -1.0 * 2 = -2 < -1.2 */
	float m[4] = {-1.0f, -1.2f, -5.0f, -6.0f};
	assert_int_equal(sampler_create(&s, &p, 4), 0);
	sampler_accept(s, 0);
	assert_int_equal(sampler_sample(s, m), 1);
	/* accepted twice still penalised once (llama.cpp) */
	sampler_accept(s, 0);
	float k[4] = {-1.0f, -2.1f, -5.0f, -6.0f};
	assert_int_equal(sampler_sample(s, k), 0);
	sampler_reset(s);
	assert_int_equal(sampler_sample(s, m), 0);
	sampler_destroy(s);
}

static void test_distribution(void **state)
{
	(void)state;
	float l[4] = {0.0f, logf(2.0f), logf(3.0f), logf(4.0f)}; /* p = k/10 */
	const int draws = 100000;
	int seen[4] = {0};
	sampler *s;
	sampler_params p = params_plain(1.0f, 2024);
	assert_int_equal(sampler_create(&s, &p, 4), 0);
	for (int i = 0; i < draws; i++)
		seen[sampler_sample(s, l)]++;
	for (int i = 0; i < 4; i++) {
		double expect = draws * (i + 1) / 10.0;
		double sd = sqrt(draws * ((i + 1) / 10.0) * (1 - (i + 1) / 10.0));
		assert_true(fabs(seen[i] - expect) < 5 * sd);
	}
	sampler_destroy(s);

	/* temperature 0.5 squares the ratios: p ~ 1, 4, 9, 16 */
	int seen2[4] = {0};
	p.temperature = 0.5f;
	assert_int_equal(sampler_create(&s, &p, 4), 0);
	for (int i = 0; i < draws; i++)
		seen2[sampler_sample(s, l)]++;
	for (int i = 0; i < 4; i++) {
		double q = (double)((i + 1) * (i + 1)) / 30.0;
		double sd = sqrt(draws * q * (1 - q));
		assert_true(fabs(seen2[i] - draws * q) < 5 * sd);
	}
	sampler_destroy(s);
}

/* Every combination of the filters agrees with a brute-force reference of
 * the support (which tokens can be drawn). */
static void test_filter_combinations(void **state)
{
	(void)state;
	enum { N = 64 };
	float l[N];
	for (int i = 0; i < N; i++)
		l[i] = sinf((float)i * 2.3f) * 3.0f + (i == 17 ? 1.0f : 0.0f);
	const int32_t ks[] = {0, 1, 5, 63, 64, 100};
	const float ps[] = {1.0f, 0.5f, 0.9f, 0.0f};
	const float mps[] = {0.0f, 0.1f, 0.5f, 2.0f};
	for (size_t a = 0; a < 6; a++)
		for (size_t b = 0; b < 4; b++)
			for (size_t d = 0; d < 4; d++) {
				sampler_params p = params_plain(1.0f, 77);
				sampler *s;
				int order[N], n = N, allowed[N] = {0};
				p.top_k = ks[a];
				p.top_p = ps[b];
				p.min_p = mps[d];
				/* reference: sort, then cut in llama.cpp's order */
				for (int i = 0; i < N; i++)
					order[i] = i;
				for (int i = 0; i < N; i++)
					for (int j = i + 1; j < N; j++)
						if (l[order[j]] > l[order[i]]) {
							int t = order[i];
							order[i] = order[j];
							order[j] = t;
						}
				if (p.top_k > 0 && p.top_k < n)
					n = p.top_k;
				if (p.top_p < 1.0f) {
					double sum = 0, cum = 0;
					for (int i = 0; i < n; i++)
						sum += exp(l[order[i]] - l[order[0]]);
					for (int i = 0; i < n; i++) {
						cum += exp(l[order[i]] - l[order[0]]) / sum;
						if (cum >= p.top_p) {
							n = i + 1;
							break;
						}
					}
				}
				if (p.min_p > 0.0f) {
					int keep = 1;
					while (keep < n &&
					       l[order[keep]] >= l[order[0]] + logf(p.min_p))
						keep++;
					n = keep;
				}
				for (int i = 0; i < n; i++)
					allowed[order[i]] = 1;
				assert_int_equal(sampler_create(&s, &p, N), 0);
				for (int i = 0; i < 300; i++)
					assert_true(allowed[sampler_sample(s, l)]);
				sampler_destroy(s);
			}
}

static void test_large_vocab(void **state)
{
	(void)state;
	enum { N = 32000 };
	static float l[N];
	sampler *s;
	sampler_params p = sampler_params_default();
	for (int i = 0; i < N; i++)
		l[i] = sinf((float)i * 0.37f) * 5.0f;
	assert_int_equal(sampler_create(&s, &p, N), 0);
	for (int i = 0; i < 100; i++) {
		int32_t t = sampler_sample(s, l);
		assert_true(t >= 0 && t < N);
		assert_true(l[t] >= l[argmax(l, N)] + logf(p.min_p) - 1e-4f);
		sampler_accept(s, t);
	}
	sampler_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_greedy_argmax),
		cmocka_unit_test(test_seed_determinism),
		cmocka_unit_test(test_top_k_1_is_greedy),
		cmocka_unit_test(test_top_k_support),
		cmocka_unit_test(test_top_p_support),
		cmocka_unit_test(test_min_p_support),
		cmocka_unit_test(test_repeat_penalty),
		cmocka_unit_test(test_distribution),
		cmocka_unit_test(test_filter_combinations),
		cmocka_unit_test(test_large_vocab),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
