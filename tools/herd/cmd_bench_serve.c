/* herd bench serve: a broker under a load of N agent processes, one JSON report.
 *
 *   herd bench serve (--socket PATH | [-m MODEL]) [--model-name NAME] [--agents N]
 *                    [--requests K | --duration S] [--prompt-len MIN[:MAX]] [--gen-len N]
 *                    [--shared-frac F --shared-len P] [--repeat-frac F] [--rate R]
 *                    [--stream] [--threads T] [--max-batch B] [--config FILE] [--attach]
 *
 * Drives a running broker (--socket) or one it starts on MODEL (as `herd
 * demo` does: default the TinyLlama-shape demo model, made when missing)
 * with N `herd agent` processes (default 8), each speaking libherd: K greedy
 * requests each (default 4), or as many as fit in S seconds. Prompts are
 * token ids (the text of a random-weight model means nothing): a length
 * drawn uniformly from MIN..MAX per request (default 32); the first F of
 * the agents (--shared-frac, rounded) put the same P-token system prompt
 * before theirs; --repeat-frac makes that fraction of requests one identical
 * deterministic request (for request merging and the response cache);
 * --rate R: Poisson arrivals of R requests/s per agent (default: closed
 * loop, each agent sends its next request when the previous one ends);
 * --stream: every request is streamed (TTFT and TPOT then measured from
 * token arrival times in the agent; otherwise from the broker's done
 * timings). Agents do not attach the shared image unless --attach.
 *
 * Report (stdout, one JSON object): the settings; requests (ok, errors,
 * expected = N x K), generated and prompt tokens, wall time, aggregate
 * gen_tok_s, requests_per_s, ttft_ms / tpot_ms / latency_ms p50/p95/p99
 * (per request, client side), prefix_hit_tokens (sum of done.n_cached),
 * merged and cached answers (done.merged / done.cached), repeated requests
 * sent, PSS of the broker, of the agents and in total while they are still
 * connected, and the broker's own step statistics over the run (`herdctl
 * --json batch` before and after: steps, sequences per step, step time,
 * busy fraction, prompt tokens evaluated, preemptions) with its recent TPOT
 * and TTFT percentiles.
 *
 * The broker's figures (its pid for PSS, the step statistics) come through
 * herdctl's admin commands: against a running broker of another uid
 * without admin rights they are 0 / empty.
 *
 * Exit status: 0 when every request succeeded (and, without --duration,
 * N x K of them ran), 1 otherwise, 2 for a usage error. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "common/clock.h"
#include "demo.h"
#include "report.h"

#define SERVE_MAX_LEVELS 16

typedef struct serve_opts {
	long agents, requests, duration_s, gen_len, shared_len, threads, max_batch;
	long levels[SERVE_MAX_LEVELS]; /* --agents N[,N...]: one run per level */
	int n_levels;
	const char *socket, *model, *model_name, *config, *prompt_len, *report;
	double shared_frac, repeat_frac, rate;
	int stream, attach;
} serve_opts;

#define SERVE_ARGS 24

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: herd bench serve (--socket PATH | [-m MODEL]) [--model-name NAME] [--agents N[,N...]]\n"
		"                        [--requests K | --duration S] [--prompt-len MIN[:MAX]]\n"
		"                        [--gen-len N] [--shared-frac F --shared-len P]\n"
		"                        [--repeat-frac F] [--rate R] [--stream] [--threads T]\n"
		"                        [--max-batch B] [--config FILE] [--attach] [--report DIR]\n"
		"  --socket PATH        a running broker (else herdd is started on MODEL)\n"
		"  -m MODEL             model for the broker started (default: the demo model)\n"
		"  --agents N[,N...]    agent processes (default 8); a list runs once per count\n"
		"  --requests K         requests per agent (default 4); --duration S: for S seconds\n"
		"  --prompt-len MIN:MAX prompt tokens per request, uniform (default 32)\n"
		"  --gen-len N          new tokens per request (default 16)\n"
		"  --shared-frac F      fraction of agents whose prompts start with one shared\n"
		"  --shared-len P       system prompt of P tokens (default 0: none)\n"
		"  --repeat-frac F      fraction of requests that are one identical greedy request\n"
		"  --rate R             Poisson arrivals, R requests/s per agent (default closed loop)\n"
		"  --stream             stream every request (TTFT/TPOT from token arrivals)\n"
		"  --attach             agents attach the shared image (as herd demo does)\n"
		"  --report DIR         also write DIR/bench.json, DIR/report.md and figures\n"
		"                       (PNG and SVG, drawn by gnuplot)\n"
		"Prints one JSON object per run.\n");
}

