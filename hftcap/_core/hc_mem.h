/* hc_mem.h: a big anonymous mapping (zeroed) that asks for transparent huge pages, for memory
 * hit at random by the data path (the books' window, pool and table; the AF_XDP UMEM): a cold
 * access then costs one cache miss, not a page walk too. populate: fault it all in now, since
 * a huge-page fault zeroes 2 MiB and may compact memory, which must not happen on the data
 * path. NULL with errno set when the mapping fails; free with munmap. */
#ifndef HC_MEM_H
#define HC_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

static inline void *hc_map_huge(size_t bytes, int populate)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	if (bytes >= (2u << 20))
		madvise(p, bytes, MADV_HUGEPAGE);
#endif
	if (populate)
		for (size_t i = 0; i < bytes; i += 4096)
			((volatile uint8_t *)p)[i] = 0;
	return p;
}

#endif
