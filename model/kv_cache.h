/* Paged KV cache storage: a pool of fixed-size pages, each holding
 * LLAMA_KV_PAGE positions of K and V for every layer, in f16 (as llama.cpp's
 * default cache type). Sequences own lists of page ids; pages are reference
 * counted so a shared prompt prefix can be held by several sequences.
 *
 * Page layout (f16): for each layer l: K[LLAMA_KV_PAGE][kv_dim] then
 * V[LLAMA_KV_PAGE][kv_dim].
 *
 * Not thread-safe: owned by one llama_ctx.
 */
#ifndef HERD_MODEL_KV_CACHE_H
#define HERD_MODEL_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant_blocks.h"

typedef struct kv_pool {
	int n_layer;
	int kv_dim;        /* n_head_kv * head_dim */
	int page_tokens;   /* LLAMA_KV_PAGE */
	int n_pages;
	size_t page_elems; /* f16 elements per page */
	kern_fp16_t *data; /* n_pages * page_elems */
	int32_t *free_ids; /* stack of free page ids */
	int n_free;
	uint16_t *ref;     /* reference count per page */
} kv_pool;

/* Returns 0 or -ENOMEM. */
int kv_pool_init(kv_pool *p, int n_layer, int kv_dim, int page_tokens, int n_pages);
void kv_pool_fini(kv_pool *p);
/* A fresh page with reference count 1, or -1 when none is free. */
int32_t kv_pool_alloc(kv_pool *p);
void kv_pool_retain(kv_pool *p, int32_t page);
/* Drops one reference; the page returns to the free list at zero. */
void kv_pool_release(kv_pool *p, int32_t page);

static inline kern_fp16_t *kv_page_k(const kv_pool *p, int32_t page, int layer)
{
	return p->data + (size_t)page * p->page_elems +
	       (size_t)layer * 2 * p->page_tokens * p->kv_dim;
}

static inline kern_fp16_t *kv_page_v(const kv_pool *p, int32_t page, int layer)
{
	return kv_page_k(p, page, layer) + (size_t)p->page_tokens * p->kv_dim;
}

#endif
