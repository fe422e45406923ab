/* hc_thread.h: pinning a thread to one CPU, shared by the threads the data plane starts (the
 * data thread, the capture writer, the floor's receiver and its cache-line pair). */
#ifndef HC_THREAD_H
#define HC_THREAD_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>

/* Pin thread t to CPU cpu: 0 or -errno (-EINVAL for a CPU outside cpu_set_t or outside the
 * process's allowed set). */
static inline int hc_pin_thread(pthread_t t, int cpu)
{
	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -EINVAL;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(t, sizeof(set), &set);
}

#endif
