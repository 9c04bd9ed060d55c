/* herd shared-memory model images.
 *
 * An image is one POSIX shared-memory object, /dev/shm/herd.<model>.<d16>,
 * where <d16> is the first 16 hex digits of the image's digest. Layout:
 *
 *   [0, 512)                   struct shm_image_header (below)
 *   [512, payload_offset)      zero bytes (payload_offset is page aligned)
 *   [payload_offset, end)      a complete GGUF v3 file written by the
 *                              project's GGUF writer with general.alignment
 *                              = 64: every tensor starts 64-byte aligned in
 *                              the image, and so in any page-aligned mapping.
 *                              The GGUF's tensor-info section is the image's
 *                              tensor directory.
 *
 * The digest (shm/digest.h, HM256) covers bytes [header_size, image_size):
 * everything after the header, padding included. It names the image and
 * lets shm_image_verify() detect any change; attach (shm_image_map) only
 * checks the header, so it costs microseconds however large the image is.
 *
 * Life cycle: the broker calls shm_image_create() once per model (or
 * shm_image_find() first to re-adopt what a previous broker left); the
 * object is written completely, then made read-only (mode 0440) and only
 * then appears under its final name, so a reader never sees a partial image
 * under a final name. Agents receive a read-only descriptor (shm/fdpass.h),
 * shm_image_map() it PROT_READ/MAP_SHARED and run the model from the shared
 * pages via shm_image_gguf() + llama_model_from_gguf(): zero copies. A write
 * through such a mapping faults (SIGSEGV). Objects outlive their creator;
 * shm_image_remove() unlinks one (mappings stay valid until unmapped).
 *
 * Errors: functions return 0, -errno for system errors, or HERD_E_*; those
 * taking err/errlen also write a message naming the object and the problem
 * (err may be NULL when errlen is 0). No function keeps global state; all
 * are thread-safe except on the same shm_image_map_t concurrently with
 * shm_image_unmap().
 */
#ifndef HERD_SHM_IMAGE_H
#define HERD_SHM_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "model/gguf.h"
#include "shm/digest.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHM_IMAGE_MAGIC "HERDIMG" /* 8 bytes with the NUL */
/* 2: the header records the source file's device and inode */
#define SHM_IMAGE_VERSION 2u
#define SHM_IMAGE_HEADER_SIZE 512u
/* Payload (GGUF) start: page aligned, so a mapping's tensors are 64-byte
 * aligned and the payload can be madvise()d separately. */
#define SHM_IMAGE_PAYLOAD_ALIGN 4096u
/* general.alignment of the payload GGUF. */
#define SHM_IMAGE_TENSOR_ALIGN 64u
/* Where the kernel shows POSIX shm objects (glibc's shm_open directory). */
#define SHM_IMAGE_DIR "/dev/shm"
/* Object names: "/herd.<model>.<16 hex>" (shm_open style, leading slash). */
#define SHM_IMAGE_PREFIX "herd."
/* Temporary objects of an image under construction: "/herd.tmp.<pid>.<n>",
 * plus a private directory "/dev/shm/herd.tmp.<pid>.<n>.d" for the GGUF
 * being written. Left behind only if the creator crashed; shm_image_list
 * shows them (invalid) and shm_image_remove removes the object. */
#define SHM_IMAGE_TMP_PREFIX "herd.tmp."
#define SHM_IMAGE_MODEL_MAX 64 /* model name field, NUL included */
#define SHM_IMAGE_TYPE_MAX 16  /* weight type name field, NUL included */
#define SHM_IMAGE_NAME_MAX 96  /* buffer for an object name, NUL included */
#define SHM_IMAGE_NAME_TRIES 8 /* random names tried after a squatted one */

enum {
	SHM_IMAGE_F_CONVERTED = 1u << 0, /* weights converted to target_type */
	SHM_IMAGE_F_REPACKED = 1u << 1,  /* written with the interleaving policy on
					  * (model/convert.h): matmul weights whose
					  * type allows it are row-interleaved for
					  * the GEMM kernels (kernels/gemm.h) */
	SHM_IMAGE_F_REPACK_Q4_0 = 1u << 2, /* with REPACKED: the policy was
					    * KERN_REPACK_AVX2 (only Q4_0
					    * and Q6_K matrices interleaved:
					    * the AVX2 GEMMs), else
					    * KERN_REPACK_ALL */
};

