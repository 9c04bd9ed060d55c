/* The broker's models: for each configured model a shared-memory image
 * (adopted from a previous broker or created), mapped read-only and opened
 * zero-copy (the weights the engine reads are the shared pages), one
 * llama_ctx, and the scheduler that drives it: its *residency*.
 *
 * The cache manager (docs/models.md). With max_memory_mb = 0 every model is
 * loaded at start and kept (the broker as it always was). With a budget,
 * pinned and preload models are loaded at start and the others on demand:
 * a request (or attach) for a model that is not resident queues in the
 * entry's pending list (state "loading" / "waiting for memory") and makes
 * the loader thread load it; the loop is woken when it is done and the
 * pending requests go to the new scheduler. A model's bytes are its image
 * plus its KV pool. When a load does not fit, the manager evicts the
 * lowest-scored resident models that are unpinned and idle (nothing
 * queued, running or pending); when none is idle it *drains* the
 * lowest-scored one (new requests for it wait in its pending list, the
 * running ones finish) and evicts it then, so a model with a running
 * request is never evicted and a waiting load is never starved. Eviction
 * unlinks the image: its memory is returned once no process maps it;
 * agents that attached it keep their mapping, and until they detach the
 * image's bytes still count against the budget ("held" in herdctl models,
 * with the pids).
 * Scores and history live in the LMDB catalog (broker/catalog.h). After
 * each request the agent's first-order transition model predicts its next
 * model; it is preloaded when it fits in free memory, or when the
 * prediction's confidence is at least preload_confidence by evicting idle
 * models (never below it). An agent saying hello gets the model it used
 * last preloaded the same way.
 *
 * Threads: the loop thread owns the entries' state transitions, pending
 * lists and decisions (models_submit, models_tick, ...); the loader thread
 * builds and frees residencies (image, gguf, model, ctx, scheduler) and
 * scans /proc for the processes holding images; it publishes a finished
 * load by setting the entry's state (atomic) and waking the loop through
 * wake_fd. The resident fields (info, image_fd, map, gguf, model, ctx,
 * sched) may be read by the loop only while the state is RESIDENT.
 *
 * Trust (shm/image.h, "Trust rule"): an image left by a previous broker is
 * adopted only when it passes the trust rule (owned by this uid, mode 0440,
 * the source's path, device, inode, size and mtime as in its header): that
 * takes microseconds, so a warm restart stays in milliseconds. Its payload
 * digest is then checked by a thread of the entry (pread of the whole
 * image, ~0.2-0.6 s for TinyLlama) BEFORE the image is trusted for anything
 * else: until the check passes, the entry's scheduler holds every request
 * in its queue (no step reads the weights), and attach is refused with
 * -EAGAIN ("still being verified").
 * Metadata (hyper-parameters, vocabulary) is parsed from the image at
 * adoption: it comes from an object only this uid can write. When the
 * check fails the image is unlinked (if the name still holds it), the
 * failure is logged, the queued requests are cancelled, and the model
 * refuses requests and attach with HERD_E_UNTRUSTED until herdd restarts
 * (the restart builds a fresh image from the model file). An image built by
 * this broker is trusted at once (its digest was computed while writing).
 */
#ifndef HERD_BROKER_MODELS_H
#define HERD_BROKER_MODELS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/catalog.h"
#include "broker/config.h"
#include "broker/log.h"
#include "broker/scheduler.h"
#include "model/llama.h"
#include "shm/image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MODELS_SHARE_TARGETS 16 /* agents (or uids) one shared model is served to */
#define MODELS_SHARE_MIN_BYTES 64 /* a GGUF header is at least this long */

/* Residency states (models_entry.state). */
enum {
	MODELS_ST_UNLOADED = 0, /* not resident (never loaded, evicted, or its load failed) */
	MODELS_ST_LOADING = 1,  /* the loader thread is building it */
	MODELS_ST_RESIDENT = 2, /* serving */
	MODELS_ST_EVICTING = 3, /* the loader thread is freeing it */
};

enum {
	MODELS_TRUST_VERIFYING = 0, /* adopted; digest check running: not served yet */
	MODELS_TRUST_OK = 1,        /* built by us, or adopted and verified */
	MODELS_TRUST_FAILED = 2,    /* adopted, digest mismatch: dropped, refused */
};

