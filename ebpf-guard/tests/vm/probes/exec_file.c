/* exec_file PATH [ARGS...]: execv(PATH). On success PATH runs (and prints what it prints);
 * on failure prints "ERR <ERRNO> execve". */
#include "probe.h"

int main(int argc, char **argv)
{
	if (argc < 2)
		probe_usage("exec_file PATH [ARGS...]");
	execv(argv[1], argv + 1);
	probe_err("execve");
}
