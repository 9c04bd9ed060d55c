#include "probe.h"
#include "common/clock.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "variant.h"

/* Threads whose MAC counts are summed (a pool larger than this reports only
 * its first PROBE_MAX_THREADS threads' work). */
#define PROBE_MAX_THREADS 256
/* Each thread reads a page-aligned share of the buffer. */
#define PROBE_PAGE 4096
/* int8 multiply-adds per iteration of the scalar MAC loop. */
#define PROBE_REF_MACS_PER_ITER 64

/* Scalar references of the probe loops. */
static double probe_read_ref(const void *buf, size_t bytes)
{
	const uint64_t *p = buf;
	uint64_t acc = 0;
	for (size_t i = 0; i < bytes / sizeof(uint64_t); i++)
		acc ^= p[i];
	return (double)acc; /* keeps the loads alive */
}

static long long probe_macs_ref(long long iters)
{
	volatile int32_t acc = 0;
	for (long long i = 0; i < iters * PROBE_REF_MACS_PER_ITER; i++)
		acc += (int8_t)i * (int8_t)(i >> 3);
	(void)acc; /* volatile: the loop is the point, not the sum */
	return iters * PROBE_REF_MACS_PER_ITER;
}

/* Per-ISA loops, chosen once per measurement (kernels/variant.h). The read
 * loop has no AVX-512 variant: AVX2 loads already saturate memory. */
static const struct probe_variants {
	double (*read[KERN_ISA_COUNT])(const void *buf, size_t bytes);
	long long (*macs[KERN_ISA_COUNT])(long long iters);
} probe_variants = {
	.read = {[KERN_ISA_REF] = probe_read_ref, [KERN_ISA_AVX2] = kern_probe_read_avx2},
	.macs = {[KERN_ISA_REF] = probe_macs_ref, [KERN_ISA_AVX2] = kern_probe_macs_avx2,
		 [KERN_ISA_AVX512] = kern_probe_macs_avx512},
};

struct read_task {
	double (*read)(const void *buf, size_t bytes);
	const char *buf;
	size_t bytes;
	volatile double sink;
};

static void read_run(void *p, int ith, int nth)
{
	struct read_task *t = p;
	const size_t share = t->bytes / (size_t)nth / PROBE_PAGE * PROBE_PAGE;
	double r = t->read(t->buf + share * ith, share);
	if (ith == 0)
		t->sink = r;
}

double kern_probe_read_gbs(kern_pool *pool, size_t bytes, int reps)
{
	char *buf = aligned_alloc(PROBE_PAGE, bytes);
	if (!buf)
		return -ENOMEM;
	memset(buf, 1, bytes); /* fault every page in before timing */
	struct read_task t = {.buf = buf, .bytes = bytes};
	KERN_VARIANT_PICK(t.read, probe_variants.read, kern_isa_detect());
	double best = 0;
	for (int r = 0; r < reps; r++) {
		double t0 = clock_mono_s();
		kern_pool_run(pool, read_run, &t);
		double gbs = (double)(bytes / (size_t)kern_pool_size(pool) / PROBE_PAGE * PROBE_PAGE) *
			     kern_pool_size(pool) /
			     (clock_mono_s() - t0) / 1e9;
		best = gbs > best ? gbs : best;
	}
	free(buf);
	return best;
}

struct mac_task {
	long long (*macs_fn)(long long iters);
	long long iters;
	long long macs[PROBE_MAX_THREADS];
};

static void mac_run(void *p, int ith, int nth)
{
	(void)nth;
	struct mac_task *t = p;
	const long long m = t->macs_fn(t->iters);
	if (ith < PROBE_MAX_THREADS)
		t->macs[ith] = m;
}

double kern_probe_int8_gmacs(kern_pool *pool, kern_isa isa, double seconds)
{
	struct mac_task t = {.iters = 1000};
	KERN_VARIANT_PICK(t.macs_fn, probe_variants.macs, kern_isa_clamp(isa));
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
	for (int i = 0; i < kern_pool_size(pool) && i < PROBE_MAX_THREADS; i++)
		total += t.macs[i];
	return (double)total / dt / 1e9;
}
