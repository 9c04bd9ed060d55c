/* The scheduler's latency histograms, percentiles and recent window
 * (broker/sched_stats.h). */
#include "broker/scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- latency histograms ------------------------------------------------- */

static int lat_bucket(double ms)
{
	const double us = ms * 1e3;
	if (!(us >= 1)) /* also NaN */
		return 0;
	int e;
	const double f = frexp(us, &e); /* us = f * 2^e, f in [0.5, 1) */
	const int oct = e - 1;          /* us in [2^oct, 2^(oct+1)) */
	if (oct >= SCHED_LAT_OCT)
		return SCHED_LAT_N - 1;
	int sub = (int)((f * 2 - 1) * SCHED_LAT_SUB);
	if (sub >= SCHED_LAT_SUB)
		sub = SCHED_LAT_SUB - 1;
	return 1 + oct * SCHED_LAT_SUB + sub;
}

void sched_lat_bucket(int b, double *lo, double *hi)
{
	if (b <= 0) {
		*lo = 0;
		*hi = 1e-3;
		return;
	}
	const int oct = (b - 1) / SCHED_LAT_SUB, sub = (b - 1) % SCHED_LAT_SUB;
	const double base = ldexp(1e-3, oct); /* 2^oct us in ms */
	*lo = base * (1 + (double)sub / SCHED_LAT_SUB);
	*hi = b == SCHED_LAT_N - 1 ? INFINITY : base * (1 + (double)(sub + 1) / SCHED_LAT_SUB);
}

void sched_lat_add(sched_lat *l, double ms)
{
	if (!(ms > 0))
		ms = 0;
	l->n++;
	l->sum_ms += ms;
	if (ms > l->max_ms)
		l->max_ms = ms;
	l->hist[lat_bucket(ms)]++;
}

double sched_lat_pct(const sched_lat *l, double q)
{
	uint64_t total = 0;
	for (int b = 0; b < SCHED_LAT_N; b++)
		total += l->hist[b];
	if (!total)
		return 0;
	double rank = ceil(q * (double)total); /* nearest rank, 1-based */
	if (rank < 1)
		rank = 1;
	uint64_t cum = 0;
	for (int b = 0; b < SCHED_LAT_N; b++) {
		if (!l->hist[b] || (double)(cum + l->hist[b]) < rank) {
			cum += l->hist[b];
			continue;
		}
		double lo, hi;
		sched_lat_bucket(b, &lo, &hi);
		if (isinf(hi) || hi > l->max_ms)
			hi = l->max_ms > lo ? l->max_ms : lo;
		/* the k-th of the bucket's values sits at (k - 0.5) / count of its width */
		const double v = lo + (hi - lo) * (rank - (double)cum - 0.5) / (double)l->hist[b];
		return v < l->max_ms ? v : l->max_ms;
	}
	return l->max_ms;
}

void sched_lat_diff(sched_lat *out, const sched_lat *now, const sched_lat *base)
{
	out->n = now->n - base->n;
	out->sum_ms = now->sum_ms - base->sum_ms;
	out->max_ms = 0;
	for (int b = 0; b < SCHED_LAT_N; b++) {
		out->hist[b] = now->hist[b] - base->hist[b];
		if (out->hist[b]) {
			double lo, hi;
			sched_lat_bucket(b, &lo, &hi);
			out->max_ms = hi < now->max_ms ? hi : now->max_ms;
		}
	}
}

/* ---- requests by priority ----------------------------------------------- */

void sched_prio_count(sched_prio_counts *p, int prio)
{
	for (int i = 0; i < p->n; i++)
		if (p->prio[i] == prio) {
			p->requests[i]++;
			return;
		}
	if (p->n < SCHED_PRIO_N) {
		p->prio[p->n] = prio;
		p->requests[p->n++] = 1;
		return;
	}
	p->other++;
}

void sched_prio_diff(sched_prio_counts *out, const sched_prio_counts *now,
		     const sched_prio_counts *base)
{
	/* now's list extends base's (entries are only appended) */
	*out = *now;
	for (int i = 0; i < base->n && i < now->n; i++)
		out->requests[i] -= base->requests[i];
	out->other -= base->other;
}