/* A numeric or valued option; returns 1 when a took v, 0 when unknown, -1 on error. */
static int serve_opt(serve_opts *o, const char *a, const char *v)
{
	static const struct {
		const char *name;
		size_t off;
		long lo, hi;
	} nums[] = {
		{"--requests", offsetof(serve_opts, requests), 1, 1 << 20},
		{"--duration", offsetof(serve_opts, duration_s), 1, 7 * 86400},
		{"--gen-len", offsetof(serve_opts, gen_len), 1, 1 << 16},
		{"--shared-len", offsetof(serve_opts, shared_len), 0, 8192},
		{"--threads", offsetof(serve_opts, threads), 1, 4096},
		{"--max-batch", offsetof(serve_opts, max_batch), 1, 256},
	};
	for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
		if (!strcmp(a, nums[k].name))
			return cli_int(a, v, nums[k].lo, nums[k].hi, (long *)((char *)o + nums[k].off))
				       ? -1
				       : 1;
	double *f = !strcmp(a, "--shared-frac")	  ? &o->shared_frac
		    : !strcmp(a, "--repeat-frac") ? &o->repeat_frac
		    : !strcmp(a, "--rate")	  ? &o->rate
						  : NULL;
	if (f) {
		if (cli_float(a, v, f) || !(*f >= 0 && *f <= (f == &o->rate ? 1e6 : 1))) {
			fprintf(stderr, "herd bench serve: %s wants a number in [0, %g]\n", a,
				f == &o->rate ? 1e6 : 1.0);
			return -1;
		}
		return 1;
	}
	const char **s = !strcmp(a, "--socket")		 ? &o->socket
			 : !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->model
			 : !strcmp(a, "--model-name")		 ? &o->model_name
			 : !strcmp(a, "--config")		 ? &o->config
			 : !strcmp(a, "--prompt-len")		 ? &o->prompt_len
			 : !strcmp(a, "--report")		 ? &o->report
								 : NULL;
	if (!s)
		return 0;
	if (!v) {
		fprintf(stderr, "herd bench serve: %s needs a value\n", a);
		return -1;
	}
	*s = v;
	return 1;
}

static int serve_parse(int argc, char **argv, serve_opts *o)
{
	*o = (serve_opts){.agents = 8, .levels = {8}, .n_levels = 1, .requests = 4, .gen_len = 16,
			  .prompt_len = "32"};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			return 1;
		if (!strcmp(a, "--agents")) {
			if (cli_int_list(a, v, 1, 900, o->levels, SERVE_MAX_LEVELS, &o->n_levels))
				return -1;
			o->agents = o->levels[0];
			i++;
			continue;
		}
		if (!strcmp(a, "--stream") || !strcmp(a, "--attach") || !strcmp(a, "--json")) {
			if (a[2] == 's')
				o->stream = 1;
			else if (a[2] == 'a')
				o->attach = 1;
			continue;
		}
		const int r = serve_opt(o, a, v);
		if (r < 0)
			return -1;
		if (r == 0) {
			fprintf(stderr, "herd bench serve: unexpected argument '%s'\n", a);
			return -1;
		}
		i++;
	}
	if (o->socket && (o->model || o->config || o->threads || o->max_batch)) {
		fprintf(stderr, "herd bench serve: -m, --config, --threads and --max-batch are for the "
				"broker it starts; not with --socket\n");
		return -1;
	}
	if ((o->shared_len > 0) != (o->shared_frac > 0)) {
		fprintf(stderr, "herd bench serve: --shared-frac and --shared-len go together\n");
		return -1;
	}
	return 0;
}

