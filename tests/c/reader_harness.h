/* reader_harness.h: what the file-reader harnesses (src_fuzz.c, framer_fuzz.c) share: writing
 * a file, a digest of the books, and a filejob stopped and waited for. Header-only (static). */
#ifndef HC_READER_HARNESS_H
#define HC_READER_HARNESS_H

#include <errno.h>
#include <stdio.h>
#include "files.h"

static int fail(const char *what, long v)
{
	printf("FAIL %s %ld\n", what, v);
	return 1;
}

static int write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n)
		return -1;
	return fclose(f);
}

/* The top 16 levels of each side of every stock with a locate below `locs`, folded into one
 * number: two books with the same levels give the same digest. */
static uint64_t books_digest(struct hc_books *b, uint32_t locs)
{
	uint64_t sig = 0;
	struct hc_level_snap bid[16], ask[16];
	for (uint32_t loc = 1; loc < locs; loc++) {
		uint32_t nb, na;
		if (hc_books_snapshot(b, (uint16_t)loc, 16, bid, &nb, ask, &na))
			continue;
		for (uint32_t i = 0; i < nb; i++)
			sig = sig * 1000003 + bid[i].price_e4 * 31 + bid[i].shares + bid[i].orders;
		for (uint32_t i = 0; i < na; i++)
			sig = sig * 1000003 + ask[i].price_e4 * 31 + ask[i].shares + ask[i].orders;
	}
	return sig;
}

/* Stop j and wait for it: 0 if it stopped as a stop should (-EINTR, or 0 when it had already
 * reached the end), else its result. */
static int filejob_stop_wait(struct hc_filejob *j)
{
	hc_filejob_stop(j);
	int rc;
	while ((rc = hc_filejob_wait(j, 1000)) > 0)
		;
	return rc == -EINTR ? 0 : rc;
}

#endif
