/* recovery.c: see recovery.h. Per feed: `next` (the mold state's next expected sequence) is
 * the next message to deliver and `high` is one past the highest sequence known to exist;
 * [next, high) holds parked messages and missing ones. Invariant after every call: the slot
 * of `next` is never parked (it would have been drained) and high <= next + ring size, so
 * every sequence in [next, high) has its own slot. A request entry is matched by the first
 * sequence it asked for, which is where a reply must start (MOLDUDP64.md sec. 2). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "recovery.h"
#include "book.h"
#include "feed.h"
#include "mold.h"
#include "hc_time.h"
#include "join.h"

#define NREQ (2 * HC_RECOV_MAX_OUTSTANDING) /* in flight + given up (lost when next gets there) */
#define NRUNS 64 /* missing runs remembered with the time each was seen (for its own gap timeout) */

struct gaprun { uint64_t first, end, seen_ns; uint32_t src; }; /* src: SRC_* of its fills */
enum { SRC_A = 1, SRC_B = 2, SRC_SERVER = 4, SRC_LOST = 8 };
#define LAB_SENT_CAP 4096
#define RX_BUF 2048

struct slot {
	uint64_t seq; /* the parked message's sequence; any other value: empty */
	uint16_t len;
	uint8_t data[HC_RECOV_SLOT_DATA];
};
_Static_assert(sizeof(struct slot) == HC_RECOV_SLOT_BYTES, "64-byte slots");

struct req {
	uint64_t first;    /* where the reply must start */
	uint64_t sent_ns;
	uint64_t first_sent_ns; /* the first send of this entry: the loss bound counts from it */
	uint32_t count;
	uint32_t attempts; /* re-sends to the current server */
	uint8_t used, given_up;
};

struct hole {
	int active;
	uint64_t next, end; /* next to ask for, one past the last */
	uint32_t server;
	struct req q;       /* the one request out */
};

struct rfeed {
	struct slot *ring;
	uint64_t high;
	uint64_t req_upto;       /* missing messages below this are asked for (or given up) */
	uint64_t unreq_since_ns; /* when the oldest missing message not asked for yet was seen; 0: none */
	/* The missing runs in the order seen (= sequence order), each with its own gap timeout: a
	 * hole just seen is not asked for (or lost) because an older one's timer fired. */
	struct gaprun runs[NRUNS];
	uint32_t run_head, nruns;
	uint64_t episode_ns;     /* when the feed last went from nothing missing to missing */
	uint32_t server;         /* index of the server requests go to */
	uint32_t inflight;
	uint64_t held;           /* messages parked now */
	int missing;             /* high > next */
	struct req reqs[NREQ];
	struct hc_recov_stats st;
	struct hc_recov_range lost[HC_RECOV_LOST_RANGES];
	uint32_t nlost;
	int state;
	struct hc_hist hist;     /* gap seen -> filled, CLOCK_TAI ns */
	struct hc_hist lost_hist; /* first request -> declared lost, CLOCK_TAI ns */
	uint64_t restored_lost;  /* gaps_lost when a snapshot last restored the books */
	struct hole hole;
	struct hc_recov_hole_stats hst;
	/* A/B arbitration (only when the feed has a B line) */
	int ab;
	struct hc_line_stats line[2];
	char line_session[2][10]; /* the session of each line's last packet */
	int line_have[2];
	struct hc_line_event ev[HC_LINE_EVENTS];
	uint32_t nev;
	struct arrival { uint64_t seq, t_line; } *arr; /* first copy's arrival: time << 1 | line */
	struct hc_hist lag[2];   /* this line's copy behind the other's first one */
};

struct hc_recov {
	struct hc_recov_head head; /* first: hc_recov_active() reads it */
	struct hc_recov_cfg cfg;
	uint32_t nfeeds;
	uint64_t cap, mask;
	int fd;
	uint64_t last_now;       /* the latest clock a call brought (the lab's clock for a hole) */
	struct sockaddr_in srv[HC_RECOV_MAX_SERVERS];
	struct hc_recov_stats sock; /* drops before a datagram is matched to a feed */
	struct rfeed *f;
	size_t ring_bytes;
	uint8_t rx[RX_BUF];
	uint32_t nsent;
	uint32_t sent_server[LAB_SENT_CAP];
	uint8_t sent[LAB_SENT_CAP][20];
};

static inline void bump(uint64_t *v, uint64_t by)
{
	__atomic_store_n(v, *v + by, __ATOMIC_RELAXED);
}

