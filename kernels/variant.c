/* The one way kernels/ turns a per-ISA variant table into a kern_ops. */
#include "variant.h"

void kern_ops_fill_types(kern_ops *ops, const kern_type_variants *table, size_t n, kern_isa isa)
{
	isa = kern_isa_clamp(isa);
	for (size_t k = 0; k < n; k++) {
		const kern_type_variants *e = &table[k];
		KERN_VARIANT_PICK(ops->to_float[e->type], e->to_float, isa);
		KERN_VARIANT_PICK(ops->from_float[e->type], e->from_float, isa);
		KERN_VARIANT_PICK(ops->vec_dot[e->type], e->vec_dot, isa);
		KERN_VARIANT_PICK(ops->vec_dot4[e->type], e->vec_dot4, isa);
		KERN_VARIANT_PICK(ops->act[e->type], e->act, isa);
		KERN_VARIANT_PICK(ops->gemm[e->type], e->gemm, isa);
	}
}
