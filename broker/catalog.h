/* The model catalog: what the cache manager (broker/models.h) remembers
 * about models and agents across restarts, in an LMDB environment of its own
 * (<state_dir>/catalog/, data.mdb + lock.mdb; the response cache keeps its
 * own environment).
 *
 * Named databases:
 *   model  name -> catalog_model   bytes, load time, last use, decayed use
 *                                   frequency, use/load/eviction counts
 *   agent  name -> catalog_agent   last use, uses, the model it used last
 *   pair   agent \0 model -> catalog_pair   affinity (decayed use count)
 *   trans  agent \0 from \0 to -> uint64 count   first-order transitions:
 *                                   how often `to` followed `from`
 *
 * Writes: callers queue updates (catalog_note_*: a mutex held for a memcpy,
 * never an LMDB call), and a flusher thread applies everything queued in ONE
 * write transaction every flush_ms (so a burst of requests costs one commit,
 * and the loop never waits for a disk sync). Reads (catalog_get_*, any
 * thread) open a read-only transaction: LMDB's MVCC means they never wait
 * for the writer. LMDB is crash-safe: a kill -9 at any moment leaves the
 * last committed transaction (tests/test_catalog.c kills a writer 20 times).
 *
 * Times in records are wall-clock seconds (CLOCK_REALTIME), so recency and
 * decay stay meaningful across restarts.
 *
 * Every function accepts a NULL catalog (the broker runs without one when
 * the state directory is unusable): notes are dropped, reads return
 * -ENOENT. */
#ifndef HERD_BROKER_CATALOG_H
#define HERD_BROKER_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "broker/log.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CATALOG_NAME_MAX 64       /* bytes of an agent or model name, NUL included */
#define CATALOG_HALF_LIFE_S 600.0 /* decay of use frequency and affinity */
#define CATALOG_RECENCY_S 300.0   /* time constant of the recency term */
#define CATALOG_QUEUE_MAX 65536   /* queued updates; past it new ones are dropped (counted) */

typedef struct catalog catalog;

typedef struct catalog_model {
	uint32_t version;  /* CATALOG_VERSION */
	uint32_t pad;
	uint64_t bytes;    /* image + KV pool at the last load */
	double load_ms;    /* duration of the last load */
	double last_use;   /* wall-clock s */
	double freq;       /* use count decayed with CATALOG_HALF_LIFE_S, as of freq_t */
	double freq_t;
	uint64_t uses, loads, evictions;
} catalog_model;

typedef struct catalog_agent {
	uint32_t version, pad;
	double last_use;
	uint64_t uses;
	char last_model[CATALOG_NAME_MAX];
} catalog_agent;

typedef struct catalog_pair {
	uint32_t version, pad;
	double aff;       /* use count of the agent on the model, decayed, as of t */
	double t;
	uint64_t uses;
} catalog_pair;

typedef struct catalog_opts {
	const char *dir;  /* the environment's directory (created, mode 0700) */
	int flush_ms;     /* <= 0: 100 */
	const blog *log;
} catalog_opts;

/* Opens (creating) the environment and starts the flusher. Returns 0,
 * -errno or an LMDB error mapped to HERD_E_FORMAT (a damaged file), with
 * a message naming the directory in err. */
int catalog_open(catalog **out, const catalog_opts *o, char *err, size_t errlen);
/* Commits what is queued, stops the flusher, closes. Accepts NULL. */
void catalog_close(catalog *c);

/* Queue updates (any thread, never blocks on LMDB). Names longer than
 * CATALOG_NAME_MAX - 1 are cut. t: wall-clock seconds (catalog_now). */
void catalog_note_use(catalog *c, const char *agent, const char *model, double t);
void catalog_note_load(catalog *c, const char *model, uint64_t bytes, double load_ms, double t);
void catalog_note_evict(catalog *c, const char *model, double t);
/* Applies what is queued now, in one write transaction (the caller's
 * thread). Returns 0 or -errno / HERD_E_* of LMDB. */
int catalog_flush(catalog *c);

/* Reads. 0, -ENOENT (no record, or no catalog) or an error. */
int catalog_get_model(catalog *c, const char *model, catalog_model *out);
int catalog_get_agent(catalog *c, const char *agent, catalog_agent *out);
/* The affinity of agent for model at time now (decayed; 0 when none). */
double catalog_affinity(catalog *c, const char *agent, const char *model, double now);
/* The most likely model to follow `from` for agent, other than `from`:
 * its name in to (size tolen) and its probability among every observed
 * successor of `from` (self-transitions included) in *conf. -ENOENT when
 * agent never moved from `from` to another model. */
int catalog_predict(catalog *c, const char *agent, const char *from, char *to, size_t tolen,
		    double *conf);

/* The score of a model (higher = keep): see docs/models.md. */
typedef struct catalog_score_parts {
	double recency;   /* exp(-(now - last_use) / CATALOG_RECENCY_S) */
	double frequency; /* f / (1 + f), f = decayed use count */
	double cost;      /* k / (1 + k), k = reload ms per MiB */
	double affinity;  /* a / (1 + a), a = sum of connected agents' affinities */
	double score;     /* 0.35 recency + 0.25 frequency + 0.15 cost + 0.25 affinity */
} catalog_score_parts;
void catalog_score(const catalog_model *m, double aff_sum, double now, catalog_score_parts *out);
/* Decays value v, last set at t0, to time t1 (half-life CATALOG_HALF_LIFE_S). */
double catalog_decay(double v, double t0, double t1);
double catalog_now(void); /* wall-clock seconds */

typedef struct catalog_stats {
	uint64_t commits;   /* write transactions committed */
	uint64_t applied;   /* updates applied */
	uint64_t dropped;   /* updates dropped: queue full or the commit failed */
	uint64_t failures;  /* failed write transactions */
	int queued;
} catalog_stats;
void catalog_get_stats(catalog *c, catalog_stats *out);

#ifdef __cplusplus
}
#endif
#endif
