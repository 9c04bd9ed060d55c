/* Process harness shared by test_integration.c and test_faults.c (included
 * by both; not a test of its own): a temporary world (directory, socket,
 * model files made with mkmodel_write, a unique model name), the real herdd
 * started as a child process, real agent processes (`herd agent`, fork+exec
 * of the herd binary) whose JSON-line reports are read from a pipe each,
 * `herdctl --json` queries, PSS from /proc/<pid>/smaps_rollup, and the
 * reference: the same greedy request run alone through the engine in the
 * test process (llama_model_load + llama_model_repack + llama_eval + the
 * sampler).
 *
 * Everything a world starts is recorded in it and killed / removed by
 * h_world_destroy (the cmocka teardown), also after a failed assertion:
 * child processes, the socket, files, and every /dev/shm object of the
 * world's model name (its name carries the test's pid).
 *
 * herdd and herdctl are found beside the herd binary (HERD_BIN); a test
 * exits 77 (skipped) when they are missing. */
#ifndef HERD_TESTS_HARNESS_H
#define HERD_TESTS_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "herd/error.h"
#include "kernels/gemm.h"
#include "model/llama.h"
#include "model/mkmodel.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "shm/image.h"
#include "common/clock.h"
#include "common/procfs.h"

#if defined(__SANITIZE_ADDRESS__)
#define H_SANITIZE 1
#else
#define H_SANITIZE 0
#endif

#define H_MAX_PROCS 256
#define H_AGENT_LOCAL_PROMPT "The quick brown fox" /* tools/herd/agent.c */

typedef struct h_agent {
	pid_t pid;
	int fd;             /* its stdout pipe; -1 after EOF */
	char *buf;
	size_t len, cap;
	json_object *lines; /* array of every parsed line */
	int ready, finished, fatal, eof;
	int status;         /* wait status once reaped */
	int reaped;
} h_agent;

typedef struct h_world {
	char herd[PATH_MAX], herdd[PATH_MAX], herdctl[PATH_MAX];
	char dir[64];
	char model_path[160]; /* what the broker serves */
	char ref_path[160];   /* an identical copy the reference engine reads */
	char sock[100], log[160], alog[160];
	char model_name[48];
	char spec[400];
	pid_t broker;
	int go_r, go_w, exit_r, exit_w; /* barriers: closing the write end releases */
	pid_t procs[H_MAX_PROCS];       /* every child, for teardown */
	int n_procs;
	h_agent *agents[H_MAX_PROCS];
	int n_agents;
	/* reference engine */
	llama_model *ref_model;
	llama_ctx *ref_ctx;
	float *ref_logits;
} h_world;

static inline int h_find_bins(h_world *w)
{
	const char *hb = getenv("HERD_BIN");
#ifdef HERD_BIN
	if (!hb)
		hb = HERD_BIN;
#endif
	if (!hb || access(hb, X_OK))
		return -1;
	char tmp[PATH_MAX];
	snprintf(w->herd, sizeof(w->herd), "%s", hb);
	snprintf(tmp, sizeof(tmp), "%s", hb);
	const char *d = dirname(tmp);
	snprintf(w->herdd, sizeof(w->herdd), "%.*s/herdd", PATH_MAX - 16, d);
	snprintf(w->herdctl, sizeof(w->herdctl), "%.*s/herdctl", PATH_MAX - 16, d);
	return access(w->herdd, X_OK) || access(w->herdctl, X_OK) ? -1 : 0;
}

static inline void h_dump(const char *path, const char *what)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[1024];
	fprintf(stderr, "---- %s (%s) ----\n", what, path);
	int n = 0;
	while (fgets(line, sizeof(line), f) && n++ < 400)
		fputs(line, stderr);
	fclose(f);
}

/* Makes the world: directory, the model twice (the same bytes: mkmodel is
 * deterministic), the reference engine. shape "mini", type Q4_0. */
