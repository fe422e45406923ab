/* mold.h: MoldUDP64 downstream packets (../shared/specs/MOLDUDP64.md).
 * hc_mold_begin() validates the header and sequences the packet against the session
 * state; hc_mold_next() then walks the blocks that are new, never reading past the
 * datagram. Gaps, duplicates and malformed packets are counted here. */
#ifndef HC_MOLD_H
#define HC_MOLD_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define HC_MOLD_HDR 20
#define HC_MOLD_HEARTBEAT 0x0000
#define HC_MOLD_END_OF_SESSION 0xFFFF

struct hc_mold_stats {
	uint64_t packets;        /* datagrams seen */
	uint64_t messages;       /* blocks delivered in order */
	uint64_t heartbeats;
	uint64_t end_of_session;
	uint64_t gaps;           /* messages skipped over (never seen before a later one) */
	uint64_t gap_events;     /* times a gap opened */
	uint64_t duplicates;     /* messages already delivered, dropped */
	uint64_t sessions;       /* session changes seen (first one included) */
	uint64_t drop_short;     /* datagram shorter than the 20-byte header */
	uint64_t drop_truncated; /* a block (header or body) runs past the datagram */
	uint64_t drop_trailing;  /* bytes after the last block, or data after end-of-session */
};

struct hc_mold {
	char session[10];
	int have_session;
	uint64_t next;          /* next expected sequence number */
	struct hc_mold_stats st;
};

/* Cursor over the new blocks of one packet. */
struct hc_mold_iter {
	const uint8_t *p, *end;
	uint64_t seq;      /* sequence number of the next block hc_mold_next returns */
	uint32_t left;     /* blocks left to walk */
	uint32_t skip;     /* leading blocks already delivered (overlap), walked but not returned */
	uint64_t end_seq;  /* sequence number after the packet's last block */
};

static inline uint16_t hc_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint64_t hc_be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

void hc_mold_init(struct hc_mold *m);
/* Returns the number of new blocks to expect (0 for heartbeat, duplicate, malformed). */
int hc_mold_begin(struct hc_mold *m, const uint8_t *pkt, size_t len, struct hc_mold_iter *it);

/* Next new block: sets *msg, *len and returns 1; 0 at the end. A block that does not fit is
 * counted as drop_truncated and ends the walk. */
static inline int hc_mold_next(struct hc_mold *m, struct hc_mold_iter *it, const uint8_t **msg,
			       uint32_t *len)
{
	while (it->left) {
		if (it->end - it->p < 2) {
			m->st.drop_truncated += it->left;
			it->left = 0;
			m->next = it->end_seq; /* counted here, not again as a gap */
			return 0;
		}
		uint32_t n = hc_be16(it->p);
		if ((size_t)(it->end - it->p - 2) < n) {
			m->st.drop_truncated += it->left;
			it->left = 0;
			m->next = it->end_seq; /* counted here, not again as a gap */
			return 0;
		}
		const uint8_t *body = it->p + 2;
		it->p = body + n;
		it->left--;
		if (it->skip) {
			it->skip--;
			continue;
		}
		*msg = body;
		*len = n;
		it->seq++;
		m->next = it->seq;
		m->st.messages++;
		if (!it->left && it->p != it->end)
			m->st.drop_trailing++;
		return 1;
	}
	return 0;
}

/* Every new block left at once, for a reader that copies them on (files.c): the blocks
 * delivered are consecutive in the datagram (only leading ones are skipped) and each is a
 * NASDAQ-layout record (2-byte length, message), so they are one run [*run, *run + *run_len).
 * Returns how many were delivered (0: *run untouched). The same accounting, state and end as
 * calling hc_mold_next until it returns 0. */
static inline uint32_t hc_mold_run(struct hc_mold *m, struct hc_mold_iter *it, const uint8_t **run,
				   size_t *run_len)
{
	const uint8_t *p = it->p, *end = it->end, *first = NULL, *last = NULL;
	uint32_t left = it->left, skip = it->skip, got = 0;
	for (; left; left--) {
		if (end - p < 2 || (size_t)(end - p - 2) < hc_be16(p)) {
			m->st.drop_truncated += left;
			left = 0;
			m->next = it->end_seq; /* as hc_mold_next: counted here, not again as a gap */
			goto out;              /* (and no trailing-bytes drop after a truncation) */
		}
		const uint8_t *next = p + 2 + hc_be16(p);
		if (skip) {
			skip--;
		} else {
			first = first ? first : p;
			last = next;
			got++;
		}
		p = next;
	}
	if (got) {
		m->next = it->seq + got;
		if (p != end)
			m->st.drop_trailing++;
	}
out:
	m->st.messages += got;
	it->seq += got;
	it->p = p;
	it->left = 0;
	it->skip = skip;
	if (got) {
		*run = first;
		*run_len = (size_t)(last - first);
	}
	return got;
}

#endif
