/* src.c: file bytes, mapped or inflated on their own thread (see src.h). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#ifdef HC_HAVE_ISAL
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#endif
#include "src.h"

#define HC_SRC_IN (1u << 20)  /* compressed bytes per read() */
#define HC_SRC_SLICE (8u << 20) /* a mapped file's span */
/* A mapped plain file's pages are mapped in (MADV_POPULATE_READ) by the source's thread, at
 * most this far ahead of the reader, so the books' thread takes no page fault on the file. */
#define HC_SRC_LEAD (128u << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

struct hc_chunk {
	uint8_t *data;
	size_t len;
	/* a mapped gzip member ends with this chunk (len may be 0): its trailer's CRC-32 and
	 * length, which the reader checks against what it took (inflate_mapped) */
	int member_end;
	uint32_t crc, isize;
};

struct hc_src {
	int fd, gzip;
	/* mapped plain file */
	const uint8_t *map;
	size_t map_len;
	_Atomic size_t map_off;   /* written by the reader; read by the populating thread too */
	_Atomic int pop_waiting;
	/* ring (gzip or unmappable file): slots [head, tail) are filled and not yet taken; the
	 * reader holds slot `held` (-1: none) until its next call */
	struct hc_chunk ring[HC_SRC_CHUNKS];
	uint8_t *mem;
	unsigned head, tail;
	int held;
	int done, err;            /* the thread finished; its error (-errno) or 0 */
	_Atomic int stop;         /* set under mu; the populating thread also reads it between slices */
	pthread_mutex_t mu;
	pthread_cond_t filled, freed;
	pthread_t th;
	int th_started;
	_Atomic uint64_t in_bytes;
	uint64_t out_bytes, err_at;
	uint8_t *in;
	size_t pre_n;             /* bytes of a pipe read at open (to tell gzip) already in `in` */
	/* a regular gzip file is mapped (ISA-L): the inflater reads it in place, and the reader
	 * computes the members' CRC-32 (the inflater is the slower side of an 8-stock replay) */
	const uint8_t *zmap;
	size_t zmap_len;
	uint32_t crc, isize;      /* reader: CRC-32 and length of the member so far */
	int bad;                  /* reader: a member's check failed; -EBADMSG from now on */
	uint64_t handed, bad_at;  /* reader: decompressed bytes handed; where `bad` was found */
};

const char *hc_src_inflater(void)
{
#ifdef HC_HAVE_ISAL
	return "isa-l";
#else
	return "zlib";
#endif
}

/* ---- the thread's side ---- */
/* The next free slot's buffer, waiting while the ring is full; NULL when told to stop. */
static uint8_t *slot_wait(struct hc_src *s)
{
	pthread_mutex_lock(&s->mu);
	while (!s->stop && s->tail - s->head >= HC_SRC_CHUNKS)
		pthread_cond_wait(&s->freed, &s->mu);
	uint8_t *p = s->stop ? NULL : s->ring[s->tail % HC_SRC_CHUNKS].data;
	pthread_mutex_unlock(&s->mu);
	return p;
}

static void slot_publish_end(struct hc_src *s, size_t len, int member_end, uint32_t crc,
			     uint32_t isize)
{
	pthread_mutex_lock(&s->mu);
	struct hc_chunk *c = &s->ring[s->tail % HC_SRC_CHUNKS];
	c->len = len;
	c->member_end = member_end;
	c->crc = crc;
	c->isize = isize;
	s->tail++;
	pthread_cond_signal(&s->filled);
	pthread_mutex_unlock(&s->mu);
}

static void slot_publish(struct hc_src *s, size_t len) { slot_publish_end(s, len, 0, 0, 0); }

static void finish(struct hc_src *s, int err)
{
	pthread_mutex_lock(&s->mu);
	s->done = 1;
	s->err = err;
	pthread_cond_signal(&s->filled);
	pthread_mutex_unlock(&s->mu);
}

/* Read more compressed input: bytes read, 0 at end of file, -errno. */
static ssize_t read_in(struct hc_src *s, uint8_t *dst, size_t cap)
{
	for (;;) {
		ssize_t n = read(s->fd, dst, cap);
		if (n >= 0) {
			atomic_fetch_add_explicit(&s->in_bytes, (uint64_t)n, memory_order_relaxed);
			return n;
		}
		if (errno != EINTR)
			return -errno;
	}
}

