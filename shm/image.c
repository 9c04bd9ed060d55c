/* Shared-memory model images: create, find, open, map, verify, list, remove.
 * Layout and contracts in image.h. */
#include "shm/image.h"

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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "kernels/gemm.h" /* kern_r16_base_type: an interleaved type names its plain one */
#include "model/convert.h"

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
	out->source_dev = h->source_dev;
	out->source_ino = h->source_ino;
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

/* ---- trust ------------------------------------------------------------------ */

int shm_image_check_trust(const struct stat *st, mode_t mode, char *msg, size_t msglen)
{
	const mode_t want = mode ? (mode & 07777) : SHM_IMAGE_MODE;
	const uid_t me = geteuid();
	if (!st)
		return herd_errf(msg, msglen, HERD_E_INVAL, "shm_image_check_trust: NULL stat");
	if (!S_ISREG(st->st_mode))
		return herd_errf(msg, msglen, HERD_E_UNTRUSTED, "not a regular file (mode %06o)",
			       (unsigned)st->st_mode);
	if (st->st_uid != me)
		return herd_errf(msg, msglen, HERD_E_UNTRUSTED,
			       "owned by uid %u, not by this process's uid %u", (unsigned)st->st_uid,
			       (unsigned)me);
	if ((st->st_mode & 07777) != want)
		return herd_errf(msg, msglen, HERD_E_UNTRUSTED, "mode %04o, not the %04o images are "
			       "written with", (unsigned)(st->st_mode & 07777), (unsigned)want);
	return 0;
}

/* ---- open / map / verify -------------------------------------------------- */

