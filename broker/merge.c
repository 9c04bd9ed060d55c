/* Merge groups of identical in-flight requests (see merge.h). */
#include "merge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t slot_of(const merge_table *t, const respcache_key *k)
{
	uint64_t h;
	memcpy(&h, k->hash, sizeof(h));
	return (size_t)(h % (uint64_t)t->cap);
}

static void group_free(merge_group *g)
{
	respcache_key_free(&g->key);
	free(g->fol);
	free(g);
}

void merge_table_fini(merge_table *t)
{
	for (int i = 0; i < t->cap; i++)
		while (t->tab[i]) {
			merge_group *g = t->tab[i];
			t->tab[i] = g->next;
			group_free(g);
		}
	free(t->tab);
	memset(t, 0, sizeof(*t));
}

merge_group *merge_find(const merge_table *t, const respcache_key *k)
{
	if (!t->cap)
		return NULL;
	for (merge_group *g = t->tab[slot_of(t, k)]; g; g = g->next)
		if (respcache_key_eq(&g->key, k))
			return g;
	return NULL;
}

/* Doubles the table (at load 1); keeps the old one when memory is short. */
static void grow(merge_table *t)
{
	const int cap = t->cap ? t->cap * 2 : 64;
	merge_group **tab = calloc((size_t)cap, sizeof(*tab));
	if (!tab)
		return;
	merge_table nt = {tab, cap, t->n};
	for (int i = 0; i < t->cap; i++)
		while (t->tab[i]) {
			merge_group *g = t->tab[i];
			t->tab[i] = g->next;
			const size_t s = slot_of(&nt, &g->key);
			g->next = tab[s];
			tab[s] = g;
		}
	free(t->tab);
	*t = nt;
}

merge_group *merge_open(merge_table *t, respcache_key *k, void *lead)
{
	if (t->n >= t->cap)
		grow(t);
	if (!t->cap)
		return NULL;
	merge_group *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->key = *k;
	memset(k, 0, sizeof(*k));
	g->lead = lead;
	const size_t s = slot_of(t, &g->key);
	g->next = t->tab[s];
	t->tab[s] = g;
	t->n++;
	return g;
}

int merge_join(merge_group *g, void *f)
{
	if (g->n_fol == g->cap_fol) {
		const int cap = g->cap_fol ? g->cap_fol * 2 : 4;
		void **n = realloc(g->fol, sizeof(*n) * (size_t)cap);
		if (!n)
			return -ENOMEM;
		g->fol = n;
		g->cap_fol = cap;
	}
	g->fol[g->n_fol++] = f;
	return 0;
}

void merge_leave(merge_group *g, void *f)
{
	for (int i = 0; i < g->n_fol; i++)
		if (g->fol[i] == f) {
			memmove(&g->fol[i], &g->fol[i + 1], sizeof(*g->fol) * (size_t)(g->n_fol - i - 1));
			g->n_fol--;
			return;
		}
}

void *merge_promote(merge_group *g)
{
	if (g->n_fol == 0)
		return NULL;
	void *f = g->fol[0];
	merge_leave(g, f);
	g->lead = f;
	return f;
}

void merge_close(merge_table *t, merge_group *g)
{
	merge_group **p = &t->tab[slot_of(t, &g->key)];
	while (*p && *p != g)
		p = &(*p)->next;
	if (*p) {
		*p = g->next;
		t->n--;
	}
	group_free(g);
}
