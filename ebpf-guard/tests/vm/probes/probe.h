/* Shared helpers of the vm-test probes. Every probe prints exactly one result line:
 *   OK <facts>        the access worked (exit 0)
 *   ERR <ERRNO> ...   the access failed, e.g. "ERR EACCES" (exit 1)
 * and never prints what it read: only byte counts and FOUND/NOTFOUND for a needle, so a test
 * can assert that a canary appears in no output. Usage errors exit 2. */
#ifndef VMTEST_PROBE_H
#define VMTEST_PROBE_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static inline __attribute__((noreturn)) void probe_err(const char *what)
{
	const char *name = strerrorname_np(errno);
	printf("ERR %s %s\n", name ? name : "EUNKNOWN", what);
	exit(1);
}

static inline __attribute__((noreturn)) void probe_usage(const char *usage)
{
	fprintf(stderr, "usage: %s\n", usage);
	exit(2);
}

static inline pid_t probe_pid(const char *arg)
{
	char *end;
	long pid = strtol(arg, &end, 10);
	if (*arg == '\0' || *end != '\0' || pid <= 0)
		probe_usage("PID must be a positive number");
	return (pid_t)pid;
}

/* Reads a whole file descriptor, counting bytes and looking for needle (may be NULL).
 * Returns -1 with errno set on a read error. The content is never printed. */
static inline long probe_read_all(int fd, const char *needle, int *found)
{
	static char buf[1 << 20];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf))
			break;
	}
	*found = needle && *needle && memmem(buf, len, needle, strlen(needle)) != NULL;
	memset(buf, 0, len);
	return (long)len;
}

/* The start address of the target's first mapping (from /proc/PID/maps), or a fallback
 * (0x400000, where a static non-PIE binary is mapped) when maps cannot be read. */
static inline unsigned long probe_first_address(pid_t pid)
{
	char path[64], line[256];
	unsigned long start = 0x400000;
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	if (!maps)
		return start;
	if (fgets(line, sizeof(line), maps))
		start = strtoul(line, NULL, 16);
	fclose(maps);
	return start;
}

#endif
