/* replay.h: `hftcap exchange --file CAPTURE.pcapng`: send recorded datagrams again at their
 * recorded pace. The schedule is records of [u64 LE ns after the first][u32 LE len][bytes],
 * the same layout hc_sender_build() writes; deadlines are divided by speed and kept absolute
 * on CLOCK_MONOTONIC from the start (no drift): sleep, then spin the last 50 us, then
 * sendmmsg every datagram that is due. Returns 0 or -errno; refusals are counted. */
#ifndef HC_REPLAY_H
#define HC_REPLAY_H

#include <stddef.h>
#include <stdint.h>

struct hc_replay_stats {
	uint64_t packets_sent, bytes_sent, send_errors;
	int last_errno;
	uint64_t elapsed_ns;   /* CLOCK_MONOTONIC, first to last datagram */
	uint64_t late_max_ns;  /* worst lateness against a deadline */
	uint64_t batches;
	int stopped;           /* 1 = stop flag or max_ns cut it short */
};

/* -EINVAL when a record runs past the end of the schedule. */
int64_t hc_replay_count(const uint8_t *sched, size_t len);
int hc_replay_run(int fd, const uint8_t *sched, size_t len, double speed, uint64_t max_ns,
		  const int *stop, struct hc_replay_stats *st);

#endif