enum { SHM_DIGEST_HM256 = 1 };

/* The on-image header: fixed-width, host (little-endian) order. Offsets are
 * pinned below; any change bumps SHM_IMAGE_VERSION. */
typedef struct shm_image_header {
	char magic[8];               /*   0 "HERDIMG\0" */
	uint32_t version;            /*   8 SHM_IMAGE_VERSION */
	uint32_t header_size;        /*  12 sizeof(shm_image_header) = 512 */
	uint32_t flags;              /*  16 SHM_IMAGE_F_* */
	uint32_t digest_algo;        /*  20 SHM_DIGEST_HM256 */
	uint8_t digest[32];          /*  24 HM256 of bytes [header_size, image_size) */
	uint64_t image_size;         /*  56 bytes of the object */
	uint64_t payload_offset;     /*  64 GGUF start, multiple of 4096 */
	uint64_t payload_size;       /*  72 GGUF bytes; offset + size = image_size */
	uint64_t tensor_dir_offset;  /*  80 image offset of the tensor directory: the
				      *     GGUF header that holds it (= payload_offset) */
	uint64_t tensor_data_offset; /*  88 image offset of the GGUF data section */
	uint64_t n_tensors;          /*  96 */
	uint64_t source_size;        /* 104 source file bytes */
	int64_t source_mtime_ns;     /* 112 source file mtime, ns since the epoch */
	int64_t created_ns;          /* 120 CLOCK_REALTIME at creation, ns */
	uint32_t tensor_align;       /* 128 payload general.alignment (64) */
	uint32_t creator_pid;        /* 132 */
	char model[64];              /* 136 model name, NUL-padded */
	char target_type[16];        /* 200 requested weight type ("Q8_0"), "" = kept */
	char weight_type[16];        /* 216 type holding most weight bytes ("Q4_0") */
	char source_path[256];       /* 232 realpath of the source, NUL-padded
				      *     (truncated when longer) */
	uint64_t source_dev;         /* 488 st_dev of the source file */
	uint64_t source_ino;         /* 496 st_ino of the source file */
	uint8_t reserved[8];         /* 504 zero */
} shm_image_header;

_Static_assert(sizeof(shm_image_header) == SHM_IMAGE_HEADER_SIZE, "image header size");
_Static_assert(offsetof(shm_image_header, version) == 8, "header layout");
_Static_assert(offsetof(shm_image_header, header_size) == 12, "header layout");
_Static_assert(offsetof(shm_image_header, flags) == 16, "header layout");
_Static_assert(offsetof(shm_image_header, digest_algo) == 20, "header layout");
_Static_assert(offsetof(shm_image_header, digest) == 24, "header layout");
_Static_assert(offsetof(shm_image_header, image_size) == 56, "header layout");
_Static_assert(offsetof(shm_image_header, payload_offset) == 64, "header layout");
_Static_assert(offsetof(shm_image_header, payload_size) == 72, "header layout");
_Static_assert(offsetof(shm_image_header, tensor_dir_offset) == 80, "header layout");
_Static_assert(offsetof(shm_image_header, tensor_data_offset) == 88, "header layout");
_Static_assert(offsetof(shm_image_header, n_tensors) == 96, "header layout");
_Static_assert(offsetof(shm_image_header, source_size) == 104, "header layout");
_Static_assert(offsetof(shm_image_header, source_mtime_ns) == 112, "header layout");
_Static_assert(offsetof(shm_image_header, created_ns) == 120, "header layout");
_Static_assert(offsetof(shm_image_header, tensor_align) == 128, "header layout");
_Static_assert(offsetof(shm_image_header, creator_pid) == 132, "header layout");
_Static_assert(offsetof(shm_image_header, model) == 136, "header layout");
_Static_assert(offsetof(shm_image_header, target_type) == 200, "header layout");
_Static_assert(offsetof(shm_image_header, weight_type) == 216, "header layout");
_Static_assert(offsetof(shm_image_header, source_path) == 232, "header layout");
_Static_assert(offsetof(shm_image_header, source_dev) == 488, "header layout");
_Static_assert(offsetof(shm_image_header, source_ino) == 496, "header layout");
_Static_assert(offsetof(shm_image_header, reserved) == 504, "header layout");

