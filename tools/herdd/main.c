/* herdd: the herd broker.
 *
 *   herdd [--config FILE] [--socket PATH] [--model NAME=FILE[:TYPE]]...
 *         [--threads N] [--state-dir DIR] [--max-batch N] [--daemon]
 *         [--pid-file FILE] [--cpu-affinity LIST] [--verbose]
 *
 * Foreground by default. Start-up errors (bad configuration, unreadable
 * model, socket in use by a live broker, pid file naming a live herdd) are
 * one clear message on stderr and exit status 1; with --daemon the parent
 * waits until the daemon is serving (or has failed) and exits accordingly.
 * SIGTERM / SIGINT (read from a signalfd in the ring): stop accepting,
 * cancel in-flight requests (agents get `done` reason "cancel"), exit 0.
 * SIGHUP is read from the same signalfd and ignored with a log line (the
 * configuration is read at start-up only): it never kills the broker.
 * Under systemd socket activation (herd.socket) it serves the socket it was
 * passed instead of binding one, and tells systemd when it is ready.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/config.h"
#include "broker/http.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "broker/models.h"
#include "broker/pressure.h"
#include "broker/respcache.h"
#include "herd/error.h"
#include "activation.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: herdd [--config FILE] [--socket PATH] [--model NAME=FILE[:TYPE]]...\n"
		"             [--threads N] [--state-dir DIR] [--max-batch N] [--daemon]\n"
		"             [--pid-file FILE] [--cpu-affinity LIST] [--verbose]\n");
}

typedef struct args {
	const char *config, *socket, *state_dir, *pid_file, *cpu_affinity;
	const char **models;
	int n_models;
	long threads, max_batch; /* -1: not given */
	int daemon, verbose;
} args;

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = s ? strtol(s, &end, 10) : 0;
	if (!s || errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "herdd: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi,
			s ? s : "(nothing)");
		return -1;
	}
	*out = v;
	return 0;
}

/* Returns 0, 1 (--help: exit 0) or -1 (usage error). */
static int parse_args(int argc, char **argv, args *a)
{
	a->threads = a->max_batch = -1;
	a->models = calloc((size_t)argc, sizeof(char *));
	if (!a->models)
		return -1;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		const char **dst = !strcmp(o, "--config")      ? &a->config
				   : !strcmp(o, "--socket")    ? &a->socket
				   : !strcmp(o, "--state-dir") ? &a->state_dir
				   : !strcmp(o, "--pid-file")  ? &a->pid_file
				   : !strcmp(o, "--cpu-affinity") ? &a->cpu_affinity
							       : NULL;
		if (dst) {
			if (!v) {
				fprintf(stderr, "herdd: %s needs a value\n", o);
				return -1;
			}
			*dst = v;
			i++;
		} else if (!strcmp(o, "--model") || !strcmp(o, "-m")) {
			if (!v) {
				fprintf(stderr, "herdd: %s needs NAME=FILE[:TYPE]\n", o);
				return -1;
			}
			a->models[a->n_models++] = v;
			i++;
		} else if (!strcmp(o, "--threads") || !strcmp(o, "-t")) {
			if (parse_long(o, v, 0, 4096, &a->threads))
				return -1;
			i++;
		} else if (!strcmp(o, "--max-batch")) {
			if (parse_long(o, v, 1, 256, &a->max_batch))
				return -1;
			i++;
		} else if (!strcmp(o, "--daemon") || !strcmp(o, "-d")) {
			a->daemon = 1;
		} else if (!strcmp(o, "--verbose") || !strcmp(o, "-v")) {
			a->verbose = 1;
		} else if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
			return 1;
		} else {
			fprintf(stderr, "herdd: unknown option '%s'\n", o);
			return -1;
		}
	}
	return 0;
}

/* ---- pid file ----------------------------------------------------------- */

/* The pid a pid file names when that process is a live herdd, else 0. */
static pid_t pidfile_live(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	long pid = 0;
	int ok = fscanf(f, "%ld", &pid) == 1;
	fclose(f);
	if (!ok || pid <= 0 || pid == (long)getpid())
		return 0;
	if (kill((pid_t)pid, 0) && errno != EPERM)
		return 0;
	char p[64], comm[64] = "";
	snprintf(p, sizeof(p), "/proc/%ld/comm", pid);
	f = fopen(p, "r");
	if (!f)
		return 0;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = 0;
	fclose(f);
	return !strncmp(comm, "herdd", 5) ? (pid_t)pid : 0;
}

/* Writes our pid atomically (temporary file + rename). */
static int pidfile_write(const char *path)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	int rc = 0;
	if (write(fd, buf, (size_t)n) != n || fsync(fd))
		rc = errno ? -errno : -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

