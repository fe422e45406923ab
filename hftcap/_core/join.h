/* join.h: late join from a snapshot (../shared/specs/RECOVERY.md sec. 5) and the hand-over
 * of the books between the data thread and a snapshot loader, without locks.
 *
 * The writer role of the books belongs to exactly one thread at a time, passed by the
 * release/acquire `state`:
 *   BUFFERING  the loader owns the books (clears them, loads the spin); the data thread
 *              sequences every packet as always (feed.c) and puts each delivered message in
 *              the join ring, touching no book. A join starts in this state, so the ring holds the feed
 *              from its first packet.
 *   READY      the loader handed over (hc_join_hand_over) with the spin's End of Snapshot N;
 *              from here the data thread owns the books. Between packets (and when idle) it
 *              splices: buffered messages below N are discarded, N and on applied in order,
 *              then LIVE; or, when the ring no longer holds N (it starts after N, or
 *              overwrote it), BEHIND, handing the books back.
 *   LIVE       normal operation: packets go to the books.
 *   BEHIND     as BUFFERING (the loader owns the books again and must snapshot again).
 *   HOLE       the ring starts after N (or N is below what the books had applied) and a
 *              re-request hook is set: the data thread keeps the books and fills [N, start of
 *              the ring) from re-request replies (recovery.c: hc_recov_hole), buffering the
 *              live feed meanwhile; then splices the ring (LIVE), or, when the re-request
 *              fails, goes BEHIND.
 * A splice waits (stays READY, buffering) until the feed has reached N: a snapshot taken
 * ahead of the packets still in flight must not see them applied a second time.
 * A re-arm (hc_join_rearm, by the data thread, on a gap declared lost: feed.c
 * hc_consumer_lost) goes from LIVE back to BUFFERING with an empty ring: the same loader
 * procedure then restores the books. Every splice clears the books' suspect flag and calls the
 * `restored` hook (the feed goes back to synced): every run lost before it is below N. A run lost while not LIVE
 * (hc_join_note_lost) that reaches N or beyond makes the splice refuse N (BEHIND). The
 * restore time is armed_ns -> live_ns (degraded -> synced), CLOCK_MONOTONIC.
 *
 * The ring is preallocated: `capacity` slots of 64 bytes (sequence, length, message; ITCH's
 * largest message is 50 bytes), overwritten oldest first when full (the newest are kept, so
 * a retried snapshot can still join). Only the data thread touches it. Snapshot messages and
 * spliced messages are applied outside the latency path: they are never hop samples. */
#ifndef HC_JOIN_H
#define HC_JOIN_H

#include <stdint.h>
#include <stddef.h>

struct hc_books;

enum hc_join_state {
	HC_JOIN_BUFFERING = 1,
	HC_JOIN_READY = 2,
	HC_JOIN_LIVE = 3,
	HC_JOIN_BEHIND = 4,
	HC_JOIN_HOLE = 5,
};

#define HC_JOIN_SLOT_MSG 55

struct hc_join_slot {
	uint64_t seq;
	uint8_t len;
	uint8_t msg[HC_JOIN_SLOT_MSG];
};

/* Counters: the data thread writes the first group, the loader the second; readers read
 * them racily (monotonic u64s). Times are CLOCK_MONOTONIC ns, 0 = not yet. */
struct hc_join_stats {
	uint64_t buffered;        /* messages put in the ring */
	uint64_t overwritten;     /* oldest ones lost to a full ring */
	uint64_t oversize;        /* messages longer than a slot (not ITCH): dropped, counted */
	uint64_t applied;         /* buffered messages >= N applied at a splice */
	uint64_t discarded;       /* buffered messages < N discarded at a splice */
	uint64_t splices;         /* successful splices */
	uint64_t behind;          /* splices refused: the ring started after N (or N is stale) */
	uint64_t stale;           /* of which N was below what the books had applied (re-arm) */
	uint64_t first_seq;       /* sequence of the first message buffered since (re)arming */
	uint64_t snapshot_next;   /* N of the last hand-over */
	uint64_t armed_ns, first_packet_ns, ready_ns, live_ns;
	/* restore after a gap declared lost (data thread) */
	uint64_t rearms;          /* re-arms (restores started) */
	uint64_t restores;        /* splices that ended a re-arm */
	uint64_t restore_ns_last, restore_ns_max, restore_ns_sum; /* armed -> live, CLOCK_MONOTONIC */
	uint64_t lost_after_n;    /* splices refused: a run at or after N was lost while buffering */
	uint64_t lost_upto;       /* one past the highest run lost while not LIVE (since arming) */
	/* the hole [N, start of the ring) re-requested (data thread) */
	uint64_t holes;           /* holes asked for through the hook */
	uint64_t holes_filled;    /* of which every message came */
	uint64_t holes_failed;    /* of which the re-request failed (then BEHIND: a new snapshot) */
	uint64_t hole_messages;   /* messages of holes applied to the books */
	uint64_t hole_first, hole_end, hole_next; /* the last hole: [first, end), next to apply */
	/* loader side */
	uint64_t loads;           /* spins started (hc_join_load_begin) */
	uint64_t clears;          /* of which on books that were not empty */
	uint64_t load_messages;   /* spin messages applied to the books */
	uint64_t load_bytes;      /* SoupBinTCP bytes consumed */
	uint64_t load_start_ns, load_end_ns; /* last load: first byte .. End of Snapshot */
};

