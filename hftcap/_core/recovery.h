/* recovery.h: MoldUDP64 gap recovery by re-request, in the data thread
 * (../shared/specs/MOLDUDP64.md sec. 2-3, ../shared/specs/RECOVERY.md sec. 1-3, 8).
 *
 * With recovery configured, every packet of a feed goes through hc_recov_packet() instead of
 * the plain sequencing of mold.c. Messages are delivered to the books exactly once and in
 * sequence order: a packet ahead of the next expected sequence is parked, message by
 * message, in a preallocated reorder ring; after the gap timeout the missing runs are asked
 * for (at most max_outstanding requests of at most request_max messages) from a non-blocking
 * UDP socket this module owns; replies are validated whole before any block is used; a
 * request that times out is retried, then failed over to the next server; when every server
 * failed (or the ring would overflow) the run is declared lost, counted with its range, and
 * the feed's books are marked suspect. Nothing here allocates, locks or blocks after
 * hc_recov_new(). All times are CLOCK_TAI ns, passed in by the caller (the tests drive a
 * fake clock through the same functions). Functions return 0 or -errno. */
#ifndef HC_RECOVERY_H
#define HC_RECOVERY_H

#include <stdint.h>
#include <stddef.h>
#include "hist.h"

struct hc_consumer;

#define HC_RECOV_MAX_SERVERS 8
#define HC_RECOV_MAX_OUTSTANDING 16
#define HC_RECOV_REQUEST_MAX_LIMIT 2000 /* molderl drops larger requests (RECOVERY.md sec. 1) */
#define HC_RECOV_SLOT_BYTES 64           /* largest ITCH 5.0 message is 50 B (RECOVERY.md sec. 1) */
#define HC_RECOV_SLOT_DATA (HC_RECOV_SLOT_BYTES - 10)
#define HC_RECOV_LOST_RANGES 100        /* lost ranges remembered per feed (the first ones) */

enum hc_feed_state {
	HC_FEED_SYNCED = 0,     /* nothing missing, nothing ever lost */
	HC_FEED_GAP_WAIT = 1,   /* messages missing, waiting for a late packet before asking */
	HC_FEED_RECOVERING = 2, /* requests out */
	HC_FEED_DEGRADED = 3,   /* a gap was declared lost since start or the last restore (books suspect) */
};

struct hc_recov_cfg {
	uint32_t nservers;                  /* 0: no re-request: a gap is lost after gap_timeout */
	uint32_t server_ip_be[HC_RECOV_MAX_SERVERS];
	uint16_t server_port_be[HC_RECOV_MAX_SERVERS];
	uint32_t reorder_buffer;            /* messages held per feed; rounded up to a power of 2 */
	uint64_t gap_timeout_ns;
	uint64_t request_timeout_ns;
	uint32_t request_max;               /* messages per request, 1..2000 */
	uint32_t max_outstanding;           /* requests in flight per feed, 1..16 */
	uint32_t request_retries;           /* re-sends to one server before failing over */
	int lab;                            /* no socket: requests are recorded (hc_recov_sent) */
	/* A/B arbitration: bit i set = feed i has a B line (its packets come with line 1). */
	uint64_t ab_mask;
	uint64_t line_down_ns;              /* a line silent this long while the other is alive: down */
};

/* Per line of a feed with a B line (line 0 = A, 1 = B), read by other threads (relaxed). */
struct hc_line_stats {
	uint64_t packets;        /* datagrams on the line (heartbeats included) */
	uint64_t messages;       /* message blocks carried by its data packets */
	uint64_t wins;           /* messages this line brought first (delivered or parked) */
	uint64_t duplicates;     /* messages already there (from the other line, a reply, or itself) */
	uint64_t filled;         /* of its wins, messages that were missing (a hole it filled) */
	uint64_t late_copies;    /* duplicates whose first copy came on the other line (lag samples) */
	uint64_t heartbeats;     /* heartbeats and End of Session packets */
	uint64_t gaps;           /* times the line jumped past its own next sequence */
	uint64_t gap_messages;   /* messages it jumped over (lost on this line, or reordered) */
	uint64_t other_session;  /* packets of a session that is not the merged one: not merged */
	uint64_t down_events;    /* went silent for line_down_ns while the other line was alive */
	uint64_t up_events;      /* came back after being down */
	uint64_t downtime_ns;    /* sum of the closed down periods: last packet -> first one back */
	uint64_t last_rx_ns;     /* CLOCK_TAI of its last packet (0: none yet) */
	uint64_t next;           /* one past the highest sequence the line carried */
	uint64_t down;           /* 1 while down */
};

