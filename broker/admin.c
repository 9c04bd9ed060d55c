/* `admin` frames (herdctl): status, models, cache, load, preload, evict,
 * pin, unpin, segments, agents, batch, pressure (admin_pressure.c), rm,
 * shutdown.
 *
 * Allowed for the broker's own uid, root, and members (primary or
 * supplementary group of the peer, from SO_PEERCRED and SO_PEERGROUPS
 * captured at accept) of the configured admin_group; anyone else gets
 * `err` -EPERM and keeps the connection. Results are packed straight from
 * broker state into an admin_ok frame. */
#include "loop_int.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"
#include "common/text.h"

#define ADMIN_CMD_MAX 32 /* bytes of a command name we look at, NUL included */

/* Entries of each result map (the writer needs the count up front). */
enum {
	STATUS_KEYS = 16 + 10 + 4 + 12 + 3 + 5 + SCHED_NOTE_COUNT + ADMIN_STATUS_PRESSURE_KEYS +
		      HTTP_STATUS_KEYS,
	/* + connection limits, image trust, merging and response cache, fair share,
	 * prefix cache (sched.h), memory pressure */
	MODEL_KEYS = 47 + 23, /* + the cache manager's (res_model_cache) */
	CACHE_KEYS = 22 + 2, /* + response_cache and prefix (res_cache_answers) */
	SEGMENT_KEYS = 11,
	AGENT_KEYS = 9,
	BATCH_KEYS = 3,
	BATCH_MODEL_KEYS = 9,
	BATCH_PERIOD_KEYS = 22,
	BATCH_LAT_KEYS = 9,
};

/* ---- permission ------------------------------------------------------------- */

static int group_gid(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	char buf[4096];
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) || !res)
		return -1;
	*gid = gr.gr_gid;
	return 0;
}

int admin_allowed(const loop *l, const conn *c)
{
	if (c->uid == geteuid() || c->uid == 0)
		return 1;
	gid_t g;
	if (!l->cfg->admin_group || group_gid(l->cfg->admin_group, &g))
		return 0;
	return conn_in_group(c, g);
}

/* ---- results ------------------------------------------------------------ */

static double avg(double sum, uint64_t n)
{
	return n ? sum / (double)n : 0;
}

/* ---- commands -------------------------------------------------------------- */

/* How often each connection limit triggered (the limits' names). */
static void res_status_limits(const loop *l, proto_writer *pk)
{
	const loop_limit_stats *s = &l->lim;
	proto_write_kv_uint(pk, "limit_send_queue_paused", s->sendq_paused);
	proto_write_kv_uint(pk, "limit_send_queue_cutoffs", s->sendq_cutoffs);
	proto_write_kv_uint(pk, "limit_frame_timeouts", s->frame_timeouts);
	proto_write_kv_uint(pk, "limit_idle_timeouts", s->idle_timeouts);
	proto_write_kv_uint(pk, "limit_refused_max_connections", s->refused_total);
	proto_write_kv_uint(pk, "limit_refused_per_uid", s->refused_uid);
	proto_write_kv_uint(pk, "limit_accept_backoffs", s->accept_backoffs);
	proto_write_kv_uint(pk, "limit_accept_storms", s->accept_storms);
	proto_write_kv_uint(pk, "limit_frame_throttles", s->frame_throttles);
	proto_write_kv_uint(pk, "sighup_ignored", s->sighups);
}

/* Image trust: adopted images, objects the trust rule skipped (squatted
 * names included), digest checks that failed, checks still running. */
static void res_status_trust(const loop *l, proto_writer *pk)
{
	models_trust_stats ts;
	models_get_trust_stats(l->models, &ts);
	proto_write_kv_uint(pk, "images_adopted", ts.images_adopted);
	proto_write_kv_uint(pk, "images_untrusted", ts.images_untrusted);
	proto_write_kv_uint(pk, "image_digest_failures", ts.digest_failures);
	proto_write_kv_int(pk, "images_verifying", ts.verifying);
}

/* Request merging and the response cache (zeros when the cache is off). */
/* The scheduler counters of the resident models, added up (an evicted
 * model's went with it). */
