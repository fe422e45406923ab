/* files.c: NASDAQ file layout, pcap and pcapng readers (see files.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "files.h"
#include "src.h"

#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HC_MAX_UNIT (64u << 20) /* a pcap record / pcapng block larger than this is corrupt */

size_t hc_feed_nasdaq(struct hc_books *b, const uint8_t *p, size_t len, int final)
{
	size_t off = hc_books_feed_records(b, p, len);
	if (final && off < len) {
		hc_books_count_drop(b, -HC_DROP_FILE_TRUNCATED);
		off = len;
	}
	return off;
}

uint64_t hc_decode_nasdaq(const uint8_t *p, size_t len, uint64_t drops[HC_DROP__MAX])
{
	size_t off;
	uint64_t ok = hc_itch_decode_records(p, len, &off, drops);
	if (off < len)
		drops[HC_DROP_FILE_TRUNCATED]++;
	return ok;
}

/* The MoldUDP64 payload of a captured frame (link type 1 = Ethernet, optional VLAN tags,
 * IPv4 unfragmented, UDP): its start and *n, or NULL for anything else. */
static const uint8_t *frame_mold(uint32_t linktype, const uint8_t *f, size_t len, uint32_t *n)
{
	if (linktype != 1 || len < 14)
		return NULL;
	size_t off = 14;
	uint16_t et = hc_be16(f + 12);
	while (et == 0x8100 || et == 0x88a8) {
		if (len - off < 4)
			return NULL;
		et = hc_be16(f + off + 2);
		off += 4;
	}
	if (et != 0x0800 || len - off < 20)
		return NULL;
	const uint8_t *ip = f + off;
	uint32_t ihl = (uint32_t)(ip[0] & 15) * 4;
	uint32_t tot = hc_be16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl + 8 || tot > len - off || ip[9] != 17 ||
	    (hc_be16(ip + 6) & 0x3fff) != 0)
		return NULL;
	const uint8_t *udp = ip + ihl;
	uint32_t ulen = hc_be16(udp + 4);
	if (ulen < 8 || ulen > tot - ihl)
		return NULL;
	*n = ulen - 8;
	return udp + 8;
}

/* A frame's MoldUDP64 drops are counted in the books too: the mold's drop counters before the
 * frame, and after it what they grew by. */
struct mold_mark { uint64_t truncated, malformed; };
static inline struct mold_mark mold_mark(const struct hc_mold *m)
{
	return (struct mold_mark){ m->st.drop_truncated, m->st.drop_short + m->st.drop_trailing };
}
static inline void mold_drops(uint64_t *drops, struct mold_mark before, const struct hc_mold *m)
{
	struct mold_mark now = mold_mark(m);
	if (__builtin_expect(now.truncated != before.truncated || now.malformed != before.malformed, 0)) {
		drops[HC_DROP_MOLD_TRUNCATED] += now.truncated - before.truncated;
		drops[HC_DROP_MOLD_MALFORMED] += now.malformed - before.malformed;
	}
}

/* The books' drop counters, which this file's readers add to (hc_books_stats is read-only for
 * everyone else; the books' thread is the one writer). */
static inline uint64_t *books_drops(struct hc_books *b)
{
	return ((struct hc_books_stats *)hc_books_stats(b))->drops;
}

/* A captured frame's new MoldUDP64 blocks, sequenced by mold: one run of NASDAQ-layout
 * records (hc_mold_run) in *n bytes, or NULL when there are none; what is not MoldUDP64, and
 * the mold's own drops, counted in drops[]. */
static const uint8_t *frame_run(uint64_t *drops, struct hc_mold *mold, uint32_t linktype,
				const uint8_t *f, size_t len, size_t *n)
{
	uint32_t plen;
	const uint8_t *pl = frame_mold(linktype, f, len, &plen);
	if (!pl) {
		drops[HC_DROP_NOT_MOLD]++;
		return NULL;
	}
	struct mold_mark before = mold_mark(mold);
	struct hc_mold_iter it;
	const uint8_t *run = NULL;
	if (hc_mold_begin(mold, pl, plen, &it) <= 0 || !hc_mold_run(mold, &it, &run, n))
		run = NULL;
	mold_drops(drops, before, mold);
	return run;
}

void hc_feed_frame(struct hc_books *b, struct hc_mold *mold, uint32_t linktype,
		   const uint8_t *f, size_t len)
{
	size_t n;
	const uint8_t *run = frame_run(books_drops(b), mold, linktype, f, len, &n);
	if (run)
		hc_books_feed_records(b, run, n); /* complete records (hc_mold_run): all applied */
}

