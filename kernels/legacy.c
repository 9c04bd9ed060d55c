/* Variants of the legacy types: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1.
 * Weight quantizers and dequantizers are the reference only (reference
 * quality; not a hot path); activation quantizers and dots have SIMD
 * variants. */
#include "legacy.h"

#include "variant.h"

static const kern_type_variants legacy_variants[] = {
	{.type = KERN_TYPE_F32,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_f32_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_f32_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_f32_f32_ref, [KERN_ISA_AVX2] = kern_dot_f32_f32_avx2, [KERN_ISA_AVX512] = kern_dot_f32_f32_avx512}},
	{.type = KERN_TYPE_F16,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_f16_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_f16_ref, [KERN_ISA_AVX2] = kern_quant_f16_avx2, [KERN_ISA_AVX512] = kern_quant_f16_avx512},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_f16_f16_ref, [KERN_ISA_AVX2] = kern_dot_f16_f16_avx2, [KERN_ISA_AVX512] = kern_dot_f16_f16_avx512}},
	{.type = KERN_TYPE_BF16,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_bf16_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_bf16_ref, [KERN_ISA_AVX2] = kern_quant_bf16_avx2, [KERN_ISA_AVX512] = kern_quant_bf16_avx512},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_bf16_bf16_ref, [KERN_ISA_AVX2] = kern_dot_bf16_bf16_avx2, [KERN_ISA_AVX512] = kern_dot_bf16_bf16_avx512}},
	{.type = KERN_TYPE_Q4_0,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q4_0_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q4_0_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q4_0_q8_0_ref, [KERN_ISA_AVX2] = kern_dot_q4_0_q8_0_avx2, [KERN_ISA_AVX512] = kern_dot_q4_0_q8_0_avx512}},
	{.type = KERN_TYPE_Q4_1,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q4_1_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q4_1_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q4_1_q8_1_ref, [KERN_ISA_AVX2] = kern_dot_q4_1_q8_1_avx2, [KERN_ISA_AVX512] = kern_dot_q4_1_q8_1_avx512}},
	{.type = KERN_TYPE_Q5_0,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q5_0_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q5_0_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q5_0_q8_0_ref, [KERN_ISA_AVX2] = kern_dot_q5_0_q8_0_avx2, [KERN_ISA_AVX512] = kern_dot_q5_0_q8_0_avx512}},
	{.type = KERN_TYPE_Q5_1,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q5_1_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q5_1_ref},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q5_1_q8_1_ref, [KERN_ISA_AVX2] = kern_dot_q5_1_q8_1_avx2, [KERN_ISA_AVX512] = kern_dot_q5_1_q8_1_avx512}},
	{.type = KERN_TYPE_Q8_0,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q8_0_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q8_0_ref, [KERN_ISA_AVX2] = kern_quant_q8_0_avx2, [KERN_ISA_AVX512] = kern_quant_q8_0_avx512},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q8_0_q8_0_ref, [KERN_ISA_AVX2] = kern_dot_q8_0_q8_0_avx2, [KERN_ISA_AVX512] = kern_dot_q8_0_q8_0_avx512}},
	{.type = KERN_TYPE_Q8_1,
	 .to_float = {[KERN_ISA_REF] = kern_dequant_q8_1_ref},
	 .from_float = {[KERN_ISA_REF] = kern_quant_q8_1_ref, [KERN_ISA_AVX2] = kern_quant_q8_1_avx2, [KERN_ISA_AVX512] = kern_quant_q8_1_avx512},
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_q8_1_q8_1_ref}},
};

void kern_ops_init_legacy(kern_ops *ops, kern_isa isa)
{
	kern_ops_fill_types(ops, legacy_variants, sizeof(legacy_variants) / sizeof(legacy_variants[0]),
			    isa);
}