int shm_image_open(const char *name, int *fd)
{
	const char *base = object_base(name);
	if (!fd)
		return HERD_E_INVAL;
	*fd = -1;
	if (!base)
		return HERD_E_INVAL;
	/* the file under /dev/shm, as shm_open would, but O_NOFOLLOW for sure */
	char full[sizeof(SHM_IMAGE_DIR) + SHM_IMAGE_NAME_MAX + 1];
	snprintf(full, sizeof(full), SHM_IMAGE_DIR "/%s", base);
	const int f = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (f < 0)
		return -errno;
	(void)fcntl(f, F_SETFL, 0); /* O_NONBLOCK only for the open (a FIFO) */
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

int shm_image_mapped(const char *segment, unsigned char **start, size_t *len)
{
	char want[256], line[1024];
	snprintf(want, sizeof(want), "/dev/shm%s%s", segment[0] == '/' ? "" : "/", segment);
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -errno;
	int rc = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		char path[512] = "";
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %511s", &a, &b, path) != 3)
			continue;
		if (!strcmp(path, want)) {
			*start = (unsigned char *)a;
			*len = b - a;
			rc = 0;
			break;
		}
	}
	fclose(f);
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
 * st filled; with fd_out, *fd_out is the open descriptor, the caller's) or
 * an error with a message. */
static int read_header_fd(int dirfd, const char *base, shm_image_header *hdr, struct stat *st,
			  int *fd_out, char *msg, size_t msglen)
{
	int rc = 0;
	if (fd_out)
		*fd_out = -1;
	/* O_NONBLOCK: a FIFO planted under the name must not block the open */
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
	if (rc == 0 && fd_out) {
		/* blocking again: later preads of a regular file never see EAGAIN anyway */
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		*fd_out = fd;
	} else {
		close(fd);
	}
	return rc;
}

static int read_header(int dirfd, const char *base, shm_image_header *hdr, struct stat *st,
		       char *msg, size_t msglen)
{
	return read_header_fd(dirfd, base, hdr, st, NULL, msg, msglen);
}

/* What shm_image_find_fd looks for. */
typedef struct find_want {
	const char *model;
	size_t mlen;
	char type[SHM_IMAGE_TYPE_MAX]; /* canonical, "" = kept */
	char path[256];                /* realpath of the source, as in headers */
	struct stat sst;               /* the source */
	int repack;                    /* the policy this process runs with */
	mode_t mode;                   /* the trust rule's mode */
} find_want;

static int is_hexn(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return 0;
	return 1;
}

/* The 16 digest digits of n when n is "herd.<model>.<16 hex>" or
 * "herd.<model>.<16 hex>.<8 hex>" (published beside a squatted name), else
 * NULL. */
static const char *name_digest(const find_want *w, const char *n)
{
	const size_t plen = strlen(SHM_IMAGE_PREFIX), base = plen + w->mlen + 1 + 16;
	const size_t len = strlen(n);
	if ((len != base && len != base + 9) || strncmp(n, SHM_IMAGE_PREFIX, plen) != 0 ||
	    strncmp(n + plen, w->model, w->mlen) != 0 || n[plen + w->mlen] != '.' ||
	    !is_hexn(n + plen + w->mlen + 1, 16))
		return NULL;
	if (len == base + 9 && (n[base] != '.' || !is_hexn(n + base + 1, 8)))
		return NULL;
	return n + plen + w->mlen + 1;
}

/* The interleaving policy (KERN_REPACK_*, 0 = off) an image's flags record. */
static int image_policy(uint32_t flags)
{
	if (!(flags & SHM_IMAGE_F_REPACKED))
		return 0;
	return flags & SHM_IMAGE_F_REPACK_Q4_0 ? KERN_REPACK_AVX2 : KERN_REPACK_ALL;
}

/* 1 when the checked header h describes an image of what w wants. */
static int header_matches(const find_want *w, const shm_image_header *h, const char *hex16)
{
	/* an image written under the other interleaving policy would run
	 * other kernels than this process chooses: build a fresh one */
	if (image_policy(h->flags) != w->repack)
		return 0;
	if (strcmp(h->model, w->model) != 0 || strcmp(h->target_type, w->type) != 0 ||
	    h->source_size != (uint64_t)w->sst.st_size ||
	    h->source_mtime_ns != ts_ns(w->sst.st_mtim) ||
	    h->source_dev != (uint64_t)w->sst.st_dev || h->source_ino != (uint64_t)w->sst.st_ino ||
	    strncmp(h->source_path, w->path, sizeof(h->source_path)) != 0)
		return 0;
	/* the name must carry the digest */
	char hex[17];
	shm_digest_hex(h->digest, 8, hex);
	return memcmp(hex16, hex, 16) == 0;
}

/* One directory entry: 0 and *fd open when it is a trusted match, else -1
 * (untrusted ones are counted in *n_untrusted, the last described in
 * notice). */
static int find_entry(const find_want *w, int dirfd, const char *n, shm_image_header *h,
		      struct stat *st, int *fd, int *n_untrusted, char *notice, size_t nlen)
{
	char msg[160];
	const char *hex16 = name_digest(w, n);
	if (!hex16 || read_header_fd(dirfd, n, h, st, fd, msg, sizeof(msg)))
		return -1;
	if (shm_image_check_trust(st, w->mode, msg, sizeof(msg))) {
		(*n_untrusted)++;
		snprintf(notice, nlen, "skipped /%.80s: %.100s", n, msg);
	} else if (header_matches(w, h, hex16)) {
		return 0;
	}
	close(*fd);
	*fd = -1;
	return -1;
}

/* Fills w from the arguments (the source is stat()ed here). */
static int find_prepare(find_want *w, const char *model_name, const char *source_path,
			const char *weight_type, int no_repack, mode_t mode, char *err, size_t errlen)
{
	char real[PATH_MAX];
	if (!valid_model_name(model_name))
		return herd_errf(err, errlen, HERD_E_INVAL, "bad model name '%s'",
			       model_name ? model_name : "(null)");
	memset(w, 0, sizeof(*w));
	w->model = model_name;
	w->mlen = strlen(model_name);
	w->repack = convert_repack_enabled(no_repack);
	w->mode = mode ? (mode & 07777) : SHM_IMAGE_MODE;
	if (weight_type && weight_type[0]) {
		kern_type t;
		if (shm_image_parse_type(weight_type, &t))
			return herd_errf(err, errlen, HERD_E_INVAL, "unknown weight type '%s'", weight_type);
		put_field(w->type, sizeof(w->type), kern_type_name(t));
	}
	if (stat(source_path, &w->sst) != 0 || !realpath(source_path, real))
		return herd_errf(err, errlen, -errno, "%s: %s", source_path, strerror(errno));
	put_field(w->path, sizeof(w->path), real);
	return 0;
}

int shm_image_find_fd(const char *model_name, const char *source_path, const char *weight_type,
		      int no_repack, mode_t mode, int *fd, shm_image_info *out, char *err,
		      size_t errlen)
{
	find_want w;
	char notice[sizeof(out->notice)] = "";
	int n_untrusted = 0, best = -1, rc;
	int64_t best_created = 0;
	if (err && errlen)
		err[0] = '\0';
	if (fd)
		*fd = -1;
	if (!out || !source_path)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_find: NULL argument");
	info_init(out);
	if ((rc = find_prepare(&w, model_name, source_path, weight_type, no_repack, mode, err, errlen)))
		return rc;
	DIR *d = opendir(SHM_IMAGE_DIR);
	if (!d)
		return herd_errf(err, errlen, -errno, "%s: %s", SHM_IMAGE_DIR, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d))) {
		shm_image_header h;
		struct stat st;
		int cfd;
		if (find_entry(&w, dirfd(d), e->d_name, &h, &st, &cfd, &n_untrusted, notice,
			       sizeof(notice)))
			continue;
		if (best >= 0 && h.created_ns <= best_created) {
			close(cfd);
			continue;
		}
		if (best >= 0)
			close(best);
		best = cfd;
		best_created = h.created_ns;
		info_init(out);
		info_from_header(&h, out);
		info_from_stat(&st, out);
		snprintf(out->name, sizeof(out->name), "/%.*s", (int)sizeof(out->name) - 2, e->d_name);
		out->valid = 1;
	}
	closedir(d);
	out->n_untrusted = n_untrusted;
	snprintf(out->notice, sizeof(out->notice), "%s", notice);
	if (best < 0)
		return herd_errf(err, errlen, HERD_E_MISSING, "no image of model '%s' from %s",
			       model_name, source_path);
	if (fd)
		*fd = best;
	else
		close(best);
	return 0;
}

