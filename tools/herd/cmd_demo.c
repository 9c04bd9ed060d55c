/* herd demo: one broker, many agent processes, one report.
 *
 *   herd demo [--agents N] [--requests-per-agent R] [-m MODEL] [--json]
 *             [--max-tokens N] [--stream-every K] [--threads T] [--max-batch B]
 *             [--local] [--keep-image] [--config FILE]
 *
 * Starts herdd (the sibling of this herd binary) on a private socket in a
 * temporary directory with MODEL (default models/tinyllama-1.1b-demo-q4_0.gguf,
 * made with mkmodel when missing: TinyLlama-1.1B's shape, Q4_0, random
 * weights), waits until it serves, forks N agent processes (`herd agent`,
 * default 69) that each connect, attach the shared image and read every page
 * of it (with --local also run the model in-process once: about 0.4 s of CPU
 * per agent on the TinyLlama shape), then wait at a barrier. Then one request alone
 * gives the single-agent speed, the barrier opens and every agent sends R
 * greedy requests (default 2, 16 new tokens, every second one streamed). When
 * all have finished, while they are still attached, it sums the PSS
 * (/proc/<pid>/smaps_rollup) of the broker and every agent, reads the
 * broker's batch statistics (herdctl --json models, when herdctl is there),
 * lets the agents exit, stops the broker (SIGTERM) and removes the image and
 * the temporary directory (--keep-image keeps the image for the next run to
 * adopt). Ctrl-C or SIGTERM at any point also cleans up.
 *
 * Report (text, or --json: one object): agents, requests, failed, generated
 * tokens, wall time, aggregate gen_tok_s and the single-agent figure,
 * latency_ms p50/p95/p99 (client-side, per request), first-token latency of
 * streamed requests, image_bytes, pss_total_bytes (broker + agents) and its
 * parts, and the bound image x 1.1 + N x 4 MiB.
 *
 * Exit status: 0 when every agent and request succeeded, 1 otherwise, 2 for
 * a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "demo.h"
#include "herd/herd.h"
#include "model/gguf.h"
#include "model/mkmodel.h"
#include "shm/image.h"
#include "common/clock.h"
#include "common/procfs.h"

#define DEMO_DEFAULT_MODEL "models/tinyllama-1.1b-demo-q4_0.gguf"
#define DEMO_MODEL_NAME "demo"
#define DEMO_AGENT_MIB 4 /* private memory allowed per agent in the PSS bound */
#define DEMO_READY_TIMEOUT_S 1800 /* for every agent to attach and be ready */
#define DEMO_REAP_MS 10000        /* wait for a process to exit, then SIGKILL */
#define DEMO_TAIL_LINES 15        /* of each log shown after a failure */
#define DEMO_NFTW_FDS 16          /* descriptors nftw may hold open */

int dvec_push(dvec *d, double x)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		double *nv = realloc(d->v, cap * sizeof(double));
		if (!nv)
			return -ENOMEM;
		d->v = nv;
		d->cap = cap;
	}
	d->v[d->n++] = x;
	return 0;
}

