/* herdd configuration: a JSON file (json-c) plus command-line flags.
 *
 * File format (every key optional, unknown keys and wrong types are errors
 * naming the key):
 *
 *   {
 *     "socket": "/run/herd/herd.sock",
 *     "models": [ {"name": "tiny", "file": "/models/tiny.gguf", "type": "Q8_0"} ],
 *     "threads": 0,               0 = all online CPUs (or the CPUs of cpu_affinity)
 *     "cpu_affinity": "0-3,8",    pin the compute threads and the scheduler thread
 *                                 (a cpulist string or an array of CPU numbers; each
 *                                 must be online); absent: no pinning
 *     "state_dir": "/var/lib/herd",
 *     "max_frame": 1048576,       bytes
 *     "admin_group": "herd",      group whose members may send `admin`
 *     "batch": {                  (the same keys are also accepted at top level)
 *       "max_batch_size": 32,     or "auto": up to CFG_BATCH_AUTO_MAX running, each
 *                                 step sized by the cost model (broker/batchsize.h)
 *       "max_wait_time_ms": 2,
 *       "dynamic_batching": true,
 *       "priority_threshold": 10,
 *       "target_tpot_ms": 0,      p95 time per output token to hold; 0 = none
 *       "max_decode_delay_ms": 1000 without a target: prompts are prefilled first,
 *                                 a generating sequence waits at most this long; 0 = off
 *     },
 *     "ctx_size": 0,              positions per sequence; 0 = the model's
 *     "kv_cache_mb": 0,           KV pool per model; 0 = max_batch_size x ctx_size, capped at 1 GiB
 *     "kv_type": "f16",           KV cache elements: "f16", "q8_0" (about half) or "q4_0"
 *                                 (about a quarter); quantized ones need a head size
 *                                 that is a multiple of 32
 *     "draft_tokens": 8,          prompt-lookup speculation for greedy requests: at most
 *                                 this many drafted tokens per step (0 = off)
 *     "prefill_chunk": 128,       prompt tokens per step while others decode
 *     "max_tokens": 4096,         cap on a request's max_tokens (a larger one is clamped)
 *     "max_memory_mb": 0,         byte budget of the models (images + KV pools); 0 = unlimited
 *     "preload_confidence": 0.6,  a prediction below it never evicts a resident model
 *     "preload": true,            predictive preloading (false: models load on demand only)
 *     "catalog_flush_ms": 100,    the LMDB catalog commits its queued updates this often
 *     "max_share_mb": 16384,      largest GGUF file an agent may share (herd_model_share)
 *     "max_shared_models": 8,     models agents may share at once (0: sharing refused)
 *     (models[] entries also take "pinned": true and "preload": true)
 *     "limits": {                 per-connection limits of the loop (cfg_limits)
 *       "send_queue_bytes": 8388608,   unsent bytes after which a peer is cut off
 *       "send_queue_pause_bytes": 2097152, unsent bytes past which its input is not read
 *       "frame_timeout_ms": 10000,     a frame once begun completes within it
 *       "idle_timeout_ms": 0,          0 = off: quiet agents stay connected
 *       "max_connections": 1024,       connections in total
 *       "max_connections_per_uid": 256,
 *       "accept_backoff_ms": 100       accept pauses this long at EMFILE/ENFILE
 *     },
 *     "prefix_cache": true,       share the KV pages of common prompt prefixes
 *     "prefix_sharing": {         who shares them (trust domains, cfg_prefix_group)
 *       "scope": "uid",           "uid" (default) or "group"
 *       "groups": {"teamA": [{"uid": 1000}, {"name": "planner"}, {"group": "ops"}]}
 *     "response_cache": {         answers of deterministic requests, in
 *       "enabled": false,         <state_dir>/respcache.mdb (LMDB; broker/respcache.h)
 *       "max_mb": 256,            cap on the pages in use (LRU-ish eviction)
 *       "ttl_s": 86400            older entries are misses (and deleted); 0 = none
 *     "pressure": {               memory pressure (broker/pressure.h)
 *       "enable": true, "bpf": true,
 *       "trigger_us": 150000, "window_us": 1000000,  PSI trigger "some TRIGGER WINDOW"
 *       "escalate_ms": 1000,      one more shedding action at most this often
 *       "recover_ms": 10000,      quiet time before recovering
 *       "stall_ms_per_s": 100     eBPF direct-reclaim stall rate that is pressure; 0 = off
 *     },
 *     "http": {                   the HTTP face (broker/http.h); absent: no HTTP
 *       "listen": "127.0.0.1:8077", HOST:PORT, HOST an IPv4/[IPv6] literal or localhost;
 *                                 a non-loopback HOST needs tokens
 *       "tokens": [ {"name": "ci", "token": "s3cret..."} ], bearer tokens (16..256
 *                                 bytes); when given, every request but /healthz
 *                                 and /readyz needs one; the name is the agent's
 *       "ui": true                the dashboard at /ui
 *     },
 *     "agents": {                 per-agent limits and the priority policy
 *       "max_queued": 256,        requests of one connection without their done/err
 *       "max_running": 0,         sequences of one agent in the batch; 0 = max_batch_size/4 (>= 1)
 *       "max_prompt_bytes": 1048576, prompt text (or messages) of one request; a prompt
 *                                 longer than the context is refused before tokenizing anyway
 *       "max_stop": 8,            stop strings of one request
 *       "max_stop_bytes": 64,     bytes of one stop string
 *       "max_deadline_ms": 604800000, a longer deadline_ms is clamped (a week)
 *       "max_prio": 0,            priority allowance of an agent no rule matches
 *       "prio": [                 first matching rule wins; match on one of
 *         {"uid": 0, "max_prio": 100},          the peer's uid,
 *         {"gid": 1000, "max_prio": 20},        one of its groups,
 *         {"group": "ops", "max_prio": 20},     a group name (its gid),
 *         {"name": "planner", "max_prio": 5}    the agent name from hello
 *       ]
 *     }
 *   }
 *
 * Call order: cfg_init, then cfg_load_file / cfg_parse_json (file values),
 * then the cfg_set_* / cfg_add_model_spec flag overrides, then
 * cfg_finish (defaults from the environment values the program passes in,
 * validation), then read the fields. This module reads no environment
 * variable itself: tools/herdd does, into a cfg_env. cfg_fini releases everything. A cfg is plain data owned
 * by the caller; not thread-safe while being modified.
 */
