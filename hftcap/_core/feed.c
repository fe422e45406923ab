/* feed.c: see feed.h. */
#include <string.h>
#include "feed.h"
#include "book.h"
#include "hc_time.h"
#include "itch.h"
#include "join.h"
#include "snap.h"
#include "recovery.h"

const char *const hc_hop_names[HC_NHOPS] = {
	[HC_HOP_NIC_TO_XDP] = "nic_to_xdp",
	[HC_HOP_XDP_TO_DEQUEUE] = "xdp_to_dequeue",
	[HC_HOP_NIC_TO_STACK] = "nic_to_stack",
	[HC_HOP_STACK_TO_DEQUEUE] = "stack_to_dequeue",
	[HC_HOP_DEQUEUE_TO_DECODE] = "dequeue_to_decode",
	[HC_HOP_DECODE_TO_BOOK] = "decode_to_book",
	[HC_HOP_XDP_TO_BOOK] = "xdp_to_book",
	[HC_HOP_STACK_TO_BOOK] = "stack_to_book",
	[HC_HOP_SENDER_TO_BOOK] = "sender_to_book",
	[HC_HOP_NIC_TO_BOOK] = "nic_to_book",
};

#define DAY_NS 86400000000000ull

void hc_consumer_init(struct hc_consumer *c, uint32_t nfeeds, uint64_t max_packets)
{
	memset(c, 0, sizeof(*c));
	c->nfeeds = nfeeds;
	c->max_packets = max_packets;
	for (uint32_t i = 0; i < HC_MAX_FEEDS; i++)
		hc_mold_init(&c->mold[i]);
	for (int h = 0; h < HC_NHOPS; h++)
		hc_hist_init(&c->hists[h]);
}

static inline void hop(struct hc_consumer *c, enum hc_hop h, uint64_t from, uint64_t to)
{
	if (to >= from)
		hc_hist_record(&c->hists[h], to - from);
	else
		c->negative[h]++;
}

static void record(struct hc_consumer *c, const struct hc_pkt_times *t, uint64_t dec_ns,
		   uint64_t book_ns, uint64_t itch_ns)
{
	if (__atomic_load_n(&c->reset_hists, __ATOMIC_ACQUIRE)) {
		for (int h = 0; h < HC_NHOPS; h++)
			hc_hist_reset(&c->hists[h]);
		memset(c->negative, 0, sizeof(c->negative));
		__atomic_store_n(&c->reset_hists, 0, __ATOMIC_RELEASE);
	}
	hop(c, HC_HOP_DEQUEUE_TO_DECODE, t->deq_tai_ns, dec_ns);
	hop(c, HC_HOP_DECODE_TO_BOOK, dec_ns, book_ns);
	if (t->xdp_tai_ns) {
		hop(c, HC_HOP_XDP_TO_DEQUEUE, t->xdp_tai_ns, t->deq_tai_ns);
		hop(c, HC_HOP_XDP_TO_BOOK, t->xdp_tai_ns, book_ns);
	}
	if (t->sw_tai_ns) {
		hop(c, HC_HOP_STACK_TO_DEQUEUE, t->sw_tai_ns, t->deq_tai_ns);
		hop(c, HC_HOP_STACK_TO_BOOK, t->sw_tai_ns, book_ns);
	}
	if (t->hw_ns && c->phc_is_tai) {
		if (t->xdp_tai_ns)
			hop(c, HC_HOP_NIC_TO_XDP, t->hw_ns, t->xdp_tai_ns);
		if (t->sw_tai_ns)
			hop(c, HC_HOP_NIC_TO_STACK, t->hw_ns, t->sw_tai_ns);
		hop(c, HC_HOP_NIC_TO_BOOK, t->hw_ns, book_ns);
	}
	if (c->itch_epoch_tai_ns && itch_ns != UINT64_MAX) {
		/* ns since the sender's midnight, wrapped to the nearest day around our clock. */
		uint64_t since = (book_ns - c->itch_epoch_tai_ns) % DAY_NS;
		int64_t d = (int64_t)since - (int64_t)itch_ns;
		if (d < -(int64_t)(DAY_NS / 2))
			d += (int64_t)DAY_NS;
		else if (d > (int64_t)(DAY_NS / 2))
			d -= (int64_t)DAY_NS;
		if (d >= 0)
			hc_hist_record(&c->hists[HC_HOP_SENDER_TO_BOOK], (uint64_t)d);
		else
			c->negative[HC_HOP_SENDER_TO_BOOK]++;
	}
}

static inline uint64_t be48(const uint8_t *p)
{
	return (uint64_t)p[0] << 40 | (uint64_t)p[1] << 32 | (uint64_t)p[2] << 24 |
	       (uint64_t)p[3] << 16 | (uint64_t)p[4] << 8 | p[5];
}