static int is_member_start(const uint8_t *p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

/* The inflater's input (*next, *avail) topped up to `want` bytes (1, or 2 after a member to tell
 * another) unless the file ended (*eof): what is left moves to the start of s->in, the read goes
 * after it. 0 or -errno. */
static int refill(struct hc_src *s, uint8_t **next, size_t *avail, size_t want, int *eof)
{
	while (*avail < want && !*eof) {
		memmove(s->in, *next, *avail);
		ssize_t n = read_in(s, s->in + *avail, HC_SRC_IN - *avail);
		if (n < 0)
			return (int)n;
		*eof = n == 0;
		*next = s->in;
		*avail += (size_t)n;
	}
	return 0;
}

/* The ring slot the inflater writes into: `used` bytes of `out` (NULL: none held yet). */
struct sink { uint8_t *out; size_t used; };

/* The slot to write into, taking a free one when none is held; NULL when told to stop. */
static uint8_t *sink_room(struct hc_src *s, struct sink *k)
{
	if (!k->out) {
		k->out = slot_wait(s);
		k->used = 0;
	}
	return k->out;
}

/* `got` more bytes written at out + used; a full slot goes to the reader. */
static void sink_add(struct hc_src *s, struct sink *k, size_t got)
{
	k->used += got;
	s->out_bytes += got;
	if (k->used == HC_SRC_CHUNK) {
		slot_publish(s, k->used);
		k->out = NULL;
	}
}

/* At the end: a partly filled slot goes to the reader too. */
static void sink_end(struct hc_src *s, struct sink *k)
{
	if (k->out && k->used)
		slot_publish(s, k->used);
}

#ifdef HC_HAVE_ISAL
/* ISA-L's AVX-512 code leaves the upper halves of the vector registers dirty, and every
 * legacy-SSE instruction of the thread then pays for it until a vzeroupper: the books' SSE
 * compares did (day profile in memory, the same thread after one gzip replay: 312 -> 413 ms,
 * 316 ms again after a vzeroupper; inside the replay, on the books' thread, which computes
 * the CRC-32). Called after each ISA-L call on a thread that runs other code; out of line, so
 * no vector value is live across it (all are call-clobbered). A no-op without AVX. */
static int have_avx; /* set when the library loads */
__attribute__((constructor)) static void detect_avx(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	have_avx = __builtin_cpu_supports("avx");
#endif
}
static __attribute__((noinline)) void zero_upper(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (have_avx > 0)
		__asm__ volatile("vzeroupper" ::: "memory");
#endif
}

static int inflate_all(struct hc_src *s)
{
	struct inflate_state *st = malloc(sizeof(*st));
	if (!st)
		return -ENOMEM;
	isal_inflate_init(st);
	st->crc_flag = ISAL_GZIP;
	st->next_in = s->in;
	st->avail_in = (uint32_t)s->pre_n;
	int rc = 0, in_eof = 0, member_done = 0;
	struct sink k = { NULL, 0 };
	for (;;) {
		if (!sink_room(s, &k))
			break;
		size_t avail = st->avail_in;
		if ((rc = refill(s, &st->next_in, &avail, member_done ? 2 : 1, &in_eof)) < 0)
			break;
		st->avail_in = (uint32_t)avail;
		if (member_done) { /* after a member: another one, or the end */
			if (!is_member_start(st->next_in, st->avail_in))
				break;
			uint8_t *ni = st->next_in;
			uint32_t ai = st->avail_in;
			isal_inflate_reset(st);
			st->crc_flag = ISAL_GZIP;
			st->next_in = ni;
			st->avail_in = ai;
			member_done = 0;
		}
		st->next_out = k.out + k.used;
		st->avail_out = (uint32_t)(HC_SRC_CHUNK - k.used);
		int r = isal_inflate(st);
		size_t got = (size_t)(st->next_out - (k.out + k.used));
		sink_add(s, &k, got);
		if (r < 0) {
			rc = -EBADMSG;
			break;
		}
		if (st->block_state == ISAL_BLOCK_FINISH)
			member_done = 1;
		else if (in_eof && !st->avail_in && !got) {
			rc = -EPIPE; /* the file ended inside the stream */
			break;
		}
	}
	sink_end(s, &k);
	free(st);
	return rc;
}

/* The compressed bytes ISA-L is given at once: its avail_in is 32 bits; a day's file is 8-9 GB. */
#define HC_SRC_WIN (1u << 30)
static uint32_t in_window(const uint8_t *p, const uint8_t *end)
{
	return (size_t)(end - p) < HC_SRC_WIN ? (uint32_t)(end - p) : HC_SRC_WIN;
}

/* A mapped gzip file: members inflated as raw deflate in place (no read() copy), each header
 * read by ISA-L, each trailer handed to the reader with the member's last chunk; the CRC-32
 * is computed on the reader's side (hc_src_next). */
static int inflate_mapped(struct hc_src *s)
{
	struct inflate_state *st = malloc(sizeof(*st));
	if (!st)
		return -ENOMEM;
	const uint8_t *p = s->zmap, *end = s->zmap + s->zmap_len;
	struct sink k = { NULL, 0 };
	int rc = 0;
	for (;;) { /* one member */
		isal_inflate_init(st);
		st->next_in = (uint8_t *)p;
		st->avail_in = in_window(p, end);
		struct isal_gzip_header h;
		isal_gzip_header_init(&h); /* name, extra, comment: NULL, skipped */
		int r = isal_read_gzip_header(st, &h);
		if (r != ISAL_DECOMP_OK) {
			rc = r == ISAL_END_INPUT && st->next_in + st->avail_in == end ? -EPIPE : -EBADMSG;
			break;
		}
		for (;;) {
			if (!sink_room(s, &k))
				goto out;
			if (st->avail_in < (1u << 20))
				st->avail_in = in_window(st->next_in, end);
			st->next_out = k.out + k.used;
			st->avail_out = (uint32_t)(HC_SRC_CHUNK - k.used);
			r = isal_inflate(st);
			size_t got = (size_t)(st->next_out - (k.out + k.used));
			atomic_store_explicit(&s->in_bytes, (uint64_t)(st->next_in - s->zmap),
					      memory_order_relaxed);
			if (r < 0) {
				sink_add(s, &k, got);
				rc = -EBADMSG;
				goto out;
			}
			if (st->block_state == ISAL_BLOCK_FINISH) {
				k.used += got; /* published below, with the trailer */
				s->out_bytes += got;
				break;
			}
			sink_add(s, &k, got);
			if (st->next_in == end && !st->avail_in && !got) {
				rc = -EPIPE; /* the file ended inside the stream */
				goto out;
			}
		}
		/* the trailer: after the whole bytes ISA-L holds in its bit buffer */
		const uint8_t *t = st->next_in - (st->read_in_length >> 3);
		if (end - t < 8) {
			rc = -EPIPE;
			break;
		}
		uint32_t crc, isize;
		memcpy(&crc, t, 4);
		memcpy(&isize, t + 4, 4);
		if (!sink_room(s, &k)) /* a full chunk went out just before: the end takes a slot */
			goto out;
		slot_publish_end(s, k.used, 1, le32toh(crc), le32toh(isize));
		k.out = NULL;
		p = t + 8;
		atomic_store_explicit(&s->in_bytes, (uint64_t)(p - s->zmap), memory_order_relaxed);
		if (!is_member_start(p, (size_t)(end - p)))
			break; /* the end, or bytes after the last member: ignored, as gzip -d does */
	}
out:
	sink_end(s, &k);
	free(st);
	return rc;
}
#else
static int inflate_all(struct hc_src *s)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	z.next_in = s->in;
	z.avail_in = (uInt)s->pre_n;
	int rc = 0, in_eof = 0, member_done = 0;
	struct sink k = { NULL, 0 };
	for (;;) {
		if (!sink_room(s, &k))
			break;
		size_t avail = z.avail_in;
		if ((rc = refill(s, &z.next_in, &avail, member_done ? 2 : 1, &in_eof)) < 0)
			break;
		z.avail_in = (uInt)avail;
		if (member_done) {
			if (!is_member_start(z.next_in, z.avail_in))
				break;
			inflateReset(&z);
			member_done = 0;
		}
		z.next_out = k.out + k.used;
		z.avail_out = (uInt)(HC_SRC_CHUNK - k.used);
		int r = inflate(&z, Z_NO_FLUSH);
		size_t got = (size_t)(z.next_out - (k.out + k.used));
		sink_add(s, &k, got);
		if (r == Z_STREAM_END) {
			member_done = 1;
		} else if (r == Z_BUF_ERROR && in_eof && !z.avail_in) {
			rc = -EPIPE;
			break;
		} else if (r != Z_OK && r != Z_BUF_ERROR) {
			rc = r == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
			break;
		} else if (in_eof && !z.avail_in && !got) {
			rc = -EPIPE;
			break;
		}
	}
	sink_end(s, &k);
	inflateEnd(&z);
	return rc;
}
#endif