#ifndef HERD_BROKER_CONFIG_H
#define HERD_BROKER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cfg_model {
	char *name; /* owned; [A-Za-z0-9._+-]{1,63}, not starting with '.', not "tmp" */
	char *file; /* owned; path of the GGUF file */
	char *type; /* owned; weight type to convert to, NULL = keep the file's */
	int pinned; /* never evicted (loaded at start) */
	int preload; /* loaded at start; evictable */
} cfg_model;

/* Connection limits (the "limits" object). Every one has a herdctl status
 * counter of how often it triggered. */
typedef struct cfg_limits {
	uint32_t send_queue_bytes;       /* default 8 MiB: past it the peer is cut off */
	uint32_t send_queue_pause_bytes; /* default 2 MiB: past it its input is not read */
	int frame_timeout_ms;            /* default 10000 */
	int idle_timeout_ms;             /* default 0: off */
	int max_connections;             /* default 1024 */
	int max_connections_per_uid;     /* default 256 */
	int accept_backoff_ms;           /* default 100 */
	int frame_budget_per_s;          /* default 50000: frame units a second per uid
					  * (1 per frame + 1 per KiB; broker/budget.h);
					  * 0: unlimited */
} cfg_limits;

typedef enum cfg_match { CFG_MATCH_UID = 1, CFG_MATCH_GID, CFG_MATCH_GROUP, CFG_MATCH_NAME } cfg_match;

/* One rule of the priority policy: who (uid, gid, group name or agent
 * name) may ask for priorities up to max_prio. */
typedef struct cfg_prio_rule {
	cfg_match match;
	uint32_t id;     /* UID, GID */
	char *name;      /* GROUP, NAME: owned */
	int max_prio;
} cfg_prio_rule;

/* Prefix sharing's trust domains (the "prefix_sharing" object): requests
 * share cached prompt prefixes only within one domain. scope "uid" (the
 * default): one domain per peer uid. scope "group": each named group is one
 * domain holding the agents that match any of its members (the agents.prio
 * rule syntax without max_prio: {"uid": N}, {"gid": N}, {"group": "name"},
 * {"name": "agent"}; first group that matches wins); an agent in no group
 * has its uid's domain. */
