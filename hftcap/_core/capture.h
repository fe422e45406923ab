/* capture.h: the receive paths. AF_XDP (UMEM, fill/completion/RX rings through libxdp, the
 * XDP program from the embedded skeleton, attached through a bpf_link) or an ordinary
 * kernel UDP socket (recvmmsg, SO_TIMESTAMPING), both feeding the same consumer in a
 * native thread. Every function returns 0 or -errno; on failure *stage names the step. */
#ifndef HC_CAPTURE_H
#define HC_CAPTURE_H

#include <stdint.h>
#include <net/if.h>
#include "feed.h"
#include "recovery.h"

enum { HC_PATH_XDP = 0, HC_PATH_KERNEL = 1 };
enum { HC_XDPM_AUTO = 0, HC_XDPM_NATIVE = 1, HC_XDPM_GENERIC = 2 };
enum { HC_BIND_AUTO = 0, HC_BIND_ZEROCOPY = 1, HC_BIND_COPY = 2 };
enum { HC_POLL_WAKEUP = 0, HC_POLL_BUSY = 1 };

struct hc_capture_cfg {
	int path, xdp_mode, bind_mode, poll_mode;
	int cpu;                /* pin the data thread; -1 = no pinning */
	int ifindex;
	char ifname[IF_NAMESIZE];
	uint32_t queue;         /* the one RX queue to bind, when nqueues == 0 */
	uint32_t nqueues;       /* bind these queues, one AF_XDP socket each (e.g. every queue) */
	uint32_t queues[HC_MAX_QUEUES];
	uint32_t nfeeds;
	uint32_t group_be[HC_MAX_FEEDS];
	uint16_t port_be[HC_MAX_FEEDS];
	/* B lines (listen --feed-b): bit i of ab_mask set = feed i also arrives on group_b/port_b,
	 * merged with its A line by recovery.c (which must then be configured). */
	uint64_t ab_mask;
	uint32_t group_b_be[HC_MAX_FEEDS];
	uint16_t port_b_be[HC_MAX_FEEDS];
	uint64_t max_packets;
	int want_hw_ts;         /* try the device-bound program with the RX-timestamp kfunc */
	int tai_clock;          /* XDP program reads CLOCK_TAI (kernel >= 6.1), else MONOTONIC */
	int busy_poll_us;       /* SO_BUSY_POLL for busy mode */
	int timing;             /* record per-hop histograms */
	int stamp;              /* the consumer's stamps: HC_STAMP_TSC, HC_STAMP_CLOCK (hc_time.h), or HC_STAMP_AUTO:
				 * the TSC when it is invariant, else CLOCK_TAI */
	int phc_is_tai;         /* the NIC PHC is synced to CLOCK_TAI (phc2sys) */
	uint64_t itch_epoch_tai_ns; /* CLOCK_TAI of the ITCH timestamps' midnight; 0 = unknown */
	int books;              /* decode ITCH and keep order books */
	uint64_t expected_orders; /* order pool sized up front */
	uint32_t capture_frames; /* listen --write, AF_XDP: UMEM frames (over all queues) beyond the
				  * usual ones, held while the writer copies them (pcapng.h) */
	int warm_books;         /* AF_XDP busy polling: hc_books_warm while the rings are empty */
	int rcvbuf;             /* kernel path: SO_RCVBUF(FORCE) of the feed sockets; 0 = 16 MiB */
	int recovery;           /* sequence through recovery.c with the settings below */
	struct hc_recov_cfg recov;
};

struct hc_capture_info {
	int xdp_mode;           /* obtained: HC_XDPM_NATIVE or HC_XDPM_GENERIC */
	int bind_mode;          /* obtained: HC_BIND_ZEROCOPY or HC_BIND_COPY */
	int hw_program;         /* 1 = device-bound program with the kfunc is loaded */
	int hw_program_err;     /* -errno of the device-bound load when it failed */
	int hw_ts_socket;       /* kernel path: SO_TIMESTAMPING accepted hardware flags */
	uint32_t prog_id;
	int tai_offset_s;       /* kernel TAI - UTC offset used to map software stamps */
};

struct hc_capture;

int hc_capture_open(const struct hc_capture_cfg *cfg, struct hc_capture **out, const char **stage);
int hc_capture_start(struct hc_capture *c);
void hc_capture_stop(struct hc_capture *c);
int hc_capture_done(struct hc_capture *c);
void hc_capture_close(struct hc_capture *c);
const struct hc_capture_info *hc_capture_info(struct hc_capture *c);
const struct hc_consumer *hc_capture_consumer(struct hc_capture *c);
struct hc_books *hc_capture_books(struct hc_capture *c); /* NULL without books */
/* Late join (join.h): the data thread buffers into j until a snapshot is handed over. Before
 * hc_capture_start; -EINVAL without books. j must outlive the capture's data thread. */
struct hc_join;
int hc_capture_set_join(struct hc_capture *c, struct hc_join *j);
/* Stop the data thread and hand the books over to the caller (who frees them). */
struct hc_books *hc_capture_take_books(struct hc_capture *c);
/* The same for the table of hftcap Book Snapshots (snap.h); NULL without books. */
struct hc_snap_table *hc_capture_snaps(struct hc_capture *c);
struct hc_snap_table *hc_capture_take_snaps(struct hc_capture *c);
int hc_capture_xdp_stats(struct hc_capture *c, uint64_t out[HC_XDP_NSTATS]);
/* Ask the data thread to clear its histograms before its next sample. */
void hc_capture_reset_hists(struct hc_capture *c);
/* Data-thread errors (poll, recvmmsg) counted while running. */
uint64_t hc_capture_io_errors(struct hc_capture *c);
/* CPU time the data thread used, summed over its runs (valid after hc_capture_stop). */
uint64_t hc_capture_thread_cpu_ns(struct hc_capture *c);

/* listen --write: the data thread copies every packet into ring (pcapng.h); before start. */
struct hc_capring;
struct hc_xsk_drops;
int hc_capture_set_ring(struct hc_capture *c, struct hc_capring *ring);
/* The AF_XDP sockets' XDP_STATISTICS drop counters, summed, or on the kernel path the feed
 * sockets' drops (SO_MEMINFO's SK_MEMINFO_DROPS: the socket's sk_drops, what /proc/net/udp
 * shows as drops), summed (hc_xsk_drops_fn of pcapng.h). */
int hc_capture_xsk_drops(void *arg, struct hc_xsk_drops *out);
/* The consumer's stamp clock and its calibration (hc_time.h). */
const struct hc_clock *hc_capture_clock(struct hc_capture *c);
/* The recovery state (recovery.h), NULL when not configured. */
struct hc_recov *hc_capture_recov(struct hc_capture *c);

/* The XDP program already on ifindex, if any: *prog_id = 0 when none. */
int hc_xdp_query(int ifindex, uint32_t *prog_id, int *mode);
int hc_prog_name(uint32_t prog_id, char *name, size_t len);

#endif
