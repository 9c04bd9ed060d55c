/* The `herd` command's interfaces as users call them: tokenize on a
 * vocabulary-only GGUF, logits files in the fixtures' format, run
 * (deterministic with a seed, greedy with --temp 0, --chat), bench --json,
 * mkmodel, and clear errors with exit status 2 for bad usage and 1 for bad
 * files. Runs the real binary (HERD_BIN). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_run.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

static char dir[128];
static const char *bin;

static int run(const char *cmd, char *out, size_t cap, char *err, size_t ecap)
{
	return cli_run(dir, cmd, out, cap, err, ecap);
}

static long file_size(const char *path)
{
	return cli_file_size(path);
}

static int setup(void **state)
{
	(void)state;
	bin = getenv("HERD_BIN");
#ifdef HERD_BIN
	if (!bin || !*bin)
		bin = HERD_BIN;
#endif
	if (!bin || access(bin, X_OK) != 0)
		return -1;
	snprintf(dir, sizeof(dir), "/tmp/herd-test-cli-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "'%s' mkmodel --shape mini -t Q4_0 -o '%s/mini.gguf' --seed 3", bin, dir);
	return run(cmd, NULL, 0, NULL, 0) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_tokenize(void **state)
{
	(void)state;
	const char *fx = getenv("HERD_FIXTURES");
	if (!fx || !*fx)
		fx = HERD_FIXTURES;
	char vocab[512], cmd[1024], out[4096];
	snprintf(vocab, sizeof(vocab), "%s/ggml-vocab-llama-spm.gguf", fx);
	if (access(vocab, R_OK) != 0)
		skip();
	snprintf(cmd, sizeof(cmd), "'%s' tokenize -m '%s' --no-bos 'Hello world'", bin, vocab);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	assert_string_equal(out, "15043 3186\n");
	snprintf(cmd, sizeof(cmd), "'%s' tokenize -m '%s' ' Hello world'", bin, vocab);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	assert_string_equal(out, "1 29871 15043 3186\n");
	/* "<s>" typed by a user is text, not BOS */
	snprintf(cmd, sizeof(cmd), "'%s' tokenize -m '%s' --no-bos '<s>'", bin, vocab);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	assert_true(strncmp(out, "1 ", 2) != 0 && strcmp(out, "1\n") != 0);
}

