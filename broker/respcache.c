/* The response cache on LMDB (see respcache.h). */
#include "respcache.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "shm/digest.h"

#define RC_MAGIC 0x31435248u /* "HRC1" */
#define RC_KEY_TAG "herd-respcache-v1"
/* Entries deleted per round when a write meets MDB_MAP_FULL. */
#define RC_FULL_EVICT 64

_Static_assert(RESPCACHE_HASH == SHM_DIGEST_SIZE, "the key hash is the image digest function");

typedef struct rc_hdr {
	uint32_t magic, key_len, text_len, n_tok, finish, n_prompt, n_gen, reserved;
	uint64_t created, used;
} rc_hdr;
_Static_assert(sizeof(rc_hdr) == 48, "the value header is 48 bytes, no padding");

struct respcache {
	MDB_env *env;
	MDB_dbi resp, age;
	uint64_t max_bytes, ttl_ms;
	_Atomic uint64_t cap;  /* the cap writes evict to: max_bytes, lower while shrunk */
	const blog *log;
	pthread_mutex_t mu;
	respcache_stats st; /* counters, under mu */
};

/* ---- keys ----------------------------------------------------------------- */

int respcache_deterministic(const gen_request *r)
{
	return r->params.sampling.temperature <= 0 || r->params.sampling.seed != 0;
}

/* A growable byte buffer for the key material. */
typedef struct kbuf {
	uint8_t *p;
	size_t len, cap;
	int oom;
} kbuf;

