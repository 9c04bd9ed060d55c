/* Batch metrics: the latency histograms' percentiles (broker/sched_stats.h)
 * and `herdctl --json batch` against a real herdd on the mini model after
 * real requests: the step histogram adds up to the steps, every request has
 * a TTFT, percentiles are ordered, the recent window holds what just ran. */
#include "broker_harness.h"

#include <json-c/json.h>

#include "json_get.h"
#include <math.h>

#include "broker/scheduler.h"

#define N_CONN 3
#define N_PER_CONN 4
#define N_REQ (N_CONN * N_PER_CONN)
#define MAX_TOK 12

static const char *const prompts[] = {"Once upon a time", "The weather today",
				      "A poem about rain", "To make tea, first"};

/* ---- the estimator alone ------------------------------------------------- */

static void test_lat_percentiles(void **state)
{
	(void)state;
	static sched_lat l;
	memset(&l, 0, sizeof(l));
	assert_true(sched_lat_pct(&l, 0.5) == 0);
	for (int i = 1; i <= 1000; i++)
		sched_lat_add(&l, (double)i);
	assert_int_equal(l.n, 1000);
	const double p50 = sched_lat_pct(&l, 0.50), p95 = sched_lat_pct(&l, 0.95),
		     p99 = sched_lat_pct(&l, 0.99);
	assert_true(fabs(p50 - 500) <= 500.0 / SCHED_LAT_SUB);
	assert_true(fabs(p95 - 950) <= 950.0 / SCHED_LAT_SUB);
	assert_true(fabs(p99 - 990) <= 990.0 / SCHED_LAT_SUB);
	assert_true(p50 <= p95 && p95 <= p99 && p99 <= l.max_ms);
	assert_true(l.max_ms == 1000);
	/* bucket bounds tile the line: every value lands inside its bucket */
	for (int b = 1; b < SCHED_LAT_N - 1; b++) {
		double lo, hi, lo2, hi2;
		sched_lat_bucket(b, &lo, &hi);
		sched_lat_bucket(b + 1, &lo2, &hi2);
		assert_true(lo < hi && fabs(hi - lo2) < 1e-12 * hi);
	}
	/* a window: the difference of two snapshots holds only what came between */
	static sched_lat a, d;
	a = l;
	for (int i = 0; i < 10; i++)
		sched_lat_add(&l, 5000);
	sched_lat_diff(&d, &l, &a);
	assert_int_equal(d.n, 10);
	assert_true(fabs(sched_lat_pct(&d, 0.5) - 5000) <= 5000.0 / SCHED_LAT_SUB);
	/* priorities: counted one by one, then "other" */
	sched_prio_counts p = {0};
	for (int k = 0; k < SCHED_PRIO_N + 3; k++)
		sched_prio_count(&p, k);
	sched_prio_count(&p, 0);
	assert_int_equal(p.n, SCHED_PRIO_N);
	assert_int_equal(p.requests[0], 2);
	assert_int_equal(p.other, 3);
}

/* ---- a real broker ---------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	bh_world_setup("tbm");
	const char *extra[] = {"--state-dir", W.dir, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bh_world_teardown();
	return 0;
}

/* Runs herdctl (beside herdd) with args; returns its stdout (malloc'd). */
static char *herdctl(const char *args)
{
	char cmd[PATH_MAX * 2 + 256], path[PATH_MAX];
	snprintf(path, sizeof(path), "%s", W.herdd);
	snprintf(cmd, sizeof(cmd), "'%s/herdctl' --socket '%s' %s", dirname(path), W.sock, args);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t r;
	while ((r = fread(buf + n, 1, cap - 1 - n, f)) > 0)
		n += r;
	buf[n] = 0;
	assert_int_equal(pclose(f), 0);
	return buf;
}

/* A latency block: ordered percentiles, buckets adding up to n. */
static int64_t check_lat(json_object *p, const char *key)
{
	json_object *l = jget(p, key);
	const double p50 = jdbl(l, "p50"), p95 = jdbl(l, "p95"), p99 = jdbl(l, "p99"),
		     mx = jdbl(l, "max");
	if (!(p50 <= p95 && p95 <= p99 && p99 <= mx))
		fail_msg("%s: p50 %g p95 %g p99 %g max %g not ordered", key, p50, p95, p99, mx);
	json_object *b = jget(l, "buckets");
	int64_t sum = 0;
	double prev = -1;
	for (size_t i = 0; i < json_object_array_length(b); i++) {
		json_object *e = json_object_array_get_idx(b, i);
		const double le = json_object_get_double(json_object_array_get_idx(e, 0));
		assert_true(le > prev);
		prev = le;
		sum += json_object_get_int64(json_object_array_get_idx(e, 1));
	}
	assert_int_equal(sum, jint(l, "n"));
	return jint(l, "n");
}

