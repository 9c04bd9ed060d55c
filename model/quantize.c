/* herd quantize: type resolution, the per-tensor plan with fallbacks, and
 * the writing of the new GGUF. See quantize.h. */
#include "model/quantize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herd/error.h"
#include "kernels/threadpool.h"
#include "model/ftype.h"
#include "model/gguf.h"
#include "model/llama.h"

#define QUANT_QNT_VERSION 2 /* general.quantization_version llama-quantize writes */

int quant_is_weight_type(const kern_ops *ops, int t)
{
	const kern_type_traits *tt = kern_type_info(t);
	if (!tt || t == KERN_TYPE_Q8_1 || t == KERN_TYPE_Q8_K) /* activation-only formats */
		return 0;
	if (ops->act[t] || ops->gemm[t]) /* run-time interleaved layouts */
		return 0;
	return ops->from_float[t] && ops->to_float[t] && ops->vec_dot[t];
}

void quant_weight_type_names(const kern_ops *ops, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = '\0';
	for (int t = 0; t < KERN_TYPE_COUNT && n < len; t++)
		if (quant_is_weight_type(ops, t))
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", kern_type_name(t));
}

/* A weight type by name (case-insensitive), or -1. */
static int weight_type_by_name(const kern_ops *ops, const char *name)
{
	for (int t = 0; t < KERN_TYPE_COUNT; t++)
		if (quant_is_weight_type(ops, t) && !strcasecmp(kern_type_name(t), name))
			return t;
	return -1;
}

static double bpw(kern_type t)
{
	const kern_type_traits *tt = kern_type_info(t);
	return 8.0 * (double)tt->type_size / tt->blck_size;
}

/* The type tensor rows of ne0 get when wanted does not fit (quantize.h):
 * llama.cpp's fallback when it has one, else the smallest type whose
 * block divides the row and whose whole bits per weight are at least
 * wanted's (herd's own HQ types included unless standard_only), else F16. */
static kern_type fit_type(const kern_ops *ops, kern_type wanted, int64_t ne0, int standard_only)
{
	if (ne0 % kern_type_info(wanted)->blck_size == 0)
		return wanted;
	const kern_type ll = ftype_fallback(wanted, ne0);
	if (ll != KERN_TYPE_F16 && quant_is_weight_type(ops, ll))
		return ll;
	int best = KERN_TYPE_F16;
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		if (!quant_is_weight_type(ops, t) || ne0 % kern_type_info(t)->blck_size ||
		    (standard_only && t >= KERN_TYPE_HERD_FIRST))
			continue;
		if (floor(bpw((kern_type)t)) >= floor(bpw(wanted)) && bpw((kern_type)t) < bpw((kern_type)best))
			best = t;
	}
	return (kern_type)best;
}

/* One tensor's conversion, run by the writer's fill callback. */
typedef struct quant_job {
	const gguf_tensor *t;
	kern_type dst;
	const quant_stat *st;
	const kern_ops *ops;
	kern_pool *pool;
	int index, total;
	int gi; /* index in the source file */
	const quant_opts *o;
	char name[QUANT_NAME_MAX];
} quant_job;

typedef struct rows_task {
	const quant_job *j;
	float *W;
	uint8_t *out;
	int rc;
} rows_task;

static void rows_run(void *arg, int ith, int nth)
{
	rows_task *rt = arg;
	const quant_job *j = rt->j;
	const int64_t K = j->t->ne[0], rows = j->t->ne[1] * j->t->ne[2] * j->t->ne[3];
	const int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
	const size_t src_row = kern_row_size(j->t->type, K), dst_row = kern_row_size(j->dst, K);
	for (int64_t r = r0; r < r1; r++)
		j->ops->to_float[j->t->type]((const uint8_t *)j->t->data + (size_t)r * src_row,
					     rt->W + r * K, K);
	if (r1 > r0) {
		const int rc = quant_rows(j->ops, j->dst, rt->W + r0 * K, r1 - r0, K, j->st,
					  rt->out + (size_t)r0 * dst_row);
		if (rc)
			rt->rc = rc;
	}
}

