/* Dispatch for the legacy types: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1. */
#include "legacy.h"

/* One row per type: reference functions and the SIMD overrides (NULL where a
 * type has no variant at that ISA, so the lower one stays). */
typedef struct legacy_entry {
	kern_type type;
	kern_to_float_fn to_float;
	kern_from_float_fn from_float[3]; /* by kern_isa */
	kern_vec_dot_fn vec_dot[3];       /* by kern_isa */
} legacy_entry;

static const legacy_entry legacy_table[] = {
	{KERN_TYPE_F32, kern_dequant_f32_ref,
	 {kern_quant_f32_ref, NULL, NULL},
	 {kern_dot_f32_f32_ref, kern_dot_f32_f32_avx2, kern_dot_f32_f32_avx512}},
	{KERN_TYPE_F16, kern_dequant_f16_ref,
	 {kern_quant_f16_ref, kern_quant_f16_avx2, kern_quant_f16_avx512},
	 {kern_dot_f16_f16_ref, kern_dot_f16_f16_avx2, kern_dot_f16_f16_avx512}},
	{KERN_TYPE_BF16, kern_dequant_bf16_ref,
	 {kern_quant_bf16_ref, kern_quant_bf16_avx2, kern_quant_bf16_avx512},
	 {kern_dot_bf16_bf16_ref, kern_dot_bf16_bf16_avx2, kern_dot_bf16_bf16_avx512}},
	{KERN_TYPE_Q4_0, kern_dequant_q4_0_ref,
	 {kern_quant_q4_0_ref, NULL, NULL},
	 {kern_dot_q4_0_q8_0_ref, kern_dot_q4_0_q8_0_avx2, kern_dot_q4_0_q8_0_avx512}},
	{KERN_TYPE_Q4_1, kern_dequant_q4_1_ref,
	 {kern_quant_q4_1_ref, NULL, NULL},
	 {kern_dot_q4_1_q8_1_ref, kern_dot_q4_1_q8_1_avx2, kern_dot_q4_1_q8_1_avx512}},
	{KERN_TYPE_Q5_0, kern_dequant_q5_0_ref,
	 {kern_quant_q5_0_ref, NULL, NULL},
	 {kern_dot_q5_0_q8_0_ref, kern_dot_q5_0_q8_0_avx2, kern_dot_q5_0_q8_0_avx512}},
	{KERN_TYPE_Q5_1, kern_dequant_q5_1_ref,
	 {kern_quant_q5_1_ref, NULL, NULL},
	 {kern_dot_q5_1_q8_1_ref, kern_dot_q5_1_q8_1_avx2, kern_dot_q5_1_q8_1_avx512}},
	{KERN_TYPE_Q8_0, kern_dequant_q8_0_ref,
	 {kern_quant_q8_0_ref, kern_quant_q8_0_avx2, kern_quant_q8_0_avx512},
	 {kern_dot_q8_0_q8_0_ref, kern_dot_q8_0_q8_0_avx2, kern_dot_q8_0_q8_0_avx512}},
	{KERN_TYPE_Q8_1, kern_dequant_q8_1_ref,
	 {kern_quant_q8_1_ref, kern_quant_q8_1_avx2, kern_quant_q8_1_avx512},
	 {kern_dot_q8_1_q8_1_ref, NULL, NULL}},
};

void kern_ops_init_legacy(kern_ops *ops, kern_isa isa)
{
	/* Never hand out a variant this CPU cannot run, even if called directly. */
	const kern_isa best = kern_isa_detect();
	if (isa > best)
		isa = best;
	if (isa < KERN_ISA_REF)
		isa = KERN_ISA_REF;

	for (size_t k = 0; k < sizeof(legacy_table) / sizeof(legacy_table[0]); k++) {
		const legacy_entry *e = &legacy_table[k];
		ops->to_float[e->type] = e->to_float;
		ops->from_float[e->type] = e->from_float[KERN_ISA_REF];
		ops->vec_dot[e->type] = e->vec_dot[KERN_ISA_REF];
		for (int v = KERN_ISA_REF + 1; v <= (int)isa; v++) {
			if (e->from_float[v])
				ops->from_float[e->type] = e->from_float[v];
			if (e->vec_dot[v])
				ops->vec_dot[e->type] = e->vec_dot[v];
		}
	}
}
