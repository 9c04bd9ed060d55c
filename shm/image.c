/* Shared-memory model images: create, find, open, map, verify, list, remove.
 * Layout and contracts in image.h. */
#include "shm/image.h"
#include "kernels/gemm.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"

/* Bytes copied (and hashed) per step when moving the payload into the
 * object; also the granularity at which the temporary GGUF is released. */
#define COPY_CHUNK ((size_t)4 << 20)


/* Copies a NUL-terminated string into a fixed field, NUL-padded (truncating). */
static void put_field(char *dst, size_t cap, const char *s)
{
	memset(dst, 0, cap);
	if (s) {
		const size_t n = strnlen(s, cap - 1);
		memcpy(dst, s, n);
	}
}

/* Copies a fixed field (NUL-terminated within cap, checked before) out. */
static void get_field(char *dst, size_t dcap, const char *src, size_t scap)
{
	const size_t n = strnlen(src, scap);
	const size_t k = n < dcap - 1 ? n : dcap - 1;
	memcpy(dst, src, k);
	dst[k] = '\0';
}

static int64_t ts_ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- names -------------------------------------------------------------- */

static int valid_model_name(const char *s)
{
	const size_t n = s ? strlen(s) : 0;
	/* "tmp" and "tmp.*" would read as the temporaries' "herd.tmp.<pid>.<n>" */
	if (n == 0 || n >= SHM_IMAGE_MODEL_MAX || s[0] == '.' || strcmp(s, "tmp") == 0 ||
	    strncmp(s, "tmp.", 4) == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '_' && c != '.' && c != '-' && c != '+')
			return 0;
	}
	return 1;
}

/* "/herd.x" or "herd.x" -> "herd.x" (pointer into name), or NULL. */
static const char *object_base(const char *name)
{
	if (!name)
		return NULL;
	if (name[0] == '/')
		name++;
	const size_t n = strlen(name);
	if (n <= strlen(SHM_IMAGE_PREFIX) || n >= SHM_IMAGE_NAME_MAX ||
	    strncmp(name, SHM_IMAGE_PREFIX, strlen(SHM_IMAGE_PREFIX)) != 0 || strchr(name, '/'))
		return NULL;
	return name;
}

static int is_hex16(const char *s)
{
	for (int i = 0; i < 16; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return 0;
	return s[16] == '\0';
}

int shm_image_parse_type(const char *name, kern_type *type)
{
	if (!name || !type)
		return HERD_E_INVAL;
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		const kern_type_traits *tr = kern_type_info(t);
		/* Q8_1 and Q8_K are activation formats llama.cpp never stores */
		if (!tr || t == KERN_TYPE_Q8_1 || t == KERN_TYPE_Q8_K)
			continue;
		if (strcasecmp(name, tr->name) == 0) {
			*type = (kern_type)t;
			return 0;
		}
	}
	return HERD_E_INVAL;
}

/* llama.cpp's general.file_type for a file made of one weight type (the
 * "_S" variant for k-quants), or -1. */
static int file_type_of(kern_type t)
{
	switch (t) {
	case KERN_TYPE_F32: return 0;
	case KERN_TYPE_F16: return 1;
	case KERN_TYPE_Q4_0: return 2;
	case KERN_TYPE_Q4_1: return 3;
	case KERN_TYPE_Q8_0: return 7;
	case KERN_TYPE_Q5_0: return 8;
	case KERN_TYPE_Q5_1: return 9;
	case KERN_TYPE_Q2_K: return 10;
	case KERN_TYPE_Q3_K: return 11;
	case KERN_TYPE_Q4_K: return 14;
	case KERN_TYPE_Q5_K: return 16;
	case KERN_TYPE_Q6_K: return 18;
	case KERN_TYPE_BF16: return 32;
	default: return -1;
	}
}

/* ---- header checks -------------------------------------------------------- */

static int field_terminated(const char *f, size_t cap)
{
	return memchr(f, '\0', cap) != NULL;
}

/* Checks h against an object of obj_size bytes. Payload bytes are not looked
 * at. Returns 0 or a HERD_E_* code with a message. */
static int check_header(const shm_image_header *h, uint64_t obj_size, char *msg, size_t msglen)
{
	if (memcmp(h->magic, SHM_IMAGE_MAGIC, 8) != 0) {
		static const char zero[8];
		if (memcmp(h->magic, zero, 8) == 0)
			return herd_errf(msg, msglen, HERD_E_FORMAT,
				       "no image header (an incomplete image, or not a herd image)");
		return herd_errf(msg, msglen, HERD_E_FORMAT, "not a herd image (bad magic)");
	}
	if (h->version != SHM_IMAGE_VERSION)
		return herd_errf(msg, msglen, HERD_E_VERSION,
			       "image format version %u, but this build reads version %u "
			       "(rebuild the image with a matching herd)",
			       h->version, SHM_IMAGE_VERSION);
	if (h->header_size != sizeof(shm_image_header))
		return herd_errf(msg, msglen, HERD_E_FORMAT, "header size %u, expected %zu",
			       h->header_size, sizeof(shm_image_header));
	if (h->digest_algo != SHM_DIGEST_HM256)
		return herd_errf(msg, msglen, HERD_E_UNSUPPORTED, "unknown digest algorithm %u",
			       h->digest_algo);
	if (h->image_size != obj_size)
		return herd_errf(msg, msglen, obj_size < h->image_size ? HERD_E_TRUNCATED : HERD_E_RANGE,
			       "object is %llu bytes but its header says %llu",
			       (unsigned long long)obj_size, (unsigned long long)h->image_size);
	if (h->payload_offset < h->header_size || h->payload_offset % SHM_IMAGE_PAYLOAD_ALIGN ||
	    h->payload_offset > h->image_size || h->payload_size != h->image_size - h->payload_offset)
		return herd_errf(msg, msglen, HERD_E_RANGE,
			       "payload [offset %llu, size %llu] does not fill the %llu-byte image",
			       (unsigned long long)h->payload_offset,
			       (unsigned long long)h->payload_size, (unsigned long long)h->image_size);
	if (h->tensor_dir_offset != h->payload_offset || h->tensor_data_offset < h->payload_offset ||
	    h->tensor_data_offset > h->image_size)
		return herd_errf(msg, msglen, HERD_E_RANGE,
			       "tensor directory %llu / data %llu outside the payload",
			       (unsigned long long)h->tensor_dir_offset,
			       (unsigned long long)h->tensor_data_offset);
	if (h->tensor_align < SHM_IMAGE_TENSOR_ALIGN || (h->tensor_align & (h->tensor_align - 1)))
		return herd_errf(msg, msglen, HERD_E_FORMAT, "tensor alignment %u (need a power of two >= %u)",
			       h->tensor_align, SHM_IMAGE_TENSOR_ALIGN);
	if (!field_terminated(h->model, sizeof(h->model)) ||
	    !field_terminated(h->target_type, sizeof(h->target_type)) ||
	    !field_terminated(h->weight_type, sizeof(h->weight_type)) ||
	    !field_terminated(h->source_path, sizeof(h->source_path)))
		return herd_errf(msg, msglen, HERD_E_FORMAT, "unterminated string in the header");
	return 0;
}

