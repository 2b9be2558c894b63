/* ptrace_attach PID: PTRACE_ATTACH, wait for the stop, PTRACE_DETACH.
 * Prints "OK attached" or "ERR <ERRNO> attach". */
#include "probe.h"
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		probe_usage("ptrace_attach PID");
	pid_t pid = probe_pid(argv[1]);
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0)
		probe_err("attach");
	if (waitpid(pid, NULL, __WALL) < 0)
		probe_err("waitpid");
	if (ptrace(PTRACE_DETACH, pid, NULL, NULL) != 0)
		probe_err("detach");
	printf("OK attached\n");
	return 0;
}
