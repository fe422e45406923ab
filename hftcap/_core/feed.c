/* feed.c: see feed.h. */
#include <errno.h>
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

/* Warm the books for a packet's new blocks before any is applied: first every message's window
 * slot, then (those loads overlapping) every message's order, so a packet's cold misses overlap
 * instead of queueing one message after the other. A walk of its own over the blocks, bounded
 * like hc_mold_next's, with no effect on the sequencing. */
#define HC_PF_PACKET 16
static inline void prefetch_packet(const struct hc_books *b, const struct hc_mold_iter *it)
{
	const uint8_t *p = it->p, *msg[HC_PF_PACKET];
	uint32_t len[HC_PF_PACKET], n = 0;
	for (uint32_t left = it->left; left && n < HC_PF_PACKET && it->end - p >= 2; left--) {
		uint32_t l = hc_be16(p);
		if ((size_t)(it->end - p - 2) < l)
			break;
		msg[n] = p + 2;
		len[n] = l;
		hc_books_prefetch_slot(b, msg[n], l);
		n++;
		p += 2 + l;
	}
	for (uint32_t i = 0; i < n; i++)
		hc_books_prefetch_order(b, msg[i], len[i]);
}

/* Timed or not, each message is decoded and applied in one step (hc_books_feed_msg, the fused
 * path). With timing, the packet's stamps are: dequeue (the receive loop), then `dec` once
 * MoldUDP64 has sequenced the packet (its header checked, the first new block found: ITCH
 * decoding starts), then `book` after the last book update (DESIGN.md, Hops). */
void hc_consumer_sequence(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			  uint32_t len, const struct hc_pkt_times *t)
{
	struct hc_mold *m = &c->mold[feed];
	struct hc_mold_iter it;
	const uint8_t *msg;
	uint32_t mlen, delivered = 0, nz = 0;
	uint64_t itch_ns = UINT64_MAX, dec_ns = 0;

	/* Late join: until the snapshot is in, delivered messages go to the join ring, not the books */
	const int buffering = __builtin_expect(c->join != NULL, 0) && hc_join_buffering(c->join, c->books);
	if (hc_mold_begin(m, payload, len, &it) > 0) {
		if (__builtin_expect(!c->first_seq[feed], 0)) {
			c->first_seq[feed] = it.seq;
			if (it.seq != 1 && c->books && !c->join)
				hc_books_set_incomplete(c->books, 1);
		}
		if (c->timing)
			dec_ns = hc_stamp_tai_ns(&c->clk);
		if (c->books && !buffering)
			prefetch_packet(c->books, &it);
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
			hc_books_feed_msg(c->books, msg, mlen);
		}
	}
	if (__builtin_expect(buffering, 0))
		hc_join_note_next(c->join, m->next);
	if (nz)
		hc_snap_table_commit(c->snaps);
	if (delivered && c->timing && !buffering) { /* buffered messages are never samples */
		uint64_t book_ns = hc_stamp_tai_ns(&c->clk);
		record(c, t, dec_ns, book_ns, itch_ns);
		c->out_dec_tai_ns = dec_ns;
		c->out_book_tai_ns = book_ns;
		c->out_itch_ns = itch_ns;
	}
}

void hc_consumer_lost(struct hc_consumer *c, struct hc_mold *m, uint64_t end)
{
	(void)m;
	if (c->books)
		hc_books_mark_suspect(c->books);
	if (!c->join)
		return;
	if (hc_join_state(c->join) == HC_JOIN_LIVE)
		hc_join_rearm(c->join, end);
	else
		hc_join_note_lost(c->join, end);
}

/* The join's feed is feed 0 (a join serves one feed: its ring holds one sequence space). */
static int join_hole(void *ctx, uint64_t first, uint64_t end)
{
	struct hc_consumer *c = ctx;
	if (!c->recov)
		return -ENOTCONN;
	return hc_recov_hole(c->recov, c, 0, first, end, 0);
}

static void join_restored(void *ctx)
{
	struct hc_consumer *c = ctx;
	if (c->recov)
		hc_recov_restored(c->recov, 0);
}

void hc_consumer_attach_join(struct hc_consumer *c, struct hc_join *j)
{
	c->join = j;
	if (j) {
		struct hc_join_hooks h = { .ctx = c, .hole = join_hole, .restored = join_restored };
		hc_join_set_hooks(j, &h);
	}
}

void hc_consumer_idle(struct hc_consumer *c)
{
	if (c->join)
		hc_join_poll(c->join, c->books);
}
