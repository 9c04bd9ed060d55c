/* herd abuse: the victim-latency benchmark's pieces (tools/herd/cmd_abuse.c
 * drives, tools/herd/abuse_attack.c attacks). */
#ifndef HERD_TOOLS_ABUSE_H
#define HERD_TOOLS_ABUSE_H

#include <stddef.h>
#include <stdint.h>

/* Where and until when an attack runs. */
typedef struct abuse_target {
	const char *socket; /* broker socket path */
	const char *model;  /* model name the broker serves */
	double deadline_ms; /* on clock_mono_ms(): stop attacking then */
	int stop_fd;        /* >= 0: stop as well once this pipe reaches EOF */
} abuse_target;

/* What an attacker did and saw (one attacker process). */
typedef struct abuse_stats {
	long frames;       /* frames (or partial frames) sent */
	uint64_t bytes;    /* bytes sent */
	long conns;        /* connections opened */
	long conn_fail;    /* connect() refusals (EAGAIN, ECONNREFUSED, EMFILE...) */
	long closed;       /* connections the broker closed */
	long done, err, tok; /* replies read */
	char first_err[200]; /* message of the first `err` the broker sent */
} abuse_stats;

/* The attack names, NULL-terminated; abuse_attack_help(name) describes one. */
extern const char *const abuse_attack_names[];
const char *abuse_attack_help(const char *name);

/* Runs attack name against t until t->deadline_ms, filling st. Returns 0,
 * or -1 when the attack could not start at all (st->first_err says why). */
int abuse_attack_run(const char *name, const abuse_target *t, abuse_stats *st);

#endif
