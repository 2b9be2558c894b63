/* echo_ok: prints "OK ran" (the command a successful exec_file or vault-env run shows). */
#include <stdio.h>

int main(void)
{
	printf("OK ran\n");
	return 0;
}
