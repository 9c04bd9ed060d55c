/* herdctl: the herd admin tool, in the spirit of ipcs / ipcrm.
 *
 *   herdctl [--socket PATH] [--json] status|models|cache|segments|agents|batch|pressure|
 *           rm SEGMENT [--force]|
 *           load|preload|evict|pin|unpin MODEL|top [--once]|shutdown
 *
 * Talks to herdd over its socket (default: $HERD_SOCKET, else
 * $XDG_RUNTIME_DIR/herd/herd.sock, else /run/herd/herd.sock) with `admin`
 * frames, which the broker accepts only from its own uid, root, or members of
 * its configured admin group (SO_PEERCRED). Prints tables, or with --json
 * the broker's result as one JSON value on one line. `status` prints every
 * key the broker sends, among them the counters of its limits
 * (limit_send_queue_paused, limit_send_queue_cutoffs, limit_frame_timeouts,
 * limit_idle_timeouts, limit_refused_max_connections, limit_refused_per_uid,
 * limit_accept_backoffs, sighup_ignored) and the memory-pressure summary
 * (pressure_*). `pressure` prints the PSI source and values, the shedding
 * actions in order, the eBPF counters per process and the last actions run
 * with the PSI values that triggered them (docs/protocol.md).
 *
 * Without a running broker, `segments` lists the images in /dev/shm itself
 * (shm_image_list: header checks and attach counts from /proc/<pid>/maps of
 * the processes this user may inspect) and says so on stderr, and `rm`
 * removes the named object itself (shm_unlink; processes mapping it keep
 * their mapping). Every other command needs the broker: "no broker at PATH".
 *
 * Exit status: 0 success, 1 failure (no broker, permission denied, the
 * broker's error), 2 usage error. */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "admin_client.h"
#include "top.h"
#include "broker/json_value.h"
#include "herd/error.h"
#include "herd/herd.h"
#include "shm/image.h"

/* ---- result -> JSON: value_to_json (broker/json_value.h) -------------------- */

/* ---- tables --------------------------------------------------------------- */

typedef enum col_kind { C_STR, C_INT, C_SIZE, C_BOOL, C_OCT, C_DIG16, C_F1, C_F2, C_USER } col_kind;

typedef struct col {
	const char *head;
	const char *key;
	col_kind kind;
} col;

static void fmt_size(char *b, size_t n, uint64_t v)
{
	if (v >= (1ull << 30))
		snprintf(b, n, "%.2fG", (double)v / (1ull << 30));
	else if (v >= (1ull << 20))
		snprintf(b, n, "%.1fM", (double)v / (1ull << 20));
	else if (v >= (1ull << 10))
		snprintf(b, n, "%.1fK", (double)v / (1ull << 10));
	else
		snprintf(b, n, "%" PRIu64, v);
}

static void fmt_cell(char *b, size_t n, json_object *row, const col *c)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(row, c->key, &v) || !v) {
		snprintf(b, n, "-");
		return;
	}
	switch (c->kind) {
	case C_STR:
		snprintf(b, n, "%s", json_object_get_string(v)[0] ? json_object_get_string(v) : "-");
		break;
	case C_INT:
		snprintf(b, n, "%" PRId64, json_object_get_int64(v));
		break;
	case C_SIZE:
		fmt_size(b, n, (uint64_t)json_object_get_int64(v));
		break;
	case C_BOOL:
		snprintf(b, n, "%s", json_object_get_boolean(v) ? "yes" : "no");
		break;
	case C_OCT:
		snprintf(b, n, "%04" PRIo64, (uint64_t)json_object_get_int64(v));
		break;
	case C_DIG16:
		snprintf(b, n, "%.16s", json_object_get_string(v));
		break;
	case C_F1:
		snprintf(b, n, "%.1f", json_object_get_double(v));
		break;
	case C_F2:
		snprintf(b, n, "%.2f", json_object_get_double(v));
		break;
	case C_USER: {
		const uid_t uid = (uid_t)json_object_get_int64(v);
		struct passwd pw, *res = NULL;
		char buf[1024];
		if (!getpwuid_r(uid, &pw, buf, sizeof(buf), &res) && res)
			snprintf(b, n, "%s", res->pw_name);
		else
			snprintf(b, n, "%u", (unsigned)uid);
		break;
	}
	}
}

