/* src_fuzz.c: the file reader (src.c + files.c) under ASan/UBSan, built once with ISA-L and once
 * with zlib. A generated day stream written plain, as gzip (zlib, level 1) and as 2 members
 * must give the books of the in-memory feed; gzip cut at 40 points (2 bytes on) gives -EPIPE, bytes flipped
 * at 40 points give -EBADMSG or -EPIPE; a reader closed while its thread waits on a full ring
 * must neither hang nor leak. Usage: src_fuzz DIR. Prints "ok ..." and exits 0. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "files.h"
#include "gen.h"
#include "src.h"
#include "reader_harness.h"

static int gz_member(FILE *f, const uint8_t *p, size_t n)
{
	z_stream z = { 0 };
	if (deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	size_t cap = deflateBound(&z, n);
	uint8_t *out = malloc(cap);
	z.next_in = (uint8_t *)p;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	int rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -1;
	if (!rc && fwrite(out, 1, z.total_out, f) != z.total_out)
		rc = -1;
	deflateEnd(&z);
	free(out);
	return rc;
}

/* Feed a file into fresh books, here or (job) on a filejob's thread waited for in 1 ms waits
 * that read the offset between; 0 or the reader's -errno; *st the stats, *sig a digest. */
static int feed_path_how(const char *path, struct hc_books_stats *st, uint64_t *sig, int job)
{
	struct hc_books *b;
	struct hc_reader *r;
	if (hc_books_new(&b, 1024))
		return -ENOMEM;
	int rc = hc_reader_open(&r, path);
	if (!rc && job) {
		struct hc_filejob *j;
		uint64_t seen = 0;
		if ((rc = hc_filejob_start(&j, r, b, 1 << 16)) == 0) {
			while ((rc = hc_filejob_wait(j, 1)) > 0) {
				uint64_t off = hc_reader_offset(r);
				if (off < seen)
					rc = -1001; /* the offset went back */
				seen = off;
				if (rc < 0)
					break;
			}
			hc_filejob_free(j);
		}
		hc_reader_close(r);
	} else if (!rc) {
		while ((rc = hc_reader_step(r, b, 1 << 20)) > 0)
			;
		hc_reader_close(r);
	}
	*st = *hc_books_stats(b);
	*sig = books_digest(b, 500);
	if (hc_books_check(b) < -999 ? 0 : hc_books_check(b))
		rc = -1000;
	hc_books_free(b);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0); /* a FAIL line survives a sanitizer's exit */
	char plain[512], gz[512], gz2[512], cut[512];
	snprintf(plain, sizeof(plain), "%s/d.itch", argv[1]);
	snprintf(gz, sizeof(gz), "%s/d.itch.gz", argv[1]);
	snprintf(gz2, sizeof(gz2), "%s/d2.itch.gz", argv[1]);
	snprintf(cut, sizeof(cut), "%s/cut.itch.gz", argv[1]);
	uint64_t n = 300000;
	size_t cap = hc_gen_day_max_bytes(300, n), len;
	uint8_t *g = malloc(cap);
	if (!g || hc_gen_fill_day(5, 300, n, g, cap, &len))
		return fail("gen", 0);
	struct hc_books *mem;
	if (hc_books_new(&mem, 1024))
		return fail("books", 0);
	hc_feed_nasdaq(mem, g, len, 1);
	struct hc_books_stats want = *hc_books_stats(mem);
	hc_books_free(mem);

	if (write_file(plain, g, len))
		return fail("write plain", 0);
	FILE *f = fopen(gz, "wb");
	if (!f || gz_member(f, g, len) || fclose(f))
		return fail("write gz", 0);
	f = fopen(gz2, "wb");
	if (!f || gz_member(f, g, len / 3 + 7) || gz_member(f, g + len / 3 + 7, len - len / 3 - 7) || fclose(f))
		return fail("write gz2", 0);

	struct hc_books_stats st;
	uint64_t sig0 = 0, sig;
	const char *paths[6] = { plain, gz, gz2, plain, gz, gz2 }; /* the last three: a filejob */
	for (int i = 0; i < 6; i++) {
		int rc = feed_path_how(paths[i], &st, &sig, i >= 3);
		if (rc)
			return fail(paths[i], rc);
		if (memcmp(st.messages, want.messages, sizeof(want.messages)) ||
		    memcmp(st.drops, want.drops, sizeof(want.drops)) || st.orders_live != want.orders_live)
			return fail("books differ", i);
		if (i == 0)
			sig0 = sig;
		else if (sig != sig0)
			return fail("levels differ", i);
	}

	/* the gzip file's bytes, cut and corrupted */
	FILE *in = fopen(gz, "rb");
	fseek(in, 0, SEEK_END);
	long zn = ftell(in);
	rewind(in);
	uint8_t *z = malloc((size_t)zn);
	if (fread(z, 1, (size_t)zn, in) != (size_t)zn)
		return fail("read gz", 0);
	fclose(in);
	for (int k = 0; k < 40; k++) {
		long at = k < 20 ? 2 + k : (long)((uint64_t)zn * (uint64_t)(k - 19) / 21);
		if (write_file(cut, z, (size_t)at))
			return fail("write cut", at);
		int rc = feed_path_how(cut, &st, &sig, k & 1);
		if (rc != -EPIPE)
			return fail("cut not EPIPE", at * 1000 + (-rc));
	}
	int bad = 0;
	for (int k = 0; k < 40; k++) {
		long at = 10 + (long)((uint64_t)(zn - 20) * (uint64_t)k / 40);
		uint8_t *c = malloc((size_t)zn);
		memcpy(c, z, (size_t)zn);
		for (int j = 0; j < 6 && at + j < zn; j++)
			c[at + j] ^= 0xA5;
		if (write_file(cut, c, (size_t)zn))
			return fail("write corrupt", at);
		free(c);
		int rc = feed_path_how(cut, &st, &sig, k & 1);
		if (rc != -EBADMSG && rc != -EPIPE)
			return fail("corrupt not an error", at * 1000 + (-rc));
		bad += rc == -EBADMSG;
	}
	if (bad < 20)
		return fail("corruptions seen as corrupt", bad);

	/* close early: the inflater thread is blocked on a full ring */
	struct hc_src *s;
	const uint8_t *p;
	size_t k;
	if (hc_src_open(&s, gz) || hc_src_next(s, &p, &k) != 1)
		return fail("src", 0);
	hc_src_close(s);
	/* a filejob freed at once (stopped after its first step) and one stopped, then waited for */
	for (int k = 0; k < 2; k++) {
		struct hc_books *b;
		struct hc_reader *r;
		struct hc_filejob *j;
		if (hc_books_new(&b, 1024) || hc_reader_open(&r, gz) || hc_filejob_start(&j, r, b, 4096))
			return fail("filejob", k);
		int rc;
		if (k && (rc = filejob_stop_wait(j)) != 0)
			return fail("stopped filejob", rc);
		hc_filejob_free(j);
		hc_reader_close(r);
		hc_books_free(b);
	}
	free(z);
	free(g);
	printf("ok inflater=%s bytes=%zu gz=%ld corrupt=%d\n", hc_src_inflater(), len, zn, bad);
	return 0;
}
