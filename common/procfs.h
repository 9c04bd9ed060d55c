/* Memory and CPU figures of a process from /proc, for the tests that bound a
 * broker's growth and the tools that report PSS (herd demo, herd bench
 * serve): one reader of "<Field>: N kB" lines for status and smaps_rollup. */
#ifndef HERD_COMMON_PROCFS_H
#define HERD_COMMON_PROCFS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Bytes of the "<field> N kB" line of /proc/<pid>/<file> ("status" with
 * "VmRSS:" or "VmHWM:", "smaps_rollup" with "Pss:"); 0 when the process or
 * the line is gone. */
static inline uint64_t proc_mem_bytes(pid_t pid, const char *file, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	uint64_t v = 0;
	const size_t n = strlen(field);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kb;
		if (!strncmp(line, field, n) && sscanf(line + n, " %llu kB", &kb) == 1) {
			v = (uint64_t)kb * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

/* User + system CPU seconds of process pid so far (/proc/<pid>/stat); 0 when
 * unreadable. */
static inline double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')'); /* the name may hold spaces */
	unsigned long long ut = 0, st = 0;
	/* after the name: state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

#endif