/* A plain description of an image (caller-owned, no pointers). */
typedef struct shm_image_info {
	char name[SHM_IMAGE_NAME_MAX];        /* "/herd.<model>.<d16>" (shm_open name) */
	char model[SHM_IMAGE_MODEL_MAX];
	char target_type[SHM_IMAGE_TYPE_MAX]; /* "" = weights kept as in the source */
	char weight_type[SHM_IMAGE_TYPE_MAX];
	char source_path[256];
	uint8_t digest[SHM_DIGEST_SIZE];
	char digest_hex[SHM_DIGEST_HEX + 1];
	uint32_t version;
	uint32_t flags;
	uint64_t image_size;   /* bytes of the object (for an invalid one: its size) */
	uint64_t payload_offset, payload_size, n_tensors;
	uint64_t source_size;
	int64_t source_mtime_ns, created_ns;
	uint64_t source_dev, source_ino;
	uint32_t mode;         /* st_mode & 07777 of the object */
	uint32_t uid, gid;
	int adopted;           /* shm_image_create: an existing image was reused */
	int valid;             /* shm_image_list: header checks passed (and the
				* digest, with SHM_LIST_VERIFY) */
	int status;            /* shm_image_list: 0, or why it is invalid */
	char problem[160];     /* shm_image_list: message when !valid */
	int n_attached;        /* shm_image_list with SHM_LIST_ATTACH: processes
				* mapping it (readable /proc only); else -1 */
	int n_untrusted;       /* shm_image_find / shm_image_create: objects of
				* the model skipped by the trust rule (owner,
				* mode, type) or names taken by someone else */
	char notice[200];      /* the last of them and why ("" when none) */
} shm_image_info;

typedef struct shm_create_opts {
	const char *source_path; /* GGUF file (required) */
	const char *model_name;  /* 1..63 chars of [A-Za-z0-9_.+-], not starting
				  * with '.', not "tmp" nor "tmp.*" (required) */
	const char *weight_type; /* convert 2-D weights to this type ("Q4_0",
				  * "Q8_0", "F16", "Q4_K"..., case-insensitive),
				  * NULL or "" = keep the source's types */
	gid_t gid;               /* group of the object; (gid_t)-1 = keep */
	mode_t mode;             /* final mode; 0 = 0440. Write bits are refused */
	int no_adopt;            /* 1: do not look for an image of the same model
				  * and source first (one with the same final name
				  * is still reused) */
	int no_repack;           /* 1: interleaving policy off even where the CPU
				  * would gain (convert_repack_enabled; the tools
				  * set it from HERD_NO_REPACK) */
} shm_create_opts;

/* Builds an image of o->source_path named after o->model_name.
 *
 * Unless o->no_adopt, first looks for an image of the same model built from
 * the same source (shm_image_find_fd with o->mode: the trust rule above)
 * and, when its full digest verifies, returns it with out->adopted = 1
 * without reading the source.
 *
 * Otherwise opens the source with gguf_open, writes a new GGUF (every key
 * and tensor of the source; general.alignment = 64; with o->weight_type set,
 * every 2-D tensor whose row length is a multiple of the target's block size
 * is dequantized (kern_ops to_float) and requantized (from_float), and
 * general.file_type is updated; 1-D tensors such as norms are copied as
 * they are; matmul weights interleaved under the policy of model/convert.h,
 * which decides and converts: this module only writes the bytes) into a
 * private directory in /dev/shm, then copies it into a new
 * object "/herd.tmp.<pid>.<n>" (O_CREAT|O_EXCL, mode 0600) behind the
 * header, releasing the temporary file as it goes (hole punching), so the
 * peak extra memory is the payload plus a few MB. Then it computes the
 * digest, writes the header, applies o->gid and the read-only mode, and
 * renames /dev/shm/herd.tmp.<pid>.<n> to /dev/shm/herd.<model>.<d16>
 * (POSIX shm has no rename, but on Linux shm objects are files of the
 * /dev/shm tmpfs, and rename(2) there is atomic: the final name appears only
 * complete). The rename refuses to replace (RENAME_NOREPLACE): when an
 * object of that name exists, verifies and records the same source and
 * target and passes the trust rule, it is reused (out->adopted = 1) and the
 * new copy dropped; any other object of ours under that name (damaged,
 * another mode, or the same bytes from another source file or an older
 * mtime) is replaced by
 * the new one, whose header then lets shm_image_find() match (processes
 * mapping the old object keep it). A name held by an object failing the
 * trust rule (another owner, another mode, not a regular file: squatted)
 * is never replaced nor fatal: the image is published as
 * "/herd.<model>.<d16>.<r8>" with a random 8-hex-digit suffix instead (up
 * to SHM_IMAGE_NAME_TRIES names), out->notice says which name was skipped
 * and why, and shm_image_find() accepts both forms.
 *
 * On any failure every temporary object and file is removed. Errors:
 * HERD_E_INVAL (bad options, unknown or unusable weight type: the message
 * names it), the gguf_open errors for a bad source (message names the file
 * and the problem), HERD_E_UNSUPPORTED (a source tensor type that cannot be
 * converted), -ENOSPC / -EFBIG / -ENOMEM (message says /dev/shm is full and
 * how many bytes were needed), other -errno. */
