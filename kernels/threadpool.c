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
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "herd/error.h"

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
	int pin_driver;     /* >= 0: pin the driver to this CPU at its first run */
	pthread_t driver;   /* the thread pinned, once driver_pinned */
	int driver_pinned;
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
	pthread_setname_np(pthread_self(), "herd-pool"); /* for top -H, /proc/PID/task */
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
	*pool = (kern_pool){.n_threads = n_threads, .pin_driver = -1};
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
	if (pool && pool->pin_driver >= 0 &&
	    (!pool->driver_pinned || !pthread_equal(pool->driver, pthread_self()))) {
		pool->driver = pthread_self();
		pool->driver_pinned = 1;
		kern_pin_self(pool->pin_driver); /* checked when the pool was made */
	}
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

/* ---- CPU affinity ----------------------------------------------------------- */

static int pin_thread(pthread_t t, int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(t, sizeof(set), &set);
}

int kern_pin_self(int cpu)
{
	return pin_thread(pthread_self(), cpu);
}

int kern_pool_create_pinned(kern_pool **out, int n_threads, const int *cpus, int n_cpus)
{
	if (n_cpus <= 0 || !cpus)
		return kern_pool_create(out, n_threads);
	int rc = kern_pool_create(out, n_threads > 0 ? n_threads : n_cpus);
	if (rc)
		return rc;
	kern_pool *pool = *out;
	/* the driver's CPU is tried now on this thread too, so a CPU this
	 * process may not use fails here, not silently at the first step */
	cpu_set_t old;
	if ((rc = -pthread_getaffinity_np(pthread_self(), sizeof(old), &old)) == 0 &&
	    (rc = kern_pin_self(cpus[0])) == 0)
		rc = -pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
	for (int i = 1; !rc && i < pool->n_threads; i++)
		rc = pin_thread(pool->workers[i - 1].thread, cpus[i % n_cpus]);
	if (rc) {
		kern_pool_destroy(pool);
		*out = NULL;
		return rc;
	}
	pool->pin_driver = cpus[0];
	return 0;
}

/* One entry "A" or "A-B" of a cpulist into [*lo, *hi]. 0 or -1. */
static int cpulist_entry(const char *p, size_t len, long *lo, long *hi)
{
	char buf[32], *end;
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, p, len);
	buf[len] = 0;
	if (buf[0] < '0' || buf[0] > '9')
		return -1;
	*lo = *hi = strtol(buf, &end, 10);
	if (*end == '-') {
		if (end[1] < '0' || end[1] > '9')
			return -1;
		*hi = strtol(end + 1, &end, 10);
	}
	return *end ? -1 : 0;
}

int kern_cpulist_parse(const char *s, int *cpus, int max, int *n, char *err, size_t errlen)
{
	static const char *const what = "a CPU number or a range like 0-3";
	unsigned char seen[KERN_CPU_MAX] = {0};
	*n = 0;
	for (const char *p = s ? s : ""; *p;) {
		while (*p == ' ')
			p++;
		size_t len = strcspn(p, ",");
		size_t tl = len;
		while (tl > 0 && p[tl - 1] == ' ')
			tl--;
		long lo, hi;
		if (cpulist_entry(p, tl, &lo, &hi))
			return herd_errf(err, errlen, HERD_E_FORMAT, "entry '%.*s' is not %s",
					 (int)(tl < 32 ? tl : 32), p, what);
		if (hi < lo)
			return herd_errf(err, errlen, HERD_E_FORMAT, "entry '%.*s': the range is backwards",
					 (int)tl, p);
		if (hi >= KERN_CPU_MAX)
			return herd_errf(err, errlen, HERD_E_FORMAT, "entry '%.*s': CPU %ld is above %d",
					 (int)tl, p, hi, KERN_CPU_MAX - 1);
		for (long c = lo; c <= hi; c++)
			seen[c] = 1;
		p += len;
		if (*p == ',' && !*++p)
			return herd_errf(err, errlen, HERD_E_FORMAT, "empty entry at the end of '%s'", s);
	}
	for (int c = 0; c < KERN_CPU_MAX; c++)
		if (seen[c] && *n < max)
			cpus[(*n)++] = c;
	if (*n == 0)
		return herd_errf(err, errlen, HERD_E_FORMAT, "the CPU list is empty");
	return 0;
}

void kern_cpulist_format(const int *cpus, int n, char *buf, size_t len)
{
	size_t w = 0;
	buf[0] = 0;
	for (int i = 0; i < n && w < len;) {
		int j = i;
		while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
			j++;
		int r = j > i ? snprintf(buf + w, len - w, "%s%d-%d", w ? "," : "", cpus[i], cpus[j])
			      : snprintf(buf + w, len - w, "%s%d", w ? "," : "", cpus[i]);
		if (r < 0)
			break;
		w += (size_t)r;
		i = j + 1;
	}
}

int kern_cpus_online(int *cpus, int max, int *n)
{
	char line[4096] = "", err[128];
	FILE *f = fopen("/sys/devices/system/cpu/online", "r");
	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
		line[strcspn(line, "\n")] = 0;
		if (line[0] && kern_cpulist_parse(line, cpus, max, n, err, sizeof(err)) == 0)
			return 0;
	}
	const int k = pool_online_cpus();
	for (*n = 0; *n < k && *n < max; (*n)++)
		cpus[*n] = *n;
	return 0;
}

int kern_cpus_check_online(const int *cpus, int n, char *err, size_t errlen)
{
	int on[KERN_CPU_MAX];
	int n_on = 0;
	kern_cpus_online(on, KERN_CPU_MAX, &n_on);
	for (int i = 0; i < n; i++) {
		int ok = 0;
		for (int j = 0; j < n_on && !ok; j++)
			ok = on[j] == cpus[i];
		if (!ok) {
			char list[256];
			kern_cpulist_format(on, n_on, list, sizeof(list));
			return herd_errf(err, errlen, HERD_E_INVAL, "CPU %d is not online (online: %s)",
					 cpus[i], list);
		}
	}
	return 0;
}