/* The agents' extra arguments; buf holds the numbers' text. */
static void serve_agent_args(const serve_opts *o, char *args[SERVE_ARGS], char buf[8][32])
{
	int n = 0;
	snprintf(buf[0], 32, "%ld", o->shared_len);
	snprintf(buf[1], 32, "%g", o->shared_frac);
	snprintf(buf[2], 32, "%ld", o->agents);
	snprintf(buf[3], 32, "%g", o->repeat_frac);
	snprintf(buf[4], 32, "%g", o->rate);
	snprintf(buf[5], 32, "%ld", o->duration_s);
	char *const pairs[][2] = {{"--prompt-len", (char *)o->prompt_len}, {"--shared-len", buf[0]},
				  {"--shared-frac", buf[1]}, {"--agents", buf[2]},
				  {"--repeat-frac", buf[3]}, {"--rate", buf[4]},
				  {"--stream-frac", o->stream ? "1" : "0"}};
	for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
		args[n++] = pairs[k][0];
		args[n++] = pairs[k][1];
	}
	if (o->duration_s > 0) {
		args[n++] = "--duration-s";
		args[n++] = buf[5];
	}
	args[n++] = "--cache"; /* requests may be merged and cached (repeat-frac) */
	args[n] = NULL;
}

static json_object *jget(json_object *o, const char *k)
{
	json_object *v = NULL;
	return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static double jnum(json_object *o, const char *k)
{
	json_object *v = jget(o, k);
	return v ? json_object_get_double(v) : 0;
}

static json_object *pcts(dvec *v)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "n", json_object_new_int64((int64_t)v->n));
	json_object_object_add(o, "p50", json_object_new_double(pct(v, 0.50)));
	json_object_object_add(o, "p95", json_object_new_double(pct(v, 0.95)));
	json_object_object_add(o, "p99", json_object_new_double(pct(v, 0.99)));
	return o;
}

/* The model's "total" period of a `batch` reply (NULL when absent). */
static json_object *batch_total(json_object *b, const char *model, json_object **recent)
{
	json_object *ms = jget(b, "models");
	for (size_t i = 0; ms && i < json_object_array_length(ms); i++) {
		json_object *m = json_object_array_get_idx(ms, i);
		json_object *nm = jget(m, "name");
		if (nm && !strcmp(json_object_get_string(nm), model)) {
			*recent = jget(m, "recent");
			return jget(m, "total");
		}
	}
	*recent = NULL;
	return NULL;
}

/* The broker's step statistics over the run: after - before. */
static json_object *broker_delta(const demo *d, json_object *before, json_object *after)
{
	json_object *rb, *ra, *b = batch_total(before, d->model_name, &rb);
	json_object *a = batch_total(after, d->model_name, &ra);
	json_object *o = json_object_new_object();
	if (!a)
		return o;
	const double steps = jnum(a, "steps") - jnum(b, "steps");
	const double seqs = jnum(a, "step_seqs") - jnum(b, "step_seqs");
	const double step_ms = jnum(a, "step_ms_avg") * jnum(a, "steps") -
			       jnum(b, "step_ms_avg") * jnum(b, "steps");
	json_object_object_add(o, "steps", json_object_new_int64((int64_t)steps));
	json_object_object_add(o, "avg_batch", json_object_new_double(steps > 0 ? seqs / steps : 0));
	json_object_object_add(o, "step_ms_avg", json_object_new_double(steps > 0 ? step_ms / steps : 0));
	json_object_object_add(o, "step_ms_total", json_object_new_double(step_ms));
	static const char *const counters[] = {"tokens_gen", "tokens_prompt", "requests_done",
					       "requests_err", "preemptions"};
	for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++)
		json_object_object_add(o, counters[k], json_object_new_int64((int64_t)(
							       jnum(a, counters[k]) - jnum(b, counters[k]))));
	static const char *const lats[] = {"ttft_ms", "tpot_ms", "queue_ms"};
	for (size_t k = 0; ra && k < sizeof(lats) / sizeof(lats[0]); k++) {
		json_object *l = jget(ra, lats[k]), *p = json_object_new_object();
		json_object_object_add(p, "p50", json_object_new_double(jnum(l, "p50")));
		json_object_object_add(p, "p95", json_object_new_double(jnum(l, "p95")));
		json_object_object_add(p, "p99", json_object_new_double(jnum(l, "p99")));
		char key[48];
		snprintf(key, sizeof(key), "recent_%s", lats[k]);
		json_object_object_add(o, key, p);
	}
	return o;
}

