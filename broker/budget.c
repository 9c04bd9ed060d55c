/* Per-uid token buckets for the loop's frame work. See budget.h. */
#include "broker/budget.h"

#include <errno.h>
#include <stdlib.h>

int budget_attach(budget_tab *t, uid_t uid, double rate, double now)
{
	int free_slot = -1;
	for (int i = 0; i < t->n; i++) {
		if (t->v[i].refs > 0 && t->v[i].uid == uid) {
			t->v[i].refs++;
			return i;
		}
		if (t->v[i].refs == 0 && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0) {
		if (t->n == t->cap) {
			const int cap = t->cap ? 2 * t->cap : 16;
			budget *nv = realloc(t->v, sizeof(*nv) * (size_t)cap);
			if (!nv)
				return -ENOMEM;
			t->v = nv;
			t->cap = cap;
		}
		free_slot = t->n++;
	}
	t->v[free_slot] = (budget){.uid = uid, .refs = 1, .tokens = rate, .t_last = now};
	return free_slot;
}

void budget_detach(budget_tab *t, int idx)
{
	if (idx >= 0 && idx < t->n && t->v[idx].refs > 0)
		t->v[idx].refs--;
}

double budget_frame_cost(size_t len)
{
	return 1.0 + (double)(len >> 10);
}

/* Adds what accrued since b's last refill, up to cap. */
static void refill(double *tokens, double *t_last, double rate, double cap, double now)
{
	if (now > *t_last) {
		*tokens += rate * (now - *t_last) / 1000.0;
		if (*tokens > cap)
			*tokens = cap;
		*t_last = now;
	}
}

int budget_ready(budget_tab *t, int idx, budget_share *own, double rate, double now)
{
	if (rate <= 0 || idx < 0 || idx >= t->n)
		return 1;
	budget *b = &t->v[idx];
	const double share = rate / (b->refs > 0 ? b->refs : 1);
	refill(&own->tokens, &own->t_last, share, share, now);
	refill(&b->tokens, &b->t_last, rate, rate, now);
	return own->tokens > 0 || b->tokens > 0;
}

int budget_take(budget_tab *t, int idx, budget_share *own, double cost, double rate, double now)
{
	if (!budget_ready(t, idx, own, rate, now))
		return 0;
	if (rate <= 0 || idx < 0 || idx >= t->n)
		return 1;
	if (own->tokens > 0)
		own->tokens -= cost;
	else
		t->v[idx].tokens -= cost;
	return 1;
}

void budget_tab_free(budget_tab *t)
{
	free(t->v);
	*t = (budget_tab){0};
}
