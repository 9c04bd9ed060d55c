/* Machine probes for benchmarks: the read bandwidth and the int8
 * multiply-add rate this process can reach with a pool's threads, so a
 * benchmark can report what fraction of the machine's limits it uses.
 * Measurements, not assumptions: they vary with load on a shared machine. */
#ifndef HERD_KERNELS_PROBE_H
#define HERD_KERNELS_PROBE_H

#include <stddef.h>

#include "kernels.h"
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Streams a buffer of `bytes` (much larger than the caches) reps times with
 * every pool thread reading its share; returns the best GB/s (1e9 bytes/s)
 * of the reps, or a negative error (-ENOMEM). */
double kern_probe_read_gbs(kern_pool *pool, size_t bytes, int reps);

/* Runs a register-only int8 dot-product loop (VNNI on AVX-512, maddubs on
 * AVX2, scalar otherwise) on every pool thread for about `seconds`; returns
 * int8 multiply-adds per second in units of 1e9. */
double kern_probe_int8_gmacs(kern_pool *pool, kern_isa isa, double seconds);

/* Per-thread loops of the ISA variants (internal to the probe). */
double kern_probe_read_avx2(const void *buf, size_t bytes);
long long kern_probe_macs_avx2(long long iters);
long long kern_probe_macs_avx512(long long iters);

#ifdef __cplusplus
}
#endif
#endif
