/* join.c: see join.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "join.h"
#include "book.h"
#include "hc_time.h"
#include "spin.h"

#define HC_JOIN_MIN 1024u
#define HC_JOIN_MAX (1ull << 24) /* 16M slots, 1 GiB */

_Static_assert(sizeof(struct hc_join_slot) == 64, "join.h states 64-byte slots");

struct hc_join {
	int state;               /* enum hc_join_state, release/acquire */
	int dirty;               /* the books hold something a load must clear first */
	uint64_t cap;
	struct hc_join_slot *ring;
	uint64_t head;           /* messages pushed since (re)arming */
	uint64_t floor_seq;      /* a hand-over below this (already applied) is refused */
	uint64_t last_seq;       /* the last message pushed */
	uint64_t feed_next;      /* the feed's next sequence, as the last packet left it */
	int rearmed;             /* the next splice ends a restore */
	struct hc_join_hooks hooks;
	struct hc_join_stats st;
};

int hc_join_new(struct hc_join **out, uint64_t capacity)
{
	if (capacity < HC_JOIN_MIN || capacity > HC_JOIN_MAX)
		return -EINVAL;
	struct hc_join *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->ring = mmap(NULL, capacity * sizeof(*j->ring), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (j->ring == MAP_FAILED) {
		free(j);
		return -ENOMEM;
	}
	j->cap = capacity;
	j->state = HC_JOIN_BUFFERING;
	j->st.armed_ns = hc_now_mono_ns();
	*out = j;
	return 0;
}

void hc_join_free(struct hc_join *j)
{
	if (!j)
		return;
	munmap(j->ring, j->cap * sizeof(*j->ring));
	free(j);
}

void hc_join_set_hooks(struct hc_join *j, const struct hc_join_hooks *h) { j->hooks = *h; }

static inline void bump(uint64_t *v, uint64_t by)
{
	__atomic_store_n(v, *v + by, __ATOMIC_RELAXED);
}

int hc_join_state(const struct hc_join *j) { return __atomic_load_n(&j->state, __ATOMIC_ACQUIRE); }
const struct hc_join_stats *hc_join_stats(const struct hc_join *j) { return &j->st; }
uint64_t hc_join_capacity(const struct hc_join *j) { return j->cap; }

void hc_join_push(struct hc_join *j, uint64_t seq, const uint8_t *msg, uint32_t len)
{
	if (len > HC_JOIN_SLOT_MSG) {
		j->st.oversize++;
		return;
	}
	if (!j->head)
		j->st.first_seq = seq, j->st.first_packet_ns = hc_now_mono_ns();
	if (j->head >= j->cap)
		j->st.overwritten++;
	struct hc_join_slot *s = &j->ring[j->head % j->cap];
	s->seq = seq;
	s->len = (uint8_t)len;
	memcpy(s->msg, msg, len);
	j->last_seq = seq;
	j->head++;
	j->st.buffered++;
}

static void go_behind(struct hc_join *j)
{
	bump(&j->st.behind, 1);
	__atomic_store_n(&j->state, HC_JOIN_BEHIND, __ATOMIC_RELEASE);
}

/* Apply the ring's messages from n on (discarding those below), then LIVE. */
static void finish(struct hc_join *j, struct hc_books *b, uint64_t n)
{
	uint64_t held = j->head < j->cap ? j->head : j->cap;
	for (uint64_t i = j->head - held; i < j->head; i++) {
		const struct hc_join_slot *s = &j->ring[i % j->cap];
		if (s->seq < n) {
			j->st.discarded++;
			continue;
		}
		hc_books_feed_msg(b, s->msg, s->len);
		j->st.applied++;
	}
	j->st.splices++;
	j->st.live_ns = hc_now_mono_ns();
	if (j->rearmed) {
		uint64_t d = j->st.live_ns - j->st.armed_ns;
		j->rearmed = 0;
		bump(&j->st.restore_ns_sum, d);
		__atomic_store_n(&j->st.restore_ns_last, d, __ATOMIC_RELAXED);
		if (d > j->st.restore_ns_max)
			__atomic_store_n(&j->st.restore_ns_max, d, __ATOMIC_RELAXED);
		bump(&j->st.restores, 1);
	}
	/* Every run lost so far is below N (a loss while LIVE re-arms; one while not LIVE at or
	 * after N was refused above): the books are whole, also after losses during a first join. */
	hc_books_clear_suspect(b);
	if (j->hooks.restored)
		j->hooks.restored(j->hooks.ctx);
	__atomic_store_n(&j->state, HC_JOIN_LIVE, __ATOMIC_RELEASE);
}

/* The first sequence the ring holds, or (empty) the next one the feed will deliver. */
static uint64_t ring_start(const struct hc_join *j)
{
	uint64_t held = j->head < j->cap ? j->head : j->cap;
	if (held)
		return j->ring[(j->head - held) % j->cap].seq;
	return j->st.lost_upto > j->floor_seq ? j->st.lost_upto : j->floor_seq;
}

/* The data thread has the books from here on (READY acquired). */
static void splice(struct hc_join *j, struct hc_books *b)
{
	uint64_t n = j->st.snapshot_next;
	uint64_t reached = j->head ? j->last_seq + 1 : j->floor_seq; /* next the feed delivers */
	if (j->st.lost_upto > reached)
		reached = j->st.lost_upto;
	if (j->feed_next > reached) /* heartbeats / End of Session name it with nothing to buffer */
		reached = j->feed_next;
	if (j->st.lost_upto > n) { /* a run at or after N is missing from the ring */
		bump(&j->st.lost_after_n, 1);
		go_behind(j);
		return;
	}
	if (n > reached)
		return; /* N is ahead of the packets still on their way: wait for them */
	uint64_t start = ring_start(j);
	if (n < j->floor_seq || start > n) {
		j->st.stale += n < j->floor_seq;
		if (j->hooks.hole) {
			j->st.hole_first = j->st.hole_next = n;
			j->st.hole_end = start;
			__atomic_store_n(&j->state, HC_JOIN_HOLE, __ATOMIC_RELEASE);
			if (j->hooks.hole(j->hooks.ctx, n, start) == 0) {
				bump(&j->st.holes, 1);
				return;
			}
		}
		go_behind(j);
		return;
	}
	finish(j, b, n);
}

void hc_join_hole_msg(struct hc_join *j, struct hc_books *b, uint64_t seq, const uint8_t *msg,
		      uint32_t len)
{
	if (hc_join_state(j) != HC_JOIN_HOLE || seq != j->st.hole_next)
		return;
	hc_books_feed_msg(b, msg, len);
	bump(&j->st.hole_next, 1);
	bump(&j->st.hole_messages, 1);
}

void hc_join_hole_done(struct hc_join *j, struct hc_books *b, int ok)
{
	if (hc_join_state(j) != HC_JOIN_HOLE)
		return;
	uint64_t end = j->st.hole_end;
	if (!ok || j->st.hole_next != end) {
		bump(&j->st.holes_failed, 1);
		go_behind(j);
		return;
	}
	bump(&j->st.holes_filled, 1);
	if (j->st.lost_upto > end) {
		bump(&j->st.lost_after_n, 1);
		go_behind(j);
		return;
	}
	if (ring_start(j) > end) { /* the ring overwrote its start meanwhile */
		go_behind(j);
		return;
	}
	finish(j, b, end);
}

void hc_join_note_next(struct hc_join *j, uint64_t next)
{
	j->feed_next = next;
}

void hc_join_note_lost(struct hc_join *j, uint64_t end)
{
	if (end > j->st.lost_upto)
		__atomic_store_n(&j->st.lost_upto, end, __ATOMIC_RELAXED);
}

void hc_join_poll(struct hc_join *j, struct hc_books *b)
{
	if (hc_join_state(j) == HC_JOIN_READY)
		splice(j, b);
}

int hc_join_buffering(struct hc_join *j, struct hc_books *b)
{
	int s = hc_join_state(j);
	if (__builtin_expect(s == HC_JOIN_LIVE, 1))
		return 0;
	if (s == HC_JOIN_READY) {
		splice(j, b);
		return hc_join_state(j) != HC_JOIN_LIVE;
	}
	return 1;
}

void hc_join_rearm(struct hc_join *j, uint64_t applied_next)
{
	j->head = 0;
	j->floor_seq = applied_next;
	j->dirty = 1;
	j->rearmed = 1;
	j->feed_next = 0;
	j->st.lost_upto = 0;
	bump(&j->st.rearms, 1);
	j->st.armed_ns = hc_now_mono_ns();
	j->st.first_packet_ns = j->st.ready_ns = j->st.live_ns = 0;
	__atomic_store_n(&j->state, HC_JOIN_BUFFERING, __ATOMIC_RELEASE);
}

static int loader_owns(const struct hc_join *j)
{
	int s = hc_join_state(j);
	return s == HC_JOIN_BUFFERING || s == HC_JOIN_BEHIND;
}

int hc_join_load_begin(struct hc_join *j, struct hc_books *b)
{
	if (!loader_owns(j))
		return -EBUSY;
	if (j->dirty) {
		hc_books_clear(b);
		j->st.clears++;
	}
	j->dirty = 1;
	j->st.loads++;
	j->st.load_start_ns = hc_now_mono_ns();
	j->st.load_end_ns = 0;
	return 0;
}

int hc_join_load_msg(struct hc_join *j, struct hc_books *b, const uint8_t *msg, uint32_t len)
{
	j->st.load_messages++;
	return hc_books_feed_msg(b, msg, len);
}

int hc_join_hand_over(struct hc_join *j, uint64_t next_seq)
{
	if (!loader_owns(j))
		return -EBUSY;
	j->st.snapshot_next = next_seq;
	j->st.ready_ns = hc_now_mono_ns();
	__atomic_store_n(&j->state, HC_JOIN_READY, __ATOMIC_RELEASE);
	return 0;
}

int hc_soup_load(struct hc_join *j, struct hc_books *b, struct hc_soup_stats *st,
		 const uint8_t *p, size_t len, size_t *used, uint64_t *next_seq)
{
	size_t off = 0;
	int r = HC_SOUP_MORE;
	while (len - off >= 2) {
		uint32_t n = hc_be16(p + off);
		if (n == 0) {
			st->bad_length++;
			r = HC_SOUP_CLOSE;
			break;
		}
		if (len - off - 2 < n)
			break; /* the rest of this packet is still on its way */
		uint8_t type = p[off + 2];
		const uint8_t *pl = p + off + 3;
		uint32_t pn = n - 1;
		off += 2 + (size_t)n;
		st->packets++;
		if (type == 'S') {
			st->sequenced++;
			if (pn && pl[0] == HC_GLIMPSE_END) { /* no ITCH 5.0 message has type G */
				if (hc_glimpse_end_parse(pl, pn, next_seq)) {
					st->bad_end++;
					r = HC_SOUP_CLOSE;
				} else {
					j->st.load_end_ns = hc_now_mono_ns();
					r = HC_SOUP_END;
				}
				break;
			}
			if (pn > 64) {
				st->oversize++;
				continue;
			}
			hc_join_load_msg(j, b, pl, pn);
		} else if (type == 'H') {
			st->heartbeats++;
		} else if (type == '+') {
			st->debug++;
		} else if (type == 'U') {
			st->unsequenced++;
		} else if (type == 'Z') {
			st->end_of_session++;
			r = HC_SOUP_CLOSE;
			break;
		} else {
			st->unknown_type++;
			r = HC_SOUP_CLOSE;
			break;
		}
	}
	j->st.load_bytes += off;
	*used = off;
	return r;
}