static void add_i(json_object *o, const char *k, int64_t v)
{
	json_object_object_add(o, k, json_object_new_int64(v));
}

static void add_d(json_object *o, const char *k, double v)
{
	json_object_object_add(o, k, json_object_new_double(v));
}

/* The settings echoed in the report. */
static void report_settings(json_object *r, const serve_opts *o, const demo *d)
{
	json_object_object_add(r, "broker", json_object_new_string(o->socket ? "running" : "started"));
	json_object_object_add(r, "socket", json_object_new_string(d->sock));
	json_object_object_add(r, "model", json_object_new_string(d->model_name));
	add_i(r, "agents", o->agents);
	add_i(r, "requests_per_agent", o->duration_s ? 0 : o->requests);
	add_i(r, "duration_s", o->duration_s);
	json_object_object_add(r, "prompt_len", json_object_new_string(o->prompt_len));
	add_i(r, "gen_len", o->gen_len);
	add_d(r, "shared_frac", o->shared_frac);
	add_i(r, "shared_len", o->shared_len);
	add_d(r, "repeat_frac", o->repeat_frac);
	add_d(r, "rate_per_agent", o->rate);
	json_object_object_add(r, "stream", json_object_new_boolean(o->stream));
}

/* PSS of the broker (pid from status) and of every finished agent. */
static void report_memory(json_object *r, demo *d, json_object *status)
{
	pid_t bp = d->broker > 0 ? d->broker : (pid_t)jnum(status, "pid");
	uint64_t pss_b = 0, rss, pss_a = 0, p;
	if (bp > 0)
		proc_mem(bp, &pss_b, &rss);
	long n = 0;
	for (long i = 0; i < d->n_ag; i++)
		if (d->ag[i].finished) {
			proc_mem(d->ag[i].pid, &p, &rss);
			pss_a += p;
			n++;
		}
	add_i(r, "pss_broker_bytes", (int64_t)pss_b);
	add_i(r, "pss_agents_bytes", (int64_t)pss_a);
	add_i(r, "pss_total_bytes", (int64_t)(pss_b + pss_a));
	add_i(r, "agents_measured", n);
}

