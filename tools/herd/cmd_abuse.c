/* herd abuse: the victim-latency benchmark (scripts/bench-abuse.sh runs it
 * once per attack against a fresh broker).
 *
 *   herd abuse --socket PATH --model NAME --attack KIND [--seconds 15]
 *              [--broker-pid PID] [--log FILE] [--victim-tokens 8]
 *              [--head-start-ms 1000] [--attacker-uid UID]
 *   herd abuse --list
 *
 * Forks one attacker process (tools/herd/abuse_attack.c: KIND is one of the
 * issue's attacks, or `none` for the baseline) that attacks the broker at
 * PATH for the given seconds, and after the head start one victim process:
 * an ordinary libherd agent that sends one greedy request of
 * --victim-tokens new tokens after the other (one such request runs first,
 * unmeasured, to warm the broker up). With --attacker-uid (as root) the
 * attacker runs as that uid, keeping this process's group as a
 * supplementary one so that it may still reach a socket of mode 0660:
 * the per-uid limits then stand between two users, as in a deployment
 * where an attacker does not share the victim's uid. Meanwhile it samples the
 * broker's RSS every 200 ms and its CPU time (/proc/PID). At the end it
 * stops both (a victim request still unanswered counts as unanswered, its
 * wait so far as a lower bound of its latency), waits 2 s and reads the
 * broker's RSS once more (was the memory given back?).
 *
 * Output: one JSON object on stdout: attack, the victim's requests,
 * answered / failed / unanswered counts and latency p50/p95/max (ms), the
 * broker's RSS at the start, its maximum, at the end and 2 s after the
 * attacker left, its growth (MiB), its CPU seconds, whether it is still
 * alive, the lines its log grew by, and what the attacker sent and read.
 * Exit status: 0 when it measured (whatever the outcome), 1 when it could
 * not, 2 for a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "abuse.h"
#include "cli.h"
#include "common/clock.h"
#include "herd/herd.h"

#define ABUSE_SAMPLE_MS 200       /* broker RSS sampling */
#define ABUSE_ATTACKER_GRACE_MS 15000 /* for the attacker to report after the end */
#define ABUSE_AFTER_MS 2000       /* then the broker's RSS once more */
#define ABUSE_VICTIM_CONNECT_MS 5000

typedef struct abuse_opts {
	const char *socket, *model, *attack, *log;
	long seconds, broker_pid, victim_tokens, head_start_ms, grace_s;
	long attacker_uid;  /* -1: the attacker keeps this process's uid */
	int stop_r, stop_w; /* the attacker stops at EOF on stop_r */
} abuse_opts;

/* What the parent learnt about the victim. */
typedef struct victim_view {
	double *lat;      /* answered requests' latency, ms */
	size_t n_lat, cap;
	long sent, failed, connect_failed;
	double pending_since; /* clock_mono_ms of an unanswered request; 0: none */
	char first_err[200];
	char *buf;        /* partial line from the pipe */
	size_t len;
} victim_view;

typedef struct broker_view {
	long rss0, rss_max, rss_end, rss_after; /* kB */
	double cpu0, cpu_end;                   /* s */
	long log0, log_end;                     /* lines */
} broker_view;

/* ---- /proc ------------------------------------------------------------------ */