int shm_image_find(const char *model_name, const char *source_path, const char *weight_type,
		   int no_repack, shm_image_info *out, char *err, size_t errlen)
{
	return shm_image_find_fd(model_name, source_path, weight_type, no_repack, 0, NULL, out, err,
				 errlen);
}

/* ---- create ------------------------------------------------------------ */

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

/* One image under construction: what shm_image_create's phases share, and
 * what create_cleanup releases on failure. */
typedef struct create_job {
	const shm_create_opts *o;
	char *err;
	size_t errlen;
	kern_type target;       /* with convert */
	int convert;            /* o->weight_type given */
	int repack;             /* the interleaving policy (model/convert.h) */
	mode_t mode;            /* final mode of the object */
	struct stat sst;        /* the source */
	char real[PATH_MAX];    /* realpath of the source */
	int fd;                 /* the temporary object, -1 */
	int have_tmp;           /* tmp_obj and tmp_dir exist */
	char tmp_obj[64], tmp_dir[128], tmp_path[128];
	char gpath[160];        /* the payload GGUF in tmp_dir, "" once gone */
	int gfd;                /* gpath, -1 */
	void *gmap;             /* gpath mapped, MAP_FAILED */
	size_t gsize;
	shm_image_header h;
	char final_name[SHM_IMAGE_NAME_MAX], final_path[SHM_IMAGE_NAME_MAX + 16];
} create_job;

/* Checks the options and the source; fills the job's target, mode, source
 * stat and realpath. */
static int create_check(create_job *j)
{
	const shm_create_opts *o = j->o;
	if (!valid_model_name(o->model_name))
		return herd_errf(j->err, j->errlen, HERD_E_INVAL,
			       "bad model name '%s' (1..63 of A-Z a-z 0-9 _ . + -, not starting "
			       "with '.', not 'tmp' or 'tmp.*')",
			       o->model_name ? o->model_name : "(null)");
	if (o->weight_type && o->weight_type[0]) {
		if (shm_image_parse_type(o->weight_type, &j->target))
			return herd_errf(j->err, j->errlen, HERD_E_INVAL,
				       "unknown weight type '%s' (use F32, F16, BF16, Q4_0, Q4_1, "
				       "Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K or Q6_K)",
				       o->weight_type);
		kern_ops ops;
		kern_ops_init(&ops, KERN_ISA_REF);
		if (!ops.from_float[j->target] || !ops.to_float[j->target])
			return herd_errf(j->err, j->errlen, HERD_E_INVAL, "weight type %s cannot be produced",
				       kern_type_name(j->target));
		j->convert = 1;
	}
	j->mode = o->mode ? (o->mode & 07777) : 0440;
	if (j->mode & 0222)
		return herd_errf(j->err, j->errlen, HERD_E_INVAL,
			       "image mode %04o has write bits: images are read-only", (unsigned)j->mode);
	if (stat(o->source_path, &j->sst) != 0 || !realpath(o->source_path, j->real))
		return herd_errf(j->err, j->errlen, -errno, "source %s: %s", o->source_path,
			       strerror(errno));
	return 0;
}

