/* herd: run, inspect and benchmark LLaMA GGUF models on the CPU. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
	{"run", cmd_run, "generate text: -m MODEL -p TEXT [-n N] [-t THREADS] [--temp T] [--seed S] [--chat]"},
	{"logits", cmd_logits, "write prompt logits: -m MODEL -p TEXT -o OUT"},
	{"tokenize", cmd_tokenize, "print token ids: -m MODEL [--no-bos] TEXT"},
	{"mkmodel", cmd_mkmodel, "make a random-weight model: --shape tinyllama-1.1b|mini -t TYPE -o OUT"},
	{"bench", cmd_bench, "measure speed: -m MODEL [-t THREADS] [-p 128] [-n 64] [--json]"},
	{"demo", cmd_demo, "herdd + N agent processes: [--agents 69] [--requests-per-agent 2] [-m MODEL] [--json]"},
	{"agent", cmd_agent, NULL}, /* hidden: used by demo and the tests */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: herd COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].help)
			fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "herd: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
