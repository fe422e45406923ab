/* hc_send.h: what the senders (sender.c, replay.c) do when a send call fails. */
#ifndef HC_SEND_H
#define HC_SEND_H
#include <errno.h>
#include <stdint.h>

/* After a send()/sendmmsg() that returned -1: 0 on EINTR (send the same datagrams again); else
 * the first datagram of the rest was refused: it is counted, its errno kept, and 1 (skip it). */
static inline int hc_send_refused(uint64_t *send_errors, int *last_errno)
{
	if (errno == EINTR)
		return 0;
	(*send_errors)++;
	*last_errno = errno;
	return 1;
}
#endif