typedef struct models_entry {
	char name[SHM_IMAGE_MODEL_MAX];
	char *file;              /* source path as configured (owned) */
	char *type;              /* requested weight type or NULL (owned) */
	shm_image_info info;     /* info.name is the segment, info.digest_hex the digest */
	int adopted;             /* image re-used from a previous broker */
	int image_fd;            /* read-only descriptor passed to agents (SCM_RIGHTS) */
	shm_image_map_t map;
	gguf_ctx *gguf;          /* over map.payload: zero copy */
	llama_model *model;
	llama_ctx *ctx;
	sched *sched;
	double load_ms;          /* time to adopt or build + open */
	/* trust (see above) */
	atomic_int trust;        /* MODELS_TRUST_* */
	int n_untrusted;         /* objects of the model skipped by the trust rule */
	char trust_msg[256];     /* FAILED: why (written before trust is set) */
	double verify_ms;        /* duration of the digest check, once done */
	const blog *log;
	pthread_t verify_thread;
	int verify_started;
	/* the cache manager (loop thread unless noted) */
	atomic_int state;        /* MODELS_ST_*; the loader sets LOADING -> RESIDENT/UNLOADED */
	int pinned, preload_cfg; /* from the configuration */
	int pinned_admin;        /* herdctl pin / unpin (overrides pinned when >= 0) */
	struct models_pending *pending, *pending_tail; /* requests waiting for residency */
	int n_pending;
	int want;                /* a load is wanted (demand, preload or admin) */
	int want_preload;        /* ... only by a prediction of confidence want_conf */
	double want_conf;
	double want_since;       /* monotonic ms the wait for memory began; 0 = not waiting */
	int draining;            /* chosen for eviction: new requests wait, then evicted */
	int by_preload;          /* this residency was started by a prediction, not used yet */
	uint64_t bytes;          /* resident: image + KV pool (loader writes before RESIDENT) */
	uint64_t kv_bytes;
	uint64_t est_bytes;      /* before a load: last known bytes, or the file size */
	uint32_t n_vocab, n_ctx; /* last known (welcome), kept across evictions */
	double last_use_ms;      /* monotonic ms of the last request */
	int load_rc;             /* the last load's result (loader writes before UNLOADED) */
	char load_err[256];
	uint64_t n_loads, n_evictions;
	const struct models *owner;
	/* a model an agent shared (models_share): file is the broker's private
	 * copy, made from src_fd at each load and removed after it */
	int shared;
	int src_fd;              /* the agent's descriptor of its GGUF (owned), -1 */
	uint64_t src_size;       /* its size when shared */
	uint32_t owner_uid;      /* SO_PEERCRED of the sharer */
	char share_owner[CATALOG_NAME_MAX]; /* the sharer's agent name ("uid:<n>" without one) */
	char share_targets[MODELS_SHARE_TARGETS][CATALOG_NAME_MAX]; /* names, or "uid:<n>" */
	int n_share_targets;
} models_entry;

typedef struct models models;

typedef struct models_opts {
	const cfg *cfg;  /* models, threads, ctx_size, kv_cache_mb, batch settings */
	int wake_fd;     /* eventfd every scheduler writes when it posts events */
	const blog *log;
	int force_ref;   /* reference kernels (herdd: HERD_FORCE_REF) */
	int no_repack;   /* interleaving policy off for the images (herdd:
			  * HERD_NO_REPACK; model/convert.h) */
	catalog *catalog; /* borrowed; may be NULL (no history kept) */
} models_opts;

/* Starts the loader and loads the models due at start (every model when
 * cfg->max_memory_mb is 0; else the pinned and preload ones). On failure returns the first error (-errno,
 * HERD_E_* of shm_image_create / llama_model_from_gguf / llama_ctx_create /
 * sched_create) with a message naming the model and file in err, and
 * nothing stays loaded. */
int models_create(models **out, const models_opts *o, char *err, size_t errlen);
void models_destroy(models *ms); /* accepts NULL */

