/* sender.h: the MoldUDP64 publisher of the lab exchange (../shared/specs/MOLDUDP64.md).
 *
 * The sender owns a copy of one stream in NASDAQ file layout (u16 BE length + ITCH message,
 * repeated), which is byte for byte a run of MoldUDP64 message blocks: a packet is the
 * 20-byte header plus one contiguous slice of the stream, sent with two iovecs, no copy.
 * Message i (0-based) has sequence number first_seq + i. Packets are cut greedily: at most
 * msgs_per_packet blocks and at most max_payload_bytes of UDP payload.
 *
 * Each data packet follows a virtual schedule of deadlines (CLOCK_MONOTONIC, absolute from
 * the start, so pacing never drifts): packets or messages per second, the file's own ITCH
 * timestamps scaled by a speed factor, or as fast as possible. Heartbeats are scheduled in
 * every idle gap of heartbeat_interval_ns, End of Session packets after the stream (also,
 * back to back, when the time bound or a stop cut the stream short).
 * Right before a packet is handed to sendmmsg, the ITCH timestamp (offset 5, 6 bytes) of each
 * of its messages is overwritten in place with the sender's clock modulo 86400 s, so the
 * history (the stream itself) holds exactly what went on the wire and re-requests are
 * answered with the same bytes. Loss, duplication and reordering are drawn from a seeded
 * PRNG, three draws per data packet, so a seed gives the same wire sequence every time.
 *
 * hc_sender_build() runs the same schedule without a socket or waiting, writing datagrams
 * into a buffer (for tests); hc_sender_run() sends; hc_sender_serve() answers re-requests
 * and may run in another thread concurrently with hc_sender_run(): only messages already
 * handed to the kernel (published with a release store) are ever replied. */
#ifndef HC_SENDER_H
#define HC_SENDER_H

#include <stdint.h>
#include <stddef.h>

#define HC_SEND_SESSION_LEN 10
#define HC_SEND_MAX_PAYLOAD_DEFAULT 1400 /* Nassau's choice; fits a 1500 MTU with IP+UDP */
#define HC_SEND_MAX_PAYLOAD_LIMIT 65507  /* UDP over IPv4 */
#define HC_SEND_REQ_LEN 20               /* MoldUDP64 request packet (MOLDUDP64.md section 2) */
#define HC_SEND_BATCH 64                 /* datagrams per sendmmsg */
#define HC_ITCH_TS_OFF 5                 /* ITCH50.md section 2: ts48 at offsets 5..10 */
#define HC_NS_PER_DAY 86400000000000ull

enum hc_send_pace {
	HC_PACE_NONE = 0,     /* as fast as possible */
	HC_PACE_PACKETS = 1,  /* rate = data packets per second */
	HC_PACE_MESSAGES = 2, /* rate = messages per second */
	HC_PACE_FILE = 3,     /* the stream's own ITCH timestamps, divided by speed */
};

enum hc_send_clock {
	HC_STAMP_TAI_MIDNIGHT = 0, /* CLOCK_TAI mod 86400 s ("tai-midnight") */
	HC_STAMP_UTC_MIDNIGHT = 1, /* CLOCK_REALTIME mod 86400 s ("utc-midnight") */
	HC_STAMP_NONE = 2,         /* keep the stream's timestamps ("file") */
};

enum hc_send_stop {
	HC_STOP_DONE = 0,        /* the stream (or max_packets of it) was sent */
	HC_STOP_MAX_TIME = 1,    /* max_duration_ns reached */
	HC_STOP_REQUESTED = 2,   /* hc_sender_stop() */
	HC_STOP_BUFFER_FULL = 3, /* build only: the output buffer is full */
};

struct hc_send_cfg {
	char session[HC_SEND_SESSION_LEN];
	uint64_t first_seq;          /* >= 1 */
	uint32_t msgs_per_packet;    /* 1..0xFFFE */
	uint32_t max_payload_bytes;  /* 0 = HC_SEND_MAX_PAYLOAD_DEFAULT */
	int pace;                    /* enum hc_send_pace */
	double rate;                 /* per second, for PACE_PACKETS / PACE_MESSAGES; > 0 */
	double speed;                /* for PACE_FILE; > 0 */
	int clock;                   /* enum hc_send_clock */
	double loss, dup, reorder;   /* probabilities per data packet, 0..1 */
	uint64_t seed;
	uint64_t max_packets;        /* data packets of the stream to send; 0 = all */
	uint64_t max_duration_ns;    /* hard bound on hc_sender_run; 0 = 60 s */
	uint64_t heartbeat_interval_ns; /* 0 = no heartbeats */
	uint32_t eos_count;          /* End of Session packets at the end (<= 16) */
	uint64_t eos_interval_ns;    /* spacing of those (<= 1 s) */
	uint64_t spin_ns;            /* busy-wait the last spin_ns before a deadline; 0 = 50 us */
	/* A B line (hc_sender_run2's fd_b): the same packets, byte for byte, on a second socket,
	 * with its own loss/dup/reorder drawn from its own PRNG (seed_b), merged into one wire
	 * order by deadline (A first on a tie). */
	int line_b;
	double loss_b, dup_b, reorder_b;
	uint64_t seed_b;
	/* The B line sends nothing (data, heartbeats) scheduled in [outage_b_start_ns,
	 * outage_b_start_ns + outage_b_ns) from the start; its data packets count as lost. */
	uint64_t outage_b_start_ns, outage_b_ns;
};

