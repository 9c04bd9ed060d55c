/* A fixed pool of worker threads for data-parallel kernels.
 *
 * kern_pool_run() runs fn(arg, ith, nth) once on each of the nth threads (the
 * caller is thread 0) and returns when all have finished. Work is split by
 * ith inside fn. Calls to kern_pool_run on one pool must not overlap (one
 * driver thread per pool); different pools are independent.
 */
#ifndef HERD_KERNELS_THREADPOOL_H
#define HERD_KERNELS_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kern_pool kern_pool;
typedef void (*kern_task_fn)(void *arg, int ith, int nth);

/* n_threads <= 0 means one per online CPU. Returns 0, -ENOMEM or -errno of
 * pthread_create. */
int kern_pool_create(kern_pool **out, int n_threads);
void kern_pool_destroy(kern_pool *pool); /* accepts NULL; joins the workers */
int kern_pool_size(const kern_pool *pool);
void kern_pool_run(kern_pool *pool, kern_task_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
