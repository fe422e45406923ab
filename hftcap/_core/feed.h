/* feed.h: the consumer shared by the AF_XDP path, the kernel socket path and offline
 * replay. Per packet: MoldUDP64 sequencing (per feed), then each new block goes on to the
 * ITCH decoder and the books. Runs in the data thread: no allocation, no printing. */
#ifndef HC_FEED_H
#define HC_FEED_H

#include <stdint.h>
#include "mold.h"
#include "hftcap_shared.h"

/* The stamps of one packet, each in its own clock domain; 0 = not available. */
struct hc_pkt_times {
	uint64_t hw_ns;      /* NIC PHC */
	uint64_t xdp_tai_ns; /* XDP program (CLOCK_TAI) */
	uint64_t sw_tai_ns;  /* SO_TIMESTAMPING software RX stamp, mapped REALTIME -> TAI */
	uint64_t deq_tai_ns; /* consumer took the packet (descriptor or recvmmsg return) */
};

struct hc_consumer {
	struct hc_mold mold[HC_MAX_FEEDS];
	uint32_t nfeeds;
	uint64_t packets;        /* feed packets handed to the consumer */
	uint64_t bytes;          /* their UDP payload bytes */
	uint64_t drop_bad_frame; /* AF_XDP frame that does not parse as IPv4/UDP */
	uint64_t drop_bad_feed;  /* feed index out of range (metadata missing or corrupt) */
	uint64_t hw_stamped;     /* packets that carried a NIC hardware RX timestamp */
	uint64_t max_packets;    /* stop after this many packets; 0 = no limit */
	int done;                /* set by the data thread when max_packets is reached */
};

void hc_consumer_init(struct hc_consumer *c, uint32_t nfeeds, uint64_t max_packets);
void hc_consumer_packet(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			uint32_t len, const struct hc_pkt_times *t);

#endif
