/* herd run: generate text from a prompt (or a one-turn chat). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "model/chat.h"
#include "model/sampler.h"
#include "model/textstream.h"
#include "common/clock.h"

static void run_usage(void)
{
	fprintf(stderr,
		"usage: herd run -m MODEL -p TEXT [-n N] [-t THREADS] [--temp T] [--seed S]\n"
		"                [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
		"                [--chat] [--system TEXT] [--ctx N]\n");
}

int cmd_run(int argc, char **argv)
{
	const char *model = NULL, *prompt = NULL, *system = NULL;
	long n_gen = 64, threads = 0, n_ctx = 0, v;
	int chat = 0, ok;
	double f;
	sampler_params sp = sampler_params_default();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-m") && next)
			model = argv[++i];
		else if (!strcmp(a, "-p") && next)
			prompt = argv[++i];
		else if (!strcmp(a, "--system") && next)
			system = argv[++i];
		else if (!strcmp(a, "-n")) {
			if (cli_int(a, next, 0, 1 << 20, &n_gen))
				return 2;
			i++;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
			if (cli_int(a, next, 0, 4096, &threads))
				return 2;
			i++;
		} else if (!strcmp(a, "--ctx")) {
			if (cli_int(a, next, 1, 1 << 20, &n_ctx))
				return 2;
			i++;
		} else if (!strcmp(a, "--temp")) {
			if (cli_float(a, next, &f))
				return 2;
			sp.temperature = (float)f;
			i++;
		} else if (!strcmp(a, "--top-k")) {
			if (cli_int(a, next, 0, 1 << 24, &v))
				return 2;
			sp.top_k = (int32_t)v;
			i++;
		} else if (!strcmp(a, "--top-p")) {
			if (cli_float(a, next, &f))
				return 2;
			sp.top_p = (float)f;
			i++;
		} else if (!strcmp(a, "--min-p")) {
			if (cli_float(a, next, &f))
				return 2;
			sp.min_p = (float)f;
			i++;
		} else if (!strcmp(a, "--repeat-penalty")) {
			if (cli_float(a, next, &f))
				return 2;
			sp.repeat_penalty = (float)f;
			i++;
		} else if (!strcmp(a, "--seed")) {
			sp.seed = cli_u64_or(next, &ok);
			if (!ok) {
				fprintf(stderr, "herd: --seed expects a non-negative integer, got '%s'\n",
					next ? next : "(nothing)");
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--chat"))
			chat = 1;
		else {
			fprintf(stderr, "herd run: unknown or incomplete option '%s'\n", a);
			run_usage();
			return 2;
		}
	}
	if (!model || !prompt) {
		fprintf(stderr, "herd run: %s is required\n", !model ? "-m MODEL" : "-p TEXT");
		run_usage();
		return 2;
	}
	llama_model *m = NULL;
	llama_ctx *c = NULL;
	sampler *smp = NULL;
	int32_t *ids = NULL;
	float *logits = NULL;
	int n = 0, rc = 1;
	llama_seq seq;
	llama_seq_init(&seq);
	if (cli_load(model, (int)threads, (int)n_ctx, &m, &c))
		return 1;
	if (chat) {
		chat_msg msgs[2];
		int nm = 0;
		if (system)
			msgs[nm++] = (chat_msg){"system", system};
		msgs[nm++] = (chat_msg){"user", prompt};
		int cap = (int)strlen(prompt) + (system ? (int)strlen(system) : 0) + 64;
		ids = malloc(sizeof(int32_t) * cap);
		n = ids ? chat_tokenize(m->vocab, msgs, nm, 1, ids, cap) : -1;
		if (n < 0 || n > cap) {
			fprintf(stderr, "herd run: cannot apply the chat template\n");
			goto out;
		}
	} else if ((rc = cli_tokenize(m->vocab, prompt, 1, &ids, &n))) {
		fprintf(stderr, "herd run: cannot tokenize the prompt: %s\n", herd_strerror(rc));
		rc = 1;
		goto out;
	}
	if (n + n_gen > llama_ctx_n_ctx(c)) {
		fprintf(stderr, "herd run: prompt (%d tokens) + %ld to generate exceeds the context (%d)\n",
			n, n_gen, llama_ctx_n_ctx(c));
		rc = 1;
		goto out;
	}
	rc = sampler_create(&smp, &sp, m->hp.n_vocab);
	if (rc) {
		fprintf(stderr, "herd run: bad sampling parameters: %s\n", herd_strerror(rc));
		rc = 1;
		goto out;
	}
	logits = malloc(sizeof(float) * m->hp.n_vocab);
	if (!logits)
		goto out;
	for (int i = 0; i < n; i++)
		sampler_accept(smp, ids[i]);
	double t0 = clock_mono_s();
	rc = llama_eval(c, &seq, ids, n, 0, logits);
	double t1 = clock_mono_s();
	int gen = 0;
	/* Pieces not yet printed: a UTF-8 character split over byte tokens is
	 * printed when its last byte arrives. */
	char piece[256], pend[sizeof(piece) + 4];
	size_t n_pend = 0;
	while (!rc && gen < n_gen) {
		int32_t tok = sampler_sample(smp, logits);
		sampler_accept(smp, tok);
		gen++;
		if (tok_is_eog(m->vocab, tok))
			break;
		int len = tok_piece(m->vocab, tok, piece, sizeof(piece));
		if (len > 0 && len <= (int)sizeof(piece)) {
			memcpy(pend + n_pend, piece, (size_t)len);
			n_pend += (size_t)len;
			const size_t keep = text_utf8_incomplete(pend, n_pend);
			fwrite(pend, 1, n_pend - keep, stdout);
			fflush(stdout);
			memmove(pend, pend + n_pend - keep, keep);
			n_pend = keep;
		}
		if (gen == n_gen)
			break;
		llama_batch_seq b = {&seq, &tok, 1, LLAMA_LOGITS_LAST, logits};
		rc = llama_decode(c, &b, 1);
	}
	double t2 = clock_mono_s();
	fwrite(pend, 1, n_pend, stdout);
	fputc('\n', stdout);
	if (rc) {
		fprintf(stderr, "herd run: evaluation failed: %s\n", herd_strerror(rc));
		rc = 1;
		goto out;
	}
	fprintf(stderr, "herd: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s), %d threads, %s kernels\n",
		n, t1 - t0, n / (t1 - t0), gen, t2 - t1, gen > 1 ? (gen - 1) / (t2 - t1) : 0.0,
		llama_ctx_n_threads(c), kern_isa_name(llama_ctx_isa(c)));
	rc = 0;
out:
	free(logits);
	free(ids);
	sampler_destroy(smp);
	llama_seq_reset(c, &seq);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