#define CELL_MAX 96

/* Prints an array of objects as an aligned table (the header even when the
 * array is empty). */
static void print_table(json_object *arr, const col *cols, int n_cols)
{
	const size_t rows = json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
	char(*cell)[CELL_MAX] = calloc((rows + 1) * (size_t)n_cols, CELL_MAX);
	int *w = calloc((size_t)n_cols, sizeof(int));
	if (!cell || !w) {
		free(cell);
		free(w);
		fprintf(stderr, "herdctl: out of memory\n");
		return;
	}
	for (int c = 0; c < n_cols; c++)
		snprintf(cell[c], CELL_MAX, "%s", cols[c].head);
	for (size_t r = 0; r < rows; r++)
		for (int c = 0; c < n_cols; c++)
			fmt_cell(cell[(r + 1) * (size_t)n_cols + (size_t)c], CELL_MAX,
				 json_object_array_get_idx(arr, r), &cols[c]);
	for (size_t r = 0; r <= rows; r++)
		for (int c = 0; c < n_cols; c++) {
			int l = (int)strlen(cell[r * (size_t)n_cols + (size_t)c]);
			if (l > w[c])
				w[c] = l;
		}
	for (size_t r = 0; r <= rows; r++) {
		for (int c = 0; c < n_cols; c++) {
			const char *s = cell[r * (size_t)n_cols + (size_t)c];
			if (c == n_cols - 1)
				printf("%s\n", s);
			else
				printf("%-*s  ", w[c], s);
		}
	}
	free(cell);
	free(w);
}

static const col models_cols[] = {
	{"NAME", "name", C_STR},           {"STATE", "state", C_STR},
	{"BYTES", "bytes", C_SIZE},        {"PINNED", "pinned", C_BOOL},
	{"SCORE", "score", C_F2},          {"RECENCY", "score_recency", C_F2},
	{"FREQ", "score_frequency", C_F2}, {"COST", "score_cost", C_F2},
	{"AFFINITY", "score_affinity", C_F2}, {"USES", "uses", C_INT},
	{"LOADS", "loads", C_INT},         {"RUNNING", "running", C_INT},
	{"WAITING", "waiting", C_INT},     {"PENDING", "pending", C_INT},
	{"TOKENS", "tokens_gen", C_INT},   {"HOLDERS", "holders", C_STR},
	{"OWNER", "owner", C_STR},         {"SHARED_WITH", "targets", C_STR},
	{"SEGMENT", "segment", C_STR},     {"ADOPTED", "adopted", C_BOOL},
};

static const col segments_cols[] = {
	{"SEGMENT", "name", C_STR},    {"MODEL", "model", C_STR},    {"SIZE", "size", C_SIZE},
	{"DIGEST", "digest", C_DIG16}, {"NATTCH", "attached", C_INT}, {"MODE", "mode", C_OCT},
	{"OWNER", "uid", C_USER},      {"LOADED", "loaded", C_BOOL},  {"VALID", "valid", C_BOOL},
	{"PROBLEM", "problem", C_STR},
};

static const col agents_cols[] = {
	{"ID", "id", C_INT},           {"NAME", "name", C_STR},         {"PID", "pid", C_INT},
	{"UID", "uid", C_USER},        {"REQUESTS", "requests", C_INT}, {"TOKENS", "tokens", C_INT},
	{"IN_FLIGHT", "in_flight", C_INT}, {"PRIO", "prio", C_INT},
	{"CONNECTED_S", "connected_s", C_F1},
};

static const col bpf_cols[] = {
	{"PID", "pid", C_INT},           {"FAULTS", "faults", C_INT},
	{"IMAGE_FAULTS", "image_faults", C_INT}, {"RECLAIM_MS", "reclaim_ms", C_F1},
	{"RECLAIMS", "reclaims", C_INT}, {"OOM_KILLS", "oom_kills", C_INT},
	{"IMAGE_MAPS", "image_ranges", C_INT},
};

