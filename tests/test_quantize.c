/* herd quantize: byte-identity with llama-quantize (every type of the mini
 * fixtures, made by llama-quantize from mini-F32.gguf; llama-quantize's
 * Q4_K_M / Q6_K / BF16 of the real model, by their sha256), per-tensor
 * fallbacks on the real model's 172-wide rows instead of a refusal, the
 * calibrated path (importance matrix written in llama.cpp's format, read
 * back, and a lower KL on held-out streams than round-to-nearest), and
 * clear refusals of bad input. */
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
#include "kernels/kernels.h"
#include <math.h>

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

static char dir[128];
static const char *bin, *fx;
static char out[16384], err[16384];

static int sh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	const int rc = cli_vrun(dir, out, sizeof(out), err, sizeof(err), fmt, ap);
	va_end(ap);
	return rc;
}

static int have(const char *rel)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", fx, rel);
	return access(p, R_OK) == 0;
}

static int setup(void **state)
{
	(void)state;
	if (cli_scratch(dir, sizeof(dir), "quantize", &bin, HERD_BIN, &fx, HERD_FIXTURES))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return cli_scratch_rm(dir);
}

static void test_fixture_identity(void **state)
{
	(void)state;
	if (!have("mini-F32.gguf"))
		skip();
	static const char *const types[] = {"Q4_0", "Q8_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K",
					    "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "BF16"};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		const int rc = sh("'%s' quantize '%s/mini-F32.gguf' '%s/m.gguf' -t %s && "
				  "cmp '%s/m.gguf' '%s/mini-%s.gguf'",
				  bin, fx, dir, types[i], dir, fx, types[i]);
		if (rc)
			fprintf(stderr, "type %s: %s%s\n", types[i], out, err);
		assert_int_equal(rc, 0);
	}
	/* the mixes the fixtures lack: llama-quantize's own output of mini-F32, by sha256 */
	static const struct {
		const char *type, *sha;
	} mixes[] = {
		{"Q3_K_S", "6e5f9f9a21f09d6fbdaeb8ee97449838e10ff1bc9ad095380385d920581d7d41"},
		{"Q3_K_L", "24402c2b490e39fd7ec780a437df35f217261ce93ada2f8eac4176789494b912"},
		{"Q4_K_S", "20e0166cd4f307849e23c73f6770ba8964e6d72e0de7909285ac61063aa3a3b9"},
		{"Q5_K_S", "b3f2601181e83add7a2c75cef72d9cf6ddf879f9fe2ff5f58d3dbc63ec4f195a"},
	};
	for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
		assert_int_equal(sh("'%s' quantize '%s/mini-F32.gguf' '%s/m.gguf' -t %s && sha256sum "
				    "'%s/m.gguf'", bin, fx, dir, mixes[i].type, dir), 0);
		assert_memory_equal(out, mixes[i].sha, 64);
	}
}

static void test_real_identity_and_fallback(void **state)
{
	(void)state;
	if (!have("real/stories260K-F32.gguf"))
		skip();
	static const struct {
		const char *type, *sha;
	} ref[] = {
		{"Q4_K_M", "e6c7fd6f3ab3bdadfd459287cf54c2ce6eb18766b97152513c1e0eadb0fc8d58"},
		{"Q6_K", "1209628048bd2bbd851486976efef2b3d5be96d9318350ddcdec3e8a2de1ce28"},
		{"BF16", "31d7074eadf90d02975a78d20b7c99df2c5c1224ed5410cb1a938f7b0b22d02c"},
	};
	for (size_t i = 0; i < sizeof(ref) / sizeof(ref[0]); i++) {
		assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/r.gguf' -t %s "
				    "--standard-only && "
				    "sha256sum '%s/r.gguf'", bin, fx, dir, ref[i].type, dir), 0);
		assert_memory_equal(out, ref[i].sha, 64);
	}
	/* llama-quantize refuses Q8_0 here (172 is not a multiple of 32): herd falls back */
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/r8.gguf' -t Q8_0",
			    bin, fx, dir), 0);
	assert_non_null(strstr(err, "blk.4.ffn_down.weight"));
	assert_non_null(strstr(err, "does not divide the row of 172"));
	assert_non_null(strstr(err, "5 fell back"));
	assert_int_equal(sh("'%s' sample '%s/real/stories260K-F32.gguf' --seed 11 -n 4 --len 64 "
			    "-o '%s/h.tokens' && '%s' eval '%s/r8.gguf' --ref "
			    "'%s/real/stories260K-F32.gguf' --tokens '%s/h.tokens' --len 64 --json",
			    bin, fx, dir, bin, dir, fx, dir), 0);
	assert_non_null(strstr(out, "\"kl_mean\":0.0"));
}

