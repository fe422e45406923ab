/* files.c: NASDAQ file layout, pcap and pcapng readers (see files.h). */
#include <errno.h>
#include <stdlib.h>
#include <zlib.h>
#include "files.h"

#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HC_READ_BUF (4u << 20)
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
	struct hc_itch_msg m;
	const uint8_t *msg;
	uint32_t n;
	uint64_t ok = 0;
	size_t off = 0;
	while (hc_nasdaq_next(p, len, &off, &msg, &n)) {
		int rc = hc_itch_decode(msg, n, &m);
		if (UNLIKELY(rc < 0))
			drops[-rc]++;
		else
			ok++;
	}
	if (off < len)
		drops[HC_DROP_FILE_TRUNCATED]++;
	return ok;
}

void hc_feed_frame(struct hc_books *b, struct hc_mold *mold, uint32_t linktype,
		   const uint8_t *f, size_t len)
{
	if (linktype != 1 || len < 14)
		goto not_mold;
	size_t off = 14;
	uint16_t et = hc_be16(f + 12);
	while (et == 0x8100 || et == 0x88a8) {
		if (len - off < 4)
			goto not_mold;
		et = hc_be16(f + off + 2);
		off += 4;
	}
	if (et != 0x0800 || len - off < 20)
		goto not_mold;
	const uint8_t *ip = f + off;
	uint32_t ihl = (uint32_t)(ip[0] & 15) * 4;
	uint32_t tot = hc_be16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl + 8 || tot > len - off || ip[9] != 17 ||
	    (hc_be16(ip + 6) & 0x3fff) != 0)
		goto not_mold;
	const uint8_t *udp = ip + ihl;
	uint32_t ulen = hc_be16(udp + 4);
	if (ulen < 8 || ulen > tot - ihl)
		goto not_mold;

	struct hc_mold_stats before = mold->st;
	struct hc_mold_iter it;
	const uint8_t *msg;
	uint32_t n;
	if (hc_mold_begin(mold, udp + 8, ulen - 8, &it) > 0)
		while (hc_mold_next(mold, &it, &msg, &n))
			hc_books_feed_msg(b, msg, n);
	struct hc_books_stats *st = (struct hc_books_stats *)hc_books_stats(b);
	st->drops[HC_DROP_MOLD_TRUNCATED] += mold->st.drop_truncated - before.drop_truncated;
	st->drops[HC_DROP_MOLD_MALFORMED] += (mold->st.drop_short - before.drop_short) +
					     (mold->st.drop_trailing - before.drop_trailing);
	return;
not_mold:
	hc_books_count_drop(b, -HC_DROP_NOT_MOLD);
}

struct hc_reader {
	gzFile gz;
	int fmt;
	int eof, stopped, started;
	int swap;            /* pcap / current pcapng section: file integers are big-endian */
	uint32_t linktype;   /* pcap */
	uint32_t if_link[256]; /* pcapng interfaces of the current section */
	uint32_t n_if;
	uint8_t *buf;
	size_t cap, lo, hi;
	struct hc_mold mold;
};

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

static int fill(struct hc_reader *r)
{
	if (r->lo) {
		memmove(r->buf, r->buf + r->lo, r->hi - r->lo);
		r->hi -= r->lo;
		r->lo = 0;
	}
	while (!r->eof && r->hi < r->cap) {
		unsigned want = r->cap - r->hi > (1u << 30) ? (1u << 30) : (unsigned)(r->cap - r->hi);
		int got = gzread(r->gz, r->buf + r->hi, want);
		if (got < 0) {
			int e;
			gzerror(r->gz, &e);
			return e == Z_ERRNO ? -(errno ? errno : EIO) : -EILSEQ;
		}
		if (got == 0) {
			r->eof = 1;
			break;
		}
		r->hi += (size_t)got;
	}
	return 0;
}

static int grow(struct hc_reader *r, size_t need)
{
	if (need <= r->cap)
		return 0;
	size_t cap = r->cap;
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(r->buf, cap);
	if (!p)
		return -ENOMEM;
	r->buf = p;
	r->cap = cap;
	return 0;
}

