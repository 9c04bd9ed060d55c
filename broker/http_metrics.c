/* GET /metrics: Prometheus text exposition (version 0.0.4). Every family
 * has HELP and TYPE lines; the latency histograms come from the
 * schedulers' own 1/8-octave histograms (broker/sched_stats.h) summed into
 * fixed bounds, so their buckets are cumulative and end in +Inf with
 * _sum and _count. The cache, model and pressure figures are herdctl's
 * (admin_query), the same numbers under Prometheus names. */
#include "http_int.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/procfs.h"

__attribute__((format(printf, 2, 3))) static void put(http_req *r, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		http_out(r, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void family(http_req *r, const char *name, const char *type, const char *help)
{
	put(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: \, " and newline escaped (model names cannot hold them,
 * but the rule is the exposition format's). */
static const char *esc(const char *s, char *buf, size_t n)
{
	size_t o = 0;
	for (; s && *s && o + 2 < n; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n') {
			buf[o++] = '\\';
			buf[o++] = *s == '\n' ? 'n' : *s;
		} else {
			buf[o++] = *s;
		}
	}
	buf[o] = 0;
	return buf;
}

static const double lat_bounds_s[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
				      0.5,   1,      2.5,   5,    10,    30,   60,  120};
#define N_LAT_BOUNDS (sizeof(lat_bounds_s) / sizeof(lat_bounds_s[0]))

/* One latency histogram of one model: a fine bucket counts below the
 * first bound at or above its upper edge. */
static void lat_series(http_req *r, const char *name, const char *model, const sched_lat *l)
{
	uint64_t cum[N_LAT_BOUNDS] = {0};
	for (int b = 0; b < SCHED_LAT_N; b++) {
		if (!l->hist[b])
			continue;
		double lo, hi;
		sched_lat_bucket(b, &lo, &hi);
		for (size_t k = 0; k < N_LAT_BOUNDS; k++)
			if (hi <= lat_bounds_s[k] * 1e3)
				cum[k] += l->hist[b];
	}
	for (size_t k = 0; k < N_LAT_BOUNDS; k++)
		put(r, "%s_bucket{model=\"%s\",le=\"%g\"} %llu\n", name, model, lat_bounds_s[k],
		    (unsigned long long)cum[k]);
	put(r, "%s_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", name, model, (unsigned long long)l->n);
	put(r, "%s_sum{model=\"%s\"} %.9g\n", name, model, l->sum_ms / 1e3);
	put(r, "%s_count{model=\"%s\"} %llu\n", name, model, (unsigned long long)l->n);
}

/* Steps by the sequences they ran: step_hist[k] steps of k (the last: k or
 * more), cumulated at powers of two. */
static void batch_series(http_req *r, const char *model, const sched_stats *st)
{
	static const int bounds[] = {1, 2, 4, 8, 16, 32};
	for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
		uint64_t c = 0;
		for (int i = 0; i <= bounds[k]; i++)
			c += st->step_hist[i];
		put(r, "herd_batch_size_bucket{model=\"%s\",le=\"%d\"} %llu\n", model, bounds[k],
		    (unsigned long long)c);
	}
	put(r, "herd_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", model, (unsigned long long)st->steps);
	put(r, "herd_batch_size_sum{model=\"%s\"} %llu\n", model, (unsigned long long)st->step_seqs);
	put(r, "herd_batch_size_count{model=\"%s\"} %llu\n", model, (unsigned long long)st->steps);
}

typedef enum { SCH_REQ, SCH_GEN, SCH_PROMPT, SCH_PFX, SCH_STEPS, SCH_PREEMPT, SCH_WAIT, SCH_RUN,
	       SCH_PAUSE, SCH_KV_FREE, SCH_KV_TOTAL, SCH_N } sch_metric;

static const struct {
	const char *name, *type, *help;
} sch_defs[SCH_N] = {
	[SCH_REQ] = {"herd_requests_total", "counter", "Requests ended, by outcome."},
	[SCH_GEN] = {"herd_generated_tokens_total", "counter", "Tokens sampled and delivered."},
	[SCH_PROMPT] = {"herd_prompt_tokens_total", "counter", "Prompt tokens evaluated (not from the prefix cache)."},
	[SCH_PFX] = {"herd_prefix_hit_tokens_total", "counter", "Prompt tokens served from cached KV pages."},
	[SCH_STEPS] = {"herd_steps_total", "counter", "Batched forward steps."},
	[SCH_PREEMPT] = {"herd_preemptions_total", "counter", "Running sequences paused for another request."},
	[SCH_WAIT] = {"herd_requests_waiting", "gauge", "Requests waiting for a batch slot."},
	[SCH_RUN] = {"herd_requests_running", "gauge", "Sequences in the batch."},
	[SCH_PAUSE] = {"herd_requests_paused", "gauge", "Sequences paused (preempted)."},
	[SCH_KV_FREE] = {"herd_kv_pages_free", "gauge", "KV pages free (or cached and evictable)."},
	[SCH_KV_TOTAL] = {"herd_kv_pages", "gauge", "KV pages of the pool."},
};

static void sch_value(http_req *r, sch_metric m, const char *model, const sched_stats *st)
{
	const char *n = sch_defs[m].name;
	switch (m) {
	case SCH_REQ:
		put(r, "%s{model=\"%s\",outcome=\"done\"} %llu\n", n, model, (unsigned long long)st->requests_done);
		put(r, "%s{model=\"%s\",outcome=\"error\"} %llu\n", n, model, (unsigned long long)st->requests_err);
		put(r, "%s{model=\"%s\",outcome=\"cancelled\"} %llu\n", n, model,
		    (unsigned long long)st->requests_cancelled);
		return;
	case SCH_GEN: put(r, "%s{model=\"%s\"} %llu\n", n, model, (unsigned long long)st->tokens_gen); return;
	case SCH_PROMPT: put(r, "%s{model=\"%s\"} %llu\n", n, model, (unsigned long long)st->tokens_prompt); return;
	case SCH_PFX: put(r, "%s{model=\"%s\"} %llu\n", n, model, (unsigned long long)st->prefix_hit_tokens); return;
	case SCH_STEPS: put(r, "%s{model=\"%s\"} %llu\n", n, model, (unsigned long long)st->steps); return;
	case SCH_PREEMPT: put(r, "%s{model=\"%s\"} %llu\n", n, model, (unsigned long long)st->preemptions); return;
	case SCH_WAIT: put(r, "%s{model=\"%s\"} %d\n", n, model, st->waiting); return;
	case SCH_RUN: put(r, "%s{model=\"%s\"} %d\n", n, model, st->running); return;
	case SCH_PAUSE: put(r, "%s{model=\"%s\"} %d\n", n, model, st->paused); return;
	case SCH_KV_FREE: put(r, "%s{model=\"%s\"} %d\n", n, model, st->kv_pages_free); return;
	case SCH_KV_TOTAL: put(r, "%s{model=\"%s\"} %d\n", n, model, st->kv_pages_total); return;
	default: return;
	}
}

/* The schedulers' families, one series per resident model. */
static void sched_families(http_req *r)
{
	loop *l = r->h->l;
	const int n = models_count(l->models);
	sched_stats *st = calloc((size_t)(n ? n : 1), sizeof(*st));
	if (!st)
		return;
	char (*names)[HTTP_MODEL_MAX * 2] = calloc((size_t)(n ? n : 1), sizeof(*names));
	int *res = calloc((size_t)(n ? n : 1), sizeof(int));
	for (int i = 0; names && res && i < n; i++) {
		models_entry *e = models_at(l->models, i);
		esc(e->name, names[i], sizeof(names[i]));
		if ((res[i] = models_sched(e) != NULL))
			sched_get_stats(models_sched(e), &st[i]);
	}
	for (int m = 0; names && res && m < SCH_N; m++) {
		family(r, sch_defs[m].name, sch_defs[m].type, sch_defs[m].help);
		for (int i = 0; i < n; i++)
			if (res[i])
				sch_value(r, (sch_metric)m, names[i], &st[i]);
	}
	static const struct {
		const char *name, *help;
		size_t off;
	} lats[] = {
		{"herd_ttft_seconds", "Time to first token (arrival to first token).", offsetof(sched_stats, first)},
		{"herd_tpot_seconds", "Time per output token (every inter-token gap).", offsetof(sched_stats, tpot)},
		{"herd_queue_wait_seconds", "Arrival to admission into the batch.", offsetof(sched_stats, queue)},
		{"herd_request_duration_seconds", "Arrival to the request's end.", offsetof(sched_stats, total)},
	};
	for (size_t k = 0; names && res && k < sizeof(lats) / sizeof(lats[0]); k++) {
		family(r, lats[k].name, "histogram", lats[k].help);
		for (int i = 0; i < n; i++)
			if (res[i])
				lat_series(r, lats[k].name, names[i], (const sched_lat *)((const char *)&st[i] + lats[k].off));
	}
	family(r, "herd_batch_size", "histogram", "Sequences per forward step.");
	for (int i = 0; names && res && i < n; i++)
		if (res[i])
			batch_series(r, names[i], &st[i]);
	free(res);
	free(names);
	free(st);
}

/* A figure of an admin result: the command, the path of dotted keys, and
 * its Prometheus name, type and help. */
typedef struct tree_metric {
	const char *cmd, *path, *name, *type, *help;
} tree_metric;

static const tree_metric tree_metrics[] = {
	{"status", "connections", "herd_connections", "gauge", "Socket connections open."},
	{"status", "requests_in_flight", "herd_socket_requests_in_flight", "gauge", "Socket agents' requests without their end yet."},
	{"status", "connections_total", "herd_connections_total", "counter", "Socket connections accepted."},
	{"status", "protocol_errors", "herd_protocol_errors_total", "counter", "Malformed frames received."},
	{"status", "uptime_s", "herd_uptime_seconds", "gauge", "Seconds since herdd started."},
	{"cache", "response_cache.entries", "herd_response_cache_entries", "gauge", "Answers in the response cache."},
	{"cache", "response_cache.bytes", "herd_response_cache_bytes", "gauge", "Bytes of the response cache."},
	{"cache", "response_cache.hits", "herd_response_cache_hits_total", "counter", "Requests answered from the response cache."},
	{"cache", "response_cache.misses", "herd_response_cache_misses_total", "counter", "Response cache lookups that missed."},
	{"cache", "response_cache.merged", "herd_requests_merged_total", "counter", "Requests that followed an identical one in flight."},
	{"cache", "prefix.lookups", "herd_prefix_lookups_total", "counter", "Requests begun with a prefix-cache lookup."},
	{"cache", "prefix.pages_cached", "herd_prefix_pages_cached", "gauge", "Unreferenced cached KV pages."},
	{"cache", "prefix.bytes_cached", "herd_prefix_cached_bytes", "gauge", "Bytes of the unreferenced cached KV pages."},
	{"cache", "prefix.evictions", "herd_prefix_evictions_total", "counter", "Cached KV pages evicted for reuse."},
	{"cache", "budget_bytes", "herd_model_budget_bytes", "gauge", "The models' byte budget (0: none)."},
	{"cache", "used_bytes", "herd_model_used_bytes", "gauge", "Bytes of the resident models."},
	{"cache", "loads", "herd_model_loads_total", "counter", "Model loads."},
	{"cache", "evictions", "herd_model_evictions_total", "counter", "Model evictions."},
	{"cache", "preload_hits", "herd_model_preload_hits_total", "counter", "Preloaded models that were then used."},
	{"pressure", "some.avg10", "herd_psi_memory_some_avg10", "gauge", "PSI memory some, 10 s average (percent)."},
	{"pressure", "full.avg10", "herd_psi_memory_full_avg10", "gauge", "PSI memory full, 10 s average (percent)."},
	{"pressure", "some.total_us", "herd_psi_memory_some_microseconds_total", "counter", "PSI memory some stall time."},
	{"pressure", "level", "herd_pressure_level", "gauge", "Shedding actions in force."},
	{"pressure", "refused", "herd_pressure_refused_total", "counter", "Requests refused under memory pressure."},
	{"pressure", "bpf_global.faults", "herd_bpf_page_faults_total", "counter", "Page faults (eBPF)."},
	{"pressure", "bpf_global.image_faults", "herd_bpf_image_faults_total", "counter", "Page faults in model images (eBPF)."},
	{"pressure", "bpf_global.reclaims", "herd_bpf_direct_reclaims_total", "counter", "Direct reclaims (eBPF)."},
	{"pressure", "bpf_global.reclaim_ms", "herd_bpf_direct_reclaim_milliseconds_total", "counter", "Time in direct reclaim (eBPF)."},
	{"pressure", "bpf_global.oom_kills", "herd_bpf_oom_kills_total", "counter", "OOM kills seen (eBPF)."},
};

/* The value at a dotted path of o, or NULL. */
static json_object *path_get(json_object *o, const char *path)
{
	char key[64];
	while (o && *path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		json_object *v = NULL;
		o = json_object_object_get_ex(o, key, &v) ? v : NULL;
		path += n + (dot != NULL);
	}
	return o;
}

static void tree_families(http_req *r)
{
	static const char *const cmds[] = {"status", "cache", "pressure"};
	json_object *trees[3];
	char err[256];
	for (int i = 0; i < 3; i++)
		trees[i] = stats_admin_json(r->h, cmds[i], err, sizeof(err));
	for (size_t k = 0; k < sizeof(tree_metrics) / sizeof(tree_metrics[0]); k++) {
		const tree_metric *t = &tree_metrics[k];
		int i = !strcmp(t->cmd, "status") ? 0 : !strcmp(t->cmd, "cache") ? 1 : 2;
		json_object *v = path_get(trees[i], t->path);
		if (!v)
			continue; /* e.g. pressure off: its families are absent */
		family(r, t->name, t->type, t->help);
		put(r, "%s %.17g\n", t->name, json_object_get_double(v));
	}
	for (int i = 0; i < 3; i++)
		json_object_put(trees[i]);
}

/* Per model: resident, bytes and score (herdctl models). */
static void model_families(http_req *r)
{
	char err[256], lab[HTTP_MODEL_MAX * 2];
	json_object *ms = stats_admin_json(r->h, "models", err, sizeof(err));
	static const char *const keys[][3] = {
		{"resident", "herd_model_resident", "1 when the model is loaded."},
		{"bytes", "herd_model_bytes", "Bytes the model takes (image and KV pool)."},
		{"score", "herd_model_score", "The cache manager's eviction score."},
	};
	for (size_t k = 0; ms && k < 3; k++) {
		family(r, keys[k][1], "gauge", keys[k][2]);
		for (size_t i = 0; i < json_object_array_length(ms); i++) {
			json_object *m = json_object_array_get_idx(ms, i), *v = NULL;
			json_object_object_get_ex(m, keys[k][0], &v);
			put(r, "%s{model=\"%s\"} %.17g\n", keys[k][1],
			    esc(json_object_get_string(path_get(m, "name")), lab, sizeof(lab)),
			    json_object_get_type(v) == json_type_boolean ? (double)json_object_get_boolean(v)
									 : json_object_get_double(v));
		}
	}
	json_object_put(ms);
}

static void http_families(http_req *r)
{
	http *h = r->h;
	family(r, "herd_http_requests_total", "counter", "HTTP replies, by status class.");
	for (int c = 1; c <= 5; c++)
		put(r, "herd_http_requests_total{code=\"%dxx\"} %llu\n", c, (unsigned long long)h->n_status[c]);
	family(r, "herd_http_unauthorized_total", "counter", "HTTP requests refused for a missing or wrong token.");
	put(r, "herd_http_unauthorized_total %llu\n", (unsigned long long)h->n_unauthorized);
	family(r, "herd_http_bad_requests_total", "counter", "HTTP requests refused with 400 (the field at fault named).");
	put(r, "herd_http_bad_requests_total %llu\n", (unsigned long long)h->n_bad_json);
	family(r, "herd_http_too_large_total", "counter", "HTTP request bodies over max_frame (413).");
	put(r, "herd_http_too_large_total %llu\n", (unsigned long long)h->n_too_large);
	family(r, "herd_http_streams_total", "counter", "Streamed HTTP replies begun.");
	put(r, "herd_http_streams_total %llu\n", (unsigned long long)h->n_streams);
	family(r, "herd_http_agents", "gauge", "HTTP agents known (one per token and client).");
	put(r, "herd_http_agents %d\n", h->n_agents);
	family(r, "herd_process_pss_bytes", "gauge", "Proportional set size of herdd.");
	put(r, "herd_process_pss_bytes %llu\n", (unsigned long long)proc_mem_bytes(getpid(), "smaps_rollup", "Pss:"));
}

int stats_metrics(http_req *r)
{
	sched_families(r);
	model_families(r);
	tree_families(r);
	http_families(r); /* counts this reply only from the next scrape on */
	int rc = http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", r->out ? r->out : "", r->out_len);
	r->out_len = r->out_off = 0;
	return rc;
}
