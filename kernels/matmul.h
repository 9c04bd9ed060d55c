/* Matrix multiplication of quantized weights with a batch of activations.
 *
 * Shapes: a weight matrix W has n_rows rows of K elements (GGUF ne[0] = K,
 * ne[1] = n_rows), each row kern_row_size(wtype, K) bytes. Activations X are
 * n_b rows of K floats. The result is Y[b][r] = dot(W[r], X[b]), stored at
 * y[b * ldy + r].
 *
 * X is quantized once to the weight type's vec_dot_type (kern_matmul_quantize)
 * and shared by all threads and by all matrices that read the same input
 * (Q/K/V, gate/up), which kern_matmul runs in one parallel region.
 */
#ifndef HERD_KERNELS_MATMUL_H
#define HERD_KERNELS_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KERN_MATMUL_MAX 3

typedef struct kern_matmul_job {
	kern_type wtype;
	const void *w;     /* n_rows x K in wtype */
	int64_t n_rows;
	float *y;          /* [n_b][ldy], first n_rows of each row written */
	int64_t ldy;
} kern_matmul_job;

/* Bytes kern_matmul_quantize needs to hold n_b rows of K activations for a
 * weight of type wtype. */
size_t kern_matmul_xq_size(kern_type wtype, int64_t K, int n_b);

/* xq = X (n_b x K floats) quantized for wtype's dot products; row b starts
 * at xq + b * kern_row_size(vec_dot_type, K). Runs on the pool. */
void kern_matmul_quantize(const kern_ops *ops, kern_pool *pool, kern_type wtype,
			  const float *x, int64_t K, int n_b, void *xq);

/* Runs n_jobs (<= KERN_MATMUL_MAX) matrices that share the same K and the
 * same quantized input xq (all jobs' wtypes must share a vec_dot_type). */
void kern_matmul(const kern_ops *ops, kern_pool *pool, const kern_matmul_job *jobs,
		 int n_jobs, int64_t K, const void *xq, int n_b);

#ifdef __cplusplus
}
#endif
#endif
