/* The cache manager: entries, pending requests, the loader thread, budget
 * and eviction, predictions (models.h, docs/models.md). */
#include "models.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"
#include "models_res.h"

#define MODELS_SCAN_MS 2000   /* the loader rescans /proc for image holders this often */
#define MODELS_HOLD_MAX 16    /* pids kept per image */
#define MODELS_JOBS_MAX 256

typedef struct models_pending {
	struct models_pending *next;
	sched_origin from;
	gen_request *req;
} models_pending;

typedef struct models_agent {
	char name[CATALOG_NAME_MAX];
	int refs;
	char predicted[SHM_IMAGE_MODEL_MAX]; /* its last prediction, checked at its next request */
} models_agent;

/* An image's holders (dev/ino), scanned by the loader. */
typedef struct models_scan {
	dev_t dev;
	ino_t ino;
	int set;
	int pids[MODELS_HOLD_MAX];
	int n_pids;
} models_scan;

enum { JOB_LOAD = 1, JOB_FREE = 2 };

struct models {
	models_entry *e;
	int n;
	const blog *log;
	models_opts o;
	catalog *cat;
	uint64_t budget; /* bytes; 0 = unlimited */
	/* loader (mu: jobs, stop, scans, held) */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t loader;
	int loader_started, stop;
	int jobs[MODELS_JOBS_MAX][2];
	int n_jobs;
	models_scan *scan;             /* [n] */
	models_held *held;
	models_scan *held_scan;
	int n_held, cap_held;
	/* loop thread */
	sched_event *ev_head, *ev_tail;
	models_agent *agents;
	int n_agents, cap_agents;
	models_cache_stats st;
	int shutting_down;
	respcache *rcache; /* NULL: response cache off */
	atomic_int refuse_loads; /* models_shed REFUSE in force (any thread) */
};

/* ---- small helpers ------------------------------------------------------------ */

sched *models_sched(const models_entry *e)
{
	return e && atomic_load(&e->state) == MODELS_ST_RESIDENT ? e->sched : NULL;
}

static int entry_pinned(const models_entry *e)
{
	return e->pinned_admin >= 0 ? e->pinned_admin : e->pinned;
}

static void wake(const models *ms)
{
	uint64_t one = 1;
	if (ms->o.wake_fd >= 0 && write(ms->o.wake_fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the loop wakes anyway */
	}
}

static void post_event(models *ms, sched_event *ev)
{
	ev->next = NULL;
	if (ms->ev_tail)
		ms->ev_tail->next = ev;
	else
		ms->ev_head = ev;
	ms->ev_tail = ev;
}

/* Ends a pending request: DONE cancel (code 0) or ERR code with msg. */
static void pending_end(models *ms, models_pending *p, int code, const char *msg)
{
	sched_event *ev = calloc(1, sizeof(*ev));
	if (ev) {
		ev->type = code ? SCHED_EV_ERR : SCHED_EV_DONE;
		ev->conn = p->from.conn;
		ev->id = p->req->id;
		ev->agent = p->from.agent;
		ev->reason = HERD_FINISH_CANCEL;
		ev->code = code;
		ev->t_first_ms = -1;
		snprintf(ev->msg, sizeof(ev->msg), "%s", msg ? msg : "");
		post_event(ms, ev);
	}
	gen_request_free(p->req);
	free(p);
}

static void pending_fail_all(models *ms, models_entry *e, int code, const char *msg)
{
	models_pending *p = e->pending;
	e->pending = e->pending_tail = NULL;
	e->n_pending = 0;
	while (p) {
		models_pending *nx = p->next;
		pending_end(ms, p, code, msg);
		p = nx;
	}
	wake(ms);
}

/* ---- the loader thread --------------------------------------------------------- */

static int post_job(models *ms, int op, int idx)
{
	pthread_mutex_lock(&ms->mu);
	int ok = ms->n_jobs < MODELS_JOBS_MAX;
	if (ok) {
		ms->jobs[ms->n_jobs][0] = op;
		ms->jobs[ms->n_jobs][1] = idx;
		ms->n_jobs++;
		pthread_cond_signal(&ms->cv);
	}
	pthread_mutex_unlock(&ms->mu);
	return ok ? 0 : -EAGAIN;
}

/* The processes (other than us) mapping each scanned image. */
static void scan_line(models_scan *t, int n, const char *line, int pid)
{
	unsigned maj, min;
	unsigned long long ino;
	if (!strstr(line, SHM_IMAGE_DIR "/" SHM_IMAGE_PREFIX) ||
	    sscanf(line, "%*s %*s %*s %x:%x %llu", &maj, &min, &ino) != 3)
		return;
	for (int i = 0; i < n; i++) {
		models_scan *s = &t[i];
		if (!s->set || (unsigned long long)s->ino != ino || major(s->dev) != maj ||
		    minor(s->dev) != min)
			continue;
		if (s->n_pids > 0 && s->pids[s->n_pids - 1] == pid)
			continue;
		if (s->n_pids < MODELS_HOLD_MAX)
			s->pids[s->n_pids++] = pid;
	}
}

static void scan_holders(models_scan *t, int n)
{
	for (int i = 0; i < n; i++)
		t[i].n_pids = 0;
	DIR *proc = opendir("/proc");
	if (!proc)
		return;
	const long self = (long)getpid();
	char *line = NULL;
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(proc))) {
		char *end, path[64];
		const long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/maps", pid);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		while (getline(&line, &cap, f) > 0)
			scan_line(t, n, line, (int)pid);
		fclose(f);
	}
	free(line);
	closedir(proc);
}

/* Rescans (without holding mu during the walk) and drops held images
 * nobody maps any more. Runs on the loader thread, the only writer of the
 * held list, so the list does not change during the walk. */
