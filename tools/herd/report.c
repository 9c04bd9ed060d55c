/* The benchmark report: JSON, markdown and gnuplot figures (report.h).
 *
 * Every figure is a data file (NAME.dat), a gnuplot script (NAME.gp) that
 * draws it twice, pngcairo into NAME.png and svg into NAME.svg, and one
 * gnuplot run in DIR. The scripts and data stay in DIR, so a figure can be
 * redrawn or restyled by hand (`cd DIR && gnuplot NAME.gp`). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

#define REPORT_FIG_MAX 8

typedef struct report_ctx {
	const char *dir;
	const report_spec *s;
	json_object *runs;
	size_t n;
	char fig_name[REPORT_FIG_MAX][64], fig_caption[REPORT_FIG_MAX][128];
	int n_figs;
} report_ctx;

json_object *report_samples(const double *v, size_t n)
{
	json_object *a = json_object_new_array_ext((int)n);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_double(v[i]));
	return a;
}

/* The value at a dotted key path of o, or NULL. */
static json_object *report_at(json_object *o, const char *path)
{
	char part[64];
	while (o && *path) {
		const char *dot = strchr(path, '.');
		size_t len = dot ? (size_t)(dot - path) : strlen(path);
		if (len >= sizeof(part))
			return NULL;
		memcpy(part, path, len);
		part[len] = 0;
		json_object *v = NULL;
		if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, part, &v))
			return NULL;
		o = v;
		path += len + (dot != NULL);
	}
	return o;
}

static int report_num(json_object *run, const char *path, double *out)
{
	json_object *v = report_at(run, path);
	if (!v || !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
		return 0;
	*out = json_object_get_double(v);
	return 1;
}

static FILE *report_open(const report_ctx *c, const char *name, const char *ext)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s%s", c->dir, name, ext) >= (int)sizeof(path)) {
		fprintf(stderr, "herd bench: --report: path too long in '%s'\n", c->dir);
		return NULL;
	}
	FILE *f = fopen(path, "w");
	if (!f)
		fprintf(stderr, "herd bench: --report: cannot write %s: %s\n", path, strerror(errno));
	return f;
}

static int report_close(FILE *f, const char *name)
{
	if (ferror(f) | fclose(f)) {
		fprintf(stderr, "herd bench: --report: writing %s failed\n", name);
		return -1;
	}
	return 0;
}

/* mkdir -p */
static int report_mkdir(const char *dir)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -1;
	for (char *s = p + 1;; s++) {
		const char c = *s;
		if (c == '/' || c == 0) {
			*s = 0;
			if (mkdir(p, 0755) && errno != EEXIST) {
				fprintf(stderr, "herd bench: --report: cannot make %s: %s\n", p, strerror(errno));
				return -1;
			}
			*s = c;
		}
		if (!c)
			return 0;
	}
}

/* gnuplot NAME.gp in the report's directory. 0 or -1. */
static int report_gnuplot(const report_ctx *c, const char *name)
{
	char script[96];
	snprintf(script, sizeof(script), "%s.gp", name);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (chdir(c->dir) == 0)
			execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
		fprintf(stderr, "herd bench: --report: gnuplot not found (Debian: apt-get install gnuplot-nox)\n");
		return -1;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "herd bench: --report: gnuplot failed on %s/%s\n", c->dir, script);
		return -1;
	}
	return 0;
}

/* NAME.gp: the figure's frame, then `plot` with the clauses, drawn as PNG
 * then SVG; runs gnuplot and lists the figure. */
static int report_figure(report_ctx *c, const char *name, const char *caption, const char *xlabel,
			 const char *ylabel, const char *plot)
{
	FILE *f = report_open(c, name, ".gp");
	if (!f)
		return -1;
	fprintf(f,
		"# %s: %s (drawn by herd bench --report; data in %s.dat)\n"
		"set terminal pngcairo size 960,560 font 'sans,10'\n"
		"set output '%s.png'\n"
		"set title \"%s\"\nset xlabel \"%s\"\nset ylabel \"%s\"\n"
		"set grid\nset key below\nset yrange [0:*]\n"
		"plot %s\n"
		"set terminal svg size 960,560 font 'sans,10' background '#ffffff'\n"
		"set output '%s.svg'\nreplot\nunset output\n",
		name, caption, name, name, caption, xlabel, ylabel, plot, name);
	if (report_close(f, name) || report_gnuplot(c, name))
		return -1;
	if (c->n_figs < REPORT_FIG_MAX) {
		snprintf(c->fig_name[c->n_figs], sizeof(c->fig_name[0]), "%s", name);
		snprintf(c->fig_caption[c->n_figs++], sizeof(c->fig_caption[0]), "%s", caption);
	}
	return 0;
}

