/* herd wire protocol codec (docs/protocol.md, version 1).
 *
 * A frame is a 4-byte little-endian body length N followed by N bytes of one
 * msgpack map whose string key "t" names the frame type. This module turns
 * bodies into typed messages (proto_decode) and messages into complete frames
 * (proto_encode*), and helps stream readers cut frames out of a byte stream
 * (proto_frame_next). It does no I/O and keeps no global state: every
 * function is thread-safe on distinct arguments.
 *
 * Decoding is strict. Before msgpack-c sees a body, a bounds-checking scan
 * verifies that it is exactly one msgpack value, that every length and every
 * container count fits in the bytes that remain (so a 5-byte frame cannot
 * make the unpacker allocate gigabytes), and that nesting is at most
 * PROTO_MAX_DEPTH deep. Then the map is checked against the frame type:
 * required keys present, every known key of the right type and range, no
 * known key twice, no non-string keys, exactly one of prompt/tokens/messages
 * in `gen`, array lengths within the PROTO_MAX_* limits. Unknown keys are
 * ignored (forward compatibility); nil counts as absent for optional keys.
 * Every failure is HERD_E_PROTO with a message naming the frame type and the
 * key ("gen: key 'max_tokens' must be a non-negative int, got -3").
 *
 * Ownership of decoded messages:
 * - Strings (proto_str) are views into the body passed to proto_decode: not
 *   NUL-terminated, valid only while that body buffer is alive and
 *   unchanged. Copy what must outlive it.
 * - Arrays (gen tokens/messages/stop, welcome models, admin args) and the
 *   admin_ok result tree (proto_value) are heap allocations owned by the proto_msg:
 *   release them with proto_msg_free() (also after a failed decode, which is
 *   harmless: a failed decode leaves nothing allocated).
 */
#ifndef HERD_PROTO_PROTO_H
#define HERD_PROTO_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "model/generate.h" /* gen_request, gen_str; herd_finish */

