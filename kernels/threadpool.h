/* A fixed pool of worker threads for data-parallel kernels.
 *
 * kern_pool_run() runs fn(arg, ith, nth) once on each of the nth threads (the
 * caller is thread 0) and returns when all have finished. Work is split by
 * ith inside fn. Calls to kern_pool_run on one pool must not overlap (one
 * driver thread per pool); different pools are independent.
 *
 * CPU affinity: a pool made by kern_pool_create_pinned pins thread i to
 * cpus[i % n_cpus]; the driver (thread 0, the caller of kern_pool_run) is
 * pinned to cpus[0] at its first kern_pool_run, so the thread that drives
 * the pool (the broker's scheduler thread) is pinned with it.
 */
#ifndef HERD_KERNELS_THREADPOOL_H
#define HERD_KERNELS_THREADPOOL_H

#include <stddef.h>

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

#define KERN_CPU_MAX 1024 /* CPU numbers 0 .. KERN_CPU_MAX-1 */

/* Parses a CPU list like "0-3,8" (Linux cpulist syntax: numbers and
 * ranges A-B, comma-separated; spaces around entries allowed) into cpus[]
 * in ascending order, each once; *n = the count. Returns 0, or
 * HERD_E_FORMAT with a message in err naming the bad entry (not a number
 * or range, a range backwards, a CPU >= KERN_CPU_MAX, an empty list). */
int kern_cpulist_parse(const char *s, int *cpus, int max, int *n, char *err, size_t errlen);
/* Writes cpus[0..n) (ascending) as a cpulist ("0-3,8") into buf. */
void kern_cpulist_format(const int *cpus, int n, char *buf, size_t len);
/* The online CPUs (/sys/devices/system/cpu/online; else 0..nprocs-1). */
int kern_cpus_online(int *cpus, int max, int *n);
/* Checks every cpus[i] is online. 0, or HERD_E_INVAL with a message naming
 * the first CPU that is not and the online list. */
int kern_cpus_check_online(const int *cpus, int n, char *err, size_t errlen);

/* kern_pool_create, then pins the workers (see above); n_threads <= 0 means
 * one per CPU of the list. n_cpus == 0: no pinning. Returns 0, -ENOMEM, or
 * -errno of pthread_create / pthread_setaffinity_np (-EINVAL: a CPU this
 * process may not use, -EPERM). */
int kern_pool_create_pinned(kern_pool **out, int n_threads, const int *cpus, int n_cpus);
/* Pins the calling thread to cpu. 0 or -errno. */
int kern_pin_self(int cpu);

#ifdef __cplusplus
}
#endif
#endif
