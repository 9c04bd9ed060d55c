/* herd agent: one agent process for `herd demo` and the integration and
 * fault tests (a hidden subcommand; the test harness and the demo fork+exec
 * the herd binary so every agent is a real separate process).
 *
 *   herd agent --socket PATH --model NAME[,NAME...] [--index I] [--phase P] [--name NAME]
 *              [--requests R] [--max-tokens N] [--stream-every K]
 *              [--attach] [--local] [--local-tokens N] [--touch] [--threads T]
 *              [--go-fd FD] [--exit-fd FD] [--reconnect] [--reconnect-ms MS]
 *              [--report-first] [--cache] [--json]
 *              [--duration-s S] [--mix S:B:C] [--cancel-after N] [--think-ms MS]
 *              [--quiet] [--prompt-len MIN[:MAX]] [--shared-len P] [--shared-frac F]
 *              [--agents N] [--repeat-frac F] [--rate R] [--stream-frac F]
 *
 * With several models (NAME,NAME,...: the model cache manager's benchmark)
 * request j goes to model (P + j) mod n, a fixed cycle per agent (P: --phase,
 * by default the index; agents of one phase follow the same pattern).
 * Sequence: connect (hello/welcome); with --attach, attach the model's
 * shared image (herd_model_attach), with --local run it in this process
 * once (a short greedy generation: every weight matrix is read), with
 * --touch read one byte of every page of the mapping (so every page of the
 * image is mapped in this process: the worst case for memory accounting);
 * report "ready"; wait at the go barrier (EOF on --go-fd); send R greedy
 * requests, request j streaming when K > 0 and j % K == K - 1; report
 * "finished"; wait at the exit barrier (EOF on --exit-fd: the parent
 * measures memory meanwhile); detach and exit.
 *
 * Output: one JSON object per line on stdout, each written with a single
 * write(2) (events "ready", "first", "req", "error", "reconnected",
 * "finished", "fatal"). Generated text is hex-encoded ("text_hex": random
 * weights produce arbitrary bytes, which JSON strings cannot carry), token
 * ids are listed for streamed requests ("toks"). Prompts come from a fixed
 * list and carry the agent index and request number, so every request is
 * distinct (no merging, no response cache hit) and reproducible: a test can
 * rerun the same prompt through the engine and compare.
 *
 * Soak mode (scripts/soak.sh): --duration-s S sends requests until S
 * seconds have passed (--requests is then ignored); --mix S:B:C picks each
 * request's kind with weights S streamed, B blocking, C cancelled (a
 * streamed request the callback cancels after --cancel-after tokens,
 * default 2), chosen by a hash of the agent index and request number so a
 * run is reproducible; --think-ms MS waits between 0 and MS ms (same hash)
 * before each request; --quiet drops the "req" lines of successful
 * requests (failures are still reported) and prints a "progress" line
 * with the counts every 10 s instead; after a failed request it waits
 * 100 ms (a broker refusing everything is not hammered). The "finished"
 * line carries the counts (ok: every success, cancelled ones included;
 * failed, cancelled, and the requests of each kind).
 *
 * --reconnect: a request that fails because the connection broke (the
 * broker died) is reported as an "error" event with the library's message,
 * then herd_reconnect is retried every 50 ms for up to --reconnect-ms (default
 * 30000) and the same request is sent again.
 *
 * Load mode (`herd bench serve`): --prompt-len MIN[:MAX] sends token
 * prompts (ids, no text) of a length drawn uniformly from MIN..MAX per
 * request; --shared-len P puts the same P-token system prefix before
 * them when this agent is among the first --shared-frac F of --agents N;
 * --repeat-frac F makes that fraction of requests one identical greedy
 * request (the same tokens for every agent: material for request merging
 * and the response cache); --rate R spaces requests by Poisson arrivals of
 * R requests/s (one request in flight per agent: a request due while the
 * previous one runs is sent when it ends); --stream-frac F streams that
 * fraction (instead of --stream-every). Every choice comes from a hash of
 * the agent index and request number, so a run is reproducible. The "req"
 * line then also has "tpot_ms" (streamed: (last - first token arrival) /
 * (tokens - 1) measured here; else the broker's (t_total - t_first) /
 * (n_gen - 1)), "ttft_ms" (streamed: first token arrival here; else the
 * broker's t_first_ms), "n_cached", "merged", "cached" and "repeat".
 *
 * Exit status: 0 when every request succeeded, 1 otherwise or on a fatal
 * error, 2 for a usage error. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "herd/herd.h"
#include "common/clock.h"
#include "shm/image.h"

#define AGENT_LOCAL_PROMPT "The quick brown fox"
#define AGENT_PROGRESS_MS 10000.0 /* --quiet: a "progress" line this often */
#define AGENT_FAIL_PAUSE_US 100000 /* --duration-s: pause after a failed request */