static void info_from_header(const shm_image_header *h, shm_image_info *out)
{
	get_field(out->model, sizeof(out->model), h->model, sizeof(h->model));
	get_field(out->target_type, sizeof(out->target_type), h->target_type, sizeof(h->target_type));
	get_field(out->weight_type, sizeof(out->weight_type), h->weight_type, sizeof(h->weight_type));
	get_field(out->source_path, sizeof(out->source_path), h->source_path, sizeof(h->source_path));
	memcpy(out->digest, h->digest, SHM_DIGEST_SIZE);
	shm_digest_hex(h->digest, SHM_DIGEST_SIZE, out->digest_hex);
	out->version = h->version;
	out->flags = h->flags;
	out->image_size = h->image_size;
	out->payload_offset = h->payload_offset;
	out->payload_size = h->payload_size;
	out->n_tensors = h->n_tensors;
	out->source_size = h->source_size;
	out->source_mtime_ns = h->source_mtime_ns;
	out->created_ns = h->created_ns;
}

static void info_from_stat(const struct stat *st, shm_image_info *out)
{
	out->mode = (uint32_t)(st->st_mode & 07777);
	out->uid = (uint32_t)st->st_uid;
	out->gid = (uint32_t)st->st_gid;
}

static void info_init(shm_image_info *out)
{
	memset(out, 0, sizeof(*out));
	out->n_attached = -1;
}

/* ---- open / map / verify -------------------------------------------------- */

int shm_image_open(const char *name, int *fd)
{
	char path[SHM_IMAGE_NAME_MAX + 1];
	const char *base = object_base(name);
	if (!fd)
		return HERD_E_INVAL;
	*fd = -1;
	if (!base)
		return HERD_E_INVAL;
	snprintf(path, sizeof(path), "/%s", base);
	const int f = shm_open(path, O_RDONLY, 0);
	if (f < 0)
		return -errno;
	*fd = f;
	return 0;
}