static const col events_cols[] = {
	{"AGE_S", "age_s", C_F1},          {"ACTION", "action", C_STR},
	{"RESULT", "result", C_STR},       {"SOME10", "some_avg10", C_F2},
	{"SOME60", "some_avg60", C_F2},    {"FULL10", "full_avg10", C_F2},
	{"SOME_TOTAL_US", "some_total_us", C_INT}, {"WINDOW_US", "some_window_us", C_F1},
	{"STALL_MS/S", "stall_ms_per_s", C_F1}, {"WHAT", "msg", C_STR},
};

#define N_COLS(a) ((int)(sizeof(a) / sizeof(a[0])))

static json_object *get(json_object *o, const char *k)
{
	json_object *v = NULL;
	json_object_object_get_ex(o, k, &v);
	return v;
}

static void print_psi(const char *what, json_object *l)
{
	printf("%-10s avg10=%.2f avg60=%.2f avg300=%.2f total=%" PRId64 " us\n", what,
	       json_object_get_double(get(l, "avg10")), json_object_get_double(get(l, "avg60")),
	       json_object_get_double(get(l, "avg300")), json_object_get_int64(get(l, "total_us")));
}

/* `pressure`: PSI now, the actions in order, eBPF counters, the last events. */
static void print_pressure(json_object *r)
{
	if (!json_object_get_boolean(get(r, "enabled"))) {
		printf("memory pressure is not watched (pressure.enable, or no PSI: see the broker's log)\n");
		return;
	}
	const char *armed = json_object_get_string(get(r, "trigger_armed"));
	printf("source     %s (pressure: some %" PRId64 " us per %" PRId64 " us; trigger %s%s%s)\n",
	       json_object_get_string(get(r, "source")), json_object_get_int64(get(r, "trigger_us")),
	       json_object_get_int64(get(r, "window_us")), armed && armed[0] ? "'" : "",
	       armed && armed[0] ? armed : "none: polled", armed && armed[0] ? "'" : "");
	print_psi("some", get(r, "some"));
	print_psi("full", get(r, "full"));
	printf("level      %d of %d actions applied%s; %" PRId64 " requests refused\n",
	       json_object_get_int(get(r, "level")),
	       (int)json_object_array_length(get(r, "actions")),
	       json_object_get_boolean(get(r, "refusing")) ? ", REFUSING new requests" : "",
	       json_object_get_int64(get(r, "refused")));
	printf("actions   ");
	json_object *acts = get(r, "actions");
	for (size_t i = 0; i < json_object_array_length(acts); i++)
		printf(" %zu.%s", i + 1, json_object_get_string(get(json_object_array_get_idx(acts, i), "name")));
	printf("\nebpf       %s\n", json_object_get_string(get(r, "bpf")));
	if (json_object_get_boolean(get(r, "bpf_on"))) {
		json_object *g = get(r, "bpf_global");
		printf("machine    reclaim %.1f ms in %" PRId64 " stalls, %" PRId64 " OOM kills\n",
		       json_object_get_double(get(g, "reclaim_ms")), json_object_get_int64(get(g, "reclaims")),
		       json_object_get_int64(get(g, "oom_kills")));
		print_table(get(r, "bpf_procs"), bpf_cols, N_COLS(bpf_cols));
	}
	printf("\nlast actions\n");
	print_table(get(r, "events"), events_cols, N_COLS(events_cols));
}

/* key  value lines, in the broker's order; a nested map's keys as
 * parent.key. */
