/* xskpred.h: which UMEM frame the next AF_XDP RX descriptors will carry, so the data thread can
 * ask for the frames' lines together with the descriptors' (capture.c, prefetch_rx).
 *
 * The kernel takes frames from the fill ring in its order (FIFO), and RX descriptors come out in
 * the order the frames were taken. Copy mode takes a frame per redirected packet, so RX
 * descriptor j carries the frame of fill-ring entry j. A zero-copy driver takes frames ahead
 * for the NIC's ring, and a frame the XDP program passes to the kernel (or drops) goes back to
 * the pool's free list and is taken again before the fill ring: from then on the fill index of
 * descriptor j is j + d, d growing with every such frame. So the prediction is relative: the
 * fill index of the frame the last descriptor carried (fill_pos, written as frames are put in
 * the fill ring) minus that descriptor's index gives d for the next ones. A frame taken again
 * from the free list is one wrong guess, then d is learnt again.
 *
 * Only a prefetch relies on it: each descriptor is still read for the truth, every guess is
 * scored, and a wrong one costs prefetches of the wrong lines. Pure and
 * allocation-free apart from hc_xsk_pred_init; tests/c/xskpred_sim.c drives it with a model of
 * both kernel modes. */
#ifndef HC_XSKPRED_H
#define HC_XSKPRED_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct hc_xsk_pred {
	uint32_t *fill_pos;  /* frame number -> the fill-ring index it was last put at */
	uint32_t *ring;      /* fill-ring index (mod mask + 1) -> the frame number put there */
	uint32_t mask;       /* ring size - 1: a power of two >= nframes */
	uint32_t nframes;
	uint32_t shift;      /* log2 of the frame size (aligned UMEM chunks) */
	uint32_t delta;      /* fill index - RX index of the last descriptor (mod 2^32) */
	uint32_t off;        /* the data's offset in its frame, from the last descriptor */
	uint32_t len;        /* the last frame's length */
};

static inline void hc_xsk_pred_free(struct hc_xsk_pred *p)
{
	free(p->fill_pos);
	free(p->ring);
	p->fill_pos = p->ring = NULL;
}

/* The ring is our own copy of what was put in the fill ring: the kernel's slot may already hold
 * a later entry when a zero-copy driver has taken many frames ahead. Its slot for the index of
 * an undelivered frame is not reused, as at most nframes - 1 entries can follow it. */
static inline int hc_xsk_pred_init(struct hc_xsk_pred *p, uint32_t nframes, uint32_t shift)
{
	uint32_t size = 1;
	while (size < nframes)
		size <<= 1;
	p->fill_pos = calloc(nframes ? nframes : 1, sizeof(*p->fill_pos));
	p->ring = malloc((size_t)size * sizeof(*p->ring));
	if (!p->fill_pos || !p->ring) {
		hc_xsk_pred_free(p);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < size; i++)
		p->ring[i] = UINT32_MAX;
	p->mask = size - 1;
	p->nframes = nframes;
	p->shift = shift;
	p->delta = p->off = p->len = 0;
	return 0;
}

/* The frame at UMEM address addr was put in fill-ring entry fill_idx. */
static inline void hc_xsk_pred_filled(struct hc_xsk_pred *p, uint64_t addr, uint32_t fill_idx)
{
	uint64_t f = addr >> p->shift;
	if (f < p->nframes) {
		p->fill_pos[f] = fill_idx;
		p->ring[fill_idx & p->mask] = (uint32_t)f;
	}
}

/* The frame number RX descriptor rx_idx is expected to carry; >= nframes: no guess. */
static inline uint32_t hc_xsk_pred_guess(const struct hc_xsk_pred *p, uint32_t rx_idx)
{
	return p->ring[(rx_idx + p->delta) & p->mask];
}

/* RX descriptor rx_idx carried the frame at addr (data at addr, len bytes): returns 1 if that
 * was the guess for it, else 0, and learns the offset for the next ones. */
static inline int hc_xsk_pred_seen(struct hc_xsk_pred *p, uint32_t rx_idx, uint64_t addr,
				    uint32_t len)
{
	uint64_t f = addr >> p->shift;
	int hit = hc_xsk_pred_guess(p, rx_idx) == f;
	if (f < p->nframes)
		p->delta = p->fill_pos[f] - rx_idx;
	p->off = (uint32_t)(addr & ((1ull << p->shift) - 1));
	p->len = len;
	return hit;
}

#endif