static inline h_world *h_world_create(const char *tag)
{
	h_world *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	w->go_r = w->go_w = w->exit_r = w->exit_w = -1;
	if (h_find_bins(w)) {
		fprintf(stderr, "herd, herdd or herdctl not found beside HERD_BIN; skipping\n");
		free(w);
		exit(77);
	}
	snprintf(w->dir, sizeof(w->dir), "/tmp/herd-%s-XXXXXX", tag);
	assert_non_null(mkdtemp(w->dir));
	snprintf(w->model_path, sizeof(w->model_path), "%s/mini.gguf", w->dir);
	snprintf(w->ref_path, sizeof(w->ref_path), "%s/mini-ref.gguf", w->dir);
	snprintf(w->sock, sizeof(w->sock), "%s/herd.sock", w->dir);
	snprintf(w->log, sizeof(w->log), "%s/herdd.log", w->dir);
	snprintf(w->alog, sizeof(w->alog), "%s/agents.log", w->dir);
	/* unique per test process, so concurrent runs never share an image */
	snprintf(w->model_name, sizeof(w->model_name), "%s%d", tag, (int)getpid());
	snprintf(w->spec, sizeof(w->spec), "%s=%s", w->model_name, w->model_path);
	char err[512] = "";
	for (int i = 0; i < 2; i++) {
		mkmodel_opts mo = {.shape = "mini", .ftype = "Q4_0",
				   .out_path = i ? w->ref_path : w->model_path, .seed = 7,
				   .n_threads = 2};
		if (mkmodel_write(&mo, err, sizeof(err)))
			fail_msg("mkmodel_write: %s", err);
	}
	if (llama_model_load(&w->ref_model, w->ref_path, err, sizeof(err)))
		fail_msg("llama_model_load: %s", err);
	/* The weight layout the broker computes with (as `herd run` does):
	 * the interleaved GEMM kernels round differently from the plain
	 * matrix-vector ones, and greedy decoding would notice. The image is
	 * interleaved as kern_repack_worthwhile() says. */
	if (kern_repack_worthwhile())
		assert_int_equal(llama_model_repack(w->ref_model, kern_repack_worthwhile()), 0);
	llama_ctx_opts co = {.n_threads = 1, .n_ctx = 2048};
	assert_int_equal(llama_ctx_create(&w->ref_ctx, w->ref_model, &co), 0);
	w->ref_logits = malloc(sizeof(float) * (size_t)w->ref_model->hp.n_vocab);
	assert_non_null(w->ref_logits);
	return w;
}

static inline void h_track(h_world *w, pid_t pid)
{
	if (w->n_procs < H_MAX_PROCS)
		w->procs[w->n_procs++] = pid;
}

static inline int h_remove_seg(void *user, const shm_image_info *in)
{
	const h_world *w = user;
	if (!strcmp(in->model, w->model_name))
		shm_image_remove(in->name);
	return 0;
}

static inline void h_agent_free(h_agent *a)
{
	if (!a)
		return;
	if (a->fd >= 0)
		close(a->fd);
	free(a->buf);
	json_object_put(a->lines);
	free(a);
}

static inline void h_world_destroy(h_world *w)
{
	if (!w)
		return;
	for (int i = 0; i < w->n_procs; i++)
		if (w->procs[i] > 0 && kill(w->procs[i], SIGKILL) == 0)
			waitpid(w->procs[i], NULL, 0);
	for (int i = 0; i < w->n_agents; i++)
		h_agent_free(w->agents[i]);
	int fds[] = {w->go_r, w->go_w, w->exit_r, w->exit_w};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (getenv("HERD_TEST_VERBOSE")) {
		h_dump(w->log, "herdd log");
		h_dump(w->alog, "agents' stderr");
	}
	shm_image_list(0, h_remove_seg, w);
	free(w->ref_logits);
	llama_ctx_destroy(w->ref_ctx);
	llama_model_destroy(w->ref_model);
	const char *files[] = {w->model_path, w->ref_path, w->sock, w->log, w->alog};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	/* the broker's state directory is the world's directory: LMDB files */
	char p[256];
	const char *state[] = {"data.mdb", "lock.mdb"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", w->dir, state[i]);
		unlink(p);
	}
	rmdir(w->dir);
	free(w);
}

/* ---- processes ----------------------------------------------------------- */