static void rescan(models *ms)
{
	pthread_mutex_lock(&ms->mu);
	const int n = ms->n, nh = ms->n_held;
	models_scan *t = calloc((size_t)(n + nh), sizeof(*t));
	if (t) {
		memcpy(t, ms->scan, sizeof(*t) * (size_t)n);
		if (nh)
			memcpy(t + n, ms->held_scan, sizeof(*t) * (size_t)nh);
	}
	pthread_mutex_unlock(&ms->mu);
	if (!t)
		return;
	scan_holders(t, n + nh);
	pthread_mutex_lock(&ms->mu);
	for (int i = 0; i < n; i++)
		if (ms->scan[i].set && t[i].set && ms->scan[i].ino == t[i].ino)
			ms->scan[i] = t[i];
	int k = 0;
	for (int i = 0; i < nh; i++) {
		const models_scan *sc = &t[n + i];
		if (sc->n_pids == 0)
			continue; /* nobody maps it: its memory is back */
		ms->held[k] = ms->held[i];
		ms->held_scan[k] = *sc;
		ms->held[k].n_pids = sc->n_pids;
		memcpy(ms->held[k].pids, sc->pids, sizeof(ms->held[k].pids));
		k++;
	}
	ms->n_held = k;
	pthread_mutex_unlock(&ms->mu);
	free(t);
}

static void job_load(models *ms, int idx)
{
	models_entry *e = &ms->e[idx];
	char err[256] = "";
	int rc = models_res_load(e, &ms->o, ms->rcache, err, sizeof(err));
	if (rc) {
		models_res_free(e);
		snprintf(e->load_err, sizeof(e->load_err), "%s", err[0] ? err : herd_strerror(rc));
		e->load_rc = rc;
		blog_msg(ms->log, BLOG_ERR, "model %s: load failed: %s", e->name, e->load_err);
		atomic_store(&e->state, MODELS_ST_UNLOADED);
		return;
	}
	struct stat st;
	pthread_mutex_lock(&ms->mu);
	if (fstat(e->image_fd, &st) == 0)
		ms->scan[idx] = (models_scan){.dev = st.st_dev, .ino = st.st_ino, .set = 1};
	pthread_mutex_unlock(&ms->mu);
	catalog_note_load(ms->cat, e->name, e->bytes, e->load_ms, catalog_now());
	atomic_store(&e->state, MODELS_ST_RESIDENT);
}

/* Remembers an evicted image while other processes still map it (scanned
 * now: an image nobody maps is never counted). */
static void hold_image(models *ms, const models_entry *e, const struct stat *st)
{
	models_scan one = {.dev = st->st_dev, .ino = st->st_ino, .set = 1};
	const models_scan *sc = &one;
	scan_holders(&one, 1);
	pthread_mutex_lock(&ms->mu);
	ms->scan[e - ms->e].set = 0;
	if (one.n_pids == 0) {
		pthread_mutex_unlock(&ms->mu);
		return;
	}
	if (ms->n_held == ms->cap_held) {
		int cap = ms->cap_held ? ms->cap_held * 2 : 8;
		models_held *h = realloc(ms->held, sizeof(*h) * (size_t)cap);
		models_scan *s = h ? realloc(ms->held_scan, sizeof(*s) * (size_t)cap) : NULL;
		if (h)
			ms->held = h;
		if (!s) {
			pthread_mutex_unlock(&ms->mu);
			return;
		}
		ms->held_scan = s;
		ms->cap_held = cap;
	}
	models_held *h = &ms->held[ms->n_held];
	memset(h, 0, sizeof(*h));
	snprintf(h->segment, sizeof(h->segment), "%s", e->info.name);
	snprintf(h->model, sizeof(h->model), "%s", e->name);
	h->bytes = e->info.image_size;
	h->n_pids = sc->n_pids;
	memcpy(h->pids, sc->pids, sizeof(h->pids));
	ms->held_scan[ms->n_held++] = *sc;
	pthread_mutex_unlock(&ms->mu);
}

static void job_free(models *ms, int idx)
{
	models_entry *e = &ms->e[idx];
	struct stat st;
	const int have = e->image_fd >= 0 && fstat(e->image_fd, &st) == 0;
	models_res_drop_image(e);
	models_res_free(e);
	if (have)
		hold_image(ms, e, &st);
	blog_msg(ms->log, BLOG_INFO, "model %s: evicted (%.1f MiB returned once no process maps it)",
		 e->name, (double)e->bytes / (1 << 20));
	atomic_store(&e->state, MODELS_ST_UNLOADED);
}

static void *loader_main(void *arg)
{
	models *ms = arg;
	double next_scan = clock_mono_ms() + MODELS_SCAN_MS;
	pthread_mutex_lock(&ms->mu);
	while (!ms->stop) {
		if (ms->n_jobs == 0) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 250 * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&ms->cv, &ms->mu, &ts);
		}
		if (ms->stop)
			break;
		int job[2] = {0, 0};
		if (ms->n_jobs > 0) {
			memcpy(job, ms->jobs[0], sizeof(job));
			memmove(ms->jobs, ms->jobs + 1, sizeof(ms->jobs[0]) * (size_t)--ms->n_jobs);
		}
		pthread_mutex_unlock(&ms->mu);
		if (job[0] == JOB_LOAD)
			job_load(ms, job[1]);
		else if (job[0] == JOB_FREE)
			job_free(ms, job[1]);
		if (job[0] == JOB_FREE || clock_mono_ms() >= next_scan) {
			rescan(ms);
			next_scan = clock_mono_ms() + MODELS_SCAN_MS;
		}
		if (job[0])
			wake(ms);
		pthread_mutex_lock(&ms->mu);
	}
	pthread_mutex_unlock(&ms->mu);
	return NULL;
}

/* ---- scores and budget ------------------------------------------------------ */

static double aff_sum(models *ms, const models_entry *e, double now)
{
	double a = 0;
	for (int i = 0; i < ms->n_agents; i++)
		if (ms->agents[i].refs > 0)
			a += catalog_affinity(ms->cat, ms->agents[i].name, e->name, now);
	return a;
}

static double entry_score(models *ms, const models_entry *e, catalog_score_parts *parts,
			  catalog_model *rec)
{
	catalog_model r;
	if (catalog_get_model(ms->cat, e->name, &r))
		memset(&r, 0, sizeof(r));
	const double now = catalog_now();
	catalog_score_parts p;
	catalog_score(&r, aff_sum(ms, e, now), now, &p);
	if (parts)
		*parts = p;
	if (rec)
		*rec = r;
	return p.score;
}

static uint64_t held_bytes(models *ms)
{
	uint64_t b = 0;
	pthread_mutex_lock(&ms->mu);
	for (int i = 0; i < ms->n_held; i++)
		b += ms->held[i].bytes;
	pthread_mutex_unlock(&ms->mu);
	return b;
}

