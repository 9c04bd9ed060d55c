/* The scheduler's latency histograms, percentiles and recent window.
 *
 * sched_lat: a fixed-memory log-linear histogram (HDR style) of latencies
 * in milliseconds: bucket 0 holds values under 1 microsecond, then every
 * power of two of microseconds (1 us .. 2^SCHED_LAT_OCT us, about 268 s) is
 * cut into SCHED_LAT_SUB equal buckets, the last bucket also holding
 * everything above. A percentile is read by nearest rank and interpolated
 * inside its bucket, so its relative error is below 1/SCHED_LAT_SUB (12.5%)
 * and percentiles of one histogram are monotone (p50 <= p95 <= p99 <= max).
 *
 * sched_window: snapshots of the cumulative statistics every
 * SCHED_WIN_SLOT_S seconds; the recent view is the cumulative figures now
 * minus the snapshot taken at least SCHED_WIN_S seconds ago (or since the
 * start), so `herdctl batch` and a dashboard show current values as well
 * as totals since start. Not thread-safe: the scheduler keeps it under its
 * mutex.
 */
#ifndef HERD_BROKER_SCHED_STATS_H
#define HERD_BROKER_SCHED_STATS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SCHED_LAT_SUB 8   /* buckets per power of two */
#define SCHED_LAT_OCT 28  /* powers of two above 1 us */
#define SCHED_LAT_N (1 + SCHED_LAT_OCT * SCHED_LAT_SUB)

typedef struct sched_lat {
	uint64_t n;
	double sum_ms, max_ms;
	uint64_t hist[SCHED_LAT_N];
} sched_lat;

/* Adds one value (negative counts as 0). */
void sched_lat_add(sched_lat *l, double ms);
/* Bucket b covers [lo, hi) milliseconds (the last one is open above). */
void sched_lat_bucket(int b, double *lo, double *hi);
/* The q-quantile (0 < q <= 1) of l in ms; 0 when l is empty. */
double sched_lat_pct(const sched_lat *l, double q);
/* out = now - base (base taken earlier from the same histogram); out->max_ms
 * is the upper bound of the highest non-empty bucket, capped by now->max_ms. */
void sched_lat_diff(sched_lat *out, const sched_lat *now, const sched_lat *base);

#define SCHED_PRIO_N 8 /* distinct priorities counted one by one; others summed */

/* Requests ended (done or err) by the priority they ran at. */
typedef struct sched_prio_counts {
	int n;                      /* distinct priorities in prio[] */
	int prio[SCHED_PRIO_N];
	uint64_t requests[SCHED_PRIO_N];
	uint64_t other;             /* requests of further priorities */
} sched_prio_counts;

void sched_prio_count(sched_prio_counts *p, int prio);
/* out = now - base. */
void sched_prio_diff(sched_prio_counts *out, const sched_prio_counts *now,
		     const sched_prio_counts *base);

#define SCHED_WIN_S 60      /* the recent view's length */
#define SCHED_WIN_SLOT_S 5  /* snapshot interval */
#define SCHED_WIN_SLOTS (SCHED_WIN_S / SCHED_WIN_SLOT_S + 1)

struct sched_stats;
typedef struct sched_window sched_window;

/* NULL on out of memory (then there is no recent view: totals only). */
sched_window *sched_window_new(double t_start_ms);
void sched_window_free(sched_window *w); /* accepts NULL */
/* Takes a snapshot of cur when the last one is SCHED_WIN_SLOT_S old. */
void sched_window_tick(sched_window *w, const struct sched_stats *cur, double t_ms);
/* out = the counters and histograms of cur accumulated since the snapshot
 * at least SCHED_WIN_S seconds old (or since the start); *span_s = the
 * seconds that covers. Gauges (waiting, running, kv pages) are cur's. */
void sched_window_recent(const sched_window *w, const struct sched_stats *cur, double t_ms,
			 struct sched_stats *out, double *span_s);

#ifdef __cplusplus
}
#endif
#endif