static double json_num(const char *s, const char *key)
{
	char k[64];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(s, k);
	assert_non_null(p);
	return strtod(p + strlen(k), NULL);
}

static double eval_kl(const char *model)
{
	assert_int_equal(sh("'%s' eval '%s' --ref '%s/real/stories260K-F32.gguf' --tokens "
			    "'%s/h.tokens' --len 64 --json", bin, model, fx, dir), 0);
	return json_num(out, "kl_mean");
}

static void test_calib(void **state)
{
	(void)state;
	if (!have("real/stories260K-F32.gguf") || !have("real/calib.tokens"))
		skip();
	const char *m = "real/stories260K-F32.gguf";
	assert_int_equal(sh("'%s' sample '%s/%s' --seed 12 -n 8 --len 64 -o '%s/h.tokens'", bin, fx,
			    m, dir), 0);
	assert_int_equal(sh("'%s' quantize '%s/%s' '%s/rtn.gguf' -t Q5_1 && "
			    "'%s' quantize '%s/%s' '%s/cal.gguf' -t Q5_1 --calib '%s/real/calib.tokens' "
			    "--imatrix '%s/im.dat' -v", bin, fx, m, dir, bin, fx, m, dir, fx, dir), 0);
	assert_non_null(strstr(err, "(gptq)"));
	/* 36 matrices: 7 per layer and output.weight */
	assert_int_equal(sh("od -An -t d4 -N 4 '%s/im.dat'", dir), 0);
	assert_int_equal(atoi(out), 36);
	char a[256], b[256];
	snprintf(a, sizeof(a), "%s/rtn.gguf", dir);
	snprintf(b, sizeof(b), "%s/cal.gguf", dir);
	const double kl_rtn = eval_kl(a), kl_cal = eval_kl(b);
	assert_true(kl_cal < kl_rtn);
	/* the written matrix read back (no --calib): importance-weighted rounding */
	assert_int_equal(sh("'%s' quantize '%s/%s' '%s/im.gguf' -t Q5_1 --imatrix '%s/im.dat' -v", bin,
			    fx, m, dir, dir), 0);
	assert_non_null(strstr(err, "(imatrix)"));
	snprintf(a, sizeof(a), "%s/im.gguf", dir);
	assert_int_not_equal(sh("cmp -s '%s' '%s/rtn.gguf'", a, dir), 0);
	assert_true(eval_kl(a) < kl_rtn * 1.1); /* a small gain on this model, at best */
	/* a truncated matrix is refused */
	assert_int_equal(sh("head -c 100 '%s/im.dat' > '%s/bad.dat' && '%s' quantize '%s/%s' "
			    "'%s/x.gguf' -t Q5_1 --imatrix '%s/bad.dat'", dir, dir, bin, fx, m, dir, dir), 1);
	assert_non_null(strstr(err, "imatrix"));
}