/* Bytes in use: resident models, loads under way (estimated), and images
 * of evicted models other processes still map. Models being evicted count
 * 0: the loader frees them before it runs the next load. */
static uint64_t used_bytes(models *ms)
{
	uint64_t b = held_bytes(ms);
	for (int i = 0; i < ms->n; i++) {
		const int st = atomic_load(&ms->e[i].state);
		b += st == MODELS_ST_RESIDENT ? ms->e[i].bytes : st == MODELS_ST_LOADING ? ms->e[i].est_bytes : 0;
	}
	return b;
}

/* Resident, unpinned, not e, and (idle = 1) with nothing queued or running. */
static int evictable(models_entry *v, const models_entry *e, int idle)
{
	if (v == e || entry_pinned(v) || atomic_load(&v->state) != MODELS_ST_RESIDENT)
		return 0;
	return !idle || (v->n_pending == 0 && sched_idle(v->sched));
}

/* The evictable entry of lowest score (idle ones only when idle = 1;
 * not already draining; not a preloaded one unused yet when spare_preloaded). */
static models_entry *lowest(models *ms, const models_entry *e, int idle, int spare_preloaded)
{
	models_entry *best = NULL;
	double bs = 0;
	for (int i = 0; i < ms->n; i++) {
		models_entry *v = &ms->e[i];
		if (!evictable(v, e, idle) || v->draining || (spare_preloaded && v->by_preload))
			continue;
		const double s = entry_score(ms, v, NULL, NULL);
		if (!best || s < bs) {
			best = v;
			bs = s;
		}
	}
	return best;
}

static void evict(models *ms, models_entry *v, const char *why)
{
	sched_event *left = sched_events_take(v->sched);
	while (left) {
		sched_event *nx = left->next;
		post_event(ms, left);
		left = nx;
	}
	v->draining = 0;
	v->n_evictions++;
	ms->st.evictions++;
	if (v->by_preload)
		ms->st.preload_wasted++;
	v->by_preload = 0;
	catalog_note_evict(ms->cat, v->name, catalog_now());
	blog_msg(ms->log, BLOG_INFO, "model %s: evicting (%s)", v->name, why);
	atomic_store(&v->state, MODELS_ST_EVICTING);
	if (post_job(ms, JOB_FREE, (int)(v - ms->e))) {
		/* job queue full: draining evicts it at a later tick */
		atomic_store(&v->state, MODELS_ST_RESIDENT);
		v->draining = 1;
	}
}

static void start_load(models *ms, models_entry *e)
{
	const int preload = e->want_preload && e->n_pending == 0;
	e->want = e->want_preload = 0;
	e->want_since = 0;
	e->load_rc = 0;
	atomic_store(&e->state, MODELS_ST_LOADING);
	if (post_job(ms, JOB_LOAD, (int)(e - ms->e))) {
		atomic_store(&e->state, MODELS_ST_UNLOADED);
		e->want = 1;
		return;
	}
	e->by_preload = preload;
	e->n_loads++;
	ms->st.loads++;
	ms->st.preloads += (uint64_t)preload;
	ms->st.demand_loads += (uint64_t)!preload;
}

/* Frees idle memory for e (lowest scores first); drains busy models for a
 * demand load when that is not enough. Returns 1 when e fits now. */
static int make_room(models *ms, models_entry *e, uint64_t need)
{
	const int demand = e->n_pending > 0 || !e->want_preload;
	const int may_evict = demand || e->want_conf >= ms->o.cfg->preload_confidence;
	uint64_t used = used_bytes(ms);
	while (may_evict && used + need > ms->budget) {
		models_entry *v = lowest(ms, e, 1, !demand);
		if (!v)
			break;
		used -= v->bytes < used ? v->bytes : used;
		if (!demand) {
			ms->st.preload_evictions++;
			if (e->want_conf < ms->st.preload_min_evict_conf)
				ms->st.preload_min_evict_conf = e->want_conf;
		}
		evict(ms, v, demand ? "memory for a requested model" : "memory for a predicted model");
	}
	if (used + need <= ms->budget)
		return 1;
	uint64_t draining = 0;
	for (int i = 0; i < ms->n; i++)
		draining += ms->e[i].draining ? ms->e[i].bytes : 0;
	while (demand && used + need > ms->budget + draining) {
		models_entry *v = lowest(ms, e, 0, 0);
		if (!v)
			break;
		v->draining = 1;
		draining += v->bytes;
		blog_msg(ms->log, BLOG_INFO, "model %s: draining (model %s waits for memory)", v->name,
			 e->name);
	}
	return 0;
}

static void try_load(models *ms, models_entry *e)
{
	if (atomic_load(&ms->refuse_loads) || ms->shutting_down) {
		if (e->n_pending)
			pending_fail_all(ms, e, HERD_E_NOSPACE,
					 ms->shutting_down ? "the broker is shutting down"
							   : "memory pressure: the broker loads no model now");
		e->want = 0;
		return;
	}
	if (ms->budget && e->est_bytes > ms->budget) {
		char msg[192];
		snprintf(msg, sizeof(msg), "model %s needs %.0f MiB, more than max_memory_mb (%.0f MiB)",
			 e->name, (double)e->est_bytes / (1 << 20), (double)ms->budget / (1 << 20));
		pending_fail_all(ms, e, HERD_E_NOSPACE, msg);
		e->want = 0;
		return;
	}
	if (!ms->budget || make_room(ms, e, e->est_bytes)) {
		start_load(ms, e);
		return;
	}
	if (e->n_pending == 0 && e->want_preload) {
		e->want = e->want_preload = 0; /* a prediction that does not fit is dropped */
		return;
	}
	if (!e->want_since)
		e->want_since = clock_mono_ms();
}

/* ---- the loop's side ------------------------------------------------------------ */

static void flush_pending(models *ms, models_entry *e)
{
	while (e->pending) {
		models_pending *p = e->pending;
		e->pending = p->next;
		e->n_pending--;
		int rc = sched_submit(e->sched, &p->from, p->req);
		if (rc) {
			char msg[128];
			snprintf(msg, sizeof(msg), "cannot queue the request: %s", herd_strerror(rc));
			p->next = NULL;
			pending_end(ms, p, rc, msg);
			continue;
		}
		gen_request_free(p->req);
		free(p);
	}
	e->pending_tail = NULL;
}

