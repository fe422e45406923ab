/* gen.h: deterministic ITCH 5.0 stream generator (NASDAQ file layout).
 * Same (seed, n_stocks, n_messages) -> same bytes, on every run and machine. The stream is
 * S 'O', R and H 'T' for each stock (locates 1..n_stocks), S 'Q', order flow, S 'C': exactly
 * n_messages messages. Order flow: A (and some F) adds around a drifting mid on a $0.01 tick,
 * partial cancels X, deletes D, executions E and some C, replaces U, trade prints P, rare
 * crosses Q. References always name live orders, no book is ever crossed or locked, and
 * timestamps strictly increase. */
#ifndef HC_GEN_H
#define HC_GEN_H

#include <stdint.h>
#include <stddef.h>

#define HC_GEN_MAX_STOCKS 8192u /* 16 KB of price ladder per stock */

/* Upper bound of the output size for these parameters (bytes). */
size_t hc_gen_max_bytes(uint32_t n_stocks, uint64_t n_messages);
/* Writes the stream into buf (cap >= hc_gen_max_bytes); *len gets the bytes used.
 * 0, -EINVAL (n_stocks 0 or > HC_GEN_MAX_STOCKS, n_messages < 2 * n_stocks + 3, cap too
 * small) or -ENOMEM. */
int hc_gen_fill(uint64_t seed, uint32_t n_stocks, uint64_t n_messages, uint8_t *buf, size_t cap,
		size_t *len);

#endif