/* Prints the run's report; *run: it, with the raw samples (for --report). */
static int serve_report(const serve_opts *o, demo *d, double wall, json_object *before,
			json_object **run)
{
	json_object *after = demo_herdctl(d, "batch"), *status = demo_herdctl(d, "status");
	json_object *r = json_object_new_object();
	report_settings(r, o, d);
	const long expected = o->duration_s ? 0 : o->agents * o->requests;
	add_i(r, "requests", d->req_ok + d->req_failed);
	add_i(r, "requests_ok", d->req_ok);
	add_i(r, "errors", d->req_failed);
	add_i(r, "requests_expected", expected);
	add_d(r, "wall_s", wall);
	add_i(r, "gen_tokens", (int64_t)d->gen_tokens);
	add_i(r, "prompt_tokens", (int64_t)d->prompt_tokens);
	add_d(r, "gen_tok_s", wall > 0 ? (double)d->gen_tokens / wall : 0);
	add_d(r, "requests_per_s", wall > 0 ? (double)d->req_ok / wall : 0);
	json_object_object_add(r, "ttft_ms", pcts(&d->ttft));
	json_object_object_add(r, "tpot_ms", pcts(&d->tpot));
	json_object_object_add(r, "latency_ms", pcts(&d->lat));
	add_i(r, "prefix_hit_tokens", (int64_t)d->n_cached);
	add_i(r, "merged", (int64_t)d->n_merged);
	add_i(r, "cached", (int64_t)d->n_hit);
	add_i(r, "repeated_requests", (int64_t)d->n_repeat);
	report_memory(r, d, status);
	json_object_object_add(r, "broker_steps", broker_delta(d, before, after));
	json_object_object_add(r, "cpu_affinity", json_object_new_string(
		jget(status, "cpu_affinity") ? json_object_get_string(jget(status, "cpu_affinity")) : ""));
	printf("%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object *smp = json_object_new_object();
	json_object_object_add(smp, "latency_ms", report_samples(d->lat.v, d->lat.n));
	json_object_object_add(smp, "ttft_ms", report_samples(d->ttft.v, d->ttft.n));
	json_object_object_add(smp, "tpot_ms", report_samples(d->tpot.v, d->tpot.n));
	json_object_object_add(r, "samples", smp);
	*run = r;
	json_object_put(after);
	json_object_put(status);
	const long done = d->req_ok + d->req_failed;
	return d->req_failed == 0 && (!expected || done == expected) && d->req_ok > 0 ? 0 : 1;
}

/* One run at o->agents agents; *run: its report (NULL when it did not end). */
static int serve_run(const serve_opts *op, json_object **run)
{
	const serve_opts o = *op;
	*run = NULL;
	demo *d = calloc(1, sizeof(*d));
	if (!d)
		return 1;
	char *extra[SERVE_ARGS], buf[8][32];
	serve_agent_args(&o, extra, buf);
	d->sig_fd = d->go_w = d->exit_w = -1;
	d->o = (demo_opts){.agents = o.agents, .requests = o.requests, .max_tokens = o.gen_len,
			   .threads = o.threads, .max_batch = o.max_batch, .model = o.model,
			   .json = 1, .socket = o.socket, .model_name = o.model_name,
			   .config = o.config, .extra = extra, .no_attach = !o.attach};
	d->n_ag = o.agents;
	herd_client *c = NULL;
	int status = 1;
	if (demo_setup(d) || demo_start(d, &c))
		goto out;
	herd_close(c);
	c = NULL;
	json_object *before = demo_herdctl(d, "batch");
	const double t0 = clock_mono_s();
	close(d->go_w); /* go */
	d->go_w = -1;
	if (demo_pump(d, 1, o.duration_s ? (double)o.duration_s + DEMO_RUN_TIMEOUT_S
					 : DEMO_RUN_TIMEOUT_S) == 0)
		status = serve_report(&o, d, clock_mono_s() - t0, before, run);
	json_object_put(before);
out:
	herd_close(c);
	return demo_cleanup(d, status);
}

static const report_spec serve_spec = {
	.title = "herd bench serve",
	.x_key = "agents",
	.x_title = "agents",
	.tput = {{"gen_tok_s", "generated tokens/s"}, {"requests_per_s", "requests/s"}},
	.tput_unit = "per second",
	.mem = {{"pss_broker_bytes", "broker PSS"}, {"pss_agents_bytes", "agents PSS"},
		{"pss_total_bytes", "total PSS"}},
	.samples = {{"latency_ms", "request latency"}, {"ttft_ms", "time to first token"},
		    {"tpot_ms", "time per output token"}},
	.table = {{"requests_ok", "requests"}, {"errors", "errors"}, {"gen_tok_s", "tok/s"},
		  {"requests_per_s", "req/s"}, {"ttft_ms.p50", "TTFT p50 ms"},
		  {"ttft_ms.p99", "TTFT p99 ms"}, {"tpot_ms.p50", "TPOT p50 ms"},
		  {"latency_ms.p50", "latency p50 ms"}, {"latency_ms.p99", "latency p99 ms"},
		  {"broker_steps.avg_batch", "avg batch"}, {"pss_total_bytes", "total PSS"}},
};

int cmd_bench_serve(int argc, char **argv)
{
	serve_opts o;
	int pr = serve_parse(argc, argv, &o);
	if (pr) {
		serve_usage(pr > 0 ? stdout : stderr);
		return pr > 0 ? 0 : 2;
	}
	json_object *runs = json_object_new_array();
	int status = 0;
	for (int l = 0; l < o.n_levels; l++) {
		json_object *run;
		o.agents = o.levels[l];
		const int st = serve_run(&o, &run);
		status = status ? status : st;
		if (run)
			json_object_array_add(runs, run);
		if (st == DEMO_EXIT_INTERRUPTED || !run)
			break;
	}
	if (o.report && json_object_array_length(runs) &&
	    report_write(o.report, &serve_spec, runs, argc + 1, argv - 1))
		status = status ? status : 1;
	json_object_put(runs);
	return status;
}
