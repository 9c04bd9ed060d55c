/* Spin-then-sleep thread pool.
 *
 * A decode step issues a few hundred parallel regions per token, so waking
 * workers through a condition variable (tens of microseconds each) would
 * cost more than the work. Workers instead spin on a generation counter for
 * a short while after each region and only then sleep on a futex; the
 * driver wakes sleepers with FUTEX_WAKE when it publishes a new region.
 */
#include "threadpool.h"

#include <errno.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Spin iterations (each a pause, ~10-40 ns) before a worker sleeps, and how
 * often a spinner yields the CPU so an oversubscribed machine (more threads
 * than free cores) still makes progress. */
#define POOL_SPIN_ITERS 100000
#define POOL_YIELD_EVERY 128

struct pool_worker {
	kern_pool *pool;
	pthread_t thread;
	int ith;
};

struct kern_pool {
	int n_threads;
	struct pool_worker *workers; /* n_threads - 1 of them; the caller is thread 0 */
	kern_task_fn fn;
	void *arg;
	_Alignas(64) atomic_uint gen;     /* bumped once per region (futex word) */
	_Alignas(64) atomic_int pending;  /* workers still running this region */
	_Alignas(64) atomic_int sleepers; /* workers inside futex wait */
	atomic_int stop;
};

static long futex(atomic_uint *addr, int op, unsigned val)
{
	return syscall(SYS_futex, (unsigned *)addr, op, val, NULL, NULL, 0);
}

static void *pool_worker_main(void *p)
{
	struct pool_worker *w = p;
	kern_pool *pool = w->pool;
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen) {
			if (++spins < POOL_SPIN_ITERS) {
				if (spins % POOL_YIELD_EVERY == 0)
					sched_yield();
				else
					_mm_pause();
				continue;
			}
			atomic_fetch_add(&pool->sleepers, 1);
			if (atomic_load(&pool->gen) == seen)
				futex(&pool->gen, FUTEX_WAIT_PRIVATE, seen);
			atomic_fetch_sub(&pool->sleepers, 1);
			spins = 0;
		}
		seen = g;
		if (atomic_load_explicit(&pool->stop, memory_order_acquire))
			break;
		pool->fn(pool->arg, w->ith, pool->n_threads);
		atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
	}
	return NULL;
}

static int pool_online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int kern_pool_create(kern_pool **out, int n_threads)
{
	*out = NULL;
	if (n_threads <= 0)
		n_threads = pool_online_cpus();
	kern_pool *pool = aligned_alloc(64, (sizeof(*pool) + 63) / 64 * 64);
	if (!pool)
		return -ENOMEM;
	*pool = (kern_pool){.n_threads = n_threads};
	atomic_init(&pool->gen, 0);
	atomic_init(&pool->pending, 0);
	atomic_init(&pool->sleepers, 0);
	atomic_init(&pool->stop, 0);
	int err = 0, started = 0;
	if (n_threads > 1) {
		pool->workers = calloc((size_t)n_threads - 1, sizeof(*pool->workers));
		if (!pool->workers) {
			err = -ENOMEM;
			goto fail;
		}
	}
	for (int i = 1; i < n_threads; i++) {
		struct pool_worker *w = &pool->workers[i - 1];
		w->pool = pool;
		w->ith = i;
		int rc = pthread_create(&w->thread, NULL, pool_worker_main, w);
		if (rc) {
			err = -rc;
			goto fail;
		}
		started++;
	}
	*out = pool;
	return 0;
fail:
	pool->n_threads = started + 1;
	kern_pool_destroy(pool);
	return err;
}

void kern_pool_destroy(kern_pool *pool)
{
	if (!pool)
		return;
	atomic_store_explicit(&pool->stop, 1, memory_order_release);
	atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
	futex(&pool->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
	for (int i = 1; i < pool->n_threads; i++)
		pthread_join(pool->workers[i - 1].thread, NULL);
	free(pool->workers);
	free(pool);
}

int kern_pool_size(const kern_pool *pool)
{
	return pool ? pool->n_threads : 1;
}

void kern_pool_run(kern_pool *pool, kern_task_fn fn, void *arg)
{
	if (!pool || pool->n_threads == 1) {
		fn(arg, 0, 1);
		return;
	}
	pool->fn = fn;
	pool->arg = arg;
	atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
	/* seq_cst pairs with the worker's sleepers++ / gen re-check (Dekker):
	 * either it sees the new gen or we see it asleep. */
	atomic_fetch_add(&pool->gen, 1);
	if (atomic_load(&pool->sleepers) > 0)
		futex(&pool->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
	fn(arg, 0, pool->n_threads);
	for (int spins = 1; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
		if (spins % POOL_YIELD_EVERY == 0)
			sched_yield();
		else
			_mm_pause();
	}
}
