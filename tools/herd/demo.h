/* The process machinery of `herd demo`, shared with `herd bench serve`:
 * a private working directory, herdd started on the model (or a running
 * broker at a given socket), N `herd agent` processes at a go barrier,
 * their JSON lines read and tallied, memory measured, everything stopped
 * and cleaned up (tools/herd/cmd_demo.c). */
#ifndef HERD_TOOLS_HERD_DEMO_H
#define HERD_TOOLS_HERD_DEMO_H

#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "herd/herd.h"
#include "shm/image.h"

typedef struct demo_opts {
	long agents, requests, max_tokens, stream_every, threads, max_batch;
	const char *model;
	int json, local, keep_image;
	/* herd bench serve */
	const char *socket;      /* a running broker: none is started */
	const char *model_name;  /* the model to request; default the broker's first */
	const char *config;      /* --config for the broker started */
	char *const *extra;      /* more arguments for every agent; NULL-terminated */
	int no_attach;           /* agents do not attach (and touch) the image */
} demo_opts;

typedef struct demo_agent {
	pid_t pid;
	int fd;            /* read end of its stdout pipe; -1 after EOF */
	char *buf;         /* bytes of an incomplete line */
	size_t len, cap;
	int ready, finished, fatal;
	double attach_ms, local_ms;
} demo_agent;

typedef struct dvec {
	double *v;
	size_t n, cap;
} dvec;

typedef struct demo {
	demo_opts o;
	char dir[64], sock[128], log[128], alog[128];
	char herd[PATH_MAX], herdd[PATH_MAX], herdctl[PATH_MAX], model[PATH_MAX];
	char segment[SHM_IMAGE_NAME_MAX + 8];
	uint64_t image_bytes;
	pid_t broker;
	int sig_fd, interrupted;
	sigset_t old_mask;
	int go_w, exit_w; /* barrier write ends: closing them releases the agents */
	demo_agent *ag;
	long n_ag;
	dvec lat, first, attach, local;
	dvec ttft;       /* load-mode agents (herd bench serve) */
	dvec tpot;       /* per streamed request: time per output token after the first */
	uint64_t n_cached, n_merged, n_hit, n_repeat;
	char model_name[72];
	long req_ok, req_failed;
	uint64_t gen_tokens, prompt_tokens;
	double broker_s, ready_s; /* start-up of the broker, of the agents */
	double broker_cpu_s;      /* the broker's CPU time (user + system) while measured */
	double tpot_avg, step_gap_p95; /* the broker's own figures (herdctl models) */
	int random_weights;       /* general.name says it is a mkmodel demo */
} demo;

int dvec_push(dvec *d, double x);
/* Nearest-rank percentile of d (sorted in place); 0 when empty. */
double pct(dvec *d, double q);
/* Pss and Rss of pid in bytes (0 when unreadable). */
void proc_mem(pid_t pid, uint64_t *pss, uint64_t *rss);
/* Signals, working directory, paths, the model (unless o.socket). 0 or -1. */
int demo_setup(demo *d);
/* Starts the broker (unless o.socket) and the agents; waits until every
 * agent is ready. *c: a connection of the tool's own. 0 or -1. */
int demo_start(demo *d, herd_client **c);
/* Reads agent output until all are ready (phase 0) or finished (1). */
int demo_pump(demo *d, int phase, double timeout_s);
/* Stops everything, removes what the run made; frees d. The exit status. */
int demo_cleanup(demo *d, int status);
/* Runs herdctl --json ARGS against the broker; the parsed reply or NULL. */
struct json_object *demo_herdctl(const demo *d, const char *args);

#define DEMO_EXIT_INTERRUPTED 130 /* 128 + SIGINT, as a shell reports it */
#define DEMO_RUN_TIMEOUT_S 3600 /* for every agent to finish its requests */

#endif
