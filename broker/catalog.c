/* The model catalog in LMDB: queued updates, one write transaction per
 * batch on a flusher thread, MVCC reads from any thread. */
#include "catalog.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>

#include "herd/error.h"

#define CATALOG_VERSION 1
#define CATALOG_MAP_BYTES (64ull << 20) /* grows only as records are written */
#define CATALOG_KEY_MAX (3 * CATALOG_NAME_MAX)

enum { OP_USE = 1, OP_LOAD, OP_EVICT };

typedef struct cat_op {
	int type;
	char agent[CATALOG_NAME_MAX];
	char model[CATALOG_NAME_MAX];
	uint64_t bytes;
	double load_ms, t;
} cat_op;

struct catalog {
	MDB_env *env;
	MDB_dbi db_model, db_agent, db_pair, db_trans;
	const blog *log;
	int flush_ms;
	pthread_mutex_t mu;      /* the queue, the stats, stop */
	pthread_cond_t cv;
	pthread_mutex_t wmu;     /* one writer at a time (flusher or catalog_flush) */
	cat_op *q;
	int nq, capq;
	int stop;
	pthread_t thread;
	int started;
	catalog_stats st;
};

double catalog_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double catalog_decay(double v, double t0, double t1)
{
	if (t1 <= t0)
		return v;
	return v * exp2(-(t1 - t0) / CATALOG_HALF_LIFE_S);
}

void catalog_score(const catalog_model *m, double aff_sum, double now, catalog_score_parts *out)
{
	memset(out, 0, sizeof(*out));
	if (m && m->last_use > 0) {
		const double age = now > m->last_use ? now - m->last_use : 0;
		out->recency = exp(-age / CATALOG_RECENCY_S);
	}
	const double f = m ? catalog_decay(m->freq, m->freq_t, now) : 0;
	out->frequency = f / (1 + f);
	const double mib = m ? (double)m->bytes / (1 << 20) : 0;
	const double k = mib > 0 ? m->load_ms / mib : 0;
	out->cost = k / (1 + k);
	out->affinity = aff_sum > 0 ? aff_sum / (1 + aff_sum) : 0;
	out->score = 0.35 * out->recency + 0.25 * out->frequency + 0.15 * out->cost +
		     0.25 * out->affinity;
}

/* ---- keys and records ------------------------------------------------------- */

/* Packs up to three names separated by NUL into buf; returns the length. */
static size_t key3(char *buf, const char *a, const char *b, const char *c)
{
	size_t n = 0;
	const char *parts[3] = {a, b, c};
	for (int i = 0; i < 3 && parts[i]; i++) {
		size_t l = strnlen(parts[i], CATALOG_NAME_MAX - 1);
		memcpy(buf + n, parts[i], l);
		n += l;
		buf[n++] = 0;
	}
	return n > 0 ? n - 1 : 0; /* no trailing NUL */
}

static int lmdb_err(int rc)
{
	if (rc == 0)
		return 0;
	if (rc > 0)
		return -rc; /* errno values */
	return rc == MDB_MAP_FULL ? -ENOSPC : HERD_E_FORMAT;
}

/* Reads a record of exactly n bytes with the current version into out. */
static int get_rec(MDB_txn *txn, MDB_dbi db, const char *k, size_t kn, void *out, size_t n)
{
	MDB_val key = {kn, (void *)k}, val;
	int rc = mdb_get(txn, db, &key, &val);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lmdb_err(rc);
	uint32_t version; /* LMDB values need not be aligned: copied */
	if (val.mv_size != n || n < sizeof(version))
		return -ENOENT; /* another layout: start over */
	memcpy(&version, val.mv_data, sizeof(version));
	if (version != CATALOG_VERSION)
		return -ENOENT;
	memcpy(out, val.mv_data, n);
	return 0;
}

