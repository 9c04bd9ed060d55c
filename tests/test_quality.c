/* Quality statistics (model/quality.h) and the commands built on them:
 * herd eval (a model against itself: KL 0, top-1 100 %, equal perplexity;
 * a quantized model: KL > 0), herd sample (deterministic per seed, BOS
 * first, ids inside the vocabulary), herd logits --tokens (the [n][L][V]
 * format; the same logits as -p), and clear refusals of bad streams. On
 * the mini fixture and, when present, the real model of the fixtures. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_run.h"
#include "herd/error.h"
#include "model/quality.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

static char dir[128];
static const char *bin, *fx;
static char out[8192], err[8192];

static int sh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	const int rc = cli_vrun(dir, out, sizeof(out), err, sizeof(err), fmt, ap);
	va_end(ap);
	return rc;
}

static int setup(void **state)
{
	(void)state;
	if (cli_scratch(dir, sizeof(dir), "quality", &bin, HERD_BIN, &fx, HERD_FIXTURES))
		return -1;
	return sh("'%s' mkmodel --shape mini -t F32 -o '%s/f32.gguf' --seed 5 && "
		  "'%s' mkmodel --shape mini -t Q4_0 -o '%s/q4.gguf' --seed 5",
		  bin, dir, bin, dir) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return cli_scratch_rm(dir);
}

static void write_ids(const char *name, const int32_t *ids, size_t n)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(ids, sizeof(int32_t), n, f), n);
	assert_int_equal(fclose(f), 0);
}

/* Hand-computed values on a two-token vocabulary. */
static void test_stats(void **state)
{
	(void)state;
	quality_acc a;
	assert_int_equal(quality_init(&a, 2), 0);
	const float same[2] = {0.0f, 0.0f}, skew[2] = {logf(3.0f), 0.0f};
	assert_int_equal(quality_add(&a, same, same, 1), 0);
	quality_result r = quality_result_of(&a);
	assert_true(r.kl_mean == 0 && r.top1_pct == 100.0);
	assert_true(fabs(r.ppl_ref - 2.0) < 1e-9 && fabs(r.quality_pct - 100.0) < 1e-9);
	/* ref uniform, model (3/4, 1/4): KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) */
	assert_int_equal(quality_add(&a, same, skew, 1), 0);
	r = quality_result_of(&a);
	const double kl = 0.5 * log(0.5 / 0.75) + 0.5 * log(2.0);
	assert_true(fabs(r.kl_mean - kl / 2) < 1e-6);
	assert_true(fabs(r.kl_p99 - kl) < 1e-6 && fabs(r.kl_max - kl) < 1e-6);
	/* model's nll of token 1: ln 2 + ln 4; ref's: 2 ln 2 */
	assert_true(fabs(r.ppl_model - exp((log(2.0) + log(4.0)) / 2)) < 1e-6);
	assert_true(r.quality_pct < 100.0);
	quality_free(&a);
	assert_int_equal(quality_init(&a, 0), HERD_E_INVAL);
}

