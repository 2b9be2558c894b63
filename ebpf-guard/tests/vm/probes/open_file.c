/* open_file PATH: opens PATH read-only and reads it. Prints "OK bytes=N" (never the content)
 * or "ERR <ERRNO> open|read". */
#include "probe.h"

int main(int argc, char **argv)
{
	int found;
	if (argc != 2)
		probe_usage("open_file PATH");
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0)
		probe_err("open");
	long n = probe_read_all(fd, NULL, &found);
	if (n < 0)
		probe_err("read");
	printf("OK bytes=%ld\n", n);
	return 0;
}
