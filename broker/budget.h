/* Per-uid input budgets: how much frame work the broker's loop thread does
 * for one local user, so that no user (however many connections it opens)
 * can keep the loop, and with it the CPU the compute threads share, busy
 * with frames that cost the broker and give the attacker nothing back
 * (a flood of cancels, pings or rejected requests).
 *
 * One token bucket per uid: it holds up to `rate` units and refills at
 * `rate` units a second; a frame costs 1 unit plus 1 per KiB of its body
 * (limits.frame_budget_per_s, broker/config.h). A frame is taken while the
 * bucket is positive, so a frame larger than the whole bucket still passes
 * (the bucket goes negative and the uid waits it off). When the bucket is
 * empty the loop stops reading that user's connections until it refills:
 * the peer's own socket buffer then fills and its writes block, and
 * nothing queues inside the broker.
 *
 * So that one connection of a uid cannot starve the uid's others (its
 * frames would take the whole refill), every connection also has its own
 * share: a bucket of rate / (the uid's connections) units a second, used
 * first. A frame passes when either the connection's share or the uid's
 * bucket is positive, so a uid gets at most twice its rate, and every
 * connection at least its share.
 *
 * Entries are shared by the connections of one uid (refcounted) and stay
 * at one index while referenced, so a connection keeps its index.
 * Loop thread only. */
#ifndef HERD_BROKER_BUDGET_H
#define HERD_BROKER_BUDGET_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct budget {
	uid_t uid;
	int refs;      /* connections using it; 0: free slot */
	double tokens; /* may go negative after a large frame */
	double t_last; /* monotonic ms of the last refill */
} budget;

/* One connection's own share (zero-initialised is fine: it fills up). */
typedef struct budget_share {
	double tokens;
	double t_last;
} budget_share;

typedef struct budget_tab {
	budget *v;
	int n, cap;
} budget_tab;

/* The bucket of uid (made full at now when new). Returns its index or
 * -ENOMEM. */
int budget_attach(budget_tab *t, uid_t uid, double rate, double now);
/* A connection of the bucket at idx is gone. */
void budget_detach(budget_tab *t, int idx);
/* The units a frame of len body bytes costs. */
double budget_frame_cost(size_t len);
/* Refills the connection's share own and the uid's bucket idx up to now;
 * 1 when either holds a positive amount (a frame may be taken), else 0.
 * rate <= 0: unlimited (always 1). */
int budget_ready(budget_tab *t, int idx, budget_share *own, double rate, double now);
/* Takes cost units from own, or else from the uid's bucket, when one is
 * positive: returns 1; else 0 and takes nothing. */
int budget_take(budget_tab *t, int idx, budget_share *own, double cost, double rate, double now);
void budget_tab_free(budget_tab *t);

#ifdef __cplusplus
}
#endif
#endif