struct hc_reader {
	struct hc_src *src;
	int fmt;
	int stopped, started;
	int swap;            /* pcap / current pcapng section: file integers are big-endian */
	uint32_t linktype;   /* pcap */
	uint32_t if_link[256]; /* pcapng interfaces of the current section */
	uint32_t n_if;
	const uint8_t *cp;   /* what is left of the current span of hc_src */
	size_t cn;
	/* the unit that straddles two spans, copied here (only it: one per span boundary) */
	uint8_t *acc;
	size_t acc_len, acc_cap;
	struct hc_mold mold;
	/* A capture's new messages in sequence, in the NASDAQ file layout, fed to the books a
	 * stage at a time through hc_books_feed_records, whose look-ahead over messages the file
	 * layout always had: fed one message at a time from their frames, a day-scale book waited
	 * on every miss (day profile, 5 M messages in 4-message frames: 0.66-0.77 s -> 0.36-0.40 s,
	 * the plain NASDAQ file of the same messages 0.33-0.37 s). Drained when it holds
	 * HC_STAGE_BYTES, flushed at the end of every step, so the books hold everything a step
	 * has read when it returns. */
	uint8_t *stage;
	size_t stage_len;
	/* where the parse counts its drops: the books' counters, or with a framer the current
	 * slot's (the books' thread adds them when it takes the slot) */
	uint64_t *drops;
	struct hc_framer *fr; /* a plain capture's frames taken apart on a thread of their own */
};

#define HC_STAGE_BYTES (1u << 20)
#define HC_STAGE_CAP (HC_STAGE_BYTES + 65536u) /* one more datagram's blocks always fit */

static void stage_flush(struct hc_reader *r, struct hc_books *b)
{
	if (r->stage_len) {
		hc_books_feed_records(b, r->stage, r->stage_len); /* every record complete: all taken */
		r->stage_len = 0;
	}
}

/* A full stage in the middle of a step: what the books' steady loop takes, the rest carried to
 * the front. Each call consumes something, so the loop ends below HC_STAGE_BYTES. */
static void stage_drain(struct hc_reader *r, struct hc_books *b)
{
	while (r->stage_len >= HC_STAGE_BYTES) {
		size_t used = hc_books_feed_records_more(b, r->stage, r->stage_len);
		memmove(r->stage, r->stage + used, r->stage_len - used);
		r->stage_len -= used;
	}
}

static void framer_full(struct hc_reader *r);
static int framer_start(struct hc_reader *r);

/* hc_feed_frame, through the stage: the same sequencing and drops, the same messages in the
 * same order, one copy per frame. With a framer (b NULL) a full stage is handed to the
 * books' thread instead of being fed here. */
static void stage_frame(struct hc_reader *r, struct hc_books *b, uint32_t linktype,
			const uint8_t *f, size_t len)
{
	size_t n;
	if (r->stopped) /* the framer was told to stop: no stage to fill */
		return;
	const uint8_t *run = frame_run(r->drops, &r->mold, linktype, f, len, &n);
	if (run) {
		memcpy(r->stage + r->stage_len, run, n);
		r->stage_len += n;
		if (r->fr) {
			if (r->stage_len >= HC_STAGE_BYTES)
				framer_full(r);
		} else {
			stage_drain(r, b);
		}
	}
}

static inline uint32_t rd32(const uint8_t *p, int be)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be ? __builtin_bswap32(v) : v;
}
static inline uint16_t rd16(const uint8_t *p, int be)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return be ? __builtin_bswap16(v) : v;
}

static int acc_reserve(struct hc_reader *r, size_t need)
{
	if (need <= r->acc_cap)
		return 0;
	size_t cap = r->acc_cap ? r->acc_cap : 1u << 16;
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(r->acc, cap);
	if (!p)
		return -ENOMEM;
	r->acc = p;
	r->acc_cap = cap;
	return 0;
}

/* The next span into cp/cn: 1, 0 at the end, -errno. */
static int next_span(struct hc_reader *r)
{
	int rc = hc_src_next(r->src, &r->cp, &r->cn);
	if (rc <= 0)
		r->cn = 0;
	return rc;
}