int hc_recov_new(struct hc_recov **out, const struct hc_recov_cfg *cfg, uint32_t nfeeds)
{
	if (!nfeeds || cfg->nservers > HC_RECOV_MAX_SERVERS || !cfg->request_max ||
	    cfg->request_max > HC_RECOV_REQUEST_MAX_LIMIT || !cfg->max_outstanding ||
	    cfg->max_outstanding > HC_RECOV_MAX_OUTSTANDING || cfg->reorder_buffer < 16 ||
	    cfg->reorder_buffer > (1u << 24) || !cfg->request_timeout_ns)
		return -EINVAL;
	struct hc_recov *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	int err = -ENOMEM;
	r->cfg = *cfg;
	r->nfeeds = nfeeds;
	r->fd = -1;
	r->cap = 16;
	while (r->cap < cfg->reorder_buffer)
		r->cap <<= 1;
	r->mask = r->cap - 1;
	r->f = calloc(nfeeds, sizeof(*r->f));
	if (!r->f)
		goto fail;
	/* Faulted in now: the first gap must not page-fault megabytes in the data thread. */
	r->ring_bytes = (size_t)r->cap * sizeof(struct slot);
	for (uint32_t i = 0; i < nfeeds; i++) {
		void *p = mmap(NULL, r->ring_bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED) {
			err = -errno;
			goto fail;
		}
		r->f[i].ring = p;
		r->f[i].high = 1;
		r->f[i].req_upto = 1;
		hc_hist_init(&r->f[i].hist);
		hc_hist_init(&r->f[i].lost_hist);
		r->f[i].ab = i < 64 && (cfg->ab_mask >> i & 1);
		hc_hist_init(&r->f[i].lag[0]);
		hc_hist_init(&r->f[i].lag[1]);
		if (r->f[i].ab) {
			void *a = mmap(NULL, HC_LINE_LAG_WINDOW * sizeof(struct arrival), PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
			if (a == MAP_FAILED) {
				err = -errno;
				goto fail;
			}
			r->f[i].arr = a;
		}
	}
	if (!r->cfg.line_down_ns)
		r->cfg.line_down_ns = 3000000000ull; /* 3 heartbeat intervals of 1 s */
	for (uint32_t s = 0; s < cfg->nservers; s++) {
		r->srv[s].sin_family = AF_INET;
		r->srv[s].sin_addr.s_addr = cfg->server_ip_be[s];
		r->srv[s].sin_port = cfg->server_port_be[s];
	}
	if (!cfg->lab) {
		r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (r->fd < 0) {
			err = -errno;
			goto fail;
		}
		struct sockaddr_in any = { .sin_family = AF_INET };
		if (bind(r->fd, (struct sockaddr *)&any, sizeof(any))) {
			err = -errno;
			goto fail;
		}
	}
	*out = r;
	return 0;
fail:
	hc_recov_free(r);
	return err;
}

void hc_recov_free(struct hc_recov *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	if (r->f)
		for (uint32_t i = 0; i < r->nfeeds; i++)
			if (r->f[i].ring)
				munmap(r->f[i].ring, r->ring_bytes);
	if (r->f)
		for (uint32_t i = 0; i < r->nfeeds; i++)
			if (r->f[i].arr)
				munmap(r->f[i].arr, HC_LINE_LAG_WINDOW * sizeof(struct arrival));
	free(r->f);
	free(r);
}

int hc_recov_fd(const struct hc_recov *r) { return r->fd; }

/* ---- small pieces ---- */

static inline struct slot *slot_of(struct hc_recov *r, struct rfeed *f, uint64_t seq)
{
	return &f->ring[seq & r->mask];
}
static inline int parked(struct hc_recov *r, struct rfeed *f, uint64_t seq)
{
	return slot_of(r, f, seq)->seq == seq;
}

/* Deliver the parked message of next and move on. */
static inline void take_parked(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m,
			       struct rfeed *f)
{
	struct slot *s = slot_of(r, f, m->next);
	hc_consumer_apply_msg(c, m, s->data, s->len);
	s->seq = 0;
	f->held--;
	m->next++;
}

static void set_state(struct hc_recov *r, struct rfeed *f, struct hc_mold *m)
{
	int s = f->st.gaps_lost > f->restored_lost ? HC_FEED_DEGRADED
		: f->missing ? (f->inflight ? HC_FEED_RECOVERING : HC_FEED_GAP_WAIT)
			     : HC_FEED_SYNCED;
	__atomic_store_n(&f->state, s, __ATOMIC_RELAXED);
}

static void set_missing(struct hc_recov *r, struct rfeed *f, int missing, uint64_t now)
{
	if (missing == f->missing)
		return;
	f->missing = missing;
	if (missing) {
		f->episode_ns = now;
		__atomic_add_fetch(&r->head.active, 1, __ATOMIC_RELAXED);
	} else {
		hc_hist_record(&f->hist, now >= f->episode_ns ? now - f->episode_ns : 0);
		bump(&f->st.episodes, 1);
		__atomic_sub_fetch(&r->head.active, 1, __ATOMIC_RELAXED);
	}
}

static void send_to(struct hc_recov *r, struct hc_mold *m, struct rfeed *f, uint32_t server,
		    struct req *q, uint64_t now);

static void send_req(struct hc_recov *r, struct hc_mold *m, struct rfeed *f, struct req *q,
		     uint64_t now)
{
	bump(&f->st.requests_sent, 1);
	send_to(r, m, f, f->server, q, now);
}

static void send_to(struct hc_recov *r, struct hc_mold *m, struct rfeed *f, uint32_t server,
		    struct req *q, uint64_t now)
{
	uint8_t pkt[20];
	memcpy(pkt, m->session, 10);
	uint64_t be = __builtin_bswap64(q->first);
	memcpy(pkt + 10, &be, 8);
	pkt[18] = (uint8_t)(q->count >> 8);
	pkt[19] = (uint8_t)q->count;
	q->sent_ns = now;
	if (r->cfg.lab) {
		if (r->nsent < LAB_SENT_CAP) {
			r->sent_server[r->nsent] = server;
			memcpy(r->sent[r->nsent], pkt, 20);
			r->nsent++;
		}
		return;
	}
	/* A refusal is not retried here: the request times out like a lost one. */
	if (sendto(r->fd, pkt, 20, MSG_DONTWAIT, (struct sockaddr *)&r->srv[server],
		   sizeof(r->srv[0])) != 20)
		bump(&f->st.send_errors, 1);
}

static void req_free(struct rfeed *f, struct req *q)
{
	if (!q->given_up)
		f->inflight--;
	q->used = 0;
}

/* Record a lost run [first, first + n): counted, remembered, the books suspect. */
/* The runs holding [first, first + n) were (partly) filled by src. */
static void mark_runs(struct rfeed *f, uint64_t first, uint64_t n, uint32_t src)
{
	for (uint32_t i = 0; i < f->nruns; i++) {
		struct gaprun *g = &f->runs[(f->run_head + i) % NRUNS];
		if (g->first < first + n && first < g->end)
			g->src |= src;
	}
}

/* A delivered run leaves: counted by who filled it. */
static void run_done(struct rfeed *f, const struct gaprun *g)
{
	uint32_t s = g->src;
	if (s & SRC_LOST)
		bump(&f->st.gaps_with_loss, 1);
	else if (s == SRC_A)
		bump(&f->st.gaps_filled_a, 1);
	else if (s == SRC_B)
		bump(&f->st.gaps_filled_b, 1);
	else if (s == SRC_SERVER)
		bump(&f->st.gaps_filled_server, 1);
	else if (s)
		bump(&f->st.gaps_filled_mixed, 1);
}

static void runs_clear(struct rfeed *f)
{
	for (uint32_t i = 0; i < f->nruns; i++)
		run_done(f, &f->runs[(f->run_head + i) % NRUNS]);
	f->nruns = 0;
}

static void lose_run(struct hc_consumer *c, struct hc_mold *m, struct rfeed *f, uint64_t first,
		     uint64_t n)
{
	mark_runs(f, first, n, SRC_LOST);
	if (f->nlost < HC_RECOV_LOST_RANGES) {
		f->lost[f->nlost].first = first;
		f->lost[f->nlost].count = n;
		__atomic_store_n(&f->nlost, f->nlost + 1, __ATOMIC_RELEASE);
	}
	bump(&f->st.gaps_lost, 1);
	bump(&f->st.messages_lost, n);
	bump(&m->st.gaps, n);
	bump(&m->st.gap_events, 1);
	hc_consumer_lost(c, m, first + n); /* books suspect; with a join, restored (feed.c) */
}

/* Deliver parked messages from next on; skip runs whose request was given up (lost). */
static void drain(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m, struct rfeed *f,
		  uint64_t now)
{
	for (;;) {
		while (m->next < f->high && parked(r, f, m->next))
			take_parked(r, c, m, f);
		if (m->next >= f->high)
			break;
		struct req *g = NULL;
		for (int i = 0; i < NREQ; i++) {
			struct req *q = &f->reqs[i];
			if (q->used && q->given_up && q->first <= m->next && m->next < q->first + q->count)
				g = q;
		}
		if (!g)
			break;
		uint64_t end = g->first + g->count, s = m->next;
		while (m->next < end && !parked(r, f, m->next))
			m->next++;
		if (m->next > s) {
			lose_run(c, m, f, s, m->next - s);
			hc_hist_record(&f->lost_hist, now - g->first_sent_ns);
		}
	}
	for (int i = 0; i < NREQ; i++) {
		struct req *q = &f->reqs[i];
		if (q->used && q->first + q->count <= m->next)
			req_free(f, q);
	}
	if (f->req_upto < m->next)
		f->req_upto = m->next;
	if (m->next >= f->high) {
		f->high = m->next;
		f->unreq_since_ns = 0;
		runs_clear(f);
		if (f->missing && f->st.gaps_lost && f->server + 1 >= r->cfg.nservers)
			f->server = 0; /* every server failed: the next gap starts at the primary again */
		set_missing(r, f, 0, now);
	}
	set_state(r, f, m);
}

/* Declare lost every missing message below upto (parked ones are delivered). */
static void lose_until(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m,
		       struct rfeed *f, uint64_t upto, uint64_t now)
{
	while (m->next < upto) {
		if (parked(r, f, m->next)) {
			take_parked(r, c, m, f);
			continue;
		}
		uint64_t s = m->next;
		while (m->next < upto && !parked(r, f, m->next))
			m->next++;
		lose_run(c, m, f, s, m->next - s);
	}
	drain(r, c, m, f, now);
}

/* Sequences up to e exist: a new missing run [high, from) when from > high. */
static void note_end(struct hc_recov *r, struct rfeed *f, struct hc_mold *m, uint64_t from,
		     uint64_t e, uint64_t now)
{
	if (from > f->high) {
		bump(&f->st.gaps_seen, 1);
		bump(&f->st.messages_missing, from - f->high);
		if (!f->unreq_since_ns)
			f->unreq_since_ns = now ? now : 1;
		if (f->nruns == NRUNS) { /* full: the newest run grows; its older part waits longer */
			struct gaprun *g = &f->runs[(f->run_head + NRUNS - 1) % NRUNS];
			g->end = from;
			g->seen_ns = now;
		} else {
			f->runs[(f->run_head + f->nruns++) % NRUNS] =
				(struct gaprun){ .first = f->high, .end = from, .seen_ns = now };
		}
		set_missing(r, f, 1, now);
	}
	if (e > f->high)
		f->high = e;
}

/* Park one message ahead of next (the ring cannot overflow: callers made room). */
static void park(struct hc_recov *r, struct rfeed *f, struct hc_mold *m, uint64_t seq,
		 const uint8_t *msg, uint32_t len, int recovered, uint64_t now)
{
	struct slot *s = slot_of(r, f, seq);
	if (s->seq == seq) {
		if (recovered)
			bump(&f->st.reply_duplicates, 1);
		else
			bump(&m->st.duplicates, 1);
		return;
	}
	if (len > HC_RECOV_SLOT_DATA) {
		/* Not ITCH 5.0 (largest 50 B): left missing, so it is asked for (and lost if the
		 * reply cannot be parked either). */
		bump(&f->st.oversize, 1);
		if (!f->unreq_since_ns)
			f->unreq_since_ns = now ? now : 1;
		if (f->req_upto > seq)
			f->req_upto = seq;
		return;
	}
	s->seq = seq;
	s->len = (uint16_t)len;
	memcpy(s->data, msg, len);
	f->held++;
	if (f->held > f->st.reorder_peak)
		__atomic_store_n(&f->st.reorder_peak, f->held, __ATOMIC_RELAXED);
	bump(&f->st.held_messages, 1);
	if (recovered) {
		bump(&f->st.messages_recovered, 1);
		mark_runs(f, seq, 1, SRC_SERVER);
	}
}

/* Walk count blocks; 0 = they fit exactly, 1 = fit with trailing bytes, -1 = truncated. */
static int walk(const uint8_t *p, const uint8_t *end, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++) {
		if (end - p < 2)
			return -1;
		uint32_t n = hc_be16(p);
		if ((size_t)(end - p - 2) < n)
			return -1;
		p += 2 + n;
	}
	return p == end ? 0 : 1;
}