/* Phase 1: an image of the same model, source and policy that passes the
 * trust rule and whose digest verifies. 1 (out filled) or 0 (none: build
 * one; out->notice keeps what was skipped). */
static int create_adopt(const create_job *j, shm_image_info *out)
{
	shm_image_info found;
	const shm_create_opts *o = j->o;
	int fd = -1;
	if (o->no_adopt)
		return 0;
	const int rc = shm_image_find_fd(o->model_name, o->source_path,
					 j->convert ? kern_type_name(j->target) : NULL, o->no_repack,
					 j->mode, &fd, &found, NULL, 0);
	out->n_untrusted = found.n_untrusted;
	snprintf(out->notice, sizeof(out->notice), "%s", found.notice);
	if (rc)
		return 0;
	const int v = shm_image_verify_fd(fd, NULL, 0);
	close(fd);
	if (v)
		return 0;
	*out = found;
	out->adopted = 1;
	return 1;
}

/* The payload GGUF written into gpath from the source under the policy. */
static int write_gguf(create_job *j, gguf_ctx *src, gguf_writer *w)
{
	char msg[512];
	convert_plan *plan = NULL;
	const char *model = j->o->model_name;
	const convert_opts co = {.requantize = j->convert, .target = j->target, .repack = j->repack,
				 .alignment = SHM_IMAGE_TENSOR_ALIGN};
	int rc = convert_payload(w, src, &co, &plan, msg, sizeof(msg));
	if (rc)
		return herd_errf(j->err, j->errlen, rc, "cannot create image of '%s' from %s: %s", model,
			       j->o->source_path, msg);
	rc = make_tmp(j->tmp_obj, sizeof(j->tmp_obj), j->tmp_dir, sizeof(j->tmp_dir), &j->fd);
	if (rc) {
		herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': temporary object in %s: %s",
			model, SHM_IMAGE_DIR, herd_strerror(rc));
		goto out;
	}
	j->have_tmp = 1;
	snprintf(j->tmp_path, sizeof(j->tmp_path), SHM_IMAGE_DIR "%s", j->tmp_obj);
	snprintf(j->gpath, sizeof(j->gpath), "%s/payload.gguf", j->tmp_dir);
	if ((rc = gguf_writer_write(w, j->gpath, msg, sizeof(msg)))) {
		if (rc == -ENOSPC || rc == -EFBIG || rc == -ENOMEM)
			herd_errf(j->err, j->errlen, rc,
				"cannot create image of '%s': %s is full or limited while writing the "
				"payload: %s",
				model, SHM_IMAGE_DIR, msg);
		else
			herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': writing the payload: %s",
				model, msg);
	}
out:
	convert_plan_free(plan);
	return rc;
}

/* Phase 2: write the payload GGUF into a private temporary directory. */
static int create_payload(create_job *j)
{
	char msg[512];
	gguf_ctx *src = NULL;
	gguf_writer *w = NULL;
	int rc = gguf_open(&src, j->o->source_path, msg, sizeof(msg));
	if (rc)
		return herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': bad source: %s",
			       j->o->model_name, msg);
	if ((rc = gguf_writer_create(&w)))
		herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': %s", j->o->model_name,
			herd_strerror(rc));
	else
		rc = write_gguf(j, src, w);
	gguf_writer_destroy(w);
	gguf_close(src); /* the writer is done with the source's pages */
	return rc;
}