static void print_kv_in(json_object *obj, const char *parent)
{
	json_object_object_foreach(obj, k, v)
	{
		char key[128];
		snprintf(key, sizeof(key), "%s%s%s", parent, parent[0] ? "." : "", k);
		if (json_object_is_type(v, json_type_object))
			print_kv_in(v, key);
		else if (json_object_is_type(v, json_type_double))
			printf("%-28s %.2f\n", key, json_object_get_double(v));
		else if (json_object_is_type(v, json_type_string))
			printf("%-28s %s\n", key, json_object_get_string(v));
		else
			printf("%-28s %s\n", key, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	}
}

static void print_kv(json_object *obj)
{
	if (!json_object_is_type(obj, json_type_object)) {
		printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	print_kv_in(obj, "");
}

/* ---- batch ------------------------------------------------------------------ */

static json_object *jget(json_object *o, const char *k)
{
	json_object *v = NULL;
	return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static double jnum(json_object *o, const char *k)
{
	json_object *v = jget(o, k);
	return v ? json_object_get_double(v) : 0;
}

/* One row: the figure of the total and of the recent period. */
static void batch_row(json_object *tot, json_object *rec, const char *head, const char *key,
		      const char *fmt)
{
	char a[64], b[64];
	snprintf(a, sizeof(a), fmt, jnum(tot, key));
	snprintf(b, sizeof(b), fmt, jnum(rec, key));
	printf("  %-22s %-24s %s\n", head, a, b);
}

static void batch_lat_row(json_object *tot, json_object *rec, const char *head, const char *key)
{
	char cell[2][64];
	json_object *p[2] = {jget(tot, key), jget(rec, key)};
	for (int i = 0; i < 2; i++)
		snprintf(cell[i], sizeof(cell[i]), "%.1f / %.1f / %.1f (%.0f)", jnum(p[i], "p50"),
			 jnum(p[i], "p95"), jnum(p[i], "p99"), jnum(p[i], "n"));
	printf("  %-22s %-24s %s\n", head, cell[0], cell[1]);
}

/* "k:count" for every non-empty step_hist entry of period p. */
static void batch_hist(json_object *p, const char *head)
{
	json_object *h = jget(p, "step_hist");
	printf("  %-22s", head);
	const size_t n = json_object_is_type(h, json_type_array) ? json_object_array_length(h) : 0;
	int any = 0;
	for (size_t k = 0; k < n; k++) {
		const int64_t c = json_object_get_int64(json_object_array_get_idx(h, k));
		if (c) {
			printf(" %zu%s:%" PRId64, k, k + 1 == n ? "+" : "", c);
			any = 1;
		}
	}
	printf("%s\n", any ? "" : " -");
}

static void batch_model(json_object *m)
{
	json_object *tot = jget(m, "total"), *rec = jget(m, "recent");
	json_object *name = jget(m, "name");
	printf("model %s: waiting %.0f, running %.0f, paused %.0f; KV pages free %.0f of %.0f\n",
	       name ? json_object_get_string(name) : "?", jnum(m, "waiting"), jnum(m, "running"),
	       jnum(m, "paused"), jnum(m, "kv_pages_free"), jnum(m, "kv_pages_total"));
	char ht[64], hr[64];
	snprintf(ht, sizeof(ht), "since start (%.0f s)", jnum(tot, "span_s"));
	snprintf(hr, sizeof(hr), "recent (%.0f s)", jnum(rec, "span_s"));
	printf("  %-22s %-24s %s\n", "", ht, hr);
	batch_row(tot, rec, "steps", "steps", "%.0f");
	batch_row(tot, rec, "sequences per step", "avg_batch", "%.2f");
	batch_row(tot, rec, "largest batch", "max_batch_seen", "%.0f");
	batch_row(tot, rec, "step ms (avg)", "step_ms_avg", "%.2f");
	batch_row(tot, rec, "busy", "busy_frac", "%.2f");
	batch_row(tot, rec, "generated tok/s", "gen_tok_s", "%.1f");
	batch_row(tot, rec, "prompt tokens", "tokens_prompt", "%.0f");
	batch_row(tot, rec, "requests done", "requests_done", "%.0f");
	batch_row(tot, rec, "requests/s", "requests_s", "%.2f");
	batch_row(tot, rec, "errors", "requests_err", "%.0f");
	batch_row(tot, rec, "cancelled", "requests_cancelled", "%.0f");
	batch_row(tot, rec, "preemptions", "preemptions", "%.0f");
	printf("  %-22s %s\n", "ms p50 / p95 / p99 (n)", "");
	batch_lat_row(tot, rec, "  TTFT", "ttft_ms");
	batch_lat_row(tot, rec, "  TPOT", "tpot_ms");
	batch_lat_row(tot, rec, "  queue wait", "queue_ms");
	batch_lat_row(tot, rec, "  request", "latency_ms");
	batch_hist(tot, "steps by batch size");
	batch_hist(rec, "  recent");
	json_object *bp = jget(tot, "requests_by_prio");
	printf("  %-22s", "requests by priority");
	for (size_t i = 0; bp && i < json_object_array_length(bp); i++) {
		json_object *e = json_object_array_get_idx(bp, i);
		printf(" %.0f:%.0f", jnum(e, "prio"), jnum(e, "requests"));
	}
	if (jnum(tot, "requests_other_prio") > 0)
		printf(" other:%.0f", jnum(tot, "requests_other_prio"));
	printf("\n");
}

static void print_batch(json_object *res)
{
	json_object *ms = jget(res, "models");
	for (size_t i = 0; ms && i < json_object_array_length(ms); i++)
		batch_model(json_object_array_get_idx(ms, i));
}

/* Removes herdctl's own connection from the agents list (it is not an agent). */
static void drop_self(json_object *arr)
{
	if (!json_object_is_type(arr, json_type_array))
		return;
	for (size_t i = json_object_array_length(arr); i-- > 0;) {
		json_object *pid = NULL;
		if (json_object_object_get_ex(json_object_array_get_idx(arr, i), "pid", &pid) &&
		    json_object_get_int64(pid) == (int64_t)getpid())
			json_object_array_del_idx(arr, i, 1);
	}
}

/* ---- segments without a broker ------------------------------------------- */

static int seg_add(void *user, const shm_image_info *in)
{
	json_object *arr = user, *o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "name", json_object_new_string(in->name));
	json_object_object_add(o, "model", json_object_new_string(in->model));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)in->image_size));
	json_object_object_add(o, "digest", json_object_new_string(in->digest_hex));
	json_object_object_add(o, "attached", json_object_new_int(in->n_attached));
	json_object_object_add(o, "valid", json_object_new_boolean(in->valid));
	json_object_object_add(o, "loaded", NULL); /* unknown: no broker */
	json_object_object_add(o, "weight_type", json_object_new_string(in->weight_type));
	json_object_object_add(o, "mode", json_object_new_int64(in->mode));
	json_object_object_add(o, "uid", json_object_new_int64(in->uid));
	json_object_object_add(o, "problem", json_object_new_string(in->valid ? "" : in->problem));
	json_object_array_add(arr, o);
	return 0;
}

