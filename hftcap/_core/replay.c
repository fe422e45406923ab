/* replay.c: see replay.h. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "replay.h"
#include "hc_send.h"

#define BATCH 64
#define SPIN_NS 50000ull

static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int64_t hc_replay_count(const uint8_t *sched, size_t len)
{
	int64_t n = 0;
	size_t o = 0;
	while (o < len) {
		if (len - o < 12 || len - o - 12 < rd32(sched + o + 8))
			return -EINVAL;
		o += 12 + rd32(sched + o + 8);
		n++;
	}
	return n;
}

int hc_replay_run(int fd, const uint8_t *sched, size_t len, double speed, uint64_t max_ns,
		  const int *stop, struct hc_replay_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (hc_replay_count(sched, len) < 0 || !(speed > 0))
		return -EINVAL;
	struct mmsghdr msg[BATCH];
	struct iovec iov[BATCH];
	const uint64_t t0 = mono_ns();
	uint64_t first = 0, last = 0;
	size_t o = 0;
	while (o < len) {
		uint64_t due = t0 + (uint64_t)((double)rd64(sched + o) / speed);
		if (due - t0 > max_ns || __atomic_load_n(stop, __ATOMIC_RELAXED)) {
			st->stopped = 1;
			break;
		}
		for (;;) { /* sleep to SPIN_NS before the deadline, then spin */
			uint64_t now = mono_ns();
			if (now >= due || __atomic_load_n(stop, __ATOMIC_RELAXED))
				break;
			if (due - now > SPIN_NS) {
				uint64_t to = due - SPIN_NS;
				struct timespec ts = { (time_t)(to / 1000000000ull), (long)(to % 1000000000ull) };
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			}
		}
		/* every record already due goes in one sendmmsg */
		uint64_t now = mono_ns();
		unsigned n = 0;
		while (o < len && n < BATCH) {
			uint64_t d = t0 + (uint64_t)((double)rd64(sched + o) / speed);
			if (d > now)
				break;
			if (now - d > st->late_max_ns)
				st->late_max_ns = now - d;
			uint32_t l = rd32(sched + o + 8);
			iov[n].iov_base = (void *)(sched + o + 12);
			iov[n].iov_len = l;
			memset(&msg[n], 0, sizeof(msg[n]));
			msg[n].msg_hdr.msg_iov = &iov[n];
			msg[n].msg_hdr.msg_iovlen = 1;
			n++;
			o += 12 + l;
		}
		unsigned done = 0;
		while (done < n) {
			int r = sendmmsg(fd, msg + done, n - done, 0);
			st->batches++;
			if (r < 0) {
				if (hc_send_refused(&st->send_errors, &st->last_errno))
					done++; /* skip the refused datagram */
				continue;
			}
			for (int i = 0; i < r; i++)
				st->bytes_sent += msg[done + i].msg_len;
			st->packets_sent += (uint64_t)r;
			done += (unsigned)r;
		}
		last = mono_ns();
		if (!first)
			first = now;
	}
	st->elapsed_ns = first ? last - first : 0;
	if (!st->packets_sent && st->send_errors)
		return -st->last_errno;
	return 0;
}
