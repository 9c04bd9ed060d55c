/* File types and llama.cpp's per-tensor quantization mix. See ftype.h. */
#include "ftype.h"

#include <string.h>
#include <strings.h>

#include "herd/error.h"

static const struct {
	const char *name;
	ftype_id id;
	kern_type base;
} ftypes[] = {
	{.name = "F32", .id = FTYPE_ALL_F32, .base = KERN_TYPE_F32},
	{.name = "F16", .id = FTYPE_F16, .base = KERN_TYPE_F16},
	{.name = "BF16", .id = FTYPE_BF16, .base = KERN_TYPE_BF16},
	{.name = "Q8_0", .id = FTYPE_Q8_0, .base = KERN_TYPE_Q8_0},
	{.name = "Q4_0", .id = FTYPE_Q4_0, .base = KERN_TYPE_Q4_0},
	{.name = "Q4_1", .id = FTYPE_Q4_1, .base = KERN_TYPE_Q4_1},
	{.name = "Q5_0", .id = FTYPE_Q5_0, .base = KERN_TYPE_Q5_0},
	{.name = "Q5_1", .id = FTYPE_Q5_1, .base = KERN_TYPE_Q5_1},
	{.name = "Q2_K", .id = FTYPE_Q2_K, .base = KERN_TYPE_Q2_K},
	{.name = "Q2_K_S", .id = FTYPE_Q2_K_S, .base = KERN_TYPE_Q2_K},
	{.name = "Q3_K_S", .id = FTYPE_Q3_K_S, .base = KERN_TYPE_Q3_K},
	{.name = "Q3_K_M", .id = FTYPE_Q3_K_M, .base = KERN_TYPE_Q3_K},
	{.name = "Q3_K_L", .id = FTYPE_Q3_K_L, .base = KERN_TYPE_Q3_K},
	{.name = "Q4_K_S", .id = FTYPE_Q4_K_S, .base = KERN_TYPE_Q4_K},
	{.name = "Q4_K_M", .id = FTYPE_Q4_K_M, .base = KERN_TYPE_Q4_K},
	{.name = "Q5_K_S", .id = FTYPE_Q5_K_S, .base = KERN_TYPE_Q5_K},
	{.name = "Q5_K_M", .id = FTYPE_Q5_K_M, .base = KERN_TYPE_Q5_K},
	{.name = "Q6_K", .id = FTYPE_Q6_K, .base = KERN_TYPE_Q6_K},
};
#define N_FTYPES (sizeof(ftypes) / sizeof(ftypes[0]))

int ftype_parse(const char *name, ftype_id *out)
{
	static const struct {
		const char *alias;
		ftype_id id;
	} aliases[] = {
		{.alias = "Q3_K", .id = FTYPE_Q3_K_M},
		{.alias = "Q4_K", .id = FTYPE_Q4_K_M},
		{.alias = "Q5_K", .id = FTYPE_Q5_K_M},
	};
	if (!name)
		return HERD_E_UNSUPPORTED;
	for (size_t i = 0; i < N_FTYPES; i++) {
		if (!strcasecmp(name, ftypes[i].name)) {
			*out = ftypes[i].id;
			return 0;
		}
	}
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
		if (!strcasecmp(name, aliases[i].alias)) {
			*out = aliases[i].id;
			return 0;
		}
	}
	return HERD_E_UNSUPPORTED;
}

const char *ftype_name(int ftype)
{
	for (size_t i = 0; i < N_FTYPES; i++)
		if ((int)ftypes[i].id == ftype)
			return ftypes[i].name;
	return NULL;
}

const char *ftype_names(void)
{
	return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, "
	       "Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K";
}

kern_type ftype_base_type(ftype_id ftype)
{
	for (size_t i = 0; i < N_FTYPES; i++)
		if (ftypes[i].id == ftype)
			return ftypes[i].base;
	return KERN_TYPE_F32;
}

int ftype_is_quantized(ftype_id ftype)
{
	const kern_type_traits *tt = kern_type_info(ftype_base_type(ftype));
	return tt && tt->is_quantized;
}

void ftype_plan_init(ftype_plan *p, ftype_id ftype, int n_layer, int n_head, int n_head_kv,
		     int has_output)
{
	*p = (ftype_plan){
		.ftype = ftype,
		.n_layer = n_layer,
		.n_gqa = n_head_kv > 0 ? n_head / n_head_kv : 1,
		.has_output = has_output,
	};
}

