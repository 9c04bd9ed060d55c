/* Request merging: identical deterministic requests in flight at the same
 * time run once. A merge group holds the key of one deterministic request
 * (broker/respcache.h: the same key as the response cache), the request
 * that runs the sequence (the leader) and the requests that wait for its
 * answer (the followers). The scheduler (broker/scheduler.c, "request
 * merging") fans the leader's pieces and done out to the followers, and
 * when the leader goes away (cancel, deadline, closed connection) with
 * followers left it hands the sequence to the first follower
 * (merge_promote), so cancelling one requester never cancels the others.
 *
 * The table is used by one scheduler thread only; requests are opaque
 * pointers here. Lookups hash the key's hash and compare the whole key
 * material, so a hash collision never merges different requests.
 */
#ifndef HERD_BROKER_MERGE_H
#define HERD_BROKER_MERGE_H

#include "broker/respcache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct merge_group {
	struct merge_group *next; /* hash chain */
	respcache_key key;        /* owned */
	void *lead;               /* the request running the sequence */
	void **fol;               /* followers in join order [n_fol] */
	int n_fol, cap_fol;
} merge_group;

typedef struct merge_table {
	merge_group **tab; /* [cap], chained */
	int cap, n;
} merge_table;

void merge_table_fini(merge_table *t); /* frees every group; accepts a zeroed table */
/* The group of key k, or NULL. */
merge_group *merge_find(const merge_table *t, const respcache_key *k);
/* A new group led by lead; takes *k's material (k is zeroed). Returns NULL
 * on ENOMEM (k then stays the caller's). */
merge_group *merge_open(merge_table *t, respcache_key *k, void *lead);
/* Adds follower f. Returns 0 or -ENOMEM. */
int merge_join(merge_group *g, void *f);
/* Removes f from the followers (no effect when it is not one). */
void merge_leave(merge_group *g, void *f);
/* Makes the first follower the leader and returns it (NULL: none). */
void *merge_promote(merge_group *g);
/* Removes g from t and frees it (its followers must be gone). */
void merge_close(merge_table *t, merge_group *g);

#ifdef __cplusplus
}
#endif
#endif