/* ---- daemon ------------------------------------------------------------- */

/* Makes *path absolute against the current directory (the daemon runs in
 * "/"). Returns 0 or -ENOMEM. */
static int make_abs(char **path)
{
	if (!*path || (*path)[0] == '/')
		return 0;
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	size_t n = strlen(cwd) + strlen(*path) + 2;
	char *p = malloc(n);
	if (!p)
		return -ENOMEM;
	snprintf(p, n, "%s/%s", cwd, *path);
	free(*path);
	*path = p;
	return 0;
}

/* Double fork + setsid. Returns in the daemon with *ready_fd the pipe to
 * report readiness on; the original process waits for that report and
 * exits with 0 (serving) or 1 (start-up failed). Returns -errno on failure
 * (in the original process). */
static int daemonize(int *ready_fd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		char st = 1;
		ssize_t r;
		do
			r = read(p[0], &st, 1);
		while (r < 0 && errno == EINTR);
		_exit(r == 1 && st == 0 ? 0 : 1);
	}
	close(p[0]);
	if (setsid() < 0)
		_exit(1);
	pid = fork();
	if (pid < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	if (chdir("/") != 0) {
		/* not fatal: main made every path absolute before */
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	*ready_fd = p[1];
	return 0;
}

static void report_ready(int *ready_fd, int ok)
{
	if (*ready_fd < 0)
		return;
	char st = ok ? 0 : 1;
	if (write(*ready_fd, &st, 1) != 1)
		(void)0;
	close(*ready_fd);
	*ready_fd = -1;
	if (ok) {
		/* Serving: detach from the terminal's output too. */
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0) {
			if (isatty(STDOUT_FILENO))
				dup2(null, STDOUT_FILENO);
			if (isatty(STDERR_FILENO))
				dup2(null, STDERR_FILENO);
			close(null);
		}
	}
}

/* ---- start-up phases ------------------------------------------------------- */

/* Everything main sets up, released by herdd_fini in reverse order. */
typedef struct herdd {
	args a;
	cfg c;
	blog log;
	models *ms;
	pressure *pr;           /* NULL: not watching memory pressure */
	catalog *cat;
	/* memory-pressure requests for the models, carried out on the loop
	 * thread (models_shed must run there): 1 asked, 0 done */
	atomic_int shed_idle;
	atomic_int shed_kv;     /* SCHED_KV_* asked of every resident model */
	/* what the KV actions would find, updated by the loop thread each tick */
	_Atomic uint64_t kv_trimmable;
	atomic_int kv_shrinkable;
	loop *lp;
	int listen_fd, wake_fd, sig_fd, ready_fd;
	int pid_written, bound; /* pid file written; socket file bound (sock_st) */
	char *pid_path;
	struct stat sock_st;
	sigset_t signals;       /* SIGTERM, SIGINT, SIGHUP: read from sig_fd */
	char err[1024];
} herdd;

/* Prints "herdd: msg" and returns -1 (start-up failed). */
static int fail_msg(const char *msg)
{
	fprintf(stderr, "herdd: %s\n", msg);
	return -1;
}

/* Applies the command line over the configuration file. */
static int apply_args(herdd *d)
{
	const args *a = &d->a;
	cfg *c = &d->c;
	if (a->config && cfg_load_file(c, a->config, d->err, sizeof(d->err)))
		return fail_msg(d->err);
	for (int i = 0; i < a->n_models; i++)
		if (cfg_add_model_spec(c, a->models[i], d->err, sizeof(d->err)))
			return fail_msg(d->err);
	if ((a->socket && cfg_set_str(&c->socket_path, a->socket)) ||
	    (a->state_dir && cfg_set_str(&c->state_dir, a->state_dir)))
		return fail_msg("out of memory");
	if (a->cpu_affinity && cfg_set_cpu_affinity(c, a->cpu_affinity, d->err, sizeof(d->err)))
		return fail_msg(d->err);
	if (a->threads >= 0)
		c->threads = (int)a->threads;
	if (a->max_batch > 0) {
		c->max_batch_size = (int)a->max_batch;
		c->batch_auto = 0;
	}
	if (a->verbose)
		c->verbose = 1;
	if (a->pid_file && !(d->pid_path = strdup(a->pid_file)))
		return fail_msg("out of memory");
	/* the environment is read here, in the program, not in broker/ */
	const cfg_env env = {.runtime_dir = getenv("XDG_RUNTIME_DIR"),
			     .state_home = getenv("XDG_STATE_HOME"),
			     .home = getenv("HOME")};
	if (cfg_finish(c, &env, d->err, sizeof(d->err)))
		return fail_msg(d->err);
	blog_init(&d->log, c->verbose);
	return 0;
}

