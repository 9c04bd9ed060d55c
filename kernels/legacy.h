/* Internal declarations of the "legacy" weight types: F32, F16, BF16, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 (ggml block layouts, see quant_blocks.h).
 *
 * Shapes: n counts elements (floats), a multiple of the type's block size
 * (32 for the Q types, 1 for F32/F16/BF16). Rows are contiguous blocks.
 * All functions are pure (no state, no allocation): thread-safe.
 *
 * The _avx2 / _avx512 variants must only be called when kern_isa_detect()
 * reports at least that ISA; kern_ops_init_legacy picks them. Quantizers with
 * a SIMD variant produce output bit-identical to the _ref one; SIMD dot
 * products differ from _ref only by float summation order.
 */
#ifndef HERD_KERNELS_LEGACY_H
#define HERD_KERNELS_LEGACY_H

#include "kernels.h"

/* ---- reference dequantize (kern_to_float_fn) ---- */
void kern_dequant_f32_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_f16_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_bf16_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q4_0_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q4_1_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q5_0_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q5_1_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q8_0_ref(const void *restrict x, float *restrict y, int64_t n);
void kern_dequant_q8_1_ref(const void *restrict x, float *restrict y, int64_t n);

/* ---- reference quantize (kern_from_float_fn), ggml's quantize_row_*_ref ---- */
void kern_quant_f32_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_f16_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_bf16_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q4_0_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q4_1_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q5_0_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q5_1_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_0_ref(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_1_ref(const float *restrict x, void *restrict y, int64_t n);

/* ---- SIMD activation quantizers (bit-identical to _ref) ---- */
void kern_quant_q8_0_avx2(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_1_avx2(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_f16_avx2(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_bf16_avx2(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_0_avx512(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_q8_1_avx512(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_f16_avx512(const float *restrict x, void *restrict y, int64_t n);
void kern_quant_bf16_avx512(const float *restrict x, void *restrict y, int64_t n);

/* ---- dot products (kern_vec_dot_fn): x weight row, y activation row ----
 * The AVX2 Q8_0 dot assumes quants in [-127, 127] (all any quantizer
 * emits); the AVX-512 ones are exact for every byte value. */
void kern_dot_f32_f32_ref(int n, float *restrict s, const void *restrict x,
                          const void *restrict y);
void kern_dot_f16_f16_ref(int n, float *restrict s, const void *restrict x,
                          const void *restrict y);
void kern_dot_bf16_bf16_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);
void kern_dot_q4_0_q8_0_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);
void kern_dot_q4_1_q8_1_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);
void kern_dot_q5_0_q8_0_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);
void kern_dot_q5_1_q8_1_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);
void kern_dot_q8_0_q8_0_ref(int n, float *restrict s, const void *restrict x,
                            const void *restrict y);

void kern_dot_f32_f32_avx2(int n, float *restrict s, const void *restrict x,
                           const void *restrict y);
void kern_dot_f16_f16_avx2(int n, float *restrict s, const void *restrict x,
                           const void *restrict y);
void kern_dot_bf16_bf16_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_q4_0_q8_0_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_q4_1_q8_1_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_q5_0_q8_0_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_q5_1_q8_1_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_q8_0_q8_0_avx2(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);

void kern_dot_f32_f32_avx512(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_f16_f16_avx512(int n, float *restrict s, const void *restrict x,
                             const void *restrict y);
void kern_dot_bf16_bf16_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);
void kern_dot_q4_0_q8_0_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);
void kern_dot_q4_1_q8_1_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);
void kern_dot_q5_0_q8_0_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);
void kern_dot_q5_1_q8_1_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);
void kern_dot_q8_0_q8_0_avx512(int n, float *restrict s, const void *restrict x,
                               const void *restrict y);

/* Q8_1 is an activation format in ggml (no weight dot there); herd offers a
 * reference dot so every supported type has one. */
void kern_dot_q8_1_q8_1_ref(int n, float *restrict s, const void *restrict x,
			    const void *restrict y);

#endif
