/* `herd bench ... --report DIR`: the runs of a benchmark as files a person
 * reads (tools/herd/report.c): DIR/bench.json (every run, with its raw
 * samples), DIR/report.md (settings, a table of the runs, the figures) and
 * figures drawn by gnuplot, each as PNG and SVG: the latency distribution
 * (a CDF per run), throughput and memory against the swept variable
 * (agents, batch size) and quality when a run measured it. */
#ifndef HERD_TOOLS_HERD_REPORT_H
#define HERD_TOOLS_HERD_REPORT_H

#include <json-c/json.h>

/* A value of a run: a key path ("ttft_ms.p95") and its legend / column title. */
typedef struct report_col {
	const char *key, *title;
} report_col;

#define REPORT_MAX_COLS 12

typedef struct report_spec {
	const char *title;          /* "herd bench serve" */
	const char *x_key, *x_title; /* the swept variable: "agents" */
	report_col tput[4];         /* throughput figures, one unit */
	const char *tput_unit;      /* "tokens/s" */
	report_col mem[4];          /* bytes, drawn in MiB */
	report_col samples[4];      /* keys of each run's "samples": arrays of ms */
	report_col quality[4];      /* drawn when some run has them */
	report_col table[REPORT_MAX_COLS]; /* the markdown table's columns */
} report_spec;

/* Writes the report of runs (a JSON array of run objects, each with a
 * "samples" object) into dir (made when missing). argv: the command's
 * arguments after `herd`, quoted in the summary. 0, or -1 after printing why. */
int report_write(const char *dir, const report_spec *s, json_object *runs, int argc, char **argv);

/* A JSON array of the n doubles v (a run's samples). */
json_object *report_samples(const double *v, size_t n);

#endif