#ifdef __cplusplus
extern "C" {
#endif

#define PROTO_VERSION 1
#define PROTO_HDR_SIZE 4                   /* little-endian u32 body length */
#define PROTO_MAX_FRAME_DEFAULT (1u << 20) /* 1 MiB body, protocol default */

/* Decoder limits ("absurd array lengths" are refused with HERD_E_PROTO). */
#define PROTO_MAX_DEPTH 16       /* msgpack nesting levels in a frame */
#define PROTO_MAX_TOKENS (1 << 18)
#define PROTO_MAX_MESSAGES 4096
#define PROTO_MAX_STOP 64
#define PROTO_MAX_MODELS 4096
#define PROTO_MAX_ARGS 256
#define PROTO_MAX_TARGETS 16 /* share.targets */

typedef enum proto_type {
	PROTO_NONE = 0,
	PROTO_HELLO,
	PROTO_WELCOME,
	PROTO_GEN,
	PROTO_TOK,
	PROTO_DONE,
	PROTO_ERR,
	PROTO_CANCEL,
	PROTO_ATTACH,
	PROTO_IMAGE,
	PROTO_ADMIN,
	PROTO_ADMIN_OK,
	PROTO_SHARE,
	PROTO_SHARED,
	PROTO_TYPE_COUNT
} proto_type;

/* The wire name ("hello", ...) of t, or "?" for an invalid value. */
const char *proto_type_name(proto_type t);

/* A byte string: ptr may be NULL only when len == 0. Not NUL-terminated.
 * The same type as a generation request's strings, so a `gen` frame
 * decodes straight into a gen_request. */
typedef gen_str proto_str;

/* View of a NUL-terminated C string (NULL gives the empty string). */
static inline proto_str proto_s(const char *s)
{
	proto_str r = {s, 0};
	if (s)
		while (s[r.len])
			r.len++;
	return r;
}

/* 1 when s equals the C string c. */
int proto_str_eq(proto_str s, const char *c);

/* ---- frames ---------------------------------------------------------- */

typedef struct proto_hello {
	uint32_t v;      /* required */
	proto_str name;  /* empty when absent */
	int32_t prio;    /* 0 when absent */
} proto_hello;

typedef struct proto_model_info {
	proto_str name;       /* required inside each model map */
	proto_str digest;     /* hex; empty when absent */
	proto_str segment;    /* shm object name; empty when absent (not loaded) */
	uint32_t n_vocab;     /* 0 when absent */
	uint32_t n_ctx;
	uint64_t image_bytes;
} proto_model_info;

typedef struct proto_welcome {
	uint32_t v;
	uint64_t agent;
	const proto_model_info *models; /* owned by the proto_msg when decoded */
	size_t n_models;
	uint32_t max_frame;
	uint32_t max_tokens;
} proto_welcome;

/* `gen` decodes into and encodes from the generation request itself
 * (model/generate.h): one description of a request from libherd to the
 * scheduler. Key mapping: id, model, prompt / tokens / messages (input),
 * max_tokens, temp -> params.sampling.temperature, top_k, top_p, min_p,
 * rep_pen -> params.sampling.repeat_penalty, seed, stop, prio (has_prio),
 * deadline_ms, stream, cache. Absent keys keep gen_request_init's values,
 * which disable their sampling stage; the encoder always writes the
 * sampling keys. */

typedef struct proto_tok {
	uint64_t id;
	proto_str text; /* may be empty (partial UTF-8) */
	int32_t tok;
} proto_tok;

/* The wire name of a finish reason: "stop", "length", "cancel",
 * "deadline"; "none" for HERD_FINISH_NONE and any other value, which never
 * travel (the encoder refuses them, the decoder accepts only the four). */
const char *proto_finish_name(herd_finish f);

typedef struct proto_done {
	uint64_t id;
	herd_finish reason;  /* STOP, LENGTH, CANCEL or DEADLINE */
	int has_text;        /* text present (non-streaming requests) */
	proto_str text;
	uint32_t n_prompt;
	uint32_t n_gen;
	uint32_t n_cached;   /* 0 when absent; prompt tokens from the prefix cache */
	double t_queue_ms;   /* 0 when absent */
	double t_first_ms;
	double t_total_ms;
	int merged;          /* request merging: answered by an identical request */
	int cached;          /* answered from the response cache */
} proto_done;

typedef struct proto_err {
	int has_id;  /* 0: about the connection, not a request */
	uint64_t id;
	int32_t code; /* HERD_E_* or -errno */
	proto_str msg;
} proto_err;

typedef struct proto_cancel {
	uint64_t id;
} proto_cancel;

typedef struct proto_attach {
	proto_str model;
} proto_attach;

/* The image fd travels beside this frame as SCM_RIGHTS: not part of it. */
typedef struct proto_image {
	proto_str model;
	proto_str segment;
	uint64_t size;
	proto_str digest;
} proto_image;

/* An agent shares a GGUF file it opened (herd_model_share): the file's
 * descriptor travels beside this frame as SCM_RIGHTS, like image's.
 * targets: agent names, or "uid:<n>" for every agent of uid n. */
typedef struct proto_share {
	proto_str name;            /* the model's name (required) */
	const proto_str *targets;  /* owned by the proto_msg when decoded */
	size_t n_targets;
} proto_share;

/* The broker registered a shared model. */
typedef struct proto_shared {
	proto_str model;
	uint64_t size;             /* bytes of the file as the broker saw it */
} proto_shared;

typedef struct proto_admin {
	proto_str cmd;          /* not checked against the command list here */
	const proto_str *args;  /* owned by the proto_msg when decoded */
	size_t n_args;
} proto_admin;

/* ---- values ---------------------------------------------------------- */

/* A msgpack value as proto's own type, so that no user of proto sees
 * msgpack: the admin_ok result tree (decoded, and built for encoding). */
typedef enum proto_vtype {
	PROTO_V_NIL = 0,
	PROTO_V_BOOL,
	PROTO_V_INT,   /* signed; a decoder gives it to negative integers only */
	PROTO_V_UINT,  /* unsigned; a decoder gives it to every non-negative one */
	PROTO_V_FLOAT, /* float32 or float64, as double */
	PROTO_V_STR,   /* str (and bin, read as bytes) */
	PROTO_V_ARRAY,
	PROTO_V_MAP
} proto_vtype;

typedef struct proto_value proto_value;
typedef struct proto_pair proto_pair;

struct proto_value {
	proto_vtype type;
	union {
		int b;      /* PROTO_V_BOOL: 0 or 1 */
		int64_t i;  /* PROTO_V_INT */
		uint64_t u; /* PROTO_V_UINT */
		double f;   /* PROTO_V_FLOAT */
		proto_str s; /* PROTO_V_STR */
		struct {
			const proto_value *v; /* [n] */
			size_t n;
		} arr;      /* PROTO_V_ARRAY */
		struct {
			const proto_pair *kv; /* [n], in wire order */
			size_t n;
		} map;      /* PROTO_V_MAP */
	};
};

struct proto_pair {
	proto_value key; /* a str for every map herd writes */
	proto_value val;
};

/* The value of key in map v (a PROTO_V_MAP with str keys), or NULL when v
 * is not a map or has no such key. First match wins. */
const proto_value *proto_value_get(const proto_value *v, const char *key);

typedef struct proto_admin_ok {
	proto_str cmd;
	/* Decoded: a tree owned by the proto_msg (never NULL: nil is a
	 * PROTO_V_NIL value); its strings point into the body. Encoding: any
	 * tree, or NULL for nil. */
	const proto_value *result;
} proto_admin_ok;

typedef struct proto_msg {
	proto_type type;
	union {
		proto_hello hello;
		proto_welcome welcome;
		gen_request gen;
		proto_tok tok;
		proto_done done;
		proto_err err;
		proto_cancel cancel;
		proto_attach attach;
		proto_image image;
		proto_admin admin;
		proto_admin_ok admin_ok;
		proto_share share;
		proto_shared shared;
	};
	/* private: allocations of a decoded message (arrays, the admin_ok
	 * result tree); strings point into the body */
	void *own_a, *own_b;
	/* key comparisons the decode made: linear in the frame (one pass
	 * indexes the top-level map), whatever the keys; tests bound it */
	size_t n_key_cmp;
} proto_msg;

/* Zeroes m (type PROTO_NONE). Optional before proto_decode. */
void proto_msg_init(proto_msg *m);

/* Decodes one frame body (without the 4-byte length) into *out, which need
 * not be initialised. Returns 0; HERD_E_PROTO with a message in err (when
 * errlen > 0) for any malformed or invalid body (the message names the frame
 * type and the key); HERD_E_INVAL for NULL body with len > 0 or NULL out;
 * -ENOMEM. On error *out holds nothing to free (proto_msg_free is still
 * allowed). Strings in *out point into body: see the ownership notes above. */
int proto_decode(const void *body, size_t len, proto_msg *out, char *err, size_t errlen);

/* Releases what a decode allocated and zeroes m. Accepts NULL. Never call
 * it on a message you filled yourself for encoding unless all of its
 * private fields are zero (proto_msg_init). */
void proto_msg_free(proto_msg *m);

/* ---- output buffer --------------------------------------------------- */

/* A growable byte buffer frames are appended to. Caller-owned struct:
 * proto_buf_init / proto_buf_fini. Not thread-safe. */
typedef struct proto_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
} proto_buf;

