/* Type traits and run-time selection of kernel variants by CPU features. */
#include "kernels.h"

#include <cpuid.h>

static const kern_type_traits type_traits[KERN_TYPE_COUNT] = {
	[KERN_TYPE_F32] = {"F32", 1, 4, 0, KERN_TYPE_F32},
	[KERN_TYPE_F16] = {"F16", 1, 2, 0, KERN_TYPE_F16},
	[KERN_TYPE_BF16] = {"BF16", 1, 2, 0, KERN_TYPE_BF16},
	[KERN_TYPE_Q4_0] = {"Q4_0", KERN_QK4_0, sizeof(kern_block_q4_0), 1, KERN_TYPE_Q8_0},
	[KERN_TYPE_Q4_1] = {"Q4_1", KERN_QK4_1, sizeof(kern_block_q4_1), 1, KERN_TYPE_Q8_1},
	[KERN_TYPE_Q5_0] = {"Q5_0", KERN_QK5_0, sizeof(kern_block_q5_0), 1, KERN_TYPE_Q8_0},
	[KERN_TYPE_Q5_1] = {"Q5_1", KERN_QK5_1, sizeof(kern_block_q5_1), 1, KERN_TYPE_Q8_1},
	[KERN_TYPE_Q8_0] = {"Q8_0", KERN_QK8_0, sizeof(kern_block_q8_0), 1, KERN_TYPE_Q8_0},
	[KERN_TYPE_Q8_1] = {"Q8_1", KERN_QK8_1, sizeof(kern_block_q8_1), 1, KERN_TYPE_Q8_1},
	[KERN_TYPE_Q2_K] = {"Q2_K", KERN_QK_K, sizeof(kern_block_q2_K), 1, KERN_TYPE_Q8_K},
	[KERN_TYPE_Q3_K] = {"Q3_K", KERN_QK_K, sizeof(kern_block_q3_K), 1, KERN_TYPE_Q8_K},
	[KERN_TYPE_Q4_K] = {"Q4_K", KERN_QK_K, sizeof(kern_block_q4_K), 1, KERN_TYPE_Q8_K},
	[KERN_TYPE_Q5_K] = {"Q5_K", KERN_QK_K, sizeof(kern_block_q5_K), 1, KERN_TYPE_Q8_K},
	[KERN_TYPE_Q6_K] = {"Q6_K", KERN_QK_K, sizeof(kern_block_q6_K), 1, KERN_TYPE_Q8_K},
	[KERN_TYPE_Q8_K] = {"Q8_K", KERN_QK_K, sizeof(kern_block_q8_K), 1, KERN_TYPE_Q8_K},
	/* Sizes per row and block, amortized over the 16-row group: a matrix of
	 * these types has exactly the bytes of its plain counterpart. */
	[KERN_TYPE_Q4_0_R16] = {"Q4_0_R16", KERN_QK4_0, sizeof(kern_block_q4_0), 1, KERN_TYPE_Q4_0_R16},
	[KERN_TYPE_Q8_0_R16] = {"Q8_0_R16", KERN_QK8_0, sizeof(kern_block_q8_0), 1, KERN_TYPE_Q8_0_R16},
	/* Q4_K_R16 stores its scales unpacked: 156 bytes per row and
	 * super-block instead of Q4_K's 144 (kernels/gemm.h). */
	[KERN_TYPE_Q4_K_R16] = {"Q4_K_R16", KERN_QK_K, 156, 1, KERN_TYPE_Q4_K_R16},
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

static int xgetbv_ok(uint32_t mask)
{
	uint32_t eax, edx;
	__asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
	(void)edx;
	return (eax & mask) == mask;
}

kern_isa kern_isa_detect(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return KERN_ISA_REF;
	const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
	if (!osxsave || !xgetbv_ok(0x6)) /* XMM and YMM state enabled by the OS */
		return KERN_ISA_REF;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return KERN_ISA_REF;
	const int avx2 = (b >> 5) & 1;
	if (!(avx2 && fma && f16c))
		return KERN_ISA_REF;
	const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
		  avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
	if (avx512f && avx512dq && avx512bw && avx512vl && vnni && xgetbv_ok(0xe6))
		return KERN_ISA_AVX512;
	return KERN_ISA_AVX2;
}

const char *kern_isa_name(kern_isa isa)
{
	switch (isa) {
	case KERN_ISA_REF: return "ref";
	case KERN_ISA_AVX2: return "avx2";
	case KERN_ISA_AVX512: return "avx512";
	}
	return "unknown";
}

void kern_ops_init(kern_ops *ops, kern_isa isa)
{
	const kern_isa best = kern_isa_detect();
	if (isa > best)
		isa = best;
	*ops = (kern_ops){.isa = isa};
	kern_ops_init_legacy(ops, isa);
	kern_ops_init_kquant(ops, isa);
	kern_ops_init_gemm(ops, isa);
	kern_ops_init_attn(ops, isa);
}
