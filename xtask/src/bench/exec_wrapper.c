/* The exec-overhead baseline: the least a wrapper can do, exec its arguments. Built by
 * `cargo xtask bench` with `gcc -static -O2` (xtask/src/bench/exec.rs). */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs("usage: exec_wrapper CMD [ARGS...]\n", stderr);
        return 2;
    }
    execv(argv[1], argv + 1);
    perror("execv");
    return 127;
}
