/* bench open N            : open+close of /proc/self/status, N times
 * bench environ N PID     : open+read+close of /proc/PID/environ, N times
 * bench forkexec N PATH   : fork + execv(PATH) + waitpid, N times
 *   Prints "OK BENCH <kind> n=N ns_per_op=X" or "ERR <ERRNO> <kind>".
 * bench serve DIR         : a benchmark server, run as a pod's workload so that the loops run
 *   inside the pod's lineage. Creates the FIFOs DIR/req and DIR/resp, prints
 *   "OK BENCH SERVING", then for each request (one line "<kind> N [ARG]" written to DIR/req)
 *   runs that loop and writes its result line to DIR/resp. A "quit" request ends it. The
 *   client blocks on the FIFOs instead of polling, so it adds no load while a loop runs. */
#include "probe.h"
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define USAGE "bench open N | bench environ N PID | bench forkexec N PATH | bench serve DIR"

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Runs one loop; writes its result line (OK or ERR) into out. Returns 0 on success. */
static int run(const char *kind, long n, const char *arg, char *out, size_t out_len)
{
	static char buf[65536];
	char path[64];
	const char *what = kind;
	if (n <= 0) {
		snprintf(out, out_len, "ERR EINVAL %s n", kind);
		return -1;
	}
	long long start = now_ns();
	if (strcmp(kind, "open") == 0) {
		for (long i = 0; i < n; i++) {
			int fd = open("/proc/self/status", O_RDONLY);
			if (fd < 0)
				goto failed;
			close(fd);
		}
	} else if (strcmp(kind, "environ") == 0 && arg) {
		snprintf(path, sizeof(path), "/proc/%d/environ", probe_pid(arg));
		for (long i = 0; i < n; i++) {
			int fd = open(path, O_RDONLY);
			if (fd < 0)
				goto failed;
			if (read(fd, buf, sizeof(buf)) < 0)
				goto failed;
			close(fd);
		}
		memset(buf, 0, sizeof(buf));
	} else if (strcmp(kind, "forkexec") == 0 && arg) {
		for (long i = 0; i < n; i++) {
			pid_t child = fork();
			if (child < 0) {
				what = "fork";
				goto failed;
			}
			if (child == 0) {
				char *args[] = { (char *)arg, NULL };
				execv(arg, args);
				_exit(127);
			}
			int status;
			if (waitpid(child, &status, 0) < 0) {
				what = "waitpid";
				goto failed;
			}
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				errno = ECHILD;
				goto failed;
			}
		}
	} else {
		snprintf(out, out_len, "ERR EINVAL %s unknown", kind);
		return -1;
	}
	long long elapsed = now_ns() - start;
	snprintf(out, out_len, "OK BENCH %s n=%ld ns_per_op=%lld", kind, n, elapsed / n);
	return 0;
failed:;
	const char *name = strerrorname_np(errno);
	snprintf(out, out_len, "ERR %s %s", name ? name : "EUNKNOWN", what);
	return -1;
}

/* Reads one request line from the FIFO (blocks until a client writes one). */
static int read_request(const char *fifo, char *line, size_t len)
{
	int fd = open(fifo, O_RDONLY);
	if (fd < 0)
		return -1;
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, line + got, len - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == len - 1)
			break;
	}
	close(fd);
	line[got] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return 0;
}

static int serve(const char *dir)
{
	char req[256], resp[256], line[256], out[256];
	snprintf(req, sizeof(req), "%s/req", dir);
	snprintf(resp, sizeof(resp), "%s/resp", dir);
	if ((mkfifo(req, 0600) < 0 && errno != EEXIST) || (mkfifo(resp, 0600) < 0 && errno != EEXIST))
		probe_err("mkfifo");
	printf("OK BENCH SERVING\n");
	fflush(stdout);
	for (;;) {
		if (read_request(req, line, sizeof(line)) < 0)
			probe_err("read request");
		if (line[0] == '\0')
			continue;
		if (strcmp(line, "quit") == 0)
			return 0;
		char *kind = strtok(line, " ");
		char *count = strtok(NULL, " ");
		char *arg = strtok(NULL, " ");
		run(kind, count ? atol(count) : 0, arg, out, sizeof(out));
		int fd = open(resp, O_WRONLY);
		if (fd < 0)
			probe_err("open response");
		dprintf(fd, "%s\n", out);
		close(fd);
	}
}

int main(int argc, char **argv)
{
	char out[256];
	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2]);
	if (argc < 3)
		probe_usage(USAGE);
	int rc = run(argv[1], atol(argv[2]), argc > 3 ? argv[3] : NULL, out, sizeof(out));
	printf("%s\n", out);
	return rc == 0 ? 0 : 1;
}
