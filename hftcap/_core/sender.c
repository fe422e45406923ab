/* sender.c: MoldUDP64 publisher, see sender.h for the contract. One schedule (sched_next)
 * produces the datagrams in wire order with their deadlines; two sinks consume it: the
 * socket (wait, stamp, sendmmsg) and a buffer (stamp, copy) for tests. */
#include "sender.h"
#include "hc_time.h"
#include "hist.h"
#include "hc_send.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define HC_MOLD_HDR_LEN 20
#define HC_MOLD_MAX_COUNT 0xFFFE
#define HC_SEND_DEFAULT_DURATION_NS (60ull * 1000000000ull)
#define HC_SEND_DEFAULT_SPIN_NS 50000ull
#define HC_SEND_SLEEP_SLICE_NS 100000000ull /* re-check stop / time bound this often */
#define HC_SEND_EOS_MAX 16
#define HC_SERVE_BATCH 16

struct hc_sender {
	struct hc_send_cfg cfg;
	uint8_t *buf;        /* the stream, stamped in place as it is sent */
	size_t len;
	uint64_t n_msgs;
	uint64_t *off;       /* n_msgs + 1: offset of message i's length prefix */
	uint64_t n_pkts;
	uint64_t *pkt_msg;   /* n_pkts + 1: first message index of each data packet */
	uint64_t *pkt_ts;    /* PACE_FILE only: ITCH timestamp of each packet's first message */
	uint8_t *reply_buf;  /* max_payload_bytes, used by hc_sender_serve only */
	_Atomic uint64_t sent_upto; /* messages [0, sent_upto) are final and may be replied */
	struct hc_hist send_hist;   /* stamp of a data packet -> return of its sendmmsg() */
	uint8_t *lost;       /* n_pkts: bit l set = the last run dropped the packet on line l */
	uint8_t *stamped;    /* n_pkts, with a B line: the packet's stamps are written this run */
	_Atomic int stop;
};

/* ---------------------------------------------------------------- helpers */

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	v = __builtin_bswap64(v);
	memcpy(p, &v, 8);
}

static inline void put_le64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put_le32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

