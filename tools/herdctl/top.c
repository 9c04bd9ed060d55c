/* herdctl top (top.h). */
#include "top.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"

typedef struct top_sample {
	json_object *agents, *models, *cache, *pressure;
	struct timespec t;
} top_sample;

static void sample_free(top_sample *s)
{
	json_object_put(s->agents);
	json_object_put(s->models);
	json_object_put(s->cache);
	json_object_put(s->pressure);
	memset(s, 0, sizeof(*s));
}

static int sample(adm_client *a, top_sample *s)
{
	static const char *const cmds[4] = {"agents", "models", "cache", "pressure"};
	json_object **dst[4] = {&s->agents, &s->models, &s->cache, &s->pressure};
	char err[512] = "";
	clock_gettime(CLOCK_MONOTONIC, &s->t);
	for (int i = 0; i < 4; i++) {
		int rc = adm_call(a, cmds[i], NULL, 0, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "herdctl: top: %s\n", err[0] ? err : herd_strerror(rc));
			return 1;
		}
		*dst[i] = value_to_json(a->msg.admin_ok.result);
	}
	return 0;
}

static int64_t get_i(json_object *o, const char *k)
{
	json_object *v = NULL;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

/* Tokens of agent id in the previous sample (0 when it was not there). */
static int64_t prev_tokens(json_object *prev, int64_t id)
{
	for (size_t i = 0; prev && i < json_object_array_length(prev); i++) {
		json_object *o = json_object_array_get_idx(prev, i);
		if (get_i(o, "id") == id)
			return get_i(o, "tokens");
	}
	return -1;
}

/* The eBPF faults on images of pid (the broker registers the agents that
 * attached an image), or -1 when it has no entry (eBPF off, not attached). */
static int64_t image_faults(json_object *pressure, int64_t pid)
{
	json_object *procs = NULL;
	if (!json_object_object_get_ex(pressure, "bpf_procs", &procs))
		return -1;
	for (size_t i = 0; i < json_object_array_length(procs); i++) {
		json_object *o = json_object_array_get_idx(procs, i);
		if (get_i(o, "pid") == pid)
			return get_i(o, "image_faults");
	}
	return -1;
}

/* The proportional set size of pid in KiB (/proc/PID/smaps_rollup), or -1
 * when it cannot be read (another user's process, gone). */
static int64_t pss_kib(int64_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%" PRId64 "/smaps_rollup", pid);
	FILE *f = fopen(path, "re");
	long long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %lld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

/* Adds tokens_per_s (from prev, dt seconds before), image_faults and
 * pss_kib to every agent of cur; drops herdctl's own connection. */
static void add_rates(json_object *cur, json_object *prev, double dt, json_object *pressure)
{
	for (size_t i = json_object_array_length(cur); i-- > 0;) {
		json_object *o = json_object_array_get_idx(cur, i);
		if (get_i(o, "pid") == (int64_t)getpid()) {
			json_object_array_del_idx(cur, i, 1);
			continue;
		}
		const int64_t p = prev_tokens(prev, get_i(o, "id"));
		const double r = p >= 0 && dt > 0 ? (double)(get_i(o, "tokens") - p) / dt : 0;
		json_object_object_add(o, "tokens_per_s", json_object_new_double(r));
		json_object_object_add(o, "image_faults",
				       json_object_new_int64(image_faults(pressure, get_i(o, "pid"))));
		json_object_object_add(o, "pss_kib", json_object_new_int64(pss_kib(get_i(o, "pid"))));
	}
}

/* One line: PSI now, the eBPF stalls and OOM kills, the shedding level. */
static void print_pressure(json_object *p)
{
	json_object *v = NULL, *g = NULL;
	if (!json_object_object_get_ex(p, "enabled", &v) || !json_object_get_boolean(v)) {
		printf("pressure: off\n\n");
		return;
	}
	json_object *some = json_object_object_get(p, "some"), *full = json_object_object_get(p, "full");
	printf("pressure: some avg10 %.2f%%  full avg10 %.2f%%  level %" PRId64 "%s",
	       json_object_get_double(json_object_object_get(some, "avg10")),
	       json_object_get_double(json_object_object_get(full, "avg10")), get_i(p, "level"),
	       get_i(p, "refusing") ? "  REFUSING" : "");
	if (json_object_object_get_ex(p, "bpf_global", &g) && get_i(p, "bpf_on"))
		printf("  reclaim stalls %.1f ms  OOM kills %" PRId64,
		       json_object_get_double(json_object_object_get(g, "reclaim_ms")),
		       get_i(g, "oom_kills"));
	printf("\n\n");
}

static void print_view(const top_sample *s, int once)
{
	if (!once)
		printf("\033[H\033[2J"); /* a terminal redraw, not for --once */
	printf("budget %.0f MiB  used %.0f MiB  held %.0f MiB  loads %" PRId64 "  evictions %" PRId64
	       "  preloads %" PRId64 " (hits %" PRId64 ", wasted %" PRId64 ")\n\n",
	       (double)get_i(s->cache, "budget_bytes") / (1 << 20),
	       (double)get_i(s->cache, "used_bytes") / (1 << 20),
	       (double)get_i(s->cache, "held_bytes") / (1 << 20), get_i(s->cache, "loads"),
	       get_i(s->cache, "evictions"), get_i(s->cache, "preloads"),
	       get_i(s->cache, "preload_hits"), get_i(s->cache, "preload_wasted"));
	print_pressure(s->pressure);
	printf("%-20s %-10s %10s %8s %8s %8s %s\n", "MODEL", "STATE", "MIB", "RUNNING", "WAITING",
	       "PENDING", "HOLDERS");
	for (size_t i = 0; i < json_object_array_length(s->models); i++) {
		json_object *m = json_object_array_get_idx(s->models, i);
		printf("%-20s %-10s %10.1f %8" PRId64 " %8" PRId64 " %8" PRId64 " %s\n",
		       json_object_get_string(json_object_object_get(m, "name")),
		       json_object_get_string(json_object_object_get(m, "state")),
		       (double)get_i(m, "bytes") / (1 << 20), get_i(m, "running"), get_i(m, "waiting"),
		       get_i(m, "pending"), json_object_get_string(json_object_object_get(m, "holders")));
	}
	printf("\n%-8s %-20s %8s %10s %10s %10s %12s %10s\n", "ID", "AGENT", "PID", "REQUESTS",
	       "TOKENS", "TOK/S", "IMG_FAULTS", "PSS_MIB");
	for (size_t i = 0; i < json_object_array_length(s->agents); i++) {
		json_object *o = json_object_array_get_idx(s->agents, i);
		char faults[24] = "-", pss[24] = "-";
		if (get_i(o, "image_faults") >= 0)
			snprintf(faults, sizeof(faults), "%" PRId64, get_i(o, "image_faults"));
		if (get_i(o, "pss_kib") >= 0)
			snprintf(pss, sizeof(pss), "%.1f", (double)get_i(o, "pss_kib") / 1024);
		printf("%-8" PRId64 " %-20s %8" PRId64 " %10" PRId64 " %10" PRId64 " %10.1f %12s %10s\n",
		       get_i(o, "id"), json_object_get_string(json_object_object_get(o, "name")),
		       get_i(o, "pid"), get_i(o, "requests"), get_i(o, "tokens"),
		       json_object_get_double(json_object_object_get(o, "tokens_per_s")), faults, pss);
	}
	fflush(stdout);
}

static void print_json(top_sample *s)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "agents", json_object_get(s->agents));
	json_object_object_add(o, "models", json_object_get(s->models));
	json_object_object_add(o, "cache", json_object_get(s->cache));
	json_object_object_add(o, "pressure", json_object_get(s->pressure));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							   JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(o);
}

int herdctl_top(adm_client *a, int json, int once)
{
	top_sample prev = {0}, cur = {0};
	if (sample(a, &prev))
		return 1;
	for (;;) {
		sleep(1);
		if (sample(a, &cur)) {
			sample_free(&prev);
			sample_free(&cur);
			return 1;
		}
		const double dt = (double)(cur.t.tv_sec - prev.t.tv_sec) +
				  (double)(cur.t.tv_nsec - prev.t.tv_nsec) / 1e9;
		add_rates(cur.agents, prev.agents, dt, cur.pressure);
		if (json)
			print_json(&cur);
		else
			print_view(&cur, once);
		sample_free(&prev);
		prev = cur;
		memset(&cur, 0, sizeof(cur));
		if (once)
			break;
	}
	sample_free(&prev);
	return 0;
}
