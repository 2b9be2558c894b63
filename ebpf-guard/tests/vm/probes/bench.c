/* bench open N            : open+close of /proc/self/status, N times
 * bench environ N PID     : open+read+close of /proc/PID/environ, N times
 * bench forkexec N PATH   : fork + execv(PATH) + waitpid, N times
 * Prints "OK BENCH <kind> n=N ns_per_op=X" or "ERR <ERRNO> <kind>". */
#include "probe.h"
#include <sys/wait.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	static char buf[65536];
	if (argc < 3)
		probe_usage("bench open N | bench environ N PID | bench forkexec N PATH");
	const char *kind = argv[1];
	long n = atol(argv[2]);
	if (n <= 0)
		probe_usage("N must be positive");
	char path[64];
	long long start = now_ns();
	if (strcmp(kind, "open") == 0) {
		for (long i = 0; i < n; i++) {
			int fd = open("/proc/self/status", O_RDONLY);
			if (fd < 0)
				probe_err("open");
			close(fd);
		}
	} else if (strcmp(kind, "environ") == 0 && argc == 4) {
		snprintf(path, sizeof(path), "/proc/%d/environ", probe_pid(argv[3]));
		for (long i = 0; i < n; i++) {
			int fd = open(path, O_RDONLY);
			if (fd < 0)
				probe_err("environ");
			if (read(fd, buf, sizeof(buf)) < 0)
				probe_err("environ");
			close(fd);
		}
		memset(buf, 0, sizeof(buf));
	} else if (strcmp(kind, "forkexec") == 0 && argc == 4) {
		for (long i = 0; i < n; i++) {
			pid_t child = fork();
			if (child < 0)
				probe_err("fork");
			if (child == 0) {
				char *args[] = { argv[3], NULL };
				execv(argv[3], args);
				_exit(127);
			}
			int status;
			if (waitpid(child, &status, 0) < 0)
				probe_err("waitpid");
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				errno = ECHILD;
				probe_err("forkexec");
			}
		}
	} else {
		probe_usage("bench open N | bench environ N PID | bench forkexec N PATH");
	}
	long long elapsed = now_ns() - start;
	printf("OK BENCH %s n=%ld ns_per_op=%lld\n", kind, n, elapsed / n);
	return 0;
}