static int cmp_dbl(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double pct(dvec *d, double q)
{
	if (!d->n)
		return 0;
	qsort(d->v, d->n, sizeof(double), cmp_dbl);
	size_t k = (size_t)ceil(q * (double)d->n);
	return d->v[k ? k - 1 : 0];
}

/* ---- paths and files ------------------------------------------------------ */

static int demo_paths(demo *d)
{
	char self[PATH_MAX];
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (l <= 0) {
		fprintf(stderr, "herd demo: cannot read /proc/self/exe: %s\n", strerror(errno));
		return -1;
	}
	self[l] = 0;
	snprintf(d->herd, sizeof(d->herd), "%s", self);
	const char *dir = dirname(self);
	snprintf(d->herdd, sizeof(d->herdd), "%.*s/herdd", PATH_MAX - 16, dir);
	snprintf(d->herdctl, sizeof(d->herdctl), "%.*s/herdctl", PATH_MAX - 16, dir);
	if (access(d->herdd, X_OK)) {
		fprintf(stderr, "herd demo: the broker is not at %s (build herdd beside herd)\n",
			d->herdd);
		return -1;
	}
	return 0;
}

static int demo_model(demo *d)
{
	const char *m = d->o.model ? d->o.model : DEMO_DEFAULT_MODEL;
	if (access(m, R_OK) == 0 || d->o.model) {
		if (!realpath(m, d->model)) {
			fprintf(stderr, "herd demo: cannot read model '%s': %s\n", m, strerror(errno));
			return -1;
		}
		return 0;
	}
	/* The default demo model is missing: make it (a few seconds). */
	char dirbuf[PATH_MAX];
	snprintf(dirbuf, sizeof(dirbuf), "%s", m);
	mkdir(dirname(dirbuf), 0755);
	fprintf(stderr, "herd demo: making %s (TinyLlama-1.1B's shape, Q4_0, random weights)\n", m);
	mkmodel_opts mo = {.shape = "tinyllama-1.1b", .ftype = "Q4_0", .out_path = m, .seed = 0};
	char err[1024] = "";
	int rc = mkmodel_write(&mo, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herd demo: cannot make %s: %s\n", m, err[0] ? err : herd_strerror(rc));
		return -1;
	}
	if (!realpath(m, d->model)) {
		fprintf(stderr, "herd demo: %s: %s\n", m, strerror(errno));
		return -1;
	}
	return 0;
}

/* 1 when the GGUF's general.name marks it as mkmodel's random-weight demo. */
static int is_random_demo(const char *path)
{
	gguf_ctx *g = NULL;
	gguf_str s;
	int r = 0;
	if (gguf_open(&g, path, NULL, 0) == 0 && gguf_get_str(g, "general.name", &s) == 0)
		r = s.len >= 14 && memmem(s.ptr, s.len, "random weights", 14) != NULL;
	gguf_close(g);
	return r;
}

static void tail_file(const char *path, const char *what, int lines)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char(*ring)[512] = calloc((size_t)lines, 512);
	int n = 0;
	if (ring) {
		while (fgets(ring[n % lines], 512, f))
			n++;
		fprintf(stderr, "---- last lines of the %s (%s) ----\n", what, path);
		for (int i = n > lines ? n - lines : 0; i < n; i++)
			fputs(ring[i % lines], stderr);
	}
	free(ring);
	fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* ---- processes -------------------------------------------------------------- */

/* fork + exec argv with stdout to out_fd (or the log when -1) and stderr to
 * err_path; the signal mask is restored in the child; keep[] fds survive
 * exec. Returns the pid or -1. */
static pid_t demo_spawn(demo *d, char *const *argv, int out_fd, const char *err_path,
			const int *keep, int n_keep)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	sigprocmask(SIG_SETMASK, &d->old_mask, NULL);
	int e = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (e >= 0)
		dup2(e, STDERR_FILENO);
	dup2(out_fd >= 0 ? out_fd : (e >= 0 ? e : STDERR_FILENO), STDOUT_FILENO);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null >= 0)
		dup2(null, STDIN_FILENO);
	for (int i = 0; i < n_keep; i++)
		fcntl(keep[i], F_SETFD, 0);
	execv(argv[0], argv);
	_exit(127);
}

/* Waits for pid up to ms, then SIGKILLs it. Returns its wait status. */
static int reap(pid_t pid, int ms)
{
	int st = 0;
	for (int t = 0; t < ms; t += 10) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return st;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return st;
}