static void test_logits_files(void **state)
{
	(void)state;
	char cmd[1024], out[4096], err[4096], path[512];
	snprintf(cmd, sizeof(cmd), "'%s' logits -m '%s/mini.gguf' -p 'the robot found a key' -o '%s/l.bin' -t 2",
		 bin, dir, dir);
	assert_int_equal(run(cmd, out, sizeof(out), err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/l.bin.tokens", dir);
	const long ntok = file_size(path) / 4;
	assert_true(ntok >= 2);
	snprintf(path, sizeof(path), "%s/l.bin", dir);
	assert_int_equal(file_size(path), ntok * 2048 * 4); /* [n_tokens][n_vocab] f32 */
	snprintf(path, sizeof(path), "%s/l.bin.tokens", dir);
	FILE *f = fopen(path, "rb");
	int32_t first = -1;
	assert_int_equal(fread(&first, 4, 1, f), 1);
	fclose(f);
	assert_int_equal(first, 1); /* BOS first */
}

static void test_run(void **state)
{
	(void)state;
	char cmd[1024], a[4096], b[4096], err[4096];
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/mini.gguf' -p 'Once upon a time' -n 12 --seed 9 -t 2", bin, dir);
	assert_int_equal(run(cmd, a, sizeof(a), err, sizeof(err)), 0);
	assert_int_equal(run(cmd, b, sizeof(b), NULL, 0), 0);
	assert_string_equal(a, b); /* same seed, same text */
	assert_true(strlen(a) > 1);
	assert_non_null(strstr(err, "tok/s"));
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/mini.gguf' -p 'Once upon a time' -n 12 --temp 0 -t 1", bin, dir);
	assert_int_equal(run(cmd, a, sizeof(a), NULL, 0), 0);
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/mini.gguf' -p 'Once upon a time' -n 12 --temp 0 -t 2", bin, dir);
	assert_int_equal(run(cmd, b, sizeof(b), NULL, 0), 0);
	assert_string_equal(a, b); /* greedy does not depend on the thread count */
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/mini.gguf' -p 'hello' --chat -n 4 --temp 0", bin, dir);
	assert_int_equal(run(cmd, a, sizeof(a), NULL, 0), 0);
}

static void test_bench_json(void **state)
{
	(void)state;
	char cmd[1024], out[4096];
	snprintf(cmd, sizeof(cmd), "'%s' bench -m '%s/mini.gguf' -p 16 -n 4 -r 1 -b 3 --no-probe --json", bin, dir);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	const char *keys[] = {"\"prefill_tok_s\":", "\"decode_tok_s\":", "\"model_bytes\":", "\"threads\":",
			      "\"batch\":3"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strstr(out, keys[i]))
			fail_msg("bench --json lacks %s: %s", keys[i], out);
	assert_true(out[0] == '{');
}

/* HERD_ISA caps the kernels (and the interleaving) at a level, as on a CPU
 * without the rest: bench reports the level it ran; a level that is not
 * one is refused, named. */
static void test_isa_env(void **state)
{
	(void)state;
	char cmd[1024], out[4096], err[4096];
	snprintf(cmd, sizeof(cmd), "'%s' bench -m '%s/mini.gguf' -p 16 -n 4 -r 1 --no-probe --json", bin, dir);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	const int has_simd = strstr(out, "\"isa\":\"ref\"") == NULL; /* the CPU's best */
	snprintf(cmd, sizeof(cmd), "HERD_ISA=avx2 '%s' bench -m '%s/mini.gguf' -p 16 -n 4 -r 1 -b 3 --no-probe --json",
		 bin, dir);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	if (!strstr(out, has_simd ? "\"isa\":\"avx2\"" : "\"isa\":\"ref\""))
		fail_msg("HERD_ISA=avx2 ran other kernels: %s", out);
	snprintf(cmd, sizeof(cmd), "HERD_ISA=ref '%s' bench -m '%s/mini.gguf' -p 4 -n 2 -r 1 --no-probe --json", bin, dir);
	assert_int_equal(run(cmd, out, sizeof(out), NULL, 0), 0);
	assert_non_null(strstr(out, "\"isa\":\"ref\""));
	snprintf(cmd, sizeof(cmd), "HERD_ISA=avx9 '%s' run -m '%s/mini.gguf' -p x -n 2", bin, dir);
	assert_true(run(cmd, NULL, 0, err, sizeof(err)) != 0);
	assert_non_null(strstr(err, "HERD_ISA"));
	assert_non_null(strstr(err, "avx9"));
}

static void test_errors(void **state)
{
	(void)state;
	char cmd[1024], err[4096], path[512];
	snprintf(cmd, sizeof(cmd), "'%s' frobnicate", bin);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 2);
	assert_non_null(strstr(err, "frobnicate"));
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/mini.gguf' -p x -n lots", bin, dir);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 2);
	assert_non_null(strstr(err, "-n"));
	snprintf(cmd, sizeof(cmd), "'%s' run -p x", bin);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 2);
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s/missing.gguf' -p x", bin, dir);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "missing.gguf"));
	/* a truncated model names the problem */
	snprintf(path, sizeof(path), "%s/trunc.gguf", dir);
	snprintf(cmd, sizeof(cmd), "head -c 4000 '%s/mini.gguf' > '%s'", dir, path);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "'%s' run -m '%s' -p x", bin, path);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "trunc.gguf"));
	snprintf(cmd, sizeof(cmd), "'%s' mkmodel --shape huge -t Q4_0 -o '%s/x.gguf'", bin, dir);
	assert_int_equal(run(cmd, NULL, 0, err, sizeof(err)), 2);
	assert_non_null(strstr(err, "huge"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokenize),   cmocka_unit_test(test_logits_files),
		cmocka_unit_test(test_run),        cmocka_unit_test(test_bench_json),
		cmocka_unit_test(test_errors),     cmocka_unit_test(test_isa_env),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
