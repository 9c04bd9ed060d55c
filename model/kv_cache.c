#include "kv_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "herd/error.h"

int kv_type_ok(kern_type type)
{
	return type == KERN_TYPE_F16 || type == KERN_TYPE_Q8_0 || type == KERN_TYPE_Q4_0;
}

size_t kv_page_bytes(kern_type type, int n_layer, int kv_dim, int page_tokens)
{
	if (!kv_type_ok(type) || n_layer < 0 || page_tokens < 0)
		return 0;
	return (size_t)n_layer * 2 * (size_t)page_tokens * kern_row_size(type, kv_dim);
}

int kv_pool_init(kv_pool *p, kern_type type, int n_layer, int kv_dim, int page_tokens, int n_pages)
{
	memset(p, 0, sizeof(*p));
	p->n_layer = n_layer;
	p->kv_dim = kv_dim;
	p->page_tokens = page_tokens;
	p->n_pages = n_pages;
	p->type = type;
	p->row_bytes = kern_row_size(type, kv_dim);
	p->page_bytes = kv_page_bytes(type, n_layer, kv_dim, page_tokens);
	if (!kv_type_ok(type) || !p->row_bytes)
		return HERD_E_INVAL;
	size_t bytes = (p->page_bytes * (size_t)n_pages + 63) / 64 * 64;
	const size_t np = (size_t)(n_pages ? n_pages : 1);
	p->n_buckets = 1;
	while (p->n_buckets < np && p->n_buckets < (1u << 30))
		p->n_buckets <<= 1;
	/* An anonymous private mapping of its own (never the allocator's heap,
	 * whose pages may already be written and whose sanitizer shadow would
	 * stay resident): pages cost memory once written, and kv_pool_trim
	 * gives whole system pages inside unreferenced KV pages back with
	 * MADV_DONTNEED, after which they read as zero. */
	p->map_bytes = (bytes + 4095) / 4096 * 4096;
	if (!p->map_bytes)
		p->map_bytes = 4096;
	p->data = mmap(NULL, p->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->data == MAP_FAILED)
		p->data = NULL;
	p->touched = calloc(np, 1);
	p->limit = n_pages;
	p->free_ids = malloc(sizeof(int32_t) * np);
	p->ref = calloc(np, sizeof(uint32_t));
	p->hashed = calloc(np, 1);
	p->hash = calloc(np, sizeof(uint64_t));
	p->parent = calloc(np, sizeof(uint64_t));
	p->tok = calloc(np * (size_t)page_tokens, sizeof(int32_t));
	p->hnext = malloc(sizeof(int32_t) * np);
	p->pnext = malloc(sizeof(int32_t) * np);
	p->lru_prev = malloc(sizeof(int32_t) * np);
	p->lru_next = malloc(sizeof(int32_t) * np);
	p->buckets = malloc(sizeof(int32_t) * p->n_buckets);
	p->pbuckets = malloc(sizeof(int32_t) * p->n_buckets);
	if (!p->data || !p->touched || !p->free_ids || !p->ref || !p->hashed || !p->hash || !p->parent ||
	    !p->tok || !p->hnext || !p->pnext || !p->lru_prev || !p->lru_next || !p->buckets ||
	    !p->pbuckets) {
		kv_pool_fini(p);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < p->n_buckets; i++)
		p->buckets[i] = p->pbuckets[i] = -1;
	p->lru_head = p->lru_tail = -1;
	/* A key nobody outside the process knows; a fixed one if the kernel
	 * has no entropy to give (hashes then stay correct, only guessable). */
	if (getrandom(p->key, sizeof(p->key), GRND_NONBLOCK) != (ssize_t)sizeof(p->key)) {
		p->key[0] = 0x736f6d6570736575ull;
		p->key[1] = 0x646f72616e646f6dull;
	}
	/* Highest id at the bottom, so allocation hands out 0, 1, 2, ... */
	for (int i = 0; i < n_pages; i++)
		p->free_ids[i] = n_pages - 1 - i;
	p->n_free = n_pages;
	return 0;
}