/* 1 when SIGINT/SIGTERM arrived (drains the signalfd). */
static int demo_signalled(demo *d)
{
	struct signalfd_siginfo si;
	while (read(d->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		d->interrupted = 1;
	return d->interrupted;
}

static int demo_start_broker(demo *d)
{
	char spec[PATH_MAX + 80], threads[32], batch[32];
	snprintf(spec, sizeof(spec), "%s=%s", DEMO_MODEL_NAME, d->model);
	snprintf(threads, sizeof(threads), "%ld", d->o.threads);
	snprintf(batch, sizeof(batch), "%ld", d->o.max_batch);
	char *argv[16];
	int n = 0;
	argv[n++] = d->herdd;
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--model";
	argv[n++] = spec;
	argv[n++] = "--state-dir";
	argv[n++] = d->dir;
	if (d->o.threads > 0) {
		argv[n++] = "--threads";
		argv[n++] = threads;
	}
	if (d->o.max_batch > 0) {
		argv[n++] = "--max-batch";
		argv[n++] = batch;
	}
	if (d->o.config) {
		argv[n++] = "--config";
		argv[n++] = (char *)d->o.config;
	}
	argv[n] = NULL;
	d->broker = demo_spawn(d, argv, -1, d->log, NULL, 0);
	if (d->broker < 0) {
		fprintf(stderr, "herd demo: fork: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* The model the run requests (o.model_name, else the broker's first):
 * fills its name, segment and image size. c, or NULL when it is not served. */
static herd_client *demo_pick_model(demo *d, herd_client *c, const herd_model_info *mi, size_t n)
{
	const char *want = d->o.model_name ? d->o.model_name : d->o.socket ? NULL : DEMO_MODEL_NAME;
	for (size_t i = 0; i < n; i++)
		if (!want || !strcmp(mi[i].name, want)) {
			snprintf(d->model_name, sizeof(d->model_name), "%s", mi[i].name);
			snprintf(d->segment, sizeof(d->segment), "%s", mi[i].segment);
			d->image_bytes = mi[i].image_bytes;
			return c;
		}
	fprintf(stderr, "herd: the broker at %s does not serve model '%s'\n", d->sock, want);
	herd_close(c);
	return NULL;
}

/* Waits until the broker serves; fills segment and image size. Returns a
 * connected client (for the single-agent request) or NULL. */
static herd_client *demo_wait_broker(demo *d)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = d->sock;
	co.name = "demo";
	co.timeout_ms = 2000;
	const double t0 = clock_mono_s();
	herd_client *c = NULL;
	/* a broker we start may build its image first; a running one answers now */
	const double limit = d->o.socket ? 5 : 900;
	while (clock_mono_s() - t0 < limit) {
		if (demo_signalled(d))
			goto fail;
		int st;
		if (d->broker > 0 && waitpid(d->broker, &st, WNOHANG) == d->broker) {
			d->broker = 0;
			fprintf(stderr, "herd demo: herdd exited during start-up\n");
			tail_file(d->log, "herdd log", 20);
			goto fail;
		}
		herd_close(c);
		c = NULL;
		if (herd_connect(&c, &co) == 0) {
			const herd_model_info *mi;
			size_t n;
			if (herd_models(c, &mi, &n) == 0 && n > 0)
				return demo_pick_model(d, c, mi, n);
			return c;
		}
		usleep(100 * 1000);
	}
	if (d->o.socket) {
		const char *m = c ? herd_client_errmsg(c) : NULL;
		fprintf(stderr, "herd: no broker serving at %s%s%s\n", d->sock, m && m[0] ? ": " : "",
			m && m[0] ? m : "");
		goto fail;
	}
	fprintf(stderr, "herd demo: herdd did not start serving within 15 minutes\n");
fail:
	herd_close(c);
	return NULL;
}

static int demo_start_agents(demo *d)
{
	int go[2], ex[2];
	if (pipe2(go, O_CLOEXEC) || pipe2(ex, O_CLOEXEC)) {
		fprintf(stderr, "herd demo: pipe: %s\n", strerror(errno));
		return -1;
	}
	d->go_w = go[1];
	d->exit_w = ex[1];
	char idx[32], req[32], mt[32], se[32], gofd[32], exfd[32];
	snprintf(req, sizeof(req), "%ld", d->o.requests);
	snprintf(mt, sizeof(mt), "%ld", d->o.max_tokens);
	snprintf(se, sizeof(se), "%ld", d->o.stream_every);
	snprintf(gofd, sizeof(gofd), "%d", go[0]);
	snprintf(exfd, sizeof(exfd), "%d", ex[0]);
	int rc = 0;
	for (long i = 0; i < d->n_ag; i++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC)) {
			fprintf(stderr, "herd demo: pipe: %s\n", strerror(errno));
			rc = -1;
			break;
		}
		snprintf(idx, sizeof(idx), "%ld", i);
		char *argv[80];
		int n = 0;
		argv[n++] = d->herd;
		argv[n++] = "agent";
		argv[n++] = "--socket";
		argv[n++] = d->sock;
		argv[n++] = "--model";
		argv[n++] = d->model_name;
		argv[n++] = "--index";
		argv[n++] = idx;
		argv[n++] = "--requests";
		argv[n++] = req;
		argv[n++] = "--max-tokens";
		argv[n++] = mt;
		argv[n++] = "--stream-every";
		argv[n++] = se;
		if (!d->o.no_attach) {
			argv[n++] = "--attach";
			argv[n++] = "--touch";
		}
		if (d->o.local)
			argv[n++] = "--local";
		for (int k = 0; d->o.extra && d->o.extra[k] && n < 60; k++)
			argv[n++] = d->o.extra[k];
		argv[n++] = "--go-fd";
		argv[n++] = gofd;
		argv[n++] = "--exit-fd";
		argv[n++] = exfd;
		argv[n] = NULL;
		const int keep[2] = {go[0], ex[0]};
		pid_t pid = demo_spawn(d, argv, p[1], d->alog, keep, 2);
		close(p[1]);
		if (pid < 0) {
			close(p[0]);
			fprintf(stderr, "herd demo: fork: %s\n", strerror(errno));
			rc = -1;
			break;
		}
		d->ag[i].pid = pid;
		d->ag[i].fd = p[0];
	}
	close(go[0]);
	close(ex[0]);
	return rc;
}

/* ---- agent output ------------------------------------------------------------ */

static double jd(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_double(v) : 0;
}

/* The load-mode keys of a "req" line (herd bench serve). */
static void demo_line_load(demo *d, json_object *o)
{
	json_object *v;
	if (!json_object_object_get_ex(o, "ttft_ms", &v))
		return;
	if (jd(o, "ttft_ms") >= 0)
		dvec_push(&d->ttft, jd(o, "ttft_ms"));
	if (jd(o, "tpot_ms") >= 0)
		dvec_push(&d->tpot, jd(o, "tpot_ms"));
	d->n_cached += (uint64_t)jd(o, "n_cached");
	d->n_merged += jd(o, "merged") != 0;
	d->n_hit += jd(o, "cached") != 0;
	d->n_repeat += jd(o, "repeat") != 0;
}

static void demo_line(demo *d, demo_agent *a, const char *line)
{
	json_object *o = json_tokener_parse(line);
	json_object *ev = NULL;
	if (!o || !json_object_object_get_ex(o, "ev", &ev)) {
		json_object_put(o);
		return;
	}
	const char *e = json_object_get_string(ev);
	if (!strcmp(e, "ready")) {
		a->ready = 1;
		dvec_push(&d->attach, jd(o, "attach_ms") + jd(o, "load_ms"));
		if (d->o.local)
			dvec_push(&d->local, jd(o, "local_ms"));
	} else if (!strcmp(e, "req")) {
		if (jd(o, "ok") != 0) {
			d->req_ok++;
			d->gen_tokens += (uint64_t)jd(o, "n_gen");
			d->prompt_tokens += (uint64_t)jd(o, "n_prompt");
			dvec_push(&d->lat, jd(o, "latency_ms"));
			if (jd(o, "first_ms") >= 0 && jd(o, "stream") != 0)
				dvec_push(&d->first, jd(o, "first_ms"));
			json_object *lv;
			if (json_object_object_get_ex(o, "ttft_ms", &lv))
				demo_line_load(d, o);
			else if (jd(o, "first_ms") >= 0 && jd(o, "stream") != 0 && jd(o, "n_gen") > 1)
				dvec_push(&d->tpot, (jd(o, "latency_ms") - jd(o, "first_ms")) /
							    (jd(o, "n_gen") - 1));
		} else {
			d->req_failed++;
			json_object *m = NULL;
			json_object_object_get_ex(o, "msg", &m);
			fprintf(stderr, "herd demo: agent %d: request failed: %s\n", (int)a->pid,
				m ? json_object_get_string(m) : "?");
		}
	} else if (!strcmp(e, "finished")) {
		a->finished = 1;
	} else if (!strcmp(e, "fatal")) {
		a->fatal = 1;
		json_object *m = NULL;
		json_object_object_get_ex(o, "msg", &m);
		fprintf(stderr, "herd demo: agent %d failed: %s\n", (int)a->pid,
			m ? json_object_get_string(m) : "?");
	}
	json_object_put(o);
}

static void demo_read(demo *d, demo_agent *a)
{
	if (a->cap - a->len < 4096) {
		size_t cap = a->cap ? a->cap * 2 : 8192;
		char *nb = realloc(a->buf, cap);
		if (!nb)
			return;
		a->buf = nb;
		a->cap = cap;
	}
	ssize_t n = read(a->fd, a->buf + a->len, a->cap - a->len - 1);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		close(a->fd);
		a->fd = -1;
		if (!a->finished && !a->fatal) {
			a->fatal = 1;
			fprintf(stderr, "herd demo: agent %d exited early (see %s)\n", (int)a->pid, d->alog);
		}
		return;
	}
	a->len += (size_t)n;
	char *start = a->buf, *nl;
	while ((nl = memchr(start, '\n', a->len - (size_t)(start - a->buf)))) {
		*nl = 0;
		demo_line(d, a, start);
		start = nl + 1;
	}
	a->len -= (size_t)(start - a->buf);
	memmove(a->buf, start, a->len);
}

/* Reads agent output until every agent is ready (phase 0) or finished
 * (phase 1), or failed. Returns 0, or -1 on interruption / timeout. */
int demo_pump(demo *d, int phase, double timeout_s)
{
	struct pollfd *p = calloc((size_t)d->n_ag + 1, sizeof(*p));
	demo_agent **who = calloc((size_t)d->n_ag + 1, sizeof(*who));
	int rc = -1;
	if (!p || !who)
		goto out;
	const double t0 = clock_mono_s();
	for (;;) {
		int n = 0, waiting = 0;
		p[n++] = (struct pollfd){.fd = d->sig_fd, .events = POLLIN};
		for (long i = 0; i < d->n_ag; i++) {
			demo_agent *a = &d->ag[i];
			if (!a->fatal && !(phase == 0 ? a->ready : a->finished))
				waiting++;
			if (a->fd >= 0) {
				who[n] = a;
				p[n++] = (struct pollfd){.fd = a->fd, .events = POLLIN};
			}
		}
		if (!waiting) {
			rc = 0;
			break;
		}
		if (clock_mono_s() - t0 > timeout_s) {
			fprintf(stderr, "herd demo: %d agents did not %s within %.0f s\n", waiting,
				phase == 0 ? "get ready" : "finish", timeout_s);
			break;
		}
		int r = poll(p, (nfds_t)n, 1000);
		if (r < 0 && errno != EINTR)
			break;
		if (demo_signalled(d))
			break;
		for (int k = 1; r > 0 && k < n; k++)
			if (p[k].revents)
				demo_read(d, who[k]);
		int st;
		if (d->broker > 0 && waitpid(d->broker, &st, WNOHANG) == d->broker) {
			d->broker = 0;
			fprintf(stderr, "herd demo: herdd died\n");
			tail_file(d->log, "herdd log", 20);
			break;
		}
	}
out:
	free(p);
	free(who);
	return rc;
}

/* ---- measuring ----------------------------------------------------------------- */

/* Pss and Rss of pid in bytes (0 when unreadable). */
void proc_mem(pid_t pid, uint64_t *pss, uint64_t *rss)
{
	*pss = proc_mem_bytes(pid, "smaps_rollup", "Pss:");
	*rss = proc_mem_bytes(pid, "smaps_rollup", "Rss:");
}

json_object *demo_herdctl(const demo *d, const char *args)
{
	if (access(d->herdctl, X_OK))
		return NULL;
	char cmd[PATH_MAX * 2 + 128];
	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' --json %s 2>/dev/null", d->herdctl, d->sock,
		 args);
	FILE *f = popen(cmd, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 20, n = 0, r;
	char *buf = malloc(cap);
	while (buf && (r = fread(buf + n, 1, cap - 1 - n, f)) > 0)
		n += r;
	pclose(f);
	if (!buf)
		return NULL;
	buf[n] = 0;
	json_object *o = json_tokener_parse(buf);
	free(buf);
	return o;
}

/* Batch statistics from `herdctl --json models` (best effort). */
static void broker_stats(demo *d, double *avg_batch, long *max_batch, long *steps)
{
	*avg_batch = 0;
	*max_batch = *steps = 0;
	json_object *o = demo_herdctl(d, "models");
	if (o && json_object_is_type(o, json_type_array) && json_object_array_length(o) > 0) {
		json_object *m = json_object_array_get_idx(o, 0);
		*avg_batch = jd(m, "avg_batch");
		*max_batch = (long)jd(m, "max_batch_seen");
		*steps = (long)jd(m, "steps");
		d->tpot_avg = jd(m, "tpot_ms_avg");
		d->step_gap_p95 = jd(m, "step_gap_ms_p95");
	}
	json_object_put(o);
}

/* One request alone: the single-agent generation speed (tokens/s). */
static double single_speed(const demo *d, herd_client *c)
{
	herd_request r;
	herd_request_init(&r);
	r.model = d->model_name;
	r.prompt = "Once upon a time 999999";
	r.max_tokens = (int)d->o.max_tokens;
	r.no_cache = 1;
	herd_result res;
	const double t0 = clock_mono_s();
	int rc = herd_generate(c, &r, &res);
	const double dt = clock_mono_s() - t0;
	double v = rc == 0 && dt > 0 ? res.n_gen / dt : 0;
	if (rc)
		fprintf(stderr, "herd demo: single-agent request failed: %s\n", herd_client_errmsg(c));
	herd_result_free(&res);
	return v;
}

/* ---- main --------------------------------------------------------------------- */

static void demo_usage(FILE *f)
{
	fprintf(f,
		"usage: herd demo [--agents N] [--requests-per-agent R] [-m MODEL] [--json]\n"
		"                 [--max-tokens N] [--stream-every K] [--threads T] [--max-batch B]\n"
		"                 [--local] [--keep-image] [--config FILE]\n"
		"  --agents N              agent processes (default 69)\n"
		"  --requests-per-agent R  greedy requests per agent (default 2)\n"
		"  -m MODEL                GGUF model (default %s, made if missing)\n"
		"  --max-tokens N          new tokens per request (default 16)\n"
		"  --stream-every K        every K-th request streams (default 2; 0: none)\n"
		"  --threads T             broker compute threads (default: every CPU)\n"
		"  --max-batch B           broker batch size (default: the broker's, 32)\n"
		"  --local                 each agent also runs the model in-process once\n"
		"  --keep-image            leave the shared image for the next broker to adopt\n"
		"  --config FILE           herdd configuration for the broker (e.g. ctx_size, kv_type)\n"
		"  --json                  print the report as one JSON object\n",
		DEMO_DEFAULT_MODEL);
}

static int demo_parse(int argc, char **argv, demo_opts *o)
{
	*o = (demo_opts){.agents = 69, .requests = 2, .max_tokens = 16, .stream_every = 2};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long *num = !strcmp(a, "--agents")		 ? &o->agents
			    : !strcmp(a, "--requests-per-agent") ? &o->requests
			    : !strcmp(a, "--max-tokens")	 ? &o->max_tokens
			    : !strcmp(a, "--stream-every")	 ? &o->stream_every
			    : !strcmp(a, "--threads")		 ? &o->threads
			    : !strcmp(a, "--max-batch")		 ? &o->max_batch
								 : NULL;
		if (num) {
			const long hi = num == &o->agents ? 900 : 1 << 20;
			if (cli_int(a, v, num == &o->agents ? 1 : 0, hi, num))
				return -1;
			i++;
		} else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--config")) {
			if (!v) {
				fprintf(stderr, "herd demo: %s needs a path\n", a);
				return -1;
			}
			*(a[1] == 'm' || a[2] == 'm' ? &o->model : &o->config) = v;
			i++;
		} else if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--local")) {
			o->local = 1;
		} else if (!strcmp(a, "--keep-image")) {
			o->keep_image = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			return 1;
		} else {
			fprintf(stderr, "herd demo: unexpected argument '%s'\n", a);
			return -1;
		}
	}
	return 0;
}

