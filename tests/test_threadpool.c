/* Thread pool: every thread runs each region exactly once, regions don't
 * overlap, and pools of any size (including 1) work. */
#include <setjmp.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool_sizes)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
