/* Element-wise and row operations of the LLaMA forward pass, f32.
 * Numerics follow ggml's CPU backend (sums of squares in double, RoPE angles
 * by repeated multiplication) so results track llama.cpp closely.
 * Pure functions over caller buffers: thread-safe. */
#ifndef HERD_KERNELS_OPS_H
#define HERD_KERNELS_OPS_H

#include <stdint.h>

#include "quant_blocks.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], i < n. y may alias x. */
void kern_rmsnorm(float *y, const float *x, const float *w, int n, float eps);

/* Rotates x in place: n_heads heads of head_dim floats, first n_rot dims of
 * each head, adjacent pairs (x[2i], x[2i+1]) by angle pos * base^(-2i/n_rot)
 * (ggml's "normal" RoPE, used by LLaMA GGUF files). */
void kern_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float base);

/* x[i] = exp(x[i] - max) / sum, in place, n > 0. */
void kern_softmax(float *x, int n);

/* g[i] = silu(g[i]) * u[i] (SwiGLU), silu(v) = v / (1 + exp(-v)). */
void kern_swiglu(float *g, const float *u, int n);

/* y[i] += x[i]. */
void kern_add(float *y, const float *x, int n);

/* KL(P || Q) of P = softmax(ref), Q = softmax(ours) over n logits, in
 * double: how the fixtures and `herd logits --kl-ref` compare logits. */
double kern_kl_logits(const float *ref, const float *ours, int n);

/* Scalar references of the kern_ops attention helpers; SIMD variants carry
 * the _avx2 / _avx512 suffix. */
/* dot of f32 x with f16 y, accumulated in f32 (n any). */
float kern_dot_f32_f16_ref(const float *x, const kern_fp16_t *y, int n);
/* y[i] += a * x[i] with x in f16. */
void kern_axpy_f16_ref(float *y, float a, const kern_fp16_t *x, int n);
/* y[i] = f16(x[i]). */
void kern_f32_to_f16_row_ref(kern_fp16_t *y, const float *x, int n);

/* Attention over quantized KV rows (kern_ops.kv_scores / kv_values; hd a
 * multiple of 32, rows of one head slice each, stride bytes apart):
 *   scores: sc[j] = dot(q, K row j), j < n, q the query head in Q8_0
 *           (integer dot products per block, as llama.cpp's vec_dot);
 *   values: o[i] += sum_j (w[j] * d_jb) * q_ji, j < n, i < hd: the rows
 *           dequantized and weighted, accumulated in f32.
 * Suffix: the K/V row type (q8_0, q4_0) and the ISA. */
void kern_kv_scores_q8_0_ref(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_scores_q4_0_ref(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_values_q8_0_ref(int hd, const float *w, const void *v, size_t stride, int n, float *o);
void kern_kv_values_q4_0_ref(int hd, const float *w, const void *v, size_t stride, int n, float *o);
void kern_kv_scores_q8_0_avx2(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_scores_q4_0_avx2(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_values_q8_0_avx2(int hd, const float *w, const void *v, size_t stride, int n, float *o);
void kern_kv_values_q4_0_avx2(int hd, const float *w, const void *v, size_t stride, int n, float *o);
void kern_kv_scores_q8_0_avx512(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_scores_q4_0_avx512(int hd, const void *q, const void *k, size_t stride, int n, float *sc);
void kern_kv_values_q8_0_avx512(int hd, const float *w, const void *v, size_t stride, int n, float *o);
void kern_kv_values_q4_0_avx512(int hd, const float *w, const void *v, size_t stride, int n, float *o);

float kern_dot_f32_f16_avx2(const float *x, const kern_fp16_t *y, int n);
void kern_axpy_f16_avx2(float *y, float a, const kern_fp16_t *x, int n);
void kern_f32_to_f16_row_avx2(kern_fp16_t *y, const float *x, int n);
float kern_dot_f32_f16_avx512(const float *x, const kern_fp16_t *y, int n);
void kern_axpy_f16_avx512(float *y, float a, const kern_fp16_t *x, int n);

#ifdef __cplusplus
}
#endif
#endif