void proto_buf_init(proto_buf *b);
void proto_buf_fini(proto_buf *b); /* frees data, zeroes b; accepts NULL */
/* Ensures room for n more bytes. 0 or -ENOMEM (b unchanged). */
int proto_buf_reserve(proto_buf *b, size_t n);
int proto_buf_append(proto_buf *b, const void *p, size_t n);
/* Drops the first n bytes (n <= len), moving the rest to the front. */
void proto_buf_consume(proto_buf *b, size_t n);
/* A write callback appending p[0..n) to the proto_buf in data (the shape
 * msgpack-c's packer wants). Returns 0 or -1 (ENOMEM). */
int proto_buf_write(void *data, const char *p, size_t n);

/* Hand-built frames (e.g. an admin_ok result written straight from broker
 * state): proto_frame_begin reserves the length prefix and returns its
 * position in *mark; write one map with a proto_writer;
 * proto_frame_end patches the length. proto_frame_end returns HERD_E_RANGE
 * (and drops the frame) when the body exceeds UINT32_MAX. */
int proto_frame_begin(proto_buf *b, size_t *mark);
int proto_frame_end(proto_buf *b, size_t mark);
/* Drops everything from mark on (abandon a frame after an error). */
void proto_frame_abort(proto_buf *b, size_t mark);

/* ---- writer ----------------------------------------------------------- */

/* Appends msgpack values to a proto_buf one by one (for hand-built frames
 * and results). The first failure (-ENOMEM) sticks: later calls do nothing
 * and proto_writer_error returns it, so a caller checks once at the end.
 * Containers are written as a header with the element count (a map of n
 * pairs takes 2n values after it); the caller writes exactly that many.
 * Caller-owned struct, no allocation of its own; not thread-safe. */
typedef struct proto_writer {
	proto_buf *b; /* borrowed */
	int err;      /* 0 or the first error */
} proto_writer;

