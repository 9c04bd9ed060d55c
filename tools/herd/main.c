/* herd: run, inspect and benchmark LLaMA GGUF models on the CPU. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
	{.name = "run", .fn = cmd_run,
	 .help = "generate text: -m MODEL -p TEXT [-n N] [-t THREADS] [--temp T] [--seed S] [--chat]"},
	{.name = "logits", .fn = cmd_logits,
	 .help = "write logits: -m MODEL (-p TEXT | --tokens FILE --len L) -o OUT"},
	{.name = "eval", .fn = cmd_eval,
	 .help = "quality against a reference: MODEL --ref ORIGINAL --tokens FILE [--len L] [--json]"},
	{.name = "sample", .fn = cmd_sample,
	 .help = "sample token streams: MODEL -o FILE [-n N] [--len L] [--seed S]"},
	{.name = "quantize", .fn = cmd_quantize,
	 .help = "quantize: IN OUT -t TYPE [--calib TOKENS] [--imatrix FILE] (see --help)"},
	{.name = "tokenize", .fn = cmd_tokenize,
	 .help = "print token ids: -m MODEL [--no-bos] TEXT"},
	{.name = "mkmodel", .fn = cmd_mkmodel,
	 .help = "make a random-weight model: --shape tinyllama-1.1b|mini -t TYPE -o OUT"},
	{.name = "bench", .fn = cmd_bench,
	 .help = "measure speed: -m MODEL [-t THREADS] [-p 128] [-n 64] [-b B[,B...]] [--json]\n"
		 "            [--report DIR: JSON, markdown and gnuplot figures];\n"
		 "            bench serve: a broker under N agents (see herd bench serve --help)"},
	{.name = "demo", .fn = cmd_demo,
	 .help = "herdd + N agent processes: [--agents 69] [--requests-per-agent 2] [-m MODEL] [--json]"},
	{.name = "abuse", .fn = cmd_abuse,
	 .help = "victim latency under one attack: --socket PATH --model NAME --attack KIND (--list)"},
	{.name = "agent", .fn = cmd_agent}, /* hidden (no help): used by demo and the tests */
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
