/* rename_path OLD NEW: rename(2), atomic; replaces NEW even when it is a symlink to a
 * directory (busybox mv would move into it). Used to swap a projected volume's ..data link the
 * way the kubelet's atomic writer rotates a service-account token. Prints "OK" or "ERR ...". */
#include "probe.h"
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		probe_usage("rename_path OLD NEW");
	if (rename(argv[1], argv[2]) != 0)
		probe_err("rename");
	printf("OK renamed\n");
	return 0;
}
