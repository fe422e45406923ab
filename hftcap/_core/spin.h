/* spin.h: the exchange's GLIMPSE-style snapshot ("spin", ../shared/specs/RECOVERY.md sec. 5)
 * of the first n messages of a stream in NASDAQ file layout, as SoupBinTCP Sequenced Data
 * packets ready to write to a socket.
 *
 * Fresh books replay the prefix; the spin is then: the last System Event S; for every stock,
 * ascending by locate, its last Stock Directory R, Trading Action H, Reg SHO Y and Operational
 * Halt h (each market) copied verbatim from the prefix; then every resting order as an Add
 * Order, bids then asks, best level first, each level in time priority, at its current
 * shares: F with the attribution of its original F when it was added by one, else A (an
 * order created by U has no attribution of its own: A). Adds carry the timestamp of the
 * prefix's last message and tracking number 0. Last, the End of Snapshot 'G' (21 bytes:
 * type, then the sequence number of the first message NOT reflected, ASCII right-justified
 * and space-padded to 20). Each message is one packet: u16 BE length (payload + 1), 'S',
 * message. Runs on the caller's thread; allocates (books, the F table, the output). */
#ifndef HC_SPIN_H
#define HC_SPIN_H

#include <stdint.h>
#include <stddef.h>

#define HC_GLIMPSE_END 'G'
#define HC_GLIMPSE_END_LEN 21

struct hc_spin_stats {
	uint64_t replayed;  /* messages of the prefix applied to the books */
	uint64_t orders;    /* A/F in the spin */
	uint64_t attributed; /* of which F */
	uint64_t stocks;
	uint64_t packets;   /* S packets (G included) */
	uint64_t bytes;
	uint64_t next_seq;  /* carried by G */
	uint64_t build_ns;  /* CLOCK_MONOTONIC, replay + spin */
};

/* Spin of messages [0, n) of `stream` (n <= its message count); first_seq is the sequence
 * number of message 0. *out is malloc'ed (free()). Returns 0, -EINVAL (n past the stream or
 * a record past its end), -ENOMEM. */
int hc_spin_build(const uint8_t *stream, size_t len, uint64_t n, uint64_t first_seq,
		  uint8_t **out, size_t *out_len, struct hc_spin_stats *st);

/* Writes the 21-byte End of Snapshot message for next_seq into out. */
void hc_glimpse_end(uint8_t out[HC_GLIMPSE_END_LEN], uint64_t next_seq);
/* Parses one: 0 and *next_seq, or -EINVAL (length, type, not a decimal in 1..2^63 after
 * optional spaces, or anything after it but spaces). */
int hc_glimpse_end_parse(const uint8_t *p, uint32_t len, uint64_t *next_seq);

#endif