static void tick_entry(models *ms, models_entry *e)
{
	const int st = atomic_load(&e->state);
	if (st == MODELS_ST_RESIDENT && e->draining && sched_idle(e->sched)) {
		evict(ms, e, "drained");
		e->want = e->n_pending > 0;
		return;
	}
	if (st == MODELS_ST_RESIDENT) {
		/* loop-owned copies of what the loader built (welcome, estimates) */
		e->est_bytes = e->bytes; /* the next load's estimate: what it took */
		e->n_vocab = (uint32_t)e->model->hp.n_vocab;
		e->n_ctx = (uint32_t)llama_ctx_n_ctx(e->ctx);
		e->load_err[0] = 0;
	}
	if (st == MODELS_ST_RESIDENT && e->pending && !e->draining)
		flush_pending(ms, e);
	if (st == MODELS_ST_UNLOADED && e->load_rc) {
		ms->st.load_failures++;
		pending_fail_all(ms, e, e->load_rc, e->load_err);
		e->load_rc = 0;
		e->want = 0;
	}
}

void models_tick(models *ms)
{
	if (!ms)
		return;
	for (int i = 0; i < ms->n; i++)
		tick_entry(ms, &ms->e[i]);
	/* demand loads first (in configuration order), then predictions */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < ms->n; i++) {
			models_entry *e = &ms->e[i];
			if (atomic_load(&e->state) != MODELS_ST_UNLOADED || !(e->want || e->n_pending))
				continue;
			if ((pass == 0) == (e->n_pending > 0 || !e->want_preload))
				try_load(ms, e);
		}
	if (ms->ev_head)
		wake(ms);
}

static models_agent *agent_find(models *ms, const char *name, int add)
{
	for (int i = 0; i < ms->n_agents; i++)
		if (!strcmp(ms->agents[i].name, name))
			return &ms->agents[i];
	if (!add)
		return NULL;
	for (int i = 0; i < ms->n_agents; i++)
		if (ms->agents[i].refs == 0) {
			memset(&ms->agents[i], 0, sizeof(ms->agents[i]));
			snprintf(ms->agents[i].name, sizeof(ms->agents[i].name), "%s", name);
			return &ms->agents[i];
		}
	if (ms->n_agents == ms->cap_agents) {
		int cap = ms->cap_agents ? ms->cap_agents * 2 : 64;
		models_agent *na = realloc(ms->agents, sizeof(*na) * (size_t)cap);
		if (!na)
			return NULL;
		ms->agents = na;
		ms->cap_agents = cap;
	}
	models_agent *a = &ms->agents[ms->n_agents++];
	memset(a, 0, sizeof(*a));
	snprintf(a->name, sizeof(a->name), "%s", name);
	return a;
}

/* A prediction of conf for t: preloaded when it fits (or by the confidence
 * rule), at the next tick. */
static void want_predicted(models *ms, models_entry *t, double conf)
{
	const int st = atomic_load(&t->state);
	if (!ms->o.cfg->preload_predict || (st != MODELS_ST_UNLOADED && st != MODELS_ST_EVICTING) ||
	    t->want || t->n_pending)
		return; /* (an entry being evicted is loaded again once freed) */
	t->want = t->want_preload = 1;
	t->want_conf = conf;
}

static void predict(models *ms, const char *agent, models_entry *e)
{
	char to[CATALOG_NAME_MAX];
	double conf;
	models_agent *a = agent_find(ms, agent, 0);
	if (!ms->o.cfg->preload_predict ||
	    catalog_predict(ms->cat, agent, e->name, to, sizeof(to), &conf))
		return;
	models_entry *t = models_find(ms, to, strlen(to));
	if (!t)
		return;
	ms->st.predictions++;
	if (a)
		snprintf(a->predicted, sizeof(a->predicted), "%s", to);
	want_predicted(ms, t, conf);
}

/* Accounting of a request for e: predictions, preload hits, misses. */
static void note_request(models *ms, models_entry *e, const char *agent)
{
	models_agent *a = agent_find(ms, agent, 0);
	if (a && a->predicted[0]) {
		ms->st.prediction_hits += !strcmp(a->predicted, e->name);
		a->predicted[0] = 0;
	}
	const int st = atomic_load(&e->state);
	if (e->by_preload && (st == MODELS_ST_RESIDENT || st == MODELS_ST_LOADING)) {
		ms->st.preload_hits++;
		e->by_preload = 0;
	} else if (st != MODELS_ST_RESIDENT && st != MODELS_ST_LOADING && e->n_pending == 0) {
		ms->st.switch_misses++;
	}
	e->last_use_ms = clock_mono_ms();
	catalog_note_use(ms->cat, agent, e->name, catalog_now());
}

int models_submit(models *ms, models_entry *e, const char *agent, const sched_origin *from,
		  const gen_request *r, char *msg, size_t msglen)
{
	if (ms->shutting_down)
		return herd_errf(msg, msglen, HERD_E_CANCELLED, "the broker is shutting down");
	note_request(ms, e, agent);
	int rc;
	if (atomic_load(&e->state) == MODELS_ST_RESIDENT && !e->draining && !e->pending) {
		rc = sched_submit(e->sched, from, r);
		if (rc)
			return herd_errf(msg, msglen, rc, "cannot queue the request: %s", herd_strerror(rc));
	} else {
		if (ms->budget && e->est_bytes > ms->budget)
			return herd_errf(msg, msglen, HERD_E_NOSPACE,
				       "model %s needs %.0f MiB, more than max_memory_mb (%.0f MiB)", e->name,
				       (double)e->est_bytes / (1 << 20), (double)ms->budget / (1 << 20));
		models_pending *p = calloc(1, sizeof(*p));
		if (!p || gen_request_dup(&p->req, r)) {
			free(p);
			return herd_errf(msg, msglen, -ENOMEM, "out of memory queueing the request");
		}
		p->from = *from;
		if (e->pending_tail)
			e->pending_tail->next = p;
		else
			e->pending = p;
		e->pending_tail = p;
		e->n_pending++;
		e->want = 1;
		e->want_preload = 0;
	}
	predict(ms, agent, e);
	models_tick(ms);
	return 0;
}