/* The response cache shared by the models' schedulers (config
 * "response_cache"), or NULL when it is off. */
respcache *models_respcache(models *ms);

int models_count(const models *ms);
models_entry *models_at(models *ms, int i);
/* By name (name[0..len), not NUL-terminated); NULL when unknown. */
models_entry *models_find(models *ms, const char *name, size_t len);
/* 1 when seg (with or without the leading '/') is the image of a loaded model. */
int models_owns_segment(const models *ms, const char *seg);

/* Whether e may serve now. attach = 0: a gen request (0 while verifying:
 * the scheduler holds it until the check ends); attach = 1: handing out the
 * image's descriptor. Returns 0, -EAGAIN (attach while the digest check
 * runs) or HERD_E_UNTRUSTED (the check failed); msg names the model, the
 * image and the reason. Any thread. */
int models_usable(const models_entry *e, int attach, char *msg, size_t msglen);

/* ---- the cache manager (loop thread) --------------------------------------- */

/* The scheduler of a resident entry, or NULL (not resident). */
sched *models_sched(const models_entry *e);
/* A gen request for e from agent (its name, for the catalog and the
 * predictions): submitted to its scheduler when resident, else queued in
 * its pending list and a load is started. Returns 0, HERD_E_NOSPACE (the
 * model alone exceeds max_memory_mb), HERD_E_CANCELLED (shutting down) or
 * -ENOMEM / sched_submit's errors, with a message in msg. */
int models_submit(models *ms, models_entry *e, const char *agent, const sched_origin *from,
		  const gen_request *r, char *msg, size_t msglen);
/* Attach: 0 when e is resident and usable; otherwise starts its load and
 * returns -EAGAIN ("loading, retry") or models_usable's error. */
int models_attach_check(models *ms, models_entry *e, const char *agent, char *msg, size_t msglen);
/* Cancels request id of conn wherever it waits or runs (a DONE cancel
 * event follows for a pending one); drops every request of conn. */
void models_cancel(models *ms, uint64_t conn, uint64_t id);
void models_cancel_conn(models *ms, uint64_t conn);
/* Agents connecting (hello with a name) and leaving: their affinities
 * count in the scores while connected; a hello preloads the model the
 * agent used last (when it fits, or by the confidence rule). */
void models_agent_hello(models *ms, const char *agent);
void models_agent_bye(models *ms, const char *agent);
/* Every event to deliver: the schedulers' and the manager's own (DONE
 * cancel / ERR for pending requests). The caller frees the list. */
sched_event *models_events_take(models *ms);
/* Decisions: hand pending requests to models that became resident, fail
 * them for loads that failed, evict and start loads. Call after
 * delivering events and on a timer (the loop's housekeeping tick). */
void models_tick(models *ms);
/* Shutdown: every scheduler cancels, pending requests get DONE cancel,
 * no new load starts. */
void models_shutdown(models *ms);
/* 1 when nothing is queued, pending or running anywhere. */
int models_idle(models *ms);

/* Admin (herdctl load/preload/evict/pin/unpin). Return 0 or an error with
 * a message: HERD_E_MISSING, -EBUSY (evict: running requests), ... */
int models_admin(models *ms, models_entry *e, const char *op, char *msg, size_t msglen);

/* Memory pressure (broker/pressure.c): how = MODELS_SHED_IDLE evicts every
 * idle unpinned model (lowest score first) until at least `bytes` are
 * released (0: all of them): loop thread only. MODELS_SHED_REFUSE on /
 * MODELS_SHED_ACCEPT stops / resumes starting new loads (requests for
 * non-resident models get HERD_E_NOSPACE "memory pressure"): any thread.
 * Returns the bytes released. */
enum { MODELS_SHED_IDLE = 1, MODELS_SHED_REFUSE = 2, MODELS_SHED_ACCEPT = 3 };
uint64_t models_shed(models *ms, int how, uint64_t bytes);

/* ---- models shared by agents (herd_model_share; docs/models.md) ---------- */