static void resident_stats(loop *l, sched_stats *sum, uint64_t *pfx_bytes)
{
	memset(sum, 0, sizeof(*sum));
	if (pfx_bytes)
		*pfx_bytes = 0;
	for (int i = 0; i < models_count(l->models); i++) {
		const models_entry *e = models_at(l->models, i);
		sched *s = models_sched(e);
		if (!s)
			continue;
		sched_stats st;
		sched_get_stats(s, &st);
		sum->merged += st.merged;
		sum->tokens_prompt += st.tokens_prompt;
		sum->prefix_lookups += st.prefix_lookups;
		sum->prefix_hit_tokens += st.prefix_hit_tokens;
		sum->prefix_pages_cached += st.prefix_pages_cached;
		sum->prefix_evictions += st.prefix_evictions;
		if (pfx_bytes && st.kv_pages_total > 0) /* a page's share of the model's KV pool */
			*pfx_bytes += (uint64_t)st.prefix_pages_cached * (e->kv_bytes / (uint64_t)st.kv_pages_total);
	}
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

/* herdctl cache: the response cache and the prefix pool (issue of the
 * scheduler), before the model cache manager's counters. */
static void res_cache_answers(loop *l, proto_writer *pk)
{
	sched_stats sum;
	uint64_t pfx_bytes;
	resident_stats(l, &sum, &pfx_bytes);
	respcache_stats rs;
	respcache_get_stats(models_respcache(l->models), &rs);
	proto_write_cstr(pk, "response_cache");
	proto_write_map(pk, 10);
	proto_write_kv_bool(pk, "enabled", models_respcache(l->models) != NULL);
	proto_write_kv_uint(pk, "entries", rs.entries);
	proto_write_kv_uint(pk, "bytes", rs.bytes);
	proto_write_kv_uint(pk, "max_bytes", rs.max_bytes);
	proto_write_kv_uint(pk, "hits", rs.hits);
	proto_write_kv_uint(pk, "misses", rs.misses);
	proto_write_kv_double(pk, "hit_rate", ratio(rs.hits, rs.hits + rs.misses));
	proto_write_kv_uint(pk, "stores", rs.stores);
	proto_write_kv_uint(pk, "evictions", rs.evictions);
	proto_write_kv_uint(pk, "merged", sum.merged);
	proto_write_cstr(pk, "prefix");
	proto_write_map(pk, 7);
	proto_write_kv_uint(pk, "lookups", sum.prefix_lookups);
	proto_write_kv_uint(pk, "hit_tokens", sum.prefix_hit_tokens);
	proto_write_kv_uint(pk, "prompt_tokens_evaluated", sum.tokens_prompt);
	proto_write_kv_double(pk, "hit_rate",
			      ratio(sum.prefix_hit_tokens, sum.prefix_hit_tokens + sum.tokens_prompt));
	proto_write_kv_uint(pk, "pages_cached", sum.prefix_pages_cached);
	proto_write_kv_uint(pk, "bytes_cached", pfx_bytes);
	proto_write_kv_uint(pk, "evictions", sum.prefix_evictions);
}

static void res_status_cache(loop *l, proto_writer *pk)
{
	sched_stats sum;
	resident_stats(l, &sum, NULL);
	const uint64_t merged = sum.merged;
	respcache_stats rs;
	respcache_get_stats(models_respcache(l->models), &rs);
	proto_write_kv_uint(pk, "requests_merged", merged);
	proto_write_kv_bool(pk, "cache_enabled", models_respcache(l->models) != NULL);
	proto_write_kv_uint(pk, "cache_entries", rs.entries);
	proto_write_kv_uint(pk, "cache_bytes", rs.bytes);
	proto_write_kv_uint(pk, "cache_max_bytes", rs.max_bytes);
	proto_write_kv_uint(pk, "cache_hits", rs.hits);
	proto_write_kv_uint(pk, "cache_misses", rs.misses);
	proto_write_kv_uint(pk, "cache_stores", rs.stores);
	proto_write_kv_uint(pk, "cache_evictions", rs.evictions);
	proto_write_kv_uint(pk, "cache_expired", rs.expired);
	proto_write_kv_uint(pk, "cache_corrupt", rs.corrupt);
	proto_write_kv_uint(pk, "cache_write_errors", rs.write_errors);
}

static void res_status(loop *l, proto_writer *pk)
{
	uint64_t steps = 0, tokens = 0, seqs = 0, notes[SCHED_NOTE_COUNT] = {0}, fair[3] = {0};
	uint64_t pfx[5] = {0}; /* prompt tokens evaluated, prefix lookups, hit tokens, cached pages, evictions */
	double step_ms = 0;
	for (int i = 0; i < models_count(l->models); i++) {
		sched_stats st;
		sched *s = models_sched(models_at(l->models, i));
		if (!s)
			continue; /* not resident: its counters went with it */
		sched_get_stats(s, &st);
		steps += st.steps;
		tokens += st.tokens_gen;
		seqs += st.step_seqs;
		step_ms += st.step_ms;
		for (int k = 0; k < SCHED_NOTE_COUNT; k++)
			notes[k] += st.notes[k];
		fair[0] += st.preemptions;
		fair[1] += st.agent_cap_waits;
		fair[2] += st.cancels_dropped;
		pfx[0] += st.tokens_prompt;
		pfx[1] += st.prefix_lookups;
		pfx[2] += st.prefix_hit_tokens;
		pfx[3] += (uint64_t)st.prefix_pages_cached;
		pfx[4] += st.prefix_evictions;
	}
	int agents = 0, in_flight = 0;
	for (int i = 0; i < l->n_slots; i++) {
		const conn *c = l->slots[i];
		if (c) {
			agents += c->hello;
			in_flight += c->in_flight;
		}
	}
	const double up = (clock_mono_ms() - l->t_start) / 1e3;
	proto_write_map(pk, STATUS_KEYS);
	proto_write_kv_int(pk, "pid", (int64_t)getpid());
	proto_write_kv_double(pk, "uptime_s", up);
	proto_write_kv_str(pk, "socket", l->cfg->socket_path);
	proto_write_kv_str(pk, "cpu_affinity", l->cfg->cpu_affinity ? l->cfg->cpu_affinity : "");
	proto_write_kv_int(pk, "models", models_count(l->models));
	proto_write_kv_int(pk, "agents", agents);
	proto_write_kv_int(pk, "connections", l->n_conns);
	proto_write_kv_int(pk, "requests_in_flight", in_flight);
	proto_write_kv_uint(pk, "requests_total", l->total_requests);
	proto_write_kv_uint(pk, "connections_total", l->total_conns);
	proto_write_kv_uint(pk, "protocol_errors", l->proto_errors);
	proto_write_kv_uint(pk, "steps", steps);
	proto_write_kv_uint(pk, "tokens", tokens);
	proto_write_kv_double(pk, "avg_batch", avg((double)seqs, steps));
	/* generation rate while stepping, and averaged over the uptime */
	proto_write_kv_double(pk, "tokens_per_s", step_ms > 0 ? (double)tokens / (step_ms / 1e3) : 0);
	proto_write_kv_double(pk, "tokens_per_s_uptime", up > 0 ? (double)tokens / up : 0);
	res_status_limits(l, pk);
	res_status_trust(l, pk);
	res_status_cache(l, pk);
	static const char *const note_keys[SCHED_NOTE_COUNT] = {
		"limit_max_queued", "limit_max_prompt_bytes", "limit_max_stop", "clamped_max_tokens",
		"clamped_prio", "clamped_deadline"};
	for (int k = 0; k < SCHED_NOTE_COUNT; k++)
		proto_write_kv_uint(pk, note_keys[k], notes[k]);
	proto_write_kv_uint(pk, "preemptions", fair[0]);
	proto_write_kv_uint(pk, "agent_running_cap_waits", fair[1]);
	proto_write_kv_uint(pk, "cancels_dropped", fair[2]);
	proto_write_kv_uint(pk, "tokens_prompt", pfx[0]);
	proto_write_kv_uint(pk, "prefix_lookups", pfx[1]);
	proto_write_kv_uint(pk, "prefix_hit_tokens", pfx[2]);
	proto_write_kv_uint(pk, "prefix_pages_cached", pfx[3]);
	proto_write_kv_uint(pk, "prefix_evictions", pfx[4]);
	admin_status_pressure(l, pk);
	http_status(l->http, pk);
}

/* The cache manager's view of a model (broker/models.h, docs/models.md). */
static void res_model_cache(loop *l, proto_writer *pk, models_entry *e)
{
	models_view v;
	models_get_view(l->models, e, &v);
	const double now = catalog_now();
	proto_write_kv_str(pk, "state", v.state);
	proto_write_kv_bool(pk, "resident", models_sched(e) != NULL);
	proto_write_kv_uint(pk, "bytes", v.bytes);
	proto_write_kv_uint(pk, "kv_bytes", models_sched(e) ? e->kv_bytes : 0);
	proto_write_kv_bool(pk, "pinned", v.pinned);
	proto_write_kv_double(pk, "score", v.score.score);
	proto_write_kv_double(pk, "score_recency", v.score.recency);
	proto_write_kv_double(pk, "score_frequency", v.score.frequency);
	proto_write_kv_double(pk, "score_cost", v.score.cost);
	proto_write_kv_double(pk, "score_affinity", v.score.affinity);
	proto_write_kv_uint(pk, "uses", v.rec.uses);
	proto_write_kv_uint(pk, "loads", e->n_loads);
	proto_write_kv_uint(pk, "evictions", e->n_evictions);
	proto_write_kv_uint(pk, "catalog_loads", v.rec.loads);
	proto_write_kv_double(pk, "last_use_s_ago", v.rec.last_use > 0 ? now - v.rec.last_use : -1);
	proto_write_kv_int(pk, "pending", v.pending);
	proto_write_kv_str(pk, "load_error", !strcmp(v.state, "unloaded") || !strcmp(v.state, "waiting")
						     ? e->load_err : "");
	proto_write_kv_double(pk, "reload_ms_per_mib",
			      v.rec.bytes ? v.rec.load_ms / ((double)v.rec.bytes / (1 << 20)) : 0);
	proto_write_cstr(pk, "holders"); /* pids mapping its image besides herdd */
	proto_write_array(pk, (uint32_t)v.n_holders);
	for (int k = 0; k < v.n_holders; k++)
		proto_write_int(pk, v.holders[k]);
	/* a model an agent shared (herd_model_share): who, and with whom */
	proto_write_kv_bool(pk, "shared", e->shared);
	proto_write_kv_str(pk, "owner", e->shared ? e->share_owner : "");
	proto_write_kv_int(pk, "owner_uid", e->shared ? (int64_t)e->owner_uid : -1);
	proto_write_cstr(pk, "targets");
	proto_write_array(pk, (uint32_t)e->n_share_targets);
	for (int k = 0; k < e->n_share_targets; k++)
		proto_write_cstr(pk, e->share_targets[k]);
}

static void res_models(loop *l, proto_writer *pk)
{
	const int n = models_count(l->models);
	proto_write_array(pk, (uint32_t)n);
	for (int i = 0; i < n; i++) {
		models_entry *e = models_at(l->models, i);
		sched_stats st;
		memset(&st, 0, sizeof(st));
		sched *s = models_sched(e);
		if (s)
			sched_get_stats(s, &st);
		const llama_hparams zero = {0};
		const llama_hparams *hp = s ? &e->model->hp : &zero;
		proto_write_map(pk, MODEL_KEYS);
		res_model_cache(l, pk, e);
		proto_write_kv_str(pk, "name", e->name);
		proto_write_kv_str(pk, "file", e->file);
		proto_write_kv_str(pk, "type", e->type ? e->type : "");
		/* the residency's fields are the loader's while it is not resident */
		proto_write_kv_str(pk, "segment", s ? e->info.name : "");
		proto_write_kv_str(pk, "digest", s ? e->info.digest_hex : "");
		proto_write_kv_uint(pk, "image_bytes", s ? e->info.image_size : 0);
		proto_write_kv_str(pk, "weight_type", s ? e->info.weight_type : "");
		proto_write_kv_bool(pk, "adopted", s && e->adopted);
		proto_write_kv_double(pk, "load_ms", s ? e->load_ms : 0);
		proto_write_kv_int(pk, "n_vocab", hp->n_vocab);
		proto_write_kv_int(pk, "n_ctx", e->n_ctx);
		proto_write_kv_int(pk, "n_layer", hp->n_layer);
		proto_write_kv_int(pk, "n_embd", hp->n_embd);
		proto_write_kv_int(pk, "threads", s ? llama_ctx_n_threads(e->ctx) : 0);
		proto_write_kv_str(pk, "isa", s ? kern_isa_name(llama_ctx_isa(e->ctx)) : "");
		proto_write_kv_str(pk, "kv_type", s ? kern_type_name(llama_ctx_kv_type(e->ctx)) : "");
		proto_write_kv_int(pk, "running", st.running);
		proto_write_kv_int(pk, "waiting", st.waiting);
		proto_write_kv_int(pk, "paused", st.paused);
		proto_write_kv_uint(pk, "steps", st.steps);
		proto_write_kv_double(pk, "avg_batch", avg((double)st.step_seqs, st.steps));
		proto_write_kv_int(pk, "max_batch_seen", st.max_step_seqs);
		proto_write_kv_double(pk, "step_ms_avg", avg(st.step_ms, st.steps));
		proto_write_kv_uint(pk, "tokens_gen", st.tokens_gen);
		proto_write_kv_uint(pk, "tokens_prompt", st.tokens_prompt);
		proto_write_kv_uint(pk, "tokens_drafted", st.tokens_drafted);
		proto_write_kv_uint(pk, "tokens_accepted", st.tokens_accepted);
		proto_write_kv_uint(pk, "requests_done", st.requests_done);
		proto_write_kv_uint(pk, "requests_err", st.requests_err);
		proto_write_kv_uint(pk, "requests_cancelled", st.requests_cancelled);
		proto_write_kv_uint(pk, "preemptions", st.preemptions);
		proto_write_kv_int(pk, "kv_pages_total", st.kv_pages_total);
		proto_write_kv_int(pk, "kv_pages_free", st.kv_pages_free);
		proto_write_kv_int(pk, "kv_pages_limit", st.kv_pages_limit);
		proto_write_kv_int(pk, "kv_pages_trimmable", st.kv_pages_trimmable);
		proto_write_kv_uint(pk, "kv_pages_trimmed", st.kv_pages_trimmed);
		proto_write_kv_uint(pk, "kv_shrinks", st.kv_shrinks);
		proto_write_kv_uint(pk, "prefix_lookups", st.prefix_lookups);
		proto_write_kv_uint(pk, "prefix_hit_tokens", st.prefix_hit_tokens);
		proto_write_kv_int(pk, "prefix_pages_cached", st.prefix_pages_cached);
		proto_write_kv_uint(pk, "prefix_evictions", st.prefix_evictions);
		proto_write_kv_double(pk, "queue_ms_avg", avg(st.queue.sum_ms, st.queue.n));
		proto_write_kv_double(pk, "first_token_ms_avg", avg(st.first.sum_ms, st.first.n));
		proto_write_kv_double(pk, "total_ms_avg", avg(st.total.sum_ms, st.total.n));
		proto_write_kv_double(pk, "tpot_ms_avg", avg(st.tpot.sum_ms, st.tpot.n));
		proto_write_kv_double(pk, "step_gap_ms_p95", st.step_gap_p95_ms);
		proto_write_kv_double(pk, "step_budget_ms", st.step_budget_ms);
	}
}

/* ---- batch metrics --------------------------------------------------------- */

/* One latency histogram: count, mean, percentiles and its non-empty buckets
 * as [upper bound ms, count] pairs (the last bound is the maximum). */
static void res_lat(proto_writer *pk, const char *key, const sched_lat *l)
{
	proto_write_cstr(pk, key);
	proto_write_map(pk, BATCH_LAT_KEYS);
	proto_write_kv_uint(pk, "n", l->n);
	proto_write_kv_double(pk, "sum", l->sum_ms);
	proto_write_kv_double(pk, "avg", avg(l->sum_ms, l->n));
	proto_write_kv_double(pk, "p50", sched_lat_pct(l, 0.50));
	proto_write_kv_double(pk, "p95", sched_lat_pct(l, 0.95));
	proto_write_kv_double(pk, "p99", sched_lat_pct(l, 0.99));
	proto_write_kv_double(pk, "max", l->max_ms);
	uint32_t nb = 0;
	for (int b = 0; b < SCHED_LAT_N; b++)
		nb += l->hist[b] != 0;
	proto_write_cstr(pk, "buckets");
	proto_write_array(pk, nb);
	for (int b = 0; b < SCHED_LAT_N; b++) {
		if (!l->hist[b])
			continue;
		double lo, hi;
		sched_lat_bucket(b, &lo, &hi);
		proto_write_array(pk, 2);
		proto_write_double(pk, hi < l->max_ms ? hi : l->max_ms);
		proto_write_uint(pk, l->hist[b]);
	}
	proto_write_kv_double(pk, "bucket_rel_err", 1.0 / SCHED_LAT_SUB);
}

/* The counters and histograms of one period (since start, or recent). */
static void res_period(proto_writer *pk, const char *key, const sched_stats *st, double span_s)
{
	proto_write_cstr(pk, key);
	proto_write_map(pk, BATCH_PERIOD_KEYS);
	proto_write_kv_double(pk, "span_s", span_s);
	proto_write_kv_uint(pk, "steps", st->steps);
	proto_write_kv_uint(pk, "step_seqs", st->step_seqs);
	proto_write_kv_double(pk, "avg_batch", avg((double)st->step_seqs, st->steps));
	proto_write_kv_int(pk, "max_batch_seen", st->max_step_seqs);
	proto_write_kv_double(pk, "step_ms_avg", avg(st->step_ms, st->steps));
	proto_write_kv_double(pk, "busy_frac", span_s > 0 ? st->step_ms / (span_s * 1e3) : 0);
	proto_write_kv_uint(pk, "tokens_gen", st->tokens_gen);
	proto_write_kv_uint(pk, "tokens_prompt", st->tokens_prompt);
	proto_write_kv_double(pk, "gen_tok_s", span_s > 0 ? (double)st->tokens_gen / span_s : 0);
	proto_write_kv_double(pk, "requests_s",
			      span_s > 0 ? (double)st->requests_done / span_s : 0);
	proto_write_kv_uint(pk, "requests_done", st->requests_done);
	proto_write_kv_uint(pk, "requests_err", st->requests_err);
	proto_write_kv_uint(pk, "requests_cancelled", st->requests_cancelled);
	proto_write_kv_uint(pk, "preemptions", st->preemptions);
	proto_write_cstr(pk, "step_hist"); /* [k]: steps that ran k sequences (last: k or more) */
	proto_write_array(pk, SCHED_HIST_N);
	for (int k = 0; k < SCHED_HIST_N; k++)
		proto_write_uint(pk, st->step_hist[k]);
	res_lat(pk, "ttft_ms", &st->first);
	res_lat(pk, "tpot_ms", &st->tpot);
	res_lat(pk, "queue_ms", &st->queue);
	res_lat(pk, "latency_ms", &st->total);
	proto_write_cstr(pk, "requests_by_prio");
	proto_write_array(pk, (uint32_t)st->prio.n);
	for (int i = 0; i < st->prio.n; i++) {
		proto_write_map(pk, 2);
		proto_write_kv_int(pk, "prio", st->prio.prio[i]);
		proto_write_kv_uint(pk, "requests", st->prio.requests[i]);
	}
	proto_write_kv_uint(pk, "requests_other_prio", st->prio.other);
}

/* `batch`: per model, the queues now and the batch metrics since the start
 * and over about the last SCHED_WIN_S seconds. */
static int res_batch(loop *l, proto_writer *pk, char *err, size_t errlen)
{
	sched_stats *st = malloc(2 * sizeof(*st)), *rec = st + 1;
	if (!st) {
		snprintf(err, errlen, "batch: out of memory");
		return -ENOMEM;
	}
	const double up = (clock_mono_ms() - l->t_start) / 1e3;
	const int n = models_count(l->models);
	proto_write_map(pk, BATCH_KEYS);
	proto_write_kv_double(pk, "uptime_s", up);
	proto_write_kv_int(pk, "window_s", SCHED_WIN_S);
	proto_write_cstr(pk, "models");
	proto_write_array(pk, (uint32_t)n);
	for (int i = 0; i < n; i++) {
		const models_entry *e = models_at(l->models, i);
		double span = 0;
		memset(rec, 0, sizeof(*rec));
		memset(st, 0, sizeof(*st));
		if (models_sched(e)) { /* not resident: nothing to show */
			sched_get_recent(models_sched(e), rec, &span);
			sched_get_stats(models_sched(e), st);
		}
		proto_write_map(pk, BATCH_MODEL_KEYS);
		proto_write_kv_str(pk, "name", e->name);
		proto_write_kv_int(pk, "waiting", st->waiting);
		proto_write_kv_int(pk, "running", st->running);
		proto_write_kv_int(pk, "paused", st->paused);
		proto_write_kv_int(pk, "kv_pages_total", st->kv_pages_total);
		proto_write_kv_int(pk, "kv_pages_free", st->kv_pages_free);
		proto_write_kv_int(pk, "kv_pages_reserved", st->kv_pages_reserved);
		res_period(pk, "total", st, up);
		res_period(pk, "recent", rec, span);
	}
	free(st);
	return 0;
}

/* The cache manager's counters and the images of evicted models that
 * other processes still map (herdctl models, top). */
static void res_cache(loop *l, proto_writer *pk)
{
	models_cache_stats st;
	models_get_cache_stats(l->models, &st);
	models_held held[32];
	int nh = models_get_held(l->models, held, 32);
	nh = nh < 32 ? nh : 32;
	proto_write_map(pk, CACHE_KEYS);
	res_cache_answers(l, pk);
	proto_write_kv_uint(pk, "budget_bytes", st.budget_bytes);
	proto_write_kv_uint(pk, "used_bytes", st.used_bytes);
	proto_write_kv_uint(pk, "held_bytes", st.held_bytes);
	proto_write_kv_uint(pk, "loads", st.loads);
	proto_write_kv_uint(pk, "demand_loads", st.demand_loads);
	proto_write_kv_uint(pk, "load_failures", st.load_failures);
	proto_write_kv_uint(pk, "evictions", st.evictions);
	proto_write_kv_uint(pk, "predictions", st.predictions);
	proto_write_kv_uint(pk, "prediction_hits", st.prediction_hits);
	proto_write_kv_uint(pk, "preloads", st.preloads);
	proto_write_kv_uint(pk, "preload_hits", st.preload_hits);
	proto_write_kv_uint(pk, "preload_wasted", st.preload_wasted);
	proto_write_kv_uint(pk, "preload_evictions", st.preload_evictions);
	proto_write_kv_double(pk, "preload_min_evict_confidence", st.preload_min_evict_conf);
	proto_write_kv_double(pk, "preload_confidence", l->cfg->preload_confidence);
	proto_write_kv_uint(pk, "switch_misses", st.switch_misses);
	proto_write_kv_bool(pk, "refusing_loads", st.refusing);
	proto_write_kv_uint(pk, "catalog_commits", st.catalog.commits);
	proto_write_kv_uint(pk, "catalog_updates", st.catalog.applied);
	proto_write_kv_uint(pk, "catalog_dropped", st.catalog.dropped);
	proto_write_kv_int(pk, "catalog_queued", st.catalog.queued);
	proto_write_cstr(pk, "held");
	proto_write_array(pk, (uint32_t)nh);
	for (int i = 0; i < nh; i++) {
		proto_write_map(pk, 4);
		proto_write_kv_str(pk, "segment", held[i].segment);
		proto_write_kv_str(pk, "model", held[i].model);
		proto_write_kv_uint(pk, "bytes", held[i].bytes);
		proto_write_cstr(pk, "pids");
		proto_write_array(pk, (uint32_t)held[i].n_pids);
		for (int k = 0; k < held[i].n_pids; k++)
			proto_write_int(pk, held[i].pids[k]);
	}
}

/* load / preload / evict / pin / unpin MODEL. */
static int res_model_op(loop *l, proto_writer *pk, const char *cmd, const proto_admin *a,
			char *err, size_t errlen)
{
	if (a->n_args != 1) {
		snprintf(err, errlen, "%s: which model? (%s MODEL)", cmd, cmd);
		return HERD_E_INVAL;
	}
	models_entry *e = models_find(l->models, a->args[0].ptr ? a->args[0].ptr : "", a->args[0].len);
	if (!e) {
		snprintf(err, errlen, "%s: unknown model '%.*s'", cmd, HERD_QUOTE_LEN(a->args[0].len),
			 a->args[0].ptr ? a->args[0].ptr : "");
		return HERD_E_MISSING;
	}
	int rc = models_admin(l->models, e, cmd, err, errlen);
	if (rc)
		return rc;
	blog_msg(l->log, BLOG_INFO, "admin: %s %s", cmd, e->name);
	models_view v;
	models_get_view(l->models, e, &v);
	proto_write_map(pk, 3);
	proto_write_kv_str(pk, "model", e->name);
	proto_write_kv_str(pk, "state", v.state);
	proto_write_kv_bool(pk, "pinned", v.pinned);
	return 0;
}

typedef struct seg_list {
	shm_image_info *v;
	int n, cap;
} seg_list;

static int seg_collect(void *user, const shm_image_info *info)
{
	seg_list *s = user;
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		shm_image_info *nv = realloc(s->v, sizeof(*nv) * (size_t)cap);
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = *info;
	return 0;
}

static int res_segments(loop *l, proto_writer *pk, char *err, size_t errlen)
{
	seg_list s = {0};
	int rc = shm_image_list(SHM_LIST_ATTACH, seg_collect, &s);
	if (rc) {
		snprintf(err, errlen, "cannot list segments: %s", herd_strerror(rc));
		free(s.v);
		return rc;
	}
	proto_write_array(pk, (uint32_t)s.n);
	for (int i = 0; i < s.n; i++) {
		const shm_image_info *in = &s.v[i];
		proto_write_map(pk, SEGMENT_KEYS);
		proto_write_kv_str(pk, "name", in->name);
		proto_write_kv_str(pk, "model", in->model);
		proto_write_kv_uint(pk, "size", in->image_size);
		proto_write_kv_str(pk, "digest", in->digest_hex);
		proto_write_kv_int(pk, "attached", in->n_attached);
		proto_write_kv_bool(pk, "valid", in->valid);
		proto_write_kv_bool(pk, "loaded", models_owns_segment(l->models, in->name));
		proto_write_kv_str(pk, "weight_type", in->weight_type);
		proto_write_kv_uint(pk, "mode", in->mode);
		proto_write_kv_uint(pk, "uid", in->uid);
		proto_write_kv_str(pk, "problem", in->valid ? "" : in->problem);
	}
	free(s.v);
	return 0;
}

static void res_agents(loop *l, proto_writer *pk)
{
	int n = 0;
	for (int i = 0; i < l->n_slots; i++)
		n += l->slots[i] != NULL;
	proto_write_array(pk, (uint32_t)n);
	const double now = clock_mono_ms();
	for (int i = 0; i < l->n_slots; i++) {
		const conn *c = l->slots[i];
		if (!c)
			continue;
		proto_write_map(pk, AGENT_KEYS);
		proto_write_kv_uint(pk, "id", c->agent);
		proto_write_kv_str(pk, "name", c->name);
		proto_write_kv_int(pk, "pid", c->pid);
		proto_write_kv_int(pk, "uid", (int64_t)c->uid);
		proto_write_kv_uint(pk, "requests", c->n_requests);
		proto_write_kv_uint(pk, "tokens", c->n_tokens);
		proto_write_kv_int(pk, "in_flight", c->in_flight);
		proto_write_kv_int(pk, "prio", c->prio);
		proto_write_kv_double(pk, "connected_s", (now - c->t_connect) / 1e3);
	}
}

static int res_rm(loop *l, proto_writer *pk, const proto_admin *a, char *err, size_t errlen)
{
	const char *seg = NULL;
	char name[SHM_IMAGE_NAME_MAX + 1];
	int force = 0;
	for (size_t i = 0; i < a->n_args; i++) {
		if (proto_str_eq(a->args[i], "--force") || proto_str_eq(a->args[i], "-f")) {
			force = 1;
		} else if (!seg && a->args[i].len > 0 && a->args[i].len < sizeof(name)) {
			memcpy(name, a->args[i].ptr, a->args[i].len);
			name[a->args[i].len] = 0;
			seg = name;
		} else {
			snprintf(err, errlen, "rm: unexpected argument '%.*s'",
				 HERD_QUOTE_LEN(a->args[i].len), a->args[i].ptr);
			return HERD_E_INVAL;
		}
	}
	if (!seg) {
		snprintf(err, errlen, "rm: which segment? (rm SEGMENT [--force])");
		return HERD_E_INVAL;
	}
	if (models_owns_segment(l->models, seg) && !force) {
		snprintf(err, errlen,
			 "rm: %s is the image of a loaded model; agents may be using it (--force removes "
			 "the name anyway; mappings stay valid)",
			 seg);
		return -EBUSY;
	}
	int rc = shm_image_remove(seg);
	if (rc) {
		snprintf(err, errlen, "rm %s: %s", seg, herd_strerror(rc));
		return rc;
	}
	blog_msg(l->log, BLOG_INFO, "admin: removed segment %s", seg);
	proto_write_map(pk, 1);
	proto_write_kv_str(pk, "removed", seg);
	return 0;
}

/* Writes the result of cmd into w. Returns 0, or an error with a message
 * in err (then the frame is abandoned and an err frame sent instead). Sets
 * *stop for `shutdown`. */
static int run_cmd(loop *l, proto_writer *w, const char *cmd, const proto_admin *a, int *stop,
		   char *err, size_t errlen)
{
	if (!strcmp(cmd, "status"))
		res_status(l, w);
	else if (!strcmp(cmd, "models"))
		res_models(l, w);
	else if (!strcmp(cmd, "cache"))
		res_cache(l, w);
	else if (!strcmp(cmd, "load") || !strcmp(cmd, "preload") || !strcmp(cmd, "evict") ||
		 !strcmp(cmd, "pin") || !strcmp(cmd, "unpin"))
		return res_model_op(l, w, cmd, a, err, errlen);
	else if (!strcmp(cmd, "segments"))
		return res_segments(l, w, err, errlen);
	else if (!strcmp(cmd, "agents"))
		res_agents(l, w);
	else if (!strcmp(cmd, "pressure"))
		admin_res_pressure(l, w);
	else if (!strcmp(cmd, "batch"))
		return res_batch(l, w, err, errlen);
	else if (!strcmp(cmd, "rm"))
		return res_rm(l, w, a, err, errlen);
	else if (!strcmp(cmd, "shutdown")) {
		proto_write_map(w, 1);
		proto_write_kv_bool(w, "shutting_down", 1);
		*stop = 1;
	} else {
		snprintf(err, errlen,
			 "unknown admin command '%s' (status, models, cache, load, preload, evict, pin, "
			 "unpin, segments, agents, batch, pressure, rm, shutdown)", cmd);
		return HERD_E_INVAL;
	}
	return 0;
}

int admin_query(loop *l, const char *cmd, proto_buf *b, proto_msg *out, char *err, size_t errlen)
{
	static const char *const ro[] = {"status", "models", "cache", "agents", "batch", "pressure"};
	int ok = 0;
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++)
		ok |= !strcmp(cmd, ro[i]);
	proto_msg_init(out);
	if (!ok)
		return herd_errf(err, errlen, HERD_E_INVAL, "'%s' is not a read-only admin command", cmd);
	proto_writer w;
	size_t mark;
	int stop = 0, rc = proto_admin_ok_begin(&w, b, cmd, &mark);
	if (!rc)
		rc = run_cmd(l, &w, cmd, NULL, &stop, err, errlen);
	if (!rc)
		rc = proto_writer_error(&w);
	if (!rc)
		rc = proto_frame_end(b, mark);
	if (rc)
		return rc;
	return proto_decode(b->data + mark + PROTO_HDR_SIZE, b->len - mark - PROTO_HDR_SIZE, out, err,
			    errlen);
}