/* ---- A/B lines ---- */

static void line_event(struct rfeed *f, uint32_t line, uint32_t up, uint64_t now, uint64_t silent)
{
	if (f->nev >= HC_LINE_EVENTS)
		return;
	f->ev[f->nev] = (struct hc_line_event){ .tai_ns = now, .silent_ns = silent, .line = line,
						.up = up };
	__atomic_store_n(&f->nev, f->nev + 1, __ATOMIC_RELEASE);
}

/* A packet on line L: liveness of both lines (a line is down once silent for line_down_ns
 * while this one is alive, up again with its next packet), then the session rule. Returns 0
 * when the packet must not be merged: its session is not the merged one and the line did not
 * just leave the merged session (a new session is followed when a line moves to it, never
 * because one line carries a stale or foreign one). */
static int line_arrive(struct hc_recov *r, struct hc_mold *m, struct rfeed *f, uint32_t L,
		       const uint8_t *pkt, uint32_t len, uint64_t now)
{
	struct hc_line_stats *ls = &f->line[L], *os = &f->line[L ^ 1];
	bump(&ls->packets, 1);
	if (!ls->last_rx_ns && !os->last_rx_ns) /* the feed's first packet: both watches start */
		__atomic_store_n(&os->last_rx_ns, now, __ATOMIC_RELAXED);
	if (ls->down) {
		uint64_t silent = now > ls->last_rx_ns ? now - ls->last_rx_ns : 0;
		bump(&ls->downtime_ns, silent);
		bump(&ls->up_events, 1);
		__atomic_store_n(&ls->down, 0, __ATOMIC_RELAXED);
		line_event(f, L, 1, now, silent);
	}
	if (now > ls->last_rx_ns)
		__atomic_store_n(&ls->last_rx_ns, now, __ATOMIC_RELAXED);
	if (!os->down && os->last_rx_ns && now > os->last_rx_ns + r->cfg.line_down_ns) {
		bump(&os->down_events, 1);
		__atomic_store_n(&os->down, 1, __ATOMIC_RELAXED);
		line_event(f, L ^ 1, 0, now, now - os->last_rx_ns);
	}
	if (len < HC_MOLD_HDR)
		return 1; /* counted as short by the sequencing */
	int had = f->line_have[L];
	int moved = had && memcmp(f->line_session[L], pkt, 10);
	int was_merged = had && m->have_session && !memcmp(f->line_session[L], m->session, 10);
	memcpy(f->line_session[L], pkt, 10);
	f->line_have[L] = 1;
	if (!m->have_session || !memcmp(m->session, pkt, 10) || (moved && was_merged))
		return 1;
	bump(&ls->other_session, 1);
	bump(&m->st.packets, 1);
	return 0;
}