/* fork + execve; stdout to out_fd (or the log), stderr appended to err_path;
 * keep[] descriptors survive exec; env (NULL: inherited) replaces environ. */
static inline pid_t h_spawn(h_world *w, char *const *argv, int out_fd, const char *err_path,
		     const int *keep, int n_keep, char *const *env)
{
	extern char **environ;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int e = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (e >= 0)
			dup2(e, STDERR_FILENO);
		dup2(out_fd >= 0 ? out_fd : (e >= 0 ? e : STDERR_FILENO), STDOUT_FILENO);
		for (int i = 0; i < n_keep; i++)
			fcntl(keep[i], F_SETFD, 0);
		execve(argv[0], argv, env ? env : environ);
		_exit(127);
	}
	h_track(w, pid);
	return pid;
}

static inline void h_untrack(h_world *w, pid_t pid)
{
	for (int i = 0; i < w->n_procs; i++)
		if (w->procs[i] == pid)
			w->procs[i] = 0;
}

static inline int h_sock_connect(const h_world *w)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", w->sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	struct timeval tv = {60, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Starts herdd on the world's socket and model; waits until it accepts. */
/* herdd on the world's model; config (may be NULL) a --config file. */
static inline void h_broker_start_cfg(h_world *w, const char *max_batch, const char *config)
{
	char *argv[] = {w->herdd,   "--socket",    w->sock,	      "--model", w->spec,
			"--threads", "2",	  "--state-dir", w->dir,    "--max-batch",
			(char *)max_batch, config ? "--config" : NULL, (char *)config, NULL};
	w->broker = h_spawn(w, argv, -1, w->log, NULL, 0, NULL);
	for (int i = 0; i < 6000; i++) {
		int fd = h_sock_connect(w);
		if (fd >= 0) {
			close(fd);
			return;
		}
		int st;
		if (waitpid(w->broker, &st, WNOHANG) == w->broker) {
			h_untrack(w, w->broker);
			w->broker = 0;
			h_dump(w->log, "herdd log");
			fail_msg("herdd exited during start-up (status %d)", st);
		}
		usleep(20000);
	}
	h_dump(w->log, "herdd log");
	fail_msg("herdd did not start listening");
}

static inline void h_broker_start(h_world *w, const char *max_batch)
{
	h_broker_start_cfg(w, max_batch, NULL);
}

/* SIGTERM, wait; asserts a clean exit (status 0: under ASan also no leak). */
static inline void h_broker_stop(h_world *w)
{
	if (w->broker <= 0)
		return;
	kill(w->broker, SIGTERM);
	int st = 0;
	pid_t r = -1;
	for (int i = 0; i < 3000 && r != w->broker; i++) {
		r = waitpid(w->broker, &st, WNOHANG);
		if (r != w->broker)
			usleep(10000);
	}
	if (r != w->broker) {
		kill(w->broker, SIGKILL);
		waitpid(w->broker, &st, 0);
	}
	h_untrack(w, w->broker);
	w->broker = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		h_dump(w->log, "herdd log");
		fail_msg("herdd did not exit cleanly on SIGTERM (wait status %d)", st);
	}
}