int models_attach_check(models *ms, models_entry *e, const char *agent, char *msg, size_t msglen)
{
	const int st = atomic_load(&e->state);
	if (st == MODELS_ST_RESIDENT && !e->draining) {
		const int rc = models_usable(e, 1, msg, msglen);
		if (!rc)
			note_request(ms, e, agent);
		return rc;
	}
	if (st == MODELS_ST_UNLOADED && !e->want && !e->n_pending && !ms->shutting_down) {
		note_request(ms, e, agent); /* once per load, not per retry */
		e->want = 1;
		e->want_preload = 0;
		models_tick(ms);
	}
	return herd_errf(msg, msglen, -EAGAIN, "model %s is not resident (%s); it is being loaded, retry "
		       "in a moment", e->name, st == MODELS_ST_EVICTING ? "being evicted" : "loading");
}

void models_cancel(models *ms, uint64_t conn, uint64_t id)
{
	for (int i = 0; ms && i < ms->n; i++) {
		models_entry *e = &ms->e[i];
		sched *s = models_sched(e);
		if (s)
			sched_cancel(s, conn, id);
		models_pending **pp = &e->pending, *prev = NULL;
		while (*pp) {
			models_pending *p = *pp;
			if (p->from.conn == conn && p->req->id == id) {
				*pp = p->next;
				if (e->pending_tail == p)
					e->pending_tail = prev;
				e->n_pending--;
				pending_end(ms, p, 0, NULL);
				wake(ms);
				return;
			}
			prev = p;
			pp = &p->next;
		}
	}
}

void models_cancel_conn(models *ms, uint64_t conn)
{
	for (int i = 0; ms && i < ms->n; i++) {
		models_entry *e = &ms->e[i];
		sched *s = models_sched(e);
		if (s)
			sched_cancel_conn(s, conn);
		models_pending **pp = &e->pending, *prev = NULL;
		while (*pp) {
			models_pending *p = *pp;
			if (p->from.conn != conn) {
				prev = p;
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			if (e->pending_tail == p)
				e->pending_tail = prev;
			e->n_pending--;
			gen_request_free(p->req);
			free(p);
		}
	}
}

void models_agent_hello(models *ms, const char *agent)
{
	models_agent *a = ms && agent && agent[0] ? agent_find(ms, agent, 1) : NULL;
	if (!a)
		return;
	a->refs++;
	catalog_agent rec;
	if (a->refs > 1 || !ms->o.cfg->preload_predict || catalog_get_agent(ms->cat, agent, &rec) || !rec.last_model[0])
		return;
	models_entry *t = models_find(ms, rec.last_model, strlen(rec.last_model));
	if (!t)
		return;
	/* confidence: the share of the agent's affinity that goes to that model */
	const double now = catalog_now();
	double all = 0, mine = 0;
	for (int i = 0; i < ms->n; i++) {
		const double x = catalog_affinity(ms->cat, agent, ms->e[i].name, now);
		all += x;
		mine += &ms->e[i] == t ? x : 0;
	}
	ms->st.predictions++;
	snprintf(a->predicted, sizeof(a->predicted), "%s", t->name);
	want_predicted(ms, t, all > 0 ? mine / all : 0);
	models_tick(ms);
}

void models_agent_bye(models *ms, const char *agent)
{
	models_agent *a = ms && agent && agent[0] ? agent_find(ms, agent, 0) : NULL;
	if (a && a->refs > 0)
		a->refs--;
}

sched_event *models_events_take(models *ms)
{
	sched_event *head = NULL, **tail = &head;
	for (int i = 0; ms && i < ms->n; i++) {
		sched *s = models_sched(&ms->e[i]);
		sched_event *ev = s ? sched_events_take(s) : NULL;
		*tail = ev;
		while (*tail)
			tail = &(*tail)->next;
	}
	if (ms && ms->ev_head) {
		*tail = ms->ev_head;
		ms->ev_head = ms->ev_tail = NULL;
	}
	return head;
}

void models_shutdown(models *ms)
{
	if (!ms)
		return;
	ms->shutting_down = 1;
	for (int i = 0; i < ms->n; i++) {
		models_entry *e = &ms->e[i];
		sched *s = models_sched(e);
		if (s)
			sched_shutdown(s);
		while (e->pending) {
			models_pending *p = e->pending;
			e->pending = p->next;
			pending_end(ms, p, 0, NULL);
		}
		e->pending_tail = NULL;
		e->n_pending = 0;
	}
	wake(ms);
}

int models_idle(models *ms)
{
	for (int i = 0; ms && i < ms->n; i++) {
		models_entry *e = &ms->e[i];
		sched *s = models_sched(e);
		if (e->n_pending || (s && !sched_idle(s)))
			return 0;
	}
	return !ms || !ms->ev_head;
}

/* ---- admin, pressure, views --------------------------------------------------- */

static int admin_evict(models *ms, models_entry *e, char *msg, size_t msglen)
{
	if (atomic_load(&e->state) != MODELS_ST_RESIDENT)
		return herd_errf(msg, msglen, -EALREADY, "model %s is not resident", e->name);
	if (!evictable(e, NULL, 1))
		return herd_errf(msg, msglen, -EBUSY,
			       "model %s %s; it stays resident (unpin it, or wait for its requests)",
			       e->name, entry_pinned(e) ? "is pinned" : "has requests queued or running");
	evict(ms, e, "herdctl evict");
	return 0;
}

int models_admin(models *ms, models_entry *e, const char *op, char *msg, size_t msglen)
{
	const int st = atomic_load(&e->state);
	if (!strcmp(op, "evict"))
		return admin_evict(ms, e, msg, msglen);
	if (!strcmp(op, "pin") || !strcmp(op, "unpin")) {
		e->pinned_admin = op[0] == 'p';
		if (e->pinned_admin && st == MODELS_ST_UNLOADED)
			e->want = 1;
	} else if (!strcmp(op, "load") || !strcmp(op, "preload")) {
		if (st == MODELS_ST_RESIDENT || st == MODELS_ST_LOADING)
			return 0;
		e->want = 1;
		e->want_preload = op[0] == 'p'; /* preload: only into free memory */
		e->want_conf = 0;
	} else {
		return herd_errf(msg, msglen, HERD_E_INVAL, "unknown model operation '%s'", op);
	}
	models_tick(ms);
	return 0;
}

uint64_t models_shed(models *ms, int how, uint64_t bytes)
{
	if (!ms)
		return 0;
	if (how == MODELS_SHED_REFUSE || how == MODELS_SHED_ACCEPT) {
		atomic_store(&ms->refuse_loads, how == MODELS_SHED_REFUSE);
		return 0;
	}
	uint64_t freed = 0;
	models_entry *v;
	while ((!bytes || freed < bytes) && (v = lowest(ms, NULL, 1, 0))) {
		freed += v->bytes;
		evict(ms, v, "memory pressure");
	}
	return freed;
}

int models_kv_shed(models *ms, int how)
{
	int n = 0;
	for (int i = 0; ms && i < ms->n; i++) {
		sched *s = models_sched(&ms->e[i]);
		if (s) {
			sched_kv_shed(s, how);
			n++;
		}
	}
	return n;
}

void models_kv_state(models *ms, uint64_t *trimmable_bytes, int *shrinkable)
{
	*trimmable_bytes = 0;
	*shrinkable = 0;
	for (int i = 0; ms && i < ms->n; i++) {
		const models_entry *e = &ms->e[i];
		sched *s = models_sched(e);
		if (!s)
			continue;
		sched_stats st;
		sched_get_stats(s, &st);
		if (st.kv_pages_total > 0)
			*trimmable_bytes += e->kv_bytes / (uint64_t)st.kv_pages_total *
					    (uint64_t)st.kv_pages_trimmable;
		const int floor = ((int)e->n_ctx + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
		*shrinkable += st.kv_pages_limit > floor;
	}
}

static const char *state_name(const models_entry *e)
{
	switch (atomic_load(&e->state)) {
	case MODELS_ST_RESIDENT: return e->draining ? "draining" : "resident";
	case MODELS_ST_LOADING: return "loading";
	case MODELS_ST_EVICTING: return "evicting";
	default: return e->n_pending ? "waiting" : "unloaded";
	}
}

void models_get_view(models *ms, models_entry *e, models_view *out)
{
	memset(out, 0, sizeof(*out));
	out->state = state_name(e);
	const int res = atomic_load(&e->state) == MODELS_ST_RESIDENT;
	out->bytes = res ? e->bytes : e->est_bytes;
	out->pinned = entry_pinned(e);
	entry_score(ms, e, &out->score, &out->rec);
	out->pending = e->n_pending;
	if (res) {
		sched_stats st;
		sched_get_stats(e->sched, &st);
		out->waiting = st.waiting;
		out->running = st.running + st.paused;
	}
	pthread_mutex_lock(&ms->mu);
	const models_scan *sc = &ms->scan[e - ms->e];
	if (res && sc->set) {
		out->n_holders = sc->n_pids;
		memcpy(out->holders, sc->pids, sizeof(out->holders));
	}
	pthread_mutex_unlock(&ms->mu);
}

int models_get_held(models *ms, models_held *out, int max)
{
	pthread_mutex_lock(&ms->mu);
	const int n = ms->n_held;
	for (int i = 0; i < n && i < max; i++)
		out[i] = ms->held[i];
	pthread_mutex_unlock(&ms->mu);
	return n;
}

void models_get_cache_stats(models *ms, models_cache_stats *out)
{
	*out = ms->st;
	out->refusing = atomic_load(&ms->refuse_loads);
	out->budget_bytes = ms->budget;
	out->held_bytes = held_bytes(ms);
	out->used_bytes = used_bytes(ms);
	catalog_get_stats(ms->cat, &out->catalog);
}

void models_get_trust_stats(const models *ms, models_trust_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; ms && i < ms->n; i++) {
		const models_entry *e = &ms->e[i];
		if (atomic_load(&e->state) != MODELS_ST_RESIDENT)
			continue; /* (the loader writes these while loading) */
		out->images_untrusted += (uint64_t)e->n_untrusted;
		const int t = atomic_load(&e->trust);
		out->images_adopted += e->adopted != 0;
		out->digest_failures += t == MODELS_TRUST_FAILED;
		out->verifying += t == MODELS_TRUST_VERIFYING;
	}
}

/* ---- models shared by agents ------------------------------------------------- */

static int share_name_ok(const char *n, size_t len)
{
	if (!len || len >= SHM_IMAGE_MODEL_MAX || n[0] == '.' ||
	    (len >= 3 && !memcmp(n, "tmp", 3) && (len == 3 || n[3] == '.')))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
		      (n[i] >= '0' && n[i] <= '9') || strchr("_.+-", n[i])))
			return 0;
	return 1;
}