struct hc_send_stats {
	uint64_t data_packets;       /* stream packets scheduled (lost ones included) */
	uint64_t packets_sent;       /* data datagrams the kernel accepted (duplicates included) */
	uint64_t messages_sent;      /* blocks in those */
	uint64_t bytes_sent;         /* UDP payload bytes of data datagrams */
	uint64_t lost_packets;       /* injected loss: scheduled, stamped, never sent */
	uint64_t lost_messages;
	uint64_t duplicated_packets; /* sent twice in a row */
	uint64_t reordered_packets;  /* held back and sent after the next one */
	uint64_t heartbeats_sent;
	uint64_t eos_sent;
	uint64_t send_errors;        /* datagrams the kernel refused */
	int last_errno;              /* errno of the last refusal, 0 if none */
	int stop_reason;             /* enum hc_send_stop */
	uint64_t first_seq;          /* sequence number of the first message */
	uint64_t next_seq;           /* after the last message sent or lost, all before it done */
	uint64_t first_stamp_itch_ns, last_stamp_itch_ns; /* in the configured clock, mod 1 day */
	uint64_t elapsed_ns;         /* CLOCK_MONOTONIC, first to last datagram */
	uint64_t late_max_ns;        /* worst lateness of a datagram against its deadline */
	uint64_t batches;            /* send calls: sendmmsg, or send() for a lone datagram */
	uint64_t outage_packets;     /* B line: data packets not sent in the outage (in lost_*) */
};

struct hc_serve_stats {
	uint64_t requests;        /* datagrams received */
	uint64_t replies;         /* replies sent */
	uint64_t reply_messages;  /* blocks in those */
	uint64_t bad_request;     /* not 20 bytes, or count 0 */
	uint64_t wrong_session;
	uint64_t unknown_range;   /* first seq outside what was sent so far: no reply */
	uint64_t send_errors;
	int last_errno;
};

struct hc_sender;

/* Checks the NASDAQ layout: every record inside the buffer, no trailing bytes. Returns the
 * number of messages, or -EINVAL (a record runs past the end) / -EMSGSIZE (a message that
 * cannot fit one packet of max_payload_bytes). */
int64_t hc_stream_count(const uint8_t *p, size_t len, uint32_t max_payload_bytes);

/* Copies the stream and builds the seq -> offset index (the only allocations). */
int hc_sender_open(struct hc_sender **out, const uint8_t *stream, size_t len,
		   const struct hc_send_cfg *cfg);
void hc_sender_close(struct hc_sender *s);
uint64_t hc_sender_messages(const struct hc_sender *s);
uint64_t hc_sender_packets(const struct hc_sender *s); /* data packets of the whole stream */
int hc_sender_clock(const struct hc_sender *s);        /* enum hc_send_clock */
/* Per data packet of the last run: its stamp -> the return of the send call that sent it, in
 * the stamping clock (struct hc_hist, hist.h); empty for the stream's own timestamps. */
struct hc_hist;
const struct hc_hist *hc_sender_send_hist(const struct hc_sender *s);
/* The stream as sent so far (stamps included); valid until close. */
const uint8_t *hc_sender_stream(const struct hc_sender *s, size_t *len);

/* Messages [0, n) are final (handed to the kernel or lost by injection; stamps written):
 * returns n, any thread, with acquire. *first_seq: sequence number of message 0. */
uint64_t hc_sender_published(const struct hc_sender *s, uint64_t *first_seq);

/* Sends the schedule to a connected UDP socket. Returns 0, or -errno if nothing could be
 * sent at all (the refusals are in st). Blocks up to max_duration_ns + the EOS tail. */
int hc_sender_run(struct hc_sender *s, int fd, struct hc_send_stats *st);

/* Both lines (cfg.line_b): A to fd, B to fd_b (another connected socket), st_b its counters. */
int hc_sender_run2(struct hc_sender *s, int fd, int fd_b, struct hc_send_stats *st,
		   struct hc_send_stats *st_b);

/* The same schedule into out: records of [u64 LE deadline_ns from start][u32 LE len][bytes],
 * no waiting, stamps from the real clock. Returns the number of records. With st_b (and
 * cfg.line_b) both lines go into out in wire order, a B record's len with bit 31 set. */
int64_t hc_sender_build(struct hc_sender *s, uint8_t *out, size_t cap, size_t *used,
			struct hc_send_stats *st);
int64_t hc_sender_build2(struct hc_sender *s, uint8_t *out, size_t cap, size_t *used,
			 struct hc_send_stats *st, struct hc_send_stats *st_b);
#define HC_SEND_REC_LINE_B (1u << 31)

/* The data packets the last run dropped on a line (0 = A, 1 = B: injected loss and the
 * outage), as runs of message sequence numbers [first, first + count), consecutive lost
 * packets merged. Returns the number of runs (at most cap are written). */
size_t hc_sender_lost_runs(const struct hc_sender *s, int line, uint64_t (*out)[2], size_t cap);

/* Reply to one re-request: a downstream packet starting at the requested sequence number, at
 * most count messages and one datagram (and cap). Returns its length, 0 for no reply (counted
 * in st), -ENOSPC if cap cannot hold a header. */
int hc_sender_reply(struct hc_sender *s, const uint8_t *req, size_t len, uint8_t *out,
		    size_t cap, struct hc_serve_stats *st);

/* Answers re-requests arriving on fd (bound UDP socket) until max_ns elapsed or stop. */
int hc_sender_serve(struct hc_sender *s, int fd, uint64_t max_ns, struct hc_serve_stats *st);

/* Asks run and serve to return (any thread, async-signal-safe). */
void hc_sender_stop(struct hc_sender *s);

/* Packet deadline of the paced modes, ns after the start (exposed for tests). */
uint64_t hc_send_deadline_ns(int pace, double rate, uint64_t pkt_index, uint64_t msgs_before);

#endif