static long proc_rss_kb(long pid)
{
	char path[64], line[256];
	long kb = 0;
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static double proc_cpu_s(long pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long file_lines(const char *path)
{
	if (!path)
		return 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char buf[65536];
	long n = 0;
	size_t r;
	while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
		for (size_t i = 0; i < r; i++)
			n += buf[i] == '\n';
	fclose(f);
	return n;
}

/* ---- the two children -------------------------------------------------------- */

static void write_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* Appends s to a JSON string being built in out (escaped). */
static void json_esc(char *out, size_t cap, const char *s)
{
	size_t o = strlen(out);
	for (; *s && o + 7 < cap; s++) {
		const unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			o += (size_t)snprintf(out + o, cap - o, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = 0;
}

/* The attacker: runs the attack, then reports one JSON line on fd. */
static void attacker_main(const abuse_opts *o, double deadline, int fd)
{
	if (o->attacker_uid >= 0) {
		const gid_t g = getgid();
		if (setgroups(1, &g) || setuid((uid_t)o->attacker_uid)) {
			char line[256];
			snprintf(line, sizeof(line), "{\"started\":false,\"first_err\":\"setuid %ld: %s\"}\n",
				 o->attacker_uid, strerror(errno));
			write_all(fd, line, strlen(line));
			return;
		}
	}
	/* the attack goes on while the victim's last request is waited for */
	abuse_target t = {.socket = o->socket, .model = o->model,
			  .deadline_ms = deadline + (double)o->grace_s * 1e3, .stop_fd = o->stop_r};
	abuse_stats st;
	const int rc = abuse_attack_run(o->attack, &t, &st);
	char line[1024], err[400] = "";
	json_esc(err, sizeof(err), st.first_err);
	snprintf(line, sizeof(line),
		 "{\"started\":%s,\"frames\":%ld,\"bytes\":%llu,\"conns\":%ld,\"conn_fail\":%ld,"
		 "\"closed_by_broker\":%ld,\"done\":%ld,\"err\":%ld,\"tok\":%ld,\"first_err\":\"%s\"}\n",
		 rc ? "false" : "true", st.frames, (unsigned long long)st.bytes, st.conns,
		 st.conn_fail, st.closed, st.done, st.err, st.tok, err);
	write_all(fd, line, strlen(line));
}

/* The victim: one request after the other until the deadline. Lines on fd:
 * "K <t_ms>" connecting, "S <t_ms>" sent, "D <latency_ms> <rc> <msg>"
 * ended, "C <rc> <msg>" could not connect. A connection still being made
 * at the end counts as an unanswered request. */
static void victim_main(const abuse_opts *o, double deadline, int fd)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = o->socket;
	co.name = "victim";
	close(o->stop_w); /* only the parent's copy decides when the attacker stops */
	co.timeout_ms = ABUSE_VICTIM_CONNECT_MS;
	herd_client *c = NULL;
	char line[512];
	for (long i = 0; clock_mono_ms() < deadline; i++) {
		if (!c || !herd_connected(c)) {
			snprintf(line, sizeof(line), "K %.3f\n", clock_mono_ms());
			write_all(fd, line, strlen(line));
			const int rc = c ? herd_reconnect(c) : herd_connect(&c, &co);
			if (rc) {
				snprintf(line, sizeof(line), "C %d %.400s\n", rc, herd_client_errmsg(c));
				write_all(fd, line, strlen(line));
				usleep(200 * 1000);
				continue;
			}
		}
		char prompt[64];
		snprintf(prompt, sizeof(prompt), "The victim asks question %ld", i);
		herd_request r;
		herd_request_init(&r);
		r.model = o->model;
		r.prompt = prompt;
		r.max_tokens = (int)o->victim_tokens;
		r.no_cache = 1;
		herd_result res;
		const double t0 = clock_mono_ms();
		snprintf(line, sizeof(line), "S %.3f\n", t0);
		write_all(fd, line, strlen(line));
		const int rc = herd_generate(c, &r, &res);
		snprintf(line, sizeof(line), "D %.3f %d %.400s\n", clock_mono_ms() - t0, rc,
			 rc ? herd_client_errmsg(c) : "");
		write_all(fd, line, strlen(line));
		herd_result_free(&res);
	}
	herd_close(c);
}

/* One victim-sized request before anything is measured, so the broker
 * has mapped the model's pages and grown its working buffers: the RSS
 * growth reported is the attack's, not the first request's. 0 or -1. */
static int warm_up(const abuse_opts *o)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = o->socket;
	co.name = "warm-up";
	co.timeout_ms = ABUSE_VICTIM_CONNECT_MS;
	herd_client *c = NULL;
	int rc = herd_connect(&c, &co);
	if (rc == 0) {
		herd_request r;
		herd_request_init(&r);
		r.model = o->model;
		r.prompt = "The victim warms up";
		r.max_tokens = (int)o->victim_tokens;
		herd_result res;
		rc = herd_generate(c, &r, &res);
		herd_result_free(&res);
	}
	if (rc)
		fprintf(stderr, "herd abuse: warm-up request failed: %s\n", herd_client_errmsg(c));
	herd_close(c);
	return rc ? -1 : 0;
}

typedef void (*child_fn)(const abuse_opts *, double, int);

/* Forks fn with the write end of a new pipe; *rfd gets the read end. */
static pid_t spawn_child(const abuse_opts *o, double deadline, child_fn fn, int *rfd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -1;
	fflush(stdout);
	const pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		signal(SIGPIPE, SIG_IGN);
		fn(o, deadline, p[1]);
		_exit(0);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return -1;
	}
	*rfd = p[0];
	return pid;
}

/* ---- the parent ---------------------------------------------------------------- */

static void lat_push(victim_view *v, double x)
{
	if (v->n_lat == v->cap) {
		const size_t cap = v->cap ? v->cap * 2 : 256;
		double *nl = realloc(v->lat, cap * sizeof(double));
		if (!nl)
			return;
		v->lat = nl;
		v->cap = cap;
	}
	v->lat[v->n_lat++] = x;
}

static void victim_line(victim_view *v, const char *l)
{
	double x;
	int rc = 0, off = 0;
	if ((l[0] == 'S' || l[0] == 'K') && sscanf(l + 1, "%lf", &x) == 1) {
		v->sent += l[0] == 'S';
		v->pending_since = x; /* a request, or a connection, not yet answered */
		return;
	}
	if (l[0] == 'D' && sscanf(l + 1, "%lf %d %n", &x, &rc, &off) >= 2) {
		v->pending_since = 0;
		if (rc)
			v->failed++;
		else
			lat_push(v, x);
	} else if (l[0] == 'C' && sscanf(l + 1, "%d %n", &rc, &off) >= 1) {
		v->pending_since = 0;
		v->connect_failed++;
	} else {
		return;
	}
	if (rc && !v->first_err[0] && off > 0)
		snprintf(v->first_err, sizeof(v->first_err), "%d: %s", rc, l + 1 + off);
}

/* Reads what the victim wrote; 0 at EOF. */
static int victim_read(victim_view *v, int fd)
{
	char buf[4096];
	const ssize_t n = read(fd, buf, sizeof(buf));
	if (n <= 0)
		return n < 0 && errno == EINTR;
	char *nb = realloc(v->buf, v->len + (size_t)n + 1);
	if (!nb)
		return 0;
	v->buf = nb;
	memcpy(v->buf + v->len, buf, (size_t)n);
	v->len += (size_t)n;
	v->buf[v->len] = 0;
	char *start = v->buf, *nl;
	while ((nl = strchr(start, '\n'))) {
		*nl = 0;
		victim_line(v, start);
		start = nl + 1;
	}
	v->len -= (size_t)(start - v->buf);
	memmove(v->buf, start, v->len + 1);
	return 1;
}

/* Until the deadline, and then until the victim's last request is
 * answered (at most the grace period): the victim's reports and the
 * broker's RSS. */
static void watch(const abuse_opts *o, double deadline, int vfd, victim_view *v, broker_view *b)
{
	int open = vfd >= 0;
	double next = 0;
	const double until = deadline + (double)o->grace_s * 1e3;
	for (;;) {
		const double now = clock_mono_ms();
		if (now >= until || (now >= deadline && (!open || v->pending_since == 0)))
			break;
		if (now >= next) {
			const long kb = proc_rss_kb(o->broker_pid);
			if (kb > b->rss_max)
				b->rss_max = kb;
			next = now + ABUSE_SAMPLE_MS;
		}
		const double left = (now < deadline ? deadline : until) - now;
		const int ms = left < ABUSE_SAMPLE_MS ? (int)fmax(left, 1) : ABUSE_SAMPLE_MS;
		struct pollfd p = {.fd = vfd, .events = POLLIN};
		if (!open)
			usleep((useconds_t)ms * 1000);
		else if (poll(&p, 1, ms) > 0 && !victim_read(v, vfd))
			open = 0;
	}
}

/* Waits for the attacker's JSON line (up to the grace period). */
static void attacker_collect(int afd, char *line, size_t cap)
{
	size_t len = 0;
	const double until = clock_mono_ms() + ABUSE_ATTACKER_GRACE_MS;
	line[0] = 0;
	while (len + 1 < cap && clock_mono_ms() < until) {
		struct pollfd p = {.fd = afd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		const ssize_t n = read(afd, line + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
		line[len] = 0;
		if (strchr(line, '\n'))
			break;
	}
	char *nl = strchr(line, '\n');
	if (nl)
		*nl = 0;
	if (!line[0])
		snprintf(line, cap, "{\"started\":false,\"first_err\":\"attacker did not report\"}");
}

static int cmp_dbl(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const victim_view *v, double q)
{
	if (!v->n_lat)
		return 0;
	const size_t k = (size_t)ceil(q * (double)v->n_lat);
	return v->lat[k ? k - 1 : 0];
}

static void report(const abuse_opts *o, victim_view *v, const broker_view *b, const char *att,
		   double end)
{
	if (v->n_lat)
		qsort(v->lat, v->n_lat, sizeof(double), cmp_dbl);
	const double waiting = v->pending_since > 0 ? end - v->pending_since : 0;
	double vmax = v->n_lat ? v->lat[v->n_lat - 1] : 0;
	if (waiting > vmax)
		vmax = waiting;
	char err[400] = "";
	json_esc(err, sizeof(err), v->first_err);
	const double mib = 1024;
	printf("{\"attack\":\"%s\",\"seconds\":%ld,\"victim\":{\"tokens\":%ld,\"requests\":%ld,"
	       "\"answered\":%zu,\"failed\":%ld,\"connect_failed\":%ld,\"unanswered\":%d,"
	       "\"waiting_ms\":%.1f,\"p50_ms\":%.1f,\"p95_ms\":%.1f,\"max_ms\":%.1f,"
	       "\"first_error\":\"%s\"},",
	       o->attack, o->seconds, o->victim_tokens, v->sent, v->n_lat, v->failed,
	       v->connect_failed, waiting > 0, waiting, pct(v, 0.5), pct(v, 0.95), vmax, err);
	printf("\"broker\":{\"pid\":%ld,\"alive\":%s,\"rss_start_mib\":%.1f,\"rss_max_mib\":%.1f,"
	       "\"rss_end_mib\":%.1f,\"rss_after_mib\":%.1f,\"rss_growth_mib\":%.1f,\"cpu_s\":%.2f,"
	       "\"log_lines\":%ld},\"attacker\":%s}\n",
	       o->broker_pid,
	       o->broker_pid > 0 && kill((pid_t)o->broker_pid, 0) == 0 ? "true" : "false",
	       (double)b->rss0 / mib, (double)b->rss_max / mib, (double)b->rss_end / mib,
	       (double)b->rss_after / mib, (double)(b->rss_max - b->rss0) / mib,
	       b->cpu_end - b->cpu0, b->log_end - b->log0, att);
	fflush(stdout);
}

/* ---- options ---------------------------------------------------------------------- */

static void abuse_usage(FILE *f)
{
	fprintf(f, "usage: herd abuse --socket PATH --model NAME --attack KIND [--seconds 15]\n"
		   "                  [--broker-pid PID] [--log FILE] [--victim-tokens 8]\n"
		   "                  [--head-start-ms 1000] [--grace-s 10]\n"
		   "       herd abuse --list\n"
		   "One attacker against the broker, one victim agent beside it; one JSON line\n"
		   "(scripts/bench-abuse.sh runs every attack). Attacks:\n");
	for (int i = 0; abuse_attack_names[i]; i++)
		fprintf(f, "  %-10s %s\n", abuse_attack_names[i],
			abuse_attack_help(abuse_attack_names[i]));
}

static int abuse_parse(int argc, char **argv, abuse_opts *o)
{
	*o = (abuse_opts){.seconds = 15, .victim_tokens = 8, .head_start_ms = 1000, .grace_s = 10,
			  .attacker_uid = -1};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long *num = !strcmp(a, "--seconds")	    ? &o->seconds
			    : !strcmp(a, "--broker-pid")    ? &o->broker_pid
			    : !strcmp(a, "--victim-tokens") ? &o->victim_tokens
			    : !strcmp(a, "--head-start-ms") ? &o->head_start_ms
			    : !strcmp(a, "--grace-s")	    ? &o->grace_s
			    : !strcmp(a, "--attacker-uid")  ? &o->attacker_uid
							    : NULL;
		const char **str = !strcmp(a, "--socket")   ? &o->socket
				   : !strcmp(a, "--model")  ? &o->model
				   : !strcmp(a, "--attack") ? &o->attack
				   : !strcmp(a, "--log")    ? &o->log
							    : NULL;
		if (num) {
			if (cli_int(a, v, num == &o->broker_pid ? 1 : 0, 1L << 30, num))
				return -1;
			i++;
		} else if (str && v) {
			*str = v;
			i++;
		} else if (!strcmp(a, "--list") || !strcmp(a, "-h") || !strcmp(a, "--help")) {
			return 1;
		} else {
			fprintf(stderr, "herd abuse: unexpected or incomplete argument '%s'\n", a);
			return -1;
		}
	}
	if (!o->socket || !o->model || !o->attack || !abuse_attack_help(o->attack)) {
		fprintf(stderr, "herd abuse: --socket, --model and a known --attack are required\n");
		return -1;
	}
	if (o->seconds < 1 || o->head_start_ms >= o->seconds * 1000) {
		fprintf(stderr, "herd abuse: --seconds must be at least 1 and exceed the head start\n");
		return -1;
	}
	return 0;
}

int cmd_abuse(int argc, char **argv)
{
	abuse_opts o;
	const int pr = abuse_parse(argc, argv, &o);
	if (pr) {
		abuse_usage(pr > 0 ? stdout : stderr);
		return pr > 0 ? 0 : 2;
	}
	broker_view b = {0};
	victim_view v = {0};
	if (warm_up(&o))
		return 1;
	if (o.broker_pid) {
		b.rss0 = b.rss_max = proc_rss_kb(o.broker_pid);
		b.cpu0 = proc_cpu_s(o.broker_pid);
	}
	b.log0 = file_lines(o.log);
	const double deadline = clock_mono_ms() + (double)o.seconds * 1e3;
	int afd = -1, vfd = -1, stop[2];
	if (pipe2(stop, O_CLOEXEC)) {
		fprintf(stderr, "herd abuse: pipe: %s\n", strerror(errno));
		return 1;
	}
	o.stop_r = stop[0];
	o.stop_w = stop[1];
	const pid_t att = spawn_child(&o, deadline, attacker_main, &afd);
	if (att < 0) {
		fprintf(stderr, "herd abuse: fork: %s\n", strerror(errno));
		return 1;
	}
	usleep((useconds_t)o.head_start_ms * 1000);
	const pid_t vic = spawn_child(&o, deadline, victim_main, &vfd);
	watch(&o, deadline, vfd, &v, &b);
	const double end = clock_mono_ms();
	b.rss_end = proc_rss_kb(o.broker_pid);
	b.cpu_end = proc_cpu_s(o.broker_pid);
	if (vic > 0) {
		kill(vic, SIGKILL);
		waitpid(vic, NULL, 0);
	}
	close(o.stop_w); /* the attacker stops and reports now */
	close(o.stop_r);
	char line[2048];
	attacker_collect(afd, line, sizeof(line));
	kill(att, SIGKILL);
	waitpid(att, NULL, 0);
	usleep(ABUSE_AFTER_MS * 1000);
	b.rss_after = proc_rss_kb(o.broker_pid);
	b.log_end = file_lines(o.log);
	report(&o, &v, &b, line, end);
	if (afd >= 0)
		close(afd);
	if (vfd >= 0)
		close(vfd);
	free(v.lat);
	free(v.buf);
	return 0;
}
