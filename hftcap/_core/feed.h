/* feed.h: the consumer shared by the AF_XDP path, the kernel socket path and offline
 * replay. Per packet: MoldUDP64 sequencing (per feed), then each new block goes on to the
 * ITCH decoder and the books; the packet's stamps go into one histogram per hop. Runs in
 * the data thread: no allocation, no printing. */
#ifndef HC_FEED_H
#define HC_FEED_H

#include <stdint.h>
#include "mold.h"
#include "hist.h"
#include "hftcap_shared.h"
#include "hc_time.h"

struct hc_books;
struct hc_snap_table;
struct hc_recov;
struct hc_join;

/* The stamps of one packet, each in its own clock domain; 0 = not available. */
struct hc_pkt_times {
	uint64_t hw_ns;      /* NIC PHC */
	uint64_t xdp_tai_ns; /* XDP program (CLOCK_TAI) */
	uint64_t sw_tai_ns;  /* SO_TIMESTAMPING software RX stamp, mapped REALTIME -> TAI */
	uint64_t deq_tai_ns; /* consumer took the packet (descriptor or recvmmsg return) */
};

/* Hops, in the order of DESIGN.md and hftcap.latency.HOPS (checked by a test). */
enum hc_hop {
	HC_HOP_NIC_TO_XDP,
	HC_HOP_XDP_TO_DEQUEUE,
	HC_HOP_NIC_TO_STACK,
	HC_HOP_STACK_TO_DEQUEUE,
	HC_HOP_DEQUEUE_TO_DECODE,
	HC_HOP_DECODE_TO_BOOK,
	HC_HOP_XDP_TO_BOOK,
	HC_HOP_STACK_TO_BOOK,
	HC_HOP_SENDER_TO_BOOK,
	HC_HOP_NIC_TO_BOOK,
	HC_NHOPS,
};
extern const char *const hc_hop_names[HC_NHOPS];

struct hc_consumer {
	struct hc_mold mold[HC_MAX_FEEDS];
	uint32_t nfeeds;
	uint64_t packets;        /* feed packets handed to the consumer */
	uint64_t bytes;          /* their UDP payload bytes */
	uint64_t drop_bad_frame; /* AF_XDP frame that does not parse as IPv4/UDP */
	uint64_t drop_bad_feed;  /* feed index out of range (metadata missing or corrupt) */
	uint64_t xsk_foreseen;   /* AF_XDP: of each batch's first 4 frames, the ones xskpred.h foresaw */
	uint64_t xsk_not_foreseen; /* ... and the others (their prefetch asked for the wrong lines) */
	uint64_t hw_stamped;     /* packets that carried a NIC hardware RX timestamp */
	uint64_t max_packets;    /* stop after this many packets; 0 = no limit */
	int done;                /* set by the data thread when max_packets is reached */
	struct hc_books *books;  /* ITCH decoder target; NULL = sequencing and counting only */
	struct hc_snap_table *snaps; /* target of hftcap's Book Snapshots 'Z' (snap.h); NULL = none */
	struct hc_recov *recov;  /* gap recovery (recovery.h) sequences every packet; NULL = mold.c */
	struct hc_join *join;    /* late join from a snapshot (join.h); NULL = none. Set before start */
	/* Sequence of each feed's first delivered message; != 1 means it joined mid-session
	 * (without a join, the books are then marked incomplete, book.h). 0 = none yet. */
	uint64_t first_seq[HC_MAX_FEEDS];

	/* Latency. Config is set before the data thread starts. */
	int timing;              /* record hop histograms */
	struct hc_clock clk;     /* the consumer's stamps (hc_time.h): CLOCK_TAI by default */
	int phc_is_tai;          /* the NIC PHC is synced to CLOCK_TAI: PHC hops are measurable */
	uint64_t itch_epoch_tai_ns; /* CLOCK_TAI time of the ITCH timestamps' midnight; 0 = unknown */
	int reset_hists;         /* set by a reader, honoured (and cleared) by the data thread */
	uint64_t negative[HC_NHOPS]; /* later stamp before the earlier one: clocks disagree */
	struct hc_hist hists[HC_NHOPS];

	/* The last packet's own stamps, for the capture writer (pcapng.h); dec = 0 when the
	 * packet was not recorded in the hop histograms, itch = UINT64_MAX when it had none. */
	uint64_t out_dec_tai_ns, out_book_tai_ns, out_itch_ns;
};

void hc_consumer_init(struct hc_consumer *c, uint32_t nfeeds, uint64_t max_packets);
void hc_consumer_packet(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			uint32_t len, const struct hc_pkt_times *t);
/* For recovery.c. The plain path for one packet (mold.c sequencing, timed delivery). */
void hc_consumer_sequence(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			  uint32_t len, const struct hc_pkt_times *t);
/* One held or recovered message to the books: counted, never timed (its wire time is not
 * its own). */
void hc_consumer_apply_msg(struct hc_consumer *c, struct hc_mold *m, const uint8_t *msg,
			   uint32_t len);
/* A run of `m`'s feed ending before `end` was declared lost (recovery.c): the books are
 * suspect; with a join, a LIVE feed is re-armed (join.h: the snapshot loader restores the
 * books), a feed already buffering notes the loss. Data thread. */
void hc_consumer_lost(struct hc_consumer *c, struct hc_mold *m, uint64_t end);
/* Set the late join before the data thread starts, with its hooks: a hole is re-requested
 * through recovery (when configured), a restore tells recovery the feed is whole. */
void hc_consumer_attach_join(struct hc_consumer *c, struct hc_join *j);
/* Between packets when the receive loop found none: work that must not wait for the next
 * packet (a snapshot hand-over, join.h). */
void hc_consumer_idle(struct hc_consumer *c);

#endif