void kv_pool_fini(kv_pool *p)
{
	if (p->data)
		munmap(p->data, p->map_bytes);
	free(p->touched);
	free(p->free_ids);
	free(p->ref);
	free(p->hashed);
	free(p->hash);
	free(p->parent);
	free(p->tok);
	free(p->hnext);
	free(p->pnext);
	free(p->lru_prev);
	free(p->lru_next);
	free(p->buckets);
	free(p->pbuckets);
	memset(p, 0, sizeof(*p));
}

/* ---- LRU list and hash table ------------------------------------------- */

static void lru_unlink(kv_pool *p, int32_t page)
{
	const int32_t a = p->lru_prev[page], b = p->lru_next[page];
	if (a >= 0)
		p->lru_next[a] = b;
	else
		p->lru_head = b;
	if (b >= 0)
		p->lru_prev[b] = a;
	else
		p->lru_tail = a;
	p->n_cached--;
}

static void lru_append(kv_pool *p, int32_t page)
{
	p->lru_prev[page] = p->lru_tail;
	p->lru_next[page] = -1;
	if (p->lru_tail >= 0)
		p->lru_next[p->lru_tail] = page;
	else
		p->lru_head = page;
	p->lru_tail = page;
	p->n_cached++;
}

static uint32_t bucket_of(const kv_pool *p, uint64_t hash)
{
	return (uint32_t)(hash ^ (hash >> 32)) & (p->n_buckets - 1);
}

/* Takes page out of the chain starting at *link, linked through next[]. */
static void chain_unlink(int32_t *link, int32_t *next, int32_t page)
{
	while (*link >= 0 && *link != page)
		link = &next[*link];
	if (*link == page)
		*link = next[page];
}

static void unhash(kv_pool *p, int32_t page)
{
	chain_unlink(&p->buckets[bucket_of(p, p->hash[page])], p->hnext, page);
	chain_unlink(&p->pbuckets[bucket_of(p, p->parent[page])], p->pnext, page);
	p->hashed[page] = 0;
}

int32_t kv_pool_alloc(kv_pool *p)
{
	int32_t id;
	if (p->n_free > 0) {
		id = p->free_ids[--p->n_free];
		p->n_touched_free -= p->touched[id];
	} else if (p->lru_head >= 0) {
		id = p->lru_head;
		lru_unlink(p, id);
		unhash(p, id);
		p->evictions++;
	} else {
		return -1;
	}
	p->ref[id] = 1;
	p->touched[id] = 1;
	return id;
}

void kv_pool_retain(kv_pool *p, int32_t page)
{
	if (p->ref[page] == 0 && p->hashed[page])
		lru_unlink(p, page);
	p->ref[page]++;
}

void kv_pool_release(kv_pool *p, int32_t page)
{
	if (p->ref[page] == 0)
		return;
	if (--p->ref[page] > 0)
		return;
	if (p->hashed[page]) {
		lru_append(p, page);
	} else {
		p->free_ids[p->n_free++] = page;
		p->n_touched_free += p->touched[page];
	}
}

int32_t kv_pool_find(const kv_pool *p, uint64_t parent, uint64_t hash, const int32_t *tokens)
{
	for (int32_t i = p->buckets[bucket_of(p, hash)]; i >= 0; i = p->hnext[i])
		if (p->hash[i] == hash && p->parent[i] == parent &&
		    !memcmp(p->tok + (size_t)i * p->page_tokens, tokens,
			    sizeof(int32_t) * (size_t)p->page_tokens))
			return i;
	return -1;
}

int kv_pool_publish(kv_pool *p, int32_t page, uint64_t parent, uint64_t hash,
		    const int32_t *tokens)
{
	if (p->hashed[page] || p->ref[page] == 0 || kv_pool_find(p, parent, hash, tokens) >= 0)
		return 0;
	p->hashed[page] = 1;
	p->hash[page] = hash;
	p->parent[page] = parent;
	memcpy(p->tok + (size_t)page * p->page_tokens, tokens, sizeof(int32_t) * (size_t)p->page_tokens);
	const uint32_t b = bucket_of(p, hash), pb = bucket_of(p, parent);
	p->hnext[page] = p->buckets[b];
	p->buckets[b] = page;
	p->pnext[page] = p->pbuckets[pb];
	p->pbuckets[pb] = page;
	return 1;
}