static void report(demo *d, double wall_s, double single, uint64_t pss_broker, uint64_t pss_agents,
		   uint64_t rss_total, long n_measured)
{
	double avg_batch;
	long max_batch, steps;
	broker_stats(d, &avg_batch, &max_batch, &steps);
	const uint64_t pss_total = pss_broker + pss_agents;
	const uint64_t bound = (uint64_t)((double)d->image_bytes * 1.1) +
			       (uint64_t)d->n_ag * (DEMO_AGENT_MIB << 20);
	const double agg = wall_s > 0 ? (double)d->gen_tokens / wall_s : 0;
	const long failed_agents = (long)d->n_ag - n_measured;
	const double p50 = pct(&d->lat, 0.5), p95 = pct(&d->lat, 0.95), p99 = pct(&d->lat, 0.99);
	const double lmax = d->lat.n ? d->lat.v[d->lat.n - 1] : 0;
	const double f50 = pct(&d->first, 0.5), f95 = pct(&d->first, 0.95), f99 = pct(&d->first, 0.99);
	const double att = pct(&d->attach, 0.5), loc = pct(&d->local, 0.5);
	const long requests = d->req_ok + d->req_failed;
	const long failed = d->req_failed + (d->n_ag * d->o.requests - requests);
	if (d->o.json) {
		printf("{\"model\":\"%s\",\"random_weights_demo\":%s,\"agents\":%ld,\"agents_failed\":%ld,"
		       "\"requests\":%ld,\"failed\":%ld,\"max_tokens\":%ld,\"gen_tokens\":%llu,"
		       "\"prompt_tokens\":%llu,\"broker_start_s\":%.2f,\"agents_ready_s\":%.2f,"
		       "\"wall_s\":%.3f,\"gen_tok_s\":%.2f,\"broker_cpu_s\":%.2f,"
		       "\"single_agent_tok_s\":%.2f,\"speedup\":%.2f,"
		       "\"latency_ms\":{\"p50\":%.1f,\"p95\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
		       "\"first_token_ms\":{\"p50\":%.1f,\"p95\":%.1f,\"p99\":%.1f},"
		       "\"tpot_ms\":{\"p50\":%.1f,\"p95\":%.1f},"
		       "\"attach_ms_p50\":%.2f,\"agents_ran_locally\":%s,\"local_run_ms_p50\":%.1f,"
		       "\"image_bytes\":%llu,\"pss_total_bytes\":%llu,\"pss_broker_bytes\":%llu,"
		       "\"pss_agents_bytes\":%llu,\"pss_agent_avg_bytes\":%llu,\"rss_total_bytes\":%llu,"
		       "\"pss_bound_bytes\":%llu,\"pss_within_bound\":%s,"
		       "\"broker\":{\"steps\":%ld,\"avg_batch\":%.2f,\"max_batch\":%ld,"
		       "\"tpot_ms_avg\":%.1f,\"step_gap_ms_p95\":%.1f}}\n",
		       d->model, d->random_weights ? "true" : "false", d->n_ag, failed_agents, requests,
		       failed, d->o.max_tokens, (unsigned long long)d->gen_tokens,
		       (unsigned long long)d->prompt_tokens, d->broker_s, d->ready_s, wall_s, agg,
		       d->broker_cpu_s, single, single > 0 ? agg / single : 0, p50, p95, p99, lmax, f50,
		       f95, f99, pct(&d->tpot, 0.5), pct(&d->tpot, 0.95), att,
		       d->o.local ? "true" : "false", loc,
		       (unsigned long long)d->image_bytes, (unsigned long long)pss_total,
		       (unsigned long long)pss_broker, (unsigned long long)pss_agents,
		       (unsigned long long)(n_measured ? pss_agents / (uint64_t)n_measured : 0),
		       (unsigned long long)rss_total, (unsigned long long)bound,
		       pss_total <= bound ? "true" : "false", steps, avg_batch, max_batch,
		       d->tpot_avg, d->step_gap_p95);
		return;
	}
	const double mib = 1 << 20;
	printf("herd demo: %ld agent processes on %s%s\n", d->n_ag, d->model,
	       d->random_weights ? " (random weights: the text is gibberish)" : "");
	printf("  requests       %ld (%ld failed), %ld new tokens max each, %llu tokens generated\n",
	       requests, failed, d->o.max_tokens, (unsigned long long)d->gen_tokens);
	printf("  throughput     %.1f tokens/s aggregate over %.1f s; one agent alone %.1f tokens/s "
	       "(x%.1f)\n",
	       agg, wall_s, single, single > 0 ? agg / single : 0);
	printf("  start-up       broker serving after %.1f s, agents attached after %.1f s more\n",
	       d->broker_s, d->ready_s);
	printf("  batching       %ld steps, %.1f sequences per step on average, up to %ld\n", steps,
	       avg_batch, max_batch);
	printf("  latency        p50 %.0f ms  p95 %.0f ms  p99 %.0f ms  (first token p50 %.0f ms)\n",
	       p50, p95, p99, f50);
	printf("  image          %.1f MiB in shared memory (%s), attach %.1f ms\n",
	       (double)d->image_bytes / mib, d->segment, att);
	printf("  memory (PSS)   %.1f MiB total = broker %.1f MiB + %ld agents %.1f MiB "
	       "(%.2f MiB each; every image page mapped%s); RSS sum %.1f MiB\n",
	       (double)pss_total / mib, (double)pss_broker / mib, n_measured,
	       (double)pss_agents / mib,
	       n_measured ? (double)pss_agents / mib / (double)n_measured : 0.0,
	       d->o.local ? ", each ran the model once" : "", (double)rss_total / mib);
	printf("                 bound image x 1.1 + %ld x %d MiB = %.1f MiB: %s\n", d->n_ag,
	       DEMO_AGENT_MIB, (double)bound / mib, pss_total <= bound ? "within" : "EXCEEDED");
}