/* The header of the image around the payload pg (digest still zero). */
static void fill_header(create_job *j, const gguf_ctx *pg)
{
	shm_image_header *h = &j->h;
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, SHM_IMAGE_MAGIC, 8);
	h->version = SHM_IMAGE_VERSION;
	h->header_size = sizeof(*h);
	h->flags = (j->convert ? SHM_IMAGE_F_CONVERTED : 0) | (j->repack ? SHM_IMAGE_F_REPACKED : 0) |
		   (j->repack == KERN_REPACK_AVX2 ? SHM_IMAGE_F_REPACK_Q4_0 : 0);
	h->digest_algo = SHM_DIGEST_HM256;
	h->payload_offset = SHM_IMAGE_PAYLOAD_ALIGN;
	h->payload_size = j->gsize;
	h->image_size = h->payload_offset + h->payload_size;
	h->tensor_dir_offset = h->payload_offset;
	h->tensor_data_offset = h->payload_offset + gguf_data_offset(pg);
	h->n_tensors = (uint64_t)gguf_n_tensors(pg);
	h->tensor_align = (uint32_t)gguf_alignment(pg);
	h->source_size = (uint64_t)j->sst.st_size;
	h->source_mtime_ns = ts_ns(j->sst.st_mtim);
	h->source_dev = (uint64_t)j->sst.st_dev;
	h->source_ino = (uint64_t)j->sst.st_ino;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	h->created_ns = ts_ns(now);
	h->creator_pid = (uint32_t)getpid();
	put_field(h->model, sizeof(h->model), j->o->model_name);
	put_field(h->target_type, sizeof(h->target_type), j->convert ? kern_type_name(j->target) : "");
	put_field(h->weight_type, sizeof(h->weight_type), main_weight_type(pg));
	put_field(h->source_path, sizeof(h->source_path), j->real);
}

/* Phase 3: map and check the written payload and lay out the header. */
static int create_layout(create_job *j)
{
	char msg[512];
	struct stat st;
	const char *model = j->o->model_name;
	j->gfd = open(j->gpath, O_RDWR | O_CLOEXEC);
	if (j->gfd < 0 || fstat(j->gfd, &st) != 0)
		return herd_errf(j->err, j->errlen, -errno, "cannot create image of '%s': %s: %s", model,
			       j->gpath, strerror(errno));
	j->gsize = (size_t)st.st_size;
	j->gmap = mmap(NULL, j->gsize, PROT_READ, MAP_SHARED, j->gfd, 0);
	if (j->gmap == MAP_FAILED)
		return herd_errf(j->err, j->errlen, -errno, "cannot create image of '%s': mmap %s: %s",
			       model, j->gpath, strerror(errno));
	gguf_ctx *pg = NULL;
	int rc = gguf_open_mem(&pg, j->gmap, j->gsize, msg, sizeof(msg));
	if (rc)
		return herd_errf(j->err, j->errlen, rc,
			       "cannot create image of '%s': written payload is invalid: %s", model, msg);
	fill_header(j, pg);
	gguf_close(pg);
	if (j->h.tensor_align != SHM_IMAGE_TENSOR_ALIGN)
		return herd_errf(j->err, j->errlen, HERD_E_FORMAT,
			       "cannot create image of '%s': payload alignment %u, expected %u", model,
			       j->h.tensor_align, SHM_IMAGE_TENSOR_ALIGN);
	return 0;
}

/* Phase 4: copy the payload behind the header, hashing it, releasing the
 * temporary file as we go. */
static int create_copy(create_job *j)
{
	shm_image_header *h = &j->h;
	const char *model = j->o->model_name;
	int rc;
	if (ftruncate(j->fd, (off_t)h->image_size) != 0)
		return space_err(j->err, j->errlen, -errno, model, h->image_size, "ftruncate");
	shm_digest_state ds;
	shm_digest_init(&ds);
	shm_digest_update_zeros(&ds, h->payload_offset - h->header_size);
	for (size_t off = 0; off < j->gsize;) {
		const size_t n = j->gsize - off < COPY_CHUNK ? j->gsize - off : COPY_CHUNK;
		const uint8_t *p = (const uint8_t *)j->gmap + off;
		shm_digest_update(&ds, p, n);
		if ((rc = pwrite_all(j->fd, p, n, (off_t)(h->payload_offset + off))))
			return space_err(j->err, j->errlen, rc, model, h->image_size, "writing");
		/* best effort: tmpfs frees the pages, keeping peak use near one copy */
		(void)fallocate(j->gfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n);
		off += n;
	}
	shm_digest_final(&ds, h->digest);
	munmap(j->gmap, j->gsize);
	j->gmap = MAP_FAILED;
	close(j->gfd);
	j->gfd = -1;
	unlink(j->gpath);
	rmdir(j->tmp_dir);
	j->gpath[0] = '\0';
	return 0;
}