/* Message s arrived first on line L at t; a later copy on the other line is its lag sample. */
static inline void arrive_first(struct rfeed *f, uint32_t L, uint64_t s, uint64_t t)
{
	struct arrival *a = &f->arr[s & (HC_LINE_LAG_WINDOW - 1)];
	a->seq = s;
	a->t_line = t << 1 | L;
}
static inline void arrive_again(struct rfeed *f, uint32_t L, uint64_t s, uint64_t t)
{
	const struct arrival *a = &f->arr[s & (HC_LINE_LAG_WINDOW - 1)];
	if (a->seq != s || (a->t_line & 1) == L)
		return;
	uint64_t t0 = a->t_line >> 1;
	hc_hist_record(&f->lag[L], t > t0 ? t - t0 : 0);
	bump(&f->line[L].late_copies, 1);
}
static inline uint64_t arrival_ns(const struct hc_pkt_times *t, uint64_t now)
{
	return t->xdp_tai_ns ? t->xdp_tai_ns : t->sw_tai_ns ? t->sw_tai_ns : now;
}

/* The line's own sequencing: a jump past its highest sequence is a gap of that line. */
static inline void line_seq(struct rfeed *f, uint32_t L, uint64_t seq, uint64_t end)
{
	struct hc_line_stats *ls = &f->line[L];
	if (ls->next && seq > ls->next) {
		bump(&ls->gaps, 1);
		bump(&ls->gap_messages, seq - ls->next);
	}
	if (end > ls->next)
		__atomic_store_n(&ls->next, end, __ATOMIC_RELAXED);
}

/* ---- the live feed ---- */

static void session_reset(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m,
			  struct rfeed *f, uint64_t now)
{
	bump(&f->st.session_changes, 1);
	if (f->missing) /* the old session's holes can no longer be asked for */
		lose_until(r, c, m, f, f->high, now);
	for (int i = 0; i < NREQ; i++)
		if (f->reqs[i].used)
			req_free(f, &f->reqs[i]);
	f->server = 0;
	runs_clear(f);
}

