/* read_mem PID: opens /proc/PID/mem and reads 16 bytes at the first mapping.
 * Prints "OK read=16" or "ERR <ERRNO> open|read". */
#include "probe.h"

int main(int argc, char **argv)
{
	char path[64], buf[16];
	if (argc != 2)
		probe_usage("read_mem PID");
	pid_t pid = probe_pid(argv[1]);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		probe_err("open");
	ssize_t n = pread(fd, buf, sizeof(buf), (off_t)probe_first_address(pid));
	if (n < 0)
		probe_err("read");
	printf("OK read=%zd\n", n);
	return 0;
}
