/* Running the real `herd` binary from a test: a command through sh with
 * its stdout and stderr captured into files of a scratch directory. */
#ifndef HERD_TESTS_CLI_RUN_H
#define HERD_TESTS_CLI_RUN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* Runs cmd (a whole sh command line, lists too) in scratch directory dir; captures stdout and stderr
 * (each up to cap bytes, NUL-terminated; a NULL buffer skips it) and
 * returns the exit status (-1 when killed by a signal). */
static inline int cli_run(const char *dir, const char *cmd, char *out, size_t cap, char *err,
			  size_t ecap)
{
	char full[8192], of[256], ef[256];
	snprintf(of, sizeof(of), "%s/out", dir);
	snprintf(ef, sizeof(ef), "%s/err", dir);
	snprintf(full, sizeof(full), "( %s ) >'%s' 2>'%s'", cmd, of, ef);
	int st = system(full);
	const char *files[2] = {of, ef};
	char *bufs[2] = {out, err};
	size_t caps[2] = {cap, ecap};
	for (int i = 0; i < 2; i++) {
		if (!bufs[i])
			continue;
		FILE *f = fopen(files[i], "rb");
		size_t n = f ? fread(bufs[i], 1, caps[i] - 1, f) : 0;
		bufs[i][n] = '\0';
		if (f)
			fclose(f);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A test's scratch directory and the programs it runs: the herd binary
 * (HERD_BIN, else the build's) and the fixtures folder (HERD_FIXTURES,
 * else fx_default); dir from the template /tmp/herd-test-NAME-XXXXXX. */
static inline int cli_scratch(char *dir, size_t n, const char *name, const char **bin,
			      const char *bin_default, const char **fx, const char *fx_default)
{
	*bin = getenv("HERD_BIN");
	if (!*bin || !**bin)
		*bin = bin_default;
	*fx = getenv("HERD_FIXTURES");
	if (!*fx || !**fx)
		*fx = fx_default;
	snprintf(dir, n, "/tmp/herd-test-%s-XXXXXX", name);
	return mkdtemp(dir) ? 0 : -1;
}

static inline int cli_scratch_rm(const char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* cli_run of a printf-formatted command line. */
static inline int cli_vrun(const char *dir, char *out, size_t cap, char *err, size_t ecap,
			   const char *fmt, va_list ap)
{
	char cmd[4096];
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	return cli_run(dir, cmd, out, cap, err, ecap);
}

static inline long cli_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

#endif
