/* bpfstats.c: see bpfstats.h. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include "bpfstats.h"

int hc_bpf_enable_stats(void)
{
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	return fd < 0 ? -errno : fd;
}

int hc_bpf_prog_run_stats(uint32_t prog_id, uint64_t *run_time_ns, uint64_t *run_cnt)
{
	int fd = bpf_prog_get_fd_by_id(prog_id);
	if (fd < 0)
		return -errno;
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	/* bpf_obj_get_info_by_fd: Debian 12's libbpf 1.1 predates bpf_prog_get_info_by_fd */
	int err = bpf_obj_get_info_by_fd(fd, &info, &len) ? -errno : 0;
	close(fd);
	if (!err) {
		*run_time_ns = info.run_time_ns;
		*run_cnt = info.run_cnt;
	}
	return err;
}
