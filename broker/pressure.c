/* Memory pressure: PSI source and trigger, the pressure thread, the
 * ordered actions with hysteresis (see pressure.h). The eBPF side is in
 * pressure_bpf.c. */
#include "broker/pressure.h"
#include "broker/pressure_bpf.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "herd/error.h"

#define PRESSURE_TICK_MS 250
#define PRESSURE_HIST 64 /* some-total samples kept: 16 s of ticks, past the longest window */
#define PSI_SYSTEM_PATH "/proc/pressure/memory"

typedef struct pressure_action {
	int rank;
	char name[PRESSURE_NAME_MAX];
	pressure_shed_fn shed;
	pressure_undo_fn undo;
	void *arg;
	int applied; /* shed ran with a result > 0 in this episode */
} pressure_action;

struct pressure {
	pressure_opts o;
	char source[256];
	char armed[64]; /* the trigger the kernel took, "" when polling */
	int read_fd, trig_fd, stop_fd;
	pthread_t thread;
	int thread_on;
	pthread_mutex_t mu; /* guards what snapshots read, the event ring and refuse_why */
	pressure_action act[PRESSURE_MAX_ACTIONS];
	int n_act;
	/* state machine (the stepping thread; copies under mu) */
	int level, in_episode;
	double last_hot, last_escalate;
	pressure_obs cur;
	uint64_t triggers, episodes, actions_run, recoveries;
	atomic_ulong refused;
	atomic_int refusing;
	char refuse_why[200];
	/* some-total history for the window growth */
	double hist_t[PRESSURE_HIST];
	uint64_t hist_total[PRESSURE_HIST];
	int hist_n, hist_pos;
	int read_failed_logged;
	/* events, a ring */
	pressure_event ev[PRESSURE_EVENTS];
	int ev_n, ev_pos;
	/* eBPF */
	pbpf *bpf;
	char bpf_status[160];
	uint64_t last_stall_ns;
	double last_stall_t, last_refresh;
};

/* ---- PSI text ------------------------------------------------------------ */

static int psi_field(const char *s, const char *name, double *d, uint64_t *u)
{
	const char *p = strstr(s, name);
	if (!p)
		return -1;
	p += strlen(name);
	char *end;
	errno = 0;
	if (d)
		*d = strtod(p, &end);
	else
		*u = strtoull(p, &end, 10);
	if (end == p || errno || (*end && *end != ' ' && *end != '\n'))
		return -1;
	return 0;
}

static int psi_parse_line(const char *line, psi_line *out)
{
	if (psi_field(line, " avg10=", &out->avg10, NULL) ||
	    psi_field(line, " avg60=", &out->avg60, NULL) ||
	    psi_field(line, " avg300=", &out->avg300, NULL) ||
	    psi_field(line, " total=", NULL, &out->total))
		return -1;
	if (out->avg10 < 0 || out->avg10 > 100 || out->avg60 < 0 || out->avg60 > 100 ||
	    out->avg300 < 0 || out->avg300 > 100)
		return -1;
	return 0;
}

int psi_parse(const char *text, size_t len, psi_sample *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char buf[512];
	if (len >= sizeof(buf))
		return herd_errf(err, errlen, HERD_E_FORMAT, "PSI text of %zu bytes is too long", len);
	memcpy(buf, text, len);
	buf[len] = 0;
	int have_some = 0, lineno = 0;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		psi_line *dst = !strncmp(line, "some ", 5) ? &out->some
				: !strncmp(line, "full ", 5) ? &out->full
							     : NULL;
		if (!dst || psi_parse_line(line, dst))
			return herd_errf(err, errlen, HERD_E_FORMAT,
					 "PSI line %d is not 'some|full avg10=P avg60=P avg300=P total=US': "
					 "'%.80s'",
					 lineno, line);
		if (dst == &out->some)
			have_some = 1;
		else
			out->has_full = 1;
	}
	if (!have_some)
		return herd_errf(err, errlen, HERD_E_FORMAT, "PSI text has no 'some' line");
	return 0;
}

/* ---- source and trigger ----------------------------------------------------- */

/* The broker's cgroup v2 directory's memory.pressure, when it is in a
 * cgroup other than the root: 0 with path filled, or -ENOENT. */
