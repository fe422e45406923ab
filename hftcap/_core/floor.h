/* floor.h: the floor of the machine, measured with the least code that can receive or send a
 * packet, so hftcap's own paths can be read against it in the same lab and the same run.
 *
 * Sender: one datagram per send(), CLOCK_TAI stamped immediately before the call into the
 * payload ([u64 LE sequence][u64 LE CLOCK_TAI ns][zeros]), paced on absolute CLOCK_MONOTONIC
 * deadlines; it records the time from the stamp to the return of send() per packet.
 * Receivers, each spinning in one pinned thread and stamping CLOCK_TAI when it takes a packet:
 *   - AF_XDP: the program of xdp/floor.bpf.c (parse, stamp, redirect), copy or zero-copy bind,
 *     the consumer peeks, stamps, reads the two stamps and gives the frame back;
 *   - kernel socket: a UDP socket joined to the group, recvmsg(MSG_DONTWAIT) in a loop, with
 *     the SO_TIMESTAMPING software RX stamp.
 * Hops (all CLOCK_TAI; the socket's software stamp is CLOCK_REALTIME mapped by the kernel's
 * TAI offset) are in enum hc_floor_hop. Returns 0 or -errno; *stage names the failed step. */
#ifndef HC_FLOOR_H
#define HC_FLOOR_H

#include <stdint.h>
#include <net/if.h>
#include "hist.h"

#define HC_FLOOR_HDR_LEN 16 /* sequence + send stamp at the start of the payload */

enum { HC_FLOOR_XDP = 0, HC_FLOOR_KERNEL = 1 };

enum hc_floor_hop {
	HC_FLOOR_SEND_TO_XDP,   /* sender's stamp -> XDP program's stamp */
	HC_FLOOR_XDP_TO_APP,    /* XDP program's stamp -> consumer took the descriptor */
	HC_FLOOR_STACK_TO_APP,  /* SO_TIMESTAMPING software stamp -> recvmsg returned */
	HC_FLOOR_SEND_TO_APP,   /* sender's stamp -> the receiver took the packet */
	HC_FLOOR_NHOPS,
};
extern const char *const hc_floor_hop_names[HC_FLOOR_NHOPS];

struct hc_floor_rx_cfg {
	int kind;              /* HC_FLOOR_XDP or HC_FLOOR_KERNEL */
	int ifindex;
	char ifname[IF_NAMESIZE];
	uint32_t group_be;     /* IPv4 multicast group, network order */
	uint16_t port_be;
	int cpu;               /* pin the receiving thread; -1 = no pinning */
	int zerocopy;          /* XDP: 1 = zero-copy bind, 0 = copy mode */
	int native;            /* XDP: 1 = driver mode, 0 = generic (skb) mode */
};

struct hc_floor_rx_stats {
	uint64_t packets;      /* floor datagrams taken */
	uint64_t bad;          /* shorter than the floor header, or not IPv4/UDP */
	uint64_t unstamped;    /* XDP: frame without the program's stamp */
	uint64_t seq_gaps;     /* datagrams missing between consecutive sequence numbers */
	uint64_t io_errors;
	uint64_t negative[HC_FLOOR_NHOPS]; /* later stamp before the earlier one */
	uint32_t prog_id;      /* XDP: the floor program's id (for its run-time statistics) */
};

struct hc_floor_rx;

int hc_floor_rx_open(const struct hc_floor_rx_cfg *cfg, struct hc_floor_rx **out,
		     const char **stage);
int hc_floor_rx_start(struct hc_floor_rx *r);
void hc_floor_rx_stop(struct hc_floor_rx *r);
void hc_floor_rx_close(struct hc_floor_rx *r);
/* Ask the receiving thread to clear its histograms before its next packet (warm-up). */
void hc_floor_rx_reset(struct hc_floor_rx *r);
/* HC_FLOOR_NHOPS histograms, written by the receiving thread. */
const struct hc_hist *hc_floor_rx_hists(const struct hc_floor_rx *r);
void hc_floor_rx_stats(const struct hc_floor_rx *r, struct hc_floor_rx_stats *st);

struct hc_floor_tx_cfg {
	uint64_t packets;        /* datagrams to send, >= 1 */
	double rate_pps;         /* > 0 */
	uint32_t payload_len;    /* UDP payload bytes, HC_FLOOR_HDR_LEN..1472 */
	uint64_t max_duration_ns;
	uint64_t spin_ns;        /* busy-wait the last spin_ns before each deadline */
};

struct hc_floor_tx_stats {
	uint64_t sent, errors;
	int last_errno;
	uint64_t elapsed_ns;     /* CLOCK_MONOTONIC, first to last send */
	struct hc_hist stamp_to_return; /* CLOCK_TAI: stamp -> send() returned */
};

/* Sends on a connected UDP socket until cfg->packets, the time bound or *stop. */
int hc_floor_send(int fd, const struct hc_floor_tx_cfg *cfg, struct hc_floor_tx_stats *st,
		  const int *stop);

/* A cache line between two CPUs: what a line written on one CPU costs to read on another (the
 * receive path's frame, written by the CPU that ran the NIC queue's or veth's receive and read
 * by the data thread). Two threads, pinned to cpu_a and cpu_b, bounce two 64-byte lines (each
 * written by one side, read by the other); the thread on cpu_b times batches of per_batch
 * round trips with CLOCK_MONOTONIC (one clock read per batch, not per trip). batch_ns[i]: the
 * i-th batch's time; one way is half a round trip. A first batch warms up and is not kept.
 * Bounded by batches x per_batch round trips and by max_ns: a stalled peer (the host
 * preempting a vCPU) ends it with -ETIMEDOUT, *done saying how many batches were kept.
 * Returns 0, -EINVAL (same CPU, no batch, no time), or -errno of pinning (a CPU that is not
 * ours). */
struct hc_floor_line_cfg {
	int cpu_a, cpu_b;
	uint32_t batches, per_batch;
	uint64_t max_ns;
};
int hc_floor_line(const struct hc_floor_line_cfg *cfg, uint64_t *batch_ns, uint32_t *done);

#endif