/* Short prompts (the demo model's synthetic vocabulary spends about one
 * token per two characters); the agent index and request number are
 * appended, so every request is distinct. */
static const char *const agent_prompts[] = {
	"Once upon a time",
	"The weather today",
	"A poem about rain",
	"To make tea, first",
	"The printing press",
	"My favourite language",
	"In the year 2050",
	"The recipe calls for",
	"Pack for camping:",
	"The old lighthouse",
	"A new species of frog",
	"Dear diary, today",
	"The train left at noon",
	"The best advice",
	"Under the bridge",
	"The meeting agenda",
};

#define AGENT_N_PROMPTS (sizeof(agent_prompts) / sizeof(agent_prompts[0]))

typedef struct agent_opts {
	const char *socket, *model, *name;
	long index, requests, max_tokens, stream_every, local_tokens, threads;
	long phase;  /* offset in the model cycle; -1: the index */
	long go_fd, exit_fd, reconnect_ms;
	long duration_s, cancel_after, think_ms;
	long mix[3]; /* weights of streamed, blocking, cancelled; all 0: --stream-every */
	int attach, local, touch, reconnect, report_first, cache, quiet;
	/* load mode (herd bench serve) */
	long plen_min, plen_max, shared_len, agents; /* plen_max 0: text prompts */
	double shared_frac, repeat_frac, rate, stream_frac; /* stream_frac < 0: unused */
	uint32_t n_vocab;
} agent_opts;

/* The kind of one request. */
typedef enum agent_kind { AGENT_STREAM = 0, AGENT_BLOCK, AGENT_CANCEL } agent_kind;

/* Counts for the "progress" and "finished" lines. */
typedef struct agent_counts {
	long ok, failed, cancelled, kind[3]; /* ok: every success, cancelled ones included */
} agent_counts;

