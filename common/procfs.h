/* Memory figures of a process from /proc, for the tests that bound a
 * broker's growth and the tools that report PSS (herd demo, herd bench
 * serve): one reader of "<Field>: N kB" lines for status and smaps_rollup. */
#ifndef HERD_COMMON_PROCFS_H
#define HERD_COMMON_PROCFS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

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

#endif