/* Before anything is bound: the models are readable, paths absolute for a
 * daemon (it runs in "/"), no live herdd owns the pid file. */
static int check_start(herdd *d)
{
	cfg *c = &d->c;
	for (int i = 0; i < c->n_models; i++)
		if (access(c->models[i].file, R_OK)) {
			fprintf(stderr, "herdd: model %s: cannot read '%s': %s\n", c->models[i].name,
				c->models[i].file, strerror(errno));
			return -1;
		}
	if (d->a.daemon) {
		int bad = make_abs(&c->socket_path) || make_abs(&c->state_dir) || make_abs(&d->pid_path);
		for (int i = 0; i < c->n_models; i++)
			bad = bad || make_abs(&c->models[i].file);
		if (bad)
			return fail_msg("cannot resolve relative paths");
	}
	pid_t other = d->pid_path ? pidfile_live(d->pid_path) : 0;
	if (other) {
		fprintf(stderr, "herdd: already running as pid %d (pid file %s)\n", (int)other,
			d->pid_path);
		return -1;
	}
	return 0;
}

/* Blocks the signals, binds the socket, and daemonizes (before any thread
 * exists: threads do not survive fork). */
static int bind_socket(herdd *d)
{
	/* Signals: blocked in every thread (the schedulers and kernel pools
	 * inherit this mask) and read from a signalfd in the ring. */
	sigemptyset(&d->signals);
	sigaddset(&d->signals, SIGTERM);
	sigaddset(&d->signals, SIGINT);
	sigaddset(&d->signals, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &d->signals, NULL)) {
		fprintf(stderr, "herdd: sigprocmask: %s\n", strerror(errno));
		return -1;
	}
	char path[CFG_PATH_MAX];
	if (activation_listen_fd(&d->listen_fd, path, sizeof(path), d->err, sizeof(d->err)))
		return fail_msg(d->err);
	if (d->listen_fd >= 0) { /* systemd's socket: its file is not ours to remove */
		if (path[0] && cfg_set_str(&d->c.socket_path, path))
			return fail_msg("out of memory");
		blog_msg(&d->log, BLOG_INFO, "socket activation: serving the socket systemd passed (%s)",
			 path[0] ? path : "unnamed");
	} else if (loop_listen(d->c.socket_path, &d->listen_fd, d->err, sizeof(d->err))) {
		return fail_msg(d->err);
	} else {
		d->bound = stat(d->c.socket_path, &d->sock_st) == 0;
	}
	int rc = d->a.daemon ? daemonize(&d->ready_fd) : 0;
	if (rc) {
		fprintf(stderr, "herdd: cannot daemonize: %s\n", strerror(-rc));
		return -1;
	}
	return 0;
}

/* Pressure action PRESSURE_RANK_RESPCACHE: halve the response cache. */
static int shed_respcache(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	const int n = respcache_shrink(arg);
	if (n > 0)
		snprintf(msg, msglen, "response cache: evicted %d answers", n);
	return n;
}

static void unshed_respcache(void *arg)
{
	respcache_unshrink(arg);
}

/* Pressure actions PRESSURE_RANK_IDLE_MODELS (asked here on the pressure
 * thread, carried out by loop_tick on the loop thread) and
 * refuse_model_loads (a flag, set at once). */
static int shed_models(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	herdd *d = arg;
	atomic_store(&d->shed_idle, 1);
	snprintf(msg, msglen, "evicting idle unpinned models");
	return 1;
}

static int shed_loads(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	models_shed(((herdd *)arg)->ms, MODELS_SHED_REFUSE, 0);
	snprintf(msg, msglen, "no new model loads");
	return 1;
}

static void unshed_loads(void *arg)
{
	models_shed(((herdd *)arg)->ms, MODELS_SHED_ACCEPT, 0);
}

/* Pressure actions PRESSURE_RANK_PREFIX (drop the unreferenced prefix
 * pages, give the free KV pages' memory back) and PRESSURE_RANK_KV (halve
 * the KV page limit of new work, undone at recovery): asked here, carried
 * out by each model's scheduler thread (sched_kv_shed). */
static int shed_prefix(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	herdd *d = arg;
	const uint64_t b = atomic_load(&d->kv_trimmable);
	if (!b)
		return 0;
	atomic_fetch_or(&d->shed_kv, SCHED_KV_TRIM);
	snprintf(msg, msglen, "KV: dropping unreferenced prefix pages, giving %.1f MiB back",
		 (double)b / (1 << 20));
	return 1;
}