static void kput(kbuf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *np = realloc(b->p, cap);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void kput_u64(kbuf *b, uint64_t v)
{
	kput(b, &v, sizeof(v));
}

int respcache_key_make(respcache_key *k, const uint8_t digest[RESPCACHE_HASH], uint64_t domain,
		       const gen_seq *g, const gen_request *r)
{
	memset(k, 0, sizeof(*k));
	kbuf b = {0};
	const sampler_params *sp = &r->params.sampling;
	const int greedy = sp->temperature <= 0;
	kput(&b, RC_KEY_TAG, sizeof(RC_KEY_TAG));
	kput(&b, digest, RESPCACHE_HASH);
	kput_u64(&b, domain);
	kput_u64(&b, (uint64_t)g->max_gen);
	/* the sampler's inputs; a greedy sampler draws nothing, so no seed */
	const float f[4] = {greedy ? 0.0f : sp->temperature, sp->top_p, sp->min_p, sp->repeat_penalty};
	kput(&b, f, sizeof(f));
	kput_u64(&b, (uint64_t)(int64_t)sp->top_k);
	kput_u64(&b, (uint64_t)(int64_t)sp->repeat_last_n);
	kput_u64(&b, greedy ? 0 : sp->seed);
	kput_u64(&b, (uint64_t)g->n_stop);
	for (size_t i = 0; i < g->n_stop; i++) {
		const size_t n = strlen(g->stop[i]);
		kput_u64(&b, (uint64_t)n);
		kput(&b, g->stop[i], n);
	}
	kput_u64(&b, (uint64_t)g->n_prompt);
	kput(&b, g->prompt, sizeof(int32_t) * (size_t)g->n_prompt);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	k->mat = b.p;
	k->len = b.len;
	shm_digest(k->mat, k->len, k->hash);
	return 0;
}

void respcache_key_free(respcache_key *k)
{
	if (!k)
		return;
	free(k->mat);
	memset(k, 0, sizeof(*k));
}

int respcache_key_eq(const respcache_key *a, const respcache_key *b)
{
	return a->len == b->len && !memcmp(a->hash, b->hash, RESPCACHE_HASH) &&
	       !memcmp(a->mat, b->mat, a->len);
}

void respcache_entry_free(respcache_entry *e)
{
	if (!e)
		return;
	free(e->text);
	free(e->toks);
	memset(e, 0, sizeof(*e));
}

/* ---- the environment ---------------------------------------------------- */

static uint64_t unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int lmdb_err(int rc)
{
	if (rc > 0)
		return -rc; /* an errno */
	return rc == MDB_MAP_FULL ? HERD_E_NOSPACE : HERD_E_FORMAT;
}

/* mkdir -p with mode 0700 for every directory it creates. */
static int make_dirs(const char *dir)
{
	char p[4096];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0700) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* The state directory: created 0700, ours (or root's when we are root),
 * not writable by group or others. */
static int check_dir(const char *dir, char *err, size_t errlen)
{
	int rc = make_dirs(dir);
	if (rc)
		return herd_errf(err, errlen, rc, "state directory '%s': cannot create it: %s", dir,
				 herd_strerror(rc));
	struct stat st;
	if (stat(dir, &st))
		return herd_errf(err, errlen, -errno, "state directory '%s': %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return herd_errf(err, errlen, -ENOTDIR, "state directory '%s' is not a directory", dir);
	if (st.st_uid != geteuid())
		return herd_errf(err, errlen, -EPERM,
				 "state directory '%s' is owned by uid %u, not by this broker's uid %u: "
				 "refused", dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return herd_errf(err, errlen, -EPERM,
				 "state directory '%s' is writable by %s (mode %04o): refused (chmod go-w it)",
				 dir, (st.st_mode & S_IWOTH) ? "others" : "its group",
				 (unsigned)(st.st_mode & 07777));
	return 0;
}

static int env_open_dbs(respcache *rc)
{
	MDB_txn *txn;
	int r = mdb_txn_begin(rc->env, NULL, 0, &txn);
	if (r)
		return r;
	if ((r = mdb_dbi_open(txn, "resp", MDB_CREATE, &rc->resp)) ||
	    (r = mdb_dbi_open(txn, "age", MDB_CREATE, &rc->age))) {
		mdb_txn_abort(txn);
		return r;
	}
	return mdb_txn_commit(txn);
}

static int env_open(respcache *rc, const char *path)
{
	int r = mdb_env_create(&rc->env);
	if (r)
		return r;
	size_t map = (size_t)(rc->max_bytes * 2);
	if ((r = mdb_env_set_maxdbs(rc->env, 2)) || (r = mdb_env_set_mapsize(rc->env, map)) ||
	    (r = mdb_env_open(rc->env, path, MDB_NOSUBDIR, 0600)) || (r = env_open_dbs(rc))) {
		mdb_env_close(rc->env);
		rc->env = NULL;
		return r;
	}
	int dead = 0;
	mdb_reader_check(rc->env, &dead); /* reader slots of a broker that was killed */
	return 0;
}

int respcache_open(respcache **out, const respcache_opts *o, char *err, size_t errlen)
{
	*out = NULL;
	if (!o || !o->dir || o->max_bytes < (1u << 20))
		return herd_errf(err, errlen, HERD_E_INVAL, "response cache: bad options");
	int rc = check_dir(o->dir, err, errlen);
	if (rc)
		return rc;
	char path[4200];
	if (snprintf(path, sizeof(path), "%s/%s", o->dir, RESPCACHE_FILE) >= (int)sizeof(path))
		return herd_errf(err, errlen, -ENAMETOOLONG, "state directory path too long");
	respcache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->max_bytes = o->max_bytes;
	atomic_init(&c->cap, o->max_bytes);
	c->ttl_ms = o->ttl_s * 1000u;
	c->log = o->log;
	c->st.max_bytes = o->max_bytes;
	int r = env_open(c, path);
	if (r == MDB_INVALID || r == MDB_VERSION_MISMATCH || r == MDB_CORRUPTED) {
		/* not an environment we can read: keep it aside, start empty */
		char aside[4300];
		snprintf(aside, sizeof(aside), "%s.bad", path);
		blog_msg(o->log, BLOG_WARN, "response cache %s: %s; moved to %s, starting empty", path,
			 mdb_strerror(r), aside);
		if (rename(path, aside) == 0)
			r = env_open(c, path);
	}
	if (r) {
		rc = herd_errf(err, errlen, lmdb_err(r), "response cache %s: %s", path, mdb_strerror(r));
		free(c);
		return rc;
	}
	pthread_mutex_init(&c->mu, NULL);
	*out = c;
	return 0;
}

void respcache_close(respcache *rc)
{
	if (!rc)
		return;
	mdb_env_close(rc->env);
	pthread_mutex_destroy(&rc->mu);
	free(rc);
}

static void count(respcache *rc, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&rc->mu);
	*field += n;
	pthread_mutex_unlock(&rc->mu);
}

/* Pages in use by both databases, in bytes (within txn). */
static uint64_t used_bytes(MDB_txn *txn, const respcache *rc, uint64_t *entries)
{
	uint64_t b = 0;
	MDB_dbi d[2] = {rc->resp, rc->age};
	for (int i = 0; i < 2; i++) {
		MDB_stat s;
		if (mdb_stat(txn, d[i], &s))
			continue;
		b += (uint64_t)(s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages) * s.ms_psize;
		if (i == 0 && entries)
			*entries = s.ms_entries;
	}
	return b;
}

void respcache_get_stats(respcache *rc, respcache_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!rc)
		return;
	uint64_t entries = 0, bytes = 0;
	MDB_txn *txn;
	if (mdb_txn_begin(rc->env, NULL, MDB_RDONLY, &txn) == 0) {
		bytes = used_bytes(txn, rc, &entries);
		mdb_txn_abort(txn);
	}
	pthread_mutex_lock(&rc->mu);
	*st = rc->st;
	pthread_mutex_unlock(&rc->mu);
	st->entries = entries;
	st->bytes = bytes;
}

/* ---- values ----------------------------------------------------------------- */

/* Checks a stored value: 0 when sound, else why not in why[]. */
static int value_check(const MDB_val *v, rc_hdr *h, char *why, size_t n)
{
	if (v->mv_size < sizeof(*h)) {
		snprintf(why, n, "%zu bytes, shorter than the %zu-byte header", v->mv_size, sizeof(*h));
		return -1;
	}
	memcpy(h, v->mv_data, sizeof(*h));
	if (h->magic != RC_MAGIC) {
		snprintf(why, n, "bad magic 0x%08x", h->magic);
		return -1;
	}
	if (h->key_len > RESPCACHE_KEY_MAX || h->text_len > RESPCACHE_TEXT_MAX ||
	    h->n_tok > RESPCACHE_TOK_MAX) {
		snprintf(why, n, "oversized part (key %u, text %u, tokens %u bytes/ids)", h->key_len,
			 h->text_len, h->n_tok);
		return -1;
	}
	const uint64_t want = sizeof(*h) + (uint64_t)h->key_len + h->text_len + 4ull * h->n_tok;
	if (want != v->mv_size) {
		snprintf(why, n, "lengths add up to %llu bytes but the value has %zu",
			 (unsigned long long)want, v->mv_size);
		return -1;
	}
	if ((h->finish != HERD_FINISH_STOP && h->finish != HERD_FINISH_LENGTH) ||
	    h->n_gen > h->n_tok || h->n_prompt == 0) {
		snprintf(why, n, "impossible answer (finish %u, n_gen %u, %u tokens, n_prompt %u)",
			 h->finish, h->n_gen, h->n_tok, h->n_prompt);
		return -1;
	}
	return 0;
}

static int value_copy(const MDB_val *v, const rc_hdr *h, respcache_entry *out)
{
	const uint8_t *p = (const uint8_t *)v->mv_data + sizeof(*h) + h->key_len;
	out->text = malloc((size_t)h->text_len + 1);
	out->toks = malloc(sizeof(int32_t) * ((size_t)h->n_tok + 1));
	if (!out->text || !out->toks) {
		respcache_entry_free(out);
		return -ENOMEM;
	}
	memcpy(out->text, p, h->text_len);
	out->text[h->text_len] = 0;
	out->text_len = h->text_len;
	memcpy(out->toks, p + h->text_len, sizeof(int32_t) * h->n_tok);
	out->n_tok = (int)h->n_tok;
	out->finish = (herd_finish)h->finish;
	out->n_prompt = (int)h->n_prompt;
	out->n_gen = (int)h->n_gen;
	out->created = h->created;
	return 0;
}

/* The age index key: the last use (big-endian, so the least recently used
 * sorts first) and the hash. */
static void age_key(uint8_t out[8 + RESPCACHE_HASH], uint64_t t, const uint8_t *hash)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(t >> (56 - 8 * i));
	memcpy(out + 8, hash, RESPCACHE_HASH);
}

/* Deletes hash's entry (and its age key when its header is readable). */
static void del_entry(respcache *rc, MDB_txn *txn, const uint8_t *hash)
{
	MDB_val k = {RESPCACHE_HASH, (void *)hash}, v;
	rc_hdr h;
	char why[8];
	if (mdb_get(txn, rc->resp, &k, &v) == 0 && value_check(&v, &h, why, sizeof(why)) == 0) {
		uint8_t ak[8 + RESPCACHE_HASH];
		age_key(ak, h.used, hash);
		MDB_val a = {sizeof(ak), ak};
		mdb_del(txn, rc->age, &a, NULL);
	}
	mdb_del(txn, rc->resp, &k, NULL);
}

/* Deletes a bad or expired entry in a write transaction of its own. */
static void drop(respcache *rc, const uint8_t *hash)
{
	MDB_txn *txn;
	if (mdb_txn_begin(rc->env, NULL, 0, &txn))
		return;
	del_entry(rc, txn, hash);
	if (mdb_txn_commit(txn))
		count(rc, &rc->st.write_errors, 1);
}

typedef enum { RC_HIT, RC_MISS, RC_BAD, RC_OLD } rc_look;

static rc_look look(respcache *rc, MDB_txn *txn, const respcache_key *k, respcache_entry *out,
		    char *why, size_t n)
{
	MDB_val key = {RESPCACHE_HASH, (void *)k->hash}, v;
	if (mdb_get(txn, rc->resp, &key, &v))
		return RC_MISS;
	rc_hdr h;
	if (value_check(&v, &h, why, n))
		return RC_BAD;
	if (h.key_len != k->len || memcmp((const uint8_t *)v.mv_data + sizeof(h), k->mat, k->len))
		return RC_MISS; /* another request with the same hash: never a false hit */
	if (rc->ttl_ms && unix_ms() > h.created + rc->ttl_ms)
		return RC_OLD;
	return value_copy(&v, &h, out) ? RC_MISS : RC_HIT;
}

int respcache_get(respcache *rc, const respcache_key *k, respcache_entry *out)
{
	memset(out, 0, sizeof(*out));
	MDB_txn *txn;
	int r = mdb_txn_begin(rc->env, NULL, MDB_RDONLY, &txn);
	if (r) {
		count(rc, &rc->st.misses, 1);
		return lmdb_err(r);
	}
	char why[160] = "";
	const rc_look res = look(rc, txn, k, out, why, sizeof(why));
	mdb_txn_abort(txn);
	if (res == RC_HIT) {
		count(rc, &rc->st.hits, 1);
		return 0;
	}
	count(rc, &rc->st.misses, 1);
	if (res == RC_BAD) {
		char hex[17];
		shm_digest_hex(k->hash, 8, hex);
		blog_msg(rc->log, BLOG_WARN, "response cache: entry %s is corrupt (%s): not used, deleted",
			 hex, why);
		count(rc, &rc->st.corrupt, 1);
	} else if (res == RC_OLD) {
		count(rc, &rc->st.expired, 1);
	}
	if (res == RC_BAD || res == RC_OLD)
		drop(rc, k->hash);
	return 1;
}

/* ---- writes ------------------------------------------------------------------ */

/* Deletes the oldest entries until the pages in use are at most cap bytes,
 * or n of them when n > 0. Returns the number deleted. */
static int evict(respcache *rc, MDB_txn *txn, uint64_t cap, int n)
{
	MDB_cursor *cur;
	if (mdb_cursor_open(txn, rc->age, &cur))
		return 0;
	int done = 0;
	MDB_val k, v;
	while (n > 0 ? done < n : used_bytes(txn, rc, NULL) > cap) {
		if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) || k.mv_size != 8 + RESPCACHE_HASH)
			break;
		uint8_t hash[RESPCACHE_HASH];
		memcpy(hash, (uint8_t *)k.mv_data + 8, RESPCACHE_HASH);
		if (mdb_cursor_del(cur, 0))
			break;
		MDB_val hk = {RESPCACHE_HASH, hash};
		if (mdb_del(txn, rc->resp, &hk, NULL) == 0)
			done++;
	}
	mdb_cursor_close(cur);
	return done;
}

