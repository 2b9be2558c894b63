/* bpf_map: reads and fills the guard's pinned hash maps (the state a scenario cannot reach
 * through the agent).
 *
 *   bpf_map fill PIN            inserts keys 0x40000000, 0x40000001, ... (above any pid, so
 *                               never a real tgid) with all-ones values until the kernel
 *                               refuses with E2BIG (map full) -> "OK filled=N"
 *   bpf_map u32 PIN KEY OFFSET  looks up KEY (decimal; a u32 or u64 as the map's key is) and
 *                               prints the u32 at byte OFFSET of its value -> "OK u32=N"
 *                               (ERR ENOENT lookup if absent)
 *
 * PIN is a map pinned on bpffs, e.g. /sys/fs/bpf/strongroom/maps/lineage. */
#include "probe.h"
#include <linux/bpf.h>
#include <stdint.h>
#include <sys/syscall.h>

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static int map_open(const char *pin, struct bpf_map_info *info)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uint64_t)(uintptr_t)pin;
	int fd = sys_bpf(BPF_OBJ_GET, &attr);
	if (fd < 0)
		probe_err("obj_get");
	memset(info, 0, sizeof(*info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)fd;
	attr.info.info_len = sizeof(*info);
	attr.info.info = (uint64_t)(uintptr_t)info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0)
		probe_err("get_info");
	if (info->key_size > 8 || info->value_size > 4096) {
		errno = EINVAL;
		probe_err("map layout");
	}
	return fd;
}

static int map_op(int cmd, int fd, const void *key, void *value, uint64_t flags)
{
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.map_fd = (uint32_t)fd;
	attr.key = (uint64_t)(uintptr_t)key;
	attr.value = (uint64_t)(uintptr_t)value;
	attr.flags = flags;
	return sys_bpf(cmd, &attr);
}

static int fill(const char *pin)
{
	struct bpf_map_info info;
	int fd = map_open(pin, &info);
	if (info.type != BPF_MAP_TYPE_HASH || (info.key_size != 4 && info.key_size != 8)) {
		errno = EINVAL;
		probe_err("map type");
	}
	unsigned char value[4096];
	memset(value, 0xff, sizeof(value));
	uint64_t filled = 0;
	for (uint64_t n = 0x40000000; n < 0x40000000 + (uint64_t)info.max_entries + 1; n++) {
		uint32_t k32 = (uint32_t)n;
		const void *key = info.key_size == 4 ? (const void *)&k32 : (const void *)&n;
		if (map_op(BPF_MAP_UPDATE_ELEM, fd, key, value, BPF_NOEXIST) == 0) {
			filled++;
			continue;
		}
		if (errno == E2BIG) {
			printf("OK filled=%llu\n", (unsigned long long)filled);
			return 0;
		}
		if (errno != EEXIST)
			probe_err("update");
	}
	errno = ENOSPC;
	probe_err("map never became full");
}

static int read_u32(const char *pin, const char *key_arg, const char *offset_arg)
{
	struct bpf_map_info info;
	int fd = map_open(pin, &info);
	char *end;
	unsigned long long key = strtoull(key_arg, &end, 10);
	unsigned long offset = strtoul(offset_arg, NULL, 10);
	if (*key_arg == '\0' || *end != '\0' || (info.key_size != 8 && info.key_size != 4) ||
	    (info.key_size == 4 && key > UINT32_MAX) || offset + 4 > info.value_size)
		probe_usage("bpf_map u32 PIN KEY OFFSET (u32/u64 keys, OFFSET+4 within the value)");
	uint64_t k64 = key;
	uint32_t k32 = (uint32_t)key;
	const void *k = info.key_size == 4 ? (const void *)&k32 : (const void *)&k64;
	unsigned char value[4096];
	if (map_op(BPF_MAP_LOOKUP_ELEM, fd, k, value, 0) < 0)
		probe_err("lookup");
	uint32_t v;
	memcpy(&v, value + offset, sizeof(v));
	printf("OK u32=%u\n", v);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "fill") == 0)
		return fill(argv[2]);
	if (argc == 5 && strcmp(argv[1], "u32") == 0)
		return read_u32(argv[2], argv[3], argv[4]);
	probe_usage("bpf_map fill PIN | bpf_map u32 PIN KEY OFFSET");
}
