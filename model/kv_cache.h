/* Paged KV cache storage: a pool of fixed-size pages, each holding
 * LLAMA_KV_PAGE positions of K and V for every layer, in one element type:
 * f16 (llama.cpp's default cache type), Q8_0 or Q4_0 (blocks of 32 along
 * each row, as llama.cpp's -ctk/-ctv q8_0 / q4_0; a head's slice of a row is
 * whole blocks, so the head size must be a multiple of 32). Sequences own lists of page ids; pages are reference
 * counted so a shared prompt prefix can be held by several sequences.
 *
 * Prefix cache: a full page can be published under the hash of its block
 * (the block's tokens and the hash of the block before it, the first
 * block's "before" being a seed naming the model and the trust domain).
 * A published page is never written again (a writer copies it first:
 * kv_pool_cow); when its last reference goes it is not freed but kept,
 * unreferenced, in an LRU list of cached pages that a later sequence with
 * the same prefix may map again (kv_pool_find + kv_pool_retain). Allocation
 * takes a free page first and evicts the least recently used cached page
 * when none is free, so cached pages cost nothing to running sequences:
 * kv_pool_avail counts them as available.
 *
 * Hashes are keyed (SipHash-1-3 with a key drawn at init), and a lookup also
 * compares the block's tokens and its parent hash: a false match would need
 * a 64-bit collision of a keyed hash that nobody outside the process knows.
 *
 * Page layout: for each layer l: K[LLAMA_KV_PAGE] rows then V[LLAMA_KV_PAGE]
 * rows, a row being kv_dim elements of the type (row_bytes bytes).
 *
 * Backing and memory pressure: the pages are anonymous memory (one mmap
 * for any pool of more than a few MiB), so a page costs memory only once
 * written. kv_pool_trim gives the memory of
 * every unreferenced page back (the cached prefix pages are dropped from
 * the prefix cache first) with MADV_DONTNEED; a page handed out again is
 * simply re-touched (the kernel maps zero pages on the first write).
 * kv_pool_set_limit lowers the pages new work may take (kv_pool_avail):
 * sequences that hold or reserved pages go on; admissions wait.
 *
 * Not thread-safe: owned by one llama_ctx.
 */
#ifndef HERD_MODEL_KV_CACHE_H
#define HERD_MODEL_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

typedef struct kv_pool {
	int n_layer;
	int kv_dim;        /* n_head_kv * head_dim */
	int page_tokens;   /* LLAMA_KV_PAGE */
	int n_pages;
	kern_type type;    /* KERN_TYPE_F16, _Q8_0 or _Q4_0 */
	size_t row_bytes;  /* one position's K (or V) row of one layer */
	size_t page_bytes; /* n_layer * 2 * page_tokens * row_bytes */
	uint8_t *data;     /* n_pages * page_bytes */
	int32_t *free_ids; /* stack of free page ids */
	int n_free;
	uint32_t *ref;     /* reference count per page */
	/* prefix cache, per page */
	uint8_t *hashed;   /* published under hash[] */
	uint64_t *hash, *parent;
	int32_t *tok;      /* [n_pages][page_tokens]: the block's tokens */
	int32_t *hnext;    /* hash bucket chain */
	int32_t *pnext;    /* chain of the pages published after one parent */
	int32_t *lru_prev, *lru_next; /* cached (hashed, unreferenced) pages */
	int32_t *buckets;  /* [n_buckets] first page of each chain, -1 none */
	int32_t *pbuckets; /* [n_buckets] the same by parent hash (kv_pool_find_prefix) */
	uint32_t n_buckets; /* power of two */
	int lru_head, lru_tail; /* oldest, newest; -1 when empty */
	int n_cached;      /* pages in the LRU list */
	uint64_t evictions; /* cached pages taken for reuse */
	uint64_t key[2];   /* hash key */
	/* memory (see above) */
	size_t map_bytes;  /* bytes behind data */
	uint8_t *touched;  /* per page: handed out since its memory was last given back */
	int n_touched_free; /* free pages with touched set */
	int limit;         /* pages that may be referenced at once for new work (n_pages: none) */
	uint64_t trimmed;  /* pages whose memory kv_pool_trim gave back, in all */
} kv_pool;

