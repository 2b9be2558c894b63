/* ptrace_seize PID: PTRACE_SEIZE (no stop; the tracee is released when the probe exits).
 * Prints "OK seized" or "ERR <ERRNO> seize". */
#include "probe.h"
#include <sys/ptrace.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		probe_usage("ptrace_seize PID");
	if (ptrace(PTRACE_SEIZE, probe_pid(argv[1]), NULL, NULL) != 0)
		probe_err("seize");
	printf("OK seized\n");
	return 0;
}