int admin_frame(loop *l, conn *c, const proto_msg *m)
{
	const proto_admin *a = &m->admin;
	if (!admin_allowed(l, c)) {
		blog_msg(l->log, BLOG_WARN, "admin '%.*s' refused for uid %d pid %d",
			 HERD_QUOTE_LEN(a->cmd.len), a->cmd.ptr, (int)c->uid, (int)c->pid);
		conn_queue_err(c, 0, 0, -EPERM, "admin commands need the broker's uid or group '%s'",
			       l->cfg->admin_group ? l->cfg->admin_group : "(none configured)");
		return 0;
	}
	char cmd[ADMIN_CMD_MAX];
	size_t n = a->cmd.len < sizeof(cmd) - 1 ? a->cmd.len : sizeof(cmd) - 1;
	memcpy(cmd, a->cmd.ptr ? a->cmd.ptr : "", n);
	cmd[n] = 0;
	proto_buf *b = conn_outbuf(c);
	proto_writer w;
	size_t mark;
	if (!b || proto_admin_ok_begin(&w, b, cmd, &mark)) {
		conn_close_soon(c);
		return 0;
	}
	char err[512] = "";
	int stop = 0;
	int rc = run_cmd(l, &w, cmd, a, &stop, err, sizeof(err));
	if (!rc)
		rc = proto_writer_error(&w);
	if (!rc)
		rc = proto_frame_end(b, mark);
	if (rc) {
		proto_frame_abort(b, mark);
		conn_queue_err(c, 0, 0, rc, "%s", err[0] ? err : herd_strerror(rc));
		return 0;
	}
	if (!stop)
		return 0;
	blog_msg(l->log, BLOG_INFO, "admin: shutdown requested by uid %d pid %d", (int)c->uid,
		 (int)c->pid);
	return SESSION_SHUTDOWN;
}