/* An unmappable plain file (a pipe): read() into the chunks. */
static int copy_all(struct hc_src *s)
{
	for (size_t pre = s->pre_n;; pre = 0) {
		uint8_t *out = slot_wait(s);
		if (!out)
			return 0;
		size_t used = pre;
		memcpy(out, s->in, pre);
		while (used < HC_SRC_CHUNK) {
			ssize_t n = read_in(s, out + used, HC_SRC_CHUNK - used);
			if (n < 0)
				return (int)n;
			if (!n)
				break;
			used += (size_t)n;
		}
		s->out_bytes += used;
		if (used)
			slot_publish(s, used);
		if (used < HC_SRC_CHUNK)
			return 0;
	}
}

/* A mapped plain file: its pages mapped in, slice by slice, up to HC_SRC_LEAD ahead of the
 * reader. Only a hint: on a kernel without MADV_POPULATE_READ, or an error, it stops and the
 * reader's own faults map the rest. */
static void populate_map(struct hc_src *s)
{
	for (size_t pos = 0; pos < s->map_len && !s->stop;) {
		if (pos >= s->map_off + HC_SRC_LEAD) {
			pthread_mutex_lock(&s->mu);
			atomic_store(&s->pop_waiting, 1);
			while (!s->stop && pos >= s->map_off + HC_SRC_LEAD)
				pthread_cond_wait(&s->freed, &s->mu);
			atomic_store(&s->pop_waiting, 0);
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		size_t n = s->map_len - pos < HC_SRC_SLICE ? s->map_len - pos : HC_SRC_SLICE;
		if (madvise((void *)(s->map + pos), n, MADV_POPULATE_READ) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		pos += n;
	}
}

static void *thread_main(void *arg)
{
	struct hc_src *s = arg;
	if (s->map) {
		populate_map(s);
		return NULL;
	}
#ifdef HC_HAVE_ISAL
	int rc = !s->gzip ? copy_all(s) : s->zmap ? inflate_mapped(s) : inflate_all(s);
#else
	int rc = s->gzip ? inflate_all(s) : copy_all(s);
#endif
	s->err_at = s->out_bytes;
	finish(s, rc);
	return NULL;
}

/* ---- the reader's side ---- */
int hc_src_next(struct hc_src *s, const uint8_t **p, size_t *len)
{
	if (s->map || (!s->gzip && !s->th_started)) {
		size_t off = s->map_off;
		if (off >= s->map_len)
			return 0;
		size_t n = s->map_len - off < HC_SRC_SLICE ? s->map_len - off : HC_SRC_SLICE;
		*p = s->map + off;
		*len = n;
		s->map_off = off + n;
		if (atomic_load(&s->pop_waiting)) { /* at most once per slice */
			pthread_mutex_lock(&s->mu);
			pthread_cond_signal(&s->freed);
			pthread_mutex_unlock(&s->mu);
		}
		return 1;
	}
	if (s->bad)
		return -EBADMSG;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		if (s->held >= 0) {
			s->held = -1;
			s->head++;
			pthread_cond_signal(&s->freed);
		}
		while (s->head == s->tail && !s->done)
			pthread_cond_wait(&s->filled, &s->mu);
		if (s->head == s->tail) {
			int rc = s->err;
			pthread_mutex_unlock(&s->mu);
			return rc;
		}
		struct hc_chunk c = s->ring[s->head % HC_SRC_CHUNKS];
		s->held = (int)(s->head % HC_SRC_CHUNKS);
		pthread_mutex_unlock(&s->mu);
#ifdef HC_HAVE_ISAL
		if (s->zmap) { /* the member's check, on this side (see inflate_mapped) */
			s->crc = crc32_gzip_refl(s->crc, c.data, c.len);
			zero_upper(); /* this is the books' thread */
			s->isize += (uint32_t)c.len;
			s->handed += c.len;
			if (c.member_end) {
				if (s->crc != c.crc || s->isize != c.isize) {
					s->bad = 1;
					s->bad_at = s->handed;
				}
				s->crc = 0;
				s->isize = 0;
			}
		}
#endif
		if (c.len) {
			*p = c.data;
			*len = c.len;
			return 1;
		}
		if (s->bad)
			return -EBADMSG;
	}
}

int hc_src_is_gzip(const struct hc_src *s) { return s->gzip; }
int hc_src_is_mapped(const struct hc_src *s) { return s->map != NULL; }

uint64_t hc_src_offset(const struct hc_src *s)
{
	if (s->map)
		return s->map_off;
	return atomic_load_explicit(&((struct hc_src *)s)->in_bytes, memory_order_relaxed);
}

uint64_t hc_src_out_bytes(const struct hc_src *s)
{
	return s->map ? s->map_off : s->bad ? s->bad_at : s->err_at;
}

/* A whole regular file mapped read-only for one sequential pass; NULL if it cannot be. */
static const uint8_t *map_whole(int fd, size_t len)
{
	void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return NULL;
	madvise(m, len, MADV_SEQUENTIAL);
	madvise(m, len, MADV_WILLNEED);
	return m;
}

/* The source's thread (thread_main) with its mutex and condition variables: 0 or -errno. */
static int start_thread(struct hc_src *s)
{
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->filled, NULL);
	pthread_cond_init(&s->freed, NULL);
	int rc = -pthread_create(&s->th, NULL, thread_main, s);
	if (rc < 0) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->filled);
		pthread_cond_destroy(&s->freed);
		return rc;
	}
	s->th_started = 1;
	return 0;
}

