#include "probe.h"
#include "common/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


struct read_task {
	const char *buf;
	size_t bytes;
	volatile double sink;
};

static void read_run(void *p, int ith, int nth)
{
	struct read_task *t = p;
	const size_t share = t->bytes / (size_t)nth / 4096 * 4096;
	double r = kern_isa_detect() >= KERN_ISA_AVX2 ? kern_probe_read_avx2(t->buf + share * ith, share) : 0;
	if (ith == 0)
		t->sink = r;
}

double kern_probe_read_gbs(kern_pool *pool, size_t bytes, int reps)
{
	char *buf = aligned_alloc(4096, bytes);
	if (!buf)
		return -ENOMEM;
	memset(buf, 1, bytes); /* fault every page in before timing */
	struct read_task t = {buf, bytes, 0};
	double best = 0;
	for (int r = 0; r < reps; r++) {
		double t0 = clock_mono_s();
		kern_pool_run(pool, read_run, &t);
		double gbs = (double)(bytes / (size_t)kern_pool_size(pool) / 4096 * 4096) * kern_pool_size(pool) /
			     (clock_mono_s() - t0) / 1e9;
		best = gbs > best ? gbs : best;
	}
	free(buf);
	return best;
}

struct mac_task {
	kern_isa isa;
	long long iters;
	long long macs[256];
};

static void mac_run(void *p, int ith, int nth)
{
	(void)nth;
	struct mac_task *t = p;
	long long m;
	if (t->isa >= KERN_ISA_AVX512)
		m = kern_probe_macs_avx512(t->iters);
	else if (t->isa >= KERN_ISA_AVX2)
		m = kern_probe_macs_avx2(t->iters);
	else {
		volatile int32_t acc = 0;
		for (long long i = 0; i < t->iters * 64; i++)
			acc += (int8_t)i * (int8_t)(i >> 3);
		(void)acc; /* volatile: the loop is the point, not the sum */
		m = t->iters * 64;
	}
	if (ith < 256)
		t->macs[ith] = m;
}

double kern_probe_int8_gmacs(kern_pool *pool, kern_isa isa, double seconds)
{
	const kern_isa best_isa = kern_isa_detect();
	struct mac_task t = {.isa = isa > best_isa ? best_isa : isa, .iters = 1000};
	/* grow the loop until one run lasts long enough to time */
	double dt = 0;
	for (;;) {
		double t0 = clock_mono_s();
		kern_pool_run(pool, mac_run, &t);
		dt = clock_mono_s() - t0;
		if (dt >= seconds || t.iters > (1ll << 40))
			break;
		t.iters *= dt > 0 && seconds / dt < 16 ? 2 : 8;
	}
	long long total = 0;
	for (int i = 0; i < kern_pool_size(pool) && i < 256; i++)
		total += t.macs[i];
	return (double)total / dt / 1e9;
}
