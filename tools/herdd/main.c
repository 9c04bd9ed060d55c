/* herdd: the herd broker.
 *
 *   herdd [--config FILE] [--socket PATH] [--model NAME=FILE[:TYPE]]...
 *         [--threads N] [--state-dir DIR] [--max-batch N] [--daemon]
 *         [--pid-file FILE] [--verbose]
 *
 * Foreground by default. Start-up errors (bad configuration, unreadable
 * model, socket in use by a live broker, pid file naming a live herdd) are
 * one clear message on stderr and exit status 1; with --daemon the parent
 * waits until the daemon is serving (or has failed) and exits accordingly.
 * SIGTERM / SIGINT (read from a signalfd in the ring): stop accepting,
 * cancel in-flight requests (agents get `done` reason "cancel"), exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/config.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "broker/models.h"
#include "herd/error.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: herdd [--config FILE] [--socket PATH] [--model NAME=FILE[:TYPE]]...\n"
		"             [--threads N] [--state-dir DIR] [--max-batch N] [--daemon]\n"
		"             [--pid-file FILE] [--verbose]\n");
}

typedef struct args {
	const char *config, *socket, *state_dir, *pid_file;
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

int main(int argc, char **argv)
{
	args a = {0};
	cfg c;
	cfg_init(&c);
	blog log;
	models *ms = NULL;
	loop *lp = NULL;
	int listen_fd = -1, wake_fd = -1, sig_fd = -1, ready_fd = -1, pid_written = 0, bound = 0;
	int status = 1;
	char *pid_path = NULL;
	struct stat sock_st;
	char err[1024] = "";

	signal(SIGPIPE, SIG_IGN);
	int pr = parse_args(argc, argv, &a);
	if (pr) {
		usage(pr > 0 ? stdout : stderr);
		status = pr > 0 ? 0 : 1;
		goto out;
	}
	if (a.config && cfg_load_file(&c, a.config, err, sizeof(err))) {
		fprintf(stderr, "herdd: %s\n", err);
		goto out;
	}
	for (int i = 0; i < a.n_models; i++)
		if (cfg_add_model_spec(&c, a.models[i], err, sizeof(err))) {
			fprintf(stderr, "herdd: %s\n", err);
			goto out;
		}
	if ((a.socket && cfg_set_str(&c.socket_path, a.socket)) ||
	    (a.state_dir && cfg_set_str(&c.state_dir, a.state_dir))) {
		fprintf(stderr, "herdd: out of memory\n");
		goto out;
	}
	if (a.threads >= 0)
		c.threads = (int)a.threads;
	if (a.max_batch > 0)
		c.max_batch_size = (int)a.max_batch;
	if (a.verbose)
		c.verbose = 1;
	if (a.pid_file && !(pid_path = strdup(a.pid_file))) {
		fprintf(stderr, "herdd: out of memory\n");
		goto out;
	}
	if (cfg_finish(&c, err, sizeof(err))) {
		fprintf(stderr, "herdd: %s\n", err);
		goto out;
	}
	blog_init(&log, c.verbose);
	for (int i = 0; i < c.n_models; i++)
		if (access(c.models[i].file, R_OK)) {
			fprintf(stderr, "herdd: model %s: cannot read '%s': %s\n", c.models[i].name,
				c.models[i].file, strerror(errno));
			goto out;
		}
	if (a.daemon) {
		int bad = make_abs(&c.socket_path) || make_abs(&c.state_dir) || make_abs(&pid_path);
		for (int i = 0; i < c.n_models; i++)
			bad = bad || make_abs(&c.models[i].file);
		if (bad) {
			fprintf(stderr, "herdd: cannot resolve relative paths\n");
			goto out;
		}
	}
	if (pid_path) {
		pid_t other = pidfile_live(pid_path);
		if (other) {
			fprintf(stderr, "herdd: already running as pid %d (pid file %s)\n", (int)other,
				pid_path);
			goto out;
		}
	}

	/* Signals: blocked in every thread (the schedulers and kernel pools
	 * inherit this mask) and read from a signalfd in the ring. */
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	if (sigprocmask(SIG_BLOCK, &ss, NULL)) {
		fprintf(stderr, "herdd: sigprocmask: %s\n", strerror(errno));
		goto out;
	}
	int rc = loop_listen(c.socket_path, &listen_fd, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herdd: %s\n", err);
		goto out;
	}
	bound = stat(c.socket_path, &sock_st) == 0;
	if (a.daemon) {
		/* before any thread exists: threads do not survive fork */
		rc = daemonize(&ready_fd);
		if (rc) {
			fprintf(stderr, "herdd: cannot daemonize: %s\n", strerror(-rc));
			goto out;
		}
	}
	/* Blocking descriptors on purpose: io_uring polls them itself, while an
	 * O_NONBLOCK file may make a read complete at once with -EAGAIN. */
	sig_fd = signalfd(-1, &ss, SFD_CLOEXEC);
	wake_fd = eventfd(0, EFD_CLOEXEC);
	if (sig_fd < 0 || wake_fd < 0) {
		fprintf(stderr, "herdd: %s: %s\n", sig_fd < 0 ? "signalfd" : "eventfd", strerror(errno));
		goto out;
	}
	if (pid_path) {
		if ((rc = pidfile_write(pid_path))) {
			fprintf(stderr, "herdd: cannot write pid file %s: %s\n", pid_path, strerror(-rc));
			goto out;
		}
		pid_written = 1;
	}
	models_opts mo = {.cfg = &c, .wake_fd = wake_fd, .log = &log,
			  .force_ref = getenv("HERD_FORCE_REF") != NULL};
	err[0] = 0;
	rc = models_create(&ms, &mo, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herdd: %s\n", err[0] ? err : herd_strerror(rc));
		goto out;
	}
	loop_opts lo = {.cfg = &c, .models = ms, .log = &log, .listen_fd = listen_fd,
			.wake_fd = wake_fd, .signal_fd = sig_fd};
	rc = loop_create(&lp, &lo);
	if (rc) {
		fprintf(stderr, "herdd: cannot set up io_uring: %s\n", strerror(-rc));
		goto out;
	}
	listen_fd = -1; /* the loop owns it */
	report_ready(&ready_fd, 1);
	rc = loop_run(lp);
	status = rc ? 1 : 0;
	blog_msg(&log, BLOG_INFO, "stopped");
out:
	report_ready(&ready_fd, 0);
	loop_destroy(lp);
	models_destroy(ms);
	if (listen_fd >= 0)
		close(listen_fd);
	if (bound) {
		/* remove the socket file only if it is still ours */
		struct stat now;
		if (stat(c.socket_path, &now) == 0 && now.st_ino == sock_st.st_ino &&
		    now.st_dev == sock_st.st_dev)
			unlink(c.socket_path);
	}
	if (pid_written)
		unlink(pid_path);
	free(pid_path);
	if (sig_fd >= 0)
		close(sig_fd);
	if (wake_fd >= 0)
		close(wake_fd);
	cfg_fini(&c);
	free(a.models);
	return status;
}
