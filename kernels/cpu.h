/* CPU features: the bottom of kernels/. Which instruction-set level this
 * machine runs, detected once per process, and the names of the levels.
 * Every module of kernels/ chooses its variants from this record (through
 * kernels/variant.h); nothing here calls back up into them. */
#ifndef HERD_KERNELS_CPU_H
#define HERD_KERNELS_CPU_H

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction-set levels, ordered: a CPU that runs a level runs every lower
 * one. Values index the per-ISA variant tables (kernels/variant.h). */
typedef enum kern_isa {
	KERN_ISA_REF = 0,    /* portable scalar C */
	KERN_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
	KERN_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ/VNNI (+ AVX2 set) */
} kern_isa;

/* Number of levels: the length of every per-ISA variant array. */
#define KERN_ISA_COUNT 3
_Static_assert(KERN_ISA_AVX512 + 1 == KERN_ISA_COUNT, "KERN_ISA_COUNT follows the last level");

/* Best ISA this CPU supports. cpuid and xgetbv run once per process (the
 * one CPU-feature record, written on first call); every later call reads
 * it. Thread-safe. */
kern_isa kern_isa_detect(void);

/* isa limited to what this CPU runs: min(isa, kern_isa_detect()), and never
 * below KERN_ISA_REF. Thread-safe. */
kern_isa kern_isa_clamp(kern_isa isa);

/* "ref", "avx2", "avx512", or "unknown". Never NULL. */
const char *kern_isa_name(kern_isa isa);

#ifdef __cplusplus
}
#endif
#endif
