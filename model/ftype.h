/* Model file types (llama.cpp's llama_ftype, stored as general.file_type)
 * and the per-tensor type choice llama-quantize makes for them
 * (llama_tensor_get_type, llama.cpp build ~4748, February 2025), for the
 * llama architecture and the types herd supports.
 *
 * A file type names a mix: "Q4_K_M" is mostly Q4_K with output.weight in
 * Q6_K and some attn_v / ffn_down layers in Q6_K. The rules, in short:
 *   - only 2-D+ tensors whose name ends in "weight" and does not contain
 *     "_norm.weight" are converted; everything else keeps its type (F32
 *     norms stay F32);
 *   - F32/F16/BF16 file types convert every such tensor to that type;
 *   - for quantized file types, output.weight (or token_embd.weight when the
 *     model has no output.weight) becomes Q6_K (Q8_0 stays Q8_0; a row
 *     length not divisible by 256 gives Q8_0);
 *   - attn_v / ffn_down / attn_output get more bits as llama.cpp assigns
 *     them, with use_more_bits(i, n) = i < n/8 || i >= 7n/8 ||
 *     (i - n/8) % 3 == 2 over the layer counters;
 *   - a K-quant tensor whose row length is not a multiple of 256 falls back
 *     as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16
 *     when even that block size does not divide the row), except that
 *     llama.cpp's Q2_K/Q3_K fallback, IQ4_NL, is not a herd type: herd uses
 *     Q4_0 (same 4.5 bits per weight) there.
 *
 * Pure functions over caller-owned state: thread-safe on distinct plans.
 */
#ifndef HERD_MODEL_FTYPE_H
#define HERD_MODEL_FTYPE_H

#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* llama.cpp's numbers (general.file_type). */
typedef enum ftype_id {
	FTYPE_ALL_F32 = 0,
	FTYPE_F16 = 1,
	FTYPE_Q4_0 = 2,
	FTYPE_Q4_1 = 3,
	FTYPE_Q8_0 = 7,
	FTYPE_Q5_0 = 8,
	FTYPE_Q5_1 = 9,
	FTYPE_Q2_K = 10,
	FTYPE_Q3_K_S = 11,
	FTYPE_Q3_K_M = 12,
	FTYPE_Q3_K_L = 13,
	FTYPE_Q4_K_S = 14,
	FTYPE_Q4_K_M = 15,
	FTYPE_Q5_K_S = 16,
	FTYPE_Q5_K_M = 17,
	FTYPE_Q6_K = 18,
	FTYPE_Q2_K_S = 21,
	FTYPE_BF16 = 32,
} ftype_id;

/* Parses a file type name as llama-quantize spells it ("Q4_K_M", "F16",
 * "BF16", "F32", ...; case-insensitive; "Q3_K", "Q4_K", "Q5_K" mean their
 * _M mix, as in llama-quantize). Returns 0 or HERD_E_UNSUPPORTED. */
int ftype_parse(const char *name, ftype_id *out);
/* "Q4_K_M" etc., or NULL for a number herd does not know. */
const char *ftype_name(int ftype);
/* Comma-separated list of every name ftype_parse accepts (for usage text). */
const char *ftype_names(void);
/* The mix's main type (Q4_K for Q4_K_M, F16 for F16, ...). */
kern_type ftype_base_type(ftype_id ftype);
/* Nonzero when the mix's main type is a quantized block type. */
int ftype_is_quantized(ftype_id ftype);

/* State of one conversion pass over a model's tensors, in file order
 * (llama.cpp counts attn_v and ffn_down tensors as it meets them). */
typedef struct ftype_plan {
	ftype_id ftype;
	int n_layer;    /* transformer blocks (= attn_v and ffn_down tensor counts) */
	int n_gqa;      /* n_head / n_head_kv */
	int has_output; /* the model has its own output.weight (not tied) */
	int i_attn_v;   /* counters, advanced by ftype_tensor_type */
	int i_ffn_down;
} ftype_plan;

void ftype_plan_init(ftype_plan *p, ftype_id ftype, int n_layer, int n_head, int n_head_kv,
		     int has_output);
/* The type tensor `name` of shape ne[0..n_dims) gets under the plan, given
 * its current type src. Call once per tensor, in file order. */
kern_type ftype_tensor_type(ftype_plan *p, const char *name, uint32_t n_dims, const int64_t *ne,
			    kern_type src);

/* llama.cpp's general.file_type for a file made of one weight type (the
 * "_S" variant for k-quants), or -1 for a type without one. */
int ftype_for_type(kern_type t);

/* The two halves of ftype_tensor_type: the mix's rule (the type the
 * tensor would get if its row fit every block), and llama.cpp's fallback
 * for a row length ne0 that type's block does not divide (Q2_K/Q3_K ->
 * IQ4_NL when herd has it, else Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K ->
 * Q8_0; F16 when even that does not divide; a type that fits is kept). */
kern_type ftype_rule_type(ftype_plan *p, const char *name, uint32_t n_dims, const int64_t *ne,
			  kern_type src);
kern_type ftype_fallback(kern_type t, int64_t ne0);
/* 1 for a tensor llama-quantize converts: 2-D or more, name ending in
 * "weight", not a norm ("_norm.weight"). */
int ftype_is_quantizable(const char *name, uint32_t n_dims);

#ifdef __cplusplus
}
#endif
#endif
