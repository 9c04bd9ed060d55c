/* libherd: the agent side of herd.
 *
 * An agent process links libherd (pkg-config herd) to talk to the herdd
 * broker over its Unix socket: connect, list the models, generate text
 * (blocking or streamed token by token), cancel; or attach a model's shared
 * image and run it in-process on the broker's read-only weight pages.
 *
 *     herd_client *c;
 *     herd_connect_opts o;
 *     herd_connect_opts_init(&o);
 *     o.name = "summariser-3";
 *     if (herd_connect(&c, &o)) {
 *             fprintf(stderr, "%s\n", herd_client_errmsg(c));
 *             herd_close(c);
 *             return 1;
 *     }
 *     herd_request r;
 *     herd_request_init(&r);
 *     r.model = "tinyllama";
 *     r.prompt = "Once upon a time";
 *     herd_result res;
 *     if (herd_generate(c, &r, &res) == 0)
 *             puts(res.text);
 *     herd_result_free(&res);
 *     herd_close(c);
 *
 * Errors: every int function returns 0 on success, -errno for system errors
 * or a HERD_E_* code (include/herd/error.h); herd_strerror() names both.
 * After a failed call on a client, herd_client_errmsg() holds a sentence
 * naming the problem (the socket path, the broker's own message, ...).
 *
 * Threads: a client carries one request at a time (generate or attach). Any
 * thread may make that call, but not two at once (the second gets -EBUSY).
 * herd_cancel() may be called from any thread at any time, including from
 * a streaming callback. Use one client per thread for parallel requests:
 * clients are cheap (one socket) and the broker batches them together.
 *
 * Wire protocol: docs/protocol.md. The client is a plain blocking socket
 * client; SIGPIPE is never raised (MSG_NOSIGNAL).
 */
#ifndef HERD_HERD_H
#define HERD_HERD_H

#include <stddef.h>
#include <stdint.h>

#include "herd/error.h" /* HERD_E_*, herd_strerror() */