void hc_recov_packet(struct hc_recov *r, struct hc_consumer *c, uint32_t feed, uint32_t line,
		     const uint8_t *pkt, uint32_t len, const void *times, uint64_t now)
{
	const struct hc_pkt_times *t = times;
	struct hc_mold *m = &c->mold[feed];
	struct rfeed *f = &r->f[feed];
	r->last_now = now;
	struct hc_line_stats *ls = NULL;
	const uint32_t L = line & 1;
	if (f->ab) {
		ls = &f->line[L];
		if (!line_arrive(r, m, f, L, pkt, len, now))
			return;
	}
	if (len < HC_MOLD_HDR || !m->have_session || memcmp(m->session, pkt, 10)) {
		if (len >= HC_MOLD_HDR && m->have_session)
			session_reset(r, c, m, f, now);
		uint64_t before = m->st.messages;
		hc_consumer_sequence(c, feed, pkt, len, t); /* counts, or takes the new session */
		if (ls && len >= HC_MOLD_HDR) { /* a session's first packet: all its messages won */
			uint64_t sq = hc_be64(pkt + 10);
			uint32_t n = hc_be16(pkt + 18);
			int data = n != HC_MOLD_HEARTBEAT && n != HC_MOLD_END_OF_SESSION;
			uint64_t won = m->st.messages - before;
			for (uint64_t q = m->next - won; q < m->next; q++)
				arrive_first(f, L, q, arrival_ns(t, now));
			f->line[0].next = f->line[1].next = 0; /* a new session: both lines start over */
			line_seq(f, L, sq, data ? sq + n : sq);
			bump(data ? &ls->messages : &ls->heartbeats, data ? n : 1);
			bump(&ls->wins, won);
			if (data)
				bump(&ls->duplicates, n - won);
		}
		if (m->have_session && !f->missing)
			f->high = f->req_upto = m->next;
		set_state(r, f, m);
		return;
	}
	uint64_t seq = hc_be64(pkt + 10);
	uint32_t count = hc_be16(pkt + 18);
	if (count == HC_MOLD_HEARTBEAT || count == HC_MOLD_END_OF_SESSION) {
		bump(&m->st.packets, 1);
		bump(count == HC_MOLD_HEARTBEAT ? &m->st.heartbeats : &m->st.end_of_session, 1);
		if (ls) {
			bump(&ls->heartbeats, 1);
			line_seq(f, L, seq, seq);
		}
		if (len != HC_MOLD_HDR)
			bump(&m->st.drop_trailing, 1);
		if (seq > m->next + r->cap) { /* tail gap beyond the ring: the oldest part is lost */
			bump(&f->st.overflows, 1);
			lose_until(r, c, m, f, seq - r->cap, now);
		}
		note_end(r, f, m, seq, seq, now);
		set_state(r, f, m);
		return;
	}
	uint64_t end = seq + count;
	int shape = walk(pkt + HC_MOLD_HDR, pkt + len, count);
	if (shape < 0) { /* whole packet dropped: its messages stay missing and are asked for */
		bump(&m->st.packets, 1);
		bump(&m->st.drop_truncated, 1);
		return;
	}
	if (ls) {
		bump(&ls->messages, count);
		line_seq(f, L, seq, end);
	}
	if (end <= m->next) {
		if (m->next - seq > r->cap) { /* far behind: a reset, not a duplicate; not merged */
			bump(&m->st.packets, 1);
			bump(&f->st.backwards, 1);
			return;
		}
		if (ls) {
			bump(&ls->duplicates, count);
			uint64_t at = arrival_ns(t, now);
			for (uint64_t q = seq; q < end; q++)
				arrive_again(f, L, q, at);
		}
		hc_consumer_sequence(c, feed, pkt, len, t); /* counts the duplicate */
		return;
	}
	if (seq <= m->next) {
		uint64_t old = m->next, high = f->high, dups = 0;
		hc_consumer_sequence(c, feed, pkt, len, t);
		if (old < high) {
			/* Messages below high were missing or parked: the parked copies are duplicates. */
			uint64_t upto = m->next < high ? m->next : high;
			for (uint64_t s = old; s < upto; s++) {
				struct slot *sl = slot_of(r, f, s);
				if (sl->seq == s) {
					sl->seq = 0;
					f->held--;
					dups++;
				} else {
					mark_runs(f, s, 1, L ? SRC_B : SRC_A);
				}
			}
			bump(&f->st.messages_late, upto - old - dups);
			bump(&m->st.duplicates, dups);
			if (ls)
				bump(&ls->filled, upto - old - dups);
		}
		if (ls) { /* delivered now, but the parked copies came first: this line's wins */
			bump(&ls->wins, m->next - old - dups);
			bump(&ls->duplicates, (old - seq) + dups);
			uint64_t at = arrival_ns(t, now);
			for (uint64_t q = seq; q < old; q++)
				arrive_again(f, L, q, at);
			for (uint64_t q = old; q < m->next; q++) {
				const struct arrival *a = &f->arr[q & (HC_LINE_LAG_WINDOW - 1)];
				if (q < high && a->seq == q && (a->t_line & 1) != L)
					arrive_again(f, L, q, at); /* it was parked: the other line's */
				else
					arrive_first(f, L, q, at);
			}
		}
		if (m->next > f->high)
			f->high = m->next;
		if (f->missing)
			drain(r, c, m, f, now);
		return;
	}
	/* Ahead of next: park each block. */
	bump(&m->st.packets, 1);
	if (shape)
		bump(&m->st.drop_trailing, 1);
	if (end > m->next + r->cap) { /* beyond the ring: the oldest missing messages are lost */
		bump(&f->st.overflows, 1);
		lose_until(r, c, m, f, end - r->cap, now);
	}
	uint64_t first_new = seq > f->high ? seq : f->high; /* below it: these were missing */
	const uint8_t *p = pkt + HC_MOLD_HDR;
	uint64_t late = 0, missing_oversize = 0, won = 0, dup = 0;
	const uint64_t at = ls ? arrival_ns(t, now) : 0;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t n = hc_be16(p);
		uint64_t s = seq + i;
		if (s >= m->next) {
			if (n > HC_RECOV_SLOT_DATA) {
				missing_oversize += s >= first_new; /* missing now, asked for */
			} else if (parked(r, f, s)) {
				dup++;
				if (ls)
					arrive_again(f, L, s, at);
			} else {
				won++;
				if (s < first_new) {
					late++;
					mark_runs(f, s, 1, L ? SRC_B : SRC_A);
				}
				if (ls)
					arrive_first(f, L, s, at);
			}
			park(r, f, m, s, p + 2, n, 0, now);
		} else {
			bump(&m->st.duplicates, 1);
			dup++;
			if (ls)
				arrive_again(f, L, s, at);
		}
		p += 2 + n;
	}
	if (ls) {
		bump(&ls->wins, won);
		bump(&ls->duplicates, dup);
		bump(&ls->filled, late);
	}
	bump(&f->st.messages_late, late);
	bump(&f->st.messages_missing, missing_oversize);
	note_end(r, f, m, seq, end, now);
	if (parked(r, f, m->next)) /* an overflow moved next onto this packet */
		drain(r, c, m, f, now);
	set_state(r, f, m);
}