/* Phase 5a: the header, the group and the read-only mode. */
static int create_seal(create_job *j)
{
	const char *model = j->o->model_name;
	int rc = pwrite_all(j->fd, &j->h, sizeof(j->h), 0);
	if (rc)
		return space_err(j->err, j->errlen, rc, model, j->h.image_size, "writing the header");
	if (j->o->gid != (gid_t)-1 && fchown(j->fd, (uid_t)-1, j->o->gid) != 0)
		return herd_errf(j->err, j->errlen, -errno,
			       "cannot create image of '%s': chown to group %u: %s", model,
			       (unsigned)j->o->gid, strerror(errno));
	if (fchmod(j->fd, j->mode) != 0)
		return herd_errf(j->err, j->errlen, -errno, "cannot create image of '%s': chmod: %s", model,
			       strerror(errno));
	char hex[17];
	shm_digest_hex(j->h.digest, 8, hex);
	snprintf(j->final_name, sizeof(j->final_name), "/" SHM_IMAGE_PREFIX "%s.%s", model, hex);
	snprintf(j->final_path, sizeof(j->final_path), SHM_IMAGE_DIR "%s", j->final_name);
	return 0;
}

/* The object under path: 0 and *fd open when it is a regular file of ours
 * (*mode_ok: with the image mode too); HERD_E_UNTRUSTED when it is not ours
 * (squatted: msg says why) or -errno. */
static int open_ours(const create_job *j, const char *path, int *fd, int *mode_ok, char *msg,
		     size_t msglen)
{
	struct stat st;
	*mode_ok = 0;
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (*fd < 0) {
		const int e = errno;
		if (e == ELOOP)
			return herd_errf(msg, msglen, HERD_E_UNTRUSTED, "a symbolic link");
		return herd_errf(msg, msglen, -e, "cannot open: %s", strerror(e));
	}
	int rc = 0;
	if (fstat(*fd, &st) != 0)
		rc = herd_errf(msg, msglen, -errno, "fstat: %s", strerror(errno));
	else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
		rc = shm_image_check_trust(&st, j->mode, msg, msglen);
	else
		*mode_ok = shm_image_check_trust(&st, j->mode, NULL, 0) == 0;
	if (rc) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* 1 when the existing trusted object fd is sound and records the same
 * digest, source and target as ours (then *h becomes its header), so that
 * shm_image_find keeps finding it. */
static int same_image(int fd, shm_image_header *h)
{
	shm_image_header x;
	if (shm_image_verify_fd(fd, NULL, 0) != 0 || pread(fd, &x, sizeof(x), 0) != (ssize_t)sizeof(x))
		return 0;
	if (memcmp(x.digest, h->digest, SHM_DIGEST_SIZE) != 0 || x.source_size != h->source_size ||
	    x.source_mtime_ns != h->source_mtime_ns || x.source_dev != h->source_dev ||
	    x.source_ino != h->source_ino || strcmp(x.source_path, h->source_path) != 0 ||
	    strcmp(x.target_type, h->target_type) != 0 || strcmp(x.model, h->model) != 0)
		return 0;
	*h = x;
	return 1;
}

/* Renames the temporary object to final_path; 0, or -errno (-EEXIST when
 * the name is taken and noreplace). */
static int publish_rename(create_job *j, int noreplace)
{
	int r = noreplace ? renameat2(AT_FDCWD, j->tmp_path, AT_FDCWD, j->final_path, RENAME_NOREPLACE)
			  : rename(j->tmp_path, j->final_path);
	if (r != 0)
		return -errno;
	j->have_tmp = 0;
	return 0;
}

/* Another name for the image, "/herd.<model>.<d16>.<r8>": the plain one is
 * squatted. */
static int publish_alt_name(create_job *j)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		r = (uint32_t)t.tv_nsec ^ (uint32_t)getpid() * 2654435761u;
	}
	char hex[17];
	shm_digest_hex(j->h.digest, 8, hex);
	snprintf(j->final_name, sizeof(j->final_name), "/" SHM_IMAGE_PREFIX "%s.%s.%08x",
		 j->o->model_name, hex, (unsigned)r);
	snprintf(j->final_path, sizeof(j->final_path), SHM_IMAGE_DIR "%s", j->final_name);
	return 0;
}

/* The final name is taken: 1 when it holds our image (*adopted, ours
 * dropped), 0 when it was ours but different and got replaced, 2 when it is
 * squatted (notice written: try another name), <0 an error. */