int hc_reader_open(struct hc_reader **out, const char *path)
{
	struct hc_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	int rc = hc_src_open(&r->src, path);
	if (rc < 0) {
		free(r);
		return rc;
	}
	hc_mold_init(&r->mold);
	rc = next_span(r);
	if (rc < 0) {
		hc_reader_close(r);
		return rc;
	}
	r->fmt = HC_FMT_NASDAQ;
	if (r->cn >= 4) {
		uint32_t m = hc_be32(r->cp);
		if (m == 0xa1b2c3d4 || m == 0xd4c3b2a1 || m == 0xa1b23c4d || m == 0x4d3cb2a1)
			r->fmt = HC_FMT_PCAP;
		else if (m == 0x0a0d0d0a)
			r->fmt = HC_FMT_PCAPNG;
	}
	if (r->fmt != HC_FMT_NASDAQ) {
		/* a mapped capture gets a framer; a gzip or a pipe, whose source may wait (and
		 * then a stop would wait on it), is parsed on the books' thread */
		rc = hc_src_is_mapped(r->src) ? framer_start(r) : (r->stage = malloc(HC_STAGE_CAP)) ? 0 : -ENOMEM;
		if (rc < 0) {
			hc_reader_close(r);
			return rc;
		}
	}
	*out = r;
	return 0;
}

/* Parse complete units in buf[lo, hi); returns bytes consumed; sets *need to the size of the
 * incomplete unit at the front when nothing could be consumed. */
static size_t parse_pcap(struct hc_reader *r, struct hc_books *b, const uint8_t *p, size_t len,
			 size_t *need)
{
	size_t off = 0;
	if (!r->started) {
		if (len < 24) {
			*need = 24;
			return 0;
		}
		uint32_t m = hc_be32(p);
		r->swap = (m == 0xa1b2c3d4 || m == 0xa1b23c4d);
		r->linktype = rd32(p + 20, r->swap) & 0x0fffffff;
		r->started = 1;
		off = 24;
	}
	while (len - off >= 16) {
		uint32_t incl = rd32(p + off + 8, r->swap);
		if (incl > HC_MAX_UNIT) {
			r->stopped = 1;
			r->drops[HC_DROP_BAD_CAPTURE]++;
			return len;
		}
		if (len - off - 16 < incl) {
			if (!off)
				*need = 16 + (size_t)incl;
			break;
		}
		stage_frame(r, b, r->linktype, p + off + 16, incl);
		off += 16 + (size_t)incl;
	}
	if (!off && len < 16)
		*need = 16;
	return off;
}

static size_t parse_pcapng(struct hc_reader *r, struct hc_books *b, const uint8_t *p, size_t len,
			   size_t *need)
{
	size_t off = 0;
	while (len - off >= 12) {
		const uint8_t *q = p + off;
		uint32_t type = rd32(q, r->swap);
		if (hc_be32(q) == 0x0a0d0d0a) { /* section header: byte order from its magic */
			uint32_t bom;
			memcpy(&bom, q + 8, 4);
			if (bom == 0x1a2b3c4d)
				r->swap = 0;
			else if (bom == 0x4d3c2b1a)
				r->swap = 1;
			else
				goto bad;
			type = 0x0a0d0d0a;
			r->n_if = 0;
		}
		uint32_t blen = rd32(q + 4, r->swap);
		if (blen < 12 || (blen & 3) || blen > HC_MAX_UNIT)
			goto bad;
		if (len - off < blen) {
			if (!off)
				*need = blen;
			break;
		}
		if (rd32(q + blen - 4, r->swap) != blen)
			goto bad;
		if (type == 1) { /* interface description */
			if (blen < 20)
				goto bad;
			if (r->n_if < 256)
				r->if_link[r->n_if] = rd16(q + 8, r->swap);
			r->n_if++;
		} else if (type == 6) { /* enhanced packet */
			if (blen < 32)
				goto bad;
			uint32_t ifid = rd32(q + 8, r->swap), cap = rd32(q + 20, r->swap);
			if (cap > blen - 32)
				goto bad;
			uint32_t lt = ifid < r->n_if && ifid < 256 ? r->if_link[ifid] : 0xffffffff;
			stage_frame(r, b, lt, q + 28, cap);
		} else if (type == 3) { /* simple packet: interface 0 */
			if (blen < 16)
				goto bad;
			uint32_t olen = rd32(q + 8, r->swap);
			uint32_t cap = olen < blen - 16 ? olen : blen - 16;
			stage_frame(r, b, r->n_if ? r->if_link[0] : 0xffffffff, q + 12, cap);
		}
		off += blen;
	}
	if (!off && len < 12)
		*need = 12;
	return off;
bad:
	r->stopped = 1;
	r->drops[HC_DROP_BAD_CAPTURE]++;
	return len;
}