/* ---- the hole of a join (join.h HOLE) ---- */

static void hole_send(struct hc_recov *r, struct hc_mold *m, struct rfeed *f, uint64_t now)
{
	struct hole *h = &f->hole;
	uint64_t n = h->end - h->next;
	h->q = (struct req){ .first = h->next, .used = 1, .first_sent_ns = now,
			     .count = (uint32_t)(n < r->cfg.request_max ? n : r->cfg.request_max) };
	bump(&f->hst.requests, 1);
	send_to(r, m, f, h->server, &h->q, now);
}

static void hole_end(struct hc_recov *r, struct hc_consumer *c, struct rfeed *f, int ok)
{
	f->hole.active = 0;
	__atomic_sub_fetch(&r->head.active, 1, __ATOMIC_RELAXED);
	bump(ok ? &f->hst.filled : &f->hst.failed, 1);
	if (c->join && c->books)
		hc_join_hole_done(c->join, c->books, ok);
}

int hc_recov_hole(struct hc_recov *r, struct hc_consumer *c, uint32_t feed, uint64_t first,
		  uint64_t end, uint64_t now)
{
	if (feed >= r->nfeeds || end <= first)
		return -EINVAL;
	if (!now) /* from the join's hook: the lab runs on its caller's clock */
		now = r->cfg.lab ? r->last_now : hc_now_tai_ns();
	struct rfeed *f = &r->f[feed];
	struct hc_mold *m = &c->mold[feed];
	if (!r->cfg.nservers || !m->have_session)
		return -ENOTCONN;
	if (f->hole.active)
		return -EBUSY;
	f->hole = (struct hole){ .active = 1, .next = first, .end = end };
	__atomic_add_fetch(&r->head.active, 1, __ATOMIC_RELAXED);
	bump(&f->hst.holes, 1);
	hole_send(r, m, f, now);
	return 0;
}

/* A reply that starts where the hole's request does (of a feed with this session): used. */
static int hole_reply(struct hc_recov *r, struct hc_consumer *c, uint32_t fi, const uint8_t *pkt,
		      uint64_t seq, uint32_t count, uint64_t now)
{
	for (uint32_t k = fi; k < r->nfeeds; k++) {
		struct rfeed *f = &r->f[k];
		struct hole *h = &f->hole;
		if (!h->active || h->q.first != seq || !count || count > h->q.count ||
		    !c->mold[k].have_session || memcmp(c->mold[k].session, pkt, 10))
			continue;
		const uint8_t *p = pkt + HC_MOLD_HDR;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t n = hc_be16(p);
			if (c->join && c->books)
				hc_join_hole_msg(c->join, c->books, seq + i, p + 2, n);
			p += 2 + n;
		}
		bump(&f->hst.replies, 1);
		bump(&f->hst.messages, count);
		h->next = seq + count;
		if (h->next >= h->end)
			hole_end(r, c, f, 1);
		else
			hole_send(r, &c->mold[k], f, now);
		return 1;
	}
	return 0;
}

static void hole_tick(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m,
		      struct rfeed *f, uint64_t now)
{
	struct hole *h = &f->hole;
	if (now < h->q.sent_ns + r->cfg.request_timeout_ns)
		return;
	bump(&f->hst.timeouts, 1);
	if (h->q.attempts < r->cfg.request_retries) {
		h->q.attempts++;
		bump(&f->hst.retries, 1);
	} else if (h->server + 1 < r->cfg.nservers) {
		h->server++;
		h->q.attempts = 0;
		bump(&f->hst.failovers, 1);
	} else {
		hole_end(r, c, f, 0);
		return;
	}
	bump(&f->hst.requests, 1);
	send_to(r, m, f, h->server, &h->q, now);
}

const struct hc_recov_hole_stats *hc_recov_hole_stats(const struct hc_recov *r, uint32_t feed)
{
	return &r->f[feed < r->nfeeds ? feed : 0].hst;
}

void hc_recov_restored(struct hc_recov *r, uint32_t feed)
{
	if (feed >= r->nfeeds)
		return;
	struct rfeed *f = &r->f[feed];
	f->restored_lost = f->st.gaps_lost;
	set_state(r, f, NULL);
}

/* ---- replies ---- */