typedef enum cfg_prefix_scope { CFG_PREFIX_UID = 0, CFG_PREFIX_GROUP } cfg_prefix_scope;

typedef struct cfg_prefix_group {
	char *name;             /* owned */
	cfg_prio_rule *members; /* owned; max_prio unused */
	int n_members;
} cfg_prefix_group;

/* Per-agent limits (an agent = one connection) and the priority policy.
 * Every limit refuses a request with HERD_E_LIMIT naming it; the priority
 * is clamped to the allowance (agentlib sends no priority by default). */
typedef struct cfg_agents {
	int max_queued;          /* default 256 */
	int max_running;         /* default 0: max_batch_size / 4, at least 1 */
	uint32_t max_prompt_bytes; /* default 1 MiB (the frame limit) */
	int max_stop;            /* default 8 */
	int max_stop_bytes;      /* default 64 */
	uint64_t max_deadline_ms; /* default a week; longer deadlines are clamped */
	int max_prio;            /* default 0: nobody preempts unless a rule says so */
	cfg_prio_rule *rules;
	int n_rules;
} cfg_agents;

/* The "response_cache" object. */
typedef struct cfg_respcache {
	int enabled;     /* default 0 */
	int max_mb;      /* default 256 */
	uint64_t ttl_s;  /* default 86400; 0: entries never expire */
} cfg_respcache;
/* Memory pressure (the "pressure" object; broker/pressure.h). */
typedef struct cfg_pressure {
	int enable;              /* default 1: watch PSI (0: off) */
	int bpf;                 /* default 1: load the eBPF counters when allowed */
	uint32_t trigger_us;     /* default 150000: stall per window that is pressure */
	uint32_t window_us;      /* default 1000000 (kernel range 500000..10000000) */
	int escalate_ms;         /* default 1000: one more shedding action at most this often */
	int recover_ms;          /* default 10000: quiet time before undoing "refuse" */
	uint32_t stall_ms_per_s; /* default 100: eBPF direct-reclaim stall rate that is pressure; 0 off */
} cfg_pressure;
/* The "http" object (broker/http.h). */
typedef struct cfg_http_token {
	char *name;  /* owned; [A-Za-z0-9._+-]{1,63}: the agent name of its requests */
	char *token; /* owned; 16..256 printable bytes, no spaces */
} cfg_http_token;

typedef struct cfg_http {
	char *listen;           /* owned; NULL: HTTP off */
	cfg_http_token *tokens; /* owned [n_tokens] */
	int n_tokens;
	int ui;                 /* default 1: serve /ui */
} cfg_http;

#define CFG_HTTP_TOKEN_MIN 16
#define CFG_HTTP_TOKEN_MAX 256

/* Splits "HOST:PORT" (HOST: an IPv4 literal, a bracketed IPv6 literal or
 * "localhost"; PORT 0..65535, 0 = any free port) into a socket address.
 * *loopback is set when HOST is a loopback address. Returns 0 or
 * HERD_E_FORMAT with a message naming the value. */
struct sockaddr_storage;
int cfg_http_addr(const char *listen, struct sockaddr_storage *sa, unsigned *salen, int *loopback,
		  char *err, size_t errlen);

/* Running sequences at most under max_batch_size "auto" (the step sizing,
 * not this cap, then decides how many decode in each step). */
#define CFG_BATCH_AUTO_MAX 128

