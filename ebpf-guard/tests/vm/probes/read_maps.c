/* read_maps PID: reads /proc/PID/maps. Prints "OK bytes=N" or "ERR <ERRNO> open|read". */
#include "probe.h"

int main(int argc, char **argv)
{
	char path[64];
	int found;
	if (argc != 2)
		probe_usage("read_maps PID");
	snprintf(path, sizeof(path), "/proc/%d/maps", probe_pid(argv[1]));
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		probe_err("open");
	long n = probe_read_all(fd, NULL, &found);
	if (n < 0)
		probe_err("read");
	printf("OK bytes=%ld\n", n);
	return 0;
}
