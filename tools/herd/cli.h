/* Shared pieces of the `herd` command's subcommands. */
#ifndef HERD_TOOLS_CLI_H
#define HERD_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_serve(int argc, char **argv); /* `herd bench serve` */
int cmd_demo(int argc, char **argv);
int cmd_abuse(int argc, char **argv); /* tools/herd/cmd_abuse.c */
int cmd_eval(int argc, char **argv);   /* tools/herd/cmd_eval.c */
int cmd_sample(int argc, char **argv); /* tools/herd/cmd_sample.c */
int cmd_quantize(int argc, char **argv); /* tools/herd/cmd_quantize.c */
/* Hidden: one agent process of `herd demo` and the tests (tools/herd/agent.c). */
int cmd_agent(int argc, char **argv);

/* Parses a whole decimal integer in [lo, hi] or prints an error naming opt. */
int cli_int(const char *opt, const char *s, long lo, long hi, long *out);
/* A comma-separated list of such integers (at most max) into out[*n]. */
int cli_int_list(const char *opt, const char *s, long lo, long hi, long *out, int max, int *n);
int cli_float(const char *opt, const char *s, double *out);
uint64_t cli_u64_or(const char *s, int *ok);

/* The engine switches the environment gives the herd command. tools/ is
 * the only place that reads them; the libraries take them as options. */
typedef struct cli_env {
	int force_ref; /* HERD_FORCE_REF set (or HERD_ISA=ref): scalar reference kernels */
	int no_repack; /* HERD_NO_REPACK set: interleaving policy off */
	int max_isa;   /* HERD_ISA=avx2|avx512: kernels (and the interleaving
			* policy) of at most that level, as on a CPU without
			* the rest; 0: the CPU's best */
} cli_env;
/* Reads the environment; -1 (said on stderr) when HERD_ISA names no level. */
int cli_env_read(cli_env *e);
/* The interleaving policy the environment asks for (model/convert.h). */
int cli_repack_policy(const cli_env *e);

/* Loads a model (interleaved under the policy, model/convert.h) and makes a
 * context, with the cli_env switches; prints the error itself. */
int cli_load(const char *path, int n_threads, int n_ctx, int kv_type, llama_model **m,
	     llama_ctx **c);
/* Parses a KV cache type name (f16, q8_0, q4_0) for opt into *out, or
 * prints an error naming opt and returns -1. */
int cli_kv_type(const char *opt, const char *s, int *out);

/* A prompt as token ids from path (int32 LE, at most max ids, each in
 * [0, n_vocab)) into a malloc'd array. 0, or -1 after printing why (who
 * names the command). */
int cli_read_tokens(const char *who, const char *path, int max, int n_vocab, int32_t **ids, int *n);

/* Tokenizes text into a malloc'd array (*n ids); BOS first when add_bos. */
int cli_tokenize(const tok_vocab *v, const char *text, int add_bos, int32_t **ids, int *n);

/* Writes size bytes to path (created or truncated); prints the error and
 * removes the file on failure. Returns 0 or 1. */
int cli_write_file(const char *path, const void *data, size_t size);

/* Logits [len][n_vocab] of one token stream evaluated from an empty
 * sequence of c (tools/herd/cmd_eval.c). Returns 0 or llama_eval's error. */
int cli_stream_logits(llama_ctx *c, const int32_t *toks, int len, float *logits);

#endif
