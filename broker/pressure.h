/* Memory pressure: PSI triggers and eBPF counters, and an ordered list of
 * shedding actions.
 *
 * Source. The broker's cgroup v2 `memory.pressure` when it is in a cgroup
 * other than the root one (found from /proc/self/cgroup and the cgroup2
 * mount in /proc/self/mountinfo), else `/proc/pressure/memory`. A PSI
 * trigger ("some TRIGGER_US WINDOW_US") is written to it and polled for
 * POLLPRI on the pressure module's own thread: the event loop never waits
 * on it. The same file is read every tick (250 ms) for the avg10/avg60/
 * total values that every log line and `herdctl pressure` show, and the
 * growth of `some total` over the last window is a pressure signal too
 * (so a source that refuses triggers still works, by polling).
 *
 * Second signal (eBPF, bpf/herd_mem.bpf.c, when the build had
 * clang/bpftool/libbpf and the kernel allows loading it): direct-reclaim
 * stall time (and memory-cgroup reclaim stall time, where the kernel has
 * those tracepoints) of the registered herd processes (the broker and the agents
 * that attached an image), per second; past `stall_ms_per_s` it counts as
 * pressure. The same program counts page faults (all, and inside image
 * mappings) and OOM-kill victims per registered process. Without the
 * privilege or kernel support the broker logs why once and runs on PSI
 * alone.
 *
 * Actions. Each has a rank; they run in rank order, one step per
 * escalation: while pressure persists, every `escalate_ms` the next action
 * that finds something to shed runs (an action returning 0 had nothing to
 * do and the next one is tried at once). The documented order:
 *
 *   PRESSURE_RANK_RESPCACHE   shrink the response cache
 *   PRESSURE_RANK_PREFIX      drop unreferenced prefix (KV) pages
 *   PRESSURE_RANK_HEAP        return the broker's free heap to the kernel (malloc_trim)
 *   PRESSURE_RANK_IDLE_MODELS evict idle models
 *   PRESSURE_RANK_KV          shrink the KV budget
 *   PRESSURE_RANK_REFUSE      refuse new requests and loads (err -EAGAIN naming the pressure)
 *
 * Every action run is logged with the PSI values (some/full avg10, avg60,
 * total) and the stall rate that triggered it, and kept in a ring of the
 * last PRESSURE_EVENTS events (`herdctl pressure`). Recovery (hysteresis):
 * once no pressure signal was seen for `recover_ms` and the `some` stall
 * of the last window is below half the trigger, the actions that have an
 * undo (refuse) are undone in reverse order and the escalation starts over.
 *
 * Threads: the actions run on the pressure thread and must be safe to call
 * from it. pressure_add_action before pressure_start; pressure_refusing,
 * pressure_snapshot and pressure_register_pid from any thread.
 */
#ifndef HERD_BROKER_PRESSURE_H
#define HERD_BROKER_PRESSURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/log.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
	PRESSURE_RANK_RESPCACHE = 100,
	PRESSURE_RANK_PREFIX = 200,
	PRESSURE_RANK_HEAP = 250,
	PRESSURE_RANK_IDLE_MODELS = 300,
	PRESSURE_RANK_KV = 400,
	PRESSURE_RANK_REFUSE = 900,
};

enum {
	PRESSURE_MAX_ACTIONS = 16,
	PRESSURE_EVENTS = 32,       /* events kept for herdctl pressure */
	PRESSURE_NAME_MAX = 32,
	PRESSURE_MSG_MAX = 160,
	PRESSURE_PROCS_SHOWN = 64,  /* per-process eBPF rows in a snapshot */
};

/* One line of a PSI file ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0"). */
typedef struct psi_line {
	double avg10, avg60, avg300; /* percent */
	uint64_t total;              /* microseconds stalled since boot */
} psi_line;

typedef struct psi_sample {
	psi_line some, full;
	int has_full; /* the system-wide cpu file has no full line on old kernels */
} psi_sample;

/* Parses a PSI file's text (len bytes, need not be NUL-terminated).
 * Returns 0, or HERD_E_FORMAT with a message naming the bad line or field. */
int psi_parse(const char *text, size_t len, psi_sample *out, char *err, size_t errlen);

/* Settings (the "pressure" object of the configuration, broker/config.h). */
typedef struct pressure_opts {
	const char *psi_path;     /* NULL: discover (cgroup v2 memory.pressure, else /proc/pressure/memory) */
	uint32_t trigger_us;      /* stall per window that counts as pressure (default 150000) */
	uint32_t window_us;       /* PSI trigger window (default 1000000; kernel: 500 ms .. 10 s) */
	int escalate_ms;          /* at most one more action per this interval (default 1000) */
	int recover_ms;           /* quiet time before recovering (default 10000) */
	uint32_t stall_ms_per_s;  /* eBPF direct-reclaim stall rate that counts as pressure; 0 = off */
	int bpf;                  /* 0: do not load the eBPF program */
	const blog *log;
} pressure_opts;

