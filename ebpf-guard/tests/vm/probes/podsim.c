/* podsim: simulates a container runtime for the vm-test guest.
 *
 * podsim start -c CGROUP -p PIDFILE [-H HOSTNAME] [-b SRC:DST]... [-r SRC:DST]... \
 *              [--] [KEY=VALUE]... CMD [ARGS...]
 *   Like `runc run`: forks a child in new pid, mount, uts and ipc namespaces that joins the
 *   cgroup directory CGROUP (cgroup v2), makes its mounts private, bind-mounts each SRC at
 *   DST (-r: read-only, as the kubelet mounts service-account tokens), mounts a fresh /proc,
 *   sets the hostname and execs CMD with the environment PATH, HOSTNAME and the KEY=VALUE
 *   pairs only. CMD is PID 1 of the new pid namespace. The parent (the "shim") stays outside
 *   the cgroup and the namespaces, writes CMD's host PID to PIDFILE and waits for it; its exit
 *   status is CMD's.
 *
 * podsim exec -c CGROUP -t PID [--] [KEY=VALUE]... CMD [ARGS...]
 *   Like `runc exec` / `kubectl exec`: joins CGROUP (writes itself to cgroup.procs), then the
 *   ipc, uts, pid and mount namespaces of PID (a host PID), forks (so the pid namespace
 *   applies) and execs CMD in "/" with PATH, HOSTNAME and the KEY=VALUE pairs. Returns CMD's
 *   exit status (128+signal if killed).
 *
 * Errors print "podsim: <what>: <ERRNO>" on stderr and exit 125. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ITEMS 32

static __attribute__((noreturn)) void fail(const char *what, const char *arg)
{
	fprintf(stderr, "podsim: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
		strerrorname_np(errno) ? strerrorname_np(errno) : "?");
	exit(125);
}

static __attribute__((noreturn)) void usage(void)
{
	fprintf(stderr, "usage: podsim start -c CGROUP -p PIDFILE [-H HOST] [-b|-r SRC:DST]... "
			"[--] [K=V]... CMD...\n"
			"       podsim exec -c CGROUP -t PID [--] [K=V]... CMD...\n");
	exit(125);
}

struct options {
	const char *cgroup, *pidfile, *hostname;
	pid_t target;
	const char *binds[MAX_ITEMS];
	int readonly[MAX_ITEMS];
	int nbinds;
	char *env[MAX_ITEMS + 3];
	char **cmd;
};

static int is_assignment(const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return 0;
	for (const char *p = arg; p < eq; p++)
		if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (p > arg && *p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

static void parse(int argc, char **argv, struct options *o)
{
	static char hostname_env[128];
	int i = 2, nenv = 0;
	memset(o, 0, sizeof(*o));
	o->hostname = "pod";
	for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0; i += 2) {
		if (i + 1 >= argc)
			usage();
		const char *flag = argv[i], *value = argv[i + 1];
		if (strcmp(flag, "-c") == 0)
			o->cgroup = value;
		else if (strcmp(flag, "-p") == 0)
			o->pidfile = value;
		else if (strcmp(flag, "-H") == 0)
			o->hostname = value;
		else if (strcmp(flag, "-t") == 0)
			o->target = (pid_t)atoi(value);
		else if ((strcmp(flag, "-b") == 0 || strcmp(flag, "-r") == 0) && o->nbinds < MAX_ITEMS) {
			o->readonly[o->nbinds] = flag[1] == 'r';
			o->binds[o->nbinds++] = value;
		} else
			usage();
	}
	if (i < argc && strcmp(argv[i], "--") == 0)
		i++;
	o->env[nenv++] = "PATH=/probes:/bin:/usr/local/bin";
	snprintf(hostname_env, sizeof(hostname_env), "HOSTNAME=%s", o->hostname);
	o->env[nenv++] = hostname_env;
	for (; i < argc && is_assignment(argv[i]) && nenv < MAX_ITEMS + 2; i++)
		o->env[nenv++] = argv[i];
	o->env[nenv] = NULL;
	if (i >= argc || !o->cgroup)
		usage();
	o->cmd = argv + i;
}

static void join_cgroup(const char *dir)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	int fd = open(path, O_WRONLY);
	/* "0" moves the writing process itself, whatever pid namespace it is in. */
	if (fd < 0 || write(fd, "0", 1) != 1)
		fail("join cgroup", dir);
	close(fd);
}

static void bind_mount(const char *spec, int readonly)
{
	char src[256], dst[256];
	const char *colon = strchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(src) || strlen(colon + 1) >= sizeof(dst)) {
		errno = EINVAL;
		fail("bind spec", spec);
	}
	memcpy(src, spec, (size_t)(colon - spec));
	src[colon - spec] = '\0';
	strcpy(dst, colon + 1);
	struct stat st;
	if (stat(src, &st) != 0)
		fail("stat", src);
	/* Create the mount point (and its parents) like a runtime does. */
	for (char *p = dst + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(dst, 0755);
			*p = '/';
		}
	}
	if (S_ISDIR(st.st_mode))
		mkdir(dst, 0755);
	else
		close(open(dst, O_WRONLY | O_CREAT, 0644));
	if (mount(src, dst, NULL, MS_BIND, NULL) != 0)
		fail("bind mount", dst);
	if (readonly && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0)
		fail("remount read-only", dst);
}

static int wait_status(pid_t child)
{
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			fail("waitpid", NULL);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int start(struct options *o)
{
	if (!o->pidfile)
		usage();
	if (unshare(CLONE_NEWPID) != 0)
		fail("unshare", "pid");
	pid_t child = fork();
	if (child < 0)
		fail("fork", NULL);
	if (child == 0) {
		join_cgroup(o->cgroup);
		if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0)
			fail("unshare", "mnt,uts,ipc");
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			fail("make / private", NULL);
		for (int i = 0; i < o->nbinds; i++)
			bind_mount(o->binds[i], o->readonly[i]);
		if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
			fail("mount", "/proc");
		if (sethostname(o->hostname, strlen(o->hostname)) != 0)
			fail("sethostname", o->hostname);
		if (chdir("/") != 0)
			fail("chdir", "/");
		execvpe(o->cmd[0], o->cmd, o->env);
		fail("exec", o->cmd[0]);
	}
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s.tmp", o->pidfile);
	FILE *f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", child) < 0 || fclose(f) != 0 || rename(tmp, o->pidfile) != 0) {
		kill(child, SIGKILL);
		fail("write pidfile", o->pidfile);
	}
	return wait_status(child);
}

static int exec_in(struct options *o)
{
	static const char *kinds[] = { "ipc", "uts", "pid", "mnt" };
	int fds[4];
	char path[64];
	if (o->target <= 0)
		usage();
	/* Open every namespace first: after joining the mount namespace /proc is the pod's. */
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", o->target, kinds[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fail("open", path);
	}
	join_cgroup(o->cgroup);
	for (int i = 0; i < 4; i++) {
		if (setns(fds[i], 0) != 0)
			fail("setns", kinds[i]);
		close(fds[i]);
	}
	pid_t child = fork();
	if (child < 0)
		fail("fork", NULL);
	if (child == 0) {
		if (chdir("/") != 0)
			fail("chdir", "/");
		execvpe(o->cmd[0], o->cmd, o->env);
		fail("exec", o->cmd[0]);
	}
	return wait_status(child);
}

int main(int argc, char **argv)
{
	struct options o;
	if (argc < 2)
		usage();
	parse(argc, argv, &o);
	if (strcmp(argv[1], "start") == 0)
		return start(&o);
	if (strcmp(argv[1], "exec") == 0)
		return exec_in(&o);
	usage();
}
