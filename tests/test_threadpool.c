/* Thread pool: every thread runs each region exactly once, regions don't
 * overlap, and pools of any size (including 1) work; a pinned pool runs
 * every thread, the driver included, on its CPUs; CPU lists parse. */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels/threadpool.h"

struct count_task {
	atomic_int calls;
	atomic_int mask;
	int nth_seen;
	int data[1000];
};

static void count_run(void *p, int ith, int nth)
{
	struct count_task *t = p;
	atomic_fetch_add(&t->calls, 1);
	atomic_fetch_or(&t->mask, 1 << ith);
	t->nth_seen = nth;
	for (int i = ith; i < 1000; i += nth)
		t->data[i]++;
}

static void check_pool(int n)
{
	kern_pool *pool;
	assert_int_equal(kern_pool_create(&pool, n), 0);
	const int nth = kern_pool_size(pool);
	assert_true(nth >= 1);
	if (n > 0)
		assert_int_equal(nth, n);
	struct count_task t = {0};
	for (int r = 0; r < 2000; r++) {
		atomic_store(&t.calls, 0);
		atomic_store(&t.mask, 0);
		kern_pool_run(pool, count_run, &t);
		assert_int_equal(atomic_load(&t.calls), nth);
		assert_int_equal(atomic_load(&t.mask), (1 << nth) - 1);
		assert_int_equal(t.nth_seen, nth);
		if (r == 1000)
			usleep(20000); /* let the workers fall asleep, then wake them */
	}
	for (int i = 0; i < 1000; i++)
		assert_int_equal(t.data[i], 2000);
	kern_pool_destroy(pool);
}

static void test_pool_sizes(void **state)
{
	(void)state;
	check_pool(1);
	check_pool(2);
	check_pool(5);
	check_pool(0); /* all online CPUs */
	kern_pool_destroy(NULL);
}

/* Each thread records the CPU it ran on. */
static void where_run(void *p, int ith, int nth)
{
	(void)nth;
	((int *)p)[ith] = sched_getcpu();
}

static void test_pool_pinned(void **state)
{
	(void)state;
	cpu_set_t old, one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_getaffinity(0, sizeof(old), &old) || !CPU_ISSET(0, &old) ||
	    sched_setaffinity(0, sizeof(one), &one) || sched_setaffinity(0, sizeof(old), &old))
		skip(); /* may not pin here */
	const int cpus[] = {0};
	kern_pool *pool = NULL;
	assert_int_equal(kern_pool_create_pinned(&pool, 3, cpus, 1), 0);
	assert_int_equal(kern_pool_size(pool), 3);
	for (int r = 0; r < 20; r++) {
		int where[3] = {-1, -1, -1};
		kern_pool_run(pool, where_run, where);
		for (int i = 0; i < 3; i++)
			assert_int_equal(where[i], 0);
	}
	kern_pool_destroy(pool);
	assert_int_equal(sched_setaffinity(0, sizeof(old), &old), 0);
	/* a CPU this process may not use fails at create, not later */
	const int bad[] = {KERN_CPU_MAX - 1};
	if (!CPU_ISSET(KERN_CPU_MAX - 1, &old))
		assert_true(kern_pool_create_pinned(&pool, 2, bad, 1) < 0);
}

static void test_cpulist(void **state)
{
	(void)state;
	int c[KERN_CPU_MAX], n;
	char err[256], buf[64];
	assert_int_equal(kern_cpulist_parse("0-3,8, 2 ,10-11", c, KERN_CPU_MAX, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 7);
	kern_cpulist_format(c, n, buf, sizeof(buf));
	assert_string_equal(buf, "0-3,8,10-11");
	assert_true(kern_cpulist_parse("1,a-2", c, KERN_CPU_MAX, &n, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "'a-2'"));
	assert_true(kern_cpulist_parse("5-2", c, KERN_CPU_MAX, &n, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "'5-2'"));
	assert_true(kern_cpulist_parse("1-", c, KERN_CPU_MAX, &n, err, sizeof(err)) < 0);
	assert_true(kern_cpulist_parse("", c, KERN_CPU_MAX, &n, err, sizeof(err)) < 0);
	int on[KERN_CPU_MAX];
	assert_int_equal(kern_cpus_online(on, KERN_CPU_MAX, &n), 0);
	assert_true(n >= 1);
	assert_int_equal(kern_cpus_check_online(on, n, err, sizeof(err)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool_sizes),
					   cmocka_unit_test(test_pool_pinned),
					   cmocka_unit_test(test_cpulist)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