static int put_one(respcache *rc, MDB_txn *txn, const respcache_item *it, uint64_t now)
{
	const respcache_key *k = it->key;
	const rc_hdr h = {.magic = RC_MAGIC, .key_len = (uint32_t)k->len,
			  .text_len = (uint32_t)it->text_len, .n_tok = (uint32_t)it->n_tok,
			  .finish = (uint32_t)it->finish, .n_prompt = (uint32_t)it->n_prompt,
			  .n_gen = (uint32_t)it->n_gen, .created = now, .used = now};
	const size_t size = sizeof(h) + k->len + it->text_len + sizeof(int32_t) * (size_t)it->n_tok;
	if (k->len > RESPCACHE_KEY_MAX || it->text_len > RESPCACHE_TEXT_MAX ||
	    (unsigned)it->n_tok > RESPCACHE_TOK_MAX || size > rc->max_bytes / 4)
		return 0; /* too large to be worth a slot: not stored */
	del_entry(rc, txn, k->hash); /* an older answer of the same key, and its age key */
	MDB_val key = {RESPCACHE_HASH, (void *)k->hash}, v = {size, NULL};
	int r = mdb_put(txn, rc->resp, &key, &v, MDB_RESERVE);
	if (r)
		return r;
	uint8_t *p = v.mv_data;
	memcpy(p, &h, sizeof(h));
	memcpy(p + sizeof(h), k->mat, k->len);
	memcpy(p + sizeof(h) + k->len, it->text, it->text_len);
	memcpy(p + sizeof(h) + k->len + it->text_len, it->toks, sizeof(int32_t) * (size_t)it->n_tok);
	uint8_t ak[8 + RESPCACHE_HASH];
	age_key(ak, now, k->hash);
	MDB_val a = {sizeof(ak), ak}, e = {0, NULL};
	return mdb_put(txn, rc->age, &a, &e, 0);
}

