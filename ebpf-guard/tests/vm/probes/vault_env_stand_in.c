/* Stand-in for /vault/vault-env while the real vault-env cannot exec its command yet:
 * `vault_env_stand_in CMD ARGS...` execs CMD, like vault-env with no vault: references. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: vault-env CMD [ARGS...]\n");
		return 2;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "vault-env: exec %s: %s\n", argv[1], strerrorname_np(errno));
	return 127;
}