/* Blocks the signals the demo handles (read from d->sig_fd) and makes the
 * working directory with its socket and log paths, the agent table and the
 * model. 0, or -1 after printing why. */
int demo_setup(demo *d)
{
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGHUP);
	sigprocmask(SIG_BLOCK, &ss, &d->old_mask);
	d->sig_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	snprintf(d->dir, sizeof(d->dir), "/tmp/herd-demo-XXXXXX");
	if (d->sig_fd < 0 || !mkdtemp(d->dir)) {
		fprintf(stderr, "herd demo: %s\n", strerror(errno));
		d->dir[0] = 0;
		return -1;
	}
	if (d->o.socket && strlen(d->o.socket) >= sizeof(d->sock)) {
		fprintf(stderr, "herd: socket path too long: %s\n", d->o.socket);
		return -1;
	}
	snprintf(d->sock, sizeof(d->sock), "%s", d->o.socket ? d->o.socket : "");
	if (!d->o.socket)
		snprintf(d->sock, sizeof(d->sock), "%s/herd.sock", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/herdd.log", d->dir);
	snprintf(d->alog, sizeof(d->alog), "%s/agents.log", d->dir);
	d->ag = calloc((size_t)d->n_ag, sizeof(*d->ag));
	if (!d->ag || demo_paths(d) || (!d->o.socket && demo_model(d)))
		return -1;
	d->random_weights = !d->o.socket && is_random_demo(d->model);
	for (long i = 0; i < d->n_ag; i++)
		d->ag[i].fd = -1;
	return 0;
}

