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

/* The "day" profile: the shape of a real NASDAQ day (ITCH50.md, "Real trading days") at any
 * length. S 'O', R and H 'T' per stock, S 'S', a pre-open phase that rests the long-lived
 * orders (n_messages / 28, at most 1.8 M, spread over the stocks by the same Zipf weights as
 * the activity), S 'Q', the regular session, S 'M', S 'E', S 'C': exactly n_messages.
 * Regular session: stock chosen by Zipf-like weights (rank^-0.7; the busiest of 8,900 stocks
 * gets ~2 % of the flow), message mix A 43.6 % F 0.55 % D 42.6 % U 8.05 % E 2.13 % X 1.04 %
 * C 0.04 % I 1.50 % P 0.45 % and Q/Y/L the rest; most orders are deleted, replaced or
 * executed within a few messages of their stock (the newest are picked first), ~2 % of adds
 * rest deep in the book for most of the day; references come from two gateways, each
 * numbering its own block of 1,024 references with strides of 1-3, so ~25 % of adds carry
 * a reference lower than the previous add and ~45 % of the span is used; new orders rest at
 * a depth from the inside with median 1 level, p90 ~14, and a long-lived tail to ~1,900
 * ticks. Timestamps strictly increase, 4:00 to 9:30 pre-open, 9:30 to 16:00 regular. */
#define HC_GEN_DAY_MAX_STOCKS 16384u
size_t hc_gen_day_max_bytes(uint32_t n_stocks, uint64_t n_messages);
/* 0, -EINVAL (n_stocks 0 or > HC_GEN_DAY_MAX_STOCKS, n_messages below hc_gen_day_min_messages,
 * cap too small) or -ENOMEM. */
uint64_t hc_gen_day_min_messages(uint32_t n_stocks);
int hc_gen_fill_day(uint64_t seed, uint32_t n_stocks, uint64_t n_messages, uint8_t *buf, size_t cap,
		    size_t *len);

#endif