/* Opens both barriers (closes any previous ones first). */
static inline void h_barriers(h_world *w)
{
	int fds[] = {w->go_r, w->go_w, w->exit_r, w->exit_w};
	for (size_t i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	int g[2], e[2];
	assert_int_equal(pipe2(g, O_CLOEXEC), 0);
	assert_int_equal(pipe2(e, O_CLOEXEC), 0);
	w->go_r = g[0];
	w->go_w = g[1];
	w->exit_r = e[0];
	w->exit_w = e[1];
}

static inline void h_release(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Starts `herd agent --socket S --model M --index I` plus extra (NULL
 * terminated); with barriers, passes the world's go/exit read ends. env:
 * NULL or a full environment. */
static inline h_agent *h_agent_start(h_world *w, int index, int barriers, char *const *env,
			      const char *const *extra)
{
	h_agent *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->lines = json_object_new_array();
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	char idx[16], gofd[16], exfd[16];
	snprintf(idx, sizeof(idx), "%d", index);
	snprintf(gofd, sizeof(gofd), "%d", w->go_r);
	snprintf(exfd, sizeof(exfd), "%d", w->exit_r);
	char *argv[48];
	int n = 0;
	argv[n++] = w->herd;
	argv[n++] = "agent";
	argv[n++] = "--socket";
	argv[n++] = w->sock;
	argv[n++] = "--model";
	argv[n++] = w->model_name;
	argv[n++] = "--index";
	argv[n++] = idx;
	if (barriers) {
		argv[n++] = "--go-fd";
		argv[n++] = gofd;
		argv[n++] = "--exit-fd";
		argv[n++] = exfd;
	}
	for (int i = 0; extra && extra[i] && n < 46; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	const int keep[2] = {w->go_r, w->exit_r};
	a->pid = h_spawn(w, argv, p[1], w->alog, keep, barriers ? 2 : 0, env);
	close(p[1]);
	a->fd = p[0];
	assert_true(w->n_agents < H_MAX_PROCS);
	w->agents[w->n_agents++] = a;
	return a;
}

static inline const char *h_str(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : "";
}

static inline double h_num(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_double(v) : 0;
}

static inline void h_agent_line(h_agent *a, const char *line)
{
	json_object *o = json_tokener_parse(line);
	if (!o) {
		fprintf(stderr, "agent %d: unparsable line: %.200s\n", (int)a->pid, line);
		return;
	}
	const char *ev = h_str(o, "ev");
	if (!strcmp(ev, "ready"))
		a->ready = 1;
	else if (!strcmp(ev, "finished"))
		a->finished = 1;
	else if (!strcmp(ev, "fatal")) {
		a->fatal = 1;
		fprintf(stderr, "agent %d fatal: %s\n", (int)a->pid, line);
	}
	json_object_array_add(a->lines, o);
}

static inline void h_agent_read(h_agent *a)
{
	if (a->cap - a->len < 8192) {
		a->cap = a->cap ? a->cap * 2 : 16384;
		a->buf = realloc(a->buf, a->cap);
		assert_non_null(a->buf);
	}
	ssize_t n = read(a->fd, a->buf + a->len, a->cap - a->len - 1);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		close(a->fd);
		a->fd = -1;
		a->eof = 1;
		return;
	}
	a->len += (size_t)n;
	char *s = a->buf, *nl;
	while ((nl = memchr(s, '\n', a->len - (size_t)(s - a->buf)))) {
		*nl = 0;
		h_agent_line(a, s);
		s = nl + 1;
	}
	a->len -= (size_t)(s - a->buf);
	memmove(a->buf, s, a->len);
}

/* What an agent is waited for. */
enum { H_READY = 1, H_FINISHED = 2, H_EOF = 3 };

static inline int h_agent_reached(const h_agent *a, int what)
{
	if (what == H_READY)
		return a->ready || a->fatal || a->eof;
	if (what == H_FINISHED)
		return a->finished || a->fatal || a->eof;
	return a->eof;
}

/* Reads the agents' output until each has reached `what` or timeout_s.
 * Fails the test on timeout. */
static inline void h_pump(h_world *w, h_agent **ag, int n, int what, double timeout_s)
{
	struct pollfd p[H_MAX_PROCS];
	h_agent *who[H_MAX_PROCS] = {0};
	const double t0 = clock_mono_s();
	for (;;) {
		int k = 0, waiting = 0;
		for (int i = 0; i < n; i++) {
			if (!h_agent_reached(ag[i], what))
				waiting++;
			if (ag[i]->fd >= 0) {
				who[k] = ag[i];
				p[k++] = (struct pollfd){.fd = ag[i]->fd, .events = POLLIN};
			}
		}
		if (!waiting)
			return;
		if (clock_mono_s() - t0 > timeout_s) {
			h_dump(w->alog, "agents' stderr");
			fail_msg("%d agents did not reach state %d within %.0f s", waiting, what,
				 timeout_s);
		}
		int r = poll(p, (nfds_t)k, 200);
		for (int i = 0; r > 0 && i < k; i++)
			if (p[i].revents)
				h_agent_read(who[i]);
	}
}

/* Waits for a's next line with event ev (scanning lines from *cursor on).
 * Returns the line (owned by a) or NULL at EOF. */
static inline json_object *h_agent_wait_ev(h_world *w, h_agent *a, const char *ev, size_t *cursor,
				    double timeout_s)
{
	const double t0 = clock_mono_s();
	for (;;) {
		while (*cursor < json_object_array_length(a->lines)) {
			json_object *o = json_object_array_get_idx(a->lines, (*cursor)++);
			if (!strcmp(h_str(o, "ev"), ev))
				return o;
		}
		if (a->eof)
			return NULL;
		if (clock_mono_s() - t0 > timeout_s) {
			h_dump(w->alog, "agents' stderr");
			fail_msg("agent %d: no '%s' event within %.0f s", (int)a->pid, ev, timeout_s);
		}
		struct pollfd p = {.fd = a->fd, .events = POLLIN};
		if (poll(&p, 1, 200) > 0)
			h_agent_read(a);
	}
}

/* Reaps a (waits up to timeout_s, then SIGKILL); returns its wait status. */
static inline int h_agent_reap(h_world *w, h_agent *a, double timeout_s)
{
	if (a->reaped)
		return a->status;
	const double t0 = clock_mono_s();
	int st = 0;
	pid_t r;
	while ((r = waitpid(a->pid, &st, WNOHANG)) == 0 && clock_mono_s() - t0 < timeout_s) {
		if (a->fd >= 0) {
			struct pollfd p = {.fd = a->fd, .events = POLLIN};
			if (poll(&p, 1, 20) > 0)
				h_agent_read(a);
		} else {
			usleep(10000);
		}
	}
	if (r == 0) {
		kill(a->pid, SIGKILL);
		waitpid(a->pid, &st, 0);
	}
	while (a->fd >= 0)
		h_agent_read(a);
	h_untrack(w, a->pid);
	a->reaped = 1;
	a->status = st;
	return st;
}

/* ---- herdctl ----------------------------------------------------------------- */

/* Runs `herdctl --socket S --json cmd` and parses its output (caller puts).
 * NULL when herdctl failed. */
static inline json_object *h_ctl(const h_world *w, const char *cmd)
{
	char line[PATH_MAX + 300];
	snprintf(line, sizeof(line), "'%s' --socket '%s' --json %s", w->herdctl, w->sock, cmd);
	FILE *f = popen(line, "r");
	assert_non_null(f);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 1024) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	buf[len] = 0;
	int st = pclose(f);
	json_object *o = st == 0 ? json_tokener_parse(buf) : NULL;
	free(buf);
	return o;
}

/* The first model's entry of `herdctl models` (a new reference). */
static inline json_object *h_ctl_model(const h_world *w)
{
	json_object *arr = h_ctl(w, "models");
	assert_non_null(arr);
	assert_true(json_object_array_length(arr) >= 1);
	json_object *m = json_object_get(json_object_array_get_idx(arr, 0));
	json_object_put(arr);
	return m;
}

/* ---- memory ----------------------------------------------------------------- */

static inline uint64_t h_pss(pid_t pid)
{
	return proc_mem_bytes(pid, "smaps_rollup", "Pss:");
}

/* ---- the reference ------------------------------------------------------------ */

typedef struct h_ref {
	int32_t toks[4096];
	int n;
	char text[65536];
	size_t text_len;
} h_ref;

/* Runs prompt alone through the engine: BOS + tokens, greedy, until an
 * end-of-generation token or max_tokens; text is the pieces concatenated
 * (what the broker sends). */
static inline void h_reference(h_world *w, const char *prompt, int max_tokens, h_ref *out)
{
	const tok_vocab *v = w->ref_model->vocab;
	int32_t ptoks[2048];
	int np = tok_encode(v, prompt, strlen(prompt), tok_add_bos(v) ? TOK_ADD_BOS : 0, ptoks, 2048);
	assert_true(np > 0 && np <= 2048);
	llama_seq s;
	llama_seq_init(&s);
	assert_int_equal(llama_eval(w->ref_ctx, &s, ptoks, np, 0, w->ref_logits), 0);
	sampler_params sp = sampler_params_default();
	sp.temperature = 0;
	sp.top_k = 0;
	sp.top_p = 1;
	sp.min_p = 0;
	sp.repeat_penalty = 1;
	sp.seed = 0;
	sampler *smp;
	assert_int_equal(sampler_create(&smp, &sp, w->ref_model->hp.n_vocab), 0);
	for (int i = 0; i < np; i++)
		sampler_accept(smp, ptoks[i]);
	out->n = 0;
	out->text_len = 0;
	for (int i = 0; i < max_tokens; i++) {
		int32_t t = sampler_sample(smp, w->ref_logits);
		sampler_accept(smp, t);
		if (tok_is_eog(v, t))
			break;
		out->toks[out->n++] = t;
		char piece[256];
		int l = tok_piece(v, t, piece, sizeof(piece));
		assert_true(l >= 0 && (size_t)l <= sizeof(piece));
		assert_true(out->text_len + (size_t)l < sizeof(out->text));
		memcpy(out->text + out->text_len, piece, (size_t)l);
		out->text_len += (size_t)l;
		if (out->n == max_tokens)
			break;
		assert_int_equal(llama_eval(w->ref_ctx, &s, &t, 1, 0, w->ref_logits), 0);
	}
	out->text[out->text_len] = 0;
	sampler_destroy(smp);
	llama_seq_reset(w->ref_ctx, &s);
}

/* Decodes the agents' hex text into buf; returns its length or -1. */
static inline long h_unhex(const char *hex, char *buf, size_t cap)
{
	size_t n = strlen(hex);
	if (n % 2 || n / 2 >= cap)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned b;
		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -1;
		buf[i] = (char)b;
	}
	buf[n / 2] = 0;
	return (long)(n / 2);
}

