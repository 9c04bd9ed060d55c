/* Type traits, and kern_ops_init: the top of kernels/' dispatch, which asks
 * each family to fill its own entries (every family chooses its variants
 * the same way, kernels/variant.h; CPU detection is kernels/cpu.c). */
#include "kernels.h"

#include "gemm.h"

static const kern_type_traits type_traits[KERN_TYPE_COUNT] = {
	[KERN_TYPE_F32] = {.name = "F32", .blck_size = 1, .type_size = sizeof(float),
		.is_quantized = 0, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_F16] = {.name = "F16", .blck_size = 1, .type_size = sizeof(kern_fp16_t),
		.is_quantized = 0, .vec_dot_type = KERN_TYPE_F16},
	[KERN_TYPE_BF16] = {.name = "BF16", .blck_size = 1, .type_size = sizeof(kern_bf16_t),
		.is_quantized = 0, .vec_dot_type = KERN_TYPE_BF16},
	[KERN_TYPE_Q4_0] = {.name = "Q4_0", .blck_size = KERN_QK4_0, .type_size = sizeof(kern_block_q4_0),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_0},
	[KERN_TYPE_Q4_1] = {.name = "Q4_1", .blck_size = KERN_QK4_1, .type_size = sizeof(kern_block_q4_1),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_1},
	[KERN_TYPE_Q5_0] = {.name = "Q5_0", .blck_size = KERN_QK5_0, .type_size = sizeof(kern_block_q5_0),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_0},
	[KERN_TYPE_Q5_1] = {.name = "Q5_1", .blck_size = KERN_QK5_1, .type_size = sizeof(kern_block_q5_1),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_1},
	[KERN_TYPE_Q8_0] = {.name = "Q8_0", .blck_size = KERN_QK8_0, .type_size = sizeof(kern_block_q8_0),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_0},
	[KERN_TYPE_Q8_1] = {.name = "Q8_1", .blck_size = KERN_QK8_1, .type_size = sizeof(kern_block_q8_1),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_1},
	[KERN_TYPE_Q2_K] = {.name = "Q2_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q2_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_Q3_K] = {.name = "Q3_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q3_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_Q4_K] = {.name = "Q4_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q4_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_Q5_K] = {.name = "Q5_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q5_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_Q6_K] = {.name = "Q6_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q6_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_Q8_K] = {.name = "Q8_K", .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_q8_K),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K},
	[KERN_TYPE_IQ4_NL] = {.name = "IQ4_NL", .blck_size = KERN_QK4_NL, .type_size = sizeof(kern_block_iq4_nl),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_0},
#define IQ_TRAITS(T, N) [KERN_TYPE_##T] = {.name = #T, .blck_size = KERN_QK_K, .type_size = sizeof(kern_block_##N), \
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_K}
	IQ_TRAITS(IQ4_XS, iq4_xs), IQ_TRAITS(IQ3_S, iq3_s), IQ_TRAITS(IQ3_XXS, iq3_xxs),
	IQ_TRAITS(IQ2_S, iq2_s), IQ_TRAITS(IQ2_XS, iq2_xs), IQ_TRAITS(IQ2_XXS, iq2_xxs),
	IQ_TRAITS(IQ1_S, iq1_s), IQ_TRAITS(IQ1_M, iq1_m),
#undef IQ_TRAITS
	/* Sizes per row and block, amortized over the 16-row group: a matrix of
	 * these types has exactly the bytes of its plain counterpart. */
	[KERN_TYPE_Q4_0_R16] = {.name = "Q4_0_R16", .blck_size = KERN_QK4_0, .type_size = sizeof(kern_block_q4_0),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q4_0_R16},
	[KERN_TYPE_Q8_0_R16] = {.name = "Q8_0_R16", .blck_size = KERN_QK8_0, .type_size = sizeof(kern_block_q8_0),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q8_0_R16},
	/* Q4_K_R16 stores its scales unpacked: more bytes per row and
	 * super-block than Q4_K's (kernels/gemm.h). */
	[KERN_TYPE_Q4_K_R16] = {.name = "Q4_K_R16", .blck_size = KERN_QK_K, .type_size = KERN_Q4_K_R16_ROW_BYTES,
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q4_K_R16},
	/* Q6_K_R16 stores its quants unpacked to bytes (kernels/gemm.h). */
	[KERN_TYPE_Q6_K_R16] = {.name = "Q6_K_R16", .blck_size = KERN_QK_K, .type_size = KERN_Q6_K_R16_ROW_BYTES,
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_Q6_K_R16},
	[KERN_TYPE_HQ4_32] = {.name = "HQ4_32", .blck_size = 32, .type_size = KERN_HQ_BLOCK_BYTES(4, 32),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ5_32] = {.name = "HQ5_32", .blck_size = 32, .type_size = KERN_HQ_BLOCK_BYTES(5, 32),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ6_32] = {.name = "HQ6_32", .blck_size = 32, .type_size = KERN_HQ_BLOCK_BYTES(6, 32),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ7_32] = {.name = "HQ7_32", .blck_size = 32, .type_size = KERN_HQ_BLOCK_BYTES(7, 32),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ8_32] = {.name = "HQ8_32", .blck_size = 32, .type_size = KERN_HQ_BLOCK_BYTES(8, 32),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ4_43] = {.name = "HQ4_43", .blck_size = 43, .type_size = KERN_HQ_BLOCK_BYTES(4, 43),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ5_43] = {.name = "HQ5_43", .blck_size = 43, .type_size = KERN_HQ_BLOCK_BYTES(5, 43),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ6_43] = {.name = "HQ6_43", .blck_size = 43, .type_size = KERN_HQ_BLOCK_BYTES(6, 43),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ7_43] = {.name = "HQ7_43", .blck_size = 43, .type_size = KERN_HQ_BLOCK_BYTES(7, 43),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
	[KERN_TYPE_HQ8_43] = {.name = "HQ8_43", .blck_size = 43, .type_size = KERN_HQ_BLOCK_BYTES(8, 43),
		.is_quantized = 1, .vec_dot_type = KERN_TYPE_F32},
};

const kern_type_traits *kern_type_info(int t)
{
	if (t < 0 || t >= KERN_TYPE_COUNT || type_traits[t].name == NULL)
		return NULL;
	return &type_traits[t];
}

const char *kern_type_name(int t)
{
	const kern_type_traits *tt = kern_type_info(t);
	return tt ? tt->name : "unknown";
}

size_t kern_row_size(int t, int64_t n)
{
	const kern_type_traits *tt = kern_type_info(t);
	if (!tt || n < 0 || n % tt->blck_size != 0)
		return 0;
	return (size_t)(n / tt->blck_size) * tt->type_size;
}

void kern_ops_init(kern_ops *ops, kern_isa isa)
{
	isa = kern_isa_clamp(isa);
	*ops = (kern_ops){.isa = isa};
	kern_ops_init_legacy(ops, isa);
	kern_ops_init_kquant(ops, isa);
	kern_ops_init_iquant(ops, isa);
	kern_ops_init_gemm(ops, isa);
	kern_ops_init_attn(ops, isa);
	kern_ops_init_herd(ops, isa);
}
