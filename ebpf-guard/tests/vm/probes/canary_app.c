/* canary_app: the simulated workload. Keeps $CANARY in its environment and proves, once at
 * start and again on every SIGUSR1, what the workload itself may do:
 *   self_environ   reads /proc/self/environ and /proc/<own pid>/environ (canary FOUND)
 *   child_environ  a forked child reads its parent's environ (canary FOUND)
 *   ptrace_child   the parent PTRACE_ATTACHes that child, then detaches
 *   vm_readv_child the parent process_vm_readv's the child
 * Each round prints one line, "CANARY_APP round=N self_environ=OK:FOUND child_environ=...",
 * then "CANARY_APP READY pid=<pid>". SIGTERM exits 0. Never prints the canary. */
#include "probe.h"
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>

static volatile sig_atomic_t rerun, stop;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		rerun = 1;
	else
		stop = 1;
}

/* "OK:FOUND", "OK:NOTFOUND" or "ERR:<ERRNO>" for reading path. */
static void read_environ(const char *path, const char *needle, char *out, size_t size)
{
	int found = 0;
	int fd = open(path, O_RDONLY);
	long n = fd < 0 ? -1 : probe_read_all(fd, needle, &found);
	if (n < 0)
		snprintf(out, size, "ERR:%s", strerrorname_np(errno));
	else
		snprintf(out, size, "OK:%s", found ? "FOUND" : "NOTFOUND");
	if (fd >= 0)
		close(fd);
}

static void errname(char *out, size_t size, const char *prefix)
{
	snprintf(out, size, "%s:%s", prefix, strerrorname_np(errno));
}

static void round_of_checks(int round, const char *canary)
{
	char self[48], own[48], child_res[48] = "ERR:none", traced[48], readv[48];
	char path[64];
	int sync[2];
	read_environ("/proc/self/environ", canary, self, sizeof(self));
	snprintf(path, sizeof(path), "/proc/%d/environ", getpid());
	read_environ(path, canary, own, sizeof(own));

	if (pipe(sync) != 0) {
		errname(child_res, sizeof(child_res), "ERR");
		snprintf(traced, sizeof(traced), "SKIPPED");
		snprintf(readv, sizeof(readv), "SKIPPED");
	} else {
		pid_t parent = getpid();
		pid_t child = fork();
		if (child == 0) {
			char res[48];
			snprintf(path, sizeof(path), "/proc/%d/environ", parent);
			read_environ(path, canary, res, sizeof(res));
			if (write(sync[1], res, strlen(res) + 1) < 0)
				_exit(1);
			for (;;)
				pause();
		}
		close(sync[1]);
		ssize_t got = read(sync[0], child_res, sizeof(child_res) - 1);
		child_res[got > 0 ? got : 0] = '\0';
		close(sync[0]);

		if (ptrace(PTRACE_ATTACH, child, NULL, NULL) != 0) {
			errname(traced, sizeof(traced), "ERR");
		} else {
			waitpid(child, NULL, __WALL);
			ptrace(PTRACE_DETACH, child, NULL, NULL);
			snprintf(traced, sizeof(traced), "OK");
		}
		char buf[16];
		struct iovec local = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct iovec remote = { .iov_base = (void *)probe_first_address(child),
					.iov_len = sizeof(buf) };
		if (process_vm_readv(child, &local, 1, &remote, 1, 0) < 0)
			errname(readv, sizeof(readv), "ERR");
		else
			snprintf(readv, sizeof(readv), "OK");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	printf("CANARY_APP round=%d self_environ=%s own_pid_environ=%s child_environ=%s "
	       "ptrace_child=%s vm_readv_child=%s\n",
	       round, self, own, child_res, traced, readv);
	printf("CANARY_APP READY pid=%d\n", getpid());
	fflush(stdout);
}

int main(void)
{
	const char *canary = getenv("CANARY");
	if (!canary || !*canary) {
		fprintf(stderr, "canary_app: CANARY is not set\n");
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* Block the signals outside sigsuspend so none is lost between the check and the wait. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old);
	int round = 1;
	round_of_checks(round, canary);
	while (!stop) {
		sigsuspend(&old);
		if (rerun && !stop) {
			rerun = 0;
			round_of_checks(++round, canary);
		}
	}
	return 0;
}