/* What triggered an action. */
typedef struct pressure_event {
	double t_unix;           /* wall clock, seconds */
	double t_mono_ms;
	const char *action;      /* points into the event ring's copy */
	int rank;
	int result;              /* > 0 shed, 0 nothing to shed, < 0 error; PRESSURE_UNDO for an undo */
	psi_sample psi;          /* values when it ran */
	double some_window_us;   /* growth of some total over the last window, scaled to window_us */
	double stall_ms_per_s;   /* eBPF direct-reclaim stall rate of herd processes */
	int trigger;             /* the PSI trigger fired */
	char msg[PRESSURE_MSG_MAX];
	char name[PRESSURE_NAME_MAX];
} pressure_event;
enum { PRESSURE_UNDO = 1000 };

/* An action. shed returns > 0 when it freed or stopped something, 0 when
 * it had nothing to shed, < 0 on error; it may describe what it did in
 * msg. undo (may be NULL) reverses it at recovery. */
typedef int (*pressure_shed_fn)(void *arg, const pressure_event *why, char *msg, size_t msglen);
typedef void (*pressure_undo_fn)(void *arg);

typedef struct pressure pressure;

/* Opens the PSI source and sets up the trigger. Returns 0, or -errno /
 * HERD_E_* with a message naming the file and the reason (a kernel without
 * PSI, psi=0). A trigger the kernel refuses is not fatal when the file
 * can be read: then err says so and *degraded = 1 (polling only, or the
 * window rounded up to 2 s without CAP_SYS_RESOURCE: err says which). */
int pressure_create(pressure **out, const pressure_opts *o, int *degraded, char *err,
		    size_t errlen);
void pressure_destroy(pressure *p); /* stops the thread; accepts NULL */

/* Adds an action (before pressure_start). Returns 0, HERD_E_LIMIT past
 * PRESSURE_MAX_ACTIONS, HERD_E_INVAL for a bad name. */
int pressure_add_action(pressure *p, int rank, const char *name, pressure_shed_fn shed,
			pressure_undo_fn undo, void *arg);
/* The broker's own actions on main today: heap trim and refuse. */
int pressure_add_builtin_actions(pressure *p);

/* Loads the eBPF program (when built and allowed) and registers the
 * calling process. Returns 0, or an error with the reason in err (the
 * broker logs it once and runs on PSI alone). */
int pressure_bpf_start(pressure *p, char *err, size_t errlen);
/* Registers/unregisters a herd process for the eBPF counters (no-op
 * without eBPF). Gone processes are dropped by the pressure thread. */
void pressure_register_pid(pressure *p, pid_t pid);

int pressure_start(pressure *p); /* the thread; 0 or -errno */

/* Non-zero while the refuse action is in force; why gets the reason
 * (PSI values) for the err sent to the peer. Any thread; p may be NULL. */
int pressure_refusing(const pressure *p, char *why, size_t whylen);

/* Drives the state machine with one observation (the thread calls it each
 * tick; tests call it directly with readings of their own). */
typedef struct pressure_obs {
	psi_sample psi;
	int trigger;            /* the PSI trigger fired since the last tick */
	double some_window_us;  /* some-total growth over the last window (scaled to window_us) */
	double stall_ms_per_s;  /* eBPF stall rate, 0 without eBPF */
} pressure_obs;
void pressure_step(pressure *p, const pressure_obs *obs, double now_ms);

typedef struct pressure_proc {
	int pid;
	uint64_t faults, image_faults, reclaim_ns, reclaims, oom_kills;
	int n_ranges;
} pressure_proc;

/* A consistent copy of the state for herdctl. */
typedef struct pressure_stats {
	char source[256];
	int trigger_ok;           /* a PSI trigger is armed (else polling) */
	char trigger_armed[64];   /* the trigger the kernel took ("some T W"), or "" */
	uint32_t trigger_us, window_us;
	psi_sample psi;
	double some_window_us, stall_ms_per_s;
	int level;                /* actions applied in this episode */
	int refusing;
	uint64_t triggers, episodes, actions_run, recoveries, refused;
	int bpf_on;
	char bpf_status[160];     /* "on", or why not */
	pressure_proc global;     /* pid 0: the whole machine (stalls, OOM kills) */
	pressure_proc procs[PRESSURE_PROCS_SHOWN];
	int n_procs;
	pressure_event events[PRESSURE_EVENTS]; /* oldest first */
	int n_events;
	char actions[PRESSURE_MAX_ACTIONS][PRESSURE_NAME_MAX]; /* in order */
	int action_ranks[PRESSURE_MAX_ACTIONS];
	int n_actions;
} pressure_stats;
void pressure_snapshot(pressure *p, pressure_stats *st);
/* Counts a request refused because of pressure (session.c). */
void pressure_note_refused(pressure *p);

#ifdef __cplusplus
}
#endif
#endif