int32_t kv_pool_find_prefix(const kv_pool *p, uint64_t parent, const int32_t *tokens, int n,
			    int *k)
{
	int32_t best = -1;
	int best_k = 0;
	if (n > p->page_tokens - 1)
		n = p->page_tokens - 1;
	for (int32_t i = p->pbuckets[bucket_of(p, parent)]; i >= 0 && best_k < n; i = p->pnext[i]) {
		if (p->parent[i] != parent)
			continue;
		const int32_t *t = p->tok + (size_t)i * p->page_tokens;
		int j = 0;
		while (j < n && t[j] == tokens[j])
			j++;
		if (j > best_k) {
			best = i;
			best_k = j;
		}
	}
	*k = best_k;
	return best;
}

int32_t kv_pool_cow(kv_pool *p, int32_t page)
{
	const int32_t id = kv_pool_alloc(p);
	if (id < 0)
		return -1;
	memcpy(p->data + (size_t)id * p->page_bytes, p->data + (size_t)page * p->page_bytes,
	       p->page_bytes);
	kv_pool_release(p, page);
	return id;
}

/* ---- memory pressure ------------------------------------------------------ */

/* Gives the whole system pages inside page id's bytes back. */
static void page_dontneed(kv_pool *p, int32_t id)
{
	const uintptr_t sys = (uintptr_t)sysconf(_SC_PAGESIZE);
	const size_t pb = p->page_bytes;
	const uintptr_t a = (uintptr_t)p->data + (size_t)id * pb, b = a + pb;
	const uintptr_t lo = (a + sys - 1) & ~(sys - 1), hi = b & ~(sys - 1);
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int kv_pool_trimmable(const kv_pool *p)
{
	return p->n_cached + p->n_touched_free;
}

int kv_pool_trim(kv_pool *p)
{
	while (p->lru_head >= 0) { /* the unreferenced prefix pages leave the cache */
		const int32_t id = p->lru_head;
		lru_unlink(p, id);
		unhash(p, id);
		p->evictions++;
		p->free_ids[p->n_free++] = id;
	}
	int n = 0;
	for (int i = 0; i < p->n_free; i++) {
		const int32_t id = p->free_ids[i];
		if (!p->touched[id])
			continue;
		page_dontneed(p, id);
		p->touched[id] = 0;
		n++;
	}
	p->n_touched_free = 0;
	p->trimmed += (uint64_t)n;
	return n;
}

void kv_pool_set_limit(kv_pool *p, int pages)
{
	p->limit = pages < 1 ? 1 : pages > p->n_pages ? p->n_pages : pages;
}

/* ---- hashing: SipHash-1-3 over 64-bit words ------------------------------ */

static inline uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                   \
	do {                                                                       \
		v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);          \
		v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                             \
		v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                             \
		v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);          \
	} while (0)

static uint64_t siphash_words(const uint64_t key[2], const uint64_t *w, size_t n)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
	uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
	for (size_t i = 0; i < n; i++) {
		v3 ^= w[i];
		SIPROUND;
		v0 ^= w[i];
	}
	const uint64_t last = (uint64_t)(n * 8) << 56;
	v3 ^= last;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t kv_hash_seed(const kv_pool *p, const void *id, size_t n, uint64_t domain)
{
	uint64_t w[9] = {0x7365656400000000ull, domain, (uint64_t)n};
	size_t k = 3;
	const unsigned char *b = id;
	/* the id folded into at most six words (a digest is 32 bytes) */
	for (size_t i = 0; i < n; i++)
		w[3 + (i / 8) % 6] ^= (uint64_t)b[i] << (8 * (i % 8));
	k += n ? (n > 48 ? 6 : (n + 7) / 8) : 0;
	return siphash_words(p->key, w, k);
}

uint64_t kv_hash_block(const kv_pool *p, uint64_t parent, const int32_t *tokens)
{
	uint64_t w[1 + 64];
	const int n = p->page_tokens < 128 ? p->page_tokens : 128;
	w[0] = parent;
	for (int i = 0; i < (n + 1) / 2; i++) {
		const uint64_t lo = (uint32_t)tokens[2 * i];
		const uint64_t hi = 2 * i + 1 < n ? (uint32_t)tokens[2 * i + 1] : 0;
		w[1 + i] = lo | hi << 32;
	}
	return siphash_words(p->key, w, 1 + (size_t)(n + 1) / 2);
}