static int job_fill(void *user, void *buf, size_t size)
{
	quant_job *j = user;
	const int64_t K = j->t->ne[0], rows = j->t->ne[1] * j->t->ne[2] * j->t->ne[3];
	if (kern_row_size(j->dst, K) * (size_t)rows != size)
		return HERD_E_SHAPE;
	rows_task rt = {.j = j, .W = malloc(sizeof(float) * (size_t)(K * rows)), .out = buf};
	if (!rt.W)
		return -ENOMEM;
	kern_pool_run(j->pool, rows_run, &rt);
	free(rt.W);
	if (j->o->progress)
		j->o->progress(j->o->user, j->index + 1, j->total, j->name);
	return rt.rc;
}

/* What -t names: a file type (mix) or a weight type. */
typedef struct quant_target {
	int is_mix;
	ftype_id ftype;
	kern_type type;
	kern_type *forced; /* --mix auto: per source tensor, KERN_TYPE_COUNT = none */
} quant_target;

static int parse_target(const kern_ops *ops, const char *name, quant_target *q, char *err,
			size_t errlen)
{
	*q = (quant_target){0};
	if (!name || !strcasecmp(name, "auto")) { /* --mix auto decides every tensor */
		q->type = KERN_TYPE_F16;
		return 0;
	}
	if (!ftype_parse(name, &q->ftype)) {
		q->is_mix = 1;
		q->type = ftype_base_type(q->ftype);
		/* a quantized mix needs every type its rules can pick */
		return 0;
	}
	const int t = weight_type_by_name(ops, name);
	if (t >= 0) {
		q->type = (kern_type)t;
		return 0;
	}
	char names[1024];
	quant_weight_type_names(ops, names, sizeof(names));
	return herd_errf(err, errlen, HERD_E_UNSUPPORTED,
			 "unknown type '%s': file types (mixes) are %s; weight types are %s",
			 name, ftype_names(), names);
}

/* --tensor-type SUBSTRING=TYPE: the type of the first matching override. */
static int override_type(const kern_ops *ops, const quant_opts *o, const char *name)
{
	for (int i = 0; i < o->n_overrides; i++) {
		const char *eq = strchr(o->overrides[i], '=');
		const size_t n = (size_t)(eq - o->overrides[i]);
		char pat[QUANT_NAME_MAX];
		if (!eq || n >= sizeof(pat))
			continue;
		memcpy(pat, o->overrides[i], n);
		pat[n] = '\0';
		if (strstr(name, pat))
			return weight_type_by_name(ops, eq + 1);
	}
	return -1;
}

static int check_overrides(const kern_ops *ops, const quant_opts *o, char *err, size_t errlen)
{
	for (int i = 0; i < o->n_overrides; i++) {
		const char *eq = strchr(o->overrides[i], '=');
		if (!eq || eq == o->overrides[i] || eq - o->overrides[i] >= QUANT_NAME_MAX ||
		    weight_type_by_name(ops, eq + 1) < 0)
			return herd_errf(err, errlen, HERD_E_INVAL,
					 "bad --tensor-type '%s': want SUBSTRING=TYPE with a weight type",
					 o->overrides[i]);
	}
	return 0;
}

/* The type of tensor t called name (and the one it wanted). */
static kern_type plan_type(const kern_ops *ops, const quant_opts *o, const quant_target *q,
			   ftype_plan *fp, const quant_job *j, kern_type *wanted)
{
	const gguf_tensor *t = j->t;
	const char *name = j->name;
	if (q->forced && q->forced[j->gi] != KERN_TYPE_COUNT)
		return *wanted = q->forced[j->gi];
	kern_type w = t->type;
	if (q->is_mix)
		w = ftype_rule_type(fp, name, t->n_dims, t->ne, t->type);
	else if (ftype_is_quantizable(name, t->n_dims))
		w = q->type;
	const int ov = ftype_is_quantizable(name, t->n_dims) ? override_type(ops, o, name) : -1;
	if (ov >= 0)
		w = (kern_type)ov;
	*wanted = w;
	return ftype_is_quantizable(name, t->n_dims) ? fit_type(ops, w, t->ne[0], o->standard_only) : w;
}

/* Statistics for the conversion: read and/or computed, then saved. */
static int quant_stats(const quant_opts *o, const char *in, quant_calib *c, char *err, size_t errlen)
{
	int rc = 0;
	if (o->imatrix_in && (rc = quant_imatrix_read(c, o->imatrix_in, err, errlen)))
		return rc;
	if (o->calib && (rc = quant_calib_collect(c, in, o->calib, o->calib_len > 0 ? o->calib_len : 128,
						   QUANT_GPTQ_MAX_K, o->progress, o->user, err, errlen)))
		return rc;
	if (o->imatrix_out && c->n && (rc = quant_imatrix_write(c, o->imatrix_out, err, errlen)))
		return rc;
	return 0;
}