/* Complete units at the front of p[0, len): bytes consumed; *need: the size of the unit at
 * the front when none could be consumed. */
static size_t parse(struct hc_reader *r, struct hc_books *b, const uint8_t *p, size_t len, size_t *need)
{
	if (r->fmt == HC_FMT_NASDAQ) {
		size_t used = hc_books_feed_records(b, p, len);
		if (!used)
			*need = 2 + (len >= 2 ? hc_be16(p) : 0);
		return used;
	}
	if (r->fmt == HC_FMT_PCAP)
		return parse_pcap(r, b, p, len, need);
	return parse_pcapng(r, b, p, len, need);
}

/* The end of the data with a partial unit carried: one file_truncated drop. */
static void truncated(struct hc_reader *r)
{
	if (r->acc_len)
		r->drops[HC_DROP_FILE_TRUNCATED]++;
	r->acc_len = 0;
}

static int reader_step(struct hc_reader *r, struct hc_books *b, size_t max_bytes)
{
	size_t done = 0, need, used;
	int rc;
	while (done < max_bytes) {
		if (r->stopped)
			return 0;
		if (r->acc_len) { /* complete the straddling unit from the next span */
			need = 0;
			used = parse(r, b, r->acc, r->acc_len, &need);
			if (used) {
				memmove(r->acc, r->acc + used, r->acc_len - used);
				r->acc_len -= used;
				done += used;
				continue;
			}
			if (!r->cn && (rc = next_span(r)) <= 0) {
				truncated(r);
				return rc;
			}
			if (acc_reserve(r, need) < 0)
				return -ENOMEM;
			size_t take = need - r->acc_len < r->cn ? need - r->acc_len : r->cn;
			memcpy(r->acc + r->acc_len, r->cp, take);
			r->acc_len += take;
			r->cp += take;
			r->cn -= take;
			continue;
		}
		if (!r->cn && (rc = next_span(r)) <= 0)
			return rc;
		need = 0;
		used = parse(r, b, r->cp, r->cn, &need);
		if (used) {
			r->cp += used;
			r->cn -= used;
			done += used;
			continue;
		}
		/* a partial unit ends the span: carry it over */
		if (acc_reserve(r, need > r->cn ? need : r->cn) < 0)
			return -ENOMEM;
		memcpy(r->acc, r->cp, r->cn);
		r->acc_len = r->cn;
		r->cn = 0;
	}
	return 1;
}

/* ---- a plain capture's frames taken apart on a thread of their own (the framer) ----
 * Parsing a capture (its records, Ethernet, IP, UDP, MoldUDP64 sequencing) and staging the new
 * blocks costs about half of what the books cost for the same messages on the 8-stock stream;
 * on the books' thread that is added to every message. For a plain (mapped) capture the
 * framer thread does it all and hands the books' thread full stages through a ring of
 * HC_FR_SLOTS, each stage with the drops counted while it was filled. The books' thread feeds
 * a stage with the steady loop (hc_books_feed_records_more) and carries what that left (the
 * last ~64 KiB of records) into the headroom before the next stage, so the slow tail path runs
 * once at the end, as for a mapped NASDAQ file. A gzip capture keeps its parse on the books'
 * thread: the inflater's thread is the slower side there, and a third busy thread on two cores
 * would slow it (a pipe too: its source may wait, and a stop would wait with it). */
#define HC_FR_SLOTS 4
#define HC_FR_HEAD (256u << 10) /* headroom before a stage for what the previous one left */

struct hc_fr_slot {
	uint8_t *mem;  /* HC_FR_HEAD of headroom, then the stage (HC_STAGE_CAP) */
	size_t len;
	uint64_t drops[HC_DROP__MAX];
};

struct hc_framer {
	struct hc_fr_slot slot[HC_FR_SLOTS];
	unsigned head, tail;   /* under mu: slots [head, tail) are filled and not yet fed */
	int done, rc, stop;    /* under mu: the framer finished and its result; told to stop */
	int held;              /* the books' thread holds slot head (its variable) */
	pthread_mutex_t mu;
	pthread_cond_t filled, freed;
	pthread_t th;
	/* the books' thread only: the records the last stage left, at carry[0, carry_len) */
	const uint8_t *carry;
	size_t carry_len;
};

static inline uint8_t *fr_stage(struct hc_fr_slot *sl) { return sl->mem + HC_FR_HEAD; }