void hc_recov_reply(struct hc_recov *r, struct hc_consumer *c, const uint8_t *pkt, uint32_t len,
		    uint32_t src_ip_be, uint16_t src_port_be, uint64_t now)
{
	uint32_t sv = 0;
	r->last_now = now;
	while (sv < r->cfg.nservers &&
	       (r->cfg.server_ip_be[sv] != src_ip_be || r->cfg.server_port_be[sv] != src_port_be))
		sv++;
	if (sv == r->cfg.nservers) {
		bump(&r->sock.drop_unknown_source, 1);
		return;
	}
	if (len < HC_MOLD_HDR) {
		bump(&r->sock.drop_malformed, 1);
		return;
	}
	uint64_t seq = hc_be64(pkt + 10);
	uint32_t count = hc_be16(pkt + 18);
	if (count == HC_MOLD_HEARTBEAT || count == HC_MOLD_END_OF_SESSION ||
	    walk(pkt + HC_MOLD_HDR, pkt + len, count) != 0) {
		bump(&r->sock.drop_malformed, 1);
		return;
	}
	uint32_t fi = 0;
	while (fi < r->nfeeds &&
	       !(c->mold[fi].have_session && !memcmp(c->mold[fi].session, pkt, 10)))
		fi++;
	if (fi == r->nfeeds) {
		bump(&r->sock.drop_wrong_session, 1);
		return;
	}
	if (hole_reply(r, c, fi, pkt, seq, count, now))
		return;
	/* Feeds sharing a session id: the one with a request starting there. */
	struct req *q = NULL;
	for (uint32_t k = fi; k < r->nfeeds && !q; k++) {
		if (!c->mold[k].have_session || memcmp(c->mold[k].session, pkt, 10))
			continue;
		for (int i = 0; i < NREQ; i++) {
			struct req *e = &r->f[k].reqs[i];
			if (e->used && e->first == seq && count <= e->count) {
				q = e;
				fi = k;
				break;
			}
		}
	}
	struct hc_mold *m = &c->mold[fi];
	struct rfeed *f = &r->f[fi];
	if (!q) {
		if (seq + count <= m->next)
			bump(&f->st.replies_late, 1); /* answered late or twice: harmless */
		else
			bump(&f->st.drop_unrequested, 1);
		return;
	}
	const uint8_t *p = pkt + HC_MOLD_HDR;
	uint64_t fresh = 0;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t n = hc_be16(p);
		uint64_t s = seq + i;
		if (s < m->next) {
			bump(&f->st.reply_duplicates, 1);
		} else if (s == m->next && !parked(r, f, s)) {
			hc_consumer_apply_msg(c, m, p + 2, n);
			bump(&f->st.messages_recovered, 1);
			mark_runs(f, s, 1, SRC_SERVER);
			m->next++;
			fresh++;
			/* The next ones may be parked already. */
			while (m->next < f->high && parked(r, f, m->next))
				take_parked(r, c, m, f);
		} else {
			uint64_t before = f->st.messages_recovered;
			park(r, f, m, s, p + 2, n, 1, now);
			fresh += f->st.messages_recovered - before;
		}
		p += 2 + n;
	}
	bump(fresh ? &f->st.replies : &f->st.replies_late, 1);
	int rest = count < q->count; /* one datagram's worth: ask for the rest at once */
	if (rest) {
		q->first += count;
		q->count -= count;
		q->attempts = 0;
	} else {
		req_free(f, q);
	}
	drain(r, c, m, f, now); /* frees the entry if the rest came meanwhile */
	if (rest && q->used && !q->given_up) {
		if (q->first < m->next) {
			q->count -= (uint32_t)(m->next - q->first);
			q->first = m->next;
		}
		bump(&f->st.remainders, 1);
		send_req(r, m, f, q, now);
	}
}

int hc_recov_drain_tap(struct hc_recov *r, struct hc_consumer *c, const struct hc_recov_tap *tap)
{
	if (r->fd < 0)
		return 0;
	uint8_t *buf = tap ? tap->buf : r->rx;
	size_t cap = tap ? tap->cap : sizeof(r->rx);
	int got = 0;
	for (; got < 64; got++) {
		struct sockaddr_in from;
		struct iovec iov = { .iov_base = buf, .iov_len = cap };
		struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov,
				     .msg_iovlen = 1, .msg_control = tap ? tap->ctrl : NULL,
				     .msg_controllen = tap ? tap->ctrl_len : 0 };
		ssize_t n = recvmsg(r->fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0)
			break;
		uint64_t now = hc_now_tai_ns();
		if (tap)
			tap->fn(tap->arg, &mh, (size_t)n, now);
		uint32_t len = n > RX_BUF ? 0 : (uint32_t)n; /* cut: malformed */
		hc_recov_reply(r, c, buf, len, from.sin_addr.s_addr, from.sin_port, now);
	}
	return got;
}

int hc_recov_drain_socket(struct hc_recov *r, struct hc_consumer *c)
{
	return hc_recov_drain_tap(r, c, NULL);
}

/* ---- timers ---- */

/* The first missing run not yet asked for (NULL: none remembered). */
static const struct gaprun *pending_run(const struct rfeed *f)
{
	for (uint32_t i = 0; i < f->nruns; i++) {
		const struct gaprun *g = &f->runs[(f->run_head + i) % NRUNS];
		if (g->end > f->req_upto)
			return g;
	}
	return NULL;
}

/* One past the last missing message whose own gap timeout has passed (0: none). Runs wholly
 * delivered or asked for are dropped first. */
static uint64_t ripe_upto(struct hc_recov *r, struct rfeed *f, struct hc_mold *m, uint64_t now)
{
	while (f->nruns && f->runs[f->run_head].end <= m->next) { /* delivered */
		run_done(f, &f->runs[f->run_head]);
		f->run_head = (f->run_head + 1) % NRUNS;
		f->nruns--;
	}
	if (!f->nruns) /* none remembered (an oversize message): the oldest time stands for all */
		return now >= f->unreq_since_ns + r->cfg.gap_timeout_ns ? f->high : 0;
	uint64_t ripe = 0;
	for (uint32_t i = 0; i < f->nruns; i++) {
		const struct gaprun *g = &f->runs[(f->run_head + i) % NRUNS];
		if (now < g->seen_ns + r->cfg.gap_timeout_ns)
			break;
		ripe = g->end;
	}
	return ripe;
}

