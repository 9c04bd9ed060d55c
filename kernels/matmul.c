#include "matmul.h"

#include "gemm.h"

#include <stdatomic.h>
#include <string.h>

/* Granularity of the rows handed to a thread: one row group of the
 * interleaved types (16 rows of a 2048-wide Q4_0 matrix = 18 KiB, which
 * stays in L1 while it is applied to every batch row). */
#define MATMUL_CHUNK_ROWS 16 /* == KERN_R: one row group of the interleaved types */
_Static_assert(MATMUL_CHUNK_ROWS == KERN_R, "a chunk is one row group");

size_t kern_matmul_xq_size(kern_type wtype, int64_t K, int n_b)
{
	const kern_type_traits *tt = kern_type_info(wtype);
	if (!tt)
		return 0;
	if (kern_type_is_r16(wtype))
		return kern_act_stride(wtype, K) * (size_t)n_b;
	return kern_row_size(tt->vec_dot_type, K) * (size_t)n_b;
}

struct quant_task {
	kern_from_float_fn fn;
	kern_act_fn act;
	const float *x;
	int64_t K;
	int n_b;
	char *xq;
	size_t row_bytes;
};

static void quant_task_run(void *p, int ith, int nth)
{
	const struct quant_task *t = p;
	for (int b = ith; b < t->n_b; b += nth) {
		if (t->act)
			t->act(t->x + (int64_t)b * t->K, t->K, 1, t->xq + (size_t)b * t->row_bytes);
		else
			t->fn(t->x + (int64_t)b * t->K, t->xq + (size_t)b * t->row_bytes, t->K);
	}
}

void kern_matmul_quantize(const kern_ops *ops, kern_pool *pool, kern_type wtype,
			  const float *x, int64_t K, int n_b, void *xq)
{
	const kern_type vdt = kern_type_info(wtype)->vec_dot_type;
	struct quant_task t = {.fn = ops->from_float[vdt], .x = x, .K = K, .n_b = n_b, .xq = xq,
				.row_bytes = kern_row_size(vdt, K)};
	if (kern_type_is_r16(wtype)) {
		t.act = ops->act[wtype];
		t.row_bytes = kern_act_stride(wtype, K);
	}
	if (vdt == KERN_TYPE_F32) {
		memcpy(xq, x, (size_t)n_b * K * sizeof(float));
		return;
	}
	if (n_b < 4)
		quant_task_run(&t, 0, 1);
	else
		kern_pool_run(pool, quant_task_run, &t);
}

struct mm_task {
	const kern_ops *ops;
	const kern_matmul_job *jobs;
	int n_jobs;
	int64_t K;
	const char *xq;
	size_t xq_row;
	int n_b;
	int64_t chunk_rows; /* a multiple of KERN_R */
	int64_t total_chunks;
	int64_t job_chunks[KERN_MATMUL_MAX];
	atomic_llong next;
};

static void mm_chunk(const struct mm_task *t, const kern_matmul_job *j, int64_t r0, int64_t r1)
{
	if (kern_type_is_r16(j->wtype)) {
		/* r0 and r1 are multiples of 16 (n_rows is, for these types) */
		const size_t group = kern_row_size(j->wtype, t->K) * KERN_R;
		for (int64_t r = r0; r < r1; r += KERN_R)
			t->ops->gemm[j->wtype](t->K, (const char *)j->w + (size_t)(r / KERN_R) * group, t->xq,
					       t->xq_row, t->n_b, j->y + r, j->ldy);
		return;
	}
	const kern_vec_dot_fn dot = t->ops->vec_dot[j->wtype];
	const kern_vec_dot4_fn dot4 = t->ops->vec_dot4[j->wtype];
	const size_t wrow = kern_row_size(j->wtype, t->K);
	const char *w = j->w;
	int b = 0;
	for (; dot4 && b + 4 <= t->n_b; b += 4) { /* weights decoded once for 4 rows */
		const char *xb = t->xq + (size_t)b * t->xq_row;
		float *yb = j->y + (int64_t)b * j->ldy;
		for (int64_t r = r0; r < r1; r++)
			dot4((int)t->K, &yb[r], j->ldy, w + (size_t)r * wrow, xb, t->xq_row);
	}
	for (; b < t->n_b; b++) {
		const void *xb = t->xq + (size_t)b * t->xq_row;
		float *yb = j->y + (int64_t)b * j->ldy;
		for (int64_t r = r0; r < r1; r++)
			dot((int)t->K, &yb[r], w + (size_t)r * wrow, xb);
	}
}

static void mm_task_run(void *p, int ith, int nth)
{
	(void)ith;
	(void)nth;
	struct mm_task *t = p;
	for (;;) {
		int64_t c = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
		if (c >= t->total_chunks)
			break;
		int jx = 0;
		while (c >= t->job_chunks[jx]) {
			c -= t->job_chunks[jx];
			jx++;
		}
		const kern_matmul_job *j = &t->jobs[jx];
		const int64_t r0 = c * t->chunk_rows;
		const int64_t r1 = r0 + t->chunk_rows < j->n_rows ? r0 + t->chunk_rows : j->n_rows;
		mm_chunk(t, j, r0, r1);
	}
}

void kern_matmul(const kern_ops *ops, kern_pool *pool, const kern_matmul_job *jobs,
		 int n_jobs, int64_t K, const void *xq, int n_b)
{
	struct mm_task t = {.ops = ops, .jobs = jobs, .n_jobs = n_jobs, .K = K, .xq = xq, .n_b = n_b};
	t.xq_row = kern_type_is_r16(jobs[0].wtype) ? kern_act_stride(jobs[0].wtype, K)
						 : kern_row_size(kern_type_info(jobs[0].wtype)->vec_dot_type, K);
	/* Hand each thread long contiguous runs of rows (about 8 per thread):
	 * the weights are a stream the hardware prefetchers follow only while
	 * a thread's reads stay sequential; 8 grabs each still balance a noisy
	 * machine. */
	int64_t rows = 0;
	for (int i = 0; i < n_jobs; i++)
		rows += jobs[i].n_rows;
	t.chunk_rows = rows / ((int64_t)kern_pool_size(pool) * 8) / MATMUL_CHUNK_ROWS * MATMUL_CHUNK_ROWS;
	if (t.chunk_rows < MATMUL_CHUNK_ROWS)
		t.chunk_rows = MATMUL_CHUNK_ROWS;
	for (int i = 0; i < n_jobs; i++) {
		t.job_chunks[i] = (jobs[i].n_rows + t.chunk_rows - 1) / t.chunk_rows;
		t.total_chunks += t.job_chunks[i];
	}
	atomic_init(&t.next, 0);
	kern_pool_run(pool, mm_task_run, &t);
}