int shm_image_map(int fd, shm_image_map_t *m, char *err, size_t errlen)
{
	char msg[256];
	int rc;
	void *p = MAP_FAILED;
	struct stat st;
	if (!m)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_map: NULL map");
	memset(m, 0, sizeof(*m));
	if (err && errlen)
		err[0] = '\0';
	if (fstat(fd, &st) != 0)
		return herd_errf(err, errlen, -errno, "image: fstat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return herd_errf(err, errlen, HERD_E_FORMAT, "image: not a shared-memory object");
	if ((uint64_t)st.st_size < sizeof(shm_image_header))
		return herd_errf(err, errlen, st.st_size == 0 ? HERD_E_FORMAT : HERD_E_TRUNCATED,
			       "image: object is %lld bytes, smaller than the %zu-byte header",
			       (long long)st.st_size, sizeof(shm_image_header));
	if ((uint64_t)st.st_size > SIZE_MAX)
		return herd_errf(err, errlen, HERD_E_RANGE, "image: too large to map");
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return herd_errf(err, errlen, -errno, "image: mmap of %lld bytes: %s",
			       (long long)st.st_size, strerror(errno));
	const shm_image_header *h = p;
	if ((rc = check_header(h, (uint64_t)st.st_size, msg, sizeof(msg)))) {
		herd_errf(err, errlen, rc, "image: %s", msg);
		goto fail;
	}
	const uint8_t *payload = (const uint8_t *)p + h->payload_offset;
	uint32_t gmagic = 0;
	if (h->payload_size >= 4)
		memcpy(&gmagic, payload, 4);
	if (gmagic != GGUF_MAGIC) {
		rc = herd_errf(err, errlen, HERD_E_FORMAT, "image: payload is not a GGUF file");
		goto fail;
	}
	m->base = p;
	m->size = (size_t)st.st_size;
	m->hdr = h;
	m->payload = payload;
	m->payload_size = (size_t)h->payload_size;
	return 0;
fail:
	munmap(p, (size_t)st.st_size);
	return rc;
}

int shm_image_verify(const shm_image_map_t *m, char *err, size_t errlen)
{
	uint8_t d[SHM_DIGEST_SIZE];
	char want[SHM_DIGEST_HEX + 1], got[SHM_DIGEST_HEX + 1];
	if (!m || !m->base)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_verify: not mapped");
	const shm_image_header *h = m->hdr;
	/* Hash in chunks, populating each chunk's page tables in one call first:
	 * taking a fault per 4 KiB page would cost several times the hashing. */
	shm_digest_state ds;
	shm_digest_init(&ds);
	const size_t chunk = (size_t)64 << 20; /* multiple of the page size */
	for (size_t off = 0; off < m->size; off += chunk) {
		const size_t n = m->size - off < chunk ? m->size - off : chunk;
#ifdef MADV_POPULATE_READ
		(void)madvise((void *)(m->base + off), n, MADV_POPULATE_READ); /* best effort */
#endif
		const size_t skip = off < h->header_size ? h->header_size - off : 0;
		if (skip < n)
			shm_digest_update(&ds, m->base + off + skip, n - skip);
	}
	shm_digest_final(&ds, d);
	if (memcmp(d, h->digest, SHM_DIGEST_SIZE) != 0) {
		shm_digest_hex(h->digest, SHM_DIGEST_SIZE, want);
		shm_digest_hex(d, SHM_DIGEST_SIZE, got);
		return herd_errf(err, errlen, HERD_E_FORMAT,
			       "image '%.64s': digest mismatch (header %s, content %s): the image "
			       "was changed or damaged",
			       h->model, want, got);
	}
	if (err && errlen)
		err[0] = '\0';
	return 0;
}

/* HM256 of bytes [from, to) of fd, read with pread: no page tables to
 * populate, so a cold check runs several times faster than over a mapping. */
static int digest_fd(int fd, uint64_t from, uint64_t to, uint8_t out[SHM_DIGEST_SIZE])
{
	uint8_t *buf = malloc(COPY_CHUNK);
	if (!buf)
		return -ENOMEM;
	shm_digest_state ds;
	shm_digest_init(&ds);
	for (uint64_t off = from; off < to;) {
		const size_t want = to - off < COPY_CHUNK ? (size_t)(to - off) : COPY_CHUNK;
		const ssize_t r = pread(fd, buf, want, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			const int rc = r < 0 ? -errno : HERD_E_TRUNCATED;
			free(buf);
			return rc;
		}
		shm_digest_update(&ds, buf, (size_t)r);
		off += (uint64_t)r;
	}
	shm_digest_final(&ds, out);
	free(buf);
	return 0;
}

int shm_image_verify_fd(int fd, char *err, size_t errlen)
{
	shm_image_header h;
	struct stat st;
	char msg[256], want[SHM_DIGEST_HEX + 1], got[SHM_DIGEST_HEX + 1];
	uint8_t d[SHM_DIGEST_SIZE];
	int rc;
	if (fstat(fd, &st) != 0)
		return herd_errf(err, errlen, -errno, "image: fstat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return herd_errf(err, errlen, HERD_E_FORMAT, "image: not a shared-memory object");
	if ((uint64_t)st.st_size < sizeof(h))
		return herd_errf(err, errlen, st.st_size == 0 ? HERD_E_FORMAT : HERD_E_TRUNCATED,
			       "image: object is %lld bytes, smaller than the %zu-byte header",
			       (long long)st.st_size, sizeof(h));
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return herd_errf(err, errlen, HERD_E_TRUNCATED, "image: cannot read the header");
	if ((rc = check_header(&h, (uint64_t)st.st_size, msg, sizeof(msg))))
		return herd_errf(err, errlen, rc, "image: %s", msg);
	if ((rc = digest_fd(fd, h.header_size, h.image_size, d)))
		return herd_errf(err, errlen, rc, "image '%.64s': reading: %s", h.model,
			       herd_strerror(rc));
	if (memcmp(d, h.digest, SHM_DIGEST_SIZE) != 0) {
		shm_digest_hex(h.digest, SHM_DIGEST_SIZE, want);
		shm_digest_hex(d, SHM_DIGEST_SIZE, got);
		return herd_errf(err, errlen, HERD_E_FORMAT,
			       "image '%.64s': digest mismatch (header %s, content %s): the image "
			       "was changed or damaged",
			       h.model, want, got);
	}
	if (err && errlen)
		err[0] = '\0';
	return 0;
}

/* Opens name and runs shm_image_verify_fd; with hdr, also returns its header. */
static int verify_name(const char *name, shm_image_header *hdr, char *err, size_t errlen)
{
	int fd, rc = shm_image_open(name, &fd);
	if (rc)
		return herd_errf(err, errlen, rc, "%s: cannot open: %s", name, herd_strerror(rc));
	rc = shm_image_verify_fd(fd, err, errlen);
	if (rc == 0 && hdr && pread(fd, hdr, sizeof(*hdr), 0) != (ssize_t)sizeof(*hdr))
		rc = herd_errf(err, errlen, HERD_E_TRUNCATED, "%s: cannot read the header", name);
	close(fd);
	return rc;
}

void shm_image_unmap(shm_image_map_t *m)
{
	if (!m)
		return;
	if (m->base)
		munmap((void *)m->base, m->size);
	memset(m, 0, sizeof(*m));
}

int shm_image_gguf(const shm_image_map_t *m, gguf_ctx **g, char *err, size_t errlen)
{
	char msg[384];
	int rc;
	if (!g)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_gguf: NULL argument");
	*g = NULL;
	if (!m || !m->base)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_gguf: not mapped");
	const shm_image_header *h = m->hdr;
	gguf_ctx *ctx = NULL;
	if ((rc = gguf_open_mem(&ctx, m->payload, m->payload_size, msg, sizeof(msg))))
		return herd_errf(err, errlen, rc, "image '%.64s': payload: %s", h->model, msg);
	if (gguf_alignment(ctx) != h->tensor_align || (uint64_t)gguf_n_tensors(ctx) != h->n_tensors ||
	    h->payload_offset + gguf_data_offset(ctx) != h->tensor_data_offset) {
		rc = herd_errf(err, errlen, HERD_E_FORMAT,
			     "image '%.64s': payload GGUF (alignment %zu, %lld tensors, data at %zu) "
			     "does not match the header (%u, %llu, %llu)",
			     h->model, gguf_alignment(ctx), (long long)gguf_n_tensors(ctx),
			     gguf_data_offset(ctx), h->tensor_align, (unsigned long long)h->n_tensors,
			     (unsigned long long)(h->tensor_data_offset - h->payload_offset));
		gguf_close(ctx);
		return rc;
	}
	*g = ctx;
	return 0;
}

int shm_image_attach(const char *name, shm_image_map_t *m, char *err, size_t errlen)
{
	int fd, rc;
	if (m)
		memset(m, 0, sizeof(*m));
	if ((rc = shm_image_open(name, &fd)))
		return herd_errf(err, errlen, rc, "image %s: cannot open: %s", name ? name : "(null)",
			       herd_strerror(rc));
	char msg[320];
	rc = shm_image_map(fd, m, msg, sizeof(msg));
	close(fd);
	if (rc)
		return herd_errf(err, errlen, rc, "%s: %s", name, msg);
	return 0;
}

void shm_image_describe(const shm_image_map_t *m, shm_image_info *out)
{
	info_init(out);
	if (!m || !m->base)
		return;
	info_from_header(m->hdr, out);
	out->valid = 1;
}

/* ---- find ------------------------------------------------------------------ */

/* Reads and checks the header of the object dirfd/base. Returns 0 (hdr and
 * st filled) or an error with a message. */
static int read_header(int dirfd, const char *base, shm_image_header *hdr, struct stat *st,
		       char *msg, size_t msglen)
{
	int rc = 0;
	const int fd = openat(dirfd, base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return herd_errf(msg, msglen, -errno, "cannot open: %s", strerror(errno));
	if (fstat(fd, st) != 0) {
		rc = herd_errf(msg, msglen, -errno, "fstat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		rc = herd_errf(msg, msglen, HERD_E_FORMAT, "not a regular object");
		goto out;
	}
	if ((uint64_t)st->st_size < sizeof(*hdr)) {
		rc = herd_errf(msg, msglen, st->st_size == 0 ? HERD_E_FORMAT : HERD_E_TRUNCATED,
			     "object is %lld bytes, smaller than the header", (long long)st->st_size);
		goto out;
	}
	const ssize_t r = pread(fd, hdr, sizeof(*hdr), 0);
	if (r != (ssize_t)sizeof(*hdr)) {
		rc = herd_errf(msg, msglen, r < 0 ? -errno : HERD_E_TRUNCATED, "cannot read the header");
		goto out;
	}
	if ((rc = check_header(hdr, (uint64_t)st->st_size, msg, msglen)))
		goto out;
	uint32_t gmagic = 0;
	if (pread(fd, &gmagic, 4, (off_t)hdr->payload_offset) != 4 || gmagic != GGUF_MAGIC)
		rc = herd_errf(msg, msglen, HERD_E_FORMAT, "payload is not a GGUF file");
out:
	close(fd);
	return rc;
}

int shm_image_find(const char *model_name, const char *source_path, const char *weight_type,
		   shm_image_info *out, char *err, size_t errlen)
{
	struct stat sst;
	char real[PATH_MAX];
	char want_type[SHM_IMAGE_TYPE_MAX] = "";
	char want_path[256];
	int rc = HERD_E_MISSING, found = 0;
	DIR *d = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!out || !source_path)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_find: NULL argument");
	info_init(out);
	if (!valid_model_name(model_name))
		return herd_errf(err, errlen, HERD_E_INVAL, "bad model name '%s'",
			       model_name ? model_name : "(null)");
	if (weight_type && weight_type[0]) {
		kern_type t;
		if (shm_image_parse_type(weight_type, &t))
			return herd_errf(err, errlen, HERD_E_INVAL, "unknown weight type '%s'", weight_type);
		put_field(want_type, sizeof(want_type), kern_type_name(t));
	}
	if (stat(source_path, &sst) != 0 || !realpath(source_path, real))
		return herd_errf(err, errlen, -errno, "%s: %s", source_path, strerror(errno));
	put_field(want_path, sizeof(want_path), real);

	d = opendir(SHM_IMAGE_DIR);
	if (!d)
		return herd_errf(err, errlen, -errno, "%s: %s", SHM_IMAGE_DIR, strerror(errno));
	const size_t plen = strlen(SHM_IMAGE_PREFIX), mlen = strlen(model_name);
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *n = e->d_name;
		/* exactly "herd.<model>.<16 hex>" */
		if (strlen(n) != plen + mlen + 1 + 16 || strncmp(n, SHM_IMAGE_PREFIX, plen) != 0 ||
		    strncmp(n + plen, model_name, mlen) != 0 || n[plen + mlen] != '.' ||
		    !is_hex16(n + plen + mlen + 1))
			continue;
		shm_image_header h;
		struct stat st;
		char msg[160];
		if (read_header(dirfd(d), n, &h, &st, msg, sizeof(msg)))
			continue;
		/* an image written under the other interleaving policy would run
		 * other kernels than this process chooses: build a fresh one */
		if (!!(h.flags & SHM_IMAGE_F_REPACKED) != kern_repack_worthwhile())
			continue;
		if (strcmp(h.model, model_name) != 0 || strcmp(h.target_type, want_type) != 0 ||
		    h.source_size != (uint64_t)sst.st_size ||
		    h.source_mtime_ns != ts_ns(sst.st_mtim) ||
		    strncmp(h.source_path, want_path, sizeof(h.source_path)) != 0)
			continue;
		/* the name must carry the digest */
		char hex[17];
		shm_digest_hex(h.digest, 8, hex);
		if (strcmp(n + plen + mlen + 1, hex) != 0)
			continue;
		if (found && h.created_ns <= out->created_ns)
			continue;
		info_init(out);
		info_from_header(&h, out);
		info_from_stat(&st, out);
		snprintf(out->name, sizeof(out->name), "/%.*s", (int)sizeof(out->name) - 2, n);
		out->valid = 1;
		found = 1;
	}
	closedir(d);
	if (found)
		rc = 0;
	else
		herd_errf(err, errlen, rc, "no image of model '%s' from %s", model_name, source_path);
	return rc;
}

/* ---- create ------------------------------------------------------------ */

/* One tensor to convert, handed to the writer's fill callback. */
typedef struct conv_tensor {
	const gguf_tensor *t;
	kern_type dst;          /* plain type written (before any repacking) */
	kern_to_float_fn to_float;   /* NULL: no conversion */
	kern_from_float_fn from_float;
	int repack;             /* then interleave rows for the GEMM kernels */
} conv_tensor;

/* Writes c->t into buf (size bytes): dequantized and requantized row by row
 * when converting, then repacked into the row-interleaved layout when asked. */
static int conv_fill(void *user, void *buf, size_t size)
{
	const conv_tensor *c = user;
	const int64_t ne0 = c->t->ne[0];
	const int64_t rows = c->t->ne[1] * c->t->ne[2] * c->t->ne[3];
	const size_t src_row = kern_row_size(c->t->type, ne0);
	const size_t dst_row = kern_row_size(c->dst, ne0);
	/* an interleaved layout may be larger than the plain one (Q4_K_R16) */
	const size_t out_row = c->repack ? kern_row_size(kern_repack_type(c->dst), ne0) : dst_row;
	if (!src_row || !dst_row || !out_row || out_row * (size_t)rows != size)
		return HERD_E_INVAL;
	if (!c->to_float) /* repack only */
		return kern_repack(c->dst, c->t->data, rows, ne0, buf);
	float *f = malloc(sizeof(float) * (size_t)ne0);
	uint8_t *plain = c->repack ? malloc(dst_row * (size_t)rows) : buf;
	if (!f || !plain) {
		free(f);
		if (plain != buf)
			free(plain);
		return -ENOMEM;
	}
	const uint8_t *src = c->t->data;
	for (int64_t r = 0; r < rows; r++) {
		c->to_float(src + (size_t)r * src_row, f, ne0);
		c->from_float(f, plain + (size_t)r * dst_row, ne0);
	}
	free(f);
	int rc = 0;
	if (c->repack) {
		rc = kern_repack(c->dst, plain, rows, ne0, buf);
		free(plain);
	}
	return rc;
}

/* Whether a tensor is one the forward pass only multiplies (never indexes by
 * row), so it may be stored row-interleaved. token_embd is looked up. */
static int is_matmul_weight(const char *name)
{
	static const char *const suffixes[] = {".attn_q.weight", ".attn_k.weight", ".attn_v.weight",
					       ".attn_output.weight", ".ffn_gate.weight", ".ffn_up.weight",
					       ".ffn_down.weight"};
	if (!strcmp(name, "output.weight"))
		return 1;
	if (strncmp(name, "blk.", 4) != 0)
		return 0;
	const size_t n = strlen(name);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		const size_t k = strlen(suffixes[i]);
		if (n > k && !strcmp(name + n - k, suffixes[i]))
			return 1;
	}
	return 0;
}

/* Fills w with src's keys and tensors (converting 2-D ones to target when
 * convert is set; conv must hold n_tensors entries and outlive the write). */
static int build_payload(gguf_writer *w, const gguf_ctx *src, int convert, kern_type target,
			 conv_tensor *conv, int *repacked, char *msg, size_t msglen)
{
	int rc;
	kern_ops ops;
	kern_ops_init(&ops, kern_isa_detect());
	const int repack_ok = kern_repack_worthwhile();
	*repacked = repack_ok;
	for (int64_t i = 0; i < gguf_n_kv(src); i++)
		if ((rc = gguf_writer_copy_kv(w, src, i)))
			return herd_errf(msg, msglen, rc, "copying key %lld: %s", (long long)i,
				       herd_strerror(rc));
	if ((rc = gguf_writer_set_u32(w, "general.alignment", SHM_IMAGE_TENSOR_ALIGN)))
		return herd_errf(msg, msglen, rc, "setting general.alignment: %s", herd_strerror(rc));
	if (convert && file_type_of(target) >= 0 &&
	    (rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)file_type_of(target))))
		return herd_errf(msg, msglen, rc, "setting general.file_type: %s", herd_strerror(rc));
	const kern_type_traits *tt = kern_type_info(target);
	for (int64_t i = 0; i < gguf_n_tensors(src); i++) {
		const gguf_tensor *t = gguf_tensor_at(src, i);
		const kern_type_traits *st = kern_type_info(t->type);
		char name[256];
		if (t->name.len >= sizeof(name))
			return herd_errf(msg, msglen, HERD_E_RANGE, "tensor %lld: name too long",
				       (long long)i);
		memcpy(name, t->name.ptr, t->name.len);
		name[t->name.len] = '\0';
		const int conv_this = convert && t->n_dims == 2 && t->type != target && st && tt &&
				      t->ne[0] % tt->blck_size == 0;
		const kern_type plain = conv_this ? target : t->type;
		const int repack = repack_ok && t->n_dims == 2 && kern_repack_type(plain) >= 0 &&
				   t->ne[1] % KERN_R == 0 && is_matmul_weight(name);
		if (conv_this || repack) {
			if (conv_this && !ops.to_float[t->type])
				return herd_errf(msg, msglen, HERD_E_UNSUPPORTED,
					       "tensor '%s': cannot dequantize type %s", name,
					       kern_type_name(t->type));
			conv[i] = (conv_tensor){t, plain, conv_this ? ops.to_float[t->type] : NULL,
						conv_this ? ops.from_float[target] : NULL, repack};

			rc = gguf_writer_add_tensor_fill(w, name,
							 repack ? (kern_type)kern_repack_type(plain) : plain,
							 t->n_dims, t->ne, conv_fill, &conv[i]);
		} else {
			rc = gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data);
		}
		if (rc)
			return herd_errf(msg, msglen, rc, "tensor '%s': %s", name, herd_strerror(rc));
	}
	return 0;
}