/* Moves hash's entry to the young end of the eviction order (its value's
 * last use = now). Nothing when it is gone or unsound. */
static int touch_one(respcache *rc, MDB_txn *txn, const uint8_t *hash, uint64_t now)
{
	MDB_val k = {RESPCACHE_HASH, (void *)hash}, v;
	rc_hdr h;
	char why[8];
	if (mdb_get(txn, rc->resp, &k, &v) || value_check(&v, &h, why, sizeof(why)) || h.used >= now)
		return 0;
	uint8_t ak[8 + RESPCACHE_HASH];
	age_key(ak, h.used, hash);
	MDB_val a = {sizeof(ak), ak}, e = {0, NULL};
	mdb_del(txn, rc->age, &a, NULL);
	const size_t size = v.mv_size;
	uint8_t *copy = malloc(size);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, v.mv_data, size);
	h.used = now;
	memcpy(copy, &h, sizeof(h));
	MDB_val nv = {size, copy};
	int r = mdb_put(txn, rc->resp, &k, &nv, 0);
	free(copy);
	if (!r) {
		age_key(ak, now, hash);
		r = mdb_put(txn, rc->age, &a, &e, 0);
	}
	return r;
}

/* One attempt at storing the batch; MDB_MAP_FULL evicts n_full entries first. */
static int put_txn(respcache *rc, const respcache_item *items, int n, int n_full, int *evicted)
{
	MDB_txn *txn;
	int r = mdb_txn_begin(rc->env, NULL, 0, &txn), ev = 0;
	if (r)
		return r;
	if (n_full > 0)
		ev += evict(rc, txn, 0, n_full);
	const uint64_t now = unix_ms();
	for (int i = 0; i < n && !r; i++)
		r = items[i].text ? put_one(rc, txn, &items[i], now)
				  : touch_one(rc, txn, items[i].key->hash, now);
	if (!r)
		ev += evict(rc, txn, atomic_load(&rc->cap), 0);
	if (r) {
		mdb_txn_abort(txn);
		return r;
	}
	if (!(r = mdb_txn_commit(txn)))
		*evicted += ev;
	return r;
}