static void check_period(json_object *p, int n_gen_sum)
{
	json_object *h = jget(p, "step_hist");
	int64_t steps = 0, seqs = 0;
	for (size_t k = 0; k < json_object_array_length(h); k++) {
		const int64_t c = json_object_get_int64(json_object_array_get_idx(h, k));
		steps += c;
		seqs += c * (int64_t)k;
	}
	assert_int_equal(steps, jint(p, "steps"));
	assert_true(steps > 0);
	assert_int_equal(seqs, jint(p, "step_seqs")); /* no step above 64 sequences here */
	assert_int_equal(jint(p, "requests_done"), N_REQ);
	assert_int_equal(jint(p, "requests_err"), 0);
	assert_int_equal(check_lat(p, "ttft_ms"), N_REQ);
	assert_int_equal(check_lat(p, "queue_ms"), N_REQ);
	assert_int_equal(check_lat(p, "latency_ms"), N_REQ);
	/* one TPOT per token after the first (an end-of-sequence token counts
	 * as a token but not as text) */
	const int64_t tpot = check_lat(p, "tpot_ms");
	assert_true(tpot >= n_gen_sum - N_REQ && tpot <= n_gen_sum);
	assert_int_equal(jint(p, "tokens_gen"), n_gen_sum);
	json_object *bp = jget(p, "requests_by_prio");
	assert_int_equal(json_object_array_length(bp), 1);
	assert_int_equal(jint(json_object_array_get_idx(bp, 0), "prio"), 0);
	assert_int_equal(jint(json_object_array_get_idx(bp, 0), "requests"), N_REQ);
}

static int run_requests(void)
{
	client c[N_CONN];
	gen_out *outs = calloc(N_PER_CONN, sizeof(gen_out));
	assert_non_null(outs);
	int n_gen = 0;
	for (int k = 0; k < N_CONN; k++) {
		cl_open(&c[k]);
		cl_hello(&c[k], "batch-test");
		for (int i = 0; i < N_PER_CONN; i++) {
			/* every prompt different: identical ones would be merged
			 * (one sequence generating for several requests) */
			char p[96];
			snprintf(p, sizeof(p), "%s %d", prompts[(k + i) % 4], k * N_PER_CONN + i);
			cl_gen(&c[k], (uint64_t)i + 1, W.model_name, p, MAX_TOK, i % 2);
		}
	}
	for (int k = 0; k < N_CONN; k++) {
		memset(outs, 0, N_PER_CONN * sizeof(gen_out));
		collect(&c[k], outs, N_PER_CONN, 1, N_PER_CONN);
		for (int i = 0; i < N_PER_CONN; i++) {
			assert_false(outs[i].is_err);
			n_gen += outs[i].n_gen;
		}
		cl_close(&c[k]);
	}
	free(outs);
	return n_gen;
}

static void test_herdctl_batch(void **state)
{
	(void)state;
	const int n_gen = run_requests();
	char *out = herdctl("--json batch");
	json_object *o = json_tokener_parse(out);
	if (!o)
		fail_msg("herdctl --json batch printed no JSON: %s", out);
	assert_int_equal(jint(o, "window_s"), SCHED_WIN_S);
	json_object *ms = jget(o, "models");
	assert_int_equal(json_object_array_length(ms), 1);
	json_object *m = json_object_array_get_idx(ms, 0);
	assert_string_equal(json_object_get_string(jget(m, "name")), W.model_name);
	assert_int_equal(jint(m, "waiting") + jint(m, "running") + jint(m, "paused"), 0);
	check_period(jget(m, "total"), n_gen);
	/* everything ran within the last minute: the recent view holds it all */
	check_period(jget(m, "recent"), n_gen);
	/* it covers this run: from the scheduler's start (a moment before the
	 * broker listens) until now */
	assert_true(jdbl(jget(m, "recent"), "span_s") > 0);
	assert_true(jdbl(jget(m, "recent"), "span_s") < jdbl(o, "uptime_s") + 60);
	json_object_put(o);
	free(out);
	/* the table prints the same figures */
	out = herdctl("batch");
	assert_non_null(strstr(out, "TTFT"));
	assert_non_null(strstr(out, "TPOT"));
	assert_non_null(strstr(out, "steps by batch size"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest unit[] = {cmocka_unit_test(test_lat_percentiles)};
	const struct CMUnitTest broker[] = {cmocka_unit_test(test_herdctl_batch)};
	int rc = cmocka_run_group_tests_name("sched_stats", unit, NULL, NULL);
	return rc | cmocka_run_group_tests_name("herdctl_batch", broker, setup, teardown);
}