static int quant_keys(gguf_writer *w, const gguf_ctx *g, const quant_target *q, char *err,
		      size_t errlen)
{
	int rc = 0;
	/* as ggml sets a key: an existing one moves to the end */
	for (int64_t i = 0; i < gguf_n_kv(g) && !rc; i++) {
		const gguf_str k = gguf_kv_at(g, i)->key;
		if ((k.len == 28 && !memcmp(k.ptr, "general.quantization_version", 28)) ||
		    (k.len == 17 && !memcmp(k.ptr, "general.file_type", 17)))
			continue;
		rc = gguf_writer_copy_kv(w, g, i);
	}
	const int ft = q->forced ? -1 : q->is_mix ? (int)q->ftype : ftype_for_type(q->type);
	if (!rc)
		rc = gguf_writer_set_u32(w, "general.quantization_version", QUANT_QNT_VERSION);
	if (!rc && ft >= 0)
		rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ft);
	return rc ? herd_errf(err, errlen, rc, "writing metadata: %s", herd_strerror(rc)) : 0;
}

/* llama-quantize's tensor order (its loader's map): by layer number, the
 * tensors outside the blocks first, then by name. */
static int layer_of(const char *name)
{
	int l = -1;
	return sscanf(name, "blk.%d.", &l) == 1 ? l : -1;
}

static int cmp_tensor(const void *a, const void *b)
{
	const quant_job *x = a, *y = b;
	const int lx = layer_of(x->name), ly = layer_of(y->name);
	return lx != ly ? (lx > ly) - (lx < ly) : strcmp(x->name, y->name);
}

/* jobs[i] = tensor i of g with its name, in llama-quantize's order. */
static int order_tensors(const gguf_ctx *g, quant_job *jobs, char *err, size_t errlen)
{
	const int n = (int)gguf_n_tensors(g);
	for (int i = 0; i < n; i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		if (t->name.len >= sizeof(jobs[i].name))
			return herd_errf(err, errlen, HERD_E_RANGE, "tensor %d: name too long", i);
		jobs[i].t = t;
		jobs[i].gi = i;
		memcpy(jobs[i].name, t->name.ptr, t->name.len);
		jobs[i].name[t->name.len] = '\0';
	}
	qsort(jobs, (size_t)n, sizeof(*jobs), cmp_tensor);
	return 0;
}

static void note_tensor(const quant_opts *o, const quant_job *j, kern_type wanted)
{
	const gguf_tensor *t = j->t;
	const int quantized = kern_type_info(j->dst)->is_quantized;
	quant_note nt = {j->name, t->ne[0], t->ne[1] * t->ne[2] * t->ne[3], t->type, wanted, j->dst,
			 j->dst == t->type ? "copy" : !j->st || !quantized ? "rtn"
			 : j->st->H ? "gptq" : "imatrix"};
	o->note(o->user, &nt);
}

/* Plans and adds every tensor of g to w (jobs[i] for the i-th written). */
static int quant_tensors(gguf_writer *w, const gguf_ctx *g, const llama_model *m,
			 const quant_opts *o, const quant_target *q, const quant_calib *c,
			 quant_job *jobs, const kern_ops *ops, kern_pool *pool, char *err,
			 size_t errlen)
{
	ftype_plan fp;
	ftype_plan_init(&fp, q->ftype, m->hp.n_layer, m->hp.n_head, m->hp.n_head_kv,
			gguf_find_tensor(g, "output.weight") != NULL);
	const int n = (int)gguf_n_tensors(g);
	int rc = order_tensors(g, jobs, err, errlen);
	for (int i = 0; i < n && !rc; i++) {
		quant_job *j = &jobs[i];
		const gguf_tensor *t = j->t;
		kern_type wanted;
		j->dst = plan_type(ops, o, q, &fp, j, &wanted);
		j->st = c->n ? quant_calib_find(c, j->name) : NULL;
		j->ops = ops;
		j->pool = pool;
		j->index = i;
		j->total = n;
		j->o = o;
		const int copy = j->dst == t->type;
		if (!copy && !ops->to_float[t->type])
			return herd_errf(err, errlen, HERD_E_UNSUPPORTED, "tensor '%s': cannot dequantize %s",
					 j->name, kern_type_name(t->type));
		if (o->note)
			note_tensor(o, j, wanted);
		rc = copy ? gguf_writer_add_tensor(w, j->name, t->type, t->n_dims, t->ne, t->data)
			  : gguf_writer_add_tensor_fill(w, j->name, j->dst, t->n_dims, t->ne, job_fill, j);
		if (rc)
			return herd_errf(err, errlen, rc, "tensor '%s': %s", j->name, herd_strerror(rc));
	}
	return rc;
}

