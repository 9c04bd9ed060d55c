/* Variants of the i-quant family. Weight quantizers are the reference
 * (IQ4_NL, IQ4_XS, IQ3_S only: the types llama-quantize makes without an
 * importance matrix); the dots have AVX2 and AVX-512 versions. */
#include "iquant.h"

#include "variant.h"

#define IQ_ENTRY(T, N, VD, QUANT, DOT4_512)                                                                \
	{.type = KERN_TYPE_##T,                                                                  \
	 .to_float = {[KERN_ISA_REF] = kern_dequant_##N##_ref},                                  \
	 .from_float = {[KERN_ISA_REF] = QUANT},                                                 \
	 .vec_dot = {[KERN_ISA_REF] = kern_dot_##N##_##VD##_ref, [KERN_ISA_AVX2] = kern_dot_##N##_##VD##_avx2, \
		     [KERN_ISA_AVX512] = kern_dot_##N##_##VD##_avx512},                                      \
	 .vec_dot4 = {[KERN_ISA_REF] = kern_dot4_##N##_##VD##_ref, [KERN_ISA_AVX2] = kern_dot4_##N##_##VD##_avx2, \
		      [KERN_ISA_AVX512] = DOT4_512}}

static const kern_type_variants iquant_variants[] = {
	IQ_ENTRY(IQ4_NL, iq4_nl, q8_0, kern_quant_iq4_nl_ref, NULL),
	IQ_ENTRY(IQ4_XS, iq4_xs, q8_k, kern_quant_iq4_xs_ref, kern_dot4_iq4_xs_q8_k_avx512),
	IQ_ENTRY(IQ3_S, iq3_s, q8_k, kern_quant_iq3_s_ref, NULL),
	IQ_ENTRY(IQ3_XXS, iq3_xxs, q8_k, NULL, NULL),
	IQ_ENTRY(IQ2_S, iq2_s, q8_k, NULL, NULL),
	IQ_ENTRY(IQ2_XS, iq2_xs, q8_k, NULL, NULL),
	IQ_ENTRY(IQ2_XXS, iq2_xxs, q8_k, NULL, NULL),
	IQ_ENTRY(IQ1_S, iq1_s, q8_k, NULL, NULL),
	IQ_ENTRY(IQ1_M, iq1_m, q8_k, NULL, NULL),
};
#undef IQ_ENTRY

void kern_ops_init_iquant(kern_ops *ops, kern_isa isa)
{
	kern_ops_fill_types(ops, iquant_variants, sizeof(iquant_variants) / sizeof(iquant_variants[0]),
			    isa);
}