/* The framer: the slot at tail becomes the stage being filled, once it is free. 0, or -1
 * when told to stop. */
static int framer_acquire(struct hc_reader *r)
{
	struct hc_framer *fr = r->fr;
	pthread_mutex_lock(&fr->mu);
	while (!fr->stop && fr->tail - fr->head >= HC_FR_SLOTS)
		pthread_cond_wait(&fr->freed, &fr->mu);
	int stop = fr->stop;
	pthread_mutex_unlock(&fr->mu);
	if (stop)
		return -1;
	struct hc_fr_slot *sl = &fr->slot[fr->tail % HC_FR_SLOTS];
	memset(sl->drops, 0, sizeof(sl->drops));
	r->stage = fr_stage(sl);
	r->stage_len = 0;
	r->drops = sl->drops;
	return 0;
}

static void framer_publish(struct hc_reader *r, int last, int rc)
{
	struct hc_framer *fr = r->fr;
	pthread_mutex_lock(&fr->mu);
	fr->slot[fr->tail % HC_FR_SLOTS].len = r->stage_len;
	fr->tail++;
	if (last) {
		fr->done = 1;
		fr->rc = rc;
	}
	pthread_cond_signal(&fr->filled);
	pthread_mutex_unlock(&fr->mu);
}

/* A full stage (stage_frame): handed over, the next free slot taken; told to stop, the parse
 * stops (with a slot still held: the last publish has one to give). */
static void framer_full(struct hc_reader *r)
{
	framer_publish(r, 0, 0);
	if (framer_acquire(r) < 0) {
		r->stopped = 1;
		r->stage = NULL;
	}
}

static void *framer_main(void *arg)
{
	struct hc_reader *r = arg;
	struct hc_framer *fr = r->fr;
	if (framer_acquire(r) == 0) {
		int rc = reader_step(r, NULL, SIZE_MAX);
		if (r->stage) {
			framer_publish(r, 1, rc);
			return NULL;
		}
	}
	pthread_mutex_lock(&fr->mu); /* stopped while waiting for a slot: nothing more to feed */
	fr->done = 1;
	fr->rc = -EINTR;
	pthread_cond_signal(&fr->filled);
	pthread_mutex_unlock(&fr->mu);
	return NULL;
}

static void framer_free(struct hc_framer *fr)
{
	pthread_cond_destroy(&fr->filled);
	pthread_cond_destroy(&fr->freed);
	pthread_mutex_destroy(&fr->mu);
	for (int i = 0; i < HC_FR_SLOTS; i++)
		free(fr->slot[i].mem);
	free(fr);
}

/* Starts r's framer (r is a plain capture, its first span read): 0 or -errno. */
static int framer_start(struct hc_reader *r)
{
	struct hc_framer *fr = calloc(1, sizeof(*fr));
	if (!fr)
		return -ENOMEM;
	pthread_mutex_init(&fr->mu, NULL);
	pthread_cond_init(&fr->filled, NULL);
	pthread_cond_init(&fr->freed, NULL);
	for (int i = 0; i < HC_FR_SLOTS; i++) {
		if (!(fr->slot[i].mem = malloc(HC_FR_HEAD + HC_STAGE_CAP))) {
			framer_free(fr);
			return -ENOMEM;
		}
	}
	r->fr = fr;
	int rc = -pthread_create(&fr->th, NULL, framer_main, r);
	if (rc < 0) {
		r->fr = NULL;
		framer_free(fr);
	}
	return rc;
}

static void framer_stop(struct hc_reader *r)
{
	struct hc_framer *fr = r->fr;
	pthread_mutex_lock(&fr->mu);
	fr->stop = 1;
	pthread_cond_broadcast(&fr->freed);
	pthread_mutex_unlock(&fr->mu);
	pthread_join(fr->th, NULL);
	framer_free(fr);
	r->fr = NULL;
	r->stage = NULL;
}

/* The books' side: stages in order, each one's drops added to the books. The slot fed last
 * stays held (its rest is the carry) until the next one is taken. 1 while there is more, else
 * the framer's result (0 at the end). */
static void framer_release(struct hc_framer *fr)
{
	pthread_mutex_lock(&fr->mu);
	fr->head++;
	fr->held = 0;
	pthread_cond_signal(&fr->freed);
	pthread_mutex_unlock(&fr->mu);
}