struct hc_join;

/* Set by the owner of the consumer before the data thread starts (feed.c). hole: ask for
 * [first, end) to be re-requested, the replies coming back through hc_join_hole_msg and
 * hc_join_hole_done; 0 = asked, else -errno (no re-request server: BEHIND). restored: a
 * splice made the books whole (after a re-arm, or losses during the first join). Both run in
 * the data thread. */
struct hc_join_hooks {
	void *ctx;
	int (*hole)(void *ctx, uint64_t first, uint64_t end);
	void (*restored)(void *ctx);
};
void hc_join_set_hooks(struct hc_join *j, const struct hc_join_hooks *h);

int hc_join_new(struct hc_join **out, uint64_t capacity);
void hc_join_free(struct hc_join *j);
int hc_join_state(const struct hc_join *j);
const struct hc_join_stats *hc_join_stats(const struct hc_join *j);
uint64_t hc_join_capacity(const struct hc_join *j);

/* Data thread. hc_join_buffering: once per packet, before its messages; first splices if the
 * loader has handed over; returns 1 while the packet's messages go to the ring (hc_join_push,
 * each with its sequence number, as sequencing delivers them: in order, exactly once), 0 when
 * LIVE and the caller applies them. hc_join_poll: the splice alone (idle loops). */
int hc_join_buffering(struct hc_join *j, struct hc_books *b);
void hc_join_push(struct hc_join *j, uint64_t seq, const uint8_t *msg, uint32_t len);
void hc_join_poll(struct hc_join *j, struct hc_books *b);
void hc_join_rearm(struct hc_join *j, uint64_t applied_next); /* mold next: floor for N */
/* While not LIVE: the feed's next sequence after a packet (a heartbeat or End of Session
 * names it even when nothing is buffered), so a splice knows the feed has reached N. */
void hc_join_note_next(struct hc_join *j, uint64_t next);
/* A run ending before `end` was lost while the join is not LIVE. */
void hc_join_note_lost(struct hc_join *j, uint64_t end);
/* HOLE (data thread): the re-requested message `seq` (applied when it is the next one), and
 * the end of the re-request (ok: every message came). */
void hc_join_hole_msg(struct hc_join *j, struct hc_books *b, uint64_t seq, const uint8_t *msg,
		      uint32_t len);
void hc_join_hole_done(struct hc_join *j, struct hc_books *b, int ok);

/* Loader (owner of the books while BUFFERING or BEHIND; -EBUSY otherwise). load_begin
 * clears the books if anything was loaded or applied to them before; hand_over gives them to
 * the data thread with the spin's End of Snapshot sequence. */
int hc_join_load_begin(struct hc_join *j, struct hc_books *b);
int hc_join_hand_over(struct hc_join *j, uint64_t next_seq);
/* The books apply one spin message (counted in load_messages; drops in the books' own). */
int hc_join_load_msg(struct hc_join *j, struct hc_books *b, const uint8_t *msg, uint32_t len);

/* ---- SoupBinTCP, the loader's side of the stream after Login Accepted (RECOVERY.md sec. 4) */
enum hc_soup_result {
	HC_SOUP_MORE = 0,   /* every complete packet consumed; feed more bytes */
	HC_SOUP_END = 1,    /* End of Snapshot consumed: *next_seq set */
	HC_SOUP_CLOSE = 2,  /* protocol violation (counted by reason): close the connection */
};

struct hc_soup_stats {
	uint64_t packets;           /* complete packets seen */
	uint64_t sequenced;         /* S packets */
	uint64_t heartbeats;        /* H */
	uint64_t debug;             /* + (ignored) */
	uint64_t unsequenced;       /* U from the server (SoupBinTCP 4.00; ignored) */
	uint64_t bad_length;        /* length field 0: no type byte */
	uint64_t unknown_type;      /* a type not defined server -> client, or A/J after login */
	uint64_t end_of_session;    /* Z before the End of Snapshot: incomplete */
	uint64_t bad_end;           /* a G message that does not parse */
	uint64_t oversize;          /* S longer than any ITCH message (> 64): not applied */
};

/* Consume the complete packets of p[0, len): S into the books (through hc_join_load_msg,
 * the End of Snapshot G ending the walk), H/+/U counted. *used = bytes consumed. */
int hc_soup_load(struct hc_join *j, struct hc_books *b, struct hc_soup_stats *st,
		 const uint8_t *p, size_t len, size_t *used, uint64_t *next_seq);

#endif