void proto_writer_init(proto_writer *w, proto_buf *b);
/* 0, or the first error of any call since proto_writer_init. */
int proto_writer_error(const proto_writer *w);

void proto_write_map(proto_writer *w, uint32_t n_pairs);
void proto_write_array(proto_writer *w, uint32_t n);
void proto_write_str(proto_writer *w, proto_str s);   /* NULL ptr with len: HERD_E_INVAL */
void proto_write_cstr(proto_writer *w, const char *s); /* NULL writes "" */
void proto_write_int(proto_writer *w, int64_t v);
void proto_write_uint(proto_writer *w, uint64_t v);
void proto_write_double(proto_writer *w, double v);
void proto_write_bool(proto_writer *w, int v);
void proto_write_nil(proto_writer *w);
/* A whole tree (NULL writes nil). HERD_E_INVAL for an unknown type or a
 * NULL array with a count. */
void proto_write_value(proto_writer *w, const proto_value *v);

/* One map entry with a str key: the key, then the value. */
void proto_write_kv_str(proto_writer *w, const char *key, const char *v); /* NULL v: "" */
void proto_write_kv_int(proto_writer *w, const char *key, int64_t v);
void proto_write_kv_uint(proto_writer *w, const char *key, uint64_t v);
void proto_write_kv_double(proto_writer *w, const char *key, double v);
void proto_write_kv_bool(proto_writer *w, const char *key, int v);

/* Starts an admin_ok frame in b whose result the caller then writes as one
 * value through w: frame prefix, the map of 3 entries, "t", "cmd" and the
 * "result" key. Finish with proto_frame_end(b, *mark) (or
 * proto_frame_abort(b, *mark) after an error). Returns 0 or -ENOMEM (b
 * unchanged). */
int proto_admin_ok_begin(proto_writer *w, proto_buf *b, const char *cmd, size_t *mark);

/* ---- encoders -------------------------------------------------------- */

/* Each appends one complete frame (length prefix + body) to b. Returns 0,
 * -ENOMEM, HERD_E_INVAL for a message that would not decode (NULL string
 * pointer with a length, gen without exactly one valid input, negative
 * max_tokens or token id, NULL array with a count, unknown reason or type)
 * or HERD_E_RANGE for a body over UINT32_MAX bytes. On error b is left as it
 * was. Strings are written as msgpack str; optional keys are written when
 * present (has_* set or non-empty), the gen sampling keys always. */
int proto_encode(proto_buf *b, const proto_msg *m);
int proto_encode_hello(proto_buf *b, const proto_hello *m);
int proto_encode_welcome(proto_buf *b, const proto_welcome *m);
int proto_encode_gen(proto_buf *b, const gen_request *m);
int proto_encode_tok(proto_buf *b, const proto_tok *m);
int proto_encode_done(proto_buf *b, const proto_done *m);
int proto_encode_err(proto_buf *b, const proto_err *m);
int proto_encode_cancel(proto_buf *b, const proto_cancel *m);
int proto_encode_attach(proto_buf *b, const proto_attach *m);
int proto_encode_image(proto_buf *b, const proto_image *m);
int proto_encode_admin(proto_buf *b, const proto_admin *m);
int proto_encode_admin_ok(proto_buf *b, const proto_admin_ok *m);
int proto_encode_share(proto_buf *b, const proto_share *m);
int proto_encode_shared(proto_buf *b, const proto_shared *m);

/* ---- stream framing -------------------------------------------------- */

enum {
	PROTO_FRAME_NEED_MORE = 0, /* *frame_len set once the 4 bytes are in */
	PROTO_FRAME_READY = 1,     /* data[4 .. 4 + *frame_len) is one body */
	/* HERD_E_PROTO: the announced length exceeds max_frame (*frame_len
	 * holds it); refuse without reading the body */
};

/* Looks at the start of a receive buffer holding avail bytes. Returns
 * PROTO_FRAME_NEED_MORE (fewer than 4 bytes, or the body is incomplete),
 * PROTO_FRAME_READY, or HERD_E_PROTO when the length exceeds max_frame.
 * *frame_len (may be NULL) gets the body length whenever the header is
 * complete, 0 otherwise. The whole frame takes PROTO_HDR_SIZE + *frame_len
 * bytes. Pure function. */
int proto_frame_next(const uint8_t *data, size_t avail, size_t max_frame, size_t *frame_len);

#ifdef __cplusplus
}
#endif
#endif