static int shed_kv_budget(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)why;
	herdd *d = arg;
	const int n = atomic_load(&d->kv_shrinkable);
	if (!n)
		return 0;
	atomic_fetch_or(&d->shed_kv, SCHED_KV_SHRINK);
	snprintf(msg, msglen, "KV: halving the page limit of new work on %d model(s)", n);
	return 1;
}

static void unshed_kv_budget(void *arg)
{
	atomic_fetch_or(&((herdd *)arg)->shed_kv, SCHED_KV_RESTORE);
}

static void loop_tick(void *arg)
{
	herdd *d = arg;
	const int kv = atomic_exchange(&d->shed_kv, 0);
	if (kv)
		models_kv_shed(d->ms, kv);
	uint64_t trimmable;
	int shrinkable;
	models_kv_state(d->ms, &trimmable, &shrinkable);
	atomic_store(&d->kv_trimmable, trimmable);
	atomic_store(&d->kv_shrinkable, shrinkable);
	if (atomic_exchange(&d->shed_idle, 0)) {
		const uint64_t b = models_shed(d->ms, MODELS_SHED_IDLE, 0);
		blog_msg(&d->log, BLOG_WARN, "pressure: evicted idle models: %.1f MiB released",
			 (double)b / (1 << 20));
	}
}

/* Memory pressure: PSI, the eBPF counters when allowed, the broker's own
 * shedding actions. Nothing here is fatal: the broker says why once and
 * runs without (no PSI) or on PSI alone (no eBPF). */
static void start_pressure(herdd *d)
{
	const cfg_pressure *cp = &d->c.pressure;
	if (!cp->enable) {
		blog_msg(&d->log, BLOG_INFO, "pressure: off (pressure.enable is false)");
		return;
	}
	pressure_opts po = {.trigger_us = cp->trigger_us, .window_us = cp->window_us,
			    .escalate_ms = cp->escalate_ms, .recover_ms = cp->recover_ms,
			    .stall_ms_per_s = cp->stall_ms_per_s, .bpf = cp->bpf, .log = &d->log};
	char err[512];
	int degraded, rc = pressure_create(&d->pr, &po, &degraded, err, sizeof(err));
	if (rc) {
		blog_msg(&d->log, BLOG_WARN, "pressure: %s; running without memory-pressure shedding", err);
		return;
	}
	if (degraded)
		blog_msg(&d->log, BLOG_WARN, "pressure: %s", err);
	if ((rc = pressure_add_builtin_actions(d->pr)) ||
	    (models_respcache(d->ms) &&
	     (rc = pressure_add_action(d->pr, PRESSURE_RANK_RESPCACHE, "respcache", shed_respcache,
				       unshed_respcache, models_respcache(d->ms)))) ||
	    (rc = pressure_add_action(d->pr, PRESSURE_RANK_PREFIX, "drop_prefix_pages", shed_prefix,
				      NULL, d)) ||
	    (rc = pressure_add_action(d->pr, PRESSURE_RANK_IDLE_MODELS, "evict_idle_models",
				      shed_models, NULL, d)) ||
	    (rc = pressure_add_action(d->pr, PRESSURE_RANK_KV, "shrink_kv", shed_kv_budget,
				      unshed_kv_budget, d)) ||
	    (rc = pressure_add_action(d->pr, PRESSURE_RANK_REFUSE - 1, "refuse_model_loads",
				      shed_loads, unshed_loads, d)))
		blog_msg(&d->log, BLOG_ERR, "pressure: cannot add actions: %s", herd_strerror(rc));
	if (pressure_bpf_start(d->pr, err, sizeof(err)))
		blog_msg(&d->log, BLOG_WARN, "pressure: eBPF memory counters off: %s; PSI alone", err);
	else
		blog_msg(&d->log, BLOG_INFO, "pressure: eBPF memory counters on");
	if ((rc = pressure_start(d->pr))) {
		blog_msg(&d->log, BLOG_ERR, "pressure: cannot start its thread: %s", herd_strerror(rc));
		pressure_destroy(d->pr);
		d->pr = NULL;
	}
}