static void issue(struct hc_recov *r, struct hc_consumer *c, struct hc_mold *m, struct rfeed *f,
		  uint64_t now)
{
	if (!f->unreq_since_ns || now < f->unreq_since_ns + r->cfg.gap_timeout_ns)
		return;
	uint64_t lim = ripe_upto(r, f, m, now);
	if (!lim)
		return;
	if (!r->cfg.nservers) {
		lose_until(r, c, m, f, lim, now);
		return;
	}
	uint64_t s = f->req_upto > m->next ? f->req_upto : m->next;
	while (f->inflight < r->cfg.max_outstanding) {
		while (s < lim && parked(r, f, s))
			s++;
		if (s >= lim)
			break;
		struct req *q = NULL;
		for (int i = 0; i < NREQ && !q; i++)
			if (!f->reqs[i].used)
				q = &f->reqs[i];
		if (!q)
			break;
		uint64_t e = s;
		while (e < lim && e - s < r->cfg.request_max && !parked(r, f, e))
			e++;
		*q = (struct req){ .first = s, .count = (uint32_t)(e - s), .used = 1,
				   .first_sent_ns = now };
		f->inflight++;
		send_req(r, m, f, q, now);
		s = e;
	}
	while (s < lim && parked(r, f, s))
		s++;
	if (s >= lim) /* all asked for up to lim: past it, only parked ones up to the next hole */
		while (s < f->high && parked(r, f, s))
			s++;
	f->req_upto = s;
	if (s >= f->high) {
		f->unreq_since_ns = 0;
	} else {
		const struct gaprun *g = pending_run(f);
		if (g && g->seen_ns > f->unreq_since_ns)
			f->unreq_since_ns = g->seen_ns; /* the next timer: the next run's own */
	}
	set_state(r, f, m);
}

void hc_recov_tick(struct hc_recov *r, struct hc_consumer *c, uint64_t now)
{
	r->last_now = now;
	for (uint32_t k = 0; k < r->nfeeds; k++) {
		struct rfeed *f = &r->f[k];
		struct hc_mold *m = &c->mold[k];
		if (f->hole.active)
			hole_tick(r, c, m, f, now);
		if (!f->missing)
			continue;
		int gave_up = 0;
		for (int i = 0; i < NREQ; i++) {
			struct req *q = &f->reqs[i];
			if (!q->used || q->given_up || now < q->sent_ns + r->cfg.request_timeout_ns)
				continue;
			bump(&f->st.timeouts, 1);
			if (q->attempts < r->cfg.request_retries) {
				q->attempts++;
				bump(&f->st.retries, 1);
			} else if (f->server + 1 < r->cfg.nservers) {
				f->server++;
				bump(&f->st.failovers, 1);
				q->attempts = 0;
			} else {
				q->given_up = 1;
				f->inflight--;
				gave_up = 1;
				continue;
			}
			send_req(r, m, f, q, now);
		}
		if (gave_up)
			drain(r, c, m, f, now);
		if (f->missing)
			issue(r, c, m, f, now);
	}
}

uint64_t hc_recov_next_timer_ns(const struct hc_recov *r, uint64_t now)
{
	uint64_t due = UINT64_MAX;
	for (uint32_t k = 0; k < r->nfeeds; k++) {
		const struct rfeed *f = &r->f[k];
		if (f->hole.active && f->hole.q.sent_ns + r->cfg.request_timeout_ns < due)
			due = f->hole.q.sent_ns + r->cfg.request_timeout_ns;
		if (!f->missing)
			continue;
		if (f->unreq_since_ns && f->inflight < r->cfg.max_outstanding) {
			const struct gaprun *g = pending_run(f);
			uint64_t seen = g && g->seen_ns > f->unreq_since_ns ? g->seen_ns : f->unreq_since_ns;
			uint64_t d = seen + r->cfg.gap_timeout_ns;
			if (d < due)
				due = d;
		}
		for (int i = 0; i < NREQ; i++) {
			const struct req *q = &f->reqs[i];
			if (q->used && !q->given_up && q->sent_ns + r->cfg.request_timeout_ns < due)
				due = q->sent_ns + r->cfg.request_timeout_ns;
		}
	}
	if (due == UINT64_MAX)
		return due;
	return due > now ? due - now : 0;
}

/* ---- readers ---- */

const struct hc_hist *hc_recov_line_lag(const struct hc_recov *r, uint32_t feed, uint32_t line)
{
	return r->f[feed].ab ? &r->f[feed].lag[line & 1] : NULL;
}
int hc_recov_has_b(const struct hc_recov *r, uint32_t feed)
{
	return feed < r->nfeeds && r->f[feed].ab;
}
const struct hc_line_stats *hc_recov_line(const struct hc_recov *r, uint32_t feed, uint32_t line)
{
	return &r->f[feed].line[line & 1];
}
uint32_t hc_recov_line_events(const struct hc_recov *r, uint32_t feed, struct hc_line_event *out)
{
	uint32_t n = __atomic_load_n(&r->f[feed].nev, __ATOMIC_ACQUIRE);
	memcpy(out, r->f[feed].ev, n * sizeof(*out));
	return n;
}
int hc_recov_state(const struct hc_recov *r, uint32_t feed)
{
	return __atomic_load_n(&r->f[feed].state, __ATOMIC_RELAXED);
}
const struct hc_recov_stats *hc_recov_stats(const struct hc_recov *r, uint32_t feed)
{
	return feed < r->nfeeds ? &r->f[feed].st : &r->sock;
}
uint32_t hc_recov_lost(const struct hc_recov *r, uint32_t feed, struct hc_recov_range *out)
{
	uint32_t n = __atomic_load_n(&r->f[feed].nlost, __ATOMIC_ACQUIRE);
	memcpy(out, r->f[feed].lost, n * sizeof(*out));
	return n;
}
const struct hc_hist *hc_recov_hist(const struct hc_recov *r, uint32_t feed, int lost)
{
	return lost ? &r->f[feed].lost_hist : &r->f[feed].hist;
}
uint32_t hc_recov_sent(const struct hc_recov *r, uint32_t *server, uint8_t (*pkts)[20], uint32_t cap)
{
	uint32_t n = r->nsent < cap ? r->nsent : cap;
	memcpy(server, r->sent_server, n * sizeof(*server));
	memcpy(pkts, r->sent, n * 20);
	return n;
}