static int local_segments(int json)
{
	json_object *arr = json_object_new_array();
	if (!arr)
		return 1;
	int rc = shm_image_list(SHM_LIST_ATTACH, seg_add, arr);
	if (rc) {
		fprintf(stderr, "herdctl: cannot list %s: %s\n", SHM_IMAGE_DIR, herd_strerror(rc));
		json_object_put(arr);
		return 1;
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		print_table(arr, segments_cols, N_COLS(segments_cols));
	json_object_put(arr);
	return 0;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: herdctl [--socket PATH] [--json] COMMAND\n"
		"commands:\n"
		"  status            broker pid, uptime, agents, requests, batching, speed, limit counters\n"
		"  models            configured models: state (resident, loading, waiting, draining,\n"
		"                    unloaded), bytes, pinned, score and its parts, uses, processes\n"
		"                    holding the image; then the cache counters and held images\n"
		"  cache             response cache (entries, bytes, hit rate, merged requests),\n"
		"                    prefix pool (pages, hit tokens, hit rate), then the model\n"
		"                    cache manager: budget, bytes used and held, loads, evictions,\n"
		"                    predictions, preload hits and wasted loads, catalog commits\n"
		"  load|preload|evict|pin|unpin MODEL   load now (evicting idle models), load only\n"
		"                    into free memory, evict (refused while it runs requests), pin\n"
		"  top [--once]      live view every second: agents (requests, tokens/s), models\n"
		"                    (state, bytes, queue), cache counters; --once: one view\n"
		"  segments          shared-memory images in %s: size, digest, attached processes\n"
		"                    (works without a broker: then read from %s directly)\n"
		"  agents            connected agents: pid, uid, requests, tokens\n"
		"  pressure          memory pressure: PSI now, shedding actions in order and the last\n"
		"                    ones run with their PSI values, eBPF counters per process\n"
		"  batch             batch metrics per model: queues, steps, batch sizes, TTFT, TPOT,\n"
		"                    queue wait and latency percentiles, preemptions; since the start\n"
		"                    and over the last minute\n"
		"  rm SEGMENT [--force]  remove an image (--force: even the image of a loaded model;\n"
		"                    without a broker the object is unlinked directly)\n"
		"  shutdown          stop the broker (in-flight requests end with reason \"cancel\")\n"
		"options:\n"
		"  --socket PATH     broker socket (default $HERD_SOCKET, $XDG_RUNTIME_DIR/herd/herd.sock,\n"
		"                    %s)\n"
		"  --json            print the result as JSON (one line)\n"
		"Admin commands are accepted only from the broker's uid, root or its admin group.\n",
		SHM_IMAGE_DIR, SHM_IMAGE_DIR, HERD_SYSTEM_SOCKET);
}