/* mkdir -p of path (mode 0700 for what it creates). */
static int mkdirs(const char *path)
{
	char buf[CFG_PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			if (mkdir(buf, 0700) && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	return mkdir(buf, 0700) && errno != EEXIST ? -errno : 0;
}

/* The cache manager's LMDB catalog in <state_dir>/catalog. Without it the
 * broker still serves (no history: scores start from nothing); it says so. */
static void open_catalog(herdd *d)
{
	char dir[CFG_PATH_MAX + 16], err[512] = "";
	int rc = mkdirs(d->c.state_dir);
	if (!rc && snprintf(dir, sizeof(dir), "%s/catalog", d->c.state_dir) >= (int)sizeof(dir))
		rc = -ENAMETOOLONG;
	catalog_opts co = {.dir = dir, .flush_ms = d->c.catalog_flush_ms, .log = &d->log};
	if (!rc)
		rc = catalog_open(&d->cat, &co, err, sizeof(err));
	if (rc)
		blog_msg(&d->log, BLOG_WARN, "no model catalog (state directory %s): %s; model scores "
			 "and predictions start from nothing", d->c.state_dir,
			 err[0] ? err : herd_strerror(rc));
}

/* The descriptors, the pid file, the models and the loop. */
static int start(herdd *d)
{
	/* Blocking descriptors on purpose: io_uring polls them itself, while an
	 * O_NONBLOCK file may make a read complete at once with -EAGAIN. */
	d->sig_fd = signalfd(-1, &d->signals, SFD_CLOEXEC);
	d->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (d->sig_fd < 0 || d->wake_fd < 0) {
		fprintf(stderr, "herdd: %s: %s\n", d->sig_fd < 0 ? "signalfd" : "eventfd", strerror(errno));
		return -1;
	}
	int rc;
	if (d->pid_path) {
		if ((rc = pidfile_write(d->pid_path))) {
			fprintf(stderr, "herdd: cannot write pid file %s: %s\n", d->pid_path, strerror(-rc));
			return -1;
		}
		d->pid_written = 1;
	}
	/* engine switches from the environment, passed down as options */
	open_catalog(d);
	models_opts mo = {.cfg = &d->c, .wake_fd = d->wake_fd, .log = &d->log, .catalog = d->cat,
			  .force_ref = getenv("HERD_FORCE_REF") != NULL,
			  .no_repack = getenv("HERD_NO_REPACK") != NULL};
	d->err[0] = 0;
	if ((rc = models_create(&d->ms, &mo, d->err, sizeof(d->err))))
		return fail_msg(d->err[0] ? d->err : herd_strerror(rc));
	start_pressure(d);
	loop_opts lo = {.cfg = &d->c, .models = d->ms, .log = &d->log, .listen_fd = d->listen_fd,
			.wake_fd = d->wake_fd, .signal_fd = d->sig_fd, .pressure = d->pr,
			.tick = loop_tick, .tick_arg = d};
	if ((rc = loop_create(&d->lp, &lo))) {
		fprintf(stderr, "herdd: cannot set up io_uring: %s\n", strerror(-rc));
		return -1;
	}
	d->listen_fd = -1; /* the loop owns it */
	if ((rc = http_start(d->lp, d->err, sizeof(d->err))))
		return fail_msg(d->err);
	return 0;
}

static void herdd_fini(herdd *d)
{
	report_ready(&d->ready_fd, 0);
	loop_destroy(d->lp);
	pressure_destroy(d->pr); /* before the models its actions may touch */
	models_destroy(d->ms);
	catalog_close(d->cat); /* commits what is queued */
	if (d->listen_fd >= 0)
		close(d->listen_fd);
	if (d->bound) {
		/* remove the socket file only if it is still ours */
		struct stat now;
		if (stat(d->c.socket_path, &now) == 0 && now.st_ino == d->sock_st.st_ino &&
		    now.st_dev == d->sock_st.st_dev)
			unlink(d->c.socket_path);
	}
	if (d->pid_written)
		unlink(d->pid_path);
	free(d->pid_path);
	if (d->sig_fd >= 0)
		close(d->sig_fd);
	if (d->wake_fd >= 0)
		close(d->wake_fd);
	cfg_fini(&d->c);
	free(d->a.models);
}

int main(int argc, char **argv)
{
	herdd d = {.listen_fd = -1, .wake_fd = -1, .sig_fd = -1, .ready_fd = -1};
	int status = 1;
	cfg_init(&d.c);
	signal(SIGPIPE, SIG_IGN);
	int pr = parse_args(argc, argv, &d.a);
	if (pr) {
		usage(pr > 0 ? stdout : stderr);
		status = pr > 0 ? 0 : 1;
	} else if (!apply_args(&d) && !check_start(&d) && !bind_socket(&d) && !start(&d)) {
		report_ready(&d.ready_fd, 1);
		activation_notify("READY=1");
		status = loop_run(d.lp) ? 1 : 0;
		activation_notify("STOPPING=1");
		blog_msg(&d.log, BLOG_INFO, "stopped");
	}
	herdd_fini(&d);
	return status;
}