#define HC_LINE_EVENTS 64 /* line down/up events kept per feed (the first ones) */
struct hc_line_event {
	uint64_t tai_ns;  /* when it was detected (a packet's dequeue time) */
	uint64_t silent_ns; /* down: the silence that made it; up: how long it was silent */
	uint32_t line;    /* 0 = A, 1 = B */
	uint32_t up;      /* 0 = went down, 1 = came back */
};

/* Per feed, read by other threads with relaxed loads (all u64). */
struct hc_recov_stats {
	uint64_t gaps_seen;          /* missing runs discovered (a packet or heartbeat past the end) */
	uint64_t gaps_lost;          /* runs declared lost */
	uint64_t messages_missing;   /* messages in the runs discovered */
	uint64_t messages_late;      /* missing messages a later live packet brought */
	uint64_t messages_recovered; /* missing messages a reply brought */
	uint64_t messages_lost;
	uint64_t held_messages;      /* messages parked in the reorder ring */
	uint64_t reorder_peak;       /* most messages parked at once */
	uint64_t overflows;          /* a message beyond the ring: the oldest missing run lost at once */
	uint64_t oversize;           /* parked message longer than a slot: not parked, asked for again */
	uint64_t requests_sent;      /* request datagrams (first sends, retries, remainders) */
	uint64_t retries;            /* re-sends after a timeout */
	uint64_t remainders;         /* requests for the rest of a reply that stopped short */
	uint64_t timeouts;
	uint64_t failovers;
	uint64_t send_errors;
	uint64_t replies;            /* replies used */
	uint64_t reply_duplicates;   /* blocks of used replies already delivered (late / twice) */
	uint64_t replies_late;       /* replies whose every block was already delivered */
	uint64_t drop_unknown_source;/* datagram from an address that is no configured server */
	uint64_t drop_wrong_session;
	uint64_t drop_unrequested;   /* no request out starts at that sequence, or more than asked */
	uint64_t drop_malformed;     /* short, truncated block, lying count, trailing bytes, no blocks */
	uint64_t session_changes;    /* a new session id on the live feed: state reset, not merged */
	uint64_t backwards;          /* live packet far below the window (not merged, not a dup) */
	uint64_t episodes;           /* times the feed went from synced to missing and back */
	/* Per gap (a missing run as seen), once delivered: who filled it. A run is one jump of the
	 * merged stream; when more than 64 are open at once the newest ones merge. */
	uint64_t gaps_filled_a;      /* by the A line (or the only line) alone */
	uint64_t gaps_filled_b;      /* by the B line alone */
	uint64_t gaps_filled_server; /* by re-request replies alone */
	uint64_t gaps_filled_mixed;  /* by more than one of these */
	uint64_t gaps_with_loss;     /* some of its messages were declared lost */
};

struct hc_recov_range { uint64_t first, count; };

/* The hole of a late join or restore (join.h HOLE): [N, start of the join ring) asked for
 * from the re-request servers, one request of at most request_max messages at a time, with
 * the same timeout, retries and failover as a gap. Per feed, relaxed u64s. */
struct hc_recov_hole_stats {
	uint64_t holes;      /* holes asked for */
	uint64_t filled;     /* every message came */
	uint64_t failed;     /* every server failed: the join goes behind (a new snapshot) */
	uint64_t requests;   /* request datagrams (first sends, retries, the next part) */
	uint64_t retries;
	uint64_t timeouts;
	uint64_t failovers;
	uint64_t replies;    /* replies used */
	uint64_t messages;   /* messages the replies brought */
};

struct hc_recov;

int hc_recov_new(struct hc_recov **out, const struct hc_recov_cfg *cfg, uint32_t nfeeds);
void hc_recov_free(struct hc_recov *r);
/* The request/reply socket (-1 in lab mode), for the data thread's poll set. */
int hc_recov_fd(const struct hc_recov *r);

/* A live packet of `feed` on `line` (0 = A, 1 = B; the consumer calls this instead of its own
 * sequencing). Both lines of a feed share one sequencing state: the first copy of a message
 * wins, the other is a counted duplicate, and a gap is only asked for (or lost) when no line
 * filled it within the gap timeout. */
void hc_recov_packet(struct hc_recov *r, struct hc_consumer *c, uint32_t feed, uint32_t line,
		     const uint8_t *pkt, uint32_t len, const void *times, uint64_t now_ns);