/* The descriptor an agent passed: a regular file within the size bounds
 * that starts like a GGUF file (magic, version 2 or 3). */
static int share_check_fd(const models *ms, const models_share_req *r, struct stat *st, char *msg,
			  size_t msglen)
{
	const uint64_t max = ms->o.cfg->max_share_mb << 20;
	uint8_t h[8];
	if (fstat(r->fd, st) != 0)
		return herd_errf(msg, msglen, -errno, "share: cannot fstat the descriptor: %s", strerror(errno));
	if (!S_ISREG(st->st_mode))
		return herd_errf(msg, msglen, HERD_E_INVAL, "share: the descriptor is not a regular file");
	if ((uint64_t)st->st_size < MODELS_SHARE_MIN_BYTES || (uint64_t)st->st_size > max)
		return herd_errf(msg, msglen, HERD_E_LIMIT,
			       "share: the file has %lld bytes; a shared model has %d to %llu (max_share_mb)",
			       (long long)st->st_size, MODELS_SHARE_MIN_BYTES, (unsigned long long)max);
	const ssize_t k = pread(r->fd, h, sizeof(h), 0);
	if (k < 0)
		return herd_errf(msg, msglen, -errno, "share: cannot read the file through the descriptor: %s",
			       strerror(errno));
	if (k != (ssize_t)sizeof(h) || memcmp(h, "GGUF", 4))
		return herd_errf(msg, msglen, HERD_E_FORMAT, "share: the file is not a GGUF file (no GGUF magic)");
	const uint32_t v = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
	if (v != 2 && v != 3)
		return herd_errf(msg, msglen, HERD_E_UNSUPPORTED, "share: GGUF version %u (2 and 3 are read)", v);
	return 0;
}