static int put_rec(MDB_txn *txn, MDB_dbi db, const char *k, size_t kn, void *rec, size_t n)
{
	const uint32_t version = CATALOG_VERSION;
	memcpy(rec, &version, sizeof(version));
	MDB_val key = {kn, (void *)k}, val = {n, rec};
	return lmdb_err(mdb_put(txn, db, &key, &val, 0));
}

/* ---- applying updates ------------------------------------------------------- */

static int apply_model(catalog *c, MDB_txn *txn, const cat_op *op)
{
	catalog_model m;
	if (get_rec(txn, c->db_model, op->model, strlen(op->model), &m, sizeof(m)))
		memset(&m, 0, sizeof(m));
	if (op->type == OP_USE) {
		m.freq = catalog_decay(m.freq, m.freq_t, op->t) + 1;
		m.freq_t = op->t;
		m.last_use = op->t;
		m.uses++;
	} else if (op->type == OP_LOAD) {
		m.bytes = op->bytes;
		m.load_ms = op->load_ms;
		m.loads++;
	} else {
		m.evictions++;
	}
	return put_rec(txn, c->db_model, op->model, strlen(op->model), &m, sizeof(m));
}

static int apply_trans(catalog *c, MDB_txn *txn, const cat_op *op, const char *from)
{
	char k[CATALOG_KEY_MAX];
	const size_t kn = key3(k, op->agent, from, op->model);
	MDB_val key = {kn, k}, val;
	uint64_t n = 0;
	int rc = mdb_get(txn, c->db_trans, &key, &val);
	if (rc == 0 && val.mv_size == sizeof(n))
		memcpy(&n, val.mv_data, sizeof(n));
	else if (rc && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	n++;
	val = (MDB_val){sizeof(n), &n};
	return lmdb_err(mdb_put(txn, c->db_trans, &key, &val, 0));
}

/* A use: the agent's record, its transition from its last model, and
 * the pair's affinity. */
static int apply_agent(catalog *c, MDB_txn *txn, const cat_op *op)
{
	catalog_agent a;
	const size_t an = strlen(op->agent);
	if (get_rec(txn, c->db_agent, op->agent, an, &a, sizeof(a)))
		memset(&a, 0, sizeof(a));
	int rc = 0;
	if (a.last_model[0] && (rc = apply_trans(c, txn, op, a.last_model)))
		return rc;
	snprintf(a.last_model, sizeof(a.last_model), "%s", op->model);
	a.last_use = op->t;
	a.uses++;
	if ((rc = put_rec(txn, c->db_agent, op->agent, an, &a, sizeof(a))))
		return rc;
	char k[CATALOG_KEY_MAX];
	const size_t kn = key3(k, op->agent, op->model, NULL);
	catalog_pair p;
	if (get_rec(txn, c->db_pair, k, kn, &p, sizeof(p)))
		memset(&p, 0, sizeof(p));
	p.aff = catalog_decay(p.aff, p.t, op->t) + 1;
	p.t = op->t;
	p.uses++;
	return put_rec(txn, c->db_pair, k, kn, &p, sizeof(p));
}

static int apply_ops(catalog *c, const cat_op *ops, int n)
{
	MDB_txn *txn;
	int rc = lmdb_err(mdb_txn_begin(c->env, NULL, 0, &txn));
	if (rc)
		return rc;
	for (int i = 0; i < n && !rc; i++) {
		rc = apply_model(c, txn, &ops[i]);
		if (!rc && ops[i].type == OP_USE && ops[i].agent[0])
			rc = apply_agent(c, txn, &ops[i]);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return lmdb_err(mdb_txn_commit(txn));
}

/* Takes the queue and applies it in one transaction (wmu serializes). */
static int flush_once(catalog *c)
{
	pthread_mutex_lock(&c->wmu);
	pthread_mutex_lock(&c->mu);
	cat_op *ops = c->q;
	const int n = c->nq;
	c->q = NULL;
	c->nq = c->capq = 0;
	pthread_mutex_unlock(&c->mu);
	int rc = n > 0 ? apply_ops(c, ops, n) : 0;
	pthread_mutex_lock(&c->mu);
	if (n > 0 && rc == 0) {
		c->st.commits++;
		c->st.applied += (uint64_t)n;
	} else if (rc) {
		c->st.failures++;
		c->st.dropped += (uint64_t)n;
	}
	pthread_mutex_unlock(&c->mu);
	pthread_mutex_unlock(&c->wmu);
	if (rc)
		blog_msg(c->log, BLOG_WARN, "catalog: a batch of %d updates was not committed: %s", n,
			 herd_strerror(rc));
	free(ops);
	return rc;
}

static void *flusher_main(void *arg)
{
	catalog *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		long ns = ts.tv_nsec + (long)c->flush_ms * 1000000L;
		ts.tv_sec += ns / 1000000000L;
		ts.tv_nsec = ns % 1000000000L;
		pthread_cond_timedwait(&c->cv, &c->mu, &ts);
		if (c->nq == 0)
			continue;
		pthread_mutex_unlock(&c->mu);
		flush_once(c);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void enqueue(catalog *c, const cat_op *op)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	if (c->nq == c->capq) {
		int cap = c->capq ? c->capq * 2 : 256;
		cat_op *nq = c->nq < CATALOG_QUEUE_MAX ? realloc(c->q, sizeof(*nq) * (size_t)cap) : NULL;
		if (!nq) {
			c->st.dropped++;
			pthread_mutex_unlock(&c->mu);
			return;
		}
		c->q = nq;
		c->capq = cap;
	}
	c->q[c->nq++] = *op;
	pthread_mutex_unlock(&c->mu);
}

void catalog_note_use(catalog *c, const char *agent, const char *model, double t)
{
	cat_op op = {.type = OP_USE, .t = t};
	snprintf(op.agent, sizeof(op.agent), "%s", agent ? agent : "");
	snprintf(op.model, sizeof(op.model), "%s", model);
	enqueue(c, &op);
}

void catalog_note_load(catalog *c, const char *model, uint64_t bytes, double load_ms, double t)
{
	cat_op op = {.type = OP_LOAD, .bytes = bytes, .load_ms = load_ms, .t = t};
	snprintf(op.model, sizeof(op.model), "%s", model);
	enqueue(c, &op);
}

void catalog_note_evict(catalog *c, const char *model, double t)
{
	cat_op op = {.type = OP_EVICT, .t = t};
	snprintf(op.model, sizeof(op.model), "%s", model);
	enqueue(c, &op);
}

int catalog_flush(catalog *c)
{
	return c ? flush_once(c) : 0;
}

/* ---- reads ---------------------------------------------------------------------- */

static int read_rec(catalog *c, MDB_dbi db, const char *k, size_t kn, void *out, size_t n)
{
	if (!c)
		return -ENOENT;
	MDB_txn *txn;
	int rc = lmdb_err(mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	rc = get_rec(txn, db, k, kn, out, n);
	mdb_txn_abort(txn);
	return rc;
}

int catalog_get_model(catalog *c, const char *model, catalog_model *out)
{
	return read_rec(c, c ? c->db_model : 0, model, strnlen(model, CATALOG_NAME_MAX - 1), out,
			sizeof(*out));
}

int catalog_get_agent(catalog *c, const char *agent, catalog_agent *out)
{
	return read_rec(c, c ? c->db_agent : 0, agent, strnlen(agent, CATALOG_NAME_MAX - 1), out,
			sizeof(*out));
}

double catalog_affinity(catalog *c, const char *agent, const char *model, double now)
{
	char k[CATALOG_KEY_MAX];
	const size_t kn = key3(k, agent, model, NULL);
	catalog_pair p;
	if (read_rec(c, c ? c->db_pair : 0, k, kn, &p, sizeof(p)))
		return 0;
	return catalog_decay(p.aff, p.t, now);
}

/* Scans the successors of (agent, from): the best other than from, and
 * the total count. */
static int scan_trans(MDB_cursor *cur, const char *pre, size_t pn, const char *from, char *to,
		      size_t tolen, uint64_t *best, uint64_t *total)
{
	MDB_val key = {pn, (void *)pre}, val;
	int rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size <= pn || memcmp(key.mv_data, pre, pn))
			break;
		uint64_t n = 0;
		if (val.mv_size == sizeof(n))
			memcpy(&n, val.mv_data, sizeof(n));
		const size_t tn = key.mv_size - pn;
		const char *t = (const char *)key.mv_data + pn;
		*total += n;
		if (tn < tolen && !(strlen(from) == tn && !memcmp(from, t, tn)) && n > *best) {
			*best = n;
			memcpy(to, t, tn);
			to[tn] = 0;
		}
	}
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : lmdb_err(rc);
}

int catalog_predict(catalog *c, const char *agent, const char *from, char *to, size_t tolen,
		    double *conf)
{
	*conf = 0;
	if (!c)
		return -ENOENT;
	char pre[CATALOG_KEY_MAX + 1];
	size_t pn = key3(pre, agent, from, NULL);
	pre[pn++] = 0; /* the separator before `to` */
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc = lmdb_err(mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn));
	if (rc)
		return rc;
	uint64_t best = 0, total = 0;
	rc = lmdb_err(mdb_cursor_open(txn, c->db_trans, &cur));
	if (!rc) {
		rc = scan_trans(cur, pre, pn, from, to, tolen, &best, &total);
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	if (rc)
		return rc;
	if (!best)
		return -ENOENT;
	*conf = (double)best / (double)total;
	return 0;
}

void catalog_get_stats(catalog *c, catalog_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->queued = c->nq;
	pthread_mutex_unlock(&c->mu);
}

/* ---- open / close --------------------------------------------------------------- */

static int open_dbs(catalog *c)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc);
	static const char *const names[4] = {"model", "agent", "pair", "trans"};
	MDB_dbi *dbs[4] = {&c->db_model, &c->db_agent, &c->db_pair, &c->db_trans};
	for (int i = 0; i < 4 && !rc; i++)
		rc = mdb_dbi_open(txn, names[i], MDB_CREATE, dbs[i]);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc);
	}
	return lmdb_err(mdb_txn_commit(txn));
}

