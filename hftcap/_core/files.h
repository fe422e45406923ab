/* files.h: offline inputs -> framed ITCH messages -> books.
 * NASDAQ's file layout (u16 BE length + message, repeated; plain or gzip) and pcap / pcapng
 * captures of MoldUDP64 over Ethernet / optional 802.1Q or QinQ VLAN / IPv4 / UDP (also
 * gzip-compressed). The format is detected from the first decompressed bytes. Every
 * malformed unit is a counted drop (struct hc_books_stats.drops); nothing reads past a buffer.
 * MoldUDP64 sequencing uses mold.c; its counters are in hc_reader_mold(). */
#ifndef HC_FILES_H
#define HC_FILES_H

#include <stdint.h>
#include <stddef.h>
#include "book.h"
#include "mold.h"

enum hc_file_format { HC_FMT_NASDAQ = 1, HC_FMT_PCAP = 2, HC_FMT_PCAPNG = 3 };

struct hc_reader;

/* Feed a buffer in NASDAQ layout: applies every complete record and returns the number of
 * bytes consumed. With final != 0 a partial record at the end counts one file_truncated drop
 * and is consumed. books may be NULL to decode only (then *decoded counts messages). */
size_t hc_feed_nasdaq(struct hc_books *b, const uint8_t *p, size_t len, int final);
/* Decode only (benchmark baseline): returns messages decoded, counts drops into drops[]. */
uint64_t hc_decode_nasdaq(const uint8_t *p, size_t len, uint64_t drops[HC_DROP__MAX]);

/* One captured frame (link type 1 = Ethernet) carrying MoldUDP64. */
void hc_feed_frame(struct hc_books *b, struct hc_mold *mold, uint32_t linktype,
		   const uint8_t *f, size_t len);

/* Streaming file reader over hc_src (src.h: a plain file mapped, gzip inflated on its own
 * thread). Units are parsed in place in the spans; only a unit that straddles two spans is
 * copied, and a capture's new MoldUDP64 blocks, once each, into the stage the books are fed
 * from; a mapped capture is parsed on a thread of its own that the reader starts (the framer,
 * stopped and joined by close), a gzip or piped one on the caller's. open: 0 or -errno. step: processes about max_bytes of (decompressed) input;
 * returns 1 while there is more, 0 at end, -errno: -EBADMSG corrupt gzip, -EPIPE truncated
 * gzip (the books keep what came before), other read errors. */
int hc_reader_open(struct hc_reader **out, const char *path);
int hc_reader_step(struct hc_reader *r, struct hc_books *b, size_t max_bytes);
int hc_reader_format(const struct hc_reader *r);
uint64_t hc_reader_offset(struct hc_reader *r); /* bytes of the file on disk read so far */
int hc_reader_gzip(const struct hc_reader *r);
/* After an error: the decompressed offset where the inflater found it. */
uint64_t hc_reader_error_at(const struct hc_reader *r);
const struct hc_mold_stats *hc_reader_mold(const struct hc_reader *r);
void hc_reader_close(struct hc_reader *r);

/* A whole reader replayed on its own thread (hc_reader_step until the end, an error or a
 * stop), so the caller's thread is free meanwhile: the control plane loads what it needs for
 * its output, shows progress and takes signals, and meets the replay only in wait. The reader
 * and the books belong to the job until hc_filejob_free; hc_reader_offset may be read
 * meanwhile. start (step_bytes 0: 8 MiB): 0 or -errno. wait: 1 while it still runs after
 * timeout_ms; then its result: 0 at the end, -errno as hc_reader_step. stop: the thread stops
 * after its current step (wait then gives -EINTR). free: stops, joins, frees; the reader stays
 * open. */
struct hc_filejob;
int hc_filejob_start(struct hc_filejob **out, struct hc_reader *r, struct hc_books *b, size_t step_bytes);
int hc_filejob_wait(struct hc_filejob *j, unsigned timeout_ms);
void hc_filejob_stop(struct hc_filejob *j);
void hc_filejob_free(struct hc_filejob *j);

#endif