static int framer_step(struct hc_reader *r, struct hc_books *b, size_t max_bytes)
{
	struct hc_framer *fr = r->fr;
	uint64_t *drops = books_drops(b);
	for (size_t done = 0; done < max_bytes;) {
		pthread_mutex_lock(&fr->mu);
		const unsigned next = fr->head + (unsigned)fr->held;
		while (fr->tail == next && !fr->done)
			pthread_cond_wait(&fr->filled, &fr->mu);
		int end = fr->tail == next, rc = fr->rc;
		pthread_mutex_unlock(&fr->mu);
		if (end) {
			if (fr->carry_len) /* complete records: all applied */
				hc_books_feed_records(b, fr->carry, fr->carry_len);
			fr->carry_len = 0;
			if (fr->held)
				framer_release(fr);
			return rc;
		}
		struct hc_fr_slot *sl = &fr->slot[next % HC_FR_SLOTS];
		for (int i = 1; i < HC_DROP__MAX; i++)
			drops[i] += sl->drops[i];
		if (fr->carry_len > HC_FR_HEAD) { /* only records longer than any ITCH message */
			hc_books_feed_records(b, fr->carry, fr->carry_len);
			fr->carry_len = 0;
		}
		uint8_t *p = fr_stage(sl) - fr->carry_len; /* the last stage's rest, just before */
		if (fr->carry_len)
			memcpy(p, fr->carry, fr->carry_len);
		size_t len = sl->len + fr->carry_len;
		if (fr->held)
			framer_release(fr); /* the carry was its last use */
		fr->held = 1;
		size_t used = hc_books_feed_records_more(b, p, len);
		fr->carry = p + used;
		fr->carry_len = len - used;
		done += sl->len;
	}
	return 1;
}

int hc_reader_step(struct hc_reader *r, struct hc_books *b, size_t max_bytes)
{
	if (r->fr)
		return framer_step(r, b, max_bytes);
	r->drops = books_drops(b);
	int rc = reader_step(r, b, max_bytes);
	stage_flush(r, b);
	return rc;
}

int hc_reader_format(const struct hc_reader *r) { return r->fmt; }
int hc_reader_gzip(const struct hc_reader *r) { return hc_src_is_gzip(r->src); }
uint64_t hc_reader_offset(struct hc_reader *r) { return hc_src_offset(r->src); }
uint64_t hc_reader_error_at(const struct hc_reader *r) { return hc_src_out_bytes(r->src); }
const struct hc_mold_stats *hc_reader_mold(const struct hc_reader *r) { return &r->mold.st; }

void hc_reader_close(struct hc_reader *r)
{
	if (!r)
		return;
	if (r->fr)
		framer_stop(r); /* before the source it reads */
	else
		free(r->stage);
	hc_src_close(r->src);
	free(r->acc);
	free(r);
}

/* ---- the replay on its own thread ---- */
struct hc_filejob {
	struct hc_reader *r;
	struct hc_books *b;
	size_t step;
	_Atomic int stop;
	int done, rc;             /* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
};

static void *filejob_main(void *arg)
{
	struct hc_filejob *j = arg;
	int rc;
	do
		rc = atomic_load_explicit(&j->stop, memory_order_relaxed) ? -EINTR : hc_reader_step(j->r, j->b, j->step);
	while (rc > 0);
	pthread_mutex_lock(&j->mu);
	j->rc = rc;
	j->done = 1;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

int hc_filejob_start(struct hc_filejob **out, struct hc_reader *r, struct hc_books *b, size_t step_bytes)
{
	struct hc_filejob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->r = r;
	j->b = b;
	j->step = step_bytes ? step_bytes : (8u << 20);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	int rc = -pthread_create(&j->th, NULL, filejob_main, j);
	if (rc < 0) {
		pthread_cond_destroy(&j->cv);
		pthread_mutex_destroy(&j->mu);
		free(j);
		return rc;
	}
	*out = j;
	return 0;
}

int hc_filejob_wait(struct hc_filejob *j, unsigned timeout_ms)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += timeout_ms / 1000;
	t.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&j->mu);
	while (!j->done && pthread_cond_timedwait(&j->cv, &j->mu, &t) != ETIMEDOUT)
		;
	int rc = j->done ? j->rc : 1;
	pthread_mutex_unlock(&j->mu);
	return rc;
}

void hc_filejob_stop(struct hc_filejob *j) { atomic_store(&j->stop, 1); }

void hc_filejob_free(struct hc_filejob *j)
{
	if (!j)
		return;
	hc_filejob_stop(j);
	pthread_join(j->th, NULL);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}