void hc_consumer_apply_msg(struct hc_consumer *c, struct hc_mold *m, const uint8_t *msg,
			   uint32_t len)
{
	m->st.messages++;
	if (c->join && hc_join_buffering(c->join, c->books)) { /* m->next: this message's sequence */
		hc_join_push(c->join, m->next, msg, len);
		return;
	}
	if (!c->books)
		return;
	if (len && msg[0] == HC_SNAP_TYPE && c->snaps) {
		if (hc_snap_table_stage(c->snaps, msg, len) == 0)
			hc_snap_table_commit(c->snaps);
		return;
	}
	hc_books_feed_msg(c->books, msg, len);
}

void hc_consumer_packet(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			uint32_t len, const struct hc_pkt_times *t)
{
	c->out_dec_tai_ns = 0;
	uint32_t line = 0;
	if (feed & HC_FEED_LINE_B) { /* a B line is merged by recovery.c, or it is no feed */
		feed &= ~HC_FEED_LINE_B;
		line = 1;
		if (!c->recov || !hc_recov_has_b(c->recov, feed))
			feed = UINT32_MAX;
	}
	if (feed >= c->nfeeds) {
		c->drop_bad_feed++;
		return;
	}
	c->packets++;
	c->bytes += len;
	if (t->hw_ns)
		c->hw_stamped++;
	if (c->recov)
		hc_recov_packet(c->recov, c, feed, line, payload, len, t, t->deq_tai_ns);
	else
		hc_consumer_sequence(c, feed, payload, len, t);
	if (c->max_packets && c->packets >= c->max_packets)
		__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
}

void hc_consumer_sequence(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			  uint32_t len, const struct hc_pkt_times *t)
{
	struct hc_mold *m = &c->mold[feed];
	struct hc_mold_iter it;
	struct hc_itch_msg dec[HC_DECODE_BATCH];
	const uint8_t *raw[HC_DECODE_BATCH];
	uint32_t rawlen[HC_DECODE_BATCH];
	const uint8_t *msg;
	uint32_t mlen, delivered = 0, n = 0, nz = 0;
	uint64_t itch_ns = UINT64_MAX;

	/* Late join: until the snapshot is in, delivered messages go to the join ring, not the books */
	const int buffering = __builtin_expect(c->join != NULL, 0) && hc_join_buffering(c->join, c->books);
	if (hc_mold_begin(m, payload, len, &it) > 0) {
		if (__builtin_expect(!c->first_seq[feed], 0)) {
			c->first_seq[feed] = it.seq;
			if (it.seq != 1 && c->books && !c->join)
				hc_books_set_incomplete(c->books, 1);
		}
		while (hc_mold_next(m, &it, &msg, &mlen)) {
			if (!delivered && mlen >= 11)
				itch_ns = be48(msg + 5); /* ITCH Timestamp, offset 5 (ITCH50.md sec. 2) */
			delivered++;
			if (__builtin_expect(buffering, 0)) {
				hc_join_push(c->join, it.seq - 1, msg, mlen);
				continue;
			}
			if (!c->books)
				continue;
			if (__builtin_expect(mlen && msg[0] == HC_SNAP_TYPE && c->snaps, 0)) {
				/* hftcap's Book Snapshot, not ITCH: decoded now, applied with the rest */
				nz += hc_snap_table_stage(c->snaps, msg, mlen) == 0;
				continue;
			}
			if (!c->timing) { /* no hop split wanted: the fused path */
				hc_books_feed_msg(c->books, msg, mlen);
				continue;
			}
			int r = hc_itch_decode(msg, mlen, &dec[n]);
			if (r) {
				hc_books_count_drop(c->books, r);
				continue;
			}
			/* Start the order's first cache miss now; it overlaps the rest of the decode. */
			hc_books_prefetch_slot(c->books, msg, mlen);
			raw[n] = msg;
			rawlen[n] = mlen;
			if (++n == HC_DECODE_BATCH) { /* only for packets larger than one frame */
				for (uint32_t i = 0; i < n; i++)
					hc_books_apply(c->books, &dec[i]);
				n = 0;
			}
		}
	}
	if (delivered && c->timing && !buffering) { /* buffered messages are never samples */
		uint64_t dec_ns = hc_now_tai_ns();
		for (uint32_t i = 0; i < n; i++) /* the orders' misses overlap each other */
			hc_books_prefetch_order(c->books, raw[i], rawlen[i]);
		for (uint32_t i = 0; i < n; i++)
			hc_books_apply(c->books, &dec[i]);
		if (nz)
			hc_snap_table_commit(c->snaps);
		uint64_t book_ns = hc_now_tai_ns();
		record(c, t, dec_ns, book_ns, itch_ns);
		c->out_dec_tai_ns = dec_ns;
		c->out_book_tai_ns = book_ns;
		c->out_itch_ns = itch_ns;
	} else if (nz) {
		hc_snap_table_commit(c->snaps);
	}
}

void hc_consumer_idle(struct hc_consumer *c)
{
	if (c->join)
		hc_join_poll(c->join, c->books);
}
