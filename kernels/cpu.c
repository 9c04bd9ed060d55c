/* CPU-feature detection: the one record kernels/ dispatches on. */
#include "cpu.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdint.h>

/* CPUID leaf 1, ECX: OS saves extended state, FMA, F16C. */
#define CPUID1_ECX_FMA (1u << 12)
#define CPUID1_ECX_OSXSAVE (1u << 27)
#define CPUID1_ECX_F16C (1u << 29)
/* CPUID leaf 7 sub-leaf 0, EBX and ECX. */
#define CPUID7_EBX_AVX2 (1u << 5)
#define CPUID7_EBX_AVX512F (1u << 16)
#define CPUID7_EBX_AVX512DQ (1u << 17)
#define CPUID7_EBX_AVX512BW (1u << 30)
#define CPUID7_EBX_AVX512VL (1u << 31)
#define CPUID7_ECX_AVX512VNNI (1u << 11)
/* XCR0 bits the OS must enable: XMM|YMM state, and for AVX-512 also the
 * opmask and both halves of the ZMM state. */
#define XCR0_AVX 0x6u
#define XCR0_AVX512 0xe6u

/* The CPU-feature record: written once (pthread_once) and read-only after,
 * the one exception DESIGN.md allows to "no mutable globals". */
static kern_isa cpu_isa = KERN_ISA_REF;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static const char *const isa_names[KERN_ISA_COUNT] = {
	[KERN_ISA_REF] = "ref",
	[KERN_ISA_AVX2] = "avx2",
	[KERN_ISA_AVX512] = "avx512",
};

static int xgetbv_ok(uint32_t mask)
{
	uint32_t eax, edx;
	__asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
	(void)edx;
	return (eax & mask) == mask;
}

static int has_all(unsigned reg, unsigned bits)
{
	return (reg & bits) == bits;
}

static kern_isa cpu_probe(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return KERN_ISA_REF;
	const unsigned ecx1 = c;
	if (!has_all(ecx1, CPUID1_ECX_OSXSAVE) || !xgetbv_ok(XCR0_AVX))
		return KERN_ISA_REF;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return KERN_ISA_REF;
	if (!has_all(b, CPUID7_EBX_AVX2) || !has_all(ecx1, CPUID1_ECX_FMA | CPUID1_ECX_F16C))
		return KERN_ISA_REF;
	const unsigned avx512_ebx = CPUID7_EBX_AVX512F | CPUID7_EBX_AVX512DQ |
				    CPUID7_EBX_AVX512BW | CPUID7_EBX_AVX512VL;
	if (has_all(b, avx512_ebx) && has_all(c, CPUID7_ECX_AVX512VNNI) && xgetbv_ok(XCR0_AVX512))
		return KERN_ISA_AVX512;
	return KERN_ISA_AVX2;
}

static void cpu_record_init(void)
{
	cpu_isa = cpu_probe();
}

kern_isa kern_isa_detect(void)
{
	pthread_once(&cpu_once, cpu_record_init);
	return cpu_isa;
}

kern_isa kern_isa_clamp(kern_isa isa)
{
	const kern_isa best = kern_isa_detect();
	if ((int)isa < (int)KERN_ISA_REF) /* the enum may be unsigned: compare as int */
		return KERN_ISA_REF;
	return (int)isa > (int)best ? best : isa;
}

const char *kern_isa_name(kern_isa isa)
{
	if ((int)isa < 0 || (int)isa >= KERN_ISA_COUNT)
		return "unknown";
	return isa_names[isa];
}