/* Type holding the most bytes among tensors of 2+ dimensions ("" if none). */
static const char *main_weight_type(const gguf_ctx *g)
{
	uint64_t bytes[KERN_TYPE_COUNT] = {0};
	int best = -1;
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		/* an interleaved layout counts as its plain type: same numbers */
		const int type = kern_type_is_r16(t->type) ? kern_r16_base_type(t->type) : (int)t->type;
		if (t->n_dims >= 2 && type >= 0 && type < KERN_TYPE_COUNT)
			bytes[type] += t->size;
	}
	for (int t = 0; t < KERN_TYPE_COUNT; t++)
		if (bytes[t] && (best < 0 || bytes[t] > bytes[best]))
			best = t;
	return best < 0 ? "" : kern_type_name(best);
}

static int pwrite_all(int fd, const void *p, size_t n, off_t off)
{
	const uint8_t *b = p;
	while (n > 0) {
		const ssize_t r = pwrite(fd, b, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		b += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

/* Creates "/herd.tmp.<pid>.<n>" (O_EXCL) and its private directory. */
static int make_tmp(char *obj, size_t objlen, char *dir, size_t dirlen, int *fd_out)
{
	const long pid = (long)getpid();
	for (unsigned n = 0; n < 100000; n++) {
		snprintf(obj, objlen, "/" SHM_IMAGE_TMP_PREFIX "%ld.%u", pid, n);
		const int fd = shm_open(obj, O_RDWR | O_CREAT | O_EXCL, 0600);
		if (fd < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		snprintf(dir, dirlen, SHM_IMAGE_DIR "/" SHM_IMAGE_TMP_PREFIX "%ld.%u.d", pid, n);
		if (mkdir(dir, 0700) != 0) {
			const int e = errno;
			close(fd);
			shm_unlink(obj);
			if (e == EEXIST)
				continue;
			return -e;
		}
		*fd_out = fd;
		return 0;
	}
	return -EEXIST;
}

static int space_err(char *err, size_t errlen, int rc, const char *model, uint64_t need,
		     const char *what)
{
	struct statvfs vs;
	unsigned long long avail = 0;
	if (statvfs(SHM_IMAGE_DIR, &vs) == 0)
		avail = (unsigned long long)vs.f_bavail * vs.f_frsize;
	if (rc == -ENOSPC || rc == -ENOMEM || rc == -EFBIG)
		return herd_errf(err, errlen, rc,
			       "cannot create image of '%s': %s is full or limited (%s): the image "
			       "needs %llu bytes, %llu available",
			       model, SHM_IMAGE_DIR, what, (unsigned long long)need, avail);
	return herd_errf(err, errlen, rc, "cannot create image of '%s': %s: %s", model, what,
		       herd_strerror(rc));
}

int shm_image_create(const shm_create_opts *o, shm_image_info *out, char *err, size_t errlen)
{
	int rc = 0, fd = -1, gfd = -1, have_tmp = 0;
	char tmp_obj[64], tmp_dir[128], gpath[160], tmp_path[128];
	char final_name[SHM_IMAGE_NAME_MAX], final_path[SHM_IMAGE_NAME_MAX + 16];
	char real[PATH_MAX], msg[512];
	gguf_ctx *src = NULL, *pg = NULL;
	gguf_writer *w = NULL;
	conv_tensor *conv = NULL;
	int repacked = 0;
	void *gmap = MAP_FAILED;
	size_t gsize = 0;
	kern_type target = KERN_TYPE_F32;
	int convert = 0;
	struct stat sst, st;
	shm_image_header h;
	gpath[0] = '\0';

	if (err && errlen)
		err[0] = '\0';
	if (!o || !out || !o->source_path)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_create: NULL argument");
	info_init(out);
	if (!valid_model_name(o->model_name))
		return herd_errf(err, errlen, HERD_E_INVAL,
			       "bad model name '%s' (1..63 of A-Z a-z 0-9 _ . + -, not starting "
			       "with '.', not 'tmp' or 'tmp.*')",
			       o->model_name ? o->model_name : "(null)");
	if (o->weight_type && o->weight_type[0]) {
		if (shm_image_parse_type(o->weight_type, &target))
			return herd_errf(err, errlen, HERD_E_INVAL,
				       "unknown weight type '%s' (use F32, F16, BF16, Q4_0, Q4_1, "
				       "Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K or Q6_K)",
				       o->weight_type);
		kern_ops ops;
		kern_ops_init(&ops, KERN_ISA_REF);
		if (!ops.from_float[target] || !ops.to_float[target])
			return herd_errf(err, errlen, HERD_E_INVAL, "weight type %s cannot be produced",
				       kern_type_name(target));
		convert = 1;
	}
	const mode_t mode = o->mode ? (o->mode & 07777) : 0440;
	if (mode & 0222)
		return herd_errf(err, errlen, HERD_E_INVAL,
			       "image mode %04o has write bits: images are read-only", (unsigned)mode);
	if (stat(o->source_path, &sst) != 0 || !realpath(o->source_path, real))
		return herd_errf(err, errlen, -errno, "source %s: %s", o->source_path, strerror(errno));

	/* 1. re-adopt an image of the same model and source */
	if (!o->no_adopt) {
		shm_image_info found;
		if (shm_image_find(o->model_name, o->source_path, convert ? kern_type_name(target) : NULL,
				   &found, NULL, 0) == 0) {
			if (verify_name(found.name, NULL, NULL, 0) == 0) {
				*out = found;
				out->adopted = 1;
				return 0;
			}
		}
	}

	/* 2. write the payload GGUF into a private temporary directory */
	if ((rc = gguf_open(&src, o->source_path, msg, sizeof(msg)))) {
		herd_errf(err, errlen, rc, "cannot create image of '%s': bad source: %s", o->model_name,
			msg);
		goto fail;
	}
	if ((rc = gguf_writer_create(&w)))
		goto fail_sys;
	if (gguf_n_tensors(src) > 0) {
		conv = calloc((size_t)gguf_n_tensors(src), sizeof(*conv));
		if (!conv) {
			rc = -ENOMEM;
			goto fail_sys;
		}
	}
	if ((rc = build_payload(w, src, convert, target, conv, &repacked, msg, sizeof(msg)))) {
		herd_errf(err, errlen, rc, "cannot create image of '%s' from %s: %s", o->model_name,
			o->source_path, msg);
		goto fail;
	}
	if ((rc = make_tmp(tmp_obj, sizeof(tmp_obj), tmp_dir, sizeof(tmp_dir), &fd))) {
		herd_errf(err, errlen, rc, "cannot create image of '%s': temporary object in %s: %s",
			o->model_name, SHM_IMAGE_DIR, herd_strerror(rc));
		goto fail;
	}
	have_tmp = 1;
	snprintf(tmp_path, sizeof(tmp_path), SHM_IMAGE_DIR "%s", tmp_obj);
	snprintf(gpath, sizeof(gpath), "%s/payload.gguf", tmp_dir);
	if ((rc = gguf_writer_write(w, gpath, msg, sizeof(msg)))) {
		if (rc == -ENOSPC || rc == -EFBIG || rc == -ENOMEM)
			herd_errf(err, errlen, rc,
				"cannot create image of '%s': %s is full or limited while writing the "
				"payload: %s",
				o->model_name, SHM_IMAGE_DIR, msg);
		else
			herd_errf(err, errlen, rc, "cannot create image of '%s': writing the payload: %s",
				o->model_name, msg);
		goto fail;
	}
	gguf_writer_destroy(w);
	w = NULL;
	free(conv);
	conv = NULL;
	gguf_close(src); /* the writer is done with the source's pages */
	src = NULL;

	/* 3. check the payload and lay out the image */
	gfd = open(gpath, O_RDWR | O_CLOEXEC);
	if (gfd < 0 || fstat(gfd, &st) != 0) {
		rc = -errno;
		herd_errf(err, errlen, rc, "cannot create image of '%s': %s: %s", o->model_name, gpath,
			strerror(errno));
		goto fail;
	}
	gsize = (size_t)st.st_size;
	gmap = mmap(NULL, gsize, PROT_READ, MAP_SHARED, gfd, 0);
	if (gmap == MAP_FAILED) {
		rc = -errno;
		herd_errf(err, errlen, rc, "cannot create image of '%s': mmap %s: %s", o->model_name,
			gpath, strerror(errno));
		goto fail;
	}
	if ((rc = gguf_open_mem(&pg, gmap, gsize, msg, sizeof(msg)))) {
		herd_errf(err, errlen, rc, "cannot create image of '%s': written payload is invalid: %s",
			o->model_name, msg);
		goto fail;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SHM_IMAGE_MAGIC, 8);
	h.version = SHM_IMAGE_VERSION;
	h.header_size = sizeof(h);
	h.flags = (convert ? SHM_IMAGE_F_CONVERTED : 0) | (repacked ? SHM_IMAGE_F_REPACKED : 0);
	h.digest_algo = SHM_DIGEST_HM256;
	h.payload_offset = SHM_IMAGE_PAYLOAD_ALIGN;
	h.payload_size = gsize;
	h.image_size = h.payload_offset + h.payload_size;
	h.tensor_dir_offset = h.payload_offset;
	h.tensor_data_offset = h.payload_offset + gguf_data_offset(pg);
	h.n_tensors = (uint64_t)gguf_n_tensors(pg);
	h.tensor_align = (uint32_t)gguf_alignment(pg);
	h.source_size = (uint64_t)sst.st_size;
	h.source_mtime_ns = ts_ns(sst.st_mtim);
	{
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		h.created_ns = ts_ns(now);
	}
	h.creator_pid = (uint32_t)getpid();
	put_field(h.model, sizeof(h.model), o->model_name);
	put_field(h.target_type, sizeof(h.target_type), convert ? kern_type_name(target) : "");
	put_field(h.weight_type, sizeof(h.weight_type), main_weight_type(pg));
	put_field(h.source_path, sizeof(h.source_path), real);
	gguf_close(pg);
	pg = NULL;
	if (h.tensor_align != SHM_IMAGE_TENSOR_ALIGN) {
		rc = herd_errf(err, errlen, HERD_E_FORMAT,
			     "cannot create image of '%s': payload alignment %u, expected %u",
			     o->model_name, h.tensor_align, SHM_IMAGE_TENSOR_ALIGN);
		goto fail;
	}

	/* 4. copy the payload behind the header, hashing it, releasing the
	 * temporary file as we go */
	if (ftruncate(fd, (off_t)h.image_size) != 0) {
		rc = space_err(err, errlen, -errno, o->model_name, h.image_size, "ftruncate");
		goto fail;
	}
	shm_digest_state ds;
	shm_digest_init(&ds);
	shm_digest_update_zeros(&ds, h.payload_offset - h.header_size);
	for (size_t off = 0; off < gsize;) {
		const size_t n = gsize - off < COPY_CHUNK ? gsize - off : COPY_CHUNK;
		const uint8_t *p = (const uint8_t *)gmap + off;
		shm_digest_update(&ds, p, n);
		if ((rc = pwrite_all(fd, p, n, (off_t)(h.payload_offset + off)))) {
			rc = space_err(err, errlen, rc, o->model_name, h.image_size, "writing");
			goto fail;
		}
		/* best effort: tmpfs frees the pages, keeping peak use near one copy */
		(void)fallocate(gfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n);
		off += n;
	}
	shm_digest_final(&ds, h.digest);
	munmap(gmap, gsize);
	gmap = MAP_FAILED;
	close(gfd);
	gfd = -1;
	unlink(gpath);
	rmdir(tmp_dir);
	gpath[0] = '\0';

	/* 5. header last, then read-only, then the final name */
	if ((rc = pwrite_all(fd, &h, sizeof(h), 0))) {
		rc = space_err(err, errlen, rc, o->model_name, h.image_size, "writing the header");
		goto fail;
	}
	if (o->gid != (gid_t)-1 && fchown(fd, (uid_t)-1, o->gid) != 0) {
		rc = -errno;
		herd_errf(err, errlen, rc, "cannot create image of '%s': chown to group %u: %s",
			o->model_name, (unsigned)o->gid, strerror(errno));
		goto fail;
	}
	if (fchmod(fd, mode) != 0) {
		rc = -errno;
		herd_errf(err, errlen, rc, "cannot create image of '%s': chmod: %s", o->model_name,
			strerror(errno));
		goto fail;
	}
	char hex[17];
	shm_digest_hex(h.digest, 8, hex);
	snprintf(final_name, sizeof(final_name), "/" SHM_IMAGE_PREFIX "%s.%s", o->model_name, hex);
	snprintf(final_path, sizeof(final_path), SHM_IMAGE_DIR "%s", final_name);
	int adopted = 0;
	if (renameat2(AT_FDCWD, tmp_path, AT_FDCWD, final_path, RENAME_NOREPLACE) != 0) {
		const int e = errno;
		if (e == EEXIST) {
			/* same digest: reuse it if it is sound and of the same source,
			 * else replace it below (its mappings stay as they are) */
			shm_image_header xh;
			if (verify_name(final_name, &xh, NULL, 0) == 0) {
				/* adopt only an image that also records our source, so
				 * that shm_image_find keeps finding it */
				const shm_image_header *x = &xh;
				adopted = memcmp(x->digest, h.digest, SHM_DIGEST_SIZE) == 0 &&
					  x->source_size == h.source_size &&
					  x->source_mtime_ns == h.source_mtime_ns &&
					  strcmp(x->source_path, h.source_path) == 0 &&
					  strcmp(x->target_type, h.target_type) == 0 &&
					  strcmp(x->model, h.model) == 0;
				if (adopted)
					h = xh;
			}
		}
		if (adopted) {
			shm_unlink(tmp_obj);
		} else if (e != EEXIST && e != EINVAL && e != ENOSYS) {
			rc = -e;
			herd_errf(err, errlen, rc, "cannot create image of '%s': rename %s to %s: %s",
				o->model_name, tmp_path, final_path, strerror(e));
			goto fail;
		} else if (rename(tmp_path, final_path) != 0) {
			/* EEXIST with a damaged object, or no RENAME_NOREPLACE */
			rc = -errno;
			herd_errf(err, errlen, rc, "cannot create image of '%s': rename %s to %s: %s",
				o->model_name, tmp_path, final_path, strerror(errno));
			goto fail;
		}
	}
	have_tmp = 0;
	if (adopted) {
		close(fd);
		fd = -1;
		if (stat(final_path, &st) != 0)
			memset(&st, 0, sizeof(st));
	} else if (fstat(fd, &st) != 0) {
		memset(&st, 0, sizeof(st));
	}
	info_from_header(&h, out);
	info_from_stat(&st, out);
	snprintf(out->name, sizeof(out->name), "%s", final_name);
	out->valid = 1;
	out->adopted = adopted;
	if (fd >= 0)
		close(fd);
	return 0;

fail_sys:
	herd_errf(err, errlen, rc, "cannot create image of '%s': %s", o->model_name, herd_strerror(rc));
fail:
	gguf_close(pg);
	if (gmap != MAP_FAILED)
		munmap(gmap, gsize);
	if (gfd >= 0)
		close(gfd);
	if (gpath[0])
		unlink(gpath);
	if (have_tmp) {
		rmdir(tmp_dir);
		shm_unlink(tmp_obj);
	}
	if (fd >= 0)
		close(fd);
	gguf_writer_destroy(w);
	free(conv);
	gguf_close(src);
	info_init(out);
	return rc;
}

/* ---- list / remove ------------------------------------------------------ */

typedef struct list_entry {
	shm_image_info info;
	dev_t dev;
	ino_t ino;
	int counted_pid; /* last pid counted, to count each process once */
} list_entry;

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const list_entry *)a)->info.name, ((const list_entry *)b)->info.name);
}