int respcache_put(respcache *rc, const respcache_item *items, int n)
{
	if (!rc || n <= 0)
		return 0;
	int evicted = 0, r = put_txn(rc, items, n, 0, &evicted);
	for (int round = 1; r == MDB_MAP_FULL && round <= 8; round++)
		r = put_txn(rc, items, n, RC_FULL_EVICT << round, &evicted);
	pthread_mutex_lock(&rc->mu);
	rc->st.evictions += (uint64_t)evicted;
	if (r)
		rc->st.write_errors++;
	else
		for (int i = 0; i < n; i++)
			rc->st.stores += items[i].text != NULL;
	pthread_mutex_unlock(&rc->mu);
	if (r)
		blog_msg(rc->log, BLOG_WARN, "response cache: cannot store %d answers: %s", n,
			 mdb_strerror(r));
	return r ? lmdb_err(r) : 0;
}

int respcache_shrink(respcache *rc)
{
	if (!rc)
		return 0;
	MDB_txn *txn;
	int r = mdb_txn_begin(rc->env, NULL, 0, &txn);
	if (r)
		return lmdb_err(r);
	uint64_t entries = 0, used = used_bytes(txn, rc, &entries), cap = used / 2;
	if (cap < (1u << 20))
		cap = 1u << 20;
	atomic_store(&rc->cap, cap);
	const int ev = entries ? evict(rc, txn, cap, 0) : 0;
	if ((r = mdb_txn_commit(txn)))
		return lmdb_err(r);
	pthread_mutex_lock(&rc->mu);
	rc->st.evictions += (uint64_t)ev;
	pthread_mutex_unlock(&rc->mu);
	return ev;
}

void respcache_unshrink(respcache *rc)
{
	if (rc)
		atomic_store(&rc->cap, rc->max_bytes);
}
