/* src.h: the bytes of an input file, inflated when it is gzip, handed out in spans.
 * A plain regular file is mapped (mmap, MADV_SEQUENTIAL) and handed out in slices of the
 * mapping: no copy; its own thread maps the pages in (MADV_POPULATE_READ) up to 128 MiB ahead
 * of the reader, so the books' thread takes no page fault on the file. A gzip file (or a plain
 * file that cannot be mapped: a pipe) is read by its own thread, which inflates it (ISA-L's igzip when the build found it, zlib otherwise) into
 * a ring of HC_SRC_CHUNKS preallocated chunks of HC_SRC_CHUNK bytes; the reader takes them in
 * order and gives each back by asking for the next. The threads meet once per chunk (a
 * mutex and two condition variables), never per message; nothing is allocated after open.
 * With ISA-L a regular gzip file is mapped too and inflated in place as raw deflate, member by
 * member (headers read by isal_read_gzip_header); each member's CRC-32 and length are checked
 * on the reader's side as it takes the chunks (ISA-L's crc32_gzip_refl), since the inflater is
 * the slower side of a replay; a bad trailer is -EBADMSG after that member's bytes. A pipe, or
 * a build with zlib, inflates with the library's own checks.
 * Concatenated gzip members are read one after the other (as gzip -d does); bytes after the
 * last member that do not start another are ignored. */
#ifndef HC_SRC_H
#define HC_SRC_H

#include <stdint.h>
#include <stddef.h>

#define HC_SRC_CHUNK (1u << 20)
#define HC_SRC_CHUNKS 8

struct hc_src;

/* 0 or -errno (open/mmap/thread failures). */
int hc_src_open(struct hc_src **out, const char *path);
/* The next span; the span returned before goes back to the ring. 1: *p and *len set (len > 0);
 * 0: end of the data; -EBADMSG: the gzip stream is corrupt (bad header, data or checksum);
 * -EPIPE: the file ends inside the gzip stream (truncated); other -errno: read errors. An
 * error is returned once the spans before it have been taken, and again on every later call. */
int hc_src_next(struct hc_src *s, const uint8_t **p, size_t *len);
int hc_src_is_gzip(const struct hc_src *s);
/* A plain regular file mapped whole: hc_src_next never waits (a pipe's or a gzip's may). */
int hc_src_is_mapped(const struct hc_src *s);
/* Bytes of the file read so far (compressed bytes for gzip: the inflater runs ahead). */
uint64_t hc_src_offset(const struct hc_src *s);
/* Decompressed bytes where the error of hc_src_next was found (gzip), else the total handed. */
uint64_t hc_src_out_bytes(const struct hc_src *s);
const char *hc_src_inflater(void); /* "isa-l" or "zlib" */
void hc_src_close(struct hc_src *s);

#endif
