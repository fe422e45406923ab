/* framer_fuzz.c: a plain capture's framer thread (files.c) under a sanitizer (the test builds it
 * with ASan/UBSan and with TSan). A generated day stream is captured as MoldUDP64 frames of 1-6
 * blocks (pcap and pcapng), with frames that are not MoldUDP64, duplicates, overlaps, a gap,
 * truncated messages and a truncated last record mixed in at random; the capture is many of
 * the framer's stages, so its ring fills and every stage carries records into the next. Fed
 * through the framer (plain file, in steps of 1 byte to 16 MiB, and on a filejob's thread)
 * it must give the books, the drops and the MoldUDP64 counters that the same capture gives
 * through the books' own parse (the same bytes gzip-compressed: no framer); readers closed
 * while the framer waits on a full ring, or stopped early, must neither hang nor leak.
 * Usage: framer_fuzz DIR [quick]. Prints "ok ..." and exits 0. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "files.h"
#include "gen.h"
#include "reader_harness.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static uint8_t *out;
static size_t out_len, out_cap;
static void put(const void *p, size_t n)
{
	if (out_len + n > out_cap) {
		out_cap = (out_len + n) * 2;
		out = realloc(out, out_cap);
	}
	memcpy(out + out_len, p, n);
	out_len += n;
}
static void le32(uint32_t v) { put(&v, 4); }
static void be16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* One captured frame: Ethernet / IPv4 / UDP / payload, as a pcap record or a pcapng EPB. */
static void frame(int ng, const uint8_t *pl, size_t n, int not_mold)
{
	static uint8_t f[70000];
	static const uint8_t eth[14] = { 1, 0, 0x5e, 0x36, 0x0c, 1, 2, 0, 0, 0, 0, 1, 8, 0 };
	memcpy(f, eth, 14);
	uint8_t *ip = f + 14, *udp = ip + 20;
	memset(ip, 0, 28);
	ip[0] = 0x45;
	be16(ip + 2, (uint32_t)(28 + n));
	ip[8] = 64;
	ip[9] = not_mold ? 6 : 17; /* TCP: not MoldUDP64 */
	be16(udp + 4, (uint32_t)(8 + n));
	memcpy(udp + 8, pl, n);
	uint32_t len = (uint32_t)(42 + n);
	if (!ng) {
		le32(1700000000);
		le32(0);
		le32(len);
		le32(len);
		put(f, len);
		return;
	}
	uint32_t pad = (4 - len % 4) % 4, blen = 32 + len + pad;
	le32(6);
	le32(blen);
	le32(0);
	le32(0);
	le32(0);
	le32(len);
	le32(len);
	put(f, len);
	put("\0\0\0", pad);
	le32(blen);
}

/* The capture of the records rec[0, n) (NASDAQ layout offsets in off[]). */
static void capture(int ng, const uint8_t *data, const size_t *off, size_t n)
{
	out_len = 0;
	if (!ng) {
		le32(0xa1b2c3d4);
		le32(0x00040002);
		le32(0);
		le32(0);
		le32(65535);
		le32(1);
	} else {
		le32(0x0a0d0d0a);
		le32(28);
		le32(0x1a2b3c4d);
		le32(1);
		le32(0xffffffff);
		le32(0xffffffff);
		le32(28);
		le32(1);
		le32(20);
		le32(1); /* link type 1, reserved 0 */
		le32(65535);
		le32(20);
	}
	static uint8_t pl[70000];
	for (size_t i = 0; i < n;) {
		size_t k = 1 + rnd(6);
		if (k > n - i)
			k = n - i;
		size_t start = i, at = 20;
		int lie = rnd(500) == 0; /* a message cut short: a truncated block */
		for (size_t j = 0; j < k; j++) {
			size_t l = off[i + j + 1] - off[i + j];
			memcpy(pl + at, data + off[i + j], l);
			at += l;
		}
		if (lie)
			at -= 3;
		memcpy(pl, "SESSION001", 10);
		be64(pl + 10, 1 + start);
		be16(pl + 18, (uint32_t)k);
		uint32_t what = rnd(1000);
		i += k;
		if (what == 0 && start > 0)
			continue; /* never sent: a gap */
		frame(ng, pl, at, 0);
		if (what < 20) /* sent twice: duplicates */
			frame(ng, pl, at, 0);
		if (what >= 20 && what < 30)
			frame(ng, pl, at, 1);
	}
}

static int write_gz(const char *path, const uint8_t *p, size_t n)
{
	gzFile g = gzopen(path, "wb1");
	if (!g)
		return -1;
	for (size_t o = 0; o < n;) {
		unsigned c = n - o > (1u << 30) ? 1u << 30 : (unsigned)(n - o);
		if (gzwrite(g, p + o, c) != (int)c)
			return -1;
		o += c;
	}
	return gzclose(g) == Z_OK ? 0 : -1;
}

struct result {
	struct hc_books_stats st;
	struct hc_mold_stats mold;
	uint64_t sig;
	int rc, fmt, check;
};

