/* vm_readv PID: process_vm_readv of 16 bytes at the target's first mapping.
 * Prints "OK read=16" or "ERR <ERRNO> process_vm_readv". */
#include "probe.h"
#include <sys/uio.h>

int main(int argc, char **argv)
{
	char buf[16];
	if (argc != 2)
		probe_usage("vm_readv PID");
	pid_t pid = probe_pid(argv[1]);
	struct iovec local = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct iovec remote = { .iov_base = (void *)probe_first_address(pid), .iov_len = sizeof(buf) };
	ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
	if (n < 0)
		probe_err("process_vm_readv");
	printf("OK read=%zd\n", n);
	return 0;
}