int hc_src_open(struct hc_src **out, const char *path)
{
	struct hc_src *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->held = -1;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0) {
		int e = errno;
		free(s);
		return -e;
	}
	int rc;
	struct stat sb;
	uint8_t magic[2];
	if (fstat(s->fd, &sb) < 0) {
		rc = -errno;
		goto fail;
	}
	if (S_ISDIR(sb.st_mode)) {
		rc = -EISDIR;
		goto fail;
	}
	if (S_ISREG(sb.st_mode)) {
		ssize_t n = pread(s->fd, magic, 2, 0);
		if (n < 0) {
			rc = -errno;
			goto fail;
		}
		s->gzip = is_member_start(magic, (size_t)n);
		if (!s->gzip) {
			if (sb.st_size == 0) {
				*out = s;
				return 0;
			}
			if ((s->map = map_whole(s->fd, (size_t)sb.st_size))) {
				s->map_len = (size_t)sb.st_size;
				start_thread(s); /* without it, the reader's own faults map the file */
				*out = s;
				return 0;
			}
		}
#ifdef HC_HAVE_ISAL
		if (s->gzip) { /* mapped and inflated in place; read() below if it cannot be */
			if ((s->zmap = map_whole(s->fd, (size_t)sb.st_size)))
				s->zmap_len = (size_t)sb.st_size;
		}
#endif
	}
	s->mem = malloc((size_t)HC_SRC_CHUNKS * HC_SRC_CHUNK + HC_SRC_IN);
	if (!s->mem) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < HC_SRC_CHUNKS; i++)
		s->ring[i].data = s->mem + (size_t)i * HC_SRC_CHUNK;
	s->in = s->mem + (size_t)HC_SRC_CHUNKS * HC_SRC_CHUNK;
	if (!S_ISREG(sb.st_mode)) { /* a pipe: its first bytes tell gzip; the thread sees them too */
		while (s->pre_n < 2) {
			ssize_t n = read_in(s, s->in + s->pre_n, 2 - s->pre_n);
			if (n < 0) {
				rc = (int)n;
				free(s->mem);
				goto fail;
			}
			if (!n)
				break;
			s->pre_n += (size_t)n;
		}
		s->gzip = is_member_start(s->in, s->pre_n);
	}
	if ((rc = start_thread(s)) < 0) {
		free(s->mem);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (s->zmap)
		munmap((void *)s->zmap, s->zmap_len);
	close(s->fd);
	free(s);
	return rc;
}

void hc_src_close(struct hc_src *s)
{
	if (!s)
		return;
	if (s->th_started) {
		pthread_mutex_lock(&s->mu);
		s->stop = 1;
		pthread_cond_signal(&s->freed);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->th, NULL);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->filled);
		pthread_cond_destroy(&s->freed);
		free(s->mem);
	}
	if (s->map)
		munmap((void *)s->map, s->map_len);
	if (s->zmap)
		munmap((void *)s->zmap, s->zmap_len);
	close(s->fd);
	free(s);
}
