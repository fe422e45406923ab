/* feed.c: see feed.h. */
#include <string.h>
#include "feed.h"

void hc_consumer_init(struct hc_consumer *c, uint32_t nfeeds, uint64_t max_packets)
{
	memset(c, 0, sizeof(*c));
	c->nfeeds = nfeeds;
	c->max_packets = max_packets;
	for (uint32_t i = 0; i < HC_MAX_FEEDS; i++)
		hc_mold_init(&c->mold[i]);
}

void hc_consumer_packet(struct hc_consumer *c, uint32_t feed, const uint8_t *payload,
			uint32_t len, const struct hc_pkt_times *t)
{
	if (feed >= c->nfeeds) {
		c->drop_bad_feed++;
		return;
	}
	struct hc_mold *m = &c->mold[feed];
	struct hc_mold_iter it;
	const uint8_t *msg;
	uint32_t mlen;

	c->packets++;
	if (t->hw_ns)
		c->hw_stamped++;
	c->bytes += len;
	if (hc_mold_begin(m, payload, len, &it) > 0) {
		while (hc_mold_next(m, &it, &msg, &mlen))
			;
	}
	(void)t;
	if (c->max_packets && c->packets >= c->max_packets)
		__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
}