/* ---- the recent window ---------------------------------------------------- */

typedef struct win_snap {
	double t_ms;
	sched_stats st;
} win_snap;

struct sched_window {
	win_snap snap[SCHED_WIN_SLOTS]; /* ring, oldest at head */
	int head, n;
};

sched_window *sched_window_new(double t_start_ms)
{
	sched_window *w = calloc(1, sizeof(*w));
	if (w) {
		w->snap[0].t_ms = t_start_ms; /* zeros: nothing happened before the start */
		w->n = 1;
	}
	return w;
}

void sched_window_free(sched_window *w)
{
	free(w);
}

static uint64_t activity(const sched_stats *s)
{
	return s->steps + s->requests_done + s->requests_err + s->requests_cancelled;
}

void sched_window_tick(sched_window *w, const sched_stats *cur, double t_ms)
{
	if (!w)
		return;
	win_snap *last = &w->snap[(w->head + w->n - 1) % SCHED_WIN_SLOTS];
	if (w->n == 1 && activity(cur) == 0) {
		last->t_ms = t_ms; /* nothing happened yet: the start is now */
		return;
	}
	if (t_ms - last->t_ms < SCHED_WIN_SLOT_S * 1e3)
		return;
	if (w->n == SCHED_WIN_SLOTS) {
		w->head = (w->head + 1) % SCHED_WIN_SLOTS;
		w->n--;
	}
	win_snap *s = &w->snap[(w->head + w->n) % SCHED_WIN_SLOTS];
	s->t_ms = t_ms;
	s->st = *cur;
	w->n++;
}

/* The newest snapshot at least SCHED_WIN_S old, else the oldest one. */
static const win_snap *window_base(const sched_window *w, double t_ms)
{
	const win_snap *b = &w->snap[w->head];
	for (int i = 1; i < w->n; i++) {
		const win_snap *s = &w->snap[(w->head + i) % SCHED_WIN_SLOTS];
		if (t_ms - s->t_ms >= SCHED_WIN_S * 1e3)
			b = s;
	}
	return b;
}

void sched_window_recent(const sched_window *w, const sched_stats *cur, double t_ms,
			 sched_stats *out, double *span_s)
{
	static const sched_stats zero;
	const win_snap *b = w ? window_base(w, t_ms) : NULL;
	const sched_stats *base = b ? &b->st : &zero;
	*span_s = b ? (t_ms - b->t_ms) / 1e3 : 0;
	*out = *cur;
	out->steps = cur->steps - base->steps;
	out->step_seqs = cur->step_seqs - base->step_seqs;
	out->max_step_seqs = 0;
	for (int k = 0; k < SCHED_HIST_N; k++) {
		out->step_hist[k] = cur->step_hist[k] - base->step_hist[k];
		if (out->step_hist[k])
			out->max_step_seqs = k;
	}
	out->step_ms = cur->step_ms - base->step_ms;
	out->tokens_gen = cur->tokens_gen - base->tokens_gen;
	out->tokens_prompt = cur->tokens_prompt - base->tokens_prompt;
	out->tokens_drafted = cur->tokens_drafted - base->tokens_drafted;
	out->tokens_accepted = cur->tokens_accepted - base->tokens_accepted;
	out->requests_done = cur->requests_done - base->requests_done;
	out->requests_err = cur->requests_err - base->requests_err;
	out->requests_cancelled = cur->requests_cancelled - base->requests_cancelled;
	out->preemptions = cur->preemptions - base->preemptions;
	out->agent_cap_waits = cur->agent_cap_waits - base->agent_cap_waits;
	sched_lat_diff(&out->queue, &cur->queue, &base->queue);
	sched_lat_diff(&out->first, &cur->first, &base->first);
	sched_lat_diff(&out->tpot, &cur->tpot, &base->tpot);
	sched_lat_diff(&out->total, &cur->total, &base->total);
	sched_prio_diff(&out->prio, &cur->prio, &base->prio);
}
