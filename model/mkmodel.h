/* The demo-model generator: a LLaMA-architecture GGUF with deterministic
 * random weights, in TinyLlama-1.1B's exact shape or a small one for tests,
 * carrying a real vocabulary (copied from a vocabulary GGUF) or a synthetic
 * SentencePiece-style one. It is a demo, and says so (general.name "herd
 * demo (random weights)").
 *
 * The file is what llama.cpp's convert + llama-quantize would write for such
 * a model: the same metadata keys, tensor names and shapes (token_embd.weight
 * [n_embd, n_vocab], blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 * ffn_norm, ffn_gate, ffn_up, ffn_down}.weight, output_norm.weight,
 * output.weight; untied output), and the per-tensor type mix of the file
 * type (see model/ftype.h). Norm weights are 1.0 (F32); every matrix is
 * drawn from a near-normal distribution (sum of four uniforms, so bounded at
 * 3.5 sigma) with std 1/sqrt(n_in), which keeps activations finite through
 * every layer, then quantized with the reference quantizers (so the bytes do
 * not depend on the CPU's instruction set).
 *
 * Determinism: each row of each tensor is generated from a PRNG seeded by
 * (seed, tensor name, row), so the output is the same bytes for the same
 * options whatever the thread count or machine.
 */
#ifndef HERD_MODEL_MKMODEL_H
#define HERD_MODEL_MKMODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct gguf_writer;

typedef struct mkmodel_shape {
	const char *name; /* "tinyllama-1.1b", "mini" */
	int n_vocab;
	int n_embd;
	int n_ff;
	int n_layer;
	int n_head;
	int n_head_kv;
	int n_ctx;        /* llama.context_length */
	float rope_base;  /* llama.rope.freq_base */
	float rms_eps;    /* llama.attention.layer_norm_rms_epsilon */
} mkmodel_shape;

/* The shape called name, or NULL. Shapes are static: never freed. */
const mkmodel_shape *mkmodel_shape_find(const char *name);
/* "tinyllama-1.1b|mini", for usage text. */
const char *mkmodel_shape_names(void);

typedef struct mkmodel_opts {
	const char *shape;      /* a shape name (required) */
	const char *ftype;      /* file type name as ftype_parse takes it (required) */
	const char *out_path;   /* output GGUF (required); replaced atomically */
	const char *vocab_path; /* GGUF to copy tokenizer.* keys from, or NULL */
	uint64_t seed;
	int n_threads;          /* <= 0: one per online CPU */
} mkmodel_opts;

/* Writes the model. With vocab_path, every tokenizer.* key of that file is
 * copied; its tokens/scores/token_type arrays are cut to the shape's vocab
 * size when longer (the mini fixtures hold the first 2048 LLaMA pieces,
 * exactly such a prefix); a vocabulary smaller than the shape, or a special
 * token id outside the cut vocabulary, is an error. When the vocabulary has
 * no tokenizer.chat_template, TinyLlama-Chat's is added.
 *
 * Returns 0; HERD_E_INVAL for a missing option; HERD_E_UNSUPPORTED for an
 * unknown shape or file type or a type without a quantizer in this build;
 * HERD_E_FORMAT / HERD_E_MISSING / HERD_E_SHAPE for an unusable vocabulary
 * file; the gguf_open / gguf_writer_write errors (-errno etc.). On error a
 * message naming the problem is in err and out_path is untouched. Not
 * thread-safe with itself on the same out_path; otherwise reentrant. */
int mkmodel_write(const mkmodel_opts *o, char *err, size_t errlen);

/* Sets a synthetic SentencePiece-style vocabulary of n_vocab pieces on w
 * (tokenizer.ggml.model "llama", tokens, scores, token_type, bos 1, eos 2,
 * unk 0, add_bos_token true, add_eos_token false): <unk>, <s>, </s>, the
 * 256 byte tokens <0x00>..<0xFF> (type 6), then unique made-up pieces
 * ("▁the", "the", "▁ba", ...: every multi-character piece is the merge of a
 * shorter piece and one character, so a BPE reaches it) with scores -0,
 * -1, -2 ... (type 1), the single characters last. The same for every
 * call. Returns 0, HERD_E_INVAL when n_vocab < 323, -ENOMEM. */
int mkmodel_synth_vocab(struct gguf_writer *w, int n_vocab, char *err, size_t errlen);

/* TinyLlama-1.1B-Chat's Jinja chat template (zephyr style), as written into
 * tokenizer.chat_template. Static string. */
const char *mkmodel_chat_template(void);

#ifdef __cplusplus
}
#endif
#endif
