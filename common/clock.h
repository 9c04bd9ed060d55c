/* The one monotonic clock every module reads (CLOCK_MONOTONIC): immune to
 * wall-clock jumps, comparable across threads of one process. Wall time
 * (log stamps, file ages) is not this clock's job. */
#ifndef HERD_COMMON_CLOCK_H
#define HERD_COMMON_CLOCK_H

#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Milliseconds on CLOCK_MONOTONIC (fractional). Thread-safe. */
static inline double clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Seconds on the same clock. */
static inline double clock_mono_s(void)
{
	return clock_mono_ms() * 1e-3;
}

#ifdef __cplusplus
}
#endif
#endif