/* Checks what the request names: a new model name, bounded targets. */
static int share_check_req(models *ms, const models_share_req *r, char *msg, size_t msglen)
{
	if (!share_name_ok(r->name, r->name_len))
		return herd_errf(msg, msglen, HERD_E_INVAL,
			       "share: bad model name '%.*s' (1..63 of A-Z a-z 0-9 _ . + -, not starting "
			       "with '.', not 'tmp')", (int)(r->name_len > 64 ? 64 : r->name_len), r->name);
	if (models_find(ms, r->name, r->name_len))
		return herd_errf(msg, msglen, -EEXIST, "share: a model named '%.*s' exists already",
			       (int)r->name_len, r->name);
	if (r->n_targets > MODELS_SHARE_TARGETS)
		return herd_errf(msg, msglen, HERD_E_LIMIT, "share: %zu targets, at most %d",
			       r->n_targets, MODELS_SHARE_TARGETS);
	for (size_t i = 0; i < r->n_targets; i++)
		if (!r->target_lens[i] || r->target_lens[i] >= CATALOG_NAME_MAX ||
		    memchr(r->targets[i], 0, r->target_lens[i]))
			return herd_errf(msg, msglen, HERD_E_INVAL,
				       "share: target %zu must be an agent name or uid:<n> of 1..%d bytes",
				       i, CATALOG_NAME_MAX - 1);
	const int n_cfg = ms->o.cfg->n_models;
	if (ms->n - n_cfg >= ms->o.cfg->max_shared_models)
		return herd_errf(msg, msglen, HERD_E_LIMIT,
			       "share: %d models are shared already (max_shared_models)",
			       ms->o.cfg->max_shared_models);
	if (!ms->o.cfg->state_dir)
		return herd_errf(msg, msglen, HERD_E_INVAL, "share: the broker has no state directory");
	return 0;
}

/* Fills the new entry e for r (the file is the private copy's path). */
static int share_fill(models *ms, models_entry *e, const models_share_req *r, const struct stat *st)
{
	const cfg *c = ms->o.cfg;
	memset(e, 0, sizeof(*e));
	memcpy(e->name, r->name, r->name_len);
	e->image_fd = -1;
	e->log = ms->log;
	e->owner = ms;
	e->pinned_admin = -1;
	e->shared = 1;
	e->src_size = (uint64_t)st->st_size;
	e->owner_uid = r->owner_uid;
	snprintf(e->share_owner, sizeof(e->share_owner), "%s", r->owner);
	for (size_t i = 0; i < r->n_targets; i++)
		memcpy(e->share_targets[i], r->targets[i], r->target_lens[i]);
	e->n_share_targets = (int)r->n_targets;
	char path[4096];
	snprintf(path, sizeof(path), "%s/shared.%s.%ld.gguf", c->state_dir, e->name, (long)getpid());
	if (!(e->file = strdup(path)))
		return -ENOMEM;
	/* until its first load: the file, plus the KV pool kv_cache_mb gives
	 * (or 256 MiB); the load measures what it really takes */
	e->est_bytes = e->src_size + ((uint64_t)(c->kv_cache_mb > 0 ? c->kv_cache_mb : 256) << 20);
	return 0;
}

int models_share(models *ms, const models_share_req *r, uint64_t *size, char *msg, size_t msglen)
{
	struct stat st;
	int rc;
	if (ms->shutting_down)
		return herd_errf(msg, msglen, HERD_E_CANCELLED, "the broker is shutting down");
	if ((rc = share_check_req(ms, r, msg, msglen)) || (rc = share_check_fd(ms, r, &st, msg, msglen)))
		return rc;
	models_entry *e = &ms->e[ms->n];
	if ((rc = share_fill(ms, e, r, &st))) {
		free(e->file);
		memset(e, 0, sizeof(*e));
		return herd_errf(msg, msglen, rc, "share: out of memory");
	}
	if (ms->budget && e->est_bytes > ms->budget) {
		rc = herd_errf(msg, msglen, HERD_E_NOSPACE,
			       "share: model %s needs about %.0f MiB, more than max_memory_mb (%.0f MiB)",
			       e->name, (double)e->est_bytes / (1 << 20), (double)ms->budget / (1 << 20));
		free(e->file);
		memset(e, 0, sizeof(*e));
		return rc;
	}
	e->src_fd = r->fd;
	pthread_mutex_lock(&ms->mu); /* the loader reads n */
	ms->n++;
	pthread_mutex_unlock(&ms->mu);
	*size = e->src_size;
	blog_msg(ms->log, BLOG_INFO, "model %s: shared by %s (uid %u), %.1f MiB, for %d target(s)",
		 e->name, e->share_owner, (unsigned)e->owner_uid, (double)e->src_size / (1 << 20),
		 e->n_share_targets);
	e->want = e->want_preload = 1; /* into free memory now; else on its first request */
	e->want_conf = 0;
	models_tick(ms);
	return 0;
}

int models_may_use(const models_entry *e, const char *agent, uint32_t uid)
{
	if (!e->shared)
		return 1;
	if (uid == e->owner_uid && !strcmp(agent, e->share_owner))
		return 1;
	char me[32];
	snprintf(me, sizeof(me), "uid:%u", (unsigned)uid);
	for (int i = 0; i < e->n_share_targets; i++)
		if (!strcmp(e->share_targets[i], me) ||
		    (strncmp(e->share_targets[i], "uid:", 4) && !strcmp(e->share_targets[i], agent)))
			return 1;
	return 0;
}

/* ---- create / destroy ------------------------------------------------------------ */

static int entry_init(models *ms, models_entry *e, const cfg_model *cm)
{
	snprintf(e->name, sizeof(e->name), "%s", cm->name);
	e->image_fd = -1;
	e->log = ms->log;
	e->owner = ms;
	e->pinned = cm->pinned;
	e->preload_cfg = cm->preload;
	e->pinned_admin = -1;
	e->file = strdup(cm->file);
	e->type = cm->type ? strdup(cm->type) : NULL;
	if (!e->file || (cm->type && !e->type))
		return -ENOMEM;
	catalog_model rec;
	if (!catalog_get_model(ms->cat, e->name, &rec) && rec.bytes)
		e->est_bytes = rec.bytes;
	else if (ms->budget)
		e->est_bytes = models_res_estimate(ms->o.cfg, e->file);
	return 0;
}

/* At start: every model without a budget, else the pinned and preload
 * ones, loaded on this thread (before the loop runs). */