typedef struct cfg {
	char *socket_path;      /* owned; NULL until cfg_finish picks the default */
	cfg_model *models;
	int n_models;
	int threads;            /* <= 0: all online CPUs */
	int *cpus;              /* owned; cpu_affinity, ascending, each once; NULL: none */
	int n_cpus;
	char *cpu_affinity;     /* owned; cpus as a cpulist ("0-3,8"); NULL: none */
	char *state_dir;        /* owned; NULL until cfg_finish */
	uint32_t max_frame;     /* bytes; default 1 MiB */
	char *admin_group;      /* owned; NULL: only the broker's uid is admin */
	int max_batch_size;     /* default 32; CFG_BATCH_AUTO_MAX when batch_auto */
	int batch_auto;         /* max_batch_size "auto" */
	int target_tpot_ms;     /* default 0: no latency target */
	int max_decode_delay_ms; /* default 1000: prefill first (scheduler.h); 0 = off */
	int max_wait_time_ms;   /* default 2 */
	int dynamic_batching;   /* default 1 */
	int priority_threshold; /* default 10 */
	int ctx_size;           /* default 0: the model's context length */
	int kv_cache_mb;        /* default 0: automatic */
	int kv_type;            /* kern_type of the KV cache; default KERN_TYPE_F16 */
	int draft_tokens;       /* default 8: prompt-lookup draft length; 0 off */
	int prefill_chunk;      /* default 128 */
	int max_tokens;         /* default 4096 */
	int verbose;            /* 0 info, 1 debug */
	/* the model cache manager (broker/models.h) */
	uint64_t max_memory_mb; /* default 0: unlimited, every model loaded at start */
	double preload_confidence; /* default 0.6: a prediction below it never evicts */
	int catalog_flush_ms;   /* default 100: batch interval of the LMDB catalog */
	int preload_predict;    /* default 1: predictive preloading on */
	uint64_t max_share_mb;  /* default 16384: largest GGUF file an agent may share */
	int max_shared_models;  /* default 8: models agents may share (0: sharing off) */
	cfg_limits limits;
	cfg_agents agents;
	int prefix_cache;       /* default 1: share KV pages of common prompt prefixes */
	cfg_prefix_scope prefix_scope;
	cfg_prefix_group *prefix_groups;
	int n_prefix_groups;
	cfg_respcache response_cache;
	cfg_pressure pressure;
	cfg_http http;
} cfg;

void cfg_init(cfg *c);
void cfg_fini(cfg *c);

/* Reads a JSON object from path / text and applies its keys over c.
 * Returns 0, -errno (file unreadable), HERD_E_FORMAT (not JSON, not an
 * object, unknown key, wrong type or value out of range) or -ENOMEM, with a
 * message in err naming the file and the key. */
int cfg_load_file(cfg *c, const char *path, char *err, size_t errlen);
int cfg_parse_json(cfg *c, const char *text, char *err, size_t errlen);
/* Sets cpu_affinity from a cpulist ("0-3,8"): every CPU must be online.
 * Returns 0, HERD_E_FORMAT / HERD_E_INVAL with a message naming the bad
 * entry, or -ENOMEM. */
int cfg_set_cpu_affinity(cfg *c, const char *list, char *err, size_t errlen);

/* Adds (or replaces, by name) a model from "NAME=FILE[:TYPE]". The TYPE
 * suffix is the text after the last ':' when it holds no '/'. Returns 0,
 * HERD_E_INVAL (malformed spec, named in err) or -ENOMEM. */
int cfg_add_model_spec(cfg *c, const char *spec, char *err, size_t errlen);
/* Adds or replaces a model. type may be NULL. */
int cfg_add_model(cfg *c, const char *name, const char *file, const char *type, char *err,
		  size_t errlen);
/* Replaces a string field (socket_path, state_dir, admin_group). */
int cfg_set_str(char **field, const char *v);

#define CFG_PATH_MAX 4096 /* bytes of a default path, NUL included */

/* The environment values the defaults depend on, as the program read them
 * (NULL or "" = unset). */
typedef struct cfg_env {
	const char *runtime_dir; /* $XDG_RUNTIME_DIR */
	const char *state_home;  /* $XDG_STATE_HOME */
	const char *home;        /* $HOME */
} cfg_env;

/* Fills the defaults that depend on env (socket path, state directory;
 * env may be NULL: all unset) and validates: at least one model, batch
 * limits in range. Returns 0, HERD_E_INVAL with a message, or -ENOMEM. */
int cfg_finish(cfg *c, const cfg_env *env, char *err, size_t errlen);

/* The default socket path: <runtime_dir>/herd/herd.sock, or
 * /run/herd/herd.sock when runtime_dir is unset (root or system service).
 * Returns 0 or HERD_E_RANGE when it does not fit in n. */
int cfg_default_socket(char *buf, size_t n, const cfg_env *env);
/* The default state directory: <state_home>/herd, <home>/.local/state/herd,
 * or /var/lib/herd for root. Same returns. */
int cfg_default_state_dir(char *buf, size_t n, const cfg_env *env);

#ifdef __cplusplus
}
#endif
#endif