static int cgroup_psi_path(char *path, size_t n)
{
	char line[1024], rel[512] = "", mnt[512] = "";
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -ENOENT;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3) && sscanf(line + 3, "%511s", rel) == 1)
			break;
	fclose(f);
	if (!rel[0] || !strcmp(rel, "/") || (f = fopen("/proc/self/mountinfo", "re")) == NULL)
		return -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		char mp[512];
		const char *sep = strstr(line, " - cgroup2 ");
		if (sep && sscanf(line, "%*s %*s %*s %*s %511s", mp) == 1) {
			memcpy(mnt, mp, sizeof(mnt));
			break;
		}
	}
	fclose(f);
	if (!mnt[0] || (size_t)snprintf(path, n, "%s%s/memory.pressure", mnt, rel) >= n)
		return -ENOENT;
	return access(path, R_OK) ? -ENOENT : 0;
}

static int check_opts(const pressure_opts *o, char *err, size_t errlen)
{
	if (o->window_us < 500000 || o->window_us > 10000000)
		return herd_errf(err, errlen, HERD_E_INVAL,
				 "pressure.window_us %u is outside the kernel's PSI window range "
				 "500000..10000000",
				 o->window_us);
	if (o->trigger_us == 0 || o->trigger_us > o->window_us)
		return herd_errf(err, errlen, HERD_E_INVAL,
				 "pressure.trigger_us %u must be above 0 and at most the window (%u us)",
				 o->trigger_us, o->window_us);
	return 0;
}

static int write_trigger(int fd, uint32_t trigger_us, uint32_t window_us, char *t, size_t tn)
{
	int n = snprintf(t, tn, "some %u %u", trigger_us, window_us);
	return write(fd, t, (size_t)n + 1) < 0 ? -errno : 0; /* the NUL included (psi.rst) */
}

/* Arms "some TRIGGER WINDOW" on the source: 0, or the reason in err.
 * Without CAP_SYS_RESOURCE the kernel (6.5+) takes only windows that are
 * multiples of 2 s: then the window is rounded up (the threshold scaled
 * with it), with a note in err and 1 returned. */
