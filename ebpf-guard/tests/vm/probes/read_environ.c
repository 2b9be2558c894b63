/* read_environ PID|self [NEEDLE]: reads /proc/PID/environ.
 * Prints "OK bytes=N [FOUND|NOTFOUND]" or "ERR <ERRNO> open|read". */
#include "probe.h"

int main(int argc, char **argv)
{
	char path[64];
	int found = 0;
	if (argc < 2 || argc > 3)
		probe_usage("read_environ PID|self [NEEDLE]");
	if (strcmp(argv[1], "self") == 0)
		snprintf(path, sizeof(path), "/proc/self/environ");
	else
		snprintf(path, sizeof(path), "/proc/%d/environ", probe_pid(argv[1]));
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		probe_err("open");
	long n = probe_read_all(fd, argc == 3 ? argv[2] : NULL, &found);
	if (n < 0)
		probe_err("read");
	printf("OK bytes=%ld%s\n", n, argc == 3 ? (found ? " FOUND" : " NOTFOUND") : "");
	return 0;
}