/* Checks one "req" line against the reference: ok, same text, and for a
 * streamed request the same token ids. Returns the number of generated
 * tokens. */
static inline int h_check_req(h_world *w, const h_agent *a, json_object *o)
{
	if (h_num(o, "ok") == 0)
		fail_msg("agent %d request %d failed: code %d %s", (int)a->pid, (int)h_num(o, "req"),
			 (int)h_num(o, "code"), h_str(o, "msg"));
	const char *prompt = h_str(o, "prompt");
	const int max_tokens = (int)h_num(o, "max_tokens");
	static h_ref ref; /* big; tests are single-threaded */
	h_reference(w, prompt, max_tokens, &ref);
	json_object *toks;
	if (json_object_object_get_ex(o, "toks", &toks) && toks) {
		assert_int_equal((int)json_object_array_length(toks), ref.n);
		for (int i = 0; i < ref.n; i++)
			if (json_object_get_int(json_object_array_get_idx(toks, (size_t)i)) != ref.toks[i])
				fail_msg("agent %d, prompt \"%s\": token %d is %d, the engine alone says %d",
					 (int)a->pid, prompt, i,
					 json_object_get_int(json_object_array_get_idx(toks, (size_t)i)),
					 ref.toks[i]);
	}
	static char got[65536];
	long gl = h_unhex(h_str(o, "text_hex"), got, sizeof(got));
	assert_true(gl >= 0);
	if ((size_t)gl != ref.text_len || memcmp(got, ref.text, ref.text_len))
		fail_msg("agent %d, prompt \"%s\": broker text (%ld bytes) differs from the "
			 "engine alone (%zu bytes, %d tokens)",
			 (int)a->pid, prompt, gl, ref.text_len, ref.n);
	assert_int_equal((int)h_num(o, "n_gen"), ref.n);
	return ref.n;
}

/* Checks every "req" line of a; returns how many there were. */
static inline int h_check_agent(h_world *w, const h_agent *a, int *n_stream, long *n_tokens)
{
	int n = 0;
	for (size_t i = 0; i < json_object_array_length(a->lines); i++) {
		json_object *o = json_object_array_get_idx(a->lines, i);
		if (strcmp(h_str(o, "ev"), "req"))
			continue;
		*n_tokens += h_check_req(w, a, o);
		*n_stream += h_num(o, "stream") != 0;
		n++;
	}
	return n;
}

#endif