int shm_image_create(const shm_create_opts *o, shm_image_info *out, char *err, size_t errlen);

/* Trust rule. An existing object is used (found, adopted, reused under its
 * final name) only when the descriptor opened on it (O_NOFOLLOW, checked
 * with fstat: no race with the name) shows a regular file owned by this
 * process's effective uid with exactly the expected mode (the mode the
 * creator writes: 0440 unless shm_create_opts.mode says otherwise). Then
 * no other uid can write, truncate, rename or unlink it (/dev/shm is
 * sticky), and the header's source identity (realpath, device, inode, size,
 * mtime) is what this uid wrote. The payload's digest is a separate, slow
 * check (shm_image_verify_fd) the adopter runs before trusting the bytes.
 * Objects of the model's name failing the rule are skipped, counted in
 * info.n_untrusted and described in info.notice, never an error. */
#define SHM_IMAGE_MODE 0440 /* default final mode of an image */

/* 0 when st (fstat of an opened object) passes the trust rule for mode
 * (0 = SHM_IMAGE_MODE); else HERD_E_UNTRUSTED with a message naming the
 * owner or the mode found and the one required. */
int shm_image_check_trust(const struct stat *st, mode_t mode, char *msg, size_t msglen);

/* Looks for an image of model_name built from source_path (matching the
 * source's realpath, device, inode, size and mtime recorded in the header)
 * with the given target type (NULL or "" = kept), written under the
 * interleaving policy this process runs with (convert_repack_enabled(
 * no_repack)): an image of the other policy would run other kernels. Only
 * objects passing the trust rule for mode count. Checks headers only:
 * milliseconds, no digest pass, the source is only stat()ed. The newest
 * match wins. With fd non-NULL, *fd is a read-only descriptor of exactly
 * the object that was checked (the caller's to close; -1 on failure): map
 * it, do not reopen the name.
 * Returns 0 and fills out, HERD_E_MISSING when there is none (out->notice
 * and n_untrusted still say what was skipped), -errno when the source
 * cannot be stat()ed or /dev/shm not read, HERD_E_INVAL for a bad model
 * name or type. */
int shm_image_find_fd(const char *model_name, const char *source_path, const char *weight_type,
		      int no_repack, mode_t mode, int *fd, shm_image_info *out, char *err,
		      size_t errlen);
/* shm_image_find_fd with mode SHM_IMAGE_MODE and no descriptor. */
int shm_image_find(const char *model_name, const char *source_path, const char *weight_type,
		   int no_repack, shm_image_info *out, char *err, size_t errlen);

/* Opens an image object read-only (close-on-exec, O_NOFOLLOW: a symbolic
 * link planted under the name is refused with -ELOOP). name is "/herd.x" or
 * "herd.x" (no other '/'). On success *fd is the caller's to close.
 * Returns 0, HERD_E_INVAL for a bad name, -errno (-ENOENT: no such object). */
int shm_image_open(const char *name, int *fd);

/* A mapping of a whole image (PROT_READ, MAP_SHARED). Fields are read-only
 * for the caller; base/hdr/payload stay valid until shm_image_unmap(). */
typedef struct shm_image_map_t {
	const uint8_t *base;           /* page aligned */
	size_t size;                   /* = hdr->image_size */
	const shm_image_header *hdr;   /* = base */
	const uint8_t *payload;        /* base + payload_offset: a GGUF file */
	size_t payload_size;
} shm_image_map_t;