static int publish_taken(create_job *j, int *adopted, shm_image_info *out)
{
	char msg[160];
	int fd, mode_ok;
	int rc = open_ours(j, j->final_path, &fd, &mode_ok, msg, sizeof(msg));
	if (rc == HERD_E_UNTRUSTED) {
		out->n_untrusted++;
		snprintf(out->notice, sizeof(out->notice), "name %.80s is taken by an object that is "
			 "not ours (%.60s): skipped", j->final_name, msg);
		return 2;
	}
	if (rc == 0 && mode_ok && same_image(fd, &j->h)) {
		close(fd);
		shm_unlink(j->tmp_obj);
		j->have_tmp = 0;
		*adopted = 1;
		return 1;
	}
	if (fd >= 0)
		close(fd);
	if (rc && rc != -ENOENT)
		return herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': %s: %s",
			       j->o->model_name, j->final_path, msg);
	/* ours, damaged, another mode or from another source: replace it
	 * (its mappings stay as they are) */
	rc = publish_rename(j, 0);
	if (rc)
		return herd_errf(j->err, j->errlen, rc, "cannot create image of '%s': rename %s to %s: %s",
			       j->o->model_name, j->tmp_path, j->final_path, strerror(-rc));
	return 0;
}

/* Phase 5b: the final name, atomically. An object already under that name
 * is reused when it is the same image (*adopted = 1, ours dropped), else
 * replaced when it is ours (its mappings stay as they are), else (squatted)
 * skipped for a random name. */
static int create_publish(create_job *j, int *adopted, shm_image_info *out)
{
	*adopted = 0;
	for (int t = 0; t <= SHM_IMAGE_NAME_TRIES; t++) {
		int rc = publish_rename(j, 1);
		if (rc == 0)
			return 0;
		if (rc == -EINVAL || rc == -ENOSYS) /* no RENAME_NOREPLACE here */
			rc = -EEXIST;
		if (rc != -EEXIST)
			return herd_errf(j->err, j->errlen, rc,
				       "cannot create image of '%s': rename %s to %s: %s",
				       j->o->model_name, j->tmp_path, j->final_path, strerror(-rc));
		rc = publish_taken(j, adopted, out);
		if (rc != 2)
			return rc < 0 ? rc : 0;
		publish_alt_name(j);
	}
	return herd_errf(j->err, j->errlen, HERD_E_UNTRUSTED,
		       "cannot create image of '%s': %d names in %s are taken by objects that are "
		       "not ours (last: %s)",
		       j->o->model_name, SHM_IMAGE_NAME_TRIES + 1, SHM_IMAGE_DIR, out->notice);
}

/* Releases whatever a failed job left: mapping, files, temporary object. */
static void create_cleanup(create_job *j)
{
	if (j->gmap != MAP_FAILED)
		munmap(j->gmap, j->gsize);
	if (j->gfd >= 0)
		close(j->gfd);
	if (j->gpath[0])
		unlink(j->gpath);
	if (j->have_tmp) {
		rmdir(j->tmp_dir);
		shm_unlink(j->tmp_obj);
	}
	if (j->fd >= 0)
		close(j->fd);
}

int shm_image_create(const shm_create_opts *o, shm_image_info *out, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!o || !out || !o->source_path)
		return herd_errf(err, errlen, HERD_E_INVAL, "shm_image_create: NULL argument");
	info_init(out);
	create_job *j = calloc(1, sizeof(*j));
	if (!j)
		return herd_errf(err, errlen, -ENOMEM, "cannot create image: %s", herd_strerror(-ENOMEM));
	*j = (create_job){.o = o, .err = err, .errlen = errlen, .target = KERN_TYPE_F32,
			  .repack = convert_repack_enabled(o->no_repack), .fd = -1, .gfd = -1,
			  .gmap = MAP_FAILED};
	int rc, adopted = 0;
	if ((rc = create_check(j)))
		goto fail;
	if (create_adopt(j, out))
		goto done;
	if ((rc = create_payload(j)) || (rc = create_layout(j)) || (rc = create_copy(j)) ||
	    (rc = create_seal(j)) || (rc = create_publish(j, &adopted, out)))
		goto fail;
	struct stat st;
	if (adopted) {
		close(j->fd);
		j->fd = -1;
	}
	if (adopted ? stat(j->final_path, &st) != 0 : fstat(j->fd, &st) != 0)
		memset(&st, 0, sizeof(st));
	info_from_header(&j->h, out);
	info_from_stat(&st, out);
	snprintf(out->name, sizeof(out->name), "%s", j->final_name);
	out->valid = 1;
	out->adopted = adopted;
done:
	create_cleanup(j);
	free(j);
	return 0;
fail:
	create_cleanup(j);
	free(j);
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