/* Feed path into fresh books: how 0 = steps of `step` bytes here, 1 = a filejob's thread. */
static void feed(const char *path, size_t step, int how, struct result *res)
{
	struct hc_books *b;
	struct hc_reader *r;
	memset(res, 0, sizeof(*res));
	if (hc_books_new(&b, 1024)) {
		res->rc = -ENOMEM;
		return;
	}
	int rc = hc_reader_open(&r, path);
	if (!rc) {
		res->fmt = hc_reader_format(r);
		if (how) {
			struct hc_filejob *j;
			if ((rc = hc_filejob_start(&j, r, b, step)) == 0) {
				while ((rc = hc_filejob_wait(j, 5)) > 0)
					;
				hc_filejob_free(j);
			}
		} else {
			while ((rc = hc_reader_step(r, b, step)) > 0)
				;
		}
		res->mold = *hc_reader_mold(r);
		hc_reader_close(r);
	}
	res->rc = rc;
	res->st = *hc_books_stats(b);
	res->sig = books_digest(b, 400);
	res->check = hc_books_check(b); /* -1000: a crossed book only (messages were lost) */
	if (res->check && res->check != -1000)
		res->rc = res->check;
	hc_books_free(b);
}

static int same(const struct result *a, const struct result *b)
{
	return a->rc == b->rc && a->fmt == b->fmt && a->sig == b->sig && a->check == b->check &&
	       !memcmp(&a->mold, &b->mold, sizeof(a->mold)) &&
	       !memcmp(a->st.drops, b->st.drops, sizeof(a->st.drops)) &&
	       !memcmp(a->st.messages, b->st.messages, sizeof(a->st.messages)) &&
	       a->st.orders_live == b->st.orders_live;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	const int quick = argc > 2 && !strcmp(argv[2], "quick"); /* TSan: two step sizes, not four */
	const uint64_t n_msgs = 300000;
	size_t cap = hc_gen_day_max_bytes(300, n_msgs), len;
	uint8_t *data = malloc(cap);
	if (!data || hc_gen_fill_day(7, 300, n_msgs, data, cap, &len))
		return fail("gen", 0);
	size_t *off = malloc((n_msgs + 1) * sizeof(*off)), n = 0;
	for (size_t o = 0; o < len; o += 2 + ((size_t)data[o] << 8 | data[o + 1]))
		off[n++] = o;
	off[n] = len;
	char plain[512], gz[512];
	snprintf(plain, sizeof plain, "%s/cap", argv[1]);
	snprintf(gz, sizeof gz, "%s/cap.gz", argv[1]);
	uint64_t checked = 0, drops = 0;
	for (int ng = 0; ng < 2; ng++) {
		capture(ng, data, off, n);
		size_t cut = rnd(2) ? out_len - 1 - rnd(20) : out_len; /* a truncated last unit */
		if (write_file(plain, out, cut) || write_gz(gz, out, cut))
			return fail("write", ng);
		struct result ref, got;
		feed(gz, 1 << 20, 0, &ref); /* no framer: the books' thread parses */
		if (ref.rc || ref.fmt != (ng ? HC_FMT_PCAPNG : HC_FMT_PCAP) || !ref.st.drops[HC_DROP_NOT_MOLD] ||
		    !ref.mold.duplicates || !ref.mold.gaps || !ref.st.drops[HC_DROP_MOLD_TRUNCATED])
			return fail("reference cases not reached", ng * 1000 + ref.rc);
		if (out_len < 8 * (1u << 20))
			return fail("capture smaller than the framer's ring", (long)out_len);
		static const size_t steps[] = { 4096, 16u << 20, 1, 1u << 20 };
		for (int s = 0; s < (quick ? 2 : 4); s++) {
			for (int how = 0; how < 2; how++) {
				feed(plain, steps[s], how, &got);
				if (!same(&ref, &got))
					return fail(how ? "framed on a filejob differs" : "framed differs", s);
				checked++;
			}
		}
		for (int i = 1; i < HC_DROP__MAX; i++)
			drops += ref.st.drops[i];
		/* closed at once (the framer waits on a full ring or is still parsing), after a
		 * step, and a filejob stopped early */
		for (int k = 0; k < 3; k++) {
			struct hc_books *b;
			struct hc_reader *r;
			if (hc_books_new(&b, 1024) || hc_reader_open(&r, plain))
				return fail("open", k);
			if (k == 1 && hc_reader_step(r, b, 1) < 0)
				return fail("step", k);
			if (k == 2) {
				struct hc_filejob *j;
				if (hc_filejob_start(&j, r, b, 4096))
					return fail("filejob", k);
				int rc = filejob_stop_wait(j);
				if (rc)
					return fail("stopped filejob", rc);
				hc_filejob_free(j);
			}
			hc_reader_close(r);
			hc_books_free(b);
		}
	}
	printf("ok compared=%lu messages=%zu drops=%lu\n", (unsigned long)checked, n, (unsigned long)drops);
	free(data);
	free(off);
	free(out);
	return 0;
}