/* Starts the broker and the agents and waits until every agent is ready
 * (attached, at the go barrier). *c is the demo's own connection. 0 or -1. */
int demo_start(demo *d, herd_client **c)
{
	if (!d->o.json && !d->o.socket)
		fprintf(stderr, "herd demo: starting herdd on %s\n", d->model);
	double ts = clock_mono_s();
	if ((!d->o.socket && demo_start_broker(d)) || !(*c = demo_wait_broker(d)))
		return -1;
	d->broker_s = clock_mono_s() - ts;
	ts = clock_mono_s();
	if (!d->o.json)
		fprintf(stderr, "herd demo: broker serving image %s (%.1f MiB); starting %ld agents\n",
			d->segment, (double)d->image_bytes / (1 << 20), d->n_ag);
	if (demo_start_agents(d) || demo_pump(d, 0, DEMO_READY_TIMEOUT_S))
		return -1;
	d->ready_s = clock_mono_s() - ts;
	long n_ready = 0;
	for (long i = 0; i < d->n_ag; i++)
		n_ready += d->ag[i].ready;
	if (!d->o.json)
		fprintf(stderr, "herd demo: %ld agents attached%s; one request alone, then all at once\n",
			n_ready, d->o.local ? " and ran the model locally once" : "");
	return 0;
}