#ifdef __cplusplus
extern "C" {
#endif

#define HERD_PROTOCOL_VERSION 1
/* herd_request.priority: use the connection's default (herd_connect_opts). */
#define HERD_PRIORITY_DEFAULT INT32_MIN
#define HERD_DEFAULT_TIMEOUT_MS 5000
#define HERD_SYSTEM_SOCKET "/run/herd/herd.sock"

/* ---- connection ------------------------------------------------------ */

typedef struct herd_client herd_client;

typedef struct herd_connect_opts {
	/* Broker socket. NULL: $HERD_SOCKET if set, else
	 * $XDG_RUNTIME_DIR/herd/herd.sock if that exists, else
	 * /run/herd/herd.sock if that exists, else the first of those two
	 * that applies (so the error names a sensible path). */
	const char *socket_path;
	const char *name;   /* agent name shown by herdctl; NULL: "pid-<pid>" */
	int priority;       /* default priority of this agent's requests (0 = normal) */
	int timeout_ms;     /* connect + hello/welcome; 0: HERD_DEFAULT_TIMEOUT_MS,
			     * < 0: wait forever */
	uint32_t max_frame; /* largest frame accepted from the broker; 0: 16 MiB */
} herd_connect_opts;

/* Fills o with the defaults (all zero / NULL). */
HERD_API void herd_connect_opts_init(herd_connect_opts *o);

/* The default socket path (see herd_connect_opts.socket_path) into buf.
 * Returns the length, or -ENAMETOOLONG when it does not fit in n bytes. */
HERD_API int herd_default_socket_path(char *buf, size_t n);

/* Connects to the broker, sends hello and waits for welcome, all within
 * o->timeout_ms. o may be NULL (defaults); its strings are copied.
 *
 * Like sqlite3_open(), *out receives a client handle even when the
 * connection fails (except for -ENOMEM and HERD_E_INVAL on a NULL out, when
 * *out is NULL), so herd_client_errmsg() can say why; the caller must
 * herd_close() it in every case, and may retry with herd_reconnect().
 *
 * Errors: -ENOENT (no socket at the path: "no broker is running at
 * <path>"), -ECONNREFUSED (a socket file but nobody listening: a broker
 * that died), -EACCES (not in the broker's group), -ENAMETOOLONG (path
 * longer than a Unix socket address), -ETIMEDOUT (no welcome in time),
 * HERD_E_VERSION (the broker speaks another protocol version), HERD_E_PROTO
 * (malformed welcome), -ECONNRESET (the broker closed the connection), the
 * code of an `err` the broker answered hello with, -ENOMEM. */
HERD_API int herd_connect(herd_client **out, const herd_connect_opts *o);

/* Closes the connection and frees the client and everything it returned
 * (model list). Accepts NULL. No other call on c may be running. Local
 * models attached through c stay valid (they do not depend on the
 * connection). */
HERD_API void herd_close(herd_client *c);

/* Drops the current connection (if any) and connects again with the same
 * options, e.g. after the broker restarted. Same errors as herd_connect.
 * No other call on c may be running. */
HERD_API int herd_reconnect(herd_client *c);

/* 1 while the connection is believed usable: 0 after a connection error
 * until herd_reconnect() succeeds. */
HERD_API int herd_connected(const herd_client *c);

/* A message about the last failed call on c ("" when there was none).
 * Valid until the next call on c; never NULL (c may be NULL: then a
 * message about that). Not updated by herd_cancel(). */
HERD_API const char *herd_client_errmsg(const herd_client *c);

/* From the broker's welcome. */
HERD_API uint64_t herd_agent_id(const herd_client *c);
/* Broker limits: its max frame size and max tokens per request. */
HERD_API void herd_limits(const herd_client *c, uint32_t *max_frame, uint32_t *max_tokens);

typedef struct herd_model_info {
	const char *name;     /* NUL-terminated */
	const char *digest;   /* hex; "" when the broker did not say */
	const char *segment;  /* shm object name; "" when not loaded */
	uint32_t n_vocab;
	uint32_t n_ctx;
	uint64_t image_bytes;
} herd_model_info;

/* The models the broker offered in its welcome. *models stays valid until
 * herd_reconnect() or herd_close(); owned by c. Returns 0 or HERD_E_INVAL
 * (NULL arguments), -ENOTCONN (never connected). */
HERD_API int herd_models(const herd_client *c, const herd_model_info **models, size_t *n);

/* ---- generation -------------------------------------------------------- */

typedef struct herd_message {
	const char *role;    /* "system", "user", "assistant" */
	const char *content;
} herd_message;

/* What to generate. Exactly one of prompt, tokens (non-NULL, n_tokens may
 * be 0) and messages (n_messages >= 1) is set. Strings are NUL-terminated
 * UTF-8; all pointers are borrowed for the duration of the call. */
typedef struct herd_request {
	uint64_t id;                    /* 0: the client picks one; set it (e.g.
					 * from herd_request_id()) to cancel the
					 * request from another thread by id */
	const char *model;              /* required */
	const char *prompt;             /* plain text, BOS prepended */
	const int32_t *tokens;          /* token ids, used as they are */
	size_t n_tokens;
	const herd_message *messages;   /* rendered with the chat template */
	size_t n_messages;
	int max_tokens;                 /* >= 0; default 128 (tokens that become
					 * text: an end-of-sequence token ends the
					 * request and is not counted) */
	float temperature;              /* default 0: greedy */
	int top_k;                      /* default 0: off */
	float top_p;                    /* default 1: off */
	float min_p;                    /* default 0: off */
	float repeat_penalty;           /* default 1: off */
	uint64_t seed;                  /* default 0 */
	const char *const *stop;        /* stop strings (not included in the text) */
	size_t n_stop;
	int priority;                   /* default HERD_PRIORITY_DEFAULT */
	uint32_t deadline_ms;           /* relative; 0: none */
	int no_cache;                   /* nonzero: the broker's response cache is
					 * neither read nor written for this request
					 * (the wire's `cache` key; docs/protocol.md) */
} herd_request;

/* Fills r with the defaults above. */
HERD_API void herd_request_init(herd_request *r);

/* A fresh request id for c, unique on this client. Thread-safe. */
HERD_API uint64_t herd_request_id(herd_client *c);

typedef enum herd_finish {
	HERD_FINISH_NONE = 0,
	HERD_FINISH_STOP,     /* end-of-sequence token or a stop string */
	HERD_FINISH_LENGTH,   /* max_tokens or the context is full */
	HERD_FINISH_CANCEL,   /* cancelled (herd_cancel or the callback) */
	HERD_FINISH_DEADLINE, /* deadline_ms passed */
	HERD_FINISH_COUNT     /* the number of values above, not a reason: tables
			       * indexed by herd_finish assert their size on it */
} herd_finish;

/* "stop", "length", "cancel", "deadline", "none". */
HERD_API const char *herd_finish_name(herd_finish f);

/* A finished request. The functions filling it zero it first; release with
 * herd_result_free(). */
typedef struct herd_result {
	uint64_t id;
	char *text;          /* malloc'd, NUL-terminated (may hold NUL bytes:
			      * text_len is authoritative); owned by the result */
	size_t text_len;
	herd_finish reason;
	uint32_t n_prompt;   /* prompt tokens */
	uint32_t n_gen;      /* generated tokens that became text (an
			      * end-of-sequence token is not counted) */
	uint32_t n_cached;   /* prompt tokens the broker served from its
			      * prefix cache (not evaluated again); 0 locally */
	double t_queue_ms;   /* waiting in the broker's queue */
	double t_first_ms;   /* request to first token */
	double t_total_ms;   /* request to done */
	int merged;          /* the answer of an identical deterministic request
			      * that was in flight (the broker ran it once) */
	int cached;          /* answered from the broker's response cache
			      * without running the model */
} herd_result;

/* Frees r->text and zeroes r. Accepts NULL and a zeroed result. */
HERD_API void herd_result_free(herd_result *r);

/* Generates text for req and waits for the whole answer (the broker sends
 * it in one `done` frame). res is zeroed first and filled on success; on
 * error it holds nothing to free (freeing it is still fine).
 * Errors: HERD_E_INVAL (bad request: no model, not exactly one input,
 * negative max_tokens, too many tokens/messages/stop strings), -EBUSY
 * (another request in flight on c), -ENOTCONN (not connected: herd_reconnect
 * first), -ECONNRESET (the broker closed the connection before or during
 * the request: "broker closed the connection"; the client is then
 * disconnected until herd_reconnect; requests have no client-side timeout,
 * use deadline_ms), HERD_E_PROTO (the broker sent a malformed or oversized
 * frame: the client disconnects), and whatever code the broker's `err`
 * carries: HERD_E_MISSING (unknown model), HERD_E_NOSPACE (prompt longer
 * than the context), HERD_E_RANGE (token id outside the vocabulary),
 * HERD_E_INVAL (empty prompt, bad sampling parameter), HERD_E_CANCELLED, ...
 * with its message in herd_client_errmsg(). A request cancelled while
 * running normally ends with 0 and reason HERD_FINISH_CANCEL (partial text).
 *
 * The rules of a generation are the same here, in herd_local_generate and
 * in `herd run` (model/generate.h): a prompt fits when it has at most n_ctx
 * tokens, and generation then stops (HERD_FINISH_LENGTH) after at most
 * n_ctx - n_prompt + 1 tokens; a stop string cuts the text where it begins;
 * the same request and seed give the same text on all three. */
HERD_API int herd_generate(herd_client *c, const herd_request *req, herd_result *res);

/* Streaming callback: one call per generated piece of text, in order, from
 * the thread that called herd_generate_stream / herd_local_generate. text is
 * not NUL-terminated and valid only during the call; it may be empty (a
 * token that ends inside a UTF-8 character, or text held back because it
 * may begin a stop string). token is the token id. There is one call per
 * token that becomes text, plus one with the held-back rest when the
 * request ends (its token is the last one sampled), so the pieces add up to
 * the result's text unless the callback cancelled. Return 0 to go on,
 * nonzero to cancel the request (the call then returns after the broker
 * confirms, with reason HERD_FINISH_CANCEL). */
typedef int (*herd_token_cb)(void *user, const char *text, size_t len, int32_t token);

/* As herd_generate, but the broker streams tokens and cb (may be NULL) is
 * called for each; res->text is the concatenation of every piece received,
 * including pieces that were already on the way when a cancel was sent
 * (cb is not called for those). Same errors. */
HERD_API int herd_generate_stream(herd_client *c, const herd_request *req, herd_token_cb cb, void *user,
			 herd_result *res);

/* Asks the broker to stop request id (0: whatever request is in flight on
 * c). Thread-safe; callable from the streaming callback and from any
 * thread while herd_generate* blocks. Cancelling an unknown or finished id
 * is not an error. Returns 0, -ENOTCONN (never connected or closed by
 * herd_reconnect), -ECONNRESET (the broker closed the connection), -ENOMEM.
 * Does not touch herd_client_errmsg(). */
HERD_API int herd_cancel(herd_client *c, uint64_t id);

/* ---- sharing a model file with other agents ------------------------------ */

/* Registers the GGUF file at path (opened here, read-only, with this
 * process's rights) as model `name` of the broker, served to the agents
 * listed in targets (a NULL-terminated array of agent names as they say in
 * hello, or "uid:<n>" for every agent of uid n; NULL = none) and to this
 * agent. The descriptor travels to the broker over the socket (SCM_RIGHTS):
 * the broker never opens the path, it reads the file through the
 * descriptor, so the file may be unlinked or its mode changed after this
 * returns. The broker loads it as an image under its memory budget (now
 * when memory is free, else on its first request); other agents asking for
 * it get an `err` (-EACCES). Names are what agents claim in hello (not
 * authenticated); uid targets are checked by the kernel (SO_PEERCRED).
 * *size (may be NULL) = the file's bytes as the broker saw them.
 * Errors: HERD_E_INVAL (NULL arguments, bad name or target), -errno of
 * open(2), connection errors as herd_generate, the broker's err code:
 * -EEXIST (the name is taken), HERD_E_FORMAT (not a GGUF file), HERD_E_LIMIT
 * (max_share_mb, max_shared_models, too many targets), HERD_E_NOSPACE
 * (larger than the budget). The message is in herd_client_errmsg(c). */
HERD_API int herd_model_share(herd_client *c, const char *name, const char *path,
			      const char *const *targets, uint64_t *size);
/* Same with a descriptor the caller opened (it stays the caller's). */
HERD_API int herd_model_share_fd(herd_client *c, const char *name, int fd,
				 const char *const *targets, uint64_t *size);

/* ---- in-process models on the shared image ------------------------------ */

typedef struct herd_local_model herd_local_model;

typedef struct herd_attach_opts {
	int n_threads; /* compute threads for herd_local_generate; <= 0: 1 (many
			* agents share the machine) */
	int n_ctx;     /* context length; <= 0: min(512, the model's) */
} herd_attach_opts;

/* Asks the broker for model's image (an `attach` frame; the broker answers
 * `image` with a read-only descriptor of the shared-memory object), maps it
 * PROT_READ / MAP_SHARED, checks the image header (and that it matches the
 * frame's size and digest), then opens the GGUF inside it in place and
 * builds a model and a compute context over the shared pages: the weights
 * are never copied. Uses c's one in-flight slot while it talks to the
 * broker. *out is NULL on failure.
 * Errors: HERD_E_INVAL (NULL arguments), -EBUSY, -ENOTCONN, connection errors
 * as herd_generate, the broker's `err` code (HERD_E_MISSING: unknown model),
 * HERD_E_PROTO (image frame without a descriptor, or for another model),
 * HERD_E_FORMAT / HERD_E_VERSION / HERD_E_TRUNCATED / HERD_E_RANGE (bad or
 * incompatible image header, or a size or digest that does not match the
 * frame), the model loader's errors (HERD_E_UNSUPPORTED, HERD_E_MISSING,
 * HERD_E_SHAPE ...), -ENOMEM. The message is in herd_client_errmsg(c). */
HERD_API int herd_model_attach(herd_client *c, const char *model, herd_local_model **out);
/* Same with options (o may be NULL). */
HERD_API int herd_model_attach_opts(herd_client *c, const char *model, const herd_attach_opts *o,
			   herd_local_model **out);

/* Runs req in this process on the attached model: tokenizes the prompt
 * (with BOS) or the chat messages, evaluates, and samples with req's
 * parameters (model/sampler.h semantics: the same seed gives the same text)
 * until an end-of-generation token, a stop string, max_tokens, the end of
 * the context, req->deadline_ms, or cb returning nonzero (the rules of
 * herd_generate). req->model, priority and no_cache are ignored; req->id is
 * copied to res->id. cb may be NULL. With stop strings, text that could
 * begin a stop string is held back from cb until it is known not to; the
 * callback's token is then the most recent one. res->t_queue_ms is 0.
 * One thread at a time per herd_local_model (it owns a compute context);
 * different local models may run in parallel.
 * Errors: HERD_E_INVAL (bad request, empty prompt or bad sampling
 * parameter), HERD_E_NOSPACE (prompt longer than the context), HERD_E_RANGE
 * (token id outside the vocabulary), -ENOMEM; message in
 * herd_local_errmsg(). The same codes as herd_generate's for the same
 * request. */
HERD_API int herd_local_generate(herd_local_model *m, const herd_request *req, herd_token_cb cb,
			void *user, herd_result *res);

typedef struct herd_local_info {
	const char *model;    /* owned by m */
	const char *segment;  /* shm object name */
	const char *digest;   /* hex, from the image header */
	uint64_t image_bytes; /* size of the mapping */
	int n_vocab;
	int n_ctx;            /* of the local context */
	int n_threads;
	double attach_ms;     /* attach request sent -> mapped, header verified */
	double load_ms;       /* -> model and context ready */
} herd_local_info;

/* Describes m. Strings stay valid until herd_local_detach(m). */
HERD_API void herd_local_info_get(const herd_local_model *m, herd_local_info *info);

/* Message about the last failed herd_local_generate on m ("" if none). */
HERD_API const char *herd_local_errmsg(const herd_local_model *m);

/* Frees the context and model and unmaps the image. Accepts NULL. The
 * broker may remove the shared object meanwhile; the mapping stays valid
 * until here. */
HERD_API void herd_local_detach(herd_local_model *m);

#ifdef __cplusplus
}
#endif
#endif
