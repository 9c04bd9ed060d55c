/* How every module of kernels/ chooses among its kernel variants: one style.
 *
 * A module keeps a `static const` table whose entries hold, per operation,
 * an array of KERN_ISA_COUNT function pointers indexed by kern_isa:
 * [KERN_ISA_REF] is the scalar reference and always set (for an operation
 * the type has at all); a higher slot is NULL where that ISA adds no variant
 * of its own, and the next lower one then serves. The choice is made once,
 * when a kern_ops is filled (or, for the probes, once per measurement), never
 * per element or per row.
 *
 * Layering: this header and variant.c depend only on cpu.h; the family
 * modules (legacy, kquant, gemm, ops) use them, and dispatch.c calls the
 * families. No call goes back up. */
#ifndef HERD_KERNELS_VARIANT_H
#define HERD_KERNELS_VARIANT_H

#include <stddef.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst = the best variant at or below isa in v[KERN_ISA_COUNT] (see above).
 * isa must already be clamped to the CPU (kern_isa_clamp). A macro so that
 * it serves every kernel signature alike. */
#define KERN_VARIANT_PICK(dst, v, isa)                                          \
	do {                                                                    \
		(dst) = (v)[KERN_ISA_REF];                                      \
		for (int kern_l_ = KERN_ISA_REF + 1; kern_l_ <= (int)(isa); kern_l_++) \
			if ((v)[kern_l_])                                       \
				(dst) = (v)[kern_l_];                           \
	} while (0)

/* The variants of every per-type operation of one weight type. Operations
 * the type does not have stay all NULL (e.g. vec_dot of the interleaved
 * types, act/gemm of the plain ones). */
typedef struct kern_type_variants {
	kern_type type;
	kern_to_float_fn to_float[KERN_ISA_COUNT];
	kern_from_float_fn from_float[KERN_ISA_COUNT];
	kern_vec_dot_fn vec_dot[KERN_ISA_COUNT];
	kern_vec_dot4_fn vec_dot4[KERN_ISA_COUNT];
	kern_act_fn act[KERN_ISA_COUNT];
	kern_gemm_fn gemm[KERN_ISA_COUNT];
} kern_type_variants;

/* Sets ops' per-type entries of the n types in table to their best variant
 * at or below isa, clamped to what this CPU runs (so a variant the CPU
 * cannot execute is never handed out, even to a direct caller). Leaves
 * other types' entries untouched. Thread-safe on distinct ops. */
void kern_ops_fill_types(kern_ops *ops, const kern_type_variants *table, size_t n, kern_isa isa);

#ifdef __cplusplus
}
#endif
#endif
