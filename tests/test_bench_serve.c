/* `herd bench serve` end to end on the mini model: it starts herdd, runs
 * a handful of real agent processes (shared system prompt, repeated
 * requests, streaming) and prints one JSON object whose counts agree:
 * requests done = agents x requests, no errors, every request has a TTFT
 * and a TPOT, percentiles ordered, the broker's step statistics over the
 * run account for every request and token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include <json-c/json.h>

#include "json_get.h"
#include <stdlib.h>

#include "model/mkmodel.h"

#define AGENTS 4
#define REQS 3
#define GEN 6

static char dir[64], model[128];
static h_world bins; /* only the binaries' paths */

static const char *herd_bin(void)
{
	return bins.herd;
}

static void check_pcts(json_object *r, const char *key, int64_t n)
{
	json_object *p = jget(r, key);
	assert_int_equal(jint(p, "n"), n);
	const double p50 = jdbl(p, "p50"), p95 = jdbl(p, "p95"), p99 = jdbl(p, "p99");
	if (!(p50 >= 0 && p50 <= p95 && p95 <= p99))
		fail_msg("%s: p50 %g p95 %g p99 %g", key, p50, p95, p99);
}

/* Runs herd bench serve with args; returns its parsed stdout, *rc its exit. */
static json_object *run(const char *args, int *rc)
{
	char cmd[PATH_MAX + 1024];
	snprintf(cmd, sizeof(cmd), "'%s' bench serve -m '%s' %s", herd_bin(), model, args);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	int st = pclose(f);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	json_object *o = json_tokener_parse(buf);
	if (!o)
		fail_msg("not one JSON object: '%s' (exit %d)", buf, *rc);
	return o;
}

static void test_bench_serve(void **state)
{
	(void)state;
	char args[256];
	snprintf(args, sizeof(args),
		 "--agents %d --requests %d --prompt-len 8:24 --gen-len %d --shared-frac 0.5 "
		 "--shared-len 20 --repeat-frac 0.3 --stream --threads 2 --max-batch 8",
		 AGENTS, REQS, GEN);
	int rc;
	json_object *r = run(args, &rc);
	assert_int_equal(rc, 0);
	const int64_t n = AGENTS * REQS;
	assert_int_equal(jint(r, "agents"), AGENTS);
	assert_int_equal(jint(r, "requests"), n);
	assert_int_equal(jint(r, "requests_ok"), n);
	assert_int_equal(jint(r, "requests_expected"), n);
	assert_int_equal(jint(r, "errors"), 0);
	assert_true(jint(r, "gen_tokens") > 0 && jint(r, "gen_tokens") <= n * GEN);
	assert_true(jdbl(r, "gen_tok_s") > 0 && jdbl(r, "requests_per_s") > 0);
	check_pcts(r, "ttft_ms", n);
	check_pcts(r, "latency_ms", n);
	assert_true(jint(jget(r, "tpot_ms"), "n") <= n); /* requests of one token have none */
	check_pcts(r, "tpot_ms", jint(jget(r, "tpot_ms"), "n"));
	/* prompts: 8..24 tokens each, +20 for the shared half of the agents */
	const int64_t pt = jint(r, "prompt_tokens");
	assert_true(pt >= n * 8 && pt <= n * (24 + 20));
	assert_true(jint(r, "repeated_requests") > 0 && jint(r, "repeated_requests") < n);
	assert_true(jint(r, "prefix_hit_tokens") >= 0 && jint(r, "prefix_hit_tokens") <= pt);
	assert_true(jint(r, "merged") >= 0 && jint(r, "cached") >= 0);
	assert_true(jint(r, "pss_broker_bytes") > 0);
	assert_int_equal(jint(r, "agents_measured"), AGENTS);
	assert_true(jint(r, "pss_total_bytes") >=
		    jint(r, "pss_broker_bytes") + jint(r, "pss_agents_bytes"));
	/* the broker saw the same run */
	json_object *b = jget(r, "broker_steps");
	assert_int_equal(jint(b, "requests_done"), n);
	assert_int_equal(jint(b, "requests_err"), 0);
	/* the broker generates the tokens of merged and cached answers once */
	const int shared = jint(r, "merged") + jint(r, "cached") > 0;
	if (shared)
		assert_true(jint(b, "tokens_gen") <= jint(r, "gen_tokens"));
	else
		assert_int_equal(jint(b, "tokens_gen"), jint(r, "gen_tokens"));
	assert_true(jint(b, "steps") > 0 && jdbl(b, "avg_batch") >= 1);
	/* cached prompt tokens are not evaluated again */
	if (shared)
		assert_true(jint(b, "tokens_prompt") <= pt - jint(r, "prefix_hit_tokens"));
	else
		assert_int_equal(jint(b, "tokens_prompt"), pt - jint(r, "prefix_hit_tokens"));
	json_object_put(r);
}

static void test_bench_serve_usage(void **state)
{
	(void)state;
	char cmd[PATH_MAX + 512];
	snprintf(cmd, sizeof(cmd), "'%s' bench serve --shared-frac 0.5 >/dev/null 2>&1", herd_bin());
	int st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
	snprintf(cmd, sizeof(cmd), "'%s' bench serve --repeat-frac 2 >/dev/null 2>&1", herd_bin());
	st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

static int setup(void **state)
{
	(void)state;
	if (h_find_bins(&bins)) {
		fprintf(stderr, "test_bench_serve: herd, herdd or herdctl not built; skipping\n");
		exit(77);
	}
	snprintf(dir, sizeof(dir), "/tmp/herd-test-serve-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(model, sizeof(model), "%s/mini.gguf", dir);
	char err[512] = "";
	mkmodel_opts mo = {.shape = "mini", .ftype = "Q8_0", .out_path = model, .seed = 11,
			   .n_threads = 2};
	if (mkmodel_write(&mo, err, sizeof(err)))
		fail_msg("mkmodel_write: %s", err);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(model);
	rmdir(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bench_serve_usage),
		cmocka_unit_test(test_bench_serve),
	};
	return cmocka_run_group_tests_name("bench_serve", tests, setup, teardown);
}