/* The group named in the broker's EPERM message ("... group 'G'"), or "". */
static void perm_group(const char *msg, char *g, size_t n)
{
	const char *p = strstr(msg, "group '");
	g[0] = 0;
	if (!p)
		return;
	p += 7;
	const char *e = strchr(p, '\'');
	if (e)
		snprintf(g, n, "%.*s", (int)(e - p), p);
}

#define MAX_ARGS 8 /* command arguments passed on to the broker */

typedef struct cmdline {
	const char *sock, *cmd;
	const char *args[MAX_ARGS];
	size_t n_args;
	int json;
} cmdline;

static const char *const known_cmds[] = {"status", "models", "cache", "segments", "agents",
					 "batch", "pressure", "rm", "shutdown", "load", "preload",
					 "evict", "pin", "unpin", "top"};

/* Commands that take exactly one MODEL argument. */
static int is_model_op(const char *cmd)
{
	return !strcmp(cmd, "load") || !strcmp(cmd, "preload") || !strcmp(cmd, "evict") ||
	       !strcmp(cmd, "pin") || !strcmp(cmd, "unpin");
}

/* Parses the command line. Returns -1 to go on, else the exit status. */
static int parse_cmdline(int argc, char **argv, cmdline *cl)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--socket") || !strcmp(argv[i], "-s")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "herdctl: --socket needs a path\n");
				return 2;
			}
			cl->sock = argv[++i];
		} else if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j")) {
			cl->json = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") ||
			   !strcmp(argv[i], "help")) {
			usage(stdout);
			return 0;
		} else if (!cl->cmd) {
			cl->cmd = argv[i];
		} else if (cl->n_args < MAX_ARGS) {
			cl->args[cl->n_args++] = argv[i];
		} else {
			fprintf(stderr, "herdctl: too many arguments\n");
			return 2;
		}
	}
	int ok = 0;
	for (size_t i = 0; cl->cmd && i < sizeof(known_cmds) / sizeof(known_cmds[0]); i++)
		ok |= !strcmp(cl->cmd, known_cmds[i]);
	if (!ok) {
		if (cl->cmd)
			fprintf(stderr, "herdctl: unknown command '%s'\n", cl->cmd);
		usage(stderr);
		return 2;
	}
	if (is_model_op(cl->cmd) && cl->n_args != 1) {
		fprintf(stderr, "herdctl: %s needs one model name (see herdctl models)\n", cl->cmd);
		return 2;
	}
	if (!strcmp(cl->cmd, "top") && (cl->n_args > 1 || (cl->n_args && strcmp(cl->args[0], "--once")))) {
		fprintf(stderr, "herdctl: top takes only --once\n");
		return 2;
	}
	if (is_model_op(cl->cmd) || !strcmp(cl->cmd, "top"))
		return -1;
	const int is_rm = !strcmp(cl->cmd, "rm");
	if (is_rm && cl->n_args == 0) {
		fprintf(stderr, "herdctl: rm needs a segment name (see herdctl segments)\n");
		return 2;
	}
	if (!is_rm && cl->n_args) {
		fprintf(stderr, "herdctl: %s takes no arguments\n", cl->cmd);
		return 2;
	}
	return -1;
}

/* `rm` without a broker: unlinks the object itself. Returns the exit status. */
static int local_rm(const cmdline *cl, const char *path)
{
	const char *seg = NULL;
	for (size_t i = 0; i < cl->n_args; i++)
		if (strcmp(cl->args[i], "--force") && strcmp(cl->args[i], "-f"))
			seg = cl->args[i];
	if (!seg) {
		fprintf(stderr, "herdctl: rm needs a segment name\n");
		return 2;
	}
	int rc = shm_image_remove(seg);
	if (rc) {
		fprintf(stderr, "herdctl: rm %s: %s\n", seg, herd_strerror(rc));
		return 1;
	}
	if (cl->json)
		printf("{\"removed\":\"%s\",\"broker\":false}\n", seg);
	else
		printf("removed %s (no broker at %s: unlinked directly)\n", seg, path);
	return 0;
}