/* The lag of this line's copy behind the other line's first copy of the same message
 * (arrival stamps: XDP, else the socket's software stamp, else dequeue; CLOCK_TAI ns), for
 * messages within the last HC_LINE_LAG_WINDOW sequences. NULL without a B line. */
#define HC_LINE_LAG_WINDOW 65536
const struct hc_hist *hc_recov_line_lag(const struct hc_recov *r, uint32_t feed, uint32_t line);
/* Nonzero when `feed` has a B line. */
int hc_recov_has_b(const struct hc_recov *r, uint32_t feed);
const struct hc_line_stats *hc_recov_line(const struct hc_recov *r, uint32_t feed, uint32_t line);
/* The feed's line events so far (the first HC_LINE_EVENTS); returns how many are stored. */
uint32_t hc_recov_line_events(const struct hc_recov *r, uint32_t feed, struct hc_line_event *out);
/* One datagram that arrived on the request socket from ip:port (network order). */
void hc_recov_reply(struct hc_recov *r, struct hc_consumer *c, const uint8_t *pkt, uint32_t len,
		    uint32_t src_ip_be, uint16_t src_port_be, uint64_t now_ns);
/* Read every waiting reply off the socket (non-blocking). Returns datagrams read. */
int hc_recov_drain_socket(struct hc_recov *r, struct hc_consumer *c);
/* A tap on that loop (capture.c with --write): each datagram is read into buf (cap bytes; a
 * longer one is cut there, and is malformed for recovery as before) with control messages into
 * ctrl, and given to fn first: its msghdr (source address, control messages), its own length
 * (MSG_TRUNC) and the dequeue time, the one hc_recov_reply gets. */
struct msghdr;
struct hc_recov_tap {
	uint8_t *buf;
	size_t cap;
	void *ctrl;
	size_t ctrl_len;
	void (*fn)(void *arg, const struct msghdr *mh, size_t len, uint64_t now_ns);
	void *arg;
};
/* hc_recov_drain_socket with a tap (NULL: none). */
int hc_recov_drain_tap(struct hc_recov *r, struct hc_consumer *c, const struct hc_recov_tap *tap);
/* Timers: gap timeouts, request timeouts, retries, failover, loss. */
void hc_recov_tick(struct hc_recov *r, struct hc_consumer *c, uint64_t now_ns);
/* ns until the next timer is due (0: due now), UINT64_MAX: none armed. */
uint64_t hc_recov_next_timer_ns(const struct hc_recov *r, uint64_t now_ns);
/* Nonzero while any feed has something missing (the loops tick only then). */
static inline int hc_recov_active(const struct hc_recov *r);

/* Ask for the hole [first, end) of `feed` (join.h hooks, data thread); each reply's messages go
 * to hc_join_hole_msg, the end (filled or failed) to hc_join_hole_done. -ENOTCONN: no server
 * or no session yet; -EBUSY: a hole is out. now_ns 0: the clock of the latest call (lab) or
 * CLOCK_TAI now. */
int hc_recov_hole(struct hc_recov *r, struct hc_consumer *c, uint32_t feed, uint64_t first,
		  uint64_t end, uint64_t now_ns);
const struct hc_recov_hole_stats *hc_recov_hole_stats(const struct hc_recov *r, uint32_t feed);
/* The feed's books were restored from a snapshot (join.h): the runs lost so far no longer
 * make it degraded. */
void hc_recov_restored(struct hc_recov *r, uint32_t feed);

int hc_recov_state(const struct hc_recov *r, uint32_t feed);
const struct hc_recov_stats *hc_recov_stats(const struct hc_recov *r, uint32_t feed);
/* Lost ranges of a feed (the first HC_RECOV_LOST_RANGES); returns how many are stored. */
uint32_t hc_recov_lost(const struct hc_recov *r, uint32_t feed, struct hc_recov_range *out);
/* lost = 0: gap seen -> nothing missing any more (one sample per episode);
 * lost = 1: first request of a run -> run declared lost. CLOCK_TAI ns. */
const struct hc_hist *hc_recov_hist(const struct hc_recov *r, uint32_t feed, int lost);
/* Lab mode: the requests "sent", in order, as (server index, 20-byte packet). */
uint32_t hc_recov_sent(const struct hc_recov *r, uint32_t *server, uint8_t (*pkts)[20], uint32_t cap);

struct hc_recov_head { int active; };
static inline int hc_recov_active(const struct hc_recov *r)
{
	return __atomic_load_n(&((const struct hc_recov_head *)r)->active, __ATOMIC_RELAXED);
}

#endif