static inline uint64_t get_ts48(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 6; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void put_ts48(uint8_t *p, uint64_t v)
{
	for (int i = 5; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* True with probability p, always consuming one draw. */
static inline int draw(uint64_t *x, double p)
{
	uint64_t r = splitmix64(x);
	if (p <= 0.0)
		return 0;
	if (p >= 1.0)
		return 1;
	return (double)(r >> 11) * 0x1.0p-53 < p;
}

static uint32_t max_payload(const struct hc_send_cfg *c)
{
	return c->max_payload_bytes ? c->max_payload_bytes : HC_SEND_MAX_PAYLOAD_DEFAULT;
}

/* ---------------------------------------------------------------- open / close */

int64_t hc_stream_count(const uint8_t *p, size_t len, uint32_t max_payload_bytes)
{
	uint32_t maxp = max_payload_bytes ? max_payload_bytes : HC_SEND_MAX_PAYLOAD_DEFAULT;
	size_t o = 0;
	int64_t n = 0;
	while (o < len) {
		if (len - o < 2)
			return -EINVAL;
		uint32_t m = get_be16(p + o);
		if (len - o - 2 < m)
			return -EINVAL;
		if (HC_MOLD_HDR_LEN + 2 + m > maxp)
			return -EMSGSIZE;
		o += 2 + m;
		n++;
	}
	return n;
}

uint64_t hc_send_deadline_ns(int pace, double rate, uint64_t pkt_index, uint64_t msgs_before)
{
	if (rate <= 0.0)
		return 0;
	if (pace == HC_PACE_PACKETS)
		return (uint64_t)((double)pkt_index * 1e9 / rate);
	if (pace == HC_PACE_MESSAGES)
		return (uint64_t)((double)msgs_before * 1e9 / rate);
	return 0;
}

int hc_sender_open(struct hc_sender **out, const uint8_t *stream, size_t len,
		   const struct hc_send_cfg *cfg)
{
	const struct hc_send_cfg *c = cfg;
	uint32_t maxp = max_payload(c);
	if (c->first_seq < 1 || c->msgs_per_packet < 1 || c->msgs_per_packet > HC_MOLD_MAX_COUNT ||
	    maxp < HC_MOLD_HDR_LEN + 2 || maxp > HC_SEND_MAX_PAYLOAD_LIMIT ||
	    c->pace < HC_PACE_NONE || c->pace > HC_PACE_FILE ||
	    c->clock < HC_STAMP_TAI_MIDNIGHT || c->clock > HC_STAMP_NONE ||
	    ((c->pace == HC_PACE_PACKETS || c->pace == HC_PACE_MESSAGES) && !(c->rate > 0.0)) ||
	    (c->pace == HC_PACE_FILE && !(c->speed > 0.0)) ||
	    !(c->loss >= 0.0 && c->loss <= 1.0) || !(c->dup >= 0.0 && c->dup <= 1.0) ||
	    !(c->reorder >= 0.0 && c->reorder <= 1.0) || c->eos_count > HC_SEND_EOS_MAX ||
	    !(c->loss_b >= 0.0 && c->loss_b <= 1.0) || !(c->dup_b >= 0.0 && c->dup_b <= 1.0) ||
	    !(c->reorder_b >= 0.0 && c->reorder_b <= 1.0) ||
	    c->eos_interval_ns > 1000000000ull)
		return -EINVAL;
	int64_t n = hc_stream_count(stream, len, maxp);
	if (n < 0)
		return (int)n;

	int err = -ENOMEM;
	struct hc_sender *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *c;
	s->cfg.max_payload_bytes = maxp;
	if (!s->cfg.max_duration_ns)
		s->cfg.max_duration_ns = HC_SEND_DEFAULT_DURATION_NS;
	if (!s->cfg.spin_ns)
		s->cfg.spin_ns = HC_SEND_DEFAULT_SPIN_NS;
	s->len = len;
	s->n_msgs = (uint64_t)n;
	s->buf = malloc(len ? len : 1);
	s->off = malloc((s->n_msgs + 1) * sizeof(*s->off));
	/* at most one packet per message: the index is sized for the worst case */
	s->pkt_msg = malloc((s->n_msgs + 1) * sizeof(*s->pkt_msg));
	s->reply_buf = malloc(maxp);
	if (!s->buf || !s->off || !s->pkt_msg || !s->reply_buf)
		goto err_free;
	if (c->pace == HC_PACE_FILE) {
		s->pkt_ts = malloc((s->n_msgs + 1) * sizeof(*s->pkt_ts));
		if (!s->pkt_ts)
			goto err_free;
	}
	if (len)
		memcpy(s->buf, stream, len);

	/* index the messages and cut the packets greedily */
	uint64_t o = 0, i = 0, p = 0, ts = 0;
	uint32_t in_pkt = 0, payload = HC_MOLD_HDR_LEN;
	for (i = 0; i < s->n_msgs; i++) {
		uint32_t m = get_be16(s->buf + o);
		if (m >= HC_ITCH_TS_OFF + 6)
			ts = get_ts48(s->buf + o + 2 + HC_ITCH_TS_OFF);
		if (in_pkt == 0 || in_pkt == c->msgs_per_packet || payload + 2 + m > maxp) {
			s->pkt_msg[p] = i;
			if (s->pkt_ts)
				s->pkt_ts[p] = ts;
			p++;
			in_pkt = 0;
			payload = HC_MOLD_HDR_LEN;
		}
		s->off[i] = o;
		in_pkt++;
		payload += 2 + m;
		o += 2 + m;
	}
	s->off[s->n_msgs] = o;
	s->pkt_msg[p] = s->n_msgs;
	s->n_pkts = p;
	s->lost = calloc(p ? p : 1, 1);
	s->stamped = c->line_b ? calloc(p ? p : 1, 1) : NULL;
	if (!s->lost || (c->line_b && !s->stamped))
		goto err_free;
	atomic_init(&s->sent_upto, 0);
	atomic_init(&s->stop, 0);
	hc_hist_init(&s->send_hist);
	*out = s;
	return 0;

err_free:
	hc_sender_close(s);
	return err;
}

void hc_sender_close(struct hc_sender *s)
{
	if (!s)
		return;
	free(s->reply_buf);
	free(s->lost);
	free(s->stamped);
	free(s->pkt_ts);
	free(s->pkt_msg);
	free(s->off);
	free(s->buf);
	free(s);
}

uint64_t hc_sender_messages(const struct hc_sender *s) { return s->n_msgs; }
uint64_t hc_sender_packets(const struct hc_sender *s) { return s->n_pkts; }
const struct hc_hist *hc_sender_send_hist(const struct hc_sender *s) { return &s->send_hist; }
int hc_sender_clock(const struct hc_sender *s) { return s->cfg.clock; }

const uint8_t *hc_sender_stream(const struct hc_sender *s, size_t *len)
{
	*len = s->len;
	return s->buf;
}

void hc_sender_stop(struct hc_sender *s) { atomic_store_explicit(&s->stop, 1, memory_order_relaxed); }

/* ---------------------------------------------------------------- the schedule */

enum dg_kind { DG_DATA, DG_LOST, DG_HEARTBEAT, DG_EOS };
enum dg_mark { MARK_NONE, MARK_DUP, MARK_REORDERED };

struct dgram {
	uint64_t deadline_ns; /* from the start, CLOCK_MONOTONIC */
	int kind;
	uint64_t pkt;         /* DATA / LOST: stream packet index */
	uint64_t seq;         /* HEARTBEAT / EOS: next expected sequence number */
	int mark;             /* DATA: enum dg_mark */
	uint64_t publish;     /* messages final once this datagram is out */
};

#define SCHED_Q 8

struct sched {
	uint64_t pkt, end_pkt;
	uint64_t last_ns;        /* deadline of the last datagram scheduled */
	uint64_t prng;
	double loss, dup, reorder; /* this line's impairments */
	int held;                /* a packet held back for reordering */
	uint64_t held_pkt;
	int held_dup;
	uint32_t eos_left;
	struct dgram q[SCHED_Q];
	int qh, qn;
};

static void sched_init(const struct hc_sender *s, struct sched *q, int line)
{
	memset(q, 0, sizeof(*q));
	q->end_pkt = s->n_pkts;
	if (s->cfg.max_packets && s->cfg.max_packets < q->end_pkt)
		q->end_pkt = s->cfg.max_packets;
	q->prng = line ? s->cfg.seed_b : s->cfg.seed;
	q->loss = line ? s->cfg.loss_b : s->cfg.loss;
	q->dup = line ? s->cfg.dup_b : s->cfg.dup;
	q->reorder = line ? s->cfg.reorder_b : s->cfg.reorder;
	q->eos_left = s->cfg.eos_count;
}

static void sched_push(struct sched *q, uint64_t d, int kind, int mark, uint64_t pkt,
		       uint64_t seq, uint64_t publish)
{
	struct dgram *g = &q->q[(q->qh + q->qn++) % SCHED_Q];
	g->deadline_ns = d;
	g->kind = kind;
	g->pkt = pkt;
	g->seq = seq;
	g->mark = mark;
	g->publish = publish;
}

static uint64_t pkt_deadline(const struct hc_sender *s, uint64_t p)
{
	const struct hc_send_cfg *c = &s->cfg;
	if (c->pace == HC_PACE_FILE) {
		uint64_t t0 = s->pkt_ts[0], t = s->pkt_ts[p];
		return t > t0 ? (uint64_t)((double)(t - t0) / c->speed) : 0;
	}
	return hc_send_deadline_ns(c->pace, c->rate, p, s->pkt_msg[p]);
}

/* Next datagram in wire order; 0 when the schedule is exhausted. */
static int sched_next(const struct hc_sender *s, struct sched *q, struct dgram *out)
{
	const struct hc_send_cfg *c = &s->cfg;
	if (!q->qn && q->pkt < q->end_pkt) {
		uint64_t p = q->pkt;
		uint64_t d = pkt_deadline(s, p);
		if (d < q->last_ns)
			d = q->last_ns; /* file timestamps that go back: send at once */
		uint64_t hb = c->heartbeat_interval_ns;
		if (hb && d > q->last_ns + hb) {
			/* idle: a heartbeat carrying the next sequence number */
			q->last_ns += hb;
			uint64_t next = c->first_seq + (q->held ? s->pkt_msg[q->held_pkt] : s->pkt_msg[p]);
			uint64_t pub = q->held ? s->pkt_msg[q->held_pkt] : s->pkt_msg[p];
			sched_push(q, q->last_ns, DG_HEARTBEAT, MARK_NONE, 0, next, pub);
		} else {
			int lost = draw(&q->prng, q->loss);
			int dup = draw(&q->prng, q->dup);
			int reo = draw(&q->prng, q->reorder);
			uint64_t end = s->pkt_msg[p + 1];
			q->last_ns = d;
			q->pkt++;
			if (q->held) {
				/* the held packet goes right after this one: the swap */
				uint64_t hp = q->held_pkt;
				sched_push(q, d, lost ? DG_LOST : DG_DATA, MARK_NONE, p, 0, s->pkt_msg[hp]);
				if (dup && !lost)
					sched_push(q, d, DG_DATA, MARK_DUP, p, 0, s->pkt_msg[hp]);
				sched_push(q, d, DG_DATA, MARK_REORDERED, hp, 0, end);
				if (q->held_dup)
					sched_push(q, d, DG_DATA, MARK_DUP, hp, 0, end);
				q->held = 0;
			} else if (lost) {
				sched_push(q, d, DG_LOST, MARK_NONE, p, 0, end);
			} else if (reo && q->pkt < q->end_pkt) {
				q->held = 1;
				q->held_pkt = p;
				q->held_dup = dup;
				return sched_next(s, q, out);
			} else {
				sched_push(q, d, DG_DATA, MARK_NONE, p, 0, end);
				if (dup)
					sched_push(q, d, DG_DATA, MARK_DUP, p, 0, end);
			}
		}
	}
	if (!q->qn && q->pkt >= q->end_pkt && q->eos_left) {
		uint64_t next = c->first_seq + s->pkt_msg[q->end_pkt];
		if (q->eos_left < c->eos_count)
			q->last_ns += c->eos_interval_ns;
		q->eos_left--;
		sched_push(q, q->last_ns, DG_EOS, MARK_NONE, 0, next, s->pkt_msg[q->end_pkt]);
	}
	if (!q->qn)
		return 0;
	*out = q->q[q->qh];
	q->qh = (q->qh + 1) % SCHED_Q;
	q->qn--;
	return 1;
}

/* Returns the clock reading the packet was stamped with (0: the stream's own timestamps). */
static uint64_t stamp_packet(struct hc_sender *s, uint64_t p, clockid_t clk, struct hc_send_stats *st)
{
	if (s->cfg.clock == HC_STAMP_NONE)
		return 0;
	uint64_t now = clock_ns(clk), itch_ns = now % HC_NS_PER_DAY;
	for (uint64_t i = s->pkt_msg[p]; i < s->pkt_msg[p + 1]; i++) {
		uint8_t *m = s->buf + s->off[i];
		if (get_be16(m) >= HC_ITCH_TS_OFF + 6)
			put_ts48(m + 2 + HC_ITCH_TS_OFF, itch_ns);
	}
	if (!st->first_stamp_itch_ns)
		st->first_stamp_itch_ns = itch_ns;
	st->last_stamp_itch_ns = itch_ns;
	return now;
}

static void fill_header(const struct hc_sender *s, uint8_t *h, uint64_t seq, uint16_t count)
{
	memcpy(h, s->cfg.session, HC_SEND_SESSION_LEN);
	put_be64(h + 10, seq);
	put_be16(h + 18, count);
}

/* ---------------------------------------------------------------- the sinks */

struct sink {
	int fd;              /* -1: build into out */
	uint8_t *out;
	size_t cap, used;
	int64_t records;
	int n;               /* datagrams in the batch */
	struct mmsghdr msg[HC_SEND_BATCH];
	struct iovec iov[HC_SEND_BATCH][2];
	uint8_t hdr[HC_SEND_BATCH][HC_MOLD_HDR_LEN];
	int kind[HC_SEND_BATCH];
	uint32_t count[HC_SEND_BATCH];
	uint64_t deadline[HC_SEND_BATCH];
	uint64_t stamp[HC_SEND_BATCH]; /* clock reading of a data packet's stamp; 0 = none */
	uint8_t one[HC_SEND_MAX_PAYLOAD_LIMIT]; /* a lone datagram, contiguous for send() */
	clockid_t clk;
	uint64_t publish;    /* sent_upto once the batch is out */
	uint64_t start_mono;
	int line;            /* 0 = A (publishes sent_upto), 1 = B */
	struct sink *store;  /* build: the sink whose buffer the records go to (both lines share A's) */
};

static void account(struct hc_send_stats *st, int kind, uint32_t count, size_t bytes)
{
	if (kind == DG_DATA) {
		st->packets_sent++;
		st->messages_sent += count;
		st->bytes_sent += bytes;
	} else if (kind == DG_HEARTBEAT) {
		st->heartbeats_sent++;
	} else {
		st->eos_sent++;
	}
}

/* Returns 0, or -ENOSPC when a build record does not fit (the batch is kept). */
static int flush(struct hc_sender *s, struct sink *k, struct hc_send_stats *st)
{
	if (k->fd < 0) {
		struct sink *o = k->store ? k->store : k;
		size_t need = 0;
		for (int i = 0; i < k->n; i++)
			need += 12 + k->iov[i][0].iov_len + k->iov[i][1].iov_len;
		if (o->cap - o->used < need)
			return -ENOSPC;
		for (int i = 0; i < k->n; i++) {
			uint8_t *r = o->out + o->used;
			size_t l0 = k->iov[i][0].iov_len, l1 = k->iov[i][1].iov_len;
			put_le64(r, k->deadline[i]);
			put_le32(r + 8, (uint32_t)(l0 + l1) | (k->line ? HC_SEND_REC_LINE_B : 0));
			memcpy(r + 12, k->iov[i][0].iov_base, l0);
			if (l1)
				memcpy(r + 12 + l0, k->iov[i][1].iov_base, l1);
			o->used += 12 + l0 + l1;
			o->records++;
			account(st, k->kind[i], k->count[i], l0 + l1);
		}
	} else {
		int done = 0;
		while (done < k->n) {
			int r;
			if (k->n - done == 1) {
				/* A lone datagram (every paced one) goes out as the floor's does: one
				 * buffer, send(). sendmmsg's vector and two-iovec import cost more. */
				size_t l0 = k->iov[done][0].iov_len, l1 = k->iov[done][1].iov_len;
				memcpy(k->one, k->iov[done][0].iov_base, l0);
				if (l1)
					memcpy(k->one + l0, k->iov[done][1].iov_base, l1);
				r = send(k->fd, k->one, l0 + l1, 0) < 0 ? -1 : 1;
			} else {
				r = sendmmsg(k->fd, k->msg + done, (unsigned)(k->n - done), 0);
			}
			st->batches++;
			if (r < 0) {
				if (hc_send_refused(&st->send_errors, &st->last_errno))
					done++;
				continue;
			}
			uint64_t back = r > 0 ? clock_ns(k->clk) : 0;
			for (int i = done; i < done + r; i++) {
				account(st, k->kind[i], k->count[i],
					k->iov[i][0].iov_len + k->iov[i][1].iov_len);
				if (k->stamp[i] && back >= k->stamp[i])
					hc_hist_record(&s->send_hist, back - k->stamp[i]);
			}
			done += r;
		}
	}
	k->n = 0;
	if (!k->line)
		atomic_store_explicit(&s->sent_upto, k->publish, memory_order_release);
	return 0;
}

static void add(struct hc_sender *s, struct sink *k, const struct dgram *g, clockid_t clk,
		struct hc_send_stats *st)
{
	int i = k->n;
	uint8_t *h = k->hdr[i];
	k->kind[i] = g->kind;
	k->deadline[i] = g->deadline_ns;
	k->iov[i][0].iov_base = h;
	k->iov[i][0].iov_len = HC_MOLD_HDR_LEN;
	k->iov[i][1].iov_base = NULL;
	k->iov[i][1].iov_len = 0;
	k->count[i] = 0;
	k->stamp[i] = 0;
	if (g->kind == DG_DATA || g->kind == DG_LOST) {
		uint64_t a = s->pkt_msg[g->pkt], b = s->pkt_msg[g->pkt + 1];
		/* A duplicate carries the stamp of its original, and so does the other line's copy. */
		if (g->mark != MARK_DUP && !(s->stamped && s->stamped[g->pkt])) {
			k->stamp[i] = stamp_packet(s, g->pkt, clk, st);
			if (s->stamped)
				s->stamped[g->pkt] = 1;
		}
		if (g->mark == MARK_DUP)
			st->duplicated_packets++;
		else if (g->mark == MARK_REORDERED)
			st->reordered_packets++;
		if (g->kind == DG_LOST) {
			s->lost[g->pkt] |= (uint8_t)(1u << k->line);
			st->lost_packets++;
			st->lost_messages += b - a;
			if (g->publish > k->publish)
				k->publish = g->publish;
			return;
		}
		fill_header(s, h, s->cfg.first_seq + a, (uint16_t)(b - a));
		k->iov[i][1].iov_base = s->buf + s->off[a];
		k->iov[i][1].iov_len = s->off[b] - s->off[a];
		k->count[i] = (uint32_t)(b - a);
	} else {
		fill_header(s, h, g->seq, g->kind == DG_EOS ? 0xFFFF : 0);
	}
	if (g->publish > k->publish)
		k->publish = g->publish;
	k->msg[i].msg_hdr = (struct msghdr){ .msg_iov = k->iov[i],
					     .msg_iovlen = k->iov[i][1].iov_len ? 2 : 1 };
	k->msg[i].msg_len = 0;
	k->n++;
}

/* Sleep, then spin, until the absolute CLOCK_MONOTONIC time t. Returns 0 at t, or the stop
 * reason (REQUESTED, MAX_TIME) without waiting further. */
static int wait_until(struct hc_sender *s, uint64_t t, uint64_t limit)
{
	for (;;) {
		uint64_t now = clock_ns(CLOCK_MONOTONIC);
		if (now >= t)
			return 0;
		if (atomic_load_explicit(&s->stop, memory_order_relaxed))
			return HC_STOP_REQUESTED;
		if (now >= limit)
			return HC_STOP_MAX_TIME;
		if (t - now > s->cfg.spin_ns) {
			uint64_t to = t - s->cfg.spin_ns;
			if (to > now + HC_SEND_SLEEP_SLICE_NS)
				to = now + HC_SEND_SLEEP_SLICE_NS;
			if (to > limit)
				to = limit;
			struct timespec ts = { .tv_sec = (time_t)(to / 1000000000ull),
					       .tv_nsec = (long)(to % 1000000000ull) };
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		} else {
			cpu_relax();
		}
	}
}

/* Order of two lines' datagrams due at once: the stream's packet order, A first on a tie. */
static inline uint64_t pos(const struct dgram *g)
{
	return g->kind == DG_DATA || g->kind == DG_LOST ? g->pkt : g->kind == DG_EOS ? UINT64_MAX : 0;
}

static int in_outage(const struct hc_send_cfg *c, uint64_t d)
{
	return c->outage_b_ns && d >= c->outage_b_start_ns && d - c->outage_b_start_ns < c->outage_b_ns;
}

/* nl = 1: line A only; 2: both, each its own schedule and sink, merged by deadline. */
static int64_t drive(struct hc_sender *s, struct sink **ks, int nl, struct hc_send_stats **sts)
{
	const struct hc_send_cfg *c = &s->cfg;
	clockid_t clk = c->clock == HC_STAMP_UTC_MIDNIGHT ? CLOCK_REALTIME : CLOCK_TAI;
	struct sched q[2];
	struct dgram g[2];
	int have[2] = { 0, 0 }, ended[2] = { 0, 0 };
	struct sink *k0 = ks[0];
	struct hc_send_stats *st = sts[0]; /* the stop reason and the schedule's bounds */
	int dry = k0->fd < 0;

	hc_hist_reset(&s->send_hist);
	memset(s->lost, 0, s->n_pkts ? s->n_pkts : 1);
	if (s->stamped)
		memset(s->stamped, 0, s->n_pkts ? s->n_pkts : 1);
	atomic_store_explicit(&s->sent_upto, 0, memory_order_release);
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	for (int l = 0; l < nl; l++) {
		memset(sts[l], 0, sizeof(*sts[l]));
		sts[l]->first_seq = c->first_seq;
		sts[l]->stop_reason = HC_STOP_DONE;
		ks[l]->clk = clk;
		ks[l]->publish = 0;
		ks[l]->line = l;
		ks[l]->start_mono = start;
		sched_init(s, &q[l], l);
	}
	uint64_t limit = start + c->max_duration_ns;
	uint64_t last_out = start;

	for (;;) {
		int l = -1;
		for (int j = 0; j < nl; j++) {
			if (!have[j] && !ended[j])
				ended[j] = !(have[j] = sched_next(s, &q[j], &g[j]));
			if (have[j] && (l < 0 || g[j].deadline_ns < g[l].deadline_ns ||
					(g[j].deadline_ns == g[l].deadline_ns && pos(&g[j]) < pos(&g[l]))))
				l = j;
		}
		if (l < 0)
			break;
		have[l] = 0;
		struct dgram *d = &g[l];
		struct sink *k = ks[l];
		if (l == 1 && in_outage(c, d->deadline_ns)) {
			if (d->kind == DG_DATA && d->mark != MARK_DUP) {
				d->kind = DG_LOST; /* recorded as lost on B: the receiver misses it */
				sts[1]->outage_packets++;
			} else if (d->kind != DG_LOST) {
				continue; /* heartbeats, End of Session and duplicates: nothing */
			}
		}
		if (d->kind != DG_EOS && d->deadline_ns > c->max_duration_ns) {
			st->stop_reason = HC_STOP_MAX_TIME;
			break;
		}
		if (!dry) {
			if (atomic_load_explicit(&s->stop, memory_order_relaxed)) {
				st->stop_reason = HC_STOP_REQUESTED;
				break;
			}
			uint64_t t = start + d->deadline_ns;
			uint64_t now = clock_ns(CLOCK_MONOTONIC);
			if (d->kind != DG_EOS && now >= limit) {
				st->stop_reason = HC_STOP_MAX_TIME;
				break;
			}
			if (t > now) {
				int flushed = 0;
				for (int j = 0; j < nl; j++)
					if (ks[j]->n) {
						flush(s, ks[j], sts[j]);
						flushed = 1;
					}
				if (flushed)
					last_out = clock_ns(CLOCK_MONOTONIC);
				/* the EOS tail is bounded by its own limits, not by the stream's */
				int r = wait_until(s, t, d->kind == DG_EOS ? t : limit);
				if (r) {
					if (d->kind != DG_EOS) /* a stop in the EOS tail: the stream was done */
						st->stop_reason = r;
					break;
				}
				now = clock_ns(CLOCK_MONOTONIC);
			}
			if (now - t > sts[l]->late_max_ns)
				sts[l]->late_max_ns = now - t;
		}
		if (d->kind == DG_DATA || d->kind == DG_LOST)
			sts[l]->data_packets += d->mark == MARK_DUP ? 0 : 1;
		add(s, k, d, clk, sts[l]);
		/* Paced: every datagram goes out in its own call right after its stamp, as the floor's
		 * sender does. Batching the ones already due (after a preemption) would hold each
		 * stamped packet back for the rest of the batch, and sender_to_book would show it.
		 * Built with two lines: one at a time, so the buffer holds the wire order. */
		if (k->n && ((!dry && c->pace != HC_PACE_NONE) || (dry && nl > 1))) {
			if (flush(s, k, sts[l]) < 0) {
				st->stop_reason = HC_STOP_BUFFER_FULL;
				k->n = 0;
				break;
			}
			last_out = clock_ns(CLOCK_MONOTONIC);
		}
		if (k->n == HC_SEND_BATCH) {
			if (flush(s, k, sts[l]) < 0) {
				st->stop_reason = HC_STOP_BUFFER_FULL;
				k->n = 0;
				break;
			}
			last_out = clock_ns(CLOCK_MONOTONIC);
		}
	}
	for (int l = 0; l < nl; l++) {
		if (ks[l]->n) {
			if (flush(s, ks[l], sts[l]) < 0) {
				st->stop_reason = HC_STOP_BUFFER_FULL;
				ks[l]->n = 0;
			}
			last_out = clock_ns(CLOCK_MONOTONIC);
		} else if (!l) {
			atomic_store_explicit(&s->sent_upto, k0->publish, memory_order_release);
		}
	}
	if (st->stop_reason == HC_STOP_MAX_TIME || st->stop_reason == HC_STOP_REQUESTED) {
		/* cut short: still tell the receivers the session is over, back to back */
		for (int l = 0; l < nl; l++) {
			struct dgram e = { .deadline_ns = q[0].last_ns, .kind = DG_EOS,
					   .seq = c->first_seq + k0->publish, .publish = k0->publish };
			for (uint32_t i = 0; i < c->eos_count; i++)
				add(s, ks[l], &e, clk, sts[l]);
			if (ks[l]->n && flush(s, ks[l], sts[l]) < 0)
				ks[l]->n = 0;
		}
		last_out = clock_ns(CLOCK_MONOTONIC);
	}
	for (int l = 0; l < nl; l++) {
		sts[l]->next_seq = c->first_seq + k0->publish;
		sts[l]->elapsed_ns = last_out - start;
		sts[l]->stop_reason = st->stop_reason;
	}
	return 0;
}

int hc_sender_run2(struct hc_sender *s, int fd, int fd_b, struct hc_send_stats *st,
		   struct hc_send_stats *st_b)
{
	if (fd < 0 || (fd_b < 0 && st_b) || (fd_b >= 0 && (!s->cfg.line_b || !st_b)))
		return -EBADF;
	int nl = fd_b >= 0 ? 2 : 1;
	struct sink *k[2] = { calloc(1, sizeof(struct sink)), nl > 1 ? calloc(1, sizeof(struct sink)) : NULL };
	if (!k[0] || (nl > 1 && !k[1])) {
		free(k[0]);
		free(k[1]);
		return -ENOMEM;
	}
	k[0]->fd = fd;
	if (nl > 1)
		k[1]->fd = fd_b;
	struct hc_send_stats *sts[2] = { st, st_b };
	drive(s, k, nl, sts);
	free(k[0]);
	free(k[1]);
	if (st->send_errors && !st->packets_sent && !st->heartbeats_sent && !st->eos_sent)
		return -st->last_errno;
	return 0;
}

int hc_sender_run(struct hc_sender *s, int fd, struct hc_send_stats *st)
{
	return hc_sender_run2(s, fd, -1, st, NULL);
}

int64_t hc_sender_build2(struct hc_sender *s, uint8_t *out, size_t cap, size_t *used,
			 struct hc_send_stats *st, struct hc_send_stats *st_b)
{
	int nl = st_b && s->cfg.line_b ? 2 : 1;
	struct sink *k[2] = { calloc(1, sizeof(struct sink)), nl > 1 ? calloc(1, sizeof(struct sink)) : NULL };
	if (!k[0] || (nl > 1 && !k[1])) {
		free(k[0]);
		free(k[1]);
		return -ENOMEM;
	}
	k[0]->fd = -1;
	k[0]->out = out;
	k[0]->cap = cap;
	if (nl > 1) {
		k[1]->fd = -1;
		k[1]->store = k[0];
	}
	struct hc_send_stats *sts[2] = { st, st_b };
	drive(s, k, nl, sts);
	int64_t n = k[0]->records;
	*used = k[0]->used;
	free(k[0]);
	free(k[1]);
	return n;
}

int64_t hc_sender_build(struct hc_sender *s, uint8_t *out, size_t cap, size_t *used,
			struct hc_send_stats *st)
{
	return hc_sender_build2(s, out, cap, used, st, NULL);
}

size_t hc_sender_lost_runs(const struct hc_sender *s, int line, uint64_t (*out)[2], size_t cap)
{
	size_t n = 0;
	uint8_t bit = (uint8_t)(1u << (line & 1));
	for (uint64_t p = 0; p < s->n_pkts; p++) {
		if (!(s->lost[p] & bit))
			continue;
		uint64_t first = s->cfg.first_seq + s->pkt_msg[p], cnt = s->pkt_msg[p + 1] - s->pkt_msg[p];
		if (n && n <= cap && out[n - 1][0] + out[n - 1][1] == first) {
			out[n - 1][1] += cnt;
			continue;
		}
		if (n < cap) {
			out[n][0] = first;
			out[n][1] = cnt;
		}
		n++;
	}
	return n;
}

/* ---------------------------------------------------------------- re-requests */

int hc_sender_reply(struct hc_sender *s, const uint8_t *req, size_t len, uint8_t *out,
		    size_t cap, struct hc_serve_stats *st)
{
	if (cap < HC_MOLD_HDR_LEN)
		return -ENOSPC;
	if (len != HC_SEND_REQ_LEN) {
		st->bad_request++;
		return 0;
	}
	if (memcmp(req, s->cfg.session, HC_SEND_SESSION_LEN)) {
		st->wrong_session++;
		return 0;
	}
	uint64_t seq = get_be64(req + 10);
	uint16_t want = get_be16(req + 18);
	if (want == 0 || want == 0xFFFF) {
		st->bad_request++;
		return 0;
	}
	uint64_t upto = atomic_load_explicit(&s->sent_upto, memory_order_acquire);
	if (seq < s->cfg.first_seq || seq - s->cfg.first_seq >= upto) {
		st->unknown_range++;
		return 0;
	}
	size_t maxp = s->cfg.max_payload_bytes < cap ? s->cfg.max_payload_bytes : cap;
	uint64_t a = seq - s->cfg.first_seq, b = a;
	size_t payload = HC_MOLD_HDR_LEN;
	while (b < upto && b - a < want) {
		size_t m = s->off[b + 1] - s->off[b];
		if (payload + m > maxp)
			break;
		payload += m;
		b++;
	}
	if (b == a) { /* cap smaller than one message */
		st->unknown_range++;
		return 0;
	}
	fill_header(s, out, seq, (uint16_t)(b - a));
	memcpy(out + HC_MOLD_HDR_LEN, s->buf + s->off[a], s->off[b] - s->off[a]);
	st->reply_messages += b - a;
	return (int)payload;
}

int hc_sender_serve(struct hc_sender *s, int fd, uint64_t max_ns, struct hc_serve_stats *st)
{
	struct mmsghdr rx[HC_SERVE_BATCH];
	struct iovec iov[HC_SERVE_BATCH];
	uint8_t buf[HC_SERVE_BATCH][64];
	struct sockaddr_storage from[HC_SERVE_BATCH];
	uint64_t limit = clock_ns(CLOCK_MONOTONIC) + max_ns;

	if (fd < 0)
		return -EBADF;
	for (;;) {
		if (atomic_load_explicit(&s->stop, memory_order_relaxed))
			return 0;
		uint64_t now = clock_ns(CLOCK_MONOTONIC);
		if (now >= limit)
			return 0;
		uint64_t left_ms = (limit - now) / 1000000ull + 1;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, left_ms > 100 ? 100 : (int)left_ms);
		if (pr < 0 && errno != EINTR)
			return -errno;
		if (pr <= 0)
			continue;
		for (int i = 0; i < HC_SERVE_BATCH; i++) {
			iov[i] = (struct iovec){ .iov_base = buf[i], .iov_len = sizeof(buf[i]) };
			rx[i].msg_hdr = (struct msghdr){ .msg_name = &from[i],
							 .msg_namelen = sizeof(from[i]),
							 .msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		int n = recvmmsg(fd, rx, HC_SERVE_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			st->requests++;
			size_t len = (rx[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : rx[i].msg_len;
			int r = hc_sender_reply(s, buf[i], len, s->reply_buf, s->cfg.max_payload_bytes,
						st);
			if (r <= 0)
				continue;
			if (sendto(fd, s->reply_buf, (size_t)r, 0, (struct sockaddr *)&from[i],
				   rx[i].msg_hdr.msg_namelen) < 0) {
				st->send_errors++;
				st->last_errno = errno;
			} else {
				st->replies++;
			}
		}
	}
}

uint64_t hc_sender_published(const struct hc_sender *s, uint64_t *first_seq)
{
	*first_seq = s->cfg.first_seq;
	return atomic_load_explicit(&((struct hc_sender *)s)->sent_upto, memory_order_acquire);
}
