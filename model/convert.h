/* Conversion of weights to the layout herd runs them in: the one repack
 * policy.
 *
 * Two places turn a model file into run-time weights: `herd run` (and the
 * other in-process commands) interleave the matrices of a loaded model in
 * memory (llama_model_repack), and the broker writes a shared image
 * (shm_image_create) whose payload GGUF holds the matrices already
 * interleaved and, on request, requantized. Both ask this module which
 * matrix gets which layout, so a model run from its file and from an image
 * reads the same types and computes the same numbers.
 *
 * The policy: interleaving is on when the CPU has the SIMD GEMMs
 * (kern_repack_worthwhile) and the caller did not opt out (no_repack: the
 * tools read HERD_NO_REPACK; no library reads the environment). When on, a
 * matrix the forward pass only multiplies by (the seven per-layer matrices
 * and output.weight, never token_embd, which is looked up by row) whose
 * type has a row-interleaved layout (kernels/gemm.h) and whose row count is
 * a multiple of KERN_R is stored in that layout.
 *
 * Pure functions and caller-owned plans: thread-safe on distinct
 * arguments. */
#ifndef HERD_MODEL_CONVERT_H
#define HERD_MODEL_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "model/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The interleaving policy of this process (KERN_REPACK_*, kernels/gemm.h):
 * what the CPU's SIMD GEMMs gain from (kern_repack_worthwhile), or 0 when
 * it has none or no_repack is set. */
int convert_repack_enabled(int no_repack);

/* 1 when the tensor called name is one the forward pass only multiplies
 * by (blk.N.attn_q/k/v/output, ffn_gate/up/down, output.weight). */
int convert_is_matmul_weight(const char *name);

/* The type a matrix of type plain with rows rows is run in: its
 * row-interleaved type when the policy repack (KERN_REPACK_*, 0 = off)
 * covers plain, matmul_only is set and rows % KERN_R == 0; else plain. */
kern_type convert_layout_type(int repack, kern_type plain, int64_t rows, int matmul_only);

typedef struct convert_opts {
	int requantize;     /* convert 2-D tensors to target (row length a
			     * multiple of target's block; others keep their type) */
	kern_type target;
	int repack;         /* convert_repack_enabled(...) */
	uint32_t alignment; /* general.alignment of the written file */
} convert_opts;

/* What convert_payload added to a writer: the per-tensor conversion jobs
 * its fill callbacks read at write time. Opaque; convert_plan_free. */
typedef struct convert_plan convert_plan;

/* Adds src's keys and tensors to w in src's order: every key as it is,
 * general.alignment = o->alignment, general.file_type for a requantized
 * file; tensors under the policy above (requantized and/or interleaved
 * through a fill callback, the others borrowed as they are). src and *plan
 * must stay alive until gguf_writer_write returns. Returns 0 with *plan
 * (caller frees), or HERD_E_UNSUPPORTED (a tensor type that cannot be
 * dequantized), HERD_E_RANGE (a tensor name too long), the writer's
 * errors, -ENOMEM; message in msg. *plan is NULL on error. */
int convert_payload(gguf_writer *w, const gguf_ctx *src, const convert_opts *o, convert_plan **plan,
		    char *msg, size_t msglen);
void convert_plan_free(convert_plan *p); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