static int open_env(catalog *c, const char *dir, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) && errno != EEXIST)
		return herd_errf(err, errlen, -errno, "catalog: cannot create %s: %s", dir, strerror(errno));
	int rc = mdb_env_create(&c->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(c->env, 8);
	if (!rc)
		rc = mdb_env_set_mapsize(c->env, CATALOG_MAP_BYTES);
	if (!rc)
		rc = mdb_env_set_maxreaders(c->env, 126);
	if (!rc)
		rc = mdb_env_open(c->env, dir, MDB_NOTLS, 0600);
	if (!rc)
		rc = open_dbs(c) ? -1 : 0;
	if (rc)
		return herd_errf(err, errlen, rc > 0 ? -rc : HERD_E_FORMAT, "catalog: cannot open the LMDB environment in %s: %s",
			     dir, rc > 0 ? strerror(rc) : mdb_strerror(rc));
	return 0;
}

int catalog_open(catalog **out, const catalog_opts *o, char *err, size_t errlen)
{
	*out = NULL;
	if (!o || !o->dir)
		return HERD_E_INVAL;
	catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->log = o->log;
	c->flush_ms = o->flush_ms > 0 ? o->flush_ms : 100;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->wmu, NULL);
	pthread_cond_init(&c->cv, NULL);
	int rc = open_env(c, o->dir, err, errlen);
	if (!rc) {
		rc = -pthread_create(&c->thread, NULL, flusher_main, c);
		c->started = rc == 0;
		if (rc)
			herd_errf(err, errlen, rc, "catalog: cannot start the flusher thread");
	}
	if (rc) {
		catalog_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

void catalog_close(catalog *c)
{
	if (!c)
		return;
	if (c->started) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
		flush_once(c);
	}
	if (c->env)
		mdb_env_close(c->env);
	free(c->q);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->wmu);
	free(c);
}
