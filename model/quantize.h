/* herd quantize: a GGUF model rewritten with other tensor types.
 *
 * Types: -t names either a llama.cpp file type (a mix: Q4_K_M, Q3_K_S, ...,
 * model/ftype.h, with llama.cpp's per-tensor rules) or any weight type herd
 * can write (a "pure" file: every quantizable tensor in that type). The
 * weight types are found in the kernel tables, not listed here: a type
 * with traits (kern_type_info), a quantizer, a dequantizer and a dot
 * product (kern_ops.from_float/to_float/vec_dot) that is neither an
 * activation-only format (Q8_1, Q8_K) nor a run-time interleaved layout
 * (KERN_TYPE_*_R16) is one; new kernel types plug in by themselves.
 *
 * Shapes: nothing is refused. A tensor whose row length the wanted type's
 * block does not divide falls back, per tensor and reported: first as
 * llama.cpp falls back (ftype_fallback), and where that gives nothing but
 * F16 (or for a pure Q4_0/Q8_0 llama.cpp would refuse), to the smallest
 * weight type whose block divides the row and whose whole bits per weight
 * (floor) are at least the wanted type's, F16 at worst. herd's own types
 * (KERN_TYPE_HQ*, blocks of 32 and 43) are candidates unless
 * standard_only; a file that holds any lists them under QUANT_OWN_TYPES_KEY
 * (llama.cpp cannot load it).
 *
 * Rounding: with no calibration data every block is quantized by the
 * type's reference quantizer (round to nearest), so Q4_0 and Q8_0 files
 * are byte-identical to llama-quantize's. With an importance matrix
 * (--imatrix FILE, or computed by --calib TOKENS) each block's scale is
 * searched among clipped candidates to minimise the importance-weighted
 * squared error; with --calib and a row length <= QUANT_GPTQ_MAX_K the
 * columns are quantized one block at a time in GPTQ order, the rounding
 * error of each block fed back into the columns not yet quantized through
 * the inverse Hessian of the calibration activations (H = sum x x^T of
 * the matrix's input, dampened by 1 % of its mean diagonal).
 *
 * Importance-matrix file: llama.cpp's (llama-imatrix's) format: int32
 * n_entries; per entry int32 name length, name bytes, int32 ncall, int32
 * nval, float32 values[nval] (sum over calls of the mean of x^2 per input
 * column: mean x^2 times ncall); then int32 last call count, int32 length
 * and bytes of the dataset name. Read and written by the functions below.
 *
 * Not thread-safe on shared state; no globals. */
#ifndef HERD_MODEL_QUANTIZE_H
#define HERD_MODEL_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QUANT_GPTQ_MAX_K 1024   /* largest row length given a full Hessian */
#define QUANT_NAME_MAX 64       /* ggml's tensor-name limit, NUL included */
#define QUANT_MAX_OVERRIDES 32
/* Key of a file holding herd's own types: their names, comma-separated. */
#define QUANT_OWN_TYPES_KEY "herd.own_types"

/* Calibration statistics of one matrix's input (K columns). */
typedef struct quant_stat {
	char name[QUANT_NAME_MAX];
	int64_t K;
	int ncall;       /* streams (llama-imatrix: chunks) it was seen in */
	int64_t n_rows;  /* activation rows summed */
	double *sumsq;   /* [K] sum of x^2 (from a file: mean x^2 * n_rows) */
	double *H;       /* [K * K] sum of x x^T, or NULL */
} quant_stat;

typedef struct quant_calib {
	quant_stat *s;
	int n, cap;
	int last_call;
	char dataset[256];
} quant_calib;

typedef void (*quant_progress_fn)(void *user, int done, int total, const char *name);

/* Runs the model at path over the token streams (int32 [n][len], ids
 * checked against the model's vocabulary) and sums every matrix's input
 * statistics; Hessians for row lengths <= hessian_max_k (0: none).
 * Returns 0 or an error with a message. */
int quant_calib_collect(quant_calib *c, const char *model_path, const char *tokens, int len,
			int hessian_max_k, quant_progress_fn progress, void *user, char *err,
			size_t errlen);
int quant_imatrix_write(const quant_calib *c, const char *path, char *err, size_t errlen);
/* Reads llama.cpp's format (bounded: at most 65536 entries, names under
 * QUANT_NAME_MAX, nval <= 1 << 24); entries add to c's. */
int quant_imatrix_read(quant_calib *c, const char *path, char *err, size_t errlen);
const quant_stat *quant_calib_find(const quant_calib *c, const char *name);
void quant_calib_free(quant_calib *c);

/* Quantizes rows x K floats W (modified: GPTQ feeds errors into it) into
 * out (rows * kern_row_size(t, K) bytes) as described above; st may be NULL
 * (round to nearest). Returns 0, HERD_E_INVAL or -ENOMEM. */
int quant_rows(const kern_ops *ops, kern_type t, float *W, int64_t rows, int64_t K,
	       const quant_stat *st, void *out);

/* 1 when t is a weight type herd can write (see above). */
int quant_is_weight_type(const kern_ops *ops, int t);
/* Comma-separated names of those types, into buf. */
void quant_weight_type_names(const kern_ops *ops, char *buf, size_t len);

typedef struct quant_note {
	const char *name;   /* tensor */
	int64_t ne0, ne1;
	kern_type src, wanted, got;
	const char *how;    /* "rtn", "imatrix", "gptq" or "copy" */
} quant_note;
typedef void (*quant_note_fn)(void *user, const quant_note *n);

typedef struct quant_opts {
	const char *type;                 /* -t: a file type (mix) or a weight type */
	const char *calib;                /* --calib TOKENS, or NULL */
	int calib_len;                    /* stream length (default 128) */
	const char *imatrix_in, *imatrix_out;
	const char *overrides[QUANT_MAX_OVERRIDES]; /* "SUBSTRING=TYPE" */
	int n_overrides;
	int n_threads;                    /* <= 0: every CPU */
	int standard_only;                /* never herd's own types (KERN_TYPE_HQ*) */
	size_t target_bytes;              /* --mix auto: file budget, or */
	double target_bpw;                /* bits per matrix weight (0: neither) */
	int mix_streams;                  /* calibration streams measured (<= 0: 8) */
	quant_note_fn note;               /* per tensor, may be NULL */
	quant_progress_fn progress;       /* per tensor written, may be NULL */
	void *user;
} quant_opts;

/* --mix auto (target_bytes or target_bpw set, calib required): for every
 * quantizable tensor, each candidate type (every quantized weight type
 * whose block divides its rows, herd's own unless standard_only, and F16)
 * is tried alone (the rest as in the file) and its KL to the unquantized
 * model measured on the first 8 calibration streams; then each tensor
 * takes argmin KL + lambda * bytes with lambda bisected to the largest
 * plan that fits the budget (the header and the unquantized tensors
 * counted). types[i] gets tensor i's choice (others untouched). Cost:
 * one evaluation per candidate: meant for small models. Returns 0,
 * HERD_E_INVAL (a budget no plan fits, with the numbers) or an error. */
int quant_mix_auto(const char *in, const quant_calib *c, const quant_opts *o, kern_type *types,
		   char *err, size_t errlen);

/* Writes out (atomically) from in. Returns 0, HERD_E_UNSUPPORTED (unknown
 * type: the message lists the known ones), HERD_E_INVAL (bad override),
 * the reader's, calibration's and writer's errors; message in err. */
int quant_model(const char *in, const char *out, const quant_opts *o, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