int hc_reader_open(struct hc_reader **out, const char *path)
{
	struct hc_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	errno = 0;
	r->gz = gzopen(path, "rb");
	if (!r->gz) {
		int e = errno ? errno : ENOMEM;
		free(r);
		return -e;
	}
	gzbuffer(r->gz, 1u << 20);
	r->cap = HC_READ_BUF;
	r->buf = malloc(r->cap);
	if (!r->buf) {
		gzclose(r->gz);
		free(r);
		return -ENOMEM;
	}
	hc_mold_init(&r->mold);
	int rc = fill(r);
	if (rc < 0) {
		hc_reader_close(r);
		return rc;
	}
	r->fmt = HC_FMT_NASDAQ;
	if (r->hi >= 4) {
		uint32_t m = hc_be32(r->buf);
		if (m == 0xa1b2c3d4 || m == 0xd4c3b2a1 || m == 0xa1b23c4d || m == 0x4d3cb2a1)
			r->fmt = HC_FMT_PCAP;
		else if (m == 0x0a0d0d0a)
			r->fmt = HC_FMT_PCAPNG;
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
			hc_books_count_drop(b, -HC_DROP_BAD_CAPTURE);
			return len;
		}
		if (len - off - 16 < incl) {
			if (!off)
				*need = 16 + (size_t)incl;
			break;
		}
		hc_feed_frame(b, &r->mold, r->linktype, p + off + 16, incl);
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
			hc_feed_frame(b, &r->mold, lt, q + 28, cap);
		} else if (type == 3) { /* simple packet: interface 0 */
			if (blen < 16)
				goto bad;
			uint32_t olen = rd32(q + 8, r->swap);
			uint32_t cap = olen < blen - 16 ? olen : blen - 16;
			hc_feed_frame(b, &r->mold, r->n_if ? r->if_link[0] : 0xffffffff, q + 12, cap);
		}
		off += blen;
	}
	if (!off && len < 12)
		*need = 12;
	return off;
bad:
	r->stopped = 1;
	hc_books_count_drop(b, -HC_DROP_BAD_CAPTURE);
	return len;
}

int hc_reader_step(struct hc_reader *r, struct hc_books *b, size_t max_bytes)
{
	size_t done = 0;
	while (done < max_bytes) {
		if (r->stopped)
			return 0;
		size_t avail = r->hi - r->lo, need = 0, used;
		if (avail == 0 && r->eof)
			return 0;
		const uint8_t *p = r->buf + r->lo;
		if (r->fmt == HC_FMT_NASDAQ) {
			used = hc_feed_nasdaq(b, p, avail, r->eof);
			need = 2 + (avail >= 2 ? hc_be16(p) : 0);
		} else if (r->fmt == HC_FMT_PCAP) {
			used = parse_pcap(r, b, p, avail, &need);
		} else {
			used = parse_pcapng(r, b, p, avail, &need);
		}
		r->lo += used;
		done += used;
		if (used)
			continue;
		if (r->eof) { /* a partial unit at the end of the file */
			if (r->fmt != HC_FMT_NASDAQ)
				hc_books_count_drop(b, -HC_DROP_FILE_TRUNCATED);
			r->lo = r->hi;
			return 0;
		}
		int rc = grow(r, need);
		if (rc == 0)
			rc = fill(r);
		if (rc < 0)
			return rc;
	}
	return 1;
}

int hc_reader_format(const struct hc_reader *r) { return r->fmt; }
uint64_t hc_reader_offset(struct hc_reader *r)
{
	z_off_t o = gzoffset(r->gz);
	return o < 0 ? 0 : (uint64_t)o;
}
const struct hc_mold_stats *hc_reader_mold(const struct hc_reader *r) { return &r->mold.st; }

void hc_reader_close(struct hc_reader *r)
{
	if (!r)
		return;
	gzclose(r->gz);
	free(r->buf);
	free(r);
}
