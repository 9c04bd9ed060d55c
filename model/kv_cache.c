#include "kv_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int kv_pool_init(kv_pool *p, int n_layer, int kv_dim, int page_tokens, int n_pages)
{
	memset(p, 0, sizeof(*p));
	p->n_layer = n_layer;
	p->kv_dim = kv_dim;
	p->page_tokens = page_tokens;
	p->n_pages = n_pages;
	p->page_elems = (size_t)n_layer * 2 * page_tokens * kv_dim;
	size_t bytes = (p->page_elems * sizeof(kern_fp16_t) * (size_t)n_pages + 63) / 64 * 64;
	p->data = aligned_alloc(64, bytes ? bytes : 64);
	p->free_ids = malloc(sizeof(int32_t) * (size_t)(n_pages ? n_pages : 1));
	p->ref = calloc((size_t)(n_pages ? n_pages : 1), sizeof(uint16_t));
	if (!p->data || !p->free_ids || !p->ref) {
		kv_pool_fini(p);
		return -ENOMEM;
	}
	/* Highest id at the bottom, so allocation hands out 0, 1, 2, ... */
	for (int i = 0; i < n_pages; i++)
		p->free_ids[i] = n_pages - 1 - i;
	p->n_free = n_pages;
	return 0;
}

void kv_pool_fini(kv_pool *p)
{
	free(p->data);
	free(p->free_ids);
	free(p->ref);
	memset(p, 0, sizeof(*p));
}

int32_t kv_pool_alloc(kv_pool *p)
{
	if (p->n_free == 0)
		return -1;
	int32_t id = p->free_ids[--p->n_free];
	p->ref[id] = 1;
	return id;
}

void kv_pool_retain(kv_pool *p, int32_t page)
{
	p->ref[page]++;
}

void kv_pool_release(kv_pool *p, int32_t page)
{
	if (p->ref[page] == 0)
		return;
	if (--p->ref[page] == 0)
		p->free_ids[p->n_free++] = page;
}