static void test_read_streams(void **state)
{
	(void)state;
	const int32_t ids[8] = {1, 5, 6, 7, 1, 9, 10, 11};
	write_ids("s.tokens", ids, 8);
	char path[256], e[512];
	snprintf(path, sizeof(path), "%s/s.tokens", dir);
	int32_t *t;
	int n;
	assert_int_equal(quality_read_streams(path, 4, 12, &t, &n, e, sizeof(e)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(t[5], 9);
	free(t);
	assert_int_equal(quality_read_streams(path, 3, 12, &t, &n, e, sizeof(e)), HERD_E_FORMAT);
	assert_non_null(strstr(e, "not a positive multiple"));
	assert_int_equal(quality_read_streams(path, 4, 10, &t, &n, e, sizeof(e)), HERD_E_RANGE);
	assert_non_null(strstr(e, "stream 1 position 2 holds id 10"));
	assert_int_equal(quality_read_streams(path, 1, 12, &t, &n, e, sizeof(e)), HERD_E_INVAL);
}

static double json_num(const char *s, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(s, k);
	assert_non_null(p);
	return strtod(p + strlen(k), NULL);
}

static void test_sample_eval(void **state)
{
	(void)state;
	assert_int_equal(sh("'%s' sample '%s/f32.gguf' --seed 7 -n 3 --len 24 -o '%s/a.tokens' && "
			    "'%s' sample '%s/f32.gguf' --seed 7 -n 3 --len 24 -o '%s/b.tokens' && "
			    "'%s' sample '%s/f32.gguf' --seed 8 -n 3 --len 24 -o '%s/c.tokens' && "
			    "cmp '%s/a.tokens' '%s/b.tokens' && ! cmp -s '%s/a.tokens' '%s/c.tokens'",
			    bin, dir, dir, bin, dir, dir, bin, dir, dir, dir, dir, dir, dir), 0);
	char path[256], e[512];
	snprintf(path, sizeof(path), "%s/a.tokens", dir);
	int32_t *t;
	int n;
	assert_int_equal(quality_read_streams(path, 24, 2048, &t, &n, e, sizeof(e)), 0);
	assert_int_equal(n, 3);
	assert_true(t[0] == 1 && t[24] == 1 && t[48] == 1);
	free(t);
	assert_int_equal(sh("'%s' eval '%s/f32.gguf' --ref '%s/f32.gguf' --tokens '%s/a.tokens' "
			    "--len 24 --json", bin, dir, dir, dir), 0);
	assert_true(json_num(out, "kl_mean") == 0 && json_num(out, "kl_max") == 0);
	assert_true(json_num(out, "top1_pct") == 100 && json_num(out, "quality_pct") == 100);
	assert_true(json_num(out, "positions") == 72);
	assert_int_equal(sh("'%s' eval '%s/q4.gguf' --ref '%s/f32.gguf' --tokens '%s/a.tokens' "
			    "--len 24 --json", bin, dir, dir, dir), 0);
	assert_true(json_num(out, "kl_mean") > 0 && json_num(out, "kl_p99") >= json_num(out, "kl_mean"));
	assert_true(json_num(out, "bytes") < json_num(out, "ref_bytes"));
	assert_true(json_num(out, "decode_tok_s") > 0);
	/* bad streams: wrong length, ids outside the vocabulary */
	assert_int_equal(sh("'%s' eval '%s/q4.gguf' --ref '%s/f32.gguf' --tokens '%s/a.tokens' "
			    "--len 25", bin, dir, dir, dir), 1);
	assert_non_null(strstr(err, "not a positive multiple"));
	const int32_t big[4] = {1, 2, 4000, 3};
	write_ids("big.tokens", big, 4);
	assert_int_equal(sh("'%s' eval '%s/q4.gguf' --ref '%s/f32.gguf' --tokens '%s/big.tokens' "
			    "--len 4", bin, dir, dir, dir), 1);
	assert_non_null(strstr(err, "outside the model's vocabulary of 2048"));
	assert_int_equal(sh("'%s' eval '%s/q4.gguf' --tokens x", bin, dir), 2);
}

/* --tokens gives, stream by stream, what -p gives for the same ids. */
static void test_logits_tokens(void **state)
{
	(void)state;
	char tok[512], m[512];
	snprintf(tok, sizeof(tok), "%s/mini-F32.tokens", fx);
	snprintf(m, sizeof(m), "%s/mini-F32.gguf", fx);
	if (access(tok, R_OK) != 0 || access(m, R_OK) != 0)
		skip();
	assert_int_equal(sh("'%s' logits -m '%s' --tokens '%s' --len 44 -o '%s/t.logits' && "
			    "'%s' logits -m '%s' -p 'Once upon a time, a little robot named Pip "
			    "found a shiny key under the old oak tree. It wondered what the key would "
			    "open.' -o '%s/p.logits' && cmp '%s/p.logits.tokens' '%s'",
			    bin, m, tok, dir, bin, m, dir, dir, tok), 0);
	char a[256], b[256];
	snprintf(a, sizeof(a), "%s/t.logits", dir);
	snprintf(b, sizeof(b), "%s/p.logits", dir);
	assert_int_equal(cli_file_size(a), 44L * 2048 * 4);
	assert_int_equal(sh("cmp '%s' '%s'", a, b), 0);
}

/* The real model against itself on its calibration streams. */
static void test_real_self(void **state)
{
	(void)state;
	char model[512];
	snprintf(model, sizeof(model), "%s/real/stories260K-F32.gguf", fx);
	if (access(model, R_OK) != 0)
		skip();
	assert_int_equal(sh("'%s' sample '%s' --seed 3 -n 2 --len 64 -o '%s/r.tokens' && "
			    "'%s' eval '%s' --ref '%s' --tokens '%s/r.tokens' --len 64 --json",
			    bin, model, dir, bin, model, model, dir), 0);
	assert_true(json_num(out, "kl_mean") == 0 && json_num(out, "top1_pct") == 100);
	const double ppl = json_num(out, "ppl_ref");
	assert_true(ppl > 2 && ppl < 100); /* a trained model on its own samples */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_read_streams),
		cmocka_unit_test(test_sample_eval),
		cmocka_unit_test(test_logits_tokens),
		cmocka_unit_test(test_real_self),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