/* Adds to e[i].info.n_attached every process whose maps show the object's
 * device and inode. */
static void count_attached(list_entry *e, size_t n)
{
	DIR *proc = opendir("/proc");
	if (!proc)
		return;
	for (size_t i = 0; i < n; i++)
		e[i].info.n_attached = 0;
	char *line = NULL;
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(proc))) {
		char *end;
		const long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/maps", pid);
		FILE *f = fopen(path, "re");
		if (!f)
			continue; /* gone or not ours to read */
		while (getline(&line, &cap, f) > 0) {
			if (!strstr(line, SHM_IMAGE_DIR "/" SHM_IMAGE_PREFIX))
				continue;
			unsigned maj, min;
			unsigned long long ino;
			if (sscanf(line, "%*s %*s %*s %x:%x %llu", &maj, &min, &ino) != 3)
				continue;
			for (size_t i = 0; i < n; i++)
				if ((unsigned long long)e[i].ino == ino &&
				    major(e[i].dev) == maj && minor(e[i].dev) == min &&
				    e[i].counted_pid != (int)pid) {
					e[i].counted_pid = (int)pid;
					e[i].info.n_attached++;
				}
		}
		fclose(f);
	}
	free(line);
	closedir(proc);
}

int shm_image_list(int flags, shm_image_list_fn fn, void *user)
{
	int rc = 0;
	list_entry *e = NULL;
	size_t n = 0, cap = 0;
	if (!fn)
		return HERD_E_INVAL;
	DIR *d = opendir(SHM_IMAGE_DIR);
	if (!d)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		if (strncmp(name, SHM_IMAGE_PREFIX, strlen(SHM_IMAGE_PREFIX)) != 0 ||
		    strlen(name) + 2 > SHM_IMAGE_NAME_MAX)
			continue;
		struct stat lst;
		if (fstatat(dirfd(d), name, &lst, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(lst.st_mode))
			continue; /* temporaries' private directories, vanished entries */
		if (n == cap) {
			const size_t nc = cap ? 2 * cap : 16;
			list_entry *ne = realloc(e, nc * sizeof(*e));
			if (!ne) {
				rc = -ENOMEM;
				goto out;
			}
			e = ne;
			cap = nc;
		}
		list_entry *x = &e[n++];
		memset(x, 0, sizeof(*x));
		info_init(&x->info);
		snprintf(x->info.name, sizeof(x->info.name), "/%.*s", (int)sizeof(x->info.name) - 2,
			 name);
		x->counted_pid = -1;
		shm_image_header h;
		struct stat st = lst; /* replaced by fstat of the opened object */
		const int r = read_header(dirfd(d), name, &h, &st, x->info.problem,
					  sizeof(x->info.problem));
		info_from_stat(&st, &x->info);
		x->info.image_size = (uint64_t)st.st_size;
		x->dev = st.st_dev;
		x->ino = st.st_ino;
		if (r) {
			x->info.status = r;
			if (strncmp(name, SHM_IMAGE_TMP_PREFIX, strlen(SHM_IMAGE_TMP_PREFIX)) == 0)
				snprintf(x->info.problem, sizeof(x->info.problem),
					 "temporary object of an image being built (or left by a "
					 "crashed creator)");
			continue;
		}
		info_from_header(&h, &x->info);
		x->info.valid = 1;
		if (flags & SHM_LIST_VERIFY) {
			const int v = verify_name(x->info.name, NULL, x->info.problem,
						  sizeof(x->info.problem));
			if (v) {
				x->info.valid = 0;
				x->info.status = v;
			}
		}
	}
	if (n > 1)
		qsort(e, n, sizeof(*e), cmp_entry);
	if (flags & SHM_LIST_ATTACH)
		count_attached(e, n);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = fn(user, &e[i].info);
out:
	closedir(d);
	free(e);
	return rc;
}

int shm_image_remove(const char *name)
{
	char path[SHM_IMAGE_NAME_MAX + 1];
	const char *base = object_base(name);
	if (!base)
		return HERD_E_INVAL;
	snprintf(path, sizeof(path), "/%s", base);
	if (shm_unlink(path) != 0)
		return -errno;
	return 0;
}