static int load_at_start(models *ms, models_entry *e, char *err, size_t errlen)
{
	if (ms->budget && !e->pinned && !e->preload_cfg)
		return 0;
	int rc = models_res_load(e, &ms->o, ms->rcache, err, errlen);
	if (rc)
		return rc;
	struct stat st;
	if (fstat(e->image_fd, &st) == 0)
		ms->scan[e - ms->e] = (models_scan){.dev = st.st_dev, .ino = st.st_ino, .set = 1};
	catalog_note_load(ms->cat, e->name, e->bytes, e->load_ms, catalog_now());
	e->est_bytes = e->bytes;
	e->n_vocab = (uint32_t)e->model->hp.n_vocab;
	e->n_ctx = (uint32_t)llama_ctx_n_ctx(e->ctx);
	atomic_store(&e->state, MODELS_ST_RESIDENT);
	e->n_loads++;
	ms->st.loads++;
	return 0;
}

static int models_alloc(models **out, const models_opts *o)
{
	models *ms = calloc(1, sizeof(*ms));
	*out = ms;
	if (!ms)
		return -ENOMEM;
	ms->log = o->log;
	ms->o = *o;
	ms->cat = o->catalog;
	ms->budget = o->cfg->max_memory_mb << 20;
	ms->st.preload_min_evict_conf = 1;
	pthread_mutex_init(&ms->mu, NULL);
	pthread_cond_init(&ms->cv, NULL);
	/* room for the models agents share: entries never move */
	const size_t n = (size_t)(o->cfg->n_models > 0 ? o->cfg->n_models : 1) +
			 (size_t)o->cfg->max_shared_models;
	ms->e = calloc(n, sizeof(*ms->e));
	ms->scan = calloc(n, sizeof(*ms->scan));
	*out = ms;
	return ms->e && ms->scan ? 0 : -ENOMEM;
}

/* The response cache in the state directory, when the config enables it. */
static int open_respcache(models *ms, const models_opts *o, char *err, size_t errlen)
{
	const cfg_respcache *rc = &o->cfg->response_cache;
	if (!rc->enabled)
		return 0;
	if (!o->cfg->state_dir)
		return herd_errf(err, errlen, HERD_E_INVAL, "response cache: no state directory");
	const respcache_opts ro = {.dir = o->cfg->state_dir, .max_bytes = (uint64_t)rc->max_mb << 20,
				   .ttl_s = rc->ttl_s, .log = o->log};
	int r = respcache_open(&ms->rcache, &ro, err, errlen);
	if (!r)
		blog_msg(o->log, BLOG_INFO, "response cache: %s/%s, %d MiB, ttl %llu s",
			 o->cfg->state_dir, RESPCACHE_FILE, rc->max_mb, (unsigned long long)rc->ttl_s);
	return r;
}

respcache *models_respcache(models *ms)
{
	return ms ? ms->rcache : NULL;
}

int models_create(models **out, const models_opts *o, char *err, size_t errlen)
{
	*out = NULL;
	if (!o || !o->cfg)
		return HERD_E_INVAL;
	models *ms = NULL;
	int rc = models_alloc(&ms, o);
	if (!rc)
		rc = open_respcache(ms, o, err, errlen);
	for (int i = 0; ms && !rc && i < o->cfg->n_models; i++) {
		ms->e[i].image_fd = -1;
		ms->n = i + 1;
		rc = entry_init(ms, &ms->e[i], &o->cfg->models[i]);
	}
	for (int i = 0; ms && !rc && i < ms->n; i++)
		rc = load_at_start(ms, &ms->e[i], err, errlen);
	if (!rc) {
		rc = -pthread_create(&ms->loader, NULL, loader_main, ms);
		ms->loader_started = rc == 0;
	}
	if (rc) {
		if (rc == -ENOMEM && err && errlen && !err[0])
			herd_errf(err, errlen, rc, "out of memory loading models");
		models_destroy(ms);
		return rc;
	}
	*out = ms;
	return 0;
}

void models_destroy(models *ms)
{
	if (!ms)
		return;
	if (ms->loader_started) {
		pthread_mutex_lock(&ms->mu);
		ms->stop = 1;
		pthread_cond_signal(&ms->cv);
		pthread_mutex_unlock(&ms->mu);
		pthread_join(ms->loader, NULL);
	}
	for (int i = 0; i < ms->n; i++) {
		models_entry *e = &ms->e[i];
		if (atomic_load(&e->state) == MODELS_ST_EVICTING)
			models_res_drop_image(e);
		models_res_free(e);
		models_pending *p = e->pending;
		while (p) {
			models_pending *nx = p->next;
			gen_request_free(p->req);
			free(p);
			p = nx;
		}
		if (e->shared) {
			close(e->src_fd);
			if (e->file)
				unlink(e->file); /* a copy left by a load cut short */
		}
		free(e->file);
		free(e->type);
	}
	sched_event_free(ms->ev_head);
	respcache_close(ms->rcache); /* after the schedulers have stopped */
	pthread_mutex_destroy(&ms->mu);
	pthread_cond_destroy(&ms->cv);
	free(ms->e);
	free(ms->scan);
	free(ms->held);
	free(ms->held_scan);
	free(ms->agents);
	free(ms);
}

int models_count(const models *ms)
{
	return ms ? ms->n : 0;
}

models_entry *models_at(models *ms, int i)
{
	return ms && i >= 0 && i < ms->n ? &ms->e[i] : NULL;
}

models_entry *models_find(models *ms, const char *name, size_t len)
{
	for (int i = 0; ms && i < ms->n; i++)
		if (strlen(ms->e[i].name) == len && !memcmp(ms->e[i].name, name, len))
			return &ms->e[i];
	return NULL;
}

int models_owns_segment(const models *ms, const char *seg)
{
	if (!seg)
		return 0;
	if (seg[0] == '/')
		seg++;
	for (int i = 0; ms && i < ms->n; i++) {
		const models_entry *e = &ms->e[i];
		const char *n = e->info.name;
		if (n[0] == '/')
			n++;
		const int st = atomic_load(&e->state); /* (info is the loader's while LOADING) */
		if ((st == MODELS_ST_RESIDENT || st == MODELS_ST_EVICTING) && !strcmp(n, seg))
			return 1;
	}
	return 0;
}