/* --mix auto: the forced type of every tensor, from measured sensitivity. */
static int quant_plan_mix(const char *in, const quant_calib *c, const quant_opts *o, quant_target *q,
			  const llama_model *m, char *err, size_t errlen)
{
	const int want = o->target_bytes > 0 || o->target_bpw > 0;
	if (!want) {
		if (!o->type || !strcasecmp(o->type, "auto"))
			return herd_errf(err, errlen, HERD_E_INVAL, "-t auto needs --target-bytes or --target-bpw");
		return 0;
	}
	if (!o->calib)
		return herd_errf(err, errlen, HERD_E_INVAL, "--target-bytes/--target-bpw need --calib TOKENS "
				 "(the sensitivities are measured on them)");
	const int64_t n = gguf_n_tensors(m->gguf);
	q->forced = malloc(sizeof(kern_type) * (size_t)n);
	if (!q->forced)
		return herd_errf(err, errlen, -ENOMEM, "%s", herd_strerror(-ENOMEM));
	for (int64_t i = 0; i < n; i++)
		q->forced[i] = KERN_TYPE_COUNT;
	return quant_mix_auto(in, c, o, q->forced, err, errlen);
}

/* A file holding herd's own types says so: herd.own_types lists them. */
static int mark_own_types(gguf_writer *w, const quant_job *jobs, int n, char *err, size_t errlen)
{
	char list[512] = "";
	size_t len = 0;
	for (int t = KERN_TYPE_HERD_FIRST; t < KERN_TYPE_COUNT; t++) {
		int used = 0;
		for (int i = 0; i < n && !used; i++)
			used = jobs[i].dst == (kern_type)t;
		if (used && len < sizeof(list))
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? "," : "",
						kern_type_name(t));
	}
	if (!len)
		return 0;
	const int rc = gguf_writer_set_str(w, QUANT_OWN_TYPES_KEY, list);
	return rc ? herd_errf(err, errlen, rc, "writing %s: %s", QUANT_OWN_TYPES_KEY, herd_strerror(rc))
		  : 0;
}

int quant_model(const char *in, const char *out, const quant_opts *o, char *err, size_t errlen)
{
	kern_ops ops;
	kern_ops_init(&ops, kern_isa_detect());
	quant_target q;
	int rc = parse_target(&ops, o->type, &q, err, errlen);
	if (rc || (rc = check_overrides(&ops, o, err, errlen)))
		return rc;
	llama_model *m = NULL;
	gguf_writer *w = NULL;
	kern_pool *pool = NULL;
	quant_calib c = {0};
	quant_job *jobs = NULL;
	if ((rc = llama_model_load(&m, in, err, errlen)))
		return rc;
	if ((rc = quant_stats(o, in, &c, err, errlen)) || (rc = quant_plan_mix(in, &c, o, &q, m, err, errlen)))
		goto out;
	const gguf_ctx *g = m->gguf;
	jobs = calloc((size_t)gguf_n_tensors(g) + 1, sizeof(*jobs));
	if (!jobs || (rc = gguf_writer_create(&w)) || (rc = kern_pool_create(&pool, o->n_threads))) {
		rc = rc ? rc : -ENOMEM;
		herd_errf(err, errlen, rc, "%s", herd_strerror(rc));
		goto out;
	}
	if (!(rc = quant_keys(w, g, &q, err, errlen)) &&
	    !(rc = quant_tensors(w, g, m, o, &q, &c, jobs, &ops, pool, err, errlen)) &&
	    !(rc = mark_own_types(w, jobs, (int)gguf_n_tensors(g), err, errlen)))
		rc = gguf_writer_write(w, out, err, errlen);
out:
	kern_pool_destroy(pool);
	gguf_writer_destroy(w);
	free(jobs);
	free(q.forced);
	quant_calib_free(&c);
	llama_model_destroy(m);
	return rc;
}