/* 1 when type is a KV element type (F16, Q8_0, Q4_0). */
int kv_type_ok(kern_type type);
/* Bytes of one page of the type (0 for a type kv_type_ok refuses or a
 * kv_dim that is not whole blocks). */
size_t kv_page_bytes(kern_type type, int n_layer, int kv_dim, int page_tokens);
/* Returns 0, HERD_E_INVAL (a type kv_page_bytes refuses) or -ENOMEM. */
int kv_pool_init(kv_pool *p, kern_type type, int n_layer, int kv_dim, int page_tokens, int n_pages);
void kv_pool_fini(kv_pool *p);
/* A fresh page with reference count 1 (a free one, else the least recently
 * used cached page, evicted), or -1 when every page is referenced. */
int32_t kv_pool_alloc(kv_pool *p);
/* One more reference; a cached page leaves the LRU list. */
void kv_pool_retain(kv_pool *p, int32_t page);
/* Drops one reference; at zero a published page joins the LRU list (newest)
 * and any other returns to the free list. */
void kv_pool_release(kv_pool *p, int32_t page);
/* Pages a new allocation may take: free + cached, within the limit. */
static inline int kv_pool_avail(const kv_pool *p)
{
	const int avail = p->n_free + p->n_cached;
	const int left = p->limit - (p->n_pages - avail); /* limit - referenced */
	return left < avail ? (left > 0 ? left : 0) : avail;
}
/* Drops every unreferenced cached page from the prefix cache and gives the
 * memory of every unreferenced page written since the last trim back to
 * the kernel (MADV_DONTNEED). Returns the pages given back. */
int kv_pool_trim(kv_pool *p);
/* Pages kv_pool_trim would give back now (cached + written free ones). */
int kv_pool_trimmable(const kv_pool *p);
/* Sets the limit (clamped to 1 .. n_pages). */
void kv_pool_set_limit(kv_pool *p, int pages);

/* The chain's seed: a hash of id (the model's identity) and domain. */
uint64_t kv_hash_seed(const kv_pool *p, const void *id, size_t n, uint64_t domain);
/* The hash of the block tokens[page_tokens] following the block hashed parent. */
uint64_t kv_hash_block(const kv_pool *p, uint64_t parent, const int32_t *tokens);
/* The page published as (parent, hash) with these tokens, or -1. Takes no
 * reference. */
int32_t kv_pool_find(const kv_pool *p, uint64_t parent, uint64_t hash, const int32_t *tokens);
/* The published page after parent whose block starts with the longest run
 * of tokens[0..n) (n < page_tokens), or -1 when no block starts with
 * tokens[0]; *k gets the run's length. Takes no reference. A page holding a
 * block that shares only its first k tokens still holds valid K and V for
 * those k positions (a position's K and V depend only on the positions up
 * to it), so a sequence may map it and go on from position k after a copy. */
int32_t kv_pool_find_prefix(const kv_pool *p, uint64_t parent, const int32_t *tokens, int n,
			    int *k);
/* Publishes full page (referenced, written) as the block tokens after
 * parent. Returns 1 when published, 0 when the page already is or another
 * page holds that block (the page then stays private). */
int kv_pool_publish(kv_pool *p, int32_t page, uint64_t parent, uint64_t hash,
		    const int32_t *tokens);
/* A private copy of page for a writer: a new page with the same contents
 * (reference 1) replacing one reference to page. Returns the new id, or -1
 * (nothing changed) when no page can be had. */
int32_t kv_pool_cow(kv_pool *p, int32_t page);

/* The K (V) row of position slot (< page_tokens) of layer in page. */
static inline void *kv_row_k(const kv_pool *p, int32_t page, int layer, int slot)
{
	return p->data + (size_t)page * p->page_bytes +
	       ((size_t)layer * 2 * p->page_tokens + (size_t)slot) * p->row_bytes;
}

static inline void *kv_row_v(const kv_pool *p, int32_t page, int layer, int slot)
{
	return (uint8_t *)kv_row_k(p, page, layer, slot) + (size_t)p->page_tokens * p->row_bytes;
}

#endif