typedef struct models_share_req {
	const char *name;      /* the model's name, [name_len] bytes */
	size_t name_len;
	int fd;                /* the agent's descriptor of its GGUF file: taken on success */
	const char *owner;     /* the sharer's agent key (hello name, or "uid:<n>") */
	uint32_t owner_uid;    /* the sharer's uid (SO_PEERCRED) */
	const char *const *targets; /* [n_targets] strings of target_lens bytes */
	const size_t *target_lens;
	size_t n_targets;
} models_share_req;

/* Registers a shared model (loop thread): fd must be a regular file of
 * MODELS_SHARE_MIN_BYTES .. max_share_mb bytes starting with the GGUF magic
 * and version 2 or 3, the name a new one (1..63 of A-Z a-z 0-9 _ . + -),
 * the targets at most MODELS_SHARE_TARGETS names. The broker never opens the
 * agent's path: each load copies the file through fd (pread) into a private
 * file of the state directory, builds the image from that copy (full GGUF
 * checks) and removes it. The model is then loaded like any other under the
 * budget (preloaded now into free memory, else on its first request).
 * Returns 0 (*size = the file's bytes) or HERD_E_INVAL / HERD_E_FORMAT /
 * HERD_E_LIMIT / HERD_E_NOSPACE / -EEXIST / -errno with a message. */
int models_share(models *ms, const models_share_req *r, uint64_t *size, char *msg, size_t msglen);
/* 1 when the agent (its key, and uid) may use e: every configured model;
 * a shared one only by its owner (same key and uid) and its targets (by
 * name, or "uid:<n>"). */
int models_may_use(const models_entry *e, const char *agent, uint32_t uid);

/* Memory pressure on the KV pools (loop thread): asks every resident
 * model's scheduler for how (SCHED_KV_TRIM / SHRINK / RESTORE, broker/
 * scheduler.h); returns how many were asked. models_kv_state: the bytes
 * of unreferenced KV pages holding memory now (what a trim gives back)
 * and how many resident models could still lower their limit, from the
 * schedulers' last published stats. */
int models_kv_shed(models *ms, int how);
void models_kv_state(models *ms, uint64_t *trimmable_bytes, int *shrinkable);

/* What herdctl models shows for e: score parts, holders of its image. */
typedef struct models_view {
	const char *state;       /* "resident", "loading", "waiting", "draining", "evicting", "unloaded" */
	uint64_t bytes;          /* resident bytes, or the estimate */
	int pinned;
	catalog_score_parts score;
	catalog_model rec;       /* the catalog's record (zeros when none) */
	int waiting, running, pending;
	int holders[16];         /* pids mapping its image (besides herdd), last scan */
	int n_holders;
} models_view;
void models_get_view(models *ms, models_entry *e, models_view *out);

/* Images of evicted models still mapped by other processes. */
typedef struct models_held {
	char segment[SHM_IMAGE_NAME_MAX];
	char model[SHM_IMAGE_MODEL_MAX];
	uint64_t bytes;
	int pids[16];
	int n_pids;
} models_held;
/* Copies up to max held images into out; returns how many there are. */
int models_get_held(models *ms, models_held *out, int max);

typedef struct models_cache_stats {
	uint64_t budget_bytes, used_bytes, held_bytes;
	uint64_t loads, load_failures, evictions, demand_loads;
	uint64_t predictions, prediction_hits;  /* an agent's next model was the predicted one */
	uint64_t preloads, preload_hits, preload_wasted, preload_evictions;
	double preload_min_evict_conf;          /* lowest confidence that evicted (1 if none) */
	uint64_t switch_misses;                 /* requests that found their model not resident
						 * and not preloaded */
	int refusing;                           /* models_shed REFUSE in force */
	catalog_stats catalog;
} models_cache_stats;
void models_get_cache_stats(models *ms, models_cache_stats *out);

/* Trust counters for `herdctl status`. */
typedef struct models_trust_stats {
	uint64_t images_adopted;   /* images adopted from a previous broker */
	uint64_t images_untrusted; /* objects skipped by the trust rule: another
				    * owner or mode, or a squatted name */
	uint64_t digest_failures;  /* adopted images dropped by the digest check */
	int verifying;             /* digest checks still running */
} models_trust_stats;
void models_get_trust_stats(const models *ms, models_trust_stats *out);

#ifdef __cplusplus
}
#endif
#endif