/* Prints the broker's result of cl->cmd: JSON, a table or key/value lines. */
static void print_result(const cmdline *cl, const proto_value *result, const char *path)
{
	const char *cmd = cl->cmd;
	json_object *res = value_to_json(result);
	if (!strcmp(cmd, "agents"))
		drop_self(res);
	if (cl->json)
		printf("%s\n", res ? json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "null");
	else if (!strcmp(cmd, "models"))
		print_table(res, models_cols, N_COLS(models_cols));
	else if (!strcmp(cmd, "segments"))
		print_table(res, segments_cols, N_COLS(segments_cols));
	else if (!strcmp(cmd, "agents"))
		print_table(res, agents_cols, N_COLS(agents_cols));
	else if (!strcmp(cmd, "pressure"))
		print_pressure(res);
	else if (!strcmp(cmd, "batch"))
		print_batch(res);
	else if (!strcmp(cmd, "rm")) {
		json_object *v = NULL;
		json_object_object_get_ex(res, "removed", &v);
		printf("removed %s\n", v ? json_object_get_string(v) : cl->args[0]);
	} else if (!strcmp(cmd, "shutdown"))
		printf("broker at %s is shutting down\n", path);
	else
		print_kv(res);
	json_object_put(res);
}

/* Sends the command and prints the reply or the broker's error. Returns
 * the exit status. */
static int call_broker(adm_client *a, const cmdline *cl, const char *path)
{
	char err[1024] = "";
	int rc = adm_call(a, cl->cmd, cl->args, cl->n_args, err, sizeof(err));
	if (rc == -EPERM) {
		char g[128];
		perm_group(err, g, sizeof(g));
		fprintf(stderr, "herdctl: permission denied: admin requires the broker's uid or group %s\n",
			g[0] ? g : "(no admin group configured)");
		return 1;
	}
	if (rc) {
		if (err[0])
			fprintf(stderr, "herdctl: %s\n", err);
		else
			fprintf(stderr, "herdctl: %s: %s\n", cl->cmd, herd_strerror(rc));
		return 1;
	}
	print_result(cl, a->msg.admin_ok.result, path);
	if (!strcmp(cl->cmd, "models") && !cl->json &&
	    !adm_call(a, "cache", NULL, 0, err, sizeof(err))) {
		printf("\n");
		json_object *c = value_to_json(a->msg.admin_ok.result);
		print_kv(c);
		json_object_put(c);
	}
	return 0;
}

int main(int argc, char **argv)
{
	cmdline cl = {0};
	char path[256], err[1024] = "";
	int status = parse_cmdline(argc, argv, &cl);
	if (status >= 0)
		return status;
	if (cl.sock)
		snprintf(path, sizeof(path), "%s", cl.sock);
	else if (herd_default_socket_path(path, sizeof(path)) < 0) {
		fprintf(stderr, "herdctl: default socket path too long; use --socket\n");
		return 2;
	}
	adm_client a;
	adm_init(&a);
	int rc = adm_connect(&a, path, err, sizeof(err));
	if ((rc == -ENOENT || rc == -ECONNREFUSED) && !strcmp(cl.cmd, "segments")) {
		fprintf(stderr, "herdctl: no broker at %s; listing %s directly\n", path, SHM_IMAGE_DIR);
		status = local_segments(cl.json);
	} else if ((rc == -ENOENT || rc == -ECONNREFUSED) && !strcmp(cl.cmd, "rm")) {
		status = local_rm(&cl, path);
	} else if (rc) {
		fprintf(stderr, "herdctl: %s\n", err);
		status = 1;
	} else if (!strcmp(cl.cmd, "top")) {
		status = herdctl_top(&a, cl.json, cl.n_args == 1);
	} else {
		status = call_broker(&a, &cl, path);
	}
	adm_fini(&a);
	return status;
}