static int arm_trigger(pressure *p, char *err, size_t errlen)
{
	int fd = open(p->source, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return herd_errf(err, errlen, -errno,
				 "cannot open %s for a PSI trigger: %s (polling it instead)", p->source,
				 strerror(errno));
	char t[64], t2[64];
	int rc = write_trigger(fd, p->o.trigger_us, p->o.window_us, t, sizeof(t));
	if (rc == -EINVAL && p->o.window_us % 2000000) {
		const uint32_t w2 = (p->o.window_us / 2000000 + 1) * 2000000;
		const uint32_t t2us = (uint32_t)((uint64_t)p->o.trigger_us * w2 / p->o.window_us);
		if (w2 <= 10000000 && write_trigger(fd, t2us, w2, t2, sizeof(t2)) == 0) {
			p->trig_fd = fd;
			snprintf(p->armed, sizeof(p->armed), "%s", t2);
			return herd_errf(err, errlen, 1,
					 "the kernel refused the PSI trigger '%s' on %s (without "
					 "CAP_SYS_RESOURCE windows must be multiples of 2 s); armed '%s'",
					 t, p->source, t2);
		}
	}
	if (rc) {
		close(fd);
		return herd_errf(err, errlen, rc,
				 "the kernel refused the PSI trigger '%s' on %s: %s (polling instead)", t,
				 p->source, strerror(-rc));
	}
	p->trig_fd = fd;
	snprintf(p->armed, sizeof(p->armed), "%s", t);
	return 0;
}

/* Opens the source for reading and checks that it reads as PSI. */
static int open_source(pressure *p, char *err, size_t errlen)
{
	if (p->o.psi_path)
		snprintf(p->source, sizeof(p->source), "%s", p->o.psi_path);
	else if (cgroup_psi_path(p->source, sizeof(p->source)))
		snprintf(p->source, sizeof(p->source), "%s", PSI_SYSTEM_PATH);
	p->read_fd = open(p->source, O_RDONLY | O_CLOEXEC);
	if (p->read_fd < 0)
		return herd_errf(err, errlen, -errno,
				 "cannot read memory pressure from %s: %s (a kernel without PSI, "
				 "CONFIG_PSI, or booted with psi=0)",
				 p->source, strerror(errno));
	char buf[512], why[200];
	ssize_t n = pread(p->read_fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		return herd_errf(err, errlen, -errno, "cannot read %s: %s (PSI disabled: psi=0?)",
				 p->source, strerror(errno));
	psi_sample s;
	if (psi_parse(buf, (size_t)n, &s, why, sizeof(why)))
		return herd_errf(err, errlen, HERD_E_FORMAT, "%s does not read as PSI: %s", p->source,
				 why);
	p->cur.psi = s;
	return 0;
}

int pressure_create(pressure **out, const pressure_opts *o, int *degraded, char *err,
		    size_t errlen)
{
	*out = NULL;
	*degraded = 0;
	int rc = check_opts(o, err, errlen);
	if (rc)
		return rc;
	pressure *p = calloc(1, sizeof(*p));
	if (!p)
		return herd_errf(err, errlen, -ENOMEM, "out of memory");
	p->o = *o;
	p->read_fd = p->trig_fd = p->stop_fd = -1;
	pthread_mutex_init(&p->mu, NULL);
	snprintf(p->bpf_status, sizeof(p->bpf_status), "off: not started");
	if ((rc = open_source(p, err, errlen)) == 0) {
		p->o.psi_path = NULL; /* not kept: source holds the path */
		if (arm_trigger(p, err, errlen))
			*degraded = 1;
		p->stop_fd = eventfd(0, EFD_CLOEXEC);
		if (p->stop_fd < 0)
			rc = herd_errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
	}
	if (rc) {
		pressure_destroy(p);
		return rc;
	}
	*out = p;
	return 0;
}

void pressure_destroy(pressure *p)
{
	if (!p)
		return;
	if (p->thread_on) {
		uint64_t one = 1;
		if (write(p->stop_fd, &one, sizeof(one)) < 0)
			(void)0;
		pthread_join(p->thread, NULL);
	}
	pbpf_close(p->bpf);
	if (p->read_fd >= 0)
		close(p->read_fd);
	if (p->trig_fd >= 0)
		close(p->trig_fd);
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ---- actions ------------------------------------------------------------------ */

int pressure_add_action(pressure *p, int rank, const char *name, pressure_shed_fn shed,
			pressure_undo_fn undo, void *arg)
{
	if (!name || !name[0] || strlen(name) >= PRESSURE_NAME_MAX || !shed)
		return HERD_E_INVAL;
	if (p->n_act == PRESSURE_MAX_ACTIONS)
		return HERD_E_LIMIT;
	int i = p->n_act++;
	while (i > 0 && p->act[i - 1].rank > rank) { /* stable: equal ranks keep their order */
		p->act[i] = p->act[i - 1];
		i--;
	}
	p->act[i] = (pressure_action){.rank = rank, .shed = shed, .undo = undo, .arg = arg};
	snprintf(p->act[i].name, sizeof(p->act[i].name), "%s", name);
	return 0;
}

static int shed_heap(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	(void)arg;
	(void)why;
	struct mallinfo2 before = mallinfo2();
	int released = malloc_trim(0);
	struct mallinfo2 after = mallinfo2();
	snprintf(msg, msglen, "malloc_trim: %s (heap free %.1f MiB before, %.1f MiB after)",
		 released ? "returned free heap pages to the kernel" : "nothing to return",
		 (double)before.fordblks / (1 << 20), (double)after.fordblks / (1 << 20));
	return released;
}

static int shed_refuse(void *arg, const pressure_event *why, char *msg, size_t msglen)
{
	pressure *p = arg;
	pthread_mutex_lock(&p->mu);
	snprintf(p->refuse_why, sizeof(p->refuse_why),
		 "memory pressure: the broker refuses new requests until it falls (PSI some "
		 "avg10=%.2f%% avg60=%.2f%%, full avg10=%.2f%%)",
		 why->psi.some.avg10, why->psi.some.avg60, why->psi.full.avg10);
	pthread_mutex_unlock(&p->mu);
	atomic_store(&p->refusing, 1);
	snprintf(msg, msglen, "refusing new requests and loads with -EAGAIN");
	return 1;
}

static void undo_refuse(void *arg)
{
	pressure *p = arg;
	atomic_store(&p->refusing, 0);
}

int pressure_add_builtin_actions(pressure *p)
{
	int rc = pressure_add_action(p, PRESSURE_RANK_HEAP, "heap_trim", shed_heap, NULL, p);
	return rc ? rc : pressure_add_action(p, PRESSURE_RANK_REFUSE, "refuse", shed_refuse, undo_refuse, p);
}

int pressure_refusing(const pressure *p, char *why, size_t whylen)
{
	if (!p || !atomic_load(&((pressure *)p)->refusing))
		return 0;
	pressure *q = (pressure *)p;
	pthread_mutex_lock(&q->mu);
	snprintf(why, whylen, "%s", q->refuse_why);
	pthread_mutex_unlock(&q->mu);
	return 1;
}

void pressure_note_refused(pressure *p)
{
	if (p)
		atomic_fetch_add(&p->refused, 1);
}

/* ---- the state machine ----------------------------------------------------------- */

static void log_event(const pressure *p, const pressure_event *e)
{
	const int lvl = e->result < 0 ? BLOG_WARN : e->result == 0 ? BLOG_DEBUG : BLOG_INFO;
	const char *what = e->result == PRESSURE_UNDO ? "undone" : e->result > 0 ? "shed"
			   : e->result == 0 ? "nothing to shed" : herd_strerror(e->result);
	blog_msg(p->o.log, lvl,
		 "pressure: %s (rank %d) %s: %s; PSI %s some avg10=%.2f avg60=%.2f total=%llu "
		 "full avg10=%.2f avg60=%.2f total=%llu; some over the window %.0f us (trigger %u us%s); "
		 "reclaim stall %.1f ms/s",
		 e->name, e->rank, what, e->msg, p->source, e->psi.some.avg10, e->psi.some.avg60,
		 (unsigned long long)e->psi.some.total, e->psi.full.avg10, e->psi.full.avg60,
		 (unsigned long long)e->psi.full.total, e->some_window_us, p->o.trigger_us,
		 e->trigger ? ", fired" : "", e->stall_ms_per_s);
}

/* Fills an event from the observation (name, rank, result set after). */
static void event_init(pressure_event *e, const pressure_action *a, const pressure_obs *obs,
		       double now)
{
	memset(e, 0, sizeof(*e));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->t_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	e->t_mono_ms = now;
	e->rank = a->rank;
	snprintf(e->name, sizeof(e->name), "%s", a->name);
	e->psi = obs->psi;
	e->some_window_us = obs->some_window_us;
	e->stall_ms_per_s = obs->stall_ms_per_s;
	e->trigger = obs->trigger;
}

static void event_push(pressure *p, const pressure_event *e)
{
	pthread_mutex_lock(&p->mu);
	p->ev[p->ev_pos] = *e;
	p->ev_pos = (p->ev_pos + 1) % PRESSURE_EVENTS;
	if (p->ev_n < PRESSURE_EVENTS)
		p->ev_n++;
	p->actions_run += e->result != PRESSURE_UNDO;
	pthread_mutex_unlock(&p->mu);
	log_event(p, e);
}

/* Runs actions from the current level until one sheds something. */
static void escalate(pressure *p, const pressure_obs *obs, double now)
{
	p->last_escalate = now;
	while (p->level < p->n_act) {
		pressure_action *a = &p->act[p->level];
		pressure_event e;
		event_init(&e, a, obs, now);
		e.result = a->shed(a->arg, &e, e.msg, sizeof(e.msg));
		pthread_mutex_lock(&p->mu);
		p->level++;
		pthread_mutex_unlock(&p->mu);
		a->applied = e.result > 0;
		event_push(p, &e);
		if (e.result > 0)
			return;
	}
}

static void recover(pressure *p, const pressure_obs *obs, double now)
{
	for (int i = p->level - 1; i >= 0; i--) {
		pressure_action *a = &p->act[i];
		if (!a->applied || !a->undo)
			continue;
		a->undo(a->arg);
		a->applied = 0;
		pressure_event e;
		event_init(&e, a, obs, now);
		e.result = PRESSURE_UNDO;
		snprintf(e.msg, sizeof(e.msg), "pressure fell: no signal for %d ms", p->o.recover_ms);
		event_push(p, &e);
	}
	pthread_mutex_lock(&p->mu);
	p->level = 0;
	p->in_episode = 0;
	p->recoveries++;
	pthread_mutex_unlock(&p->mu);
	blog_msg(p->o.log, BLOG_INFO,
		 "pressure: recovered (PSI some avg10=%.2f avg60=%.2f, over the window %.0f us)",
		 obs->psi.some.avg10, obs->psi.some.avg60, obs->some_window_us);
}

void pressure_step(pressure *p, const pressure_obs *obs, double now_ms)
{
	const int hot_psi = obs->trigger || obs->some_window_us >= (double)p->o.trigger_us;
	const int hot_bpf = p->o.stall_ms_per_s && obs->stall_ms_per_s >= (double)p->o.stall_ms_per_s;
	pthread_mutex_lock(&p->mu);
	p->cur = *obs;
	p->triggers += obs->trigger != 0;
	if ((hot_psi || hot_bpf) && !p->in_episode) {
		p->in_episode = 1;
		p->episodes++;
		p->last_escalate = now_ms - p->o.escalate_ms;
	}
	pthread_mutex_unlock(&p->mu);
	if (hot_psi || hot_bpf) {
		p->last_hot = now_ms;
		if (now_ms - p->last_escalate >= p->o.escalate_ms)
			escalate(p, obs, now_ms);
		return;
	}
	const int quiet = obs->some_window_us < p->o.trigger_us / 2.0 &&
			  (!p->o.stall_ms_per_s || obs->stall_ms_per_s < p->o.stall_ms_per_s / 2.0);
	if (p->in_episode && quiet && now_ms - p->last_hot >= p->o.recover_ms)
		recover(p, obs, now_ms);
}

/* ---- the thread ----------------------------------------------------------------- */

/* Growth of some total over the last window, scaled to window_us (0 until
 * half a window of history exists). */
static double window_growth(pressure *p, double now, uint64_t total)
{
	p->hist_t[p->hist_pos] = now;
	p->hist_total[p->hist_pos] = total;
	p->hist_pos = (p->hist_pos + 1) % PRESSURE_HIST;
	if (p->hist_n < PRESSURE_HIST)
		p->hist_n++;
	const double win_ms = p->o.window_us / 1e3;
	double t0 = now;
	uint64_t v0 = total;
	for (int k = 1; k < p->hist_n; k++) {
		int i = (p->hist_pos - 1 - k + 2 * PRESSURE_HIST) % PRESSURE_HIST;
		if (now - p->hist_t[i] > win_ms)
			break;
		t0 = p->hist_t[i];
		v0 = p->hist_total[i];
	}
	if (now - t0 < win_ms / 2 || total < v0)
		return 0;
	return (double)(total - v0) * win_ms / (now - t0);
}

static int read_psi(pressure *p, psi_sample *s)
{
	char buf[512], why[200];
	ssize_t n = pread(p->read_fd, buf, sizeof(buf) - 1, 0);
	int rc = n < 0 ? -errno : psi_parse(buf, (size_t)n, s, why, sizeof(why));
	if (rc && !p->read_failed_logged) {
		p->read_failed_logged = 1;
		blog_msg(p->o.log, BLOG_WARN, "pressure: cannot read %s: %s", p->source,
			 n < 0 ? strerror((int)-rc) : why);
	}
	return rc;
}

/* eBPF: the stall rate of herd processes; the mappings once a second. */
static double bpf_stall_rate(pressure *p, double now)
{
	if (!p->bpf)
		return 0;
	if (now - p->last_refresh >= 1000) {
		pbpf_refresh(p->bpf);
		p->last_refresh = now;
	}
	uint64_t ns = pbpf_herd_reclaim_ns(p->bpf);
	double rate = 0;
	if (p->last_stall_t > 0 && now > p->last_stall_t && ns >= p->last_stall_ns)
		rate = (double)(ns - p->last_stall_ns) / 1e6 / ((now - p->last_stall_t) / 1e3);
	p->last_stall_ns = ns;
	p->last_stall_t = now;
	return rate;
}

static void *pressure_main(void *arg)
{
	pressure *p = arg;
	for (;;) {
		struct pollfd pf[2] = {{.fd = p->stop_fd, .events = POLLIN},
				       {.fd = p->trig_fd, .events = POLLPRI}};
		int n = poll(pf, p->trig_fd >= 0 ? 2 : 1, PRESSURE_TICK_MS);
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && pf[0].revents)
			break;
		pressure_obs obs = {.trigger = p->trig_fd >= 0 && (pf[1].revents & POLLPRI)};
		if (p->trig_fd >= 0 && (pf[1].revents & (POLLERR | POLLNVAL))) {
			blog_msg(p->o.log, BLOG_WARN, "pressure: the PSI trigger on %s went away; polling",
				 p->source);
			pthread_mutex_lock(&p->mu);
			close(p->trig_fd);
			p->trig_fd = -1;
			p->armed[0] = 0;
			pthread_mutex_unlock(&p->mu);
		}
		if (read_psi(p, &obs.psi))
			continue;
		const double now = clock_mono_ms();
		obs.some_window_us = window_growth(p, now, obs.psi.some.total);
		obs.stall_ms_per_s = bpf_stall_rate(p, now);
		pressure_step(p, &obs, now);
	}
	return NULL;
}

int pressure_start(pressure *p)
{
	int rc = pthread_create(&p->thread, NULL, pressure_main, p);
	if (rc)
		return -rc;
	p->thread_on = 1;
	char order[PRESSURE_MAX_ACTIONS * (PRESSURE_NAME_MAX + 4)] = "";
	size_t n = 0;
	for (int i = 0; i < p->n_act && n < sizeof(order); i++)
		n += (size_t)snprintf(order + n, sizeof(order) - n, "%s%s", i ? ", " : "", p->act[i].name);
	blog_msg(p->o.log, BLOG_INFO,
		 "pressure: watching %s (trigger '%s', polled every %d ms for some %u us per %u us); "
		 "actions in order: %s",
		 p->source, p->armed[0] ? p->armed : "none", PRESSURE_TICK_MS, p->o.trigger_us,
		 p->o.window_us, order[0] ? order : "(none)");
	return 0;
}

/* ---- eBPF glue and snapshots --------------------------------------------------------- */

int pressure_bpf_start(pressure *p, char *err, size_t errlen)
{
	int rc = p->o.bpf ? pbpf_open(&p->bpf, err, errlen)
			  : herd_errf(err, errlen, -ECANCELED, "disabled by pressure.bpf");
	pthread_mutex_lock(&p->mu);
	snprintf(p->bpf_status, sizeof(p->bpf_status), "%s%.150s", rc ? "off: " : "on", rc ? err : "");
	pthread_mutex_unlock(&p->mu);
	if (!rc)
		pbpf_add_pid(p->bpf, getpid());
	return rc;
}

void pressure_register_pid(pressure *p, pid_t pid)
{
	if (p && p->bpf && pid > 0)
		pbpf_add_pid(p->bpf, pid);
}

void pressure_snapshot(pressure *p, pressure_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&p->mu);
	snprintf(st->source, sizeof(st->source), "%s", p->source);
	st->trigger_ok = p->trig_fd >= 0;
	snprintf(st->trigger_armed, sizeof(st->trigger_armed), "%s", p->armed);
	st->trigger_us = p->o.trigger_us;
	st->window_us = p->o.window_us;
	st->psi = p->cur.psi;
	st->some_window_us = p->cur.some_window_us;
	st->stall_ms_per_s = p->cur.stall_ms_per_s;
	st->level = p->level;
	st->triggers = p->triggers;
	st->episodes = p->episodes;
	st->actions_run = p->actions_run;
	st->recoveries = p->recoveries;
	for (int k = 0; k < p->ev_n; k++)
		st->events[k] = p->ev[(p->ev_pos - p->ev_n + k + PRESSURE_EVENTS) % PRESSURE_EVENTS];
	st->n_events = p->ev_n;
	snprintf(st->bpf_status, sizeof(st->bpf_status), "%s", p->bpf_status);
	pthread_mutex_unlock(&p->mu);
	for (int k = 0; k < st->n_events; k++)
		st->events[k].action = st->events[k].name;
	for (int i = 0; i < p->n_act; i++) {
		snprintf(st->actions[i], PRESSURE_NAME_MAX, "%s", p->act[i].name);
		st->action_ranks[i] = p->act[i].rank;
	}
	st->n_actions = p->n_act;
	st->refusing = atomic_load(&p->refusing);
	st->refused = atomic_load(&p->refused);
	st->bpf_on = p->bpf != NULL;
	if (p->bpf)
		pbpf_read(p->bpf, &st->global, st->procs, PRESSURE_PROCS_SHOWN, &st->n_procs);
}
