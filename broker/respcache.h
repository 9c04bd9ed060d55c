/* The response cache: answers of deterministic requests kept in an LMDB
 * environment in the broker's state directory, so an identical request
 * (same model image, prompt tokens, sampling parameters, max_tokens, stop
 * strings) is answered without running the model, across restarts.
 *
 * Deterministic: greedy (temperature <= 0) or a fixed non-zero seed. Only
 * requests that finished with HERD_FINISH_STOP or HERD_FINISH_LENGTH are
 * stored (never cancel, deadline or error).
 *
 * Keys: the request's key material (respcache_key: a version tag, the model
 * image digest, the clamped max_tokens, the sampling parameters, the stop
 * strings and the prompt token ids) hashed with the image digest function
 * (shm/digest.h, 32 bytes). The full key material is stored in the value and
 * compared on every hit, so a hash collision is a miss, never a wrong
 * answer. The same key identifies identical in-flight requests for request
 * merging (broker/merge.h).
 *
 * Storage: <state_dir>/respcache.mdb (MDB_NOSUBDIR, with its
 * respcache.mdb-lock), two databases: "resp" (hash -> value) and "age"
 * (last use, big-endian ms, + hash -> empty: the eviction order). The map
 * size is twice the byte cap (room for LMDB's copy-on-write pages); when
 * the used pages pass the cap, or a write meets MDB_MAP_FULL, the least
 * recently used entries are deleted (a hit's use is written with the next
 * batch of answers: respcache_item with text NULL). Expired entries (created more than
 * ttl_s ago) are misses and are deleted. A value whose lengths do not add
 * up, with a wrong magic, a finish reason other than stop/length or key
 * material that differs is logged, treated as a miss and deleted.
 * Durability is LMDB's: a committed write survives a crash of the broker
 * (no journal of ours).
 *
 * Value layout (host byte order; the file is local to this machine):
 *   u32 magic 'HRC1', u32 key_len, u32 text_len, u32 n_tok, u32 finish,
 *   u32 n_prompt, u32 n_gen, u32 reserved, u64 created (unix ms),
 *   u64 used (unix ms); key material [key_len]; text [text_len];
 *   token ids [n_tok] (int32).
 *
 * Threading: one respcache is shared by every scheduler thread of the
 * broker; every function may be called from any thread (LMDB serialises
 * the writers; the counters are under a mutex). Lookups happen at request
 * intake and writes once per scheduler step with finished requests, never
 * per token and never on the event loop's thread.
 */
#ifndef HERD_BROKER_RESPCACHE_H
#define HERD_BROKER_RESPCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/log.h"
#include "model/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RESPCACHE_HASH 32
/* The file name inside the state directory. */
#define RESPCACHE_FILE "respcache.mdb"
/* Bounds of a stored value's parts (a value past them is corrupt). */
#define RESPCACHE_KEY_MAX (64u << 20)
#define RESPCACHE_TEXT_MAX (64u << 20)
#define RESPCACHE_TOK_MAX (16u << 20)

/* The identity of a deterministic request (owned key material). */
typedef struct respcache_key {
	uint8_t *mat;
	size_t len;
	uint8_t hash[RESPCACHE_HASH];
} respcache_key;

/* 1 when r always gives the same answer: greedy, or a non-zero seed. */
int respcache_deterministic(const gen_request *r);
/* Builds the key of a begun sequence g of request r, sent from trust
 * domain domain (sched_origin.domain: answers and in-flight merges are
 * shared only inside one domain, as prefixes are, so no agent learns from
 * a hit or its timing that another domain asked the same), on the model
 * whose image digest is digest. Returns 0 or -ENOMEM. */
int respcache_key_make(respcache_key *k, const uint8_t digest[RESPCACHE_HASH], uint64_t domain,
		       const gen_seq *g, const gen_request *r);
void respcache_key_free(respcache_key *k); /* accepts a zeroed key */
/* 1 when a and b are the same key (hash and material). */
int respcache_key_eq(const respcache_key *a, const respcache_key *b);

/* One answer. */
typedef struct respcache_entry {
	char *text;          /* NUL-terminated, owned */
	size_t text_len;
	int32_t *toks;       /* the sampled token ids (an EOS included), owned */
	int n_tok;
	herd_finish finish;  /* STOP or LENGTH */
	int n_prompt, n_gen;
	uint64_t created;    /* unix ms */
} respcache_entry;
void respcache_entry_free(respcache_entry *e); /* accepts a zeroed entry */

/* What a write stores: a key and its answer (borrowed). text == NULL: only
 * marks key's entry as used now (a hit), for the eviction order. */
typedef struct respcache_item {
	const respcache_key *key;
	const char *text;
	size_t text_len;
	const int32_t *toks;
	int n_tok;
	herd_finish finish;
	int n_prompt, n_gen;
} respcache_item;

typedef struct respcache_opts {
	const char *dir;     /* the state directory: created 0700 when missing;
			      * refused when another uid owns it or group or
			      * others may write it */
	uint64_t max_bytes;  /* cap on the used pages; >= 1 MiB */
	uint64_t ttl_s;      /* 0: entries never expire */
	const blog *log;     /* may be NULL */
} respcache_opts;

typedef struct respcache respcache;

typedef struct respcache_stats {
	uint64_t entries, bytes;   /* now (bytes: pages in use x page size) */
	uint64_t max_bytes;
	uint64_t hits, misses, stores, evictions, expired, corrupt;
	uint64_t write_errors;
} respcache_stats;

/* Opens (creating) the environment. Returns 0, -errno or an LMDB error
 * mapped to HERD_E_IO / -EPERM, with a message in err. */
int respcache_open(respcache **out, const respcache_opts *o, char *err, size_t errlen);
void respcache_close(respcache *rc); /* accepts NULL */

/* Looks k up. Returns 0 with *out filled (a hit: free it with
 * respcache_entry_free), 1 for a miss (absent, expired, or corrupt: the
 * last two are deleted and logged), or a negative error (treat as a miss). */
int respcache_get(respcache *rc, const respcache_key *k, respcache_entry *out);
/* Stores (or marks used) items[0..n) in one write transaction (replacing equal keys),
 * evicting the least recently used entries to stay under the cap. Returns
 * 0 or the first error (nothing of a failed transaction is stored). */
int respcache_put(respcache *rc, const respcache_item *items, int n);
void respcache_get_stats(respcache *rc, respcache_stats *st);

/* Memory pressure (broker/pressure.h): evicts the oldest entries down to
 * half the bytes in use (at least 1 MiB is kept) in one write transaction
 * and keeps the cap there until respcache_unshrink. Returns the entries
 * evicted (0: nothing to shed) or a negative error. Any thread. */
int respcache_shrink(respcache *rc);
/* Gives the configured cap back. */
void respcache_unshrink(respcache *rc);

#ifdef __cplusplus
}
#endif
#endif