/* splitmix64: a reproducible per-request choice from (index, req, salt). */
static uint64_t agent_hash(long index, long req, uint64_t salt)
{
	uint64_t z = ((uint64_t)index << 32) ^ (uint64_t)req ^ (salt * 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A uniform double in [0, 1) from the request's hash. */
static double agent_unit(long index, long req, uint64_t salt)
{
	return (double)(agent_hash(index, req, salt) >> 11) * 0x1.0p-53;
}

static agent_kind agent_pick(const agent_opts *o, long req)
{
	if (o->stream_frac >= 0)
		return agent_unit(o->index, req, 4) < o->stream_frac ? AGENT_STREAM : AGENT_BLOCK;
	const long total = o->mix[0] + o->mix[1] + o->mix[2];
	if (total <= 0)
		return o->stream_every > 0 && req % o->stream_every == o->stream_every - 1
			       ? AGENT_STREAM
			       : AGENT_BLOCK;
	long x = (long)(agent_hash(o->index, req, 1) % (uint64_t)total);
	return x < o->mix[0] ? AGENT_STREAM : x < o->mix[0] + o->mix[1] ? AGENT_BLOCK : AGENT_CANCEL;
}

/* A growable line of JSON. */
typedef struct jline {
	char *p;
	size_t len, cap;
	int oom;
} jline;

static void jl_add(jline *j, const char *s, size_t n)
{
	if (j->oom)
		return;
	if (j->len + n + 2 > j->cap) {
		size_t cap = j->cap ? j->cap : 256;
		while (cap < j->len + n + 2)
			cap *= 2;
		char *np = realloc(j->p, cap);
		if (!np) {
			j->oom = 1;
			return;
		}
		j->p = np;
		j->cap = cap;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
	j->p[j->len] = 0;
}

__attribute__((format(printf, 2, 3))) static void jl_fmt(jline *j, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		jl_add(j, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* ,"key":"escaped" (bytes outside printable ASCII become '?'). */
static void jl_str(jline *j, const char *key, const char *s)
{
	jl_fmt(j, ",\"%s\":\"", key);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		char c[8];
		if (*p == '"' || *p == '\\')
			snprintf(c, sizeof(c), "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			snprintf(c, sizeof(c), "?");
		else
			snprintf(c, sizeof(c), "%c", *p);
		jl_add(j, c, strlen(c));
	}
	jl_add(j, "\"", 1);
}

static void jl_hex(jline *j, const char *key, const char *s, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	jl_fmt(j, ",\"%s\":\"", key);
	for (size_t i = 0; i < n; i++) {
		const unsigned char b = (unsigned char)s[i];
		char c[2] = {hx[b >> 4], hx[b & 15]};
		jl_add(j, c, 2);
	}
	jl_add(j, "\"", 1);
}

/* Ends the object and writes the line with one write(2) (atomic for the
 * reader as long as it is shorter than PIPE_BUF; longer lines are still
 * whole because every agent has its own pipe). */
static void jl_emit(jline *j)
{
	jl_add(j, "}\n", 2);
	if (!j->oom) {
		size_t off = 0;
		while (off < j->len) {
			ssize_t w = write(STDOUT_FILENO, j->p + off, j->len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	free(j->p);
	memset(j, 0, sizeof(*j));
}

static double now_ms(void)
{
	return clock_mono_s() * 1e3;
}

/* Blocks until the other end of fd is closed (EOF). */
static void barrier_wait(long fd)
{
	if (fd < 0)
		return;
	char c;
	for (;;) {
		ssize_t r = read((int)fd, &c, 1);
		if (r == 0 || (r < 0 && errno != EINTR))
			break;
	}
	close((int)fd);
}

typedef struct stream_acc {
	int32_t *toks;
	int n, cap;
	double t0, t_first, t_last;
	int report_first;
	long req;
	long cancel_after; /* > 0: cancel (return 1) once this many tokens came */
} stream_acc;

static int on_token(void *user, const char *text, size_t len, int32_t token)
{
	(void)text;
	(void)len;
	stream_acc *a = user;
	if (a->n == 0) {
		a->t_first = now_ms();
		if (a->report_first) {
			jline j = {0};
			jl_fmt(&j, "{\"ev\":\"first\",\"req\":%ld,\"pid\":%d", a->req, (int)getpid());
			jl_emit(&j);
		}
	}
	if (a->n == a->cap) {
		int cap = a->cap ? a->cap * 2 : 64;
		int32_t *nt = realloc(a->toks, sizeof(int32_t) * (size_t)cap);
		if (!nt)
			return 1;
		a->toks = nt;
		a->cap = cap;
	}
	a->toks[a->n++] = token;
	a->t_last = now_ms();
	return a->cancel_after > 0 && a->n >= a->cancel_after;
}

static int is_conn_error(int rc)
{
	return rc == -ECONNRESET || rc == -ENOTCONN || rc == -EPIPE || rc == -ECONNREFUSED ||
	       rc == -ENOENT || rc == HERD_E_PROTO;
}

/* Reconnects within o->reconnect_ms; reports the outcome. 0 or the last error. */
static int agent_reconnect(herd_client *c, const agent_opts *o, long req)
{
	const double t0 = now_ms();
	int rc, attempts = 0;
	do {
		usleep(50 * 1000);
		attempts++;
		rc = herd_reconnect(c);
	} while (rc && now_ms() - t0 < (double)o->reconnect_ms);
	jline j = {0};
	if (rc) {
		jl_fmt(&j, "{\"ev\":\"fatal\",\"req\":%ld,\"code\":%d", req, rc);
		jl_str(&j, "msg", herd_client_errmsg(c));
	} else {
		jl_fmt(&j, "{\"ev\":\"reconnected\",\"req\":%ld,\"attempts\":%d,\"after_ms\":%.1f", req,
		       attempts, now_ms() - t0);
	}
	jl_emit(&j);
	return rc;
}

/* Sends r (streamed when stream), reconnecting and resending after a
 * broken connection with --reconnect. Returns 0 or the error code. */
static int agent_send(herd_client *c, const agent_opts *o, const herd_request *r, int stream,
		      stream_acc *acc, herd_result *res)
{
	int rc;
	for (;;) {
		acc->n = 0;
		acc->t0 = now_ms();
		acc->t_first = 0;
		rc = stream ? herd_generate_stream(c, r, on_token, acc, res) : herd_generate(c, r, res);
		if (rc == 0 || !o->reconnect || !is_conn_error(rc))
			break;
		jline j = {0};
		jl_fmt(&j, "{\"ev\":\"error\",\"req\":%ld,\"code\":%d", acc->req, rc);
		jl_str(&j, "msg", herd_client_errmsg(c));
		jl_emit(&j);
		herd_result_free(res);
		if (agent_reconnect(c, o, acc->req))
			break;
	}
	return rc;
}

/* The "req" line of a request that ended with rc. */
/* Load mode: TTFT and TPOT of a finished request (see the header). */
static void agent_report_load(jline *j, int stream, const stream_acc *acc, const herd_result *res,
			      int repeat)
{
	double ttft = res->t_first_ms, tpot = -1;
	if (stream && acc->n > 0) {
		ttft = acc->t_first - acc->t0;
		if (acc->n > 1)
			tpot = (acc->t_last - acc->t_first) / (acc->n - 1);
	} else if (res->n_gen > 1 && res->t_first_ms >= 0) {
		tpot = (res->t_total_ms - res->t_first_ms) / (res->n_gen - 1);
	}
	/* merged and cached are on every req line (agent_report) */
	jl_fmt(j, ",\"ttft_ms\":%.3f,\"tpot_ms\":%.4f,\"n_cached\":%u,\"repeat\":%d", ttft, tpot,
	       res->n_cached, repeat);
}

static void agent_report(herd_client *c, const agent_opts *o, const char *prompt, agent_kind kind,
			 const stream_acc *acc, int rc, const herd_result *res, int repeat)
{
	const double lat = now_ms() - acc->t0;
	const int stream = kind != AGENT_BLOCK;
	jline j = {0};
	jl_fmt(&j, "{\"ev\":\"req\",\"req\":%ld,\"stream\":%d,\"cancel\":%d", acc->req, stream,
	       kind == AGENT_CANCEL);
	jl_str(&j, "prompt", prompt);
	jl_fmt(&j, ",\"max_tokens\":%ld,\"ok\":%d,\"code\":%d", o->max_tokens, rc == 0, rc);
	if (rc) {
		jl_str(&j, "msg", herd_client_errmsg(c));
	} else {
		jl_str(&j, "reason", herd_finish_name(res->reason));
		jl_fmt(&j,
		       ",\"n_prompt\":%u,\"n_gen\":%u,\"latency_ms\":%.3f,\"first_ms\":%.3f,"
		       "\"queue_ms\":%.3f,\"broker_first_ms\":%.3f,\"broker_total_ms\":%.3f,"
		       "\"merged\":%d,\"cached\":%d",
		       res->n_prompt, res->n_gen, lat,
		       stream && acc->n ? acc->t_first - acc->t0 : -1.0, res->t_queue_ms,
		       res->t_first_ms, res->t_total_ms, res->merged, res->cached);
		if (o->plen_max > 0)
			agent_report_load(&j, stream, acc, res, repeat);
		jl_hex(&j, "text_hex", res->text, res->text_len);
		if (stream) {
			jl_add(&j, ",\"toks\":[", 9);
			for (int i = 0; i < acc->n; i++)
				jl_fmt(&j, "%s%d", i ? "," : "", acc->toks[i]);
			jl_add(&j, "]", 1);
		}
	}
	jl_emit(&j);
}

#define AGENT_MAX_PROMPT_TOKENS 16384

/* Load mode: the token prompt of request req into ids (*n of them): the
 * shared prefix (when this agent shares) and its own part, or the one
 * repeated request. Returns 1 when it is the repeated request. */
static int agent_tokens(const agent_opts *o, long req, int32_t *ids, int *n)
{
	const uint32_t lo = 3, span = o->n_vocab > lo + 1 ? o->n_vocab - lo : 1;
	const int repeat = o->repeat_frac > 0 && agent_unit(o->index, req, 3) < o->repeat_frac;
	const long idx = repeat ? -1 : o->index, rq = repeat ? -1 : req;
	const long len = o->plen_min + (long)(agent_unit(idx, rq, 5) *
					      (double)(o->plen_max - o->plen_min + 1));
	*n = 0;
	const long n_sharing = (long)floor(o->shared_frac * (double)o->agents + 0.5);
	if (!repeat && o->shared_len > 0 && o->index < n_sharing)
		for (long i = 0; i < o->shared_len; i++) /* the same for every sharing agent */
			ids[(*n)++] = (int32_t)(lo + agent_hash(-2, i, 6) % span);
	for (long i = 0; i < len && *n < AGENT_MAX_PROMPT_TOKENS; i++)
		ids[(*n)++] = (int32_t)(lo + agent_hash(idx, rq * 65536 + i, 7) % span);
	return repeat;
}

/* --rate: waits until request req is due (Poisson arrivals from t_start). */
static void agent_arrival(const agent_opts *o, long req, double *t_next)
{
	if (o->rate <= 0)
		return;
	*t_next += -log(1 - agent_unit(o->index, req, 8)) / o->rate * 1e3;
	const double wait = *t_next - now_ms();
	if (wait > 0)
		usleep((useconds_t)(wait * 1e3));
}

/* The model of request req: o->model, or with a comma-separated list
 * its entry (index + req) mod n (into buf). */
static const char *agent_model(const agent_opts *o, long req, char *buf, size_t n)
{
	if (!strchr(o->model, ','))
		return o->model;
	long count = 1;
	for (const char *p = o->model; *p; p++)
		count += *p == ',';
	long k = ((o->phase >= 0 ? o->phase : o->index) + req) % count;
	const char *p = o->model;
	while (k-- > 0)
		p = strchr(p, ',') + 1;
	const size_t len = strcspn(p, ",");
	snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), p);
	return buf;
}

/* Runs request number req; reports it (unless --quiet and it succeeded)
 * and counts it. Returns 0 or the error code. */
static int agent_request(herd_client *c, const agent_opts *o, long req, agent_counts *cnt)
{
	char prompt[256], model[128];
	static int32_t ids[AGENT_MAX_PROMPT_TOKENS];
	int n_ids = 0, repeat = 0;
	const agent_kind kind = agent_pick(o, req);
	herd_request r;
	herd_request_init(&r);
	if (o->plen_max > 0) {
		repeat = agent_tokens(o, req, ids, &n_ids);
		snprintf(prompt, sizeof(prompt), "tokens:%d", n_ids);
		r.tokens = ids;
		r.n_tokens = (size_t)n_ids;
	} else {
		snprintf(prompt, sizeof(prompt), "%s %ld",
			 agent_prompts[(size_t)(o->index + req) % AGENT_N_PROMPTS],
			 o->index * 1000 + req);
		r.prompt = prompt;
	}
	r.model = agent_model(o, req, model, sizeof(model));
	r.max_tokens = (int)o->max_tokens;
	r.temperature = 0;
	r.no_cache = !o->cache;
	herd_result res;
	stream_acc acc = {.report_first = o->report_first, .req = req,
			  .cancel_after = kind == AGENT_CANCEL ? o->cancel_after : 0};
	const int rc = agent_send(c, o, &r, kind != AGENT_BLOCK, &acc, &res);
	if (rc || !o->quiet)
		agent_report(c, o, prompt, kind, &acc, rc, &res, repeat);
	cnt->kind[kind]++;
	if (rc)
		cnt->failed++;
	else
		cnt->ok++;
	if (rc == 0 && res.reason == HERD_FINISH_CANCEL)
		cnt->cancelled++;
	free(acc.toks);
	herd_result_free(&res);
	return rc;
}

/* --local: one short greedy generation in this process (every weight matrix
 * is read); its outcome goes into the "ready" line. 0 or an error. */
static int agent_local_run(herd_local_model *lm, const agent_opts *o, jline *ready)
{
	herd_request r;
	herd_request_init(&r);
	r.prompt = AGENT_LOCAL_PROMPT;
	r.max_tokens = (int)o->local_tokens;
	r.temperature = 0;
	herd_result res;
	const double t0 = now_ms();
	const int rc = herd_local_generate(lm, &r, NULL, NULL, &res);
	jl_fmt(ready, ",\"local_ok\":%d,\"local_ms\":%.3f", rc == 0, now_ms() - t0);
	jl_str(ready, "local_prompt", AGENT_LOCAL_PROMPT);
	if (rc == 0) {
		jl_fmt(ready, ",\"local_n_gen\":%u", res.n_gen);
		jl_hex(ready, "local_text_hex", res.text, res.text_len);
	} else {
		jl_str(ready, "local_msg", herd_local_errmsg(lm));
	}
	herd_result_free(&res);
	return rc;
}

/* --touch: maps every page of the image into this process (the worst case
 * for memory accounting); counts go into the "ready" line. 0 or -errno. */
static int agent_touch(const char *segment, jline *ready)
{
	unsigned char *base = NULL;
	size_t len = 0;
	const int rc = shm_image_mapped(segment, &base, &len);
	if (rc)
		return rc;
	/* Map every page: one madvise where the kernel has it (5.14+), else
	 * a read per page. Both leave every page of the image in this
	 * process's page tables, as if it had read all of it. */
	const double t0 = now_ms();
	const long pg = sysconf(_SC_PAGESIZE);
	unsigned sum = 0;
#ifdef MADV_POPULATE_READ
	const int populated = madvise(base, len, MADV_POPULATE_READ) == 0;
#else
	const int populated = 0;
#endif
	if (!populated)
		for (size_t off = 0; off < len; off += (size_t)pg)
			sum += ((volatile unsigned char *)base)[off];
	jl_fmt(ready, ",\"touched_pages\":%zu,\"touch_ms\":%.3f,\"touch_sum\":%u",
	       len / (size_t)pg, now_ms() - t0, sum);
	return 0;
}

/* Attach, local run, touch; fills the "ready" line. 0 or an error (reported). */
static int agent_attach(herd_client *c, const agent_opts *o, herd_local_model **lm, jline *ready)
{
	herd_attach_opts ao = {.n_threads = (int)o->threads};
	int rc = herd_model_attach_opts(c, o->model, &ao, lm);
	if (rc) {
		jline j = {0};
		jl_fmt(&j, "{\"ev\":\"fatal\",\"stage\":\"attach\",\"code\":%d", rc);
		jl_str(&j, "msg", herd_client_errmsg(c));
		jl_emit(&j);
		return rc;
	}
	herd_local_info info;
	herd_local_info_get(*lm, &info);
	jl_str(ready, "segment", info.segment);
	jl_str(ready, "digest", info.digest);
	jl_fmt(ready, ",\"image_bytes\":%llu,\"attach_ms\":%.3f,\"load_ms\":%.3f",
	       (unsigned long long)info.image_bytes, info.attach_ms, info.load_ms);
	if (o->local && (rc = agent_local_run(*lm, o, ready)))
		return rc;
	if (o->touch && (rc = agent_touch(info.segment, ready)))
		return rc;
	return 0;
}

static void agent_usage(FILE *f)
{
	fprintf(f, "usage: herd agent --socket PATH --model NAME [--index I] [--phase P] [--name NAME]\n"
		   "       [--requests R] [--max-tokens N] [--stream-every K] [--attach] [--local]\n"
		   "       [--local-tokens N] [--touch] [--threads T] [--go-fd FD] [--exit-fd FD]\n"
		   "       [--reconnect] [--reconnect-ms MS] [--report-first] [--cache] [--json]\n"
		   "       [--duration-s S] [--mix S:B:C] [--cancel-after N] [--think-ms MS] [--quiet]\n"
		   "       [--prompt-len MIN[:MAX]] [--shared-len P] [--shared-frac F] [--agents N]\n"
		   "       [--repeat-frac F] [--rate R] [--stream-frac F]\n"
		   "(internal: one agent process of `herd demo` and the tests; JSON lines on stdout)\n");
}

/* --mix S:B:C into o->mix. 0 or -1 (printed). */
static int agent_parse_mix(agent_opts *o, const char *v)
{
	char tail;
	long m[3];
	if (!v || sscanf(v, "%ld:%ld:%ld%c", &m[0], &m[1], &m[2], &tail) != 3 || m[0] < 0 ||
	    m[1] < 0 || m[2] < 0 || m[0] > 1000000 || m[1] > 1000000 || m[2] > 1000000 ||
	    m[0] + m[1] + m[2] == 0) {
		fprintf(stderr, "herd agent: --mix wants S:B:C, three weights 0..1000000, "
				"not all 0\n");
		return -1;
	}
	memcpy(o->mix, m, sizeof(m));
	return 0;
}

/* --prompt-len MIN[:MAX] (tokens). 0 or -1 (printed). */
static int agent_parse_plen(agent_opts *o, const char *v)
{
	char tail;
	long lo, hi;
	int k = v ? sscanf(v, "%ld:%ld%c", &lo, &hi, &tail) : 0;
	if (k == 1)
		hi = lo;
	if ((k != 1 && k != 2) || lo < 1 || hi < lo || hi > AGENT_MAX_PROMPT_TOKENS / 2) {
		fprintf(stderr, "herd agent: --prompt-len wants MIN[:MAX] tokens, 1 <= MIN <= MAX <= %d\n",
			AGENT_MAX_PROMPT_TOKENS / 2);
		return -1;
	}
	o->plen_min = lo;
	o->plen_max = hi;
	return 0;
}

/* A non-numeric argument a (v: the next one or NULL). Returns 2 when a was
 * a flag, 3 when it also took v, 1 for --help, -1 on an error (printed). */
static int agent_parse_word(agent_opts *o, const char *a, const char *v)
{
	static const struct {
		const char *name;
		size_t off;
	} flags[] = {
		{"--attach", offsetof(agent_opts, attach)}, {"--local", offsetof(agent_opts, local)},
		{"--touch", offsetof(agent_opts, touch)}, {"--reconnect", offsetof(agent_opts, reconnect)},
		{"--report-first", offsetof(agent_opts, report_first)},
		{"--cache", offsetof(agent_opts, cache)}, {"--quiet", offsetof(agent_opts, quiet)},
	};
	for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
		if (!strcmp(a, flags[k].name)) {
			*(int *)((char *)o + flags[k].off) = 1;
			return 2;
		}
	if (!strcmp(a, "--json")) /* the only output format */
		return 2;
	if (!strcmp(a, "-h") || !strcmp(a, "--help"))
		return 1;
	if (!strcmp(a, "--mix"))
		return agent_parse_mix(o, v) ? -1 : 3;
	if (!strcmp(a, "--prompt-len"))
		return agent_parse_plen(o, v) ? -1 : 3;
	double *frac = !strcmp(a, "--shared-frac")   ? &o->shared_frac
		       : !strcmp(a, "--repeat-frac") ? &o->repeat_frac
		       : !strcmp(a, "--stream-frac") ? &o->stream_frac
		       : !strcmp(a, "--rate")	     ? &o->rate
						     : NULL;
	if (frac) {
		const double hi = frac == &o->rate ? 1e6 : 1;
		if (cli_float(a, v, frac))
			return -1;
		if (!(*frac >= 0 && *frac <= hi)) {
			fprintf(stderr, "herd agent: %s wants a number in [0, %g]\n", a, hi);
			return -1;
		}
		return 3;
	}
	if (!strcmp(a, "--socket") || !strcmp(a, "--model") || !strcmp(a, "--name")) {
		if (!v) {
			fprintf(stderr, "herd agent: %s needs a value\n", a);
			return -1;
		}
		*(!strcmp(a, "--socket") ? &o->socket : !strcmp(a, "--model") ? &o->model : &o->name) = v;
		return 3;
	}
	fprintf(stderr, "herd agent: unexpected argument '%s'\n", a);
	return -1;
}

static int agent_parse(int argc, char **argv, agent_opts *o)
{
	*o = (agent_opts){.phase = -1, .requests = 2, .max_tokens = 16, .stream_every = 2,
			  .local_tokens = 2, .threads = 1, .go_fd = -1, .exit_fd = -1, .reconnect_ms = 30000,
			  .cancel_after = 2, .stream_frac = -1, .agents = 1};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		static const struct {
			const char *name;
			size_t off;
			long lo, hi;
		} nums[] = {
			{.name = "--index", .off = offsetof(agent_opts, index), .lo = 0, .hi = 1 << 20},
			{.name = "--phase", .off = offsetof(agent_opts, phase), .lo = 0, .hi = 1 << 20},
			{.name = "--requests", .off = offsetof(agent_opts, requests), .lo = 0, .hi = 1 << 20},
			{.name = "--max-tokens", .off = offsetof(agent_opts, max_tokens), .lo = 0, .hi = 1 << 20},
			{.name = "--stream-every", .off = offsetof(agent_opts, stream_every), .lo = 0, .hi = 1 << 20},
			{.name = "--local-tokens", .off = offsetof(agent_opts, local_tokens), .lo = 0, .hi = 4096},
			{.name = "--threads", .off = offsetof(agent_opts, threads), .lo = 1, .hi = 256},
			{.name = "--go-fd", .off = offsetof(agent_opts, go_fd), .lo = 0, .hi = 1 << 20},
			{.name = "--exit-fd", .off = offsetof(agent_opts, exit_fd), .lo = 0, .hi = 1 << 20},
			{.name = "--reconnect-ms", .off = offsetof(agent_opts, reconnect_ms), .lo = 0, .hi = 3600000},
			{.name = "--duration-s", .off = offsetof(agent_opts, duration_s), .lo = 0, .hi = 7 * 86400},
			{.name = "--cancel-after", .off = offsetof(agent_opts, cancel_after), .lo = 1, .hi = 1 << 20},
			{.name = "--think-ms", .off = offsetof(agent_opts, think_ms), .lo = 0, .hi = 3600000},
			{.name = "--shared-len", .off = offsetof(agent_opts, shared_len), .lo = 0,
			 .hi = AGENT_MAX_PROMPT_TOKENS / 2},
			{.name = "--agents", .off = offsetof(agent_opts, agents), .lo = 1, .hi = 1 << 20},
		};
		int done = 0;
		for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]) && !done; k++)
			if (!strcmp(a, nums[k].name)) {
				if (cli_int(a, v, nums[k].lo, nums[k].hi,
					    (long *)((char *)o + nums[k].off)))
					return -1;
				i++;
				done = 1;
			}
		if (done)
			continue;
		const int f = agent_parse_word(o, a, v);
		if (f < 0 || f == 1)
			return f;
		i += f == 3;
	}
	if (!o->socket || !o->model) {
		fprintf(stderr, "herd agent: --socket and --model are required\n");
		return -1;
	}
	if ((o->local || o->touch) && !o->attach)
		o->attach = 1;
	return 0;
}

/* Load mode: the model's vocabulary size (token prompts stay inside it). */
static int agent_vocab(herd_client *c, agent_opts *o)
{
	const herd_model_info *mi;
	size_t n = 0;
	if (herd_models(c, &mi, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (!strcmp(mi[i].name, o->model))
				o->n_vocab = mi[i].n_vocab;
	if (o->n_vocab > 3)
		return 0;
	jline j = {0};
	jl_fmt(&j, "{\"ev\":\"fatal\",\"stage\":\"connect\",\"code\":%d", HERD_E_MISSING);
	jl_str(&j, "msg", "the broker does not serve that model (no vocabulary size)");
	jl_emit(&j);
	return -1;
}

/* One "progress" or "finished" line with the counts. */
static void agent_emit_counts(const char *ev, const agent_counts *cnt)
{
	jline j = {0};
	jl_fmt(&j,
	       "{\"ev\":\"%s\",\"pid\":%d,\"ok\":%ld,\"failed\":%ld,\"cancelled\":%ld,"
	       "\"streamed\":%ld,\"blocking\":%ld,\"cancel_requests\":%ld",
	       ev, (int)getpid(), cnt->ok, cnt->failed, cnt->cancelled, cnt->kind[AGENT_STREAM],
	       cnt->kind[AGENT_BLOCK], cnt->kind[AGENT_CANCEL]);
	jl_emit(&j);
}

/* Waits the request's think time: 0..think_ms ms, from the request's hash. */
static void agent_think(const agent_opts *o, long req)
{
	if (o->think_ms <= 0)
		return;
	const uint64_t ms = agent_hash(o->index, req, 2) % ((uint64_t)o->think_ms + 1);
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* The requests: --requests of them, or with --duration-s as many as fit
 * (a request begun before the end runs to completion). */
static void agent_loop(herd_client *c, const agent_opts *o, agent_counts *cnt)
{
	const double t_end = now_ms() + (double)o->duration_s * 1e3;
	double t_progress = now_ms() + AGENT_PROGRESS_MS, t_next = now_ms();
	for (long r = 0; o->duration_s > 0 ? now_ms() < t_end : r < o->requests; r++) {
		agent_think(o, r);
		agent_arrival(o, r, &t_next);
		if (o->duration_s > 0 && now_ms() >= t_end)
			break;
		if (agent_request(c, o, r, cnt) && o->duration_s > 0)
			usleep(AGENT_FAIL_PAUSE_US);
		if (o->quiet && now_ms() >= t_progress) {
			agent_emit_counts("progress", cnt);
			t_progress = now_ms() + AGENT_PROGRESS_MS;
		}
	}
}

int cmd_agent(int argc, char **argv)
{
	agent_opts o;
	int pr = agent_parse(argc, argv, &o);
	if (pr) {
		agent_usage(pr > 0 ? stdout : stderr);
		return pr > 0 ? 0 : 2;
	}
	char name[64];
	if (o.name)
		snprintf(name, sizeof(name), "%s", o.name);
	else
		snprintf(name, sizeof(name), "agent-%ld", o.index);
	herd_client *c = NULL;
	herd_local_model *lm = NULL;
	jline ready = {0};
	int status = 1;

	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = o.socket;
	co.name = name;
	co.timeout_ms = 30000;
	int rc = herd_connect(&c, &co);
	if (rc && o.reconnect && c && is_conn_error(rc))
		rc = agent_reconnect(c, &o, -1);
	if (rc) {
		jline j = {0};
		jl_fmt(&j, "{\"ev\":\"fatal\",\"stage\":\"connect\",\"code\":%d", rc);
		jl_str(&j, "msg", herd_client_errmsg(c));
		jl_emit(&j);
		goto out;
	}
	if (o.plen_max > 0 && agent_vocab(c, &o))
		goto out;
	jl_fmt(&ready, "{\"ev\":\"ready\",\"pid\":%d,\"index\":%ld,\"agent\":%llu,\"attached\":%d",
	       (int)getpid(), o.index, (unsigned long long)herd_agent_id(c), o.attach);
	if (o.attach && agent_attach(c, &o, &lm, &ready))
		goto out;
	jl_emit(&ready);
	barrier_wait(o.go_fd);
	o.go_fd = -1;
	agent_counts cnt = {0};
	agent_loop(c, &o, &cnt);
	agent_emit_counts("finished", &cnt);
	barrier_wait(o.exit_fd);
	o.exit_fd = -1;
	status = cnt.failed ? 1 : 0;
out:
	free(ready.p);
	if (o.go_fd >= 0)
		close((int)o.go_fd);
	if (o.exit_fd >= 0)
		close((int)o.exit_fd);
	herd_local_detach(lm);
	herd_close(c);
	return status;
}