static void test_refusals(void **state)
{
	(void)state;
	if (!have("mini-F32.gguf"))
		skip();
	assert_int_equal(sh("'%s' quantize '%s/mini-F32.gguf' '%s/x.gguf' -t Q9_9", bin, fx, dir), 2);
	assert_non_null(strstr(err, "unknown type 'Q9_9'"));
	assert_non_null(strstr(err, "Q4_K_M"));
	assert_int_equal(sh("'%s' quantize '%s/mini-F32.gguf' '%s/x.gguf' -t Q8_0 "
			    "--tensor-type ffn_down", bin, fx, dir), 2);
	assert_non_null(strstr(err, "bad --tensor-type"));
	assert_int_equal(sh("'%s' quantize '%s/nope.gguf' '%s/x.gguf' -t Q8_0", bin, dir, dir), 1);
	assert_int_equal(sh("'%s' quantize '%s/mini-F32.gguf' -t Q8_0", bin, fx), 2);
	assert_int_equal(access("x.gguf", F_OK), -1);
	if (!have("real/stories260K-F32.gguf"))
		return;
	/* a calibration stream of another vocabulary */
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/x.gguf' -t Q8_0 "
			    "--calib '%s/mini-F32.tokens' --calib-len 44", bin, fx, dir, fx), 1);
	assert_non_null(strstr(err, "outside the model's vocabulary of 512"));
}

/* herd's own HQb_B types: codes within half a step, dots = dequantized dots. */
static void test_hq_kernels(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, kern_isa_detect());
	for (int t = KERN_TYPE_HERD_FIRST; t < KERN_TYPE_COUNT; t++) {
		const kern_type_traits *tt = kern_type_info(t);
		assert_non_null(tt);
		assert_non_null(ops.from_float[t]);
		const int B = tt->blck_size, n = 3 * B, b = tt->name[2] - '0';
		assert_int_equal(tt->type_size, 2 + ((size_t)B * b + 7) / 8);
		float x[3 * KERN_HQ_MAX_BLOCK], y[3 * KERN_HQ_MAX_BLOCK], a[3 * KERN_HQ_MAX_BLOCK];
		uint8_t q[3 * 64];
		for (int i = 0; i < n; i++) {
			x[i] = sinf(0.37f * (float)i * (float)(t - 130)) * (i % 7 == 0 ? 3.0f : 1.0f);
			a[i] = cosf(0.11f * (float)i);
		}
		ops.from_float[t](x, q, n);
		ops.to_float[t](q, y, n);
		double dot = 0;
		for (int blk = 0; blk < 3; blk++) {
			float amax = 0;
			for (int i = blk * B; i < (blk + 1) * B; i++)
				amax = fmaxf(amax, fabsf(x[i]));
			const float step = amax / (float)(1 << (b - 1));
			for (int i = blk * B; i < (blk + 1) * B; i++) {
				assert_true(fabsf(x[i] - y[i]) <= step * 1.01f + 1e-6f); /* a clamped +amax: one step */
				dot += (double)y[i] * a[i];
			}
		}
		float s;
		ops.vec_dot[t](n, &s, q, a);
		assert_true(fabs(s - dot) < 1e-4 * (1 + fabs(dot)));
	}
}

/* Own types are marked and warned about; --standard-only keeps them out. */
static void test_own_types(void **state)
{
	(void)state;
	if (!have("real/stories260K-F32.gguf"))
		skip();
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/o.gguf' -t Q8_0 && "
			    "grep -c herd.own_types '%s/o.gguf'", bin, fx, dir, dir), 0);
	assert_non_null(strstr(err, "-> HQ8_43"));
	assert_non_null(strstr(err, "llama.cpp cannot load"));
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/s.gguf' -t Q8_0 "
			    "--standard-only && ! grep -q herd.own_types '%s/s.gguf'", bin, fx, dir, dir), 0);
	assert_non_null(strstr(err, "-> F16"));
	assert_null(strstr(err, "cannot load"));
}

/* The bar on the real model, on held-out streams of its own seed:
 * at most llama.cpp's Q4_K_M size (304,224 bytes), mean KL <= 0.05 and
 * perplexity within 5 % of F32's (docs/quantize.md's mix). */
