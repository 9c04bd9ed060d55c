/* Variants of the K-quant family (Q2_K..Q6_K, Q8_K). Weight quantizers are
 * always the reference (reference quality, not speed); the Q8_K activation
 * quantizer and the dots have SIMD versions. */
#include "kquant.h"

#include "variant.h"

static const kern_type_variants kquant_variants[] = {
	{.type = KERN_TYPE_Q2_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q2_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q2_k_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q2_k_q8_k_ref, [KERN_ISA_AVX2] = kern_dot_q2_k_q8_k_avx2,
		     [KERN_ISA_AVX512] = kern_dot_q2_k_q8_k_avx512}},
	{.type = KERN_TYPE_Q3_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q3_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q3_k_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q3_k_q8_k_ref, [KERN_ISA_AVX2] = kern_dot_q3_k_q8_k_avx2,
		     [KERN_ISA_AVX512] = kern_dot_q3_k_q8_k_avx512}},
	{.type = KERN_TYPE_Q4_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q4_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q4_k_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q4_k_q8_k_ref, [KERN_ISA_AVX2] = kern_dot_q4_k_q8_k_avx2,
		     [KERN_ISA_AVX512] = kern_dot_q4_k_q8_k_avx512}},
	{.type = KERN_TYPE_Q5_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q5_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q5_k_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q5_k_q8_k_ref, [KERN_ISA_AVX2] = kern_dot_q5_k_q8_k_avx2,
		     [KERN_ISA_AVX512] = kern_dot_q5_k_q8_k_avx512}},
	{.type = KERN_TYPE_Q6_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q6_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q6_k_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q6_k_q8_k_ref, [KERN_ISA_AVX2] = kern_dot_q6_k_q8_k_avx2,
		     [KERN_ISA_AVX512] = kern_dot_q6_k_q8_k_avx512}},
	{.type = KERN_TYPE_Q8_K,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q8_k_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q8_k_ref, [KERN_ISA_AVX2] = kern_quant_q8_k_avx2,
			[KERN_ISA_AVX512] = kern_quant_q8_k_avx512},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q8_k_q8_k_ref}},
};

void kern_ops_init_kquant(kern_ops *ops, kern_isa isa)
{
	kern_ops_fill_types(ops, kquant_variants, sizeof(kquant_variants) / sizeof(kquant_variants[0]),
			    isa);
}