/* Appends one clause per present column: 'NAME.dat' using 1:k ... */
static void report_clauses(char *plot, size_t cap, const char *name, const report_col *cols,
			   const int *present, int n)
{
	size_t len = strlen(plot);
	for (int k = 0; k < n; k++)
		if (present[k])
			len += (size_t)snprintf(plot + len, len < cap ? cap - len : 0,
						"%s'%s.dat' using 1:%d with linespoints lw 2 pt 7 title \"%s\"",
						len ? ", " : "", name, k + 2, cols[k].title);
}

/* A figure of columns against the swept variable; scale divides the values.
 * Nothing when no run has any of the columns. */
static int report_xy(report_ctx *c, const char *name, const char *caption, const report_col *cols,
		     int ncols, double scale, const char *ylabel)
{
	int present[4] = {0}, any = 0;
	double v;
	for (int k = 0; k < ncols && cols[k].key; k++)
		for (size_t i = 0; i < c->n; i++)
			if (report_num(json_object_array_get_idx(c->runs, i), cols[k].key, &v))
				any = present[k] = 1;
	if (!any)
		return 0;
	FILE *f = report_open(c, name, ".dat");
	if (!f)
		return -1;
	fprintf(f, "# %s", c->s->x_key);
	for (int k = 0; k < ncols && cols[k].key; k++)
		fprintf(f, " %s", cols[k].key);
	for (size_t i = 0; i < c->n; i++) {
		json_object *run = json_object_array_get_idx(c->runs, i);
		double x = 0;
		report_num(run, c->s->x_key, &x);
		fprintf(f, "\n%g", x);
		for (int k = 0; k < ncols && cols[k].key; k++)
			if (report_num(run, cols[k].key, &v))
				fprintf(f, " %.6g", v / scale);
			else
				fprintf(f, " NaN");
	}
	fprintf(f, "\n");
	if (report_close(f, name))
		return -1;
	char plot[2048] = "";
	report_clauses(plot, sizeof(plot), name, cols, present, ncols);
	return report_figure(c, name, caption, c->s->x_title, ylabel, plot);
}