/* Maps the image behind fd (which the caller keeps and may close right
 * after) and checks the header without hashing the payload: magic, version,
 * header size, digest algorithm, that the object is exactly image_size
 * bytes, every offset and size lies inside, the payload starts with the GGUF
 * magic, strings are terminated. Errors: HERD_E_FORMAT (not an image, or an
 * incomplete one whose header was never written), HERD_E_VERSION (message
 * names the image's version and this build's), HERD_E_TRUNCATED (object
 * shorter than its header says), HERD_E_RANGE (offsets inconsistent),
 * HERD_E_UNSUPPORTED (digest algorithm), -errno (fstat, mmap). On failure m
 * is zeroed and nothing stays mapped. The object must not shrink while
 * mapped (that would SIGBUS readers; only its owner could do it). */
int shm_image_map(int fd, shm_image_map_t *m, char *err, size_t errlen);

/* Full check (slow: reads every byte; faults in every page of the mapping,
 * ~0.3-0.7 s for a cold 640 MB image, ~0.15 s warm): recomputes the digest
 * and compares it with the header's. 0 or HERD_E_FORMAT with both digests in
 * the message. */
int shm_image_verify(const shm_image_map_t *m, char *err, size_t errlen);

/* The same check through a descriptor (pread, no mapping): faster for a
 * cold image (no page tables to build: ~4 GB/s against ~1.5 GB/s), for
 * tools and for create's re-adoption. Also checks the header like
 * shm_image_map. fd's file offset is not used. */
int shm_image_verify_fd(int fd, char *err, size_t errlen);

/* Unmaps and zeroes m; accepts a zeroed or NULL m. */
void shm_image_unmap(shm_image_map_t *m);

/* Where this process has the image object `segment` ("/herd.x" or
 * "herd.x") mapped, from /proc/self/maps: *start and *len of the first
 * mapping of /dev/shm/<segment>. Returns 0, -ENOENT (not mapped) or
 * -errno. For tools that inspect their own mapping (herd agent --touch)
 * and tests. */
int shm_image_mapped(const char *segment, unsigned char **start, size_t *len);

/* Opens the payload GGUF in place (gguf_open_mem: no copy) and checks it
 * matches the header (tensor count, data offset, alignment 64). *g is the
 * caller's to gguf_close() before shm_image_unmap(m); tensor data pointers
 * point into the shared pages. Errors: the gguf_open_mem errors,
 * HERD_E_FORMAT on a mismatch with the header. */
int shm_image_gguf(const shm_image_map_t *m, gguf_ctx **g, char *err, size_t errlen);

/* Convenience: shm_image_open + shm_image_map + close. */
int shm_image_attach(const char *name, shm_image_map_t *m, char *err, size_t errlen);

/* Fills out from a mapped image (name left empty: a mapping does not know
 * it). */
void shm_image_describe(const shm_image_map_t *m, shm_image_info *out);

enum {
	SHM_LIST_VERIFY = 1 << 0, /* also check each digest (slow) */
	SHM_LIST_ATTACH = 1 << 1, /* count mapping processes via /proc/<pid>/maps */
};

/* Called once per /dev/shm/herd.* object (images, invalid or foreign
 * objects with that prefix, stale temporaries), in name order. Return 0 to
 * go on; anything else stops the listing and is returned by shm_image_list.
 * info is valid only during the call. */
typedef int (*shm_image_list_fn)(void *user, const shm_image_info *info);

/* Lists images (flags: SHM_LIST_*). Headers are read with pread (the
 * listing maps nothing while it counts attachments, so it does not count
 * itself unless the caller has an image mapped). Unreadable objects are
 * reported invalid with the reason; unreadable /proc entries are skipped.
 * Returns 0, the callback's nonzero value, or -errno (/dev/shm unreadable,
 * -ENOMEM). */
int shm_image_list(int flags, shm_image_list_fn fn, void *user);

/* shm_unlink()s an object named "/herd.x" or "herd.x". Processes that have
 * it mapped keep their mapping. Returns 0, HERD_E_INVAL for a name that is
 * not a herd object, -errno (-ENOENT, -EACCES). */
int shm_image_remove(const char *name);

/* Canonical weight type for a name accepted by shm_create_opts.weight_type:
 * 0 with *type set, HERD_E_INVAL otherwise. */
int shm_image_parse_type(const char *name, kern_type *type);

#ifdef __cplusplus
}
#endif
#endif
