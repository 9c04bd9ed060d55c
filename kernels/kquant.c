/* Fills the kern_ops entries of the K-quant family (Q2_K..Q6_K, Q8_K). */
#include "kquant.h"

/* isa must be one the CPU supports (kern_ops_init clamps it). Each entry
 * gets the best variant at or below isa; types without a SIMD variant keep
 * the reference. Weight quantizers are always the reference (reference
 * quality, not speed); the Q8_K activation quantizer has SIMD versions. */
void kern_ops_init_kquant(kern_ops *ops, kern_isa isa)
{
	ops->to_float[KERN_TYPE_Q2_K] = kern_dequant_q2_k_ref;
	ops->to_float[KERN_TYPE_Q3_K] = kern_dequant_q3_k_ref;
	ops->to_float[KERN_TYPE_Q4_K] = kern_dequant_q4_k_ref;
	ops->to_float[KERN_TYPE_Q5_K] = kern_dequant_q5_k_ref;
	ops->to_float[KERN_TYPE_Q6_K] = kern_dequant_q6_k_ref;
	ops->to_float[KERN_TYPE_Q8_K] = kern_dequant_q8_k_ref;

	ops->from_float[KERN_TYPE_Q2_K] = kern_quant_q2_k_ref;
	ops->from_float[KERN_TYPE_Q3_K] = kern_quant_q3_k_ref;
	ops->from_float[KERN_TYPE_Q4_K] = kern_quant_q4_k_ref;
	ops->from_float[KERN_TYPE_Q5_K] = kern_quant_q5_k_ref;
	ops->from_float[KERN_TYPE_Q6_K] = kern_quant_q6_k_ref;
	ops->from_float[KERN_TYPE_Q8_K] = kern_quant_q8_k_ref;

	ops->vec_dot[KERN_TYPE_Q2_K] = kern_dot_q2_k_q8_k_ref;
	ops->vec_dot[KERN_TYPE_Q3_K] = kern_dot_q3_k_q8_k_ref;
	ops->vec_dot[KERN_TYPE_Q4_K] = kern_dot_q4_k_q8_k_ref;
	ops->vec_dot[KERN_TYPE_Q5_K] = kern_dot_q5_k_q8_k_ref;
	ops->vec_dot[KERN_TYPE_Q6_K] = kern_dot_q6_k_q8_k_ref;
	ops->vec_dot[KERN_TYPE_Q8_K] = kern_dot_q8_k_q8_k_ref;

	if (isa >= KERN_ISA_AVX2) {
		ops->from_float[KERN_TYPE_Q8_K] = kern_quant_q8_k_avx2;
		ops->vec_dot[KERN_TYPE_Q2_K] = kern_dot_q2_k_q8_k_avx2;
		ops->vec_dot[KERN_TYPE_Q3_K] = kern_dot_q3_k_q8_k_avx2;
		ops->vec_dot[KERN_TYPE_Q4_K] = kern_dot_q4_k_q8_k_avx2;
		ops->vec_dot[KERN_TYPE_Q5_K] = kern_dot_q5_k_q8_k_avx2;
		ops->vec_dot[KERN_TYPE_Q6_K] = kern_dot_q6_k_q8_k_avx2;
	}
	if (isa >= KERN_ISA_AVX512) {
		ops->from_float[KERN_TYPE_Q8_K] = kern_quant_q8_k_avx512;
		ops->vec_dot[KERN_TYPE_Q2_K] = kern_dot_q2_k_q8_k_avx512;
		ops->vec_dot[KERN_TYPE_Q3_K] = kern_dot_q3_k_q8_k_avx512;
		ops->vec_dot[KERN_TYPE_Q4_K] = kern_dot_q4_k_q8_k_avx512;
		ops->vec_dot[KERN_TYPE_Q5_K] = kern_dot_q5_k_q8_k_avx512;
		ops->vec_dot[KERN_TYPE_Q6_K] = kern_dot_q6_k_q8_k_avx512;
	}
}