static int cmp_d(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* One block of the CDF file: the run's sorted samples of key against the
 * fraction at or below. 1 when written, 0 when the run has none. */
static int report_cdf_block(FILE *f, json_object *run, const char *key)
{
	json_object *a = report_at(json_object_object_get(run, "samples"), key);
	const size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
	double *v = n ? malloc(n * sizeof(double)) : NULL;
	if (!v)
		return 0;
	for (size_t i = 0; i < n; i++)
		v[i] = json_object_get_double(json_object_array_get_idx(a, i));
	qsort(v, n, sizeof(double), cmp_d);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%.6g %.6g\n", v[i], (double)(i + 1) / (double)n);
	free(v);
	return 1;
}

/* The distribution of one sample key: a CDF step line per run. */
static int report_cdf(report_ctx *c, const report_col *col)
{
	char name[64], caption[128], plot[4096] = "";
	snprintf(name, sizeof(name), "%s_cdf", col->key);
	snprintf(caption, sizeof(caption), "%s: distribution (CDF)", col->title);
	FILE *f = report_open(c, name, ".dat");
	if (!f)
		return -1;
	size_t len = 0;
	int block = 0;
	for (size_t i = 0; i < c->n; i++) {
		json_object *run = json_object_array_get_idx(c->runs, i);
		double x = 0;
		report_num(run, c->s->x_key, &x);
		fprintf(f, "%s# %s = %g\n", block ? "\n\n" : "", c->s->x_key, x);
		if (!report_cdf_block(f, run, col->key))
			fprintf(f, "NaN NaN\n"); /* keeps the block numbering */
		else
			len += (size_t)snprintf(plot + len, len < sizeof(plot) ? sizeof(plot) - len : 0,
						"%s'%s.dat' index %d using 1:2 with steps lw 2 title \"%s %g\"",
						len ? ", " : "", name, block, c->s->x_title, x);
		block++;
	}
	if (report_close(f, name))
		return -1;
	if (!len)
		return 0;
	char xlabel[96];
	snprintf(xlabel, sizeof(xlabel), "%s (ms)", col->title);
	return report_figure(c, name, caption, xlabel, "fraction of samples at or below", plot);
}

static void report_cell(FILE *f, json_object *run, const char *key)
{
	json_object *v = report_at(run, key);
	const size_t n = strlen(key);
	if (!v)
		fprintf(f, " - |");
	else if (n > 6 && !strcmp(key + n - 6, "_bytes") && !json_object_is_type(v, json_type_string))
		fprintf(f, " %.1f MiB |", json_object_get_double(v) / 1048576.0);
	else if (json_object_is_type(v, json_type_double))
		fprintf(f, fabs(json_object_get_double(v)) >= 100 ? " %.1f |" : " %.4g |",
			json_object_get_double(v));
	else
		fprintf(f, " %s |", json_object_get_string(v));
}

/* report.md: what ran, the table of runs, the figures. */
static int report_markdown(const report_ctx *c, int argc, char **argv)
{
	FILE *f = report_open(c, "report", ".md");
	if (!f)
		return -1;
	char when[64];
	time_t now = time(NULL);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
	fprintf(f, "# %s report\n\n%s, %zu run%s. Every run with its raw samples is in "
		   "[bench.json](bench.json).\n\n```sh\nherd", c->s->title, when, c->n,
		c->n == 1 ? "" : "s");
	for (int i = 0; i < argc; i++)
		fprintf(f, " %s", argv[i]);
	fprintf(f, "\n```\n\n| %s |", c->s->x_title);
	for (int k = 0; k < REPORT_MAX_COLS && c->s->table[k].key; k++)
		fprintf(f, " %s |", c->s->table[k].title);
	fprintf(f, "\n|---|");
	for (int k = 0; k < REPORT_MAX_COLS && c->s->table[k].key; k++)
		fprintf(f, "---:|");
	fprintf(f, "\n");
	for (size_t i = 0; i < c->n; i++) {
		json_object *run = json_object_array_get_idx(c->runs, i);
		fprintf(f, "|");
		report_cell(f, run, c->s->x_key);
		for (int k = 0; k < REPORT_MAX_COLS && c->s->table[k].key; k++)
			report_cell(f, run, c->s->table[k].key);
		fprintf(f, "\n");
	}
	fprintf(f, "\n## Figures\n");
	for (int i = 0; i < c->n_figs; i++) {
		const char *n = c->fig_name[i], *cap = c->fig_caption[i];
		fprintf(f, "\n### %s\n\n![%s](%s.svg)\n\n[PNG](%s.png), data [%s.dat](%s.dat), "
			   "script [%s.gp](%s.gp)\n", cap, cap, n, n, n, n, n, n);
	}
	if (!c->s->quality[0].key)
		fprintf(f, "\nQuality: not measured by this benchmark (random or real weights give the "
			   "same speed; quality is measured on the real fixtures).\n");
	return report_close(f, "report.md");
}

int report_write(const char *dir, const report_spec *s, json_object *runs, int argc, char **argv)
{
	report_ctx c = {.dir = dir, .s = s, .runs = runs, .n = json_object_array_length(runs)};
	if (report_mkdir(dir))
		return -1;
	FILE *f = report_open(&c, "bench", ".json");
	if (!f)
		return -1;
	fprintf(f, "%s\n", json_object_to_json_string_ext(runs, JSON_C_TO_STRING_PRETTY |
								JSON_C_TO_STRING_NOSLASHESCAPE));
	if (report_close(f, "bench.json"))
		return -1;
	for (int k = 0; k < 4 && s->samples[k].key; k++)
		if (report_cdf(&c, &s->samples[k]))
			return -1;
	char ylabel[64];
	snprintf(ylabel, sizeof(ylabel), "%s", s->tput_unit);
	if (report_xy(&c, "throughput", "Throughput", s->tput, 4, 1, ylabel) ||
	    report_xy(&c, "memory", "Memory (PSS)", s->mem, 4, 1048576.0, "MiB") ||
	    report_xy(&c, "quality", "Quality", s->quality, 4, 1, "value"))
		return -1;
	return report_markdown(&c, argc, argv);
}
