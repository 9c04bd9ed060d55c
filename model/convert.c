/* The repack policy and the conversion of a GGUF's weights into the run
 * layout (requantize, interleave). See convert.h. */
#include "model/convert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "kernels/gemm.h"
#include "model/ftype.h"

#define CONVERT_NAME_MAX 256 /* bytes of a tensor name, NUL included */

int convert_repack_enabled(int no_repack)
{
	return no_repack ? 0 : kern_repack_worthwhile();
}

int convert_is_matmul_weight(const char *name)
{
	static const char *const suffixes[] = {".attn_q.weight", ".attn_k.weight", ".attn_v.weight",
					       ".attn_output.weight", ".ffn_gate.weight", ".ffn_up.weight",
					       ".ffn_down.weight"};
	if (!strcmp(name, "output.weight"))
		return 1;
	if (strncmp(name, "blk.", 4) != 0)
		return 0;
	const size_t n = strlen(name);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		const size_t k = strlen(suffixes[i]);
		if (n > k && !strcmp(name + n - k, suffixes[i]))
			return 1;
	}
	return 0;
}

kern_type convert_layout_type(int repack, kern_type plain, int64_t rows, int matmul_only)
{
	const int r16 = kern_repack_type_at(plain, repack);
	if (!repack || !matmul_only || r16 < 0 || rows % KERN_R != 0)
		return plain;
	return (kern_type)r16;
}

/* One tensor to convert, handed to the writer's fill callback. */
typedef struct convert_job {
	const gguf_tensor *t;
	kern_type dst;                 /* plain type written (before any interleaving) */
	kern_to_float_fn to_float;     /* NULL: no requantization */
	kern_from_float_fn from_float;
	int repack;                    /* then interleave rows for the GEMM kernels */
} convert_job;

struct convert_plan {
	convert_job *jobs; /* [n_tensors of the source], by tensor index */
};

/* Writes c->t into buf (size bytes): dequantized and requantized row by row
 * when converting, then repacked into the row-interleaved layout when asked. */
static int job_fill(void *user, void *buf, size_t size)
{
	const convert_job *c = user;
	const int64_t ne0 = c->t->ne[0];
	const int64_t rows = c->t->ne[1] * c->t->ne[2] * c->t->ne[3];
	const size_t src_row = kern_row_size(c->t->type, ne0);
	const size_t dst_row = kern_row_size(c->dst, ne0);
	/* an interleaved layout may be larger than the plain one (Q4_K_R16) */
	const size_t out_row = c->repack ? kern_row_size(kern_repack_type(c->dst), ne0) : dst_row;
	if (!src_row || !dst_row || !out_row || out_row * (size_t)rows != size)
		return HERD_E_INVAL;
	if (!c->to_float) /* repack only */
		return kern_repack(c->dst, c->t->data, rows, ne0, buf);
	float *f = malloc(sizeof(float) * (size_t)ne0);
	uint8_t *plain = c->repack ? malloc(dst_row * (size_t)rows) : buf;
	if (!f || !plain) {
		free(f);
		if (plain != buf)
			free(plain);
		return -ENOMEM;
	}
	const uint8_t *src = c->t->data;
	for (int64_t r = 0; r < rows; r++) {
		c->to_float(src + (size_t)r * src_row, f, ne0);
		c->from_float(f, plain + (size_t)r * dst_row, ne0);
	}
	free(f);
	int rc = 0;
	if (c->repack) {
		rc = kern_repack(c->dst, plain, rows, ne0, buf);
		free(plain);
	}
	return rc;
}

/* The keys: src's as they are, then the alignment and file type. */
static int copy_keys(gguf_writer *w, const gguf_ctx *src, const convert_opts *o, char *msg,
		     size_t msglen)
{
	int rc;
	for (int64_t i = 0; i < gguf_n_kv(src); i++)
		if ((rc = gguf_writer_copy_kv(w, src, i)))
			return herd_errf(msg, msglen, rc, "copying key %lld: %s", (long long)i,
					 herd_strerror(rc));
	if ((rc = gguf_writer_set_u32(w, "general.alignment", o->alignment)))
		return herd_errf(msg, msglen, rc, "setting general.alignment: %s", herd_strerror(rc));
	if (o->requantize && ftype_for_type(o->target) >= 0 &&
	    (rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype_for_type(o->target))))
		return herd_errf(msg, msglen, rc, "setting general.file_type: %s", herd_strerror(rc));
	return 0;
}

/* Adds tensor t (called name) to w, as it is or through job. */
static int add_tensor(gguf_writer *w, const gguf_tensor *t, const char *name, const convert_opts *o,
		      const kern_ops *ops, convert_job *job, char *msg, size_t msglen)
{
	const kern_type_traits *tt = kern_type_info(o->target);
	const int requant = o->requantize && t->n_dims == 2 && t->type != o->target &&
			    kern_type_info(t->type) && tt && t->ne[0] % tt->blck_size == 0;
	const kern_type plain = requant ? o->target : t->type;
	const kern_type run = convert_layout_type(o->repack, plain, t->ne[1],
						  t->n_dims == 2 && convert_is_matmul_weight(name));
	int rc;
	if (!requant && run == plain) {
		rc = gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data);
	} else {
		if (requant && !ops->to_float[t->type])
			return herd_errf(msg, msglen, HERD_E_UNSUPPORTED, "tensor '%s': cannot dequantize type %s",
					 name, kern_type_name(t->type));
		*job = (convert_job){t, plain, requant ? ops->to_float[t->type] : NULL,
				     requant ? ops->from_float[o->target] : NULL, run != plain};
		rc = gguf_writer_add_tensor_fill(w, name, run, t->n_dims, t->ne, job_fill, job);
	}
	if (rc)
		return herd_errf(msg, msglen, rc, "tensor '%s': %s", name, herd_strerror(rc));
	return 0;
}

int convert_payload(gguf_writer *w, const gguf_ctx *src, const convert_opts *o, convert_plan **plan,
		    char *msg, size_t msglen)
{
	*plan = NULL;
	convert_plan *p = calloc(1, sizeof(*p));
	const int64_t n = gguf_n_tensors(src);
	if (!p || (n > 0 && !(p->jobs = calloc((size_t)n, sizeof(*p->jobs))))) {
		convert_plan_free(p);
		return herd_errf(msg, msglen, -ENOMEM, "%s", herd_strerror(-ENOMEM));
	}
	kern_ops ops;
	kern_ops_init(&ops, kern_isa_detect());
	int rc = copy_keys(w, src, o, msg, msglen);
	for (int64_t i = 0; i < n && !rc; i++) {
		const gguf_tensor *t = gguf_tensor_at(src, i);
		char name[CONVERT_NAME_MAX];
		if (t->name.len >= sizeof(name)) {
			rc = herd_errf(msg, msglen, HERD_E_RANGE, "tensor %lld: name too long", (long long)i);
			break;
		}
		memcpy(name, t->name.ptr, t->name.len);
		name[t->name.len] = '\0';
		rc = add_tensor(w, t, name, o, &ops, &p->jobs[i], msg, msglen);
	}
	if (rc) {
		convert_plan_free(p);
		return rc;
	}
	*plan = p;
	return 0;
}

void convert_plan_free(convert_plan *p)
{
	if (!p)
		return;
	free(p->jobs);
	free(p);
}
