/* guard_links: detaches and re-attaches the guard's pinned programs in milliseconds, so the
 * overhead benchmark can alternate "with" and "without the guard" many times in one guest
 * without reloading anything (maps, lineages and registrations stay as they are).
 *
 * guard_links park LINKDIR PARKDIR
 *   For every pinned link in LINKDIR (the agent's <pin-dir>/links): pins the link's program
 *   at PARKDIR/<name>, then removes the link pin. With no other holder the link is released,
 *   which detaches the program: the kernel runs without the guard.
 * guard_links attach PARKDIR LINKDIR
 *   For every parked program: attaches it again (BPF_RAW_TRACEPOINT_OPEN, which re-attaches
 *   LSM and BTF tracepoint programs to the hook they were loaded for), pins the new link at
 *   LINKDIR/<name> and removes the parked pin.
 * Prints "OK parked=N" / "OK attached=N", or "ERR <ERRNO> <what>" and exits 1. */
#include "probe.h"
#include <dirent.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int obj_get(const char *path)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)path;
	return sys_bpf(BPF_OBJ_GET, &attr);
}

static int obj_pin(int fd, const char *path)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.bpf_fd = (uint32_t)fd;
	attr.pathname = (uint64_t)(uintptr_t)path;
	return sys_bpf(BPF_OBJ_PIN, &attr);
}

/* The program behind a link fd, as a new fd. */
static int link_program(int link_fd)
{
	struct bpf_link_info info;
	union bpf_attr attr;
	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)link_fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = (uint64_t)(uintptr_t)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0)
		return -1;
	memset(&attr, 0, sizeof(attr));
	attr.prog_id = info.prog_id;
	return sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
}

static int attach_program(int prog_fd)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.raw_tracepoint.name = 0; /* LSM and tp_btf programs know their hook */
	attr.raw_tracepoint.prog_fd = (uint32_t)prog_fd;
	return sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attr);
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "park") != 0 && strcmp(argv[1], "attach") != 0))
		probe_usage("guard_links park LINKDIR PARKDIR | guard_links attach PARKDIR LINKDIR");
	int park = strcmp(argv[1], "park") == 0;
	const char *from = argv[2], *to = argv[3];
	if (mkdir(to, 0700) < 0 && errno != EEXIST)
		probe_err("mkdir");
	DIR *dir = opendir(from);
	if (!dir)
		probe_err("opendir");
	int count = 0;
	struct dirent *entry;
	char src[512], dst[512];
	while ((entry = readdir(dir))) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(src, sizeof(src), "%s/%s", from, entry->d_name);
		snprintf(dst, sizeof(dst), "%s/%s", to, entry->d_name);
		int fd = obj_get(src);
		if (fd < 0)
			probe_err("obj_get");
		int other = park ? link_program(fd) : attach_program(fd);
		if (other < 0)
			probe_err(park ? "link_program" : "attach");
		if (obj_pin(other, dst) < 0)
			probe_err("obj_pin");
		/* Parking: the link goes once its last holder (this fd, then the pin) is gone. */
		close(fd);
		close(other);
		if (unlink(src) < 0)
			probe_err("unlink");
		count++;
	}
	closedir(dir);
	printf("OK %s=%d\n", park ? "parked" : "attached", count);
	return 0;
}
