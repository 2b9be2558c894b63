/* pidfd_getfd PID FD: pidfd_open(PID) then pidfd_getfd(FD).
 * Prints "OK fd=N" or "ERR <ERRNO> pidfd_open|pidfd_getfd". */
#include "probe.h"
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		probe_usage("pidfd_getfd PID FD");
	pid_t pid = probe_pid(argv[1]);
	int target_fd = atoi(argv[2]);
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		probe_err("pidfd_open");
	int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
	if (fd < 0)
		probe_err("pidfd_getfd");
	printf("OK fd=%d\n", fd);
	return 0;
}