static int use_more_bits(int i, int n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static int ends_with(const char *s, const char *suffix)
{
	const size_t n = strlen(s), m = strlen(suffix);
	return n >= m && !memcmp(s + n - m, suffix, m);
}

/* llama_tensor_get_type for a tensor that is being quantized. */
static kern_type mix_type(ftype_plan *p, const char *name, const int64_t *ne, kern_type t)
{
	const ftype_id f = p->ftype;
	if (!strcmp(name, "output.weight") ||
	    (!p->has_output && !strcmp(name, "token_embd.weight"))) {
		if (ne[0] % KERN_QK_K != 0)
			t = KERN_TYPE_Q8_0;
		else if (t != KERN_TYPE_Q8_0)
			t = KERN_TYPE_Q6_K;
	} else if (!strcmp(name, "token_embd.weight")) {
		/* only the IQ mixes change it */
	} else if (strstr(name, "attn_v.weight")) {
		const int i = p->i_attn_v, n = p->n_layer;
		if (f == FTYPE_Q2_K)
			t = p->n_gqa >= 4 ? KERN_TYPE_Q4_K : KERN_TYPE_Q3_K;
		else if (f == FTYPE_Q2_K_S && p->n_gqa >= 4)
			t = KERN_TYPE_Q4_K;
		else if (f == FTYPE_Q3_K_M)
			t = i < 2 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K;
		else if (f == FTYPE_Q3_K_L)
			t = KERN_TYPE_Q5_K;
		else if ((f == FTYPE_Q4_K_M || f == FTYPE_Q5_K_M) && use_more_bits(i, n))
			t = KERN_TYPE_Q6_K;
		else if (f == FTYPE_Q4_K_S && i < 4)
			t = KERN_TYPE_Q5_K;
		p->i_attn_v++;
	} else if (strstr(name, "ffn_down")) {
		const int i = p->i_ffn_down, n = p->n_layer;
		if (f == FTYPE_Q2_K)
			t = KERN_TYPE_Q3_K;
		else if (f == FTYPE_Q2_K_S) {
			if (i < n / 8)
				t = KERN_TYPE_Q4_K;
		} else if (f == FTYPE_Q3_K_M)
			t = i < n / 16 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K;
		else if (f == FTYPE_Q3_K_L)
			t = KERN_TYPE_Q5_K;
		else if (f == FTYPE_Q4_K_M) {
			if (use_more_bits(i, n))
				t = KERN_TYPE_Q6_K;
		} else if (f == FTYPE_Q5_K_M && use_more_bits(i, n))
			t = KERN_TYPE_Q6_K;
		else if (f == FTYPE_Q4_K_S && i < n / 8)
			t = KERN_TYPE_Q5_K;
		p->i_ffn_down++;
	} else if (strstr(name, "attn_output.weight")) {
		if (f == FTYPE_Q2_K)
			t = KERN_TYPE_Q3_K;
		else if (f == FTYPE_Q3_K_M)
			t = KERN_TYPE_Q4_K;
		else if (f == FTYPE_Q3_K_L)
			t = KERN_TYPE_Q5_K;
	}

	return t;
}

/* llama.cpp's IQ4_NL when this build has it (a data-driven lookup: the
 * type plugs in with its kernels), else Q4_0 (the same 4.5 bits). */
static kern_type iq4_nl_or_q4_0(void)
{
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		const kern_type_traits *tt = kern_type_info(t);
		if (tt && !strcmp(tt->name, "IQ4_NL"))
			return (kern_type)t;
	}
	return KERN_TYPE_Q4_0;
}

kern_type ftype_fallback(kern_type t, int64_t ne0)
{
	const kern_type_traits *tt = kern_type_info(t);
	if (!tt || ne0 % tt->blck_size == 0)
		return t;
	switch (t) {
	case KERN_TYPE_Q2_K:
	case KERN_TYPE_Q3_K: t = iq4_nl_or_q4_0(); break;
	case KERN_TYPE_Q4_K: t = KERN_TYPE_Q5_0; break;
	case KERN_TYPE_Q5_K: t = KERN_TYPE_Q5_1; break;
	case KERN_TYPE_Q6_K: t = KERN_TYPE_Q8_0; break;
	default: break;
	}
	if (ne0 % kern_type_info(t)->blck_size != 0)
		t = KERN_TYPE_F16;
	return t;
}

int ftype_is_quantizable(const char *name, uint32_t n_dims)
{
	return ends_with(name, "weight") && n_dims >= 2 && !strstr(name, "_norm.weight");
}

kern_type ftype_rule_type(ftype_plan *p, const char *name, uint32_t n_dims, const int64_t *ne,
			  kern_type src)
{
	if (!ftype_is_quantizable(name, n_dims))
		return src;
	kern_type t = ftype_base_type(p->ftype);
	if (ftype_is_quantized(p->ftype))
		t = mix_type(p, name, ne, t);
	return t;
}

kern_type ftype_tensor_type(ftype_plan *p, const char *name, uint32_t n_dims, const int64_t *ne,
			    kern_type src)
{
	const kern_type t = ftype_rule_type(p, name, n_dims, ne, src);
	return ftype_is_quantizable(name, n_dims) ? ftype_fallback(t, ne[0]) : t;
}

/* llama.cpp's general.file_type for a file made of one weight type (the
 * "_S" variant for k-quants), or -1. */
int ftype_for_type(kern_type t)
{
	switch (t) {
	case KERN_TYPE_F32: return 0;
	case KERN_TYPE_F16: return 1;
	case KERN_TYPE_Q4_0: return 2;
	case KERN_TYPE_Q4_1: return 3;
	case KERN_TYPE_Q8_0: return 7;
	case KERN_TYPE_Q5_0: return 8;
	case KERN_TYPE_Q5_1: return 9;
	case KERN_TYPE_Q2_K: return 10;
	case KERN_TYPE_Q3_K: return 11;
	case KERN_TYPE_Q4_K: return 14;
	case KERN_TYPE_Q5_K: return 16;
	case KERN_TYPE_Q6_K: return 18;
	case KERN_TYPE_BF16: return 32;
	default: return -1;
	}
}
