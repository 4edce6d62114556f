/*
 * berth-init: the init berth runs as PID 1 of a container started with --init.
 *
 * It starts the container's command as its child, forwards every signal it gets to
 * that child, reaps every process that ends up as its child (orphans of the
 * container), and exits with the command's status (128+N when a signal N ended it).
 *
 * Usage: berth-init -- COMMAND [ARG...]
 *
 * It is linked statically so that it runs in any image; berthd embeds it and
 * bind-mounts it read-only into the container.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--") == 0)
        first = 2;
    if (first >= argc) {
        fprintf(stderr, "berth-init: usage: berth-init -- COMMAND [ARG...]\n");
        return 2;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);

    pid_t child = fork();
    if (child < 0) {
        perror("berth-init: fork");
        return 1;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        /* its own process group, in the foreground of the terminal if there is one */
        setpgid(0, 0);
        if (isatty(STDIN_FILENO)) {
            signal(SIGTTOU, SIG_IGN);
            tcsetpgrp(STDIN_FILENO, getpgrp());
            signal(SIGTTOU, SIG_DFL);
        }
        execvp(argv[first], &argv[first]);
        int code = (errno == ENOENT) ? 127 : 126;
        fprintf(stderr, "berth-init: exec %s failed: %s\n", argv[first], strerror(errno));
        _exit(code);
    }

    int exit_code = -1;
    for (;;) {
        struct timespec tick = {1, 0};
        siginfo_t info;
        int sig = sigtimedwait(&all, &info, &tick);
        if (sig > 0 && sig != SIGCHLD) {
            /* everything else goes to the command (stopping signals included) */
            if (kill(child, sig) < 0 && errno != ESRCH)
                perror("berth-init: forwarding a signal");
        }
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            if (pid == child) {
                if (WIFEXITED(status))
                    exit_code = WEXITSTATUS(status);
                else if (WIFSIGNALED(status))
                    exit_code = 128 + WTERMSIG(status);
                else
                    exit_code = 255;
            }
        }
        if (exit_code >= 0)
            return exit_code;
    }
}
