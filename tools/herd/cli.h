/* Shared pieces of the `herd` command's subcommands. */
#ifndef HERD_TOOLS_CLI_H
#define HERD_TOOLS_CLI_H

#include <stdint.h>

#include "model/llama.h"

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
/* Hidden: one agent process of `herd demo` and the tests (tools/herd/agent.c). */
int cmd_agent(int argc, char **argv);

/* Parses a whole decimal integer in [lo, hi] or prints an error naming opt. */
int cli_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_float(const char *opt, const char *s, double *out);
uint64_t cli_u64_or(const char *s, int *ok);

/* Loads a model and makes a context; prints the error itself. */
int cli_load(const char *path, int n_threads, int n_ctx, llama_model **m, llama_ctx **c);

/* Tokenizes text into a malloc'd array (*n ids); BOS first when add_bos. */
int cli_tokenize(const tok_vocab *v, const char *text, int add_bos, int32_t **ids, int *n);

/* Monotonic seconds. */

#endif