/* With everyone still attached (waiting at the exit barrier): PSS and RSS
 * of the broker and of every agent that finished, then the report.
 * Returns the exit status: 0 when every request of every agent succeeded. */
static int demo_measure(demo *d, double wall, double single)
{
	d->broker_cpu_s = proc_cpu_s(d->broker) - d->broker_cpu_s;
	uint64_t pss_b, rss_b, pss_a = 0, rss_t = 0;
	long n_measured = 0;
	proc_mem(d->broker, &pss_b, &rss_b);
	rss_t = rss_b;
	for (long i = 0; i < d->n_ag; i++) {
		if (!d->ag[i].finished)
			continue;
		uint64_t p, r;
		proc_mem(d->ag[i].pid, &p, &r);
		pss_a += p;
		rss_t += r;
		n_measured++;
	}
	report(d, wall, single, pss_b, pss_a, rss_t, n_measured);
	fflush(stdout);
	return d->req_failed == 0 && n_measured == d->n_ag && d->req_ok == d->n_ag * d->o.requests
		       ? 0
		       : 1;
}

/* Stops and reaps the agents (killed first on failure) and the broker. */
static void demo_stop_procs(demo *d, int status)
{
	if (d->go_w >= 0)
		close(d->go_w);
	if (d->exit_w >= 0)
		close(d->exit_w);
	/* On failure stop every agent first, then reap them (dying processes
	 * unmapping a large image take a moment each: do it in parallel). */
	for (long i = 0; status != 0 && d->ag && i < d->n_ag; i++)
		if (d->ag[i].pid > 0)
			kill(d->ag[i].pid, SIGKILL);
	for (long i = 0; d->ag && i < d->n_ag; i++) {
		demo_agent *a = &d->ag[i];
		if (a->pid > 0)
			reap(a->pid, DEMO_REAP_MS);
		if (a->fd >= 0)
			close(a->fd);
		free(a->buf);
	}
	if (d->broker > 0) {
		kill(d->broker, SIGTERM);
		int st = reap(d->broker, DEMO_REAP_MS);
		if (status == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			fprintf(stderr, "herd demo: herdd did not exit cleanly (status %d)\n", st);
	}
}

/* Shows the logs' tails on failure, removes the image (unless kept) and the
 * working directory, restores the signal mask, frees d. Returns the final
 * exit status (DEMO_EXIT_INTERRUPTED after a signal). */
int demo_cleanup(demo *d, int status)
{
	if (d->interrupted)
		fprintf(stderr, "herd demo: interrupted; cleaning up\n");
	demo_stop_procs(d, status);
	if (status != 0 && !d->interrupted && d->dir[0]) {
		tail_file(d->log, "herdd log", DEMO_TAIL_LINES);
		tail_file(d->alog, "agents' stderr", DEMO_TAIL_LINES);
	}
	if (d->segment[0] && !d->o.keep_image && !d->o.socket)
		shm_image_remove(d->segment);
	if (d->dir[0]) {
		if (!d->o.socket)
			unlink(d->sock);
		unlink(d->log);
		unlink(d->alog);
		/* also the broker's state directory (LMDB files, when it keeps any) */
		nftw(d->dir, rm_entry, DEMO_NFTW_FDS, FTW_DEPTH | FTW_PHYS);
	}
	if (d->sig_fd >= 0)
		close(d->sig_fd);
	sigprocmask(SIG_SETMASK, &d->old_mask, NULL);
	free(d->lat.v);
	free(d->first.v);
	free(d->attach.v);
	free(d->local.v);
	free(d->ttft.v);
	free(d->tpot.v);
	free(d->ag);
	if (d->interrupted)
		status = DEMO_EXIT_INTERRUPTED;
	free(d);
	return status;
}

int cmd_demo(int argc, char **argv)
{
	demo *d = calloc(1, sizeof(*d));
	if (!d)
		return 1;
	herd_client *c = NULL;
	int status = 1;
	d->sig_fd = d->go_w = d->exit_w = -1;
	int pr = demo_parse(argc, argv, &d->o);
	if (pr) {
		demo_usage(pr > 0 ? stdout : stderr);
		free(d);
		return pr > 0 ? 0 : 2;
	}
	d->n_ag = d->o.agents;
	if (demo_setup(d) || demo_start(d, &c))
		goto out;
	const double single = single_speed(d, c);
	herd_close(c);
	c = NULL;
	const double t0 = clock_mono_s();
	d->broker_cpu_s = proc_cpu_s(d->broker);
	close(d->go_w); /* go: every agent sends its requests */
	d->go_w = -1;
	if (demo_pump(d, 1, DEMO_RUN_TIMEOUT_S))
		goto out;
	status = demo_measure(d, clock_mono_s() - t0, single);
out:
	herd_close(c);
	return demo_cleanup(d, status);
}