static void test_real_acceptance(void **state)
{
	(void)state;
	if (!have("real/stories260K-F32.gguf") || !have("real/calib.tokens"))
		skip();
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/mix.gguf' -t HQ7_32 "
			    "--tensor-type token_embd=HQ8_32 --tensor-type blk.0.=HQ8_32 "
			    "--tensor-type attn_q=HQ8_32 --tensor-type attn_k=HQ8_32 "
			    "--calib '%s/real/calib.tokens' && '%s' sample '%s/real/stories260K-F32.gguf' "
			    "--seed 202 -n 24 --len 128 -o '%s/acc.tokens' && '%s' eval '%s/mix.gguf' --ref "
			    "'%s/real/stories260K-F32.gguf' --tokens '%s/acc.tokens' --json",
			    bin, fx, dir, fx, bin, fx, dir, bin, dir, fx, dir), 0);
	fprintf(stderr, "%s", out);
	assert_true(json_num(out, "bytes") <= 304224);
	assert_true(json_num(out, "kl_mean") <= 0.05);
	assert_true(json_num(out, "ppl_model") <= 1.05 * json_num(out, "ppl_ref"));
}

/* An importance matrix llama-imatrix (build 4748) wrote for the real model
 * (tests/data; 35 entries: it leaves output.weight out) is read and used. */
static void test_llama_imatrix(void **state)
{
	(void)state;
	char data[512];
	const char *slash = strrchr(__FILE__, '/'); /* this file's folder: tests/ */
	snprintf(data, sizeof(data), "%.*s/data/stories260K-llama-imatrix.dat",
		 slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
	if (!have("real/stories260K-F32.gguf") || access(data, R_OK) != 0)
		skip();
	assert_int_equal(sh("'%s' quantize '%s/real/stories260K-F32.gguf' '%s/li.gguf' -t Q5_1 "
			    "--imatrix '%s' -v 2>&1 | grep -c '(imatrix)'", bin, fx, dir, data), 0);
	assert_int_equal(atoi(out), 35);
}

/* --target-bytes: types chosen from measured sensitivity under a budget
 * (short calibration streams keep the test quick). */
static void test_mix_auto(void **state)
{
	(void)state;
	if (!have("real/stories260K-F32.gguf"))
		skip();
	const char *m = "real/stories260K-F32.gguf";
	assert_int_equal(sh("'%s' sample '%s/%s' --seed 303 -n 8 --len 32 -o '%s/c32.tokens' && "
			    "'%s' sample '%s/%s' --seed 12 -n 8 --len 64 -o '%s/h.tokens' && "
			    "'%s' quantize '%s/%s' '%s/auto.gguf' --target-bytes 304224 --calib "
			    "'%s/c32.tokens' --calib-len 32 && stat -c %%s '%s/auto.gguf'",
			    bin, fx, m, dir, bin, fx, m, dir, bin, fx, m, dir, dir, dir), 0);
	assert_true(atol(out) <= 304224 && atol(out) > 280000);
	char a[256];
	snprintf(a, sizeof(a), "%s/auto.gguf", dir);
	const double kl = eval_kl(a);
	fprintf(stderr, "auto mix at 304224 bytes: KL %.4f\n", kl);
	assert_true(kl < 0.06);
	/* refusals: a budget below any plan, no calibration, -t auto alone */
	assert_int_equal(sh("'%s' quantize '%s/%s' '%s/x.gguf' --target-bytes 150000 --calib "
			    "'%s/c32.tokens' --calib-len 32", bin, fx, m, dir, dir), 2);
	assert_non_null(strstr(err, "below what any plan reaches"));
	assert_int_equal(sh("'%s' quantize '%s/%s' '%s/x.gguf' --target-bpw 7", bin, fx, m, dir), 2);
	assert_non_null(strstr(err, "need --calib"));
	assert_int_equal(sh("'%s' quantize '%s/%s' '%s/x.gguf' -t auto", bin, fx, m, dir), 2);
	assert_non_null(strstr(err, "needs --target-bytes"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_identity),
		cmocka_unit_test(test_real_identity_and_fallback),
		cmocka_unit_test(test_calib),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_hq_kernels),
		cmocka_unit_test(test_own_types),
		cmocka_unit_test(test_real_acceptance),
		cmocka_unit_test(test_llama_imatrix),
		cmocka_unit_test(test_mix_auto),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
